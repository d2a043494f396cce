//! The README's commands, run as a user would: `hearth serve` on a fresh data
//! directory, `--demo`, `hearth import`, with real HTTP over loopback.

use crate::bearer::serve;
use serde_json::{Value, json};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hearth");

async fn get(url: &str) -> (u16, Value) {
    let response = crate::bearer::authorized(reqwest::Client::new().get(url)).await.send().await.expect("request");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn serve_creates_the_data_dir_and_keeps_data_across_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("fresh");
    let id;
    {
        let server = serve(&data, &[]);
        assert!(data.exists(), "data directory created on first start");
        let root = server.base.trim_end_matches("/fhir");
        let health = reqwest::get(format!("{root}/healthz")).await.expect("healthz");
        assert_eq!(health.status().as_u16(), 200);
        let ready = reqwest::get(format!("{root}/readyz")).await.expect("readyz");
        assert_eq!(ready.status().as_u16(), 200);
        let (status, metadata) = get(&format!("{}/metadata", server.base)).await;
        assert_eq!(status, 200);
        assert_eq!(metadata["fhirVersion"], "4.0.1");
        let created = crate::bearer::authorized(reqwest::Client::new().post(format!("{}/Patient", server.base)))
            .await
            .header("Content-Type", "application/fhir+json")
            .body(json!({"resourceType": "Patient", "name": [{"family": "Durable"}]}).to_string())
            .send()
            .await
            .expect("create");
        assert_eq!(created.status().as_u16(), 201);
        let body: Value = created.json().await.expect("json");
        id = body["id"].as_str().expect("id").to_string();
    }
    let server = serve(&data, &[]);
    let (status, body) = get(&format!("{}/Patient/{id}", server.base)).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"][0]["family"], "Durable");
}

#[tokio::test]
async fn demo_data_is_loaded_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let count = |base: String| async move {
        let (status, bundle) = get(&format!("{base}/Patient?_tag=https://hearth.example/fhir/tags|demo&_total=accurate&_count=1")).await;
        assert_eq!(status, 200, "{bundle}");
        bundle["total"].as_u64().expect("total")
    };
    let first = {
        let server = serve(tmp.path(), &["--demo"]);
        count(server.base.clone()).await
    };
    assert!(first >= 10, "demo patients loaded: {first}");
    let server = serve(tmp.path(), &["--demo"]);
    assert_eq!(count(server.base.clone()).await, first, "a second --demo loads nothing new");
}

#[tokio::test]
async fn import_loads_ndjson_and_bundles_and_names_each_rejection() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("input");
    std::fs::create_dir_all(&input).expect("mkdir");
    let lines = [
        json!({"resourceType": "Patient", "id": "imp-1", "name": [{"family": "Imported"}], "birthDate": "1970-01-01"}).to_string(),
        json!({"resourceType": "Patient", "id": "imp-2", "birthDate": "1970-13-01"}).to_string(),
        "{not json".to_string(),
        // Written as text: a Rust float literal would lose the trailing zero.
        r#"{"resourceType":"Observation","id":"obs-1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/imp-1"},"valueQuantity":{"value":1.50,"unit":"kg"}}"#.to_string(),
    ];
    std::fs::write(input.join("data.ndjson"), lines.join("\n")).expect("write");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5d2a8f4e-7a3c-4b71-9a51-0f6c1c8e2b11",
         "resource": {"resourceType": "Patient", "name": [{"family": "Bundled"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Encounter", "status": "finished",
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                      "subject": {"reference": "urn:uuid:5d2a8f4e-7a3c-4b71-9a51-0f6c1c8e2b11"}},
         "request": {"method": "POST", "url": "Encounter"}}]});
    std::fs::write(input.join("bundle.json"), bundle.to_string()).expect("write");
    let data = tmp.path().join("data");
    let output = Command::new(BIN)
        .args(["import", "--quiet", "--data-dir"])
        .arg(&data)
        .arg(&input)
        .env_remove("HEARTH_DATABASE_URL")
        .output()
        .expect("import runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "rejections give exit code 3: {stdout}");
    assert!(stdout.contains("4 resources loaded, 2 rejected"), "{stdout}");
    assert!(stdout.contains("data.ndjson:2") && stdout.contains("Patient.birthDate"), "{stdout}");
    assert!(stdout.contains("data.ndjson:3"), "{stdout}");

    let server = serve(&data, &[]);
    let (status, obs) = get(&format!("{}/Observation/obs-1", server.base)).await;
    assert_eq!(status, 200);
    let text = obs.to_string();
    assert!(text.contains(r#""value":1.50"#), "decimal precision kept: {text}");
    let (_, encounters) = get(&format!("{}/Encounter?_total=accurate", server.base)).await;
    assert_eq!(encounters["total"], 1);
    let reference = encounters["entry"][0]["resource"]["subject"]["reference"].as_str().expect("ref");
    assert!(reference.starts_with("Patient/"), "urn:uuid resolved: {reference}");
}

#[test]
fn import_survives_bad_bytes_and_blames_the_failing_entry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("input");
    std::fs::create_dir_all(&input).expect("mkdir");
    let mut ndjson = b"\xff\xfe{\"resourceType\":\"Patient\"}\n".to_vec();
    ndjson.extend_from_slice(json!({"resourceType": "Patient", "id": "after-bad-bytes"}).to_string().as_bytes());
    std::fs::write(input.join("mixed.ndjson"), ndjson).expect("write");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "female"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "often"}, "request": {"method": "POST", "url": "Patient"}}]});
    std::fs::write(input.join("tx.json"), bundle.to_string()).expect("write");
    let output = Command::new(BIN)
        .args(["import", "--quiet", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg(&input)
        .env_remove("HEARTH_DATABASE_URL")
        .output()
        .expect("import runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("1 resources loaded, 3 rejected"), "{stdout}");
    assert!(stdout.contains("mixed.ndjson:1") && stdout.contains("not valid UTF-8"), "{stdout}");
    assert!(stdout.contains("tx.json#entry[0]") && stdout.contains("because entry[1] failed"), "{stdout}");
    assert!(stdout.contains("tx.json#entry[1]  Patient: Bundle.entry[1].resource.gender"), "{stdout}");
}

#[test]
fn bench_search_loads_once_and_times_every_target_shape() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = || {
        let output = Command::new(BIN)
            .args(["bench-search", "--patients", "3", "--per-patient", "60", "--heavy", "80", "--clients", "2", "--seconds", "1"])
            .arg("--data-dir")
            .arg(tmp.path())
            .env_remove("HEARTH_DATABASE_URL")
            .output()
            .expect("bench-search runs");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        stdout
    };
    let stored = |report: &str| -> String {
        report.split("WAL), ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap_or_default().to_string()
    };
    let first = run();
    let count = stored(&first);
    assert!(first.contains(&format!("(loaded {count} in")), "{first}");
    // 3 patients of 60 resources and one of 80, with their clinics and practitioners.
    assert!(count.parse::<u64>().is_ok_and(|n| (260..300).contains(&n)), "{first}");
    let rows: Vec<&str> = first.lines().filter(|l| l.starts_with("| `")).collect();
    assert_eq!(rows.len(), 6, "{first}");
    for row in rows {
        let cells: Vec<&str> = row.split(" | ").collect();
        assert_eq!(cells.get(7).map(|c| c.trim()), Some("0"), "errors in {row}");
    }
    let second = run();
    assert!(second.contains(&format!("reused the {count} resources")), "{second}");
}
