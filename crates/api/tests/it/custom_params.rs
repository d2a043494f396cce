//! Custom SearchParameter resources and `$reindex`
//! (<http://hl7.org/fhir/R4/searchparameter.html>): a stored parameter takes
//! effect after `$reindex`, for old resources and new writes alike.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

per_backend!(custom_parameter_takes_effect_after_reindex, reindex_async_reports_progress_then_result);

const EYE: &str = "http://example.org/fhir/StructureDefinition/eye-colour";

fn patient(family: &str, eye: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "name": [{ "family": family }],
        "extension": [{ "url": EYE, "valueCode": eye }]
    })
}

fn eye_colour_param(status: &str) -> Value {
    json!({
        "resourceType": "SearchParameter",
        "url": "http://example.org/fhir/SearchParameter/patient-eye-colour",
        "name": "EyeColour",
        "status": status,
        "description": "The patient's eye colour",
        "code": "eye-colour",
        "base": ["Patient"],
        "type": "token",
        "expression": format!("Patient.extension.where(url = '{EYE}').value")
    })
}

async fn found(s: &Server, query: &str) -> usize {
    let bundle = fhir_body(s.get(query).await).await;
    bundle["entry"].as_array().map_or(0, Vec::len)
}

fn parameter<'a>(report: &'a Value, name: &str) -> Vec<&'a Value> {
    report["parameter"].as_array().unwrap().iter().filter(|p| p["name"] == name).collect()
}

async fn custom_parameter_takes_effect_after_reindex(s: Server) {
    for (family, eye) in [("Ames", "blue"), ("Baker", "blue"), ("Cole", "brown")] {
        s.create(patient(family, eye)).await;
    }
    s.create(eye_colour_param("active")).await;
    // A draft parameter is not activated.
    let mut draft = eye_colour_param("draft");
    draft["code"] = json!("eye-draft");
    draft["url"] = json!("http://example.org/fhir/SearchParameter/draft");
    s.create(draft).await;
    // Not yet in force: an unknown parameter.
    expect_outcome(s.get("Patient?eye-colour=blue").await, 400).await;

    let response = s.request(Method::POST, "Patient/$reindex").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let report = fhir_body(response).await;
    assert_eq!(report["resourceType"], "Parameters");
    assert_eq!(parameter(&report, "reindexed")[0]["valueInteger"], 3);
    assert_eq!(parameter(&report, "active")[0]["valueString"], "Patient.eye-colour");
    assert!(parameter(&report, "rejected").is_empty());

    assert_eq!(found(&s, "Patient?eye-colour=blue").await, 2);
    assert_eq!(found(&s, "Patient?eye-colour=brown").await, 1);
    assert_eq!(found(&s, "Patient?eye-colour:missing=true").await, 0);
    // New writes are indexed with it at once.
    s.create(patient("Dale", "blue")).await;
    assert_eq!(found(&s, "Patient?eye-colour=blue&family=dale").await, 1);
    // Sorting by it works like any parameter.
    let sorted = fhir_body(s.get("Patient?_sort=-eye-colour,family&eye-colour=blue,brown").await).await;
    assert_eq!(sorted["entry"][0]["resource"]["name"][0]["family"], "Cole");
    // The CapabilityStatement lists it.
    let statement = fhir_body(s.get("metadata").await).await;
    let patient_entry = statement["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Patient").unwrap();
    assert!(patient_entry["searchParam"].as_array().unwrap().iter().any(|p| p["name"] == "eye-colour"));

    // A parameter clashing with a core code is reported, and the others stay in force.
    let mut clash = eye_colour_param("active");
    clash["code"] = json!("family");
    clash["url"] = json!("http://example.org/fhir/SearchParameter/clash");
    s.create(clash).await;
    let report = fhir_body(s.request(Method::POST, "$reindex").send().await.unwrap()).await;
    let rejected = parameter(&report, "rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["part"][0]["valueString"], "http://example.org/fhir/SearchParameter/clash");
    // System level walks every resource: 4 patients and 3 SearchParameters.
    assert_eq!(parameter(&report, "reindexed")[0]["valueInteger"], 7);
    assert_eq!(found(&s, "Patient?eye-colour=blue").await, 3);

    // Retiring the parameter takes it out of force at the next reindex.
    let bundle = fhir_body(s.get("SearchParameter?url=http://example.org/fhir/SearchParameter/patient-eye-colour").await).await;
    let id = bundle["entry"][0]["resource"]["id"].as_str().unwrap().to_string();
    let mut retired = eye_colour_param("retired");
    retired["id"] = json!(id);
    let response = s.send_json(Method::PUT, &format!("SearchParameter/{id}"), &retired).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(s.request(Method::POST, "Patient/$reindex").send().await.unwrap().status(), 200);
    expect_outcome(s.get("Patient?eye-colour=blue").await, 400).await;

    // Errors: an unknown type.
    expect_outcome(s.request(Method::POST, "Nope/$reindex").send().await.unwrap(), 404).await;
}

async fn reindex_async_reports_progress_then_result(s: Server) {
    for i in 0..5 {
        s.create(patient(&format!("P{i}"), "green")).await;
    }
    s.create(eye_colour_param("active")).await;
    let response = s.request(Method::POST, "$reindex").header("prefer", "respond-async").send().await.unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["content-location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{}/$reindex-status/", s.base)), "{location}");
    let mut report = None;
    for _ in 0..200 {
        let poll = s.client.get(&location).send().await.unwrap();
        match poll.status().as_u16() {
            202 => {
                assert!(poll.headers()["x-progress"].to_str().unwrap().starts_with("reindexed "));
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            200 => {
                report = Some(fhir_body(poll).await);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let report = report.expect("the job finished");
    assert_eq!(parameter(&report, "reindexed")[0]["valueInteger"], 6);
    assert_eq!(found(&s, "Patient?eye-colour=green").await, 5);
    expect_outcome(s.get("$reindex-status/no-such-job").await, 404).await;
}
