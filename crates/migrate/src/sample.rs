//! `hearth migrate sample`: a seeded, realistic and deliberately messy CSV
//! export of an imaginary legacy EHR, for rehearsals, demos and tests. The
//! same seed and patient count always give the same bytes.
//!
//! Files (the layout the `legacy-csv` preset maps):
//!
//! | file | rows | dialect |
//! | --- | --- | --- |
//! | `patients.csv` | one per patient, plus a duplicate and a near duplicate | **Windows-1252**, `,` |
//! | `encounters.csv` | 2 to 4 per patient | UTF-8 **with a byte-order mark**, `,` |
//! | `problems.csv` | 1 to 3 per patient, plus one entered in error | UTF-8, **`;`** |
//! | `allergies.csv` | 0 to 2 per patient, 3 for the first | UTF-8, `,` |
//! | `medications.csv` | 1 to 3 per patient, plus one under the duplicate | UTF-8, `,`, quoted sigs |
//! | `lab_results.csv` | 2 to 4 per encounter, plus an orphan | UTF-8, `,` |
//! | `vitals.csv` | 1 or 2 sets per encounter, 3 for the first | UTF-8, `,` |
//! | `notes.csv` + `notes/*.txt` + `scans/*` | up to 5 notes, up to 4 scans and a bad scan | UTF-8, `,`, quoted titles |
//!
//! Planted defects, each listed with its file, line and key in
//! `sample-manifest.toml` (written beside the export, not part of it):
//!
//! - `encoding`: `patients.csv` is Windows-1252 with accented names (José,
//!   Zoë, Müller, Françoise...), not UTF-8.
//! - `delimiter`: `problems.csv` is separated by semicolons.
//! - `bom`: `encounters.csv` starts with a UTF-8 byte-order mark.
//! - `date-formats`: birth dates are `MM/DD/YYYY`, encounter dates
//!   `YYYY-MM-DD`, and lab collection and problem onset dates mix both
//!   formats in one column.
//! - `unmapped-code`: local codes without a standard mapping: lab test
//!   `XLAB-9` and problem codes with system `LOCAL` (`LOC-...`).
//! - `free-text-medication`: medications with no code, a drug name only.
//! - `unit-variant`: lab units spelt `mg/dl` as well as `mg/dL`.
//! - `duplicate-patient`: the second patient again under a new key and
//!   record number, with a typo in the given name, and a medication recorded
//!   under that duplicate chart: patient matching merges it (its medication
//!   then refers to the second patient).
//! - `near-duplicate-patient`: the first patient's name and sex again under a
//!   new key, with the day and month of the birth date transposed and
//!   another address and phone: a pair for human review, not merged.
//! - `entered-in-error`: a problem whose status is `E` (entered in error in
//!   the legacy system): excluded by the `legacy-csv` preset's rule.
//! - `orphan`: a lab result whose patient key exists nowhere.
//! - `impossible-vital`: a temperature of 986 °F (98.6 typed without its
//!   decimal point).
//! - `blank-required`: an encounter whose visit date is empty.
//! - `several-allergies`: the first patient has three allergies.
//! - `several-vitals-sets`: the first encounter has three vitals sets (and
//!   others two): an import that keeps only the first loses data.
//! - `document-mismatch`: a scan named `.pdf` whose content is a PNG image
//!   (the other scans, a PDF, a PNG, a TIFF and a JPEG, are good).

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleOptions {
    /// Number of distinct patients (at least 2; the duplicate is extra).
    pub patients: usize,
    /// Seed of every draw.
    pub seed: u64,
}

/// One planted defect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defect {
    /// Kind (`orphan`, `duplicate-patient`, ...; see the module docs).
    pub kind: &'static str,
    /// File name within the export.
    pub file: String,
    /// 1-based line of the row (0: the whole file).
    pub line: u64,
    /// The row's key, when one applies.
    pub key: String,
    /// The column at fault, when one applies.
    pub column: String,
    /// In words.
    pub detail: String,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleReport {
    /// Data rows (header excluded) per file.
    pub rows: BTreeMap<String, u64>,
    /// The planted defects.
    pub defects: Vec<Defect>,
    /// Every file written, relative to the output folder.
    pub files: Vec<PathBuf>,
}

/// The manifest's file name.
pub const MANIFEST: &str = "sample-manifest.toml";

/// Accented and plain names, all representable in Windows-1252.
const GIVEN_F: &[&str] = &[
    "Zoë",
    "Renée",
    "Françoise",
    "Inés",
    "María",
    "Ana",
    "Chloé",
    "Mary",
    "Linda",
    "Susan",
    "Karen",
    "Emily",
    "Grace",
    "Hannah",
    "Olivia",
    "Sofía",
];
const GIVEN_M: &[&str] = &[
    "José",
    "André",
    "Jürgen",
    "François",
    "Raúl",
    "Jesús",
    "Noël",
    "James",
    "Robert",
    "Michael",
    "David",
    "William",
    "Thomas",
    "Daniel",
    "Mark",
    "Ángel",
];
const FAMILY: &[&str] = &[
    "Müller",
    "García",
    "Peña",
    "Côté",
    "Lefèvre",
    "Björk",
    "Schröder",
    "Núñez",
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Wilson",
    "Taylor",
    "O'Brien",
    "Martínez",
    "Dubois",
];
const STREETS: &[&str] = &["Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Elm St", "Pine Rd", "Lake Shore Dr"];
const CITIES: &[(&str, &str, &str)] =
    &[("Springfield", "IL", "627"), ("Madison", "WI", "537"), ("Peoria", "IL", "616"), ("Rochester", "MN", "559")];
const PROVIDERS: &[&str] = &["Dr. A. Whitfield", "Dr. R. Okafor", "Dr. L. Nguyễn", "N.P. K. Jansen"];
const VISIT_TYPES: &[(&str, &str)] = &[
    ("OV", "Follow-up"),
    ("OV", "Annual physical"),
    ("ER", "Chest pain"),
    ("TEL", "Medication refill"),
    ("HV", "Wound check"),
];
const PROBLEMS: &[(&str, &str, &str)] = &[
    ("E11.9", "ICD10", "Type 2 diabetes mellitus without complications"),
    ("I10", "ICD10", "Essential (primary) hypertension"),
    ("E78.5", "ICD10", "Hyperlipidemia, unspecified"),
    ("J45.909", "ICD10", "Unspecified asthma, uncomplicated"),
    ("M54.5", "ICD10", "Low back pain"),
    ("F41.1", "ICD10", "Generalized anxiety disorder"),
];
const LOCAL_PROBLEMS: &[(&str, &str)] = &[("LOC-77", "Chronic fatigue (clinic code)"), ("LOC-12", "Frequent flyer")];
const ALLERGENS: &[(&str, &str, &str)] = &[
    ("Penicillin", "ALG-PCN", "Hives"),
    ("Sulfa drugs", "ALG-SULFA", "Rash"),
    ("Peanuts", "ALG-PNT", "Anaphylaxis"),
    ("Latex", "ALG-LTX", "Contact dermatitis"),
    ("Aspirin", "ALG-ASA", "Wheezing"),
];
const SEVERITIES: &[&str] = &["MILD", "MOD", "SEV"];
const DRUGS: &[(&str, &str, &str)] = &[
    ("F1001", "Metformin 500 MG Oral Tablet", "1 tab by mouth twice daily, with meals"),
    ("F1002", "Lisinopril 10 MG Oral Tablet", "1 tab daily"),
    ("F1003", "Atorvastatin 20 MG Oral Tablet", "1 tab at bedtime"),
    ("F1004", "Amlodipine 5 MG Oral Tablet", "1 tab daily"),
    ("F1005", "Omeprazole 20 MG Delayed Release Capsule", "1 cap before breakfast"),
    ("F1006", "Albuterol 90 MCG/ACTUATION Inhaler", "2 puffs q4-6h prn wheeze, \"as needed\""),
];
const FREE_TEXT_DRUGS: &[(&str, &str)] =
    &[("fish oil 1000mg", "1 daily"), ("vit D 2000 units", "1 po qd"), ("tylenol ES prn", "2 tabs q6h PRN pain")];
/// Local code, name, units (the first spelling is the usual one), low, high.
const LABS: &[(&str, &str, &[&str], f64, f64)] = &[
    ("GLU", "Glucose, fasting", &["mg/dL", "mg/dl"], 70.0, 180.0),
    ("A1C", "Hemoglobin A1c", &["%"], 4.8, 9.5),
    ("CHOL", "Cholesterol, total", &["mg/dL", "mg/dl", "MG/DL"], 140.0, 280.0),
    ("CREAT", "Creatinine", &["mg/dL", "mg/dl"], 0.5, 1.6),
    ("K", "Potassium", &["mmol/L", "mEq/L"], 3.3, 5.4),
    ("HGB", "Hemoglobin", &["g/dL", "g/dl"], 10.5, 17.0),
    ("TSH", "TSH", &["uIU/mL"], 0.3, 6.0),
];
const NOTE_TYPES: &[(&str, &str)] =
    &[("PROG", "Progress note"), ("HP", "History and physical"), ("PHONE", "Phone call")];

/// A table being written: header, rows, and the line of the next row.
struct Table {
    file: &'static str,
    delimiter: char,
    text: String,
    rows: u64,
}

impl Table {
    fn new(file: &'static str, delimiter: char, header: &[&str]) -> Self {
        let mut t = Self { file, delimiter, text: String::new(), rows: 0 };
        t.text.push_str(&header.join(&delimiter.to_string()));
        t.text.push_str("\r\n");
        t
    }

    /// Appends a row (quoting fields as needed); returns its line.
    fn row(&mut self, fields: &[&str]) -> u64 {
        let mut first = true;
        for field in fields {
            if !first {
                self.text.push(self.delimiter);
            }
            first = false;
            if field.contains(self.delimiter) || field.contains('"') || field.contains('\n') {
                self.text.push('"');
                self.text.push_str(&field.replace('"', "\"\""));
                self.text.push('"');
            } else {
                self.text.push_str(field);
            }
        }
        self.text.push_str("\r\n");
        self.rows += 1;
        self.rows + 1
    }
}

struct Date {
    y: i32,
    m: u32,
    d: u32,
}

impl Date {
    fn draw(rng: &mut Xoshiro256PlusPlus, years: std::ops::Range<i32>) -> Self {
        Self { y: rng.random_range(years), m: rng.random_range(1..=12), d: rng.random_range(1..=28) }
    }
    fn us(&self) -> String {
        format!("{:02}/{:02}/{:04}", self.m, self.d, self.y)
    }
    fn iso(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.y, self.m, self.d)
    }
    /// Either format, as a legacy column that was fed by two systems.
    fn mixed(&self, rng: &mut Xoshiro256PlusPlus) -> String {
        if rng.random_bool(0.5) { self.us() } else { self.iso() }
    }
}

/// The first year a patient born on `birth` (`MM/DD/YYYY`) can have a dated
/// record in, from `from` on: the year after their birth at the earliest
/// (a date before birth would be a defect, and the planted ones are listed).
fn after(birth: &str, from: i32) -> i32 {
    birth.get(6..10).and_then(|y| y.parse::<i32>().ok()).map_or(from, |y| from.max(y + 1))
}

fn pick<'a, T>(rng: &mut Xoshiro256PlusPlus, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Swaps two inner letters: the typo of the duplicate patient.
fn typo(name: &str) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    if chars.len() >= 3 {
        chars.swap(1, 2);
    } else {
        chars.push('e');
    }
    let typo: String = chars.into_iter().collect();
    if typo == name { format!("{name}h") } else { typo }
}

#[derive(Clone)]
struct Patient {
    id: String,
    mrn: String,
    last: String,
    first: String,
    birth: String,
    sex: &'static str,
    address: String,
    city: &'static str,
    state: &'static str,
    zip: String,
    phone: String,
}

impl Patient {
    fn fields(&self) -> [&str; 11] {
        [
            &self.id,
            &self.mrn,
            &self.last,
            &self.first,
            &self.birth,
            self.sex,
            &self.address,
            self.city,
            self.state,
            &self.zip,
            &self.phone,
        ]
    }
}

/// Generates the export in memory: file name to bytes, and the report.
pub fn generate(options: &SampleOptions) -> Result<(BTreeMap<String, Vec<u8>>, SampleReport), String> {
    if options.patients < 2 {
        return Err("the sample needs at least 2 patients (to plant a duplicate)".into());
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(options.seed ^ 0x006d_6967_7261_7465);
    let mut report = SampleReport::default();
    let mut defect = |kind: &'static str, file: &str, line: u64, key: &str, column: &str, detail: String| {
        report.defects.push(Defect { kind, file: file.into(), line, key: key.into(), column: column.into(), detail });
    };

    let mut patients_t = Table::new(
        "patients.csv",
        ',',
        &[
            "patient_id",
            "mrn",
            "last_name",
            "first_name",
            "birth_date",
            "sex",
            "address",
            "city",
            "state",
            "zip",
            "phone",
        ],
    );
    let mut encounters_t = Table::new(
        "encounters.csv",
        ',',
        &["encounter_id", "patient_id", "visit_date", "visit_type", "provider", "reason"],
    );
    let mut problems_t = Table::new(
        "problems.csv",
        ';',
        &["problem_id", "patient_id", "dx_code", "dx_system", "description", "onset_date", "status"],
    );
    let mut allergies_t = Table::new(
        "allergies.csv",
        ',',
        &["allergy_id", "patient_id", "allergen", "allergen_code", "reaction", "severity", "noted_date"],
    );
    let mut medications_t = Table::new(
        "medications.csv",
        ',',
        &["med_id", "patient_id", "drug_code", "drug_name", "sig", "start_date", "stop_date", "status"],
    );
    let mut labs_t = Table::new(
        "lab_results.csv",
        ',',
        &[
            "result_id",
            "patient_id",
            "encounter_id",
            "test_code",
            "test_name",
            "result_value",
            "units",
            "ref_range",
            "abnormal_flag",
            "collected_date",
        ],
    );
    let mut vitals_t = Table::new(
        "vitals.csv",
        ',',
        &[
            "vitals_id",
            "encounter_id",
            "patient_id",
            "taken_at",
            "bp_systolic",
            "bp_diastolic",
            "pulse",
            "resp_rate",
            "temp_f",
            "weight_lb",
            "height_in",
        ],
    );
    let mut notes_t =
        Table::new("notes.csv", ',', &["note_id", "patient_id", "note_date", "note_type", "author", "title", "file"]);
    let mut note_files: Vec<(String, String)> = Vec::new();
    let mut scan_files: Vec<Vec<u8>> = Vec::new();

    let (mut n_enc, mut n_prob, mut n_all, mut n_med, mut n_lab, mut n_vit) = (0u32, 0u32, 0u32, 0u32, 0u32, 0u32);
    let mut mixed_dates = (false, false);
    let mut second_patient: Option<Patient> = None;
    let mut first_patient: Option<Patient> = None;
    for p in 0..options.patients {
        let female = rng.random_bool(0.5);
        let (city, state, zip3) = *pick(&mut rng, CITIES);
        let patient = Patient {
            id: format!("P{:05}", p + 1),
            mrn: format!("{:07}", 1_000_000 + rng.random_range(0..9_000_000u32)),
            last: (*pick(&mut rng, FAMILY)).to_owned(),
            first: (*pick(&mut rng, if female { GIVEN_F } else { GIVEN_M })).to_owned(),
            birth: Date::draw(&mut rng, 1935..2015).us(),
            sex: if female { "F" } else { "M" },
            address: if rng.random_bool(0.2) {
                format!("{} {}, Apt {}", rng.random_range(1..9999), pick(&mut rng, STREETS), rng.random_range(1..40))
            } else {
                format!("{} {}", rng.random_range(1..9999), pick(&mut rng, STREETS))
            },
            city,
            state,
            zip: format!("{zip3}{:02}", rng.random_range(1..99)),
            phone: format!("({}) 555-01{:02}", 200 + rng.random_range(0..700), rng.random_range(0..100)),
        };
        // Record numbers are unique in the legacy system: the drawn prefix,
        // then the patient's position.
        let patient = Patient { mrn: format!("{}{:05}", &patient.mrn[..2], p + 1), ..patient };
        // The first patient's birth day is at most 12 and not its month, so
        // the near duplicate can transpose them.
        let patient = if p == 0 {
            let (m, d) = (patient.birth[0..2].to_owned(), patient.birth[3..5].to_owned());
            let (mm, dd) = (m.parse::<u32>().unwrap_or(1), d.parse::<u32>().unwrap_or(1));
            let day = if dd <= 12 && dd != mm { dd } else { mm % 12 + 1 };
            let birth = format!("{m}/{day:02}/{}", &patient.birth[6..10]);
            Patient { first: "José".into(), last: "Müller".into(), birth, ..patient }
        } else {
            patient
        };
        let line = patients_t.row(&patient.fields());
        if p == 0 {
            defect(
                "encoding",
                patients_t.file,
                line,
                &patient.id,
                "first_name",
                "Windows-1252 file with accented names (José Müller)".into(),
            );
        }

        // Problems.
        for k in 0..rng.random_range(1..=3) {
            n_prob += 1;
            let id = format!("DX{n_prob:06}");
            let onset = Date::draw(&mut rng, after(&patient.birth, 2005)..2024);
            let onset = if k == 0 && p < 2 {
                // Both formats are present whatever the draws.
                if p == 0 { onset.us() } else { onset.iso() }
            } else {
                onset.mixed(&mut rng)
            };
            let status = *pick(&mut rng, &["A", "A", "R", "I"]);
            if p == 1 && k == 0 {
                let (code, text) = LOCAL_PROBLEMS[0];
                let line = problems_t.row(&[&id, &patient.id, code, "LOCAL", text, &onset, status]);
                defect(
                    "unmapped-code",
                    problems_t.file,
                    line,
                    &id,
                    "dx_code",
                    format!("local diagnosis code {code} without a standard mapping"),
                );
            } else if rng.random_bool(0.1) {
                let (code, text) = *pick(&mut rng, LOCAL_PROBLEMS);
                problems_t.row(&[&id, &patient.id, code, "LOCAL", text, &onset, status]);
            } else {
                let (code, system, text) = *pick(&mut rng, PROBLEMS);
                problems_t.row(&[&id, &patient.id, code, system, text, &onset, status]);
            }
        }

        // Allergies: three for the first patient.
        let allergy_count = if p == 0 { 3 } else { rng.random_range(0..=2) };
        let first_allergy = rng.random_range(0..ALLERGENS.len());
        for k in 0..allergy_count {
            n_all += 1;
            let id = format!("AL{n_all:06}");
            let (name, code, reaction) = ALLERGENS[(first_allergy + k) % ALLERGENS.len()];
            let noted = Date::draw(&mut rng, after(&patient.birth, 2000)..2024).us();
            let line = allergies_t.row(&[&id, &patient.id, name, code, reaction, *pick(&mut rng, SEVERITIES), &noted]);
            if p == 0 && k == 0 {
                defect(
                    "several-allergies",
                    allergies_t.file,
                    line,
                    &patient.id,
                    "patient_id",
                    "this patient has three allergies: all must be kept".into(),
                );
            }
        }

        // Medications, some as free text only.
        for k in 0..rng.random_range(1..=3) {
            n_med += 1;
            let id = format!("RX{n_med:06}");
            let start = Date::draw(&mut rng, after(&patient.birth, 2010)..2024);
            let stop = if rng.random_bool(0.3) { Date::draw(&mut rng, 2024..2026).iso() } else { String::new() };
            let status = if stop.is_empty() { "ACTIVE" } else { "DC" };
            if (p == 0 && k == 0) || rng.random_bool(0.15) {
                let (name, sig) = *pick(&mut rng, FREE_TEXT_DRUGS);
                let line = medications_t.row(&[&id, &patient.id, "", name, sig, &start.us(), &stop, status]);
                if p == 0 && k == 0 {
                    defect(
                        "free-text-medication",
                        medications_t.file,
                        line,
                        &id,
                        "drug_code",
                        format!("no code, only the name {name:?}"),
                    );
                }
            } else {
                let (code, name, sig) = *pick(&mut rng, DRUGS);
                medications_t.row(&[&id, &patient.id, code, name, sig, &start.us(), &stop, status]);
            }
        }

        // Encounters with their vitals and labs.
        for e in 0..rng.random_range(2..=4) {
            n_enc += 1;
            let enc_id = format!("E{n_enc:07}");
            let date = Date::draw(&mut rng, 2018..2026);
            let (visit_type, reason) = *pick(&mut rng, VISIT_TYPES);
            let provider = *pick(&mut rng, PROVIDERS);
            let blank = p == 1 && e == 1;
            let visit_date = if blank { String::new() } else { date.iso() };
            let line = encounters_t.row(&[&enc_id, &patient.id, &visit_date, visit_type, provider, reason]);
            if blank {
                defect(
                    "blank-required",
                    encounters_t.file,
                    line,
                    &enc_id,
                    "visit_date",
                    "the required visit date is empty".into(),
                );
            }

            let sets = if p == 0 && e == 0 { 3 } else { rng.random_range(1..=2) };
            for s in 0..sets {
                n_vit += 1;
                let id = format!("V{n_vit:07}");
                let taken =
                    format!("{} {:02}:{:02}", date.iso(), 8 + rng.random_range(0..9) + s, rng.random_range(0..60));
                let systolic = rng.random_range(100..165).to_string();
                let diastolic = rng.random_range(60..100).to_string();
                let pulse = rng.random_range(55..105).to_string();
                let resp = rng.random_range(12..21).to_string();
                let impossible = p == 1 && e == 0 && s == 0;
                let temp = if impossible {
                    "986".to_owned()
                } else {
                    format!("{:.1}", rng.random_range(970..1004) as f64 / 10.0)
                };
                let weight = format!("{:.1}", rng.random_range(900..2600) as f64 / 10.0);
                let height = rng.random_range(58..76).to_string();
                let line = vitals_t.row(&[
                    &id,
                    &enc_id,
                    &patient.id,
                    &taken,
                    &systolic,
                    &diastolic,
                    &pulse,
                    &resp,
                    &temp,
                    &weight,
                    &height,
                ]);
                if impossible {
                    defect(
                        "impossible-vital",
                        vitals_t.file,
                        line,
                        &id,
                        "temp_f",
                        "temperature 986 °F (98.6 without its decimal point)".into(),
                    );
                }
                if p == 0 && e == 0 && s == 0 {
                    defect(
                        "several-vitals-sets",
                        vitals_t.file,
                        line,
                        &enc_id,
                        "encounter_id",
                        "three vitals sets for one encounter: all must be kept".into(),
                    );
                }
            }

            for _ in 0..rng.random_range(2..=4) {
                n_lab += 1;
                let id = format!("L{n_lab:07}");
                // The first two results are glucose in both spellings of its
                // unit; the others are drawn.
                let (code, name, units, low, high) = if n_lab <= 2 { LABS[0] } else { *pick(&mut rng, LABS) };
                let value = low + (high - low) * rng.random_range(0..1000) as f64 / 1000.0;
                let value = if high < 20.0 { format!("{value:.1}") } else { format!("{value:.0}") };
                let unit = match n_lab {
                    1 => "mg/dl",
                    2 => "mg/dL",
                    _ => *pick(&mut rng, units),
                };
                let flag = if rng.random_bool(0.2) { "H" } else { "" };
                let collected = match (mixed_dates, rng.random_bool(0.5)) {
                    ((false, _), _) => {
                        mixed_dates.0 = true;
                        date.us()
                    }
                    ((true, false), _) => {
                        mixed_dates.1 = true;
                        date.iso()
                    }
                    (_, true) => date.us(),
                    (_, false) => date.iso(),
                };
                let range = format!("{low}-{high}");
                let line = labs_t.row(&[&id, &patient.id, &enc_id, code, name, &value, unit, &range, flag, &collected]);
                if n_lab == 1 {
                    defect(
                        "unit-variant",
                        labs_t.file,
                        line,
                        &id,
                        "units",
                        "mg/dl where the rest of the export says mg/dL".into(),
                    );
                }
            }
        }

        // A few notes, for the first patients.
        if p < 5 {
            let id = format!("N{:04}", p + 1);
            let (kind, kind_name) = NOTE_TYPES[p % NOTE_TYPES.len()];
            let date = Date::draw(&mut rng, 2019..2026).iso();
            let file = format!("notes/{id}.txt");
            let author = *pick(&mut rng, PROVIDERS);
            let title = format!("{kind_name}, {} {}", patient.first, patient.last);
            notes_t.row(&[&id, &patient.id, &date, kind, author, &title, &file]);
            let body = format!(
                "{kind_name}\r\nDate: {date}\r\nAuthor: {author}\r\n\r\nPatient seen for follow-up. Reports feeling \"much better\".\r\nPlan: continue current medications; recheck in 3 months.\r\n"
            );
            note_files.push((file, body));
        }

        if p == 0 {
            first_patient = Some(patient.clone());
        }
        if p == 1 {
            second_patient = Some(patient);
        }
    }

    // Scanned documents (no draw from the generator, so the rest of the
    // export is the same as before they existed), then one whose content is
    // not what its name says.
    type Scan = (&'static str, fn(usize) -> Vec<u8>);
    let scans: [Scan; 4] = [
        ("pdf", |i| crate::documents::tiny::pdf(&format!("Scanned referral letter {i}"))),
        ("png", |i| crate::documents::tiny::png(40 * i as u8)),
        ("tif", |i| crate::documents::tiny::tiff(50 * i as u8)),
        ("jpg", |i| crate::documents::tiny::jpeg(&format!("scan {i}"))),
    ];
    let n_scans = scans.len().min(options.patients - 1);
    for i in 0..=n_scans {
        let (ext, make) = scans[i % scans.len()];
        let id = format!("S{:04}", i + 1);
        let patient = format!("P{:05}", (i % n_scans) + 1);
        let date = format!("2025-0{}-1{}", i + 1, i);
        let bad = i == n_scans;
        let file = if bad { format!("scans/{id}.pdf") } else { format!("scans/{id}.{ext}") };
        let bytes = if bad { crate::documents::tiny::png(255) } else { make(i + 1) };
        let line = notes_t.row(&[&id, &patient, &date, "HP", "Dr. R. Okafor", "Scanned outside record", &file]);
        if bad {
            defect("document-mismatch", notes_t.file, line, &id, "file", format!("{file} holds a PNG image"));
        }
        note_files.push((file, String::new()));
        scan_files.push(bytes);
    }

    // The orphan: a lab result for a patient key that does not exist.
    n_lab += 1;
    let orphan_id = format!("L{n_lab:07}");
    let orphan_patient = format!("P{:05}", options.patients + 9000);
    let line = labs_t.row(&[
        &orphan_id,
        &orphan_patient,
        "",
        "XLAB-9",
        "SEND-OUT MISC",
        "positive",
        "",
        "",
        "A",
        &Date::draw(&mut rng, 2019..2025).us(),
    ]);
    defect(
        "orphan",
        labs_t.file,
        line,
        &orphan_id,
        "patient_id",
        format!("patient key {orphan_patient} does not exist"),
    );
    defect(
        "unmapped-code",
        labs_t.file,
        line,
        &orphan_id,
        "test_code",
        "local lab code XLAB-9 without a standard mapping".into(),
    );

    // The duplicate: patient 2 again, new key and MRN, typo in the given name.
    if let Some(original) = second_patient {
        let duplicate = Patient {
            id: format!("P{:05}", options.patients + 1),
            mrn: format!("{}{:05}", 10 + rng.random_range(0..90u32), options.patients + 1),
            first: typo(&original.first),
            ..original
        };
        let line = patients_t.row(&duplicate.fields());
        // A prescription recorded under the duplicate chart: after the merge
        // it must refer to the original patient, not be lost.
        n_med += 1;
        let med_id = format!("RX{n_med:06}");
        let (code, name, sig) = *pick(&mut rng, DRUGS);
        let start = Date::draw(&mut rng, after(&duplicate.birth, 2015)..2025).us();
        let med_line = medications_t.row(&[&med_id, &duplicate.id, code, name, sig, &start, "", "ACTIVE"]);
        defect(
            "duplicate-patient",
            patients_t.file,
            line,
            &duplicate.id,
            "first_name",
            format!(
                "same person as {} (given name {:?} typed {:?}); medication {med_id} at {}:{med_line} is recorded under the duplicate",
                original.id, original.first, duplicate.first, medications_t.file
            ),
        );
    }

    // The near duplicate: the first patient's name and sex, the birth date's
    // day and month transposed, another address and phone.
    if let Some(original) = first_patient {
        // The first patient's day is at most 12 and not its month.
        let (m, d, y) = (&original.birth[0..2], &original.birth[3..5], &original.birth[6..10]);
        let birth = format!("{d}/{m}/{y}");
        let (city, state, zip3) = *CITIES.iter().find(|c| c.0 != original.city).unwrap_or(&CITIES[0]);
        let near = Patient {
            id: format!("P{:05}", options.patients + 2),
            mrn: format!("{}{:05}", 10 + rng.random_range(0..90u32), options.patients + 2),
            birth: birth.clone(),
            address: format!("{} {}", 10_000 + rng.random_range(0..9000), pick(&mut rng, STREETS)),
            city,
            state,
            zip: format!("{zip3}{:02}", rng.random_range(1..99)),
            phone: format!("({}) 555-02{:02}", 200 + rng.random_range(0..700), rng.random_range(0..100)),
            ..original.clone()
        };
        let line = patients_t.row(&near.fields());
        defect(
            "near-duplicate-patient",
            patients_t.file,
            line,
            &near.id,
            "birth_date",
            format!(
                "the name and sex of {} with the birth date {} (day and month transposed) and another address and phone: for review, not merged",
                original.id, near.birth
            ),
        );
    }

    // A problem entered in error in the legacy system: excluded by rule.
    n_prob += 1;
    let eie_id = format!("DX{n_prob:06}");
    let (code, system, text) = PROBLEMS[1];
    let line = problems_t.row(&[&eie_id, "P00001", code, system, text, &Date::draw(&mut rng, 2020..2024).iso(), "E"]);
    defect(
        "entered-in-error",
        problems_t.file,
        line,
        &eie_id,
        "status",
        "status E: entered in error in the legacy system, excluded by the mapping's rule".into(),
    );

    defect("delimiter", problems_t.file, 0, "", "", "semicolon-separated".into());
    defect("bom", encounters_t.file, 0, "", "", "UTF-8 with a byte-order mark".into());
    defect("date-formats", labs_t.file, 0, "", "collected_date", "MM/DD/YYYY and YYYY-MM-DD in the same column".into());

    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for table in [&problems_t, &allergies_t, &medications_t, &labs_t, &vitals_t, &notes_t] {
        files.insert(table.file.into(), table.text.clone().into_bytes());
    }
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&patients_t.text);
    if unmappable {
        return Err("a patient name cannot be written in Windows-1252".into());
    }
    files.insert(patients_t.file.into(), bytes.into_owned());
    let mut with_bom = vec![0xEF, 0xBB, 0xBF];
    with_bom.extend_from_slice(encounters_t.text.as_bytes());
    files.insert(encounters_t.file.into(), with_bom);
    let mut scan_files = scan_files.into_iter();
    for (file, body) in note_files {
        let bytes = if file.starts_with("scans/") { scan_files.next().unwrap_or_default() } else { body.into_bytes() };
        files.insert(file, bytes);
    }
    for table in [&patients_t, &encounters_t, &problems_t, &allergies_t, &medications_t, &labs_t, &vitals_t, &notes_t] {
        report.rows.insert(table.file.into(), table.rows);
    }
    report.files = files.keys().map(PathBuf::from).collect();
    Ok((files, report))
}

/// Writes the export into `out` (created if needed) and the manifest beside
/// the files.
pub fn write(out: &Path, options: &SampleOptions) -> Result<SampleReport, String> {
    let (files, mut report) = generate(options)?;
    for (name, bytes) in &files {
        let path = out.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let manifest = out.join(MANIFEST);
    std::fs::write(&manifest, render_manifest(options, &report))
        .map_err(|e| format!("cannot write {}: {e}", manifest.display()))?;
    report.files.push(PathBuf::from(MANIFEST));
    Ok(report)
}

fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The manifest: rows per file and every planted defect (TOML).
pub fn render_manifest(options: &SampleOptions, report: &SampleReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Written by `hearth migrate sample`: what the export holds and which defects were planted.");
    let _ = writeln!(s, "# Not part of the export itself.");
    let _ = writeln!(s, "patients = {}\nseed = {}\n\n[rows]", options.patients, options.seed);
    for (file, rows) in &report.rows {
        let _ = writeln!(s, "{} = {rows}", quoted(file));
    }
    for d in &report.defects {
        let _ = writeln!(
            s,
            "\n[[defects]]\nkind = {}\nfile = {}\nline = {}\nkey = {}\ncolumn = {}\ndetail = {}",
            quoted(d.kind),
            quoted(&d.file),
            d.line,
            quoted(&d.key),
            quoted(&d.column),
            quoted(&d.detail)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(patients: usize, seed: u64) -> SampleOptions {
        SampleOptions { patients, seed }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let a = generate(&opts(20, 7)).expect("a");
        let b = generate(&opts(20, 7)).expect("b");
        assert_eq!(a, b);
        let c = generate(&opts(20, 8)).expect("c");
        assert_ne!(a.0, c.0);
    }

    #[test]
    fn every_kind_of_defect_is_planted() {
        let (files, report) = generate(&opts(10, 1)).expect("sample");
        let kinds: std::collections::BTreeSet<&str> = report.defects.iter().map(|d| d.kind).collect();
        for kind in [
            "encoding",
            "delimiter",
            "bom",
            "date-formats",
            "unmapped-code",
            "free-text-medication",
            "unit-variant",
            "duplicate-patient",
            "near-duplicate-patient",
            "entered-in-error",
            "orphan",
            "impossible-vital",
            "blank-required",
            "several-allergies",
            "several-vitals-sets",
            "document-mismatch",
        ] {
            assert!(kinds.contains(kind), "no {kind} defect");
        }
        // Windows-1252: é is the single byte 0xE9, and the file is not UTF-8.
        let patients = &files["patients.csv"];
        assert!(std::str::from_utf8(patients).is_err());
        assert!(patients.windows(4).any(|w| w == b"Jos\xe9"));
        assert!(files["encounters.csv"].starts_with(&[0xEF, 0xBB, 0xBF]));
        let problems = String::from_utf8(files["problems.csv"].clone()).expect("utf-8");
        assert!(problems.starts_with("problem_id;patient_id;"));
        let labs = String::from_utf8(files["lab_results.csv"].clone()).expect("utf-8");
        assert!(labs.contains(",mg/dl,") && labs.contains(",mg/dL,"));
        assert_eq!(report.rows["patients.csv"], 12, "ten patients, the duplicate and the near duplicate");
        assert!(files.keys().any(|f| f.starts_with("notes/") && f.ends_with(".txt")));
    }

    #[test]
    fn too_few_patients_is_an_error() {
        assert!(generate(&opts(1, 1)).is_err());
    }

    #[test]
    fn record_numbers_are_unique_and_the_near_duplicate_transposes_the_birth_date() {
        for seed in 0..20 {
            let (files, report) = generate(&opts(30, seed)).expect("sample");
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(&files["patients.csv"]);
            let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
            let mrns: std::collections::HashSet<&str> = rows.iter().map(|r| r[1]).collect();
            assert_eq!(mrns.len(), rows.len(), "seed {seed}");
            let near = report.defects.iter().find(|d| d.kind == "near-duplicate-patient").expect("near");
            let near = &rows[near.line as usize - 2];
            let (a, b) = (rows[0][4], near[4]);
            assert_eq!((&a[0..2], &a[3..5], &a[6..]), (&b[3..5], &b[0..2], &b[6..]), "seed {seed}");
            assert_ne!(a, b, "seed {seed}");
        }
    }

    #[test]
    fn typos_always_change_the_name() {
        assert_eq!(typo("Zoë"), "Zëo");
        assert_ne!(typo("Anna"), "Anna");
        assert_ne!(typo("Jo"), "Jo");
        assert_ne!(typo("Aaa"), "Aaa");
    }
}
