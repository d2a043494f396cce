//! `POST [base]`: batch and transaction only (<http://hl7.org/fhir/R4/http.html#transaction>).

use crate::support::*;
use reqwest::Method;
use serde_json::json;

per_backend!(
    transaction_and_batch_are_processed,
    other_bodies_are_400,
    entries_follow_prefer_return,
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

/// `Prefer: return=` shapes each entry's result
/// (<http://hl7.org/fhir/R4/http.html#ops>); without it entries are minimal.
async fn entries_follow_prefer_return(s: Server) {
    let existing = s.create(patient("Prefer")).await;
    let post = |prefer: Option<&'static str>, bundle_type: &'static str| {
        let bundle = json!({"resourceType": "Bundle", "type": bundle_type, "entry": [
            {"resource": patient("PreferNew"), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": format!("Patient/{existing}")}}
        ]});
        let mut request = s.send_json(Method::POST, "", &bundle);
        if let Some(prefer) = prefer {
            request = request.header("prefer", prefer);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            fhir_body(response).await
        }
    };
    for bundle_type in ["transaction", "batch"] {
        for prefer in [None, Some("return=minimal")] {
            let body = post(prefer, bundle_type).await;
            let created = &body["entry"][0];
            assert!(created.get("resource").is_none(), "{prefer:?} {body}");
            assert!(created["response"].get("outcome").is_none(), "{prefer:?} {body}");
            assert!(created["response"]["location"].as_str().is_some_and(|l| l.starts_with("Patient/")), "{body}");
            // A read always carries what it read.
            assert_eq!(body["entry"][1]["resource"]["id"], existing.as_str(), "{body}");
        }

        let body = post(Some("return=representation"), bundle_type).await;
        let created = &body["entry"][0];
        assert_eq!(created["resource"]["resourceType"], "Patient", "{body}");
        assert_eq!(created["resource"]["name"][0]["family"], "PreferNew", "{body}");
        assert_eq!(created["resource"]["meta"]["versionId"], "1", "{body}");

        let body = post(Some("return=OperationOutcome"), bundle_type).await;
        let created = &body["entry"][0];
        assert!(created.get("resource").is_none(), "{body}");
        assert_eq!(created["response"]["outcome"]["resourceType"], "OperationOutcome", "{body}");
    }
}
