//! `hearth import`: loads FHIR Bundles (transaction, batch, collection) and
//! NDJSON files, or folders of them, through the Service, so every resource
//! passes the same validation as on the API. Prints a summary of what was
//! loaded and, for each rejected resource, where it was and why.

use anyhow::Context;
use domain::Service;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead as _;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Resources per commit for NDJSON and single resources.
    pub batch_size: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions { batch_size: 1000, progress: false }
    }
}

/// One resource that was not loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `file:line` for NDJSON, `file#entry[i]` for bundles.
    pub location: String,
    pub resource_type: String,
    /// The validator's or the store's reason, with the element it concerns.
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    pub files: usize,
    pub loaded: BTreeMap<String, usize>,
    pub rejected: Vec<Rejection>,
    pub seconds: f64,
}

impl ImportSummary {
    pub fn loaded_total(&self) -> usize {
        self.loaded.values().sum()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let total = self.loaded_total();
        let rate = if self.seconds > 0.0 { total as f64 / self.seconds } else { 0.0 };
        let _ = writeln!(
            out,
            "imported {} files: {total} resources loaded, {} rejected, in {:.1}s ({rate:.0} resources/s)",
            self.files,
            self.rejected.len(),
            self.seconds
        );
        for (rt, n) in &self.loaded {
            let _ = writeln!(out, "  loaded   {n:>8}  {rt}");
        }
        for r in &self.rejected {
            let _ = writeln!(out, "  rejected {}  {}: {}", r.location, r.resource_type, r.reason);
        }
        out
    }

    fn count(&mut self, resource_type: &str) {
        *self.loaded.entry(resource_type.to_string()).or_default() += 1;
    }
}

/// Imports every `.json` and `.ndjson` file under `paths`.
pub async fn import_paths(service: &Arc<Service>, paths: &[PathBuf], options: &ImportOptions) -> anyhow::Result<ImportSummary> {
    let started = std::time::Instant::now();
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files).with_context(|| format!("reading {}", path.display()))?;
    }
    files.sort();
    let total_bytes: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar = if options.progress { ProgressBar::new(total_bytes) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut summary = ImportSummary { files: files.len(), ..ImportSummary::default() };
    for file in &files {
        let name = file.display().to_string();
        bar.set_message(file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        if name.ends_with(".ndjson") {
            import_ndjson(service, file, options, &mut summary, &bar).await?;
        } else {
            let bytes = std::fs::read(file).with_context(|| format!("reading {name}"))?;
            bar.inc(bytes.len() as u64);
            match String::from_utf8(bytes) {
                Ok(text) => import_json(service, &name, &text, options, &mut summary).await,
                Err(e) => summary.rejected.push(Rejection {
                    location: name.clone(),
                    resource_type: "?".into(),
                    reason: format!("not valid UTF-8 at byte {}", e.utf8_error().valid_up_to() + 1),
                }),
            }
        }
    }
    bar.finish_and_clear();
    if summary.loaded_total() > 0 {
        service.store().refresh_planner_statistics().await.context("refreshing the database's statistics")?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            collect_files(&entry?.path(), out)?;
        }
    } else if path.is_file() {
        let name = path.to_string_lossy();
        if name.ends_with(".json") || name.ends_with(".ndjson") {
            out.push(path.to_path_buf());
        }
    } else {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"));
    }
    Ok(())
}

/// Batches in flight: while one is written, the next is parsed, validated
/// and indexed, and the one after is read. (With one, measured faster
/// until the SQLite writer applied large commits in groups of their own:
/// grouped, each in a savepoint, their statements grew slower with the
/// group's size; docs/benchmarks.md.)
const IN_FLIGHT: usize = 2;

/// What became of one NDJSON line: its resource type, or where and why not.
type LineOutcome = (usize, Result<String, Rejection>);

async fn import_ndjson(
    service: &Arc<Service>,
    file: &Path,
    options: &ImportOptions,
    summary: &mut ImportSummary,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let name = file.display().to_string();
    let mut reader = std::io::BufReader::new(std::fs::File::open(file).with_context(|| format!("opening {name}"))?);
    let mut batch: Vec<(usize, String)> = Vec::with_capacity(options.batch_size);
    let mut in_flight: VecDeque<tokio::task::JoinHandle<Vec<LineOutcome>>> = VecDeque::new();
    let mut bytes = Vec::new();
    let mut line_no = 0usize;
    loop {
        bytes.clear();
        let read = reader.read_until(b'\n', &mut bytes).with_context(|| format!("reading {name}"))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        bar.inc(read as u64);
        // A line that is not UTF-8 is rejected alone; the rest of the file loads.
        match std::str::from_utf8(&bytes) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => batch.push((line_no, text.to_string())),
            Err(e) => summary.rejected.push(Rejection {
                location: format!("{name}:{line_no}"),
                resource_type: "?".into(),
                reason: format!("not valid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
            }),
        }
        if batch.len() >= options.batch_size {
            if in_flight.len() >= IN_FLIGHT
                && let Some(done) = in_flight.pop_front() {
                    record(summary, done.await?);
                }
            let lines = std::mem::take(&mut batch);
            in_flight.push_back(tokio::spawn(load_lines(Arc::clone(service), name.clone(), lines)));
        }
    }
    if !batch.is_empty() {
        in_flight.push_back(tokio::spawn(load_lines(Arc::clone(service), name.clone(), batch)));
    }
    while let Some(done) = in_flight.pop_front() {
        record(summary, done.await?);
    }
    Ok(())
}

fn record(summary: &mut ImportSummary, outcomes: Vec<LineOutcome>) {
    for (_, outcome) in outcomes {
        match outcome {
            Ok(resource_type) => summary.count(&resource_type),
            Err(rejection) => summary.rejected.push(rejection),
        }
    }
}

/// Parses and loads one batch of NDJSON lines.
async fn load_lines(service: Arc<Service>, name: String, lines: Vec<(usize, String)>) -> Vec<LineOutcome> {
    let mut outcomes: Vec<LineOutcome> = Vec::with_capacity(lines.len());
    let mut parsed: Vec<(usize, String, Value)> = Vec::with_capacity(lines.len());
    for (line_no, text) in lines {
        match serde_json::from_str::<Value>(&text) {
            Ok(value) => {
                let rt = value.get("resourceType").and_then(Value::as_str).unwrap_or("?").to_string();
                parsed.push((line_no, rt, value));
            }
            Err(e) => outcomes.push((
                line_no,
                Err(Rejection {
                    location: format!("{name}:{line_no}"),
                    resource_type: "?".into(),
                    reason: format!("invalid JSON at column {}: {}", e.column(), e.classify_reason()),
                }),
            )),
        }
    }
    let (meta, resources): (Vec<(usize, String)>, Vec<Value>) =
        parsed.into_iter().map(|(line_no, rt, value)| ((line_no, rt), value)).unzip();
    let results = service.load(&domain::access::Access::system("hearth import"), resources).await;
    for ((line_no, rt), result) in meta.into_iter().zip(results) {
        let outcome = match result {
            Ok(stored) => Ok(stored.resource_type),
            Err(e) => Err(Rejection { location: format!("{name}:{line_no}"), resource_type: rt, reason: describe(&e) }),
        };
        outcomes.push((line_no, outcome));
    }
    outcomes.sort_by_key(|(line_no, _)| *line_no);
    outcomes
}

trait ClassifyReason {
    fn classify_reason(&self) -> &'static str;
}

impl ClassifyReason for serde_json::Error {
    fn classify_reason(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end of input",
        }
    }
}

async fn load_batch(
    service: &Service,
    name: &str,
    batch: Vec<(usize, Value)>,
    summary: &mut ImportSummary,
    place: impl Fn(usize) -> String,
) {
    if batch.is_empty() {
        return;
    }
    let (places, resources): (Vec<usize>, Vec<Value>) = batch.into_iter().unzip();
    let types: Vec<String> = resources
        .iter()
        .map(|r| r.get("resourceType").and_then(Value::as_str).unwrap_or("?").to_string())
        .collect();
    let results = service.load(&domain::access::Access::system("hearth import"), resources).await;
    for ((result, at), rt) in results.into_iter().zip(places).zip(types) {
        match result {
            Ok(stored) => summary.count(&stored.resource_type),
            Err(e) => summary.rejected.push(Rejection {
                location: format!("{name}{}", place(at)),
                resource_type: rt,
                reason: describe(&e),
            }),
        }
    }
}

/// An error as one line: each issue's location and diagnostics.
fn describe(e: &domain::Error) -> String {
    e.issues
        .iter()
        .map(|i| match &i.expression {
            Some(x) => format!("{x}: {}", i.diagnostics),
            None => i.diagnostics.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn import_json(service: &Service, name: &str, text: &str, options: &ImportOptions, summary: &mut ImportSummary) {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            summary.rejected.push(Rejection {
                location: format!("{name}:{}", e.line()),
                resource_type: "?".into(),
                reason: format!("invalid JSON at line {} column {}: {}", e.line(), e.column(), e.classify_reason()),
            });
            return;
        }
    };
    let rt = value.get("resourceType").and_then(Value::as_str).unwrap_or("?").to_string();
    let kind = value.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    if rt != "Bundle" || !matches!(kind.as_str(), "transaction" | "batch" | "collection") {
        // A single resource (a document or message Bundle is a resource too).
        load_batch(service, name, vec![(0, value)], summary, |_| String::new()).await;
        return;
    }
    let entries: Vec<Value> = value.get("entry").and_then(Value::as_array).cloned().unwrap_or_default();
    let entry_types: Vec<String> = entries
        .iter()
        .map(|e| e.pointer("/resource/resourceType").and_then(Value::as_str).unwrap_or("?").to_string())
        .collect();
    let bundle = if kind == "collection" { collection_as_transaction(entries) } else { value };
    let _ = options;
    match service.bundle(&domain::access::Access::system("hearth import"), bundle, "", None).await {
        Ok(response) => {
            let responses = response.get("entry").and_then(Value::as_array).cloned().unwrap_or_default();
            for (i, (entry, rt)) in responses.iter().zip(&entry_types).enumerate() {
                let status = entry.pointer("/response/status").and_then(Value::as_str).unwrap_or_default();
                if status.starts_with('2') {
                    if entry_types.get(i).is_some_and(|t| t != "?") {
                        summary.count(rt);
                    }
                } else {
                    let reason = entry
                        .pointer("/response/outcome/issue")
                        .and_then(Value::as_array)
                        .map(|issues| {
                            issues
                                .iter()
                                .map(|i| {
                                    let d = i.get("diagnostics").and_then(Value::as_str).unwrap_or_default();
                                    match i.pointer("/expression/0").and_then(Value::as_str) {
                                        Some(x) => format!("{x}: {d}"),
                                        None => d.to_string(),
                                    }
                                })
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_else(|| format!("status {status}"));
                    summary.rejected.push(Rejection { location: format!("{name}#entry[{i}]"), resource_type: rt.clone(), reason });
                }
            }
        }
        Err(e) => {
            // A transaction is all or nothing: every entry is rejected; the
            // entry at fault carries the reason, the others point at it.
            let reason = describe(&e);
            let culprit = failing_entry(&e);
            for (i, rt) in entry_types.iter().enumerate() {
                let reason = match culprit {
                    Some(bad) if bad != i => format!("transaction rolled back because entry[{bad}] failed"),
                    _ => reason.clone(),
                };
                summary.rejected.push(Rejection { location: format!("{name}#entry[{i}]"), resource_type: rt.clone(), reason });
            }
        }
    }
}

/// The entry index named by a transaction error (`Bundle.entry[3]...`).
fn failing_entry(e: &domain::Error) -> Option<usize> {
    let expression = e.issues.iter().find_map(|i| i.expression.as_deref())?;
    let rest = expression.strip_prefix("Bundle.entry[")?;
    rest.split(']').next()?.parse().ok()
}

/// A collection Bundle is loaded atomically, as a transaction: resources with
/// an id keep it (PUT), others get one (POST), and references between entries
/// by `fullUrl` are resolved.
fn collection_as_transaction(entries: Vec<Value>) -> Value {
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|entry| {
            let resource = entry.get("resource").cloned().unwrap_or(Value::Null);
            let rt = resource.get("resourceType").and_then(Value::as_str).unwrap_or("?").to_string();
            let request = match resource.get("id").and_then(Value::as_str) {
                Some(id) => json!({"method": "PUT", "url": format!("{rt}/{id}")}),
                None => json!({"method": "POST", "url": rt}),
            };
            let mut out = json!({"resource": resource, "request": request});
            if let (Some(full_url), Some(obj)) = (entry.get("fullUrl"), out.as_object_mut()) {
                obj.insert("fullUrl".into(), full_url.clone());
            }
            out
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}
