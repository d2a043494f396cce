//! `POST [base]`: batch and transaction only (<http://hl7.org/fhir/R4/http.html#transaction>).

use crate::support::*;
use reqwest::Method;
use serde_json::json;

per_backend!(
    transaction_and_batch_are_processed,
    other_bodies_are_400,
);

async fn transaction_and_batch_are_processed(s: Server) {
    let transaction = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{
            "fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
            "resource": patient("Txn"),
            "request": {"method": "POST", "url": "Patient"}
        }]
    });
    let response = s.client.post(&s.base).header("content-type", "application/fhir+json").body(transaction.to_string()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = fhir_body(response).await;
    assert_eq!(body["resourceType"], "Bundle");
    assert_eq!(body["type"], "transaction-response");
    assert!(body["entry"][0]["response"]["status"].as_str().unwrap().starts_with("201"));

    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}}
    ]});
    let response = s.send_json(Method::POST, "", &batch).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(fhir_body(response).await["type"], "batch-response");
}

async fn other_bodies_are_400(s: Server) {
    for body in [
        json!({"resourceType": "Bundle", "type": "collection", "entry": []}),
        json!({"resourceType": "Bundle", "type": "searchset"}),
        json!({"resourceType": "Bundle"}),
        json!({"resourceType": "Patient"}),
        json!([]),
    ] {
        let response = s.client.post(&s.base).header("content-type", "application/fhir+json").body(body.to_string()).send().await.unwrap();
        expect_outcome(response, 400).await;
    }
    let xml = s.client.post(&s.base).header("content-type", "application/fhir+xml").body("<Bundle/>").send().await.unwrap();
    expect_outcome(xml, 415).await;
}
