//! Clinical code tables for the synthetic patient generator: SNOMED CT
//! conditions with their ICD-10-CM equivalents, RxNorm medications, CVX
//! vaccines, SNOMED procedures and allergies, and LOINC vital signs and labs
//! with UCUM units and reference ranges.
//!
//! The codes are the ones Synthea and US Core examples use for the same
//! concepts; they are chosen for realism of the data's shape (systems, code
//! formats, displays), not as clinical guidance.

/// Code system URIs (FHIR R4 terminology, <http://hl7.org/fhir/R4/terminologies-systems.html>).
pub(super) const SNOMED: &str = "http://snomed.info/sct";
pub(super) const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
pub(super) const LOINC: &str = "http://loinc.org";
pub(super) const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
pub(super) const CVX: &str = "http://hl7.org/fhir/sid/cvx";
pub(super) const UCUM: &str = "http://unitsofmeasure.org";
pub(super) const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
pub(super) const SSN: &str = "http://hl7.org/fhir/sid/us-ssn";
pub(super) const MRN: &str = "https://hearth.example/mrn";
pub(super) const ORG_ID: &str = "https://hearth.example/organization";
pub(super) const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
pub(super) const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
pub(super) const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
pub(super) const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
pub(super) const CONDITION_VER: &str = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
pub(super) const CONDITION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";
pub(super) const ALLERGY_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
pub(super) const ALLERGY_VER: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";
pub(super) const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub(super) const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
pub(super) const MARITAL_STATUS: &str = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus";
pub(super) const DIAG_SERVICE: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";
pub(super) const ORG_TYPE: &str = "http://terminology.hl7.org/CodeSystem/organization-type";
pub(super) const ROUTE: &str = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration";
pub(super) const ACT_SITE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActSite";
pub(super) const V2_0443: &str = "http://terminology.hl7.org/CodeSystem/v2-0443";
pub(super) const DOSE_RATE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/dose-rate-type";
pub(super) const OMB_RACE_ETHNICITY: &str = "urn:oid:2.16.840.1.113883.6.238";
pub(super) const BCP47: &str = "urn:ietf:bcp:47";
pub(super) const US_CORE_RACE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
pub(super) const US_CORE_ETHNICITY: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity";
pub(super) const US_CORE_BIRTHSEX: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex";
pub(super) const GEOLOCATION: &str = "http://hl7.org/fhir/StructureDefinition/geolocation";
pub(super) const MOTHERS_MAIDEN_NAME: &str = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName";

/// A chronic condition and what follows from having it.
pub(super) struct Chronic {
    pub(super) snomed: &'static str,
    pub(super) icd10: &'static str,
    pub(super) display: &'static str,
    /// Youngest age at which it is drawn.
    pub(super) min_age: u32,
    /// Chance, in percent, for a patient past `min_age`.
    pub(super) percent: u32,
    /// Index into [`MEDICATIONS`] of its maintenance drug.
    pub(super) medication: Option<usize>,
    /// Which lab panel its follow-up visits order.
    pub(super) follow_up_lab: Option<Panel>,
}

/// The chronic conditions drawn per patient.
pub(super) const CHRONIC: &[Chronic] = &[
    Chronic { snomed: "38341003", icd10: "I10", display: "Hypertension", min_age: 25, percent: 30, medication: Some(0), follow_up_lab: Some(Panel::Metabolic) },
    Chronic { snomed: "44054006", icd10: "E11.9", display: "Diabetes mellitus type 2", min_age: 30, percent: 12, medication: Some(3), follow_up_lab: Some(Panel::HbA1c) },
    Chronic { snomed: "714628002", icd10: "R73.03", display: "Prediabetes", min_age: 25, percent: 12, medication: None, follow_up_lab: Some(Panel::HbA1c) },
    Chronic { snomed: "55822004", icd10: "E78.5", display: "Hyperlipidemia", min_age: 30, percent: 25, medication: Some(4), follow_up_lab: Some(Panel::Lipid) },
    Chronic { snomed: "195967001", icd10: "J45.909", display: "Asthma", min_age: 2, percent: 9, medication: Some(5), follow_up_lab: None },
    Chronic { snomed: "162864005", icd10: "E66.9", display: "Body mass index 30+ - obesity", min_age: 18, percent: 20, medication: None, follow_up_lab: Some(Panel::Metabolic) },
    Chronic { snomed: "40930008", icd10: "E03.9", display: "Hypothyroidism", min_age: 20, percent: 6, medication: Some(11), follow_up_lab: None },
    Chronic { snomed: "370143000", icd10: "F32.9", display: "Major depressive disorder", min_age: 14, percent: 8, medication: Some(12), follow_up_lab: None },
    Chronic { snomed: "197480006", icd10: "F41.9", display: "Anxiety disorder", min_age: 12, percent: 8, medication: None, follow_up_lab: None },
    Chronic { snomed: "239873007", icd10: "M17.9", display: "Osteoarthritis of knee", min_age: 45, percent: 12, medication: Some(8), follow_up_lab: None },
    Chronic { snomed: "709044004", icd10: "N18.9", display: "Chronic kidney disease", min_age: 50, percent: 6, medication: None, follow_up_lab: Some(Panel::Metabolic) },
    Chronic { snomed: "49436004", icd10: "I48.91", display: "Atrial fibrillation", min_age: 55, percent: 5, medication: Some(13), follow_up_lab: Some(Panel::Cbc) },
    Chronic { snomed: "53741008", icd10: "I25.10", display: "Coronary heart disease", min_age: 50, percent: 6, medication: Some(14), follow_up_lab: Some(Panel::Lipid) },
    Chronic { snomed: "13645005", icd10: "J44.9", display: "Chronic obstructive pulmonary disease", min_age: 50, percent: 4, medication: Some(5), follow_up_lab: None },
    Chronic { snomed: "37796009", icd10: "G43.909", display: "Migraine", min_age: 12, percent: 7, medication: Some(9), follow_up_lab: None },
    Chronic { snomed: "235595009", icd10: "K21.9", display: "Gastroesophageal reflux disease", min_age: 20, percent: 10, medication: None, follow_up_lab: None },
];

/// An acute, self-limiting condition seen at a symptom visit.
pub(super) struct Acute {
    pub(super) snomed: &'static str,
    pub(super) icd10: &'static str,
    pub(super) display: &'static str,
    /// Days until it resolves.
    pub(super) days: i64,
    pub(super) medication: Option<usize>,
    /// Index into [`PROCEDURES`] done at the visit.
    pub(super) procedure: Option<usize>,
    /// Whether the patient has a fever.
    pub(super) fever: bool,
}

pub(super) const ACUTE: &[Acute] = &[
    Acute { snomed: "10509002", icd10: "J20.9", display: "Acute bronchitis (disorder)", days: 14, medication: Some(6), procedure: Some(4), fever: true },
    Acute { snomed: "444814009", icd10: "J01.90", display: "Viral sinusitis (disorder)", days: 10, medication: Some(7), procedure: None, fever: false },
    Acute { snomed: "43878008", icd10: "J02.0", display: "Streptococcal sore throat (disorder)", days: 10, medication: Some(2), procedure: Some(3), fever: true },
    Acute { snomed: "65363002", icd10: "H66.90", display: "Otitis media", days: 7, medication: Some(1), procedure: None, fever: true },
    Acute { snomed: "68566005", icd10: "N39.0", display: "Urinary tract infectious disease (disorder)", days: 7, medication: Some(10), procedure: None, fever: false },
    Acute { snomed: "279039007", icd10: "M54.50", display: "Low back pain", days: 21, medication: Some(8), procedure: None, fever: false },
    Acute { snomed: "195662009", icd10: "J02.9", display: "Acute viral pharyngitis (disorder)", days: 7, medication: Some(7), procedure: Some(3), fever: true },
    Acute { snomed: "44465007", icd10: "S93.409A", display: "Sprain of ankle", days: 28, medication: Some(8), procedure: None, fever: false },
];

/// An RxNorm clinical drug with its dosing.
pub(super) struct Medication {
    pub(super) rxnorm: &'static str,
    pub(super) display: &'static str,
    /// Doses per day.
    pub(super) per_day: u32,
    pub(super) as_needed: bool,
    /// Dispensed quantity and its unit (an SNOMED form, written as plain text unit).
    pub(super) quantity: u32,
}

pub(super) const MEDICATIONS: &[Medication] = &[
    Medication { rxnorm: "314076", display: "lisinopril 10 MG Oral Tablet", per_day: 1, as_needed: false, quantity: 90 },
    Medication { rxnorm: "308182", display: "Amoxicillin 250 MG Oral Capsule", per_day: 3, as_needed: false, quantity: 30 },
    Medication { rxnorm: "834061", display: "Penicillin V Potassium 250 MG Oral Tablet", per_day: 4, as_needed: false, quantity: 40 },
    Medication { rxnorm: "860975", display: "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", per_day: 1, as_needed: false, quantity: 90 },
    Medication { rxnorm: "314231", display: "Simvastatin 10 MG Oral Tablet", per_day: 1, as_needed: false, quantity: 90 },
    Medication { rxnorm: "745679", display: "200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", per_day: 4, as_needed: true, quantity: 1 },
    Medication { rxnorm: "313782", display: "Acetaminophen 325 MG Oral Tablet", per_day: 4, as_needed: true, quantity: 30 },
    Medication { rxnorm: "849574", display: "Naproxen sodium 220 MG Oral Tablet", per_day: 2, as_needed: true, quantity: 30 },
    Medication { rxnorm: "310965", display: "Ibuprofen 200 MG Oral Tablet", per_day: 3, as_needed: true, quantity: 60 },
    Medication { rxnorm: "1049630", display: "diphenhydramine hydrochloride 25 MG Oral Tablet", per_day: 1, as_needed: true, quantity: 30 },
    Medication { rxnorm: "311989", display: "Nitrofurantoin 5 MG/ML Oral Suspension", per_day: 2, as_needed: false, quantity: 1 },
    Medication { rxnorm: "966222", display: "Levothyroxine Sodium 0.075 MG Oral Tablet", per_day: 1, as_needed: false, quantity: 90 },
    Medication { rxnorm: "312938", display: "Sertraline 100 MG Oral Tablet", per_day: 1, as_needed: false, quantity: 90 },
    Medication { rxnorm: "855332", display: "Warfarin Sodium 5 MG Oral Tablet", per_day: 1, as_needed: false, quantity: 90 },
    Medication { rxnorm: "309362", display: "Clopidogrel 75 MG Oral Tablet", per_day: 1, as_needed: false, quantity: 90 },
];

/// SNOMED procedures.
pub(super) const PROCEDURES: &[(&str, &str)] = &[
    ("430193006", "Medication Reconciliation (procedure)"),
    ("171207006", "Depression screening (procedure)"),
    ("710824005", "Assessment of health and social care needs (procedure)"),
    ("117015009", "Throat culture (procedure)"),
    ("23426006", "Measurement of respiratory function (procedure)"),
    ("73761001", "Colonoscopy"),
    ("428191000124101", "Documentation of current medications"),
    ("386516004", "Anticipatory guidance (procedure)"),
];

/// A CVX vaccine.
pub(super) struct Vaccine {
    pub(super) cvx: &'static str,
    pub(super) display: &'static str,
    /// Inclusive age range, in years, in which it is given.
    pub(super) min_age: u32,
    pub(super) max_age: u32,
    /// Given every wellness visit in range (influenza) or once.
    pub(super) yearly: bool,
}

pub(super) const VACCINES: &[Vaccine] = &[
    Vaccine { cvx: "140", display: "Influenza, seasonal, injectable, preservative free", min_age: 0, max_age: 120, yearly: true },
    Vaccine { cvx: "115", display: "Tdap", min_age: 11, max_age: 120, yearly: false },
    Vaccine { cvx: "113", display: "Td (adult) preservative free", min_age: 19, max_age: 120, yearly: false },
    Vaccine { cvx: "62", display: "HPV, quadrivalent", min_age: 9, max_age: 26, yearly: false },
    Vaccine { cvx: "133", display: "Pneumococcal conjugate PCV 13", min_age: 65, max_age: 120, yearly: false },
    Vaccine { cvx: "33", display: "pneumococcal polysaccharide vaccine, 23 valent", min_age: 65, max_age: 120, yearly: false },
    Vaccine { cvx: "187", display: "zoster vaccine recombinant", min_age: 50, max_age: 120, yearly: false },
    Vaccine { cvx: "208", display: "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose", min_age: 12, max_age: 120, yearly: false },
    Vaccine { cvx: "08", display: "Hep B, adolescent or pediatric", min_age: 0, max_age: 18, yearly: false },
    Vaccine { cvx: "21", display: "varicella", min_age: 1, max_age: 18, yearly: false },
    Vaccine { cvx: "03", display: "MMR", min_age: 1, max_age: 18, yearly: false },
    Vaccine { cvx: "83", display: "Hep A, ped/adol, 2 dose", min_age: 1, max_age: 18, yearly: false },
];

/// An allergy: the substance's SNOMED code, category and typical reaction.
pub(super) struct Allergy {
    pub(super) snomed: &'static str,
    pub(super) display: &'static str,
    /// `AllergyIntolerance.category` (required binding allergy-intolerance-category).
    pub(super) category: &'static str,
    pub(super) reaction: (&'static str, &'static str),
}

pub(super) const ALLERGIES: &[Allergy] = &[
    Allergy { snomed: "91935009", display: "Allergy to peanuts", category: "food", reaction: ("39579001", "Anaphylaxis (disorder)") },
    Allergy { snomed: "300913006", display: "Shellfish allergy", category: "food", reaction: ("247472004", "Wheal (finding)") },
    Allergy { snomed: "91930004", display: "Allergy to eggs", category: "food", reaction: ("271807003", "Eruption of skin (disorder)") },
    Allergy { snomed: "425525006", display: "Allergy to dairy product", category: "food", reaction: ("21522001", "Abdominal pain (finding)") },
    Allergy { snomed: "418689008", display: "Allergy to grass pollen", category: "environment", reaction: ("878820003", "Rhinoconjunctivitis (disorder)") },
    Allergy { snomed: "419263009", display: "Allergy to tree pollen", category: "environment", reaction: ("878820003", "Rhinoconjunctivitis (disorder)") },
    Allergy { snomed: "232350006", display: "House dust mite allergy", category: "environment", reaction: ("49727002", "Cough (finding)") },
    Allergy { snomed: "232347008", display: "Dander (animal) allergy", category: "environment", reaction: ("76067001", "Sneezing (finding)") },
    Allergy { snomed: "419474003", display: "Allergy to mould", category: "environment", reaction: ("76067001", "Sneezing (finding)") },
    Allergy { snomed: "300916003", display: "Latex allergy", category: "environment", reaction: ("247472004", "Wheal (finding)") },
    Allergy { snomed: "91936005", display: "Allergy to penicillin", category: "medication", reaction: ("271807003", "Eruption of skin (disorder)") },
    Allergy { snomed: "294505008", display: "Allergy to sulfonamides", category: "medication", reaction: ("271807003", "Eruption of skin (disorder)") },
];

/// Encounter types (SNOMED).
pub(super) const ENC_WELLNESS: (&str, &str) = ("162673000", "General examination of patient (procedure)");
pub(super) const ENC_SYMPTOM: (&str, &str) = ("185345009", "Encounter for symptom (procedure)");
pub(super) const ENC_FOLLOW_UP: (&str, &str) = ("390906007", "Follow-up encounter (procedure)");

/// A lab panel ordered as one DiagnosticReport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Panel {
    Cbc,
    Metabolic,
    Lipid,
    HbA1c,
}

impl Panel {
    /// The panel's LOINC code and display, used as `DiagnosticReport.code`.
    pub(super) fn code(self) -> (&'static str, &'static str) {
        match self {
            Panel::Cbc => ("58410-2", "CBC panel - Blood by Automated count"),
            Panel::Metabolic => ("51990-0", "Basic metabolic panel - Blood"),
            Panel::Lipid => ("57698-3", "Lipid panel with direct LDL - Serum or Plasma"),
            Panel::HbA1c => ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
        }
    }

    /// The tests of the panel, in report order.
    pub(super) fn tests(self) -> &'static [Lab] {
        match self {
            Panel::Cbc => &[LAB_WBC, LAB_HGB, LAB_HCT, LAB_PLT],
            Panel::Metabolic => &[LAB_GLUCOSE, LAB_CREATININE, LAB_SODIUM, LAB_POTASSIUM],
            Panel::Lipid => &[LAB_CHOL, LAB_TRIG, LAB_LDL, LAB_HDL],
            Panel::HbA1c => &[LAB_A1C],
        }
    }
}

/// Which lab value a test reports; the generator keeps a per-patient baseline for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Analyte {
    Wbc,
    Hemoglobin,
    Hematocrit,
    Platelets,
    Glucose,
    Creatinine,
    Sodium,
    Potassium,
    Cholesterol,
    Triglycerides,
    Ldl,
    Hdl,
    HbA1c,
}

/// A laboratory test: LOINC code, UCUM unit, written precision and reference range.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lab {
    pub(super) analyte: Analyte,
    pub(super) loinc: &'static str,
    pub(super) display: &'static str,
    /// UCUM code; also used as the human unit.
    pub(super) unit: &'static str,
    /// Decimal places written.
    pub(super) places: u32,
    /// Reference range bounds in the unit, scaled by 10^places; `None` when open.
    pub(super) low: Option<i64>,
    pub(super) high: Option<i64>,
}

const fn lab(
    analyte: Analyte,
    loinc: &'static str,
    display: &'static str,
    unit: &'static str,
    places: u32,
    low: Option<i64>,
    high: Option<i64>,
) -> Lab {
    Lab { analyte, loinc, display, unit, places, low, high }
}

pub(super) const LAB_WBC: Lab = lab(Analyte::Wbc, "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 1, Some(45), Some(110));
pub(super) const LAB_HGB: Lab = lab(Analyte::Hemoglobin, "718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 1, Some(120), Some(175));
pub(super) const LAB_HCT: Lab = lab(Analyte::Hematocrit, "4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", 1, Some(360), Some(500));
pub(super) const LAB_PLT: Lab = lab(Analyte::Platelets, "777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 0, Some(150), Some(400));
pub(super) const LAB_GLUCOSE: Lab = lab(Analyte::Glucose, "2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 0, Some(70), Some(99));
pub(super) const LAB_CREATININE: Lab = lab(Analyte::Creatinine, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 2, Some(60), Some(130));
pub(super) const LAB_SODIUM: Lab = lab(Analyte::Sodium, "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 0, Some(136), Some(145));
pub(super) const LAB_POTASSIUM: Lab = lab(Analyte::Potassium, "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 1, Some(35), Some(51));
pub(super) const LAB_CHOL: Lab = lab(Analyte::Cholesterol, "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 0, None, Some(200));
pub(super) const LAB_TRIG: Lab = lab(Analyte::Triglycerides, "2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 0, None, Some(150));
pub(super) const LAB_LDL: Lab = lab(Analyte::Ldl, "18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "mg/dL", 0, None, Some(100));
pub(super) const LAB_HDL: Lab = lab(Analyte::Hdl, "2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", 0, Some(40), None);
pub(super) const LAB_A1C: Lab = lab(Analyte::HbA1c, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 1, Some(40), Some(56));
