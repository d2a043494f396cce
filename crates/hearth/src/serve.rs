//! `hearth serve`: binds the listener, optionally loads the demo data, and
//! serves the HTTP application until SIGINT/SIGTERM, then shuts down gracefully.

use crate::config::Config;
use crate::{demo, wiring};
use anyhow::Context;
use std::sync::Arc;

pub async fn serve(config: Config, with_demo: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let addr = config.listen_addr()?;
    let service = wiring::service(&config).await?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let base_url = config.base_url(bound);
    if with_demo {
        let loaded = demo::load_once(&service, &base_url).await?;
        match loaded {
            Some(n) => eprintln!("hearth: loaded {n} demo patients"),
            None => eprintln!("hearth: demo patients already present"),
        }
    }
    let state = api::AppState {
        service: Arc::clone(&service),
        config: Arc::new(api::ApiConfig { max_body_bytes: config.server.max_body_bytes, base_url: base_url.clone() }),
    };
    let app = api::router(state).into_make_service_with_connect_info::<api::Peer>();
    tracing::info!(listen = %bound, backend = service.store().backend(), startup_ms = started.elapsed().as_millis() as u64, "hearth is ready");
    eprintln!("hearth: serving FHIR R4 at {base_url} (storage: {})", service.store().backend());
    axum::serve(api::FhirListener::new(listener), app).with_graceful_shutdown(shutdown_signal()).await?;
    eprintln!("hearth: stopped");
    Ok(())
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
    let auth = auth_for(&config, service.store().clone(), &base_url)?;
        eprint!("{}", demo::accounts(&auth, &service).await?);
    tokio::spawn(purge_expired(Arc::clone(&auth)));
        auth,
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

