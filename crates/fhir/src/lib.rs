//! The FHIR R4 (4.0.1) standard as pure code and data.
//!
//! Architecture invariant: this crate does no I/O, knows nothing of storage,
//! HTTP or tokio, and never panics on input. Parsers and validators return the
//! problems they found as [`outcome::Issue`] values.

pub mod compartments;
pub mod definitions;
pub mod fhirpath;
pub mod instant;
pub mod outcome;
pub mod patch;
pub mod search;
pub mod validation;
pub mod xhtml;

pub use outcome::{Issue, IssueType, Severity};
