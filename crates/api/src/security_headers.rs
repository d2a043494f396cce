//! Security headers on every response.
//!
//! - `Strict-Transport-Security` (two years, subdomains) when the public base
//!   URL is `https://`: browsers then refuse plain HTTP to this host;
//! - `X-Content-Type-Options: nosniff`, so a browser never runs a body as
//!   another type than declared (a Binary's data, a JSON body);
//! - `X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`: no framing
//!   (clickjacking);
//! - `Content-Security-Policy: default-src 'self'`: content loads only from
//!   this origin;
//! - `Referrer-Policy: no-referrer`: URLs, whose query strings may name
//!   patients, never leak to other sites;
//! - `Cache-Control: no-store`: patient data is not kept in browser or proxy
//!   caches.
//!
//! A handler that sets one of these itself (a page with its own policy,
//! cacheable static files) keeps its value.

use axum::extract::State;
use axum::response::Response;
use http::HeaderValue;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, HeaderName, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};

const HSTS: &str = "max-age=63072000; includeSubDomains";
const CSP: &str = "default-src 'self'; frame-ancestors 'none'";

const ALWAYS: [(HeaderName, &str); 5] = [
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (X_FRAME_OPTIONS, "DENY"),
    (REFERRER_POLICY, "no-referrer"),
    (CONTENT_SECURITY_POLICY, CSP),
    (CACHE_CONTROL, "no-store"),
];

/// Adds the headers; `https` says whether the server is reached over TLS
/// (its base URL is `https://`), which HSTS needs.
pub(crate) async fn add(State(https): State<bool>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in ALWAYS {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if https && !headers.contains_key(STRICT_TRANSPORT_SECURITY) {
        headers.insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    response
}
