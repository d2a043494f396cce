//! Encryption at rest, end to end: `hearth serve` on a fresh data directory
//! creates its key file; a Patient and a Binary written over HTTP leave no
//! trace in clear in any file of the data directory (WAL included, after a
//! clean stop and after `kill -9`); `hearth admin rotate-key` re-keys a
//! stopped store, which then serves the same data.

use crate::bearer::serve;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hearth");

const FAMILY: &str = "Zyxwvutsrqfamily";
const IDENTIFIER: &str = "ID-9876543210-UNIQUE";
/// The Binary's content, in clear and as the base64 a client sends.
const ATTACHMENT: &str = "Attachment-secret-content-Qz7Xw";

/// Whatever a request needs to be let in: the server's bearer token.
async fn authorized(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    crate::bearer::authorized(request).await
}

async fn post(base: &str, resource: Value) -> Value {
    let resource_type = resource["resourceType"].as_str().expect("type").to_string();
    let response = authorized(reqwest::Client::new().post(format!("{base}/{resource_type}")))
        .await
        .header("Content-Type", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .await
        .expect("create");
    assert_eq!(response.status().as_u16(), 201, "create {resource_type}");
    response.json().await.expect("json")
}

async fn get(url: &str) -> (u16, Value) {
    let response = authorized(reqwest::Client::new().get(url)).await.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What must not be found at rest: the names and identifier as sent and as
/// the word index would keep them, the attachment in clear, its base64 as
/// sent and the base64 of it at the other two alignments (however a larger
/// text around it would have been encoded).
fn needles() -> Vec<String> {
    let mut needles = vec![
        FAMILY.to_string(),
        FAMILY.to_lowercase(),
        IDENTIFIER.to_string(),
        IDENTIFIER.to_lowercase(),
        "9876543210".to_string(),
        ATTACHMENT.to_string(),
    ];
    for shift in 0..3 {
        let padded = format!("{}{ATTACHMENT}", &"xx"[..shift]);
        let encoded = base64(padded.as_bytes());
        // Skip the characters that depend on the prefix and the padding.
        let stable = &encoded[(shift * 4).div_ceil(3)..encoded.len() - 4];
        needles.push(stable.to_string());
    }
    needles
}

/// Reads every file under `dir` but the key file and asserts that none
/// holds any needle; returns how many files were read.
fn assert_nothing_in_clear(dir: &Path) -> usize {
    let needles = needles();
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.file_name().is_some_and(|n| n == "hearth.key") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("read file");
            files += 1;
            for needle in &needles {
                let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
                assert!(!found, "{} holds {needle:?} in clear", path.display());
            }
        }
    }
    files
}

/// Writes the distinctive Patient and Binary; returns their ids.
async fn write_distinctive(base: &str) -> (String, String) {
    let patient = post(base, json!({
        "resourceType": "Patient",
        "identifier": [{"system": "https://hospital.example/mrn", "value": IDENTIFIER}],
        "name": [{"family": FAMILY, "given": ["Test"]}],
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{FAMILY} {IDENTIFIER}</div>")},
    }))
    .await;
    let binary = post(
        base,
        json!({
            "resourceType": "Binary",
            "contentType": "text/plain",
            "data": base64(ATTACHMENT.as_bytes()),
        }),
    )
    .await;
    (patient["id"].as_str().expect("id").to_string(), binary["id"].as_str().expect("id").to_string())
}

async fn assert_readable(base: &str, patient: &str, binary: &str) {
    let (status, body) = get(&format!("{base}/Patient/{patient}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"][0]["family"], FAMILY);
    let (status, body) = get(&format!("{base}/Binary/{binary}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], base64(ATTACHMENT.as_bytes()));
    let (status, bundle) = get(&format!("{base}/Patient?identifier={IDENTIFIER}")).await;
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(bundle["entry"][0]["resource"]["id"], patient);
}

#[tokio::test]
async fn a_copy_of_the_data_directory_without_the_key_reveals_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let mut server = serve(&data, &[]);
    let key_file = data.join("hearth.key");
    let mode = std::fs::metadata(&key_file).expect("key file created on first start").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "key file mode");
    let (patient, binary) = write_distinctive(&server.base).await;
    assert_readable(&server.base, &patient, &binary).await;
    // A clean stop (SIGTERM).
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "hearth serve stops cleanly on SIGTERM: {status}");
    let files = assert_nothing_in_clear(&data);
    assert!(files >= 1, "the database file was read");

    // The data is all there for a server with the key.
    let server = serve(&data, &[]);
    assert_readable(&server.base, &patient, &binary).await;
}

#[tokio::test]
async fn nothing_in_clear_after_kill_9_with_the_wal_unmerged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let mut server = serve(&data, &[]);
    let (patient, binary) = write_distinctive(&server.base).await;
    // Killed at once: the commits are in the WAL, not yet in the database file.
    server.child.kill().expect("kill -9");
    server.child.wait().expect("wait");
    let wal = data.join("hearth.db-wal");
    assert!(wal.exists() && std::fs::metadata(&wal).expect("wal").len() > 0, "the WAL is left behind");
    assert_nothing_in_clear(&data);

    let server = serve(&data, &[]);
    assert_readable(&server.base, &patient, &binary).await;
}

#[tokio::test]
async fn rotate_key_rekeys_a_stopped_store_and_refuses_a_running_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let key_file = data.join("hearth.key");
    let (patient, binary) = {
        let server = serve(&data, &[]);
        let ids = write_distinctive(&server.base).await;
        // While a server runs, rotation refuses.
        let refused = Command::new(BIN).args(["admin", "rotate-key", "--data-dir"]).arg(&data).output().expect("run");
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("another Hearth process"), "{stderr}");
        ids
    };
    let before = std::fs::read_to_string(&key_file).expect("key file");
    let rotated = Command::new(BIN)
        .args(["admin", "rotate-key", "--data-dir"])
        .arg(&data)
        .env_remove("HEARTH_DB_KEY")
        .output()
        .expect("run rotate-key");
    let stdout = String::from_utf8_lossy(&rotated.stdout);
    assert!(rotated.status.success(), "{stdout}{}", String::from_utf8_lossy(&rotated.stderr));
    assert!(stdout.contains("re-keyed") && stdout.contains("1 Binary versions re-sealed"), "{stdout}");
    let after = std::fs::read_to_string(&key_file).expect("key file");
    let line = |text: &str, name: &str| text.lines().find(|l| l.starts_with(name)).map(str::to_string);
    assert_ne!(line(&before, "database"), line(&after, "database"));
    assert_ne!(line(&before, "attachments"), line(&after, "attachments"));
    assert_eq!(line(&before, "audit"), line(&after, "audit"), "the audit-chain key is kept");
    let mode = std::fs::metadata(&key_file).expect("key file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_nothing_in_clear(&data);

    let server = serve(&data, &[]);
    assert_readable(&server.base, &patient, &binary).await;
    drop(server);

    // The old key file no longer opens the store.
    std::fs::write(&key_file, before).expect("restore the old key file");
    let old = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("HEARTH_DB_KEY")
        .output()
        .expect("run serve");
    assert!(!old.status.success());
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert!(stderr.contains("the database key does not open"), "{stderr}");
}

#[tokio::test]
async fn a_key_file_others_can_read_stops_the_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    drop(serve(&data, &[]));
    let key_file = data.join("hearth.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("HEARTH_DB_KEY")
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("may be read by group or others") && stderr.contains("chmod 600"), "{stderr}");
}

/// A key file written before the page format was recorded (no
/// `database_page_size` / `database_hmac` lines): Hearth creates and reopens
/// its database in SQLCipher's default format (4 KiB pages, HMAC-SHA512), so
/// the databases such key files made keep opening. A new key file's
/// database does not open in that format.
#[test]
fn a_key_file_without_the_format_lines_keeps_sqlciphers_default_format() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("input.ndjson");
    std::fs::write(&input, json!({"resourceType": "Patient", "id": "fmt-1"}).to_string()).expect("write");
    let import = |data: &Path| {
        let output = Command::new(BIN)
            .args(["import", "--quiet", "--data-dir"])
            .arg(data)
            .arg(&input)
            .env_remove("HEARTH_DATABASE_URL")
            .env_remove("HEARTH_DB_KEY")
            .output()
            .expect("import runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    let key = "ab".repeat(32);
    let opens_in_default_format = |data: &Path| {
        let conn = rusqlite::Connection::open(data.join("hearth.db")).expect("open");
        conn.execute_batch(&format!("PRAGMA key = \"x'{key}'\";")).expect("key");
        conn.query_row("SELECT COUNT(*) FROM resource", [], |r| r.get::<_, i64>(0)).ok()
    };
    let old = tmp.path().join("old");
    std::fs::create_dir(&old).expect("mkdir");
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let key_file = old.join("hearth.key");
    let other = "cd".repeat(32);
    std::fs::write(&key_file, format!("version = 1\ndatabase = \"{key}\"\nattachments = \"{other}\"\naudit = \"{other}\"\n"))
        .expect("key file");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    import(&old);
    import(&old); // reopened in the same format
    assert_eq!(opens_in_default_format(&old), Some(1));

    // A new key file: the database is in the recorded format, not the default.
    let new = tmp.path().join("new");
    import(&new);
    let text = std::fs::read_to_string(new.join("hearth.key")).expect("key file");
    assert!(text.contains("database_hmac = \"HMAC_SHA256\""), "{text}");
    let own_key = text.lines().find_map(|l| l.strip_prefix("database = \"")?.strip_suffix('"')).expect("key").to_string();
    let count_with = |settings: &str| {
        let conn = rusqlite::Connection::open(new.join("hearth.db")).expect("open");
        conn.execute_batch(&format!("PRAGMA key = \"x'{own_key}'\"; {settings}")).expect("key");
        conn.query_row("SELECT COUNT(*) FROM resource", [], |r| r.get::<_, i64>(0)).ok()
    };
    assert_eq!(count_with(""), None, "not in the default format");
    assert_eq!(count_with("PRAGMA cipher_hmac_algorithm = HMAC_SHA256;"), Some(1));
}
