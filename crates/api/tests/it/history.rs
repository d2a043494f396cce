//! History at instance, type and system level, with stable paging
//! (<http://hl7.org/fhir/R4/http.html#history>).

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

per_backend!(
    instance_history_lists_versions_newest_first_with_request_and_response,
    history_pages_stay_stable_while_others_write,
    type_and_system_history,
    history_parameters_are_checked,
);

/// Creates a Patient with `versions` versions; returns its id.
async fn patient_with_versions(s: &Server, family: &str, versions: u64) -> String {
    let id = s.create(patient(family)).await;
    for v in 2..=versions {
        let mut p = patient(family);
        p["id"] = json!(id);
        p["name"][0]["given"] = json!([format!("v{v}")]);
        assert_eq!(s.send_json(Method::PUT, &format!("Patient/{id}"), &p).send().await.unwrap().status(), 200);
    }
    id
}

/// Follows a link URL (absolute) and returns the Bundle.
async fn follow(s: &Server, url: &str) -> Value {
    let response = s.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    fhir_body(response).await
}

fn versions(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries.iter().map(|e| e["response"]["etag"].as_str().unwrap_or_default().to_string()).collect()
        })
        .unwrap_or_default()
}

async fn instance_history_lists_versions_newest_first_with_request_and_response(s: Server) {
    let id = patient_with_versions(&s, "Hist", 2).await;
    assert_eq!(s.request(Method::DELETE, &format!("Patient/{id}")).send().await.unwrap().status(), 204);

    let bundle = fhir_body(s.get(&format!("Patient/{id}/_history")).await).await;
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "history");
    assert_eq!(bundle["total"], 3);
    assert_eq!(versions(&bundle), ["W/\"3\"", "W/\"2\"", "W/\"1\""]);
    let entries = bundle["entry"].as_array().unwrap();
    let full_url = format!("{}/Patient/{id}", s.base);
    assert!(entries.iter().all(|e| e["fullUrl"] == full_url.as_str()));

    // The delete: no resource, DELETE request.
    assert!(entries[0].get("resource").is_none());
    assert_eq!(entries[0]["request"]["method"], "DELETE");
    assert_eq!(entries[0]["request"]["url"], format!("Patient/{id}"));
    assert_eq!(entries[1]["request"]["method"], "PUT");
    assert_eq!(entries[1]["response"]["status"], "200 OK");
    assert_eq!(entries[1]["resource"]["meta"]["versionId"], "2");
    assert_eq!(entries[2]["request"]["method"], "POST");
    assert_eq!(entries[2]["request"]["url"], "Patient");
    assert_eq!(entries[2]["response"]["status"], "201 Created");
    assert!(entries[2]["response"]["lastModified"].as_str().is_some_and(|t| t.ends_with('Z')));

    expect_outcome(s.get("Patient/never-was/_history").await, 404).await;
}

async fn history_pages_stay_stable_while_others_write(s: Server) {
    let id = patient_with_versions(&s, "Paging", 5).await;

    let page1 = fhir_body(s.get(&format!("Patient/{id}/_history?_count=2")).await).await;
    assert_eq!(page1["total"], 5);
    assert_eq!(versions(&page1), ["W/\"5\"", "W/\"4\""]);
    assert!(link(&page1, "self").is_some());
    assert!(link(&page1, "previous").is_none());
    let next = link(&page1, "next").expect("next link");
    assert!(next.contains("_before=") && next.contains("_offset=2") && next.contains("_count=2"), "{next}");
    assert!(next.starts_with(&s.base));

    // A write between pages must not shift them.
    let mut p = patient("Paging");
    p["id"] = json!(id);
    assert_eq!(s.send_json(Method::PUT, &format!("Patient/{id}"), &p).send().await.unwrap().status(), 200);

    let page2 = follow(&s, &next).await;
    assert_eq!(versions(&page2), ["W/\"3\"", "W/\"2\""]);
    assert_eq!(page2["total"], 5);
    assert!(link(&page2, "previous").is_some());
    let page3 = follow(&s, &link(&page2, "next").expect("next link")).await;
    assert_eq!(versions(&page3), ["W/\"1\""]);
    assert!(link(&page3, "next").is_none());

    let back = follow(&s, &link(&page3, "previous").unwrap()).await;
    assert_eq!(versions(&back), ["W/\"3\"", "W/\"2\""]);
    let first = follow(&s, &link(&page3, "first").unwrap()).await;
    assert_eq!(versions(&first), ["W/\"5\"", "W/\"4\""]);

    // A fresh first page sees the new version.
    let fresh = fhir_body(s.get(&format!("Patient/{id}/_history?_count=2")).await).await;
    assert_eq!(versions(&fresh), ["W/\"6\"", "W/\"5\""]);
}

async fn type_and_system_history(s: Server) {
    let a = s.create(patient("TypeA")).await;
    let b = s.create(patient("TypeB")).await;
    s.create(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})).await;

    let patients = fhir_body(s.get("Patient/_history").await).await;
    assert_eq!(patients["total"], 2);
    let ids: Vec<&str> = patients["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [b.as_str(), a.as_str()]);

    let all = fhir_body(s.get("_history").await).await;
    assert_eq!(all["type"], "history");
    assert_eq!(all["total"], 3);
    assert_eq!(all["entry"][0]["resource"]["resourceType"], "Observation");
}

async fn history_parameters_are_checked(s: Server) {
    let id = patient_with_versions(&s, "Since", 2).await;
    let v2 = fhir_body(s.get(&format!("Patient/{id}")).await).await;
    let since = v2["meta"]["lastUpdated"].as_str().unwrap();
    let url = format!("Patient/{id}/_history?_since={}", since.replace('+', "%2B"));
    let bundle = fhir_body(s.get(&url).await).await;
    assert_eq!(versions(&bundle), ["W/\"2\""]);

    expect_outcome(s.get("_history?_since=yesterday").await, 400).await;
    expect_outcome(s.get("_history?_count=many").await, 400).await;
    expect_outcome(s.get("_history?_at=2024-01-01").await, 400).await;
    let lenient = s.request(Method::GET, "_history?_at=2024-01-01").header("prefer", "handling=lenient").send().await.unwrap();
    assert_eq!(lenient.status(), 200);
}
