//! What the SQL backends share about system records and the audit trail
//! (migrations 0005): the report columns of an entry and the statements of
//! [`domain::Store::audit_search`], which reproduce `AuditQuery::matches` and
//! `domain::audit::compare` in SQL.

use crate::sql::{Dialect, Sql, SqlValue};
use domain::audit::{AuditEntry, AuditQuery, AuditRecord, AuditSort};
use domain::store::{StoreError, SysWrite};
use std::collections::HashMap;

/// The columns of one `audit_entry` row besides `seq` and `hash`, and the
/// rows it adds to `audit_patient`.
pub(crate) struct EntryColumns<'a> {
    pub(crate) at: i64,
    pub(crate) who: &'a str,
    /// The first patient (the one the entry sorts by), if any.
    pub(crate) patient: Option<&'a str>,
    /// The other patients, each once, never the first.
    pub(crate) more_patients: Vec<&'a str>,
    pub(crate) action: &'static str,
    pub(crate) event: &'a str,
    pub(crate) resource_type: Option<&'a str>,
    pub(crate) outcome: i64,
    /// The canonical JSON the chain digest covers.
    pub(crate) record: String,
}

impl<'a> EntryColumns<'a> {
    pub(crate) fn of(record: &'a AuditRecord) -> EntryColumns<'a> {
        let patient = record.patients.first().map(String::as_str);
        let mut more_patients: Vec<&str> = Vec::new();
        for p in record.patients.iter().skip(1) {
            if Some(p.as_str()) != patient && !more_patients.contains(&p.as_str()) {
                more_patients.push(p);
            }
        }
        EntryColumns {
            at: record.at.micros(),
            who: &record.who.id,
            patient,
            more_patients,
            action: record.action.code(),
            event: &record.event,
            resource_type: record.resource_type.as_deref(),
            outcome: i64::from(record.outcome.severity()),
            record: record.to_canonical_json(),
        }
    }
}

/// Checks the compare-and-swap of every system write of a commit against
/// `current` (the stored version of a record, looked up once per key),
/// before anything is written: a later write of the same key in the commit
/// expects what the earlier one leaves. Returns, per write, the version it
/// stores (`None` for a delete).
pub(crate) fn check_sys(
    writes: &[SysWrite],
    mut current: impl FnMut(&str, &str) -> Result<Option<u64>, StoreError>,
) -> Result<Vec<Option<u64>>, StoreError> {
    let mut seen: HashMap<(&str, &str), Option<u64>> = HashMap::new();
    let mut versions = Vec::with_capacity(writes.len());
    for write in writes {
        let key = (write.kind.as_str(), write.key.as_str());
        let now = match seen.get(&key) {
            Some(version) => *version,
            None => current(key.0, key.1)?,
        };
        if now != write.expected {
            return Err(StoreError::Conflict(format!(
                "system record of kind {} is at version {now:?}, expected {:?}",
                write.kind, write.expected
            )));
        }
        let next = write.json.as_ref().map(|_| write.expected.map_or(1, |v| v + 1));
        seen.insert(key, next);
        versions.push(next);
    }
    Ok(versions)
}

/// The page and count statements of an audit search. The page selects
/// `seq, record, hash`.
pub(crate) fn search(dialect: Dialect, query: &AuditQuery) -> (Sql, Sql) {
    let mut params: Vec<SqlValue> = Vec::new();
    let mut bind = |value: SqlValue| {
        params.push(value);
        placeholder(dialect, params.len())
    };
    let mut conditions: Vec<String> = Vec::new();
    if let Some(from) = query.from {
        conditions.push(format!("e.at >= {}", bind(SqlValue::Int(from.micros()))));
    }
    if let Some(to) = query.to {
        conditions.push(format!("e.at <= {}", bind(SqlValue::Int(to.micros()))));
    }
    if let Some(who) = &query.who {
        conditions.push(format!("e.who = {}", bind(SqlValue::Text(who.clone()))));
    }
    if let Some(patient) = &query.patient {
        let p = bind(SqlValue::Text(patient.clone()));
        // One list of entry numbers from both indexes: an OR of the two
        // tests would make PostgreSQL read every entry.
        conditions.push(match dialect {
            // The bulk-filled index up to `through`, the few entries after
            // it by number (migration 0007), and the further patients.
            Dialect::Sqlite => format!(
                "e.seq IN (SELECT seq FROM audit_patient_index WHERE patient = {p} \
                 UNION ALL SELECT seq FROM audit_entry \
                 WHERE seq > (SELECT through FROM audit_index_state) AND patient = {p} \
                 UNION ALL SELECT seq FROM audit_patient WHERE patient = {p})"
            ),
            Dialect::Postgres => format!(
                "e.seq IN (SELECT seq FROM audit_entry WHERE patient = {p} \
                 UNION ALL SELECT seq FROM audit_patient WHERE patient = {p})"
            ),
        });
    }
    if let Some(action) = query.action {
        conditions.push(format!("e.action = {}", bind(SqlValue::Text(action.code().to_string()))));
    }
    if let Some(event) = &query.event {
        conditions.push(format!("e.event = {}", bind(SqlValue::Text(event.clone()))));
    }
    if let Some(resource_type) = &query.resource_type {
        conditions.push(format!("e.resource_type = {}", bind(SqlValue::Text(resource_type.clone()))));
    }
    if let Some(outcome) = query.outcome {
        conditions.push(format!("e.outcome = {}", bind(SqlValue::Int(i64::from(outcome.severity())))));
    }
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    let count = Sql { text: format!("SELECT COUNT(*) FROM audit_entry e{filter}"), params: params.clone() };

    let mut order: Vec<String> = query
        .sort
        .iter()
        .map(|(field, descending)| {
            let column = match field {
                AuditSort::Seq => "e.seq",
                AuditSort::At => "e.at",
                AuditSort::Who => "e.who",
                // No patient, no type: the empty text, which sorts first.
                AuditSort::Patient => "COALESCE(e.patient, '')",
                AuditSort::Action => "e.action",
                AuditSort::Event => "e.event",
                AuditSort::ResourceType => "COALESCE(e.resource_type, '')",
                AuditSort::Outcome => "e.outcome",
            };
            if *descending { format!("{column} DESC") } else { column.to_string() }
        })
        .collect();
    order.push("e.seq".into());
    let limit = i64::try_from(query.count).unwrap_or(i64::MAX);
    let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
    let mut page_params = params;
    page_params.push(SqlValue::Int(limit));
    page_params.push(SqlValue::Int(offset));
    let n = page_params.len();
    let page = Sql {
        text: format!(
            "SELECT e.seq, e.record, e.hash FROM audit_entry e{filter} ORDER BY {} LIMIT {} OFFSET {}",
            order.join(", "),
            placeholder(dialect, n - 1),
            placeholder(dialect, n)
        ),
        params: page_params,
    };
    (page, count)
}

fn placeholder(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Sqlite => format!("?{n}"),
        Dialect::Postgres => format!("${n}"),
    }
}

/// An entry from its stored columns.
pub(crate) fn entry(seq: i64, record: String, hash: String) -> Result<AuditEntry, StoreError> {
    let seq =
        u64::try_from(seq).map_err(|_| StoreError::Internal(format!("audit entry with negative number {seq}")))?;
    Ok(AuditEntry { seq, record, hash })
}

/// A stored version number.
pub(crate) fn version(version: i64) -> Result<u64, StoreError> {
    u64::try_from(version).map_err(|_| StoreError::Internal("negative system record version".into()))
}

/// A version number to store.
pub(crate) fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Conflict("version or sequence number out of range".into()))
}
