//! Test server and client helpers, and the backend runners: the suites
//! that touch storage run once per backend (in-memory reference, SQLite in a
//! temporary directory, PostgreSQL in a schema of their own), stamped out by
//! [`per_backend!`].

use api::{ApiConfig, AppState};
use async_trait::async_trait;
use auth::clients::{ClientKind, NewClient};
use auth::roles::Roles;
use auth::users::{UserSettings, Users};
use auth::{Auth, AuthConfig};
use domain::Service;
use domain::audit::{AuditActor, AuditEntry, AuditQuery};
use domain::memory::MemoryStore;
use domain::service::{Clock, SystemClock};
use domain::store::{
    Commit, HistoryQuery, HistoryScope, Page, ResourceKey, Store, StoreError, StoredResource, SysRecord,
};
use fhir::search::query::SearchQuery;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use store::postgres::PostgresStore;
use store::sqlite::{SqliteOptions, SqliteStore};

/// Body limit of the test servers: small, so 413 is cheap to provoke.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// The backend client every test server registers: SMART Backend Services
/// with every `system/` scope, administration rights and clearance for
/// restricted records, so that the suite acts with a real token minted by
/// the real token endpoint.
pub(crate) const SUITE_CLIENT: &str = "hearth-test-suite";
pub(crate) const SUITE_SCOPES: &str = "system/*.cruds system/AuditEvent.rs";

pub(crate) struct Server {
    /// `http://127.0.0.1:port/fhir`
    pub(crate) base: String,
    /// `http://127.0.0.1:port`
    pub(crate) root: String,
    pub(crate) addr: std::net::SocketAddr,
    /// Sends the suite client's bearer token with every request.
    pub(crate) client: reqwest::Client,
    /// The suite client's access token (for raw requests).
    pub(crate) token: String,
    pub(crate) auth: Arc<Auth>,
    /// The Service behind the API (to flush the queued read audit entries).
    pub(crate) service: Arc<Service>,
}

/// A clock tests can move (token expiry).
#[derive(Debug, Default)]
pub(crate) struct TestClock {
    /// Microseconds added to the wall clock.
    pub(crate) ahead: AtomicU64,
}

impl TestClock {
    pub(crate) fn advance_seconds(&self, seconds: u64) {
        self.ahead.fetch_add(seconds * 1_000_000, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> fhir::instant::Instant {
        let now = fhir::instant::Instant::now();
        fhir::instant::Instant(now.0 + self.ahead.load(Ordering::SeqCst) as i64)
    }
}

/// The suite client's ES384 key pair, made once per test process: (PKCS#8 DER, public JWK set).
fn suite_key() -> &'static (Vec<u8>, Value) {
    static KEY: OnceLock<(Vec<u8>, Value)> = OnceLock::new();
    KEY.get_or_init(|| es384_key("suite-key"))
}

/// A fresh ES384 key pair: (PKCS#8 DER of the private key, JWK set of the public key with `kid`).
pub(crate) fn es384_key(kid: &str) -> (Vec<u8>, Value) {
    use p384::pkcs8::EncodePrivateKey;
    let secret = p384::SecretKey::random(&mut p384::elliptic_curve::rand_core::OsRng);
    let der = secret.to_pkcs8_der().unwrap().as_bytes().to_vec();
    let encoding = jsonwebtoken::EncodingKey::from_ec_der(&der);
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, jsonwebtoken::Algorithm::ES384).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    (der, json!({"keys": [serde_json::to_value(&jwk).unwrap()]}))
}

/// A signed client assertion (RFC 7523) for the token endpoint.
pub(crate) fn assertion(client_id: &str, token_url: &str, alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey, kid: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": now + 240,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

impl Server {
    pub(crate) async fn start() -> Server {
        Server::with_store(Arc::new(MemoryStore::new())).await
    }

    pub(crate) async fn with_store(store: Arc<dyn Store>) -> Server {
        Server::with_auth_clock(store, Arc::new(SystemClock)).await
    }

    /// A server whose OAuth side runs on `clock` (the FHIR Service keeps the wall clock).
    pub(crate) async fn with_auth_clock(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let root = format!("http://{addr}");
        let base = format!("{root}/fhir");
        let service = Arc::new(Service::new(store.clone()));
        let users = Users::new(store.clone(), clock.clone(), Arc::new(Roles::builtin()), UserSettings::default());
        let auth = Arc::new(Auth::new(store, clock, users, AuthConfig::new(&base)));
        let state = AppState {
            service: service.clone(),
            config: Arc::new(ApiConfig { max_body_bytes: MAX_BODY, base_url: base.clone() }),
            auth: auth.clone(),
        };
        let app = api::router(state);
        tokio::spawn(async move {
            axum::serve(api::FhirListener::new(listener), app.into_make_service_with_connect_info::<api::Peer>()).await.unwrap();
        });
        let (der, jwks) = suite_key();
        let new = NewClient {
            client_id: SUITE_CLIENT.into(),
            kind: Some(ClientKind::Backend),
            scopes: SUITE_SCOPES.into(),
            jwks: Some(jwks.clone()),
            administer: true,
            restricted_access: true,
            ..NewClient::default()
        };
        let by = AuditActor { kind: "system".into(), id: "test-support".into(), role: None, client: None };
        auth.register_client(new, by).await.unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_der(der);
        let token = backend_token(&root, SUITE_CLIENT, SUITE_SCOPES, jsonwebtoken::Algorithm::ES384, &key, "suite-key").await;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        let client = reqwest::Client::builder().default_headers(headers).build().unwrap();
        Server { base, root, addr, client, token, auth, service }
    }
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    /// POST/PUT a FHIR JSON body.
    pub(crate) fn send_json(&self, method: Method, path: &str, body: &Value) -> RequestBuilder {
        self.request(method, path).header("content-type", "application/fhir+json").body(body.to_string())
    }

    /// Creates a resource and returns its id.
    pub(crate) async fn create(&self, body: Value) -> String {
        let rt = body["resourceType"].as_str().unwrap().to_string();
        let response = self.send_json(Method::POST, &rt, &body).send().await.unwrap();
        assert_eq!(response.status(), 201, "create failed: {}", response.text().await.unwrap_or_default());
        let resource: Value = response.json().await.unwrap();
        resource["id"].as_str().unwrap().to_string()
    }
}

/// Client credentials with a signed assertion: the access token (panics on refusal).
pub(crate) async fn backend_token(
    root: &str,
    client_id: &str,
    scope: &str,
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    kid: &str,
) -> String {
    let token_url = format!("{root}/oauth2/token");
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", scope),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", &assertion(client_id, &token_url, alg, key, kid)),
    ];
    let response = reqwest::Client::new().post(&token_url).form(&form).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "client credentials refused: {body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// Turns `async fn name(s: Server)` test bodies into `name::memory`,
/// `name::sqlite` and `name::postgres` tests, so every backend passes the
/// same HTTP suite.
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn memory() {
                crate::support::run(crate::support::Backend::Memory, super::$name).await;
            }
            #[tokio::test]
            async fn sqlite() {
                crate::support::run(crate::support::Backend::Sqlite, super::$name).await;
            }
            #[tokio::test]
            async fn postgres() {
                crate::support::run(crate::support::Backend::Postgres, super::$name).await;
            }
        }
    )*};
}
pub(crate) use per_backend;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

/// Runs `test` against a server over a fresh, empty store of `backend`.
pub(crate) async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Server) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    match backend {
        Backend::Memory => test(Server::start().await).await,
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store = SqliteStore::open(&dir.path().join("hearth.db"), SqliteOptions::default()).expect("open SQLite");
            test(Server::with_store(Arc::new(store)).await).await;
        }
        Backend::Postgres => postgres(test).await,
    }
}

/// The server named by HEARTH_TEST_DATABASE_URL, in a schema of the test's
/// own that is dropped afterwards, so tests run in parallel.
async fn postgres<F, Fut>(test: F)
where
    F: FnOnce(Server) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let url = database_url();
    let schema = unique_schema();
    let (admin, connection) =
        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to HEARTH_TEST_DATABASE_URL");
    tokio::spawn(connection);
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create test schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{separator}options=-csearch_path%3D{schema}");
    // The test runs in a task of its own so that the schema is dropped even
    // when it fails; the failure is raised afterwards.
    let outcome = tokio::spawn(async move {
        let store = PostgresStore::connect(&store_url).await.expect("connect PostgresStore");
        test(Server::with_store(Arc::new(store)).await).await;
    })
    .await;
    drop_schema(&admin, &schema).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Drops a test schema, retrying while connections of the finished test's
/// pool may still hold locks.
async fn drop_schema(admin: &tokio_postgres::Client, schema: &str) {
    for attempt in 1.. {
        match admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await {
            Ok(()) => return,
            Err(error) if attempt < 20 => {
                eprintln!("retrying DROP SCHEMA {schema}: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(error) => panic!("drop test schema {schema}: {error}"),
        }
    }
}

/// The PostgreSQL tests fail (never skip) without a server to run on.
fn database_url() -> String {
    match std::env::var("HEARTH_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "HEARTH_TEST_DATABASE_URL is not set: the PostgreSQL variants of the HTTP suite need a server, \
             e.g. HEARTH_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"
        ),
    }
}

fn unique_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("hearth_api_test_{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), nanos)
}

pub(crate) fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

/// Asserts the FHIR JSON content type and returns the body.
pub(crate) async fn fhir_body(response: Response) -> Value {
    assert_eq!(header(&response, "content-type").as_deref(), Some("application/fhir+json; charset=utf-8"));
    response.json().await.unwrap()
}

/// Asserts `status` and an OperationOutcome body; returns the outcome.
pub(crate) async fn expect_outcome(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let body = fhir_body(response).await;
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert!(body["issue"].as_array().is_some_and(|i| !i.is_empty()), "{body}");
    body
}

/// The diagnostics of the first issue.
pub(crate) fn diagnostics(outcome: &Value) -> String {
    outcome["issue"][0]["diagnostics"].as_str().unwrap_or_default().to_string()
}

pub(crate) fn patient(family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "http://example.org/mrn", "value": family}],
        "active": true,
        "name": [{"family": family, "given": ["Alex"]}],
        "gender": "unknown",
        "birthDate": "1970-01-01",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">A patient</div>"},
        "maritalStatus": {"text": "unknown"}
    })
}

/// The link of a Bundle with this relation.
pub(crate) fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"].as_array()?.iter().find(|l| l["relation"] == relation)?["url"].as_str().map(String::from)
}

/// A store whose `ping` fails, for the readiness probe.
pub(crate) struct DownStore(pub MemoryStore);

#[async_trait]
impl Store for DownStore {
    fn backend(&self) -> &'static str {
        "down"
    }
    async fn read(&self, t: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        self.0.read(t, id).await
    }
    async fn vread(&self, t: &str, id: &str, v: u64) -> Result<Option<StoredResource>, StoreError> {
        self.0.vread(t, id, v).await
    }
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.0.commit(commit).await
    }
    async fn history(&self, s: &HistoryScope, q: &HistoryQuery) -> Result<Page<StoredResource>, StoreError> {
        self.0.history(s, q).await
    }
    async fn search(&self, q: &SearchQuery) -> Result<Page<StoredResource>, StoreError> {
        self.0.search(q).await
    }
    async fn scan(&self, t: Option<&str>, after: Option<&ResourceKey>, n: usize) -> Result<Vec<StoredResource>, StoreError> {
        self.0.scan(t, after, n).await
    }
    async fn search_keys(&self, q: &SearchQuery) -> Result<Vec<ResourceKey>, StoreError> {
        self.0.search_keys(q).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("test store is down".into()))
    }
    async fn sys_get(&self, kind: &str, key: &str) -> Result<Option<SysRecord>, StoreError> {
        self.0.sys_get(kind, key).await
    }
    async fn sys_list(&self, kind: &str) -> Result<Vec<SysRecord>, StoreError> {
        self.0.sys_list(kind).await
    }
    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.0.audit_scan(after, limit).await
    }
    async fn audit_search(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        self.0.audit_search(query).await
    }
    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.0.audit_head().await
    }
}

/// A store that fails every read with an internal error carrying a
/// "secret" message, to check that 500s do not expose it. System records
/// and audit-only commits work (kept in memory), so that clients and tokens do.
pub(crate) struct BrokenStore(MemoryStore);

impl BrokenStore {
    pub(crate) fn new() -> BrokenStore {
        BrokenStore(MemoryStore::new())
    }
}

#[async_trait]
impl Store for BrokenStore {
    fn backend(&self) -> &'static str {
        "broken"
    }
    async fn read(&self, _: &str, _: &str) -> Result<Option<StoredResource>, StoreError> {
        Err(StoreError::Internal("SECRET-DETAIL /var/lib/db".into()))
    }
    async fn vread(&self, _: &str, _: &str, _: u64) -> Result<Option<StoredResource>, StoreError> {
        Err(StoreError::Internal("SECRET-DETAIL".into()))
    }
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        if commit.writes.is_empty() && commit.checks.is_empty() && commit.reindex.is_empty() {
            return self.0.commit(commit).await;
        }
        Err(StoreError::Internal("SECRET-DETAIL".into()))
    }
    async fn history(&self, _: &HistoryScope, _: &HistoryQuery) -> Result<Page<StoredResource>, StoreError> {
        Err(StoreError::Internal("SECRET-DETAIL".into()))
    }
    async fn search(&self, _: &SearchQuery) -> Result<Page<StoredResource>, StoreError> {
        Err(StoreError::Internal("SECRET-DETAIL".into()))
    }
    async fn scan(&self, _: Option<&str>, _: Option<&ResourceKey>, _: usize) -> Result<Vec<StoredResource>, StoreError> {
        Err(StoreError::Internal("SECRET-DETAIL".into()))
    }
    async fn search_keys(&self, _: &SearchQuery) -> Result<Vec<ResourceKey>, StoreError> {
        Err(StoreError::Internal("SECRET-DETAIL".into()))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn sys_get(&self, kind: &str, key: &str) -> Result<Option<SysRecord>, StoreError> {
        self.0.sys_get(kind, key).await
    }
    async fn sys_list(&self, kind: &str) -> Result<Vec<SysRecord>, StoreError> {
        self.0.sys_list(kind).await
    }
    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.0.audit_scan(after, limit).await
    }
    async fn audit_search(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        self.0.audit_search(query).await
    }
    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.0.audit_head().await
    }
}
