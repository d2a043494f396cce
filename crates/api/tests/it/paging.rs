//! Stable paging (http://hl7.org/fhir/R4/search.html#paging): the pages of a
//! search stay the pages of the moment it ran while other clients create,
//! update and delete matching resources.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;

per_backend!(pages_stay_stable_while_others_write, expired_page_token_is_gone);

fn pager(n: usize) -> Value {
    json!({ "resourceType": "Patient", "name": [{ "family": "Pager", "given": [format!("P{n}")] }] })
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|e| e["resource"]["id"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"].as_array()?.iter().find(|l| l["relation"] == relation).and_then(|l| l["url"].as_str()).map(str::to_string)
}

async fn pages_stay_stable_while_others_write(s: Server) {
    let mut created = Vec::new();
    for n in 0..7 {
        created.push(s.create(pager(n)).await);
    }
    let first = fhir_body(s.get("Patient?family=pager&_count=3").await).await;
    let mut seen = ids(&first);
    assert_eq!(seen.len(), 3);
    let next = link(&first, "next").expect("a next link");
    assert!(next.contains("_page="), "{next}");
    // The token belongs to this search of Patients, not to another type's.
    let token = next.split("_page=").nth(1).and_then(|t| t.split('&').next()).unwrap().to_string();
    expect_outcome(s.get(&format!("Observation?_page={token}&_offset=3")).await, 410).await;
    // Newest first: the first page holds the three created last.
    assert_eq!(seen, created[4..].iter().rev().cloned().collect::<Vec<_>>());

    // Meanwhile: two new matches (they would push offset pages down), an
    // update of a shown one (it would move to the top) and a delete of one
    // not yet shown.
    s.create(pager(7)).await;
    s.create(pager(8)).await;
    let shown = &seen[0];
    let mut updated = pager(99);
    updated["id"] = json!(shown);
    assert_eq!(s.send_json(Method::PUT, &format!("Patient/{shown}"), &updated).send().await.unwrap().status(), 200);
    let deleted = created[0].clone();
    assert!(s.request(Method::DELETE, &format!("Patient/{deleted}")).send().await.unwrap().status().is_success());

    let mut url = Some(next);
    let mut pages = 1;
    while let Some(u) = url {
        let page = fhir_body(s.client.get(&u).send().await.unwrap()).await;
        assert_eq!(page["total"], 7, "the kept list's size");
        seen.extend(ids(&page));
        url = link(&page, "next");
        pages += 1;
        assert!(pages < 10);
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no resource twice: {seen:?}");
    let expected: HashSet<&String> = created.iter().filter(|id| **id != deleted).collect();
    assert_eq!(unique, expected, "every match of the moment but the deleted one, no newcomer");
    // A new search sees the new state.
    let fresh = fhir_body(s.get("Patient?family=pager&_count=20&_total=accurate").await).await;
    assert_eq!(fresh["total"], 8);
}

async fn expired_page_token_is_gone(s: Server) {
    let outcome = expect_outcome(s.get("Patient?_page=no-such-search&_offset=20").await, 410).await;
    assert_eq!(outcome["issue"][0]["expression"][0], "_page");
}
