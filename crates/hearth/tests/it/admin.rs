//! `hearth admin user ...` and `hearth admin role list`, run as an
//! administrator would, on a real SQLite data directory.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_hearth");
const PASSWORD: &str = "Tulip-orbit-Quarry7";

struct Run {
    ok: bool,
    out: String,
    err: String,
}

/// Runs `hearth admin ARGS --data-dir DATA`, feeding `stdin`.
fn admin(data: &Path, args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(BIN)
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("HEARTH_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hearth runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("hearth ends");
    Run {
        ok: output.status.success(),
        out: String::from_utf8_lossy(&output.stdout).into_owned(),
        err: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The cells of the `user list` row of `username`.
fn row(list: &str, username: &str) -> Vec<String> {
    list.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(username))
        .unwrap_or_else(|| panic!("no row for {username} in:\n{list}"))
}

#[test]
fn users_are_added_listed_disabled_and_reset_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let password = format!("{PASSWORD}\n");

    let run = admin(&data, &["user", "add", "--username", "nina", "--role", "nurse"], &password);
    assert!(!run.ok);
    assert!(run.err.contains("--password-stdin"), "{}", run.err);
    let run = admin(&data, &["user", "add", "--username", "nina", "--role", "nurse", "--password-stdin"], "short\n");
    assert!(!run.ok);
    assert!(run.err.contains("the password must be at least 12 characters long"), "{}", run.err);
    let run = admin(&data, &["user", "add", "--username", "nina", "--role", "surgeon", "--password-stdin"], &password);
    assert!(!run.ok);
    assert!(run.err.contains("no role named \"surgeon\""), "{}", run.err);

    let run = admin(&data, &["user", "add", "--username", "nina", "--role", "nurse", "--password-stdin"], &password);
    assert!(run.ok, "{}", run.err);
    assert_eq!(run.out.trim(), "added user nina with role nurse");
    let args = ["user", "add", "--username", "pat", "--role", "patient", "--patient", "p1", "--password-stdin"];
    assert!(admin(&data, &args, &password).ok);
    let run = admin(&data, &["user", "add", "--username", "root", "--role", "admin", "--password-stdin"], &password);
    assert!(run.ok, "{}", run.err);
    assert!(run.out.contains("requires a second factor: hearth admin user enrol-totp root"), "{}", run.out);
    let run = admin(&data, &["user", "add", "--username", "Nina", "--role", "nurse", "--password-stdin"], &password);
    assert!(!run.ok);
    assert!(run.err.contains("a user named \"nina\" already exists"), "{}", run.err);

    let run = admin(&data, &["user", "list"], "");
    assert!(run.ok, "{}", run.err);
    assert_eq!(
        run.out.lines().next().map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["USERNAME", "ROLE", "PATIENT", "MFA", "DISABLED", "LOCKED"])
    );
    assert_eq!(row(&run.out, "nina"), ["nina", "nurse", "-", "no", "no", "no"]);
    assert_eq!(row(&run.out, "pat"), ["pat", "patient", "p1", "no", "no", "no"]);
    assert!(!run.out.contains("argon2"), "no hash is shown");

    let run = admin(&data, &["user", "disable", "nina"], "");
    assert!(run.ok, "{}", run.err);
    assert_eq!(row(&admin(&data, &["user", "list"], "").out, "nina"), ["nina", "nurse", "-", "no", "yes", "no"]);
    let run = admin(&data, &["user", "disable", "ghost"], "");
    assert!(!run.ok);
    assert!(run.err.contains("no user named \"ghost\""), "{}", run.err);

    let run = admin(&data, &["user", "enrol-totp", "root"], "");
    assert!(run.ok, "{}", run.err);
    assert!(run.out.contains("uri: otpauth://totp/Hearth:root?secret="), "{}", run.out);
    assert_eq!(row(&admin(&data, &["user", "list"], "").out, "root")[3], "yes");
    assert!(admin(&data, &["user", "reset-mfa", "root"], "").ok);
    assert_eq!(row(&admin(&data, &["user", "list"], "").out, "root")[3], "no");

    let run = admin(&data, &["user", "set-role", "nina", "--role", "patient"], "");
    assert!(!run.ok, "role patient needs a patient");
    assert!(run.err.contains("role patient needs the id of the user's Patient resource"), "{}", run.err);
    let run = admin(&data, &["user", "set-role", "nina", "--role", "physician"], "");
    assert!(run.ok, "{}", run.err);
    assert_eq!(row(&admin(&data, &["user", "list"], "").out, "nina")[1], "physician");
    let run = admin(&data, &["user", "revoke-sessions", "nina"], "");
    assert!(run.ok, "{}", run.err);
    assert_eq!(run.out.trim(), "ended 0 web sessions of user nina");
}

#[test]
fn roles_are_listed_with_their_tables_and_settings() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("hearth.toml");
    std::fs::write(
        &config,
        "[security]\nmfa_roles = [\"admin\", \"scheduler\"]\n\n[security.roles]\nscheduler = { Appointment = \"crus\", Patient = \"rs\" }\n",
    )
    .expect("config written");
    let output = Command::new(BIN)
        .args(["admin", "role", "list", "--config"])
        .arg(&config)
        .env_remove("HEARTH_DATABASE_URL")
        .output()
        .expect("hearth runs");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(out.contains("physician (built-in): MFA not required, break-the-glass group yes"), "{out}");
    assert!(out.contains("admin (built-in): MFA required, break-the-glass group no"), "{out}");
    assert!(
        out.contains("auditor (built-in): MFA not required, break-the-glass group no\n  rs     AuditEvent\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "scheduler (custom): MFA required, break-the-glass group no\n  crus   Appointment\n  rs     Patient\n"
        ),
        "{out}"
    );
    let order: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(
        order,
        ["physician", "nurse", "front-desk", "biller", "lab", "admin", "auditor", "patient", "scheduler"]
    );

    std::fs::write(&config, "[security.roles]\nscheduler = { Apointment = \"crus\" }\n").expect("config written");
    let output = Command::new(BIN).args(["admin", "role", "list", "--config"]).arg(&config).output().expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"Apointment\" is not an R4 resource type"));
}
