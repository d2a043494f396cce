//! `hearth admin user ...` and `hearth admin role list`: user accounts and
//! roles from the command line, over the configured store. Every change is
//! audited with the actor `hearth admin` (and the OS user running it, when
//! known). Passwords are read from standard input, never from arguments.

use crate::config::{Config, StoreArgs};
use crate::wiring;
use anyhow::{Context, bail};
use auth::users::{NewUser, User, Users};
use clap::Subcommand;
use domain::audit::AuditActor;
use domain::service::{Clock, SystemClock};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user; the password is read from the first line of standard input.
    Add {
        #[arg(long)]
        username: String,
        /// A built-in role (see `hearth admin role list`) or a custom one from [security.roles].
        #[arg(long)]
        role: String,
        /// The user's Patient id (required for role patient).
        #[arg(long)]
        patient: Option<String>,
        /// The FHIR resource the user is, e.g. Practitioner/123 (SMART fhirUser).
        #[arg(long)]
        fhir_user: Option<String>,
        /// Member of the break-the-glass group whatever the role.
        #[arg(long)]
        break_glass: bool,
        /// Read the password from standard input (required: never pass it as an argument).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List users: username, role, patient, MFA enrolled, disabled, locked.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Disable a user: no sign-in, and web sessions end at their next check.
    Disable {
        username: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Enable a disabled user.
    Enable {
        username: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a user's TOTP second factor (they must enrol again).
    ResetMfa {
        username: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Enrol a new TOTP second factor; prints the secret and the otpauth:// URI.
    EnrolTotp {
        username: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lift a lock after failed sign-ins.
    Unlock {
        username: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Change a user's role (a privilege change, audited).
    SetRole {
        username: String,
        #[arg(long)]
        role: String,
        /// The user's Patient id (required for role patient).
        #[arg(long)]
        patient: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// End every web session of a user (they must sign in again).
    RevokeSessions {
        username: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a new password, read from the first line of standard input.
    SetPassword {
        username: String,
        /// Read the password from standard input (required).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// Every role: its permission table (resource types and SMART letters),
    /// whether it requires MFA, and whether it may break the glass.
    List {
        /// Configuration file (default: ./hearth.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The audit actor of command-line administration.
pub fn actor() -> AuditActor {
    let os_user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).ok().filter(|u| !u.is_empty());
    let id = match os_user {
        Some(name) => format!("hearth admin ({name})"),
        None => "hearth admin".to_string(),
    };
    AuditActor { kind: "system".into(), id, role: None, client: None }
}

async fn open(store: &StoreArgs, env: &[(String, String)]) -> anyhow::Result<(Config, Users)> {
    let config = store.load(env)?;
    let roles = Arc::new(config.roles()?);
    let store = wiring::store(&config).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let users = Users::new(store, clock, roles, config.user_settings());
    Ok((config, users))
}

async fn users(store: &StoreArgs, env: &[(String, String)]) -> anyhow::Result<Users> {
    Ok(open(store, env).await?.1)
}

fn read_password(flag: bool) -> anyhow::Result<String> {
    if !flag {
        bail!("give the password on standard input with --password-stdin (it is never taken from the command line)");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password)
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// Lines of a left-aligned table.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(header.iter().map(|h| (*h).to_string()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

fn user_rows(users: &[User], now: fhir::instant::Instant) -> Vec<Vec<String>> {
    users
        .iter()
        .map(|u| {
            let locked = match u.locked_until {
                Some(until) if until > now => format!("until {}", until.to_fhir()),
                _ => "no".into(),
            };
            vec![
                u.username.clone(),
                u.role.clone(),
                u.patient.clone().unwrap_or_else(|| "-".into()),
                yes_no(u.mfa_enrolled()).into(),
                yes_no(u.disabled).into(),
                locked,
            ]
        })
        .collect()
}

/// Runs `hearth admin user ...`.
pub async fn user(command: UserCommand, env: &[(String, String)]) -> anyhow::Result<ExitCode> {
    let by = actor();
    match command {
        UserCommand::Add { username, role, patient, fhir_user, break_glass, password_stdin, store } => {
            let password = read_password(password_stdin)?;
            let users = users(&store, env).await?;
            let new = NewUser { username, role, patient, fhir_user, password, break_glass };
            let user = users.add(new, &by).await?;
            let mfa = if users.roles().mfa_required(&user.role) {
                format!("; role {} requires a second factor: hearth admin user enrol-totp {}", user.role, user.username)
            } else {
                String::new()
            };
            println!("added user {} with role {}{mfa}", user.username, user.role);
        }
        UserCommand::List { store } => {
            let users = users(&store, env).await?;
            let list = users.list().await?;
            let rows = user_rows(&list, SystemClock.now());
            print!("{}", table(&["USERNAME", "ROLE", "PATIENT", "MFA", "DISABLED", "LOCKED"], &rows));
        }
        UserCommand::Disable { username, store } => {
            let user = users(&store, env).await?.set_disabled(&username, true, &by).await?;
            println!("disabled user {}", user.username);
        }
        UserCommand::Enable { username, store } => {
            let user = users(&store, env).await?.set_disabled(&username, false, &by).await?;
            println!("enabled user {}", user.username);
        }
        UserCommand::ResetMfa { username, store } => {
            let user = users(&store, env).await?.reset_mfa(&username, &by).await?;
            println!("removed the second factor of user {}", user.username);
        }
        UserCommand::EnrolTotp { username, store } => {
            let enrolment = users(&store, env).await?.enrol_totp(&username, &by).await?;
            println!("secret: {}", enrolment.secret);
            println!("uri: {}", enrolment.uri);
        }
        UserCommand::Unlock { username, store } => {
            let user = users(&store, env).await?.unlock(&username, &by).await?;
            println!("unlocked user {}", user.username);
        }
        UserCommand::SetRole { username, role, patient, store } => {
            let user = users(&store, env).await?.set_role(&username, &role, patient.as_deref(), &by).await?;
            println!("user {} now has role {}", user.username, user.role);
        }
        UserCommand::RevokeSessions { username, store } => {
            let (config, users) = open(&store, env).await?;
            if users.get(&username).await?.is_none() {
                bail!("no user named {:?}", auth::users::normalise_username(&username));
            }
            let sessions = auth::sessions::Sessions::new(users, config.session_settings());
            let ended = sessions.revoke_all(&username, &by).await?;
            println!("ended {ended} web sessions of user {}", auth::users::normalise_username(&username));
        }
        UserCommand::SetPassword { username, password_stdin, store } => {
            let password = read_password(password_stdin)?;
            let user = users(&store, env).await?.set_password(&username, &password, &by).await?;
            println!("set a new password for user {}", user.username);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `hearth admin role ...`.
pub fn role(command: RoleCommand, env: &[(String, String)]) -> anyhow::Result<ExitCode> {
    match command {
        RoleCommand::List { config } => {
            let store = StoreArgs { config, ..StoreArgs::default() };
            let roles = store.load(env)?.roles()?;
            let mut out = String::new();
            for role in roles.list() {
                out.push_str(&format!(
                    "{} ({}): MFA {}, break-the-glass group {}\n",
                    role.name,
                    if role.builtin { "built-in" } else { "custom" },
                    if role.mfa_required { "required" } else { "not required" },
                    yes_no(role.break_glass)
                ));
                for (types, letters) in role.policy.rows() {
                    out.push_str(&format!("  {letters:<6} {types}\n"));
                }
            }
            print!("{out}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
