//! `hearth admin client add|list` as an administrator runs them: keys from a
//! JWK set file, secrets from standard input, refusals that name the problem.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_hearth");

fn admin(data: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(["admin", "client"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("HEARTH_DATABASE_URL")
        .env_remove("HEARTH_DB_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hearth admin client runs");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("finishes");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn clients_are_added_with_keys_or_secrets_and_listed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let jwks = tmp.path().join("jwks.json");
    std::fs::write(&jwks, auth::jwt::ClientKey::generate("k1").public_jwks().to_string()).expect("write jwks");
    let jwks_arg = jwks.to_str().expect("utf-8 path");

    let (ok, out, err) = admin(&data, &["add", "--client-id", "bulk", "--kind", "backend", "--scopes", "system/*.rs", "--jwks-file", jwks_arg], None);
    assert!(ok, "{err}");
    assert!(out.contains("registered backend client bulk"), "{out}");
    let secret = "correct-horse-battery-staple\n";
    let (ok, _, err) = admin(
        &data,
        &["add", "--client-id", "portal", "--kind", "confidential", "--scopes", "launch patient/*.rs openid", "--redirect-uri", "https://portal.example/cb", "--secret-stdin"],
        Some(secret),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = admin(&data, &["add", "--client-id", "growth", "--kind", "public", "--scopes", "launch/patient patient/Observation.rs"], None);
    assert!(!ok && err.contains("redirect URI"), "an app needs a redirect URI: {err}");
    let (ok, _, err) = admin(&data, &["add", "--client-id", "bulk", "--kind", "backend", "--scopes", "system/*.rs", "--jwks-file", jwks_arg], None);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = admin(&data, &["add", "--client-id", "odd", "--kind", "backend", "--scopes", "system/Nonsense.rs", "--jwks-file", jwks_arg], None);
    assert!(!ok && err.contains("Nonsense"), "{err}");

    let (ok, out, err) = admin(&data, &["list"], None);
    assert!(ok, "{err}");
    assert!(out.contains("bulk\tbackend\tprivate_key_jwt\tsystem/*.rs"), "{out}");
    assert!(out.contains("portal\tconfidential\tclient_secret_basic"), "{out}");
    assert!(!out.contains("correct-horse"), "the secret is never shown: {out}");
    assert!(!out.contains("growth"), "{out}");
}
