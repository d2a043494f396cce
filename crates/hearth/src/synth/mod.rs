//! Seeded, Synthea-like synthetic patients for demos, imports and benchmarks:
//! FHIR R4 transaction Bundles (one per patient, `urn:uuid:` references) and
//! Bulk-Data-style NDJSON (one file per resource type, concrete ids and
//! `Type/id` references). No network and no external data: names, places and
//! clinical codes are embedded tables, and the same seed always yields the
//! same bytes.

mod codes;
mod generate;
mod names;

use generate::{Entry, RefStyle};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthOptions {
    /// Seed of every draw: the same seed gives the same data.
    pub seed: u64,
    /// Number of patients (indexes `0..patients`).
    pub patients: usize,
    /// Resources of each patient's history; `None`: the default, 40 to 60.
    pub per_patient: Option<usize>,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Resources written (shared practitioners and organizations once per
    /// NDJSON data set, once per bundle that uses them in bundles).
    pub resources: u64,
    /// Sum of the compact JSON sizes of those resources, in bytes.
    pub bytes: u64,
    /// Resources written per resource type.
    pub by_type: BTreeMap<String, u64>,
    /// Files written, in an order safe for loading (organizations,
    /// practitioners and patients before what refers to them).
    pub files: Vec<PathBuf>,
}

impl Counts {
    fn add(&mut self, resource_type: &str, bytes: usize) {
        self.resources += 1;
        self.bytes += bytes as u64;
        *self.by_type.entry(resource_type.to_owned()).or_insert(0) += 1;
    }
}

/// The transaction Bundle of patient `index` of `seed`, with its default
/// history (40 to 60 resources).
pub fn patient_bundle(seed: u64, index: usize) -> Value {
    transaction(generate::patient(seed, index, None, RefStyle::Urn))
}

/// The transaction Bundle of patient `index` of `seed` with exactly
/// `n_resources` entries (at least 3: clinic, practitioner, patient). The
/// patient's demographics are those of [`patient_bundle`]; the history is
/// longer or shorter.
pub fn patient_bundle_sized(seed: u64, index: usize, n_resources: usize) -> Value {
    transaction(generate::patient(seed, index, Some(n_resources), RefStyle::Urn))
}

/// The resources of patient `index` of `seed` as a Bulk Data export holds
/// them: each with its `id`, references written `Type/id`. Includes the
/// shared clinic and practitioners the patient refers to.
pub fn patient_resources(seed: u64, index: usize) -> Vec<Value> {
    generate::patient(seed, index, None, RefStyle::Relative).into_iter().map(|e| e.resource).collect()
}

/// Builds a transaction Bundle: every entry is a POST with a `urn:uuid:`
/// fullUrl, so the server assigns ids and rewrites the references
/// (<http://hl7.org/fhir/R4/http.html#trules>); shared resources are
/// conditional creates (`ifNoneExist`) so that loading many patients
/// creates each practitioner and clinic once.
fn transaction(entries: Vec<Entry>) -> Value {
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut request = json!({ "method": "POST", "url": e.resource_type });
            if let (Some(criteria), Value::Object(map)) = (e.if_none_exist, &mut request) {
                map.insert("ifNoneExist".into(), Value::String(criteria));
            }
            json!({ "fullUrl": format!("urn:uuid:{}", e.id), "resource": e.resource, "request": request })
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

/// Load order of the NDJSON files: what is referred to comes first.
fn load_rank(resource_type: &str) -> u8 {
    match resource_type {
        "Organization" => 0,
        "Practitioner" => 1,
        "Patient" => 2,
        "Encounter" => 3,
        "Condition" => 4,
        "Observation" => 5,
        _ => 6,
    }
}

/// Writes `opts.patients` patients as Bulk Data NDJSON: one
/// `<ResourceType>.ndjson` file per type in `dir` (created if missing), one
/// resource per line, shared practitioners and clinics once
/// (<https://hl7.org/fhir/uv/bulkdata/export.html#file-format>).
pub fn write_ndjson(dir: &Path, opts: &SynthOptions) -> std::io::Result<Counts> {
    std::fs::create_dir_all(dir)?;
    let mut writers: BTreeMap<&'static str, BufWriter<File>> = BTreeMap::new();
    let mut shared_written: HashSet<String> = HashSet::new();
    let mut counts = Counts::default();
    for index in 0..opts.patients {
        for entry in generate::patient(opts.seed, index, opts.per_patient, RefStyle::Relative) {
            if entry.if_none_exist.is_some() && !shared_written.insert(entry.id.clone()) {
                continue;
            }
            let line = serde_json::to_string(&entry.resource)?;
            let writer = match writers.entry(entry.resource_type) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let path = dir.join(format!("{}.ndjson", entry.resource_type));
                    counts.files.push(path.clone());
                    v.insert(BufWriter::new(File::create(path)?))
                }
            };
            writer.write_all(line.as_bytes())?;
            writer.write_all(b"\n")?;
            counts.add(entry.resource_type, line.len());
        }
    }
    for (_, mut writer) in writers {
        writer.flush()?;
    }
    counts.files.sort_by_key(|path| {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        (load_rank(&stem), stem)
    });
    Ok(counts)
}

/// Writes `opts.patients` transaction Bundles to `dir` (created if missing),
/// one `patient-NNNNNN.json` file per patient.
pub fn write_bundles(dir: &Path, opts: &SynthOptions) -> std::io::Result<Counts> {
    std::fs::create_dir_all(dir)?;
    let mut counts = Counts::default();
    for index in 0..opts.patients {
        let bundle = patient_bundle(opts.seed, index);
        if let Some(entries) = bundle.get("entry").and_then(Value::as_array) {
            for entry in entries {
                let resource = entry.get("resource").unwrap_or(&Value::Null);
                let resource_type = resource.get("resourceType").and_then(Value::as_str).unwrap_or_default();
                counts.add(resource_type, serde_json::to_string(resource)?.len());
            }
        }
        let path = dir.join(format!("patient-{index:06}.json"));
        let mut writer = BufWriter::new(File::create(&path)?);
        serde_json::to_writer(&mut writer, &bundle)?;
        writer.flush()?;
        counts.files.push(path);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `reference` string anywhere in `value`.
    fn references(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("reference", Value::String(s)) => out.push(s.clone()),
                        _ => references(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, out)),
            _ => {}
        }
    }

    fn entries(bundle: &Value) -> &Vec<Value> {
        bundle["entry"].as_array().expect("entries")
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = serde_json::to_string(&patient_bundle(7, 3)).expect("json");
        let b = serde_json::to_string(&patient_bundle(7, 3)).expect("json");
        assert_eq!(a, b);
        assert_ne!(a, serde_json::to_string(&patient_bundle(8, 3)).expect("json"));
        assert_ne!(a, serde_json::to_string(&patient_bundle(7, 4)).expect("json"));
    }

    #[test]
    fn default_patients_have_40_to_60_resources() {
        for index in 0..50 {
            let n = entries(&patient_bundle(1, index)).len();
            assert!((40..=60).contains(&n), "patient {index} has {n} resources");
        }
    }

    #[test]
    fn sized_patients_have_exactly_the_asked_count_and_same_demographics() {
        for n in [3, 17, 250, 3000] {
            let bundle = patient_bundle_sized(5, 2, n);
            assert_eq!(entries(&bundle).len(), n);
        }
        assert_eq!(entries(&patient_bundle_sized(5, 2, 1)).len(), 3);
        let default = patient_bundle(5, 2);
        let heavy = patient_bundle_sized(5, 2, 500);
        let patient = |b: &Value| entries(b).iter().find(|e| e["resource"]["resourceType"] == "Patient").cloned();
        assert_eq!(patient(&default), patient(&heavy));
    }

    #[test]
    fn bundle_is_a_transaction_whose_references_all_resolve_in_the_bundle() {
        let bundle = patient_bundle_sized(11, 0, 400);
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "transaction");
        let full_urls: HashSet<&str> = entries(&bundle).iter().filter_map(|e| e["fullUrl"].as_str()).collect();
        assert_eq!(full_urls.len(), 400, "fullUrls are unique");
        let mut refs = Vec::new();
        for entry in entries(&bundle) {
            assert!(entry["fullUrl"].as_str().is_some_and(|u| u.starts_with("urn:uuid:")));
            assert_eq!(entry["request"]["method"], "POST");
            assert_eq!(entry["request"]["url"], entry["resource"]["resourceType"]);
            assert!(entry["resource"].get("id").is_none());
            references(&entry["resource"], &mut refs);
        }
        assert!(refs.len() > 400);
        for r in &refs {
            assert!(full_urls.contains(r.as_str()), "dangling reference {r}");
        }
        // Shared resources are conditional creates on their identifier.
        let conditional: Vec<&Value> = entries(&bundle).iter().filter(|e| e["request"].get("ifNoneExist").is_some()).collect();
        assert!(conditional.iter().any(|e| e["resource"]["resourceType"] == "Organization"));
        assert!(conditional.iter().any(|e| e["request"]["ifNoneExist"]
            .as_str()
            .is_some_and(|c| c.starts_with("identifier=http://hl7.org/fhir/sid/us-npi|"))));
    }

    #[test]
    fn histories_cover_every_requested_resource_type_and_code() {
        let bundles: Vec<Value> = (0..30).map(|i| patient_bundle(3, i)).collect();
        let text: String = bundles.iter().map(|b| serde_json::to_string(b).expect("json")).collect();
        for resource_type in [
            "Organization", "Practitioner", "Patient", "Encounter", "Condition", "Observation",
            "MedicationRequest", "Immunization", "Procedure", "DiagnosticReport", "AllergyIntolerance",
        ] {
            assert!(text.contains(&format!("\"resourceType\":\"{resource_type}\"")), "no {resource_type}");
        }
        for loinc in ["8302-2", "29463-7", "8867-4", "9279-1", "8310-5", "85354-9", "39156-5", "2339-0", "6690-2", "718-7", "4548-4", "2093-3"] {
            assert!(text.contains(&format!("\"code\":\"{loinc}\"")), "no LOINC {loinc}");
        }
        for system in ["http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm", "http://www.nlm.nih.gov/research/umls/rxnorm", "http://hl7.org/fhir/sid/cvx"] {
            assert!(text.contains(system), "no {system}");
        }
        // Every DiagnosticReport's results are Observations of the same bundle.
        for bundle in &bundles {
            let observations: HashSet<&str> = entries(bundle)
                .iter()
                .filter(|e| e["resource"]["resourceType"] == "Observation")
                .filter_map(|e| e["fullUrl"].as_str())
                .collect();
            for report in entries(bundle).iter().filter(|e| e["resource"]["resourceType"] == "DiagnosticReport") {
                let results = report["resource"]["result"].as_array().expect("results");
                assert!(!results.is_empty());
                for r in results {
                    assert!(observations.contains(r["reference"].as_str().expect("reference")));
                }
            }
        }
    }

    #[test]
    fn decimals_keep_their_written_precision() {
        assert_eq!(generate::fixed(150, 2).to_string(), "1.50");
        assert_eq!(generate::fixed(-5, 1).to_string(), "-0.5");
        assert_eq!(generate::fixed(986, 1).to_string(), "98.6");
        assert_eq!(generate::fixed(42, 0).to_string(), "42");
        // Creatinine is written with two decimals, trailing zero included.
        let bundle = patient_bundle_sized(2, 1, 600);
        let creatinine: Vec<String> = entries(&bundle)
            .iter()
            .filter(|e| e["resource"]["code"]["coding"][0]["code"] == "2160-0")
            .map(|e| e["resource"]["valueQuantity"]["value"].to_string())
            .collect();
        assert!(!creatinine.is_empty());
        for value in creatinine {
            let decimals = value.split('.').nth(1).map(str::len);
            assert_eq!(decimals, Some(2), "{value}");
        }
    }

    #[test]
    fn practitioner_npis_pass_the_luhn_check() {
        let bundle = patient_bundle(4, 4);
        let npis: Vec<&str> = entries(&bundle)
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Practitioner")
            .filter_map(|e| e["resource"]["identifier"][0]["value"].as_str())
            .collect();
        assert!(!npis.is_empty());
        for npi in npis {
            assert_eq!(npi.len(), 10);
            // Luhn over "80840" + the 10 digits must be 0 mod 10.
            let digits = format!("80840{npi}");
            let sum: u32 = digits
                .chars()
                .rev()
                .enumerate()
                .map(|(i, c)| {
                    let d = c.to_digit(10).expect("digit");
                    if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
                })
                .sum();
            assert_eq!(sum % 10, 0, "{npi}");
        }
    }

    #[test]
    fn names_include_accented_spellings() {
        let text: String = (0..300).map(|i| serde_json::to_string(&patient_bundle(1, i)).expect("json")).collect();
        assert!(text.chars().any(|c| "áéíóúñüöäøåÁÉÍÓÚÑ".contains(c)), "no accented names in 300 patients");
    }

    #[test]
    fn ndjson_has_ids_resolved_references_and_shared_resources_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let counts = write_ndjson(dir.path(), &SynthOptions { seed: 9, patients: 40, per_patient: None }).expect("write");
        assert_eq!(counts.files.first().and_then(|p| p.file_name()).and_then(|n| n.to_str()), Some("Organization.ndjson"));
        let mut ids = HashSet::new();
        let mut refs = Vec::new();
        let mut total = 0u64;
        let mut bytes = 0u64;
        for path in &counts.files {
            let expected_type = path.file_stem().and_then(|s| s.to_str()).expect("stem");
            let text = std::fs::read_to_string(path).expect("read");
            for line in text.lines() {
                let resource: Value = serde_json::from_str(line).expect("one JSON resource per line");
                assert_eq!(resource["resourceType"], expected_type);
                let id = resource["id"].as_str().expect("id");
                assert!(ids.insert(format!("{expected_type}/{id}")), "duplicate {expected_type}/{id}");
                references(&resource, &mut refs);
                total += 1;
                bytes += line.len() as u64;
            }
        }
        assert_eq!(total, counts.resources);
        assert_eq!(bytes, counts.bytes);
        assert_eq!(counts.by_type.get("Patient"), Some(&40));
        for r in &refs {
            assert!(ids.contains(r), "unresolved reference {r}");
        }
        let mean = counts.bytes as f64 / counts.resources as f64;
        println!("mean resource size: {mean:.0} bytes over {} resources", counts.resources);
        assert!((500.0..1500.0).contains(&mean), "mean {mean}");
        // Same data as the in-memory resources.
        assert!(patient_resources(9, 0).iter().all(|r| r["id"].is_string()));
    }

    #[test]
    fn bundles_are_written_one_file_per_patient() {
        let dir = tempfile::tempdir().expect("tempdir");
        let counts = write_bundles(dir.path(), &SynthOptions { seed: 9, patients: 3, per_patient: None }).expect("write");
        assert_eq!(counts.files.len(), 3);
        let first: Value = serde_json::from_str(&std::fs::read_to_string(&counts.files[0]).expect("read")).expect("json");
        assert_eq!(first, patient_bundle(9, 0));
    }

    #[test]
    fn generated_resources_are_valid_fhir_r4() {
        let mut checked = 0;
        for index in 0..8 {
            for resource in patient_resources(21, index) {
                let errors: Vec<_> = fhir::validation::validate(&resource).into_iter().filter(|i| i.is_error()).collect();
                assert!(errors.is_empty(), "{}: {errors:?}", resource["resourceType"]);
                checked += 1;
            }
        }
        assert!(checked >= 300, "{checked}");
    }
}
