//! create, read, vread, update, patch, delete, their conditional forms,
//! `Prefer` and `If-Match` (<http://hl7.org/fhir/R4/http.html>).

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

per_backend!(
    create_answers_201_with_location_etag_and_last_modified,
    decimals_keep_their_written_precision,
    create_honours_prefer_return,
    conditional_create_returns_the_existing_match,
    create_refuses_a_body_of_another_type,
    read_answers_with_headers_and_errors_as_outcomes,
    vread_reads_versions_and_410s_a_delete,
    update_versions_and_creates,
    update_requires_the_url_id_in_the_body,
    if_match_guards_updates_patches,
    json_patch_and_fhirpath_patch,
    delete_is_204_and_idempotent_and_reads_410,
    conditional_update_patch_delete,
    summary_and_elements_on_read,
);

async fn create_answers_201_with_location_etag_and_last_modified(s: Server) {
    let response = s.send_json(Method::POST, "Patient", &patient("Create")).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let location = header(&response, "location").unwrap();
    assert_eq!(header(&response, "etag").as_deref(), Some("W/\"1\""));
    let last_modified = header(&response, "last-modified").unwrap();
    assert!(last_modified.ends_with(" GMT") && last_modified.len() == 29, "{last_modified}");
    let body = fhir_body(response).await;
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("{}/Patient/{id}/_history/1", s.base));
    assert_eq!(body["meta"]["versionId"], "1");
    assert_eq!(body["name"][0]["family"], "Create");
}

async fn decimals_keep_their_written_precision(s: Server) {
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"weight"},"valueQuantity":{"value":1.50,"unit":"kg"}}"#;
    let response = s
        .request(Method::POST, "Observation")
        .header("content-type", "application/fhir+json")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created = response.text().await.unwrap();
    assert!(created.contains("1.50"), "{created}");
    let id = serde_json::from_str::<Value>(&created).unwrap()["id"].as_str().unwrap().to_string();
    let read = s.get(&format!("Observation/{id}")).await.text().await.unwrap();
    assert!(read.contains("\"value\":1.50"), "{read}");
}

async fn create_honours_prefer_return(s: Server) {
    let minimal = s
        .send_json(Method::POST, "Patient", &patient("Minimal"))
        .header("prefer", "return=minimal")
        .send()
        .await
        .unwrap();
    assert_eq!(minimal.status(), 201);
    assert!(header(&minimal, "location").is_some());
    assert_eq!(header(&minimal, "etag").as_deref(), Some("W/\"1\""));
    assert!(minimal.bytes().await.unwrap().is_empty());

    let outcome = s
        .send_json(Method::POST, "Patient", &patient("Outcome"))
        .header("prefer", "return=OperationOutcome")
        .send()
        .await
        .unwrap();
    assert!(header(&outcome, "location").is_some());
    let body = expect_outcome(outcome, 201).await;
    assert_eq!(body["issue"][0]["severity"], "information");

    let representation = s
        .send_json(Method::POST, "Patient", &patient("Repr"))
        .header("prefer", "return=representation")
        .send()
        .await
        .unwrap();
    assert_eq!(representation.status(), 201);
    assert_eq!(fhir_body(representation).await["resourceType"], "Patient");
}

async fn conditional_create_returns_the_existing_match(s: Server) {
    let criteria = "identifier=http://example.org/mrn|Cond";
    let first = s
        .send_json(Method::POST, "Patient", &patient("Cond"))
        .header("if-none-exist", criteria)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first_id = fhir_body(first).await["id"].as_str().unwrap().to_string();
    let second = s
        .send_json(Method::POST, "Patient", &patient("Cond"))
        .header("if-none-exist", criteria)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(fhir_body(second).await["id"], first_id.as_str());

    // Criteria matching several resources cannot pick one: 412.
    s.create(patient("Many")).await;
    s.create(patient("Many")).await;
    let many = s
        .send_json(Method::POST, "Patient", &patient("Many"))
        .header("if-none-exist", "identifier=http://example.org/mrn|Many")
        .send()
        .await
        .unwrap();
    expect_outcome(many, 412).await;
}

async fn create_refuses_a_body_of_another_type(s: Server) {
    let o = expect_outcome(s.send_json(Method::POST, "Patient", &json!({"resourceType": "Observation"})).send().await.unwrap(), 400).await;
    assert_eq!(o["issue"][0]["expression"][0], "resourceType");
    expect_outcome(s.send_json(Method::POST, "Patient", &json!({"name": []})).send().await.unwrap(), 400).await;
    expect_outcome(s.send_json(Method::POST, "Patient", &json!([1, 2])).send().await.unwrap(), 400).await;
}

async fn read_answers_with_headers_and_errors_as_outcomes(s: Server) {
    let id = s.create(patient("Read")).await;
    let response = s.get(&format!("Patient/{id}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "etag").as_deref(), Some("W/\"1\""));
    assert!(header(&response, "last-modified").is_some());
    let last_modified = header(&response, "last-modified").unwrap();
    let body = fhir_body(response).await;
    assert_eq!(body["id"], id.as_str());
    // Last-Modified is meta.lastUpdated as an HTTP date.
    let updated = fhir::instant::Instant::parse(body["meta"]["lastUpdated"].as_str().unwrap()).unwrap();
    assert_eq!(last_modified, updated.to_http_date());

    expect_outcome(s.get("Patient/does-not-exist").await, 404).await;
    expect_outcome(s.get("Patient/bad_id").await, 400).await;
    expect_outcome(s.get(&format!("Patient/{}", "a".repeat(65))).await, 400).await;
    let unknown = expect_outcome(s.get("NotAType/1").await, 404).await;
    assert!(diagnostics(&unknown).contains("NotAType"));
    expect_outcome(s.get("NotAType").await, 404).await;
}

async fn vread_reads_versions_and_410s_a_delete(s: Server) {
    let id = s.create(patient("Vread")).await;
    let mut p = patient("Vread2");
    p["id"] = json!(id);
    assert_eq!(s.send_json(Method::PUT, &format!("Patient/{id}"), &p).send().await.unwrap().status(), 200);

    let v1 = s.get(&format!("Patient/{id}/_history/1")).await;
    assert_eq!(v1.status(), 200);
    assert_eq!(header(&v1, "etag").as_deref(), Some("W/\"1\""));
    assert_eq!(fhir_body(v1).await["name"][0]["family"], "Vread");
    let v2 = fhir_body(s.get(&format!("Patient/{id}/_history/2")).await).await;
    assert_eq!(v2["name"][0]["family"], "Vread2");

    expect_outcome(s.get(&format!("Patient/{id}/_history/9")).await, 404).await;
    assert_eq!(s.request(Method::DELETE, &format!("Patient/{id}")).send().await.unwrap().status(), 204);
    expect_outcome(s.get(&format!("Patient/{id}/_history/3")).await, 410).await;
    // Older versions stay readable.
    assert_eq!(s.get(&format!("Patient/{id}/_history/1")).await.status(), 200);
}

async fn update_versions_and_creates(s: Server) {
    let id = s.create(patient("Upd")).await;
    let mut p = patient("Upd2");
    p["id"] = json!(id);
    let response = s.send_json(Method::PUT, &format!("Patient/{id}"), &p).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "etag").as_deref(), Some("W/\"2\""));
    assert!(header(&response, "last-modified").is_some());
    assert_eq!(fhir_body(response).await["meta"]["versionId"], "2");

    // Create-on-update with a client-chosen id.
    let mut new = patient("New");
    new["id"] = json!("chosen-id.1");
    let created = s.send_json(Method::PUT, "Patient/chosen-id.1", &new).send().await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(header(&created, "location").unwrap(), format!("{}/Patient/chosen-id.1/_history/1", s.base));

    // Prefer applies to updates too.
    let minimal = s.send_json(Method::PUT, "Patient/chosen-id.1", &new).header("prefer", "return=minimal").send().await.unwrap();
    assert_eq!(minimal.status(), 200);
    assert_eq!(header(&minimal, "etag").as_deref(), Some("W/\"2\""));
    assert!(minimal.bytes().await.unwrap().is_empty());
    let outcome = s
        .send_json(Method::PUT, "Patient/chosen-id.1", &new)
        .header("prefer", "return=OperationOutcome")
        .send()
        .await
        .unwrap();
    expect_outcome(outcome, 200).await;
}

async fn update_requires_the_url_id_in_the_body(s: Server) {
    let id = s.create(patient("Ids")).await;
    let mut other = patient("Ids");
    other["id"] = json!("someone-else");
    let o = expect_outcome(s.send_json(Method::PUT, &format!("Patient/{id}"), &other).send().await.unwrap(), 400).await;
    assert_eq!(o["issue"][0]["expression"][0], "id");
    expect_outcome(s.send_json(Method::PUT, &format!("Patient/{id}"), &patient("NoId")).send().await.unwrap(), 400).await;
    let mut wrong_type = json!({"resourceType": "Observation", "status": "final", "code": {}});
    wrong_type["id"] = json!(id);
    expect_outcome(s.send_json(Method::PUT, &format!("Patient/{id}"), &wrong_type).send().await.unwrap(), 400).await;
}

async fn if_match_guards_updates_patches(s: Server) {
    let id = s.create(patient("Match")).await;
    let mut p = patient("Match");
    p["id"] = json!(id);
    let path = format!("Patient/{id}");

    let ok = s.send_json(Method::PUT, &path, &p).header("if-match", "W/\"1\"").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let stale = s.send_json(Method::PUT, &path, &p).header("if-match", "W/\"1\"").send().await.unwrap();
    expect_outcome(stale, 412).await;
    let strong = s.send_json(Method::PUT, &path, &p).header("if-match", "\"2\"").send().await.unwrap();
    assert_eq!(strong.status(), 200);
    expect_outcome(s.send_json(Method::PUT, &path, &p).header("if-match", "banana").send().await.unwrap(), 400).await;

    let ops = json!([{"op": "replace", "path": "/active", "value": false}]);
    let patch = s
        .request(Method::PATCH, &path)
        .header("content-type", "application/json-patch+json")
        .header("if-match", "W/\"1\"")
        .body(ops.to_string())
        .send()
        .await
        .unwrap();
    expect_outcome(patch, 412).await;
}

async fn json_patch_and_fhirpath_patch(s: Server) {
    let id = s.create(patient("Patch")).await;
    let path = format!("Patient/{id}");
    let ops = json!([{"op": "replace", "path": "/active", "value": false}]);
    let response = s
        .request(Method::PATCH, &path)
        .header("content-type", "application/json-patch+json")
        .body(ops.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "etag").as_deref(), Some("W/\"2\""));
    let body = fhir_body(response).await;
    assert_eq!(body["active"], false);

    let parameters = json!({
        "resourceType": "Parameters",
        "parameter": [{"name": "operation", "part": [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.gender"},
            {"name": "value", "valueCode": "female"}
        ]}]
    });
    let response = s.send_json(Method::PATCH, &path, &parameters).header("prefer", "return=minimal").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "etag").as_deref(), Some("W/\"3\""));
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(fhir_body(s.get(&path).await).await["gender"], "female");

    // A JSON Patch must be an array; a FHIR body must be Parameters.
    let object = s
        .request(Method::PATCH, &path)
        .header("content-type", "application/json-patch+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_outcome(object, 400).await;
    expect_outcome(s.send_json(Method::PATCH, &path, &patient("X")).send().await.unwrap(), 400).await;
    let text = s.request(Method::PATCH, &path).header("content-type", "text/plain").body("replace").send().await.unwrap();
    expect_outcome(text, 415).await;
}

async fn delete_is_204_and_idempotent_and_reads_410(s: Server) {
    let id = s.create(patient("Del")).await;
    let path = format!("Patient/{id}");
    let first = s.request(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(first.status(), 204);
    assert_eq!(header(&first, "etag").as_deref(), Some("W/\"2\""));
    assert_eq!(s.request(Method::DELETE, &path).send().await.unwrap().status(), 204);
    expect_outcome(s.get(&path).await, 410).await;

    let other = s.create(patient("Del2")).await;
    let with_outcome = s
        .request(Method::DELETE, &format!("Patient/{other}"))
        .header("prefer", "return=OperationOutcome")
        .send()
        .await
        .unwrap();
    expect_outcome(with_outcome, 200).await;
    // Deleting what never existed is not an error either.
    assert_eq!(s.request(Method::DELETE, "Patient/never-was").send().await.unwrap().status(), 204);
}

async fn conditional_update_patch_delete(s: Server) {
    let criteria = "Patient?identifier=http://example.org/mrn|CondOps";
    let created = s.send_json(Method::PUT, criteria, &patient("CondOps")).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let id = fhir_body(created).await["id"].as_str().unwrap().to_string();
    let updated = s.send_json(Method::PUT, criteria, &patient("CondOps")).send().await.unwrap();
    assert_eq!(updated.status(), 200);
    assert_eq!(fhir_body(updated).await["id"], id.as_str());

    let ops = json!([{"op": "replace", "path": "/active", "value": false}]);
    let patched = s
        .request(Method::PATCH, criteria)
        .header("content-type", "application/json-patch+json")
        .body(ops.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(fhir_body(patched).await["active"], false);

    // Two matches: conditional delete is single-only, so 412.
    s.create(patient("Twin")).await;
    s.create(patient("Twin")).await;
    expect_outcome(s.request(Method::DELETE, "Patient?identifier=http://example.org/mrn|Twin").send().await.unwrap(), 412).await;

    assert_eq!(s.request(Method::DELETE, criteria).send().await.unwrap().status(), 204);
    expect_outcome(s.get(&format!("Patient/{id}")).await, 410).await;

    // Without criteria a conditional operation would touch everything: 400.
    expect_outcome(s.request(Method::DELETE, "Patient").send().await.unwrap(), 400).await;
    expect_outcome(s.send_json(Method::PUT, "Patient", &patient("X")).send().await.unwrap(), 400).await;
    expect_outcome(s.request(Method::DELETE, "Patient?_format=json").send().await.unwrap(), 400).await;
}

async fn summary_and_elements_on_read(s: Server) {
    let id = s.create(patient("Summary")).await;
    let path = format!("Patient/{id}");
    let subsetted = |v: &Value| {
        v["meta"]["tag"].as_array().is_some_and(|tags| {
            tags.iter().any(|t| {
                t["system"] == "http://terminology.hl7.org/CodeSystem/v3-ObservationValue" && t["code"] == "SUBSETTED"
            })
        })
    };

    let full = fhir_body(s.get(&path).await).await;
    assert!(full.get("text").is_some() && !subsetted(&full));

    let summary = fhir_body(s.get(&format!("{path}?_summary=true")).await).await;
    assert!(subsetted(&summary));
    assert!(summary.get("text").is_none());
    assert!(summary.get("maritalStatus").is_none());
    assert_eq!(summary["name"][0]["family"], "Summary");
    assert_eq!(summary["meta"]["versionId"], "1");

    let text = fhir_body(s.get(&format!("{path}?_summary=text")).await).await;
    assert!(subsetted(&text) && text.get("text").is_some() && text.get("name").is_none());
    assert_eq!(text["id"], id.as_str());

    let data = fhir_body(s.get(&format!("{path}?_summary=data")).await).await;
    assert!(subsetted(&data) && data.get("text").is_none() && data.get("maritalStatus").is_some());

    let elements = fhir_body(s.get(&format!("{path}?_elements=birthDate,gender")).await).await;
    assert!(subsetted(&elements));
    let mut keys: Vec<&str> = elements.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["birthDate", "gender", "id", "meta", "resourceType"]);

    let same = fhir_body(s.get(&format!("{path}?_summary=false")).await).await;
    assert_eq!(same, full);

    expect_outcome(s.get(&format!("{path}?_summary=count")).await, 400).await;
    expect_outcome(s.get(&format!("{path}?_summary=often")).await, 400).await;
    expect_outcome(s.get(&format!("{path}?_summary=true&_elements=name")).await, 400).await;
    let v1 = fhir_body(s.get(&format!("{path}/_history/1?_summary=text")).await).await;
    assert!(subsetted(&v1) && v1.get("name").is_none());
}
