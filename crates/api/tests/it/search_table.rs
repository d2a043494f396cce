//! The search conformance table: data-driven cases in `tests/search-table/*.toml`
//! (a file per parameter type, plus chains, includes and sorting) over the
//! resources in `tests/search-table/fixtures/*.json`, run over HTTP against the
//! memory store, SQLite and PostgreSQL, which must give the same answers.
//!
//! A case is a query relative to the FHIR base and what it must answer:
//! - `expect = ["Type/id", ...]`: the matches, in any order;
//! - `ordered = ["Type/id", ...]`: the matches, in this order;
//! - `status = 400`: an error, answered with an OperationOutcome;
//! - optionally `include = [...]` (entries with `search.mode = include`, any
//!   order), `total = N` (`Bundle.total`), `method = "POST"` (form-encoded
//!   `_search`) and `prefer = "handling=lenient"`.
//!
//! Every failing case is reported (file, case name, query, what differed)
//! before the test fails, so one run shows the whole picture.

use crate::support::*;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

per_backend!(search_table);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    query: String,
    #[serde(default)]
    expect: Option<Vec<String>>,
    #[serde(default)]
    ordered: Option<Vec<String>>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    include: Option<Vec<String>>,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    prefer: Option<String>,
}

fn table_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/search-table")
}

fn files_in(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    files.sort();
    files
}

/// Loads every fixture resource with `PUT [type]/[id]`, so ids are as written.
async fn load_fixtures(s: &Server) -> usize {
    let mut loaded = 0;
    for file in files_in(&table_dir().join("fixtures"), "json") {
        let text = std::fs::read_to_string(&file).unwrap();
        let resources: Vec<Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for resource in resources {
            let path = format!("{}/{}", resource["resourceType"].as_str().unwrap(), resource["id"].as_str().unwrap());
            let response = s.send_json(Method::PUT, &path, &resource).send().await.unwrap();
            let status = response.status().as_u16();
            assert!(
                status == 201 || status == 200,
                "{}: loading {path} answered {status}: {}",
                file.display(),
                response.text().await.unwrap_or_default()
            );
            loaded += 1;
        }
    }
    loaded
}

/// `Type/id` of the entries of a searchset with the given search mode.
fn entries(bundle: &Value, mode: &str) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"].as_str().unwrap_or("match") == mode)
                .map(|e| format!("{}/{}", e["resource"]["resourceType"].as_str().unwrap_or("?"), e["resource"]["id"].as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default()
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

/// Runs one case; `Err` describes how the answer differed.
async fn run_case(s: &Server, case: &Case) -> Result<(), String> {
    let request = match case.method.as_deref() {
        None | Some("GET") => s.request(Method::GET, &case.query),
        Some("POST") => {
            let (path, form) = case.query.split_once('?').unwrap_or((&case.query, ""));
            s.request(Method::POST, &format!("{path}/_search"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.to_string())
        }
        Some(other) => return Err(format!("unknown method {other}")),
    };
    let request = match &case.prefer {
        Some(prefer) => request.header("prefer", prefer.as_str()),
        None => request,
    };
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.map_err(|e| format!("status {status}, body is not JSON: {e}"))?;
    if let Some(expected) = case.status {
        if status != expected {
            return Err(format!("status {status}, expected {expected}"));
        }
        if status >= 400 && body["resourceType"] != "OperationOutcome" {
            return Err("the error is not an OperationOutcome".into());
        }
        return Ok(());
    }
    if status != 200 {
        return Err(format!("status {status}: {}", body["issue"][0]["diagnostics"]));
    }
    let matches = entries(&body, "match");
    if let Some(expected) = &case.expect
        && sorted(matches.clone()) != sorted(expected.clone())
    {
        return Err(format!("matched {matches:?}, expected {expected:?}"));
    }
    if let Some(expected) = &case.ordered
        && &matches != expected
    {
        return Err(format!("matched {matches:?} in that order, expected {expected:?}"));
    }
    if let Some(expected) = &case.include {
        let included = entries(&body, "include");
        if sorted(included.clone()) != sorted(expected.clone()) {
            return Err(format!("included {included:?}, expected {expected:?}"));
        }
    }
    if let Some(expected) = case.total
        && body["total"].as_u64() != Some(expected)
    {
        return Err(format!("total {}, expected {expected}", body["total"]));
    }
    Ok(())
}

async fn search_table(s: Server) {
    let loaded = load_fixtures(&s).await;
    assert!(loaded >= 30, "only {loaded} fixture resources");
    let mut failures = Vec::new();
    let mut cases = 0;
    for file in files_in(&table_dir(), "toml") {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let table: Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for case in &table.cases {
            let answers = [case.expect.is_some(), case.ordered.is_some(), case.status.is_some()];
            assert_eq!(answers.iter().filter(|a| **a).count(), 1, "{name}: {}: give one of expect, ordered, status", case.name);
            cases += 1;
            if let Err(difference) = run_case(&s, case).await {
                failures.push(format!("{name}: {} ({}): {difference}", case.name, case.query));
            }
        }
    }
    assert!(cases >= 50, "only {cases} cases");
    assert!(failures.is_empty(), "{} of {cases} search-table cases failed:\n{}", failures.len(), failures.join("\n"));
}
