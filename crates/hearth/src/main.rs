//! The `hearth` binary: parses the command line, loads the configuration,
//! wires a storage backend to the Service and runs a subcommand.
//!
//! Architecture invariant: only this crate reads the environment, files and
//! configuration, and only this crate chooses a storage backend.

// In a binary crate `pub` marks a module's interface to its siblings.
#![allow(unreachable_pub)]

mod admin;
mod admin_client;
mod bench;
mod audit_cmd;
mod bench_search;
mod config;
mod demo;
mod import;
mod keys;
mod migrate_review;
mod serve;
mod synth;
mod tls;
mod wiring;

use anyhow::Context;
use clap::{Parser, Subcommand};

// The write path (parse, validate, index, serialise) allocates many small
// values; mimalloc makes that markedly cheaper than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "hearth", version, about = "Hearth: an electronic health record with a FHIR R4 repository at its heart")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: FHIR R4 API at /fhir, /healthz and /readyz.
    Serve {
        /// Configuration file (default: ./hearth.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory of the embedded store (default ./hearth-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// Use PostgreSQL at this URL instead of the embedded SQLite store.
        #[arg(long)]
        database_url: Option<String>,
        /// Load the synthetic demo patients (once; skipped when already present).
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        tls: serve::TlsArgs,
    },
    /// Load FHIR bundles (.json) and NDJSON files (.ndjson), or folders of them.
    Import {
        /// Files or folders to import.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        store: config::StoreArgs,
        /// Resources per commit for NDJSON and collection bundles.
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// No progress bar (for scripts and CI logs).
        #[arg(long)]
        quiet: bool,
    },
    /// Write synthetic patients: one transaction bundle per patient, or NDJSON.
    Generate {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10)]
        patients: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write NDJSON (one file per resource type) instead of bundles.
        #[arg(long)]
        ndjson: bool,
    },
    /// Run the benchmark and print a Markdown report for docs/benchmarks.md.
    Bench {
        /// Where to put the benchmark's data (default: a fresh temporary folder).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Benchmark PostgreSQL at this URL instead of SQLite.
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long, default_value_t = 200)]
        patients: usize,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Seconds per timed phase.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Scenarios to run (repeatable; default: all).
        #[arg(long = "scenario", value_enum)]
        scenarios: Vec<bench::Scenario>,
        /// Seed of the synthetic data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Benchmark search on a large store (loaded once into DATA_DIR, reused
    /// by later runs) and print a Markdown report for docs/benchmarks.md.
    BenchSearch {
        #[arg(long)]
        data_dir: PathBuf,
        /// Benchmark PostgreSQL at this URL instead of SQLite.
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long, default_value_t = 1000)]
        patients: usize,
        /// Resources of each patient's history.
        #[arg(long, default_value_t = 2000)]
        per_patient: usize,
        /// Resources of the patient `$everything` is timed on.
        #[arg(long, default_value_t = 3000)]
        heavy: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Seconds per query shape.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The server's read-audit batch window (security.read_audit_window_ms).
        #[arg(long)]
        read_audit_window_ms: Option<u64>,
    },
    /// Data migration from a legacy system (see docs/migration.md).
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// The audit trail: verify its chain, report on it, checkpoint it.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Administration: keys, users, clients.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every entry's link and the checkpoints; exits 1 naming the first bad entry.
    Verify(audit_cmd::TrailArgs),
    /// Entries by period, user, patient, action..., sorted, as CSV or JSON.
    Report(Box<audit_cmd::ReportArgs>),
    /// Record the trail's head in the checkpoint file now (a server does so every minute).
    Checkpoint(audit_cmd::TrailArgs),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// New database and attachment keys: re-keys the database, re-seals every
    /// Binary, replaces the key file (servers must be stopped; see docs/security.md).
    RotateKey(keys::RotateKeyArgs),
    /// User accounts: add, list, disable, reset MFA, enrol TOTP, unlock, set role.
    User {
        #[command(subcommand)]
        command: admin::UserCommand,
    },
    /// Roles: their permission tables, MFA and break-the-glass settings.
    Role {
        #[command(subcommand)]
        command: admin::RoleCommand,
    },
    /// OAuth 2 clients: SMART apps (public or confidential) and backend services.
    Client {
        #[command(subcommand)]
        command: admin_client::ClientCommand,
    },
}

#[derive(Subcommand)]
enum MigrateCommand {
    /// Write a new migration project (migration.toml) into DIR.
    Init {
        /// The project folder (created if needed; an existing migration.toml is never overwritten).
        dir: PathBuf,
        /// The template: legacy-csv (what `migrate sample` writes) or synthea-csv.
        #[arg(long)]
        preset: Option<String>,
    },
    /// Load DIR/migration.toml and read every table of its sources: rows per
    /// table, and every unreadable row with its file, line and column.
    Check {
        /// The project folder (or its migration.toml).
        dir: PathBuf,
    },
    /// Run the migration stages: extract, convert to FHIR and validate
    /// (per-table dispositions and every issue, DIR/reports/dry-run.json),
    /// then load through the Service with a Provenance per source record
    /// (DIR/reports/load.json), then reconcile the store with the source and
    /// write the report (DIR/reports/reconciliation.html, spot-check.html).
    /// Loading is idempotent: a rerun, or a run after a kill, writes only
    /// what is missing or changed.
    Run {
        /// The project folder (or its migration.toml).
        dir: PathBuf,
        /// Convert and validate without loading: nothing is written to a store.
        #[arg(long)]
        dry_run: bool,
        /// The last stage to run: extract, convert, validate, load or
        /// reconcile (default; with --dry-run: validate).
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        target: MigrationTarget,
        #[command(flatten)]
        sheet: SpotCheckArgs,
    },
    /// Reconcile the store with the source again and write the report of the
    /// last run: DIR/reports/reconciliation.json and .html (balance,
    /// dispositions, load, reconciliation, reasons, timings, SVG charts) and
    /// the clinicians' spot-check worksheet (spot-check.json and .html).
    /// These hold patient data: they are written with mode 0600.
    Report {
        /// The project folder (or its migration.toml).
        dir: PathBuf,
        #[command(flatten)]
        store: config::StoreArgs,
        #[command(flatten)]
        sheet: SpotCheckArgs,
        /// No progress bar (for scripts and CI logs).
        #[arg(long)]
        quiet: bool,
    },
    /// Where the project stands: the last dry run's dispositions and the
    /// last load's counts, from DIR/reports.
    Status {
        /// The project folder (or its migration.toml).
        dir: PathBuf,
    },
    /// The patient pairs left for a human: lists those pending (both
    /// records' matching fields side by side, the score, their source
    /// lines) and records decisions (--merge PAIR, --keep-separate PAIR) in
    /// DIR/review.toml, which the next `migrate run` applies.
    Review(Box<migrate_review::ReviewArgs>),
    /// Undo a load of this project's export: every resource it maps to that
    /// is still stored as loaded is deleted (history and audit keep it), with
    /// its Provenance; a resource changed since in Hearth is kept and listed.
    Rollback {
        /// The project folder (or its migration.toml).
        dir: PathBuf,
        #[command(flatten)]
        target: MigrationTarget,
    },
    /// Write a seeded export for rehearsals and tests: a deliberately messy
    /// legacy CSV export (--layout legacy-csv, the default), or the Synthea
    /// CSV export layout with Synthea-like history (--layout synthea-csv).
    Sample {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10)]
        patients: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// legacy-csv (what the legacy-csv preset maps) or synthea-csv (the 17 files of the Synthea CSV export).
        #[arg(long, default_value = "legacy-csv")]
        layout: String,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hearth: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hearth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env = config::hearth_env();
    match cli.command {
        Command::Serve { config: config_file, data_dir, listen, database_url, demo, tls } => {
            let overrides = config::Overrides { listen, data_dir, database_url };
            let config = tls.apply(config::Config::load(config_file.as_deref(), &env, &overrides)?)?;
            wiring::init_tracing(&config.log.filter);
            serve::serve(config, demo).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { paths, store, batch_size, quiet } => {
            let config = store.load(&env)?;
            wiring::init_tracing(&config.log.filter);
            let service = wiring::service(&config).await?;
            let options = import::ImportOptions { batch_size: batch_size.max(1), progress: !quiet };
            let summary = import::import_paths(&service, &paths, &options).await?;
            // Reads it made (conditional references) are audited too.
            service.flush_audit().await.map_err(|e| anyhow::anyhow!(e.message()))?;
            print!("{}", summary.render());
            Ok(if summary.rejected.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        Command::Generate { out, patients, seed, ndjson } => {
            let options = synth::SynthOptions { seed, patients, per_patient: None };
            std::fs::create_dir_all(&out)?;
            if ndjson {
                synth::write_ndjson(&out, &options)?;
            } else {
                synth::write_bundles(&out, &options)?;
            }
            println!("wrote {patients} synthetic patients to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { data_dir, database_url, patients, clients, seconds, scenarios, seed } => {
            wiring::init_tracing("warn");
            let scenarios = if scenarios.is_empty() { bench::Scenario::ALL.to_vec() } else { scenarios };
            let options = bench::BenchOptions {
                data_dir,
                database_url,
                patients,
                clients,
                seconds,
                scenarios,
                seed,
                ..bench::BenchOptions::default()
            };
            let report = bench::run(&options).await?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchSearch { data_dir, database_url, patients, per_patient, heavy, clients, seconds, seed, read_audit_window_ms } => {
            wiring::init_tracing("warn");
            let options = bench_search::SearchBenchOptions {
                data_dir,
                database_url,
                patients,
                per_patient,
                heavy,
                clients,
                seconds,
                seed,
                read_audit_window_ms,
            };
            println!("{}", bench_search::run(&options).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { command } => migrate_command(command, &env).await,
        Command::Audit { command } => {
            wiring::init_tracing("warn");
            match command {
                AuditCommand::Verify(args) => {
                    Ok(if audit_cmd::verify(args).await? { ExitCode::SUCCESS } else { ExitCode::FAILURE })
                }
                AuditCommand::Report(args) => {
                    let rows = audit_cmd::report(*args).await?;
                    eprintln!("{rows} audit entries");
                    Ok(ExitCode::SUCCESS)
                }
                AuditCommand::Checkpoint(args) => {
                    println!("{}", audit_cmd::checkpoint(args).await?);
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Admin { command: AdminCommand::User { command } } => {
            wiring::init_tracing("warn");
            admin::user(command, &env).await
        }
        Command::Admin { command: AdminCommand::Role { command } } => admin::role(command, &env),
        Command::Admin { command: AdminCommand::Client { command } } => {
            wiring::init_tracing("warn");
            print!("{}", admin_client::run(command, &env).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin { command: AdminCommand::RotateKey(args) } => {
            wiring::init_tracing("warn");
            println!("{}", keys::rotate_key(args, &env).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The Service a migration loads through (the store of the configuration).
async fn migration_service(
    target: &MigrationTarget,
    env: &[(String, String)],
) -> anyhow::Result<std::sync::Arc<domain::Service>> {
    let config = target.store.load(env)?;
    wiring::init_tracing("warn");
    wiring::service_for(&config, wiring::Workload::BulkLoad).await
}

/// A progress bar over the source records a run converted.
fn record_bar(run: &migrate::dryrun::DryRun, quiet: bool, stage: &str) -> indicatif::ProgressBar {
    let records: u64 = run.tables.values().map(|c| c.converted).sum();
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(records) };
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!("{stage} {{wide_bar}} {{pos}}/{{len}} source records ({{eta}})"))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// A progress bar over the source patients matched against Hearth (those
/// not yet stored: a rerun ends early).
fn patient_bar(run: &migrate::dryrun::DryRun, quiet: bool) -> indicatif::ProgressBar {
    let patients = run.resources.iter().filter(|o| o.resource["resourceType"] == "Patient").count() as u64;
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(patients) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("matching against Hearth {wide_bar} {pos}/{len} source patients ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The store a migration loads into or rolls back (`migrate run`, `migrate rollback`).
#[derive(clap::Args, Debug)]
struct MigrationTarget {
    #[command(flatten)]
    store: config::StoreArgs,
    /// Source records per transaction (a load's first batches are smaller,
    /// growing to this).
    #[arg(long, default_value_t = migrate::load::DEFAULT_BATCH_RECORDS)]
    batch: usize,
    /// No progress bar (for scripts and CI logs).
    #[arg(long)]
    quiet: bool,
}

/// The clinicians' spot-check sample (`migrate report`, `migrate run --until reconcile`).
#[derive(clap::Args, Debug)]
struct SpotCheckArgs {
    /// Patients sampled per table for the spot-check worksheet.
    #[arg(long, default_value_t = migrate::report::DEFAULT_SAMPLE)]
    sample: usize,
    /// Seed of the spot-check sample (the same seed draws the same patients).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// RECONCILE and the report: the store behind `service` against the source
/// records `run` converted; writes DIR/reports/reconciliation.{json,html} and
/// spot-check.{json,html}. Exits 3 when a record is unaccounted for, or a
/// loaded value does not agree with its source.
#[allow(clippy::too_many_arguments)]
async fn reconcile_and_report(
    service: &domain::Service,
    project: &migrate::project::Project,
    project_dir: &std::path::Path,
    run: &migrate::dryrun::DryRun,
    dry_json: &serde_json::Value,
    load_json: Option<&serde_json::Value>,
    sheet: &SpotCheckArgs,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(run.resources.len() as u64) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("reconcile {wide_bar} {pos}/{len} resources ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = migrate::reconcile::reconcile(service, project, project_dir, run, |done| bar.set_position(done)).await;
    bar.finish_and_clear();
    service.flush_audit().await.map_err(|e| anyhow::anyhow!(e.message()))?;
    let reconciliation = result.map_err(|e| anyhow::anyhow!("reconcile: {e}"))?;
    // Every mismatch is in the report; the terminal gets the first ones.
    const SHOWN: usize = 200;
    for m in reconciliation.mismatches.iter().take(SHOWN) {
        println!("reconcile: {m}");
    }
    if reconciliation.mismatches.len() > SHOWN {
        println!("reconcile: ... and {} more mismatches (all in the report)", reconciliation.mismatches.len() - SHOWN);
    }
    for (table, c) in &reconciliation.tables {
        println!(
            "reconcile {table}: {} loaded records, {} critical fields compared, {} records with a mismatch",
            c.records, c.fields, c.mismatched
        );
    }
    let reports = project_dir.join("reports");
    let written = migrate::report::write(
        &reports,
        dry_json,
        load_json,
        &reconciliation,
        sheet.sample,
        sheet.seed,
        &fhir::instant::Instant::now().to_fhir(),
    )?;
    let report = &written.report;
    let unaccounted = report["totals"]["unaccounted"].as_i64().unwrap_or(0);
    println!(
        "reconciled: {} source records, {unaccounted} unaccounted; {} loaded records, {} with a mismatch; report: {}, spot check: {} (patient data, mode 0600)",
        report["totals"]["source_records"],
        report["reconcile"]["records"],
        reconciliation.mismatches.iter().map(|m| (&m.table, &m.key)).collect::<std::collections::HashSet<_>>().len(),
        reports.join("reconciliation.html").display(),
        reports.join("spot-check.html").display(),
    );
    let ok = report["balanced"].as_bool() == Some(true) && report["proved"].as_bool() == Some(true);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

async fn migrate_command(command: MigrateCommand, env: &[(String, String)]) -> anyhow::Result<ExitCode> {
    match command {
        MigrateCommand::Init { dir, preset } => {
            let file = migrate::project::init(&dir, preset.as_deref())?;
            let preset = preset.as_deref().unwrap_or(migrate::project::PRESETS[0].name);
            println!("wrote {} (preset {preset}); edit it to fit your export", file.display());
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Check { dir } => {
            let project = migrate::project::load(&dir)?;
            let project_dir = if dir.is_dir() { dir.clone() } else { dir.parent().map(PathBuf::from).unwrap_or_default() };
            let mut bad = 0u64;
            for name in project.sources.keys() {
                let Some(source) = project.source(&project_dir, name) else { continue };
                for table in source.tables() {
                    let (mut rows, mut errors) = (0u64, 0u64);
                    match source.rows(&table) {
                        Err(e) => {
                            println!("{name}.{table}: cannot read: {e}");
                            bad += 1;
                            continue;
                        }
                        Ok(iter) => {
                            for row in iter {
                                match row {
                                    Ok(_) => rows += 1,
                                    Err(e) => {
                                        errors += 1;
                                        println!("{name}.{table}: {e}");
                                    }
                                }
                            }
                        }
                    }
                    bad += errors;
                    println!("{name}.{table}: {rows} rows read, {errors} unreadable");
                }
            }
            Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        MigrateCommand::Run { dir, dry_run, until, target, sheet } => {
            use migrate::dryrun::Stage;
            let (until, loads, reconciles) = match until.as_deref() {
                None if dry_run => (Stage::Validate, false, false),
                Some(other @ ("load" | "reconcile")) if dry_run => {
                    anyhow::bail!("--until {other} writes to a store: drop --dry-run, or stop at --until validate")
                }
                None | Some("reconcile") => (Stage::Validate, true, true),
                Some("load") => (Stage::Validate, true, false),
                Some("validate") => (Stage::Validate, false, false),
                Some("convert") => (Stage::Convert, false, false),
                Some("extract") => (Stage::Extract, false, false),
                Some(other) => anyhow::bail!("--until {other:?}: expected extract, convert, validate, load or reconcile"),
            };
            let project = migrate::project::load(&dir)?;
            let project_dir = if dir.is_dir() { dir.clone() } else { dir.parent().map(PathBuf::from).unwrap_or_default() };
            let today = migrate::dryrun::today();
            let mut run = migrate::dryrun::run(&project, &project_dir, until, &today).map_err(anyhow::Error::msg)?;
            // Loading: the source patients are matched against Hearth's first.
            let accounted = run.unreadable.is_empty() && run.tables.values().all(|c| c.unaccounted() == 0);
            let service = if loads && accounted { Some(migration_service(&target, env).await?) } else { None };
            if let Some(service) = &service {
                let bar = patient_bar(&run, target.quiet);
                let started = std::time::Instant::now();
                let outcome =
                    migrate::matching::against_hearth(service, &project, &mut run, true, |n| bar.set_position(n)).await;
                run.timings.push(("match", started.elapsed().as_secs_f64()));
                bar.finish_and_clear();
                let outcome = outcome.map_err(anyhow::Error::msg)?;
                println!(
                    "matched against Hearth: {} source patients compared, {} merged into existing patients ({} given the legacy identifiers), {} held for review",
                    outcome.compared, outcome.merged, outcome.patients_updated, outcome.held
                );
            }
            for issue in &run.issues {
                println!("{issue}");
            }
            for m in &run.merges {
                let how = m.decided.as_ref().map(|d| format!(" [merged on review: {}]", d.summary())).unwrap_or_default();
                println!("merged: {} {} into {} ({}){how}", m.record.table, m.record, m.other, m.score.summary());
            }
            for r in &run.reviews {
                let id = migrate::review::PairKey::of(r).id();
                let how = match &r.decided {
                    Some(d) => format!("kept separate: {}", d.summary()),
                    None => "pending: hearth migrate review".to_owned(),
                };
                println!("review: {} {} and {} ({}) [pair {id}, {how}]", r.record.table, r.record, r.other, r.score.summary());
            }
            for (d, standing) in run.decision_standing() {
                if standing == migrate::review::Standing::Stale {
                    println!(
                        "{}:{}: pair {} ({}): {} decision is stale: this run finds no such pair (a record left the export, the pair no longer scores as a possible match, or a separate pair was merged through other matches: see its issues)",
                        migrate::review::REVIEW_FILE, d.line, d.pair.id(), d.pair, d.verdict.as_str()
                    );
                }
            }
            for (table, error) in &run.unreadable {
                println!("{table}: cannot read: {error}");
            }
            let mut unaccounted = 0i64;
            for (table, c) in &run.tables {
                unaccounted += c.unaccounted().abs();
                if until == Stage::Extract {
                    println!("{table}: {} source records: {} read, {} unreadable", c.source_records, c.pending, c.rejected);
                    continue;
                }
                println!(
                    "{table}: {} source records: {} converted, {} rejected, {} quarantined, {} merged, {} excluded, {} unaccounted ({} {} resources)",
                    c.source_records,
                    c.converted,
                    c.rejected,
                    c.quarantined,
                    c.merged,
                    c.excluded,
                    c.unaccounted(),
                    c.resources,
                    c.resource
                );
            }
            let reports = project_dir.join("reports");
            std::fs::create_dir_all(&reports)?;
            let file = reports.join("dry-run.json");
            let dry_json = run.to_json();
            std::fs::write(&file, serde_json::to_vec_pretty(&dry_json)?)?;
            let balanced = unaccounted == 0 && run.unreadable.is_empty();
            if !loads {
                println!("dry run (until {}): nothing was written to a store; report: {}", until.as_str(), file.display());
                return Ok(if balanced { ExitCode::SUCCESS } else { ExitCode::from(3) });
            }
            if !balanced {
                anyhow::bail!("the run does not account for every source record; nothing was loaded (see {})", file.display());
            }
            let Some(service) = service else {
                anyhow::bail!("no store to load into; nothing was loaded");
            };
            let options = migrate::load::LoadOptions {
                batch_records: target.batch.max(1),
                project: project.project.name.clone(),
                recorded: fhir::instant::Instant::now().to_fhir(),
            };
            let bar = record_bar(&run, target.quiet, "load");
            let started = std::time::Instant::now();
            let result = migrate::load::load(&service, &run, &options, |done| bar.set_position(done)).await;
            let load_time = started.elapsed();
            bar.finish_and_clear();
            service.flush_audit().await.map_err(|e| anyhow::anyhow!(e.message()))?;
            let report = match result {
                Ok(report) => report,
                Err(error) => anyhow::bail!("{error}; run again to resume (what was loaded stays, nothing is loaded twice)"),
            };
            for (table, c) in &report.tables {
                let records = if table == "provenance" { String::new() } else { format!("{} source records: ", c.records) };
                println!(
                    "load {table}: {records}{} resources created, {} updated, {} unchanged; {} read back as converted",
                    c.created, c.updated, c.unchanged, c.verified
                );
            }
            for (resource, source) in &report.mismatched {
                println!("read-back: {resource} (from {source}) is not stored as converted");
            }
            let file = reports.join("load.json");
            let tables: serde_json::Map<String, serde_json::Value> = report
                .tables
                .iter()
                .map(|(t, c)| {
                    let counts = serde_json::json!({
                        "records": c.records, "created": c.created, "updated": c.updated,
                        "unchanged": c.unchanged, "verified": c.verified,
                    });
                    (t.clone(), counts)
                })
                .collect();
            let mismatched: Vec<serde_json::Value> =
                report.mismatched.iter().map(|(r, s)| serde_json::json!({"resource": r, "source": s})).collect();
            let json = serde_json::json!({
                "project": options.project, "finished": fhir::instant::Instant::now().to_fhir(),
                "transactions": report.transactions,
                "written": report.written(), "tables": tables, "mismatched": mismatched,
                // The search indexes are built while the read-back runs:
                // "load" ends when every resource is committed.
                "timings": [
                    {"stage": "load", "seconds": load_time.saturating_sub(report.read_back.max(report.indexed_in)).as_secs_f64()},
                    {"stage": "search-indexes", "seconds": report.indexed_in.as_secs_f64(), "note": "at the same time as the read-back"},
                    {"stage": "read-back", "seconds": report.read_back.as_secs_f64()},
                ],
            });
            std::fs::write(&file, serde_json::to_vec_pretty(&json)?)?;
            println!(
                "loaded: {} resources written in {} transactions, {} read back different; report: {}",
                report.written(),
                report.transactions,
                report.mismatched.len(),
                file.display()
            );
            let read_back = if report.mismatched.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(3) };
            if !reconciles {
                return Ok(read_back);
            }
            let code = reconcile_and_report(
                &service,
                &project,
                &project_dir,
                &run,
                &dry_json,
                Some(&json),
                &sheet,
                target.quiet,
            )
            .await?;
            Ok(if report.mismatched.is_empty() { code } else { read_back })
        }
        MigrateCommand::Report { dir, store, sheet, quiet } => {
            let project = migrate::project::load(&dir)?;
            let project_dir = if dir.is_dir() { dir.clone() } else { dir.parent().map(PathBuf::from).unwrap_or_default() };
            let reports = project_dir.join("reports");
            let read = |name: &str| -> anyhow::Result<serde_json::Value> {
                let file = reports.join(name);
                let bytes = std::fs::read(&file).with_context(|| {
                    format!("reading {}: the report needs a load (hearth migrate run {})", file.display(), dir.display())
                })?;
                serde_json::from_slice(&bytes).with_context(|| format!("reading {}", file.display()))
            };
            let dry_json = read("dry-run.json")?;
            let load_json = read("load.json")?;
            let today = migrate::dryrun::today();
            let mut run = migrate::dryrun::run(&project, &project_dir, migrate::dryrun::Stage::Validate, &today)
                .map_err(anyhow::Error::msg)?;
            let config = store.load(env)?;
            wiring::init_tracing("warn");
            let service = wiring::service_for(&config, wiring::Workload::BulkLoad).await?;
            // The same matching against Hearth as the load (without writing).
            let bar = patient_bar(&run, quiet);
            let matched = migrate::matching::against_hearth(&service, &project, &mut run, false, |n| bar.set_position(n)).await;
            bar.finish_and_clear();
            matched.map_err(anyhow::Error::msg)?;
            let now = run.to_json();
            for count in ["source_records", "converted"] {
                if now["totals"][count] != dry_json["totals"][count] {
                    eprintln!(
                        "hearth: the export changed since the last run ({count}: {} then, {} now): the report counts the last run, the reconciliation checks the export as it is; run hearth migrate run again",
                        dry_json["totals"][count], now["totals"][count]
                    );
                }
            }
            reconcile_and_report(&service, &project, &project_dir, &run, &dry_json, Some(&load_json), &sheet, quiet).await
        }
        MigrateCommand::Status { dir } => {
            let project = migrate::project::load(&dir)?;
            let project_dir = if dir.is_dir() { dir.clone() } else { dir.parent().map(PathBuf::from).unwrap_or_default() };
            let reports = project_dir.join("reports");
            let read = |name: &str| -> anyhow::Result<Option<serde_json::Value>> {
                match std::fs::read(reports.join(name)) {
                    Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("reading {}", reports.join(name).display()))?)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e.into()),
                }
            };
            println!("project {}", project.project.name);
            match read("dry-run.json")? {
                None => println!("not run yet: hearth migrate run {} --dry-run", dir.display()),
                Some(run) => {
                    let t = &run["totals"];
                    println!(
                        "last run (until {}, {}): {} source records: {} converted, {} rejected, {} quarantined, {} merged, {} excluded, {} unaccounted",
                        run["until"].as_str().unwrap_or("?"),
                        run["today"].as_str().unwrap_or("?"),
                        t["source_records"],
                        t["converted"],
                        t["rejected"],
                        t["quarantined"],
                        t["merged"],
                        t["excluded"],
                        t["unaccounted"]
                    );
                    let (merges, reviews) = (run["merges"].as_array().map_or(0, Vec::len), run["reviews"].as_array().map_or(0, Vec::len));
                    let review = &run["review"];
                    println!(
                        "patient matching: {merges} merged, {reviews} pair(s) for review: {} pending, {} merged and {} kept separate on review, {} stale decision(s) (hearth migrate review {})",
                        review["pending"].as_u64().unwrap_or(reviews as u64),
                        review["decided"]["merge"].as_u64().unwrap_or(0),
                        review["decided"]["separate"].as_u64().unwrap_or(0),
                        review["stale"].as_array().map_or(0, Vec::len), dir.display()
                    );
                }
            }
            match read("load.json")? {
                None => println!("not loaded yet"),
                Some(load) => {
                    println!(
                        "last load (finished {}): {} resources written in {} transactions, {} read back different",
                        load["finished"].as_str().unwrap_or("?"),
                        load["written"],
                        load["transactions"],
                        load["mismatched"].as_array().map_or(0, Vec::len)
                    );
                    for (table, c) in load["tables"].as_object().into_iter().flatten() {
                        println!(
                            "  {table}: {} created, {} updated, {} unchanged, {} verified",
                            c["created"], c["updated"], c["unchanged"], c["verified"]
                        );
                    }
                }
            }
            match read("reconciliation.json")? {
                None => println!("not reconciled yet"),
                Some(r) => {
                    println!(
                        "last reconcile ({}): {} unaccounted; {} loaded records, {} critical fields compared, {} records with a mismatch; {}",
                        r["generated"].as_str().unwrap_or("?"),
                        r["totals"]["unaccounted"],
                        r["reconcile"]["records"],
                        r["reconcile"]["fields"],
                        r["reconcile"]["mismatched"],
                        if r["balanced"] == true && r["proved"] == true { "balanced and proved" } else { "NOT balanced and proved" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Review(args) => migrate_review::review(*args, env).await,
        MigrateCommand::Rollback { dir, target } => {
            let project = migrate::project::load(&dir)?;
            let project_dir = if dir.is_dir() { dir.clone() } else { dir.parent().map(PathBuf::from).unwrap_or_default() };
            let today = migrate::dryrun::today();
            let mut run = migrate::dryrun::run(&project, &project_dir, migrate::dryrun::Stage::Validate, &today)
                .map_err(anyhow::Error::msg)?;
            let service = migration_service(&target, env).await?;
            // The same matching against Hearth as the load (without writing):
            // the records it merged refer to the patients they were merged into.
            let bar = patient_bar(&run, target.quiet);
            let matched = migrate::matching::against_hearth(&service, &project, &mut run, false, |n| bar.set_position(n)).await;
            bar.finish_and_clear();
            matched.map_err(anyhow::Error::msg)?;
            let options = migrate::load::LoadOptions {
                batch_records: target.batch.max(1),
                project: project.project.name.clone(),
                recorded: String::new(),
            };
            let bar = record_bar(&run, target.quiet, "rollback");
            let result = migrate::load::rollback(&service, &run, &options, |done| bar.set_position(done)).await;
            bar.finish_and_clear();
            service.flush_audit().await.map_err(|e| anyhow::anyhow!(e.message()))?;
            let report = result.map_err(|e| anyhow::anyhow!("{e}; run again to continue"))?;
            for (table, n) in &report.deleted {
                println!("rollback {table}: {n} resources deleted");
            }
            for (resource, source) in &report.kept {
                println!("kept {resource} (from {source}): changed in Hearth since it was loaded");
            }
            let deleted: u64 = report.deleted.values().sum();
            println!(
                "rolled back: {deleted} resources deleted, {} kept (changed since loaded), {} were not stored",
                report.kept.len(),
                report.absent
            );
            Ok(if report.kept.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        MigrateCommand::Sample { out, patients, seed, layout, quiet } if layout == "synthea-csv" => {
            let options = migrate::synthea_sample::SyntheaOptions { patients, seed };
            let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(patients as u64) };
            bar.set_style(
                indicatif::ProgressStyle::with_template("sample {wide_bar} {pos}/{len} patients ({eta})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let started = std::time::Instant::now();
            let report = migrate::synthea_sample::write(&out, &options, |done| bar.set_position(done));
            bar.finish_and_clear();
            let report = report.map_err(anyhow::Error::msg)?;
            println!(
                "wrote a Synthea CSV export of {patients} patients to {}: {} files, {} rows in {:.1} s",
                out.display(),
                report.files.len(),
                report.total_rows(),
                started.elapsed().as_secs_f64()
            );
            for (file, rows) in &report.rows {
                println!("  {file}: {rows} rows");
            }
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Sample { layout, .. } if layout != "legacy-csv" => {
            anyhow::bail!("--layout {layout:?}: expected legacy-csv or synthea-csv")
        }
        MigrateCommand::Sample { out, patients, seed, .. } => {
            let options = migrate::sample::SampleOptions { patients, seed };
            let report = migrate::sample::write(&out, &options).map_err(anyhow::Error::msg)?;
            let rows: u64 = report.rows.values().sum();
            println!(
                "wrote a legacy export of {patients} patients to {}: {} files, {rows} rows, {} planted defects (listed in {})",
                out.display(),
                report.files.len(),
                report.defects.len(),
                migrate::sample::MANIFEST
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
