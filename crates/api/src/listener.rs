//! The listener to serve the router with, so that even the errors hyper
//! answers on its own carry an OperationOutcome:
//! `axum::serve(api::FhirListener::new(tcp_listener), api::router(state))`.
//!
//! hyper refuses some requests before any service, middleware or handler
//! runs: 414 for a request target over 65,534 bytes, 431 for more than 100
//! header fields or a head over its buffer, 400 for a request line or header
//! that does not parse. It writes those responses itself with an empty body
//! and then closes the connection, and offers no hook to change them
//! (`on_error` in hyper's `proto/h1/role.rs`). FHIR wants an OperationOutcome
//! on every error (<http://hl7.org/fhir/R4/http.html#summary>), so the
//! connection's writer recognises such a response and adds one.
//!
//! Recognising it is safe because this router never produces an error
//! without a body (`outcome_for_bare_errors` in `lib.rs` sees to that): a
//! response head with a 4xx/5xx status, `content-length: 0` and
//! `connection: close` can only be hyper's own. And since the connection
//! closes after it, adding a body cannot desynchronise a keep-alive stream.

use crate::error::kind_for_status;
use crate::negotiation::FHIR_JSON;
use axum::serve::Listener;
use fhir::outcome::operation_outcome;
use fhir::{Issue, IssueType};
use http::StatusCode;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps a listener (a `tokio::net::TcpListener` usually) so that the
/// connections it accepts answer hyper's automatic errors with an
/// OperationOutcome.
#[derive(Debug)]
pub struct FhirListener<L> {
    inner: L,
}

impl<L: Listener> FhirListener<L> {
    pub fn new(inner: L) -> FhirListener<L> {
        FhirListener { inner }
    }
}

impl<L: Listener> Listener for FhirListener<L> {
    type Io = OutcomeIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (OutcomeIo { inner: io, pending: Vec::new(), written: 0 }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One accepted connection: reads pass through; a write that is one of
/// hyper's bodiless error responses is replaced by the same response with an
/// OperationOutcome body.
#[derive(Debug)]
pub struct OutcomeIo<T> {
    inner: T,
    /// A replacement response still to be written, and how much of it is.
    pending: Vec<u8>,
    written: usize,
}

impl<T: AsyncWrite + Unpin> OutcomeIo<T> {
    /// Writes what is left of a replacement before anything else.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes over `buf` when it starts with an automatic error response:
    /// returns how many bytes of `buf` the replacement stands for.
    fn take_over(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<io::Result<usize>> {
        let (head_len, replacement) = with_outcome(buf)?;
        self.pending = replacement;
        self.written = 0;
        // Start writing now; whatever is left goes out on the next write,
        // flush or shutdown, which hyper always calls after a response.
        match self.poll_drain(cx) {
            Poll::Ready(Err(e)) => Some(Err(e)),
            Poll::Ready(Ok(())) | Poll::Pending => Some(Ok(head_len)),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for OutcomeIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for OutcomeIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        if let Some(result) = self.take_over(cx, buf) {
            return Poll::Ready(result);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        // A response head is always the first slice hyper queues.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(result) = self.take_over(cx, first)
        {
            return Poll::Ready(result);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// When `buf` starts with a complete bodiless error response head that
/// closes the connection, returns the head's length and the response to
/// send instead: the same status line and headers, a FHIR content type and
/// an OperationOutcome body.
fn with_outcome(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ").or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    // hyper's automatic heads are short; a longer one is not theirs.
    let window = &buf[..buf.len().min(1024)];
    let head_len = window.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_len - 2]).ok()?;
    let mut lines = head.split_terminator("\r\n");
    let status_line = lines.next()?;
    let mut kept = Vec::new();
    let (mut empty, mut closes) = (false, false);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            empty = value == "0";
        } else if name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        } else {
            closes |= name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close");
            kept.push(line);
        }
    }
    if !(empty && closes) {
        return None;
    }
    let body = operation_outcome(&[issue_for(status)]).to_string();
    let mut out = String::with_capacity(head_len + body.len() + 96);
    out.push_str(status_line);
    out.push_str("\r\n");
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("content-type: {FHIR_JSON}\r\ncontent-length: {}\r\n\r\n", body.len()));
    out.push_str(&body);
    Some((head_len, out.into_bytes()))
}

/// The issue for a status hyper answered by itself.
fn issue_for(status: StatusCode) -> Issue {
    match status {
        StatusCode::URI_TOO_LONG => Issue::error(IssueType::TooLong, "the request URI is too long (at most 65,534 bytes)"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Issue::error(
            IssueType::TooLong,
            "the request header fields are too large or too many (at most 100 fields)",
        ),
        StatusCode::BAD_REQUEST => Issue::error(IssueType::Structure, "the request is not valid HTTP/1.1"),
        _ => Issue::error(
            kind_for_status(status).issue_type(),
            status.canonical_reason().unwrap_or("request failed").to_string(),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HYPER_414: &[u8] =
        b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 25 Nov 2026 11:24:52 GMT\r\n\r\n";

    #[test]
    fn automatic_error_heads_gain_an_outcome() {
        let (len, out) = with_outcome(HYPER_414).unwrap();
        assert_eq!(len, HYPER_414.len());
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains("\r\ndate: Wed, 25 Nov 2026 11:24:52 GMT"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-type: {FHIR_JSON}")), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        assert!(!head.contains("content-length: 0"), "{head}");
        let outcome: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], "too-long");
    }

    #[test]
    fn other_writes_pass_untouched() {
        for buf in [
            // A success, a body chunk, an error with a body, a bodiless error
            // that keeps the connection open, an incomplete head.
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"[..],
            b"{\"resourceType\":\"Patient\"}",
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/fhir+json\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 120\r\nconnection: close\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n",
            b"HTTP/1.1 4",
        ] {
            assert!(with_outcome(buf).is_none(), "{}", String::from_utf8_lossy(buf));
        }
    }
}
