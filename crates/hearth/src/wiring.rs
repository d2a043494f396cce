//! Wiring: the chosen storage backend under the Service, and diagnostic logging.

use crate::config::Config;
use anyhow::Context;
use domain::Service;
use domain::store::Store;
use std::sync::Arc;

/// Opens the configured store: PostgreSQL when a database URL is set,
/// otherwise SQLite in the data directory (created on first start).
pub async fn store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.storage.database_url.is_empty() {
        let dir = &config.storage.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
        let path = dir.join("hearth.db");
        let store = store::sqlite::SqliteStore::open(&path, store::sqlite::SqliteOptions::default())
            .with_context(|| format!("opening the SQLite store in {}", dir.display()))?;
        Ok(Arc::new(store))
    } else {
        let store = store::postgres::PostgresStore::connect(&config.storage.database_url)
            .await
            .context("connecting to PostgreSQL")?;
        Ok(Arc::new(store))
    }
}

pub async fn service(config: &Config) -> anyhow::Result<Arc<Service>> {
    let store = store(config).await?;
    let service = Service::with(
        store,
        Arc::new(domain::service::SystemClock),
        Arc::new(domain::service::UuidIds),
        config.service_config(),
    );
    // Custom SearchParameters activated by an earlier `$reindex` stay in force.
    let rejected = service.activate_search_parameters().await.context("activating custom search parameters")?;
    for r in rejected {
        tracing::warn!(search_parameter = %r.name, reason = %r.issue.diagnostics, "custom search parameter not activated");
    }
    Ok(Arc::new(service))
}

/// Diagnostic logs to stderr. They carry ids, types, counts and durations,
/// never patient data; the audit trail is a separate thing.
pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
