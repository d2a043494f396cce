//! `hearth bench`: measures the server end to end over real HTTP on loopback
//! (transaction bundles, single creates, reads by id), the NDJSON import, the
//! disk footprint and the startup time and idle memory of `hearth serve`,
//! and renders the numbers as a Markdown report for docs/benchmarks.md.
//!
//! Every phase is bounded in time and in request count, and only talks to
//! 127.0.0.1. The data comes from the seeded generator in [`crate::synth`].

use crate::{config, import, synth, wiring};
use anyhow::{Context, bail};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests one client sends in one phase at most, whatever the duration.
const MAX_REQUESTS_PER_CLIENT: usize = 2_000_000;
/// Longest wait for a spawned `hearth serve` to answer /readyz.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a loaded server is left idle before its memory is read.
const IDLE_BEFORE_RSS: Duration = Duration::from_secs(2);
/// Distinct Observation bodies the create phase cycles through.
const CREATE_BODIES: usize = 1000;

/// One measured scenario (`--scenario` values on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Per-patient transaction bundles POSTed to `[base]` by one client.
    Transaction,
    /// NDJSON files loaded through `hearth import`'s code path.
    Import,
    /// Concurrent clients POSTing single Observations.
    Create,
    /// Concurrent clients reading random existing resources by id.
    Read,
    /// Bytes on disk per byte of resource JSON loaded (SQLite only).
    Disk,
    /// Spawn-to-ready time of `hearth serve`, and its idle memory when loaded.
    Startup,
}

impl Scenario {
    pub const ALL: [Scenario; 6] =
        [Scenario::Transaction, Scenario::Import, Scenario::Create, Scenario::Read, Scenario::Disk, Scenario::Startup];
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Where the store, the NDJSON files and the startup runs live; default:
    /// a fresh temporary folder, removed afterwards.
    pub data_dir: Option<PathBuf>,
    /// Benchmark PostgreSQL at this URL instead of SQLite.
    pub database_url: Option<String>,
    /// Patients loaded by the transaction phase, and again by the import phase.
    pub patients: usize,
    /// Concurrent clients of the create and read phases (one connection each).
    pub clients: usize,
    /// Duration of each timed phase (create, read); the transaction phase
    /// stops after three times this.
    pub seconds: f64,
    pub scenarios: Vec<Scenario>,
    /// Seed of the synthetic data.
    pub seed: u64,
    /// Resources of the one heavy-patient transaction (0: none).
    pub heavy_resources: usize,
    /// The `hearth` executable spawned by the startup scenario; default: this one.
    pub server_exe: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            data_dir: None,
            database_url: None,
            patients: 200,
            clients: 16,
            seconds: 10.0,
            scenarios: Scenario::ALL.to_vec(),
            seed: 1,
            heavy_resources: 3000,
            server_exe: None,
        }
    }
}

impl BenchOptions {
    fn wants(&self, scenario: Scenario) -> bool {
        self.scenarios.contains(&scenario)
    }

    fn phase(&self) -> Duration {
        Duration::from_secs_f64(self.seconds.clamp(0.1, 3600.0))
    }
}

/// The machine the numbers were taken on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_bytes: u64,
    /// `release` or `debug`.
    pub build: &'static str,
    /// The 1-minute load average when the bench started (other work on the
    /// machine lowers every number).
    pub load_average: Option<f64>,
}

impl Machine {
    fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = proc_kib(&meminfo, "MemTotal:").unwrap_or(0) * 1024;
        Machine {
            cores: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            cpu_model,
            memory_bytes,
            build: if cfg!(debug_assertions) { "debug" } else { "release" },
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|text| text.split_whitespace().next().and_then(|v| v.parse().ok())),
        }
    }
}

/// Latency percentiles, nearest-rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
}

impl Percentiles {
    pub(crate) fn of(samples: &mut [Duration]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |p: f64| {
            let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Some(Percentiles { p50: at(50.0), p95: at(95.0), p99: at(99.0) })
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    /// What was done, e.g. "120 bundles, 6,012 resources in 12.1 s".
    pub work: String,
    /// The headline number with its unit, e.g. "497 resources/s".
    pub result: String,
    pub latency: Option<Percentiles>,
    /// Failed requests or rejected resources.
    pub errors: u64,
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub machine: Machine,
    /// `sqlite` or `postgresql`.
    pub backend: String,
    pub clients: usize,
    pub seconds: f64,
    /// Resources loaded by the bench and the bytes of their JSON.
    pub resources_loaded: u64,
    pub resource_bytes: u64,
    pub rows: Vec<Row>,
    /// Remarks: error status codes, skipped scenarios.
    pub notes: Vec<String>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.machine;
        writeln!(f, "| Setting | Value |")?;
        writeln!(f, "|---|---|")?;
        writeln!(f, "| CPU | {} ({} cores) |", m.cpu_model, m.cores)?;
        writeln!(f, "| Memory | {} |", bytes_text(m.memory_bytes))?;
        writeln!(f, "| Build | {} |", m.build)?;
        if let Some(load) = m.load_average {
            writeln!(f, "| Load average at start | {load:.2} |")?;
        }
        writeln!(f, "| Storage | {} |", self.backend)?;
        let mean = self.resource_bytes.checked_div(self.resources_loaded).unwrap_or(0);
        writeln!(
            f,
            "| Data | {} resources loaded, {} of JSON (mean {} bytes) |",
            thousands(self.resources_loaded),
            bytes_text(self.resource_bytes),
            thousands(mean)
        )?;
        writeln!(
            f,
            "| Load | HTTP/1.1 keep-alive over loopback, one connection per client, {} clients, {} s per timed phase; client and server share the machine |",
            self.clients, self.seconds
        )?;
        writeln!(f)?;
        writeln!(f, "| Scenario | Work | Result | p50 | p95 | p99 | Errors |")?;
        writeln!(f, "|---|---|---|---|---|---|---|")?;
        for row in &self.rows {
            let (p50, p95, p99) = match row.latency {
                Some(p) => (millis(p.p50), millis(p.p95), millis(p.p99)),
                None => ("".to_string(), "".to_string(), "".to_string()),
            };
            writeln!(f, "| {} | {} | {} | {p50} | {p95} | {p99} | {} |", row.scenario, row.work, row.result, row.errors)?;
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            for note in &self.notes {
                writeln!(f, "- {note}")?;
            }
        }
        Ok(())
    }
}

fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// A rate with thousands separators, e.g. `1,066 resources/s`.
fn per_second(count: u64, elapsed: Duration, unit: &str) -> String {
    format!("{} {unit}/s", thousands(rate(count, elapsed).round() as u64))
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes_text(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 { format!("{:.1} GiB", mib / 1024.0) } else { format!("{mib:.1} MiB") }
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// A `Key:   123 kB` line of /proc/meminfo or /proc/<pid>/status, in KiB.
fn proc_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// What the bench has loaded: ids to read, patients to refer to, bytes sent.
#[derive(Debug, Default)]
struct Loaded {
    /// `Type/id` of every resource known to exist.
    paths: Vec<String>,
    /// Ids of loaded patients.
    patients: Vec<String>,
    resources: u64,
    bytes: u64,
}

/// The in-process server: the configured store under the Service, the API
/// router on an ephemeral loopback port.
pub(crate) struct Server {
    pub(crate) base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub(crate) async fn start(config: &config::Config, service: Arc<domain::Service>) -> anyhow::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")?;
        let bound = listener.local_addr()?;
        let base = config.base_url(bound);
        let store = Arc::clone(service.store());
        let state = api::AppState {
            service,
            config: Arc::new(api::ApiConfig { max_body_bytes: config.server.max_body_bytes, base_url: base.clone() }),
            auth: bench_auth(config, store, &base)?,
        };
        let auth = Arc::clone(&state.auth);
        let app = api::router(state);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(api::FhirListener::new(listener), app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let token = bench_token(&auth).await?;
        if let Ok(mut slot) = BENCH_TOKEN.write() {
            *slot = Some(token);
        }
        Ok(Server { base, stop, task })
    }

    pub(crate) async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("joining the server task")?.context("serving")?;
        Ok(())
    }
}

/// The bearer token of the benchmark's backend client, once the server is up.
static BENCH_TOKEN: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// The in-process server's Auth: access tokens last a day, since loading a
/// large benchmark store can take hours.
fn bench_auth(config: &config::Config, store: Arc<dyn domain::Store>, base: &str) -> anyhow::Result<Arc<auth::Auth>> {
    let clock: Arc<dyn domain::service::Clock> = Arc::new(domain::service::SystemClock);
    let users = auth::users::Users::new(store.clone(), clock.clone(), Arc::new(config.roles()?), config.user_settings());
    let mut settings = auth::AuthConfig::new(base);
    settings.access_token_seconds = 24 * 3600;
    Ok(Arc::new(auth::Auth::new(store, clock, users, settings)))
}

/// Registers a backend client for this run (SMART Backend Services,
/// `system/*.cruds`) and gets its token from the real token endpoint.
async fn bench_token(auth: &auth::Auth) -> anyhow::Result<String> {
    let client_id = format!("hearth-bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let key = auth::jwt::ClientKey::generate("bench");
    let new = auth::clients::NewClient {
        client_id: client_id.clone(),
        kind: Some(auth::clients::ClientKind::Backend),
        scopes: "system/*.cruds".into(),
        jwks: Some(key.public_jwks()),
        administer: true,
        restricted_access: true,
        ..auth::clients::NewClient::default()
    };
    let by = domain::audit::AuditActor { kind: "system".into(), id: "hearth bench".into(), role: None, client: None };
    auth.register_client(new, by).await.context("registering the benchmark's client")?;
    let token_url = auth.endpoints().token;
    let now = fhir::instant::Instant::now().0 / 1_000_000;
    let assertion = key.assertion(&client_id, &token_url, now).map_err(anyhow::Error::msg)?;
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "system/*.cruds"),
        ("client_assertion_type", auth::oauth::JWT_BEARER),
        ("client_assertion", assertion.as_str()),
    ];
    let response = reqwest::Client::builder().no_proxy().build()?.post(&token_url).form(&form).send().await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("reading the token response")?;
    match body.get("access_token").and_then(serde_json::Value::as_str) {
        Some(token) if status.is_success() => Ok(token.to_string()),
        _ => anyhow::bail!("the benchmark's client got no token ({status}): {body}"),
    }
}

/// An HTTP client with its own single keep-alive connection, sending the
/// benchmark's bearer token.
pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = BENCH_TOKEN.read().ok().and_then(|t| t.clone()) {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().context("the bearer token")?);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .no_proxy()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTP client")
}

const FHIR_JSON: &str = "application/fhir+json";

/// Runs the selected scenarios and returns the report.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let temp = match &opts.data_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temporary folder")?),
    };
    let root = match (&opts.data_dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => bail!("no data folder"),
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let store_dir = root.join("store");
    let mut config = config::Config::default();
    config.storage.data_dir = store_dir.clone();
    config.storage.database_url = opts.database_url.clone().unwrap_or_default();
    config.server.listen = "127.0.0.1:0".to_string();
    let postgres = !config.storage.database_url.is_empty();

    let service = wiring::service(&config).await?;
    let backend = service.store().backend().to_string();
    // PostgreSQL keeps its files elsewhere: the growth of the database is measured instead.
    let postgres_size_before = if postgres && opts.wants(Scenario::Disk) {
        Some(postgres_database_size(&config.storage.database_url).await?)
    } else {
        None
    };
    let server = Server::start(&config, Arc::clone(&service)).await?;
    let mut report = BenchReport {
        machine: Machine::detect(),
        backend: if postgres { "PostgreSQL".to_string() } else { "SQLite (embedded, WAL)".to_string() },
        clients: opts.clients.max(1),
        seconds: opts.seconds,
        resources_loaded: 0,
        resource_bytes: 0,
        rows: Vec::new(),
        notes: Vec::new(),
    };
    if backend != "sqlite" && backend != "postgresql" {
        report.notes.push(format!("store backend reports itself as `{backend}`"));
    }
    let mut loaded = Loaded::default();

    if opts.wants(Scenario::Transaction) {
        report.rows.extend(transactions(&server.base, opts, &mut loaded, &mut report.notes).await?);
    }
    if opts.wants(Scenario::Import) {
        report.rows.push(import_ndjson(&service, &root.join("ndjson"), opts, &mut loaded).await?);
    }
    if opts.wants(Scenario::Create) {
        report.rows.push(creates(&server.base, opts, &mut loaded, &mut report.notes).await?);
    }
    if opts.wants(Scenario::Read) {
        if loaded.paths.is_empty() {
            report.notes.push("read: skipped, nothing was loaded (select transaction or import too)".to_string());
        } else {
            report.rows.push(reads(&server.base, opts, &loaded, &mut report.notes).await?);
        }
    }
    report.resources_loaded = loaded.resources;
    report.resource_bytes = loaded.bytes;

    // Stop serving and close the store so SQLite checkpoints its WAL into
    // the database file before the disk is measured and another process opens it.
    server.shutdown().await?;
    drop(service);
    tokio::time::sleep(Duration::from_millis(200)).await;

    if opts.wants(Scenario::Disk) {
        let (on_disk, place) = match postgres_size_before {
            Some(before) => (
                postgres_database_size(&config.storage.database_url).await?.saturating_sub(before),
                "growth of the PostgreSQL database",
            ),
            None => (dir_size(&store_dir)?, "in the data folder"),
        };
        let ratio = if loaded.bytes > 0 { on_disk as f64 / loaded.bytes as f64 } else { 0.0 };
        report.rows.push(Row {
            scenario: "Disk footprint".to_string(),
            work: format!("{} {place} for {} of resource JSON", bytes_text(on_disk), bytes_text(loaded.bytes)),
            result: format!("{ratio:.2} bytes on disk per JSON byte"),
            latency: None,
            errors: 0,
        });
    }
    if opts.wants(Scenario::Startup) {
        let exe = match &opts.server_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe().context("locating the hearth executable")?,
        };
        report.rows.extend(startup(&exe, &root, &store_dir, opts, &loaded).await?);
    }
    drop(temp);
    Ok(report)
}

/// (a) One client POSTs each patient's transaction bundle, then one heavy
/// patient's bundle.
async fn transactions(base: &str, opts: &BenchOptions, loaded: &mut Loaded, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let client = client()?;
    // Bundles are generated and serialised before the clock starts.
    let mut bundles = Vec::with_capacity(opts.patients);
    for index in 0..opts.patients {
        let bundle = synth::patient_bundle(opts.seed, index);
        let (resources, bytes) = resource_sizes(&bundle)?;
        bundles.push((serde_json::to_vec(&bundle)?, resources, bytes));
    }
    let limit = opts.phase() * 3;
    let mut latencies = Vec::with_capacity(bundles.len());
    let mut errors = 0u64;
    let mut sent_bundles = 0u64;
    let mut sent_resources = 0u64;
    let started = Instant::now();
    for (body, resources, bytes) in bundles {
        if started.elapsed() > limit {
            notes.push(format!("transaction: stopped after {sent_bundles} of {} bundles (time limit)", opts.patients));
            break;
        }
        let t = Instant::now();
        let outcome = post_transaction(&client, base, body).await;
        latencies.push(t.elapsed());
        sent_bundles += 1;
        match outcome {
            Ok(locations) => {
                sent_resources += resources;
                loaded.resources += resources;
                loaded.bytes += bytes;
                note_locations(loaded, &locations);
            }
            Err(status) => {
                errors += 1;
                note_error(notes, "transaction", &status);
            }
        }
    }
    let elapsed = started.elapsed();
    let mut rows = vec![Row {
        scenario: "Transaction bundles (1 client)".to_string(),
        work: format!(
            "{} patient bundles, {} resources in {:.1} s",
            thousands(sent_bundles),
            thousands(sent_resources),
            elapsed.as_secs_f64()
        ),
        result: per_second(sent_resources, elapsed, "resources"),
        latency: Percentiles::of(&mut latencies),
        errors,
    }];
    if opts.heavy_resources > 0 {
        let bundle = synth::patient_bundle_sized(opts.seed, opts.patients, opts.heavy_resources);
        let (resources, bytes) = resource_sizes(&bundle)?;
        let body = serde_json::to_vec(&bundle)?;
        let size = body.len() as u64;
        let t = Instant::now();
        let outcome = post_transaction(&client, base, body).await;
        let elapsed = t.elapsed();
        let errors = match outcome {
            Ok(locations) => {
                loaded.resources += resources;
                loaded.bytes += bytes;
                note_locations(loaded, &locations);
                0
            }
            Err(status) => {
                note_error(notes, "heavy transaction", &status);
                1
            }
        };
        rows.push(Row {
            scenario: "Transaction bundle, heavy patient".to_string(),
            work: format!("1 bundle of {} resources ({})", thousands(resources), bytes_text(size)),
            result: per_second(resources, elapsed, "resources"),
            latency: Some(Percentiles { p50: elapsed, p95: elapsed, p99: elapsed }),
            errors,
        });
    }
    Ok(rows)
}

/// Number and compact JSON bytes of the resources of a Bundle.
fn resource_sizes(bundle: &Value) -> anyhow::Result<(u64, u64)> {
    let mut count = 0u64;
    let mut bytes = 0u64;
    for entry in bundle.get("entry").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        if let Some(resource) = entry.get("resource") {
            count += 1;
            bytes += serde_json::to_vec(resource)?.len() as u64;
        }
    }
    Ok((count, bytes))
}

/// POSTs a transaction; returns the `Type/id` of each entry's response
/// location, or a short error description (status code, never a body).
async fn post_transaction(client: &reqwest::Client, base: &str, body: Vec<u8>) -> Result<Vec<String>, String> {
    let response = client
        .post(base)
        .header(reqwest::header::CONTENT_TYPE, FHIR_JSON)
        .header(reqwest::header::ACCEPT, FHIR_JSON)
        .header("Prefer", "return=minimal")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", e.without_url()))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| format!("reading the response: {}", e.without_url()))?;
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let bundle: Value = serde_json::from_slice(&bytes).map_err(|_| "response is not JSON".to_string())?;
    let mut locations = Vec::new();
    for entry in bundle.get("entry").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        if let Some(location) = entry.pointer("/response/location").and_then(Value::as_str) {
            // `Type/id/_history/n`, possibly absolute.
            let parts: Vec<&str> = location.split('/').collect();
            if let Some(h) = parts.iter().position(|p| *p == "_history")
                && h >= 2
            {
                locations.push(format!("{}/{}", parts[h - 2], parts[h - 1]));
            }
        }
    }
    Ok(locations)
}

fn note_locations(loaded: &mut Loaded, locations: &[String]) {
    for path in locations {
        if let Some(id) = path.strip_prefix("Patient/") {
            loaded.patients.push(id.to_string());
        }
        loaded.paths.push(path.clone());
    }
}

/// Records the first few distinct error descriptions of a phase.
fn note_error(notes: &mut Vec<String>, phase: &str, description: &str) {
    let note = format!("{phase}: {description}");
    if !notes.contains(&note) && notes.iter().filter(|n| n.starts_with(phase)).count() < 5 {
        notes.push(note);
    }
}

/// (b) NDJSON of a second cohort, written by the generator, loaded through
/// the import code path (the Service directly, as `hearth import` does).
async fn import_ndjson(service: &Arc<domain::Service>, dir: &Path, opts: &BenchOptions, loaded: &mut Loaded) -> anyhow::Result<Row> {
    let synth_options = synth::SynthOptions { seed: opts.seed.wrapping_add(1), patients: opts.patients, per_patient: None };
    let counts = synth::write_ndjson(dir, &synth_options).with_context(|| format!("writing NDJSON to {}", dir.display()))?;
    let options = import::ImportOptions { batch_size: 1000, progress: false };
    let started = Instant::now();
    let summary = import::import_paths(service, &counts.files, &options).await?;
    let elapsed = started.elapsed();
    let loaded_count = summary.loaded_total() as u64;
    // The files carry their ids, so what is now readable is known.
    for path in &counts.files {
        let text = std::fs::read_to_string(path)?;
        for line in text.lines() {
            let value: Value = serde_json::from_str(line)?;
            if let (Some(rt), Some(id)) = (value["resourceType"].as_str(), value["id"].as_str()) {
                if rt == "Patient" {
                    loaded.patients.push(id.to_string());
                }
                loaded.paths.push(format!("{rt}/{id}"));
            }
        }
    }
    loaded.resources += loaded_count;
    loaded.bytes += counts.bytes;
    Ok(Row {
        scenario: "Import NDJSON".to_string(),
        work: format!(
            "{} files, {} resources ({}) in {:.1} s",
            counts.files.len(),
            thousands(loaded_count),
            bytes_text(counts.bytes),
            elapsed.as_secs_f64()
        ),
        result: per_second(loaded_count, elapsed, "resources"),
        latency: None,
        errors: summary.rejected.len() as u64,
    })
}

/// Timings and failures of one client of a concurrent phase.
#[derive(Debug, Default)]
struct ClientResult {
    latencies: Vec<Duration>,
    ok: u64,
    /// Request body bytes of the successful requests.
    bytes: u64,
    errors: Vec<String>,
    created: Vec<String>,
}

/// (c) Concurrent clients POST single Observations about loaded patients.
async fn creates(base: &str, opts: &BenchOptions, loaded: &mut Loaded, notes: &mut Vec<String>) -> anyhow::Result<Row> {
    let bodies = Arc::new(observation_bodies(opts.seed.wrapping_add(2), &loaded.patients)?);
    let url = format!("{base}/Observation");
    let results = concurrent(opts, |client_index, client, deadline| {
        let bodies = Arc::clone(&bodies);
        let url = url.clone();
        async move {
            let mut result = ClientResult::default();
            let mut next = client_index;
            for _ in 0..MAX_REQUESTS_PER_CLIENT {
                if Instant::now() >= deadline || bodies.is_empty() {
                    break;
                }
                let body = bodies[next % bodies.len()].clone();
                let size = body.len() as u64;
                next += opts_stride(bodies.len());
                let t = Instant::now();
                let response = client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, FHIR_JSON)
                    .header(reqwest::header::ACCEPT, FHIR_JSON)
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(response) => {
                        let status = response.status();
                        let location = response
                            .headers()
                            .get(reqwest::header::LOCATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let drained = response.bytes().await;
                        result.latencies.push(t.elapsed());
                        if status == reqwest::StatusCode::CREATED && drained.is_ok() {
                            result.ok += 1;
                            result.bytes += size;
                            if let Some(path) = location.as_deref().and_then(type_and_id) {
                                result.created.push(path);
                            }
                        } else {
                            result.errors.push(format!("HTTP {}", status.as_u16()));
                        }
                    }
                    Err(e) => result.errors.push(format!("request failed: {}", e.without_url())),
                }
            }
            result
        }
    })
    .await?;
    let created_bytes: u64 = results.0.iter().map(|r| r.bytes).sum();
    let (mut latencies, ok, errors, elapsed) = merge(results.0, results.1, notes, "create", loaded);
    loaded.resources += ok;
    loaded.bytes += created_bytes;
    Ok(Row {
        scenario: format!("Create Observation ({} clients)", opts.clients.max(1)),
        work: format!("{} creates in {:.1} s", thousands(ok), elapsed.as_secs_f64()),
        result: per_second(ok, elapsed, "creates"),
        latency: Percentiles::of(&mut latencies),
        errors,
    })
}

/// Spreads consecutive requests of one client over the bodies.
fn opts_stride(len: usize) -> usize {
    if len > 7 { 7 } else { 1 }
}

/// `Type/id` from a Location header `[base]/Type/id/_history/n`.
fn type_and_id(location: &str) -> Option<String> {
    let parts: Vec<&str> = location.split('/').collect();
    let h = parts.iter().position(|p| *p == "_history")?;
    (h >= 2).then(|| format!("{}/{}", parts[h - 2], parts[h - 1]))
}

/// Serialised Observation bodies for the create phase: generated vital
/// signs and labs, without id, encounter or performer, about loaded patients.
fn observation_bodies(seed: u64, patients: &[String]) -> anyhow::Result<Vec<bytes::Bytes>> {
    let mut bodies = Vec::with_capacity(CREATE_BODIES);
    let mut index = 0usize;
    while bodies.len() < CREATE_BODIES && index < 10_000 {
        for mut resource in synth::patient_resources(seed, index) {
            if resource["resourceType"] != "Observation" || bodies.len() >= CREATE_BODIES {
                continue;
            }
            if let Value::Object(map) = &mut resource {
                map.remove("id");
                map.remove("encounter");
                map.remove("performer");
                match patients.get(bodies.len() % patients.len().max(1)) {
                    Some(id) => {
                        map.insert("subject".into(), serde_json::json!({ "reference": format!("Patient/{id}") }));
                    }
                    None => {
                        map.remove("subject");
                    }
                }
            }
            bodies.push(bytes::Bytes::from(serde_json::to_vec(&resource)?));
        }
        index += 1;
    }
    Ok(bodies)
}

/// (d) Concurrent clients read random loaded resources by id.
async fn reads(base: &str, opts: &BenchOptions, loaded: &Loaded, notes: &mut Vec<String>) -> anyhow::Result<Row> {
    let urls: Arc<Vec<String>> = Arc::new(loaded.paths.iter().map(|p| format!("{base}/{p}")).collect());
    let seed = opts.seed;
    let results = concurrent(opts, |client_index, client, deadline| {
        let urls = Arc::clone(&urls);
        async move {
            let mut result = ClientResult::default();
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ (client_index as u64).wrapping_mul(0x9E37_79B9));
            for _ in 0..MAX_REQUESTS_PER_CLIENT {
                if Instant::now() >= deadline || urls.is_empty() {
                    break;
                }
                let url = &urls[rng.random_range(0..urls.len())];
                let t = Instant::now();
                match client.get(url).header(reqwest::header::ACCEPT, FHIR_JSON).send().await {
                    Ok(response) => {
                        let status = response.status();
                        let drained = response.bytes().await;
                        result.latencies.push(t.elapsed());
                        if status.is_success() && drained.is_ok() {
                            result.ok += 1;
                        } else {
                            result.errors.push(format!("HTTP {}", status.as_u16()));
                        }
                    }
                    Err(e) => result.errors.push(format!("request failed: {}", e.without_url())),
                }
            }
            result
        }
    })
    .await?;
    let mut scratch = Loaded::default();
    let (mut latencies, ok, errors, elapsed) = merge(results.0, results.1, notes, "read", &mut scratch);
    Ok(Row {
        scenario: format!("Read by id ({} clients)", opts.clients.max(1)),
        work: format!(
            "{} reads of {} resources in {:.1} s",
            thousands(ok),
            thousands(urls.len() as u64),
            elapsed.as_secs_f64()
        ),
        result: per_second(ok, elapsed, "reads"),
        latency: Percentiles::of(&mut latencies),
        errors,
    })
}

/// Runs `opts.clients` clients, each with its own connection, until the
/// phase's deadline; returns their results and the phase's wall time.
async fn concurrent<F, Fut>(opts: &BenchOptions, make: F) -> anyhow::Result<(Vec<ClientResult>, Duration)>
where
    F: Fn(usize, reqwest::Client, Instant) -> Fut,
    Fut: std::future::Future<Output = ClientResult> + Send + 'static,
{
    let clients = opts.clients.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let deadline = started + opts.phase();
    for index in 0..clients {
        tasks.spawn(make(index, client()?, deadline));
    }
    let mut results = Vec::with_capacity(clients);
    while let Some(result) = tasks.join_next().await {
        results.push(result.context("a benchmark client failed")?);
    }
    Ok((results, started.elapsed()))
}

/// Merges client results: latencies, successes, error count and wall time.
fn merge(
    results: Vec<ClientResult>,
    elapsed: Duration,
    notes: &mut Vec<String>,
    phase: &str,
    loaded: &mut Loaded,
) -> (Vec<Duration>, u64, u64, Duration) {
    let mut latencies = Vec::new();
    let mut ok = 0;
    let mut errors = 0;
    for result in results {
        latencies.extend(result.latencies);
        ok += result.ok;
        errors += result.errors.len() as u64;
        for e in &result.errors {
            note_error(notes, phase, e);
        }
        loaded.paths.extend(result.created);
    }
    (latencies, ok, errors, elapsed)
}

/// `pg_database_size` of the database at `url`, in bytes.
async fn postgres_database_size(url: &str) -> anyhow::Result<u64> {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.context("connecting to PostgreSQL to measure its size")?;
    let driver = tokio::spawn(connection);
    let row = client.query_one("SELECT pg_database_size(current_database())", &[]).await.context("pg_database_size")?;
    let size: i64 = row.try_get(0).context("pg_database_size")?;
    drop(client);
    let _ = driver.await;
    Ok(u64::try_from(size).unwrap_or(0))
}

/// Total size of the files under `dir`.
fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

/// A `hearth serve` child process; killed when dropped.
struct ServeProcess {
    child: Child,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, read, released).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Spawns `exe serve` and waits for /readyz to answer 200; returns the
/// process and the time from spawn to ready.
async fn spawn_serve(
    exe: &Path,
    work_dir: &Path,
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<(ServeProcess, Duration)> {
    let port = free_port()?;
    let mut command = Command::new(exe);
    command.arg("serve").arg("--listen").arg(format!("127.0.0.1:{port}"));
    match database_url {
        Some(url) => command.arg("--database-url").arg(url),
        None => command.arg("--data-dir").arg(data_dir),
    };
    // A clean configuration: no ./hearth.toml (run in an empty folder) and
    // no HEARTH_* variables from the bench's own environment.
    command.current_dir(work_dir).env("HEARTH_LOG", "warn");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HEARTH_") && key != "HEARTH_LOG" {
            command.env_remove(key);
        }
    }
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let started = Instant::now();
    let mut process = ServeProcess { child: command.spawn().with_context(|| format!("spawning {}", exe.display()))? };
    let client = client()?;
    let url = format!("http://127.0.0.1:{port}/readyz");
    loop {
        if let Ok(response) = client.get(&url).timeout(Duration::from_secs(2)).send().await
            && response.status() == reqwest::StatusCode::OK
        {
            return Ok((process, started.elapsed()));
        }
        if let Some(status) = process.child.try_wait()? {
            bail!("hearth serve exited before it was ready ({status})");
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            bail!("hearth serve was not ready within {} s", STARTUP_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Resident memory of a process, from /proc/<pid>/status.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    proc_kib(&status, "VmRSS:").map(|kib| kib * 1024)
}

/// (f) Startup on an empty data folder (three runs), then on the loaded
/// one, with the loaded server's resident memory at idle.
async fn startup(exe: &Path, root: &Path, store_dir: &Path, opts: &BenchOptions, loaded: &Loaded) -> anyhow::Result<Vec<Row>> {
    let work_dir = root.join("startup");
    std::fs::create_dir_all(&work_dir)?;
    let database_url = opts.database_url.as_deref();
    let mut rows = Vec::new();
    if database_url.is_none() {
        let mut times = Vec::new();
        for run in 0..3 {
            let empty = work_dir.join(format!("empty-{run}"));
            let (process, took) = spawn_serve(exe, &work_dir, &empty, None).await?;
            times.push(took);
            drop(process);
        }
        let runs = times.iter().map(|t| millis(*t)).collect::<Vec<_>>().join(", ");
        times.sort_unstable();
        rows.push(Row {
            scenario: "Startup, empty data folder".to_string(),
            work: format!("spawn `hearth serve` to /readyz 200, 3 runs ({runs})"),
            result: format!("{} median", millis(times[times.len() / 2])),
            latency: None,
            errors: 0,
        });
    }
    let (process, took) = spawn_serve(exe, &work_dir, store_dir, database_url).await?;
    tokio::time::sleep(IDLE_BEFORE_RSS).await;
    let rss = rss_bytes(process.child.id());
    drop(process);
    rows.push(Row {
        scenario: "Startup and idle memory, loaded".to_string(),
        work: format!("spawn to /readyz 200 with {} resources stored: {}", thousands(loaded.resources), millis(took)),
        result: match rss {
            Some(bytes) => format!("{} resident at idle", bytes_text(bytes)),
            None => "resident memory unavailable".to_string(),
        },
        latency: None,
        errors: 0,
    });
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples).expect("samples");
        assert_eq!(p.p50, Duration::from_millis(50));
        assert_eq!(p.p95, Duration::from_millis(95));
        assert_eq!(p.p99, Duration::from_millis(99));
        assert_eq!(Percentiles::of(&mut []), None);
        let mut one = vec![Duration::from_millis(7)];
        assert_eq!(Percentiles::of(&mut one).map(|p| p.p99), Some(Duration::from_millis(7)));
    }

    #[test]
    fn numbers_are_written_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(bytes_text(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(millis(Duration::from_micros(1500)), "1.50 ms");
        assert_eq!(millis(Duration::from_millis(2107)), "2.11 s");
        assert_eq!(per_second(2132, Duration::from_secs(2), "reads"), "1,066 reads/s");
        assert_eq!(proc_kib("MemTotal:       24576000 kB\n", "MemTotal:"), Some(24_576_000));
        assert_eq!(type_and_id("http://h/fhir/Observation/abc/_history/1"), Some("Observation/abc".to_string()));
    }

    #[test]
    fn report_is_a_markdown_table() {
        let report = BenchReport {
            machine: Machine {
                cores: 2,
                cpu_model: "Test CPU".into(),
                memory_bytes: 1 << 30,
                build: "release",
                load_average: Some(0.5),
            },
            backend: "SQLite".into(),
            clients: 16,
            seconds: 10.0,
            resources_loaded: 1000,
            resource_bytes: 1_000_000,
            rows: vec![Row {
                scenario: "Read by id (16 clients)".into(),
                work: "10 reads".into(),
                result: "1 reads/s".into(),
                latency: Some(Percentiles {
                    p50: Duration::from_millis(1),
                    p95: Duration::from_millis(2),
                    p99: Duration::from_millis(30),
                }),
                errors: 0,
            }],
            notes: vec!["a note".into()],
        };
        let text = report.to_string();
        assert!(text.contains("| CPU | Test CPU (2 cores) |"));
        assert!(text.contains("| Memory | 1.0 GiB |"));
        assert!(text.contains("| Load average at start | 0.50 |"));
        assert!(text.contains("| Read by id (16 clients) | 10 reads | 1 reads/s | 1.00 ms | 2.00 ms | 30.0 ms | 0 |"));
        assert!(text.contains("- a note"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_bench_runs_the_in_process_scenarios_without_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let options = BenchOptions {
            data_dir: Some(tmp.path().join("bench")),
            patients: 4,
            clients: 2,
            seconds: 0.5,
            scenarios: vec![Scenario::Transaction, Scenario::Import, Scenario::Create, Scenario::Read, Scenario::Disk],
            heavy_resources: 200,
            ..BenchOptions::default()
        };
        let report = run(&options).await.expect("bench runs");
        let text = report.to_string();
        for row in &report.rows {
            assert_eq!(row.errors, 0, "{text}");
        }
        let names: Vec<&str> = report.rows.iter().map(|r| r.scenario.as_str()).collect();
        assert_eq!(
            names,
            [
                "Transaction bundles (1 client)",
                "Transaction bundle, heavy patient",
                "Import NDJSON",
                "Create Observation (2 clients)",
                "Read by id (2 clients)",
                "Disk footprint",
            ],
            "{text}"
        );
        // Everything generated was loaded: 4 bundles, the heavy one, 4 NDJSON patients, the creates.
        assert!(report.resources_loaded > 4 * 40 + 200 + 4 * 40, "{text}");
        assert!(report.notes.is_empty(), "{text}");
    }
}
