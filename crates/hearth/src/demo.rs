//! The demo data set of `hearth serve --demo`: synthetic patients from the
//! seeded generator, tagged so that they are recognised and loaded only once.

use crate::synth;
use domain::Service;
use domain::service::Handling;
use serde_json::{Value, json};

/// The tag on every demo resource.
pub const DEMO_TAG_SYSTEM: &str = "https://hearth.example/fhir/tags";
pub const DEMO_TAG_CODE: &str = "demo";
/// How many demo patients are loaded.
pub const DEMO_PATIENTS: usize = 25;
const DEMO_SEED: u64 = 2024;

/// Loads the demo patients unless they are already there. Returns how many
/// were loaded, or `None` when they were present.
pub async fn load_once(service: &Service, base_url: &str) -> anyhow::Result<Option<usize>> {
    let params = vec![
        ("_tag".to_string(), format!("{DEMO_TAG_SYSTEM}|{DEMO_TAG_CODE}")),
        ("_count".to_string(), "1".to_string()),
    ];
    let existing = service
        .search(&domain::access::Access::system("hearth demo"), Some("Patient"), &params, Handling::Strict)
        .await
        .map_err(|e| anyhow::anyhow!("checking for demo data: {}", e.message()))?;
    if !existing.page.items.is_empty() {
        return Ok(None);
    }
    for index in 0..DEMO_PATIENTS {
        let mut bundle = synth::patient_bundle(DEMO_SEED, index);
        tag_entries(&mut bundle);
        service
            .bundle(&domain::access::Access::system("hearth demo"), bundle, base_url, None)
            .await
            .map_err(|e| anyhow::anyhow!("loading demo patient {index}: {}", e.message()))?;
    }
    Ok(Some(DEMO_PATIENTS))
}

fn tag_entries(bundle: &mut Value) {
    let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) else { return };
    for entry in entries {
        let Some(resource) = entry.get_mut("resource").and_then(Value::as_object_mut) else { continue };
        let meta = resource.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let tags = meta.entry("tag").or_insert_with(|| json!([]));
            if let Some(tags) = tags.as_array_mut() {
                tags.push(json!({"system": DEMO_TAG_SYSTEM, "code": DEMO_TAG_CODE, "display": "Hearth demo data"}));
            }
        }
    }
}

/// The demo accounts of `hearth serve --demo`: one user per built-in role
/// (`demo-physician`, `demo-nurse`... with fresh random passwords; the
/// patient user is linked to a demo patient; the admin gets a TOTP factor,
/// which the role requires) and a backend client `hearth-demo-backend`
/// (`system/*.rs`, an ES384 key made now). Returns what to print: the
/// credentials, shown only when they are made.
pub async fn accounts(auth: &auth::Auth, service: &Service) -> anyhow::Result<String> {
    use auth::users::{AdminError, NewUser};
    let by = domain::audit::AuditActor { kind: "system".into(), id: "hearth demo".into(), role: None, client: None };
    let params = vec![
        ("_tag".to_string(), format!("{DEMO_TAG_SYSTEM}|{DEMO_TAG_CODE}")),
        ("_sort".to_string(), "_id".to_string()),
        ("_count".to_string(), "1".to_string()),
    ];
    let first = service
        .search(&domain::access::Access::system("hearth demo"), Some("Patient"), &params, Handling::Strict)
        .await
        .map_err(|e| anyhow::anyhow!("finding a demo patient: {}", e.message()))?;
    let patient = first.page.items.first().map(|p| p.id.clone());
    let mut out = String::from("demo accounts (sign in at the SMART authorization endpoint):\n");
    for role in domain::access::BUILTIN_ROLES {
        let username = format!("demo-{role}");
        let linked = if *role == "patient" { patient.clone() } else { None };
        if *role == "patient" && linked.is_none() {
            continue;
        }
        let password = format!("Demo-{}", &auth::tokens::new_secret()[..16]);
        let new = NewUser {
            username: username.clone(),
            role: (*role).to_string(),
            fhir_user: linked.as_ref().map(|id| format!("Patient/{id}")),
            patient: linked,
            password: password.clone(),
            break_glass: false,
        };
        match auth.users().add(new, &by).await {
            Ok(_) => {
                out.push_str(&format!("  {username:<18} password {password}"));
                if auth.roles().mfa_required(role) {
                    let enrolment = auth.users().enrol_totp(&username, &by).await?;
                    out.push_str(&format!("  TOTP secret {} ({})", enrolment.secret, enrolment.uri));
                }
                out.push('\n');
            }
            Err(AdminError::Exists(_)) => out.push_str(&format!("  {username:<18} already present (password unchanged)\n")),
            Err(e) => return Err(anyhow::anyhow!("creating demo user {username}: {e}")),
        }
    }
    let key = auth::jwt::ClientKey::generate("demo-1");
    let client = auth::clients::NewClient {
        client_id: "hearth-demo-backend".into(),
        kind: Some(auth::clients::ClientKind::Backend),
        scopes: "system/*.rs".into(),
        jwks: Some(key.public_jwks()),
        ..auth::clients::NewClient::default()
    };
    match auth.register_client(client, by).await {
        Ok(_) => out.push_str(&format!(
            "demo backend client hearth-demo-backend (SMART Backend Services, system/*.rs), token endpoint {}; \
             its private key (sign RS384/ES384 client assertions with it):\n  {}\n",
            auth.endpoints().token,
            key.private_jwk()
        )),
        Err(auth::clients::ClientError::Exists(_)) => {
            out.push_str("demo backend client hearth-demo-backend already registered (its key was printed when it was made)\n");
        }
        Err(e) => return Err(anyhow::anyhow!("registering the demo backend client: {e}")),
    }
    Ok(out)
}
