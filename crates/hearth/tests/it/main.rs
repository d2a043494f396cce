//! End-to-end tests of the `hearth` binary: the README's commands against a
//! real SQLite data directory and real HTTP over loopback, plus tidy checks
//! of the repository itself.

mod admin;
mod admin_client;
mod audit;
mod bearer;
mod cli;
mod encryption;
mod migrate;
mod roundtrip;
mod synth;
mod tidy;
mod tls;

/// Opens a data directory's encrypted database directly (not through the
/// store, which would repair what a test looks for), with the key and page
/// layout of its key file.
fn open_database(data: &std::path::Path) -> rusqlite::Connection {
    let keys = std::fs::read_to_string(data.join("hearth.key")).expect("key file");
    let database = keys
        .lines()
        .find_map(|l| l.strip_prefix("database = \"").and_then(|r| r.strip_suffix('"')))
        .expect("database key");
    // The pages' layout is recorded beside the key (absent: SQLCipher's defaults).
    let setting = |name: &str, default: &str| {
        keys.lines().find_map(|l| l.strip_prefix(name)).map_or(default.to_string(), |v| v.trim_matches('"').to_string())
    };
    let page_size = setting("database_page_size = ", "4096");
    let hmac = setting("database_hmac = ", "HMAC_SHA512");
    let conn = rusqlite::Connection::open(data.join("hearth.db")).expect("open");
    conn.execute_batch(&format!(
        "PRAGMA key = \"x'{database}'\"; PRAGMA cipher_page_size = {page_size}; PRAGMA cipher_hmac_algorithm = {hmac};"
    ))
    .expect("key");
    conn
}
