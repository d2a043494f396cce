//! Hearth's data-migration toolkit: the foundation of `hearth migrate`.
//!
//! What exists:
//! - [`project`]: the migration project (`migration.toml`): its schema as
//!   Rust types, a loader whose errors name the file, line and field, and
//!   the presets `hearth migrate init` writes (`legacy-csv`, `synthea-csv`).
//! - [`source`]: the [`source::Source`] trait every legacy source implements
//!   (records with provenance; bad rows reported in the stream, never
//!   dropped), and [`csv_source`], its CSV implementation (any delimiter,
//!   any encoding).
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
//!
//! Planned (not here yet): the load and reconcile stages, patient matching,
//! SQL/NDJSON/HL7 v2/C-CDA sources, and document contents.

pub mod convert;
pub mod csv_source;
pub mod dates;
pub mod dryrun;
pub mod load;
pub mod project;
pub mod sample;
pub mod synthea_sample;
pub mod source;
pub mod zone;
