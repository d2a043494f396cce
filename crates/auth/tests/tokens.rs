//! The bearer check through the Auth facade, on the memory store behind a
//! store that counts reads: a cached token costs no store read; revocation
//! and expiry take effect at once; a backend token's Access is the client's.

use async_trait::async_trait;
use auth::clients::{ClientKind, NewClient};
use auth::jwt::ClientKey;
use auth::roles::Roles;
use auth::users::{UserSettings, Users};
use auth::{Auth, AuthConfig, AuthError};
use domain::access::Perms;
use domain::audit::{AuditActor, AuditEntry, AuditQuery};
use domain::memory::MemoryStore;
use domain::service::Clock;
use domain::store::{
    Commit, HistoryQuery, HistoryScope, Page, ResourceKey, Store, StoreError, StoredResource, SysRecord,
};
use fhir::instant::Instant;
use fhir::search::query::SearchQuery;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The memory store, counting system-record reads.
struct Counting {
    inner: MemoryStore,
    sys_reads: AtomicU64,
}

#[async_trait]
impl Store for Counting {
    fn backend(&self) -> &'static str {
        "counting"
    }
    async fn read(&self, t: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        self.inner.read(t, id).await
    }
    async fn vread(&self, t: &str, id: &str, v: u64) -> Result<Option<StoredResource>, StoreError> {
        self.inner.vread(t, id, v).await
    }
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.inner.commit(commit).await
    }
    async fn history(&self, s: &HistoryScope, q: &HistoryQuery) -> Result<Page<StoredResource>, StoreError> {
        self.inner.history(s, q).await
    }
    async fn search(&self, q: &SearchQuery) -> Result<Page<StoredResource>, StoreError> {
        self.inner.search(q).await
    }
    async fn search_keys(&self, q: &SearchQuery) -> Result<Vec<ResourceKey>, StoreError> {
        self.inner.search_keys(q).await
    }
    async fn scan(&self, t: Option<&str>, after: Option<&ResourceKey>, n: usize) -> Result<Vec<StoredResource>, StoreError> {
        self.inner.scan(t, after, n).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn sys_get(&self, kind: &str, key: &str) -> Result<Option<SysRecord>, StoreError> {
        self.sys_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.sys_get(kind, key).await
    }
    async fn sys_list(&self, kind: &str) -> Result<Vec<SysRecord>, StoreError> {
        self.inner.sys_list(kind).await
    }
    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_scan(after, limit).await
    }
    async fn audit_search(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        self.inner.audit_search(query).await
    }
    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.inner.audit_head().await
    }
}

/// A clock the test sets.
struct Fixed(AtomicI64);

impl Clock for Fixed {
    fn now(&self) -> Instant {
        Instant(self.0.load(Ordering::SeqCst))
    }
}

const BASE: &str = "https://hearth.example/fhir";

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

#[tokio::test]
async fn cached_tokens_cost_no_store_read_and_revocation_and_expiry_are_immediate() {
    let store = Arc::new(Counting { inner: MemoryStore::new(), sys_reads: AtomicU64::new(0) });
    let start = 1_900_000_000_000_000;
    let clock = Arc::new(Fixed(AtomicI64::new(start)));
    let users = Users::new(store.clone(), clock.clone(), Arc::new(Roles::builtin()), UserSettings::default());
    let auth = Auth::new(store.clone(), clock.clone(), users, AuthConfig::new(BASE));
    let key = ClientKey::generate("k");
    let new = NewClient {
        client_id: "svc".into(),
        kind: Some(ClientKind::Backend),
        scopes: "system/Observation.rs".into(),
        jwks: Some(key.public_jwks()),
        ..NewClient::default()
    };
    auth.register_client(new, AuditActor { kind: "system".into(), id: "test".into(), role: None, client: None })
        .await
        .expect("registered");
    let token_url = auth.endpoints().token;
    assert_eq!(token_url, "https://hearth.example/oauth2/token");
    let issue = || async {
        let assertion = key.assertion("svc", &token_url, start / 1_000_000).expect("signed");
        let answer = auth
            .token(
                &form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", "system/Observation.rs system/Patient.rs"),
                    ("client_assertion_type", auth::oauth::JWT_BEARER),
                    ("client_assertion", &assertion),
                ]),
                None,
                Some("192.0.2.7"),
            )
            .await
            .expect("token");
        assert_eq!(answer["scope"], "system/Observation.rs");
        answer["access_token"].as_str().expect("access token").to_string()
    };
    let token = issue().await;

    let access = auth.authenticate_bearer(&token, Some("192.0.2.8")).await.expect("valid");
    assert_eq!((access.actor.kind.as_str(), access.actor.id.as_str()), ("client", "svc"));
    assert_eq!(access.from.as_deref(), Some("192.0.2.8"));
    assert!(access.allows(Perms::READ, "Observation"));
    assert!(!access.allows(Perms::READ, "Patient"));
    assert!(!access.allows(Perms::CREATE, "Observation"));
    assert!(!access.administer && access.emergency.is_none() && access.patient.is_none());

    let reads = store.sys_reads.load(Ordering::SeqCst);
    for _ in 0..1000 {
        auth.authenticate_bearer(&token, None).await.expect("cached");
    }
    assert_eq!(store.sys_reads.load(Ordering::SeqCst), reads, "a cached token is not read again");

    // Revoked: refused at once, although it was cached.
    let revoked = auth
        .revoke(
            &form(&[
                ("token", &token),
                ("client_assertion_type", auth::oauth::JWT_BEARER),
                ("client_assertion", &key.assertion("svc", &token_url, start / 1_000_000).expect("signed")),
            ]),
            None,
            None,
        )
        .await;
    assert!(revoked.is_ok(), "{revoked:?}");
    assert!(matches!(auth.authenticate_bearer(&token, None).await, Err(AuthError::InvalidToken(_))));

    // Expired: refused once the clock passes the hour, cached or not.
    let token = issue().await;
    auth.authenticate_bearer(&token, None).await.expect("valid");
    clock.0.store(start + 3600 * 1_000_000, Ordering::SeqCst);
    assert_eq!(auth.authenticate_bearer(&token, None).await.err(), Some(AuthError::InvalidToken("the token has expired")));
    assert!(matches!(auth.authenticate_bearer("no-such-token", None).await, Err(AuthError::InvalidToken(_))));

    // Expired records are purged.
    assert!(auth.purge_expired().await.expect("purged") >= 1);
}
