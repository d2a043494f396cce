//! The patient-history generator behind [`super::patient_bundle`]: draws one
//! patient's demographics and a plausible ambulatory history (wellness,
//! symptom and chronic follow-up visits with vitals, labs, diagnoses,
//! prescriptions, immunizations, procedures and allergies) from a seeded PRNG.
//!
//! Determinism: every draw comes from a xoshiro256++ stream keyed by
//! (seed, patient index), or (seed, pool index) for shared practitioners and
//! organizations, and dates are relative to a fixed anchor day, so the same
//! seed always yields the same bytes. The reference style (in-bundle
//! `urn:uuid:` or `Type/id`) only changes how references are written, never
//! what is drawn.

use super::codes::{self, Analyte, Lab, Panel};
use super::names::{self, City};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};
use serde_json::{Map, Number, Value, json};
use time::{Date, Duration, Month};

/// How references between generated resources are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RefStyle {
    /// `urn:uuid:<uuid>` with `fullUrl`s, for a transaction Bundle
    /// (<http://hl7.org/fhir/R4/bundle.html#references>); resources carry no id.
    Urn,
    /// `Type/<id>` with the id set on each resource, as a Bulk Data export writes.
    Relative,
}

/// One generated resource.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) resource_type: &'static str,
    pub(super) id: String,
    pub(super) resource: Value,
    /// `Bundle.entry.request.ifNoneExist` for resources shared between
    /// patients (practitioners, organizations), created conditionally.
    pub(super) if_none_exist: Option<String>,
}

/// The day histories end: fixed, so output never depends on the wall clock.
fn anchor() -> Date {
    Date::from_calendar_date(2025, Month::June, 30).unwrap_or(Date::MIN)
}

/// Practitioners per clinic; a clinic per city.
const PRACTITIONERS_PER_CLINIC: usize = 4;

/// Stream tags, so that patients, practitioners and organizations draw from
/// independent streams of the same seed.
const TAG_PATIENT: u64 = 0x5041_5449_454e_5400;
const TAG_PRACTITIONER: u64 = 0x5052_4143_5449_5400;
const TAG_ORGANIZATION: u64 = 0x4f52_4741_4e49_5a00;

/// SplitMix64 finaliser: spreads nearby seeds and indexes over the state space.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn stream(seed: u64, tag: u64, index: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(splitmix(splitmix(seed ^ tag) ^ index))
}

/// A three-digit tag of the seed, put into identifiers so that data sets of
/// different seeds loaded into one server do not share MRNs or NPIs.
fn seed_tag(seed: u64) -> u64 {
    splitmix(seed) % 1000
}

/// A random (v4-format) UUID drawn from `rng`.
fn uuid(rng: &mut Xoshiro256PlusPlus) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// A JSON number written with exactly `places` decimals from a value scaled
/// by 10^places (`fixed(150, 2)` is `1.50`): FHIR decimals keep their
/// precision (<http://hl7.org/fhir/R4/datatypes.html#decimal>), so the text is
/// built from integers and never goes through f64 formatting.
pub(super) fn fixed(scaled: i64, places: u32) -> Value {
    let text = if places == 0 {
        scaled.to_string()
    } else {
        let unit = 10i64.pow(places);
        let sign = if scaled < 0 { "-" } else { "" };
        let abs = scaled.unsigned_abs();
        let unit = unit.unsigned_abs();
        format!("{sign}{}.{:0width$}", abs / unit, abs % unit, width = places as usize)
    };
    text.parse::<Number>().map(Value::Number).unwrap_or(Value::Null)
}

/// Scales a measured value to the integer the written decimal stands for.
fn scale(value: f64, places: u32) -> i64 {
    (value * 10f64.powi(places as i32)).round() as i64
}

fn date_text(date: Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

fn add_days(date: Date, days: i64) -> Date {
    date.checked_add(Duration::days(days)).unwrap_or(date)
}

/// A local time on a day, written as a FHIR dateTime/instant with the
/// patient's UTC offset (a time requires a zone:
/// <http://hl7.org/fhir/R4/datatypes.html#dateTime>).
#[derive(Debug, Clone, Copy)]
struct Moment {
    date: Date,
    /// Minutes after midnight, below 24 * 60.
    minute: u32,
}

impl Moment {
    fn text(self, offset: &str) -> String {
        format!("{}T{:02}:{:02}:00{offset}", date_text(self.date), self.minute / 60, self.minute % 60)
    }

    fn plus_minutes(self, minutes: u32) -> Moment {
        let total = self.minute + minutes;
        Moment { date: add_days(self.date, i64::from(total / (24 * 60))), minute: total % (24 * 60) }
    }
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

fn concept(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [coding(system, code, display)], "text": display })
}

fn quantity(value: Value, unit: &str) -> Value {
    json!({ "value": value, "unit": unit, "system": codes::UCUM, "code": unit })
}

fn pick<'a, T>(rng: &mut Xoshiro256PlusPlus, items: &'a [T]) -> &'a T {
    // Every table is a non-empty constant; index 0 is a safe fallback.
    let index = rng.random_range(0..items.len().max(1));
    &items[index.min(items.len().saturating_sub(1))]
}

/// NPI check digit: the Luhn algorithm over the 9 digits prefixed by 80840
/// (CMS, "Requirements for National Provider Identifier Check Digit").
fn npi(base9: u64) -> String {
    let digits = format!("80840{base9:09}");
    let mut sum = 0u32;
    // Walk right to left; the check digit will sit to the right, so the
    // rightmost digit here is doubled.
    for (position, c) in digits.chars().rev().enumerate() {
        let mut d = c.to_digit(10).unwrap_or(0);
        if position % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    let check = (10 - sum % 10) % 10;
    format!("{base9:09}{check}")
}

/// A street address in `city`, with a geolocation extension.
fn address(rng: &mut Xoshiro256PlusPlus, city: &City, use_: &str) -> Value {
    let number = rng.random_range(1..9999);
    let street = pick(rng, names::STREETS);
    let suffix = pick(rng, names::STREET_SUFFIX);
    let zip = format!("{}{:02}", city.zip3, rng.random_range(1..99));
    let lat = city.lat_micro + rng.random_range(-40_000..40_000);
    let lon = city.lon_micro + rng.random_range(-40_000..40_000);
    json!({
        "extension": [{
            "url": codes::GEOLOCATION,
            "extension": [
                { "url": "latitude", "valueDecimal": fixed(lat, 6) },
                { "url": "longitude", "valueDecimal": fixed(lon, 6) },
            ],
        }],
        "use": use_,
        "line": [format!("{number} {street} {suffix}")],
        "city": city.name,
        "state": city.state,
        "postalCode": zip,
        "country": "US",
    })
}

/// A fictional telephone number (the 555-01xx range is reserved for fiction).
fn phone(rng: &mut Xoshiro256PlusPlus, city: &City) -> String {
    format!("{}-555-01{:02}", city.area_code, rng.random_range(0..100))
}

/// Shared practitioner `pool` of `seed`: the same for every patient.
pub(super) fn practitioner(seed: u64, pool: usize) -> Entry {
    let mut rng = stream(seed, TAG_PRACTITIONER, pool as u64);
    let id = uuid(&mut rng);
    let city_index = (pool / PRACTITIONERS_PER_CLINIC) % names::CITIES.len();
    let city = &names::CITIES[city_index];
    let female = rng.random_bool(0.5);
    let given = if female { pick(&mut rng, names::GIVEN_FEMALE) } else { pick(&mut rng, names::GIVEN_MALE) };
    let family = pick(&mut rng, names::FAMILY_GENERAL);
    let number = npi(100_000_000 + seed_tag(seed) * 100_000 + pool as u64);
    let resource = json!({
        "resourceType": "Practitioner",
        "identifier": [{ "system": codes::NPI, "value": number }],
        "active": true,
        "name": [{ "use": "official", "family": family, "given": [given], "prefix": ["Dr."] }],
        "telecom": [{ "system": "phone", "value": phone(&mut rng, city), "use": "work" }],
        "address": [address(&mut rng, city, "work")],
        "gender": if female { "female" } else { "male" },
    });
    Entry {
        resource_type: "Practitioner",
        id,
        resource,
        if_none_exist: Some(format!("identifier={}|{number}", codes::NPI)),
    }
}

/// The clinic of city `city_index` of `seed`.
pub(super) fn organization(seed: u64, city_index: usize) -> Entry {
    let mut rng = stream(seed, TAG_ORGANIZATION, city_index as u64);
    let id = uuid(&mut rng);
    let city = &names::CITIES[city_index % names::CITIES.len()];
    let stem = names::CLINIC_STEMS[city_index % names::CLINIC_STEMS.len()];
    let value = format!("{:03}-{city_index:03}", seed_tag(seed));
    let resource = json!({
        "resourceType": "Organization",
        "identifier": [{ "system": codes::ORG_ID, "value": value }],
        "active": true,
        "type": [concept(codes::ORG_TYPE, "prov", "Healthcare Provider")],
        "name": format!("{stem} Family Medicine of {}", city.name),
        "telecom": [{ "system": "phone", "value": phone(&mut rng, city), "use": "work" }],
        "address": [address(&mut rng, city, "work")],
    });
    Entry {
        resource_type: "Organization",
        id,
        resource,
        if_none_exist: Some(format!("identifier={}|{value}", codes::ORG_ID)),
    }
}

/// The patient's physiology: baselines around which each visit's values vary.
struct Body {
    female: bool,
    age_at_anchor: u32,
    birth: Date,
    /// Adult height, cm.
    height: f64,
    /// Body mass index baseline, kg/m2.
    bmi: f64,
    systolic: f64,
    diastolic: f64,
    heart_rate: f64,
    labs: [f64; 13],
}

impl Body {
    fn age_on(&self, date: Date) -> u32 {
        let mut age = date.year() - self.birth.year();
        if (u8::from(date.month()), date.day()) < (u8::from(self.birth.month()), self.birth.day()) {
            age -= 1;
        }
        u32::try_from(age.max(0)).unwrap_or(0)
    }

    /// Height on `date`: children grow along a rough linear curve.
    fn height_on(&self, date: Date) -> f64 {
        let age = self.age_on(date);
        if age >= 18 {
            self.height
        } else {
            let child = 75.0 + 6.0 * f64::from(age);
            child.min(self.height) * if self.female { 0.97 } else { 1.0 }
        }
    }

    fn lab(&self, analyte: Analyte) -> f64 {
        self.labs[analyte as usize]
    }
}

/// A visit being generated: its context for the resources recorded during it.
struct Visit {
    encounter: String,
    practitioner: String,
    start: Moment,
    end: Moment,
}

struct Generator {
    rng: Xoshiro256PlusPlus,
    seed: u64,
    style: RefStyle,
    entries: Vec<Entry>,
    /// Most entries this patient may have.
    budget: usize,
    city_index: usize,
    offset: &'static str,
    patient: String,
    organization: String,
    /// Pool indexes of practitioners already in `entries`, with their references.
    practitioners: Vec<(usize, String)>,
}

impl Generator {
    fn room(&self) -> bool {
        self.entries.len() < self.budget
    }

    fn reference(&self, resource_type: &str, id: &str) -> String {
        match self.style {
            RefStyle::Urn => format!("urn:uuid:{id}"),
            RefStyle::Relative => format!("{resource_type}/{id}"),
        }
    }

    /// Adds a resource (setting its id in the Relative style) and returns its
    /// reference; `None` when the budget is spent.
    fn add(&mut self, resource_type: &'static str, mut resource: Value) -> Option<String> {
        if !self.room() {
            return None;
        }
        let id = uuid(&mut self.rng);
        if self.style == RefStyle::Relative {
            set_id(&mut resource, &id);
        }
        let reference = self.reference(resource_type, &id);
        self.entries.push(Entry { resource_type, id, resource, if_none_exist: None });
        Some(reference)
    }

    /// Adds a shared entry (practitioner or organization) and returns its reference.
    fn add_shared(&mut self, mut entry: Entry) -> String {
        if self.style == RefStyle::Relative {
            set_id(&mut entry.resource, &entry.id);
        }
        let reference = self.reference(entry.resource_type, &entry.id);
        self.entries.push(entry);
        reference
    }

    /// The reference to one of the clinic's practitioners, adding it on first use.
    fn practitioner(&mut self, slot: usize) -> Option<String> {
        let pool = self.city_index * PRACTITIONERS_PER_CLINIC + slot % PRACTITIONERS_PER_CLINIC;
        if let Some((_, reference)) = self.practitioners.iter().find(|(p, _)| *p == pool) {
            return Some(reference.clone());
        }
        if !self.room() {
            return None;
        }
        let reference = self.add_shared(practitioner(self.seed, pool));
        self.practitioners.push((pool, reference.clone()));
        Some(reference)
    }
}

fn set_id(resource: &mut Value, id: &str) {
    if let Value::Object(map) = resource {
        // `id` goes right after `resourceType`, where FHIR JSON puts it.
        let mut ordered = Map::with_capacity(map.len() + 1);
        let old = std::mem::take(map);
        for (key, value) in old {
            let is_type = key == "resourceType";
            ordered.insert(key, value);
            if is_type {
                ordered.insert("id".to_owned(), Value::String(id.to_owned()));
            }
        }
        *map = ordered;
    }
}

/// Generates one patient: at least the clinic, the primary practitioner and
/// the Patient, then visits until `size` resources (drawn in 40..=60 when `None`).
pub(super) fn patient(seed: u64, index: usize, size: Option<usize>, style: RefStyle) -> Vec<Entry> {
    let mut rng = stream(seed, TAG_PATIENT, index as u64);
    // Drawn even when a size is given, so a heavy patient shares its
    // demographics with the default-sized patient of the same index.
    let default_size = rng.random_range(40..=60usize);
    let budget = size.unwrap_or(default_size).max(3);
    let city_index = rng.random_range(0..names::CITIES.len());
    let city = &names::CITIES[city_index];
    let mut g = Generator {
        rng,
        seed,
        style,
        entries: Vec::with_capacity(budget),
        budget,
        city_index,
        offset: city.utc_offset,
        patient: String::new(),
        organization: String::new(),
        practitioners: Vec::new(),
    };
    g.organization = g.add_shared(organization(seed, city_index));
    let primary_slot = g.rng.random_range(0..PRACTITIONERS_PER_CLINIC);
    let primary = g.practitioner(primary_slot).unwrap_or_default();
    let mut body = draw_body(&mut g.rng);
    let chronic = draw_chronic(&mut g.rng, &mut body);
    let patient = patient_resource(&mut g, index, &body, city, &primary);
    let id = uuid(&mut g.rng);
    g.patient = g.add_shared(Entry { resource_type: "Patient", id, resource: patient, if_none_exist: None });
    history(&mut g, &body, &chronic, primary_slot);
    g.entries
}

fn draw_body(rng: &mut Xoshiro256PlusPlus) -> Body {
    let female = rng.random_bool(0.51);
    let age_at_anchor: u32 = if rng.random_bool(0.15) { rng.random_range(2..18) } else { rng.random_range(18..91) };
    let birth = add_days(anchor(), -(i64::from(age_at_anchor) * 365 + i64::from(age_at_anchor / 4) + rng.random_range(0..365)));
    let height = if female { rng.random_range(152.0..175.0) } else { rng.random_range(163.0..190.0) };
    let bmi = rng.random_range(19.0..29.5);
    let mut labs = [0.0; 13];
    labs[Analyte::Wbc as usize] = rng.random_range(4.8..10.0);
    labs[Analyte::Hemoglobin as usize] = if female { rng.random_range(12.2..15.2) } else { rng.random_range(13.6..17.0) };
    labs[Analyte::Hematocrit as usize] = labs[Analyte::Hemoglobin as usize] * rng.random_range(2.85..3.05);
    labs[Analyte::Platelets as usize] = rng.random_range(170.0..380.0);
    labs[Analyte::Glucose as usize] = rng.random_range(76.0..97.0);
    labs[Analyte::Creatinine as usize] = if female { rng.random_range(0.55..1.0) } else { rng.random_range(0.7..1.2) };
    labs[Analyte::Sodium as usize] = rng.random_range(137.0..144.0);
    labs[Analyte::Potassium as usize] = rng.random_range(3.7..4.9);
    labs[Analyte::Cholesterol as usize] = rng.random_range(150.0..199.0);
    labs[Analyte::Triglycerides as usize] = rng.random_range(60.0..149.0);
    labs[Analyte::Ldl as usize] = rng.random_range(70.0..129.0);
    labs[Analyte::Hdl as usize] = rng.random_range(38.0..75.0);
    labs[Analyte::HbA1c as usize] = rng.random_range(4.6..5.6);
    Body {
        female,
        age_at_anchor,
        birth,
        height,
        bmi,
        systolic: rng.random_range(104.0..128.0),
        diastolic: rng.random_range(64.0..82.0),
        heart_rate: rng.random_range(58.0..92.0),
        labs,
    }
}

/// Draws the chronic conditions (indexes into [`codes::CHRONIC`]) and adjusts
/// the body's baselines to match them.
fn draw_chronic(rng: &mut Xoshiro256PlusPlus, body: &mut Body) -> Vec<usize> {
    let mut chosen = Vec::new();
    for (i, c) in codes::CHRONIC.iter().enumerate() {
        let roll = rng.random_range(0..100u32);
        if body.age_at_anchor >= c.min_age && roll < c.percent {
            // Diabetes and prediabetes exclude each other.
            if (c.snomed == "714628002" && chosen.contains(&1)) || (c.snomed == "44054006" && chosen.contains(&2)) {
                continue;
            }
            chosen.push(i);
        }
    }
    for &i in &chosen {
        match codes::CHRONIC[i].snomed {
            "38341003" => {
                body.systolic = rng.random_range(136.0..162.0);
                body.diastolic = rng.random_range(86.0..101.0);
            }
            "44054006" => {
                body.labs[Analyte::Glucose as usize] = rng.random_range(128.0..210.0);
                body.labs[Analyte::HbA1c as usize] = rng.random_range(6.8..9.6);
            }
            "714628002" => {
                body.labs[Analyte::Glucose as usize] = rng.random_range(100.0..125.0);
                body.labs[Analyte::HbA1c as usize] = rng.random_range(5.7..6.4);
            }
            "55822004" => {
                body.labs[Analyte::Cholesterol as usize] = rng.random_range(205.0..285.0);
                body.labs[Analyte::Ldl as usize] = rng.random_range(130.0..195.0);
                body.labs[Analyte::Triglycerides as usize] = rng.random_range(150.0..320.0);
            }
            "162864005" => body.bmi = rng.random_range(30.5..41.0),
            "709044004" => body.labs[Analyte::Creatinine as usize] = rng.random_range(1.4..2.6),
            _ => {}
        }
    }
    chosen
}

fn patient_resource(g: &mut Generator, index: usize, body: &Body, city: &City, primary: &str) -> Value {
    let rng = &mut g.rng;
    // OMB race and ethnicity categories (US Core race/ethnicity extensions).
    let race_roll = rng.random_range(0..100u32);
    let (race_code, race_display) = match race_roll {
        0..=59 => ("2106-3", "White"),
        60..=72 => ("2054-5", "Black or African American"),
        73..=81 => ("2028-9", "Asian"),
        82..=83 => ("1002-5", "American Indian or Alaska Native"),
        84 => ("2076-8", "Native Hawaiian or Other Pacific Islander"),
        _ => ("2131-1", "Other Race"),
    };
    let hispanic = rng.random_bool(0.19);
    let (eth_code, eth_display) =
        if hispanic { ("2135-2", "Hispanic or Latino") } else { ("2186-5", "Not Hispanic or Latino") };
    let asian = race_code == "2028-9";
    let family_list = if hispanic && rng.random_bool(0.85) {
        names::FAMILY_HISPANIC
    } else if asian && rng.random_bool(0.85) {
        names::FAMILY_ASIAN
    } else {
        names::FAMILY_GENERAL
    };
    let given_list = match (body.female, hispanic && rng.random_bool(0.8)) {
        (true, true) => names::GIVEN_FEMALE_HISPANIC,
        (true, false) => names::GIVEN_FEMALE,
        (false, true) => names::GIVEN_MALE_HISPANIC,
        (false, false) => names::GIVEN_MALE,
    };
    let family = *pick(rng, family_list);
    let mut given = vec![*pick(rng, given_list)];
    if rng.random_bool(0.6) {
        let middle = *pick(rng, given_list);
        if middle != given[0] {
            given.push(middle);
        }
    }
    let adult = body.age_at_anchor >= 18;
    let marital = if !adult {
        ("S", "Never Married")
    } else {
        match rng.random_range(0..100u32) {
            0..=49 => ("M", "Married"),
            50..=79 => ("S", "Never Married"),
            80..=91 => ("D", "Divorced"),
            _ => ("W", "Widowed"),
        }
    };
    let mut official = Map::new();
    official.insert("use".into(), json!("official"));
    official.insert("family".into(), json!(family));
    official.insert("given".into(), json!(given));
    if adult {
        let prefix = match (body.female, marital.0) {
            (false, _) => "Mr.",
            (true, "M") => "Mrs.",
            (true, _) => "Ms.",
        };
        official.insert("prefix".into(), json!([prefix]));
    }
    let mut name_list = vec![Value::Object(official)];
    if body.female && marital.0 == "M" && rng.random_bool(0.5) {
        let maiden = *pick(rng, family_list);
        name_list.push(json!({ "use": "maiden", "family": maiden, "given": given }));
    }
    let mothers_maiden = *pick(rng, family_list);
    let tag = seed_tag(g.seed);
    let mrn = format!("{}{:07}", tag + 100, index % 10_000_000);
    let ssn = format!("999-{:02}-{:04}", rng.random_range(10..100), rng.random_range(1000..10_000));
    let mut telecom = vec![json!({ "system": "phone", "value": phone(rng, city), "use": "home" })];
    if adult && rng.random_bool(0.6) {
        telecom.push(json!({ "system": "phone", "value": phone(rng, city), "use": "mobile" }));
    }
    let language = if hispanic && rng.random_bool(0.4) {
        ("es", "Spanish")
    } else if asian && rng.random_bool(0.3) {
        *pick(rng, &[("vi", "Vietnamese"), ("zh", "Chinese"), ("ko", "Korean")])
    } else {
        ("en-US", "English (United States)")
    };
    let home = address(rng, city, "home");
    json!({
        "resourceType": "Patient",
        "extension": [
            {
                "url": codes::US_CORE_RACE,
                "extension": [
                    { "url": "ombCategory", "valueCoding": coding(codes::OMB_RACE_ETHNICITY, race_code, race_display) },
                    { "url": "text", "valueString": race_display },
                ],
            },
            {
                "url": codes::US_CORE_ETHNICITY,
                "extension": [
                    { "url": "ombCategory", "valueCoding": coding(codes::OMB_RACE_ETHNICITY, eth_code, eth_display) },
                    { "url": "text", "valueString": eth_display },
                ],
            },
            { "url": codes::MOTHERS_MAIDEN_NAME, "valueString": mothers_maiden },
            { "url": codes::US_CORE_BIRTHSEX, "valueCode": if body.female { "F" } else { "M" } },
        ],
        "identifier": [
            {
                "use": "usual",
                "type": concept(codes::V2_0203, "MR", "Medical Record Number"),
                "system": codes::MRN,
                "value": mrn,
            },
            {
                "type": concept(codes::V2_0203, "SS", "Social Security Number"),
                "system": codes::SSN,
                "value": ssn,
            },
        ],
        "name": name_list,
        "telecom": telecom,
        "gender": if body.female { "female" } else { "male" },
        "birthDate": date_text(body.birth),
        "address": [home],
        "maritalStatus": concept(codes::MARITAL_STATUS, marital.0, marital.1),
        "multipleBirthBoolean": false,
        "communication": [{ "language": concept(codes::BCP47, language.0, language.1) }],
        "generalPractitioner": [{ "reference": primary }],
        "managingOrganization": { "reference": g.organization },
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Wellness,
    Symptom,
    FollowUp,
}

/// A diagnosed chronic condition: its table index and Condition reference.
struct Diagnosed {
    chronic: usize,
    reference: String,
}

/// Generates visits until the budget is spent.
fn history(g: &mut Generator, body: &Body, chronic: &[usize], primary_slot: usize) {
    let end = anchor();
    let years = if body.age_at_anchor >= 18 {
        g.rng.random_range(3..=10i64)
    } else {
        g.rng.random_range(1..=i64::from(body.age_at_anchor.clamp(1, 10)))
    };
    let start = add_days(end, -(years * 365));
    let span = (end - start).whole_days().max(1);
    // Roughly seven resources per visit; more dates are drawn if they run out.
    let planned = (g.budget / 7).max(2);
    let mut dates = draw_dates(&mut g.rng, start, span, planned);
    // Each chronic condition is either known at the first visit or diagnosed
    // at a later one (by position in the date list).
    let diagnosis_at: Vec<(usize, usize)> = chronic
        .iter()
        .map(|&c| (c, if g.rng.random_bool(0.6) { 0 } else { g.rng.random_range(0..planned) }))
        .collect();
    let mut diagnosed: Vec<Diagnosed> = Vec::new();
    let mut last_wellness: Option<Date> = None;
    let mut given_vaccines: Vec<&'static str> = Vec::new();
    let mut colonoscopy_done = false;
    let mut position = 0usize;
    while g.room() {
        if position >= dates.len() {
            let last = dates.last().copied().unwrap_or(start);
            let rest = (end - last).whole_days().max(1);
            dates.extend(draw_dates(&mut g.rng, last, rest, planned / 2 + 1));
        }
        let date = dates[position];
        let due_wellness = last_wellness.is_none_or(|d| (date - d).whole_days() >= 330);
        let kind = if position == 0 || due_wellness {
            Kind::Wellness
        } else if !diagnosed.is_empty() && g.rng.random_bool(0.55) {
            Kind::FollowUp
        } else {
            Kind::Symptom
        };
        if kind == Kind::Wellness {
            last_wellness = Some(date);
        }
        // Mostly the primary practitioner; sometimes a colleague covers.
        let slot = if g.rng.random_bool(0.8) { primary_slot } else { g.rng.random_range(0..PRACTITIONERS_PER_CLINIC) };
        let Some(practitioner) = g.practitioner(slot) else { break };
        let start_minute = g.rng.random_range(8 * 60..16 * 60);
        let start_moment = Moment { date, minute: start_minute - start_minute % 5 };
        let length = match kind {
            Kind::Wellness => 40,
            Kind::Symptom => 20,
            Kind::FollowUp => 25,
        } + g.rng.random_range(0..4) * 5;
        let visit_end = start_moment.plus_minutes(length);
        let follow_up_of = if kind == Kind::FollowUp { Some(g.rng.random_range(0..diagnosed.len().max(1))) } else { None };
        let acute = if kind == Kind::Symptom { Some(g.rng.random_range(0..codes::ACUTE.len())) } else { None };
        let Some(encounter) = encounter(g, kind, start_moment, visit_end, &practitioner, follow_up_of.and_then(|i| diagnosed.get(i)), acute)
        else {
            break;
        };
        let visit = Visit { encounter, practitioner, start: start_moment, end: visit_end };
        if position == 0 {
            allergies(g, body, &visit);
        }
        // Newly diagnosed chronic conditions, with their first prescription.
        for &(c, at) in &diagnosis_at {
            if at == position && !diagnosed.iter().any(|d| d.chronic == c) {
                let known_before = position == 0 && at == 0;
                let Some(reference) = chronic_condition(g, body, c, &visit, known_before) else { return };
                if let Some(m) = codes::CHRONIC[c].medication {
                    prescribe(g, m, &visit, &reference, true);
                }
                diagnosed.push(Diagnosed { chronic: c, reference });
            }
        }
        match kind {
            Kind::Wellness => {
                vitals(g, body, &visit, Kind::Wellness, false);
                let age = body.age_on(date);
                if age >= 18 {
                    lab_panel(g, body, &visit, Panel::Cbc);
                    lab_panel(g, body, &visit, Panel::Metabolic);
                    if age >= 30 || g.rng.random_bool(0.3) {
                        lab_panel(g, body, &visit, Panel::Lipid);
                    }
                }
                for d in &diagnosed {
                    if codes::CHRONIC[d.chronic].follow_up_lab == Some(Panel::HbA1c) {
                        lab_panel(g, body, &visit, Panel::HbA1c);
                        break;
                    }
                }
                immunizations(g, age, &visit, &mut given_vaccines);
                if !diagnosed.is_empty() {
                    procedure(g, 0, &visit, None);
                }
                if age >= 12 && g.rng.random_bool(0.5) {
                    procedure(g, 1, &visit, None);
                }
                if age < 18 {
                    procedure(g, 7, &visit, None);
                } else if age >= 50 && !colonoscopy_done && g.rng.random_bool(0.15) {
                    colonoscopy_done = true;
                    procedure(g, 5, &visit, None);
                } else if g.rng.random_bool(0.3) {
                    procedure(g, 2, &visit, None);
                }
                // Renew maintenance drugs at the yearly visit.
                for d in &diagnosed {
                    if let Some(m) = codes::CHRONIC[d.chronic].medication {
                        prescribe(g, m, &visit, &d.reference, true);
                    }
                }
            }
            Kind::FollowUp => {
                vitals(g, body, &visit, Kind::FollowUp, false);
                if let Some(d) = follow_up_of.and_then(|i| diagnosed.get(i)) {
                    let c = &codes::CHRONIC[d.chronic];
                    if let Some(panel) = c.follow_up_lab {
                        lab_panel(g, body, &visit, panel);
                    }
                    if c.snomed == "195967001" || c.snomed == "13645005" {
                        procedure(g, 4, &visit, Some(&d.reference));
                    }
                    if let Some(m) = c.medication {
                        prescribe(g, m, &visit, &d.reference, true);
                    }
                }
            }
            Kind::Symptom => {
                if let Some(a) = acute.and_then(|i| codes::ACUTE.get(i)) {
                    vitals(g, body, &visit, Kind::Symptom, a.fever);
                    let Some(reference) = acute_condition(g, a, &visit) else { return };
                    if let Some(p) = a.procedure {
                        procedure(g, p, &visit, Some(&reference));
                    }
                    if let Some(m) = a.medication {
                        prescribe(g, m, &visit, &reference, false);
                    }
                }
            }
        }
        position += 1;
    }
}

fn draw_dates(rng: &mut Xoshiro256PlusPlus, from: Date, span: i64, count: usize) -> Vec<Date> {
    let mut dates: Vec<Date> = (0..count).map(|_| add_days(from, rng.random_range(0..span))).collect();
    dates.sort();
    dates
}

fn encounter(
    g: &mut Generator,
    kind: Kind,
    start: Moment,
    end: Moment,
    practitioner: &str,
    follow_up_of: Option<&Diagnosed>,
    acute: Option<usize>,
) -> Option<String> {
    let (code, display) = match kind {
        Kind::Wellness => codes::ENC_WELLNESS,
        Kind::Symptom => codes::ENC_SYMPTOM,
        Kind::FollowUp => codes::ENC_FOLLOW_UP,
    };
    let period = json!({ "start": start.text(g.offset), "end": end.text(g.offset) });
    let mut resource = json!({
        "resourceType": "Encounter",
        "status": "finished",
        "class": coding(codes::ACT_CODE, "AMB", "ambulatory"),
        "type": [concept(codes::SNOMED, code, display)],
        "subject": { "reference": g.patient },
        "participant": [{
            "type": [concept(codes::PARTICIPATION_TYPE, "PPRF", "primary performer")],
            "period": period.clone(),
            "individual": { "reference": practitioner },
        }],
        "period": period,
    });
    if let Value::Object(map) = &mut resource {
        if let Some(a) = acute.and_then(|i| codes::ACUTE.get(i)) {
            map.insert("reasonCode".into(), json!([concept(codes::SNOMED, a.snomed, a.display)]));
        }
        if let Some(d) = follow_up_of {
            map.insert("reasonReference".into(), json!([{ "reference": d.reference }]));
        }
        map.insert("serviceProvider".into(), json!({ "reference": g.organization }));
    }
    g.add("Encounter", resource)
}

fn condition_code(snomed: &str, icd10: &str, display: &str) -> Value {
    json!({
        "coding": [coding(codes::SNOMED, snomed, display), coding(codes::ICD10CM, icd10, display)],
        "text": display,
    })
}

fn chronic_condition(g: &mut Generator, body: &Body, c: usize, visit: &Visit, known_before: bool) -> Option<String> {
    let chronic = &codes::CHRONIC[c];
    // A condition known at the first visit began some years earlier, but
    // never before the age it is drawn from.
    let onset = if known_before {
        let earliest = add_days(body.birth, i64::from(chronic.min_age) * 365 + 30);
        let span = (visit.start.date - earliest).whole_days();
        if span > 1 { add_days(earliest, g.rng.random_range(0..span)) } else { visit.start.date }
    } else {
        visit.start.date
    };
    let resource = json!({
        "resourceType": "Condition",
        "clinicalStatus": concept(codes::CONDITION_CLINICAL, "active", "Active"),
        "verificationStatus": concept(codes::CONDITION_VER, "confirmed", "Confirmed"),
        "category": [concept(codes::CONDITION_CATEGORY, "problem-list-item", "Problem List Item")],
        "code": condition_code(chronic.snomed, chronic.icd10, chronic.display),
        "subject": { "reference": g.patient },
        "encounter": { "reference": visit.encounter },
        "onsetDateTime": date_text(onset),
        "recordedDate": visit.start.text(g.offset),
        "recorder": { "reference": visit.practitioner },
    });
    g.add("Condition", resource)
}

fn acute_condition(g: &mut Generator, a: &codes::Acute, visit: &Visit) -> Option<String> {
    let onset = add_days(visit.start.date, -g.rng.random_range(1..5));
    let abatement = add_days(visit.start.date, a.days + g.rng.random_range(-2..5));
    let resolved = abatement < anchor();
    let mut resource = json!({
        "resourceType": "Condition",
        "clinicalStatus": if resolved {
            concept(codes::CONDITION_CLINICAL, "resolved", "Resolved")
        } else {
            concept(codes::CONDITION_CLINICAL, "active", "Active")
        },
        "verificationStatus": concept(codes::CONDITION_VER, "confirmed", "Confirmed"),
        "category": [concept(codes::CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")],
        "code": condition_code(a.snomed, a.icd10, a.display),
        "subject": { "reference": g.patient },
        "encounter": { "reference": visit.encounter },
        "onsetDateTime": date_text(onset),
    });
    if let Value::Object(map) = &mut resource {
        // con-4: an abatement implies the condition is no longer active.
        if resolved {
            map.insert("abatementDateTime".into(), json!(date_text(abatement)));
        }
        map.insert("recordedDate".into(), json!(visit.start.text(g.offset)));
        map.insert("recorder".into(), json!({ "reference": visit.practitioner }));
    }
    g.add("Condition", resource)
}

fn allergies(g: &mut Generator, body: &Body, visit: &Visit) {
    if !g.rng.random_bool(0.35) {
        return;
    }
    let count = g.rng.random_range(1..=3usize);
    let mut seen: Vec<usize> = Vec::new();
    for _ in 0..count {
        let i = g.rng.random_range(0..codes::ALLERGIES.len());
        if seen.contains(&i) {
            continue;
        }
        seen.push(i);
        let a = &codes::ALLERGIES[i];
        let severe = a.reaction.0 == "39579001";
        let onset_years = g.rng.random_range(1..=body.age_at_anchor.max(1));
        let onset = add_days(body.birth, i64::from(onset_years) * 365);
        let resource = json!({
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": concept(codes::ALLERGY_CLINICAL, "active", "Active"),
            "verificationStatus": concept(codes::ALLERGY_VER, "confirmed", "Confirmed"),
            "type": "allergy",
            "category": [a.category],
            "criticality": if severe { "high" } else { "low" },
            "code": concept(codes::SNOMED, a.snomed, a.display),
            "patient": { "reference": g.patient },
            "encounter": { "reference": visit.encounter },
            "onsetDateTime": date_text(onset.min(visit.start.date)),
            "recordedDate": visit.start.text(g.offset),
            "recorder": { "reference": visit.practitioner },
            "reaction": [{
                "manifestation": [concept(codes::SNOMED, a.reaction.0, a.reaction.1)],
                "severity": if severe { "severe" } else if g.rng.random_bool(0.5) { "mild" } else { "moderate" },
            }],
        });
        if g.add("AllergyIntolerance", resource).is_none() {
            return;
        }
    }
}

/// Jitters a baseline by up to `percent` either way.
fn jitter(rng: &mut Xoshiro256PlusPlus, baseline: f64, percent: f64) -> f64 {
    baseline * (1.0 + rng.random_range(-percent..percent) / 100.0)
}

fn vital(g: &mut Generator, visit: &Visit, loinc: &str, display: &str, value: Value, unit: &str) -> Option<String> {
    let resource = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [concept(codes::OBS_CATEGORY, "vital-signs", "Vital Signs")],
        "code": concept(codes::LOINC, loinc, display),
        "subject": { "reference": g.patient },
        "encounter": { "reference": visit.encounter },
        "effectiveDateTime": visit.start.plus_minutes(5).text(g.offset),
        "issued": visit.start.plus_minutes(6).text(g.offset),
        "performer": [{ "reference": visit.practitioner }],
        "valueQuantity": quantity(value, unit),
    });
    g.add("Observation", resource)
}

/// The vital-signs observations of a visit (LOINC codes of the FHIR vital
/// signs profile, <http://hl7.org/fhir/R4/observation-vitalsigns.html>).
fn vitals(g: &mut Generator, body: &Body, visit: &Visit, kind: Kind, fever: bool) {
    let date = visit.start.date;
    let height = jitter(&mut g.rng, body.height_on(date), 0.2);
    let child = body.age_on(date) < 18;
    let bmi = if child { jitter(&mut g.rng, 17.5, 8.0) } else { jitter(&mut g.rng, body.bmi, 3.0) };
    let weight = bmi * (height / 100.0) * (height / 100.0);
    let bmi = weight / ((height / 100.0) * (height / 100.0));
    let fever_bump = if fever { g.rng.random_range(1.0..2.4) } else { 0.0 };
    let temperature = g.rng.random_range(36.4..37.2) + fever_bump;
    let heart_rate = jitter(&mut g.rng, body.heart_rate + fever_bump * 8.0, 8.0);
    let respiratory = g.rng.random_range(12.0..19.0) + fever_bump * 2.0;
    let systolic = jitter(&mut g.rng, body.systolic, 5.0);
    let diastolic = jitter(&mut g.rng, body.diastolic, 5.0);
    let all = kind == Kind::Wellness;
    let added = (!all || vital(g, visit, "8302-2", "Body height", fixed(scale(height, 1), 1), "cm").is_some())
        && (kind == Kind::Symptom || vital(g, visit, "29463-7", "Body weight", fixed(scale(weight, 1), 1), "kg").is_some())
        && (kind == Kind::Symptom
            || vital(g, visit, "39156-5", "Body mass index (BMI) [Ratio]", fixed(scale(bmi, 1), 1), "kg/m2").is_some())
        && vital(g, visit, "8867-4", "Heart rate", fixed(scale(heart_rate, 0), 0), "/min").is_some()
        && (kind == Kind::FollowUp || vital(g, visit, "9279-1", "Respiratory rate", fixed(scale(respiratory, 0), 0), "/min").is_some())
        && (kind == Kind::FollowUp || vital(g, visit, "8310-5", "Body temperature", fixed(scale(temperature, 1), 1), "Cel").is_some());
    if !added {
        return;
    }
    // The blood pressure panel carries its values in components only.
    let resource = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [concept(codes::OBS_CATEGORY, "vital-signs", "Vital Signs")],
        "code": concept(codes::LOINC, "85354-9", "Blood pressure panel with all children optional"),
        "subject": { "reference": g.patient },
        "encounter": { "reference": visit.encounter },
        "effectiveDateTime": visit.start.plus_minutes(5).text(g.offset),
        "issued": visit.start.plus_minutes(6).text(g.offset),
        "performer": [{ "reference": visit.practitioner }],
        "component": [
            {
                "code": concept(codes::LOINC, "8480-6", "Systolic blood pressure"),
                "valueQuantity": quantity(fixed(scale(systolic, 0), 0), "mm[Hg]"),
            },
            {
                "code": concept(codes::LOINC, "8462-4", "Diastolic blood pressure"),
                "valueQuantity": quantity(fixed(scale(diastolic, 0), 0), "mm[Hg]"),
            },
        ],
    });
    let _ = g.add("Observation", resource);
}

/// The reference range of `lab` for this patient (hemoglobin differs by sex).
fn range(lab: &Lab, body: &Body) -> (Option<i64>, Option<i64>) {
    match (lab.analyte, body.female) {
        (Analyte::Hemoglobin, true) => (Some(120), Some(155)),
        (Analyte::Hemoglobin, false) => (Some(135), Some(175)),
        (Analyte::Creatinine, true) => (Some(50), Some(110)),
        _ => (lab.low, lab.high),
    }
}

/// One lab panel: an Observation per test, then the DiagnosticReport that
/// groups them (<http://hl7.org/fhir/R4/diagnosticreport.html>).
fn lab_panel(g: &mut Generator, body: &Body, visit: &Visit, panel: Panel) {
    let drawn = visit.start.plus_minutes(10);
    let issued = Moment { date: add_days(visit.start.date, 1), minute: g.rng.random_range(7 * 60..11 * 60) };
    let mut results = Vec::new();
    for lab in panel.tests() {
        let value = scale(jitter(&mut g.rng, body.lab(lab.analyte), 6.0), lab.places);
        let (low, high) = range(lab, body);
        let (code, display) = match (low, high) {
            (Some(l), _) if value < l => ("L", "Low"),
            (_, Some(h)) if value > h => ("H", "High"),
            _ => ("N", "Normal"),
        };
        let mut reference_range = Map::new();
        if let Some(l) = low {
            reference_range.insert("low".into(), quantity(fixed(l, lab.places), lab.unit));
        }
        if let Some(h) = high {
            reference_range.insert("high".into(), quantity(fixed(h, lab.places), lab.unit));
        }
        let resource = json!({
            "resourceType": "Observation",
            "status": "final",
            "category": [concept(codes::OBS_CATEGORY, "laboratory", "Laboratory")],
            "code": concept(codes::LOINC, lab.loinc, lab.display),
            "subject": { "reference": g.patient },
            "encounter": { "reference": visit.encounter },
            "effectiveDateTime": drawn.text(g.offset),
            "issued": issued.text(g.offset),
            "valueQuantity": quantity(fixed(value, lab.places), lab.unit),
            "interpretation": [concept(codes::INTERPRETATION, code, display)],
            "referenceRange": [Value::Object(reference_range)],
        });
        match g.add("Observation", resource) {
            Some(reference) => results.push(json!({ "reference": reference })),
            None => return,
        }
    }
    let (code, display) = panel.code();
    let resource = json!({
        "resourceType": "DiagnosticReport",
        "status": "final",
        "category": [concept(codes::DIAG_SERVICE, "LAB", "Laboratory")],
        "code": concept(codes::LOINC, code, display),
        "subject": { "reference": g.patient },
        "encounter": { "reference": visit.encounter },
        "effectiveDateTime": drawn.text(g.offset),
        "issued": issued.text(g.offset),
        "performer": [{ "reference": visit.practitioner }],
        "result": results,
    });
    let _ = g.add("DiagnosticReport", resource);
}

fn immunizations(g: &mut Generator, age: u32, visit: &Visit, given: &mut Vec<&'static str>) {
    for v in codes::VACCINES {
        if age < v.min_age || age > v.max_age || (!v.yearly && given.contains(&v.cvx)) {
            continue;
        }
        let chance = if v.yearly { 0.65 } else { 0.3 };
        if !g.rng.random_bool(chance) {
            continue;
        }
        given.push(v.cvx);
        let lot = format!("{}{:05}", ["EL", "FK", "GH", "MJ"][g.rng.random_range(0..4)], g.rng.random_range(0..100_000));
        let expiration = add_days(visit.start.date, g.rng.random_range(90..540));
        let (site, site_display) = if g.rng.random_bool(0.5) { ("LA", "left arm") } else { ("RA", "right arm") };
        let resource = json!({
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": concept(codes::CVX, v.cvx, v.display),
            "patient": { "reference": g.patient },
            "encounter": { "reference": visit.encounter },
            "occurrenceDateTime": visit.start.plus_minutes(20).text(g.offset),
            "primarySource": true,
            "lotNumber": lot,
            "expirationDate": date_text(expiration),
            "site": concept(codes::ACT_SITE, site, site_display),
            "route": concept(codes::ROUTE, "IM", "Injection, intramuscular"),
            "doseQuantity": quantity(fixed(5, 1), "mL"),
            "performer": [{
                "function": concept(codes::V2_0443, "AP", "Administering Provider"),
                "actor": { "reference": visit.practitioner },
            }],
        });
        if g.add("Immunization", resource).is_none() {
            return;
        }
    }
}

fn procedure(g: &mut Generator, p: usize, visit: &Visit, reason: Option<&str>) {
    let Some(&(code, display)) = codes::PROCEDURES.get(p) else { return };
    let length = if code == "73761001" { 45 } else { g.rng.random_range(1..4) * 5 };
    let begin = visit.start.plus_minutes(15);
    let mut resource = json!({
        "resourceType": "Procedure",
        "status": "completed",
        "code": concept(codes::SNOMED, code, display),
        "subject": { "reference": g.patient },
        "encounter": { "reference": visit.encounter },
        "performedPeriod": { "start": begin.text(g.offset), "end": begin.plus_minutes(length).text(g.offset) },
        "performer": [{ "actor": { "reference": visit.practitioner } }],
    });
    if let (Some(reason), Value::Object(map)) = (reason, &mut resource) {
        map.insert("reasonReference".into(), json!([{ "reference": reason }]));
    }
    let _ = g.add("Procedure", resource);
}

fn prescribe(g: &mut Generator, m: usize, visit: &Visit, reason: &str, maintenance: bool) {
    let Some(med) = codes::MEDICATIONS.get(m) else { return };
    let supply_days: i64 = if maintenance { 90 } else { 10 };
    let course_end = add_days(visit.start.date, supply_days * if maintenance { 4 } else { 1 });
    // A prescription still running at the anchor day is active; older ones have completed.
    let status = if course_end >= anchor() { "active" } else { "completed" };
    let resource = json!({
        "resourceType": "MedicationRequest",
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": concept(codes::RXNORM, med.rxnorm, med.display),
        "subject": { "reference": g.patient },
        "encounter": { "reference": visit.encounter },
        "authoredOn": visit.end.text(g.offset),
        "requester": { "reference": visit.practitioner },
        "reasonReference": [{ "reference": reason }],
        "courseOfTherapyType": if maintenance {
            concept("http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy", "continuous", "Continuous long term therapy")
        } else {
            concept("http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy", "acute", "Short course (acute) therapy")
        },
        "dosageInstruction": [{
            "sequence": 1,
            "timing": { "repeat": { "frequency": med.per_day, "period": 1, "periodUnit": "d" } },
            "asNeededBoolean": med.as_needed,
            "doseAndRate": [{
                "type": concept(codes::DOSE_RATE_TYPE, "ordered", "Ordered"),
                "doseQuantity": { "value": 1 },
            }],
        }],
        "dispenseRequest": {
            "numberOfRepeatsAllowed": if maintenance { 3 } else { 0 },
            "quantity": { "value": med.quantity },
            "expectedSupplyDuration": { "value": supply_days, "unit": "days", "system": codes::UCUM, "code": "d" },
        },
    });
    let _ = g.add("MedicationRequest", resource);
}
