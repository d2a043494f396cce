//! Endpoints around the interactions: the CapabilityStatement, health
//! probes, unknown endpoints and methods, internal errors.

use crate::support::*;
use domain::memory::MemoryStore;
use reqwest::Method;
use std::sync::Arc;

#[tokio::test]
async fn capability_statement_states_what_is_implemented() {
    let s = Server::start().await;
    let response = s.get("metadata").await;
    assert_eq!(response.status(), 200);
    let cs = fhir_body(response).await;
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["status"], "active");
    assert_eq!(cs["kind"], "instance");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["format"], serde_json::json!(["json"]));
    assert_eq!(cs["software"]["name"], "Hearth");
    assert!(cs["date"].as_str().is_some());
    let rest = &cs["rest"][0];
    assert_eq!(rest["mode"], "server");
    let system: Vec<&str> = rest["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert_eq!(system, ["transaction", "batch", "history-system", "search-system"]);

    let resources = rest["resource"].as_array().unwrap();
    assert_eq!(resources.len(), fhir::definitions::resource_types().len());
    let patient = resources.iter().find(|r| r["type"] == "Patient").expect("Patient");
    let interactions: Vec<&str> = patient["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert_eq!(
        interactions,
        ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"]
    );
    assert_eq!(patient["versioning"], "versioned");
    assert_eq!(patient["readHistory"], true);
    assert_eq!(patient["updateCreate"], true);
    assert_eq!(patient["conditionalCreate"], true);
    assert_eq!(patient["conditionalUpdate"], true);
    assert_eq!(patient["conditionalDelete"], "single");
    assert_eq!(patient["conditionalRead"], "not-supported");
    let params = patient["searchParam"].as_array().expect("Patient search parameters");
    assert!(params.iter().any(|p| p["name"] == "family" && p["type"] == "string"));

    let full = fhir_body(s.get("metadata?mode=full").await).await;
    assert_eq!(full, cs);
    expect_outcome(s.get("metadata?mode=terminology").await, 400).await;
}

#[tokio::test]
async fn health_probes() {
    let s = Server::start().await;
    let healthz = s.client.get(format!("{}/healthz", s.root)).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    assert!(header(&healthz, "content-type").unwrap().starts_with("text/plain"));
    assert_eq!(s.client.get(format!("{}/readyz", s.root)).send().await.unwrap().status(), 200);

    let down = Server::with_store(Arc::new(DownStore(MemoryStore::new()))).await;
    assert_eq!(down.client.get(format!("{}/healthz", down.root)).send().await.unwrap().status(), 200);
    assert_eq!(down.client.get(format!("{}/readyz", down.root)).send().await.unwrap().status(), 503);
}

#[tokio::test]
async fn unknown_endpoints_and_methods_are_outcomes() {
    let s = Server::start().await;
    expect_outcome(s.client.get(format!("{}/nowhere", s.root)).send().await.unwrap(), 404).await;
    expect_outcome(s.get("Patient/1/_history/1/extra").await, 404).await;
    let method = s.request(Method::DELETE, "metadata").send().await.unwrap();
    assert!(header(&method, "allow").is_some());
    expect_outcome(method, 405).await;
    expect_outcome(s.request(Method::POST, "Patient/1").send().await.unwrap(), 405).await;
}

#[tokio::test]
async fn internal_errors_do_not_expose_details() {
    let s = Server::with_store(Arc::new(BrokenStore)).await;
    let response = s.get("Patient/abc").await;
    let outcome = expect_outcome(response, 500).await;
    let text = outcome.to_string();
    assert!(!text.contains("SECRET"), "{text}");
    assert!(diagnostics(&outcome).contains("incident"), "{text}");
    assert_eq!(outcome["issue"][0]["code"], "exception");
}
