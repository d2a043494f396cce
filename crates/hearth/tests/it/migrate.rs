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
    assert_eq!(tables["patients"].len(), 14, "12 patients, the duplicate and the near duplicate");

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
            "near-duplicate-patient" => {
                let original = &tables["patients"][0];
                assert_eq!(r.get("last_name"), original.get("last_name"));
                assert_eq!(r.get("first_name"), original.get("first_name"));
                assert_eq!(r.get("sex"), original.get("sex"));
                assert_ne!(r.get("birth_date"), original.get("birth_date"));
                assert_ne!(r.get("address"), original.get("address"));
                assert_ne!(r.get("phone"), original.get("phone"));
            }
            "entered-in-error" => {
                assert_eq!(value, "E");
                let rules = &project.tables[table].exclude;
                assert!(rules.iter().any(|x| x.column.get_ref() == column && x.values.get_ref().iter().any(|v| v == "E")));
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
            "document-mismatch" => assert!(value.starts_with("scans/") && value.ends_with(".pdf"), "{value}"),
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
    assert!(stdout.contains("legacy.patients: 5 rows read, 0 unreadable"), "{stdout}");
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
        let sum: i64 = ["converted", "rejected", "quarantined", "merged", "excluded"]
            .iter()
            .map(|k| t[k].as_i64().expect("n"))
            .sum();
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
        assert!(["orphan", "impossible-value", "required", "unresolved-reference", "document"].contains(&kind), "{i}");
    }

    // Each planted defect: reported at its line, field and disposition.
    let expected: BTreeMap<&str, (&str, &str)> = [
        ("orphan", ("orphan", "quarantined")),
        ("impossible-vital", ("impossible-value", "quarantined")),
        ("blank-required", ("required", "rejected")),
        ("unmapped-code", ("unmapped-code", "")),
        ("unit-variant", ("unit-normalised", "converted")),
        ("free-text-medication", ("text-only", "converted")),
        ("duplicate-patient", ("merged-duplicate", "merged")),
        ("near-duplicate-patient", ("possible-duplicate", "converted")),
        ("entered-in-error", ("excluded", "excluded")),
        ("document-mismatch", ("document", "rejected")),
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
        if !kind.contains("duplicate") {
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
    assert!(!ok && stderr.contains("writes to a store"), "{stderr}");
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
    // The load into a new store deferred the search indexes and built them
    // at its end: none is left for the next open to build.
    {
        let db = crate::open_database(&dir.join("whole"));
        let left: i64 = db.query_row("SELECT count(*) FROM deferred_index", [], |r| r.get(0)).expect("deferred");
        assert_eq!(left, 0, "every deferred index was built");
        for index in ["idx_token_search", "idx_reference_search", "idx_date_search", "idx_patient_token_search"] {
            let found: i64 = db
                .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?1", [index], |r| r.get(0))
                .expect("schema");
            assert_eq!(found, 1, "{index} exists after the load");
        }
    }
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

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("JSON")
}

/// Readable and writable by the owner only (the reports hold patient data).
fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
}

/// `migrate run --until reconcile` loads, reconciles every loaded record's
/// critical fields with the source, and writes the report: it balances to
/// zero unaccounted records (each table's source records are the sum of
/// every disposition), the page carries the SVG charts and every table, and
/// the spot-check worksheet holds the drawn patients with their source and
/// loaded values side by side; the same seed draws the same patients.
#[test]
fn reconcile_writes_a_report_that_balances_and_a_spot_check_worksheet() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir).0);
    assert!(hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "12", "--seed", "5"], dir).0);
    let (ok, stdout, stderr) = hearth(
        &["migrate", "run", "proj", "--data-dir", "data", "--quiet", "--until", "reconcile", "--sample", "3", "--seed", "9"],
        dir,
    );
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("reconciled: ") && stdout.contains(", 0 unaccounted;"), "{stdout}");
    let reports = dir.join("proj/reports");
    for name in ["reconciliation.json", "reconciliation.html", "spot-check.json", "spot-check.html"] {
        assert_private(&reports.join(name));
    }

    // The balance: per table and in total, source records = the sum of the dispositions.
    let report = read_json(&reports.join("reconciliation.json"));
    let dry = read_json(&reports.join("dry-run.json"));
    let dispositions: Vec<String> =
        report["dispositions"].as_array().expect("dispositions").iter().map(|d| d.as_str().expect("name").to_owned()).collect();
    assert!(dispositions.len() >= 3 && dispositions[..3] == ["converted", "rejected", "quarantined"], "{dispositions:?}");
    let tables = report["tables"].as_object().expect("tables");
    assert_eq!(tables.len(), 8);
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for (name, t) in tables {
        assert_eq!(t["unaccounted"], 0, "{name}");
        let source = t["source_records"].as_u64().expect("n");
        assert_eq!(source, dry["tables"][name]["source_records"].as_u64().expect("n"), "{name}");
        let sum: u64 = dispositions.iter().map(|d| t["dispositions"][d].as_u64().expect("n")).sum();
        assert_eq!(sum, source, "{name}: every record has one disposition");
        assert!(t["balance"].as_str().expect("balance").ends_with("+ 0 unaccounted"), "{name}");
        for d in &dispositions {
            *totals.entry(d.clone()).or_default() += t["dispositions"][d].as_u64().expect("n");
        }
        *totals.entry("source_records".into()).or_default() += source;
        // Every converted record loaded and was reconciled, field by field.
        let r = &t["reconcile"];
        assert_eq!(r["records"], t["dispositions"]["converted"], "{name}");
        assert_eq!(r["mismatched"], 0, "{name}");
        assert!(r["fields"].as_u64().expect("n") >= r["records"].as_u64().expect("n") * 2, "{name}");
        assert_eq!(r["source_digest"], r["loaded_digest"], "{name}");
        assert_eq!(t["load"]["records"], t["dispositions"]["converted"], "{name}");
    }
    for (k, v) in &totals {
        assert_eq!(report["totals"][k], *v, "total {k}");
    }
    assert_eq!(report["totals"]["unaccounted"], 0);
    assert_eq!((report["balanced"].as_bool(), report["proved"].as_bool()), (Some(true), Some(true)));
    let stages: Vec<&str> = report["timings"].as_array().expect("timings").iter().map(|t| t["stage"].as_str().expect("stage")).collect();
    assert_eq!(stages, ["extract", "convert", "validate", "match", "load", "search-indexes", "read-back", "reconcile"]);
    assert!(report["reasons"].as_array().expect("reasons").iter().any(|r| r["kind"] == "orphan" && r["count"] == 1));

    // The page: self-contained, the four charts, every table.
    let html = std::fs::read_to_string(reports.join("reconciliation.html")).expect("html");
    assert_eq!(html.matches("<svg").count(), 4, "four charts");
    for title in ["Source records by table", "Dispositions by table", "Reasons (issues by kind)", "Time per stage"] {
        assert!(html.contains(&format!("<title>{title}")), "{title}");
    }
    for name in tables.keys() {
        assert!(html.contains(&format!("<td>{name}</td>")), "{name}");
    }
    assert!(html.contains("<strong>0 unaccounted</strong>"));
    assert!(!html.contains("<script") && !html.contains(" src=") && !html.contains("<link"), "self-contained");

    // The worksheet: 3 patients per table, source and loaded values side by side.
    let sheet = read_json(&reports.join("spot-check.json"));
    let categories = sheet["categories"].as_array().expect("categories");
    assert_eq!(categories.len(), 8);
    let project = project::load(&dir.join("proj")).expect("project");
    let source = project.csv_source(&dir.join("proj"), "legacy").expect("source");
    let rows = read_all(&source);
    let page = std::fs::read_to_string(reports.join("spot-check.html")).expect("html");
    for c in categories {
        let table = c["table"].as_str().expect("table");
        let patients = c["patients"].as_array().expect("patients");
        assert_eq!(patients.len() as u64, 3.min(c["patients_with_records"].as_u64().expect("n")), "{table}");
        for p in patients {
            let key = p["patient"].as_str().expect("key");
            assert!(page.contains(&format!("Patient {key}")), "{table}: {key}");
            for r in p["records"].as_array().expect("records") {
                let place = r["source"].as_str().expect("place");
                let line: u64 = place.rsplit(':').next().and_then(|l| l.parse().ok()).expect("line");
                let file = &project.tables[table].file;
                let row = at_line(&rows[table], file, line);
                for f in r["fields"].as_array().expect("fields") {
                    assert_eq!(f["agrees"], true, "{place}: {f}");
                    let column = f["field"].as_str().expect("field");
                    if let Some(value) = row.get(column) {
                        assert_eq!(f["source"].as_str(), Some(value.trim()), "{place}: {column} is the source value");
                    }
                    assert!(f["loaded"].is_string(), "{place}: {column}");
                }
            }
        }
    }
    // A patient's name is on the worksheet (its label), from the source.
    let patient = categories.iter().find(|c| c["table"] == "patients").expect("patients")["patients"][0].clone();
    let key = patient["patient"].as_str().expect("key");
    let record = rows["patients"].iter().find(|r| r.get("patient_id") == Some(key)).expect("patient row");
    let family = record.get("last_name").expect("family");
    assert!(patient["label"].as_str().expect("label").contains(family));
    assert!(page.contains("initials") && page.contains("class=\"box\""), "a sign-off per patient");

    // `migrate report` again with the same seed draws the same patients; status tells the result.
    let (ok, stdout, stderr) =
        hearth(&["migrate", "report", "proj", "--data-dir", "data", "--quiet", "--sample", "3", "--seed", "9"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert_eq!(read_json(&reports.join("spot-check.json"))["categories"], sheet["categories"]);
    let (ok, stdout, _) = hearth(&["migrate", "status", "proj"], dir);
    assert!(ok && stdout.contains("last reconcile (") && stdout.contains("balanced and proved"), "{stdout}");
    assert!(!stdout.contains("NOT balanced"), "{stdout}");
}

/// A value changed in the store after the load (here a vital sign, through
/// `hearth import`) is found by `migrate report`: the mismatch names the
/// table, file and line, key, field, source and loaded values, and the
/// command exits non-zero.
#[test]
fn a_value_changed_in_the_store_is_reported_as_a_mismatch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir).0);
    assert!(hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "8", "--seed", "3"], dir).0);
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "the default is --until reconcile: {stderr}\n{stdout}");
    assert!(dir.join("proj/reports/reconciliation.html").exists());

    // A vitals row that loaded (no issue at its line), with a pulse.
    let dry = read_json(&dir.join("proj/reports/dry-run.json"));
    let flagged: HashSet<u64> = dry["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .filter(|i| i["file"] == "vitals.csv")
        .map(|i| i["line"].as_u64().expect("line"))
        .collect();
    let project = project::load(&dir.join("proj")).expect("project");
    let source = project.csv_source(&dir.join("proj"), "legacy").expect("source");
    let rows = read_all(&source);
    let row = rows["vitals"]
        .iter()
        .find(|r| {
            let Provenance::FileLine { line, .. } = &r.provenance else { return false };
            !flagged.contains(line) && !r.get("pulse").unwrap_or("").is_empty()
        })
        .expect("a loaded vitals row with a pulse");
    let key = row.get("vitals_id").expect("key").to_owned();
    let pulse = row.get("pulse").expect("pulse").to_owned();
    let converted = migrate::convert::Converter::new(&project, "vitals").expect("converter").convert(row);
    let id = migrate::convert::resource_id("vitals", &key, "pulse");
    let mut resource = converted.resources.iter().find(|r| r["id"] == id.as_str()).expect("the pulse Observation").clone();
    let tampered = format!("{}", pulse.parse::<u64>().expect("a whole pulse") + 7);
    resource["valueQuantity"]["value"] = serde_json::from_str(&tampered).expect("number");
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": resource, "request": {"method": "PUT", "url": format!("Observation/{id}")}
    }]});
    std::fs::write(dir.join("tamper.json"), bundle.to_string()).expect("bundle");
    let (ok, stdout, stderr) = hearth(&["import", "tamper.json", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");

    let (ok, stdout, stderr) = hearth(&["migrate", "report", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(!ok, "a mismatch makes the report exit non-zero: {stderr}\n{stdout}");
    let place = row.provenance.to_string();
    let line = format!("reconcile: vitals: {place} [{key}]: pulse: source \"{pulse}\", loaded \"{tampered}\" (Observation/{id})");
    assert!(stdout.contains(&line), "{line} in {stdout}");
    assert!(stdout.contains("reconcile vitals: ") && stdout.contains(" 1 records with a mismatch"), "{stdout}");
    let report = read_json(&dir.join("proj/reports/reconciliation.json"));
    assert_eq!(report["proved"], false);
    assert_eq!(report["balanced"], true, "the balance is not the proof");
    let mismatches = report["reconcile"]["mismatches"].as_array().expect("mismatches");
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    let Provenance::FileLine { line, .. } = &row.provenance else { panic!("file line") };
    let m = &mismatches[0];
    assert_eq!(
        (&m["table"], &m["file"], &m["line"], &m["key"], &m["field"], &m["source"], &m["loaded"]),
        (
            &serde_json::json!("vitals"),
            &serde_json::json!("vitals.csv"),
            &serde_json::json!(line),
            &serde_json::json!(key),
            &serde_json::json!("pulse"),
            &serde_json::json!(pulse),
            &serde_json::json!(tampered)
        )
    );
    let vitals = &report["tables"]["vitals"]["reconcile"];
    assert_ne!(vitals["source_digest"], vitals["loaded_digest"]);
    assert_eq!(report["tables"]["patients"]["reconcile"]["source_digest"], report["tables"]["patients"]["reconcile"]["loaded_digest"]);
    let html = std::fs::read_to_string(dir.join("proj/reports/reconciliation.html")).expect("html");
    assert!(html.contains(&format!("<td>{place}</td><td>{key}</td><td>pulse</td><td>{pulse}</td><td class=\"bad\">{tampered}</td>")), "{html}");
    assert!(html.contains("NOT PROVED"));
    let (_, stdout, _) = hearth(&["migrate", "status", "proj"], dir);
    assert!(stdout.contains("1 records with a mismatch; NOT balanced and proved"), "{stdout}");
    // A loaded resource deleted since is reported as not stored.
    let note = &rows["notes"][0];
    let note_key = note.get("note_id").expect("note key").to_owned();
    let note_id = migrate::convert::resource_id("notes", &note_key, "");
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "request": {"method": "DELETE", "url": format!("DocumentReference/{note_id}")}
    }]});
    std::fs::write(dir.join("delete.json"), bundle.to_string()).expect("bundle");
    let (ok, stdout, stderr) = hearth(&["import", "delete.json", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let (ok, stdout, _) = hearth(&["migrate", "report", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(!ok);
    let line = format!("reconcile: notes: {} [{note_key}]: note_id: source \"{note_key}\", loaded nothing (the resource is not stored)", note.provenance);
    assert!(stdout.contains(&line), "{line} in {stdout}");
}

/// Reconcile compares a code with its system: a lab result whose LOINC code
/// is stored under another system (the same digits as a SNOMED CT code) is
/// a mismatch naming both `system|code` values, through the binary.
#[test]
fn a_code_stored_under_the_wrong_system_is_a_mismatch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir).0);
    assert!(hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "6", "--seed", "2"], dir).0);
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let dry = read_json(&dir.join("proj/reports/dry-run.json"));
    let flagged: HashSet<u64> = dry["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .filter(|i| i["file"] == "lab_results.csv")
        .map(|i| i["line"].as_u64().expect("line"))
        .collect();
    let project = project::load(&dir.join("proj")).expect("project");
    let source = project.csv_source(&dir.join("proj"), "legacy").expect("source");
    let rows = read_all(&source);
    let converter = migrate::convert::Converter::new(&project, "lab_results").expect("converter");
    // A lab result that loaded with a LOINC code.
    let (row, mut resource) = rows["lab_results"]
        .iter()
        .filter(|r| matches!(&r.provenance, Provenance::FileLine { line, .. } if !flagged.contains(line)))
        .find_map(|r| {
            let resource = converter.convert(r).resources.remove(0);
            (resource["code"]["coding"][0]["system"] == "http://loinc.org").then_some((r, resource))
        })
        .expect("a loaded lab result coded in LOINC");
    let code = resource["code"]["coding"][0]["code"].as_str().expect("code").to_owned();
    let key = row.get("result_id").expect("key").to_owned();
    let id = resource["id"].as_str().expect("id").to_owned();
    resource["code"]["coding"][0]["system"] = serde_json::json!("http://snomed.info/sct");
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": resource, "request": {"method": "PUT", "url": format!("Observation/{id}")}
    }]});
    std::fs::write(dir.join("tamper.json"), bundle.to_string()).expect("bundle");
    let (ok, stdout, stderr) = hearth(&["import", "tamper.json", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let (ok, stdout, stderr) = hearth(&["migrate", "report", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(!ok, "{stderr}\n{stdout}");
    let line = format!(
        "reconcile: lab_results: {} [{key}]: test_code: source \"http://loinc.org|{code}\", loaded \"http://snomed.info/sct|{code}\" (Observation/{id})",
        row.provenance
    );
    assert!(stdout.contains(&line), "{line} in {stdout}");
    let report = read_json(&dir.join("proj/reports/reconciliation.json"));
    assert_eq!(report["reconcile"]["mismatches"].as_array().map(Vec::len), Some(1), "only the code");
    assert_eq!(report["proved"], false);
}

/// `--until extract` reads every table and counts rows and unreadable rows:
/// nothing is converted, no store is opened, no load or reconciliation is
/// written. `--until load` loads and reads back without reconciling.
#[test]
fn until_extract_only_counts_and_until_load_stops_before_reconciling() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir).0);
    assert!(hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "8", "--seed", "2"], dir).0);
    let labs = dir.join("proj/export/lab_results.csv");
    let mut text = std::fs::read_to_string(&labs).expect("labs");
    let bad_line = text.lines().count() + 1;
    text.push_str("L8888888,P00001\n");
    std::fs::write(&labs, text).expect("labs");

    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--until", "extract", "--data-dir", "data"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("patients: 10 source records: 10 read, 0 unreadable"), "8 patients, the duplicate and the near duplicate: {stdout}");
    assert!(stdout.contains(&format!("lab_results.csv:{bad_line}")), "the unreadable row is named: {stdout}");
    assert!(stdout.contains("read, 1 unreadable"), "{stdout}");
    assert!(!dir.join("data").exists(), "no store was opened");
    let reports = dir.join("proj/reports");
    let dry = read_json(&reports.join("dry-run.json"));
    assert_eq!(dry["until"], "extract");
    assert_eq!((dry["totals"]["converted"].as_u64(), dry["totals"]["resources"].as_u64()), (Some(0), Some(0)));
    assert_eq!(dry["totals"]["rejected"], 1);
    assert_eq!(dry["totals"]["unaccounted"], 0);
    assert_eq!(dry["totals"]["pending"].as_u64(), dry["totals"]["source_records"].as_u64().map(|n| n - 1));
    assert_eq!(dry["timings"].as_array().map(Vec::len), Some(1), "extract only");
    assert!(!reports.join("load.json").exists() && !reports.join("reconciliation.json").exists());

    std::fs::write(&labs, std::fs::read_to_string(&labs).expect("labs").replace("L8888888,P00001\n", "")).expect("labs");
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--until", "load", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(reports.join("load.json").exists() && !reports.join("reconciliation.json").exists(), "{stdout}");
    let load = read_json(&reports.join("load.json"));
    let stages: Vec<&str> = load["timings"].as_array().expect("timings").iter().map(|t| t["stage"].as_str().expect("stage")).collect();
    assert_eq!(stages, ["load", "search-indexes", "read-back"]);
    let (ok, stdout, _) = hearth(&["migrate", "status", "proj"], dir);
    assert!(ok && stdout.contains("not reconciled yet"), "{stdout}");
}

/// The same proof on PostgreSQL: a load into its own schema reconciles with
/// the source, field by field (decimals keep their written precision there
/// too), and `migrate report` against it agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_proves_a_load_into_postgresql() {
    let url = std::env::var("HEARTH_TEST_DATABASE_URL")
        .expect("HEARTH_TEST_DATABASE_URL must name the test PostgreSQL server (CI sets it)");
    let schema = format!("hearth_reconcile_{}", std::process::id());
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(connection);
    admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).await.expect("schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    let database = format!("{url}{separator}options=-csearch_path%3D{schema}");

    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    let run = move |args: Vec<String>| {
        let dir = dir.clone();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            hearth(&args, &dir)
        })
        .join()
        .expect("hearth")
    };
    let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(run(strings(&["migrate", "init", "proj", "--preset", "legacy-csv"])).0);
    assert!(run(strings(&["migrate", "sample", "--out", "proj/export", "--patients", "8", "--seed", "6"])).0);
    let (ok, stdout, stderr) = run(strings(&["migrate", "run", "proj", "--database-url", &database, "--quiet"]));
    assert!(ok, "{stderr}\n{stdout}");
    let (ok, stdout, stderr) = run(strings(&["migrate", "report", "proj", "--database-url", &database, "--quiet"]));
    assert!(ok, "{stderr}\n{stdout}");
    let report = read_json(&tmp.path().join("proj/reports/reconciliation.json"));
    assert_eq!((report["balanced"].as_bool(), report["proved"].as_bool()), (Some(true), Some(true)), "{stdout}");
    assert_eq!(report["reconcile"]["records"], report["totals"]["converted"]);
    assert_eq!(report["reconcile"]["mismatched"], 0);
    admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.expect("drop schema");
}

// ----------------------------------------------------------------------
// Sources beyond CSV: SQL databases (SQLite, PostgreSQL), FHIR NDJSON and
// Bundles, and documents.

/// A legacy database's mapping: `SOURCE` is the `[sources.old]` body and
/// `S.` the schema prefix of the queries.
const SQL_MAPPING: &str = r#"
[project]
name = "sqldb"

[defaults]
date_formats = ["YYYY-MM-DD", "YYYY-MM-DDThh:mm:ss"]
timezone = "UTC"

[sources.old]
SOURCE

[code_systems]
loinc = "http://loinc.org"

[tables.patients]
source = "old"
query = "SELECT id, family, given, born, sex, photo FROM S.patient ORDER BY id"
resource = "Patient"
key = "id"

[tables.patients.columns]
id = { element = "Patient.identifier.value", required = true }
family = { element = "Patient.name.family" }
given = { element = "Patient.name.given" }
born = { element = "Patient.birthDate", type = "date", required = true }
sex = { element = "Patient.gender", type = "code", value_map = "sex" }
photo = { }

[tables.results]
source = "old"
query = """
SELECT r.id, r.patient_id, r.loinc, r.value, r.unit, r.taken
  FROM S.result r ORDER BY r.id"""
resource = "Observation"
key = "id"

[tables.results.columns]
id = { element = "Observation.identifier.value", required = true }
patient_id = { type = "reference", required = true }
loinc = { element = "Observation.code.coding.code", type = "code", system = "loinc" }
value = { element = "Observation.valueQuantity.value", type = "decimal", unit_column = "unit", unit_map = "ucum" }
unit = { }
taken = { element = "Observation.effectiveDateTime", type = "datetime", required = true }

[[tables.results.joins]]
column = "patient_id"
table = "patients"
element = "Observation.subject"

[value_maps.sex]
values = { M = "male", F = "female" }

[unit_maps.ucum]
"mg/dl" = "mg/dL"
"#;

/// The legacy rows (the same in SQLite and PostgreSQL): P3 has no birth
/// date (rejected), P4 a photo BLOB (rejected, unreadable); R3's patient
/// does not exist (orphan), R4's is rejected (unresolved), R5 has no date.
const SQL_ROWS: &str = "
INSERT INTO S.patient (id, family, given, born, sex) VALUES
  ('P1', 'Smith', 'Ann', '1980-01-02', 'F'), ('P2', 'Doe', 'Bob', '1975-05-06', 'M'),
  ('P3', 'Roe', 'Cy', NULL, 'M'), ('P4', 'Poe', 'Di', '1990-09-09', 'F');
INSERT INTO S.result VALUES
  ('R1', 'P1', '2345-7', 98.6, 'mg/dl', '2024-03-01T09:30:00'),
  ('R2', 'P2', '2345-7', 101.25, 'mg/dL', '2024-03-02T10:00:00'),
  ('R3', 'P9', '2345-7', 77.5, 'mg/dL', '2024-03-03T11:00:00'),
  ('R4', 'P3', '2345-7', 88.5, 'mg/dL', '2024-03-04T12:00:00'),
  ('R5', 'P1', '2345-7', 90.5, 'mg/dL', NULL);
";

/// (table, key, kind, field, disposition) of every error in a dry-run
/// report, and the per-table counts.
type Dispositions = (Vec<(String, String, String, String, String)>, BTreeMap<String, [i64; 4]>);

fn dispositions(report: &serde_json::Value) -> Dispositions {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let mut issues: Vec<_> = report["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .filter(|i| i["severity"] == "error")
        .map(|i| (text(&i["table"]), text(&i["key"]), text(&i["kind"]), text(&i["field"]), text(&i["disposition"])))
        .collect();
    issues.sort();
    let counts = report["tables"]
        .as_object()
        .expect("tables")
        .iter()
        .map(|(t, c)| {
            let n = |k: &str| c[k].as_i64().expect("count");
            (t.clone(), [n("source_records"), n("converted"), n("rejected"), n("quarantined")])
        })
        .collect();
    (issues, counts)
}

fn dry_run_report(dir: &Path, project: &str) -> (serde_json::Value, String) {
    let (ok, stdout, stderr) = hearth(&["migrate", "run", project, "--dry-run"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let report = serde_json::from_slice(&std::fs::read(dir.join(project).join("reports/dry-run.json")).expect("report"))
        .expect("JSON");
    (report, stdout)
}

fn expected_sql_dispositions() -> Dispositions {
    let row = |t: &str, k: &str, kind: &str, f: &str, d: &str| (t.into(), k.into(), kind.into(), f.into(), d.into());
    let mut issues = vec![
        row("patients", "P3", "required", "born", "rejected"),
        row("patients", "patients[P4]", "unreadable", "photo", "rejected"),
        row("results", "R3", "orphan", "patient_id", "quarantined"),
        row("results", "R4", "unresolved-reference", "patient_id", "quarantined"),
        row("results", "R5", "required", "taken", "rejected"),
    ];
    issues.sort();
    let counts = [("patients".to_owned(), [4, 2, 2, 0]), ("results".to_owned(), [5, 2, 1, 2])].into_iter().collect();
    (issues, counts)
}

/// A SQLite legacy database mapped by queries: the dry run gives each row
/// its disposition with table and key, and a real load writes and reads
/// back the converted rows (a rerun writes nothing).
#[test]
fn a_sqlite_legacy_database_mapped_by_queries_loads() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let proj = dir.join("proj");
    std::fs::create_dir_all(&proj).expect("proj");
    let db = rusqlite::Connection::open(proj.join("legacy.db")).expect("sqlite");
    db.execute_batch(
        "CREATE TABLE patient (id TEXT, family TEXT, given TEXT, born TEXT, sex TEXT, photo BLOB);
         CREATE TABLE result (id TEXT, patient_id TEXT, loinc TEXT, value REAL, unit TEXT, taken TEXT);",
    )
    .expect("schema");
    db.execute_batch(&SQL_ROWS.replace("S.", "")).expect("rows");
    db.execute("UPDATE patient SET photo = x'FFD8FFE0' WHERE id = 'P4'", []).expect("blob");
    drop(db);
    let mapping = SQL_MAPPING.replace("SOURCE", "kind = \"sqlite\"\npath = \"legacy.db\"").replace("S.", "");
    std::fs::write(proj.join("migration.toml"), mapping).expect("mapping");

    let (ok, stdout, _) = hearth(&["migrate", "check", "proj"], dir);
    assert!(!ok, "the BLOB row is unreadable: {stdout}");
    assert!(stdout.contains("old.patients: patients[P4]: column photo: a binary value (BLOB, 4 bytes)"), "{stdout}");
    assert!(stdout.contains("old.results: 5 rows read, 0 unreadable"), "{stdout}");

    let (report, stdout) = dry_run_report(dir, "proj");
    assert_eq!(dispositions(&report), expected_sql_dispositions(), "{stdout}");
    assert!(stdout.contains("results: results[R3] [R3]: patient_id: error orphan"), "{stdout}");
    assert_eq!(report["tables"]["results"]["file"], "old query");

    let first = load(dir, "data");
    assert_eq!(first["patients"], [2, 2, 0, 0]);
    assert_eq!(first["results"], [2, 2, 0, 0]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(proj.join("reports/load.json")).expect("load report")).expect("JSON");
    assert_eq!(report["mismatched"].as_array().map(Vec::len), Some(0));
    let again = load(dir, "data");
    assert_eq!(again["results"], [2, 0, 0, 2], "a rerun writes nothing");

    // A table without its query, and a SQL table naming a file: refused at
    // their lines.
    let text = std::fs::read_to_string(proj.join("migration.toml")).expect("mapping");
    let header = text.lines().position(|l| l == "[tables.patients]").expect("header") + 1;
    let bad = text.replace("query = \"SELECT id, family, given, born, sex, photo FROM patient ORDER BY id\"", "file = \"patients.csv\"");
    std::fs::write(proj.join("migration.toml"), bad).expect("mapping");
    let (ok, _, stderr) = hearth(&["migrate", "check", "proj"], dir);
    let expected = format!("migration.toml:{header}:1: tables.patients: table \"patients\" reads a sqlite source: it needs `query`, not `file`");
    assert!(!ok && stderr.contains(&expected), "{expected} in {stderr}");
}

/// The same legacy tables in PostgreSQL (a schema of their own in the test
/// database): the same dispositions as from SQLite.
#[test]
fn a_postgresql_legacy_database_gives_the_same_dispositions() {
    let url = std::env::var("HEARTH_TEST_DATABASE_URL")
        .expect("HEARTH_TEST_DATABASE_URL must name the test PostgreSQL server (CI sets it)");
    let schema = format!("legacy_src_{}_{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.subsec_nanos()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let admin = |sql: String| {
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
            let task = tokio::spawn(connection);
            client.batch_execute(&sql).await.expect("sql");
            drop(client);
            let _ = task.await;
        })
    };
    admin(format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.patient (id text, family text, given text, born date, sex text, photo bytea);
         CREATE TABLE {schema}.result (id text, patient_id text, loinc text, value numeric(8,2), unit text, taken timestamp);
         {}
         UPDATE {schema}.patient SET photo = '\\xFFD8FFE0' WHERE id = 'P4';",
        SQL_ROWS.replace("S.", &format!("{schema}."))
    ));
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let proj = dir.join("proj");
    std::fs::create_dir_all(&proj).expect("proj");
    let mapping = SQL_MAPPING
        .replace("SOURCE", "kind = \"postgres\"\nurl_env = \"HEARTH_TEST_DATABASE_URL\"")
        .replace("S.", &format!("{schema}."));
    std::fs::write(proj.join("migration.toml"), mapping).expect("mapping");
    let (report, stdout) = dry_run_report(dir, "proj");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_eq!(dispositions(&report), expected_sql_dispositions(), "{stdout}");
        // Numerics keep their digits; timestamps are ISO 8601.
        let project = project::load(&proj).expect("project");
        let source = project.source(&proj, "old").expect("source");
        let r1 = source.rows("results").expect("rows").next().expect("R1").expect("readable");
        assert_eq!((r1.get("value"), r1.get("taken")), (Some("98.60"), Some("2024-03-01T09:30:00")));
        // A query error makes its table unreadable, named.
        let (ok, stdout, _) = hearth(&["migrate", "check", "proj"], dir);
        assert!(!ok && stdout.contains("old.results: 5 rows read"), "{stdout}");
    }));
    admin(format!("DROP SCHEMA {schema} CASCADE"));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    // The schema is gone: the same project cannot read its tables now.
    let (ok, stdout, _) = hearth(&["migrate", "check", "proj"], dir);
    assert!(!ok && stdout.contains("old.patients: cannot read: old: table patients: query failed:"), "{stdout}");
}

const FHIR_MAPPING: &str = r#"
[project]
name = "fhirx"

[sources.bulk]
kind = "fhir"
path = "bulk"
base_url = "https://old.example.org/fhir"

[tables.patients]
source = "bulk"
resource = "Patient"

[tables.encounters]
source = "bulk"
resource = "Encounter"

[tables.observations]
source = "bulk"
resource = "Observation"
"#;

/// GET `path` on a running `hearth serve` as JSON.
async fn fhir_get(base: &str, path: &str) -> (u16, serde_json::Value) {
    let request = reqwest::Client::new().get(format!("{base}/{path}")).header("Accept", "application/fhir+json");
    let response = crate::bearer::authorized(request).await.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// Another system's FHIR export (NDJSON files and a transaction Bundle):
/// loaded under Hearth ids with every reference rewritten and resolving in
/// the store, the source ids kept as identifiers, an orphan quarantined; a
/// rerun writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fhir_export_of_ndjson_and_a_bundle_loads_with_its_references_rewritten() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let proj = dir.join("proj");
    let bulk = proj.join("bulk");
    std::fs::create_dir_all(&bulk).expect("bulk");
    std::fs::write(proj.join("migration.toml"), FHIR_MAPPING).expect("mapping");
    std::fs::write(
        bulk.join("Patient.ndjson"),
        concat!(
            r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"7","lastUpdated":"2020-01-01T00:00:00Z"},"name":[{"family":"Lee"}],"birthDate":"1970-01-01"}"#,
            "\n",
            r#"{"resourceType":"Patient","id":"p2","name":[{"family":"Kim"}],"gender":"female"}"#,
            "\n"
        ),
    )
    .expect("patients");
    std::fs::write(
        bulk.join("Observation.ndjson"),
        concat!(
            r#"{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"weight"},"subject":{"reference":"https://old.example.org/fhir/Patient/p1"},"valueQuantity":{"value":70.50,"unit":"kg"}}"#,
            "\n",
            r#"{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"height"},"subject":{"reference":"Patient/gone"}}"#,
            "\n"
        ),
    )
    .expect("observations");
    let bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            { "fullUrl": "urn:uuid:6f1e3a52-0c4b-4d2e-9a57-3b2f6c1d0e9a",
              "resource": { "resourceType": "Encounter", "status": "finished",
                "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
                "subject": { "reference": "Patient/p2" } },
              "request": { "method": "POST", "url": "Encounter" } },
            { "fullUrl": "urn:uuid:9d0c5b1e-2f3a-4c6d-8e7f-0a1b2c3d4e5f",
              "resource": { "resourceType": "Observation", "status": "final", "code": { "text": "pulse" },
                "subject": { "reference": "Patient/p2" },
                "encounter": { "reference": "urn:uuid:6f1e3a52-0c4b-4d2e-9a57-3b2f6c1d0e9a" },
                "valueQuantity": { "value": 72, "unit": "/min" } },
              "request": { "method": "POST", "url": "Observation" } }
        ]
    });
    std::fs::write(bulk.join("visit.json"), bundle.to_string()).expect("bundle");

    let (report, stdout) = dry_run_report(dir, "proj");
    let (issues, counts) = dispositions(&report);
    assert_eq!(counts["patients"], [2, 2, 0, 0]);
    assert_eq!(counts["encounters"], [1, 1, 0, 0]);
    assert_eq!(counts["observations"], [3, 2, 0, 1]);
    assert_eq!(
        issues,
        [("observations".into(), "Observation/o2".into(), "orphan".into(), "Observation.subject".into(), "quarantined".into())]
    );
    assert!(stdout.contains("observations: Observation.ndjson:2 [Observation/o2]: Observation.subject: error orphan"), "{stdout}");

    let first = load(dir, "data");
    assert_eq!(first["observations"], [2, 2, 0, 0]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(proj.join("reports/load.json")).expect("load report")).expect("JSON");
    assert_eq!(report["mismatched"].as_array().map(Vec::len), Some(0));
    // Reconciled leaf by leaf against the source resources: balanced and proved.
    let reconciled = assert_fhir_proved(&proj, &[("patients", 2), ("encounters", 1), ("observations", 2)]);
    assert!(reconciled["reconcile"]["tables"]["observations"]["fields"].as_u64() > Some(10), "{reconciled}");
    let sheet = read_json(&proj.join("reports/spot-check.json"));
    let categories = sheet["categories"].as_array().expect("categories");
    let patients = categories.iter().find(|c| c["table"] == "patients").expect("patients sampled");
    assert!(
        patients["patients"].as_array().expect("sampled").iter().any(|p| p["label"] == "Lee, born 1970-01-01"),
        "{patients}"
    );
    let observations = categories.iter().find(|c| c["table"] == "observations").expect("observations sampled");
    assert_eq!(observations["patients_with_records"], 2, "{observations}");
    let again = load(dir, "data");
    assert!(again.values().all(|c| c[1] == 0 && c[2] == 0), "a rerun writes nothing: {again:?}");

    let server = crate::bearer::serve(&dir.join("data"), &[]);
    let id = |table: &str, key: &str| migrate::convert::resource_id(table, key, "");
    let pulse = id("observations", "Observation/9d0c5b1e-2f3a-4c6d-8e7f-0a1b2c3d4e5f");
    let (status, obs) = fhir_get(&server.base, &format!("Observation/{pulse}")).await;
    assert_eq!(status, 200, "{obs}");
    let patient = format!("Patient/{}", id("patients", "Patient/p2"));
    let encounter = format!("Encounter/{}", id("encounters", "Encounter/6f1e3a52-0c4b-4d2e-9a57-3b2f6c1d0e9a"));
    assert_eq!(obs["subject"]["reference"], patient.as_str());
    assert_eq!(obs["encounter"]["reference"], encounter.as_str());
    assert_eq!(
        obs["identifier"][0],
        serde_json::json!({ "system": "urn:hearth:migration:fhirx:bulk", "value": "9d0c5b1e-2f3a-4c6d-8e7f-0a1b2c3d4e5f" })
    );
    for target in [&patient, &encounter] {
        let (status, body) = fhir_get(&server.base, target).await;
        assert_eq!(status, 200, "{target} resolves: {body}");
    }
    let (_, weight) = fhir_get(&server.base, &format!("Observation/{}", id("observations", "Observation/o1"))).await;
    assert_eq!(weight["subject"]["reference"], format!("Patient/{}", id("patients", "Patient/p1")).as_str());
    assert_eq!(weight["valueQuantity"]["value"].to_string(), "70.50", "the decimal as written");
    let (status, _) = fhir_get(&server.base, &format!("Observation/{}", id("observations", "Observation/o2"))).await;
    assert_eq!(status, 404, "the orphan is held, not loaded");
    drop(server);

    // The pulse changed in the store: the report names the Bundle entry,
    // the element path, the source value and the loaded one.
    let mut tampered = obs.clone();
    tampered["valueQuantity"]["value"] = serde_json::json!(79);
    tampered.as_object_mut().expect("object").remove("meta");
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": tampered, "request": {"method": "PUT", "url": format!("Observation/{pulse}")}
    }]});
    std::fs::write(dir.join("tamper.json"), bundle.to_string()).expect("bundle");
    let (ok, stdout, stderr) = hearth(&["import", "tamper.json", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let (ok, stdout, stderr) = hearth(&["migrate", "report", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(!ok, "a mismatch makes the report exit non-zero: {stderr}\n{stdout}");
    let line = format!(
        "reconcile: observations: visit.json[entry[1]] [Observation/9d0c5b1e-2f3a-4c6d-8e7f-0a1b2c3d4e5f]: Observation.valueQuantity.value: source \"72\", loaded \"79\" (Observation/{pulse})"
    );
    assert!(stdout.contains(&line), "{line} in {stdout}");
    let report = read_json(&proj.join("reports/reconciliation.json"));
    assert_eq!((&report["balanced"], &report["proved"]), (&serde_json::json!(true), &serde_json::json!(false)));
    let mismatches = report["reconcile"]["mismatches"].as_array().expect("mismatches");
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    assert_eq!(
        (&mismatches[0]["place"], &mismatches[0]["field"], &mismatches[0]["source"], &mismatches[0]["loaded"]),
        (
            &serde_json::json!("visit.json[entry[1]]"),
            &serde_json::json!("Observation.valueQuantity.value"),
            &serde_json::json!("72"),
            &serde_json::json!("79")
        )
    );
}

/// The last run's `reconciliation.json`: balanced and proved, each table's
/// reconciled records the number given, every one matched, fields compared
/// and the source and loaded digests equal.
fn assert_fhir_proved(proj: &Path, tables: &[(&str, u64)]) -> serde_json::Value {
    let report = read_json(&proj.join("reports/reconciliation.json"));
    assert_eq!(report["balanced"], true, "{report}");
    assert_eq!(report["proved"], true, "{report}");
    assert!(report["reconcile"]["fields"].as_u64() > Some(0), "{report}");
    assert_eq!(report["reconcile"]["mismatched"], 0);
    for (table, records) in tables {
        let r = &report["reconcile"]["tables"][table];
        assert_eq!((&r["records"], &r["matched"]), (&serde_json::json!(records), &serde_json::json!(records)), "{table}");
        assert!(r["fields"].as_u64() > Some(*records), "{table}: {r}");
        assert_eq!(r["source_digest"], r["loaded_digest"], "{table}");
    }
    report
}

/// The sample's notes index lists TXT notes and scans (PDF, PNG, TIFF,
/// JPEG): each becomes a Binary whose bytes read back identical and a
/// DocumentReference pointing at it; the PNG named `.pdf` is rejected with
/// the index file, line and column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_load_as_binaries_the_document_references_point_at() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir).0);
    assert!(hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "6", "--seed", "2"], dir).0);
    let manifest: toml::Table = std::fs::read_to_string(dir.join("proj/export/sample-manifest.toml"))
        .expect("manifest")
        .parse()
        .expect("TOML");
    let bad = manifest["defects"]
        .as_array()
        .expect("defects")
        .iter()
        .find(|d| d["kind"].as_str() == Some("document-mismatch"))
        .expect("a bad document is planted")
        .clone();
    let (report, stdout) = dry_run_report(dir, "proj");
    let line = format!(
        "notes: notes.csv:{} [{}]: file: error document: ",
        bad["line"].as_integer().expect("line"),
        bad["key"].as_str().expect("key")
    );
    assert!(stdout.contains(&line) && stdout.contains("the content is a PNG image (image/png), but the name says PDF"), "{line} in {stdout}");
    let notes = &report["tables"]["notes"];
    assert_eq!(notes["rejected"], 1);

    let loaded = load(dir, "data");
    assert_eq!(loaded["notes"][0], notes["converted"].as_u64().expect("n"));
    let server = crate::bearer::serve(&dir.join("data"), &[]);
    let export = dir.join("proj/export");
    for (key, file, kind) in [
        ("S0001", "scans/S0001.pdf", "application/pdf"),
        ("S0002", "scans/S0002.png", "image/png"),
        ("S0003", "scans/S0003.tif", "image/tiff"),
        ("S0004", "scans/S0004.jpg", "image/jpeg"),
        ("N0001", "notes/N0001.txt", "text/plain"),
    ] {
        let bytes = std::fs::read(export.join(file)).expect("document");
        let doc_id = migrate::convert::resource_id("notes", key, "");
        let (status, doc) = fhir_get(&server.base, &format!("DocumentReference/{doc_id}")).await;
        assert_eq!(status, 200, "{key}: {doc}");
        let attachment = &doc["content"][0]["attachment"];
        let binary_id = migrate::convert::resource_id("notes", key, "file");
        assert_eq!(attachment["url"], format!("Binary/{binary_id}").as_str(), "{key}");
        assert_eq!(attachment["contentType"], kind);
        assert_eq!(attachment["size"], bytes.len());
        assert_eq!(attachment["hash"], migrate::documents::attachment_hash(&bytes).as_str(), "{key}");
        assert_eq!(attachment["creation"], doc["date"], "{key}: the index's date");
        assert_eq!(attachment["title"], doc["description"], "{key}: the index's title");
        assert_eq!(doc["subject"]["reference"].as_str().map(|r| r.starts_with("Patient/")), Some(true));
        let (status, binary) = fhir_get(&server.base, &format!("Binary/{binary_id}")).await;
        assert_eq!(status, 200, "{key}: {binary}");
        assert_eq!(binary["contentType"], kind);
        let expected = migrate::documents::binary(&binary_id, &migrate::documents::Document { content_type: kind, bytes });
        assert_eq!(binary["data"], expected["data"], "{key}: the bytes read back identical");
    }
}

/// A synthetic Bulk Data export (`hearth generate --ndjson`, a file per
/// type) and synthetic transaction Bundles (`hearth generate`, `urn:uuid:`
/// references): every resource converts (every reference resolves inside
/// its export), loads and reads back as converted; a rerun writes nothing.
#[test]
fn synthetic_ndjson_and_bundle_exports_load_whole() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (ok, _, stderr) = hearth(&["generate", "--out", "proj/bulk", "--patients", "3", "--ndjson"], dir);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = hearth(&["generate", "--out", "proj/bundles", "--patients", "2", "--seed", "4"], dir);
    assert!(ok, "{stderr}");
    let mut types: Vec<String> = std::fs::read_dir(dir.join("proj/bulk"))
        .expect("bulk")
        .map(|e| e.expect("entry").file_name().to_string_lossy().trim_end_matches(".ndjson").to_owned())
        .collect();
    types.sort();
    assert!(types.len() > 5 && types.contains(&"Patient".to_owned()), "{types:?}");
    let mut mapping = String::from(
        "[project]\nname = \"gen\"\n\n[sources.bulk]\nkind = \"fhir\"\npath = \"bulk\"\n\n[sources.tx]\nkind = \"fhir\"\npath = \"bundles\"\n",
    );
    for source in ["bulk", "tx"] {
        for t in &types {
            mapping.push_str(&format!("\n[tables.{source}_{}]\nsource = \"{source}\"\nresource = \"{t}\"\n", t.to_lowercase()));
        }
    }
    std::fs::write(dir.join("proj/migration.toml"), mapping).expect("mapping");

    let (report, stdout) = dry_run_report(dir, "proj");
    let (issues, counts) = dispositions(&report);
    assert!(issues.is_empty(), "{issues:?}\n{stdout}");
    for t in &types {
        let lines = std::fs::read_to_string(dir.join(format!("proj/bulk/{t}.ndjson"))).expect("ndjson").lines().count();
        assert_eq!(counts[&format!("bulk_{}", t.to_lowercase())], [lines as i64, lines as i64, 0, 0], "{t}");
    }
    assert!(counts["tx_patient"] == [2, 2, 0, 0] && counts["tx_observation"][1] > 0, "{counts:?}");

    let first = load(dir, "data");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("proj/reports/load.json")).expect("load report")).expect("JSON");
    assert_eq!(report["mismatched"].as_array().map(Vec::len), Some(0));
    for (table, t) in report["tables"].as_object().expect("tables") {
        assert_eq!(t["verified"], t["created"], "{table}");
    }
    assert_eq!(first["bulk_patient"], [3, 3, 0, 0]);
    let tables: Vec<(String, u64)> = first.iter().filter(|(t, c)| *t != "provenance" && c[0] > 0).map(|(t, c)| (t.clone(), c[0])).collect();
    let tables: Vec<(&str, u64)> = tables.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    assert!(tables.len() >= types.len(), "{tables:?}");
    assert_fhir_proved(&dir.join("proj"), &tables);
    let again = load(dir, "data");
    assert!(again.values().all(|c| c[1] == 0 && c[2] == 0), "a rerun writes nothing: {again:?}");
}

/// The official FHIR R4 transaction Bundle example (`Bundle-bundle-
/// transaction`, hl7.fhir.r4.examples 4.0.1, CC0, committed under
/// crates/fhir/test_data/examples): its five patients load (ids from
/// `urn:uuid:` fullUrls and absolute fullUrls alike); the DELETE and GET
/// entries and the Parameters of its `$lookup` are rejected with their
/// entry, never skipped.
#[test]
fn the_official_transaction_bundle_example_is_accounted_for_entry_by_entry() {
    use std::io::Read as _;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let official = dir.join("proj/official");
    std::fs::create_dir_all(&official).expect("folder");
    let gz = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fhir/test_data/examples/r4/Bundle-bundle-transaction.json.gz"),
    )
    .expect("the official example");
    let mut json = String::new();
    flate2::read::GzDecoder::new(gz.as_slice()).read_to_string(&mut json).expect("gunzip");
    std::fs::write(official.join("bundle-transaction.json"), json).expect("bundle");
    std::fs::write(
        dir.join("proj/migration.toml"),
        "[project]\nname = \"off\"\n\n[sources.official]\nkind = \"fhir\"\npath = \"official\"\n\n[tables.patients]\nsource = \"official\"\nresource = \"Patient\"\n",
    )
    .expect("mapping");
    let (report, stdout) = dry_run_report(dir, "proj");
    let (issues, counts) = dispositions(&report);
    assert_eq!(counts["patients"], [10, 5, 5, 0], "{stdout}");
    let rejected: Vec<&str> = issues.iter().map(|i| i.1.as_str()).collect();
    let entries: Vec<String> = (5..10).map(|i| format!("bundle-transaction.json[entry[{i}]]")).collect();
    assert_eq!(rejected, entries);
    assert!(stdout.contains("[bundle-transaction.json[entry[7]]]: row: error unreadable: Parameters/"), "{stdout}");
    let loaded = load(dir, "data");
    assert_eq!(loaded["patients"], [5, 5, 0, 0]);
    assert_fhir_proved(&dir.join("proj"), &[("patients", 5)]);
    let run = migrate::dryrun::run(
        &project::load(&dir.join("proj")).expect("project"),
        &dir.join("proj"),
        migrate::dryrun::Stage::Validate,
        &migrate::dryrun::today(),
    )
    .expect("run");
    let keys: Vec<&str> = run.resources.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "Patient/61ebe359-bfdc-4613-8bf2-c5e300945f0a",
            "Patient/88f151c0-a954-468a-88bd-5ae15c08e059",
            "Patient/123",
            "Patient/74891afc-ed52-42a2-bcd7-f13d9b60f096",
            "Patient/123a"
        ]
    );
}

/// Documents loaded into PostgreSQL: every Binary body is stored sealed
/// (the store's AES-256-GCM envelope, never the document's base64), and
/// still reads back as converted.
#[test]
fn documents_loaded_into_postgresql_are_sealed_at_rest() {
    let url = std::env::var("HEARTH_TEST_DATABASE_URL")
        .expect("HEARTH_TEST_DATABASE_URL must name the test PostgreSQL server (CI sets it)");
    let schema = format!("migrate_docs_{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let query = |sql: String| -> Vec<String> {
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
            let task = tokio::spawn(connection);
            let mut out = Vec::new();
            for message in client.simple_query(&sql).await.expect("sql") {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                    out.push(row.get(0).unwrap_or_default().to_owned());
                }
            }
            drop(client);
            let _ = task.await;
            out
        })
    };
    query(format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"));
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir).0);
    assert!(hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "4", "--seed", "1"], dir).0);
    let separator = if url.contains('?') { '&' } else { '?' };
    let target = format!("{url}{separator}options=-csearch_path%3D{schema}");
    let (ok, stdout, stderr) =
        hearth(&["migrate", "run", "proj", "--database-url", &target, "--data-dir", "keys", "--quiet"], dir);
    let bodies = query(format!("SELECT v.body::text FROM {schema}.resource_version v WHERE v.type = 'Binary'"));
    query(format!("DROP SCHEMA {schema} CASCADE"));
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("0 read back different"), "{stdout}");
    let pdf = std::fs::read(dir.join("proj/export/scans/S0001.pdf")).expect("scan");
    let document = migrate::documents::Document { content_type: "application/pdf", bytes: pdf };
    let data = migrate::documents::binary("x", &document)["data"].as_str().expect("data").to_owned();
    // 4 TXT notes and 3 scans (the bad scan is rejected).
    assert_eq!(bodies.len(), 7, "{bodies:?}");
    for body in &bodies {
        assert!(body.starts_with("hearth-aead:1:"), "sealed: {}", &body[..40.min(body.len())]);
        assert!(!body.contains(&data[..24]), "no document bytes in clear");
    }
}

/// GET `url` from a running `hearth serve`: status and body.
async fn get(url: &str) -> (u16, serde_json::Value) {
    let response = crate::bearer::authorized(reqwest::Client::new().get(url)).await.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// A patient row of the sample with only ASCII values (so it can be written
/// again into a Windows-1252 file as is), by column.
fn ascii_patients(proj: &Path) -> Vec<BTreeMap<String, String>> {
    let project = project::load(proj).unwrap_or_else(|e| panic!("{e}"));
    let source = project.csv_source(proj, "legacy").expect("legacy");
    read_all(&source)["patients"]
        .iter()
        .filter(|r| r.values.iter().all(|v| v.is_ascii()))
        .map(|r| r.fields().map(|(c, v)| (c.to_owned(), v.to_owned())).collect())
        .collect()
}

fn csv_row(fields: &[&str]) -> String {
    fields.iter().map(|f| if f.contains(',') { format!("\"{f}\"") } else { f.to_string() }).collect::<Vec<_>>().join(",")
}

/// Patient matching end to end, through the binary and a real SQLite data
/// directory: the sample's duplicate is merged (its medication refers to
/// the survivor, which carries the duplicate's identifiers; nothing is lost
/// and every disposition balances), the near duplicate is listed for review
/// and both load. Then a second export holding one of the loaded patients
/// under a new key (merged into that Hearth patient: not created, its visit
/// refers to the existing chart, which gains the legacy identifiers), a near
/// match of another (held for review with its visit) and a new patient; a
/// rerun of either export writes nothing.
#[tokio::test]
async fn matching_merges_duplicates_and_holds_near_matches_within_the_export_and_against_hearth() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir).0);
    assert!(hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "20", "--seed", "4"], dir).0);
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("matched against Hearth: 21 source patients compared, 0 merged"), "{stdout}");
    let manifest: toml::Table = std::fs::read_to_string(dir.join("proj/export/sample-manifest.toml"))
        .expect("manifest")
        .parse()
        .expect("manifest is TOML");
    let defect = |kind: &str| -> toml::Value {
        manifest["defects"].as_array().expect("defects").iter().find(|d| d["kind"].as_str() == Some(kind)).expect(kind).clone()
    };
    let (dup, near) = (defect("duplicate-patient"), defect("near-duplicate-patient"));
    let dup_key = dup["key"].as_str().expect("key");
    let near_key = near["key"].as_str().expect("key");
    assert!(
        stdout.contains(&format!("merged: patients patients.csv:{} [{dup_key}] into patients.csv:3 [P00002] (score", dup["line"])),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("review: patients patients.csv:{} [{near_key}] and patients.csv:2 [P00001] (score", near["line"])),
        "{stdout}"
    );

    // Every source record is accounted for; each disposition is counted.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("proj/reports/dry-run.json")).expect("report")).expect("JSON");
    let dispositions = ["converted", "rejected", "quarantined", "merged", "excluded"];
    for (name, t) in report["tables"].as_object().expect("tables") {
        let sum: i64 = dispositions.iter().map(|k| t[k].as_i64().expect("n")).sum();
        assert_eq!(sum, manifest["rows"][t["file"].as_str().expect("file")].as_integer().expect("rows"), "{name}");
        assert_eq!(t["unaccounted"], 0, "{name}");
    }
    assert_eq!((report["totals"]["merged"].as_u64(), report["totals"]["excluded"].as_u64()), (Some(1), Some(1)));
    assert_eq!(report["merges"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["merges"][0]["record"]["key"], dup_key);
    assert_eq!(report["merges"][0]["into"]["key"], "P00002");
    assert!(report["merges"][0]["score"].as_f64().expect("score") >= 28.0);
    assert_eq!(report["reviews"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["reviews"][0]["record"]["key"], near_key);
    let redirected: Vec<&str> = report["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .filter(|i| i["kind"] == "redirected")
        .map(|i| i["key"].as_str().expect("key"))
        .collect();
    assert_eq!(redirected.len(), 1, "the duplicate's medication: {redirected:?}");
    let (ok, status, _) = hearth(&["migrate", "status", "proj"], dir);
    assert!(ok && status.contains(" 1 merged, 1 excluded, 0 unaccounted"), "{status}");
    assert!(status.contains("patient matching: 1 merged, 1 pair(s) for review"), "{status}");
    // The reconciliation report lists the merge and the pair for review.
    let html = std::fs::read_to_string(dir.join("proj/reports/reconciliation.html")).expect("report page");
    assert!(html.contains("<h2>Patients merged (1)</h2>") && html.contains(&format!("[{dup_key}]")), "merges in the page");
    assert!(html.contains("<h2>Patient pairs pending review (never merged) (1)</h2>") && html.contains(&format!("[{near_key}]")));
    let reconciliation = read_json(&dir.join("proj/reports/reconciliation.json"));
    assert_eq!(reconciliation["merges"][0]["record"]["key"], dup_key);
    assert_eq!((reconciliation["balanced"].as_bool(), reconciliation["proved"].as_bool()), (Some(true), Some(true)));
    let loaded = load_counts(dir);
    assert_eq!(loaded["patients"][1], report["tables"]["patients"]["converted"].as_u64().expect("n"));
    assert_eq!(loaded["medications"][0], report["tables"]["medications"]["source_records"].as_u64().expect("n"));
    // A rerun writes nothing.
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(ok && stdout.contains("loaded: 0 resources written"), "{stderr}\n{stdout}");
    assert!(stdout.contains("matched against Hearth: 0 source patients compared"), "{stdout}");

    // The second export: one patient again (new key, new record number), a
    // near match of another (moved, new phone), and a new patient.
    let patients = ascii_patients(&dir.join("proj"));
    let others: Vec<&BTreeMap<String, String>> = patients
        .iter()
        .filter(|p| !["P00001", "P00002", dup_key, near_key].contains(&p["patient_id"].as_str()))
        .collect();
    assert!(others.len() >= 2, "two ASCII-only patients in the sample");
    let (same, moved) = (others[0], others[1]);
    assert!(hearth(&["migrate", "init", "proj2", "--preset", "legacy-csv"], dir).0);
    let export = dir.join("proj2/export");
    std::fs::create_dir_all(&export).expect("export");
    for file in ["allergies.csv", "lab_results.csv", "medications.csv", "notes.csv", "problems.csv", "vitals.csv"] {
        let text = std::fs::read_to_string(dir.join("proj/export").join(file)).expect("file");
        std::fs::write(export.join(file), format!("{}\r\n", text.lines().next().expect("header"))).expect("write");
    }
    let columns = ["patient_id", "mrn", "last_name", "first_name", "birth_date", "sex", "address", "city", "state", "zip", "phone"];
    let row = |p: &BTreeMap<String, String>, changes: &[(&str, &str)]| -> String {
        let values: Vec<&str> = columns
            .iter()
            .map(|c| changes.iter().find(|(k, _)| k == c).map_or(p[*c].as_str(), |(_, v)| v))
            .collect();
        csv_row(&values)
    };
    let new = "Q00003,7000003,Newcombe,Zed,01/01/1999,M,1 New St,Peoria,IL,61601,(309) 555-0000";
    let text = format!(
        "{}\r\n{}\r\n{}\r\n{new}\r\n",
        columns.join(","),
        row(same, &[("patient_id", "Q00001"), ("mrn", "7000001")]),
        row(moved, &[("patient_id", "Q00002"), ("mrn", "7000002"), ("address", "4242 Faraway Blvd"), ("zip", "99999"), ("phone", "(999) 555-0999")]),
    );
    std::fs::write(export.join("patients.csv"), text).expect("patients");
    std::fs::write(
        export.join("encounters.csv"),
        "encounter_id,patient_id,visit_date,visit_type,provider,reason\r\nEQ1,Q00001,2025-01-02,OV,Dr. A. Whitfield,Follow-up\r\nEQ2,Q00002,2025-01-03,OV,Dr. A. Whitfield,Follow-up\r\nEQ3,Q00003,2025-01-04,OV,Dr. A. Whitfield,Follow-up\r\n",
    )
    .expect("encounters");
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj2", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(
        stdout.contains("matched against Hearth: 3 source patients compared, 1 merged into existing patients (1 given the legacy identifiers), 1 held for review"),
        "{stdout}"
    );
    let id = |table: &str, key: &str| migrate::convert::resource_id(table, key, "");
    let (same_id, moved_id) = (id("patients", &same["patient_id"]), id("patients", &moved["patient_id"]));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("proj2/reports/dry-run.json")).expect("report")).expect("JSON");
    let counts = |t: &str| -> Vec<i64> {
        let c = &report["tables"][t];
        ["source_records", "converted", "rejected", "quarantined", "merged", "excluded", "unaccounted"]
            .iter()
            .map(|k| c[k].as_i64().expect("n"))
            .collect()
    };
    assert_eq!(counts("patients"), [3, 1, 0, 1, 1, 0, 0]);
    assert_eq!(counts("encounters"), [3, 2, 0, 1, 0, 0, 0]);
    assert_eq!(report["merges"][0]["record"]["key"], "Q00001");
    assert_eq!(report["merges"][0]["into"]["hearth"], format!("Patient/{same_id}"));
    assert_eq!(report["reviews"][0]["record"]["key"], "Q00002");
    assert_eq!(report["reviews"][0]["with"]["hearth"], format!("Patient/{moved_id}"));
    let issues = report["issues"].as_array().expect("issues");
    let held = issues
        .iter()
        .find(|i| i["key"] == "Q00002" && i["kind"] == "possible-duplicate")
        .expect("the near match is reported");
    assert_eq!((&held["severity"], &held["disposition"]), (&serde_json::json!("error"), &serde_json::json!("quarantined")));
    assert!(held["message"].as_str().expect("message").contains(&moved_id), "{held}");
    assert!(issues.iter().any(|i| i["key"] == "EQ2" && i["kind"] == "unresolved-reference" && i["disposition"] == "quarantined"));
    let loaded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("proj2/reports/load.json")).expect("load report")).expect("JSON");
    let created = |t: &str| loaded["tables"][t]["created"].as_u64();
    assert_eq!((created("patients"), created("encounters")), (Some(1), Some(2)), "{loaded}");

    {
        let server = crate::bearer::serve(&dir.join("data"), &[]);
        let base = &server.base;
        // Within the export: the duplicate was never created; its medication
        // refers to the survivor, which carries the duplicate's identifiers.
        assert_eq!(get(&format!("{base}/Patient/{}", id("patients", dup_key))).await.0, 404);
        let (status, survivor) = get(&format!("{base}/Patient/{}", id("patients", "P00002"))).await;
        assert_eq!(status, 200);
        assert!(
            survivor["identifier"].as_array().expect("identifiers").iter().any(|i| i["value"] == dup_key && i["use"] == "old"),
            "{survivor}"
        );
        let (status, med) = get(&format!("{base}/MedicationStatement/{}", id("medications", redirected[0]))).await;
        assert_eq!(status, 200);
        assert_eq!(med["subject"]["reference"], format!("Patient/{}", id("patients", "P00002")));
        // Against Hearth: merged into the existing patient.
        assert_eq!(get(&format!("{base}/Patient/{}", id("patients", "Q00001"))).await.0, 404);
        let (status, visit) = get(&format!("{base}/Encounter/{}", id("encounters", "EQ1"))).await;
        assert_eq!(status, 200);
        assert_eq!(visit["subject"]["reference"], format!("Patient/{same_id}"));
        let (_, existing) = get(&format!("{base}/Patient/{same_id}")).await;
        let ids: Vec<(&str, &str)> = existing["identifier"]
            .as_array()
            .expect("identifiers")
            .iter()
            .filter(|i| i["use"] == "old")
            .map(|i| (i["system"].as_str().unwrap_or_default(), i["value"].as_str().unwrap_or_default()))
            .collect();
        assert!(ids.contains(&("urn:hearth:local:patients:legacy-id", "Q00001")), "{ids:?}");
        assert!(ids.contains(&("urn:hearth:local:patients:mrn", "7000001")), "{ids:?}");
        assert_eq!(existing["name"], same_name(same), "nothing of the existing patient was overwritten");
        // The near match and its visit wait for review.
        assert_eq!(get(&format!("{base}/Patient/{}", id("patients", "Q00002"))).await.0, 404);
        assert_eq!(get(&format!("{base}/Encounter/{}", id("encounters", "EQ2"))).await.0, 404);
        assert_eq!(get(&format!("{base}/Patient/{}", id("patients", "Q00003"))).await.0, 200);
    }

    // Rerun: nothing new, the same decisions.
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj2", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("loaded: 0 resources written"), "{stdout}");
    assert!(stdout.contains("1 merged into existing patients (0 given the legacy identifiers), 1 held for review"), "{stdout}");

    // A rollback of the second export makes the same decisions: it deletes
    // the visit redirected to the existing patient, never that patient.
    let (ok, stdout, stderr) = hearth(&["migrate", "rollback", "proj2", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("rolled back: 6 resources deleted, 0 kept"), "Q00003, EQ1, EQ3 and their Provenance: {stdout}");
    {
        let server = crate::bearer::serve(&dir.join("data"), &[]);
        let base = &server.base;
        assert_eq!(get(&format!("{base}/Patient/{same_id}")).await.0, 200, "the existing patient stays");
        assert_ne!(get(&format!("{base}/Encounter/{}", id("encounters", "EQ1"))).await.0, 200);
    }

    // The review of a hold: listed with the store (the pair is with a
    // patient in Hearth), kept separate, and the next run releases the
    // patient and its visit: they load as a new chart.
    let held_pair = report["reviews"][0]["pair"].as_str().expect("pair id").to_owned();
    let (ok, listing, stderr) = hearth(&["migrate", "review", "proj2", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}");
    assert!(listing.contains("1 pair(s) pending review") && listing.contains(&format!("pair {held_pair}: score ")), "{listing}");
    assert!(listing.contains(&format!("[Q00002] and Patient/{moved_id} in Hearth")), "{listing}");
    let (ok, listing, _) = hearth(&["migrate", "review", "proj2"], dir);
    assert!(ok && listing.contains("0 pair(s) pending review within the export"), "without the store: {listing}");
    // Merged on review: as an automatic merge into the Hearth patient.
    let args = ["migrate", "review", "proj2", "--data-dir", "data", "--quiet", "--merge", &held_pair, "--by", "A. Analyst"];
    let (ok, stdout, stderr) = hearth(&args, dir);
    assert!(ok && stdout.contains(&format!("recorded: merge pair {held_pair}")), "{stderr}\n{stdout}");
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj2", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("2 merged into existing patients (1 given the legacy identifiers), 0 held for review"), "{stdout}");
    let report = read_json(&dir.join("proj2/reports/dry-run.json"));
    let merge = report["merges"].as_array().expect("merges").iter().find(|m| m["record"]["key"] == "Q00002").expect("merged");
    assert_eq!(merge["into"]["hearth"], format!("Patient/{moved_id}"));
    assert_eq!((merge["decision"]["decision"].as_str(), merge["decision"]["by"].as_str()), (Some("merge"), Some("A. Analyst")));
    assert_eq!(report["tables"]["patients"]["merged"].as_u64(), Some(2));
    {
        let server = crate::bearer::serve(&dir.join("data"), &[]);
        let base = &server.base;
        assert_eq!(get(&format!("{base}/Patient/{}", id("patients", "Q00002"))).await.0, 404, "not created");
        let (status, visit) = get(&format!("{base}/Encounter/{}", id("encounters", "EQ2"))).await;
        assert_eq!(status, 200, "its visit loads");
        assert_eq!(visit["subject"]["reference"], format!("Patient/{moved_id}"));
    }
    // Then kept separate after all (the decision replaced): the next run
    // creates the patient and points its visit at it.
    let args = ["migrate", "review", "proj2", "--data-dir", "data", "--quiet", "--keep-separate", &held_pair, "--by", "A. Analyst"];
    let (ok, stdout, stderr) = hearth(&args, dir);
    assert!(ok && stdout.contains(&format!("recorded: separate pair {held_pair}")), "{stderr}\n{stdout}");
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj2", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("1 merged into existing patients (0 given the legacy identifiers), 0 held for review"), "{stdout}");
    assert!(stdout.contains("load encounters: 3 source records: 0 resources created, 1 updated"), "EQ2 points at Q00002 now: {stdout}");
    let report = read_json(&dir.join("proj2/reports/dry-run.json"));
    let counts = |t: &str| -> Vec<i64> {
        let c = &report["tables"][t];
        ["source_records", "converted", "rejected", "quarantined", "merged", "excluded", "unaccounted"]
            .iter()
            .map(|k| c[k].as_i64().expect("n"))
            .collect()
    };
    assert_eq!(counts("patients"), [3, 2, 0, 0, 1, 0, 0], "released");
    assert_eq!(counts("encounters"), [3, 3, 0, 0, 0, 0, 0], "its visit too");
    assert_eq!(report["reviews"][0]["with"]["hearth"], format!("Patient/{moved_id}"));
    assert_eq!(report["reviews"][0]["decision"]["decision"], "separate");
    assert!(report["issues"].as_array().expect("issues").iter().any(|i| i["key"] == "Q00002" && i["kind"] == "reviewed-separate"));
    {
        let server = crate::bearer::serve(&dir.join("data"), &[]);
        let base = &server.base;
        assert_eq!(get(&format!("{base}/Patient/{}", id("patients", "Q00002"))).await.0, 200);
        let (status, visit) = get(&format!("{base}/Encounter/{}", id("encounters", "EQ2"))).await;
        assert_eq!(status, 200);
        assert_eq!(visit["subject"]["reference"], format!("Patient/{}", id("patients", "Q00002")));
    }
    // A rerun: the released patient is loaded; the decision stays applied.
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj2", "--data-dir", "data", "--quiet"], dir);
    assert!(ok && stdout.contains("loaded: 0 resources written"), "{stderr}\n{stdout}");
    let report = read_json(&dir.join("proj2/reports/dry-run.json"));
    assert_eq!(report["review"]["loaded_earlier"].as_array().map(Vec::len), Some(1), "{}", report["review"]);
    assert_eq!(report["review"]["stale"].as_array().map(Vec::len), Some(0));
}

/// The `name` element the sample's row makes.
fn same_name(p: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::json!([{ "family": p["last_name"], "given": [p["first_name"]] }])
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

/// The review of the grey zone through the binary: the sample's near
/// duplicate is listed by `migrate review` (both records' fields side by
/// side, the score, the source lines); a `--keep-separate` decision, kept
/// in `review.toml`, clears the warning at the next run; a `--merge`
/// decision replaces it and the next run merges the pair exactly as an
/// automatic merge (disposition `merged`, identifiers kept on the survivor,
/// recorded with who decided), which then loads, balances and is proved; a
/// decision about a pair that no longer exists is reported as stale, and
/// `--reopen` removes it.
#[tokio::test]
async fn review_decisions_in_review_toml_merge_or_separate_the_grey_zone_pair() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    assert!(hearth(&["migrate", "init", "proj", "--preset", "legacy-csv"], dir).0);
    assert!(hearth(&["migrate", "sample", "--out", "proj/export", "--patients", "12", "--seed", "5"], dir).0);
    let manifest: toml::Table = std::fs::read_to_string(dir.join("proj/export/sample-manifest.toml"))
        .expect("manifest")
        .parse()
        .expect("manifest is TOML");
    let near = manifest["defects"]
        .as_array()
        .expect("defects")
        .iter()
        .find(|d| d["kind"].as_str() == Some("near-duplicate-patient"))
        .expect("near duplicate")
        .clone();
    let near_key = near["key"].as_str().expect("key").to_owned();
    let near_line = near["line"].as_integer().expect("line");

    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--dry-run"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let before = read_json(&dir.join("proj/reports/dry-run.json"));
    assert_eq!(before["reviews"].as_array().map(Vec::len), Some(1));
    assert!(before["reviews"][0]["decision"].is_null());
    assert_eq!((before["review"]["pending"].as_u64(), before["review"]["decided"]["merge"].as_u64()), (Some(1), Some(0)));
    let pair = before["reviews"][0]["pair"].as_str().expect("pair id").to_owned();
    assert!(stdout.contains(&format!("[pair {pair}, pending: hearth migrate review]")), "{stdout}");
    let converted = |r: &serde_json::Value| r["tables"]["patients"]["converted"].as_u64().expect("n");

    // The listing: the pair with both records' fields side by side.
    let (ok, listing, stderr) = hearth(&["migrate", "review", "proj"], dir);
    assert!(ok, "{stderr}");
    assert!(listing.contains("1 pair(s) pending review"), "{listing}");
    assert!(
        listing.contains(&format!("pair {pair}: score ")) &&
            listing.contains(&format!("patients patients.csv:{near_line} [{near_key}] and patients patients.csv:2 [P00001]")),
        "{listing}"
    );
    let birth_row = listing.lines().find(|l| l.trim_start().starts_with("birth_date")).expect("birth date row");
    assert!(birth_row.contains("similar (day and month transposed)"), "{birth_row}");
    let dates: Vec<&str> = birth_row.split_whitespace().filter(|w| w.len() == 10 && w.as_bytes()[4] == b'-').collect();
    assert_eq!(dates.len(), 2, "both birth dates: {birth_row}");
    assert_eq!((&dates[0][..4], &dates[0][5..7], &dates[0][8..]), (&dates[1][..4], &dates[1][8..], &dates[1][5..7]));
    let family_row = listing.lines().find(|l| l.trim_start().starts_with("family")).expect("family row");
    assert!(family_row.contains("Müller") && family_row.contains("agrees"), "{family_row}");
    assert!(!dir.join("proj/review.toml").exists(), "listing writes nothing");

    // Kept separate: recorded in review.toml, applied by the next run.
    let (ok, stdout, stderr) = hearth(
        &["migrate", "review", "proj", "--keep-separate", &pair[..6], "--by", "A. Analyst", "--note", "mother and son"],
        dir,
    );
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains(&format!("recorded: separate pair {pair}")) && stdout.contains("0 pair(s) pending review"), "{stdout}");
    let file = std::fs::read_to_string(dir.join("proj/review.toml")).expect("review.toml");
    let decisions: toml::Table = file.parse().expect("TOML");
    let entry = &decisions["pair"].as_array().expect("pairs")[0];
    assert_eq!(entry["decision"].as_str(), Some("separate"));
    assert_eq!(entry["by"].as_str(), Some("A. Analyst"));
    assert_eq!(entry["id"].as_str(), Some(pair.as_str()));
    let sides: HashSet<(&str, &str)> = ["record", "with"]
        .iter()
        .map(|s| (entry[*s]["table"].as_str().expect("table"), entry[*s]["key"].as_str().expect("key")))
        .collect();
    assert_eq!(sides, HashSet::from([("patients", "P00001"), ("patients", near_key.as_str())]));
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--dry-run"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains(&format!("[pair {pair}, kept separate: separate decided by A. Analyst")), "{stdout}");
    let report = read_json(&dir.join("proj/reports/dry-run.json"));
    assert_eq!(report["reviews"][0]["decision"]["decision"], "separate");
    assert_eq!(report["reviews"][0]["decision"]["by"], "A. Analyst");
    assert_eq!(report["reviews"][0]["decision"]["note"], "mother and son");
    assert_eq!((report["review"]["pending"].as_u64(), report["review"]["decided"]["separate"].as_u64()), (Some(0), Some(1)));
    let issues = report["issues"].as_array().expect("issues");
    assert!(!issues.iter().any(|i| i["kind"] == "possible-duplicate"), "the warning is cleared");
    let notes: Vec<&serde_json::Value> = issues.iter().filter(|i| i["kind"] == "reviewed-separate").collect();
    assert_eq!(notes.len(), 2, "a note on both records");
    assert!(notes.iter().all(|i| i["severity"] == "information" && i["disposition"] == "converted"));
    assert_eq!(converted(&report), converted(&before), "both still load");
    let (_, status, _) = hearth(&["migrate", "status", "proj"], dir);
    assert!(status.contains("1 pair(s) for review: 0 pending, 0 merged and 1 kept separate on review"), "{status}");

    // Merge instead: the decision is replaced; the next run merges the
    // later record into the earlier, as an automatic merge.
    let (ok, stdout, stderr) = hearth(&["migrate", "review", "proj", "--merge", &pair, "--by", "B. Analyst"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let decisions: toml::Table = std::fs::read_to_string(dir.join("proj/review.toml")).expect("file").parse().expect("TOML");
    assert_eq!(decisions["pair"].as_array().map(Vec::len), Some(1), "one decision per pair");
    assert_eq!(decisions["pair"][0]["decision"].as_str(), Some("merge"));
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--data-dir", "data", "--quiet"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(
        stdout.contains(&format!("merged: patients patients.csv:{near_line} [{near_key}] into patients.csv:2 [P00001] (score"))
            && stdout.contains("[merged on review: merge decided by B. Analyst"),
        "{stdout}"
    );
    let report = read_json(&dir.join("proj/reports/dry-run.json"));
    assert_eq!(report["reviews"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["totals"]["merged"].as_u64(), Some(2), "the duplicate and the reviewed pair");
    assert_eq!(converted(&report), converted(&before) - 1);
    let merge = report["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .find(|m| m["record"]["key"] == near_key.as_str())
        .expect("the reviewed merge");
    assert_eq!((merge["into"]["key"].as_str(), merge["pair"].as_str()), (Some("P00001"), Some(pair.as_str())));
    assert_eq!((merge["decision"]["decision"].as_str(), merge["decision"]["by"].as_str()), (Some("merge"), Some("B. Analyst")));
    assert!(report["merges"].as_array().expect("merges").iter().any(|m| m["decision"].is_null()), "the automatic merge");
    let issue = report["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .find(|i| i["key"] == near_key.as_str() && i["kind"] == "merged-duplicate")
        .expect("the merge is reported on the record");
    assert_eq!(issue["disposition"], "merged");
    assert!(issue["message"].as_str().expect("message").contains("merged on review (merge decided by B. Analyst"), "{issue}");
    let reconciliation = read_json(&dir.join("proj/reports/reconciliation.json"));
    assert_eq!((reconciliation["balanced"].as_bool(), reconciliation["proved"].as_bool()), (Some(true), Some(true)));
    let html = std::fs::read_to_string(dir.join("proj/reports/reconciliation.html")).expect("page");
    assert!(html.contains("<h2>Patients merged (2)</h2>") && html.contains("merge by B. Analyst at "), "decided merges in the page");
    assert!(html.contains("<h2>Patient pairs pending review (never merged) (0)</h2>"));
    {
        let server = crate::bearer::serve(&dir.join("data"), &[]);
        let base = &server.base;
        let id = |key: &str| migrate::convert::resource_id("patients", key, "");
        assert_eq!(get(&format!("{base}/Patient/{}", id(&near_key))).await.0, 404, "not created");
        let (status, survivor) = get(&format!("{base}/Patient/{}", id("P00001"))).await;
        assert_eq!(status, 200);
        assert!(
            survivor["identifier"].as_array().expect("ids").iter().any(|i| i["value"] == near_key.as_str() && i["use"] == "old"),
            "{survivor}"
        );
    }

    // An automatic merge kept apart on review: the duplicate then loads as
    // its own patient (its medication refers to it again).
    let dup_pair = report_merge_pair(&read_json(&dir.join("proj/reports/dry-run.json")), "P00002");
    let (ok, stdout, stderr) = hearth(&["migrate", "review", "proj", "--keep-separate", &dup_pair, "--by", "C"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--dry-run"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    let report = read_json(&dir.join("proj/reports/dry-run.json"));
    assert_eq!(report["totals"]["merged"].as_u64(), Some(1), "only the reviewed merge");
    assert_eq!(report["reviews"][0]["pair"].as_str(), Some(dup_pair.as_str()));
    assert_eq!(report["reviews"][0]["decision"]["decision"], "separate");
    assert!(!report["issues"].as_array().expect("issues").iter().any(|i| i["kind"] == "redirected"));
    let (ok, _, _) = hearth(&["migrate", "review", "proj", "--reopen", &dup_pair], dir);
    assert!(ok);

    // A decision about a pair that does not exist is stale: reported, never applied.
    let mut text = std::fs::read_to_string(dir.join("proj/review.toml")).expect("file");
    text.push_str("\n[[pair]]\nrecord = { table = \"patients\", key = \"P00003\" }\nwith = { table = \"patients\", key = \"P99999\" }\ndecision = \"merge\"\nby = \"C\"\nat = \"2026-11-30T00:00:00Z\"\n");
    std::fs::write(dir.join("proj/review.toml"), &text).expect("write");
    let stale_line = text.lines().count() - 5;
    let (ok, stdout, stderr) = hearth(&["migrate", "run", "proj", "--dry-run"], dir);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains(&format!("review.toml:{stale_line}: pair ")) && stdout.contains("merge decision is stale"), "{stdout}");
    let report = read_json(&dir.join("proj/reports/dry-run.json"));
    assert_eq!(report["review"]["stale"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["review"]["stale"][0]["with"]["key"], "P99999");
    assert_eq!(report["totals"]["merged"].as_u64(), Some(2), "nothing else merged");
    let stale = report["review"]["stale"][0]["pair"].as_str().expect("id").to_owned();
    let (ok, listing, _) = hearth(&["migrate", "review", "proj"], dir);
    assert!(ok && listing.contains(&format!("pair {stale} ")) && listing.contains("stale"), "{listing}");
    let (ok, stdout, stderr) = hearth(&["migrate", "review", "proj", "--reopen", &stale], dir);
    assert!(ok && stdout.contains(&format!("reopened: pair {stale}")), "{stderr}\n{stdout}");
    let text = std::fs::read_to_string(dir.join("proj/review.toml")).expect("file");
    assert!(!text.contains("P99999") && text.contains(&pair), "{text}");

    // Bad input is named: an unknown pair, a malformed file.
    let (ok, _, stderr) = hearth(&["migrate", "review", "proj", "--merge", "ffffffff", "--by", "X"], dir);
    assert!(!ok && stderr.contains("pair ffffffff: no pair of this run has that id"), "{stderr}");
    std::fs::write(dir.join("proj/review.toml"), "[[pair]]\nrecord = { table = \"patients\" }\n").expect("write");
    let (ok, _, stderr) = hearth(&["migrate", "run", "proj", "--dry-run"], dir);
    assert!(!ok && stderr.contains("review.toml:") , "{stderr}");
}

/// The pair id of the merge into the record of key `into`.
fn report_merge_pair(report: &serde_json::Value, into: &str) -> String {
    report["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .find(|m| m["into"]["key"] == into)
        .and_then(|m| m["pair"].as_str())
        .expect("a merge into it")
        .to_owned()
}
