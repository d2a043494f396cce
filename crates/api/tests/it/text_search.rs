//! Full-text search over HTTP (<http://hl7.org/fhir/R4/search.html#_text>):
//! the words follow every kind of write (create, update, patch, delete,
//! transaction) and `$reindex`, and the CapabilityStatement states the
//! parameters. The query syntax itself is covered by
//! `tests/search-table/text.toml`.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

per_backend!(words_follow_every_write, reindex_rewrites_the_words, capability_statement_states_full_text);

fn note(id: &str, narrative: &str, comment: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"text": "Clinical note"},
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{narrative}</div>")},
        "note": [{"text": comment}]
    })
}

/// The ids a search answers, sorted.
async fn ids(s: &Server, query: &str) -> Vec<String> {
    let response = s.get(query).await;
    assert_eq!(response.status(), 200, "{query}");
    let bundle = fhir_body(response).await;
    let mut ids: Vec<String> = bundle["entry"]
        .as_array()
        .map(|entries| entries.iter().map(|e| e["resource"]["id"].as_str().unwrap_or("?").to_string()).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

async fn put(s: &Server, body: &Value) {
    let path = format!("Observation/{}", body["id"].as_str().unwrap());
    let response = s.send_json(Method::PUT, &path, body).send().await.unwrap();
    assert!(response.status() == 200 || response.status() == 201, "{path}: {}", response.status());
}

async fn words_follow_every_write(s: Server) {
    put(&s, &note("n1", "Chest pain at rest", "seen by cardiology")).await;
    put(&s, &note("n2", "Chest X-ray clear", "no follow-up")).await;
    assert_eq!(ids(&s, "Observation?_text=chest").await, ["n1", "n2"]);
    assert_eq!(ids(&s, "Observation?_content=cardiology").await, ["n1"]);

    // An update replaces the words.
    put(&s, &note("n1", "Palpitations", "seen by cardiology again")).await;
    assert_eq!(ids(&s, "Observation?_text=chest").await, ["n2"]);
    assert_eq!(ids(&s, "Observation?_text=palpitations").await, ["n1"]);

    // A patch too.
    let patch = json!([{"op": "replace", "path": "/note/0/text", "value": "referred to neurology"}]);
    let response = s
        .request(Method::PATCH, "Observation/n1")
        .header("content-type", "application/json-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(ids(&s, "Observation?_content=cardiology").await, Vec::<String>::new());
    assert_eq!(ids(&s, "Observation?_content=neurology").await, ["n1"]);

    // A delete removes them; a transaction writes them.
    let response = s.request(Method::DELETE, "Observation/n2").send().await.unwrap();
    assert!(response.status().is_success());
    assert_eq!(ids(&s, "Observation?_text=chest").await, Vec::<String>::new());
    let transaction = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{
            "resource": note("n3", "Chest tightness on exertion", "stress test booked"),
            "request": {"method": "PUT", "url": "Observation/n3"}
        }]
    });
    let response = s.send_json(Method::POST, "", &transaction).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(ids(&s, "Observation?_text=%22chest%20tightness%22").await, ["n3"]);

    // A conditional create keyed on words finds the match and creates nothing.
    let response = s
        .send_json(Method::POST, "Observation", &note("n4", "Chest tightness", "duplicate"))
        .header("if-none-exist", "_text=tightness")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(ids(&s, "Observation?_content=duplicate").await, Vec::<String>::new());
}

async fn reindex_rewrites_the_words(s: Server) {
    put(&s, &note("r1", "Left ankle sprain", "ice and rest")).await;
    put(&s, &note("r2", "Ankle fracture", "cast applied")).await;
    let response = s.request(Method::POST, "Observation/$reindex").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = s.request(Method::POST, "$reindex").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(ids(&s, "Observation?_text=ankle").await, ["r1", "r2"]);
    assert_eq!(ids(&s, "Observation?_content=cast").await, ["r2"]);
    assert_eq!(ids(&s, "?_text=sprain").await, ["r1"]);
}

async fn capability_statement_states_full_text(s: Server) {
    let statement = fhir_body(s.get("metadata").await).await;
    let resources = statement["rest"][0]["resource"].as_array().unwrap();
    let params_of = |resource_type: &str| -> Vec<String> {
        resources
            .iter()
            .find(|r| r["type"] == resource_type)
            .and_then(|r| r["searchParam"].as_array())
            .map(|params| params.iter().filter_map(|p| p["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let observation = params_of("Observation");
    assert!(observation.contains(&"_text".to_string()), "{observation:?}");
    assert!(observation.contains(&"_content".to_string()), "{observation:?}");
    // Binary is no DomainResource: no narrative, so no _text.
    let binary = params_of("Binary");
    assert!(binary.contains(&"_content".to_string()), "{binary:?}");
    assert!(!binary.contains(&"_text".to_string()), "{binary:?}");
}
