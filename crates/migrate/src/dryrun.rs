//! `hearth migrate run --dry-run`: EXTRACT, CONVERT and VALIDATE without
//! writing to any store, and a disposition for every source record.
//!
//! Each record ends in exactly one disposition:
//! - `converted`: its resources would load (warnings may be attached);
//! - `rejected`: it cannot become valid FHIR as it is (an unreadable row, an
//!   empty required field, a value not in its declared format, a duplicate
//!   key, a resource Hearth's validator refuses);
//! - `quarantined`: it converts and validates but is held for review: a
//!   reference that does not resolve (a result without its patient, or whose
//!   patient or encounter is itself held), a date in the future or before the
//!   patient's birth, an impossible vital sign, a result in a unit of
//!   another kind of quantity than its code;
//! - `merged`: a patient record that is the same patient as an earlier one
//!   (patient matching, [`crate::matching`]): the earlier record loads and
//!   gains its identifiers, and every record that referred to it refers to
//!   the survivor. Pairs in the grey zone are listed for review and both load;
//! - `excluded`: left out by an `exclude` rule of its table (entered in
//!   error, deleted), with the rule's reason.
//!
//! Per table, source records = converted + rejected + quarantined + merged +
//! excluded; the report counts unaccounted records instead of assuming zero.

use crate::convert::{Converted, Converter, Finding, Severity};
use crate::matching::{self, Other, Pair, RecordRef, Verdict};
use crate::project::Project;
use crate::source::Provenance;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The last stage a dry run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Extract only: every table read, rows and unreadable rows counted;
    /// nothing converted (readable records stay `pending`).
    Extract,
    /// Extract and convert only: no validation, nothing quarantined.
    Convert,
    /// Extract, convert and validate.
    Validate,
}

impl Stage {
    /// `convert` or `validate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Extract => "extract",
            Stage::Convert => "convert",
            Stage::Validate => "validate",
        }
    }
}

/// What happens to a source record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Would load.
    Converted,
    /// Cannot load as it is.
    Rejected,
    /// Held for review.
    Quarantined,
    /// The same patient as another record (patient matching): folded into
    /// that record, with a record of what was merged.
    Merged,
    /// Left out by a rule of the mapping (for example, entered in error).
    Excluded,
}

impl Disposition {
    /// `converted`, `rejected` or `quarantined`.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Converted => "converted",
            Disposition::Rejected => "rejected",
            Disposition::Quarantined => "quarantined",
            Disposition::Merged => "merged",
            Disposition::Excluded => "excluded",
        }
    }

    /// Every disposition, in report order.
    pub const ALL: [Disposition; 5] = [
        Disposition::Converted,
        Disposition::Rejected,
        Disposition::Quarantined,
        Disposition::Merged,
        Disposition::Excluded,
    ];
}

/// One finding about one source record, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The project's table.
    pub table: String,
    /// Where the record is (file and line).
    pub provenance: Provenance,
    /// The record's key.
    pub key: String,
    /// The record's disposition.
    pub disposition: Disposition,
    /// What was found.
    pub finding: Finding,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} [{}]", self.table, self.provenance, self.key)?;
        if let Some(field) = &self.finding.field {
            write!(f, ": {field}")?;
        }
        write!(
            f,
            ": {} {}: {} ({})",
            self.finding.severity.as_str(),
            self.finding.kind,
            self.finding.message,
            self.disposition.as_str()
        )
    }
}

/// The counts of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// The source file.
    pub file: String,
    /// The resource type rows become.
    pub resource: String,
    /// Rows read from the source (good and bad).
    pub source_records: u64,
    /// Records that would load.
    pub converted: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Records held for review.
    pub quarantined: u64,
    /// Records folded into another (patient matching).
    pub merged: u64,
    /// Records left out by a rule of the mapping.
    pub excluded: u64,
    /// Resources the converted records make.
    pub resources: u64,
    /// Records read but not converted: an `--until extract` run stops
    /// before any disposition but `rejected` (unreadable).
    pub pending: u64,
}

impl TableCounts {
    /// Source records not in any disposition (should be 0).
    pub fn unaccounted(&self) -> i64 {
        self.source_records as i64
            - Disposition::ALL.iter().map(|d| self.count(*d)).sum::<u64>() as i64
            - self.pending as i64
    }

    /// The records in disposition `d`.
    pub fn count(&self, d: Disposition) -> u64 {
        match d {
            Disposition::Converted => self.converted,
            Disposition::Rejected => self.rejected,
            Disposition::Quarantined => self.quarantined,
            Disposition::Merged => self.merged,
            Disposition::Excluded => self.excluded,
        }
    }
}

/// A resource that would load, with its source record.
#[derive(Debug, Clone)]
pub struct Output {
    /// The table.
    pub table: String,
    /// The source record's key.
    pub key: String,
    /// The source record's place.
    pub provenance: Provenance,
    /// The resource.
    pub resource: Value,
}

/// The result of a dry run.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// The project name.
    pub project: String,
    /// The last stage run.
    pub until: Stage,
    /// The date future dates are judged against (`YYYY-MM-DD`).
    pub today: String,
    /// Counts per table.
    pub tables: BTreeMap<String, TableCounts>,
    /// Every finding, in table and source order.
    pub issues: Vec<Issue>,
    /// Tables that could not be read at all.
    pub unreadable: Vec<(String, String)>,
    /// Every resource that would load.
    pub resources: Vec<Output>,
    /// Patient records merged into another (within the source, or into a
    /// patient already in Hearth), with their scores.
    pub merges: Vec<Pair>,
    /// Pairs of patient records for human review (never merged), pending
    /// or decided (`separate`) in the project's `review.toml`.
    pub reviews: Vec<Pair>,
    /// The project's review decisions and how this run applied them.
    pub review: crate::review::ReviewState,
    /// Wall time of each stage run (`extract`, `convert`, `validate`), in seconds.
    pub timings: Vec<(&'static str, f64)>,
}

struct State {
    provenance: Provenance,
    converted: Converted,
    /// Set when the record is rejected during extract or convert or FHIR validation.
    rejected: bool,
    /// Quarantine reasons.
    held: Vec<Finding>,
    /// Left out by an exclude rule.
    excluded: bool,
    /// Merged into another patient record.
    merged: bool,
}

impl State {
    fn disposition(&self) -> Disposition {
        if self.excluded {
            Disposition::Excluded
        } else if self.rejected {
            Disposition::Rejected
        } else if self.merged {
            Disposition::Merged
        } else if !self.held.is_empty() {
            Disposition::Quarantined
        } else {
            Disposition::Converted
        }
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Runs extract, convert and (unless `until` is `Convert`) validate over
/// every table of every source of `project`; writes nothing.
pub fn run(project: &Project, project_dir: &Path, until: Stage, today: &str) -> Result<DryRun, String> {
    let mut states: BTreeMap<String, Vec<State>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    let started = std::time::Instant::now();
    let mut converting = std::time::Duration::ZERO;
    for source_name in project.sources.keys() {
        let Some(source) = project.source(project_dir, source_name) else {
            continue;
        };
        for table in source.tables() {
            let converter = Converter::new(project, &table)?.in_dir(project_dir);
            let list = states.entry(table.clone()).or_default();
            let rows = match source.rows(&table) {
                Ok(rows) => rows,
                Err(e) => {
                    unreadable.push((table.clone(), e.to_string()));
                    continue;
                }
            };
            let rules = &project.tables[&table].exclude;
            for row in rows {
                match row {
                    Ok(record) if until == Stage::Extract => list.push(State {
                        provenance: record.provenance.clone(),
                        converted: Converted {
                            key: converter.key(&record),
                            resources: Vec::new(),
                            findings: Vec::new(),
                            links: Vec::new(),
                            dates: Vec::new(),
                            columns: Vec::new(),
                        },
                        rejected: false,
                        held: Vec::new(),
                        excluded: false,
                        merged: false,
                    }),
                    Ok(record) => {
                        let rule = rules.iter().find(|r| {
                            record.get(r.column.get_ref()).is_some_and(|v| {
                                r.values.get_ref().iter().any(|x| x.trim().eq_ignore_ascii_case(v.trim()))
                            })
                        });
                        if let Some(rule) = rule {
                            let column = rule.column.get_ref();
                            let value = record.get(column).unwrap_or_default().trim();
                            list.push(State {
                                provenance: record.provenance.clone(),
                                converted: Converted {
                                    key: converter.key(&record),
                                    resources: Vec::new(),
                                    findings: vec![Finding {
                                        severity: Severity::Information,
                                        kind: "excluded",
                                        field: Some(column.clone()),
                                        message: format!("{column} is {value}: {}", rule.reason.get_ref()),
                                    }],
                                    links: Vec::new(),
                                    dates: Vec::new(),
                                    columns: Vec::new(),
                                },
                                rejected: false,
                                held: Vec::new(),
                                excluded: true,
                                merged: false,
                            });
                            continue;
                        }
                        let at = std::time::Instant::now();
                        let converted = converter.convert(&record);
                        converting += at.elapsed();
                        let rejected = converted.failed();
                        list.push(State {
                            provenance: record.provenance.clone(),
                            converted,
                            rejected,
                            held: Vec::new(),
                            excluded: false,
                            merged: false,
                        });
                    }
                    Err(e) => {
                        let finding = Finding {
                            severity: Severity::Error,
                            kind: "unreadable",
                            field: Some(e.column.clone().unwrap_or_else(|| "row".into())),
                            message: e.message.clone(),
                        };
                        let converted = Converted {
                            key: e.provenance.to_string(),
                            resources: Vec::new(),
                            findings: vec![finding],
                            links: Vec::new(),
                            dates: Vec::new(),
                            columns: Vec::new(),
                        };
                        list.push(State {
                            provenance: e.provenance.clone(),
                            converted,
                            rejected: true,
                            held: Vec::new(),
                            excluded: false,
                            merged: false,
                        });
                    }
                }
            }
        }
    }

    let mut timings = vec![("extract", started.elapsed().saturating_sub(converting).as_secs_f64())];
    let started = std::time::Instant::now();
    // Duplicate keys would make the same resource id twice.
    for (table, list) in states.iter_mut().filter(|_| until != Stage::Extract) {
        let mut seen: HashMap<String, Provenance> = HashMap::new();
        for s in list.iter_mut().filter(|s| !s.excluded) {
            if let Some(first) = seen.get(&s.converted.key) {
                s.rejected = true;
                s.converted.findings.push(Finding {
                    severity: Severity::Error,
                    kind: "duplicate-key",
                    field: project.tables[table].key.as_ref().map(|k| k.get_ref().clone()),
                    message: format!("key {} is also the key of {first}", s.converted.key),
                });
            } else if !s.rejected {
                seen.insert(s.converted.key.clone(), s.provenance.clone());
            }
        }
    }

    if until != Stage::Extract {
        timings.push(("convert", (converting + started.elapsed()).as_secs_f64()));
    }
    let (merges, reviews) = if until == Stage::Validate {
        let started = std::time::Instant::now();
        let matched = validate(project, &mut states, today);
        timings.push(("validate", started.elapsed().as_secs_f64()));
        matched
    } else {
        (Vec::new(), Vec::new())
    };

    let mut out = DryRun {
        project: project.project.name.clone(),
        until,
        today: today.to_owned(),
        tables: BTreeMap::new(),
        issues: Vec::new(),
        unreadable,
        resources: Vec::new(),
        merges,
        reviews,
        review: crate::review::ReviewState::new(&project.review),
        timings,
    };
    for (table, list) in states {
        let decl = &project.tables[&table];
        let file = project.table_origin(&table);
        let mut counts = TableCounts { file, resource: decl.resource.clone(), ..Default::default() };
        for s in list {
            counts.source_records += 1;
            if until == Stage::Extract && !s.rejected {
                counts.pending += 1;
                continue;
            }
            let disposition = s.disposition();
            match disposition {
                Disposition::Converted => counts.converted += 1,
                Disposition::Rejected => counts.rejected += 1,
                Disposition::Quarantined => counts.quarantined += 1,
                Disposition::Merged => counts.merged += 1,
                Disposition::Excluded => counts.excluded += 1,
            }
            for finding in s.converted.findings.iter().chain(&s.held) {
                out.issues.push(Issue {
                    table: table.clone(),
                    provenance: s.provenance.clone(),
                    key: s.converted.key.clone(),
                    disposition,
                    finding: finding.clone(),
                });
            }
            if disposition == Disposition::Converted {
                counts.resources += s.converted.resources.len() as u64;
                for resource in s.converted.resources {
                    out.resources.push(Output {
                        table: table.clone(),
                        key: s.converted.key.clone(),
                        provenance: s.provenance.clone(),
                        resource,
                    });
                }
            }
        }
        out.tables.insert(table, counts);
    }
    Ok(out)
}

/// Plausible ranges of vital signs by LOINC code and UCUM unit.
const VITAL_RANGES: &[(&str, &str, f64, f64, &str)] = &[
    ("8480-6", "mm[Hg]", 40.0, 300.0, "systolic blood pressure"),
    ("8462-4", "mm[Hg]", 20.0, 200.0, "diastolic blood pressure"),
    ("8867-4", "/min", 20.0, 300.0, "heart rate"),
    ("9279-1", "/min", 4.0, 80.0, "respiratory rate"),
    ("8310-5", "[degF]", 80.0, 113.0, "body temperature"),
    ("8310-5", "Cel", 26.0, 45.0, "body temperature"),
    ("29463-7", "[lb_av]", 0.5, 1500.0, "body weight"),
    ("29463-7", "kg", 0.2, 700.0, "body weight"),
    ("8302-2", "[in_i]", 8.0, 108.0, "body height"),
    ("8302-2", "cm", 20.0, 275.0, "body height"),
];

/// The UCUM units a result with one of these LOINC codes may be recorded
/// in. A value in a unit of another kind of quantity (a body weight in cm,
/// a glucose in %) cannot be read as the measurement the code names: a
/// unit and value mismatch, held for review. Codes not listed are not
/// checked; a unit without a UCUM code is reported by the conversion.
const EXPECTED_UNITS: &[(&str, &[&str], &str)] = &[
    ("8480-6", &["mm[Hg]"], "systolic blood pressure"),
    ("8462-4", &["mm[Hg]"], "diastolic blood pressure"),
    ("8867-4", &["/min", "{beats}/min"], "heart rate"),
    ("9279-1", &["/min", "{breaths}/min"], "respiratory rate"),
    ("8310-5", &["Cel", "[degF]"], "body temperature"),
    ("29463-7", &["kg", "g", "[lb_av]", "[oz_av]"], "body weight"),
    ("8302-2", &["cm", "m", "[in_i]", "[ft_i]"], "body height"),
    ("39156-5", &["kg/m2"], "body mass index"),
    ("59408-5", &["%"], "oxygen saturation"),
    ("2708-6", &["%"], "oxygen saturation"),
    ("2345-7", &["mg/dL", "mmol/L"], "glucose"),
    ("2339-0", &["mg/dL", "mmol/L"], "glucose"),
    ("4548-4", &["%", "mmol/mol"], "hemoglobin A1c"),
    ("2093-3", &["mg/dL", "mmol/L"], "total cholesterol"),
    ("2085-9", &["mg/dL", "mmol/L"], "HDL cholesterol"),
    ("13457-7", &["mg/dL", "mmol/L"], "LDL cholesterol"),
    ("18262-6", &["mg/dL", "mmol/L"], "LDL cholesterol"),
    ("2571-8", &["mg/dL", "mmol/L"], "triglycerides"),
    ("2160-0", &["mg/dL", "umol/L"], "creatinine"),
    ("38483-4", &["mg/dL", "umol/L"], "creatinine"),
    ("2823-3", &["mmol/L", "meq/L"], "potassium"),
    ("6298-4", &["mmol/L", "meq/L"], "potassium"),
    ("2951-2", &["mmol/L", "meq/L"], "sodium"),
    ("2947-0", &["mmol/L", "meq/L"], "sodium"),
    ("718-7", &["g/dL", "g/L", "mmol/L"], "hemoglobin"),
    ("3016-3", &["u[IU]/mL", "m[IU]/L"], "TSH"),
];

/// A unit and value mismatch of `resource` (an Observation), if any: its
/// LOINC code is in [`EXPECTED_UNITS`] and its UCUM unit is not one listed.
fn unit_mismatch(resource: &Value, field: &str) -> Option<Finding> {
    let coding = resource["code"]["coding"].as_array()?.iter().find(|c| c["system"] == "http://loinc.org")?;
    let code = coding["code"].as_str()?;
    let quantity = &resource["valueQuantity"];
    let unit = quantity["code"].as_str().filter(|_| quantity["system"] == crate::convert::UCUM)?;
    let (_, units, what) = EXPECTED_UNITS.iter().find(|(c, _, _)| *c == code)?;
    (!units.contains(&unit)).then(|| Finding {
        severity: Severity::Error,
        kind: "unit-mismatch",
        field: Some(field.to_owned()),
        message: format!("{field}: {what} ({code}) in {unit}, which is not a unit it is measured in ({})", units.join(", ")),
    })
}

fn validate(project: &Project, states: &mut BTreeMap<String, Vec<State>>, today: &str) -> (Vec<Pair>, Vec<Pair>) {
    // Hearth's validator on every resource.
    for list in states.values_mut() {
        for s in list.iter_mut().filter(|s| !s.rejected) {
            for (resource, column) in s.converted.resources.iter().zip(&s.converted.columns) {
                for issue in fhir::validation::validate(resource) {
                    if matches!(issue.severity, fhir::outcome::Severity::Fatal | fhir::outcome::Severity::Error) {
                        s.rejected = true;
                        s.converted.findings.push(Finding {
                            severity: Severity::Error,
                            kind: "invalid-fhir",
                            field: column.clone().or(issue.expression.clone()),
                            message: format!(
                                "{}{}",
                                issue.expression.map(|e| format!("{e}: ")).unwrap_or_default(),
                                issue.diagnostics
                            ),
                        });
                    }
                }
            }
        }
    }

    // Patient matching: duplicates merged, grey-zone pairs flagged, before
    // the references are checked (they follow the merges).
    let matched = match_patients(project, states);

    // Birth dates of Patient rows, by table and key.
    let mut births: HashMap<(String, String), String> = HashMap::new();
    for (table, list) in states.iter() {
        if project.tables[table].resource != "Patient" {
            continue;
        }
        for s in list.iter().filter(|s| !s.rejected) {
            if let Some(b) = s.converted.resources.first().and_then(|r| r["birthDate"].as_str()) {
                births.insert((table.clone(), s.converted.key.clone()), b.to_owned());
            }
        }
    }

    // Clinical sanity.
    for (table, list) in states.iter_mut() {
        // The column a row's result takes its unit from, if any.
        let unit_column = project.tables[table].columns.values().find_map(|c| c.unit_column.clone());
        for s in list.iter_mut().filter(|s| !s.rejected) {
            let birth = s.converted.links.iter().find_map(|l| births.get(&(l.table.clone(), l.key.clone())));
            for (column, date) in &s.converted.dates {
                let day = &date[..10.min(date.len())];
                if day > today {
                    s.held.push(Finding {
                        severity: Severity::Error,
                        kind: "future-date",
                        field: Some(column.clone()),
                        message: format!("{column} {day} is in the future"),
                    });
                }
                if let Some(birth) = birth
                    && day < birth.as_str()
                {
                    s.held.push(Finding {
                        severity: Severity::Error,
                        kind: "before-birth",
                        field: Some(column.clone()),
                        message: format!("{column} {day} is before the patient's birth date"),
                    });
                }
            }
            for (resource, column) in s.converted.resources.iter().zip(&s.converted.columns) {
                let unit_field = column.as_deref().or(unit_column.as_deref()).unwrap_or("value");
                if let Some(finding) = unit_mismatch(resource, unit_field) {
                    s.held.push(finding);
                }
                let code = resource["code"]["coding"][0]["code"].as_str().unwrap_or_default();
                let unit = resource["valueQuantity"]["code"].as_str().unwrap_or_default();
                let Some(value) = resource["valueQuantity"]["value"].as_f64() else {
                    continue;
                };
                for (c, u, low, high, what) in VITAL_RANGES {
                    if *c == code && *u == unit && !(*low..=*high).contains(&value) {
                        let field = column.clone().unwrap_or_else(|| "value".into());
                        s.held.push(Finding {
                            severity: Severity::Error,
                            kind: "impossible-value",
                            field: Some(field.clone()),
                            message: format!("{field}: {what} {value} {unit} is outside {low} to {high}"),
                        });
                    }
                }
            }
        }
    }

    // References: every join must reach a row that itself loads. Repeated
    // until nothing changes (a result whose encounter is held is held too).
    let index: HashMap<(String, String), (String, usize)> = states
        .iter()
        .flat_map(|(t, list)| {
            list.iter()
                .enumerate()
                .filter(|(_, s)| {
                    !s.converted.findings.iter().any(|f| f.kind == "duplicate-key" || f.kind == "unreadable")
                })
                .map(move |(i, s)| ((t.clone(), s.converted.key.clone()), (t.clone(), i)))
        })
        .collect();
    loop {
        let mut changes: Vec<(String, usize, Finding)> = Vec::new();
        for (table, list) in states.iter() {
            for (i, s) in list.iter().enumerate() {
                if s.disposition() != Disposition::Converted {
                    continue;
                }
                for link in &s.converted.links {
                    let finding = match index.get(&(link.table.clone(), link.key.clone())) {
                        None => Some(Finding {
                            severity: Severity::Error,
                            kind: "orphan",
                            field: Some(link.column.clone()),
                            message: format!("{} {} matches no row of {}", link.column, link.key, link.table),
                        }),
                        Some((t, j)) => {
                            let target = &states[t][*j];
                            match target.disposition() {
                                Disposition::Converted => None,
                                d => Some(Finding {
                                    severity: Severity::Error,
                                    kind: "unresolved-reference",
                                    field: Some(link.column.clone()),
                                    message: format!(
                                        "{} {} refers to the row at {}, which is {}",
                                        link.column,
                                        link.key,
                                        target.provenance,
                                        d.as_str()
                                    ),
                                }),
                            }
                        }
                    };
                    if let Some(f) = finding {
                        changes.push((table.clone(), i, f));
                        break;
                    }
                }
            }
        }
        if changes.is_empty() {
            break;
        }
        for (table, i, finding) in changes {
            if let Some(s) = states.get_mut(&table).and_then(|l| l.get_mut(i)) {
                s.held.push(finding);
            }
        }
    }

    matched
}

/// Matches the patient records of each Patient table among themselves
/// ([`crate::matching`]): a match merges the later record into the earlier
/// (which gains what it lacks, and to which every reference is redirected);
/// a grey-zone pair gets a `possible-duplicate` warning on both records.
fn match_patients(project: &Project, states: &mut BTreeMap<String, Vec<State>>) -> (Vec<Pair>, Vec<Pair>) {
    let config = matching::Config::of(project);
    let mut merges = Vec::new();
    let mut reviews = Vec::new();
    let tables: Vec<String> =
        states.keys().filter(|t| project.tables.get(*t).is_some_and(|d| d.resource == "Patient")).cloned().collect();
    for table in tables {
        let resource_type = project.tables[&table].resource.clone();
        let Some(list) = states.get_mut(&table) else { continue };
        let members: Vec<usize> = list
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.disposition() == Disposition::Converted
                    && s.converted.resources.first().is_some_and(|r| r["resourceType"] == "Patient")
            })
            .map(|(i, _)| i)
            .collect();
        let features: Vec<matching::Features> =
            members.iter().map(|&i| matching::Features::of(&list[i].converted.resources[0], &config)).collect();
        let mut found = matching::find(&features, &config);
        found.sort_by_key(|(a, b, _)| (*b, *a));
        // The analyst's decisions (review.toml) override the verdicts.
        let decided = |a: usize, b: usize| {
            let side = |i: usize| crate::review::Side::Source {
                table: table.clone(),
                key: list[members[i]].converted.key.clone(),
            };
            project.review.get(&crate::review::PairKey::new(side(a), side(b))).cloned()
        };
        let decisions: Vec<Option<crate::review::Decision>> = found.iter().map(|(a, b, _)| decided(*a, *b)).collect();
        let merge_now = |k: usize, s: &matching::Score| match &decisions[k] {
            Some(d) => d.verdict == crate::review::Verdict::Merge,
            None => s.verdict == Verdict::Match,
        };
        let mut parent: Vec<usize> = (0..members.len()).collect();
        fn root(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        let mut gone: Vec<(usize, matching::Score, Option<crate::review::Decision>)> = Vec::new();
        for (k, (a, b, score)) in found.iter().enumerate().filter(|(k, (_, _, s))| merge_now(*k, s)) {
            let (ra, rb) = (root(&mut parent, *a), root(&mut parent, *b));
            if ra != rb {
                let (keep, lose) = (ra.min(rb), ra.max(rb));
                parent[lose] = keep;
                gone.push((lose, score.clone(), decisions[k].clone()));
            }
        }
        let reference = |i: usize, list: &[State]| RecordRef {
            table: table.clone(),
            provenance: list[members[i]].provenance.clone(),
            key: list[members[i]].converted.key.clone(),
        };
        for (k, (a, b, score)) in found.iter().enumerate().filter(|(k, (_, _, s))| !merge_now(*k, s)) {
            let (first, second) = (reference(*a, list), reference(*b, list));
            if root(&mut parent, *a) == root(&mut parent, *b) {
                // Kept apart on review, yet merged through other matches.
                if let Some(d) = &decisions[k] {
                    let message = format!(
                        "kept separate from {first} on review ({}), but merged with it through other matches: review those merges",
                        d.summary()
                    );
                    list[members[*b]].converted.findings.push(Finding::new(Severity::Warning, "review-overridden", "patient", message));
                }
                continue;
            }
            let pair = crate::review::PairKey::of_refs(&first, &second).id();
            for (i, other) in [(*a, &second), (*b, &first)] {
                let finding = match &decisions[k] {
                    Some(d) => Finding::new(
                        Severity::Information,
                        "reviewed-separate",
                        "patient",
                        format!("may be the same patient as {other} ({}): kept separate on review ({})", score.summary(), d.summary()),
                    ),
                    None => Finding::new(
                        Severity::Warning,
                        "possible-duplicate",
                        "patient",
                        format!(
                            "may be the same patient as {other} ({}): both load, not merged; review before go-live (pair {pair}: hearth migrate review)",
                            score.summary()
                        ),
                    ),
                };
                list[members[i]].converted.findings.push(finding);
            }
            let patients = Box::new([
                list[members[*b]].converted.resources[0].clone(),
                list[members[*a]].converted.resources[0].clone(),
            ]);
            reviews.push(Pair { record: second, other: Other::Source(first), score: score.clone(), decided: decisions[k].clone(), patients });
        }
        // The merges: survivor gains what it lacks; keys redirected.
        let mut redirect: HashMap<String, (String, String)> = HashMap::new();
        for (lose, score, decided) in gone {
            let keep = root(&mut parent, lose);
            let (dup, survivor) = (reference(lose, list), reference(keep, list));
            let duplicate = list[members[lose]].converted.resources[0].clone();
            let patients = Box::new([duplicate.clone(), list[members[keep]].converted.resources[0].clone()]);
            let how = decided.as_ref().map(|d| format!("; merged on review ({})", d.summary())).unwrap_or_default();
            let s = &mut list[members[lose]];
            s.merged = true;
            s.converted.findings.push(Finding {
                severity: Severity::Information,
                kind: "merged-duplicate",
                field: Some("patient".into()),
                message: format!(
                    "the same patient as {survivor} ({}{how}): merged into it; its identifiers are kept there and its records refer to it",
                    score.summary()
                ),
            });
            matching::enrich(&mut list[members[keep]].converted.resources[0], &duplicate);
            redirect.insert(dup.key.clone(), (survivor.key.clone(), survivor.provenance.to_string()));
            merges.push(Pair { record: dup, other: Other::Source(survivor), score, decided, patients });
        }
        if redirect.is_empty() {
            continue;
        }
        for list in states.values_mut() {
            for s in list.iter_mut().filter(|s| !s.merged) {
                let mut notes = Vec::new();
                for link in s.converted.links.iter_mut().filter(|l| l.table == table) {
                    let Some((to, at)) = redirect.get(&link.key) else { continue };
                    let from = format!("{resource_type}/{}", crate::convert::resource_id(&table, &link.key, ""));
                    let target = format!("{resource_type}/{}", crate::convert::resource_id(&table, to, ""));
                    for r in &mut s.converted.resources {
                        matching::redirect(r, &from, &target);
                    }
                    notes.push(Finding {
                        severity: Severity::Information,
                        kind: "redirected",
                        field: Some(link.column.clone()),
                        message: format!(
                            "{} {} was merged into {to} ({at}): the reference points at that patient",
                            link.column, link.key
                        ),
                    });
                    link.key = to.clone();
                }
                s.converted.findings.extend(notes);
            }
        }
    }
    (merges, reviews)
}

impl DryRun {
    /// The machine-readable report.
    pub fn to_json(&self) -> Value {
        let tables: serde_json::Map<String, Value> = self
            .tables
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    json!({
                        "file": c.file,
                        "resource": c.resource,
                        "source_records": c.source_records,
                        "converted": c.converted,
                        "rejected": c.rejected,
                        "quarantined": c.quarantined,
                        "merged": c.merged,
                        "excluded": c.excluded,
                        "unaccounted": c.unaccounted(),
                        "resources": c.resources,
                        "pending": c.pending,
                    }),
                )
            })
            .collect();
        let issues: Vec<Value> = self
            .issues
            .iter()
            .map(|i| {
                let (file, line) = match &i.provenance {
                    Provenance::FileLine { file, line } => (json!(file), json!(line)),
                    Provenance::TableKey { table, .. } => (json!(table), Value::Null),
                };
                json!({
                    "table": i.table,
                    "file": file,
                    "line": line,
                    "key": i.key,
                    "field": i.finding.field,
                    "severity": i.finding.severity.as_str(),
                    "kind": i.finding.kind,
                    "disposition": i.disposition.as_str(),
                    "message": i.finding.message,
                })
            })
            .collect();
        let sum = |f: fn(&TableCounts) -> u64| self.tables.values().map(f).sum::<u64>();
        json!({
            "project": self.project,
            "dry_run": true,
            "until": self.until.as_str(),
            "today": self.today,
            "totals": {
                "source_records": sum(|c| c.source_records),
                "converted": sum(|c| c.converted),
                "rejected": sum(|c| c.rejected),
                "quarantined": sum(|c| c.quarantined),
                "merged": sum(|c| c.merged),
                "excluded": sum(|c| c.excluded),
                "unaccounted": self.tables.values().map(TableCounts::unaccounted).sum::<i64>(),
                "resources": sum(|c| c.resources),
                "pending": sum(|c| c.pending),
            },
            "timings": self.timings.iter().map(|(stage, s)| json!({ "stage": stage, "seconds": s })).collect::<Vec<_>>(),
            "tables": tables,
            "unreadable_tables": self.unreadable.iter().map(|(t, e)| json!({ "table": t, "error": e })).collect::<Vec<_>>(),
            "merges": self.merges.iter().map(|m| m.to_json("into")).collect::<Vec<_>>(),
            "reviews": self.reviews.iter().map(|r| r.to_json("with")).collect::<Vec<_>>(),
            "review": self.review_json(),
            "issues": issues,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_balances_and_its_defects_get_their_dispositions() {
        let dir = tempfile::tempdir().expect("tmp");
        crate::project::init(dir.path(), Some("legacy-csv")).expect("init");
        let options = crate::sample::SampleOptions { patients: 6, seed: 3 };
        let report = crate::sample::write(&dir.path().join("export"), &options).expect("sample");
        let project = crate::project::load(dir.path()).expect("project");
        let run = run(&project, dir.path(), Stage::Validate, "2026-11-29").expect("dry run");
        assert!(run.unreadable.is_empty());
        for (table, c) in &run.tables {
            assert_eq!(c.unaccounted(), 0, "{table}");
            assert_eq!(c.source_records, report.rows[&c.file], "{table}");
        }
        let at = |file: &str, line: u64| -> Vec<&Issue> {
            run.issues.iter().filter(|i| i.provenance == Provenance::FileLine { file: file.into(), line }).collect()
        };
        for d in &report.defects {
            let issues = at(&d.file, d.line);
            let expect = match d.kind {
                "orphan" => Some(("orphan", Disposition::Quarantined)),
                "impossible-vital" => Some(("impossible-value", Disposition::Quarantined)),
                "blank-required" => Some(("required", Disposition::Rejected)),
                "unmapped-code" => Some(("unmapped-code", Disposition::Converted)),
                "unit-variant" => Some(("unit-normalised", Disposition::Converted)),
                "duplicate-patient" => Some(("merged-duplicate", Disposition::Merged)),
                "near-duplicate-patient" => Some(("possible-duplicate", Disposition::Converted)),
                "entered-in-error" => Some(("excluded", Disposition::Excluded)),
                "free-text-medication" => Some(("text-only", Disposition::Converted)),
                "document-mismatch" => Some(("document", Disposition::Rejected)),
                _ => None,
            };
            if let Some((kind, disposition)) = expect {
                let issue = issues
                    .iter()
                    .find(|i| i.finding.kind == kind)
                    .unwrap_or_else(|| panic!("{} at {}:{} not reported: {issues:?}", d.kind, d.file, d.line));
                if d.kind != "unmapped-code" || d.file != "lab_results.csv" {
                    assert_eq!(issue.disposition, disposition, "{}", d.kind);
                }
                if !d.kind.contains("duplicate") {
                    assert_eq!(issue.finding.field.as_deref(), Some(d.column.as_str()), "{}", d.kind);
                }
            }
        }
        for o in &run.resources {
            let issues = fhir::validation::validate(&o.resource);
            assert!(
                issues
                    .iter()
                    .all(|i| !matches!(i.severity, fhir::outcome::Severity::Fatal | fhir::outcome::Severity::Error)),
                "{}: {issues:?}",
                o.provenance
            );
        }
        // Nothing but the planted defects (and what refers to them) is held
        // or rejected.
        for i in run.issues.iter().filter(|i| i.finding.severity == Severity::Error) {
            let expected = ["orphan", "impossible-value", "required", "unresolved-reference", "document"];
            assert!(expected.contains(&i.finding.kind), "{i}");
        }
        // The duplicate is merged into the second patient: its medication
        // refers to that patient, which carries the duplicate's identifiers.
        let dup = report.defects.iter().find(|d| d.kind == "duplicate-patient").expect("planted");
        assert_eq!(run.merges.len(), 1, "{:?}", run.merges);
        assert_eq!(run.merges[0].record.key, dup.key);
        assert_eq!(
            run.merges[0].other,
            matching::Other::Source(RecordRef {
                table: "patients".into(),
                provenance: Provenance::FileLine { file: "patients.csv".into(), line: 3 },
                key: "P00002".into(),
            })
        );
        let survivor = crate::convert::resource_id("patients", "P00002", "");
        let patient = run.resources.iter().find(|o| o.resource["id"] == survivor.as_str()).expect("survivor loads");
        let ids: Vec<&str> = patient.resource["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["value"].as_str())
            .collect();
        assert!(ids.contains(&dup.key.as_str()), "the duplicate's key still finds the patient: {ids:?}");
        let dup_ref = format!("Patient/{}", crate::convert::resource_id("patients", &dup.key, ""));
        assert!(
            run.resources.iter().all(|o| !o.resource.to_string().contains(&dup_ref)),
            "nothing refers to the duplicate"
        );
        let meds: Vec<_> = run
            .resources
            .iter()
            .filter(|o| o.table == "medications" && o.resource["subject"]["reference"] == format!("Patient/{survivor}"))
            .collect();
        assert!(
            meds.iter().any(|o| run.issues.iter().any(|i| i.key == o.key && i.finding.kind == "redirected")),
            "the duplicate's medication now refers to the survivor"
        );
        assert_eq!(run.tables["patients"].merged, 1);
        assert_eq!(run.tables["problems"].excluded, 1);
        // The near duplicate: reviewed, both load, a warning on both.
        let near = report.defects.iter().find(|d| d.kind == "near-duplicate-patient").expect("planted");
        assert_eq!(run.reviews.len(), 1, "{:?}", run.reviews);
        assert_eq!(run.reviews[0].record.key, near.key);
        assert!(matches!(&run.reviews[0].other, matching::Other::Source(r) if r.key == "P00001"));
        for key in ["P00001", near.key.as_str()] {
            assert!(
                run.issues.iter().any(|i| i.key == key
                    && i.finding.kind == "possible-duplicate"
                    && i.disposition == Disposition::Converted
                    && i.finding.severity == Severity::Warning),
                "{key}"
            );
        }
        let json = run.to_json();
        assert_eq!(json["totals"]["unaccounted"], 0);
        assert_eq!(json["totals"]["merged"], 1);
        assert_eq!(json["merges"][0]["into"]["key"], "P00002");
        assert!(json["merges"][0]["agreed"].as_array().is_some_and(|a| a.contains(&json!("birth_date"))));
        assert_eq!(json["reviews"][0]["with"]["key"], "P00001");
        // --until convert: nothing is quarantined.
        let run = super::run(&project, dir.path(), Stage::Convert, "2026-11-29").expect("convert");
        assert!(run.tables.values().all(|c| c.quarantined == 0 && c.unaccounted() == 0));
    }

    /// The head of a test project's `migration.toml`: one CSV source `s` in
    /// the test's folder, ISO dates, UTC.
    const TEST_PREAMBLE: &str = r#"[project]
name = "t"

[defaults]
date_formats = ["YYYY-MM-DD"]
timezone = "UTC"

[sources.s]
kind = "csv"
path = "."

"#;

    /// The issues of `run` at `file`:`line`: kind, disposition, field.
    fn issues_at<'r>(run: &'r DryRun, file: &str, line: u64) -> Vec<(&'static str, Disposition, Option<&'r str>)> {
        run.issues
            .iter()
            .filter(|i| i.provenance == Provenance::FileLine { file: file.into(), line })
            .map(|i| (i.finding.kind, i.disposition, i.finding.field.as_deref()))
            .collect()
    }

    #[test]
    fn rejections_and_quarantines_name_their_reason() {
        let dir = tempfile::tempdir().expect("tmp");
        let toml = r#"
[code_systems]
act = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

[tables.patients]
source = "s"
file = "patients.csv"
resource = "Patient"
key = "id"

[tables.patients.columns]
id = { element = "Patient.identifier.value", required = true }
family = { element = "Patient.name.family" }
born = { element = "Patient.birthDate", type = "date", required = true }

[tables.visits]
source = "s"
file = "visits.csv"
resource = "Encounter"
key = "id"

[tables.visits.columns]
id = { element = "Encounter.identifier.value", required = true }
patient = { type = "reference", required = true }
day = { element = "Encounter.period.start", type = "date", required = true }
kind = { element = "Encounter.class", type = "code", value_map = "kinds" }

[[tables.visits.joins]]
column = "patient"
table = "patients"
element = "Encounter.subject"

[value_maps.kinds]
system = "act"
values = { OV = "AMB" }
"#;
        std::fs::write(dir.path().join("migration.toml"), format!("{TEST_PREAMBLE}{toml}")).expect("toml");
        std::fs::write(
            dir.path().join("patients.csv"),
            "id,family,born\nP1,Smith,1980-01-01\nP1,Smyth,1980-01-01\nP3,Doe\nP4,Roe,1990-13-01\n",
        )
        .expect("patients");
        std::fs::write(
            dir.path().join("visits.csv"),
            "id,patient,day,kind\nV1,P1,2099-01-01,OV\nV2,P1,2020-01-01,\nV3,P1,1970-01-01,OV\nV4,P4,2020-01-01,OV\nV5,P1,2020-02-02,XX\nV6,P1,2020-03-03,OV\n",
        )
        .expect("visits");
        let project = crate::project::load(dir.path()).expect("project");
        let run = run(&project, dir.path(), Stage::Validate, "2026-01-01").expect("run");
        let of = |file: &str, line: u64| issues_at(&run, file, line);
        assert_eq!(of("patients.csv", 3), [("duplicate-key", Disposition::Rejected, Some("id"))]);
        assert_eq!(of("patients.csv", 4), [("unreadable", Disposition::Rejected, Some("born"))]);
        assert_eq!(of("patients.csv", 5), [("format", Disposition::Rejected, Some("born"))]);
        assert_eq!(of("visits.csv", 2), [("future-date", Disposition::Quarantined, Some("day"))]);
        let v2 = of("visits.csv", 3);
        assert!(
            !v2.is_empty() && v2.iter().all(|(k, d, _)| *k == "invalid-fhir" && *d == Disposition::Rejected),
            "{v2:?}"
        );
        assert_eq!(of("visits.csv", 4), [("before-birth", Disposition::Quarantined, Some("day"))]);
        assert_eq!(of("visits.csv", 5), [("unresolved-reference", Disposition::Quarantined, Some("patient"))]);
        // An unmapped class is kept as a local coding, reported, and loads.
        assert_eq!(of("visits.csv", 6), [("unmapped-code", Disposition::Converted, Some("kind"))]);
        assert!(of("visits.csv", 7).is_empty());
        let p = &run.tables["patients"];
        assert_eq!((p.source_records, p.converted, p.rejected, p.quarantined), (4, 1, 3, 0));
        let v = &run.tables["visits"];
        assert_eq!((v.source_records, v.converted, v.rejected, v.quarantined), (6, 2, 1, 3));
        let class =
            run.resources.iter().find(|o| o.key == "V5").map(|o| o.resource["class"].clone()).expect("V5 loads");
        assert_eq!(class, json!({ "system": "urn:hearth:local:visits:kind", "code": "XX" }));
    }

    #[test]
    fn a_result_in_a_unit_of_another_quantity_is_held_for_review() {
        let dir = tempfile::tempdir().expect("tmp");
        let toml = r#"
[code_systems]
loinc = "http://loinc.org"

[tables.patients]
source = "s"
file = "patients.csv"
resource = "Patient"
key = "id"

[tables.patients.columns]
id = { element = "Patient.identifier.value", required = true }
born = { element = "Patient.birthDate", type = "date", required = true }

[tables.results]
source = "s"
file = "results.csv"
resource = "Observation"
key = "id"

[tables.results.columns]
id = { element = "Observation.identifier.value", required = true }
patient = { type = "reference", required = true }
test = { element = "Observation.code.coding.code", type = "code", system = "loinc", required = true }
value = { element = "Observation.valueQuantity.value", type = "decimal", unit_column = "unit", unit_map = "ucum" }
unit = { }
day = { element = "Observation.effectiveDateTime", type = "date", required = true }

[[tables.results.joins]]
column = "patient"
table = "patients"
element = "Observation.subject"

[unit_maps.ucum]
"mg/dl" = "mg/dL"
"#;
        std::fs::write(dir.path().join("migration.toml"), format!("{TEST_PREAMBLE}{toml}")).expect("toml");
        std::fs::write(dir.path().join("patients.csv"), "id,born\nP1,1980-01-01\n").expect("patients");
        std::fs::write(
            dir.path().join("results.csv"),
            "id,patient,test,value,unit,day\n\
             R1,P1,2345-7,95,mg/dl,2020-01-01\n\
             R2,P1,2345-7,95,%,2020-01-01\n\
             R3,P1,29463-7,70,cm,2020-01-01\n\
             R4,P1,29463-7,154,[lb_av],2020-01-01\n\
             R5,P1,2345-7,5.3,mmol/L,2020-01-01\n\
             R6,P1,6690-2,7.1,10*3/uL,2020-01-01\n",
        )
        .expect("results");
        let project = crate::project::load(dir.path()).expect("project");
        let run = run(&project, dir.path(), Stage::Validate, "2026-01-01").expect("run");
        let of = |line: u64| {
            let mut found = issues_at(&run, "results.csv", line);
            found.retain(|(kind, _, _)| *kind != "unit-normalised");
            found
        };
        // A glucose in %, a body weight in cm: held, naming the unit column.
        for line in [3, 4] {
            assert_eq!(of(line), [("unit-mismatch", Disposition::Quarantined, Some("unit"))], "line {line}");
        }
        let message = &run.issues.iter().find(|i| i.finding.kind == "unit-mismatch").expect("found").finding.message;
        assert!(message.contains("glucose (2345-7) in %") && message.contains("mg/dL, mmol/L"), "{message}");
        // Units of the right quantity, and a code the check does not list, load.
        for line in [2, 5, 6, 7] {
            assert!(of(line).is_empty(), "line {line}: {:?}", of(line));
        }
        let r = &run.tables["results"];
        assert_eq!((r.source_records, r.converted, r.quarantined, r.unaccounted()), (6, 4, 2, 0));
    }

    #[test]
    fn exclude_rules_leave_records_out_with_their_reason_and_are_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let toml = r#"
[project]
name = "t"

[defaults]
date_formats = ["YYYY-MM-DD"]

[sources.s]
kind = "csv"
path = "."

[tables.patients]
source = "s"
file = "patients.csv"
resource = "Patient"
key = "id"

[tables.patients.columns]
id = { element = "Patient.identifier.value", required = true }
family = { element = "Patient.name.family" }
born = { element = "Patient.birthDate", type = "date", required = true }
state = { }

[[tables.patients.exclude]]
column = "state"
values = ["deleted", "test"]
reason = "deleted or test patients in the legacy system"

[tables.visits]
source = "s"
file = "visits.csv"
resource = "Encounter"
key = "id"

[tables.visits.columns]
id = { element = "Encounter.identifier.value", required = true }
patient = { type = "reference", required = true }
kind = { element = "Encounter.class", type = "code", value_map = "kinds" }

[[tables.visits.joins]]
column = "patient"
table = "patients"
element = "Encounter.subject"

[code_systems]
act = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

[value_maps.kinds]
system = "act"
values = { OV = "AMB" }
"#;
        std::fs::write(dir.path().join("migration.toml"), toml).expect("toml");
        std::fs::write(
            dir.path().join("patients.csv"),
            "id,family,born,state\nP1,Smith,1980-01-01,\nP2,Test,,TEST\nP1,Roe,1990-01-01,Deleted\n",
        )
        .expect("patients");
        std::fs::write(dir.path().join("visits.csv"), "id,patient,kind\nV1,P1,OV\nV2,P2,OV\n").expect("visits");
        let project = crate::project::load(dir.path()).expect("project");
        let run = run(&project, dir.path(), Stage::Validate, "2026-01-01").expect("run");
        let p = &run.tables["patients"];
        // An excluded record is not converted (its blank birth date is not an
        // error) and does not count as a duplicate key.
        assert_eq!((p.source_records, p.converted, p.excluded, p.rejected, p.unaccounted()), (3, 1, 2, 0, 0));
        let excluded: Vec<_> = run.issues.iter().filter(|i| i.disposition == Disposition::Excluded).collect();
        assert_eq!(excluded.len(), 2);
        assert!(excluded.iter().all(|i| i.finding.kind == "excluded"
            && i.finding.severity == Severity::Information
            && i.finding.field.as_deref() == Some("state")
            && i.finding.message.contains("deleted or test patients")));
        // A visit of an excluded patient is held, saying why.
        let v2: Vec<_> = run.issues.iter().filter(|i| i.key == "V2").collect();
        assert_eq!(v2.len(), 1);
        assert_eq!((v2[0].finding.kind, v2[0].disposition), ("unresolved-reference", Disposition::Quarantined));
        assert!(v2[0].finding.message.contains("excluded"), "{}", v2[0].finding.message);

        // The rule is checked where it is written.
        let bad = toml.replace("column = \"state\"", "column = \"status\"");
        let e = crate::project::parse(&bad, Path::new("m.toml")).expect_err("unknown column");
        assert_eq!((e.line, e.field.as_str()), (25, "tables.patients.exclude.column"), "{e}");
        let bad = toml.replace("values = [\"deleted\", \"test\"]", "values = []");
        let e = crate::project::parse(&bad, Path::new("m.toml")).expect_err("no values");
        assert_eq!(e.line, 26, "{e}");
        let bad = toml.replace("reason = ", "why = ");
        let e = crate::project::parse(&bad, Path::new("m.toml")).expect_err("unknown key");
        assert!(e.message.contains("unknown field") && e.line == 27, "{e}");
    }
}
