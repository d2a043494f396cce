//! Storage backends behind domain's Store trait: SQLite (the embedded default)
//! and PostgreSQL. Each owns its versioned schema migrations.

pub mod postgres;
pub mod sqlite;
