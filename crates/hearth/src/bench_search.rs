//! `hearth bench-search`: search throughput and latency on a large store.
//!
//! Loads (once per data folder) `patients` synthetic patients with
//! `per_patient` resources each plus one heavy patient, through the import
//! code path, then runs each query shape of the search targets with
//! `clients` concurrent HTTP clients over loopback for `seconds`, and prints
//! a Markdown report for docs/benchmarks.md. Query values (family prefixes,
//! identifiers, patient ids, the commonest Observation codes) are sampled
//! from the loaded data, so every query matches something.

use crate::bench::{Percentiles, Server, client};
use crate::{config, import, synth, wiring};
use anyhow::{Context, bail};
use fhir::search::query::{SearchQuery, TotalMode};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SearchBenchOptions {
    /// Where the store and the generated NDJSON live; reused by later runs.
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub patients: usize,
    pub per_patient: usize,
    /// Resources of the one heavy patient `$everything` is timed on.
    pub heavy: usize,
    pub clients: usize,
    pub seconds: u64,
    pub seed: u64,
    /// The read-audit batch window; the configuration's default when `None`.
    pub read_audit_window_ms: Option<u64>,
}

/// Values the queries are built from.
struct Samples {
    /// (id, family, identifier `system|value`) of patients.
    patients: Vec<(String, String, String)>,
    /// Observation codes as `system|code`, commonest first.
    codes: Vec<String>,
    heavy_patient: String,
}

/// One measured query shape.
struct Measured {
    shape: String,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Option<Percentiles>,
    note: String,
}

pub async fn run(opts: &SearchBenchOptions) -> anyhow::Result<String> {
    std::fs::create_dir_all(&opts.data_dir).with_context(|| format!("creating {}", opts.data_dir.display()))?;
    let mut config = config::Config::default();
    config.storage.data_dir = opts.data_dir.join("store");
    config.storage.database_url = opts.database_url.clone().unwrap_or_default();
    if let Some(window) = opts.read_audit_window_ms {
        config.security.read_audit_window_ms = window;
        config.validate()?;
    }
    let service = wiring::service(&config).await?;
    let loaded = count(&service, None).await?;
    let load_note = if loaded == 0 {
        load(&service, opts).await?
    } else {
        format!("reused the {} resources already in the store", thousands(loaded))
    };
    let total = count(&service, None).await?;
    let samples = sample(&service).await?;
    let server = Server::start(&config, Arc::clone(&service)).await?;
    let base = server.base.clone();
    let mut rows = Vec::new();

    let s = Arc::new(samples);
    let pick = |i: usize, s: &Samples| s.patients[i % s.patients.len()].clone();
    rows.push(
        phase(&base, opts, "Patient?family=<3-letter prefix>", opts.clients, {
            let s = Arc::clone(&s);
            move |i| {
                let (_, family, _) = pick(i * 7919, &s);
                let prefix: String = family.chars().take(3).collect();
                format!("Patient?family={}", encode(&prefix))
            }
        })
        .await?,
    );
    rows.push(
        phase(&base, opts, "Patient?identifier=system|value", opts.clients, {
            let s = Arc::clone(&s);
            move |i| format!("Patient?identifier={}", encode(&pick(i * 7919, &s).2))
        })
        .await?,
    );
    rows.push(
        phase(&base, opts, "Observation?patient=X&code=LOINC|Y&_sort=-date&_count=20", opts.clients, {
            let s = Arc::clone(&s);
            move |i| {
                let (id, _, _) = pick(i * 7919, &s);
                let code = &s.codes[i % s.codes.len().min(5)];
                format!("Observation?patient={id}&code={}&_sort=-date&_count=20", encode(code))
            }
        })
        .await?,
    );
    let commonest = s.codes.first().cloned().unwrap_or_default();
    let mut counted = phase(&base, opts, "Observation?code=LOINC|Y&_summary=count", 1, {
        let code = commonest.clone();
        move |_| format!("Observation?code={}&_summary=count", encode(&code))
    })
    .await?;
    let matches = count_matches(&base, &commonest).await?;
    counted.note = format!("{} matches", thousands(matches));
    rows.push(counted);
    rows.push(
        phase(&base, opts, "Observation?subject:Patient.family=X&code=LOINC|Y", opts.clients, {
            let s = Arc::clone(&s);
            move |i| {
                let (_, family, _) = pick(i * 7919, &s);
                let code = &s.codes[i % s.codes.len().min(5)];
                format!("Observation?subject:Patient.family={}&code={}", encode(&family), encode(code))
            }
        })
        .await?,
    );
    let mut everything = phase(&base, opts, "Patient/[id]/$everything (first page)", 1, {
        let id = s.heavy_patient.clone();
        move |_| format!("Patient/{id}/$everything")
    })
    .await?;
    everything.note = format!("patient with {} resources", thousands(opts.heavy as u64));
    rows.push(everything);
    server.shutdown().await?;

    let backend = if config.storage.database_url.is_empty() { "SQLite (embedded, WAL)" } else { "PostgreSQL" };
    let mut out = String::new();
    out.push_str(&format!(
        "Store: {backend}, {} resources ({load_note}); {} clients, {} s per query shape; read-audit window {} ms.\n\n",
        thousands(total),
        opts.clients,
        opts.seconds,
        config.security.read_audit_window_ms
    ));
    out.push_str("| Query | Clients | Requests | Throughput | p50 | p95 | p99 | Errors | Note |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let rate = r.requests as f64 / r.elapsed.as_secs_f64().max(1e-9);
        let (p50, p95, p99) = match r.latency {
            Some(p) => (ms(p.p50), ms(p.p95), ms(p.p99)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let clients = if r.shape.contains("_summary=count") || r.shape.contains("$everything") { 1 } else { opts.clients };
        out.push_str(&format!(
            "| `{}` | {clients} | {} | {} queries/s | {p50} | {p95} | {p99} | {} | {} |\n",
            r.shape,
            thousands(r.requests),
            thousands(rate.round() as u64),
            r.errors,
            r.note
        ));
    }
    Ok(out)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

async fn count(service: &Arc<domain::Service>, resource_type: Option<&str>) -> anyhow::Result<u64> {
    let query = SearchQuery {
        resource_type: resource_type.map(str::to_string),
        count: 0,
        total: TotalMode::Accurate,
        ..SearchQuery::default()
    };
    Ok(service.store().search(&query).await?.total.unwrap_or(0))
}

/// Generates and imports the cohort and the heavy patient.
async fn load(service: &Arc<domain::Service>, opts: &SearchBenchOptions) -> anyhow::Result<String> {
    let cohort = opts.data_dir.join("ndjson");
    let heavy = opts.data_dir.join("ndjson-heavy");
    eprintln!("generating {} patients x {} resources ...", opts.patients, opts.per_patient);
    let mut files = synth::write_ndjson(
        &cohort,
        &synth::SynthOptions { seed: opts.seed, patients: opts.patients, per_patient: Some(opts.per_patient) },
    )?
    .files;
    files.extend(
        synth::write_ndjson(&heavy, &synth::SynthOptions { seed: opts.seed ^ 0x5eed, patients: 1, per_patient: Some(opts.heavy) })?
            .files,
    );
    let started = Instant::now();
    let summary =
        import::import_paths(service, &files, &import::ImportOptions { batch_size: 1000, progress: true }).await?;
    let elapsed = started.elapsed();
    if !summary.rejected.is_empty() {
        bail!("{} generated resources were rejected", summary.rejected.len());
    }
    let loaded = summary.loaded_total() as u64;
    Ok(format!(
        "loaded {} in {:.0} s, {} resources/s",
        thousands(loaded),
        elapsed.as_secs_f64(),
        thousands((loaded as f64 / elapsed.as_secs_f64().max(1e-9)) as u64)
    ))
}

async fn sample(service: &Arc<domain::Service>) -> anyhow::Result<Samples> {
    let store = service.store();
    let mut patients = Vec::new();
    let mut heavy_patient = String::new();
    let mut heavy_count = 0u64;
    let mut after = None;
    loop {
        let batch = store.scan(Some("Patient"), after.as_ref(), 1000).await?;
        let Some(last) = batch.last() else { break };
        after = Some((last.resource_type.clone(), last.id.clone()));
        for p in &batch {
            let Some(body) = &p.body else { continue };
            let v: Value = serde_json::from_str(body)?;
            let family = v["name"][0]["family"].as_str().unwrap_or_default().to_string();
            let identifier = format!(
                "{}|{}",
                v["identifier"][0]["system"].as_str().unwrap_or_default(),
                v["identifier"][0]["value"].as_str().unwrap_or_default()
            );
            patients.push((p.id.clone(), family, identifier));
        }
        if batch.len() < 1000 {
            break;
        }
    }
    if patients.is_empty() {
        bail!("the store holds no patients");
    }
    // The heavy patient is the one with the most resources in its compartment
    // among a few candidates: the last loaded cohort is small.
    for (id, _, _) in patients.iter().take(patients.len().min(2000)) {
        let query = SearchQuery {
            resource_type: Some("Observation".into()),
            filters: vec![fhir::search::query::Filter {
                any_of: vec![fhir::search::query::Condition {
                    param: "subject".into(),
                    matcher: fhir::search::query::Match::Reference { target_type: Some("Patient".into()), id: id.clone() },
                }],
            }],
            count: 0,
            total: TotalMode::Accurate,
            ..SearchQuery::default()
        };
        let n = store.search(&query).await?.total.unwrap_or(0);
        if n > heavy_count {
            heavy_count = n;
            heavy_patient = id.clone();
        }
    }
    let mut codes: HashMap<String, u64> = HashMap::new();
    let mut after = None;
    let mut seen = 0usize;
    while seen < 20_000 {
        let batch = store.scan(Some("Observation"), after.as_ref(), 1000).await?;
        let Some(last) = batch.last() else { break };
        after = Some((last.resource_type.clone(), last.id.clone()));
        for o in &batch {
            let Some(body) = &o.body else { continue };
            let v: Value = serde_json::from_str(body)?;
            let coding = &v["code"]["coding"][0];
            if let (Some(system), Some(code)) = (coding["system"].as_str(), coding["code"].as_str()) {
                *codes.entry(format!("{system}|{code}")).or_insert(0) += 1;
            }
        }
        seen += batch.len();
        if batch.len() < 1000 {
            break;
        }
    }
    let mut codes: Vec<(String, u64)> = codes.into_iter().collect();
    codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let codes: Vec<String> = codes.into_iter().map(|(c, _)| c).collect();
    if codes.is_empty() {
        bail!("the store holds no coded observations");
    }
    Ok(Samples { patients, codes, heavy_patient })
}

/// The number of Observations with `code`, as the server reports it.
async fn count_matches(base: &str, code: &str) -> anyhow::Result<u64> {
    let url = format!("{base}/Observation?code={}&_summary=count", encode(code));
    let bundle: Value = client()?.get(url).send().await?.json().await?;
    Ok(bundle["total"].as_u64().unwrap_or(0))
}

/// Runs `clients` clients issuing `make(i)` queries (relative to the base)
/// for the configured time.
async fn phase<F>(base: &str, opts: &SearchBenchOptions, shape: &str, clients: usize, make: F) -> anyhow::Result<Measured>
where
    F: Fn(usize) -> String + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let deadline = Instant::now() + Duration::from_secs(opts.seconds.max(1));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients.max(1) {
        let make = Arc::clone(&make);
        let http = client()?;
        let base = base.to_string();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = c;
            while Instant::now() < deadline {
                let url = format!("{base}/{}", make(i));
                i += clients.max(1);
                let t = Instant::now();
                let ok = match http.get(&url).header("accept", "application/fhir+json").send().await {
                    Ok(response) => {
                        let good = response.status().is_success();
                        good && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                latencies.push(t.elapsed());
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (l, e) = joined.context("a benchmark client failed")?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    eprintln!("{shape}: {} requests, {errors} errors", latencies.len());
    Ok(Measured {
        shape: shape.to_string(),
        requests: latencies.len() as u64,
        errors,
        elapsed,
        latency: Percentiles::of(&mut latencies),
        note: String::new(),
    })
}
