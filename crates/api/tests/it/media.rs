//! Formats and bodies: XML refused (415/406), `_format`, malformed and deeply
//! nested JSON, bodies over the limit (<http://hl7.org/fhir/R4/http.html#mime-type>).

use crate::support::*;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn xml_bodies_are_415() {
    let s = Server::start().await;
    for media in ["application/fhir+xml", "application/xml", "text/xml"] {
        let response = s
            .request(Method::POST, "Patient")
            .header("content-type", media)
            .body("<Patient xmlns=\"http://hl7.org/fhir\"/>")
            .send()
            .await
            .unwrap();
        let outcome = expect_outcome(response, 415).await;
        assert!(diagnostics(&outcome).contains("XML"), "{outcome}");
    }
    let text = s.request(Method::POST, "Patient").header("content-type", "text/plain").body("{}").send().await.unwrap();
    expect_outcome(text, 415).await;
    let patch_type = s
        .request(Method::POST, "Patient")
        .header("content-type", "application/json-patch+json")
        .body("[]")
        .send()
        .await
        .unwrap();
    expect_outcome(patch_type, 415).await;
}

#[tokio::test]
async fn xml_responses_are_406() {
    let s = Server::start().await;
    let id = s.create(patient("Formats")).await;
    let path = format!("Patient/{id}");
    for accept in ["application/fhir+xml", "application/xml", "text/plain"] {
        let response = s.request(Method::GET, &path).header("accept", accept).send().await.unwrap();
        expect_outcome(response, 406).await;
    }
    expect_outcome(s.get(&format!("{path}?_format=xml")).await, 406).await;
    expect_outcome(s.get(&format!("{path}?_format=application/fhir%2Bxml")).await, 406).await;
    expect_outcome(s.get("metadata?_format=xml").await, 406).await;
    // _format wins over Accept.
    let json_format = s.request(Method::GET, &format!("{path}?_format=json")).header("accept", "application/xml").send().await.unwrap();
    assert_eq!(json_format.status(), 200);

    for accept in ["application/json", "application/fhir+json", "*/*", "text/html,application/xhtml+xml,*/*;q=0.8"] {
        let response = s.request(Method::GET, &path).header("accept", accept).send().await.unwrap();
        assert_eq!(response.status(), 200, "{accept}");
        assert_eq!(header(&response, "content-type").as_deref(), Some("application/fhir+json; charset=utf-8"));
    }
    assert_eq!(s.get(&format!("{path}?_format=application/fhir%2Bjson")).await.status(), 200);
    // Plain application/json bodies are accepted.
    let plain = s
        .request(Method::POST, "Patient")
        .header("content-type", "application/json")
        .body(patient("Plain").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 201);
}

#[tokio::test]
async fn malformed_json_is_400_naming_line_and_column() {
    let s = Server::start().await;
    let response = s
        .request(Method::POST, "Patient")
        .header("content-type", "application/fhir+json")
        .body("{\n  \"resourceType\": \"Patient\",\n  \"active\": ,\n}")
        .send()
        .await
        .unwrap();
    let outcome = expect_outcome(response, 400).await;
    let text = diagnostics(&outcome);
    assert!(text.contains("line 3") && text.contains("column"), "{text}");

    for body in ["", "{", "nul", "{\"a\":1}}", "\u{0}"] {
        let response = s.request(Method::POST, "Patient").header("content-type", "application/fhir+json").body(body).send().await.unwrap();
        expect_outcome(response, 400).await;
    }
    let invalid_utf8 = s
        .request(Method::POST, "Patient")
        .header("content-type", "application/fhir+json")
        .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'])
        .send()
        .await
        .unwrap();
    expect_outcome(invalid_utf8, 400).await;
}

/// serde_json keeps the last of two equal keys; the first value would be
/// lost silently, so any repeated key, at any depth, is refused.
#[tokio::test]
async fn duplicate_keys_are_400_naming_the_element() {
    let s = Server::start().await;
    let post = |path: &str, body: &'static str| {
        s.request(Method::POST, path).header("content-type", "application/fhir+json").body(body).send()
    };
    let response = post("Patient", r#"{"resourceType":"Patient","gender":"male","gender":"female"}"#).await.unwrap();
    let outcome = expect_outcome(response, 400).await;
    assert_eq!(outcome["issue"][0]["expression"][0], "Patient.gender", "{outcome}");
    assert_eq!(outcome["issue"][0]["code"], "structure", "{outcome}");
    assert!(diagnostics(&outcome).contains("duplicate"), "{outcome}");
    // Nothing was stored.
    let none = fhir_body(s.get("Patient?_total=accurate").await).await;
    assert_eq!(none["total"], 0, "{none}");

    let nested = r#"{"resourceType":"Patient","name":[{"family":"A","given":["B"],"family":"C"}]}"#;
    let outcome = expect_outcome(post("Patient", nested).await.unwrap(), 400).await;
    assert_eq!(outcome["issue"][0]["expression"][0], "Patient.name[0].family", "{outcome}");

    let bundle = r#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Patient"},
        "resource":{"resourceType":"Patient","active":true,"active":false}}]}"#;
    let outcome = expect_outcome(post("", bundle).await.unwrap(), 400).await;
    assert_eq!(outcome["issue"][0]["expression"][0], "Bundle.entry[0].resource.active", "{outcome}");

    let id = s.create(patient("Dup")).await;
    let patch = s
        .request(Method::PATCH, &format!("Patient/{id}"))
        .header("content-type", "application/json-patch+json")
        .body(r#"[{"op":"replace","path":"/active","value":false,"value":true}]"#)
        .send()
        .await
        .unwrap();
    let outcome = expect_outcome(patch, 400).await;
    assert_eq!(outcome["issue"][0]["expression"][0], "$this[0].value", "{outcome}");
    assert_eq!(fhir_body(s.get(&format!("Patient/{id}")).await).await["meta"]["versionId"], "1");

    // Equal keys in different objects are fine.
    let fine = r#"{"resourceType":"Patient","name":[{"family":"A"},{"family":"B"}],"contact":[{"name":{"family":"A"}}]}"#;
    assert_eq!(post("Patient", fine).await.unwrap().status(), 201);
}

#[tokio::test]
async fn deep_nesting_is_400() {
    let s = Server::start().await;
    let depth = 5_000;
    let body = format!("{{\"resourceType\":\"Patient\",\"x\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
    let response = s.request(Method::POST, "Patient").header("content-type", "application/fhir+json").body(body).send().await.unwrap();
    let outcome = expect_outcome(response, 400).await;
    assert!(diagnostics(&outcome).contains("recursion"), "{outcome}");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_outcomes() {
    let s = Server::start().await;
    let mut big = patient("Big");
    big["text"]["div"] = serde_json::json!(format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", "x".repeat(MAX_BODY)));
    let response = s.send_json(Method::POST, "Patient", &big).send().await.unwrap();
    let outcome = expect_outcome(response, 413).await;
    assert_eq!(outcome["issue"][0]["code"], "too-long");
    let put = s.send_json(Method::PUT, "Patient/x", &big).send().await.unwrap();
    expect_outcome(put, 413).await;
}

/// A chunked body has no Content-Length: the limit is hit while reading.
#[tokio::test]
async fn chunked_bodies_over_the_limit_are_413_outcomes() {
    let s = Server::start().await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /fhir/Patient HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        s.addr, s.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..(MAX_BODY / chunk.len() + 2) {
        let frame = format!("{:x}\r\n", chunk.len());
        if stream.write_all(frame.as_bytes()).await.is_err()
            || stream.write_all(&chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break; // The server may answer and close before we finish.
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.to_ascii_lowercase().contains("content-type: application/fhir+json; charset=utf-8"), "{text}");
    assert!(text.contains("\"OperationOutcome\""), "{text}");
}
