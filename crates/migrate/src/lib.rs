//! Hearth's data-migration toolkit: the foundation of `hearth migrate`.
//!
//! What exists:
//! - [`project`]: the migration project (`migration.toml`): its schema as
//!   Rust types, a loader whose errors name the file, line and field, and
//!   the presets `hearth migrate init` writes (`legacy-csv`, `synthea-csv`).
//! - [`source`]: the [`source::Source`] trait every legacy source implements
//!   (records with provenance; bad rows reported in the stream, never
//!   dropped), and its implementations: [`csv_source`] (any delimiter, any
//!   encoding), [`sql_source`] (a SQLite file or a PostgreSQL database, a
//!   query per table) and [`fhir_source`] (FHIR NDJSON and Bundles, which
//!   bypass the column mapping: new ids, references rewritten).
//! - [`documents`]: document columns (PDF, TIFF, JPEG, PNG, TXT, RTF named
//!   by an index table) checked by content and stored as a `Binary` the
//!   DocumentReference's attachment points at.
//! - [`dates`]: the date formats a mapping declares.
//! - [`synthea_sample`]: a seeded export in the Synthea CSV layout (17 files,
//!   about 1,000 rows per patient), streamed, for tests and the benchmark.
//! - [`sample`]: a seeded, messy legacy CSV export for rehearsals and tests;
//!   its module documentation lists every planted defect.
//!
//! - [`convert`]: the CONVERT stage, a record to FHIR R4 resources by the
//!   mapping (local codes kept and reported, units, dates with
//!   [`zone`], references, ids derived from the source keys).
//! - [`dryrun`]: `hearth migrate run --dry-run`: extract, convert and
//!   validate, a disposition per record that balances, the JSON report.
//! - [`load`]: the LOAD stage through the Service, idempotent and resumable,
//!   a Provenance per source record, the read-back, and the rollback.
//! - [`reconcile`]: the RECONCILE stage: the critical fields of every loaded
//!   record, taken from the source record by the mapping, compared with what
//!   the store holds (per-table digests, every mismatch with file and line).
//! - [`report`]: the reconciliation report (JSON and a self-contained HTML
//!   page with SVG charts) and the clinicians' spot-check worksheet.
//!
//! - [`codes`]: checks of standard codes (ICD-10-CM list, LOINC and SNOMED
//!   CT check digits, RxNorm, CVX, UCUM) during conversion.
//! - [`matching`]: patient matching (blocking, Fellegi–Sunter scores,
//!   deterministic strong identifiers): duplicates within the export are
//!   merged, grey-zone pairs listed for review, and source patients matched
//!   against Hearth's before loading.
//! - [`review`]: the analyst's decisions on the pairs for review
//!   (`review.toml`), applied by the next run.
//!
//! Planned (not here yet): HL7 v2 and C-CDA sources (with the
//! interoperability work).

pub mod codes;
pub mod convert;
pub mod csv_source;
pub mod dates;
pub mod documents;
pub mod dryrun;
pub mod fhir_source;
pub mod load;
pub mod matching;
pub mod parallel;
pub mod project;
pub mod reconcile;
pub mod report;
pub mod review;
pub mod sample;
pub mod synthea_sample;
pub mod source;
pub mod sql_source;
pub mod zone;
