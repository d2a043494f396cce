//! Storage backends behind domain's Store trait: SQLite (the embedded default)
//! and PostgreSQL. Each owns its versioned schema migrations; both translate
//! search through one SQL builder ([`sql`]) with a small dialect layer.
//!
//! Schema outline (migrations/{sqlite,postgres}/0001_init.sql):
//! - `resource`: one row per (type, id) with the current version number and an
//!   internal integer key `rid`;
//! - `resource_version`: every version, body stored once (NULL for a delete),
//!   with a global sequence `seq` ordering system history;
//! - `idx_string`, `idx_token`, `idx_reference`, `idx_date`, `idx_number`,
//!   `idx_quantity`, `idx_uri`: search values of the current version only,
//!   keyed by `rid`; parameter codes and code systems are interned in
//!   `search_param` and `term_system`.
//!
//! Chains, `_include` and `_has` join the index tables on `rid` and
//! `idx_reference.target_*`; sort by any parameter is a correlated MIN/MAX
//! over the parameter's table; both extend [`sql`] without a schema change.
//! Full-text search (`_text`, `_content`) has one more table, `idx_text`
//! (an FTS5 table on SQLite, tsvectors on PostgreSQL; [`fulltext`]).
//!
//! Partitioning (for PostgreSQL-compatible distributed engines): a patient
//! compartment key can be added to `resource` and copied onto each index row
//! beside `rid`; the builder's predicates are all `r.rid IN (SELECT rid ...)`
//! so they gain the key in one place. `rid` and `seq` come from per-table
//! sequences today; a distributed deployment would make them
//! (node, counter) pairs instead of one cross-shard sequence.
//!
//! Measured numbers and how to reproduce them: `examples/store_bench.rs`.

mod audit;
mod cache;
pub mod cipher;
mod fulltext;
pub mod postgres;
mod sql;
pub mod sqlite;

use domain::store::{Method, StoredResource};
use fhir::instant::Instant;
use std::sync::Arc;

/// The small integer `resource_version.method` stores.
fn method_code(method: Method) -> i64 {
    match method {
        Method::Post => 1,
        Method::Put => 2,
        Method::Patch => 3,
        Method::Delete => 4,
    }
}

fn method_from_code(code: i64) -> Option<Method> {
    match code {
        1 => Some(Method::Post),
        2 => Some(Method::Put),
        3 => Some(Method::Patch),
        4 => Some(Method::Delete),
        _ => None,
    }
}

/// The columns of `sql::RESOURCE_COLUMNS`, decoded by either backend.
struct ResourceRow {
    resource_type: String,
    id: String,
    version: i64,
    last_updated: i64,
    method: i64,
    body: Option<Arc<str>>,
}

impl ResourceRow {
    fn into_stored(self) -> Result<StoredResource, domain::store::StoreError> {
        let method = method_from_code(self.method)
            .ok_or_else(|| domain::store::StoreError::Internal(format!("unknown method code {}", self.method)))?;
        let version_id = u64::try_from(self.version)
            .map_err(|_| domain::store::StoreError::Internal("negative version number".into()))?;
        Ok(StoredResource {
            resource_type: self.resource_type,
            id: self.id,
            version_id,
            last_updated: Instant(self.last_updated),
            method,
            body: self.body,
        })
    }
}
