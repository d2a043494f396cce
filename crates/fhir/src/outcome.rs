//! OperationOutcome issues: the one way every layer reports a problem with input.
//!
//! See <http://hl7.org/fhir/R4/operationoutcome.html>. `expression` names the
//! element in FHIRPath form (`Patient.birthDate`, `Bundle.entry[2].resource`).

use serde_json::{Value, json};

/// `OperationOutcome.issue.severity` (required binding `issue-severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn code(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// `OperationOutcome.issue.code` (required binding `issue-type`), the subset Hearth emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    Security,
    Login,
    Forbidden,
    Processing,
    NotSupported,
    Duplicate,
    MultipleMatches,
    NotFound,
    Deleted,
    TooLong,
    CodeInvalid,
    Extension,
    TooCostly,
    BusinessRule,
    Conflict,
    Transient,
    Exception,
    Timeout,
    Informational,
}

impl IssueType {
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::Invariant => "invariant",
            IssueType::Security => "security",
            IssueType::Login => "login",
            IssueType::Forbidden => "forbidden",
            IssueType::Processing => "processing",
            IssueType::NotSupported => "not-supported",
            IssueType::Duplicate => "duplicate",
            IssueType::MultipleMatches => "multiple-matches",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::TooLong => "too-long",
            IssueType::CodeInvalid => "code-invalid",
            IssueType::Extension => "extension",
            IssueType::TooCostly => "too-costly",
            IssueType::BusinessRule => "business-rule",
            IssueType::Conflict => "conflict",
            IssueType::Transient => "transient",
            IssueType::Exception => "exception",
            IssueType::Timeout => "timeout",
            IssueType::Informational => "informational",
        }
    }
}

/// One problem found in input, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueType,
    /// Human-readable text; never contains patient data values.
    pub diagnostics: String,
    /// FHIRPath location of the offending element, when there is one.
    pub expression: Option<String>,
}

impl Issue {
    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Issue {
        Issue { severity: Severity::Error, code, diagnostics: diagnostics.into(), expression: None }
    }

    pub fn warning(code: IssueType, diagnostics: impl Into<String>) -> Issue {
        Issue { severity: Severity::Warning, code, diagnostics: diagnostics.into(), expression: None }
    }

    pub fn information(code: IssueType, diagnostics: impl Into<String>) -> Issue {
        Issue { severity: Severity::Information, code, diagnostics: diagnostics.into(), expression: None }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Issue {
        self.expression = Some(expression.into());
        self
    }

    pub fn is_error(&self) -> bool {
        matches!(self.severity, Severity::Error | Severity::Fatal)
    }

    pub fn to_json(&self) -> Value {
        let mut issue = json!({
            "severity": self.severity.code(),
            "code": self.code.code(),
            "diagnostics": self.diagnostics,
        });
        if let (Some(expr), Some(obj)) = (&self.expression, issue.as_object_mut()) {
            obj.insert("expression".into(), json!([expr]));
        }
        issue
    }
}

/// Builds an OperationOutcome resource from issues. An empty list yields a
/// single informational "All OK" issue, as the spec requires at least one.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = if issues.is_empty() {
        vec![Issue::information(IssueType::Informational, "All OK").to_json()]
    } else {
        issues.iter().map(Issue::to_json).collect()
    };
    json!({ "resourceType": "OperationOutcome", "issue": issues })
}
