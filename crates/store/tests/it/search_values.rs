//! Search values beyond one plain value per parameter: token sets (what
//! `:in`, `:not-in`, `:above` and `:below` become once resolved), composite
//! parameters matched within one element, and `:missing` on composites
//! (<http://hl7.org/fhir/R4/search.html#token>, `#composite`).

use crate::harness::*;
use domain::store::Store;
use fhir::search::query::{Filter, Match, Prefix, StringMode, TokenSystem};
use fhir::search::{IndexEntry, IndexValue, normalize_string};
use std::sync::Arc;

const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const UCUM: &str = "http://unitsofmeasure.org";

fn tok(system: Option<&str>, code: &str) -> IndexValue {
    IndexValue::Token { system: system.map(Into::into), code: Some(code.into()), text: None }
}

fn qty(value: f64, code: &str) -> IndexValue {
    IndexValue::Quantity { low: value - 0.5, high: value + 0.5, system: Some(UCUM.into()), code: Some(code.into()) }
}

fn composite(param: &str, parts: Vec<IndexValue>) -> IndexEntry {
    IndexEntry { param: param.into(), value: IndexValue::Composite(parts) }
}

fn token_is(system: &str, code: &str) -> Match {
    Match::Token { system: TokenSystem::Is(system.into()), code: Some(code.into()), negate: false }
}

fn set(tokens: &[(&str, Option<&str>)], negate: bool) -> Match {
    Match::TokenSet { tokens: tokens.iter().map(|(s, c)| (s.to_string(), c.map(str::to_string))).collect(), negate }
}

async fn token_fixture(store: &Arc<dyn Store>) {
    create(store, "Observation", "loinc", at(1), vec![token("code", Some(LOINC), Some("8867-4"), None)]).await;
    create(store, "Observation", "snomed", at(2), vec![token("code", Some(SNOMED), Some("364075005"), None)]).await;
    create(store, "Observation", "plain", at(3), vec![token("code", None, Some("8867-4"), None)]).await;
    create(store, "Observation", "other", at(4), vec![token("code", Some(LOINC), Some("1234-5"), None)]).await;
    create(store, "Observation", "none", at(5), vec![]).await;
    create(
        store,
        "Observation",
        "two",
        at(6),
        vec![token("code", Some(LOINC), Some("1234-5"), None), token("code", Some(LOINC), Some("8867-4"), None)],
    )
    .await;
}

pub(crate) async fn token_set_matches_any_pair(store: Arc<dyn Store>) {
    token_fixture(&store).await;
    let q =
        query("Observation", vec![cond("code", set(&[(LOINC, Some("8867-4")), (SNOMED, Some("364075005"))], false))]);
    assert_eq!(id_set(&store, &q).await, strs(&["loinc", "snomed", "two"]), "a code without a system is not in a set");
    // A whole system.
    let q = query("Observation", vec![cond("code", set(&[(LOINC, None)], false))]);
    assert_eq!(id_set(&store, &q).await, strs(&["loinc", "other", "two"]));
    // A whole system and one of its codes: the system wins.
    let q = query("Observation", vec![cond("code", set(&[(LOINC, Some("8867-4")), (LOINC, None)], false))]);
    assert_eq!(id_set(&store, &q).await, strs(&["loinc", "other", "two"]));
    // An empty set (an empty value set) matches nothing.
    let q = query("Observation", vec![cond("code", set(&[], false))]);
    assert!(id_set(&store, &q).await.is_empty());
    // Unknown systems and codes.
    let q = query("Observation", vec![cond("code", set(&[("http://nowhere", None), (LOINC, Some("0000-0"))], false))]);
    assert!(id_set(&store, &q).await.is_empty());
}

pub(crate) async fn token_set_negated_is_not_in(store: Arc<dyn Store>) {
    token_fixture(&store).await;
    // :not-in: resources with no code in the set, those without a code too.
    let q = query("Observation", vec![cond("code", set(&[(LOINC, Some("8867-4")), (SNOMED, None)], true))]);
    assert_eq!(id_set(&store, &q).await, strs(&["plain", "other", "none"]));
    let q = query("Observation", vec![cond("code", set(&[], true))]);
    assert_eq!(id_set(&store, &q).await.len(), 6, "nothing is in an empty set");
    // OR with another condition in one filter.
    let mut q = query("Observation", vec![]);
    q.filters.push(Filter {
        any_of: vec![cond("code", set(&[(LOINC, None)], true)), cond("_id", Match::Id("loinc".into()))],
    });
    assert_eq!(id_set(&store, &q).await, strs(&["snomed", "plain", "none", "loinc"]));
}

pub(crate) async fn unresolved_terminology_matches_nothing(store: Arc<dyn Store>) {
    token_fixture(&store).await;
    let q =
        query("Observation", vec![cond("code", Match::InValueSet { value_set: "http://vs".into(), negate: false })]);
    assert!(id_set(&store, &q).await.is_empty());
    let q = query("Observation", vec![cond("code", Match::InValueSet { value_set: "http://vs".into(), negate: true })]);
    assert!(id_set(&store, &q).await.is_empty());
    let subsumed = Match::Subsumption { system: LOINC.into(), code: "8867-4".into(), below: true };
    assert!(id_set(&store, &query("Observation", vec![cond("code", subsumed)])).await.is_empty());
}

/// Two blood pressures with the same codes and values, paired differently.
async fn blood_pressures(store: &Arc<dyn Store>) {
    let param = "component-code-value-quantity";
    create(
        store,
        "Observation",
        "high",
        at(1),
        vec![
            composite(param, vec![tok(Some(LOINC), "8480-6"), qty(150.0, "mm[Hg]")]),
            composite(param, vec![tok(Some(LOINC), "8462-4"), qty(90.0, "mm[Hg]")]),
            // What extraction indexes besides: the components' own parameters.
            token("component-code", Some(LOINC), Some("8480-6"), None),
            token("component-code", Some(LOINC), Some("8462-4"), None),
        ],
    )
    .await;
    create(
        store,
        "Observation",
        "crossed",
        at(2),
        vec![
            composite(param, vec![tok(Some(LOINC), "8480-6"), qty(90.0, "mm[Hg]")]),
            composite(param, vec![tok(Some(LOINC), "8462-4"), qty(150.0, "mm[Hg]")]),
        ],
    )
    .await;
    create(
        store,
        "Observation",
        "plain",
        at(3),
        vec![composite(param, vec![tok(None, "8480-6"), qty(150.0, "mm[Hg]")])],
    )
    .await;
    create(store, "Observation", "none", at(4), vec![token("code", Some(LOINC), Some("8480-6"), None)]).await;
}

fn systolic(prefix: Prefix, value: f64) -> Match {
    Match::Composite(vec![
        token_is(LOINC, "8480-6"),
        Match::Quantity {
            prefix,
            low: value - 0.5,
            high: value + 0.5,
            system: Some(UCUM.into()),
            code: Some("mm[Hg]".into()),
        },
    ])
}

pub(crate) async fn composite_components_match_in_one_element(store: Arc<dyn Store>) {
    blood_pressures(&store).await;
    let param = "component-code-value-quantity";
    // Systolic above 140: "crossed" has a value of 150 and the code 8480-6,
    // but not on the same component.
    assert_eq!(
        id_set(&store, &query("Observation", vec![cond(param, systolic(Prefix::Gt, 140.0))])).await,
        strs(&["high"])
    );
    assert_eq!(
        id_set(&store, &query("Observation", vec![cond(param, systolic(Prefix::Lt, 100.0))])).await,
        strs(&["crossed"])
    );
    assert_eq!(
        id_set(&store, &query("Observation", vec![cond(param, systolic(Prefix::Eq, 150.0))])).await,
        strs(&["high"])
    );
    assert_eq!(
        id_set(&store, &query("Observation", vec![cond(param, systolic(Prefix::Ne, 150.0))])).await,
        strs(&["crossed"])
    );
    // Any system, and no system, for the token component.
    let any = Match::Composite(vec![
        Match::Token { system: TokenSystem::Any, code: Some("8480-6".into()), negate: false },
        Match::Quantity { prefix: Prefix::Ge, low: 149.5, high: 150.5, system: None, code: None },
    ]);
    assert_eq!(id_set(&store, &query("Observation", vec![cond(param, any)])).await, strs(&["high", "plain"]));
    let none = Match::Composite(vec![
        Match::Token { system: TokenSystem::NoSystem, code: Some("8480-6".into()), negate: false },
        Match::Quantity { prefix: Prefix::Ge, low: 0.0, high: 1.0, system: None, code: None },
    ]);
    assert_eq!(id_set(&store, &query("Observation", vec![cond(param, none)])).await, strs(&["plain"]));
    // Another unit: no match.
    let grams = Match::Composite(vec![
        token_is(LOINC, "8480-6"),
        Match::Quantity { prefix: Prefix::Gt, low: 0.0, high: 1.0, system: Some(UCUM.into()), code: Some("g".into()) },
    ]);
    assert!(id_set(&store, &query("Observation", vec![cond(param, grams)])).await.is_empty());
    // OR of two composites, AND with a second one.
    let mut q = query("Observation", vec![]);
    q.filters.push(Filter {
        any_of: vec![cond(param, systolic(Prefix::Gt, 140.0)), cond(param, systolic(Prefix::Lt, 100.0))],
    });
    assert_eq!(id_set(&store, &q).await, strs(&["high", "crossed"]));
    let diastolic_high = Match::Composite(vec![
        token_is(LOINC, "8462-4"),
        Match::Quantity { prefix: Prefix::Gt, low: 99.5, high: 100.5, system: None, code: None },
    ]);
    q.filters.push(Filter { any_of: vec![cond(param, diastolic_high)] });
    assert_eq!(id_set(&store, &q).await, strs(&["crossed"]));
}

pub(crate) async fn composite_missing(store: Arc<dyn Store>) {
    blood_pressures(&store).await;
    let param = "component-code-value-quantity";
    assert_eq!(id_set(&store, &query("Observation", vec![cond(param, Match::Missing(true))])).await, strs(&["none"]));
    assert_eq!(
        id_set(&store, &query("Observation", vec![cond(param, Match::Missing(false))])).await,
        strs(&["high", "crossed", "plain"])
    );
}

pub(crate) async fn composite_of_date_string_reference_and_numbers(store: Arc<dyn Store>) {
    let day = |d: i64| IndexValue::Date { low: d * 86_400_000_000, high: (d + 1) * 86_400_000_000 - 1 };
    create(
        &store,
        "Observation",
        "dated",
        at(1),
        vec![
            composite("code-value-date", vec![tok(Some(LOINC), "1"), day(100)]),
            composite(
                "code-value-string",
                vec![
                    tok(Some(LOINC), "1"),
                    IndexValue::String { normalized: normalize_string("Positive"), exact: "Positive".into() },
                ],
            ),
            composite(
                "relationship",
                vec![
                    IndexValue::Reference {
                        target_type: Some("DocumentReference".into()),
                        target_id: Some("d1".into()),
                        url: "DocumentReference/d1".into(),
                    },
                    tok(None, "replaces"),
                ],
            ),
            composite(
                "chromosome-variant-coordinate",
                vec![
                    tok(Some("http://c"), "1"),
                    IndexValue::Number { low: 9.5, high: 10.5 },
                    IndexValue::Number { low: 19.5, high: 20.5 },
                ],
            ),
        ],
    )
    .await;
    create(
        &store,
        "Observation",
        "later",
        at(2),
        vec![
            composite("code-value-date", vec![tok(Some(LOINC), "1"), day(200)]),
            composite(
                "relationship",
                vec![
                    IndexValue::Reference {
                        target_type: None,
                        target_id: None,
                        url: "http://x/DocumentReference/d1".into(),
                    },
                    tok(None, "replaces"),
                ],
            ),
        ],
    )
    .await;
    let date = |prefix: Prefix, d: i64| {
        Match::Composite(vec![
            token_is(LOINC, "1"),
            Match::Date { prefix, low: d * 86_400_000_000, high: (d + 1) * 86_400_000_000 - 1 },
        ])
    };
    let found = |m: Match, param: &'static str| {
        let store = Arc::clone(&store);
        async move { id_set(&store, &query("Observation", vec![cond(param, m)])).await }
    };
    assert_eq!(found(date(Prefix::Eq, 100), "code-value-date").await, strs(&["dated"]));
    assert_eq!(found(date(Prefix::Gt, 150), "code-value-date").await, strs(&["later"]));
    assert_eq!(found(date(Prefix::Le, 150), "code-value-date").await, strs(&["dated"]));
    let string = |value: &str| {
        Match::Composite(vec![token_is(LOINC, "1"), Match::String { value: value.into(), mode: StringMode::Prefix }])
    };
    assert_eq!(found(string("pos"), "code-value-string").await, strs(&["dated"]));
    assert!(found(string("neg"), "code-value-string").await.is_empty());
    let relation = |target_type: Option<&str>, id: &str| {
        Match::Composite(vec![
            Match::Reference { target_type: target_type.map(Into::into), id: id.into() },
            Match::Token { system: TokenSystem::Any, code: Some("replaces".into()), negate: false },
        ])
    };
    assert_eq!(found(relation(Some("DocumentReference"), "d1"), "relationship").await, strs(&["dated"]));
    assert_eq!(found(relation(None, "d1"), "relationship").await, strs(&["dated"]));
    assert!(found(relation(Some("Patient"), "d1"), "relationship").await.is_empty());
    let by_url = Match::Composite(vec![
        Match::ReferenceUrl("http://x/DocumentReference/d1".into()),
        Match::Token { system: TokenSystem::Any, code: Some("replaces".into()), negate: false },
    ]);
    assert_eq!(found(by_url, "relationship").await, strs(&["later"]));
    let window = |start: f64, prefix: Prefix| {
        Match::Composite(vec![
            token_is("http://c", "1"),
            Match::Number { prefix, low: start - 0.5, high: start + 0.5 },
            Match::Number { prefix: Prefix::Le, low: 24.5, high: 25.5 },
        ])
    };
    assert_eq!(found(window(5.0, Prefix::Ge), "chromosome-variant-coordinate").await, strs(&["dated"]));
    assert!(found(window(15.0, Prefix::Ge), "chromosome-variant-coordinate").await.is_empty());
}
