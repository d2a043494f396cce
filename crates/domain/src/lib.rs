//! Hearth's rules over the FHIR standard: the [`store::Store`] trait that every
//! storage backend implements, the in-memory reference store, and the
//! [`service::Service`] that performs every FHIR interaction.
//!
//! Architecture invariant: nothing here knows HTTP, SQL, files or the
//! environment. Only the `hearth` binary chooses a backend.

pub mod access;
pub mod audit;
pub mod error;
pub mod memory;
pub mod service;
pub mod store;

pub use error::{Error, ErrorKind};
pub use service::Service;
pub use store::Store;
