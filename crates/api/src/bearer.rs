//! The bearer-token gate of `/fhir` (SMART App Launch, RFC 6750): every
//! request but `GET /fhir/metadata` carries `Authorization: Bearer`; the
//! token's [`Access`] (with the peer address as `from`) goes into the
//! request's extensions for the handlers' [`crate::caller::Caller`]. A
//! missing, unknown, expired or revoked token is answered 401 with an
//! OperationOutcome and `WWW-Authenticate`.

use crate::Shared;
use crate::error::ApiError;
use crate::listener::FhirListener;
use auth::AuthError;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::serve::{IncomingStream, Listener};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::ErrorKind;
use http::{HeaderMap, HeaderValue, Method};
use std::net::SocketAddr;
use std::sync::Arc;

const CHALLENGE: &str = "Bearer realm=\"hearth\", error=\"invalid_token\"";

/// The token of `Authorization: Bearer <token>`.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The peer address of a connection, as connect info: serve the router with
/// `router.into_make_service_with_connect_info::<api::Peer>()` so that
/// audit records and tokens name the address a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl<L> Connected<IncomingStream<'_, FhirListener<L>>> for Peer
where
    L: Listener<Addr = SocketAddr>,
{
    fn connect_info(stream: IncomingStream<'_, FhirListener<L>>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl Connected<SocketAddr> for Peer {
    fn connect_info(addr: SocketAddr) -> Peer {
        Peer(addr)
    }
}

/// The address of the peer, when the server was started with connect info.
pub(crate) fn peer(extensions: &http::Extensions) -> Option<String> {
    extensions
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.0.ip().to_string())
        .or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()))
}

/// Requests that need no token: the CapabilityStatement (SMART discovery reads it).
fn is_public(request: &Request) -> bool {
    (request.method() == Method::GET || request.method() == Method::HEAD) && request.uri().path() == "/fhir/metadata"
}

/// The middleware: checks the token and hands its `Access` to the handlers.
pub(crate) async fn require(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    if is_public(&request) {
        return next.run(request).await;
    }
    let Some(token) = bearer_token(request.headers()) else {
        return unauthorized("this request needs a bearer token (Authorization: Bearer ...)");
    };
    let from = peer(request.extensions());
    match shared.auth.authenticate_bearer(token, from.as_deref()).await {
        Ok(access) => {
            request.extensions_mut().insert(access);
            next.run(request).await
        }
        Err(AuthError::InvalidToken(reason)) => unauthorized(&format!("invalid bearer token: {reason}")),
        Err(AuthError::Store(e)) => {
            tracing::error!(error = %e, "token check failed");
            ApiError::new(ErrorKind::Unavailable, "the token could not be checked").into_response()
        }
    }
}

fn unauthorized(diagnostics: &str) -> Response {
    let mut response = ApiError::new(ErrorKind::Unauthorized, diagnostics).into_response();
    response.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    response
}
