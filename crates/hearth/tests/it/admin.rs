//! `hearth admin user ...` and `hearth admin role list`, run as an
//! administrator would, on a real SQLite data directory.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_hearth");
const PASSWORD: &str = "Tulip-orbit-Quarry7";

struct Run {
    ok: bool,
    out: String,
    err: String,
}

/// Runs `hearth admin ARGS --data-dir DATA`, feeding `stdin`.
fn admin(data: &Path, args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(BIN)
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("HEARTH_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hearth runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("hearth ends");
    Run {
        ok: output.status.success(),
        out: String::from_utf8_lossy(&output.stdout).into_owned(),
        err: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The cells of the `user list` row of `username`.
fn row(list: &str, username: &str) -> Vec<String> {
    list.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(username))
        .unwrap_or_else(|| panic!("no row for {username} in:\n{list}"))
}

#[test]
fn users_are_added_listed_disabled_and_reset_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let password = format!("{PASSWORD}\n");

    let run = admin(&data, &["user", "add", "--username", "nina", "--role", "nurse"], &password);
    assert!(!run.ok);
    assert!(run.err.contains("--password-stdin"), "{}", run.err);
    let run = admin(&data, &["user", "add", "--username", "nina", "--role", "nurse", "--password-stdin"], "short\n");
    assert!(!run.ok);
    assert!(run.err.contains("the password must be at least 12 characters long"), "{}", run.err);
    let run = admin(&data, &["user", "add", "--username", "nina", "--role", "surgeon", "--password-stdin"], &password);
    assert!(!run.ok);
    assert!(run.err.contains("no role named \"surgeon\""), "{}", run.err);

    let run = admin(&data, &["user", "add", "--username", "nina", "--role", "nurse", "--password-stdin"], &password);
    assert!(run.ok, "{}", run.err);
    assert_eq!(run.out.trim(), "added user nina with role nurse");
    let args = ["user", "add", "--username", "pat", "--role", "patient", "--patient", "p1", "--password-stdin"];
    assert!(admin(&data, &args, &password).ok);
    let run = admin(&data, &["user", "add", "--username", "root", "--role", "admin", "--password-stdin"], &password);
    assert!(run.ok, "{}", run.err);
    assert!(run.out.contains("requires a second factor: hearth admin user enrol-totp root"), "{}", run.out);
    let run = admin(&data, &["user", "add", "--username", "Nina", "--role", "nurse", "--password-stdin"], &password);
    assert!(!run.ok);
    assert!(run.err.contains("a user named \"nina\" already exists"), "{}", run.err);

    let run = admin(&data, &["user", "list"], "");
    assert!(run.ok, "{}", run.err);
    assert_eq!(
        run.out.lines().next().map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["USERNAME", "ROLE", "PATIENT", "MFA", "DISABLED", "LOCKED"])
    );
    assert_eq!(row(&run.out, "nina"), ["nina", "nurse", "-", "no", "no", "no"]);
    assert_eq!(row(&run.out, "pat"), ["pat", "patient", "p1", "no", "no", "no"]);
    assert!(!run.out.contains("argon2"), "no hash is shown");

    let run = admin(&data, &["user", "disable", "nina"], "");
    assert!(run.ok, "{}", run.err);
    assert_eq!(row(&admin(&data, &["user", "list"], "").out, "nina"), ["nina", "nurse", "-", "no", "yes", "no"]);
    let run = admin(&data, &["user", "disable", "ghost"], "");
    assert!(!run.ok);
    assert!(run.err.contains("no user named \"ghost\""), "{}", run.err);

    let run = admin(&data, &["user", "enrol-totp", "root"], "");
    assert!(run.ok, "{}", run.err);
    assert!(run.out.contains("uri: otpauth://totp/Hearth:root?secret="), "{}", run.out);
    assert_eq!(row(&admin(&data, &["user", "list"], "").out, "root")[3], "yes");
    assert!(admin(&data, &["user", "reset-mfa", "root"], "").ok);
    assert_eq!(row(&admin(&data, &["user", "list"], "").out, "root")[3], "no");

    let run = admin(&data, &["user", "set-role", "nina", "--role", "patient"], "");
    assert!(!run.ok, "role patient needs a patient");
    assert!(run.err.contains("role patient needs the id of the user's Patient resource"), "{}", run.err);
    let run = admin(&data, &["user", "set-role", "nina", "--role", "physician"], "");
    assert!(run.ok, "{}", run.err);
    assert_eq!(row(&admin(&data, &["user", "list"], "").out, "nina")[1], "physician");
    let run = admin(&data, &["user", "revoke-sessions", "nina"], "");
    assert!(run.ok, "{}", run.err);
    assert_eq!(run.out.trim(), "ended 0 web sessions of user nina");
}

#[test]
fn roles_are_listed_with_their_tables_and_settings() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("hearth.toml");
    std::fs::write(
        &config,
        "[security]\nmfa_roles = [\"admin\", \"scheduler\"]\n\n[security.roles]\nscheduler = { Appointment = \"crus\", Patient = \"rs\" }\n",
    )
    .expect("config written");
    let output = Command::new(BIN)
        .args(["admin", "role", "list", "--config"])
        .arg(&config)
        .env_remove("HEARTH_DATABASE_URL")
        .output()
        .expect("hearth runs");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(out.contains("physician (built-in): MFA not required, break-the-glass group yes"), "{out}");
    assert!(out.contains("admin (built-in): MFA required, break-the-glass group no"), "{out}");
    assert!(
        out.contains("auditor (built-in): MFA not required, break-the-glass group no\n  rs     AuditEvent\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "scheduler (custom): MFA required, break-the-glass group no\n  crus   Appointment\n  rs     Patient\n"
        ),
        "{out}"
    );
    let order: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(
        order,
        ["physician", "nurse", "front-desk", "biller", "lab", "admin", "auditor", "patient", "scheduler"]
    );

    std::fs::write(&config, "[security.roles]\nscheduler = { Apointment = \"crus\" }\n").expect("config written");
    let output = Command::new(BIN).args(["admin", "role", "list", "--config"]).arg(&config).output().expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"Apointment\" is not an R4 resource type"));
}

/// A `hearth serve` child, killed on drop.
struct Server {
    child: std::process::Child,
    root: String,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path) -> Server {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("HEARTH_DATABASE_URL")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("hearth serve starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let base = loop {
        let line = lines.next().expect("server printed its address").expect("readable");
        if let Some(rest) = line.split("serving FHIR R4 at ").nth(1) {
            break rest.split_whitespace().next().expect("url").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let root = base.trim_end_matches("/fhir").to_string();
    Server { child, root, base }
}

/// The hidden fields of the sign-in form.
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let unescape = |t: &str| {
        t.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    };
    let mut fields = Vec::new();
    for part in html.split("<input type=\"hidden\" name=\"").skip(1) {
        let (name, rest) = part.split_once('"').expect("name ends");
        let value = rest.split("value=\"").nth(1).and_then(|v| v.split_once('"')).map_or("", |(v, _)| v);
        fields.push((unescape(name), unescape(value)));
    }
    fields
}

/// Signs in through the authorization endpoint's page as a browser would:
/// the status and Location (or body) of the answer to the posted form.
async fn sign_in(server: &Server, username: &str) -> (u16, String) {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", "chart")
        .append_pair("redirect_uri", "http://127.0.0.1:9/callback")
        .append_pair("scope", "user/Patient.rs")
        .append_pair("state", "st-1")
        .append_pair("aud", &server.base)
        .append_pair("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
        .append_pair("code_challenge_method", "S256");
    let page = http.get(format!("{}/oauth2/authorize?{}", server.root, query.finish())).send().await.expect("page");
    assert_eq!(page.status().as_u16(), 200);
    let cookies: Vec<String> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
        .collect();
    let html = page.text().await.expect("html");
    assert!(html.contains("Sign in to Hearth"), "{html}");
    let mut form = hidden_fields(&html);
    form.push(("username".into(), username.into()));
    form.push(("password".into(), PASSWORD.into()));
    let answer = http
        .post(format!("{}/oauth2/authorize", server.root))
        .header("cookie", cookies.join("; "))
        .form(&form)
        .send()
        .await
        .expect("sign-in posted");
    let status = answer.status().as_u16();
    let location = answer.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = answer.text().await.unwrap_or_default();
    (status, location.unwrap_or(body))
}

/// A user and an app registered with the CLI; the user signs in through
/// the server's page; disabled with the CLI (while the server runs, or
/// between two runs), the user is refused.
async fn disable_then_sign_in(while_running: bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let password = format!("{PASSWORD}\n");
    let run = admin(&data, &["user", "add", "--username", "nina", "--role", "nurse", "--password-stdin"], &password);
    assert!(run.ok, "{}", run.err);
    let args = [
        "client",
        "add",
        "--client-id",
        "chart",
        "--kind",
        "public",
        "--scopes",
        "user/*.rs",
        "--redirect-uri",
        "http://127.0.0.1:9/callback",
    ];
    let run = admin(&data, &args, "");
    assert!(run.ok, "{}", run.err);
    let first = serve(&data);
    let (status, location) = sign_in(&first, "nina").await;
    assert_eq!(status, 302, "{location}");
    assert!(location.starts_with("http://127.0.0.1:9/callback?code="), "{location}");

    let server = if while_running {
        first
    } else {
        drop(first);
        let run = admin(&data, &["user", "disable", "nina"], "");
        assert!(run.ok, "{}", run.err);
        serve(&data)
    };
    if while_running {
        let run = admin(&data, &["user", "disable", "nina"], "");
        assert!(run.ok, "{}", run.err);
    }
    let (status, body) = sign_in(&server, "nina").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("invalid username or password, or the account is locked"), "{body}");
    drop(server);

    let run = admin(&data, &["user", "list"], "");
    assert_eq!(row(&run.out, "nina")[4], "yes");
}

#[tokio::test]
async fn a_user_disabled_from_the_command_line_cannot_sign_in() {
    disable_then_sign_in(false).await;
}

#[tokio::test]
async fn a_user_disabled_from_the_command_line_cannot_sign_in_to_the_running_server() {
    disable_then_sign_in(true).await;
}
