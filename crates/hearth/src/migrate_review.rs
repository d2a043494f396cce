//! `hearth migrate review DIR`: the patient pairs the matching left for a
//! human (both records' matching fields side by side, the score, where each
//! record is in the source), and the analyst's decisions on them, recorded
//! in `DIR/review.toml` for the next `hearth migrate run` to apply (see
//! `migrate::review`).

use crate::{config, wiring};
use migrate::matching::{Other, Pair};
use migrate::review::{Decision, PairKey, Standing, Verdict};
use std::path::PathBuf;
use std::process::ExitCode;

/// `hearth migrate review` arguments.
#[derive(clap::Args, Debug)]
pub struct ReviewArgs {
    /// The project folder (or its migration.toml).
    dir: PathBuf,
    /// Merge this pair (its id, or a unique start of it) as an automatic merge would.
    #[arg(long = "merge", value_name = "PAIR")]
    merge: Vec<String>,
    /// Keep the two patients of this pair apart (clears the warning, releases a hold).
    #[arg(long = "keep-separate", value_name = "PAIR")]
    keep_separate: Vec<String>,
    /// Remove the decision about this pair from review.toml (it is pending again).
    #[arg(long = "reopen", value_name = "PAIR")]
    reopen: Vec<String>,
    /// Who decides (recorded with the decision; default: the USER environment variable).
    #[arg(long)]
    by: Option<String>,
    /// Why (recorded with the decision).
    #[arg(long)]
    note: Option<String>,
    /// With a store (--data-dir, --database-url or --config), the pairs with
    /// Hearth's patients are listed too.
    #[command(flatten)]
    store: config::StoreArgs,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The pair whose id starts with `id`, among `pairs`.
fn find<'p>(pairs: &[&'p Pair], id: &str) -> anyhow::Result<&'p Pair> {
    let id = id.trim();
    if id.len() < 4 {
        anyhow::bail!("pair {id:?}: give at least 4 characters of the id `hearth migrate review` lists");
    }
    let found: Vec<&'p Pair> = pairs.iter().copied().filter(|p| PairKey::of(p).id().starts_with(id)).collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => anyhow::bail!(
            "pair {id}: no pair of this run has that id (the {} pair(s) are listed by hearth migrate review; a pair with a patient in Hearth needs the store: --data-dir or --database-url)",
            pairs.len()
        ),
        _ => anyhow::bail!("pair {id}: {} pairs start with it; give more of the id", found.len()),
    }
}

fn other_text(pair: &Pair) -> String {
    match &pair.other {
        Other::Source(r) => format!("{} {r}", r.table),
        Other::Hearth(id) => format!("Patient/{id} in Hearth"),
    }
}

fn print_pair(pair: &Pair, config: &migrate::matching::Config) {
    let id = PairKey::of(pair).id();
    println!();
    println!(
        "pair {id}: score {:.1}{}: {} {} and {}",
        pair.score.total,
        if pair.score.deterministic { " (same strong identifier)" } else { "" },
        pair.record.table,
        pair.record,
        other_text(pair)
    );
    let rows = pair.side_by_side(config);
    let width = |pick: fn(&(migrate::matching::Field, String, String, String)) -> usize| {
        rows.iter().map(pick).max().unwrap_or(0)
    };
    let w1 = width(|r| r.1.chars().count()).max(pair.record.key.chars().count() + 2).max(6);
    let w2 = width(|r| r.2.chars().count()).max(5);
    let other_head = match &pair.other {
        Other::Source(r) => format!("[{}]", r.key),
        Other::Hearth(_) => "Hearth".to_owned(),
    };
    println!("  {:<11} {:<w1$}  {:<w2$}  comparison", "field", format!("[{}]", pair.record.key), other_head);
    for (field, a, b, level) in rows {
        println!("  {:<11} {:<w1$}  {:<w2$}  {level}", field.as_str(), a, b);
    }
}

/// Lists the pairs for review and records the decisions given.
pub async fn review(args: ReviewArgs, env: &[(String, String)]) -> anyhow::Result<ExitCode> {
    let project = migrate::project::load(&args.dir)?;
    let dir = &args.dir;
    let project_dir = if dir.is_dir() { dir.clone() } else { dir.parent().map(PathBuf::from).unwrap_or_default() };
    let today = migrate::dryrun::today();
    let mut run = migrate::dryrun::run(&project, &project_dir, migrate::dryrun::Stage::Validate, &today)
        .map_err(anyhow::Error::msg)?;
    let store = &args.store;
    let with_store = store.config.is_some() || store.data_dir.is_some() || store.database_url.is_some();
    if with_store {
        let config = store.load(env)?;
        wiring::init_tracing("warn");
        let service = wiring::service(&config).await?;
        let bar = if args.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new_spinner() };
        let matched =
            migrate::matching::against_hearth(&service, &project, &mut run, false, |n| bar.set_position(n)).await;
        bar.finish_and_clear();
        matched.map_err(anyhow::Error::msg)?;
        service.flush_audit().await.map_err(|e| anyhow::anyhow!(e.message()))?;
    }
    let config = migrate::matching::Config::of(&project);
    let pairs: Vec<&Pair> = run.reviews.iter().chain(&run.merges).collect();

    // Decisions given now.
    let mut decisions = project.review.clone();
    let mut decided_now: Vec<PairKey> = Vec::new();
    let asked = !args.merge.is_empty() || !args.keep_separate.is_empty();
    let by = match (&args.by, std::env::var("USER")) {
        (Some(by), _) if !by.trim().is_empty() => Some(by.trim().to_owned()),
        (None, Ok(user)) if !user.trim().is_empty() => Some(user.trim().to_owned()),
        _ => None,
    };
    if asked && by.is_none() {
        anyhow::bail!("--by NAME: who decides is recorded with the decision");
    }
    let at = fhir::instant::Instant::now().to_fhir();
    for (verdict, ids) in [(Verdict::Merge, &args.merge), (Verdict::Separate, &args.keep_separate)] {
        for id in ids {
            let pair = find(&pairs, id)?;
            let key = PairKey::of(pair);
            if verdict == Verdict::Merge && pair.decided.is_none() && run.merges.iter().any(|m| PairKey::of(m) == key) {
                anyhow::bail!("pair {}: already merged by the matching (no decision needed)", key.id());
            }
            if decided_now.contains(&key) {
                anyhow::bail!("pair {}: two decisions given at once", key.id());
            }
            decisions.set(Decision {
                pair: key.clone(),
                verdict,
                by: by.clone().unwrap_or_default(),
                at: at.clone(),
                note: args.note.clone().filter(|n| !n.trim().is_empty()),
                line: 0,
            });
            println!(
                "recorded: {} pair {} ({} {} and {})",
                verdict.as_str(),
                key.id(),
                pair.record.table,
                pair.record,
                other_text(pair)
            );
            decided_now.push(key);
        }
    }
    let mut reopened = 0;
    for id in &args.reopen {
        match decisions.remove(id.trim()) {
            Some(d) if id.trim().len() >= 4 => {
                println!("reopened: pair {} ({}): its {} decision is removed", d.pair.id(), d.pair, d.verdict.as_str());
                reopened += 1;
            }
            _ => anyhow::bail!("pair {id}: no decision in {} has that id", decisions.file.display()),
        }
    }
    if !decided_now.is_empty() || reopened > 0 {
        decisions.save()?;
        println!(
            "wrote {}: the next hearth migrate run applies it (keep the file with migration.toml)",
            decisions.file.display()
        );
    }

    // The listing.
    let pending: Vec<&Pair> = run
        .reviews
        .iter()
        .filter(|p| p.decided.is_none() && decisions.get(&PairKey::of(p)).is_none())
        .collect();
    println!(
        "{} pair(s) pending review{}",
        pending.len(),
        if with_store { "" } else { " within the export (pairs with Hearth's patients: give the store, --data-dir or --database-url)" }
    );
    for pair in &pending {
        print_pair(pair, &config);
    }
    if !pending.is_empty() {
        println!();
        println!(
            "decide with: hearth migrate review {} --merge PAIR | --keep-separate PAIR [--by NAME] [--note TEXT]",
            dir.display()
        );
    }
    let mut listed = false;
    for pair in &pairs {
        let key = PairKey::of(pair);
        let Some(d) = decisions.get(&key) else { continue };
        if !listed {
            println!();
            println!("decided (in {}):", decisions.file.display());
            listed = true;
        }
        let applied = if pair.decided.is_some() { "applied by this run" } else { "applies at the next run" };
        println!("  pair {}: {} {} and {}: {}; {applied}", key.id(), pair.record.table, pair.record, other_text(pair), d.summary());
    }
    let standing = run.decision_standing();
    for (d, s) in standing {
        if matches!(s, Standing::Stale | Standing::Unchecked | Standing::Loaded) && decisions.get(&d.pair).is_some() {
            let why = match s {
                Standing::Stale => "stale: this run finds no such pair (a record left the export, the pair no longer scores as a possible match, or a separate pair was merged through other matches: see its issues); remove it with --reopen",
                Standing::Unchecked => "not checked: a pair with a patient in Hearth (give the store)",
                _ => "applied by an earlier load",
            };
            println!("{}:{}: pair {} ({}): {} decision: {why}", decisions.file.display(), d.line, d.pair.id(), d.pair, d.verdict.as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}
