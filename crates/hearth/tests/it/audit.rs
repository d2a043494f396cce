//! `hearth audit verify|report|checkpoint` on a real (encrypted) SQLite data
//! directory, and tampering done the way an attacker with the database file
//! and its key (but not the audit key) would: the verify command finds it.

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_hearth");

fn hearth(args: &[&str], data: &Path) -> Output {
    Command::new(BIN).args(args).arg("--data-dir").arg(data).env_remove("HEARTH_DATABASE_URL").output().expect("hearth runs")
}

/// A data directory holding two patients and an observation, imported by `hearth import`.
fn imported(root: &Path) -> std::path::PathBuf {
    let input = root.join("input.ndjson");
    let lines = [
        json!({"resourceType": "Patient", "id": "aud-1", "name": [{"family": "Audited"}]}).to_string(),
        json!({"resourceType": "Patient", "id": "aud-2", "name": [{"family": "Other"}]}).to_string(),
        json!({"resourceType": "Observation", "id": "aud-o", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/aud-1"}}).to_string(),
    ];
    std::fs::write(&input, lines.join("\n")).expect("write");
    let data = root.join("data");
    for file in [&input, &input] {
        // Twice: the second import writes new versions, so the trail has several entries.
        let output = Command::new(BIN)
            .args(["import", "--quiet", "--batch-size", "1", "--data-dir"])
            .arg(&data)
            .arg(file)
            .env_remove("HEARTH_DATABASE_URL")
            .output()
            .expect("import runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    data
}

/// Opens the encrypted database as an attacker holding the database key
/// would, without the guards that refuse changes to the audit trail.
fn open_db(data: &Path) -> rusqlite::Connection {
    let conn = crate::open_database(data);
    conn.execute_batch("DROP TRIGGER audit_entry_no_update; DROP TRIGGER audit_entry_no_delete;").expect("drop the guards");
    conn
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn verify_and_report_an_intact_trail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = imported(tmp.path());

    let verified = hearth(&["audit", "verify"], &data);
    assert!(verified.status.success(), "{}{}", stdout(&verified), stderr(&verified));
    assert!(stdout(&verified).contains("audit trail intact"), "{}", stdout(&verified));
    assert!(data.join("audit.checkpoints").exists(), "verify leaves a checkpoint");

    let csv = hearth(&["audit", "report", "--format", "csv", "--sort", "time", "--desc"], &data);
    assert!(csv.status.success(), "{}", stderr(&csv));
    let text = stdout(&csv);
    let mut lines = text.lines();
    assert!(lines.next().expect("header").starts_with("seq,recorded,user,"));
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() >= 7, "6 loads and the verify: {text}");
    // Newest first by the recorded time, equal times by number. (Entries of
    // concurrent commits, such as the import's two batches in flight, are
    // numbered in commit order, which need not be the order of their times.)
    let keys: Vec<(fhir::instant::Instant, u64)> = rows
        .iter()
        .map(|r| {
            let mut fields = r.split(',');
            let seq = fields.next().expect("seq").parse().expect("number");
            let recorded = fhir::instant::Instant::parse(fields.next().expect("recorded")).expect("an instant");
            (recorded, seq)
        })
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0].0 > w[1].0 || (w[0].0 == w[1].0 && w[0].1 < w[1].1)),
        "newest first: {keys:?}"
    );
    assert!(text.contains("hearth import"));

    let json = hearth(&["audit", "report", "--format", "json", "--patient", "aud-1", "--event", "create"], &data);
    assert!(json.status.success(), "{}", stderr(&json));
    let entries: Vec<Value> = serde_json::from_str(&stdout(&json)).expect("a JSON array");
    assert!(!entries.is_empty());
    for entry in &entries {
        assert!(entry["patients"].as_array().expect("patients").contains(&json!("aud-1")), "{entry}");
        assert_eq!(entry["event"], "create");
    }
    let other = hearth(&["audit", "report", "--format", "json", "--patient", "aud-2"], &data);
    let others: Vec<Value> = serde_json::from_str(&stdout(&other)).expect("a JSON array");
    assert!(others.len() < entries.len() + 3, "filtered by patient");

    let bad = hearth(&["audit", "report", "--sort", "colour"], &data);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--sort"), "{}", stderr(&bad));
}

#[test]
fn verify_names_the_first_changed_or_missing_entry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = imported(tmp.path());
    let conn = open_db(&data);
    conn.execute("UPDATE audit_entry SET record = replace(record, 'hearth import', 'someone else') WHERE seq = 2", [])
        .expect("tamper");
    drop(conn);
    let verified = hearth(&["audit", "verify"], &data);
    assert_eq!(verified.status.code(), Some(1));
    assert!(stderr(&verified).contains("BROKEN at entry 2"), "{}", stderr(&verified));

    let tmp = tempfile::tempdir().expect("tempdir");
    let data = imported(tmp.path());
    let conn = open_db(&data);
    conn.execute("DELETE FROM audit_entry WHERE seq = 3", []).expect("tamper");
    drop(conn);
    let verified = hearth(&["audit", "verify"], &data);
    assert_eq!(verified.status.code(), Some(1));
    assert!(stderr(&verified).contains("BROKEN at entry 3"), "{}", stderr(&verified));
}

#[test]
fn a_checkpoint_reveals_a_truncated_trail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = imported(tmp.path());
    let written = hearth(&["audit", "checkpoint"], &data);
    assert!(written.status.success(), "{}", stderr(&written));
    assert!(stdout(&written).contains("checkpoint at entry"), "{}", stdout(&written));
    let conn = open_db(&data);
    let last: i64 = conn.query_row("SELECT max(seq) FROM audit_entry", [], |r| r.get(0)).expect("max");
    conn.execute("DELETE FROM audit_entry WHERE seq >= ?1", [last - 1]).expect("cut the tail");
    drop(conn);
    let verified = hearth(&["audit", "verify"], &data);
    assert_eq!(verified.status.code(), Some(1));
    assert!(stderr(&verified).contains("truncated"), "{}", stderr(&verified));

    // A forged checkpoint line is refused, not trusted.
    let path = data.join("audit.checkpoints");
    let text = std::fs::read_to_string(&path).expect("checkpoints");
    std::fs::write(&path, text.replacen(' ', " 0", 1)).expect("forge");
    let verified = hearth(&["audit", "verify"], &data);
    assert!(!verified.status.success());
    assert!(stderr(&verified).contains("seal") || stderr(&verified).contains("checkpoint"), "{}", stderr(&verified));
}
