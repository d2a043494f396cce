//! Search over GET and POST `_search`, system search, paging links and
//! `_summary`/`_elements` on results (<http://hl7.org/fhir/R4/search.html>).

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

per_backend!(
    type_search_returns_a_searchset,
    search_pages_with_links,
    post_search_merges_form_body_and_query,
    system_search_spans_types,
    handling_strict_and_lenient,
    summary_and_elements_on_search,
    contained_searches_over_http,
);

async fn three_patients(s: &Server) -> Vec<String> {
    let mut ids = Vec::new();
    for family in ["Searchable", "Searchable", "Searchable"] {
        ids.push(s.create(patient(family)).await);
    }
    s.create(patient("Other")).await;
    ids
}

fn entry_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default()
}

async fn type_search_returns_a_searchset(s: Server) {
    let ids = three_patients(&s).await;
    let bundle = fhir_body(s.get("Patient?family=Searchable&_total=accurate").await).await;
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 3);
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for entry in entries {
        let id = entry["resource"]["id"].as_str().unwrap();
        assert!(ids.iter().any(|i| i == id));
        assert_eq!(entry["fullUrl"], format!("{}/Patient/{id}", s.base));
        assert_eq!(entry["search"]["mode"], "match");
    }
    let self_link = link(&bundle, "self").unwrap();
    assert!(self_link.starts_with(&format!("{}/Patient?", s.base)), "{self_link}");
    assert!(self_link.contains("family=Searchable"), "{self_link}");
    assert!(link(&bundle, "next").is_none());
}

async fn search_pages_with_links(s: Server) {
    let ids = three_patients(&s).await;
    let page1 = fhir_body(s.get("Patient?family=Searchable&_count=2&_total=accurate").await).await;
    assert_eq!(entry_ids(&page1).len(), 2);
    assert!(link(&page1, "previous").is_none());
    let next = link(&page1, "next").expect("next link");
    assert!(next.contains("_offset=2") && next.contains("_count=2"), "{next}");

    let page2 = fhir_body(s.client.get(&next).send().await.unwrap()).await;
    assert_eq!(entry_ids(&page2).len(), 1);
    assert!(link(&page2, "next").is_none());
    assert!(link(&page2, "previous").is_some());
    let mut seen: Vec<String> = entry_ids(&page1).into_iter().chain(entry_ids(&page2)).collect();
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);

    let first = fhir_body(s.client.get(link(&page2, "first").unwrap()).send().await.unwrap()).await;
    assert_eq!(entry_ids(&first), entry_ids(&page1));
}

async fn post_search_merges_form_body_and_query(s: Server) {
    three_patients(&s).await;
    let response = s
        .request(Method::POST, "Patient/_search?_total=accurate")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("family=Searchable&_count=10")
        .send()
        .await
        .unwrap();
    let bundle = fhir_body(response).await;
    assert_eq!(bundle["total"], 3);
    assert_eq!(entry_ids(&bundle).len(), 3);

    let json_body = s
        .request(Method::POST, "Patient/_search")
        .header("content-type", "application/fhir+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_outcome(json_body, 415).await;
    // GET on _search is not an interaction.
    expect_outcome(s.get("Patient/_search").await, 405).await;
}

async fn system_search_spans_types(s: Server) {
    s.create(patient("Sys")).await;
    s.create(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})).await;
    let all = fhir_body(s.get("?_total=accurate").await).await;
    assert_eq!(all["type"], "searchset");
    assert_eq!(all["total"], 2);
    let only = fhir_body(s.get("?_type=Observation&_total=accurate").await).await;
    assert_eq!(only["total"], 1);
    assert_eq!(only["entry"][0]["resource"]["resourceType"], "Observation");
    // The base without a trailing slash is the same endpoint.
    let response = s.client.get(format!("{}?_total=accurate", s.base)).send().await.unwrap();
    assert_eq!(fhir_body(response).await["total"], 2);
    let posted = s
        .request(Method::POST, "_search")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_type=Patient&_total=accurate")
        .send()
        .await
        .unwrap();
    assert_eq!(fhir_body(posted).await["total"], 1);
}

async fn handling_strict_and_lenient(s: Server) {
    three_patients(&s).await;
    expect_outcome(s.get("Patient?not-a-param=1").await, 400).await;
    let lenient = s.request(Method::GET, "Patient?not-a-param=1").header("prefer", "handling=lenient").send().await.unwrap();
    assert_eq!(lenient.status(), 200);
    assert_eq!(fhir_body(lenient).await["type"], "searchset");
    let strict = s.request(Method::GET, "Patient?not-a-param=1").header("prefer", "handling=strict").send().await.unwrap();
    expect_outcome(strict, 400).await;
    expect_outcome(s.get("NotAType?name=x").await, 404).await;
}

async fn summary_and_elements_on_search(s: Server) {
    three_patients(&s).await;
    let count = fhir_body(s.get("Patient?family=Searchable&_summary=count").await).await;
    assert_eq!(count["total"], 3);
    assert!(count.get("entry").is_none());

    let summary = fhir_body(s.get("Patient?family=Searchable&_summary=true&_count=2").await).await;
    let entries = summary["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for e in entries {
        assert!(e["resource"].get("text").is_none());
        assert_eq!(e["resource"]["meta"]["tag"][0]["code"], "SUBSETTED");
    }
    // Paging links keep the subsetting.
    assert!(link(&summary, "next").unwrap().contains("_summary=true"));

    let elements = fhir_body(s.get("Patient?family=Searchable&_elements=gender").await).await;
    for e in elements["entry"].as_array().unwrap() {
        assert_eq!(e["resource"]["gender"], "unknown");
        assert!(e["resource"].get("name").is_none());
    }
    expect_outcome(s.get("Patient?_summary=sometimes").await, 400).await;
}

/// `_contained` and `_containedType` (search.html#contained): a contained
/// match is the contained resource at its container's URL + `#id`, a
/// container is itself; both are `search.mode = match`; updates and deletes
/// of the container carry its contained resources along.
async fn contained_searches_over_http(s: Server) {
    let request = |code: &str| {
        json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/p1"},
               "contained": [{"resourceType": "Medication", "id": "med",
                              "code": {"coding": [{"system": "http://example.org/med", "code": code}]}}],
               "medicationReference": {"reference": "#med"}})
    };
    let mr = s.create(request("A")).await;
    let contained = fhir_body(s.get("Medication?code=A&_contained=true&_containedType=contained").await).await;
    let entries = contained["entry"].as_array().expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["fullUrl"], format!("{}/MedicationRequest/{mr}#med", s.base));
    assert_eq!(entries[0]["search"]["mode"], "match");
    assert_eq!(entries[0]["resource"], json!({"resourceType": "Medication", "id": "med",
        "code": {"coding": [{"system": "http://example.org/med", "code": "A"}]}}));
    // `_summary` and `_elements` apply to the contained resource's type.
    let subset = fhir_body(s.get("Medication?code=A&_contained=true&_containedType=contained&_elements=code").await).await;
    assert_eq!(subset["entry"][0]["resource"]["code"]["coding"][0]["code"], "A");
    assert_eq!(subset["entry"][0]["resource"]["resourceType"], "Medication");

    let container = fhir_body(s.get("Medication?code=A&_contained=both&_total=accurate").await).await;
    assert_eq!(container["total"], 1);
    assert_eq!(container["entry"][0]["fullUrl"], format!("{}/MedicationRequest/{mr}", s.base));
    assert_eq!(container["entry"][0]["resource"]["resourceType"], "MedicationRequest");
    assert_eq!(container["entry"][0]["search"]["mode"], "match");
    let self_link = link(&container, "self").expect("self link");
    assert!(self_link.contains("_contained=both"), "{self_link}");

    // Not searched by default, nor counted.
    let plain = fhir_body(s.get("Medication?code=A&_summary=count").await).await;
    assert_eq!(plain["total"], 0);

    // An update replaces the contained resources; a delete removes them.
    let mut changed = request("B");
    changed["id"] = json!(mr);
    let response = s.send_json(Method::PUT, &format!("MedicationRequest/{mr}"), &changed).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let old = fhir_body(s.get("Medication?code=A&_contained=true").await).await;
    assert!(old["entry"].as_array().is_none_or(|e| e.is_empty()), "{old}");
    let new = fhir_body(s.get("Medication?code=B&_contained=true").await).await;
    assert_eq!(new["entry"][0]["resource"]["meta"]["versionId"], "2");
    let response = s.request(Method::DELETE, &format!("MedicationRequest/{mr}")).send().await.unwrap();
    assert!(response.status().is_success());
    let gone = fhir_body(s.get("Medication?code=B&_contained=both").await).await;
    assert!(gone["entry"].as_array().is_none_or(|e| e.is_empty()), "{gone}");

    // Bad values are refused with an OperationOutcome.
    let outcome = expect_outcome(s.get("Medication?_contained=sometimes").await, 400).await;
    assert_eq!(outcome["issue"][0]["expression"][0], "_contained");
    let outcome = expect_outcome(s.get("Medication?_contained=true&_sort=code").await, 400).await;
    assert_eq!(outcome["issue"][0]["code"], "not-supported");
}
