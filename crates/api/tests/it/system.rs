//! Endpoints around the interactions: the CapabilityStatement, health
//! probes, unknown endpoints and methods, internal errors.

use crate::support::*;
use domain::memory::MemoryStore;
use reqwest::Method;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    // Every resource type but Parameters, which has no REST endpoint.
    assert_eq!(resources.len(), fhir::definitions::resource_types().len() - 1);
    assert!(resources.iter().all(|r| r["type"] != "Parameters"));
    let patient = resources.iter().find(|r| r["type"] == "Patient").expect("Patient");
    let interactions: Vec<&str> = patient["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert_eq!(
        interactions,
        ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"]
    );
    // If-Match is enforced on update and patch.
    assert_eq!(patient["versioning"], "versioned-update");
    assert_eq!(patient["readHistory"], true);
    assert_eq!(patient["updateCreate"], true);
    assert_eq!(patient["conditionalCreate"], true);
    assert_eq!(patient["conditionalUpdate"], true);
    assert_eq!(patient["conditionalDelete"], "single");
    assert_eq!(patient["conditionalRead"], "not-supported");
    let params = patient["searchParam"].as_array().expect("Patient search parameters");
    assert!(params.iter().any(|p| p["name"] == "family" && p["type"] == "string"));
    // phonetic would be a plain string match here: not advertised.
    assert!(!params.iter().any(|p| p["name"] == "phonetic"), "{patient}");

    let full = fhir_body(s.get("metadata?mode=full").await).await;
    assert_eq!(full, cs);
    expect_outcome(s.get("metadata?mode=terminology").await, 400).await;
}

/// Every advertised search parameter is one the query parser evaluates:
/// none is refused as not supported, none has special or phonetic semantics.
#[tokio::test]
async fn advertised_search_parameters_are_all_evaluated() {
    let s = Server::start().await;
    let cs = fhir_body(s.get("metadata").await).await;
    let mut checked = 0;
    for resource in cs["rest"][0]["resource"].as_array().unwrap() {
        let resource_type = resource["type"].as_str().unwrap();
        for param in resource["searchParam"].as_array().into_iter().flatten() {
            let (name, kind) = (param["name"].as_str().unwrap(), param["type"].as_str().unwrap());
            assert!(kind != "special" && name != "phonetic", "{resource_type}.{name}");
            let sample = match kind {
                "string" => "a",
                "token" => "a",
                "date" => "ge2020-01-01",
                "number" => "1",
                "quantity" => "1",
                "reference" => "Patient/1",
                "uri" => "http://example.org",
                "composite" => "a$1",
                other => panic!("unexpected parameter type {other}"),
            };
            let params = [(name.to_string(), sample.to_string())];
            // A sample that does not suit one parameter (an invalid `_id`)
            // is fine; a refusal as not supported is not.
            if let Err(issues) = fhir::search::query::parse(&fhir::search::Registry::core(), Some(resource_type), &params, false) {
                let refused = issues.iter().any(|i| i.code == fhir::IssueType::NotSupported);
                assert!(!refused, "{resource_type}?{name}={sample} is advertised but refused: {issues:?}");
            }
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked}");
}

/// Parameters only carries operation inputs and outputs
/// (http://hl7.org/fhir/R4/parameters.html): no endpoint, as the statement says.
#[tokio::test]
async fn parameters_has_no_rest_endpoint() {
    let s = Server::start().await;
    let body = serde_json::json!({"resourceType": "Parameters", "parameter": [{"name": "a", "valueString": "b"}]});
    let outcome = expect_outcome(s.send_json(Method::POST, "Parameters", &body).send().await.unwrap(), 404).await;
    assert!(diagnostics(&outcome).contains("Parameters"), "{outcome}");
    let mut with_id = body.clone();
    with_id["id"] = serde_json::json!("p1");
    expect_outcome(s.send_json(Method::PUT, "Parameters/p1", &with_id).send().await.unwrap(), 404).await;
    for path in ["Parameters", "Parameters/p1", "Parameters/p1/_history", "Parameters/p1/_history/1", "Parameters/_history"] {
        expect_outcome(s.get(path).await, 404).await;
    }
    expect_outcome(s.request(Method::DELETE, "Parameters/p1").send().await.unwrap(), 404).await;
    let search = s
        .request(Method::POST, "Parameters/_search")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_id=p1")
        .send()
        .await
        .unwrap();
    expect_outcome(search, 404).await;
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

/// Sends raw bytes on a fresh connection and returns the whole answer.
async fn raw(s: &Server, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8(answer).unwrap()
}

/// Sends raw bytes and checks the answer: `status`, the FHIR content type,
/// a Content-Length that fits, an OperationOutcome body; returns the body.
async fn raw_outcome(s: &Server, request: &[u8], status: u16) -> serde_json::Value {
    let answer = raw(s, request).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
    let head = format!("{}\r\n", head.to_ascii_lowercase());
    assert!(head.contains("\r\ncontent-type: application/fhir+json; charset=utf-8\r\n"), "{head}");
    assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
    let outcome: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{body}");
    outcome
}

/// hyper answers these before any handler runs, with an empty body of its
/// own; the listener turns them into OperationOutcomes too.
#[tokio::test]
async fn errors_hyper_answers_itself_are_outcomes() {
    let s = Server::start().await;
    // Longer than any client library will send: hyper's limit is 65,534 bytes.
    let long = format!("GET /fhir/Patient?family={} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let outcome = raw_outcome(&s, long.as_bytes(), 414).await;
    assert_eq!(outcome["issue"][0]["code"], "too-long");

    let mut many = s.request(Method::GET, "Patient");
    for i in 0..120 {
        many = many.header(format!("x-extra-{i}"), "1");
    }
    let outcome = expect_outcome(many.send().await.unwrap(), 431).await;
    assert_eq!(outcome["issue"][0]["code"], "too-long");

    let outcome = raw_outcome(&s, b"NOT HTTP AT ALL\r\n\r\n", 400).await;
    assert_eq!(outcome["issue"][0]["code"], "structure");

    // A request after a good one on the same connection: the answer to the
    // first is untouched, the second gets an outcome.
    let pipelined = format!("GET /fhir/metadata HTTP/1.1\r\nhost: x\r\n\r\nGET /fhir/Patient?x={} HTTP/1.1\r\nhost: x\r\n\r\n", "b".repeat(70_000));
    let both = raw(&s, pipelined.as_bytes()).await;
    assert!(both.starts_with("HTTP/1.1 200 OK"), "{}", &both[..200]);
    assert!(both.contains("\"CapabilityStatement\""));
    let second = &both[both.find("HTTP/1.1 414").expect("414 after the 200")..];
    assert!(second.ends_with("}"), "{second}");
    assert!(second.contains("\"OperationOutcome\""), "{second}");
}

/// Errors from the probes' routes are outcomes too (the probes' successes stay plain text).
#[tokio::test]
async fn probe_errors_are_outcomes() {
    let s = Server::start().await;
    let method = s.client.post(format!("{}/healthz", s.root)).send().await.unwrap();
    expect_outcome(method, 405).await;
    let down = Server::with_store(Arc::new(DownStore(MemoryStore::new()))).await;
    let outcome = expect_outcome(down.client.get(format!("{}/readyz", down.root)).send().await.unwrap(), 503).await;
    assert_eq!(outcome["issue"][0]["code"], "transient", "{outcome}");
}

#[tokio::test]
async fn internal_errors_do_not_expose_details() {
    let s = Server::with_store(Arc::new(BrokenStore::new())).await;
    let response = s.get("Patient/abc").await;
    let outcome = expect_outcome(response, 500).await;
    let text = outcome.to_string();
    assert!(!text.contains("SECRET"), "{text}");
    assert!(diagnostics(&outcome).contains("incident"), "{text}");
    assert_eq!(outcome["issue"][0]["code"], "exception");
}
