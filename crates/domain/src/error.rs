//! The error-kind table: one place that maps each kind of failure to an HTTP
//! status, an OperationOutcome issue type and a stable code.

use fhir::{Issue, IssueType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request: bad JSON, bad parameter (400).
    BadRequest,
    /// Well-formed but invalid content (422).
    Invalid,
    NotFound,
    Gone,
    /// Version conflict or duplicate (409).
    Conflict,
    /// If-Match or a conditional operation's precondition failed (412).
    PreconditionFailed,
    Forbidden,
    Unauthorized,
    /// Unsupported media type (415).
    UnsupportedMediaType,
    /// Cannot produce the requested format (406).
    NotAcceptable,
    MethodNotAllowed,
    PayloadTooLarge,
    NotImplemented,
    Unavailable,
    Internal,
}

/// (kind, HTTP status, issue type, stable code).
const TABLE: &[(ErrorKind, u16, IssueType, &str)] = &[
    (ErrorKind::BadRequest, 400, IssueType::Invalid, "HEARTH-BAD-REQUEST"),
    (ErrorKind::Invalid, 422, IssueType::Invalid, "HEARTH-INVALID"),
    (ErrorKind::NotFound, 404, IssueType::NotFound, "HEARTH-NOT-FOUND"),
    (ErrorKind::Gone, 410, IssueType::Deleted, "HEARTH-GONE"),
    (ErrorKind::Conflict, 409, IssueType::Conflict, "HEARTH-CONFLICT"),
    (ErrorKind::PreconditionFailed, 412, IssueType::Conflict, "HEARTH-PRECONDITION"),
    (ErrorKind::Forbidden, 403, IssueType::Forbidden, "HEARTH-FORBIDDEN"),
    (ErrorKind::Unauthorized, 401, IssueType::Login, "HEARTH-UNAUTHORIZED"),
    (ErrorKind::UnsupportedMediaType, 415, IssueType::NotSupported, "HEARTH-MEDIA-TYPE"),
    (ErrorKind::NotAcceptable, 406, IssueType::NotSupported, "HEARTH-NOT-ACCEPTABLE"),
    (ErrorKind::MethodNotAllowed, 405, IssueType::NotSupported, "HEARTH-METHOD"),
    (ErrorKind::PayloadTooLarge, 413, IssueType::TooLong, "HEARTH-TOO-LARGE"),
    (ErrorKind::NotImplemented, 501, IssueType::NotSupported, "HEARTH-NOT-SUPPORTED"),
    (ErrorKind::Unavailable, 503, IssueType::Transient, "HEARTH-UNAVAILABLE"),
    (ErrorKind::Internal, 500, IssueType::Exception, "HEARTH-INTERNAL"),
];

impl ErrorKind {
    fn row(self) -> (u16, IssueType, &'static str) {
        TABLE
            .iter()
            .find(|(k, ..)| *k == self)
            .map(|(_, s, t, c)| (*s, *t, *c))
            .unwrap_or((500, IssueType::Exception, "HEARTH-INTERNAL"))
    }

    pub fn http_status(self) -> u16 {
        self.row().0
    }

    pub fn issue_type(self) -> IssueType {
        self.row().1
    }

    pub fn code(self) -> &'static str {
        self.row().2
    }
}

/// A failed interaction: its kind and the issues to report.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {}", .issues.first().map(|i| i.diagnostics.as_str()).unwrap_or(""))]
pub struct Error {
    pub kind: ErrorKind,
    pub issues: Vec<Issue>,
}

impl Error {
    pub fn new(kind: ErrorKind, diagnostics: impl Into<String>) -> Error {
        Error { kind, issues: vec![Issue::error(kind.issue_type(), diagnostics)] }
    }

    pub fn with_issues(kind: ErrorKind, issues: Vec<Issue>) -> Error {
        Error { kind, issues }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Error {
        if let Some(first) = self.issues.first_mut() {
            first.expression = Some(expression.into());
        }
        self
    }

    /// Diagnostics of the first issue, for logs and summaries.
    pub fn message(&self) -> String {
        self.issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default()
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Error {
        use crate::store::StoreError;
        match e {
            StoreError::Conflict(msg) => Error::new(ErrorKind::Conflict, msg),
            StoreError::Unavailable(msg) => Error::new(ErrorKind::Unavailable, msg),
            StoreError::Internal(msg) => Error::new(ErrorKind::Internal, msg),
        }
    }
}
