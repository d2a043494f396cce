//! `hearth migrate sample --layout synthea-csv`: a seeded export in the
//! layout of Synthea's CSV exporter (the 17 files the `synthea-csv` preset
//! maps), with Synthea-like history, for rehearsals, tests and the
//! migration benchmark. The same seed and patient count give the same bytes.
//!
//! The headers are those of Synthea 3.x ([`HEADERS`]); values are written as
//! Synthea writes them: UUID keys, dates `YYYY-MM-DD`, date-times in UTC
//! `YYYY-MM-DDThh:mm:ssZ`, text with commas and line breaks replaced by
//! spaces (Synthea's exporter does not quote), SNOMED CT conditions,
//! procedures, care plans, devices and supplies, LOINC observations with
//! UCUM units (`TYPE` `numeric` or `text`), RxNorm medications, CVX
//! immunizations, DICOM modalities and SOP classes.
//!
//! History per patient: the last 15 years (2011 to 2025) of life, as
//! Synthea exports by default a bounded history: a yearly wellness visit
//! (vital signs, lab panels for adults, screening surveys, procedures,
//! vaccines), chronic conditions with a care plan and a medication renewed
//! yearly, follow-up visits, acute illnesses at symptom visits (with
//! medication, sometimes an imaging study), allergies, a glucose meter and
//! test strips for diabetics, a claim per encounter and per medication, and
//! the payer history. About 1,000 rows per patient, most of them
//! observations. Rows are streamed to the files: memory does not grow with
//! the patient count.
//!
//! Not written: `claims_transactions.csv` and `patient_expenses.csv`
//! (billing detail the preset does not map), and Synthea's yearly QALY, DALY
//! and QOLS observations (codes outside LOINC: a real export's are kept as
//! local codes and reported by the dry run).

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use time::{Date, Duration, Month, PrimitiveDateTime, Time};

/// The 17 files and their header rows, in the order of the Synthea CSV
/// export. Source: Synthea's `CSVExporter` (synthetichealth/synthea, 3.x)
/// and the Synthea wiki's "CSV File Data Dictionary" (3.x renamed the
/// payer transitions' `START_YEAR`, `END_YEAR`, `OWNERSHIP` and `OWNERNAME`
/// to `START_DATE`, `END_DATE`, `PLAN_OWNERSHIP` and `OWNER_NAME`).
pub const HEADERS: [(&str, &[&str]); 17] = [
    (
        "patients.csv",
        &[
            "Id",
            "BIRTHDATE",
            "DEATHDATE",
            "SSN",
            "DRIVERS",
            "PASSPORT",
            "PREFIX",
            "FIRST",
            "MIDDLE",
            "LAST",
            "SUFFIX",
            "MAIDEN",
            "MARITAL",
            "RACE",
            "ETHNICITY",
            "GENDER",
            "BIRTHPLACE",
            "ADDRESS",
            "CITY",
            "STATE",
            "COUNTY",
            "FIPS",
            "ZIP",
            "LAT",
            "LON",
            "HEALTHCARE_EXPENSES",
            "HEALTHCARE_COVERAGE",
            "INCOME",
        ],
    ),
    (
        "encounters.csv",
        &[
            "Id",
            "START",
            "STOP",
            "PATIENT",
            "ORGANIZATION",
            "PROVIDER",
            "PAYER",
            "ENCOUNTERCLASS",
            "CODE",
            "DESCRIPTION",
            "BASE_ENCOUNTER_COST",
            "TOTAL_CLAIM_COST",
            "PAYER_COVERAGE",
            "REASONCODE",
            "REASONDESCRIPTION",
        ],
    ),
    ("conditions.csv", &["START", "STOP", "PATIENT", "ENCOUNTER", "SYSTEM", "CODE", "DESCRIPTION"]),
    (
        "medications.csv",
        &[
            "START",
            "STOP",
            "PATIENT",
            "PAYER",
            "ENCOUNTER",
            "CODE",
            "DESCRIPTION",
            "BASE_COST",
            "PAYER_COVERAGE",
            "DISPENSES",
            "TOTALCOST",
            "REASONCODE",
            "REASONDESCRIPTION",
        ],
    ),
    (
        "allergies.csv",
        &[
            "START",
            "STOP",
            "PATIENT",
            "ENCOUNTER",
            "CODE",
            "SYSTEM",
            "DESCRIPTION",
            "TYPE",
            "CATEGORY",
            "REACTION1",
            "DESCRIPTION1",
            "SEVERITY1",
            "REACTION2",
            "DESCRIPTION2",
            "SEVERITY2",
        ],
    ),
    (
        "observations.csv",
        &["DATE", "PATIENT", "ENCOUNTER", "CATEGORY", "CODE", "DESCRIPTION", "VALUE", "UNITS", "TYPE"],
    ),
    ("immunizations.csv", &["DATE", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION", "BASE_COST"]),
    (
        "procedures.csv",
        &[
            "START",
            "STOP",
            "PATIENT",
            "ENCOUNTER",
            "SYSTEM",
            "CODE",
            "DESCRIPTION",
            "BASE_COST",
            "REASONCODE",
            "REASONDESCRIPTION",
        ],
    ),
    (
        "careplans.csv",
        &["Id", "START", "STOP", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION", "REASONCODE", "REASONDESCRIPTION"],
    ),
    (
        "imaging_studies.csv",
        &[
            "Id",
            "DATE",
            "PATIENT",
            "ENCOUNTER",
            "SERIES_UID",
            "BODYSITE_CODE",
            "BODYSITE_DESCRIPTION",
            "MODALITY_CODE",
            "MODALITY_DESCRIPTION",
            "INSTANCE_UID",
            "SOP_CODE",
            "SOP_DESCRIPTION",
            "PROCEDURE_CODE",
        ],
    ),
    ("devices.csv", &["START", "STOP", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION", "UDI"]),
    ("supplies.csv", &["DATE", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION", "QUANTITY"]),
    (
        "organizations.csv",
        &["Id", "NAME", "ADDRESS", "CITY", "STATE", "ZIP", "LAT", "LON", "PHONE", "REVENUE", "UTILIZATION"],
    ),
    (
        "providers.csv",
        &[
            "Id",
            "ORGANIZATION",
            "NAME",
            "GENDER",
            "SPECIALITY",
            "ADDRESS",
            "CITY",
            "STATE",
            "ZIP",
            "LAT",
            "LON",
            "ENCOUNTERS",
            "PROCEDURES",
        ],
    ),
    (
        "payers.csv",
        &[
            "Id",
            "NAME",
            "OWNERSHIP",
            "ADDRESS",
            "CITY",
            "STATE_HEADQUARTERED",
            "ZIP",
            "PHONE",
            "AMOUNT_COVERED",
            "AMOUNT_UNCOVERED",
            "REVENUE",
            "COVERED_ENCOUNTERS",
            "UNCOVERED_ENCOUNTERS",
            "COVERED_MEDICATIONS",
            "UNCOVERED_MEDICATIONS",
            "COVERED_PROCEDURES",
            "UNCOVERED_PROCEDURES",
            "COVERED_IMMUNIZATIONS",
            "UNCOVERED_IMMUNIZATIONS",
            "UNIQUE_CUSTOMERS",
            "QOLS_AVG",
            "MEMBER_MONTHS",
        ],
    ),
    (
        "payer_transitions.csv",
        &["PATIENT", "MEMBERID", "START_DATE", "END_DATE", "PAYER", "SECONDARY_PAYER", "PLAN_OWNERSHIP", "OWNER_NAME"],
    ),
    (
        "claims.csv",
        &[
            "Id",
            "PATIENTID",
            "PROVIDERID",
            "PRIMARYPATIENTINSURANCEID",
            "SECONDARYPATIENTINSURANCEID",
            "DEPARTMENTID",
            "PATIENTDEPARTMENTID",
            "DIAGNOSIS1",
            "DIAGNOSIS2",
            "DIAGNOSIS3",
            "DIAGNOSIS4",
            "DIAGNOSIS5",
            "DIAGNOSIS6",
            "DIAGNOSIS7",
            "DIAGNOSIS8",
            "REFERRINGPROVIDERID",
            "APPOINTMENTID",
            "CURRENTILLNESSDATE",
            "SERVICEDATE",
            "SUPERVISINGPROVIDERID",
            "STATUS1",
            "STATUS2",
            "STATUSP",
            "OUTSTANDING1",
            "OUTSTANDING2",
            "OUTSTANDINGP",
            "LASTBILLEDDATE1",
            "LASTBILLEDDATE2",
            "LASTBILLEDDATEP",
            "HEALTHCARECLAIMTYPEID1",
            "HEALTHCARECLAIMTYPEID2",
        ],
    ),
];

const PATIENTS: usize = 0;
const ENCOUNTERS: usize = 1;
const CONDITIONS: usize = 2;
const MEDICATIONS: usize = 3;
const ALLERGIES: usize = 4;
const OBSERVATIONS: usize = 5;
const IMMUNIZATIONS: usize = 6;
const PROCEDURES: usize = 7;
const CAREPLANS: usize = 8;
const IMAGING: usize = 9;
const DEVICES: usize = 10;
const SUPPLIES: usize = 11;
const ORGANIZATIONS: usize = 12;
const PROVIDERS: usize = 13;
const PAYERS: usize = 14;
const PAYER_TRANSITIONS: usize = 15;
const CLAIMS: usize = 16;

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheaOptions {
    /// Number of patients (at least 1).
    pub patients: usize,
    /// Seed of every draw.
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyntheaReport {
    /// Data rows (header excluded) per file.
    pub rows: BTreeMap<String, u64>,
    /// Every file written, relative to the output folder.
    pub files: Vec<PathBuf>,
}

impl SyntheaReport {
    /// Data rows of every file.
    pub fn total_rows(&self) -> u64 {
        self.rows.values().sum()
    }
}

/// The first and last years of the exported history.
const FIRST_YEAR: i32 = 2011;
const LAST_YEAR: i32 = 2025;

/// Synthea's `clean`: commas and line breaks become spaces (its CSV
/// exporter writes no quotes).
fn clean(text: &str) -> String {
    text.replace(['\r', '\n', ','], " ").trim().to_owned()
}

struct Out {
    files: Vec<BufWriter<File>>,
    rows: [u64; 17],
    paths: Vec<PathBuf>,
}

impl Out {
    fn create(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut files = Vec::new();
        let mut paths = Vec::new();
        for (name, header) in HEADERS {
            let path = dir.join(name);
            let file = File::create(&path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let mut w = BufWriter::with_capacity(1 << 16, file);
            writeln!(w, "{}", header.join(",")).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            files.push(w);
            paths.push(path);
        }
        Ok(Self { files, rows: [0; 17], paths })
    }

    fn row(&mut self, file: usize, fields: &[&str]) -> Result<(), String> {
        debug_assert_eq!(fields.len(), HEADERS[file].1.len(), "{}", HEADERS[file].0);
        let w = &mut self.files[file];
        let mut line = String::with_capacity(160);
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            if field.contains([',', '\n', '\r']) {
                line.push_str(&clean(field));
            } else {
                line.push_str(field);
            }
        }
        line.push('\n');
        w.write_all(line.as_bytes()).map_err(|e| format!("cannot write {}: {e}", self.paths[file].display()))?;
        self.rows[file] += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<[u64; 17], String> {
        for (w, path) in self.files.iter_mut().zip(&self.paths) {
            w.flush().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(self.rows)
    }
}

fn uuid(rng: &mut Xoshiro256PlusPlus) -> String {
    let a: u64 = rng.random();
    let b: u64 = rng.random();
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn pick<'a, T>(rng: &mut Xoshiro256PlusPlus, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn ts(t: PrimitiveDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn day(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn date(y: i32, m: u8, d: u8) -> Date {
    Date::from_calendar_date(y, Month::try_from(m).unwrap_or(Month::January), d)
        .unwrap_or_else(|_| Date::from_calendar_date(y, Month::January, 1).unwrap_or(Date::MIN))
}

fn random_day(rng: &mut Xoshiro256PlusPlus, from: Date, to: Date) -> Date {
    let span = (to - from).whole_days().max(0);
    from + Duration::days(rng.random_range(0..=span))
}

fn at_office_hours(rng: &mut Xoshiro256PlusPlus, d: Date) -> PrimitiveDateTime {
    let t = Time::from_hms(rng.random_range(7..18), rng.random_range(0..60), rng.random_range(0..60))
        .unwrap_or(Time::MIDNIGHT);
    PrimitiveDateTime::new(d, t)
}

fn age_at(birth: Date, d: Date) -> i32 {
    let mut years = d.year() - birth.year();
    if (u8::from(d.month()), d.day()) < (u8::from(birth.month()), birth.day()) {
        years -= 1;
    }
    years
}

fn money(rng: &mut Xoshiro256PlusPlus, low: f64, high: f64) -> f64 {
    (rng.random_range(low..high) * 100.0).round() / 100.0
}

/// Massachusetts places, as Synthea's default population: city, county,
/// FIPS county code, ZIP, latitude, longitude.
const CITIES: &[(&str, &str, &str, &str, f64, f64)] = &[
    ("Boston", "Suffolk County", "25025", "02108", 42.3601, -71.0589),
    ("Worcester", "Worcester County", "25027", "01608", 42.2626, -71.8023),
    ("Springfield", "Hampden County", "25013", "01103", 42.1015, -72.5898),
    ("Cambridge", "Middlesex County", "25017", "02139", 42.3736, -71.1097),
    ("Lowell", "Middlesex County", "25017", "01852", 42.6334, -71.3162),
    ("Brockton", "Plymouth County", "25023", "02301", 42.0834, -71.0184),
    ("Quincy", "Norfolk County", "25021", "02169", 42.2529, -71.0023),
    ("Lynn", "Essex County", "25009", "01901", 42.4668, -70.9495),
    ("New Bedford", "Bristol County", "25005", "02740", 41.6362, -70.9342),
    ("Pittsfield", "Berkshire County", "25003", "01201", 42.4501, -73.2454),
    ("Barnstable", "Barnstable County", "25001", "02630", 41.7003, -70.3002),
    ("Northampton", "Hampshire County", "25015", "01060", 42.3251, -72.6412),
];
const STREETS: &[&str] = &[
    "Bergstrom Trafficway",
    "Kunde Way",
    "Schmitt Park",
    "Heaney Dale",
    "Kozey Annex",
    "Rath Junction",
    "Lakin Ville",
    "Walter Mall",
    "Goyette Rapid",
    "Feest Meadow",
    "Hilll Orchard",
    "Bauch Extension",
];
const GIVEN_F: &[&str] = &[
    "Maria", "Linda", "Karen", "Susan", "Emily", "Grace", "Hannah", "Olivia", "Sofia", "Chloe", "Ana", "Renee",
    "Margaret", "Dorothy", "Ruth", "Shirley",
];
const GIVEN_M: &[&str] = &[
    "James", "Robert", "Michael", "David", "William", "Thomas", "Daniel", "Mark", "Jose", "Andre", "Raul", "Jesus",
    "Kenneth", "George", "Edward", "Brian",
];
const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Garcia",
    "Rodriguez",
    "Wilson",
    "Martinez",
    "Anderson",
    "Taylor",
    "Thomas",
    "Hernandez",
    "Moore",
    "Martin",
    "Jackson",
    "Thompson",
    "White",
    "Lopez",
    "Lee",
    "Gonzalez",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Perez",
    "Hall",
    "Young",
    "Allen",
];
const RACES: &[(&str, u32)] =
    &[("white", 75), ("black", 8), ("asian", 7), ("hispanic", 0), ("native", 1), ("other", 9)];

/// Payers as Synthea ships them (name, ownership).
const PAYER_LIST: &[(&str, &str)] = &[
    ("Medicare", "GOVERNMENT"),
    ("Medicaid", "GOVERNMENT"),
    ("Dual Eligible", "GOVERNMENT"),
    ("Aetna", "PRIVATE"),
    ("Anthem", "PRIVATE"),
    ("Blue Cross Blue Shield", "PRIVATE"),
    ("Cigna Health", "PRIVATE"),
    ("Humana", "PRIVATE"),
    ("UnitedHealthcare", "PRIVATE"),
    ("NO_INSURANCE", "NO_INSURANCE"),
];
const MEDICARE: usize = 0;
const MEDICAID: usize = 1;
const NO_INSURANCE: usize = 9;

/// Observation rows: LOINC code, description, unit, category.
struct Obs {
    loinc: &'static str,
    display: &'static str,
    unit: &'static str,
    category: &'static str,
    /// Typical low and high values, and decimals written.
    low: f64,
    high: f64,
    places: usize,
}

const fn obs(
    loinc: &'static str,
    display: &'static str,
    unit: &'static str,
    category: &'static str,
    low: f64,
    high: f64,
    places: usize,
) -> Obs {
    Obs { loinc, display, unit, category, low, high, places }
}

const CBC: &[Obs] = &[
    obs("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", "laboratory", 4.0, 11.0, 1),
    obs("789-8", "Erythrocytes [#/volume] in Blood by Automated count", "10*6/uL", "laboratory", 4.0, 6.0, 1),
    obs("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", "laboratory", 12.0, 17.0, 1),
    obs("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", "laboratory", 36.0, 50.0, 1),
    obs("787-2", "MCV [Entitic volume] by Automated count", "fL", "laboratory", 80.0, 100.0, 1),
    obs("785-6", "MCH [Entitic mass] by Automated count", "pg", "laboratory", 27.0, 33.0, 1),
    obs("786-4", "MCHC [Mass/volume] by Automated count", "g/dL", "laboratory", 32.0, 36.0, 1),
    obs(
        "21000-5",
        "Erythrocyte distribution width [Entitic volume] by Automated count",
        "fL",
        "laboratory",
        39.0,
        46.0,
        1,
    ),
    obs("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", "laboratory", 150.0, 400.0, 1),
    obs(
        "32207-3",
        "Platelet distribution width [Entitic volume] in Blood by Automated count",
        "fL",
        "laboratory",
        9.0,
        17.0,
        1,
    ),
    obs(
        "32623-1",
        "Platelet mean volume [Entitic volume] in Blood by Automated count",
        "fL",
        "laboratory",
        7.5,
        11.5,
        1,
    ),
];
const METABOLIC: &[Obs] = &[
    obs("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", "laboratory", 70.0, 110.0, 1),
    obs("6299-2", "Urea nitrogen [Mass/volume] in Blood", "mg/dL", "laboratory", 7.0, 20.0, 1),
    obs("38483-4", "Creatinine [Mass/volume] in Blood", "mg/dL", "laboratory", 0.6, 1.3, 2),
    obs("49765-1", "Calcium [Mass/volume] in Blood", "mg/dL", "laboratory", 8.5, 10.2, 1),
    obs("2947-0", "Sodium [Moles/volume] in Blood", "mmol/L", "laboratory", 136.0, 145.0, 1),
    obs("6298-4", "Potassium [Moles/volume] in Blood", "mmol/L", "laboratory", 3.5, 5.1, 1),
    obs("2069-3", "Chloride [Moles/volume] in Blood", "mmol/L", "laboratory", 98.0, 107.0, 1),
    obs("20565-8", "Carbon dioxide  total [Moles/volume] in Blood", "mmol/L", "laboratory", 22.0, 29.0, 1),
];
const LIPIDS: &[Obs] = &[
    obs("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory", 150.0, 260.0, 1),
    obs("2571-8", "Triglycerides", "mg/dL", "laboratory", 80.0, 220.0, 1),
    obs("18262-6", "Low Density Lipoprotein Cholesterol", "mg/dL", "laboratory", 70.0, 170.0, 1),
    obs("2085-9", "High Density Lipoprotein Cholesterol", "mg/dL", "laboratory", 35.0, 80.0, 1),
];
const A1C: Obs = obs("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "laboratory", 5.8, 8.5, 1);
const SURVEYS: &[Obs] = &[
    obs(
        "55758-7",
        "Patient Health Questionnaire 2 item (PHQ-2) total score [Reported]",
        "{score}",
        "survey",
        0.0,
        3.0,
        0,
    ),
    obs(
        "70274-6",
        "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]",
        "{score}",
        "survey",
        0.0,
        6.0,
        0,
    ),
    obs("72109-2", "AUDIT-C Total Score", "{score}", "survey", 0.0, 4.0, 0),
    obs("89204-2", "Patient-reported [Score] Anxiety PROMIS", "{score}", "survey", 40.0, 60.0, 1),
    obs(
        "93025-5",
        "Protocol for Responding to and Assessing Patients' Assets  Risks  and Experiences [PRAPARE]",
        "{score}",
        "survey",
        1.0,
        9.0,
        0,
    ),
];
/// Urinalysis: LOINC, description, and a text answer or a numeric range
/// with its unit.
const URINALYSIS_TEXT: &[(&str, &str, &[&str])] = &[
    ("5778-6", "Color of Urine", &["Yellow", "Yellow", "Amber"]),
    ("5767-9", "Appearance of Urine", &["Clear", "Clear", "Cloudy"]),
    ("25428-4", "Glucose [Presence] in Urine by Test strip", &["Negative"]),
    ("2514-8", "Ketones [Presence] in Urine by Test strip", &["Negative", "Trace"]),
    ("5794-3", "Hemoglobin [Presence] in Urine by Test strip", &["Negative"]),
    ("5802-4", "Nitrite [Presence] in Urine by Test strip", &["Negative"]),
    ("20454-5", "Protein [Presence] in Urine by Test strip", &["Negative", "Trace"]),
    ("5799-2", "Leukocyte esterase [Presence] in Urine by Test strip", &["Negative"]),
];
const URINALYSIS_NUMERIC: &[Obs] = &[
    obs("5811-5", "Specific gravity of Urine by Test strip", "{SG}", "laboratory", 1.005, 1.030, 3),
    obs("5803-2", "pH of Urine by Test strip", "[pH]", "laboratory", 5.0, 8.0, 1),
];
/// PRAPARE social-needs items (LOINC) with their answers, as Synthea records
/// them at adult wellness visits.
const PRAPARE: &[(&str, &str, &[&str])] = &[
    ("56051-6", "Do you consider yourself Hispanic/Latino?", &["No", "Yes"]),
    ("71802-3", "Housing status", &["I have housing", "I have housing", "I do not have housing"]),
    ("93033-9", "Are you worried about losing your housing?", &["No", "No", "Yes"]),
    (
        "82589-3",
        "Highest level of school",
        &["More than high school", "High school diploma or GED", "Less than high school degree"],
    ),
    (
        "67875-5",
        "Employment status current",
        &["Full-time work", "Part-time or temporary work", "Unemployed", "Otherwise unemployed but not seeking work"],
    ),
    (
        "93030-5",
        "Has lack of transportation kept you from medical appointments  meetings  work  or from getting things needed for daily living",
        &["No", "Yes  it has kept me from medical appointments or from getting my medications"],
    ),
    (
        "93029-7",
        "How often do you see or talk to people that you care about and feel close to (For example: talking to friends on the phone  visiting friends or family  going to church or club meetings)",
        &["5 or more times a week", "3 to 5 times a week", "1 or 2 times a week"],
    ),
    ("93038-8", "Stress level", &["Not at all", "A little bit", "Somewhat", "Quite a bit"]),
    ("93026-3", "Do you feel physically and emotionally safe where you currently live?", &["Yes", "Unsure"]),
    (
        "76501-6",
        "Within the last year  have you been afraid of your partner or ex-partner?",
        &["No", "I have not had a partner in the past year"],
    ),
    ("93027-1", "Are you a refugee?", &["No"]),
    (
        "93028-9",
        "In the past year  have you spent more than 2 nights in a row in a jail  prison  detention center  or juvenile correctional facility?",
        &["No"],
    ),
];
const SMOKING: &[&str] =
    &["Never smoked tobacco (finding)", "Former smoker (finding)", "Smokes tobacco daily (finding)"];

/// A chronic condition: SNOMED code, display, youngest age, chance in
/// percent, medication (RxNorm, display), care plan (SNOMED, display).
struct Chronic {
    snomed: &'static str,
    display: &'static str,
    min_age: i32,
    percent: u32,
    medication: Option<(&'static str, &'static str)>,
    careplan: (&'static str, &'static str),
}

const CHRONIC: &[Chronic] = &[
    Chronic {
        snomed: "59621000",
        display: "Essential hypertension (disorder)",
        min_age: 25,
        percent: 30,
        medication: Some(("314076", "lisinopril 10 MG Oral Tablet")),
        careplan: ("443402002", "Lifestyle education regarding hypertension (procedure)"),
    },
    Chronic {
        snomed: "44054006",
        display: "Diabetes mellitus type 2 (disorder)",
        min_age: 30,
        percent: 12,
        medication: Some(("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet")),
        careplan: ("698360004", "Diabetes self management plan (record artifact)"),
    },
    Chronic {
        snomed: "55822004",
        display: "Hyperlipidemia (disorder)",
        min_age: 30,
        percent: 25,
        medication: Some(("314231", "Simvastatin 10 MG Oral Tablet")),
        careplan: ("734163000", "Care plan (record artifact)"),
    },
    Chronic {
        snomed: "195967001",
        display: "Asthma (disorder)",
        min_age: 2,
        percent: 9,
        medication: Some(("895994", "120 ACTUAT Fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler")),
        careplan: ("699728000", "Asthma self management (record artifact)"),
    },
    Chronic {
        snomed: "40930008",
        display: "Hypothyroidism (disorder)",
        min_age: 20,
        percent: 6,
        medication: Some(("966222", "Levothyroxine Sodium 0.075 MG Oral Tablet")),
        careplan: ("734163000", "Care plan (record artifact)"),
    },
    Chronic {
        snomed: "370143000",
        display: "Major depressive disorder (disorder)",
        min_age: 14,
        percent: 8,
        medication: Some(("312938", "Sertraline 100 MG Oral Tablet")),
        careplan: ("736376001", "Psychiatry care plan (record artifact)"),
    },
    Chronic {
        snomed: "239873007",
        display: "Osteoarthritis of knee (disorder)",
        min_age: 45,
        percent: 12,
        medication: Some(("849574", "Naproxen sodium 220 MG Oral Tablet")),
        careplan: ("408580007", "Physical activity target light exercise (regime/therapy)"),
    },
    Chronic {
        snomed: "49436004",
        display: "Atrial fibrillation (disorder)",
        min_age: 55,
        percent: 5,
        medication: Some(("855332", "Warfarin Sodium 5 MG Oral Tablet")),
        careplan: ("734163000", "Care plan (record artifact)"),
    },
    Chronic {
        snomed: "162864005",
        display: "Body mass index 30+ - obesity (finding)",
        min_age: 18,
        percent: 20,
        medication: None,
        careplan: ("718361005", "Weight loss advised (situation)"),
    },
];

/// An acute illness seen at a symptom visit: SNOMED, display, days, its
/// medication, a procedure, and whether it gets a chest X-ray sometimes.
struct Acute {
    snomed: &'static str,
    display: &'static str,
    days: i64,
    medication: (&'static str, &'static str),
    procedure: Option<(&'static str, &'static str)>,
    fever: bool,
    xray: bool,
}

const ACUTE: &[Acute] = &[
    Acute {
        snomed: "10509002",
        display: "Acute bronchitis (disorder)",
        days: 14,
        medication: ("313782", "Acetaminophen 325 MG Oral Tablet"),
        procedure: Some(("23426006", "Measurement of respiratory function (procedure)")),
        fever: true,
        xray: true,
    },
    Acute {
        snomed: "444814009",
        display: "Viral sinusitis (disorder)",
        days: 10,
        medication: ("1049630", "diphenhydramine hydrochloride 25 MG Oral Tablet"),
        procedure: None,
        fever: false,
        xray: false,
    },
    Acute {
        snomed: "43878008",
        display: "Streptococcal sore throat (disorder)",
        days: 10,
        medication: ("834061", "Penicillin V Potassium 250 MG Oral Tablet"),
        procedure: Some(("117015009", "Throat culture (procedure)")),
        fever: true,
        xray: false,
    },
    Acute {
        snomed: "65363002",
        display: "Otitis media (disorder)",
        days: 7,
        medication: ("308182", "Amoxicillin 250 MG Oral Capsule"),
        procedure: None,
        fever: true,
        xray: false,
    },
    Acute {
        snomed: "195662009",
        display: "Acute viral pharyngitis (disorder)",
        days: 7,
        medication: ("313782", "Acetaminophen 325 MG Oral Tablet"),
        procedure: Some(("117015009", "Throat culture (procedure)")),
        fever: true,
        xray: false,
    },
    Acute {
        snomed: "44465007",
        display: "Sprain of ankle (disorder)",
        days: 28,
        medication: ("310965", "Ibuprofen 200 MG Oral Tablet"),
        procedure: None,
        fever: false,
        xray: false,
    },
];

/// Allergies: code, system, description, type, category, reaction and its
/// description.
const ALLERGY_LIST: &[(&str, &str, &str, &str, &str, &str, &str)] = &[
    ("91935009", "SNOMED-CT", "Allergy to peanuts (finding)", "allergy", "food", "39579001", "Anaphylaxis (disorder)"),
    ("300913006", "SNOMED-CT", "Shellfish (substance)", "allergy", "food", "247472004", "Wheal (finding)"),
    ("3718001", "SNOMED-CT", "Cow's milk (substance)", "intolerance", "food", "21522001", "Abdominal pain (finding)"),
    (
        "256277009",
        "SNOMED-CT",
        "Grass pollen (substance)",
        "allergy",
        "environment",
        "878820003",
        "Rhinoconjunctivitis (disorder)",
    ),
    ("260147004", "SNOMED-CT", "House dust mite (organism)", "allergy", "environment", "49727002", "Cough (finding)"),
    ("264287008", "SNOMED-CT", "Animal dander (substance)", "allergy", "environment", "76067001", "Sneezing (finding)"),
    ("111088007", "SNOMED-CT", "Latex (substance)", "allergy", "environment", "247472004", "Wheal (finding)"),
    ("7980", "RxNorm", "Penicillin G", "allergy", "medication", "271807003", "Eruption of skin (disorder)"),
    ("733", "RxNorm", "Ampicillin", "allergy", "medication", "271807003", "Eruption of skin (disorder)"),
];
const SEVERITIES: &[&str] = &["MILD", "MODERATE", "SEVERE"];

/// Vaccines: CVX, description, from age, to age, yearly.
const VACCINES: &[(&str, &str, i32, i32)] = &[
    ("115", "Tdap", 11, 12),
    ("62", "HPV  quadrivalent", 11, 13),
    ("113", "Td (adult) preservative free", 19, 120),
    ("133", "Pneumococcal conjugate PCV 13", 65, 120),
    ("33", "pneumococcal polysaccharide vaccine  23 valent", 66, 120),
    ("187", "zoster vaccine recombinant", 50, 120),
    ("21", "varicella", 4, 6),
    ("03", "MMR", 4, 6),
    ("83", "Hep A  ped/adol  2 dose", 1, 2),
];
const FLU: (&str, &str) = ("140", "Influenza  seasonal  injectable  preservative free");
const COVID: (&str, &str) =
    ("208", "SARS-COV-2 (COVID-19) vaccine  mRNA  spike protein  LNP  preservative free  30 mcg/0.3mL dose");

struct Org {
    id: String,
    name: String,
    address: String,
    city: usize,
    lat: f64,
    lon: f64,
    phone: String,
    encounters: u64,
    revenue: f64,
    providers: Vec<Provider>,
}

struct Provider {
    id: String,
    name: String,
    gender: &'static str,
    speciality: &'static str,
    encounters: u64,
    procedures: u64,
}

#[derive(Default, Clone)]
struct PayerStats {
    covered: f64,
    uncovered: f64,
    encounters: u64,
    medications: u64,
    procedures: u64,
    immunizations: u64,
    customers: u64,
    member_months: u64,
}

/// One encounter being written: its id, time, and what claims need.
struct Visit {
    id: String,
    start: PrimitiveDateTime,
    payer: usize,
    org: usize,
    provider: usize,
}

struct Writer {
    rng: Xoshiro256PlusPlus,
    out: Out,
    orgs: Vec<Org>,
    payers: Vec<(String, PayerStats)>,
}

/// Writes the export into `out` (created if needed); `progress` is called
/// with the number of patients written so far.
pub fn write(out: &Path, options: &SyntheaOptions, mut progress: impl FnMut(u64)) -> Result<SyntheaReport, String> {
    if options.patients == 0 {
        return Err("the export needs at least 1 patient".into());
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(options.seed ^ 0x7379_6e74_6865_6121);
    let org_count = (options.patients / 40).clamp(3, 200);
    let mut orgs = Vec::with_capacity(org_count);
    for i in 0..org_count {
        let city = rng.random_range(0..CITIES.len());
        let name = match i % 3 {
            0 => format!("{} HEALTH CENTER", CITIES[city].0.to_uppercase()),
            1 => format!("PCP{}", rng.random_range(10_000..99_999)),
            _ => format!("{} FAMILY PRACTICE", CITIES[city].0.to_uppercase()),
        };
        let mut providers = Vec::new();
        for _ in 0..rng.random_range(2..=4) {
            let female = rng.random_bool(0.5);
            let given = if female { pick(&mut rng, GIVEN_F) } else { pick(&mut rng, GIVEN_M) };
            providers.push(Provider {
                id: uuid(&mut rng),
                name: format!(
                    "{}{} {}{}",
                    given,
                    rng.random_range(100..999),
                    pick(&mut rng, FAMILY),
                    rng.random_range(100..999)
                ),
                gender: if female { "F" } else { "M" },
                speciality: "GENERAL PRACTICE",
                encounters: 0,
                procedures: 0,
            });
        }
        orgs.push(Org {
            id: uuid(&mut rng),
            name,
            address: format!("{} {}", rng.random_range(1..999), pick(&mut rng, STREETS)),
            city,
            lat: CITIES[city].4 + rng.random_range(-0.05..0.05),
            lon: CITIES[city].5 + rng.random_range(-0.05..0.05),
            phone: format!(
                "{}-{}-{:04}",
                rng.random_range(413..978),
                rng.random_range(200..999),
                rng.random_range(0..10_000)
            ),
            encounters: 0,
            revenue: 0.0,
            providers,
        });
    }
    let payers: Vec<(String, PayerStats)> =
        PAYER_LIST.iter().map(|_| (uuid(&mut rng), PayerStats::default())).collect();
    let mut w = Writer { rng, out: Out::create(out)?, orgs, payers };
    for p in 0..options.patients {
        w.patient()?;
        progress(p as u64 + 1);
    }
    w.trailer()?;
    let rows = w.out.finish()?;
    let mut report = SyntheaReport::default();
    for (i, (name, _)) in HEADERS.iter().enumerate() {
        report.rows.insert((*name).to_owned(), rows[i]);
        report.files.push(PathBuf::from(name));
    }
    Ok(report)
}

impl Writer {
    fn patient(&mut self) -> Result<(), String> {
        let rng = &mut self.rng;
        let id = uuid(rng);
        let female = rng.random_bool(0.5);
        let birth = random_day(rng, date(1935, 1, 1), date(2024, 6, 30));
        let end = date(LAST_YEAR, 12, 31);
        let death = (birth.year() < 1950 && rng.random_bool(0.15)).then(|| random_day(rng, date(2023, 1, 1), end));
        let last_day = death.unwrap_or(end);
        let age_now = age_at(birth, last_day);
        let digits = |rng: &mut Xoshiro256PlusPlus| rng.random_range(100..999);
        let first = format!("{}{}", if female { pick(rng, GIVEN_F) } else { pick(rng, GIVEN_M) }, digits(rng));
        let middle = if age_now >= 18 && rng.random_bool(0.7) {
            format!("{}{}", if female { pick(rng, GIVEN_F) } else { pick(rng, GIVEN_M) }, digits(rng))
        } else {
            String::new()
        };
        let family = format!("{}{}", pick(rng, FAMILY), digits(rng));
        let married = age_now >= 22 && rng.random_bool(0.55);
        let maiden = if female && married { format!("{}{}", pick(rng, FAMILY), digits(rng)) } else { String::new() };
        let prefix = match (age_now >= 18, female, married) {
            (false, ..) => "",
            (true, false, _) => "Mr.",
            (true, true, true) => "Mrs.",
            (true, true, false) => "Ms.",
        };
        let suffix: &str =
            if age_now >= 30 && rng.random_bool(0.03) { ["PhD", "MD", "JD"][rng.random_range(0..3)] } else { "" };
        let ssn = format!("999-{:02}-{:04}", rng.random_range(10..99), rng.random_range(1000..9999));
        let drivers = if age_now >= 16 { format!("S99{:06}", rng.random_range(0..999_999)) } else { String::new() };
        let passport = if age_now >= 18 && rng.random_bool(0.6) {
            format!("X{:08}X", rng.random_range(0..99_999_999))
        } else {
            String::new()
        };
        let marital = if age_now >= 18 { if married { "M" } else { "S" } } else { "" };
        let mut r = rng.random_range(0..100u32);
        let mut race = "other";
        for (name, weight) in RACES {
            if r < *weight {
                race = name;
                break;
            }
            r -= weight;
        }
        let ethnicity = if rng.random_bool(0.12) { "hispanic" } else { "nonhispanic" };
        let city = rng.random_range(0..CITIES.len());
        let (city_name, county, fips, zip, lat, lon) = CITIES[city];
        let birthplace = format!("{}  Massachusetts  US", CITIES[rng.random_range(0..CITIES.len())].0);
        let address = format!("{} {}", rng.random_range(100..999), pick(rng, STREETS));
        let org = rng.random_range(0..self.orgs.len());
        let provider = rng.random_range(0..self.orgs[org].providers.len());
        let income = rng.random_range(15_000..250_000u32);
        let lat = format!("{:.14}", lat + rng.random_range(-0.1..0.1));
        let lon = format!("{:.14}", lon + rng.random_range(-0.1..0.1));

        // Payer history: spans of 3 to 10 years, the payer fitting the age.
        let mut spans: Vec<(Date, Date, usize)> = Vec::new();
        let mut from = birth;
        while from <= last_day {
            let years = self.rng.random_range(3..=10);
            let to = date(from.year() + years, u8::from(from.month()), from.day().min(28)).min(last_day);
            let age = age_at(birth, from);
            let payer = if age >= 65 {
                MEDICARE
            } else if age < 18 && self.rng.random_bool(0.3) || self.rng.random_bool(0.08) {
                MEDICAID
            } else if self.rng.random_bool(0.07) {
                NO_INSURANCE
            } else {
                self.rng.random_range(3..9)
            };
            spans.push((from, to, payer));
            from = to + Duration::days(1);
        }
        let owner_self = format!("{} {}", first, family);
        let guardian = format!("{}{} {}", pick(&mut self.rng, GIVEN_F), digits(&mut self.rng), family);
        let mut customers: Vec<usize> = Vec::new();
        for (from, to, payer) in &spans {
            let member = if *payer == NO_INSURANCE { String::new() } else { uuid(&mut self.rng) };
            let minor = age_at(birth, *from) < 18;
            let (ownership, owner) = if *payer == NO_INSURANCE {
                ("", "")
            } else if minor {
                ("Guardian", guardian.as_str())
            } else {
                ("Self", owner_self.as_str())
            };
            let start = ts(PrimitiveDateTime::new(*from, Time::MIDNIGHT));
            let stop = ts(PrimitiveDateTime::new(*to, Time::MIDNIGHT));
            let payer_id = self.payers[*payer].0.clone();
            self.out.row(PAYER_TRANSITIONS, &[&id, &member, &start, &stop, &payer_id, "", ownership, owner])?;
            let stats = &mut self.payers[*payer].1;
            if !customers.contains(payer) {
                customers.push(*payer);
                stats.customers += 1;
            }
            stats.member_months += ((*to - *from).whole_days() / 30) as u64;
        }
        let payer_on = |d: Date| spans.iter().find(|(f, t, _)| *f <= d && d <= *t).map_or(NO_INSURANCE, |s| s.2);

        // Chronic conditions and the year they are diagnosed.
        let window_start = date(FIRST_YEAR, 1, 1).max(birth + Duration::days(30));
        let mut chronic: Vec<(usize, i32)> = Vec::new();
        for (i, c) in CHRONIC.iter().enumerate() {
            if age_now >= c.min_age && self.rng.random_range(0..100) < c.percent {
                let earliest = (birth.year() + c.min_age).max(window_start.year());
                let latest = last_day.year();
                if earliest <= latest {
                    chronic.push((i, self.rng.random_range(earliest..=latest)));
                }
            }
        }
        let smoker = *pick(&mut self.rng, SMOKING);
        let height_adult =
            if female { self.rng.random_range(152.0..175.0) } else { self.rng.random_range(165.0..190.0) };
        let bmi_base = self.rng.random_range(19.0..33.0);
        let allergy_count = if self.rng.random_bool(0.25) { self.rng.random_range(1..=2) } else { 0 };
        let mut given_once: Vec<&str> = Vec::new();
        let mut expenses = 0.0;
        let mut coverage = 0.0;
        let mut first_visit = true;
        let mut device_given = false;

        for year in window_start.year()..=last_day.year() {
            let year_start = date(year, 1, 1).max(window_start);
            let year_end = date(year, 12, 31).min(last_day);
            if year_start > year_end {
                continue;
            }
            // Wellness.
            let d = random_day(&mut self.rng, year_start, year_end);
            let age = age_at(birth, d);
            let start = at_office_hours(&mut self.rng, d);
            let payer = payer_on(d);
            let (code, display) = if age < 18 {
                ("410620009", "Well child visit (procedure)")
            } else {
                ("162673000", "General examination of patient (procedure)")
            };
            let visit = self.encounter(&id, start, payer, org, provider, "wellness", code, display, None)?;
            let mut diagnoses: Vec<&str> = Vec::new();
            if first_visit {
                first_visit = false;
                for _ in 0..allergy_count {
                    let a = *pick(&mut self.rng, ALLERGY_LIST);
                    let severity = *pick(&mut self.rng, SEVERITIES);
                    let second = self.rng.random_bool(0.3);
                    let (r2, d2, s2) = if second { ("76067001", "Sneezing (finding)", "MILD") } else { ("", "", "") };
                    self.out.row(
                        ALLERGIES,
                        &[&day(d), "", &id, &visit.id, a.0, a.1, a.2, a.3, a.4, a.5, a.6, severity, r2, d2, s2],
                    )?;
                }
            }
            // Vital signs.
            let height = if age < 18 { (52.0 + f64::from(age) * 6.8).min(height_adult) } else { height_adult };
            let weight = if age < 18 {
                3.5 + f64::from(age) * 3.1 + self.rng.random_range(-1.0..3.0)
            } else {
                bmi_base * (height / 100.0) * (height / 100.0) + self.rng.random_range(-3.0..3.0)
            };
            let bmi = weight / ((height / 100.0) * (height / 100.0));
            let hypertensive = chronic.iter().any(|(c, y)| *c == 0 && *y <= year);
            let (sys_low, sys_high): (f64, f64) = if hypertensive { (130.0, 165.0) } else { (100.0, 135.0) };
            let vitals: [(&str, &str, String, &str); 8] = [
                ("8302-2", "Body Height", format!("{height:.1}"), "cm"),
                (
                    "72514-3",
                    "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
                    format!("{:.1}", self.rng.random_range(0..5) as f64),
                    "{score}",
                ),
                ("29463-7", "Body Weight", format!("{weight:.1}"), "kg"),
                ("39156-5", "Body mass index (BMI) [Ratio]", format!("{bmi:.2}"), "kg/m2"),
                (
                    "8462-4",
                    "Diastolic Blood Pressure",
                    format!("{:.1}", self.rng.random_range(60..95) as f64),
                    "mm[Hg]",
                ),
                (
                    "8480-6",
                    "Systolic Blood Pressure",
                    format!("{:.1}", self.rng.random_range(sys_low..sys_high).round()),
                    "mm[Hg]",
                ),
                ("8867-4", "Heart rate", format!("{:.1}", self.rng.random_range(55..100) as f64), "/min"),
                ("9279-1", "Respiratory rate", format!("{:.1}", self.rng.random_range(12..20) as f64), "/min"),
            ];
            let when = ts(start);
            for (code, display, value, unit) in &vitals {
                self.out.row(
                    OBSERVATIONS,
                    &[&when, &id, &visit.id, "vital-signs", code, display, value, unit, "numeric"],
                )?;
            }
            if age >= 18 {
                let diabetic = chronic.iter().any(|(c, y)| *c == 1 && *y <= year);
                let mut panels: Vec<&[Obs]> = vec![METABOLIC, CBC];
                if age >= 30 {
                    panels.push(LIPIDS);
                }
                for panel in panels {
                    for o in panel {
                        self.observation(&when, &id, &visit.id, o)?;
                    }
                }
                if diabetic {
                    self.observation(&when, &id, &visit.id, &A1C)?;
                }
                for o in SURVEYS {
                    self.observation(&when, &id, &visit.id, o)?;
                }
                self.out.row(
                    OBSERVATIONS,
                    &[&when, &id, &visit.id, "survey", "72166-2", "Tobacco smoking status", smoker, "", "text"],
                )?;
                for (code, display, answers) in URINALYSIS_TEXT {
                    let answer = *pick(&mut self.rng, answers);
                    self.out
                        .row(OBSERVATIONS, &[&when, &id, &visit.id, "laboratory", code, display, answer, "", "text"])?;
                }
                for o in URINALYSIS_NUMERIC {
                    self.observation(&when, &id, &visit.id, o)?;
                }
                for (code, display, answers) in PRAPARE {
                    let answer = *pick(&mut self.rng, answers);
                    self.out
                        .row(OBSERVATIONS, &[&when, &id, &visit.id, "survey", code, display, answer, "", "text"])?;
                }
                self.procedure(
                    &visit,
                    &id,
                    ("710824005", "Assessment of health and social care needs (procedure)"),
                    None,
                )?;
                self.procedure(&visit, &id, ("171207006", "Depression screening (procedure)"), None)?;
                self.procedure(
                    &visit,
                    &id,
                    ("715252007", "Depression screening using Patient Health Questionnaire Two-Item score (procedure)"),
                    None,
                )?;
                if age >= 50 && !given_once.contains(&"73761001") && self.rng.random_bool(0.2) {
                    given_once.push("73761001");
                    self.procedure(&visit, &id, ("73761001", "Colonoscopy (procedure)"), None)?;
                }
            } else {
                for (code, display, low, high) in [
                    ("77606-2", "Weight-for-length Per age and sex", 5.0, 95.0),
                    ("59576-9", "Body mass index (BMI) [Percentile] Per age and sex", 5.0, 95.0),
                ] {
                    let value = format!("{:.1}", self.rng.random_range(low..high));
                    self.out.row(
                        OBSERVATIONS,
                        &[&when, &id, &visit.id, "vital-signs", code, display, &value, "%", "numeric"],
                    )?;
                }
                self.procedure(&visit, &id, ("386516004", "Anticipatory guidance (procedure)"), None)?;
            }
            // Vaccines.
            let mut shots: Vec<(&str, &str)> = vec![FLU];
            if (2021..=2022).contains(&year) && age >= 12 && !given_once.contains(&COVID.0) {
                given_once.push(COVID.0);
                shots.push(COVID);
            }
            for (cvx, display, from_age, to_age) in VACCINES {
                if (*from_age..=*to_age).contains(&age) && !given_once.contains(cvx) {
                    given_once.push(*cvx);
                    shots.push((*cvx, *display));
                }
            }
            for (cvx, display) in shots {
                let cost = format!("{:.2}", money(&mut self.rng, 120.0, 140.0));
                self.out.row(IMMUNIZATIONS, &[&when, &id, &visit.id, cvx, display, &cost])?;
                self.payers[payer].1.immunizations += 1;
            }
            // Chronic conditions: diagnosed this year, or followed.
            for &(c, onset) in &chronic.clone() {
                if onset > year {
                    continue;
                }
                let cond = &CHRONIC[c];
                diagnoses.push(cond.snomed);
                if onset == year {
                    self.out.row(CONDITIONS, &[&day(d), "", &id, &visit.id, "SNOMED-CT", cond.snomed, cond.display])?;
                    let plan = uuid(&mut self.rng);
                    self.out.row(
                        CAREPLANS,
                        &[
                            &plan,
                            &day(d),
                            "",
                            &id,
                            &visit.id,
                            cond.careplan.0,
                            cond.careplan.1,
                            cond.snomed,
                            cond.display,
                        ],
                    )?;
                }
                if let Some(med) = cond.medication {
                    let stop = if year < last_day.year() { ts(start + Duration::days(365)) } else { String::new() };
                    self.medication(&visit, &id, &when, &stop, med, Some((cond.snomed, cond.display)), 12)?;
                }
                if c == 1 && !device_given {
                    device_given = true;
                    let udi = format!(
                        "(01){:014}(11){}(17){}(10){}(21){}",
                        self.rng.random_range(0..99_999_999_999_999u64),
                        &day(d)[2..].replace('-', ""),
                        &day(d + Duration::days(730))[2..].replace('-', ""),
                        self.rng.random_range(10_000_000..99_999_999u32),
                        self.rng.random_range(10_000_000..99_999_999u32)
                    );
                    self.out.row(
                        DEVICES,
                        &[&when, "", &id, &visit.id, "337414009", "Blood glucose meter (physical object)", &udi],
                    )?;
                }
                // A follow-up visit for the chronic condition, six months on.
                let follow = d + Duration::days(self.rng.random_range(150..200));
                if follow <= last_day {
                    let start = at_office_hours(&mut self.rng, follow);
                    let fpayer = payer_on(follow);
                    let v = self.encounter(
                        &id,
                        start,
                        fpayer,
                        org,
                        provider,
                        "ambulatory",
                        "390906007",
                        "Follow-up encounter (procedure)",
                        Some((cond.snomed, cond.display)),
                    )?;
                    let when = ts(start);
                    let bp: [(&str, &str, String, &str); 3] = [
                        (
                            "8462-4",
                            "Diastolic Blood Pressure",
                            format!("{:.1}", self.rng.random_range(65..95) as f64),
                            "mm[Hg]",
                        ),
                        (
                            "8480-6",
                            "Systolic Blood Pressure",
                            format!("{:.1}", self.rng.random_range(sys_low..sys_high).round()),
                            "mm[Hg]",
                        ),
                        ("29463-7", "Body Weight", format!("{weight:.1}"), "kg"),
                    ];
                    for (code, display, value, unit) in &bp {
                        self.out.row(
                            OBSERVATIONS,
                            &[&when, &id, &v.id, "vital-signs", code, display, value, unit, "numeric"],
                        )?;
                    }
                    if c == 1 {
                        self.observation(&when, &id, &v.id, &A1C)?;
                        for o in METABOLIC {
                            self.observation(&when, &id, &v.id, o)?;
                        }
                        self.out.row(
                            SUPPLIES,
                            &[
                                &day(follow),
                                &id,
                                &v.id,
                                "337388004",
                                "Blood glucose testing strips (physical object)",
                                "100",
                            ],
                        )?;
                    } else if c == 2 {
                        for o in LIPIDS {
                            self.observation(&when, &id, &v.id, o)?;
                        }
                    }
                    self.claim(&v, &id, &[cond.snomed])?;
                }
            }
            self.claim(&visit, &id, &diagnoses)?;
            // Acute illness at symptom visits.
            for _ in 0..self.rng.random_range(0..=2) {
                let d = random_day(&mut self.rng, year_start, year_end);
                let illness = pick(&mut self.rng, ACUTE);
                let start = at_office_hours(&mut self.rng, d);
                let class = if self.rng.random_bool(0.1) { "urgentcare" } else { "ambulatory" };
                let v = self.encounter(
                    &id,
                    start,
                    payer_on(d),
                    org,
                    provider,
                    class,
                    "185345009",
                    "Encounter for symptom (procedure)",
                    Some((illness.snomed, illness.display)),
                )?;
                let when = ts(start);
                self.out.row(
                    CONDITIONS,
                    &[
                        &day(d),
                        &day(d + Duration::days(illness.days)),
                        &id,
                        &v.id,
                        "SNOMED-CT",
                        illness.snomed,
                        illness.display,
                    ],
                )?;
                let temp =
                    if illness.fever { self.rng.random_range(38.0..39.6) } else { self.rng.random_range(36.4..37.3) };
                self.out.row(
                    OBSERVATIONS,
                    &[
                        &when,
                        &id,
                        &v.id,
                        "vital-signs",
                        "8310-5",
                        "Body temperature",
                        &format!("{temp:.1}"),
                        "Cel",
                        "numeric",
                    ],
                )?;
                for (code, display, value, unit) in [
                    ("8867-4", "Heart rate", format!("{:.1}", self.rng.random_range(60..110) as f64), "/min"),
                    ("9279-1", "Respiratory rate", format!("{:.1}", self.rng.random_range(12..24) as f64), "/min"),
                ] {
                    self.out.row(
                        OBSERVATIONS,
                        &[&when, &id, &v.id, "vital-signs", code, display, &value, unit, "numeric"],
                    )?;
                }
                let stop = ts(start + Duration::days(illness.days));
                self.medication(&v, &id, &when, &stop, illness.medication, Some((illness.snomed, illness.display)), 1)?;
                if let Some(p) = illness.procedure {
                    self.procedure(&v, &id, p, Some((illness.snomed, illness.display)))?;
                }
                if illness.xray && self.rng.random_bool(0.3) {
                    let study = uuid(&mut self.rng);
                    let n = self.rng.random_range(10_000_000..99_999_999u64);
                    let ms = (start.assume_utc().unix_timestamp() as u64) * 1000;
                    self.out.row(
                        IMAGING,
                        &[
                            &study,
                            &when,
                            &id,
                            &v.id,
                            &format!("1.2.840.99999999.1.{n}.{ms}"),
                            "51185008",
                            "Thoracic structure (body structure)",
                            "DX",
                            "Digital Radiography",
                            &format!("1.2.840.99999999.1.1.{n}.{ms}"),
                            "1.2.840.10008.5.1.4.1.1.1.1",
                            "Digital X-Ray Image Storage",
                            "399208008",
                        ],
                    )?;
                    self.procedure(
                        &v,
                        &id,
                        ("399208008", "Plain X-ray of chest (procedure)"),
                        Some((illness.snomed, illness.display)),
                    )?;
                }
                if illness.snomed == "44465007" {
                    let plan = uuid(&mut self.rng);
                    self.out.row(
                        CAREPLANS,
                        &[
                            &plan,
                            &day(d),
                            &day(d + Duration::days(illness.days)),
                            &id,
                            &v.id,
                            "91251008",
                            "Physical therapy procedure",
                            illness.snomed,
                            illness.display,
                        ],
                    )?;
                }
                self.claim(&v, &id, &[illness.snomed])?;
            }
            expenses += money(&mut self.rng, 200.0, 2_000.0);
            coverage += money(&mut self.rng, 500.0, 8_000.0);
        }
        self.out.row(
            PATIENTS,
            &[
                &id,
                &day(birth),
                &death.map(day).unwrap_or_default(),
                &ssn,
                &drivers,
                &passport,
                prefix,
                &first,
                &middle,
                &family,
                suffix,
                &maiden,
                marital,
                race,
                ethnicity,
                if female { "F" } else { "M" },
                &birthplace,
                &address,
                city_name,
                "Massachusetts",
                county,
                fips,
                zip,
                &lat,
                &lon,
                &format!("{expenses:.2}"),
                &format!("{coverage:.2}"),
                &income.to_string(),
            ],
        )?;
        Ok(())
    }

    fn observation(&mut self, when: &str, patient: &str, encounter: &str, o: &Obs) -> Result<(), String> {
        let value = self.rng.random_range(o.low..o.high);
        let value = format!("{value:.*}", o.places);
        self.out
            .row(OBSERVATIONS, &[when, patient, encounter, o.category, o.loinc, o.display, &value, o.unit, "numeric"])
    }

    #[allow(clippy::too_many_arguments)]
    fn encounter(
        &mut self,
        patient: &str,
        start: PrimitiveDateTime,
        payer: usize,
        org: usize,
        provider: usize,
        class: &str,
        code: &str,
        display: &str,
        reason: Option<(&str, &str)>,
    ) -> Result<Visit, String> {
        let id = uuid(&mut self.rng);
        let stop = start + Duration::minutes(self.rng.random_range(15..60));
        let base = 136.8;
        let total = money(&mut self.rng, base, 900.0);
        let covered = if payer == NO_INSURANCE {
            0.0
        } else {
            (total * self.rng.random_range(0.5..0.95) * 100.0).round() / 100.0
        };
        let o = &mut self.orgs[org];
        o.encounters += 1;
        o.revenue += total;
        o.providers[provider].encounters += 1;
        let stats = &mut self.payers[payer].1;
        stats.encounters += 1;
        stats.covered += covered;
        stats.uncovered += total - covered;
        let (org_id, provider_id, payer_id) =
            (o.id.clone(), o.providers[provider].id.clone(), self.payers[payer].0.clone());
        self.out.row(
            ENCOUNTERS,
            &[
                &id,
                &ts(start),
                &ts(stop),
                patient,
                &org_id,
                &provider_id,
                &payer_id,
                class,
                code,
                display,
                &format!("{base:.2}"),
                &format!("{total:.2}"),
                &format!("{covered:.2}"),
                reason.map_or("", |r| r.0),
                reason.map_or("", |r| r.1),
            ],
        )?;
        Ok(Visit { id, start, payer, org, provider })
    }

    fn procedure(
        &mut self,
        visit: &Visit,
        patient: &str,
        (code, display): (&str, &str),
        reason: Option<(&str, &str)>,
    ) -> Result<(), String> {
        let stop = visit.start + Duration::minutes(self.rng.random_range(5..30));
        let cost = format!("{:.2}", money(&mut self.rng, 300.0, 700.0));
        self.orgs[visit.org].providers[visit.provider].procedures += 1;
        self.payers[visit.payer].1.procedures += 1;
        self.out.row(
            PROCEDURES,
            &[
                &ts(visit.start),
                &ts(stop),
                patient,
                &visit.id,
                "SNOMED-CT",
                code,
                display,
                &cost,
                reason.map_or("", |r| r.0),
                reason.map_or("", |r| r.1),
            ],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn medication(
        &mut self,
        visit: &Visit,
        patient: &str,
        start: &str,
        stop: &str,
        (code, display): (&str, &str),
        reason: Option<(&str, &str)>,
        dispenses: u32,
    ) -> Result<(), String> {
        let base = money(&mut self.rng, 5.0, 300.0);
        let total = base * f64::from(dispenses);
        let covered = if visit.payer == NO_INSURANCE { 0.0 } else { (total * 0.8 * 100.0).round() / 100.0 };
        self.payers[visit.payer].1.medications += 1;
        let payer_id = self.payers[visit.payer].0.clone();
        self.out.row(
            MEDICATIONS,
            &[
                start,
                stop,
                patient,
                &payer_id,
                &visit.id,
                code,
                display,
                &format!("{base:.2}"),
                &format!("{covered:.2}"),
                &dispenses.to_string(),
                &format!("{total:.2}"),
                reason.map_or("", |r| r.0),
                reason.map_or("", |r| r.1),
            ],
        )?;
        self.claim(visit, patient, &reason.map(|r| vec![r.0]).unwrap_or_default())
    }

    fn claim(&mut self, visit: &Visit, patient: &str, diagnoses: &[&str]) -> Result<(), String> {
        let id = uuid(&mut self.rng);
        let when = ts(visit.start);
        let billed = ts(visit.start + Duration::days(self.rng.random_range(1..20)));
        let mut dx: [&str; 8] = [""; 8];
        for (slot, code) in dx.iter_mut().zip(diagnoses) {
            *slot = code;
        }
        let provider = self.orgs[visit.org].providers[visit.provider].id.clone();
        let payer = self.payers[visit.payer].0.clone();
        let (status1, billed1) = if visit.payer == NO_INSURANCE { ("", "") } else { ("CLOSED", billed.as_str()) };
        self.out.row(
            CLAIMS,
            &[
                &id, patient, &provider, &payer, "", "1", "1", dx[0], dx[1], dx[2], dx[3], dx[4], dx[5], dx[6], dx[7],
                &provider, &visit.id, &when, &when, &provider, status1, "", "CLOSED", "0", "", "0", billed1, "",
                &billed, "1", "",
            ],
        )
    }

    /// organizations.csv, providers.csv and payers.csv, with the counts
    /// gathered while the patients were written.
    fn trailer(&mut self) -> Result<(), String> {
        let orgs = std::mem::take(&mut self.orgs);
        for o in &orgs {
            let (city, _, _, zip, ..) = CITIES[o.city];
            self.out.row(
                ORGANIZATIONS,
                &[
                    &o.id,
                    &o.name,
                    &o.address,
                    city,
                    "MA",
                    zip,
                    &format!("{:.6}", o.lat),
                    &format!("{:.6}", o.lon),
                    &o.phone,
                    &format!("{:.2}", o.revenue),
                    &o.encounters.to_string(),
                ],
            )?;
        }
        for o in &orgs {
            let (city, _, _, zip, ..) = CITIES[o.city];
            for p in &o.providers {
                self.out.row(
                    PROVIDERS,
                    &[
                        &p.id,
                        &o.id,
                        &p.name,
                        p.gender,
                        p.speciality,
                        &o.address,
                        city,
                        "MA",
                        zip,
                        &format!("{:.6}", o.lat),
                        &format!("{:.6}", o.lon),
                        &p.encounters.to_string(),
                        &p.procedures.to_string(),
                    ],
                )?;
            }
        }
        let payers = std::mem::take(&mut self.payers);
        for ((id, s), (name, ownership)) in payers.iter().zip(PAYER_LIST) {
            let government = *ownership == "GOVERNMENT";
            let insured = *ownership != "NO_INSURANCE";
            let (address, city, state, zip, phone) = if !insured {
                ("", "", "", "", "")
            } else if government {
                ("7500 Security Blvd", "Baltimore", "MD", "21244", "1-800-633-4227")
            } else {
                ("1 Health Plaza", "Hartford", "CT", "06156", "1-800-872-3862")
            };
            let uncovered = |n: u64| if insured { "0".to_owned() } else { n.to_string() };
            let covered = |n: u64| if insured { n.to_string() } else { "0".to_owned() };
            self.out.row(
                PAYERS,
                &[
                    id,
                    name,
                    ownership,
                    address,
                    city,
                    state,
                    zip,
                    phone,
                    &format!("{:.2}", s.covered),
                    &format!("{:.2}", s.uncovered),
                    &format!("{:.2}", s.covered * 0.1),
                    &covered(s.encounters),
                    &uncovered(s.encounters),
                    &covered(s.medications),
                    &uncovered(s.medications),
                    &covered(s.procedures),
                    &uncovered(s.procedures),
                    &covered(s.immunizations),
                    &uncovered(s.immunizations),
                    &s.customers.to_string(),
                    "0.83",
                    &s.member_months.to_string(),
                ],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header rows of Synthea 3.x's CSV export as documented (Synthea
    /// wiki, "CSV File Data Dictionary", and `CSVExporter`), written out
    /// independently of [`HEADERS`].
    const DOCUMENTED: &[(&str, &str)] = &[
        (
            "patients.csv",
            "Id,BIRTHDATE,DEATHDATE,SSN,DRIVERS,PASSPORT,PREFIX,FIRST,MIDDLE,LAST,SUFFIX,MAIDEN,MARITAL,RACE,ETHNICITY,GENDER,BIRTHPLACE,ADDRESS,CITY,STATE,COUNTY,FIPS,ZIP,LAT,LON,HEALTHCARE_EXPENSES,HEALTHCARE_COVERAGE,INCOME",
        ),
        (
            "encounters.csv",
            "Id,START,STOP,PATIENT,ORGANIZATION,PROVIDER,PAYER,ENCOUNTERCLASS,CODE,DESCRIPTION,BASE_ENCOUNTER_COST,TOTAL_CLAIM_COST,PAYER_COVERAGE,REASONCODE,REASONDESCRIPTION",
        ),
        ("conditions.csv", "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION"),
        (
            "medications.csv",
            "START,STOP,PATIENT,PAYER,ENCOUNTER,CODE,DESCRIPTION,BASE_COST,PAYER_COVERAGE,DISPENSES,TOTALCOST,REASONCODE,REASONDESCRIPTION",
        ),
        (
            "allergies.csv",
            "START,STOP,PATIENT,ENCOUNTER,CODE,SYSTEM,DESCRIPTION,TYPE,CATEGORY,REACTION1,DESCRIPTION1,SEVERITY1,REACTION2,DESCRIPTION2,SEVERITY2",
        ),
        ("observations.csv", "DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE"),
        ("immunizations.csv", "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,BASE_COST"),
        (
            "procedures.csv",
            "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION,BASE_COST,REASONCODE,REASONDESCRIPTION",
        ),
        ("careplans.csv", "Id,START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION,REASONCODE,REASONDESCRIPTION"),
        (
            "imaging_studies.csv",
            "Id,DATE,PATIENT,ENCOUNTER,SERIES_UID,BODYSITE_CODE,BODYSITE_DESCRIPTION,MODALITY_CODE,MODALITY_DESCRIPTION,INSTANCE_UID,SOP_CODE,SOP_DESCRIPTION,PROCEDURE_CODE",
        ),
        ("devices.csv", "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION,UDI"),
        ("supplies.csv", "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,QUANTITY"),
        ("organizations.csv", "Id,NAME,ADDRESS,CITY,STATE,ZIP,LAT,LON,PHONE,REVENUE,UTILIZATION"),
        (
            "providers.csv",
            "Id,ORGANIZATION,NAME,GENDER,SPECIALITY,ADDRESS,CITY,STATE,ZIP,LAT,LON,ENCOUNTERS,PROCEDURES",
        ),
        (
            "payers.csv",
            "Id,NAME,OWNERSHIP,ADDRESS,CITY,STATE_HEADQUARTERED,ZIP,PHONE,AMOUNT_COVERED,AMOUNT_UNCOVERED,REVENUE,COVERED_ENCOUNTERS,UNCOVERED_ENCOUNTERS,COVERED_MEDICATIONS,UNCOVERED_MEDICATIONS,COVERED_PROCEDURES,UNCOVERED_PROCEDURES,COVERED_IMMUNIZATIONS,UNCOVERED_IMMUNIZATIONS,UNIQUE_CUSTOMERS,QOLS_AVG,MEMBER_MONTHS",
        ),
        (
            "payer_transitions.csv",
            "PATIENT,MEMBERID,START_DATE,END_DATE,PAYER,SECONDARY_PAYER,PLAN_OWNERSHIP,OWNER_NAME",
        ),
        (
            "claims.csv",
            "Id,PATIENTID,PROVIDERID,PRIMARYPATIENTINSURANCEID,SECONDARYPATIENTINSURANCEID,DEPARTMENTID,PATIENTDEPARTMENTID,DIAGNOSIS1,DIAGNOSIS2,DIAGNOSIS3,DIAGNOSIS4,DIAGNOSIS5,DIAGNOSIS6,DIAGNOSIS7,DIAGNOSIS8,REFERRINGPROVIDERID,APPOINTMENTID,CURRENTILLNESSDATE,SERVICEDATE,SUPERVISINGPROVIDERID,STATUS1,STATUS2,STATUSP,OUTSTANDING1,OUTSTANDING2,OUTSTANDINGP,LASTBILLEDDATE1,LASTBILLEDDATE2,LASTBILLEDDATEP,HEALTHCARECLAIMTYPEID1,HEALTHCARECLAIMTYPEID2",
        ),
    ];

    #[test]
    fn the_headers_are_the_documented_ones_and_every_row_fits() {
        assert_eq!(HEADERS.len(), DOCUMENTED.len());
        let dir = tempfile::tempdir().expect("tmp");
        let report = write(dir.path(), &SyntheaOptions { patients: 4, seed: 9 }, |_| {}).expect("write");
        for ((file, header), (doc_file, doc_header)) in HEADERS.iter().zip(DOCUMENTED) {
            assert_eq!(file, doc_file);
            assert_eq!(header.join(","), *doc_header, "{file}");
            let text = std::fs::read_to_string(dir.path().join(file)).expect("file");
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some(*doc_header), "{file}");
            let width = header.len();
            let mut rows = 0;
            for line in lines {
                assert_eq!(line.split(',').count(), width, "{file}: {line}");
                rows += 1;
            }
            assert_eq!(report.rows[*file], rows, "{file}");
            let sometimes = ["allergies.csv", "imaging_studies.csv", "devices.csv", "supplies.csv"];
            assert!(rows > 0 || sometimes.contains(file), "{file}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_observations_dominate() {
        let a = tempfile::tempdir().expect("tmp");
        let b = tempfile::tempdir().expect("tmp");
        let options = SyntheaOptions { patients: 12, seed: 3 };
        let ra = write(a.path(), &options, |_| {}).expect("a");
        write(b.path(), &options, |_| {}).expect("b");
        for (file, _) in HEADERS {
            assert_eq!(std::fs::read(a.path().join(file)).ok(), std::fs::read(b.path().join(file)).ok(), "{file}");
        }
        assert!(ra.rows["observations.csv"] * 2 > ra.total_rows(), "{:?}", ra.rows);
        assert_eq!(ra.rows["patients.csv"], 12);
        let obs = std::fs::read_to_string(a.path().join("observations.csv")).expect("obs");
        let row = obs.lines().nth(1).expect("a row");
        let date = row.split(',').next().expect("DATE");
        assert!(date.len() == 20 && date.ends_with('Z') && date.as_bytes()[10] == b'T', "{date}");
        assert!(write(a.path(), &SyntheaOptions { patients: 0, seed: 1 }, |_| {}).is_err());
    }
}
