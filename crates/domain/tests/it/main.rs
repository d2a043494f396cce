//! Service tests over the in-memory reference store: interactions,
//! versioning, conditional operations, batch and transaction semantics.

mod access;
mod contained;
mod includes;
mod service;
mod operations;

/// The caller of these tests: Hearth itself, allowed everything (the
/// access rules have their own tests in access.rs).
pub(crate) fn sys() -> domain::access::Access {
    domain::access::Access::system("test")
}
