//! `hearth admin client add|list`: OAuth 2 clients (SMART apps and backend
//! services) from the command line, over the configured store. A
//! registration is audited as a privilege change by `hearth admin`. Secrets
//! are read from standard input, never from arguments, and stored hashed.

use crate::config::StoreArgs;
use crate::config::{Config, Overrides};
use crate::wiring;
use anyhow::{Context, bail};
use auth::clients::{self, Client, ClientKind, NewClient};
use clap::{Args, Subcommand};
use domain::service::{Clock, SystemClock};
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register a client.
    Add(AddArgs),
    /// List clients: id, kind, scopes, redirect URIs, authentication.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The client id apps send (letters, digits, '-', '_', '.').
    #[arg(long)]
    pub client_id: String,
    /// public (PKCE only), confidential (secret or JWKS) or backend (JWKS, client credentials).
    #[arg(long)]
    pub kind: String,
    /// The scopes the client may be granted, space-separated (SMART v1 or v2).
    #[arg(long)]
    pub scopes: String,
    /// A redirect URI, matched exactly (repeatable; apps need at least one).
    #[arg(long = "redirect-uri")]
    pub redirect_uris: Vec<String>,
    /// The client's public keys as a JWK set (RS384 RSA keys or ES384 P-384 keys).
    #[arg(long, conflicts_with = "secret_stdin")]
    pub jwks_file: Option<PathBuf>,
    /// Read the client secret (client_secret_basic) from the first line of standard input.
    #[arg(long)]
    pub secret_stdin: bool,
    /// Backend clients only: may also run system operations ($reindex) and change configuration resources.
    #[arg(long)]
    pub administer: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn load_config(store: &StoreArgs, env: &[(String, String)]) -> anyhow::Result<Config> {
    let overrides = Overrides { listen: None, data_dir: store.data_dir.clone(), database_url: store.database_url.clone() };
    Config::load(store.config.as_deref(), env, &overrides)
}

fn read_secret() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the client secret from standard input")?;
    let secret = line.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        bail!("no client secret on standard input");
    }
    Ok(secret)
}

/// Runs `hearth admin client ...`; returns what to print.
pub async fn run(command: ClientCommand, env: &[(String, String)]) -> anyhow::Result<String> {
    match command {
        ClientCommand::Add(args) => {
            let Some(kind) = ClientKind::parse(&args.kind) else {
                bail!("--kind {:?}: expected public, confidential or backend", args.kind);
            };
            let jwks = match &args.jwks_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                    Some(serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?)
                }
                None => None,
            };
            let secret = if args.secret_stdin { Some(read_secret()?) } else { None };
            let config = load_config(&args.store, env)?;
            let store = wiring::store(&config).await?;
            let new = NewClient {
                client_id: args.client_id,
                kind: Some(kind),
                scopes: args.scopes,
                redirect_uris: args.redirect_uris,
                secret,
                jwks,
                administer: args.administer,
                restricted_access: false,
            };
            let client = clients::register(store.as_ref(), SystemClock.now(), crate::admin::actor(), new).await?;
            Ok(format!("registered {} client {} with scopes: {}\n", client.kind.as_str(), client.client_id, client.scopes))
        }
        ClientCommand::List { store } => {
            let config = load_config(&store, env)?;
            let store = wiring::store(&config).await?;
            let clients = clients::list(store.as_ref()).await?;
            Ok(render(&clients))
        }
    }
}

fn render(clients: &[Client]) -> String {
    let mut out = String::from("client id\tkind\tauthentication\tscopes\tredirect URIs\n");
    for c in clients {
        let authentication = match (c.kind, &c.secret_hash, &c.jwks) {
            (ClientKind::Public, _, _) => "PKCE",
            (_, Some(_), _) => "client_secret_basic",
            (_, _, Some(_)) => "private_key_jwt",
            _ => "-",
        };
        let disabled = if c.disabled { " (disabled)" } else { "" };
        out.push_str(&format!(
            "{}{disabled}\t{}\t{authentication}\t{}\t{}\n",
            c.client_id,
            c.kind.as_str(),
            c.scopes,
            if c.redirect_uris.is_empty() { "-".to_string() } else { c.redirect_uris.join(" ") }
        ));
    }
    out
}
