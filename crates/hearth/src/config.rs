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
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub base_url: String,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub database_url: String,
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


impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig { listen: "127.0.0.1:8080".into(), base_url: String::new(), max_body_bytes: 32 * 1024 * 1024 }
    }
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig { data_dir: PathBuf::from("./hearth-data"), database_url: String::new() }
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

    fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        if self.server.max_body_bytes < 1024 {
            bail!("server.max_body_bytes must be at least 1024");
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
        Ok(())
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server
            .listen
            .parse()
            .with_context(|| format!("server.listen '{}' is not an address such as 127.0.0.1:8080", self.server.listen))
    }

    /// The FHIR base URL for links, given the address actually bound.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        if self.server.base_url.is_empty() {
            format!("http://{bound}/fhir")
        } else {
            self.server.base_url.trim_end_matches('/').to_string()
        }
    }

    pub fn service_config(&self) -> domain::service::ServiceConfig {
        domain::service::ServiceConfig {
            default_page_size: self.fhir.default_page_size,
            max_page_size: self.fhir.max_page_size,
            max_bundle_entries: self.fhir.max_bundle_entries,
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
    fn bad_values_are_refused_with_the_setting_named() {
        let env = vec![("HEARTH_MAX_PAGE_SIZE".to_string(), "lots".to_string())];
        let err = Config::load(None, &env, &Overrides::default()).expect_err("must fail");
        assert!(format!("{err:#}").contains("HEARTH_MAX_PAGE_SIZE"));
        assert!(Config::from_toml("[server]\nlisten_port = 1").is_err());
    }
}
