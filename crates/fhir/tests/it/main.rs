//! Integration tests of the fhir crate: one test binary (see architecture conventions).

mod definitions;
mod examples;
mod validation;
mod search;
mod patch;
mod compartments;
