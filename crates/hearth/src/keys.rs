//! The secrets of encryption at rest and of the audit trail, and
//! `hearth admin rotate-key`.
//!
//! They live in one key file (`storage.key_file`, by default
//! `<data_dir>/hearth.key`), created with mode 0600 on first start, outside
//! the database: the database key (SQLCipher), the attachment key (`Binary`
//! bodies, AES-256-GCM) and the audit-chain key. `HEARTH_DB_KEY` (64 hex
//! digits), when set, is the database key instead of the file's. Hearth
//! refuses a key file that group or others may read.
//!
//! Every process that uses the keys holds a shared lock on `<key file>.lock`;
//! rotation takes it exclusively, so it never runs beside a server.
//! Rotation first writes the new secrets to `<key file>.next`, re-seals the
//! attachments and re-keys the database (each step skipped when already
//! done), and only then renames `.next` over the key file: an interrupted
//! rotation is finished by running it again, and no server starts meanwhile.

use crate::config::{self, Config};
use anyhow::{Context, bail};
use domain::audit::AuditChain;
use serde::Deserialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use store::cipher::{BinaryCipher, Secret};
use store::sqlite::PageHmac;

/// The secrets a running Hearth uses.
pub struct Keys {
    /// The SQLCipher key of the embedded database (`HEARTH_DB_KEY` when set).
    pub database: Secret,
    /// How the embedded database's pages are laid out: fixed when it is
    /// created, needed to open it.
    pub database_format: DatabaseFormat,
    /// Seals `Binary` bodies.
    pub attachments: BinaryCipher,
    /// Links the audit trail's entries.
    pub audit: AuditChain,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// The page size and page HMAC of an encrypted SQLite database. SQLCipher
/// cannot read them from the file before decrypting it, so the key file,
/// which opening the file needs anyway, records them beside its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseFormat {
    pub page_size: u32,
    pub hmac: PageHmac,
}

impl DatabaseFormat {
    /// What databases created by a key file without the format lines use
    /// (SQLCipher 4's defaults).
    pub const FIRST: DatabaseFormat = DatabaseFormat { page_size: 4096, hmac: PageHmac::Sha512 };
    /// What a new key file gives its database: pages of 4 KiB authenticated
    /// with HMAC-SHA256. Measured (docs/benchmarks.md): 16 clients creating
    /// Observations, about 3,000 creates/s against 2,500 with FIRST and
    /// 2,400 with 8 KiB pages (a small commit writes whole pages); a bulk
    /// load of 1.9 million resources, 147.0 s against 158.6 s with FIRST
    /// (8 KiB pages would give 140.4 s: not worth a server's every commit).
    pub const NEW: DatabaseFormat = DatabaseFormat { page_size: 4096, hmac: PageHmac::Sha256 };

    /// Sets `options` to open a database of this format.
    pub fn apply(self, options: &mut store::sqlite::SqliteOptions) {
        options.page_size = self.page_size;
        options.page_hmac = self.hmac;
    }
}

/// The key file's contents.
#[derive(Clone)]
struct KeyFile {
    database: Secret,
    attachments: Secret,
    audit: Secret,
    format: DatabaseFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileText {
    version: u32,
    database: String,
    attachments: String,
    audit: String,
    /// Absent from key files written before the format was recorded:
    /// [`DatabaseFormat::FIRST`].
    database_page_size: Option<u32>,
    database_hmac: Option<String>,
}

impl KeyFile {
    fn random(audit: Secret, format: DatabaseFormat) -> KeyFile {
        KeyFile { database: Secret::random(), attachments: Secret::random(), audit, format }
    }

    fn render(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(format!(
            "# Hearth's secrets. Without this file the data cannot be read: back it up,\n\
             # but apart from the data. Never share it; Hearth refuses it unless mode 0600.\n\
             version = 1\n\
             database = \"{}\"\n\
             attachments = \"{}\"\n\
             audit = \"{}\"\n\
             # How the database's pages are laid out, fixed when it was created.\n\
             database_page_size = {}\n\
             database_hmac = \"{}\"\n",
            self.database.to_hex().as_str(),
            self.attachments.to_hex().as_str(),
            self.audit.to_hex().as_str(),
            self.format.page_size,
            self.format.hmac.sqlcipher_name()
        ))
    }

    fn parse(text: &str, path: &Path) -> anyhow::Result<KeyFile> {
        let mut parsed: KeyFileText =
            toml::from_str(text).map_err(|_| anyhow::anyhow!("{} is not a Hearth key file", path.display()))?;
        if parsed.version != 1 {
            bail!("{}: key file version {} is not supported", path.display(), parsed.version);
        }
        let secret = |name: &str, text: &str| {
            Secret::from_hex(text).with_context(|| format!("{}: the {name} key", path.display()))
        };
        let page_size = parsed.database_page_size.unwrap_or(DatabaseFormat::FIRST.page_size);
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            bail!("{}: database_page_size {page_size} is not a power of two from 512 to 65536", path.display());
        }
        let hmac = match parsed.database_hmac.as_deref() {
            None => DatabaseFormat::FIRST.hmac,
            Some(name) => PageHmac::from_sqlcipher_name(name).ok_or_else(|| {
                anyhow::anyhow!("{}: database_hmac \"{name}\" is not HMAC_SHA512 or HMAC_SHA256", path.display())
            })?,
        };
        let format = DatabaseFormat { page_size, hmac };
        let keys = (|| -> anyhow::Result<KeyFile> {
            Ok(KeyFile {
                database: secret("database", &parsed.database)?,
                attachments: secret("attachments", &parsed.attachments)?,
                audit: secret("audit", &parsed.audit)?,
                format,
            })
        })();
        use zeroize::Zeroize as _;
        parsed.database.zeroize();
        parsed.attachments.zeroize();
        parsed.audit.zeroize();
        keys
    }
}

/// Reads a key file, refusing one that group or others may access.
fn read_key_file(path: &Path) -> anyhow::Result<KeyFile> {
    let file = File::open(path).with_context(|| format!("opening the key file {}", path.display()))?;
    let mode = file.metadata().with_context(|| format!("reading {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "the key file {} may be read by group or others (mode {:04o}): run `chmod 600 {}` (and consider the \
             keys exposed)",
            path.display(),
            mode & 0o7777,
            path.display()
        );
    }
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut &file, &mut text).with_context(|| format!("reading {}", path.display()))?;
    KeyFile::parse(&text, path)
}

/// Writes `keys` to `path`, which must not exist: through a temporary file
/// (mode 0600, fsync'd) that is hard-linked into place, so no reader ever
/// sees a partial file and two first starts cannot both create one.
fn create_key_file(path: &Path, keys: &KeyFile) -> anyhow::Result<()> {
    let temp = temp_path(path);
    write_private(&temp, keys)?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    linked.with_context(|| format!("creating the key file {}", path.display()))?;
    sync_dir(path)
}

/// Replaces `path` by `from` atomically (rename) and makes it durable.
fn replace_key_file(from: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::rename(from, path).with_context(|| format!("replacing the key file {}", path.display()))?;
    sync_dir(path)
}

fn write_private(path: &Path, keys: &KeyFile) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(keys.render().as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().with_context(|| format!("writing {}", path.display()))
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    let dir = parent(path);
    File::open(&dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    with_suffix(path, &format!(".tmp-{}", std::process::id()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where rotation keeps the new secrets until it is done.
fn next_path(path: &Path) -> PathBuf {
    with_suffix(path, ".next")
}

fn lock_path(path: &Path) -> PathBuf {
    with_suffix(path, ".lock")
}

/// Creates `dir` (and its parents) readable by its owner only, when missing.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the directory {}", dir.display()))
}

/// Shared locks on key files, held until the process ends.
static HELD: Mutex<Option<HashMap<PathBuf, File>>> = Mutex::new(None);

fn open_lock(path: &Path) -> anyhow::Result<File> {
    let lock = lock_path(path);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock)
        .with_context(|| format!("opening the lock file {}", lock.display()))
}

/// Takes (once per process) the shared lock of the key file at `path`.
fn hold_shared_lock(path: &Path) -> anyhow::Result<()> {
    let mut held = HELD.lock().map_err(|_| anyhow::anyhow!("key lock registry poisoned"))?;
    let held = held.get_or_insert_with(HashMap::new);
    if held.contains_key(path) {
        return Ok(());
    }
    let file = open_lock(path)?;
    match file.try_lock_shared() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("the keys in {} are being rotated (`hearth admin rotate-key`): wait until it ends", path.display())
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", lock_path(path).display()));
        }
    }
    held.insert(path.to_path_buf(), file);
    Ok(())
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn env_key(env: &[(String, String)], name: &str) -> anyhow::Result<Option<Secret>> {
    env_value(env, name)
        .map(|text| {
            Secret::from_hex(text).map_err(|_| anyhow::anyhow!("{name} must be 64 hexadecimal digits (32 bytes)"))
        })
        .transpose()
}

/// The keys of `config`: read from its key file, which is created (with
/// fresh random secrets) on first start; `HEARTH_DB_KEY` in `env` overrides
/// the database key.
pub fn load(config: &Config, env: &[(String, String)]) -> anyhow::Result<Keys> {
    let path = config.key_file();
    if next_path(&path).exists() {
        bail!("a key rotation of {} was interrupted: run `hearth admin rotate-key` again to finish it", path.display());
    }
    create_private_dir(&parent(&path))?;
    let file = match read_key_file(&path) {
        Ok(file) => file,
        Err(_) if !path.exists() => {
            let fresh = KeyFile::random(Secret::random(), DatabaseFormat::NEW);
            match create_key_file(&path, &fresh) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "created the key file");
                    eprintln!("hearth: created the key file {} (back it up, apart from the data)", path.display());
                }
                // Another process created it first: use theirs.
                Err(_) if path.exists() => {}
                Err(e) => return Err(e),
            }
            read_key_file(&path)?
        }
        Err(e) => return Err(e),
    };
    hold_shared_lock(&path)?;
    let database = env_key(env, "HEARTH_DB_KEY")?.unwrap_or_else(|| file.database.clone());
    Ok(Keys {
        database,
        database_format: file.format,
        attachments: BinaryCipher::new(&file.attachments),
        audit: AuditChain::new(*file.audit.as_bytes()),
    })
}

// ---------------------------------------------------------------------------
// hearth admin rotate-key

/// `hearth admin rotate-key`: new database and attachment keys.
#[derive(clap::Args, Debug)]
pub struct RotateKeyArgs {
    /// The store to re-key (on PostgreSQL, its Binary bodies are re-sealed).
    #[command(flatten)]
    pub store: config::StoreArgs,
}

/// Re-keys the SQLite database (or encrypts one written before encryption),
/// re-seals every Binary version with a new attachment key, then replaces
/// the key file. The audit-chain key is kept: the trail must stay verifiable.
pub async fn rotate_key(args: RotateKeyArgs, env: &[(String, String)]) -> anyhow::Result<String> {
    let config = args.store.load(env)?;
    let path = config.key_file();
    let lock = open_lock(&path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another Hearth process (a server, an import) is using the keys in {}: stop it, then rotate",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", lock_path(&path).display()));
        }
    }
    let current = read_key_file(&path).context("rotating needs the current keys")?;
    let next_file = next_path(&path);
    let resumed = next_file.exists();
    let next = if resumed {
        read_key_file(&next_file).context("an interrupted rotation left its new keys")?
    } else {
        // The database keeps its format: re-keying does not rewrite its pages' layout.
        let next = KeyFile::random(current.audit.clone(), current.format);
        write_private(&next_file, &next)?;
        sync_dir(&next_file)?;
        next
    };
    if next.format != current.format {
        bail!("{} does not keep the database format of {}", next_file.display(), path.display());
    }
    if next.audit != current.audit {
        bail!("{} does not keep the audit-chain key of {}", next_file.display(), path.display());
    }
    let (old_db, new_db) = match env_key(env, "HEARTH_DB_KEY")? {
        Some(old) => {
            let Some(new) = env_key(env, "HEARTH_NEW_DB_KEY")? else {
                bail!("HEARTH_DB_KEY is set: give the new database key in HEARTH_NEW_DB_KEY (64 hexadecimal digits)")
            };
            (old, new)
        }
        None => (current.database.clone(), next.database.clone()),
    };
    let old_cipher = BinaryCipher::new(&current.attachments);
    let new_cipher = BinaryCipher::new(&next.attachments);
    let mut report = Vec::new();
    if resumed {
        report.push(format!("resumed the interrupted rotation of {}", path.display()));
    }
    if config.storage.database_url.is_empty() {
        let db = config.storage.data_dir.join("hearth.db");
        if db.exists() {
            let mut options = store::sqlite::SqliteOptions { readers: 1, ..store::sqlite::SqliteOptions::default() };
            current.format.apply(&mut options);
            let done = store::cipher::rotate_sqlite(&db, &options, &old_db, &new_db, &old_cipher, &new_cipher)
                .with_context(|| format!("rotating the keys of {}", db.display()))?;
            report.push(format!(
                "{}: {}; {} Binary versions re-sealed ({} already were)",
                db.display(),
                done.database.describe(),
                done.binaries.resealed,
                done.binaries.already
            ));
        } else {
            report.push(format!("{}: no database yet", db.display()));
        }
    } else {
        let done = store::cipher::reseal_postgres(&config.storage.database_url, &old_cipher, &new_cipher)
            .await
            .context("re-sealing the Binary bodies in PostgreSQL")?;
        report.push(format!("PostgreSQL: {} Binary versions re-sealed ({} already were)", done.resealed, done.already));
    }
    replace_key_file(&next_file, &path)?;
    report.push(format!(
        "{}: new database and attachment keys (attachment key {} replaces {}); the audit-chain key is unchanged",
        path.display(),
        new_cipher.key_id(),
        old_cipher.key_id()
    ));
    if env_value(env, "HEARTH_DB_KEY").is_some() {
        report.push("the database key is now HEARTH_NEW_DB_KEY: set HEARTH_DB_KEY to it before starting Hearth".into());
    }
    report.push("back up the new key file now; backups taken before need the old one".into());
    drop(lock);
    Ok(report.join("\n"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> Config {
        let mut config = Config::default();
        config.storage.data_dir = dir.to_path_buf();
        config
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_in(&tmp.path().join("data"));
        let first = load(&config, &[]).unwrap();
        let path = tmp.path().join("data/hearth.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load(&config, &[]).unwrap();
        assert_eq!(again.database, first.database);
        assert_eq!(again.attachments.key_id(), first.attachments.key_id());
        assert_ne!(first.database.as_bytes(), read_key_file(&path).unwrap().attachments.as_bytes());
        assert_eq!(format!("{first:?}"), "Keys(..)");
    }

    #[test]
    fn the_database_format_is_recorded_and_old_key_files_keep_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_in(tmp.path());
        assert_eq!(load(&config, &[]).unwrap().database_format, DatabaseFormat::NEW);
        let text = std::fs::read_to_string(config.key_file()).unwrap();
        assert!(text.contains("database_page_size = 4096\ndatabase_hmac = \"HMAC_SHA256\""), "{text}");
        // A key file written before the format was recorded: SQLCipher's defaults.
        let path = tmp.path().join("old.key");
        let old: String = text.lines().filter(|l| !l.starts_with("database_") && !l.starts_with("# How")).map(|l| format!("{l}\n")).collect();
        let parsed = KeyFile::parse(&old, &path).unwrap();
        assert_eq!(parsed.format, DatabaseFormat::FIRST);
        assert_eq!(parsed.database, KeyFile::parse(&text, &path).unwrap().database);
        // A format that cannot be is refused, naming the line.
        let bad = text.replace("database_page_size = 4096", "database_page_size = 5000");
        let error = format!("{:#}", KeyFile::parse(&bad, &path).err().unwrap());
        assert!(error.contains("database_page_size 5000"), "{error}");
        let bad = text.replace("HMAC_SHA256", "HMAC_MD5");
        let error = format!("{:#}", KeyFile::parse(&bad, &path).err().unwrap());
        assert!(error.contains("database_hmac \"HMAC_MD5\""), "{error}");
    }

    #[test]
    fn hearth_db_key_overrides_and_must_be_hex() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_in(tmp.path());
        let key = Secret::random();
        let env = vec![("HEARTH_DB_KEY".to_string(), key.to_hex().to_string())];
        assert_eq!(load(&config, &env).unwrap().database, key);
        let env = vec![("HEARTH_DB_KEY".to_string(), "secret".to_string())];
        let error = load(&config, &env).unwrap_err().to_string();
        assert!(error.contains("HEARTH_DB_KEY must be 64 hexadecimal digits"), "{error}");
    }

    #[test]
    fn a_readable_key_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_in(tmp.path());
        load(&config, &[]).unwrap();
        let path = config.key_file();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = format!("{:#}", load(&config, &[]).unwrap_err());
        assert!(error.contains("may be read by group or others (mode 0644)"), "{error}");
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn an_interrupted_rotation_stops_the_start() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_in(tmp.path());
        load(&config, &[]).unwrap();
        std::fs::write(next_path(&config.key_file()), "").unwrap();
        let error = load(&config, &[]).unwrap_err().to_string();
        assert!(error.contains("was interrupted: run `hearth admin rotate-key` again"), "{error}");
    }
}
