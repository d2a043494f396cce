//! `hearth migrate`, run as a user would: `sample` writes a messy legacy
//! export, `init --preset legacy-csv` writes a project that maps it, and the
//! project loads and reads every table through the CSV source with the
//! expected row counts, provenance and planted defects.

use migrate::project::{self, ColumnType};
use migrate::source::{Provenance, Record, Source};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hearth");

fn hearth(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let output = Command::new(BIN).args(args).current_dir(cwd).output().expect("hearth runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every row of every table, keyed by table; panics on a bad row (the
/// sample's defects are all in the data, none in the CSV syntax).
fn read_all(source: &dyn Source) -> BTreeMap<String, Vec<Record>> {
    let mut out = BTreeMap::new();
    for table in source.tables() {
        let rows: Vec<Record> = source
            .rows(&table)
            .unwrap_or_else(|e| panic!("{table}: {e}"))
            .map(|row| row.unwrap_or_else(|e| panic!("bad row: {e}")))
            .collect();
        out.insert(table, rows);
    }
    out
}

fn at_line<'a>(records: &'a [Record], file: &str, line: u64) -> &'a Record {
    records
        .iter()
        .find(|r| r.provenance == Provenance::FileLine { file: file.into(), line })
        .unwrap_or_else(|| panic!("no record at {file}:{line}"))
}

#[test]
fn sample_and_legacy_csv_preset_make_a_project_whose_tables_all_read() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (ok, stdout, stderr) = hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir);
    assert!(ok, "init: {stderr}");
    assert!(stdout.contains("migration.toml"), "{stdout}");
    let (ok, stdout, stderr) =
        hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "12", "--seed", "5"], dir);
    assert!(ok, "sample: {stderr}");
    assert!(stdout.contains("12 patients"), "{stdout}");

    let proj = dir.join("proj");
    let project = project::load(&proj).unwrap_or_else(|e| panic!("{e}"));
    let source = project.csv_source(&proj, "legacy").expect("a CSV source named legacy");
    let tables = read_all(&source);
    assert_eq!(
        tables.keys().map(String::as_str).collect::<Vec<_>>(),
        ["allergies", "encounters", "lab_results", "medications", "notes", "patients", "problems", "vitals"]
    );

    // Row counts match the manifest, and the patients are 12 plus the duplicate.
    let manifest: toml::Table = std::fs::read_to_string(proj.join("export/sample-manifest.toml"))
        .expect("manifest")
        .parse()
        .expect("manifest is TOML");
    for (name, decl) in &project.tables {
        let expected = manifest["rows"][&decl.file].as_integer().expect("count");
        assert_eq!(tables[name].len() as i64, expected, "{name}");
        // Every header column is mapped or declared, and every declared column exists.
        let header: HashSet<&str> = tables[name][0].columns.iter().map(String::as_str).collect();
        let declared: HashSet<&str> = decl.columns.keys().map(String::as_str).collect();
        assert_eq!(header, declared, "{name}: header and mapping differ");
    }
    assert_eq!(tables["patients"].len(), 13);

    // Windows-1252: accents decoded; provenance is file and line.
    let first = &tables["patients"][0];
    assert_eq!(first.provenance, Provenance::FileLine { file: "patients.csv".into(), line: 2 });
    assert_eq!((first.get("first_name"), first.get("last_name")), (Some("José"), Some("Müller")));
    assert_eq!(first.get("patient_id"), Some("P00001"));
    // Semicolons: the problems file splits into its seven columns.
    let problem = &tables["problems"][0];
    assert_eq!(problem.values.len(), 7);
    assert_eq!(problem.get("patient_id"), Some("P00001"));
    assert_eq!(problem.provenance.to_string(), "problems.csv:2");
    // The byte-order mark does not leak into the first column name.
    assert_eq!(tables["encounters"][0].columns[0], "encounter_id");
    // Every record's line is its position (no field spans lines).
    for (name, records) in &tables {
        for (i, r) in records.iter().enumerate() {
            let Provenance::FileLine { line, .. } = &r.provenance else { panic!("{name}: not a file line") };
            assert_eq!(*line, i as u64 + 2, "{name}");
        }
    }

    // Every date reads with the formats the project declares (the blank
    // required one excepted).
    for (name, decl) in &project.tables {
        for (column, c) in &decl.columns {
            if !matches!(c.kind, ColumnType::Date | ColumnType::Datetime) {
                continue;
            }
            let formats = project.date_formats(decl, c);
            for r in &tables[name] {
                let value = r.get(column).expect("column");
                if value.is_empty() {
                    continue;
                }
                assert!(migrate::dates::read_any(&formats, value).is_some(), "{}: {column} {value:?}", r.provenance);
            }
        }
    }

    // Each planted defect is where the manifest says.
    let patient_ids: HashSet<&str> = tables["patients"].iter().filter_map(|r| r.get("patient_id")).collect();
    let by_file: BTreeMap<&str, &str> = project.tables.iter().map(|(n, d)| (d.file.as_str(), n.as_str())).collect();
    let defects = manifest["defects"].as_array().expect("defects");
    let mut kinds = HashSet::new();
    for d in defects {
        let kind = d["kind"].as_str().expect("kind");
        kinds.insert(kind);
        let file = d["file"].as_str().expect("file");
        let line = d["line"].as_integer().expect("line") as u64;
        if line == 0 {
            continue;
        }
        let table = by_file[file];
        let r = at_line(&tables[table], file, line);
        let column = d["column"].as_str().expect("column");
        let value = r.get(column).expect("the defect's column exists");
        match kind {
            "orphan" => assert!(!patient_ids.contains(value), "{value}"),
            "blank-required" => {
                assert_eq!(value, "");
                assert!(project.tables[table].columns[column].required);
            }
            "impossible-vital" => assert_eq!(value, "986"),
            "unit-variant" => {
                assert_eq!(value, "mg/dl");
                assert_eq!(project.unit_maps["ucum"].get("mg/dl").map(String::as_str), Some("mg/dL"));
            }
            "unmapped-code" => {
                let map = project.tables[table].columns[column].value_map.as_ref().map(|m| m.get_ref().clone());
                let mapped = map.is_some_and(|m| project.value_maps[&m].values.contains_key(value));
                assert!(!mapped, "{value} has a mapping");
            }
            "duplicate-patient" => {
                let original = &tables["patients"][1];
                assert_eq!(r.get("birth_date"), original.get("birth_date"));
                assert_eq!(r.get("last_name"), original.get("last_name"));
                assert_ne!(r.get("first_name"), original.get("first_name"));
                assert_ne!(r.get("patient_id"), original.get("patient_id"));
            }
            "several-allergies" => {
                assert_eq!(tables["allergies"].iter().filter(|a| a.get("patient_id") == Some(value)).count(), 3);
            }
            "several-vitals-sets" => {
                assert_eq!(tables["vitals"].iter().filter(|v| v.get("encounter_id") == Some(value)).count(), 3);
            }
            "free-text-medication" => {
                assert_eq!(value, "");
                assert!(!r.get("drug_name").unwrap_or_default().is_empty());
            }
            "encoding" => assert_eq!(value, "José"),
            other => panic!("unexpected defect kind {other}"),
        }
    }
    for kind in ["encoding", "delimiter", "bom", "date-formats", "duplicate-patient", "orphan", "blank-required"] {
        assert!(kinds.contains(kind), "{kind} not planted");
    }
    // The notes index points at TXT files that exist.
    for note in &tables["notes"] {
        let file = note.get("file").expect("file");
        assert!(proj.join("export").join(file).is_file(), "{file}");
    }
}

#[test]
fn the_same_seed_writes_the_same_export() {
    let tmp = tempfile::tempdir().expect("tmp");
    for out in ["a", "b"] {
        let (ok, _, stderr) =
            hearth(&["migrate", "sample", "--out", out, "--patients", "4", "--seed", "9"], tmp.path());
        assert!(ok, "{stderr}");
    }
    for file in ["patients.csv", "lab_results.csv", "vitals.csv", "sample-manifest.toml"] {
        let a = std::fs::read(tmp.path().join("a").join(file)).expect("a");
        let b = std::fs::read(tmp.path().join("b").join(file)).expect("b");
        assert_eq!(a, b, "{file}");
    }
}

#[test]
fn init_refuses_to_overwrite_and_names_unknown_presets() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ok, _, stderr) = hearth(&["migrate", "init", "p", "--preset", "synthea-csv"], tmp.path());
    assert!(ok, "{stderr}");
    let project = project::load(&tmp.path().join("p")).unwrap_or_else(|e| panic!("{e}"));
    assert!(project.tables.contains_key("observations") && project.tables.contains_key("payer_transitions"));
    let (ok, _, stderr) = hearth(&["migrate", "init", "p"], tmp.path());
    assert!(!ok);
    assert!(stderr.contains("exists already"), "{stderr}");
    let (ok, _, stderr) = hearth(&["migrate", "init", "q", "--preset", "excel"], tmp.path());
    assert!(!ok);
    assert!(stderr.contains("no preset named \"excel\""), "{stderr}");
    let (ok, _, stderr) = hearth(&["migrate", "sample", "--out", "s", "--patients", "1"], tmp.path());
    assert!(!ok);
    assert!(stderr.contains("at least 2 patients"), "{stderr}");
}

#[test]
fn check_reads_every_table_and_reports_bad_rows_and_bad_mappings() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "p"], dir).0);
    assert!(hearth(&["migrate", "sample", "--out", "p/export", "--patients", "3"], dir).0);
    let (ok, stdout, stderr) = hearth(&["migrate", "check", "p"], dir);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("legacy.patients: 4 rows read, 0 unreadable"), "{stdout}");
    assert_eq!(stdout.lines().count(), 8, "{stdout}");

    // A short row is reported with its file, line and column; reading goes on.
    let labs = dir.join("p/export/lab_results.csv");
    let mut text = std::fs::read_to_string(&labs).expect("labs");
    let line = text.lines().count() + 1;
    text.push_str("X1,P00001,E1,GLU,Glucose,1\r\n");
    std::fs::write(&labs, text).expect("write");
    let output = Command::new(BIN).args(["migrate", "check", "p"]).current_dir(dir).output().expect("runs");
    assert_eq!(output.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected =
        format!("legacy.lab_results: lab_results.csv:{line}: column units: 6 fields where the header has 10");
    assert!(stdout.contains(&expected), "{stdout}");
    assert!(stdout.contains("legacy.vitals:"), "the other tables are still read: {stdout}");

    // A mapping error names the file, line and field.
    let toml = dir.join("p/migration.toml");
    let text = std::fs::read_to_string(&toml).expect("toml").replace("value_map = \"sex\"", "value_map = \"gender\"");
    std::fs::write(&toml, text).expect("write");
    let (ok, _, stderr) = hearth(&["migrate", "check", "p"], dir);
    assert!(!ok);
    assert!(
        stderr.contains("migration.toml:51:")
            && stderr.contains("tables.patients.columns.sex.value_map: no value map \"gender\""),
        "{stderr}"
    );
}

/// `migrate run --dry-run` on the sample: every table balances, each planted
/// defect is reported at its file and line with its disposition, nothing of
/// the first patient's allergies or the first visit's vitals sets is lost,
/// and every resource that would load passes Hearth's validator.
#[test]
fn dry_run_converts_validates_and_accounts_for_every_record() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir).0);
    let (ok, _, stderr) =
        hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "12", "--seed", "5"], dir);
    assert!(ok, "{stderr}");

    // --until validate without --dry-run stops before loading too.
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--until", "validate", "--data-dir", "data"], dir);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("nothing was written to a store"), "{stdout}");
    assert!(!dir.join("data").exists(), "no store was even opened");

    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--dry-run"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("nothing was written to a store"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("proj/reports/dry-run.json")).expect("report"))
            .expect("report is JSON");
    assert_eq!(report["until"], "validate");
    let manifest: toml::Table = std::fs::read_to_string(dir.join("proj/export/sample-manifest.toml"))
        .expect("manifest")
        .parse()
        .expect("manifest is TOML");

    // Every table balances: source = converted + rejected + quarantined.
    let tables = report["tables"].as_object().expect("tables");
    assert_eq!(tables.len(), 8);
    for (name, t) in tables {
        let file = t["file"].as_str().expect("file");
        let source = t["source_records"].as_i64().expect("count");
        assert_eq!(source, manifest["rows"][file].as_integer().expect("rows"), "{name}");
        let sum: i64 = ["converted", "rejected", "quarantined"].iter().map(|k| t[k].as_i64().expect("n")).sum();
        assert_eq!(sum, source, "{name}");
        assert_eq!(t["unaccounted"], 0, "{name}");
        let line = format!("{name}: {source} source records:");
        assert!(stdout.contains(&line), "{line} in {stdout}");
    }
    assert_eq!(report["totals"]["unaccounted"], 0);

    // Every rejection and quarantine has its reason with file, line and field.
    let issues = report["issues"].as_array().expect("issues");
    for i in issues {
        if i["disposition"] != "converted" && i["severity"] == "error" {
            assert!(i["file"].is_string() && i["line"].is_u64() && i["field"].is_string(), "{i}");
        }
    }
    for (name, t) in tables {
        for disposition in ["rejected", "quarantined"] {
            let records: HashSet<(&str, u64)> = issues
                .iter()
                .filter(|i| i["table"] == name.as_str() && i["disposition"] == disposition && i["severity"] == "error")
                .map(|i| (i["file"].as_str().unwrap_or_default(), i["line"].as_u64().unwrap_or_default()))
                .collect();
            assert_eq!(records.len() as i64, t[disposition].as_i64().expect("n"), "{name} {disposition}");
        }
    }

    // Only the planted defects, and the rows that refer to a held or
    // rejected row, are held or rejected: the sample has no other error.
    for i in issues.iter().filter(|i| i["severity"] == "error") {
        let kind = i["kind"].as_str().unwrap_or_default();
        assert!(["orphan", "impossible-value", "required", "unresolved-reference"].contains(&kind), "{i}");
    }

    // Each planted defect: reported at its line, field and disposition.
    let expected: BTreeMap<&str, (&str, &str)> = [
        ("orphan", ("orphan", "quarantined")),
        ("impossible-vital", ("impossible-value", "quarantined")),
        ("blank-required", ("required", "rejected")),
        ("unmapped-code", ("unmapped-code", "")),
        ("unit-variant", ("unit-normalised", "converted")),
        ("free-text-medication", ("text-only", "converted")),
        ("duplicate-patient", ("possible-duplicate", "converted")),
    ]
    .into_iter()
    .collect();
    let mut checked = HashSet::new();
    for d in manifest["defects"].as_array().expect("defects") {
        let kind = d["kind"].as_str().expect("kind");
        let Some((issue_kind, disposition)) = expected.get(kind) else { continue };
        let file = d["file"].as_str().expect("file");
        let line = d["line"].as_integer().expect("line") as u64;
        let column = d["column"].as_str().expect("column");
        let found = issues
            .iter()
            .find(|i| i["file"] == file && i["line"] == line && i["kind"] == *issue_kind)
            .unwrap_or_else(|| panic!("{kind} at {file}:{line} not reported"));
        if kind != "duplicate-patient" {
            assert_eq!(found["field"], column, "{kind}");
        }
        if !disposition.is_empty() {
            assert_eq!(found["disposition"], *disposition, "{kind} at {file}:{line}");
        }
        assert!(stdout.contains(&format!("{file}:{line} ")), "{kind}: {file}:{line} not printed");
        checked.insert(kind);
    }
    assert_eq!(checked.len(), expected.len(), "{checked:?}");
    // The unmapped problem code is kept (converted), the unmapped lab code
    // rides with its orphan row (quarantined): neither is dropped.
    assert!(issues.iter().any(|i| i["kind"] == "unmapped-code" && i["disposition"] == "converted"));

    // The resources themselves (the same run through the library).
    let proj = dir.join("proj");
    let project = project::load(&proj).unwrap_or_else(|e| panic!("{e}"));
    let run = migrate::dryrun::run(&project, &proj, migrate::dryrun::Stage::Validate, &migrate::dryrun::today())
        .expect("dry run");
    assert_eq!(run.resources.len() as u64, report["totals"]["resources"].as_u64().expect("resources"));
    let patient = format!("Patient/{}", migrate::convert::resource_id("patients", "P00001", ""));
    let allergies: Vec<_> = run
        .resources
        .iter()
        .filter(|o| o.resource["resourceType"] == "AllergyIntolerance" && o.resource["patient"]["reference"] == patient)
        .collect();
    assert_eq!(allergies.len(), 3, "all three allergies of the first patient");
    let encounter = format!("Encounter/{}", migrate::convert::resource_id("encounters", "E0000001", ""));
    let vitals: Vec<_> = run
        .resources
        .iter()
        .filter(|o| o.table == "vitals" && o.resource["encounter"]["reference"] == encounter)
        .collect();
    let sets: HashSet<&str> = vitals.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(sets.len(), 3, "all three vitals sets of the first visit");
    assert!(vitals.len() >= 3 * 5, "each set's measurements: {}", vitals.len());
    let ids: HashSet<String> = run.resources.iter().map(|o| o.resource["id"].to_string()).collect();
    assert_eq!(ids.len(), run.resources.len(), "ids are unique");
    for o in &run.resources {
        let issues = fhir::validation::validate(&o.resource);
        let errors: Vec<_> = issues
            .iter()
            .filter(|i| matches!(i.severity, fhir::outcome::Severity::Error | fhir::outcome::Severity::Fatal))
            .collect();
        assert!(errors.is_empty(), "{} {}: {errors:?}", o.table, o.provenance);
    }
    // A rerun derives the same ids.
    let again = migrate::dryrun::run(&project, &proj, migrate::dryrun::Stage::Validate, &migrate::dryrun::today())
        .expect("rerun");
    let ids_again: HashSet<String> = again.resources.iter().map(|o| o.resource["id"].to_string()).collect();
    assert_eq!(ids, ids_again);

    // --until convert: converted and rejected only.
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--dry-run", "--until", "convert"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("proj/reports/dry-run.json")).expect("report")).expect("JSON");
    assert_eq!(report["until"], "convert");
    assert_eq!(report["totals"]["quarantined"], 0);
    assert_eq!(report["totals"]["unaccounted"], 0);
    let (ok, _, stderr) = hearth(&["migrate", "run", "proj", "--dry-run", "--until", "reconcile"], dir);
    assert!(!ok && stderr.contains("not built yet"), "{stderr}");
}

/// Per table: (records, created, updated, unchanged) from a load's report.
fn load_counts(dir: &Path) -> BTreeMap<String, [u64; 4]> {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("proj/reports/load.json")).expect("load report")).expect("JSON");
    report["tables"]
        .as_object()
        .expect("tables")
        .iter()
        .map(|(t, c)| {
            let n = |k: &str| c[k].as_u64().expect("count");
            (t.clone(), [n("records"), n("created"), n("updated"), n("unchanged")])
        })
        .collect()
}

fn load(dir: &Path, data: &str) -> BTreeMap<String, [u64; 4]> {
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--data-dir", data, "--quiet", "--batch", "5"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    load_counts(dir)
}

/// `migrate run` loads through the Service: every converted record's
/// resources and a Provenance per record; a rerun writes nothing; a load
/// killed (SIGKILL) at several points and run again ends with exactly what
/// an uninterrupted load stores; a changed and an added source row are all
/// a later run writes (a delta).
#[test]
fn load_is_idempotent_resumable_and_applies_deltas() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir).0);
    assert!(hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "60", "--seed", "11"], dir).0);

    // An uninterrupted load, then a rerun that finds everything in place.
    let (ok, stdout, _) = hearth(&["migrate", "status", "proj"], dir);
    assert!(ok && stdout.contains("not run yet") && stdout.contains("not loaded yet"), "{stdout}");
    let first = load(dir, "whole");
    let (ok, stdout, _) = hearth(&["migrate", "status", "proj"], dir);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("unaccounted") && stdout.contains("0 read back different"), "{stdout}");
    assert!(stdout.contains(&format!("  patients: {} created", first["patients"][1])), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("proj/reports/load.json")).expect("load report")).expect("JSON");
    assert_eq!(report["mismatched"].as_array().map(Vec::len), Some(0), "every resource reads back as converted");
    for (table, t) in report["tables"].as_object().expect("tables") {
        assert_eq!(t["verified"], t["created"], "{table}: each created resource was read back");
    }
    let created: BTreeMap<String, u64> = first.iter().map(|(t, c)| (t.clone(), c[1])).collect();
    assert!(first.values().all(|c| c[2] == 0 && c[3] == 0), "{first:?}");
    assert_eq!(created["patients"], first["patients"][0], "one Patient per converted patient row");
    assert_eq!(created["provenance"], first.iter().filter(|(t, _)| *t != "provenance").map(|(_, c)| c[0]).sum::<u64>());
    assert!(created["vitals"] > first["vitals"][0], "a vitals row makes several Observations, none dropped");
    let again = load(dir, "whole");
    for (table, c) in &again {
        assert_eq!((c[1], c[2], c[3]), (0, 0, created[table]), "rerun of {table}");
    }

    // Killed at several points, then resumed.
    for delay in [50u64, 300, 600] {
        let mut child = Command::new(BIN)
            .args(["migrate", "run", "proj", "--data-dir", "killed", "--quiet", "--batch", "5"])
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        // The dry-run summary ends with the vitals table; loading follows.
        for line in lines.by_ref() {
            if line.expect("line").starts_with("vitals: ") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(delay));
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
    let resumed = load(dir, "killed");
    let written: u64 = resumed.values().map(|c| c[1]).sum();
    let total: u64 = created.values().sum();
    assert!(written < total, "the kills left part of the load done ({written} of {total} written on resume)");
    assert!(written > 0, "the kills came before the load ended ({total} resources)");
    let check = load(dir, "killed");
    for (table, c) in &check {
        assert_eq!((c[1], c[2], c[3]), (0, 0, created[table]), "after kills and resume, {table} holds what an uninterrupted load does");
    }

    // A delta: one lab result changed, one added.
    let labs_file = dir.join("proj/export/lab_results.csv");
    let labs = std::fs::read_to_string(&labs_file).expect("labs");
    let mut rows: Vec<String> = labs.lines().map(str::to_string).collect();
    // Only the test name is ever quoted (it may hold a comma): the value is
    // the fifth field from the end.
    let fields = |row: &str| -> Vec<String> { row.rsplitn(6, ',').map(str::to_string).collect() };
    let join = |mut f: Vec<String>| -> String {
        f.reverse();
        f.join(",")
    };
    let numeric = (1..rows.len())
        .find(|&i| fields(&rows[i])[4].parse::<f64>().is_ok() && !rows[i].contains("L9999999"))
        .expect("a numeric result");
    let mut changed = fields(&rows[numeric]);
    changed[4] = format!("{}", changed[4].parse::<f64>().expect("number") + 1.0);
    rows[numeric] = join(changed);
    let added = rows[numeric].replacen(&rows[numeric][..8].to_string(), "L9999999", 1);
    rows.push(added);
    std::fs::write(&labs_file, rows.join("\n") + "\n").expect("write labs");
    let delta = load(dir, "whole");
    assert_eq!(delta["lab_results"][1..], [1, 1, created["lab_results"] - 1], "{delta:?}");
    assert_eq!(delta["provenance"][1], 1, "the added row's provenance");
    for (table, c) in delta.iter().filter(|(t, _)| *t != "lab_results" && *t != "provenance") {
        assert_eq!((c[1], c[2]), (0, 0), "{table} is untouched by the delta");
    }
}

/// `migrate rollback` deletes what a load wrote and is still as loaded (a
/// deleted version each, with the records' Provenance), keeps a resource
/// changed in Hearth since (with its record's Provenance) and says so, and
/// a second rollback finds nothing more to delete.
#[test]
fn rollback_deletes_what_was_loaded_and_keeps_what_changed_since() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir).0);
    assert!(hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "8", "--seed", "3"], dir).0);
    let loaded = load(dir, "data");
    let total: u64 = loaded.values().map(|c| c[1]).sum();

    // A clinician corrects one patient in Hearth after the load.
    let id = migrate::convert::resource_id("patients", "P00002", "");
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {"resourceType": "Patient", "id": id, "name": [{"family": "Corrected"}]},
        "request": {"method": "PUT", "url": format!("Patient/{id}")}
    }]});
    std::fs::write(dir.join("fix.json"), bundle.to_string()).expect("bundle");
    let (ok, stdout, stderr) = hearth(&["import", "fix.json", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");

    let (ok, stdout, stderr) = hearth(&["migrate", "rollback", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(!ok, "a kept resource makes the rollback exit non-zero: {stderr}");
    assert!(stdout.contains(&format!("kept Patient/{id}")), "{stdout}");
    assert!(stdout.contains(&format!("rolled back: {} resources deleted, 1 kept", total - 2)), "{stdout}");

    let (_, stdout, _) = hearth(&["migrate", "rollback", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(stdout.contains(&format!("rolled back: 0 resources deleted, 1 kept (changed since loaded), {} were not stored", total - 2)), "{stdout}");
}

/// Every `reference` string anywhere in a resource.
fn references(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("reference", serde_json::Value::String(r)) => out.push(r.clone()),
                    _ => references(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// The synthea-csv preset on an export in the Synthea CSV layout (what
/// `migrate sample --layout synthea-csv` writes): the dry run reads every
/// one of the 17 tables, converts and validates every row (nothing
/// rejected, held or unaccounted), codes, units and values arrive in their
/// standard systems, every reference resolves; the load reads everything
/// back as converted and a rerun writes nothing.
#[test]
fn synthea_csv_export_converts_every_table_and_loads_idempotently() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "synthea-csv"], dir).0);
    let (ok, stdout, stderr) = hearth(
        &["migrate", "sample", "--layout", "synthea-csv", "--out", "proj/csv", "--patients", "5", "--seed", "1", "--quiet"],
        dir,
    );
    assert!(ok && stdout.contains("17 files"), "{stderr}\n{stdout}");
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--dry-run"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("proj/reports/dry-run.json")).expect("report")).expect("JSON");
    let tables = report["tables"].as_object().expect("tables");
    assert_eq!(tables.len(), migrate::synthea_sample::HEADERS.len());
    for (file, _) in migrate::synthea_sample::HEADERS {
        let rows = std::fs::read_to_string(dir.join("proj/csv").join(file)).expect("file").lines().count() as u64 - 1;
        let (name, t) = tables.iter().find(|(_, t)| t["file"] == file).unwrap_or_else(|| panic!("{file} not mapped"));
        assert_eq!(t["source_records"], rows, "{name}");
        assert_eq!(t["converted"], rows, "{name}: {t}");
        assert_eq!((t["rejected"].as_u64(), t["quarantined"].as_u64(), t["unaccounted"].as_i64()), (Some(0), Some(0), Some(0)));
    }
    assert!(tables["observations"]["source_records"].as_u64() > Some(1000), "a Synthea-like history");
    let errors: Vec<&serde_json::Value> =
        report["issues"].as_array().expect("issues").iter().filter(|i| i["severity"] != "information").collect();
    assert!(errors.is_empty(), "{errors:?}");

    // What the records become (the same conversion, in process).
    let project = migrate::project::load(&dir.join("proj")).expect("project");
    let run = migrate::dryrun::run(&project, &dir.join("proj"), migrate::dryrun::Stage::Validate, &migrate::dryrun::today())
        .expect("run");
    let of = |table: &'static str| run.resources.iter().filter(move |o| o.table == table).map(|o| &o.resource);
    let ids: HashSet<String> =
        run.resources.iter().map(|o| format!("{}/{}", o.resource["resourceType"].as_str().unwrap_or(""), o.resource["id"].as_str().unwrap_or(""))).collect();
    let mut refs = Vec::new();
    for o in &run.resources {
        references(&o.resource, &mut refs);
    }
    assert!(refs.len() > run.resources.len(), "resources refer to their patient, encounter, ...");
    for r in &refs {
        assert!(ids.contains(r), "reference {r} resolves to nothing converted");
    }
    let systolic = of("observations").find(|o| o["code"]["coding"][0]["code"] == "8480-6").expect("a systolic pressure");
    assert_eq!(systolic["code"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(systolic["valueQuantity"]["system"], "http://unitsofmeasure.org");
    assert_eq!(systolic["valueQuantity"]["code"], "mm[Hg]");
    assert!(systolic["valueQuantity"]["value"].is_number(), "{systolic}");
    assert_eq!(systolic["category"][0]["coding"][0]["code"], "vital-signs");
    assert!(systolic["effectiveDateTime"].as_str().is_some_and(|t| t.len() == 20 && t.ends_with('Z')), "{systolic}");
    assert!(systolic["encounter"]["reference"].as_str().is_some_and(|r| r.starts_with("Encounter/")));
    let smoking = of("observations").find(|o| o["code"]["coding"][0]["code"] == "72166-2").expect("a smoking status");
    assert!(smoking["valueString"].as_str().is_some_and(|v| v.ends_with("(finding)")) && smoking.get("valueQuantity").is_none());
    let med = of("medications").next().expect("a medication");
    assert_eq!(med["medicationCodeableConcept"]["coding"][0]["system"], "http://www.nlm.nih.gov/research/umls/rxnorm");
    assert!(["active", "stopped"].contains(&med["status"].as_str().unwrap_or("")), "{med}");
    let shot = of("immunizations").next().expect("an immunization");
    assert_eq!(shot["vaccineCode"]["coding"][0]["system"], "http://hl7.org/fhir/sid/cvx");
    assert_eq!(shot["status"], "completed");
    let condition = of("conditions").find(|c| c.get("abatementDateTime").is_some()).expect("a resolved condition");
    assert_eq!(condition["code"]["coding"][0]["system"], "http://snomed.info/sct");
    assert_eq!(condition["clinicalStatus"]["coding"][0]["code"], "resolved");
    let patient = of("patients").next().expect("a patient");
    assert!(["male", "female"].contains(&patient["gender"].as_str().unwrap_or("")));
    let ssn = patient["identifier"].as_array().expect("identifiers").iter().any(|i| i["system"] == "http://hl7.org/fhir/sid/us-ssn");
    assert!(ssn, "{patient}");
    let claim = of("claims").next().expect("a claim");
    assert_eq!(claim["insurance"][0]["sequence"], 1);
    assert!(claim["insurer"]["reference"].as_str().is_some_and(|r| r.starts_with("Organization/")));
    let coverage = of("payer_transitions").next().expect("a coverage");
    assert!(coverage["payor"][0]["reference"].as_str().is_some_and(|r| r.starts_with("Organization/")), "{coverage}");

    // Load, every resource read back as converted; a rerun writes nothing.
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let loaded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("proj/reports/load.json")).expect("load report")).expect("JSON");
    assert_eq!(loaded["mismatched"].as_array().map(Vec::len), Some(0));
    let first = load_counts(dir);
    assert_eq!(first.len(), tables.len() + 1, "every table and the provenance: {first:?}");
    for (table, c) in &first {
        assert!(c[1] > 0 && c[2] == 0 && c[3] == 0, "{table}: {c:?}");
        assert_eq!(loaded["tables"][table]["verified"], c[1], "{table}");
    }
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    for (table, c) in load_counts(dir) {
        assert_eq!((c[1], c[2], c[3]), (0, 0, first[&table][1]), "rerun of {table}");
    }
}
