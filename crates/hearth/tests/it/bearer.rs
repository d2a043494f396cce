//! Bearer tokens for the tests' servers: every /fhir request but
//! `GET /fhir/metadata` needs one. [`serve`] starts `hearth serve` after
//! [`prepare`] (a backend client is registered on the store with
//! `hearth admin client add`, before the server holds the store) and calls
//! [`remember`] once the server printed its base URL; [`authorized`] then
//! adds the token that client gets by client credentials (fetched once per
//! server).

use auth::jwt::ClientKey;
use reqwest::RequestBuilder;
use std::path::{Path, PathBuf};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

const BIN: &str = env!("CARGO_BIN_EXE_hearth");

/// A client registered on a data directory: (data directory, client id, key).
type Registered = (PathBuf, String, Arc<ClientKey>);

/// Clients registered for servers about to start.
static PENDING: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
/// (base URL, client, token once fetched) of the servers started.
static SERVERS: Mutex<Vec<(String, Registered, Option<String>)>> = Mutex::new(Vec::new());

/// Registers a backend client (`system/*.cruds`) on `data_dir` with the CLI,
/// for the server about to start there.
pub(crate) fn prepare(data_dir: &Path) {
    let key = ClientKey::generate("test");
    let client_id = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let keys = tempfile::tempdir().expect("temporary directory");
    let jwks = keys.path().join("jwks.json");
    std::fs::write(&jwks, key.public_jwks().to_string()).expect("write the JWK set");
    let output = Command::new(BIN)
        .args(["admin", "client", "add", "--client-id", &client_id, "--kind", "backend", "--scopes", "system/*.cruds", "--jwks-file"])
        .arg(&jwks)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("HEARTH_DATABASE_URL")
        .env_remove("HEARTH_DB_KEY")
        .output()
        .expect("hearth admin client add runs");
    assert!(output.status.success(), "client registration failed: {}", String::from_utf8_lossy(&output.stderr));
    PENDING.lock().expect("the pending keys").push((data_dir.to_path_buf(), client_id, Arc::new(key)));
}

/// Notes the `hearth serve` child at `base` on `data_dir` (after [`prepare`]).
pub(crate) fn remember(base: &str, data_dir: &Path) {
    let mut pending = PENDING.lock().expect("the pending keys");
    if let Some(at) = pending.iter().rposition(|(dir, _, _)| dir == data_dir) {
        let registered = pending.remove(at);
        SERVERS.lock().expect("the servers").push((base.to_string(), registered, None));
    }
}

/// The request with the bearer token of the server its URL is on (unchanged
/// when the server was not remembered).
pub(crate) async fn authorized(request: RequestBuilder) -> RequestBuilder {
    let Some(url) = request.try_clone().and_then(|r| r.build().ok()).map(|r| r.url().to_string()) else { return request };
    let found = SERVERS.lock().expect("the servers").iter().rev().find(|(base, _, _)| url.starts_with(base.as_str())).cloned();
    let Some((base, (_, client_id, key), token)) = found else { return request };
    let token = match token {
        Some(token) => token,
        None => {
            let root = base.trim_end_matches('/').trim_end_matches("/fhir");
            let token = client_credentials(&format!("{root}/oauth2/token"), &client_id, &key).await;
            for entry in SERVERS.lock().expect("the servers").iter_mut().filter(|(b, _, _)| *b == base) {
                entry.2 = Some(token.clone());
            }
            token
        }
    };
    request.bearer_auth(token)
}

/// Client credentials with a signed assertion: the access token.
async fn client_credentials(token_url: &str, client_id: &str, key: &ClientKey) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let assertion = key.assertion(client_id, token_url, now).expect("assertion");
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "system/*.cruds"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", assertion.as_str()),
    ];
    let response = reqwest::Client::new().post(token_url).form(&form).send().await.expect("token request");
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("token response");
    assert_eq!(status.as_u16(), 200, "no token: {body}");
    body["access_token"].as_str().expect("access_token").to_string()
}

/// A token for an in-process server's Auth: a backend client with every
/// `system/` scope, cleared for restricted records and administration.
pub(crate) async fn in_process(auth: &auth::Auth) -> String {
    let key = auth::jwt::ClientKey::generate("test");
    let client_id = "test-in-process";
    let new = auth::clients::NewClient {
        client_id: client_id.into(),
        kind: Some(auth::clients::ClientKind::Backend),
        scopes: "system/*.cruds".into(),
        jwks: Some(key.public_jwks()),
        administer: true,
        restricted_access: true,
        ..auth::clients::NewClient::default()
    };
    let by = domain::audit::AuditActor { kind: "system".into(), id: "test".into(), role: None, client: None };
    auth.register_client(new, by).await.expect("register the test client");
    client_credentials(&auth.endpoints().token, client_id, &key).await
}

/// A running `hearth serve`, killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hearth serve` on a free loopback port and waits for its address.
pub(crate) fn serve(data_dir: &Path, extra: &[&str]) -> Server {
    prepare(data_dir);
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env_remove("HEARTH_DATABASE_URL")
        .env_remove("HEARTH_DB_KEY")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("hearth serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().expect("server printed its address").expect("readable");
        if let Some(rest) = line.split("serving FHIR R4 at ").nth(1) {
            break rest.split_whitespace().next().expect("url").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    remember(&base, data_dir);
    Server { child, base }
}
