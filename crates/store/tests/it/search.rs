//! Search: every Match variant and comparison prefix, OR/AND composition,
//! sort, paging and totals (<http://hl7.org/fhir/R4/search.html>).

use crate::harness::*;
use domain::store::Store;
use fhir::search::query::{
    Filter, Match, Prefix, SearchQuery, SortKey, StringMode, TokenSystem, TotalMode, UriMode,
};
use std::sync::Arc;

const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";

const PREFIXES: [Prefix; 9] =
    [Prefix::Eq, Prefix::Ne, Prefix::Gt, Prefix::Lt, Prefix::Ge, Prefix::Le, Prefix::Sa, Prefix::Eb, Prefix::Ap];

/// Resources whose value ranges sit in every relation to the search range
/// [100, 199], and the ids each prefix selects, per the definitions of
/// <http://hl7.org/fhir/R4/search.html#prefix>.
const RANGES: [(&str, i64, i64); 7] = [
    ("inside", 120, 150),
    ("equal", 100, 199),
    ("overlap_low", 50, 120),
    ("overlap_high", 150, 250),
    ("before", 10, 50),
    ("after", 250, 300),
    ("around", 50, 250),
];

fn expected_for(prefix: Prefix) -> Vec<String> {
    strs(match prefix {
        Prefix::Eq => &["inside", "equal"],
        Prefix::Ne => &["overlap_low", "overlap_high", "before", "after", "around"],
        Prefix::Gt => &["overlap_high", "after", "around"],
        Prefix::Lt => &["overlap_low", "before", "around"],
        Prefix::Ge => &["inside", "equal", "overlap_high", "after", "around"],
        Prefix::Le => &["inside", "equal", "overlap_low", "before", "around"],
        Prefix::Sa => &["after"],
        Prefix::Eb => &["before"],
        Prefix::Ap => &["inside", "equal", "overlap_low", "overlap_high", "around"],
    })
}

fn token_match(system: TokenSystem, code: Option<&str>, negate: bool) -> Match {
    Match::Token { system, code: code.map(Into::into), negate }
}

fn string_match(value: &str, mode: StringMode) -> Match {
    Match::String { value: value.into(), mode }
}

fn sorted(resource_type: &str, keys: &[(&str, bool)]) -> SearchQuery {
    let mut q = query(resource_type, vec![]);
    q.sort = keys.iter().map(|(param, descending)| SortKey { param: param.to_string(), descending: *descending }).collect();
    q
}

pub(crate) async fn by_id(store: Arc<dyn Store>) {
    create(&store, "Patient", "a", at(1), vec![]).await;
    create(&store, "Patient", "b", at(2), vec![]).await;
    create(&store, "Observation", "a", at(3), vec![]).await;
    let q = query("Patient", vec![cond("_id", Match::Id("a".into()))]);
    let page = store.search(&q).await.expect("search");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].resource_type, "Patient");
    assert_eq!(page.items[0].id, "a");
    assert_eq!(page.items[0].body.as_deref(), Some(&*body("Patient", "a", 1)));
    assert!(ids(&store, &query("Patient", vec![cond("_id", Match::Id("zzz".into()))])).await.is_empty());
}

pub(crate) async fn by_id_system_level(store: Arc<dyn Store>) {
    create(&store, "Patient", "a", at(1), vec![]).await;
    create(&store, "Observation", "a", at(2), vec![]).await;
    create(&store, "Observation", "b", at(3), vec![]).await;
    let mut q = query("Patient", vec![cond("_id", Match::Id("a".into()))]);
    q.resource_type = None;
    let page = store.search(&q).await.expect("search");
    let found: Vec<(String, String)> = page.items.into_iter().map(|r| (r.resource_type, r.id)).collect();
    // Newest first.
    assert_eq!(found, vec![("Observation".into(), "a".into()), ("Patient".into(), "a".into())]);
}

pub(crate) async fn last_updated_prefixes(store: Arc<dyn Store>) {
    let base = at(0).micros();
    for (id, offset) in [("t050", 50), ("t100", 100), ("t150", 150), ("t199", 199), ("t250", 250)] {
        create(&store, "Patient", id, fhir::instant::Instant(base + offset), vec![]).await;
    }
    for prefix in PREFIXES {
        let q = query("Patient", vec![cond("_lastUpdated", Match::LastUpdated { prefix, low: base + 100, high: base + 199 })]);
        let expected = strs(match prefix {
            Prefix::Eq | Prefix::Ap => &["t100", "t150", "t199"],
            Prefix::Ne => &["t050", "t250"],
            Prefix::Gt | Prefix::Sa => &["t250"],
            Prefix::Lt | Prefix::Eb => &["t050"],
            Prefix::Ge => &["t100", "t150", "t199", "t250"],
            Prefix::Le => &["t050", "t100", "t150", "t199"],
        });
        assert_eq!(id_set(&store, &q).await, expected, "_lastUpdated {prefix:?}");
    }
}

pub(crate) async fn missing_true_and_false(store: Arc<dyn Store>) {
    create(&store, "Patient", "with_name", at(1), vec![string("name", "Ann")]).await;
    create(&store, "Patient", "with_date", at(2), vec![date("birthdate", 0, 10)]).await;
    create(&store, "Patient", "bare", at(3), vec![]).await;
    let missing = |param: &str, m: bool| query("Patient", vec![cond(param, Match::Missing(m))]);
    assert_eq!(id_set(&store, &missing("name", true)).await, strs(&["with_date", "bare"]));
    assert_eq!(id_set(&store, &missing("name", false)).await, strs(&["with_name"]));
    assert_eq!(id_set(&store, &missing("birthdate", false)).await, strs(&["with_date"]));
    assert_eq!(id_set(&store, &missing("never_indexed", true)).await, strs(&["with_name", "with_date", "bare"]));
    assert!(id_set(&store, &missing("never_indexed", false)).await.is_empty());
}

async fn token_fixture(store: &Arc<dyn Store>) {
    create(store, "Observation", "loinc", at(1), vec![token("code", Some(LOINC), Some("8867-4"), Some("Heart rate"))]).await;
    create(store, "Observation", "snomed", at(2), vec![token("code", Some(SNOMED), Some("8867-4"), Some("Héart beat"))]).await;
    create(store, "Observation", "plain", at(3), vec![token("code", None, Some("8867-4"), None)]).await;
    create(store, "Observation", "other", at(4), vec![token("code", Some(LOINC), Some("1234-5"), Some("Other"))]).await;
    create(store, "Observation", "none", at(5), vec![]).await;
    create(store, "Observation", "two", at(6), vec![
        token("code", Some(LOINC), Some("1234-5"), None),
        token("code", Some(LOINC), Some("8867-4"), None),
    ])
    .await;
}

pub(crate) async fn token_any_system(store: Arc<dyn Store>) {
    token_fixture(&store).await;
    let q = query("Observation", vec![cond("code", token_match(TokenSystem::Any, Some("8867-4"), false))]);
    assert_eq!(id_set(&store, &q).await, strs(&["loinc", "snomed", "plain", "two"]));
    // Codes are case-sensitive.
    let q = query("Observation", vec![cond("code", token_match(TokenSystem::Any, Some("8867-4 "), false))]);
    assert!(id_set(&store, &q).await.is_empty());
}

pub(crate) async fn token_system_and_code(store: Arc<dyn Store>) {
    token_fixture(&store).await;
    let q = query("Observation", vec![cond("code", token_match(TokenSystem::Is(LOINC.into()), Some("8867-4"), false))]);
    assert_eq!(id_set(&store, &q).await, strs(&["loinc", "two"]));
    let q = query("Observation", vec![cond("code", token_match(TokenSystem::Is("http://x".into()), Some("8867-4"), false))]);
    assert!(id_set(&store, &q).await.is_empty());
}

pub(crate) async fn token_no_system(store: Arc<dyn Store>) {
    token_fixture(&store).await;
    let q = query("Observation", vec![cond("code", token_match(TokenSystem::NoSystem, Some("8867-4"), false))]);
    assert_eq!(id_set(&store, &q).await, strs(&["plain"]));
}

pub(crate) async fn token_system_only(store: Arc<dyn Store>) {
    token_fixture(&store).await;
    let q = query("Observation", vec![cond("code", token_match(TokenSystem::Is(LOINC.into()), None, false))]);
    assert_eq!(id_set(&store, &q).await, strs(&["loinc", "other", "two"]));
}

pub(crate) async fn token_not(store: Arc<dyn Store>) {
    token_fixture(&store).await;
    // :not selects resources with no matching token, including those with
    // no value at all (http://hl7.org/fhir/R4/search.html#token).
    let q = query("Observation", vec![cond("code", token_match(TokenSystem::Any, Some("8867-4"), true))]);
    assert_eq!(id_set(&store, &q).await, strs(&["other", "none"]));
    let q = query("Observation", vec![cond("code", token_match(TokenSystem::Is(LOINC.into()), Some("8867-4"), true))]);
    assert_eq!(id_set(&store, &q).await, strs(&["snomed", "plain", "other", "none"]));
}

pub(crate) async fn token_text(store: Arc<dyn Store>) {
    token_fixture(&store).await;
    let q = query("Observation", vec![cond("code", Match::TokenText("heart".into()))]);
    assert_eq!(id_set(&store, &q).await, strs(&["loinc", "snomed"]));
    let q = query("Observation", vec![cond("code", Match::TokenText("rate".into()))]);
    assert!(id_set(&store, &q).await.is_empty(), ":text matches the start of the text");
}

async fn string_fixture(store: &Arc<dyn Store>) {
    create(store, "Patient", "nunez", at(1), vec![string("family", "Núñez"), string("given", "Ana")]).await;
    create(store, "Patient", "nunes", at(2), vec![string("family", "Nunes")]).await;
    create(store, "Patient", "obrien", at(3), vec![string("family", "O'Brien"), string("given", "Núria")]).await;
    create(store, "Patient", "percent", at(4), vec![string("family", "100%_Sure")]).await;
}

pub(crate) async fn string_prefix_is_case_and_accent_insensitive(store: Arc<dyn Store>) {
    string_fixture(&store).await;
    let q = query("Patient", vec![cond("family", string_match("nun", StringMode::Prefix))]);
    assert_eq!(id_set(&store, &q).await, strs(&["nunez", "nunes"]));
    let q = query("Patient", vec![cond("family", string_match("nunez", StringMode::Prefix))]);
    assert_eq!(id_set(&store, &q).await, strs(&["nunez"]));
    let q = query("Patient", vec![cond("family", string_match("brien", StringMode::Prefix))]);
    assert!(id_set(&store, &q).await.is_empty(), "prefix, not substring");
    // LIKE wildcards in the value are plain characters.
    let q = query("Patient", vec![cond("family", string_match("100%", StringMode::Prefix))]);
    assert_eq!(id_set(&store, &q).await, strs(&["percent"]));
    let q = query("Patient", vec![cond("family", string_match("1_0", StringMode::Prefix))]);
    assert!(id_set(&store, &q).await.is_empty());
    // The parameter matters: "Núria" is a given name.
    let q = query("Patient", vec![cond("family", string_match("nur", StringMode::Prefix))]);
    assert!(id_set(&store, &q).await.is_empty());
}

pub(crate) async fn string_exact(store: Arc<dyn Store>) {
    string_fixture(&store).await;
    let q = query("Patient", vec![cond("family", string_match("Núñez", StringMode::Exact))]);
    assert_eq!(id_set(&store, &q).await, strs(&["nunez"]));
    for other in ["Nunez", "núñez", "Núñe"] {
        let q = query("Patient", vec![cond("family", string_match(other, StringMode::Exact))]);
        assert!(id_set(&store, &q).await.is_empty(), "{other}");
    }
}

pub(crate) async fn string_contains(store: Arc<dyn Store>) {
    string_fixture(&store).await;
    let q = query("Patient", vec![cond("family", string_match("une", StringMode::Contains))]);
    assert_eq!(id_set(&store, &q).await, strs(&["nunez", "nunes"]));
    let q = query("Patient", vec![cond("family", string_match("%_s", StringMode::Contains))]);
    assert_eq!(id_set(&store, &q).await, strs(&["percent"]));
    let q = query("Patient", vec![cond("family", string_match("_", StringMode::Contains))]);
    assert_eq!(id_set(&store, &q).await, strs(&["percent"]));
}

pub(crate) async fn reference_typed_and_untyped(store: Arc<dyn Store>) {
    create(&store, "Observation", "to_patient", at(1), vec![reference("subject", "Patient", "p1")]).await;
    create(&store, "Observation", "to_group", at(2), vec![reference("subject", "Group", "p1")]).await;
    create(&store, "Observation", "to_other", at(3), vec![reference("subject", "Patient", "p2")]).await;
    create(&store, "Observation", "performer", at(4), vec![reference("performer", "Patient", "p1")]).await;
    let typed = |t: Option<&str>, id: &str| {
        query("Observation", vec![cond("subject", Match::Reference { target_type: t.map(Into::into), id: id.into() })])
    };
    assert_eq!(id_set(&store, &typed(Some("Patient"), "p1")).await, strs(&["to_patient"]));
    assert_eq!(id_set(&store, &typed(None, "p1")).await, strs(&["to_patient", "to_group"]));
    assert!(id_set(&store, &typed(Some("Device"), "p1")).await.is_empty());
}

pub(crate) async fn reference_by_url(store: Arc<dyn Store>) {
    let canonical = "http://hl7.org/fhir/ValueSet/example|4.0.1";
    create(&store, "Questionnaire", "canonical", at(1), vec![reference_url("valueset", canonical)]).await;
    create(&store, "Questionnaire", "absolute", at(2), vec![reference_url("valueset", "http://other.org/fhir/Patient/9")]).await;
    create(&store, "Questionnaire", "relative", at(3), vec![reference("valueset", "ValueSet", "example")]).await;
    let by_url = |url: &str| query("Questionnaire", vec![cond("valueset", Match::ReferenceUrl(url.into()))]);
    assert_eq!(id_set(&store, &by_url(canonical)).await, strs(&["canonical"]));
    assert_eq!(id_set(&store, &by_url("http://other.org/fhir/Patient/9")).await, strs(&["absolute"]));
    assert_eq!(id_set(&store, &by_url("ValueSet/example")).await, strs(&["relative"]));
    assert!(id_set(&store, &by_url("http://hl7.org/fhir/ValueSet/example")).await.is_empty());
}

pub(crate) async fn uri_exact_below_above(store: Arc<dyn Store>) {
    create(&store, "ValueSet", "root", at(1), vec![uri("url", "http://acme.org/fhir")]).await;
    create(&store, "ValueSet", "child", at(2), vec![uri("url", "http://acme.org/fhir/ValueSet/123")]).await;
    create(&store, "ValueSet", "other", at(3), vec![uri("url", "http://other.org/fhir")]).await;
    let by = |value: &str, mode: UriMode| query("ValueSet", vec![cond("url", Match::Uri { value: value.into(), mode })]);
    assert_eq!(id_set(&store, &by("http://acme.org/fhir", UriMode::Exact)).await, strs(&["root"]));
    assert_eq!(id_set(&store, &by("http://acme.org/fhir", UriMode::Below)).await, strs(&["root", "child"]));
    assert_eq!(
        id_set(&store, &by("http://acme.org/fhir/ValueSet/123/_history/1", UriMode::Above)).await,
        strs(&["root", "child"])
    );
    assert_eq!(id_set(&store, &by("http://acme.org/fhir/ValueSet", UriMode::Above)).await, strs(&["root"]));
}

pub(crate) async fn date_prefixes(store: Arc<dyn Store>) {
    for (i, (id, low, high)) in RANGES.into_iter().enumerate() {
        create(&store, "Encounter", id, at(i as i64), vec![date("date", low, high)]).await;
    }
    create(&store, "Encounter", "no_date", at(99), vec![]).await;
    for prefix in PREFIXES {
        let q = query("Encounter", vec![cond("date", Match::Date { prefix, low: 100, high: 199 })]);
        assert_eq!(id_set(&store, &q).await, expected_for(prefix), "date {prefix:?}");
    }
    // Open-ended ranges (a Period without an end).
    create(&store, "Encounter", "open", at(100), vec![date("date", 500, i64::MAX)]).await;
    let q = query("Encounter", vec![cond("date", Match::Date { prefix: Prefix::Gt, low: 10_000, high: 10_999 })]);
    assert_eq!(id_set(&store, &q).await, strs(&["open"]));
}

pub(crate) async fn number_prefixes(store: Arc<dyn Store>) {
    for (i, (id, low, high)) in RANGES.into_iter().enumerate() {
        create(&store, "RiskAssessment", id, at(i as i64), vec![number("probability", low as f64 / 100.0, high as f64 / 100.0)])
            .await;
    }
    for prefix in PREFIXES {
        let q = query("RiskAssessment", vec![cond("probability", Match::Number { prefix, low: 1.0, high: 1.99 })]);
        assert_eq!(id_set(&store, &q).await, expected_for(prefix), "number {prefix:?}");
    }
}

pub(crate) async fn quantity_units_and_prefixes(store: Arc<dyn Store>) {
    const UCUM: &str = "http://unitsofmeasure.org";
    for (i, (id, low, high)) in RANGES.into_iter().enumerate() {
        create(&store, "Observation", id, at(i as i64), vec![quantity("value-quantity", low as f64, high as f64, Some(UCUM), Some("mg"))])
            .await;
    }
    create(&store, "Observation", "grams", at(50), vec![quantity("value-quantity", 120.0, 150.0, Some(UCUM), Some("g"))]).await;
    create(&store, "Observation", "unitless", at(51), vec![quantity("value-quantity", 120.0, 150.0, None, None)]).await;
    for prefix in PREFIXES {
        let q = query("Observation", vec![cond("value-quantity", Match::Quantity {
            prefix,
            low: 100.0,
            high: 199.0,
            system: Some(UCUM.into()),
            code: Some("mg".into()),
        })]);
        assert_eq!(id_set(&store, &q).await, expected_for(prefix), "quantity {prefix:?}");
    }
    let any_unit = query("Observation", vec![cond("value-quantity", Match::Quantity {
        prefix: Prefix::Eq,
        low: 100.0,
        high: 199.0,
        system: None,
        code: None,
    })]);
    assert_eq!(id_set(&store, &any_unit).await, strs(&["inside", "equal", "grams", "unitless"]));
    let code_only = query("Observation", vec![cond("value-quantity", Match::Quantity {
        prefix: Prefix::Eq,
        low: 100.0,
        high: 199.0,
        system: None,
        code: Some("g".into()),
    })]);
    assert_eq!(id_set(&store, &code_only).await, strs(&["grams"]));
}

pub(crate) async fn or_within_and_across_filters(store: Arc<dyn Store>) {
    create(&store, "Patient", "ann_f", at(1), vec![string("name", "Ann"), token("gender", None, Some("female"), None)]).await;
    create(&store, "Patient", "bob_m", at(2), vec![string("name", "Bob"), token("gender", None, Some("male"), None)]).await;
    create(&store, "Patient", "cy_f", at(3), vec![string("name", "Cy"), token("gender", None, Some("female"), None)]).await;
    let mut q = query("Patient", vec![]);
    q.filters = vec![
        Filter {
            any_of: vec![
                cond("name", string_match("ann", StringMode::Prefix)),
                cond("name", string_match("bob", StringMode::Prefix)),
            ],
        },
        Filter { any_of: vec![cond("gender", token_match(TokenSystem::Any, Some("female"), false))] },
    ];
    assert_eq!(id_set(&store, &q).await, strs(&["ann_f"]));
    // OR across different parameters inside one filter.
    q.filters = vec![Filter {
        any_of: vec![
            cond("name", string_match("cy", StringMode::Prefix)),
            cond("gender", token_match(TokenSystem::Any, Some("male"), false)),
        ],
    }];
    assert_eq!(id_set(&store, &q).await, strs(&["bob_m", "cy_f"]));
}

pub(crate) async fn empty_filter_matches_nothing(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    let mut q = query("Patient", vec![]);
    assert_eq!(ids(&store, &q).await, vec!["p1".to_string()]);
    q.filters = vec![Filter { any_of: vec![] }];
    assert!(ids(&store, &q).await.is_empty());
}

pub(crate) async fn unknown_param_matches_nothing(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![string("name", "Ann")]).await;
    let q = query("Patient", vec![cond("nickname", string_match("ann", StringMode::Prefix))]);
    assert!(ids(&store, &q).await.is_empty());
    // A code indexed as one type does not match a condition of another type.
    let q = query("Patient", vec![cond("name", token_match(TokenSystem::Any, Some("Ann"), false))]);
    assert!(ids(&store, &q).await.is_empty());
}

pub(crate) async fn deleted_resources_are_not_found(store: Arc<dyn Store>) {
    create(&store, "Patient", "gone", at(1), vec![string("name", "Ann")]).await;
    create(&store, "Patient", "kept", at(2), vec![string("name", "Ann")]).await;
    store.commit(commit(vec![delete("Patient", "gone", 2, at(3))])).await.expect("delete");
    let q = query("Patient", vec![cond("name", string_match("ann", StringMode::Prefix))]);
    assert_eq!(ids(&store, &q).await, vec!["kept".to_string()]);
    let q = query("Patient", vec![cond("_id", Match::Id("gone".into()))]);
    assert!(ids(&store, &q).await.is_empty());
}

pub(crate) async fn default_order_newest_first(store: Arc<dyn Store>) {
    create(&store, "Patient", "b", at(1), vec![]).await;
    create(&store, "Patient", "c", at(3), vec![]).await;
    create(&store, "Patient", "a", at(2), vec![]).await;
    // Same time: id ascending breaks the tie.
    create(&store, "Patient", "d2", at(3), vec![]).await;
    assert_eq!(ids(&store, &query("Patient", vec![])).await, vec!["c", "d2", "a", "b"]);
}

pub(crate) async fn sort_by_id_and_last_updated(store: Arc<dyn Store>) {
    create(&store, "Patient", "b", at(1), vec![]).await;
    create(&store, "Patient", "c", at(3), vec![]).await;
    create(&store, "Patient", "a", at(2), vec![]).await;
    assert_eq!(ids(&store, &sorted("Patient", &[("_id", false)])).await, vec!["a", "b", "c"]);
    assert_eq!(ids(&store, &sorted("Patient", &[("_id", true)])).await, vec!["c", "b", "a"]);
    assert_eq!(ids(&store, &sorted("Patient", &[("_lastUpdated", false)])).await, vec!["b", "a", "c"]);
    assert_eq!(ids(&store, &sorted("Patient", &[("_lastUpdated", true)])).await, vec!["c", "a", "b"]);
}

pub(crate) async fn sort_by_string_uses_lowest_or_highest(store: Arc<dyn Store>) {
    // Ascending sorts by a resource's lowest value, descending by its highest
    // (http://hl7.org/fhir/R4/search.html#sort).
    create(&store, "Patient", "am", at(1), vec![string("given", "Mia"), string("given", "Amy")]).await;
    create(&store, "Patient", "bz", at(2), vec![string("given", "Bea"), string("given", "Zoe")]).await;
    create(&store, "Patient", "c", at(3), vec![string("given", "Cara")]).await;
    assert_eq!(ids(&store, &sorted("Patient", &[("given", false)])).await, vec!["am", "bz", "c"]);
    assert_eq!(ids(&store, &sorted("Patient", &[("given", true)])).await, vec!["bz", "am", "c"]);
    // Case and accents do not affect the order.
    create(&store, "Patient", "accent", at(4), vec![string("given", "Ábel")]).await;
    assert_eq!(ids(&store, &sorted("Patient", &[("given", false)])).await, vec!["accent", "am", "bz", "c"]);
}

pub(crate) async fn sort_by_date_number_and_token(store: Arc<dyn Store>) {
    create(&store, "Observation", "early_long", at(1), vec![
        date("date", 100, 900),
        number("n", 5.0, 5.0),
        token("status", None, Some("final"), None),
    ])
    .await;
    create(&store, "Observation", "mid", at(2), vec![
        date("date", 200, 300),
        number("n", -1.5, -1.5),
        token("status", None, Some("amended"), None),
    ])
    .await;
    create(&store, "Observation", "late", at(3), vec![
        date("date", 400, 500),
        number("n", 10.0, 10.0),
        token("status", None, Some("preliminary"), None),
    ])
    .await;
    assert_eq!(ids(&store, &sorted("Observation", &[("date", false)])).await, vec!["early_long", "mid", "late"]);
    assert_eq!(ids(&store, &sorted("Observation", &[("date", true)])).await, vec!["early_long", "late", "mid"]);
    assert_eq!(ids(&store, &sorted("Observation", &[("n", false)])).await, vec!["mid", "early_long", "late"]);
    assert_eq!(ids(&store, &sorted("Observation", &[("n", true)])).await, vec!["late", "early_long", "mid"]);
    assert_eq!(ids(&store, &sorted("Observation", &[("status", false)])).await, vec!["mid", "early_long", "late"]);
    // A second key breaks ties of the first.
    create(&store, "Observation", "mid2", at(0), vec![token("status", None, Some("amended"), None), number("n", 7.0, 7.0)]).await;
    assert_eq!(
        ids(&store, &sorted("Observation", &[("status", false), ("n", true)])).await,
        vec!["mid2", "mid", "early_long", "late"]
    );
}

pub(crate) async fn sort_puts_missing_last(store: Arc<dyn Store>) {
    create(&store, "Patient", "none_new", at(5), vec![]).await;
    create(&store, "Patient", "b", at(1), vec![string("family", "B")]).await;
    create(&store, "Patient", "none_old", at(0), vec![]).await;
    create(&store, "Patient", "a", at(2), vec![string("family", "A")]).await;
    // Without a value: last in both directions, newest first among them.
    assert_eq!(ids(&store, &sorted("Patient", &[("family", false)])).await, vec!["a", "b", "none_new", "none_old"]);
    assert_eq!(ids(&store, &sorted("Patient", &[("family", true)])).await, vec!["b", "a", "none_new", "none_old"]);
    // A code nothing was indexed under leaves the default order.
    assert_eq!(ids(&store, &sorted("Patient", &[("unknown", false)])).await, vec!["none_new", "a", "b", "none_old"]);
}

pub(crate) async fn paging_with_count_and_offset(store: Arc<dyn Store>) {
    for i in 0..7 {
        create(&store, "Patient", &format!("p{i}"), at(i), vec![]).await;
    }
    let mut q = sorted("Patient", &[("_id", false)]);
    q.count = 3;
    assert_eq!(ids(&store, &q).await, vec!["p0", "p1", "p2"]);
    q.offset = 3;
    assert_eq!(ids(&store, &q).await, vec!["p3", "p4", "p5"]);
    q.offset = 6;
    assert_eq!(ids(&store, &q).await, vec!["p6"]);
    q.offset = 10;
    assert!(ids(&store, &q).await.is_empty());
    q.offset = 0;
    q.count = 0;
    assert!(ids(&store, &q).await.is_empty(), "_count=0 returns no entries");
}

pub(crate) async fn total_modes(store: Arc<dyn Store>) {
    for i in 0..5 {
        let gender = if i % 2 == 0 { "female" } else { "male" };
        create(&store, "Patient", &format!("p{i}"), at(i), vec![token("gender", None, Some(gender), None)]).await;
    }
    let mut q = query("Patient", vec![cond("gender", token_match(TokenSystem::Any, Some("female"), false))]);
    q.count = 1;
    assert_eq!(store.search(&q).await.expect("search").total, None);
    q.total = TotalMode::Accurate;
    let page = store.search(&q).await.expect("search");
    assert_eq!(page.total, Some(3));
    assert_eq!(page.items.len(), 1);
    q.total = TotalMode::Estimate;
    assert_eq!(store.search(&q).await.expect("search").total, Some(3));
    q.count = 0;
    q.total = TotalMode::Accurate;
    let page = store.search(&q).await.expect("search");
    assert!(page.items.is_empty());
    assert_eq!(page.total, Some(3));
}

pub(crate) async fn system_search_by_last_updated(store: Arc<dyn Store>) {
    create(&store, "Patient", "p", at(10), vec![]).await;
    create(&store, "Observation", "o", at(20), vec![]).await;
    create(&store, "Encounter", "e", at(30), vec![]).await;
    let q = SearchQuery {
        resource_type: None,
        filters: vec![Filter {
            any_of: vec![cond("_lastUpdated", Match::LastUpdated {
                prefix: Prefix::Ge,
                low: at(20).micros(),
                high: at(20).micros() + 999_999,
            })],
        }],
        count: 10,
        total: TotalMode::Accurate,
        ..SearchQuery::default()
    };
    let page = store.search(&q).await.expect("search");
    let found: Vec<&str> = page.items.iter().map(|r| r.resource_type.as_str()).collect();
    assert_eq!(found, vec!["Encounter", "Observation"]);
    assert_eq!(page.total, Some(2));
}
