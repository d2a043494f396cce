//! `hearth serve`: binds the listener, optionally loads the demo data, and
//! serves the HTTP application until SIGINT/SIGTERM, then shuts down gracefully.
//! HTTPS with `--tls-cert`/`--tls-key`; plain HTTP only on loopback unless
//! `--insecure-no-tls`.

use crate::config::Config;
use crate::{audit_cmd, demo, tls, wiring};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::sync::Arc;

/// The TLS flags of `hearth serve`.
#[derive(clap::Args, Debug, Default)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first): serve HTTPS, with --tls-key.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (only behind a proxy that terminates TLS).
    #[arg(long)]
    pub insecure_no_tls: bool,
}

impl TlsArgs {
    /// `config` with these flags applied over it.
    pub fn apply(self, mut config: Config) -> anyhow::Result<Config> {
        if let Some(cert) = self.tls_cert {
            config.server.tls_cert = cert;
        }
        if let Some(key) = self.tls_key {
            config.server.tls_key = key;
        }
        config.server.insecure_no_tls |= self.insecure_no_tls;
        config.validate()?;
        Ok(config)
    }
}

pub async fn serve(config: Config, with_demo: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let addr = config.listen_addr()?;
    let tls = if config.tls() {
        Some(tls::server_config(&config.server.tls_cert, &config.server.tls_key)?)
    } else if !addr.ip().is_loopback() && !config.server.insecure_no_tls {
        bail!(
            "refusing to serve plain HTTP on {addr}, which is not a loopback address: give --tls-cert and --tls-key \
             to serve HTTPS, or --insecure-no-tls (server.insecure_no_tls) when a proxy in front of Hearth \
             terminates TLS"
        );
    } else {
        None
    };
    let service = wiring::service(&config).await?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let base_url = config.base_url(bound);
    let auth = auth_for(&config, service.store().clone(), &base_url)?;
    if with_demo {
        let loaded = demo::load_once(&service, &base_url).await?;
        match loaded {
            Some(n) => eprintln!("hearth: loaded {n} demo patients"),
            None => eprintln!("hearth: demo patients already present"),
        }
        eprint!("{}", demo::accounts(&auth, &service).await?);
    }
    tokio::spawn(purge_expired(Arc::clone(&auth)));
    // The audit trail's head, sealed, outside the database once a minute and at shutdown.
    let audit_key = wiring::keys(&config)?.audit;
    let checkpoints = audit_cmd::checkpoint_path(&config, None);
    audit_cmd::spawn_checkpoints(service.store().clone(), audit_key.clone(), checkpoints.clone());
    let state = api::AppState {
        service: Arc::clone(&service),
        config: Arc::new(api::ApiConfig { max_body_bytes: config.server.max_body_bytes, base_url: base_url.clone() }),
        auth,
    };
    let app = api::router(state).into_make_service_with_connect_info::<api::Peer>();
    tracing::info!(listen = %bound, backend = service.store().backend(), startup_ms = started.elapsed().as_millis() as u64, "hearth is ready");
    eprintln!("hearth: serving FHIR R4 at {base_url} (storage: {})", service.store().backend());
    match tls {
        Some(tls) => {
            let listener = tls::TlsListener::new(listener, tls)?;
            axum::serve(api::FhirListener::new(listener), app).with_graceful_shutdown(shutdown_signal()).await?;
        }
        None => axum::serve(api::FhirListener::new(listener), app).with_graceful_shutdown(shutdown_signal()).await?,
    }
    // The entries of the last reads answered, then the seal over them.
    if let Err(e) = service.flush_audit().await {
        tracing::error!(error = %e, "the last read audit entries could not be written");
    }
    if let Err(e) = audit_cmd::write_checkpoint(&**service.store(), &audit_key, &checkpoints).await {
        tracing::error!(error = %e, "final audit checkpoint not written");
    }
    eprintln!("hearth: stopped");
    Ok(())
}

/// Users, OAuth clients and tokens over the store, for the FHIR base URL `base_url`.
pub fn auth_for(config: &Config, store: Arc<dyn domain::Store>, base_url: &str) -> anyhow::Result<Arc<auth::Auth>> {
    let clock: Arc<dyn domain::service::Clock> = Arc::new(domain::service::SystemClock);
    let users = auth::users::Users::new(store.clone(), clock.clone(), Arc::new(config.roles()?), config.user_settings());
    let mut settings = auth::AuthConfig::new(base_url);
    settings.sessions = config.session_settings();
    Ok(Arc::new(auth::Auth::new(store, clock, users, settings)))
}

/// Deletes expired tokens, codes and launch contexts every hour.
async fn purge_expired(auth: Arc<auth::Auth>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every.tick().await;
        match auth.purge_expired().await {
            Ok(n) => tracing::debug!(purged = n, "expired OAuth records purged"),
            Err(e) => tracing::warn!(error = %e, "purging expired OAuth records failed"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
