//! Chained parameters and reverse chaining (`Match::Chain`, `Match::Has`):
//! <http://hl7.org/fhir/R4/search.html#chaining> and #has. The referenced
//! (or referring) resource must be current and not deleted; its own index
//! rows decide, with any matcher, nested to any depth.

use crate::harness::*;
use domain::store::{Check, Store};
use fhir::search::query::{Condition, Filter, Match, Prefix, SearchQuery, StringMode, TokenSystem};
use std::sync::Arc;

fn name(value: &str) -> Condition {
    cond("name", Match::String { value: value.into(), mode: StringMode::Prefix })
}

fn code(value: &str) -> Condition {
    cond("code", Match::Token { system: TokenSystem::Any, code: Some(value.into()), negate: false })
}

/// The index row `code` would find.
fn coded(value: &str) -> fhir::search::IndexEntry {
    token("code", None, Some(value), None)
}

fn chain(param: &str, types: &[&str], inner: Vec<Condition>) -> Condition {
    cond(param, Match::Chain { target_types: types.iter().map(|t| t.to_string()).collect(), inner })
}

fn has(source_type: &str, param: &str, inner: Vec<Condition>) -> Condition {
    cond(param, Match::Has { source_type: source_type.into(), inner })
}

/// Patients p1 (Smith), p2 (Jones), p3 (Smith, deleted); Group g1 (Smith);
/// observations referring to each, and to a patient that does not exist.
async fn subjects(store: &Arc<dyn Store>) {
    create(store, "Patient", "p1", at(1), vec![string("name", "Smith"), date("birthdate", 0, 10)]).await;
    create(store, "Patient", "p2", at(2), vec![string("name", "Jones")]).await;
    create(store, "Patient", "p3", at(3), vec![string("name", "Smith")]).await;
    store.commit(commit(vec![delete("Patient", "p3", 2, at(4))])).await.expect("delete");
    create(store, "Group", "g1", at(5), vec![string("name", "Smith")]).await;
    create(store, "Observation", "o1", at(6), vec![reference("subject", "Patient", "p1"), coded("a")]).await;
    create(store, "Observation", "o2", at(7), vec![reference("subject", "Patient", "p2"), coded("b")]).await;
    create(store, "Observation", "o3", at(8), vec![reference("subject", "Group", "g1")]).await;
    create(store, "Observation", "o4", at(9), vec![reference("subject", "Patient", "nobody")]).await;
    create(store, "Observation", "o5", at(10), vec![reference("subject", "Patient", "p3")]).await;
    // Same id as p1, other type: a typed chain must not follow it.
    create(store, "Observation", "o6", at(11), vec![reference("subject", "Group", "p1")]).await;
}

pub(crate) async fn chain_follows_references_of_the_named_types(store: Arc<dyn Store>) {
    subjects(&store).await;
    let q = |types: &[&str], inner: Vec<Condition>| query("Observation", vec![chain("subject", types, inner)]);
    assert_eq!(id_set(&store, &q(&["Patient"], vec![name("smi")])).await, strs(&["o1"]), "deleted p3 is not followed");
    assert_eq!(id_set(&store, &q(&["Patient", "Group"], vec![name("smith")])).await, strs(&["o1", "o3"]));
    assert_eq!(id_set(&store, &q(&["Group"], vec![name("smith")])).await, strs(&["o3"]));
    // Comma is OR inside the chain.
    assert_eq!(id_set(&store, &q(&["Patient"], vec![name("smith"), name("jones")])).await, strs(&["o1", "o2"]));
    assert!(id_set(&store, &q(&["Patient"], vec![name("nobody")])).await.is_empty());
    assert!(id_set(&store, &q(&[], vec![name("smith")])).await.is_empty(), "no target type: nothing");
    // Any matcher ends a chain: _id, :missing, a date.
    assert_eq!(id_set(&store, &q(&["Patient"], vec![cond("_id", Match::Id("p2".into()))])).await, strs(&["o2"]));
    assert_eq!(id_set(&store, &q(&["Patient"], vec![cond("birthdate", Match::Missing(true))])).await, strs(&["o2"]));
    let born = cond("birthdate", Match::Date { prefix: Prefix::Le, low: 5, high: 5 });
    assert_eq!(id_set(&store, &q(&["Patient"], vec![born])).await, strs(&["o1"]));
}

pub(crate) async fn chain_combines_with_other_filters(store: Arc<dyn Store>) {
    subjects(&store).await;
    let mut q = query("Observation", vec![chain("subject", &["Patient"], vec![name("smith"), name("jones")])]);
    q.filters.push(Filter { any_of: vec![code("b")] });
    assert_eq!(ids(&store, &q).await, strs(&["o2"]));
    // A chain OR a plain condition in one filter.
    let q = SearchQuery {
        filters: vec![Filter { any_of: vec![chain("subject", &["Group"], vec![name("smith")]), code("a")] }],
        ..query("Observation", vec![])
    };
    assert_eq!(id_set(&store, &q).await, strs(&["o1", "o3"]));
}

pub(crate) async fn chains_nest_to_any_depth(store: Arc<dyn Store>) {
    create(&store, "Organization", "acme", at(1), vec![string("name", "Acme Health")]).await;
    create(&store, "Organization", "other", at(2), vec![string("name", "Other")]).await;
    create(&store, "Patient", "p1", at(3), vec![reference("organization", "Organization", "acme")]).await;
    create(&store, "Patient", "p2", at(4), vec![reference("organization", "Organization", "other")]).await;
    create(&store, "Encounter", "e1", at(5), vec![reference("patient", "Patient", "p1")]).await;
    create(&store, "Encounter", "e2", at(6), vec![reference("patient", "Patient", "p2")]).await;
    create(&store, "Observation", "x1", at(7), vec![reference("encounter", "Encounter", "e1")]).await;
    create(&store, "Observation", "x2", at(8), vec![reference("encounter", "Encounter", "e2")]).await;
    let org = |n: &str| chain("organization", &["Organization"], vec![name(n)]);
    let depth2 = query("Encounter", vec![chain("patient", &["Patient"], vec![org("acme")])]);
    assert_eq!(ids(&store, &depth2).await, strs(&["e1"]));
    let depth3 = query(
        "Observation",
        vec![chain("encounter", &["Encounter"], vec![chain("patient", &["Patient"], vec![org("other")])])],
    );
    assert_eq!(ids(&store, &depth3).await, strs(&["x2"]));
    // An update of the far end changes what the chain finds.
    store
        .commit(commit(vec![write("Organization", "other", 2, at(9), vec![string("name", "Acme Two")])]))
        .await
        .expect("update");
    let depth3 = query(
        "Observation",
        vec![chain("encounter", &["Encounter"], vec![chain("patient", &["Patient"], vec![org("acme")])])],
    );
    assert_eq!(id_set(&store, &depth3).await, strs(&["x1", "x2"]));
}

/// Patients p1, p2, p3 and Group p1; observations with codes referring to
/// them through `patient`; an AuditEvent about o2 by Practitioner dr1.
async fn referrers(store: &Arc<dyn Store>) {
    create(store, "Patient", "p1", at(1), vec![]).await;
    create(store, "Patient", "p2", at(2), vec![]).await;
    create(store, "Patient", "p3", at(3), vec![]).await;
    create(store, "Group", "p1", at(4), vec![]).await;
    create(store, "Observation", "o1", at(5), vec![reference("patient", "Patient", "p1"), coded("1234")]).await;
    create(store, "Observation", "o2", at(6), vec![reference("patient", "Patient", "p2"), coded("999")]).await;
    create(store, "Observation", "o3", at(7), vec![reference("patient", "Patient", "p3"), coded("1234")]).await;
    store.commit(commit(vec![delete("Observation", "o3", 2, at(8))])).await.expect("delete");
    create(store, "Observation", "o4", at(9), vec![reference("patient", "Group", "p1"), coded("777")]).await;
    create(
        store,
        "AuditEvent",
        "ae1",
        at(10),
        vec![reference("entity", "Observation", "o2"), reference("agent", "Practitioner", "dr1")],
    )
    .await;
}

pub(crate) async fn has_finds_resources_referred_to_by_matching_ones(store: Arc<dyn Store>) {
    referrers(&store).await;
    let q = |inner: Vec<Condition>| query("Patient", vec![has("Observation", "patient", inner)]);
    assert_eq!(ids(&store, &q(vec![code("1234")])).await, strs(&["p1"]), "the deleted o3 does not count");
    assert_eq!(id_set(&store, &q(vec![code("1234"), code("999")])).await, strs(&["p1", "p2"]));
    assert!(ids(&store, &q(vec![code("777")])).await.is_empty(), "o4 refers to Group/p1, not Patient/p1");
    assert!(ids(&store, &query("Patient", vec![has("Observation", "subject", vec![code("1234")])])).await.is_empty());
    assert!(ids(&store, &query("Patient", vec![has("Encounter", "patient", vec![code("1234")])])).await.is_empty());
    // A search of every type finds each referred resource under its own type.
    let mut all = q(vec![code("1234"), code("777")]);
    all.resource_type = None;
    let found: Vec<(String, String)> =
        store.search(&all).await.expect("search").items.into_iter().map(|r| (r.resource_type, r.id)).collect();
    let mut found = found;
    found.sort();
    assert_eq!(found, vec![("Group".into(), "p1".into()), ("Patient".into(), "p1".into())]);
}

pub(crate) async fn has_nests_and_ends_with_any_condition(store: Arc<dyn Store>) {
    referrers(&store).await;
    let agent = cond("agent", Match::Reference { target_type: Some("Practitioner".into()), id: "dr1".into() });
    let nested = query("Patient", vec![has("Observation", "patient", vec![has("AuditEvent", "entity", vec![agent])])]);
    assert_eq!(ids(&store, &nested).await, strs(&["p2"]));
    let other = cond("agent", Match::Reference { target_type: None, id: "dr2".into() });
    let nested = query("Patient", vec![has("Observation", "patient", vec![has("AuditEvent", "entity", vec![other])])]);
    assert!(ids(&store, &nested).await.is_empty());
    // The end of a _has may be a chain.
    create(&store, "Practitioner", "dr1", at(11), vec![string("name", "House")]).await;
    let by_name = chain("agent", &["Practitioner"], vec![name("house")]);
    let chained = query("Observation", vec![has("AuditEvent", "entity", vec![by_name])]);
    assert_eq!(ids(&store, &chained).await, strs(&["o2"]));
    // And a chain may end with a _has: observations of patients that some
    // observation with code 999 refers to.
    let q = query(
        "Observation",
        vec![chain("patient", &["Patient"], vec![has("Observation", "patient", vec![code("999")])])],
    );
    assert_eq!(ids(&store, &q).await, strs(&["o2"]));
}

pub(crate) async fn chains_in_conditional_checks(store: Arc<dyn Store>) {
    subjects(&store).await;
    let q = query("Observation", vec![chain("subject", &["Patient"], vec![name("smith")])]);
    let check = |ids: &[&str]| Check::Matches { query: q.clone(), ids: ids.iter().map(|s| s.to_string()).collect() };
    store.commit(checked(vec![check(&["o1"])], vec![])).await.expect("the matching set is o1");
    assert!(store.commit(checked(vec![check(&[])], vec![])).await.is_err(), "o1 matches");
    // A new Smith makes o2 match too.
    store
        .commit(commit(vec![write("Patient", "p2", 2, at(20), vec![string("name", "Smithers")])]))
        .await
        .expect("update");
    store.commit(checked(vec![check(&["o1", "o2"])], vec![])).await.expect("o1 and o2 now");
}

pub(crate) async fn has_with_conditions_that_are_not_index_lookups(store: Arc<dyn Store>) {
    referrers(&store).await;
    let q = |inner: Vec<Condition>| query("Patient", vec![has("Observation", "patient", inner)]);
    assert_eq!(ids(&store, &q(vec![cond("_id", Match::Id("o2".into()))])).await, strs(&["p2"]));
    // :not — observations of p1 and p2 are current; o3 (p3) is deleted.
    let not_1234 = cond("code", Match::Token { system: TokenSystem::Any, code: Some("1234".into()), negate: true });
    assert_eq!(ids(&store, &q(vec![not_1234])).await, strs(&["p2"]));
    assert_eq!(id_set(&store, &q(vec![cond("value-quantity", Match::Missing(true))])).await, strs(&["p1", "p2"]));
    let recent =
        cond("_lastUpdated", Match::LastUpdated { prefix: Prefix::Ge, low: at(6).micros(), high: at(6).micros() });
    assert_eq!(ids(&store, &q(vec![recent])).await, strs(&["p2"]));
    // An index lookup OR a condition that is not one.
    assert_eq!(id_set(&store, &q(vec![code("1234"), cond("_id", Match::Id("o2".into()))])).await, strs(&["p1", "p2"]));
}
