//! Configuration: defaults, then `hearth.toml`, then `HEARTH_*` environment
//! variables, then command-line flags; validated once at startup. The example
//! file `hearth.example.toml` at the repository root documents every setting
//! and is parsed in a test so it stays true.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub fhir: FhirConfig,
    pub log: LogConfig,
    pub security: SecurityConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub base_url: String,
    pub max_body_bytes: usize,
    /// PEM certificate chain and private key: HTTPS when both are set.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Serve plain HTTP on a non-loopback address (behind a TLS proxy).
    pub insecure_no_tls: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub database_url: String,
    /// The key file (empty: `<data_dir>/hearth.key`).
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FhirConfig {
    pub default_page_size: usize,
    pub max_page_size: usize,
    pub max_bundle_entries: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub filter: String,
}

/// Sign-in, sessions, roles and break-the-glass (`[security]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub lockout_failures: u32,
    pub lockout_minutes: u32,
    pub password_min_length: usize,
    pub mfa_roles: Vec<String>,
    pub break_glass_roles: Vec<String>,
    pub break_glass_minutes: u32,
    pub session_idle_minutes: u32,
    pub session_max_hours: u32,
    /// The longest a read's audit entry waits for its batch to be committed
    /// (milliseconds; 0 commits each before answering).
    pub read_audit_window_ms: u64,
    /// Custom roles: name to (resource type or `*`) to SMART letters.
    pub roles: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
}

impl Default for SecurityConfig {
    fn default() -> SecurityConfig {
        let roles = auth::roles::RoleSettings::default();
        let users = auth::users::UserSettings::default();
        let sessions = auth::sessions::SessionSettings::default();
        SecurityConfig {
            lockout_failures: users.lockout_failures,
            lockout_minutes: users.lockout_minutes,
            password_min_length: users.password.min_length,
            mfa_roles: roles.mfa_roles,
            break_glass_roles: roles.break_glass_roles,
            break_glass_minutes: users.break_glass_minutes,
            session_idle_minutes: sessions.idle_minutes,
            session_max_hours: sessions.absolute_hours,
            read_audit_window_ms: domain::service::DEFAULT_READ_AUDIT_WINDOW.as_millis() as u64,
            roles: std::collections::BTreeMap::new(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            base_url: String::new(),
            max_body_bytes: 32 * 1024 * 1024,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            insecure_no_tls: false,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig { data_dir: PathBuf::from("./hearth-data"), database_url: String::new(), key_file: PathBuf::new() }
    }
}

impl Default for FhirConfig {
    fn default() -> FhirConfig {
        FhirConfig { default_page_size: 20, max_page_size: 1000, max_bundle_entries: 10_000 }
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig { filter: "info".into() }
    }
}

/// Overrides given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
}

/// Where the configuration and the store are: the arguments every command
/// that opens the store takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// Configuration file (default: ./hearth.toml when present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory of the embedded store.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL instead of the embedded store.
    #[arg(long)]
    pub database_url: Option<String>,
}

impl StoreArgs {
    /// The configuration these arguments select.
    pub fn load(&self, env: &[(String, String)]) -> anyhow::Result<Config> {
        let overrides =
            Overrides { listen: None, data_dir: self.data_dir.clone(), database_url: self.database_url.clone() };
        Config::load(self.config.as_deref(), env, &overrides)
    }
}

impl Config {
    /// Parses a TOML document; unknown keys are errors, so typos are caught.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        Ok(toml::from_str(text)?)
    }

    /// Loads the layered configuration. `file` is `--config`; without it,
    /// `./hearth.toml` is read if it exists.
    pub fn load(file: Option<&Path>, env: &[(String, String)], overrides: &Overrides) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                Config::from_toml(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => match std::fs::read_to_string("hearth.toml") {
                Ok(text) => Config::from_toml(&text).context("in ./hearth.toml")?,
                Err(_) => Config::default(),
            },
        };
        config.apply_env(env)?;
        if let Some(listen) = &overrides.listen {
            config.server.listen = listen.clone();
        }
        if let Some(dir) = &overrides.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if let Some(url) = &overrides.database_url {
            config.storage.database_url = url.clone();
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: &[(String, String)]) -> anyhow::Result<()> {
        fn number(key: &str, value: &str) -> anyhow::Result<usize> {
            value.parse().with_context(|| format!("{key} must be a whole number"))
        }
        for (key, value) in env {
            match key.as_str() {
                "HEARTH_LISTEN" => self.server.listen = value.clone(),
                "HEARTH_BASE_URL" => self.server.base_url = value.clone(),
                "HEARTH_MAX_BODY_BYTES" => self.server.max_body_bytes = number(key, value)?,
                "HEARTH_TLS_CERT" => self.server.tls_cert = PathBuf::from(value),
                "HEARTH_TLS_KEY" => self.server.tls_key = PathBuf::from(value),
                "HEARTH_INSECURE_NO_TLS" => {
                    self.server.insecure_no_tls = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" | "" => false,
                        _ => bail!("HEARTH_INSECURE_NO_TLS must be true or false"),
                    }
                }
                "HEARTH_KEY_FILE" => self.storage.key_file = PathBuf::from(value),
                // Secrets, read where they are used (keys.rs), never kept here.
                "HEARTH_DB_KEY" | "HEARTH_NEW_DB_KEY" => {}
                "HEARTH_DATA_DIR" => self.storage.data_dir = PathBuf::from(value),
                "HEARTH_DATABASE_URL" => self.storage.database_url = value.clone(),
                "HEARTH_DEFAULT_PAGE_SIZE" => self.fhir.default_page_size = number(key, value)?,
                "HEARTH_MAX_PAGE_SIZE" => self.fhir.max_page_size = number(key, value)?,
                "HEARTH_MAX_BUNDLE_ENTRIES" => self.fhir.max_bundle_entries = number(key, value)?,
                "HEARTH_LOG" => self.log.filter = value.clone(),
                // Read by the test suites, not by the server.
                "HEARTH_TEST_DATABASE_URL" => {}
                // A misspelt variable would otherwise be silently ignored.
                other => bail!("unknown environment variable {other}: see hearth.example.toml for the HEARTH_* settings"),
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        if self.server.max_body_bytes < 1024 {
            bail!("server.max_body_bytes must be at least 1024");
        }
        if self.server.tls_cert.as_os_str().is_empty() != self.server.tls_key.as_os_str().is_empty() {
            bail!("server.tls_cert and server.tls_key go together: give both (HTTPS) or neither");
        }
        if self.fhir.max_bundle_entries == 0 {
            bail!("fhir.max_bundle_entries must be at least 1");
        }
        if self.fhir.default_page_size == 0 || self.fhir.default_page_size > self.fhir.max_page_size {
            bail!("fhir.default_page_size must be between 1 and fhir.max_page_size");
        }
        if !self.storage.database_url.is_empty()
            && !self.storage.database_url.starts_with("postgres://")
            && !self.storage.database_url.starts_with("postgresql://")
        {
            bail!("storage.database_url must be a postgres:// URL");
        }
        self.validate_security()?;
        Ok(())
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server
            .listen
            .parse()
            .with_context(|| format!("server.listen '{}' is not an address such as 127.0.0.1:8080", self.server.listen))
    }

    /// Whether the server speaks HTTPS.
    pub fn tls(&self) -> bool {
        !self.server.tls_cert.as_os_str().is_empty()
    }

    /// The key file: `storage.key_file`, or `hearth.key` in the data directory.
    pub fn key_file(&self) -> PathBuf {
        if self.storage.key_file.as_os_str().is_empty() {
            self.storage.data_dir.join("hearth.key")
        } else {
            self.storage.key_file.clone()
        }
    }

    /// The FHIR base URL for links, given the address actually bound.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        if self.server.base_url.is_empty() {
            let scheme = if self.tls() { "https" } else { "http" };
            format!("{scheme}://{bound}/fhir")
        } else {
            self.server.base_url.trim_end_matches('/').to_string()
        }
    }

    pub fn service_config(&self) -> domain::service::ServiceConfig {
        domain::service::ServiceConfig {
            default_page_size: self.fhir.default_page_size,
            max_page_size: self.fhir.max_page_size,
            max_bundle_entries: self.fhir.max_bundle_entries,
            read_audit_window: std::time::Duration::from_millis(self.security.read_audit_window_ms),
        }
    }

    fn validate_security(&self) -> anyhow::Result<()> {
        let s = &self.security;
        if s.lockout_failures == 0 || s.lockout_minutes == 0 {
            bail!("security.lockout_failures and security.lockout_minutes must be at least 1");
        }
        if s.read_audit_window_ms > 1000 {
            bail!("security.read_audit_window_ms must be at most 1000");
        }
        if s.password_min_length < 8 {
            bail!("security.password_min_length must be at least 8");
        }
        if s.break_glass_minutes == 0 || s.session_idle_minutes == 0 || s.session_max_hours == 0 {
            bail!("security.break_glass_minutes, session_idle_minutes and session_max_hours must be at least 1");
        }
        self.roles()?;
        Ok(())
    }

    /// The roles in force: built-in ones plus `[security.roles]`, with the MFA and break-the-glass settings.
    pub fn roles(&self) -> anyhow::Result<auth::roles::Roles> {
        let settings = auth::roles::RoleSettings {
            custom: self
                .security
                .roles
                .iter()
                .map(|(name, table)| (name.clone(), table.iter().map(|(t, l)| (t.clone(), l.clone())).collect()))
                .collect(),
            mfa_roles: self.security.mfa_roles.clone(),
            break_glass_roles: self.security.break_glass_roles.clone(),
        };
        auth::roles::Roles::from_settings(&settings).context("in [security]")
    }

    pub fn user_settings(&self) -> auth::users::UserSettings {
        let s = &self.security;
        auth::users::UserSettings {
            lockout_failures: s.lockout_failures,
            lockout_minutes: s.lockout_minutes,
            password: auth::password::PasswordPolicy {
                min_length: s.password_min_length,
                ..auth::password::PasswordPolicy::default()
            },
            break_glass_minutes: s.break_glass_minutes,
            ..auth::users::UserSettings::default()
        }
    }

    pub fn session_settings(&self) -> auth::sessions::SessionSettings {
        auth::sessions::SessionSettings {
            idle_minutes: self.security.session_idle_minutes,
            absolute_hours: self.security.session_max_hours,
        }
    }
}

/// The `HEARTH_*` variables of the process environment.
pub fn hearth_env() -> Vec<(String, String)> {
    std::env::vars().filter(|(k, _)| k.starts_with("HEARTH_")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_equals_the_defaults() {
        let text = include_str!("../../../hearth.example.toml");
        let parsed = Config::from_toml(text).expect("example parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let env = vec![
            ("HEARTH_LISTEN".to_string(), "127.0.0.1:9000".to_string()),
            ("HEARTH_MAX_PAGE_SIZE".to_string(), "50".to_string()),
        ];
        let overrides = Overrides { data_dir: Some(PathBuf::from("elsewhere")), ..Overrides::default() };
        let config = Config::load(None, &env, &overrides).expect("loads");
        assert_eq!(config.server.listen, "127.0.0.1:9000");
        assert_eq!(config.fhir.max_page_size, 50);
        assert_eq!(config.storage.data_dir, PathBuf::from("elsewhere"));
    }

    #[test]
    fn unknown_variables_and_zero_limits_are_refused() {
        let env = vec![("HEARTH_MAX_BODY_BYTE".to_string(), "5".to_string())];
        let err = Config::load(None, &env, &Overrides::default()).expect_err("misspelt variable");
        assert!(format!("{err:#}").contains("HEARTH_MAX_BODY_BYTE"));
        let env = vec![("HEARTH_MAX_BUNDLE_ENTRIES".to_string(), "0".to_string())];
        assert!(Config::load(None, &env, &Overrides::default()).is_err());
    }

    #[test]
    fn security_settings_and_custom_roles() {
        let text = "[security]\nlockout_failures = 3\nmfa_roles = [\"admin\", \"scheduler\"]\n\n[security.roles]\nscheduler = { Appointment = \"crus\", Patient = \"rs\" }\n";
        let config = Config::from_toml(text).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.user_settings().lockout_failures, 3);
        let roles = config.roles().expect("roles");
        assert!(roles.mfa_required("scheduler"));
        let bad = Config::from_toml("[security.roles]\nscheduler = { Apointment = \"crus\" }\n").expect("parses");
        let err = bad.validate().expect_err("bad type");
        assert!(format!("{err:#}").contains("Apointment"), "{err:#}");
        let bad = Config::from_toml("[security]\nbreak_glass_roles = [\"surgeon\"]\n").expect("parses");
        assert!(format!("{:#}", bad.validate().expect_err("unknown role")).contains("surgeon"));
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        let env = vec![("HEARTH_MAX_PAGE_SIZE".to_string(), "lots".to_string())];
        let err = Config::load(None, &env, &Overrides::default()).expect_err("must fail");
        assert!(format!("{err:#}").contains("HEARTH_MAX_PAGE_SIZE"));
        assert!(Config::from_toml("[server]\nlisten_port = 1").is_err());
    }
}
