//! A quick SQLite store benchmark (not a test): concurrent single-resource
//! commits, per-patient 30-resource commits, concurrent reads by id, and bytes
//! on disk per ~1 KB resource including indexes and history.
//!
//! Run: `cargo run --release -p store --example store_bench [DIR]`.
//! `STORE_BENCH_PHASES=bundles,reads` runs only some of `single,bundles,reads`;
//! `STORE_BENCH_PAGE_SIZE=2048` creates the database with another page size;
//! `STORE_BENCH_CACHE_KIB=65536` sets each connection's page cache;
//! `STORE_BENCH_NO_TEXT=1` writes no `_text`/`_content` words (to measure their cost).

use domain::Store;
use domain::store::{Commit, Method, Write};
use fhir::instant::Instant;
use fhir::search::text::TextIndex;
use fhir::search::{IndexEntry, IndexValue, normalize_string};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as Clock};
use store::sqlite::{SqliteOptions, SqliteStore};

const CLIENTS: usize = 16;
const SINGLE_COMMITS: usize = 24_000;
const BUNDLES: usize = 1_000;
const BUNDLE_SIZE: usize = 30;
const READS: usize = 400_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keep = std::env::args().nth(1).map(PathBuf::from);
    let temp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench.db");
    let mut options = SqliteOptions::default();
    if let Some(size) = std::env::var("STORE_BENCH_PAGE_SIZE").ok().and_then(|v| v.parse().ok()) {
        options.page_size = size;
    }
    if let Some(kib) = std::env::var("STORE_BENCH_CACHE_KIB").ok().and_then(|v| v.parse().ok()) {
        options.cache_kib = kib;
    }
    let store = Arc::new(SqliteStore::open(&path, options)?);
    let clock = Arc::new(AtomicU64::new(1_700_000_000_000_000));

    let phases = std::env::var("STORE_BENCH_PHASES").unwrap_or_else(|_| "single,bundles,reads".into());
    let phase = |name: &str| phases.split(',').any(|p| p == name);
    let single_commits = if phase("single") { SINGLE_COMMITS } else { 0 };
    let bundles = if phase("bundles") || phase("reads") { BUNDLES } else { 0 };

    // 1. Single-resource commits from 16 concurrent clients (group commit).
    let started = Clock::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let store = Arc::clone(&store);
            let clock = Arc::clone(&clock);
            tokio::spawn(async move {
                for n in 0..single_commits / CLIENTS {
                    let id = format!("single-{client}-{n}");
                    let commit = Commit { checks: vec![], writes: vec![observation(&id, "pat-x", &clock)], ..Commit::default() };
                    store.commit(commit).await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "single-resource commits, {CLIENTS} clients: {:.0} commits/s ({SINGLE_COMMITS} in {:.2?})",
        single_commits as f64 / elapsed.as_secs_f64(),
        elapsed
    );

    // 2. Per-patient bundles of 30 resources from one client.
    let started = Clock::now();
    for b in 0..bundles {
        let patient = format!("pat-{b}");
        let mut writes = vec![patient_write(&patient, &clock)];
        for n in 1..BUNDLE_SIZE {
            writes.push(observation(&format!("obs-{b}-{n}"), &patient, &clock));
        }
        store.commit(Commit { checks: vec![], writes, ..Commit::default() }).await?;
    }
    let elapsed = started.elapsed();
    let resources = bundles * BUNDLE_SIZE;
    println!(
        "{BUNDLE_SIZE}-resource commits, 1 client: {:.0} resources/s ({resources} in {:.2?})",
        resources as f64 / elapsed.as_secs_f64(),
        elapsed
    );

    if phase("reads") {
        read_phase(&store).await?;
    }
    let total_resources = single_commits + resources;
    let body_bytes = single_commits * observation_body("x", "y").len()
        + bundles * (patient_body("x").len() + (BUNDLE_SIZE - 1) * observation_body("x", "y").len());
    drop(store);
    disk_report(&path, total_resources, body_bytes)
}

async fn read_phase(store: &Arc<SqliteStore>) -> Result<(), Box<dyn std::error::Error>> {
    // 3. Reads by id from 16 clients, with latency percentiles.
    let started = Clock::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(READS / CLIENTS);
                for n in 0..READS / CLIENTS {
                    let b = (n * 7919 + client * 104_729) % BUNDLES;
                    let i = 1 + (n * 31 + client) % (BUNDLE_SIZE - 1);
                    let id = format!("obs-{b}-{i}");
                    let t = Clock::now();
                    let found = store.read("Observation", &id).await.map_err(|e| e.to_string())?;
                    latencies.push(t.elapsed());
                    if found.is_none() {
                        return Err(format!("missing {id}"));
                    }
                }
                Ok::<Vec<Duration>, String>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(READS);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "reads by id, {CLIENTS} clients: {:.0} reads/s; p50 {:?}, p99 {:?}, max {:?}",
        READS as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

/// 4. Disk: everything checkpointed into the main file.
fn disk_report(path: &std::path::Path, total_resources: usize, body_bytes: usize) -> Result<(), Box<dyn std::error::Error>> {
    let conn = rusqlite::Connection::open(path)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let size = std::fs::metadata(path)?.len();
    println!(
        "disk: {size} bytes for {total_resources} resources ({:.0} B/resource; mean body {:.0} B; {:.2}x body)",
        size as f64 / total_resources as f64,
        body_bytes as f64 / total_resources as f64,
        size as f64 / body_bytes as f64
    );
    let mut statement = conn.prepare(
        "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY SUM(pgsize) DESC",
    )?;
    let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (name, bytes) = row?;
        println!("  {name:<28} {:>7.0} B/resource", bytes as f64 / total_resources as f64);
    }
    Ok(())
}

fn tick(clock: &AtomicU64) -> Instant {
    Instant(clock.fetch_add(1_000, Ordering::Relaxed) as i64)
}

fn entry(param: &str, value: IndexValue) -> IndexEntry {
    IndexEntry { param: param.into(), value }
}

fn token(param: &str, system: Option<&str>, code: &str, text: Option<&str>) -> IndexEntry {
    entry(param, IndexValue::Token {
        system: system.map(Into::into),
        code: Some(code.into()),
        text: text.map(Into::into),
    })
}

fn reference(param: &str, target_type: &str, id: &str) -> IndexEntry {
    entry(param, IndexValue::Reference {
        target_type: Some(target_type.into()),
        target_id: Some(id.into()),
        url: format!("{target_type}/{id}"),
    })
}

fn string(param: &str, text: &str) -> IndexEntry {
    entry(param, IndexValue::String { normalized: normalize_string(text), exact: text.into() })
}

/// A vital-signs Observation of about 1 KB.
fn observation_body(id: &str, patient: &str) -> String {
    format!(
        r#"{{"resourceType":"Observation","id":"{id}","meta":{{"versionId":"1","lastUpdated":"2024-03-01T10:15:30.123456Z","profile":["http://hl7.org/fhir/StructureDefinition/vitalsigns"]}},"identifier":[{{"system":"urn:oid:1.2.36.146.595.217.0.1","value":"{id}"}}],"status":"final","category":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"Vital Signs"}}],"text":"Vital Signs"}}],"code":{{"coding":[{{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}},{{"system":"http://snomed.info/sct","code":"364075005","display":"Heart rate (observable entity)"}}],"text":"Heart rate"}},"subject":{{"reference":"Patient/{patient}","display":"Patient"}},"encounter":{{"reference":"Encounter/enc-{patient}"}},"effectiveDateTime":"2024-03-01T10:15:30Z","issued":"2024-03-01T10:20:00.000Z","performer":[{{"reference":"Practitioner/prac-1"}}],"valueQuantity":{{"value":72,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"}},"interpretation":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"N","display":"Normal"}}]}}],"note":[{{"text":"Resting, seated, measured after five minutes."}}]}}"#
    )
}

fn observation(id: &str, patient: &str, clock: &AtomicU64) -> Write {
    let quantity = |param: &str| {
        entry(param, IndexValue::Quantity {
            low: 71.5,
            high: 72.5,
            system: Some("http://unitsofmeasure.org".into()),
            code: Some("/min".into()),
        })
    };
    let index = vec![
        token("identifier", Some("urn:oid:1.2.36.146.595.217.0.1"), id, None),
        token("status", Some("http://hl7.org/fhir/observation-status"), "final", None),
        token("category", Some("http://terminology.hl7.org/CodeSystem/observation-category"), "vital-signs", Some("Vital Signs")),
        token("code", Some("http://loinc.org"), "8867-4", Some("Heart rate")),
        token("code", Some("http://snomed.info/sct"), "364075005", Some("Heart rate (observable entity)")),
        token("combo-code", Some("http://loinc.org"), "8867-4", Some("Heart rate")),
        token("combo-code", Some("http://snomed.info/sct"), "364075005", Some("Heart rate (observable entity)")),
        reference("subject", "Patient", patient),
        reference("patient", "Patient", patient),
        reference("encounter", "Encounter", &format!("enc-{patient}")),
        reference("performer", "Practitioner", "prac-1"),
        entry("date", IndexValue::Date { low: 1_709_288_130_000_000, high: 1_709_288_130_999_999 }),
        quantity("value-quantity"),
        quantity("combo-value-quantity"),
    ];
    Write {
        resource_type: "Observation".into(),
        id: id.into(),
        version_id: 1,
        last_updated: tick(clock),
        method: Method::Post,
        body: Some(Arc::from(observation_body(id, patient))),
        index,
        text: text_of(&observation_body(id, patient)),
        contained: Vec::new(),
    }
}

/// A Patient of about 1 KB.
fn patient_body(id: &str) -> String {
    format!(
        r#"{{"resourceType":"Patient","id":"{id}","meta":{{"versionId":"1","lastUpdated":"2024-03-01T10:15:30.123456Z"}},"identifier":[{{"use":"usual","type":{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}}]}},"system":"urn:oid:1.2.36.146.595.217.0.1","value":"{id}"}},{{"system":"http://hl7.org/fhir/sid/us-ssn","value":"000-00-0000"}}],"active":true,"name":[{{"use":"official","family":"Chalmers","given":["Peter","James"]}},{{"use":"usual","given":["Jim"]}}],"telecom":[{{"system":"phone","value":"(03) 5555 6473","use":"work","rank":1}},{{"system":"email","value":"jim@example.org"}}],"gender":"male","birthDate":"1974-12-25","address":[{{"use":"home","type":"both","text":"534 Erewhon St PeasantVille, Rainbow, Vic  3999","line":["534 Erewhon St"],"city":"PleasantVille","district":"Rainbow","state":"Vic","postalCode":"3999","period":{{"start":"1974-12-25"}}}}],"generalPractitioner":[{{"reference":"Practitioner/prac-1"}}],"managingOrganization":{{"reference":"Organization/org-1"}}}}"#
    )
}

fn patient_write(id: &str, clock: &AtomicU64) -> Write {
    let index = vec![
        token("identifier", Some("urn:oid:1.2.36.146.595.217.0.1"), id, None),
        token("identifier", Some("http://hl7.org/fhir/sid/us-ssn"), "000-00-0000", None),
        token("active", None, "true", None),
        token("gender", Some("http://hl7.org/fhir/administrative-gender"), "male", None),
        token("telecom", Some("phone"), "(03) 5555 6473", None),
        token("telecom", Some("email"), "jim@example.org", None),
        token("phone", Some("phone"), "(03) 5555 6473", None),
        token("email", Some("email"), "jim@example.org", None),
        string("name", "Chalmers"),
        string("name", "Peter"),
        string("name", "James"),
        string("name", "Jim"),
        string("family", "Chalmers"),
        string("given", "Peter"),
        string("given", "James"),
        string("given", "Jim"),
        string("address", "534 Erewhon St"),
        string("address", "PleasantVille"),
        string("address-city", "PleasantVille"),
        string("address-state", "Vic"),
        string("address-postalcode", "3999"),
        entry("birthdate", IndexValue::Date { low: 156_643_200_000_000, high: 156_729_599_999_999 }),
        reference("general-practitioner", "Practitioner", "prac-1"),
        reference("organization", "Organization", "org-1"),
    ];
    Write {
        resource_type: "Patient".into(),
        id: id.into(),
        version_id: 1,
        last_updated: tick(clock),
        method: Method::Post,
        body: Some(Arc::from(patient_body(id))),
        index,
        text: text_of(&patient_body(id)),
        contained: Vec::new(),
    }
}

/// The `_text`/`_content` words of a body, as the Service makes them.
fn text_of(body: &str) -> TextIndex {
    if std::env::var_os("STORE_BENCH_NO_TEXT").is_some() {
        return TextIndex::default();
    }
    serde_json::from_str(body).map(|value| TextIndex::of(&value)).unwrap_or_default()
}
