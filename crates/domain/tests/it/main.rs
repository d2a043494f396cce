//! Service tests over the in-memory reference store: interactions,
//! versioning, conditional operations, batch and transaction semantics.

mod includes;
mod service;
mod operations;
