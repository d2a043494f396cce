//! Tokens, codes and launch contexts as system records, and the in-memory
//! cache that lets a bearer token be checked without a database read.
//!
//! Every secret handed out (access token, refresh token, authorization
//! code, launch value) is 256 random bits, base64url; only its SHA-256
//! (hex) is stored, as the record's key, so the database never holds a
//! usable credential.

use base64::Engine as _;
use domain::access::Access;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// System-record kinds.
pub const TOKEN_KIND: &str = "token";
pub const CODE_KIND: &str = "auth-code";
pub const LAUNCH_KIND: &str = "launch";
pub const FAMILY_KIND: &str = "token-family";
pub const JTI_KIND: &str = "assertion-jti";

/// A fresh 256-bit secret, base64url without padding.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    let digest = Sha256::digest(data.as_ref());
    let mut out = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The PKCE S256 challenge of a verifier: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Access,
    Refresh,
}

/// An access or refresh token (kind `token`, key = hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    #[serde(rename = "type")]
    pub token_type: TokenType,
    pub client_id: String,
    /// The user the app acts for; `None` for a backend client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Granted scopes, space-separated.
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// Microseconds since the epoch.
    pub issued: i64,
    pub expires: i64,
    /// The refresh family (one authorization and its refreshes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The nonce of the authorization, for the id_token of a refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// One authorization and every refresh of it (kind `token-family`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyRecord {
    pub client_id: String,
    /// Hash of the one refresh token that may be used next.
    pub current: String,
    /// Hashes of the access tokens issued in this family (revoked with it).
    #[serde(default)]
    pub access: Vec<String>,
    #[serde(default)]
    pub revoked: bool,
    /// When the last refresh token expires: the family may then be purged.
    pub expires: i64,
}

/// An authorization code (kind `auth-code`): single use, 60 seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    /// PKCE S256 challenge.
    pub challenge: String,
    pub scope: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub expires: i64,
    /// Set when exchanged: a second exchange revokes what the first issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<UsedCode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsedCode {
    pub access: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

/// An EHR launch context (kind `launch`), made by the EHR for one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchRecord {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    pub expires: i64,
}

/// A used assertion id (kind `assertion-jti`, key = hash of client and jti).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JtiRecord {
    pub expires: i64,
}

/// A checked token, as the cache keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    /// The caller's access, without `from`.
    pub(crate) access: Access,
    pub(crate) expires: i64,
    pub(crate) family: Option<String>,
    /// When the entry must be re-read from the store (other processes may have revoked it).
    pub(crate) recheck: i64,
}

/// Checked access tokens by hash. Revocation in this process removes
/// entries at once; `recheck` bounds how long a revocation made by another
/// process sharing the database can go unseen.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    entries: RwLock<HashMap<String, Arc<Cached>>>,
}

/// Past this many entries, expired ones are dropped (and, if that is not
/// enough, all of them).
const CACHE_LIMIT: usize = 100_000;

impl TokenCache {
    pub(crate) fn get(&self, hash: &str, now: i64) -> Option<Arc<Cached>> {
        let entry = self.entries.read().get(hash).cloned()?;
        (entry.expires > now && entry.recheck > now).then_some(entry)
    }

    pub(crate) fn insert(&self, hash: String, cached: Cached, now: i64) {
        let mut entries = self.entries.write();
        if entries.len() >= CACHE_LIMIT {
            entries.retain(|_, c| c.expires > now && c.recheck > now);
            if entries.len() >= CACHE_LIMIT {
                entries.clear();
            }
        }
        entries.insert(hash, Arc::new(cached));
    }

    pub(crate) fn remove(&self, hash: &str) {
        self.entries.write().remove(hash);
    }

    pub(crate) fn remove_family(&self, family: &str) {
        self.entries.write().retain(|_, c| c.family.as_deref() != Some(family));
    }

    /// Drops every entry (a user's role or a client changed).
    pub(crate) fn clear(&self) {
        self.entries.write().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn secrets_are_256_bits_and_distinct() {
        let a = new_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_secret());
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
