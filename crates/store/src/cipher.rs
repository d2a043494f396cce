//! Encryption at rest beyond SQLCipher: the stored body of every `Binary`
//! version is sealed with AES-256-GCM, on every backend.
//!
//! [`EncryptedBinaries`] wraps any [`Store`]: on commit it replaces the body of
//! each `Binary` write by an envelope and empties its `_text`/`_content`
//! words (the base64 data would otherwise sit in clear in the text index);
//! every read path (read, vread, history, search, scan) opens the envelope
//! again. The envelope is one line of text,
//! `hearth-aead:1:<key id>:<base64url(nonce || ciphertext || tag)>`, with a
//! fresh random 96-bit nonce per version and the version's
//! `Binary/<id>/_history/<version>` as associated data, so a sealed body
//! cannot be moved to another resource or version unnoticed. The key id (the
//! first 4 bytes of SHA-256 over the key, in hex) names the key a body was
//! sealed with, so a wrong key is reported as such and key rotation
//! ([`reseal_sqlite`], [`reseal_postgres`]) can resume where it stopped.
//!
//! A body that is not an envelope (written before encryption existed) is
//! returned as stored; rotation seals it.

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::audit::{AuditEntry, AuditQuery};
use domain::store::{
    Commit, HistoryQuery, HistoryScope, Page, ResourceKey, Store, StoreError, StoredResource, SysRecord,
};
use fhir::search::query::SearchQuery;
use fhir::search::text::TextIndex;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use zeroize::{Zeroize, Zeroizing};

/// A 256-bit secret (a database key, an attachment key): zeroed when
/// dropped, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

/// The key of an SQLCipher database.
pub type DbKey = Secret;

impl Secret {
    pub fn from_bytes(bytes: [u8; 32]) -> Secret {
        Secret(bytes)
    }

    /// A fresh secret from the operating system's random source.
    pub fn random() -> Secret {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Secret(bytes)
    }

    /// Parses 64 hexadecimal digits (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<Secret, KeyError> {
        let text = text.trim().as_bytes();
        if text.len() != 64 {
            return Err(KeyError::Malformed);
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in text.chunks(2).enumerate() {
            let (Some(high), Some(low)) = (hex_digit(pair[0]), hex_digit(pair[1])) else {
                bytes.zeroize();
                return Err(KeyError::Malformed);
            };
            bytes[i] = high << 4 | low;
        }
        Ok(Secret(bytes))
    }

    /// The secret as 64 lowercase hexadecimal digits (for the key file).
    pub fn to_hex(&self) -> Zeroizing<String> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = Zeroizing::new(String::with_capacity(64));
        for b in self.0 {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 15)]));
        }
        out
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short public name of the key: the first 4 bytes of its SHA-256, in hex.
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.0);
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a key must be 64 hexadecimal digits (32 bytes)")]
    Malformed,
}

const ENVELOPE: &str = "hearth-aead:1:";
const NONCE_BYTES: usize = 12;

/// Seals and opens `Binary` bodies with one AES-256-GCM key.
#[derive(Clone)]
pub struct BinaryCipher {
    cipher: Aes256Gcm,
    key_id: String,
}

impl std::fmt::Debug for BinaryCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BinaryCipher(key {})", self.key_id)
    }
}

impl BinaryCipher {
    pub fn new(key: &Secret) -> BinaryCipher {
        BinaryCipher { cipher: Aes256Gcm::new(key.as_bytes().into()), key_id: key.key_id() }
    }

    /// The id of the key this cipher seals with.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The envelope of `body`, the body of version `version` of `Binary/<id>`.
    pub fn seal(&self, id: &str, version: u64, body: &str) -> Result<String, StoreError> {
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(id, version);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: body.as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| StoreError::Internal(format!("cannot encrypt Binary/{id} version {version}")))?;
        let mut raw = Vec::with_capacity(NONCE_BYTES + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        Ok(format!("{ENVELOPE}{}:{}", self.key_id, URL_SAFE_NO_PAD.encode(raw)))
    }

    /// The body inside a stored text: opened when it is an envelope of this
    /// cipher's key, an error naming the key when it is another key's or
    /// does not open; returned as is when it is not an envelope.
    pub fn open(&self, id: &str, version: u64, stored: &str) -> Result<Arc<str>, StoreError> {
        let Some((key_id, data)) = envelope_parts(stored) else { return Ok(Arc::from(stored)) };
        if key_id != self.key_id {
            return Err(StoreError::Internal(format!(
                "Binary/{id} version {version} is encrypted with attachment key {key_id}, but the key given is {}: \
                 wrong key file?",
                self.key_id
            )));
        }
        let fail = || {
            StoreError::Internal(format!(
                "Binary/{id} version {version} does not decrypt with attachment key {key_id}: damaged or altered data"
            ))
        };
        let raw = URL_SAFE_NO_PAD.decode(data).map_err(|_| fail())?;
        if raw.len() < NONCE_BYTES {
            return Err(fail());
        }
        let (nonce, sealed) = raw.split_at(NONCE_BYTES);
        let aad = associated_data(id, version);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: aad.as_bytes() })
            .map_err(|_| fail())?;
        let text = String::from_utf8(plain).map_err(|_| fail())?;
        Ok(Arc::from(text))
    }

    fn open_stored(&self, mut stored: StoredResource) -> Result<StoredResource, StoreError> {
        if stored.resource_type == "Binary"
            && let Some(body) = &stored.body
        {
            stored.body = Some(self.open(&stored.id, stored.version_id, body)?);
        }
        Ok(stored)
    }
}

/// The key id and data of an envelope; `None` when `stored` is not one.
fn envelope_parts(stored: &str) -> Option<(&str, &str)> {
    stored.strip_prefix(ENVELOPE)?.split_once(':')
}

fn associated_data(id: &str, version: u64) -> String {
    format!("Binary/{id}/_history/{version}")
}

/// A [`Store`] that keeps `Binary` bodies sealed at rest (see the module docs).
pub struct EncryptedBinaries {
    inner: Arc<dyn Store>,
    cipher: BinaryCipher,
}

impl EncryptedBinaries {
    pub fn new(inner: Arc<dyn Store>, cipher: BinaryCipher) -> EncryptedBinaries {
        EncryptedBinaries { inner, cipher }
    }

    /// The wrapped store, which returns bodies as stored.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    fn open_all(&self, items: Vec<StoredResource>) -> Result<Vec<StoredResource>, StoreError> {
        items.into_iter().map(|item| self.cipher.open_stored(item)).collect()
    }
}

#[async_trait]
impl Store for EncryptedBinaries {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        self.inner.read(resource_type, id).await?.map(|r| self.cipher.open_stored(r)).transpose()
    }

    async fn read_many(&self, keys: &[(String, String)]) -> Result<Vec<StoredResource>, StoreError> {
        self.inner.read_many(keys).await?.into_iter().map(|r| self.cipher.open_stored(r)).collect()
    }

    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version_id: u64,
    ) -> Result<Option<StoredResource>, StoreError> {
        self.inner.vread(resource_type, id, version_id).await?.map(|r| self.cipher.open_stored(r)).transpose()
    }

    async fn commit(&self, mut commit: Commit) -> Result<(), StoreError> {
        for write in commit.writes.iter_mut().filter(|w| w.resource_type == "Binary") {
            if let Some(body) = &write.body {
                write.body = Some(Arc::from(self.cipher.seal(&write.id, write.version_id, body)?));
            }
            write.text = TextIndex::default();
        }
        for reindex in commit.reindex.iter_mut().filter(|r| r.resource_type == "Binary") {
            reindex.text = TextIndex::default();
        }
        self.inner.commit(commit).await
    }

    async fn history(&self, scope: &HistoryScope, query: &HistoryQuery) -> Result<Page<StoredResource>, StoreError> {
        let page = self.inner.history(scope, query).await?;
        Ok(Page { items: self.open_all(page.items)?, total: page.total })
    }

    async fn search(&self, query: &SearchQuery) -> Result<Page<StoredResource>, StoreError> {
        let page = self.inner.search(query).await?;
        Ok(Page { items: self.open_all(page.items)?, total: page.total })
    }

    async fn search_keys(&self, query: &SearchQuery) -> Result<Vec<ResourceKey>, StoreError> {
        self.inner.search_keys(query).await
    }

    async fn search_keys_reading(
        &self,
        query: &SearchQuery,
        read: usize,
    ) -> Result<(Vec<ResourceKey>, Vec<StoredResource>), StoreError> {
        let (keys, found) = self.inner.search_keys_reading(query, read).await?;
        Ok((keys, self.open_all(found)?))
    }

    async fn scan(
        &self,
        resource_type: Option<&str>,
        after: Option<&ResourceKey>,
        limit: usize,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let items = self.inner.scan(resource_type, after, limit).await?;
        self.open_all(items)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn refresh_planner_statistics(&self) -> Result<(), StoreError> {
        self.inner.refresh_planner_statistics().await
    }

    async fn defer_search_indexes(&self, upcoming: u64) -> Result<bool, StoreError> {
        self.inner.defer_search_indexes(upcoming).await
    }

    async fn restore_search_indexes(&self) -> Result<(), StoreError> {
        self.inner.restore_search_indexes().await
    }

    async fn sys_get(&self, kind: &str, key: &str) -> Result<Option<SysRecord>, StoreError> {
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

// ---------------------------------------------------------------------------
// Key rotation

/// What re-sealing changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Binary versions sealed with the new key by this run.
    pub resealed: u64,
    /// Binary versions that were already sealed with the new key (a resumed rotation).
    pub already: u64,
}

/// The new envelope of a stored Binary body: `None` when it already is
/// sealed with `new`. A body sealed with neither key is an error.
fn reseal_body(
    old: &BinaryCipher,
    new: &BinaryCipher,
    id: &str,
    version: u64,
    stored: &str,
) -> Result<Option<String>, StoreError> {
    if let Some((key_id, _)) = envelope_parts(stored)
        && key_id == new.key_id()
    {
        // Opening proves the envelope is sound before the rotation is called done.
        new.open(id, version, stored)?;
        return Ok(None);
    }
    let plain = old.open(id, version, stored)?;
    new.seal(id, version, &plain).map(Some)
}

/// What rotation did to an SQLite database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbRotation {
    /// Re-keyed from the old key to the new one.
    Rekeyed,
    /// It was unencrypted (an older Hearth's): now encrypted with the new key.
    Encrypted,
    /// It already opened with the new key (a resumed rotation).
    AlreadyDone,
}

impl DbRotation {
    pub fn describe(self) -> &'static str {
        match self {
            DbRotation::Rekeyed => "re-keyed with the new database key",
            DbRotation::Encrypted => "was not encrypted; now encrypted with the new database key",
            DbRotation::AlreadyDone => "already had the new database key",
        }
    }
}

/// What [`rotate_sqlite`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteRotation {
    pub database: DbRotation,
    pub binaries: ResealReport,
}

/// Rotates the keys of the SQLite database at `path` (`options.key` is
/// ignored): re-seals its Binary versions from `old` to `new`, then re-keys
/// the file from `old_key` to `new_key` (or encrypts it, when it was not).
/// Each step is skipped when already done, so an interrupted rotation is
/// finished by running it again. No other process may use the file meanwhile.
pub fn rotate_sqlite(
    path: &Path,
    options: &crate::sqlite::SqliteOptions,
    old_key: &DbKey,
    new_key: &DbKey,
    old: &BinaryCipher,
    new: &BinaryCipher,
) -> Result<SqliteRotation, StoreError> {
    use crate::sqlite::{SqliteOptions, key_opens};
    let with = |key: Option<&DbKey>| SqliteOptions { key: key.cloned(), ..options.clone() };
    // The usual case first: each key that does not open the file makes
    // SQLCipher log an HMAC failure on stderr.
    let (opened, database) = if key_opens(path, &with(Some(old_key)))? {
        (with(Some(old_key)), DbRotation::Rekeyed)
    } else if key_opens(path, &with(Some(new_key)))? {
        (with(Some(new_key)), DbRotation::AlreadyDone)
    } else if key_opens(path, &with(None))? {
        (with(None), DbRotation::Encrypted)
    } else {
        return Err(StoreError::Unavailable(format!(
            "neither the current nor the new database key opens {}",
            path.display()
        )));
    };
    let binaries = reseal_sqlite(path, &opened, old, new)?;
    match database {
        DbRotation::Rekeyed => crate::sqlite::rekey(path, &opened, new_key)?,
        DbRotation::Encrypted => crate::sqlite::encrypt_plaintext(path, &opened, new_key)?,
        DbRotation::AlreadyDone => {}
    }
    Ok(SqliteRotation { database, binaries })
}

/// Rows re-sealed per statement batch.
const RESEAL_BATCH: i64 = 500;

const RESEAL_SELECT: &str = "SELECT v.seq, r.id, v.version, v.body FROM resource_version v \
     JOIN resource r ON r.rid = v.rid \
     WHERE v.type = 'Binary' AND v.body IS NOT NULL AND v.seq > $1 ORDER BY v.seq LIMIT $2";

/// Re-seals every Binary version of the SQLite database at `path` (opened
/// with `options.key`) from `old` to `new`, in one transaction.
pub fn reseal_sqlite(
    path: &Path,
    options: &crate::sqlite::SqliteOptions,
    old: &BinaryCipher,
    new: &BinaryCipher,
) -> Result<ResealReport, StoreError> {
    let mut conn = crate::sqlite::maintenance_connection(path, options)?;
    let sqlite_error = |e: rusqlite::Error| StoreError::Internal(format!("sqlite: {e}"));
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sqlite_error)?;
    let mut report = ResealReport::default();
    let mut after = 0i64;
    loop {
        let rows: Vec<(i64, String, i64, String)> = {
            let mut select = tx.prepare(&RESEAL_SELECT.replace('$', "?")).map_err(sqlite_error)?;
            select
                .query_map(rusqlite::params![after, RESEAL_BATCH], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .map_err(sqlite_error)?
                .collect::<Result<_, _>>()
                .map_err(sqlite_error)?
        };
        let Some(last) = rows.last() else { break };
        after = last.0;
        for (seq, id, version, body) in rows {
            let version = u64::try_from(version).map_err(|_| StoreError::Internal("negative version".into()))?;
            match reseal_body(old, new, &id, version, &body)? {
                None => report.already += 1,
                Some(sealed) => {
                    tx.execute("UPDATE resource_version SET body = ?1 WHERE seq = ?2", rusqlite::params![sealed, seq])
                        .map_err(sqlite_error)?;
                    report.resealed += 1;
                }
            }
        }
    }
    tx.commit().map_err(sqlite_error)?;
    Ok(report)
}

/// Re-seals every Binary version of the PostgreSQL database at `url` from
/// `old` to `new`, in one transaction. No server may be writing meanwhile.
pub async fn reseal_postgres(url: &str, old: &BinaryCipher, new: &BinaryCipher) -> Result<ResealReport, StoreError> {
    let pg_error = |e: tokio_postgres::Error| StoreError::Unavailable(format!("postgresql: {e}"));
    // The URL may hold a password: never echo it.
    let config: tokio_postgres::Config =
        url.parse().map_err(|_| StoreError::Unavailable("invalid PostgreSQL URL".into()))?;
    let (mut client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(pg_error)?;
    let driver = tokio::spawn(connection);
    let result = async {
        let tx = client.transaction().await.map_err(pg_error)?;
        // Writers of Binary versions wait until the rotation is over.
        tx.batch_execute("LOCK TABLE resource_version IN SHARE ROW EXCLUSIVE MODE").await.map_err(pg_error)?;
        let select = tx.prepare(RESEAL_SELECT).await.map_err(pg_error)?;
        let update = tx.prepare("UPDATE resource_version SET body = $1 WHERE seq = $2").await.map_err(pg_error)?;
        let mut report = ResealReport::default();
        let mut after = 0i64;
        loop {
            let rows = tx.query(&select, &[&after, &RESEAL_BATCH]).await.map_err(pg_error)?;
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            for row in &rows {
                let (seq, id, version, body): (i64, String, i64, String) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                let version = u64::try_from(version).map_err(|_| StoreError::Internal("negative version".into()))?;
                match reseal_body(old, new, &id, version, &body)? {
                    None => report.already += 1,
                    Some(sealed) => {
                        tx.execute(&update, &[&sealed, &seq]).await.map_err(pg_error)?;
                        report.resealed += 1;
                    }
                }
            }
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(report)
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_bad_text_is_refused() {
        let key = Secret::random();
        assert_eq!(Secret::from_hex(&key.to_hex()).unwrap(), key);
        assert_eq!(Secret::from_hex(&key.to_hex().to_uppercase()).unwrap(), key);
        assert!(Secret::from_hex("abc").is_err());
        assert!(Secret::from_hex(&"g".repeat(64)).is_err());
        assert_eq!(format!("{key:?}"), "Secret(..)");
    }

    #[test]
    fn a_sealed_body_opens_only_for_its_key_and_version() {
        let cipher = BinaryCipher::new(&Secret::random());
        let body = r#"{"resourceType":"Binary","id":"b1","contentType":"text/plain","data":"aGVsbG8="}"#;
        let sealed = cipher.seal("b1", 2, body).unwrap();
        assert!(sealed.starts_with(ENVELOPE), "{sealed}");
        assert!(!sealed.contains("aGVsbG8"), "{sealed}");
        assert_eq!(&*cipher.open("b1", 2, &sealed).unwrap(), body);
        // Another version or resource: the associated data differs.
        assert!(cipher.open("b1", 1, &sealed).is_err());
        assert!(cipher.open("b2", 2, &sealed).is_err());
        // Another key: named in the error.
        let other = BinaryCipher::new(&Secret::random());
        let error = other.open("b1", 2, &sealed).unwrap_err().to_string();
        assert!(error.contains(cipher.key_id()) && error.contains("wrong key"), "{error}");
        // Two seals of one body differ (fresh nonce).
        assert_ne!(sealed, cipher.seal("b1", 2, body).unwrap());
        // A plaintext body (written before encryption) passes.
        assert_eq!(&*cipher.open("b1", 2, body).unwrap(), body);
    }
}
