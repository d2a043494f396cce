//! `hearth audit verify|report|checkpoint`, and the checkpoints a running
//! server writes.
//!
//! Checkpoints are lines `seq hash time seal` (see `domain::audit::Checkpoint`)
//! appended to a file outside the database (default `<data-dir>/audit.checkpoints`;
//! an operator may point it at another disk or ship it elsewhere). They let
//! `verify` notice a trail cut short: deleting the newest entries leaves a
//! chain that is intact in itself but shorter than a checkpoint once saw.

use crate::config::{Config, StoreArgs};
use crate::wiring;
use anyhow::Context;
use clap::{Args, ValueEnum};
use domain::access::Access;
use domain::audit::{self, AuditAction, AuditChain, AuditOutcome, AuditQuery, AuditRecord, AuditSort, Checkpoint, Verdict};
use domain::store::{Commit, Store};
use fhir::instant::Instant;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the store and the checkpoints are, for `audit verify` and `audit checkpoint`.
#[derive(Args, Debug, Clone)]
pub struct TrailArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The checkpoint file (default: <data-dir>/audit.checkpoints).
    #[arg(long)]
    pub checkpoints: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Entries recorded at or after this instant or date (2026-11-01, 2026-11-01T08:00:00Z).
    #[arg(long)]
    pub from: Option<String>,
    /// Entries recorded at or before this instant or date (a date covers the whole day).
    #[arg(long)]
    pub to: Option<String>,
    /// Only this user (or client) id.
    #[arg(long)]
    pub user: Option<String>,
    /// Only entries concerning this Patient id.
    #[arg(long)]
    pub patient: Option<String>,
    /// Only this action: C, R, U, D or E.
    #[arg(long)]
    pub action: Option<String>,
    /// Only this event (read, search, create, login, login-failed, break-glass...).
    #[arg(long)]
    pub event: Option<String>,
    /// Only this resource type (data category).
    #[arg(long = "type")]
    pub resource_type: Option<String>,
    /// Only this outcome: 0 (success), 4, 8 (denied), 12.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Sort by: seq, time, user, patient, action, event, type, outcome (repeatable).
    #[arg(long, default_value = "seq")]
    pub sort: Vec<String>,
    /// Descending order.
    #[arg(long)]
    pub desc: bool,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ReportFormat,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Csv,
    Json,
}

fn config_of(args: &StoreArgs) -> anyhow::Result<Config> {
    args.load(&crate::config::hearth_env())
}

/// The checkpoint file of a configuration.
pub fn checkpoint_path(config: &Config, given: Option<&Path>) -> PathBuf {
    given.map_or_else(|| config.storage.data_dir.join("audit.checkpoints"), Path::to_path_buf)
}

/// Reads every checkpoint of a file (none when it does not exist yet),
/// refusing a line whose seal is wrong.
pub fn read_checkpoints(path: &Path, chain: &AuditChain) -> anyhow::Result<Vec<Checkpoint>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let checkpoint = Checkpoint::from_line(line, chain)
            .map_err(|e| anyhow::anyhow!("{}, line {}: {e}", path.display(), number + 1))?;
        out.push(checkpoint);
    }
    Ok(out)
}

/// Appends the trail's head to the checkpoint file when it moved since the
/// last line; returns the checkpoint written, if any.
pub async fn write_checkpoint(store: &dyn Store, chain: &AuditChain, path: &Path) -> anyhow::Result<Option<Checkpoint>> {
    let Some((seq, hash)) = store.audit_head().await? else { return Ok(None) };
    let existing = read_checkpoints(path, chain)?;
    if existing.last().is_some_and(|c| c.seq == seq) {
        return Ok(None);
    }
    let checkpoint = Checkpoint { seq, hash, at: Instant::now() };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{}", checkpoint.to_line(chain)).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    Ok(Some(checkpoint))
}

/// A running server's checkpoints: one a minute while the trail grows.
pub fn spawn_checkpoints(store: Arc<dyn Store>, chain: AuditChain, path: PathBuf) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = write_checkpoint(&*store, &chain, &path).await {
                tracing::error!(error = %e, "audit checkpoint not written");
            }
        }
    });
}

/// `hearth audit verify`: exit status 0 when intact, 1 naming the first bad entry.
pub async fn verify(args: TrailArgs) -> anyhow::Result<bool> {
    let config = config_of(&args.store)?;
    let keys = wiring::keys(&config)?;
    let store = wiring::store_with(&config, &keys).await?;
    let path = checkpoint_path(&config, args.checkpoints.as_deref());
    let checkpoints = read_checkpoints(&path, &keys.audit)?;
    let total = store.audit_head().await?.map_or(0, |(seq, _)| seq);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("verifying the audit trail {bar:40} {pos}/{len} entries ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let verdict = audit::verify(&*store, &keys.audit, &checkpoints, |seq| bar.set_position(seq)).await?;
    bar.finish_and_clear();
    let record = |outcome: AuditOutcome, detail: String| {
        let mut r = AuditRecord::new(Instant::now(), "audit-verify", AuditAction::Execute, Access::system("hearth audit verify").actor);
        r.outcome = outcome;
        r.detail = Some(detail);
        r
    };
    match verdict {
        Verdict::Intact { entries, last_hash } => {
            println!(
                "audit trail intact: {entries} entries, {} checkpoint(s) matched, last digest {last_hash}",
                checkpoints.len()
            );
            // The check itself is recorded after it, so it never checks itself.
            store.commit(Commit { audit: vec![record(AuditOutcome::Success, format!("{entries} entries intact"))], ..Commit::default() }).await?;
            write_checkpoint(&*store, &keys.audit, &path).await?;
            Ok(true)
        }
        Verdict::Broken { seq, reason } => {
            eprintln!("audit trail BROKEN at entry {seq}: {reason}");
            Ok(false)
        }
    }
}

/// `hearth audit checkpoint`: records the trail's head in the checkpoint file now.
pub async fn checkpoint(args: TrailArgs) -> anyhow::Result<String> {
    let config = config_of(&args.store)?;
    let keys = wiring::keys(&config)?;
    let store = wiring::store_with(&config, &keys).await?;
    let path = checkpoint_path(&config, args.checkpoints.as_deref());
    Ok(match write_checkpoint(&*store, &keys.audit, &path).await? {
        Some(c) => format!("checkpoint at entry {} written to {}", c.seq, path.display()),
        None => format!("nothing new since the last checkpoint in {}", path.display()),
    })
}

/// Parses a report bound: a full instant, or a date (the start of its day
/// for `--from`, the end for `--to`).
fn bound(text: &str, end: bool) -> anyhow::Result<Instant> {
    if let Some(at) = Instant::parse(text) {
        return Ok(at);
    }
    let start = Instant::parse(&format!("{text}T00:00:00Z"))
        .ok_or_else(|| anyhow::anyhow!("{text:?} is neither a date (YYYY-MM-DD) nor an instant (RFC 3339)"))?;
    Ok(if end { Instant(start.0 + 86_400_000_000 - 1) } else { start })
}

/// `hearth audit report`: the entries matching the filters, sorted, as CSV or JSON.
pub async fn report(args: ReportArgs) -> anyhow::Result<usize> {
    let config = config_of(&args.store)?;
    let keys = wiring::keys(&config)?;
    let store = wiring::store_with(&config, &keys).await?;
    let mut query = AuditQuery {
        from: args.from.as_deref().map(|t| bound(t, false)).transpose()?,
        to: args.to.as_deref().map(|t| bound(t, true)).transpose()?,
        who: args.user.clone(),
        patient: args.patient.clone(),
        action: args
            .action
            .as_deref()
            .map(|a| AuditAction::parse(a).ok_or_else(|| anyhow::anyhow!("--action is one of C R U D E")))
            .transpose()?,
        event: args.event.clone(),
        resource_type: args.resource_type.clone(),
        outcome: args
            .outcome
            .as_deref()
            .map(|o| AuditOutcome::parse(o).ok_or_else(|| anyhow::anyhow!("--outcome is one of 0 4 8 12")))
            .transpose()?,
        sort: Vec::new(),
        count: 1000,
        offset: 0,
    };
    for field in &args.sort {
        for name in field.split(',') {
            let sort = AuditSort::parse(name).ok_or_else(|| {
                anyhow::anyhow!("--sort {name:?}: one of seq, time, user, patient, action, event, type, outcome")
            })?;
            query.sort.push((sort, args.desc));
        }
    }
    let out: Box<dyn std::io::Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    // Rows are written as they are read: a report may cover millions of entries.
    enum Sink {
        Csv(Box<csv::Writer<Box<dyn std::io::Write>>>),
        Json(Box<dyn std::io::Write>),
    }
    let mut sink = match args.format {
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "seq", "recorded", "user", "kind", "role", "client", "from", "action", "event", "resource_type",
                "patients", "entities", "outcome", "detail", "emergency", "query",
            ])?;
            Sink::Csv(Box::new(w))
        }
        ReportFormat::Json => {
            let mut out = out;
            out.write_all(b"[")?;
            Sink::Json(out)
        }
    };
    let mut rows = 0usize;
    loop {
        let page = store.audit_search(&query).await?;
        if page.items.is_empty() {
            break;
        }
        for entry in &page.items {
            let r = entry.parse().with_context(|| format!("audit entry {} is unreadable (run `hearth audit verify`)", entry.seq))?;
            match &mut sink {
                Sink::Csv(w) => w.write_record([
                    entry.seq.to_string(),
                    r.at.to_fhir(),
                    r.who.id.clone(),
                    r.who.kind.clone(),
                    r.who.role.clone().unwrap_or_default(),
                    r.who.client.clone().unwrap_or_default(),
                    r.from.clone().unwrap_or_default(),
                    r.action.code().to_string(),
                    r.event.clone(),
                    r.resource_type.clone().unwrap_or_default(),
                    r.patients.join(";"),
                    r.entities.join(";"),
                    r.outcome.code().to_string(),
                    r.detail.clone().unwrap_or_default(),
                    r.emergency.to_string(),
                    r.query.clone().unwrap_or_default(),
                ])?,
                Sink::Json(out) => {
                    let mut value = serde_json::to_value(&r)?;
                    value["seq"] = serde_json::json!(entry.seq);
                    out.write_all(if rows == 0 { b"\n" } else { b",\n" })?;
                    serde_json::to_writer(&mut *out, &value)?;
                }
            }
            rows += 1;
        }
        query.offset += page.items.len();
    }
    match sink {
        Sink::Csv(mut w) => w.flush()?,
        Sink::Json(mut out) => {
            out.write_all(b"\n]\n")?;
            out.flush()?;
        }
    }
    // Reading the trail is itself an access to patient data: recorded.
    let mut record = AuditRecord::new(Instant::now(), "export", AuditAction::Read, Access::system("hearth audit report").actor);
    record.resource_type = Some("AuditEvent".into());
    record.detail = Some(format!("{rows} entries reported"));
    record.patients.extend(args.patient.clone());
    store.commit(Commit { audit: vec![record], ..Commit::default() }).await?;
    Ok(rows)
}
