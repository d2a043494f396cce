//! The reconciliation report and the clinicians' spot-check worksheet
//! (`hearth migrate report`, and the end of `hearth migrate run --until
//! reconcile`).
//!
//! - `reports/reconciliation.json` and `reports/reconciliation.html`: per
//!   table the source records and each disposition, the balance
//!   (`unaccounted`, which must be 0), what the load did, what the
//!   reconciliation found, the reasons (issue kinds by count) and each
//!   stage's time. The page is self-contained (inline CSS and SVG charts
//!   drawn here, no script, no external asset) and prints.
//! - `reports/spot-check.json` and `reports/spot-check.html`: a seeded random
//!   sample of patients per table, each sampled patient's rows of that table
//!   with source and loaded values side by side, and a sign-off box
//!   (checked, initials, date) per patient.
//!
//! The report is built from the JSON of the last run (`dry-run.json`,
//! `load.json`) and a [`Reconciliation`]; the HTML from the report's JSON.
//! Both the mismatches and the spot check hold patient data: every file is
//! written readable by its owner only (mode 0600).

use crate::dryrun::Disposition;
use crate::reconcile::{Reconciliation, RecordCheck};
use crate::source::Provenance;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Patients sampled per table by default.
pub const DEFAULT_SAMPLE: usize = 5;

/// The report's JSON: `dry_run` is the last run's `dry-run.json`, `load`
/// its `load.json` (absent before a load), `generated` an instant.
pub fn reconciliation_json(
    dry_run: &Value,
    load: Option<&Value>,
    reconciliation: &Reconciliation,
    generated: &str,
) -> Value {
    let dispositions: Vec<&str> = Disposition::ALL.iter().map(|d| d.as_str()).collect();
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let reconciled = reconciliation.to_json();
    let mut tables = serde_json::Map::new();
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    let mut unaccounted_total = 0i64;
    for (name, c) in dry_run["tables"].as_object().into_iter().flatten() {
        let source = n(c, "source_records");
        let counts: serde_json::Map<String, Value> =
            dispositions.iter().map(|d| ((*d).to_owned(), json!(n(c, d)))).collect();
        let accounted: u64 = dispositions.iter().map(|d| n(c, d)).sum::<u64>() + n(c, "pending");
        let unaccounted = source as i64 - accounted as i64;
        unaccounted_total += unaccounted;
        let mut balance = format!("{source} source records = ");
        let terms: Vec<String> = dispositions
            .iter()
            .map(|d| format!("{} {d}", n(c, d)))
            .chain((n(c, "pending") > 0).then(|| format!("{} pending", n(c, "pending"))))
            .collect();
        let _ = write!(balance, "{} + {unaccounted} unaccounted", terms.join(" + "));
        for d in &dispositions {
            *totals.entry(d).or_default() += n(c, d);
        }
        *totals.entry("source_records").or_default() += source;
        *totals.entry("resources").or_default() += n(c, "resources");
        *totals.entry("pending").or_default() += n(c, "pending");
        let load = load.map(|l| l["tables"][name].clone()).filter(|v| !v.is_null());
        let reconcile = reconciled["tables"].get(name).cloned();
        tables.insert(
            name.clone(),
            json!({
                "file": c["file"], "resource": c["resource"], "source_records": source,
                "dispositions": counts, "pending": n(c, "pending"), "unaccounted": unaccounted,
                "balance": balance, "resources": n(c, "resources"),
                "load": load, "reconcile": reconcile,
            }),
        );
    }
    let mut reasons: BTreeMap<(String, String), u64> = BTreeMap::new();
    for issue in dry_run["issues"].as_array().into_iter().flatten() {
        let kind = issue["kind"].as_str().unwrap_or("?").to_owned();
        let severity = issue["severity"].as_str().unwrap_or("?").to_owned();
        *reasons.entry((kind, severity)).or_default() += 1;
    }
    let mut reasons: Vec<((String, String), u64)> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut timings: Vec<Value> = dry_run["timings"].as_array().cloned().unwrap_or_default();
    if let Some(load) = load {
        timings.extend(load["timings"].as_array().cloned().unwrap_or_default());
    }
    timings.push(json!({ "stage": "reconcile", "seconds": reconciliation.seconds }));
    let mut total = serde_json::Map::new();
    for (k, v) in &totals {
        total.insert((*k).to_owned(), json!(v));
    }
    total.insert("unaccounted".into(), json!(unaccounted_total));
    let unreadable = dry_run["unreadable_tables"].as_array().cloned().unwrap_or_default();
    let read_back = load.map_or(0, |l| l["mismatched"].as_array().map_or(0, Vec::len));
    let mismatched = reconciliation.mismatches.len();
    // Every converted record was reconciled, no more, no fewer.
    let unreconciled: Vec<Value> = tables
        .iter()
        .filter_map(|(name, t)| {
            let converted = t["dispositions"]["converted"].as_u64().unwrap_or(0);
            let reconciled = t["reconcile"]["records"].as_u64().unwrap_or(0);
            (converted != reconciled)
                .then(|| json!({ "table": name, "converted": converted, "reconciled": reconciled }))
        })
        .collect();
    json!({
        "project": dry_run["project"],
        "generated": generated,
        "run": { "until": dry_run["until"], "today": dry_run["today"], "loaded": load.is_some(),
                 "load_finished": load.map(|l| l["finished"].clone()) },
        "balanced": unaccounted_total == 0 && unreadable.is_empty(),
        "proved": load.is_some() && mismatched == 0 && read_back == 0 && unreconciled.is_empty(),
        "unreconciled": unreconciled,
        "dispositions": dispositions,
        "totals": total,
        "tables": tables,
        "unreadable_tables": unreadable,
        "reasons": reasons.iter().map(|((kind, severity), count)| json!({ "kind": kind, "severity": severity, "count": count })).collect::<Vec<_>>(),
        "timings": timings,
        "load": load.map(|l| json!({
            "transactions": l["transactions"], "written": l["written"], "read_back_mismatched": l["mismatched"],
            "provenance": l["tables"]["provenance"],
        })),
        "reconcile": reconciled,
        "merges": dry_run["merges"].as_array().cloned().unwrap_or_default(),
        "reviews": dry_run["reviews"].as_array().cloned().unwrap_or_default(),
        "review": dry_run["review"],
    })
}

/// HTML-escapes `text` (Hearth's one escape, shared with the API's pages).
pub use fhir::xhtml::escape;

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// Colours of the series (dispositions in `Disposition::ALL` order first).
const PALETTE: [&str; 8] = ["#2e7d32", "#c62828", "#ef8f00", "#1565c0", "#6d4c41", "#6a1b9a", "#00838f", "#757575"];
const BAR: &str = "#3f6fa8";

/// A horizontal bar chart: one bar per `(label, value, shown)`.
pub fn bar_chart(title: &str, items: &[(String, f64, String)]) -> String {
    let (label_w, bar_w, row_h, top) = (240.0, 380.0, 22.0, 28.0);
    let width = label_w + bar_w + 140.0;
    let height = top + row_h * items.len().max(1) as f64 + 8.0;
    let max = items.iter().map(|i| i.1).fold(0.0_f64, f64::max);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{t}" width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{t}</title><text x="0" y="16" class="title">{t}</text>"#,
        t = escape(title)
    );
    for (i, (label, value, shown)) in items.iter().enumerate() {
        let y = top + row_h * i as f64;
        let w = if max > 0.0 { (value / max * bar_w).max(if *value > 0.0 { 1.0 } else { 0.0 }) } else { 0.0 };
        let _ = write!(
            svg,
            r#"<text x="{lx}" y="{ty}" text-anchor="end">{label}</text><rect x="{label_w}" y="{ry}" width="{w:.1}" height="{h}" fill="{BAR}"/><text x="{vx:.1}" y="{ty}">{shown}</text>"#,
            lx = label_w - 6.0,
            ty = y + 15.0,
            ry = y + 3.0,
            h = row_h - 6.0,
            vx = label_w + w + 5.0,
            label = escape(label),
            shown = escape(shown),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A 100 % stacked bar per row (`(label, values per series)`), with a legend.
pub fn stacked_chart(title: &str, series: &[&str], rows: &[(String, Vec<u64>)]) -> String {
    let (label_w, bar_w, row_h, top) = (240.0, 380.0, 22.0, 48.0);
    let width = label_w + bar_w + 300.0;
    let height = top + row_h * rows.len().max(1) as f64 + 8.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{t}" width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{t}</title><text x="0" y="16" class="title">{t}</text>"#,
        t = escape(title)
    );
    let mut x = 0.0;
    for (i, name) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="26" width="12" height="12" fill="{colour}"/><text x="{tx}" y="36">{name}</text>"#,
            tx = x + 16.0,
            name = escape(name)
        );
        x += 30.0 + 7.0 * name.len() as f64;
    }
    for (i, (label, values)) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let total: u64 = values.iter().sum();
        let _ =
            write!(svg, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, label_w - 6.0, y + 15.0, escape(label));
        let mut at = label_w;
        for (j, v) in values.iter().enumerate() {
            if *v == 0 || total == 0 {
                continue;
            }
            let w = *v as f64 / total as f64 * bar_w;
            let _ = write!(
                svg,
                r#"<rect x="{at:.1}" y="{}" width="{w:.1}" height="{}" fill="{}"><title>{}: {v}</title></rect>"#,
                y + 3.0,
                row_h - 6.0,
                PALETTE[j % PALETTE.len()],
                escape(series.get(j).copied().unwrap_or("?"))
            );
            at += w;
        }
        // The total, then every disposition after the first that is not 0.
        let others: Vec<String> =
            values.iter().zip(series).skip(1).filter(|(v, _)| **v > 0).map(|(v, name)| format!("{v} {name}")).collect();
        let detail = if others.is_empty() { String::new() } else { format!(" ({})", others.join(", ")) };
        let _ =
            write!(svg, r#"<text x="{}" y="{}">{total}{}</text>"#, label_w + bar_w + 5.0, y + 15.0, escape(&detail));
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #999; padding: .2em .5em; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1b5e20; font-weight: bold; } .bad { color: #b71c1c; font-weight: bold; }
.banner { border: 2px solid; padding: .6em 1em; margin: 1em 0; font-size: 1.1em; }
.banner.ok { border-color: #1b5e20; } .banner.bad { border-color: #b71c1c; }
.chart { display: block; margin: .8em 0; font-size: 12px; } .chart .title { font-weight: bold; font-size: 13px; }
.phi { font-size: .85em; color: #444; }
.box { display: inline-block; width: 1em; height: 1em; border: 1px solid #111; vertical-align: middle; }
.line { display: inline-block; min-width: 8em; border-bottom: 1px solid #111; }
.patient { page-break-inside: avoid; break-inside: avoid; margin-bottom: 1.2em; }
@media print { body { margin: 1cm; } .chart, table { page-break-inside: avoid; break-inside: avoid; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; } }
"#;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n",
        t = escape(title)
    )
}

/// The report's page, from its JSON ([`reconciliation_json`]).
pub fn reconciliation_html(report: &Value) -> String {
    let project = value_text(&report["project"]);
    let dispositions: Vec<String> = report["dispositions"].as_array().into_iter().flatten().map(value_text).collect();
    let totals = &report["totals"];
    let unaccounted = totals["unaccounted"].as_i64().unwrap_or(0);
    let balanced = report["balanced"].as_bool().unwrap_or(false);
    let proved = report["proved"].as_bool().unwrap_or(false);
    let mismatched = report["reconcile"]["mismatched"].as_u64().unwrap_or(0);
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Migration reconciliation: {}</h1>\n<p>Generated {} from the run of {} (until {}){}.</p>\n",
        escape(&project),
        escape(&value_text(&report["generated"])),
        escape(&value_text(&report["run"]["today"])),
        escape(&value_text(&report["run"]["until"])),
        match report["run"]["load_finished"].as_str() {
            Some(f) => format!(", loaded {}", escape(f)),
            None => String::new(),
        }
    );
    let _ = write!(
        b,
        "<p class=\"phi\">This report holds record keys and, for mismatches, source and loaded values: it describes patients' records. Keep it like the export itself.</p>\n\
         <div class=\"banner {}\" id=\"balance\">Balance: {} source records, <strong>{unaccounted} unaccounted</strong>{}</div>\n\
         <div class=\"banner {}\" id=\"proof\">Proof: {} loaded records reconciled, {} critical fields compared, <strong>{mismatched} records with a mismatch</strong>; read-back: {} resources different from the conversion{}</div>\n",
        if balanced { "ok" } else { "bad" },
        totals["source_records"],
        if balanced { " (every source record has exactly one disposition)" } else { ": NOT BALANCED" },
        if proved { "ok" } else { "bad" },
        report["reconcile"]["records"],
        report["reconcile"]["fields"],
        report["load"]["read_back_mismatched"].as_array().map_or(0, Vec::len),
        if proved { "" } else { ": NOT PROVED" },
    );

    // The balance per table.
    b.push_str("<h2>Balance per table</h2>\n<table id=\"tables\"><tr><th>table</th><th>file</th><th>resource</th><th class=\"n\">source records</th>");
    for d in &dispositions {
        let _ = write!(b, "<th class=\"n\">{}</th>", escape(d));
    }
    b.push_str("<th class=\"n\">unaccounted</th><th>balance</th></tr>\n");
    let tables = report["tables"].as_object().cloned().unwrap_or_default();
    for (name, t) in &tables {
        let u = t["unaccounted"].as_i64().unwrap_or(0);
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>",
            escape(name),
            escape(&value_text(&t["file"])),
            escape(&value_text(&t["resource"])),
            t["source_records"]
        );
        for d in &dispositions {
            let _ = write!(b, "<td class=\"n\">{}</td>", t["dispositions"][d]);
        }
        let _ = writeln!(
            b,
            "<td class=\"n {}\">{u}</td><td>{}</td></tr>",
            if u == 0 { "ok" } else { "bad" },
            escape(&value_text(&t["balance"]))
        );
    }
    let _ = write!(b, "<tr><th>total</th><th></th><th></th><th class=\"n\">{}</th>", totals["source_records"]);
    for d in &dispositions {
        let _ = write!(b, "<th class=\"n\">{}</th>", totals[d]);
    }
    let _ = writeln!(
        b,
        "<th class=\"n {}\">{unaccounted}</th><th></th></tr></table>",
        if unaccounted == 0 { "ok" } else { "bad" }
    );
    for t in report["unreconciled"].as_array().into_iter().flatten() {
        let _ = writeln!(
            b,
            "<p class=\"bad\">Table {}: {} records converted, {} reconciled: the export changed since the run, or records are missing.</p>",
            escape(&value_text(&t["table"])),
            t["converted"],
            t["reconciled"]
        );
    }
    for t in report["unreadable_tables"].as_array().into_iter().flatten() {
        let _ = writeln!(
            b,
            "<p class=\"bad\">Table {} could not be read: {}</p>",
            escape(&value_text(&t["table"])),
            escape(&value_text(&t["error"]))
        );
    }

    // Charts.
    b.push_str("<h2>Charts</h2>\n");
    let counts: Vec<(String, f64, String)> = tables
        .iter()
        .map(|(n, t)| {
            let v = t["source_records"].as_u64().unwrap_or(0);
            (n.clone(), v as f64, format!("{v} ({} resources)", t["resources"]))
        })
        .collect();
    b.push_str(&bar_chart("Source records by table", &counts));
    let series: Vec<&str> = dispositions.iter().map(String::as_str).collect();
    let rows: Vec<(String, Vec<u64>)> = tables
        .iter()
        .map(|(n, t)| (n.clone(), dispositions.iter().map(|d| t["dispositions"][d].as_u64().unwrap_or(0)).collect()))
        .collect();
    b.push_str(&stacked_chart("Dispositions by table (share of source records)", &series, &rows));
    let reasons: Vec<(String, f64, String)> = report["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let c = r["count"].as_u64().unwrap_or(0);
            (format!("{} ({})", value_text(&r["kind"]), value_text(&r["severity"])), c as f64, c.to_string())
        })
        .collect();
    b.push_str(&bar_chart("Reasons (issues by kind)", &reasons));
    let timings: Vec<(String, f64, String)> = report["timings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let s = t["seconds"].as_f64().unwrap_or(0.0);
            let stage = match t["note"].as_str() {
                Some(note) => format!("{} ({note})", value_text(&t["stage"])),
                None => value_text(&t["stage"]),
            };
            (stage, s, format!("{s:.3} s"))
        })
        .collect();
    b.push_str(&bar_chart("Time per stage", &timings));

    // Load and reconciliation per table.
    b.push_str("<h2>Load and reconciliation per table</h2>\n<table id=\"proof-tables\"><tr><th>table</th><th class=\"n\">records loaded</th><th class=\"n\">created</th><th class=\"n\">updated</th><th class=\"n\">unchanged</th><th class=\"n\">read back as converted</th><th class=\"n\">reconciled</th><th class=\"n\">matched</th><th class=\"n\">mismatched</th><th class=\"n\">fields</th><th>digests (source / loaded, SHA-256)</th></tr>\n");
    for (name, t) in &tables {
        let l = &t["load"];
        let r = &t["reconcile"];
        let same = r["source_digest"].is_string() && r["source_digest"] == r["loaded_digest"];
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n {}\">{}</td><td class=\"n\">{}</td><td class=\"{}\"><code>{}</code><br><code>{}</code></td></tr>",
            escape(name),
            l["records"],
            l["created"],
            l["updated"],
            l["unchanged"],
            l["verified"],
            r["records"],
            r["matched"],
            if r["mismatched"].as_u64().unwrap_or(0) == 0 { "ok" } else { "bad" },
            r["mismatched"],
            r["fields"],
            if same { "ok" } else { "bad" },
            escape(&value_text(&r["source_digest"])),
            escape(&value_text(&r["loaded_digest"])),
        );
    }
    let p = &report["load"]["provenance"];
    if p.is_object() {
        let _ = writeln!(
            b,
            "<tr><td>Provenance (one per record)</td><td class=\"n\"></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td colspan=\"5\"></td></tr>",
            p["created"], p["updated"], p["unchanged"], p["verified"]
        );
    }
    b.push_str("</table>\n");

    let mismatches = report["reconcile"]["mismatches"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(b, "<h2>Mismatches ({})</h2>", mismatches.len());
    if mismatches.is_empty() {
        b.push_str("<p class=\"ok\">Every critical field of every loaded record is as the source says.</p>\n");
    } else {
        b.push_str("<table id=\"mismatches\"><tr><th>table</th><th>source</th><th>key</th><th>field</th><th>source value</th><th>loaded value</th><th>resource</th></tr>\n");
        for m in &mismatches {
            let place = match m["line"].as_u64() {
                Some(line) => format!("{}:{line}", value_text(&m["file"])),
                None => value_text(&m["file"]),
            };
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td><td>{}</td></tr>",
                escape(&value_text(&m["table"])),
                escape(&place),
                escape(&value_text(&m["key"])),
                escape(&value_text(&m["field"])),
                escape(&value_text(&m["source"])),
                escape(&match (m["loaded"].as_str(), m["stored"].as_bool()) {
                    (Some(l), _) => l.to_owned(),
                    (None, Some(false)) => "(resource not stored)".to_owned(),
                    (None, _) => "(nothing stored)".to_owned(),
                }),
                escape(&value_text(&m["resource"])),
            );
        }
        b.push_str("</table>\n");
    }
    b.push_str(
        "<h2>Reasons</h2>\n<table id=\"reasons\"><tr><th>kind</th><th>severity</th><th class=\"n\">issues</th></tr>\n",
    );
    for r in report["reasons"].as_array().into_iter().flatten() {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            escape(&value_text(&r["kind"])),
            escape(&value_text(&r["severity"])),
            r["count"]
        );
    }
    b.push_str("</table>\n<p>Every issue, with its file, line and field, is in <code>dry-run.json</code> beside this report.</p>\n");
    matching_section(&mut b, report);
    page(&format!("Migration reconciliation: {project}"), &b)
}

/// Patient matching: the records merged (into a source record or a patient
/// already in Hearth, automatically or on review) and the pairs for human
/// review, pending or kept separate on review, with their scores, fields
/// and decisions (keys and lines, no names); then the decisions of
/// `review.toml` whose pair the run no longer finds.
fn matching_section(b: &mut String, report: &Value) {
    let side = |v: &Value| match v["hearth"].as_str() {
        Some(hearth) => format!("{hearth} in Hearth"),
        None if v["file"].is_null() => format!("{} [{}]", value_text(&v["table"]), value_text(&v["key"])),
        None => format!("{}:{} [{}]", value_text(&v["file"]), value_text(&v["line"]), value_text(&v["key"])),
    };
    let list = |v: &Value| v.as_array().into_iter().flatten().map(value_text).collect::<Vec<_>>().join(", ");
    let decision = |d: &Value| {
        if d.is_null() {
            return String::new();
        }
        let mut s = format!(
            "{} by {} at {} ({}:{})",
            value_text(&d["decision"]),
            value_text(&d["by"]),
            value_text(&d["at"]),
            value_text(&d["file"]),
            value_text(&d["line"])
        );
        if let Some(note) = d["note"].as_str() {
            s.push_str(&format!(": {note}"));
        }
        s
    };
    let all = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    let (pending, separate): (Vec<Value>, Vec<Value>) = all("reviews").into_iter().partition(|r| r["decision"].is_null());
    for (title, id, rows, other, decided) in [
        ("Patients merged", "merges", all("merges"), "into", "decided"),
        ("Patient pairs pending review (never merged)", "reviews", pending, "with", ""),
        ("Patient pairs kept separate on review", "separate", separate, "with", "decided"),
    ] {
        let _ = writeln!(b, "<h2>{title} ({})</h2>", rows.len());
        if rows.is_empty() {
            continue;
        }
        let head = if decided.is_empty() { String::new() } else { format!("<th>{decided}</th>") };
        let _ = writeln!(
            b,
            "<table id=\"{id}\"><tr><th>pair</th><th>record</th><th>{other}</th><th class=\"n\">score</th><th>agreed</th><th>similar</th><th>disagreed</th>{head}</tr>"
        );
        for r in rows {
            let cell = if decided.is_empty() {
                String::new()
            } else if r["decision"].is_null() {
                "<td>automatic</td>".to_owned()
            } else {
                format!("<td>{}</td>", escape(&decision(&r["decision"])))
            };
            let _ = writeln!(
                b,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td>{cell}</tr>",
                escape(&value_text(&r["pair"])),
                escape(&side(&r["record"])),
                escape(&side(&r[other])),
                r["score"],
                escape(&list(&r["agreed"])),
                escape(&list(&r["similar"])),
                escape(&list(&r["disagreed"]))
            );
        }
        b.push_str("</table>\n");
    }
    let stale = report["review"]["stale"].as_array().cloned().unwrap_or_default();
    if !stale.is_empty() {
        let _ = writeln!(b, "<h2>Review decisions without their pair ({})</h2>", stale.len());
        b.push_str("<p>This run finds no such pair (a record left the export, the pair no longer scores as a possible match, or a separate pair was merged through other matches: see its issues): these decisions were not applied.</p>\n");
        b.push_str("<table id=\"stale\"><tr><th>pair</th><th>record</th><th>with</th><th>decision</th></tr>\n");
        for d in stale {
            let _ = writeln!(
                b,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&value_text(&d["pair"])),
                escape(&side(&d["record"])),
                escape(&side(&d["with"])),
                escape(&decision(&d))
            );
        }
        b.push_str("</table>\n");
    }
}

/// A small, stable hash of a table name (each table's sample has its own stream).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn place(p: &Provenance) -> String {
    p.to_string()
}

/// The spot-check worksheet's JSON: per table, `sample` patients drawn with
/// `seed` among those with a loaded record in it, and their records there
/// with each critical field's source and loaded values.
pub fn spot_check_json(
    project: &str,
    reconciliation: &Reconciliation,
    sample: usize,
    seed: u64,
    generated: &str,
) -> Value {
    let mut by_table: BTreeMap<&str, BTreeMap<&str, Vec<&RecordCheck>>> = BTreeMap::new();
    let mut labels: BTreeMap<&str, String> = BTreeMap::new();
    for r in &reconciliation.records {
        if let Some(p) = r.patient.as_deref() {
            by_table.entry(r.table.as_str()).or_default().entry(p).or_default().push(r);
        }
        if r.patient.as_deref() == Some(r.key.as_str())
            && r.fields.iter().any(|f| f.what == crate::reconcile::Critical::Name)
        {
            let mut parts: Vec<&str> = Vec::new();
            let mut seen = BTreeSet::new();
            for f in r.fields.iter().filter(|f| f.what == crate::reconcile::Critical::Name) {
                if seen.insert(f.field.as_str()) {
                    parts.push(&f.source);
                }
            }
            let born: Vec<&str> = r
                .fields
                .iter()
                .filter(|f| f.what == crate::reconcile::Critical::Date)
                .map(|f| f.source.as_str())
                .collect();
            let mut label = parts.join(" ");
            if !born.is_empty() {
                let _ = write!(label, ", born {}", born.join(", "));
            }
            labels.insert(r.key.as_str(), label);
        }
    }
    let mut categories = Vec::new();
    for (table, patients) in by_table {
        let mut keys: Vec<&str> = patients.keys().copied().collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ fnv(table));
        let k = sample.min(keys.len());
        for i in 0..k {
            let j = rng.random_range(i..keys.len());
            keys.swap(i, j);
        }
        keys.truncate(k);
        keys.sort_unstable();
        let sampled: Vec<Value> = keys
            .iter()
            .map(|p| {
                let records: Vec<Value> = patients[p]
                    .iter()
                    .map(|r| json!({ "source": place(&r.provenance), "key": r.key, "fields": worksheet_fields(r) }))
                    .collect();
                json!({ "patient": p, "label": labels.get(p), "records": records })
            })
            .collect();
        categories.push(json!({ "table": table, "patients_with_records": patients.len(), "patients": sampled }));
    }
    json!({
        "project": project, "generated": generated, "seed": seed, "per_table": sample, "categories": categories,
    })
}

/// The fields of a record as a clinician checks them: references left out
/// (ids mean nothing on paper; the reconciliation checks them), and a row
/// field repeated on each resource of a per-column table shown once when
/// every copy agrees.
fn worksheet_fields(r: &RecordCheck) -> Vec<Value> {
    use crate::reconcile::Critical;
    let mut groups: Vec<((&str, Critical), Vec<&crate::reconcile::FieldCheck>)> = Vec::new();
    for f in r.fields.iter().filter(|f| f.what != Critical::Reference) {
        match groups.iter_mut().find(|(k, _)| *k == (f.field.as_str(), f.what)) {
            Some((_, list)) => list.push(f),
            None => groups.push(((f.field.as_str(), f.what), vec![f])),
        }
    }
    let mut out = Vec::new();
    for ((field, what), list) in groups {
        let label = match what {
            Critical::Unit => format!("{field} (unit)"),
            // The fixed code of a per-column resource (a vital sign's LOINC code).
            Critical::Code if r.fields.iter().any(|g| g.field == field && g.what == Critical::Value) => {
                format!("{field} (code)")
            }
            _ => field.to_owned(),
        };
        let same = list.iter().all(|f| f.source == list[0].source && f.loaded == list[0].loaded && f.ok == list[0].ok);
        let shown: Vec<&&crate::reconcile::FieldCheck> =
            if same { list.iter().take(1).collect() } else { list.iter().collect() };
        for f in shown {
            out.push(json!({
                "field": label, "what": what.as_str(), "resource": if same && list.len() > 1 { Value::Null } else { json!(f.resource) },
                "source": f.raw, "mapped": f.source, "loaded": f.loaded, "agrees": f.ok,
            }));
        }
    }
    out
}

/// The worksheet's page, from its JSON ([`spot_check_json`]).
pub fn spot_check_html(sheet: &Value) -> String {
    let project = value_text(&sheet["project"]);
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Spot check: {}</h1>\n<p>Generated {}; {} patients per table drawn at random (seed {}).</p>\n\
         <p class=\"phi\"><strong>Contains patient data.</strong> Keep this worksheet like the patient record; destroy printed copies after sign-off is recorded.</p>\n\
         <p>For each patient, compare each value from the legacy export (source) with the value Hearth holds (loaded). Tick the box, initial and date when every row is right; write what is wrong otherwise.</p>\n",
        escape(&project),
        escape(&value_text(&sheet["generated"])),
        sheet["per_table"],
        sheet["seed"]
    );
    for c in sheet["categories"].as_array().into_iter().flatten() {
        let table = value_text(&c["table"]);
        let _ = writeln!(
            b,
            "<h2 id=\"table-{t}\">{t} ({} of {} patients)</h2>",
            c["patients"].as_array().map_or(0, Vec::len),
            c["patients_with_records"],
            t = escape(&table)
        );
        for p in c["patients"].as_array().into_iter().flatten() {
            let label = p["label"].as_str().map(|l| format!(": {}", escape(l))).unwrap_or_default();
            let _ = writeln!(
                b,
                "<div class=\"patient\"><h3>Patient {}{label}</h3>\n<table><tr><th>source record</th><th>field</th><th>source value</th><th>mapped to</th><th>loaded value</th><th>agrees</th></tr>",
                escape(&value_text(&p["patient"]))
            );
            for r in p["records"].as_array().into_iter().flatten() {
                let fields = r["fields"].as_array().cloned().unwrap_or_default();
                let mut first = true;
                for f in &fields {
                    let cell = if first {
                        format!(
                            "<td rowspan=\"{}\">{} [{}]</td>",
                            fields.len(),
                            escape(&value_text(&r["source"])),
                            escape(&value_text(&r["key"]))
                        )
                    } else {
                        String::new()
                    };
                    first = false;
                    let ok = f["agrees"].as_bool().unwrap_or(false);
                    let _ = writeln!(
                        b,
                        "<tr>{cell}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                        escape(&value_text(&f["field"])),
                        escape(&value_text(&f["source"])),
                        escape(&if f["mapped"] == f["source"] { String::new() } else { value_text(&f["mapped"]) }),
                        escape(&f["loaded"].as_str().map_or_else(|| "(nothing stored)".to_owned(), str::to_owned)),
                        if ok { "ok" } else { "bad" },
                        if ok { "yes" } else { "NO" }
                    );
                }
            }
            b.push_str("</table>\n<p class=\"signoff\"><span class=\"box\"></span> checked &nbsp; initials <span class=\"line\"></span> &nbsp; date <span class=\"line\"></span> &nbsp; comment <span class=\"line\" style=\"min-width:20em\"></span></p></div>\n");
        }
    }
    page(&format!("Spot check: {project}"), &b)
}

/// Writes `bytes` to `path` readable and writable by its owner only (0600
/// on Unix), also when the file existed with other permissions.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

/// The files written.
#[derive(Debug, Clone)]
pub struct Written {
    /// `reconciliation.json`, `reconciliation.html`, `spot-check.json`, `spot-check.html`.
    pub files: Vec<PathBuf>,
    /// The report's JSON.
    pub report: Value,
}

/// Writes the report and the worksheet into `reports` (0600 each).
pub fn write(
    reports: &Path,
    dry_run: &Value,
    load: Option<&Value>,
    reconciliation: &Reconciliation,
    sample: usize,
    seed: u64,
    generated: &str,
) -> std::io::Result<Written> {
    std::fs::create_dir_all(reports)?;
    let report = reconciliation_json(dry_run, load, reconciliation, generated);
    let project = value_text(&dry_run["project"]);
    let sheet = spot_check_json(&project, reconciliation, sample, seed, generated);
    let files = vec![
        (reports.join("reconciliation.json"), serde_json::to_vec_pretty(&report)?),
        (reports.join("reconciliation.html"), reconciliation_html(&report).into_bytes()),
        (reports.join("spot-check.json"), serde_json::to_vec_pretty(&sheet)?),
        (reports.join("spot-check.html"), spot_check_html(&sheet).into_bytes()),
    ];
    for (path, bytes) in &files {
        write_private(path, bytes)?;
    }
    Ok(Written { files: files.into_iter().map(|(p, _)| p).collect(), report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_inline_svg_with_escaped_labels() {
        let svg = bar_chart("Reasons <all>", &[("a&b".into(), 3.0, "3".into()), ("c".into(), 0.0, "0".into())]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Reasons &lt;all&gt;") && svg.contains("a&amp;b"));
        assert_eq!(svg.matches("<rect").count(), 2);
        let svg = stacked_chart("D", &["converted", "rejected"], &[("t".into(), vec![3, 1])]);
        assert!(svg.contains("<title>converted: 3</title>") && svg.contains("<title>rejected: 1</title>"));
    }

    #[test]
    fn the_balance_counts_every_disposition() {
        let mut table =
            json!({ "file": "p.csv", "resource": "Patient", "source_records": 10, "resources": 5, "pending": 0 });
        for (i, d) in Disposition::ALL.iter().enumerate() {
            table[d.as_str()] = json!(if i == 0 { 10 - (Disposition::ALL.len() as u64 - 1) } else { 1 });
        }
        let dry = json!({ "project": "p", "tables": { "patients": table }, "issues": [
            { "kind": "orphan", "severity": "error" }, { "kind": "orphan", "severity": "error" }, { "kind": "unit-normalised", "severity": "information" }
        ], "timings": [{ "stage": "extract", "seconds": 0.5 }] });
        let report = reconciliation_json(&dry, None, &Reconciliation::default(), "now");
        assert_eq!(report["tables"]["patients"]["unaccounted"], 0);
        assert_eq!(report["totals"]["unaccounted"], 0);
        assert_eq!(report["balanced"], true);
        assert_eq!(report["reasons"][0], json!({ "kind": "orphan", "severity": "error", "count": 2 }));
        assert_eq!(report["timings"].as_array().map(Vec::len), Some(2), "extract and reconcile");
        assert_eq!(report["proved"], false, "nothing loaded");
        assert_eq!(report["unreconciled"][0]["table"], "patients", "6 converted, none reconciled");
        assert_eq!(report["unreconciled"][0]["reconciled"], 0);
        let mut dry = dry;
        dry["tables"]["patients"]["source_records"] = json!(11);
        let report = reconciliation_json(&dry, None, &Reconciliation::default(), "now");
        assert_eq!(report["tables"]["patients"]["unaccounted"], 1);
        assert_eq!(report["balanced"], false);
        let html = reconciliation_html(&report);
        assert!(html.contains("1 unaccounted") && html.contains("NOT BALANCED"), "{html}");
    }
}
