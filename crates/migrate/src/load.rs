//! LOAD: the resources a validated run converted, written through the
//! Service (validated again and audited under the migration's identity),
//! each source record's resources with a Provenance that names the record.
//!
//! Records go in batches, one FHIR transaction each (all or nothing), with
//! `PUT Type/id` under the ids derived from the source keys
//! ([`crate::convert::resource_id`]). Before a batch is written, what the
//! store holds under those ids is fetched (one `_id` search per type) and a
//! resource equal to what is there (meta aside; for a Provenance, its
//! `recorded` time too) is left alone. So:
//! - a rerun of a finished load writes nothing (idempotent);
//! - a load killed at any moment, run again, writes what is missing and ends
//!   with the counts of an uninterrupted run (transactions leave no half
//!   batch);
//! - a run over a changed export writes only the records that changed (a
//!   new version of each) and the new ones: a delta.

use crate::dryrun::{DryRun, Output};
use crate::source::Provenance;
use domain::Service;
use domain::access::Access;
use domain::service::Return;
use domain::store::StoredResource;
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// The identity the load is audited under.
pub const MIGRATION_ACTOR: &str = "hearth migrate";

/// Source records per transaction. Larger transactions write less: every
/// commit writes each index page its inserts touched, and a batch's inserts
/// land all over the index B-trees (1,000 patients: 330 s to load with
/// 1,000 records per batch, 188 s with 10,000, 154 s with 50,000;
/// docs/benchmarks.md). But SQLite has one writer: while a batch commits
/// (about 2 s for 10,000 records), a server writing to the same store waits,
/// and gives up after its busy timeout (5 s). `--batch 50000` suits a first
/// load or a rehearsal into a store that nothing else writes to.
pub const DEFAULT_BATCH_RECORDS: usize = 10_000;

/// What the load did with the resources of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadCounts {
    /// Source records whose resources were loaded (or already were).
    pub records: u64,
    /// Resources written for the first time.
    pub created: u64,
    /// Resources written again because the source changed (a new version).
    pub updated: u64,
    /// Resources already stored as they are.
    pub unchanged: u64,
    /// Resources read back after the load and found as converted.
    pub verified: u64,
}

/// The result of a load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Per table (Provenance resources under `provenance`).
    pub tables: BTreeMap<String, LoadCounts>,
    /// Transactions written.
    pub transactions: u64,
    /// Resources read back different from what was converted, or missing
    /// (`Type/id` and the source record): should be none.
    pub mismatched: Vec<(String, String)>,
    /// Wall time of building the search indexes the load deferred and
    /// refreshing the planner's statistics, after the last batch: at the
    /// same time as the read-back.
    pub indexed_in: std::time::Duration,
    /// Wall time of the read-back, after the last batch.
    pub read_back: std::time::Duration,
}

impl LoadReport {
    /// Resources written by this run.
    pub fn written(&self) -> u64 {
        self.tables.values().map(|c| c.created + c.updated).sum()
    }
}

/// How a load runs.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Source records per transaction.
    pub batch_records: usize,
    /// The project's name, part of the source identifiers.
    pub project: String,
    /// `Provenance.recorded` of new provenance (FHIR instant).
    pub recorded: String,
}

/// A load that stopped: nothing of the failing batch was written.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadError {
    /// The first and last source records of the batch.
    pub first: String,
    pub last: String,
    pub message: String,
    /// What had been loaded before it.
    pub report: LoadReport,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the batch of source records {} to {} was not loaded: {}", self.first, self.last, self.message)
    }
}

/// One source record and the resources it became.
struct SourceRecord<'a> {
    table: &'a str,
    key: &'a str,
    provenance: &'a Provenance,
    resources: Vec<&'a Value>,
}

/// Batches in flight at once: while one batch is committed by the store's
/// writer, the next is fetched, compared and validated.
const BATCHES_IN_FLIGHT: usize = 2;

/// The first batch holds this fraction of `--batch` records, and each next
/// one twice the one before, up to `--batch`: the store's writer has nothing
/// to do until the first batch is validated and prepared, which takes a
/// large batch seconds (docs/benchmarks.md).
const FIRST_BATCH_DIVISOR: usize = 16;

/// `records` in the batches [`write_batches`] writes: growing from
/// `batch / FIRST_BATCH_DIVISOR` to `batch` records.
fn batches<'r, 'a>(records: &'r [SourceRecord<'a>], batch: usize) -> Vec<&'r [SourceRecord<'a>]> {
    let batch = batch.max(1);
    let mut size = (batch / FIRST_BATCH_DIVISOR).max(1);
    let mut rest = records;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (head, tail) = rest.split_at(size.min(rest.len()));
        out.push(head);
        rest = tail;
        size = (size * 2).min(batch);
    }
    out
}

/// What one batch did: per table (created, updated, unchanged), and whether
/// it wrote anything.
type BatchCounts<'a> = (Vec<(&'a str, u64, u64, u64)>, bool);

/// Loads every resource of `run` (a validated dry run) through `service`.
/// `progress` is told the number of source records done after each batch.
pub async fn load(
    service: &Service,
    run: &DryRun,
    options: &LoadOptions,
    mut progress: impl FnMut(u64),
) -> Result<LoadReport, LoadError> {
    let access = Access::system(MIGRATION_ACTOR);
    let records = by_source_record(&run.resources);
    let mut report = LoadReport::default();
    for record in &records {
        report.tables.entry(record.table.to_string()).or_default().records += 1;
    }
    // Into a store far smaller than the load (a first load, a rehearsal), the
    // search indexes are built once at the end rather than kept up to date
    // insert by insert (domain::Store::defer_search_indexes).
    let upcoming: u64 = records.iter().map(|r| r.resources.len() as u64 + 1).sum();
    let deferred = service
        .store()
        .defer_search_indexes(upcoming)
        .await
        .map_err(|e| batch_error(&records, format!("deferring the search indexes: {e}"), &report))?;
    let written = write_batches(service, &access, &records, options, &mut report, &mut progress).await;
    if let Err(error) = written {
        // Built even after a failed batch: the store serves searches
        // meanwhile. The batch's error is the one reported; indexes still
        // deferred are built when the store next opens.
        if deferred {
            let _ = service.store().restore_search_indexes().await;
        }
        return Err(error);
    }
    // Every resource is now committed. The read-back reads by id and needs
    // no search index, so the store's writer builds the deferred indexes
    // (and refreshes the planner's statistics) on one core while the
    // read-back reads and compares on the others; the load returns when
    // both are done.
    let wrote = report.transactions > 0;
    let indexing = async {
        let started = std::time::Instant::now();
        if deferred {
            service.store().restore_search_indexes().await.map_err(|e| format!("building the search indexes: {e}"))?;
        }
        if wrote {
            service
                .store()
                .refresh_planner_statistics()
                .await
                .map_err(|e| format!("refreshing the database's statistics: {e}"))?;
        }
        Ok::<_, String>(started.elapsed())
    };
    let proving = async {
        let started = std::time::Instant::now();
        let result = read_back(service, &access, &records, options, &mut report).await;
        (result, started.elapsed())
    };
    let (indexed, (proved, read_back_time)) = futures_util::future::join(indexing, proving).await;
    report.read_back = read_back_time;
    match indexed {
        Ok(time) => report.indexed_in = time,
        Err(message) => return Err(batch_error(&records, message, &report)),
    }
    if let Err(message) = proved {
        return Err(batch_error(&records, message, &report));
    }
    Ok(report)
}

/// Writes the [`batches`] of `records`, [`BATCHES_IN_FLIGHT`] at once,
/// adding their counts to `report`.
async fn write_batches(
    service: &Service,
    access: &Access,
    records: &[SourceRecord<'_>],
    options: &LoadOptions,
    report: &mut LoadReport,
    progress: &mut impl FnMut(u64),
) -> Result<(), LoadError> {
    use futures_util::StreamExt;
    let access_ref = access;
    let mut in_flight = futures_util::stream::iter(batches(records, options.batch_records).into_iter().map(|batch| async move {
        let result = load_batch(service, access_ref, batch, options).await;
        (batch, result)
    }))
    .buffered(BATCHES_IN_FLIGHT);
    let mut done = 0u64;
    while let Some((batch, result)) = in_flight.next().await {
        let (counts, wrote) = result.map_err(|m| batch_error(batch, m, report))?;
        for (table, created, updated, unchanged) in counts {
            let c = report.tables.entry(table.to_string()).or_default();
            c.created += created;
            c.updated += updated;
            c.unchanged += unchanged;
        }
        if wrote {
            report.transactions += 1;
        }
        done += batch.len() as u64;
        progress(done);
    }
    Ok(())
}

/// One batch: what the store holds under its ids is fetched; what differs
/// is written in one commit through the Service (validated, audited), all
/// of it or nothing.
async fn load_batch<'a>(
    service: &Service,
    access: &Access,
    batch: &[SourceRecord<'a>],
    options: &LoadOptions,
) -> Result<BatchCounts<'a>, String> {
    let wanted = batch_resources(batch, options);
    let stored = fetch_stored(service, access, &wanted).await?;
    let mut counts: Vec<(&'a str, u64, u64, u64)> = Vec::new();
    let mut count = |table: &'a str, created: u64, updated: u64, unchanged: u64| {
        match counts.iter_mut().find(|c| c.0 == table) {
            Some(c) => {
                c.1 += created;
                c.2 += updated;
                c.3 += unchanged;
            }
            None => counts.push((table, created, updated, unchanged)),
        }
    };
    let mut writes: Vec<Cow<'a, Value>> = Vec::new();
    let mut seen: Vec<Option<u64>> = Vec::new();
    let mut places: Vec<usize> = Vec::new();
    for (table, resource, record) in wanted {
        match stored.get(&type_and_id(&resource)) {
            Some((existing, _)) if same(existing, &resource) => count(table, 0, 0, 1),
            Some((_, version)) => {
                count(table, 0, 1, 0);
                writes.push(resource);
                seen.push(Some(*version));
                places.push(record);
            }
            None => {
                count(table, 1, 0, 0);
                writes.push(resource);
                seen.push(None);
                places.push(record);
            }
        }
    }
    let wrote = !writes.is_empty();
    if wrote {
        // The versions just read spare the store a second lookup (the
        // Service checks them in the commit).
        service.load_all_seen(access, writes, Some(seen)).await.map_err(|e| {
            // "resource N" in the error's location names the record.
            let message = e.message();
            let at = places
                .iter()
                .enumerate()
                .find(|(i, _)| message.contains(&format!("resource {i}")))
                .map(|(_, r)| format!(" (the record at {})", place(&batch[*r])))
                .unwrap_or_default();
            format!("{message}{at}")
        })?;
    }
    Ok((counts, wrote))
}

/// The proof: every resource of every record is read back from the store
/// and compared, whole (meta aside), with what the conversion made.
async fn read_back(
    service: &Service,
    access: &Access,
    records: &[SourceRecord<'_>],
    options: &LoadOptions,
    report: &mut LoadReport,
) -> Result<(), String> {
    use futures_util::StreamExt;
    // Small reads, several at once: the store's readers work in parallel,
    // and nothing else runs now. Each stored resource is parsed, compared
    // and dropped on one of the cores (`parallel::map`).
    let mut reads = futures_util::stream::iter(records.chunks(READ_BACK_RECORDS).map(|batch| async move {
        let wanted = batch_resources(batch, options);
        let keys: Vec<(String, String)> = wanted.iter().map(|(_, resource, _)| type_and_id(resource)).collect();
        let found = service
            .read_many(access, &keys)
            .await
            .map_err(|e| format!("reading what is stored: {}", e.message()))?;
        Ok::<_, String>((batch, wanted, keys, found))
    }))
    .buffered(READS_IN_FLIGHT);
    while let Some(result) = reads.next().await {
        let (batch, wanted, keys, found) = result?;
        let verdicts = read_back_verdicts(wanted.iter().map(|(_, resource, _)| resource.as_ref()), &found);
        for (((table, _, record), key), verified) in wanted.into_iter().zip(keys).zip(verdicts) {
            if verified? {
                report.tables.entry(table.to_string()).or_default().verified += 1;
            } else {
                report.mismatched.push((format!("{}/{}", key.0, key.1), place(&batch[record])));
            }
        }
    }
    Ok(())
}

/// Whether each of `wanted` is stored as it is (meta aside), among `found`
/// (what the store answered for them): each stored resource is parsed,
/// compared and dropped on one of the cores. An unreadable stored resource
/// is an error, not a difference.
fn read_back_verdicts<'v>(wanted: impl Iterator<Item = &'v Value>, found: &[StoredResource]) -> Vec<Result<bool, String>> {
    let bodies: HashMap<(&str, &str), &str> = found
        .iter()
        .filter_map(|item| Some(((item.resource_type.as_str(), item.id.as_str()), item.body.as_deref()?)))
        .collect();
    let wanted: Vec<&Value> = wanted.collect();
    crate::parallel::map(&wanted, |resource| match bodies.get(&(str_field(resource, "resourceType"), str_field(resource, "id"))) {
        None => Ok(false),
        Some(body) => serde_json::from_str::<Value>(body).map(|stored| same(&stored, resource)).map_err(unreadable),
    })
}

fn unreadable(e: serde_json::Error) -> String {
    format!("a stored resource is unreadable: {e}")
}

/// A stored resource parsed: (type, id), the resource, its version.
pub(crate) type Parsed = ((String, String), Value, u64);

/// The stored resources of `found` parsed (on every core), deleted ones left out.
pub(crate) fn parse_stored(found: Vec<StoredResource>) -> Result<Vec<Parsed>, String> {
    let parsed = crate::parallel::map(&found, |item| item.body.as_deref().map(serde_json::from_str::<Value>).transpose());
    let mut out = Vec::with_capacity(found.len());
    for (item, value) in found.into_iter().zip(parsed) {
        if let Some(value) = value.map_err(unreadable)? {
            out.push(((item.resource_type, item.id), value, item.version_id));
        }
    }
    Ok(out)
}

/// Source records per read of the read-back, and reads at once.
const READ_BACK_RECORDS: usize = 1000;
const READS_IN_FLIGHT: usize = 3;

fn str_field<'a>(resource: &'a Value, field: &str) -> &'a str {
    resource.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// The resources of the run grouped by source record, in source order.
fn by_source_record(outputs: &[Output]) -> Vec<SourceRecord<'_>> {
    let mut records: Vec<SourceRecord<'_>> = Vec::new();
    let mut at: HashMap<(&str, &str), usize> = HashMap::new();
    for output in outputs {
        let slot = *at.entry((output.table.as_str(), output.key.as_str())).or_insert_with(|| {
            records.push(SourceRecord {
                table: &output.table,
                key: &output.key,
                provenance: &output.provenance,
                resources: Vec::new(),
            });
            records.len() - 1
        });
        records[slot].resources.push(&output.resource);
    }
    records
}

fn place(record: &SourceRecord<'_>) -> String {
    format!("{} ({}, key {})", record.provenance, record.table, record.key)
}

/// A failure of the batch `records`, with what was done before it.
fn batch_error(records: &[SourceRecord<'_>], message: String, report: &LoadReport) -> LoadError {
    LoadError {
        first: records.first().map(place).unwrap_or_default(),
        last: records.last().map(place).unwrap_or_default(),
        message,
        report: report.clone(),
    }
}

/// What a batch of records leaves in the store: each resource (the run's,
/// or a record's Provenance, after its resources) with the table it counts
/// under and its source record (an index into `batch`).
fn batch_resources<'a>(batch: &[SourceRecord<'a>], options: &LoadOptions) -> Vec<(&'a str, Cow<'a, Value>, usize)> {
    let mut wanted = Vec::with_capacity(batch.iter().map(|r| r.resources.len() + 1).sum());
    for (i, record) in batch.iter().enumerate() {
        for resource in &record.resources {
            wanted.push((record.table, Cow::Borrowed(*resource), i));
        }
        wanted.push(("provenance", Cow::Owned(provenance(record, options)), i));
    }
    wanted
}

/// The identifier system of a project's source records of one table.
pub fn source_system(project: &str, table: &str) -> String {
    format!("urn:hearth:migration:{project}:{table}")
}

/// The Provenance of one source record: its resources, where they came from,
/// and that the migration put them there.
fn provenance(record: &SourceRecord<'_>, options: &LoadOptions) -> Value {
    let targets: Vec<Value> = record
        .resources
        .iter()
        .map(|r| {
            let (t, id) = type_and_id(r);
            json!({"reference": format!("{t}/{id}")})
        })
        .collect();
    json!({
        "resourceType": "Provenance",
        "id": crate::convert::resource_id(record.table, record.key, "provenance"),
        "target": targets,
        "recorded": options.recorded,
        "activity": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
            "code": "CREATE",
            "display": "create"
        }]},
        "agent": [{
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                "code": "assembler",
                "display": "Assembler"
            }]},
            "who": {"display": MIGRATION_ACTOR}
        }],
        "entity": [{
            "role": "source",
            "what": {
                "identifier": {"system": source_system(&options.project, record.table), "value": record.key},
                "display": record.provenance.to_string()
            }
        }]
    })
}

fn type_and_id(resource: &Value) -> (String, String) {
    (str_field(resource, "resourceType").to_owned(), str_field(resource, "id").to_owned())
}

/// What the store holds under the ids of `wanted`, by (type, id), with its
/// version: one batch read through the Service (audited, as every read).
async fn fetch_stored(
    service: &Service,
    access: &Access,
    wanted: &[(&str, Cow<'_, Value>, usize)],
) -> Result<HashMap<(String, String), (Value, u64)>, String> {
    let keys: Vec<(String, String)> = wanted.iter().map(|(_, resource, _)| type_and_id(resource)).collect();
    let found = service
        .read_many(access, &keys)
        .await
        .map_err(|e| format!("reading what is stored: {}", e.message()))?;
    // A rerun compares every stored resource: parsed on every core.
    Ok(parse_stored(found)?.into_iter().map(|(key, value, version)| (key, (value, version))).collect())
}

/// The same resource, meta aside (and a Provenance's `recorded` time).
fn same(stored: &Value, wanted: &Value) -> bool {
    let (Some(stored), Some(wanted)) = (stored.as_object(), wanted.as_object()) else { return false };
    let provenance = wanted.get("resourceType").and_then(Value::as_str) == Some("Provenance");
    let compared = |key: &String| key != "meta" && !(provenance && key == "recorded");
    let fields = |map: &Map<String, Value>| map.keys().filter(|k| compared(k)).count();
    fields(stored) == fields(wanted) && wanted.iter().filter(|(k, _)| compared(k)).all(|(k, v)| stored.get(k) == Some(v))
}

/// What a rollback did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollbackReport {
    /// Resources deleted, per table (Provenance under `provenance`).
    pub deleted: BTreeMap<String, u64>,
    /// Resources kept because they changed since the load (`Type/id` and
    /// the source record): someone worked on them in Hearth.
    pub kept: Vec<(String, String)>,
    /// Resources of the export that were not stored.
    pub absent: u64,
}

/// Undoes a load of this export: every resource it maps to that is still
/// stored as the load wrote it is deleted (a new, deleted version: history
/// and audit keep what happened), with the Provenance of its record; one
/// that changed since is kept and reported.
pub async fn rollback(
    service: &Service,
    run: &DryRun,
    options: &LoadOptions,
    mut progress: impl FnMut(u64),
) -> Result<RollbackReport, LoadError> {
    let access = Access::system(MIGRATION_ACTOR);
    let records = by_source_record(&run.resources);
    let mut report = RollbackReport::default();
    let mut done = 0u64;
    for batch in records.chunks(options.batch_records.max(1)) {
        let fail = |message: String| batch_error(batch, message, &LoadReport::default());
        let wanted = batch_resources(batch, options);
        let stored = fetch_stored(service, &access, &wanted).await.map_err(fail)?;
        let mut entries = Vec::new();
        let mut tables = Vec::new();
        // A record with a resource kept keeps its Provenance too (it comes
        // after the record's resources).
        let mut keeping: std::collections::HashSet<usize> = std::collections::HashSet::new();
        for (table, resource, record) in &wanted {
            let key = type_and_id(resource);
            match stored.get(&key) {
                None => report.absent += 1,
                Some(_) if *table == "provenance" && keeping.contains(record) => {}
                Some((existing, _)) if same(existing, resource) => {
                    entries.push(json!({"request": {"method": "DELETE", "url": format!("{}/{}", key.0, key.1)}}));
                    tables.push(*table);
                }
                Some(_) => {
                    keeping.insert(*record);
                    report.kept.push((format!("{}/{}", key.0, key.1), place(&batch[*record])));
                }
            }
        }
        if !entries.is_empty() {
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
            service.bundle(&access, bundle, "urn:hearth:migrate", Some(Return::Minimal)).await.map_err(|e| fail(e.message()))?;
            for table in tables {
                *report.deleted.entry(table.to_string()).or_default() += 1;
            }
        }
        done += batch.len() as u64;
        progress(done);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(resource_type: &str, id: &str, body: Option<&str>) -> StoredResource {
        StoredResource {
            resource_type: resource_type.into(),
            id: id.into(),
            version_id: 1,
            last_updated: fhir::instant::Instant::now(),
            method: domain::store::Method::Put,
            body: body.map(Into::into),
        }
    }

    #[test]
    fn the_read_back_finds_what_differs_is_missing_or_unreadable() {
        let wanted = [
            json!({"resourceType": "Patient", "id": "same", "gender": "female"}),
            json!({"resourceType": "Patient", "id": "changed", "gender": "female"}),
            json!({"resourceType": "Patient", "id": "deleted", "gender": "female"}),
            json!({"resourceType": "Patient", "id": "absent", "gender": "female"}),
            json!({"resourceType": "Observation", "id": "same", "status": "final"}),
        ];
        let found = [
            // Meta is the store's own: not a difference.
            stored("Patient", "same", Some(r#"{"resourceType":"Patient","id":"same","meta":{"versionId":"1"},"gender":"female"}"#)),
            stored("Patient", "changed", Some(r#"{"resourceType":"Patient","id":"changed","gender":"male"}"#)),
            stored("Patient", "deleted", None),
            // Same id, another type.
            stored("Practitioner", "absent", Some(r#"{"resourceType":"Practitioner","id":"absent","gender":"female"}"#)),
            stored("Observation", "same", Some(r#"{"resourceType":"Observation","id":"same","status":"final"}"#)),
        ];
        let verdicts: Vec<bool> = read_back_verdicts(wanted.iter(), &found).into_iter().map(|v| v.expect("readable")).collect();
        assert_eq!(verdicts, [true, false, false, false, true]);
        let broken = [stored("Patient", "same", Some("{not json"))];
        let verdicts = read_back_verdicts(wanted[..1].iter(), &broken);
        assert!(matches!(&verdicts[0], Err(message) if message.contains("unreadable")), "{verdicts:?}");
    }

    #[test]
    fn batches_grow_from_a_sixteenth_to_the_batch_size_and_cover_every_record_once() {
        let provenance = Provenance::FileLine { file: "t.csv".into(), line: 1 };
        let records: Vec<SourceRecord<'_>> =
            (0..200).map(|_| SourceRecord { table: "t", key: "k", provenance: &provenance, resources: Vec::new() }).collect();
        let sizes = |batch: usize| batches(&records, batch).iter().map(|b| b.len()).collect::<Vec<_>>();
        assert_eq!(sizes(64), [4, 8, 16, 32, 64, 64, 12]);
        let small = sizes(5);
        assert_eq!((&small[..4], small.len(), small.last()), (&[1, 2, 4, 5][..], 42, Some(&3)));
        assert_eq!(sizes(1000), [62, 124, 14]);
        assert_eq!(sizes(0), vec![1; 200]);
        // In order, each record once.
        let all: Vec<*const SourceRecord<'_>> = batches(&records, 64).iter().flat_map(|b| b.iter()).map(|r| r as *const _).collect();
        assert_eq!(all, records.iter().map(|r| r as *const _).collect::<Vec<_>>());
    }

    #[test]
    fn stored_bodies_parse_in_order_without_the_deleted() {
        let found: Vec<StoredResource> = (0..300)
            .map(|i| {
                let body = format!(r#"{{"resourceType":"Patient","id":"p{i}"}}"#);
                stored("Patient", &format!("p{i}"), (i % 3 != 0).then_some(body.as_str()))
            })
            .collect();
        let parsed = parse_stored(found).expect("parsed");
        assert_eq!(parsed.len(), 200);
        for ((key, value, _), i) in parsed.iter().zip((0..300).filter(|i| i % 3 != 0)) {
            assert_eq!(key.1, format!("p{i}"));
            assert_eq!(value["id"], json!(format!("p{i}")));
        }
        assert!(parse_stored(vec![stored("Patient", "x", Some("["))]).is_err());
    }
}
