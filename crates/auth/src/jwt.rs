//! JSON Web Tokens: Hearth's own RS256 key (generated once, kept as a
//! system record) that signs OpenID Connect id_tokens and is published at
//! `/oauth2/jwks`, and the verification of clients' signed assertions
//! (`private_key_jwt`, SMART Backend Services: RS384 or ES384).

use crate::clients::Client;
use base64::Engine as _;
use domain::store::{Commit, Store, StoreError, SysWrite};
use fhir::instant::Instant;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

/// The system-record kind and key of the signing key.
pub const KEY_KIND: &str = "signing-key";
pub const ID_TOKEN_KEY: &str = "id-token";

/// The longest a client assertion may live (SMART Backend Services: 5 minutes).
pub const MAX_ASSERTION_SECONDS: i64 = 300;

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: String,
    /// PKCS#1 DER of the RSA private key, base64.
    pkcs1: String,
    created: String,
}

/// Hearth's id_token signing key.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

impl SigningKey {
    /// The stored key, or a new one generated and stored (once, even when
    /// several processes race: the first commit wins, the others read it).
    pub async fn load_or_create(store: &dyn Store, now: Instant) -> Result<SigningKey, StoreError> {
        for _ in 0..3 {
            if let Some(record) = store.sys_get(KEY_KIND, ID_TOKEN_KEY).await? {
                let stored: StoredKey = serde_json::from_str(&record.json)
                    .map_err(|e| StoreError::Internal(format!("signing key record is unreadable: {e}")))?;
                return SigningKey::from_stored(&stored);
            }
            let pkcs1 = tokio::task::spawn_blocking(generate_rsa)
                .await
                .map_err(|e| StoreError::Internal(format!("key generation failed: {e}")))??;
            let kid = crate::tokens::sha256_hex(&pkcs1).chars().take(16).collect::<String>();
            let stored = StoredKey {
                kid,
                alg: "RS256".into(),
                pkcs1: base64::engine::general_purpose::STANDARD.encode(&pkcs1),
                created: now.to_fhir(),
            };
            let json = serde_json::to_string(&stored).map_err(|e| StoreError::Internal(e.to_string()))?;
            let write = SysWrite { kind: KEY_KIND.into(), key: ID_TOKEN_KEY.into(), expected: None, json: Some(Arc::from(json)) };
            match store.commit(Commit { sys: vec![write], ..Commit::default() }).await {
                Ok(()) => return SigningKey::from_stored(&stored),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Internal("could not store or read the signing key".into()))
    }

    fn from_stored(stored: &StoredKey) -> Result<SigningKey, StoreError> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(&stored.pkcs1)
            .map_err(|e| StoreError::Internal(format!("signing key is not base64: {e}")))?;
        let encoding = EncodingKey::from_rsa_der(&der);
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|e| StoreError::Internal(format!("signing key is not an RSA key: {e}")))?;
        jwk.common.key_id = Some(stored.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let jwk = serde_json::to_value(&jwk).map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(SigningKey { kid: stored.kid.clone(), encoding, jwk })
    }

    /// Signs claims as an RS256 JWT.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| format!("cannot sign: {e}"))
    }

    /// The public JWK set (`/oauth2/jwks`).
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk.clone()]})
    }
}

fn generate_rsa() -> Result<Vec<u8>, StoreError> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let mut rng = rsa::rand_core::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| StoreError::Internal(format!("RSA key generation: {e}")))?;
    let der = key.to_pkcs1_der().map_err(|e| StoreError::Internal(format!("RSA key encoding: {e}")))?;
    Ok(der.as_bytes().to_vec())
}

/// The claims of a verified client assertion that the caller still has to act on.
#[derive(Debug, Clone)]
pub struct Assertion {
    pub jti: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// Verifies a client assertion (RFC 7523, SMART Backend Services): signed
/// RS384 or ES384 by one of the client's registered keys; `iss` = `sub` =
/// client id; `aud` = the token endpoint; `exp` in the future and at most
/// five minutes away; a `jti`. Replay of the `jti` is the caller's check.
pub fn verify_assertion(assertion: &str, client: &Client, token_url: &str, now_seconds: i64) -> Result<Assertion, String> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| format!("the assertion is not a JWT: {e}"))?;
    let (kty, crv) = match header.alg {
        Algorithm::RS384 => ("RSA", None),
        Algorithm::ES384 => ("EC", Some("P-384")),
        other => return Err(format!("assertion algorithm {other:?} is not accepted; use RS384 or ES384")),
    };
    let keys = client
        .jwks
        .as_ref()
        .and_then(|j| j.get("keys"))
        .and_then(Value::as_array)
        .ok_or("the client has no registered keys")?;
    let candidates: Vec<&Value> = keys
        .iter()
        .filter(|k| k.get("kty").and_then(Value::as_str) == Some(kty))
        .filter(|k| crv.is_none() || k.get("crv").and_then(Value::as_str) == crv)
        .filter(|k| match (&header.kid, k.get("kid").and_then(Value::as_str)) {
            (Some(wanted), Some(kid)) => wanted == kid,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err("no registered key of the client matches the assertion's algorithm and kid".into());
    }
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut claims: Option<Value> = None;
    for key in candidates {
        let Ok(jwk) = serde_json::from_value::<Jwk>(key.clone()) else { continue };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else { continue };
        if let Ok(data) = jsonwebtoken::decode::<Value>(assertion, &decoding, &validation) {
            claims = Some(data.claims);
            break;
        }
    }
    let claims = claims.ok_or("the assertion's signature does not verify with the client's registered keys")?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(client.client_id.as_str()) || text("sub") != Some(client.client_id.as_str()) {
        return Err("the assertion's iss and sub must both be the client id".into());
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == token_url,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(token_url)),
        _ => false,
    };
    if !audience_ok {
        return Err(format!("the assertion's aud must be the token endpoint {token_url}"));
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or("the assertion has no exp")?;
    if exp <= now_seconds {
        return Err("the assertion has expired".into());
    }
    if exp > now_seconds + MAX_ASSERTION_SECONDS {
        return Err("the assertion's exp is more than five minutes away".into());
    }
    let jti = text("jti").filter(|j| !j.is_empty()).ok_or("the assertion has no jti")?.to_string();
    Ok(Assertion { jti, exp })
}

/// An ES384 key pair of a backend client that Hearth itself makes (the demo
/// client, the benchmark's client): its public JWK set is registered, its
/// private key signs the client's assertions.
pub struct ClientKey {
    kid: String,
    secret: p384::SecretKey,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey({})", self.kid)
    }
}

impl ClientKey {
    /// A new random P-384 key named `kid`.
    pub fn generate(kid: &str) -> ClientKey {
        ClientKey { kid: kid.to_string(), secret: p384::SecretKey::random(&mut p384::elliptic_curve::rand_core::OsRng) }
    }

    /// Reads a private JWK (as [`ClientKey::private_jwk`] writes it).
    pub fn from_private_jwk(jwk: &Value) -> Result<ClientKey, String> {
        let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("").to_string();
        let field = |name: &str| jwk.get(name).cloned().unwrap_or(Value::Null);
        let bare = json!({"kty": field("kty"), "crv": field("crv"), "x": field("x"), "y": field("y"), "d": field("d")});
        let secret = p384::SecretKey::from_jwk_str(&bare.to_string()).map_err(|e| format!("not a P-384 private JWK: {e}"))?;
        Ok(ClientKey { kid, secret })
    }

    /// The JWK set to register (public key only).
    pub fn public_jwks(&self) -> Value {
        let mut jwk: Value = serde_json::from_str(&self.secret.public_key().to_jwk_string()).unwrap_or(Value::Null);
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!("ES384");
        json!({"keys": [jwk]})
    }

    /// The private JWK, for the client's operator to keep.
    pub fn private_jwk(&self) -> Value {
        let mut jwk: Value = serde_json::from_str(&self.secret.to_jwk_string()).unwrap_or(Value::Null);
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!("ES384");
        jwk
    }

    /// A client assertion for `token_url`, valid for four minutes from `now_seconds`.
    pub fn assertion(&self, client_id: &str, token_url: &str, now_seconds: i64) -> Result<String, String> {
        use p384::pkcs8::EncodePrivateKey;
        let der = self.secret.to_pkcs8_der().map_err(|e| format!("cannot encode the key: {e}"))?;
        let key = EncodingKey::from_ec_der(der.as_bytes());
        let mut header = Header::new(Algorithm::ES384);
        header.kid = Some(self.kid.clone());
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "exp": now_seconds + 240,
            "jti": crate::tokens::new_secret(),
        });
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("cannot sign: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::{Client, ClientKind};

    fn backend(jwks: Value) -> Client {
        Client {
            client_id: "svc".into(),
            kind: ClientKind::Backend,
            redirect_uris: Vec::new(),
            scopes: "system/*.rs".into(),
            secret_hash: None,
            jwks: Some(jwks),
            created: String::new(),
            disabled: false,
            administer: false,
            restricted_access: false,
        }
    }

    #[test]
    fn client_keys_sign_assertions_that_verify() {
        let key = ClientKey::generate("k1");
        crate::clients::check_jwks(&key.public_jwks()).expect("registrable");
        let client = backend(key.public_jwks());
        let now = 1_900_000_000;
        let assertion = key.assertion("svc", "https://h.example/oauth2/token", now).expect("signed");
        let verified = verify_assertion(&assertion, &client, "https://h.example/oauth2/token", now).expect("verifies");
        assert_eq!(verified.exp, now + 240);
        assert!(verify_assertion(&assertion, &client, "https://other.example/oauth2/token", now).is_err());
        assert!(verify_assertion(&assertion, &client, "https://h.example/oauth2/token", now + 241).is_err());
        let again = ClientKey::from_private_jwk(&key.private_jwk()).expect("round trip");
        assert_eq!(again.public_jwks(), key.public_jwks());
        let stranger = backend(ClientKey::generate("k1").public_jwks());
        assert!(verify_assertion(&assertion, &stranger, "https://h.example/oauth2/token", now).is_err());
    }
}
