//! SMART App Launch 2.0 and SMART Backend Services end to end over real
//! HTTP, as real clients do it: a "browser" (reqwest with its own cookie jar,
//! redirects not followed) reads Hearth's pages and posts their forms; the
//! "app" (reqwest without cookies) exchanges codes with PKCE S256, uses its
//! token on /fhir, refreshes, revokes and introspects; backend clients sign
//! their assertions with freshly generated RS384 and ES384 keys.

use crate::support::{Server, TestClock, assertion, backend_token, es384_key, expect_outcome, header, per_backend};
use auth::clients::{ClientKind, NewClient};
use auth::users::NewUser;
use domain::audit::{AuditActor, AuditOutcome, AuditQuery};
use domain::memory::MemoryStore;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// RFC 7636 appendix B: a verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const PASSWORD: &str = "Velvet-Harbour-2024";
const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

// ----- a browser -------------------------------------------------------------

/// A page as the browser got it.
struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

/// A browser: follows nothing by itself, keeps cookies (unless switched off).
struct Browser {
    http: reqwest::Client,
    jar: Option<Mutex<Vec<(String, String)>>>,
}

impl Browser {
    fn new(cookies: bool) -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, jar: cookies.then(|| Mutex::new(Vec::new())) }
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Page {
        if let Some(jar) = &self.jar {
            let cookies: Vec<String> = jar.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect();
            if !cookies.is_empty() {
                request = request.header("cookie", cookies.join("; "));
            }
        }
        let response = request.send().await.unwrap();
        if let Some(jar) = &self.jar {
            for value in response.headers().get_all("set-cookie") {
                let text = value.to_str().unwrap();
                let pair = text.split(';').next().unwrap();
                let (name, value) = pair.split_once('=').unwrap();
                let mut jar = jar.lock().unwrap();
                jar.retain(|(k, _)| k != name);
                jar.push((name.to_string(), value.to_string()));
            }
        }
        let status = response.status();
        let location = header(&response, "location");
        Page { status, location, body: response.text().await.unwrap() }
    }

    async fn get(&self, url: &str) -> Page {
        self.send(self.http.get(url)).await
    }

    /// Posts the page's form: its fields as the page has them, with `fill`
    /// replacing or adding values (a radio group takes its value from `fill`,
    /// else its checked button).
    async fn submit(&self, s: &Server, page: &Page, fill: &[(&str, &str)]) -> Page {
        assert_eq!(page.status, 200, "no form to submit: {}", page.body);
        let action = attribute(&page.body[page.body.find("<form").expect("a form")..], "action").unwrap();
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut radios: Vec<(String, String)> = Vec::new();
        for input in inputs(&page.body) {
            let name = input.get("name").cloned().unwrap_or_default();
            let value = input.get("value").cloned().unwrap_or_default();
            if input.get("type").map(String::as_str) == Some("radio") {
                if input.contains_key("checked") {
                    radios.push((name, value));
                }
                continue;
            }
            let value = fill.iter().find(|(k, _)| *k == name).map_or(value, |(_, v)| v.to_string());
            fields.push((name, value));
        }
        for (name, value) in fill {
            if !fields.iter().any(|(k, _)| k == name) {
                radios.retain(|(k, _)| k != name);
                radios.push((name.to_string(), value.to_string()));
            }
        }
        fields.extend(radios);
        self.send(self.http.post(format!("{}{action}", s.root)).form(&fields)).await
    }
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// `name="value"` of the first tag in `html`.
fn attribute(html: &str, name: &str) -> Option<String> {
    let tag = &html[..html.find('>')?];
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(unescape(&tag[start..end]))
}

/// Every `<input>` of the page as its attributes (`checked` present when set).
fn inputs(html: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("<input") {
        let tag = &rest[at..at + rest[at..].find('>').unwrap() + 1];
        let mut attributes = std::collections::HashMap::new();
        for name in ["type", "name", "value"] {
            if let Some(value) = attribute(tag, name) {
                attributes.insert(name.to_string(), value);
            }
        }
        if tag.contains(" checked") {
            attributes.insert("checked".to_string(), String::new());
        }
        out.push(attributes);
        rest = &rest[at + tag.len()..];
    }
    out
}

/// The values of a radio group on the page.
fn choices(page: &Page, name: &str) -> Vec<String> {
    inputs(&page.body)
        .into_iter()
        .filter(|i| i.get("type").map(String::as_str) == Some("radio") && i.get("name").map(String::as_str) == Some(name))
        .filter_map(|i| i.get("value").cloned())
        .collect()
}

/// The query parameters of a redirect back to the app.
fn redirect_params(page: &Page) -> Vec<(String, String)> {
    assert_eq!(page.status, 302, "expected a redirect to the app: {}", page.body);
    let location = page.location.clone().unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    let query = location.split_once('?').unwrap().1;
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

// ----- the app -----------------------------------------------------------------

fn authorize_url(s: &Server, client_id: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", scope)
        .append_pair("state", "st-123")
        .append_pair("aud", &s.base)
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "S256");
    for (k, v) in extra {
        query.append_pair(k, v);
    }
    format!("{}/oauth2/authorize?{}", s.root, query.finish())
}

/// A token-endpoint call without cookies; answers (status, JSON).
async fn token_request(s: &Server, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().post(format!("{}/oauth2/token", s.root)).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    assert_eq!(header(&response, "cache-control").as_deref(), Some("no-store"));
    (status, response.json().await.unwrap())
}

async fn exchange(s: &Server, client_id: &str, code: &str, verifier: &str) -> (StatusCode, Value) {
    token_request(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("client_id", client_id),
        ],
        None,
    )
    .await
}

async fn fhir_get(s: &Server, token: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new().get(s.url(path)).bearer_auth(token).send().await.unwrap()
}

fn admin() -> AuditActor {
    AuditActor { kind: "system".into(), id: "smart-test".into(), role: None, client: None }
}

async fn add_user(s: &Server, username: &str, role: &str, patient: Option<&str>, fhir_user: Option<&str>) {
    let new = NewUser {
        username: username.into(),
        role: role.into(),
        patient: patient.map(String::from),
        fhir_user: fhir_user.map(String::from),
        password: PASSWORD.into(),
        break_glass: false,
    };
    s.auth.users().add(new, &admin()).await.unwrap();
}

async fn add_app(s: &Server, client_id: &str, kind: ClientKind, scopes: &str, secret: Option<&str>) {
    let new = NewClient {
        client_id: client_id.into(),
        kind: Some(kind),
        scopes: scopes.into(),
        redirect_uris: vec![REDIRECT.into()],
        secret: secret.map(String::from),
        ..NewClient::default()
    };
    s.auth.register_client(new, admin()).await.unwrap();
}

const APP_SCOPES: &str = "launch launch/patient launch/encounter openid fhirUser profile offline_access online_access patient/*.cruds user/*.cruds";

/// Two patients; the first with a lab and a vital-signs Observation, a Condition and an Encounter.
struct Chart {
    patient: String,
    other: String,
    lab: String,
    vitals: String,
    condition: String,
    encounter: String,
}

async fn chart(s: &Server) -> Chart {
    let patient = s.create(crate::support::patient("Okafor")).await;
    let other = s.create(crate::support::patient("Lindqvist")).await;
    let observation = |category: &str, code: &str| {
        json!({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{patient}")}
        })
    };
    let lab = s.create(observation("laboratory", "2345-7")).await;
    let vitals = s.create(observation("vital-signs", "8867-4")).await;
    let condition = s
        .create(json!({"resourceType": "Condition", "subject": {"reference": format!("Patient/{patient}")},
                       "code": {"text": "asthma"}}))
        .await;
    let encounter = s
        .create(json!({"resourceType": "Encounter", "status": "finished",
                       "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                       "subject": {"reference": format!("Patient/{patient}")}, "period": {"start": "2024-03-01"}}))
        .await;
    Chart { patient, other, lab, vitals, condition, encounter }
}

/// Signs in on the page the authorization request led to.
async fn sign_in(s: &Server, browser: &Browser, page: &Page, username: &str) -> Page {
    assert!(page.body.contains("Sign in to Hearth"), "{}", page.body);
    browser.submit(s, page, &[("username", username), ("password", PASSWORD)]).await
}

// ----- tests -------------------------------------------------------------------

#[tokio::test]
async fn discovery_and_metadata_need_no_token_and_fhir_does() {
    let s = Server::start().await;
    let anonymous = reqwest::Client::new();
    for path in ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"] {
        let response = anonymous.get(format!("{}{path}", s.root)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let config: Value = response.json().await.unwrap();
        assert_eq!(config["authorization_endpoint"], format!("{}/oauth2/authorize", s.root));
        assert_eq!(config["token_endpoint"], format!("{}/oauth2/token", s.root));
        assert_eq!(config["revocation_endpoint"], format!("{}/oauth2/revoke", s.root));
        assert_eq!(config["introspection_endpoint"], format!("{}/oauth2/introspect", s.root));
        assert_eq!(config["jwks_uri"], format!("{}/oauth2/jwks", s.root));
        assert_eq!(config["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(config["token_endpoint_auth_methods_supported"], json!(["private_key_jwt", "client_secret_basic"]));
        let capabilities: Vec<&str> = config["capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        for wanted in ["launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
            "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient", "context-standalone-encounter",
            "permission-offline", "permission-patient", "permission-user", "permission-v1", "permission-v2",
            "sso-openid-connect", "authorize-post"]
        {
            assert!(capabilities.contains(&wanted), "{wanted}");
        }
    }
    let openid: Value = anonymous.get(format!("{}/.well-known/openid-configuration", s.root)).send().await.unwrap().json().await.unwrap();
    assert_eq!(openid["issuer"], s.base);
    assert_eq!(openid["id_token_signing_alg_values_supported"], json!(["RS256"]));
    let jwks: Value = anonymous.get(format!("{}/oauth2/jwks", s.root)).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert!(jwks["keys"][0].get("d").is_none(), "no private part");

    let metadata = anonymous.get(s.url("metadata")).send().await.unwrap();
    assert_eq!(metadata.status(), 200);
    let statement: Value = metadata.json().await.unwrap();
    let oauth = &statement["rest"][0]["security"]["extension"][0];
    assert_eq!(oauth["url"], "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");
    assert!(oauth["extension"].as_array().unwrap().iter().any(|e| e["url"] == "token" && e["valueUri"] == format!("{}/oauth2/token", s.root)));

    for request in [anonymous.get(s.url("Patient")), anonymous.get(s.url("Patient")).bearer_auth("not-a-token"), anonymous.post(s.url("Patient"))] {
        let response = request.send().await.unwrap();
        assert_eq!(header(&response, "www-authenticate").as_deref(), Some("Bearer realm=\"hearth\", error=\"invalid_token\""));
        expect_outcome(response, 401).await;
    }
}

/// Standalone launch: sign in, pick the patient, exchange the code, use the
/// token within its scopes, refresh with rotation, and see a replayed
/// refresh token revoke the whole authorization.
async fn standalone_launch(s: Server) {
    let c = chart(&s).await;
    add_user(&s, "dr-okoro", "physician", None, Some("Practitioner/okoro")).await;
    add_app(&s, "growth-chart", ClientKind::Public, APP_SCOPES, None).await;
    let browser = Browser::new(true);
    let scope = "launch/patient openid fhirUser offline_access patient/Patient.rs patient/Observation.rs";
    let page = browser.get(&authorize_url(&s, "growth-chart", scope, &[("nonce", "n-42")])).await;
    assert_eq!(page.status, 200);
    let picker = sign_in(&s, &browser, &page, "dr-okoro").await;
    assert!(picker.body.contains("Select a patient"), "{}", picker.body);
    let found = browser.submit(&s, &picker, &[("patient_name", "Okafor")]).await;
    assert_eq!(choices(&found, "patient"), vec![c.patient.clone()]);
    let back = browser.submit(&s, &found, &[("patient", &c.patient)]).await;
    let params = redirect_params(&back);
    assert_eq!(get(&params, "state"), Some("st-123"));
    let code = get(&params, "code").unwrap().to_string();

    let (status, tokens) = exchange(&s, "growth-chart", &code, VERIFIER).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["patient"], c.patient.as_str());
    assert_eq!(tokens["scope"], scope);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(access.len(), 43, "256 random bits, base64url");

    // The id_token: RS256 by the published key, for this app, with the nonce and fhirUser.
    let jwks: Value = reqwest::get(format!("{}/oauth2/jwks", s.root)).await.unwrap().json().await.unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_audience(&["growth-chart"]);
    validation.set_issuer(&[&s.base]);
    let id_token = jsonwebtoken::decode::<Value>(
        tokens["id_token"].as_str().unwrap(),
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(id_token.claims["sub"], "dr-okoro");
    assert_eq!(id_token.claims["nonce"], "n-42");
    assert_eq!(id_token.claims["fhirUser"], format!("{}/Practitioner/okoro", s.base));

    // Within the scopes and the patient: yes. Outside: no.
    assert_eq!(fhir_get(&s, &access, &format!("Patient/{}", c.patient)).await.status(), 200);
    let bundle: Value = fhir_get(&s, &access, &format!("Observation?patient={}", c.patient)).await.json().await.unwrap();
    let mut ids: Vec<&str> = bundle["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["id"].as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![c.lab.as_str(), c.vitals.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "{bundle}");
    assert_eq!(fhir_get(&s, &access, &format!("Condition/{}", c.condition)).await.status(), 403, "patient/Observation.rs cannot read Condition");
    assert!(matches!(fhir_get(&s, &access, &format!("Patient/{}", c.other)).await.status().as_u16(), 403 | 404), "another patient");

    // Refresh: a new pair each time; the old refresh token is spent.
    let refresh_form = |token: &str| vec![("grant_type", "refresh_token".to_string()), ("refresh_token", token.to_string()), ("client_id", "growth-chart".to_string())];
    let form: Vec<(&str, String)> = refresh_form(&refresh);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, second) = token_request(&s, &form, None).await;
    assert_eq!(status, 200, "{second}");
    let access2 = second["access_token"].as_str().unwrap().to_string();
    let refresh2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh);
    assert_eq!(second["patient"], c.patient.as_str());
    assert_eq!(fhir_get(&s, &access2, &format!("Patient/{}", c.patient)).await.status(), 200);

    // Replaying the spent refresh token revokes everything of this authorization.
    let (status, error) = token_request(&s, &form, None).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"], "invalid_grant");
    for token in [&access, &access2] {
        let response = fhir_get(&s, token, &format!("Patient/{}", c.patient)).await;
        assert_eq!(response.status(), 401);
    }
    let form2: Vec<(&str, String)> = refresh_form(&refresh2);
    let form2: Vec<(&str, &str)> = form2.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, error) = token_request(&s, &form2, None).await;
    assert_eq!((status.as_u16(), error["error"].as_str()), (400, Some("invalid_grant")));

    // Each issue and refusal is in the audit trail, with the user and the app.
    let query = AuditQuery { event: Some("token".into()), count: 100, ..AuditQuery::default() };
    let entries = s.auth.store().audit_search(&query).await.unwrap().items;
    let records: Vec<_> = entries.iter().map(|e| e.parse().unwrap()).collect();
    assert!(records.iter().any(|r| r.outcome == AuditOutcome::Success && r.who.id == "dr-okoro" && r.who.client.as_deref() == Some("growth-chart")));
    assert!(records.iter().any(|r| r.outcome == AuditOutcome::Denied && r.who.id == "dr-okoro" && r.detail.as_deref().is_some_and(|d| d.contains("invalid_grant"))));
}

per_backend!(standalone_launch);

/// EHR launch: the EHR's user makes a launch context; the app, opened with
/// it, gets a code at once (the browser is signed in) and a token with the
/// patient and encounter; the token is revoked and introspected.
#[tokio::test]
async fn ehr_launch_with_encounter_revoke_and_introspect() {
    let s = Server::start().await;
    let c = chart(&s).await;
    add_user(&s, "nurse-ada", "nurse", None, Some("Practitioner/ada")).await;
    add_app(&s, "hearth-ehr", ClientKind::Public, "openid fhirUser user/*.cruds", None).await;
    add_app(&s, "med-app", ClientKind::Public, APP_SCOPES, None).await;
    let browser = Browser::new(true);

    // The EHR signs its user in and gets a user token.
    let page = browser.get(&authorize_url(&s, "hearth-ehr", "openid fhirUser user/*.cruds", &[])).await;
    let back = sign_in(&s, &browser, &page, "nurse-ada").await;
    let code = get(&redirect_params(&back), "code").unwrap().to_string();
    let (status, ehr) = exchange(&s, "hearth-ehr", &code, VERIFIER).await;
    assert_eq!(status, 200, "{ehr}");
    let ehr_token = ehr["access_token"].as_str().unwrap().to_string();

    // It makes a launch context for a patient and an encounter.
    let launch_url = format!("{}/oauth2/launch", s.root);
    let made = reqwest::Client::new()
        .post(&launch_url)
        .bearer_auth(&ehr_token)
        .json(&json!({"patient": c.patient, "encounter": c.encounter}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);
    let launch = made.json::<Value>().await.unwrap()["launch"].as_str().unwrap().to_string();
    let refused = reqwest::Client::new().post(&launch_url).json(&json!({"patient": c.patient})).send().await.unwrap();
    assert_eq!(refused.status(), 401, "launch contexts need a user's token");

    // The app is opened with it: no sign-in, no picker.
    let scope = "launch openid fhirUser patient/*.rs";
    let back = browser.get(&authorize_url(&s, "med-app", scope, &[("launch", &launch)])).await;
    let code = get(&redirect_params(&back), "code").unwrap().to_string();
    let (status, tokens) = exchange(&s, "med-app", &code, VERIFIER).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["patient"], c.patient.as_str());
    assert_eq!(tokens["encounter"], c.encounter.as_str());
    assert!(tokens.get("refresh_token").is_none(), "no offline_access or online_access asked");
    let token = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(fhir_get(&s, &token, &format!("Condition/{}", c.condition)).await.status(), 200);

    // Introspection, authenticated by a bearer token.
    let introspect = |token: String| {
        let s_root = s.root.clone();
        let ehr_token = ehr_token.clone();
        async move {
            let response = reqwest::Client::new()
                .post(format!("{s_root}/oauth2/introspect"))
                .bearer_auth(&ehr_token)
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let active = introspect(token.clone()).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], "med-app");
    assert_eq!(active["patient"], c.patient.as_str());
    assert_eq!(active["scope"], scope);
    let anonymous = reqwest::Client::new().post(format!("{}/oauth2/introspect", s.root)).form(&[("token", token.as_str())]).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "introspection needs credentials");

    // Revocation (RFC 7009): 200, and the token is dead at once.
    let revoked = reqwest::Client::new()
        .post(format!("{}/oauth2/revoke", s.root))
        .form(&[("token", token.as_str()), ("client_id", "med-app")])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let response = fhir_get(&s, &token, &format!("Patient/{}", c.patient)).await;
    expect_outcome(response, 401).await;
    assert_eq!(introspect(token).await, json!({"active": false}));
}

/// The authorization endpoint's refusals: PKCE S256 only, exact redirect
/// URIs, `aud`, and the token endpoint's checks of the code.
#[tokio::test]
async fn pkce_redirect_uri_and_code_rules() {
    let s = Server::start().await;
    let c = chart(&s).await;
    add_user(&s, "dr-mbeki", "physician", None, None).await;
    add_app(&s, "app", ClientKind::Public, APP_SCOPES, None).await;
    let browser = Browser::new(true);
    let scope = "user/Patient.rs";

    // plain is refused, back at the app; so is a missing challenge.
    let url = authorize_url(&s, "app", scope, &[]).replace("code_challenge_method=S256", "code_challenge_method=plain");
    let back = browser.get(&url).await;
    let params = redirect_params(&back);
    assert_eq!(get(&params, "error"), Some("invalid_request"));
    assert!(get(&params, "error_description").unwrap().contains("S256"));
    assert_eq!(get(&params, "state"), Some("st-123"));
    let url = authorize_url(&s, "app", scope, &[]).replace(&format!("&code_challenge={CHALLENGE}"), "");
    assert_eq!(get(&redirect_params(&browser.get(&url).await), "error"), Some("invalid_request"));
    // A wrong aud, an unknown scope.
    let url = authorize_url(&s, "app", scope, &[]).replace("aud=", "aud=https%3A%2F%2Fevil.example%2Ffhir&x=");
    assert_eq!(get(&redirect_params(&browser.get(&url).await), "error"), Some("invalid_request"));
    let url = authorize_url(&s, "app", "patient/Nonsense.rs", &[]);
    assert_eq!(get(&redirect_params(&browser.get(&url).await), "error"), Some("invalid_scope"));

    // A redirect URI not registered is never redirected to.
    let url = authorize_url(&s, "app", scope, &[]).replace("127.0.0.1%3A9%2Fcallback", "127.0.0.1%3A9%2Fother");
    let page = browser.get(&url).await;
    assert_eq!(page.status, 400);
    assert!(page.location.is_none());
    assert!(page.body.contains("redirect_uri"), "{}", page.body);
    let page = browser.get(&authorize_url(&s, "nobody", scope, &[])).await;
    assert_eq!(page.status, 400);

    // A good code: the wrong verifier and the wrong redirect URI are invalid_grant.
    let page = browser.get(&authorize_url(&s, "app", scope, &[])).await;
    let code = get(&redirect_params(&sign_in(&s, &browser, &page, "dr-mbeki").await), "code").unwrap().to_string();
    let (status, error) = exchange(&s, "app", &code, "wrong-verifier-wrong-verifier-wrong-verifier-0").await;
    assert_eq!((status.as_u16(), error["error"].as_str()), (400, Some("invalid_grant")));
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://127.0.0.1:9/other"),
        ("code_verifier", VERIFIER),
        ("client_id", "app"),
    ];
    let (status, error) = token_request(&s, &form, None).await;
    assert_eq!((status.as_u16(), error["error"].as_str()), (400, Some("invalid_grant")));

    // The right one works once; a second exchange fails and revokes what the first gave.
    let (status, tokens) = exchange(&s, "app", &code, VERIFIER).await;
    assert_eq!(status, 200, "{tokens}");
    let token = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(fhir_get(&s, &token, &format!("Patient/{}", c.patient)).await.status(), 200);
    let (status, error) = exchange(&s, "app", &code, VERIFIER).await;
    assert_eq!((status.as_u16(), error["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(fhir_get(&s, &token, &format!("Patient/{}", c.patient)).await.status(), 401);

    // An unknown grant type, an unknown code.
    let (status, error) = token_request(&s, &[("grant_type", "password")], None).await;
    assert_eq!((status.as_u16(), error["error"].as_str()), (400, Some("unsupported_grant_type")));
    let (status, error) = exchange(&s, "app", "no-such-code", VERIFIER).await;
    assert_eq!((status.as_u16(), error["error"].as_str()), (400, Some("invalid_grant")));
}

/// Sign-in: a browser without cookies cannot sign in; a wrong password is
/// refused on the page; an account with TOTP is asked for its code; the
/// app may POST its authorization request (authorize-post).
#[tokio::test]
async fn sign_in_page_cookies_password_and_totp() {
    let s = Server::start().await;
    add_user(&s, "root-admin", "admin", None, None).await;
    let enrolment = s.auth.users().enrol_totp("root-admin", &admin()).await.unwrap();
    add_app(&s, "directory", ClientKind::Public, "user/Practitioner.rs openid", None).await;
    let scope = "user/Practitioner.rs";

    let no_cookies = Browser::new(false);
    let page = no_cookies.get(&authorize_url(&s, "directory", scope, &[])).await;
    let again = sign_in(&s, &no_cookies, &page, "root-admin").await;
    assert!(again.body.contains("must accept cookies"), "{}", again.body);

    let browser = Browser::new(true);
    let page = browser.get(&authorize_url(&s, "directory", scope, &[])).await;
    let again = browser.submit(&s, &page, &[("username", "root-admin"), ("password", "Not-The-Password-1")]).await;
    assert_eq!(again.status, 200);
    assert!(again.body.contains("invalid username or password"), "{}", again.body);

    // authorize-post: the app posts its request; the password is right, the code is needed.
    let query = authorize_url(&s, "directory", scope, &[]).split_once('?').unwrap().1.to_string();
    let posted = browser
        .send(browser.http.post(format!("{}/oauth2/authorize", s.root)).header("content-type", "application/x-www-form-urlencoded").body(query))
        .await;
    let asked = sign_in(&s, &browser, &posted, "root-admin").await;
    assert!(asked.body.contains("name=\"totp\""), "{}", asked.body);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let code = auth::totp::code_at(&enrolment.secret, now).unwrap();
    let back = browser.submit(&s, &asked, &[("password", PASSWORD), ("totp", &code)]).await;
    let params = redirect_params(&back);
    assert!(get(&params, "code").is_some(), "{params:?}");
}

/// Granular v2 scopes: a laboratory-only token does not see vital signs;
/// a confidential app authenticates with client_secret_basic.
#[tokio::test]
async fn granular_scopes_and_a_confidential_app() {
    let s = Server::start().await;
    let c = chart(&s).await;
    add_user(&s, "dr-lab", "physician", None, None).await;
    let secret = "s3cret-of-the-lab-viewer";
    add_app(&s, "lab-viewer", ClientKind::Confidential, APP_SCOPES, Some(secret)).await;
    let browser = Browser::new(true);
    let scope = format!("launch/patient patient/Observation.rs?category={LAB}");
    let page = browser.get(&authorize_url(&s, "lab-viewer", &scope, &[])).await;
    let picker = sign_in(&s, &browser, &page, "dr-lab").await;
    let found = browser.submit(&s, &picker, &[("patient_name", "Okafor")]).await;
    let back = browser.submit(&s, &found, &[("patient", &c.patient)]).await;
    let code = get(&redirect_params(&back), "code").unwrap().to_string();

    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT), ("code_verifier", VERIFIER)];
    let (status, error) = token_request(&s, &[&form[..], &[("client_id", "lab-viewer")]].concat(), None).await;
    assert_eq!((status.as_u16(), error["error"].as_str()), (401, Some("invalid_client")), "a confidential app must authenticate");
    let (status, error) = token_request(&s, &form, Some(("lab-viewer", "wrong-secret-wrong-secret"))).await;
    assert_eq!((status.as_u16(), error["error"].as_str()), (401, Some("invalid_client")));
    let (status, tokens) = token_request(&s, &form, Some(("lab-viewer", secret))).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], scope);
    let token = tokens["access_token"].as_str().unwrap();

    let bundle: Value = fhir_get(&s, token, &format!("Observation?patient={}", c.patient)).await.json().await.unwrap();
    let ids: Vec<&str> = bundle["entry"].as_array().map(|e| e.iter().filter_map(|e| e["resource"]["id"].as_str()).collect()).unwrap_or_default();
    assert_eq!(ids, vec![c.lab.as_str()], "{bundle}");
    assert_eq!(fhir_get(&s, token, &format!("Observation/{}", c.lab)).await.status(), 200);
    assert!(matches!(fhir_get(&s, token, &format!("Observation/{}", c.vitals)).await.status().as_u16(), 403 | 404));
}

/// SMART Backend Services: client credentials with assertions signed by an
/// RS384 and an ES384 key, each verified against the registered JWKS; the
/// assertion's rules; scope narrowing; expiry by the clock.
#[tokio::test]
async fn backend_services_rs384_and_es384() {
    let clock = Arc::new(TestClock::default());
    let s = Server::with_auth_clock(Arc::new(MemoryStore::new()), clock.clone()).await;
    let c = chart(&s).await;

    use rsa::pkcs1::EncodeRsaPrivateKey;
    let rsa_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let rs384 = EncodingKey::from_rsa_der(rsa_key.to_pkcs1_der().unwrap().as_bytes());
    let mut rsa_jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&rs384, Algorithm::RS384).unwrap();
    rsa_jwk.common.key_id = Some("rsa-1".into());
    let (ec_der, ec_jwks) = es384_key("ec-1");
    let es384 = EncodingKey::from_ec_der(&ec_der);
    let jwks = json!({"keys": [serde_json::to_value(&rsa_jwk).unwrap(), ec_jwks["keys"][0].clone()]});
    let new = NewClient {
        client_id: "bulk-export".into(),
        kind: Some(ClientKind::Backend),
        scopes: "system/Patient.rs system/Observation.rs".into(),
        jwks: Some(jwks),
        ..NewClient::default()
    };
    s.auth.register_client(new, admin()).await.unwrap();

    let rs_token = backend_token(&s.root, "bulk-export", "system/Patient.rs system/Condition.rs", Algorithm::RS384, &rs384, "rsa-1").await;
    let es_token = backend_token(&s.root, "bulk-export", "system/Observation.rs", Algorithm::ES384, &es384, "ec-1").await;
    assert_eq!(fhir_get(&s, &rs_token, &format!("Patient/{}", c.patient)).await.status(), 200);
    assert_eq!(fhir_get(&s, &rs_token, &format!("Condition/{}", c.condition)).await.status(), 403, "system/Condition.rs was not granted");
    assert_eq!(fhir_get(&s, &es_token, &format!("Observation/{}", c.vitals)).await.status(), 200);
    assert_eq!(fhir_get(&s, &es_token, &format!("Patient/{}", c.patient)).await.status(), 403);

    // The assertion's rules.
    let token_url = format!("{}/oauth2/token", s.root);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let signed = |claims: Value, alg: Algorithm, key: &EncodingKey, kid: &str| {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    };
    let claims = |aud: &str, exp: u64, jti: &str| json!({"iss": "bulk-export", "sub": "bulk-export", "aud": aud, "exp": exp, "jti": jti});
    let reused = signed(claims(&token_url, now + 200, "jti-once"), Algorithm::ES384, &es384, "ec-1");
    let hs256 = signed(claims(&token_url, now + 200, "jti-hs"), Algorithm::HS256, &EncodingKey::from_secret(b"guess"), "ec-1");
    let (other_der, _) = es384_key("ec-1");
    let cases = [
        (reused.clone(), "valid (first use)"),
        (reused, "jti reused"),
        (signed(claims("https://elsewhere.example/token", now + 200, "jti-aud"), Algorithm::ES384, &es384, "ec-1"), "aud"),
        (signed(claims(&token_url, now + 3600, "jti-far"), Algorithm::RS384, &rs384, "rsa-1"), "exp too far"),
        (signed(claims(&token_url, now - 10, "jti-old"), Algorithm::RS384, &rs384, "rsa-1"), "expired"),
        (hs256, "HS256"),
        (signed(claims(&token_url, now + 200, "jti-key"), Algorithm::ES384, &EncodingKey::from_ec_der(&other_der), "ec-1"), "unregistered key"),
    ];
    for (i, (assertion, what)) in cases.iter().enumerate() {
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", "system/Patient.rs"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion.as_str()),
        ];
        let (status, body) = token_request(&s, &form, None).await;
        if i == 0 {
            assert_eq!(status, 200, "{what}: {body}");
        } else {
            assert_eq!((status.as_u16(), body["error"].as_str()), (401, Some("invalid_client")), "{what}: {body}");
        }
    }
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "system/Condition.rs"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", &assertion("bulk-export", &token_url, Algorithm::ES384, &es384, "ec-1")),
    ];
    let (status, body) = token_request(&s, &form, None).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_scope")), "{body}");

    // An hour later the tokens have expired.
    clock.advance_seconds(3601);
    let response = fhir_get(&s, &rs_token, &format!("Patient/{}", c.patient)).await;
    assert_eq!(header(&response, "www-authenticate").as_deref(), Some("Bearer realm=\"hearth\", error=\"invalid_token\""));
    let outcome = expect_outcome(response, 401).await;
    assert!(crate::support::diagnostics(&outcome).contains("expired"), "{outcome}");
}

/// A signed-in user's token through an app with `user/*.cruds` scopes
/// (`*` never covers the audit trail: an app asks for `AuditEvent` by name.)
async fn user_token(s: &Server, username: &str) -> String {
    let browser = Browser::new(true);
    let page = browser.get(&authorize_url(s, "chart-app", "openid fhirUser user/*.cruds user/AuditEvent.rs", &[])).await;
    let back = sign_in(s, &browser, &page, username).await;
    let params = redirect_params(&back);
    let code = get(&params, "code").expect("a code").to_string();
    let (status, tokens) = exchange(s, "chart-app", &code, VERIFIER).await;
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().expect("token").to_string()
}

/// A patient user over HTTP reaches their own record only, by every route;
/// they can list who accessed it. A physician opens a restricted record only
/// after break-the-glass with a reason, which the audit trail shows.
#[tokio::test]
async fn patient_users_and_break_the_glass_over_http() {
    let s = Server::start().await;
    let c = chart(&s).await;
    add_user(&s, "pat-okafor", "patient", Some(&c.patient), None).await;
    add_user(&s, "dr-ade", "physician", None, None).await;
    add_user(&s, "desk-joy", "front-desk", None, None).await;
    add_app(&s, "chart-app", ClientKind::Public, APP_SCOPES, None).await;
    let pat = user_token(&s, "pat-okafor").await;

    assert_eq!(fhir_get(&s, &pat, &format!("Patient/{}", c.patient)).await.status(), 200);
    assert_eq!(fhir_get(&s, &pat, &format!("Observation/{}", c.lab)).await.status(), 200);
    for path in [
        format!("Patient/{}", c.other),
        format!("Patient/{}/_history", c.other),
        format!("Patient/{}/$everything", c.other),
        format!("Patient/{}/Observation", c.other),
        "_history".to_string(),
    ] {
        let status = fhir_get(&s, &pat, &path).await.status().as_u16();
        assert_eq!(status, 403, "{path}");
    }
    for path in [
        format!("Patient?_id={},{}", c.patient, c.other),
        format!("Observation?subject=Patient/{}", c.other),
        "Observation?subject:Patient.family=Lindqvist".to_string(),
        format!("Patient?_id={}&_revinclude=Observation:subject", c.other),
        "Patient?_has:Observation:subject:code=2345-7".to_string(),
    ] {
        let bundle: Value = fhir_get(&s, &pat, &path).await.json().await.unwrap();
        // The entries (the self link only echoes what the caller asked).
        let text = bundle["entry"].to_string();
        assert!(!text.contains(&c.other) && !text.contains("Lindqvist"), "{path}: {text}");
    }
    // Who accessed my record: the patient's own audit entries, nobody else's.
    let audit: Value = fhir_get(&s, &pat, "AuditEvent?_sort=-date").await.json().await.unwrap();
    assert!(audit["entry"].as_array().is_some_and(|e| !e.is_empty()), "{audit}");
    assert_eq!(fhir_get(&s, &pat, &format!("AuditEvent?patient={}", c.other)).await.status(), 403);

    // A restricted record: refused, then opened after break-the-glass.
    let restricted = s
        .create(json!({"resourceType": "Patient", "name": [{"family": "Private"}],
                       "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}}))
        .await;
    let doctor = user_token(&s, "dr-ade").await;
    let refused = fhir_get(&s, &doctor, &format!("Patient/{restricted}")).await;
    assert_eq!(refused.status(), 403);
    let outcome: Value = refused.json().await.unwrap();
    assert!(outcome.to_string().contains("break-the-glass"), "{outcome}");
    let glass = |token: &str, reason: &str| {
        let body = json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": reason}]});
        reqwest::Client::new()
            .post(s.url("$break-the-glass"))
            .bearer_auth(token.to_string())
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(glass(&doctor, "").await.unwrap().status(), 400, "a reason is required");
    let desk = user_token(&s, "desk-joy").await;
    assert_eq!(glass(&desk, "curious").await.unwrap().status(), 403, "front desk is not in the group");
    let granted = glass(&doctor, "patient unresponsive in the ED").await.unwrap();
    assert_eq!(granted.status(), 200);
    assert_eq!(fhir_get(&s, &doctor, &format!("Patient/{restricted}")).await.status(), 200);

    s.service.flush_audit().await.unwrap();
    let query = AuditQuery { patient: Some(restricted.clone()), count: 100, ..AuditQuery::default() };
    let records: Vec<_> = s.auth.store().audit_search(&query).await.unwrap().items.iter().map(|e| e.parse().unwrap()).collect();
    assert!(records.iter().any(|r| r.event == "read" && r.outcome == AuditOutcome::Denied && r.who.id == "dr-ade"));
    assert!(records.iter().any(|r| r.event == "read" && r.outcome == AuditOutcome::Success && r.emergency && r.who.id == "dr-ade"));
    let grants = AuditQuery { event: Some("break-glass".into()), count: 100, ..AuditQuery::default() };
    let grants: Vec<_> = s.auth.store().audit_search(&grants).await.unwrap().items.iter().map(|e| e.parse().unwrap()).collect();
    assert!(grants.iter().any(|r| r.who.id == "dr-ade" && r.outcome == AuditOutcome::Success));
    assert!(grants.iter().any(|r| r.who.id == "desk-joy" && r.outcome == AuditOutcome::Denied));
    assert!(!s.auth.users().notifications().await.unwrap().is_empty(), "the privacy officer is notified");
}

/// Sign-out ends the browser's session (CSRF-checked, audited as a logout):
/// the next authorization asks for the password again.
#[tokio::test]
async fn sign_out_ends_the_session() {
    let s = Server::start().await;
    add_user(&s, "dr-out", "physician", None, None).await;
    add_app(&s, "chart-app", ClientKind::Public, APP_SCOPES, None).await;
    let browser = Browser::new(true);
    let url = authorize_url(&s, "chart-app", "openid user/Patient.rs", &[]);
    let page = browser.get(&url).await;
    let back = sign_in(&s, &browser, &page, "dr-out").await;
    assert!(get(&redirect_params(&back), "code").is_some());
    let again = browser.get(&url).await;
    assert!(!again.body.contains("Sign in to Hearth"), "the session signs the user in");

    let session = browser.jar.as_ref().unwrap().lock().unwrap().iter().find(|(k, _)| k == "hearth_session").map(|(_, v)| v.clone()).unwrap();
    let sign_out = |csrf: String| browser.send(browser.http.post(format!("{}/oauth2/sign-out", s.root)).form(&[("csrf", csrf)]));
    assert_eq!(sign_out("forged".into()).await.status, 403);
    let csrf_field = auth::sessions::CSRF_FIELD;
    let out = browser
        .send(browser.http.post(format!("{}/oauth2/sign-out", s.root)).form(&[(csrf_field, auth::sessions::csrf_for(&session))]))
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let after = browser.get(&url).await;
    assert!(after.body.contains("Sign in to Hearth"), "signed out: {}", after.body);
    let query = AuditQuery { event: Some("logout".into()), who: Some("dr-out".into()), count: 10, ..AuditQuery::default() };
    assert_eq!(s.auth.store().audit_search(&query).await.unwrap().items.len(), 1);
}
