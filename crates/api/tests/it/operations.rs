//! Compartment search, `Patient/[id]/$everything` and `Observation/$lastn` over HTTP on
//! every backend, and their CapabilityStatement entries.

use crate::support::*;
use domain::Service;
use domain::memory::MemoryStore;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

per_backend!(
    compartment_search_returns_a_paged_searchset,
    compartment_search_errors_are_outcomes,
    everything_pages_through_the_record_in_a_stable_order,
    everything_by_post_takes_parameters,
    everything_errors_are_outcomes,
    lastn_returns_the_newest_per_code,
);

/// PUTs a resource under a chosen id.
async fn put(s: &Server, mut body: Value, id: &str) {
    let rt = body["resourceType"].as_str().unwrap().to_string();
    body["id"] = json!(id);
    let response = s.send_json(Method::PUT, &format!("{rt}/{id}"), &body).send().await.unwrap();
    assert!(response.status().is_success(), "PUT {rt}/{id}: {}", response.text().await.unwrap_or_default());
}

fn observation(subject: &str, code: &str, date: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": date
    })
}

/// p1 with a Condition, a Goal and three Observations (o3 only as performer); p2 with one.
async fn record(s: &Server) {
    put(s, patient("One"), "p1").await;
    put(s, patient("Two"), "p2").await;
    put(s, json!({"resourceType": "Condition", "subject": {"reference": "Patient/p1"}, "code": {"text": "x"}}), "c1").await;
    let goal = json!({"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "walk"},
                      "subject": {"reference": "Patient/p1"}});
    put(s, goal, "g1").await;
    put(s, observation("Patient/p1", "glucose", "2020-01-01"), "o1").await;
    put(s, observation("Patient/p1", "glucose", "2021-06-01"), "o2").await;
    let mut o3 = observation("Patient/p2", "pulse", "2022-02-02");
    o3["performer"] = json!([{"reference": "Patient/p1"}]);
    put(s, o3, "o3").await;
    put(s, observation("Patient/p2", "glucose", "2022-03-03"), "o4").await;
}

/// `Type/id` of each entry, checking each entry's fullUrl and search mode.
fn entries(s: &Server, bundle: &Value) -> Vec<String> {
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    let list = bundle["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .map(|e| {
            let r = format!("{}/{}", e["resource"]["resourceType"].as_str().unwrap(), e["resource"]["id"].as_str().unwrap());
            assert_eq!(e["fullUrl"], format!("{}/{r}", s.base));
            assert_eq!(e["search"]["mode"], "match");
            r
        })
        .collect()
}

async fn compartment_search_returns_a_paged_searchset(s: Server) {
    record(&s).await;
    let bundle = fhir_body(s.get("Patient/p1/Observation?_sort=_id&_total=accurate").await).await;
    assert_eq!(entries(&s, &bundle), ["Observation/o1", "Observation/o2", "Observation/o3"]);
    assert_eq!(bundle["total"], 3);
    let self_link = link(&bundle, "self").unwrap();
    assert!(self_link.starts_with(&format!("{}/Patient/p1/Observation?", s.base)), "{self_link}");

    let coded = fhir_body(s.get("Patient/p1/Observation?code=glucose&_sort=_id").await).await;
    assert_eq!(entries(&s, &coded), ["Observation/o1", "Observation/o2"]);

    // Paging links stay inside the compartment.
    let page1 = fhir_body(s.get("Patient/p1/Observation?_sort=_id&_count=2").await).await;
    assert_eq!(entries(&s, &page1), ["Observation/o1", "Observation/o2"]);
    let next = link(&page1, "next").expect("next link");
    assert!(next.starts_with(&format!("{}/Patient/p1/Observation?", s.base)) && next.contains("_offset=2"), "{next}");
    let page2 = fhir_body(s.client.get(&next).send().await.unwrap()).await;
    assert_eq!(entries(&s, &page2), ["Observation/o3"]);

    // `_summary=count` and `_elements` behave as in any search.
    let counted = fhir_body(s.get("Patient/p1/Observation?_summary=count").await).await;
    assert_eq!(counted["total"], 3);
    assert!(counted.get("entry").is_none());
    let elements = fhir_body(s.get("Patient/p1/Observation?_elements=status&_sort=_id").await).await;
    assert!(elements["entry"][0]["resource"].get("category").is_none());
    assert_eq!(elements["entry"][0]["resource"]["status"], "final");

    // The Encounter compartment, through `{def}`: the encounter itself.
    let encounter = json!({"resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}});
    put(&s, encounter, "e1").await;
    let own = fhir_body(s.get("Encounter/e1/Encounter").await).await;
    assert_eq!(entries(&s, &own), ["Encounter/e1"]);

    // Existing routes at the same depth are untouched.
    assert_eq!(s.get("Patient/p1/_history").await.status(), 200);
    assert_eq!(s.get("Patient/p1/_history/1").await.status(), 200);
    assert_eq!(s.get("Observation/o1").await.status(), 200);
}

async fn compartment_search_errors_are_outcomes(s: Server) {
    record(&s).await;
    // A type outside the compartment: 400.
    let outcome = expect_outcome(s.get("Patient/p1/Organization").await, 400).await;
    assert!(diagnostics(&outcome).contains("not in the Patient compartment"), "{outcome}");
    // Not a compartment type, or not a resource type: no such endpoint.
    expect_outcome(s.get("Observation/o1/Patient").await, 404).await;
    expect_outcome(s.get("Patient/p1/Nonsense").await, 404).await;
    expect_outcome(s.get("Patient/p1/Observation?nonsense=1").await, 400).await;
    let lenient = s.request(Method::GET, "Patient/p1/Observation?nonsense=1").header("prefer", "handling=lenient");
    assert_eq!(lenient.send().await.unwrap().status(), 200);
    expect_outcome(s.get("Patient/p1/$nonsense").await, 404).await;
    expect_outcome(s.request(Method::POST, "Patient/p1/Observation").send().await.unwrap(), 405).await;
}

async fn everything_pages_through_the_record_in_a_stable_order(s: Server) {
    record(&s).await;
    let expected = ["Patient/p1", "Condition/c1", "Goal/g1", "Observation/o1", "Observation/o2", "Observation/o3"];
    let all = fhir_body(s.get("Patient/p1/$everything").await).await;
    assert_eq!(entries(&s, &all), expected);
    assert_eq!(all["total"], 6);
    assert!(link(&all, "next").is_none());

    // Pages of 4 then 2, following the next link.
    let page1 = fhir_body(s.get("Patient/p1/$everything?_count=4").await).await;
    assert_eq!(entries(&s, &page1), expected[..4]);
    assert_eq!(page1["total"], 6);
    let self_link = link(&page1, "self").unwrap();
    assert!(self_link.starts_with(&format!("{}/Patient/p1/$everything?", s.base)), "{self_link}");
    let next = link(&page1, "next").expect("next link");
    assert!(next.contains("_offset=4") && next.contains("_count=4"), "{next}");
    let page2 = fhir_body(s.client.get(&next).send().await.unwrap()).await;
    assert_eq!(entries(&s, &page2), expected[4..]);
    assert!(link(&page2, "next").is_none());
    assert!(link(&page2, "previous").is_some());

    // Filters carry over into the links.
    let typed = fhir_body(s.get("Patient/p1/$everything?_type=Observation&_count=2").await).await;
    assert_eq!(entries(&s, &typed), ["Observation/o1", "Observation/o2"]);
    let next = link(&typed, "next").unwrap();
    assert!(next.contains("_type=Observation"), "{next}");
    assert_eq!(entries(&s, &fhir_body(s.client.get(&next).send().await.unwrap()).await), ["Observation/o3"]);

    let dated = fhir_body(s.get("Patient/p1/$everything?start=2021-01-01&end=2021-12-31").await).await;
    assert_eq!(entries(&s, &dated), ["Patient/p1", "Condition/c1", "Goal/g1", "Observation/o2"]);

    let counted = fhir_body(s.get("Patient/p1/$everything?_summary=count").await).await;
    assert_eq!(counted["total"], 6);
    assert!(counted.get("entry").is_none());
}

async fn everything_by_post_takes_parameters(s: Server) {
    record(&s).await;
    let parameters = json!({"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueCode": "Patient,Goal"},
        {"name": "_count", "valueInteger": 1}
    ]});
    let response = s.send_json(Method::POST, "Patient/p1/$everything", &parameters).send().await.unwrap();
    let bundle = fhir_body(response).await;
    assert_eq!(entries(&s, &bundle), ["Patient/p1"]);
    // The next link is a GET carrying the body's parameters.
    let next = link(&bundle, "next").unwrap();
    assert!(next.contains("_type=Patient%2CGoal"), "{next}");
    assert_eq!(entries(&s, &fhir_body(s.client.get(&next).send().await.unwrap()).await), ["Goal/g1"]);

    let form = s
        .request(Method::POST, "Patient/p1/$everything")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_type=Condition")
        .send()
        .await
        .unwrap();
    assert_eq!(entries(&s, &fhir_body(form).await), ["Condition/c1"]);
    let empty = s.request(Method::POST, "Patient/p1/$everything").send().await.unwrap();
    assert_eq!(fhir_body(empty).await["total"], 6);

    let not_parameters = s.send_json(Method::POST, "Patient/p1/$everything", &patient("X")).send().await.unwrap();
    expect_outcome(not_parameters, 400).await;
    let nested = json!({"resourceType": "Parameters", "parameter": [{"name": "_type", "part": []}]});
    expect_outcome(s.send_json(Method::POST, "Patient/p1/$everything", &nested).send().await.unwrap(), 400).await;
}

async fn everything_errors_are_outcomes(s: Server) {
    record(&s).await;
    let outcome = expect_outcome(s.get("Patient/nobody/$everything").await, 404).await;
    assert_eq!(outcome["issue"][0]["code"], "not-found");
    expect_outcome(s.send_json(Method::POST, "Patient/nobody/$everything", &json!({"resourceType": "Parameters"})).send().await.unwrap(), 404).await;
    let bad_type = expect_outcome(s.get("Patient/p1/$everything?_type=Medication").await, 400).await;
    assert_eq!(bad_type["issue"][0]["expression"][0], "_type");
    expect_outcome(s.get("Patient/p1/$everything?start=soon").await, 400).await;
    expect_outcome(s.get("Patient/p1/$everything?color=blue").await, 400).await;
    expect_outcome(s.get("Observation/o1/$everything").await, 404).await;
    let response = s.request(Method::DELETE, "Patient/p2").send().await.unwrap();
    assert_eq!(response.status(), 204);
    expect_outcome(s.get("Patient/p2/$everything").await, 410).await;
}

async fn lastn_returns_the_newest_per_code(s: Server) {
    record(&s).await;
    put(&s, observation("Patient/p1", "pulse", "2019-05-05"), "o5").await;
    let ids = |bundle: &Value| entries(&s, bundle);

    // Newest per code: glucose o2 (2021), pulse o5; o3 is p2's subject.
    let one = fhir_body(s.get("Observation/$lastn?patient=p1").await).await;
    assert_eq!(ids(&one), ["Observation/o2", "Observation/o5"]);
    assert_eq!(one["total"], 2);
    let self_link = link(&one, "self").unwrap();
    assert!(self_link.starts_with(&format!("{}/Observation/$lastn?", s.base)), "{self_link}");

    let two = fhir_body(s.get("Observation/$lastn?subject=Patient/p1&max=2&code=glucose").await).await;
    assert_eq!(ids(&two), ["Observation/o2", "Observation/o1"]);
    assert!(link(&two, "self").unwrap().contains("max=2"));

    let parameters = json!({"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueString": "p1"}, {"name": "max", "valueInteger": 5}, {"name": "category", "valueString": "laboratory"}
    ]});
    let posted = fhir_body(s.send_json(Method::POST, "Observation/$lastn", &parameters).send().await.unwrap()).await;
    assert_eq!(ids(&posted), ["Observation/o2", "Observation/o1", "Observation/o5"]);

    let none = fhir_body(s.get("Observation/$lastn?patient=nobody").await).await;
    assert_eq!(none["total"], 0);
    assert!(none.get("entry").is_none());

    expect_outcome(s.get("Observation/$lastn?code=glucose").await, 400).await;
    expect_outcome(s.get("Observation/$lastn?patient=p1&max=0").await, 400).await;
    expect_outcome(s.get("Observation/$lastn?patient=p1&_sort=date").await, 400).await;
    // The other Observation endpoints are untouched by the operation's route.
    assert_eq!(s.get("Observation/o1").await.status(), 200);
    assert_eq!(s.get("Observation/o1/_history").await.status(), 200);
    assert_eq!(s.get("Observation/_history").await.status(), 200);
    assert_eq!(s.get("Observation?code=pulse").await.status(), 200);
    let posted = s
        .request(Method::POST, "Observation/_search")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("code=pulse")
        .send()
        .await
        .unwrap();
    assert_eq!(entries(&s, &fhir_body(posted).await).len(), 2);
}

#[tokio::test]
async fn capability_statement_lists_the_operations_and_compartments() {
    let s = Server::start().await;
    let cs = fhir_body(s.get("metadata").await).await;
    let rest = &cs["rest"][0];
    let compartments: Vec<&str> = rest["compartment"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(compartments.contains(&"http://hl7.org/fhir/CompartmentDefinition/patient"), "{compartments:?}");
    assert_eq!(compartments.len(), 5);
    let resource = |t: &str| rest["resource"].as_array().unwrap().iter().find(|r| r["type"] == t).unwrap().clone();
    assert_eq!(
        resource("Patient")["operation"],
        json!([{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}])
    );
    assert_eq!(
        resource("Observation")["operation"],
        json!([{"name": "lastn", "definition": "http://hl7.org/fhir/OperationDefinition/Observation-lastn"}])
    );
    assert!(resource("Condition").get("operation").is_none());
}

/// A large record: 3,000 resources for one patient among 3,000 of other patients. The
/// first page of `$everything` (the default page: the largest) and a later small page
/// are timed; run in release mode to measure (`cargo test --release -p api --test it
/// everything_on_a_large_record -- --nocapture`). The bound asserted here is loose so a
/// debug build on a busy machine passes; the release numbers are in the test's output.
#[tokio::test]
async fn everything_on_a_large_record() {
    let store = Arc::new(MemoryStore::new());
    let loader = Service::new(store.clone());
    let mut resources = vec![json!({"resourceType": "Patient", "id": "big", "active": true})];
    for other in 0..10 {
        resources.push(json!({"resourceType": "Patient", "id": format!("other{other}"), "active": true}));
    }
    let kinds = ["Observation", "Observation", "Observation", "Condition", "Encounter", "Procedure"];
    for i in 0..6000 {
        // Blocks of six (three Observations, a Condition, an Encounter, a Procedure)
        // alternate between the patient and the others.
        let subject = if (i / 6) % 2 == 0 { "Patient/big".to_string() } else { format!("Patient/other{}", i % 10) };
        let date = format!("20{:02}-{:02}-{:02}", 10 + i % 15, 1 + i % 12, 1 + i % 28);
        let resource = match kinds[i % kinds.len()] {
            "Observation" => observation(&subject, &format!("code{}", i % 40), &date),
            "Condition" => json!({"resourceType": "Condition", "subject": {"reference": subject}, "code": {"text": "c"},
                                  "recordedDate": date}),
            "Encounter" => json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": subject}, "period": {"start": date}}),
            _ => json!({"resourceType": "Procedure", "status": "completed", "subject": {"reference": subject},
                        "performedDateTime": date}),
        };
        let mut resource = resource;
        resource["id"] = json!(format!("r{i:05}"));
        resources.push(resource);
    }
    let loaded = loader.load(&domain::access::Access::system("test-load"), resources).await;
    assert!(loaded.iter().all(Result::is_ok));
    let s = Server::with_store(store).await;

    let started = std::time::Instant::now();
    let response = s.get("Patient/big/$everything").await;
    let first = fhir_body(response).await;
    let first_page = started.elapsed();
    assert_eq!(first["total"], 3001);
    let entries = first["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 1000);
    assert_eq!(entries[0]["resource"]["id"], "big");
    assert_eq!(entries[1]["resource"]["resourceType"], "Condition");

    let started = std::time::Instant::now();
    let late = fhir_body(s.get("Patient/big/$everything?_count=20&_offset=2990").await).await;
    let late_page = started.elapsed();
    let late_entries = late["entry"].as_array().unwrap();
    assert_eq!(late_entries.len(), 11);
    assert_eq!(late_entries[10]["resource"]["resourceType"], "Procedure");
    assert!(link(&late, "next").is_none());

    eprintln!("$everything, 3,001 resources in the record (6,011 stored): first page (1,000 entries) {first_page:?}, page of 20 at offset 2,990 {late_page:?}");
    assert!(first_page.as_secs() < 10 && late_page.as_secs() < 10);
}
