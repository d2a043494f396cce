//! `_summary` and `_elements`: returning part of each resource, marked with
//! the `SUBSETTED` tag. See <http://hl7.org/fhir/R4/search.html#summary> and
//! <http://hl7.org/fhir/R4/search.html#elements>.
//!
//! Limitation: the base definitions' `isSummary` flags are not available as
//! data yet, so `_summary=true` uses the built-in table below (top-level
//! elements of common resource types, taken from the R4 4.0.1
//! StructureDefinitions) and, for other types, a conservative fallback list.
//! Nested elements are kept or dropped whole with their top-level element.

use crate::error::ApiError;
use domain::ErrorKind;
use serde_json::{Map, Value, json};

/// `_summary` values (<http://hl7.org/fhir/R4/search.html#summary>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Summary {
    /// Summary elements only.
    True,
    /// `text`, `id`, `meta` and the mandatory top-level elements.
    Text,
    /// Everything but `text`.
    Data,
    /// Search only: the total, no entries.
    Count,
    /// The whole resource.
    #[default]
    False,
}

/// What part of each resource a response carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subsetting {
    summary: Summary,
    /// `_elements`: top-level element names.
    elements: Option<Vec<String>>,
    /// The parameters as the client wrote them, for paging links.
    given: Vec<(String, String)>,
}

impl Subsetting {
    /// Takes `_summary` and `_elements` out of `params`.
    pub(crate) fn take(params: &mut Vec<(String, String)>) -> Result<Subsetting, ApiError> {
        let mut subsetting = Subsetting::default();
        let mut rest = Vec::with_capacity(params.len());
        for (key, value) in params.drain(..) {
            match key.as_str() {
                "_summary" => {
                    subsetting.summary = match value.as_str() {
                        "true" => Summary::True,
                        "text" => Summary::Text,
                        "data" => Summary::Data,
                        "count" => Summary::Count,
                        "false" => Summary::False,
                        _ => {
                            return Err(ApiError::bad_request(
                                "_summary must be one of true, text, data, count, false",
                            )
                            .at("_summary"));
                        }
                    };
                    subsetting.given.push((key, value));
                }
                "_elements" => {
                    let names = subsetting.elements.get_or_insert_with(Vec::new);
                    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        // `Patient.name` (R5 style) and `name` both name the element.
                        let name = name.rsplit('.').next().unwrap_or(name);
                        if !is_element_name(name) {
                            return Err(ApiError::bad_request("_elements must list element names").at("_elements"));
                        }
                        names.push(name.to_string());
                    }
                    subsetting.given.push((key, value));
                }
                _ => rest.push((key, value)),
            }
        }
        *params = rest;
        if subsetting.elements.is_some() && subsetting.summary != Summary::False {
            return Err(ApiError::bad_request("_summary and _elements cannot be combined"));
        }
        Ok(subsetting)
    }

    /// From a read's query string.
    pub(crate) fn from_query(query: Option<&str>) -> Result<Subsetting, ApiError> {
        match query {
            Some(q) if q.contains("_summary") || q.contains("_elements") => {
                let mut params = crate::request::query_pairs(Some(q));
                Subsetting::take(&mut params)
            }
            _ => Ok(Subsetting::default()),
        }
    }

    /// For a read or vread: `_summary=count` only makes sense for search.
    pub(crate) fn for_single_resource(self) -> Result<Subsetting, ApiError> {
        if self.summary == Summary::Count {
            return Err(ApiError::new(ErrorKind::BadRequest, "_summary=count applies to search only").at("_summary"));
        }
        Ok(self)
    }

    /// True when resources are returned whole.
    pub(crate) fn is_full(&self) -> bool {
        self.summary == Summary::False && self.elements.is_none()
    }

    /// `_summary=count`.
    pub(crate) fn is_count(&self) -> bool {
        self.summary == Summary::Count
    }

    /// The parameters to repeat on paging links.
    pub(crate) fn given(&self) -> &[(String, String)] {
        &self.given
    }

    /// The subset of a stored resource text, as JSON text.
    pub(crate) fn apply(&self, resource_type: &str, text: &str) -> Result<String, ApiError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|_| ApiError::new(ErrorKind::Internal, "stored resource is not valid JSON"))?;
        let Value::Object(object) = value else {
            return Err(ApiError::new(ErrorKind::Internal, "stored resource is not a JSON object"));
        };
        let table = element_table(resource_type);
        let mut out = Map::with_capacity(object.len());
        for (key, value) in object {
            if self.keeps(&key, table) {
                out.insert(key, value);
            }
        }
        mark_subsetted(&mut out);
        serde_json::to_string(&Value::Object(out))
            .map_err(|_| ApiError::new(ErrorKind::Internal, "could not write a subsetted resource"))
    }

    fn keeps(&self, key: &str, table: ElementTable) -> bool {
        if matches!(key, "resourceType" | "id" | "meta") {
            return true;
        }
        // `_birthDate` carries the extensions of `birthDate`, and goes with it.
        let element = key.strip_prefix('_').unwrap_or(key);
        let mandatory = table.mandatory.iter().any(|e| names_element(e, element));
        if let Some(names) = &self.elements {
            return mandatory || names.iter().any(|n| names_element(n, element));
        }
        match self.summary {
            Summary::True => table.summary.iter().any(|e| names_element(e, element)),
            Summary::Text => element == "text" || mandatory,
            Summary::Data => element != "text",
            Summary::Count | Summary::False => true,
        }
    }
}

fn is_element_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '[' || c == ']')
}

/// True when `element` (a JSON key) is the element `name`. A choice element
/// `value[x]` covers `valueQuantity`, `valueString`...; a bare name (as
/// `_elements` writes it) covers only choice-type suffixes, so `value` finds
/// `valueString` but `code` does not pull in `codeFilter`
/// (<http://hl7.org/fhir/R4/formats.html#choice>).
fn names_element(name: &str, element: &str) -> bool {
    if name == element {
        return true;
    }
    match name.strip_suffix("[x]") {
        Some(stem) => element.strip_prefix(stem).is_some_and(|s| s.starts_with(|c: char| c.is_ascii_uppercase())),
        None => element.strip_prefix(name).is_some_and(|s| CHOICE_TYPES.contains(&s)),
    }
}

/// The data types a choice element can take in R4
/// (<http://hl7.org/fhir/R4/formats.html#choice>).
const CHOICE_TYPES: &[&str] = &[
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id", "Instant", "Integer",
    "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt", "Uri", "Url", "Uuid", "Address", "Age",
    "Annotation", "Attachment", "CodeableConcept", "Coding", "ContactPoint", "Count", "Distance", "Duration",
    "HumanName", "Identifier", "Money", "Period", "Quantity", "Range", "Ratio", "Reference", "SampledData",
    "Signature", "Timing", "ContactDetail", "Contributor", "DataRequirement", "Expression",
    "ParameterDefinition", "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage", "Meta",
];

/// Adds `meta.tag` SUBSETTED (<http://hl7.org/fhir/R4/search.html#summary>).
fn mark_subsetted(resource: &mut Map<String, Value>) {
    const SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";
    let meta = resource.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else { return };
    let tags = meta.entry("tag").or_insert_with(|| json!([]));
    let Some(tags) = tags.as_array_mut() else { return };
    let present = tags.iter().any(|t| t.get("system") == Some(&json!(SYSTEM)) && t.get("code") == Some(&json!("SUBSETTED")));
    if !present {
        tags.push(json!({ "system": SYSTEM, "code": "SUBSETTED", "display": "Resource encoded in summary mode" }));
    }
}

#[derive(Clone, Copy)]
struct ElementTable {
    summary: &'static [&'static str],
    mandatory: &'static [&'static str],
}

/// For types outside the table: elements that are summary wherever they occur.
const FALLBACK: ElementTable = ElementTable {
    summary: &["implicitRules", "identifier", "status", "code", "subject", "name"],
    mandatory: &[],
};

fn element_table(resource_type: &str) -> ElementTable {
    TABLE
        .binary_search_by(|(t, ..)| (*t).cmp(resource_type))
        .ok()
        .and_then(|i| TABLE.get(i))
        .map_or(FALLBACK, |(_, summary, mandatory)| ElementTable { summary, mandatory })
}

/// (type, top-level elements with isSummary=true, top-level elements with
/// min >= 1), from the R4 4.0.1 StructureDefinitions; `id` and `meta` are
/// always kept and so left out. Sorted by type for binary search.
type Row = (&'static str, &'static [&'static str], &'static [&'static str]);

const TABLE: &[Row] = &[
    ("Account", &["implicitRules", "identifier", "status", "type", "name", "subject", "servicePeriod", "coverage", "owner", "description"], &["status"]),
    ("AllergyIntolerance", &["implicitRules", "identifier", "clinicalStatus", "verificationStatus", "type", "category", "criticality", "code", "patient", "asserter"], &["patient"]),
    ("Appointment", &["implicitRules", "identifier", "status", "cancelationReason", "serviceCategory", "serviceType", "specialty", "appointmentType", "reasonCode", "start", "end"], &["status", "participant"]),
    ("AuditEvent", &["implicitRules", "type", "subtype", "action", "recorded", "outcome", "outcomeDesc", "purposeOfEvent"], &["type", "recorded", "agent", "source"]),
    ("Binary", &["implicitRules", "contentType", "securityContext"], &["contentType"]),
    ("Bundle", &["implicitRules", "identifier", "type", "timestamp", "total", "link", "entry", "signature"], &["type"]),
    ("CarePlan", &["implicitRules", "identifier", "instantiatesCanonical", "instantiatesUri", "basedOn", "replaces", "partOf", "status", "intent", "category", "title", "description", "subject", "encounter", "period", "created", "author", "addresses"], &["status", "intent", "subject"]),
    ("CareTeam", &["implicitRules", "identifier", "status", "category", "name", "subject", "encounter", "period", "managingOrganization"], &[]),
    ("Claim", &["implicitRules", "status", "type", "use", "patient", "billablePeriod", "created", "insurer", "provider", "priority", "insurance"], &["status", "type", "use", "patient", "created", "provider", "priority", "insurance"]),
    ("CodeSystem", &["implicitRules", "url", "identifier", "version", "name", "title", "status", "experimental", "date", "publisher", "contact", "useContext", "jurisdiction", "caseSensitive", "valueSet", "hierarchyMeaning", "compositional", "versionNeeded", "content", "supplements", "count", "filter", "property"], &["status", "content"]),
    ("Communication", &["implicitRules", "identifier", "instantiatesCanonical", "instantiatesUri", "basedOn", "partOf", "status", "statusReason", "priority", "subject", "encounter", "reasonCode", "reasonReference"], &["status"]),
    ("Composition", &["implicitRules", "identifier", "status", "type", "category", "subject", "encounter", "date", "author", "title", "confidentiality", "custodian", "event"], &["status", "type", "date", "author", "title"]),
    ("Condition", &["implicitRules", "identifier", "clinicalStatus", "verificationStatus", "code", "bodySite", "subject", "encounter", "onset[x]", "recordedDate", "recorder", "asserter"], &["subject"]),
    ("Consent", &["implicitRules", "identifier", "status", "scope", "category", "patient", "dateTime", "performer", "organization", "source[x]", "policyRule", "verification", "provision"], &["status", "scope", "category"]),
    ("Coverage", &["implicitRules", "identifier", "status", "type", "policyHolder", "subscriber", "subscriberId", "beneficiary", "dependent", "period", "payor", "order", "network"], &["status", "beneficiary", "payor"]),
    ("Device", &["implicitRules", "udiCarrier", "status", "safety"], &[]),
    ("DiagnosticReport", &["implicitRules", "identifier", "status", "category", "code", "subject", "encounter", "effective[x]", "issued", "performer", "resultsInterpreter", "media"], &["status", "code"]),
    ("DocumentReference", &["implicitRules", "masterIdentifier", "identifier", "status", "docStatus", "type", "category", "subject", "date", "author", "relatesTo", "description", "securityLabel", "content", "context"], &["status", "content"]),
    ("Encounter", &["implicitRules", "identifier", "status", "class", "type", "serviceType", "subject", "episodeOfCare", "participant", "appointment", "reasonCode", "reasonReference", "diagnosis"], &["status", "class"]),
    ("Endpoint", &["implicitRules", "identifier", "status", "connectionType", "name", "managingOrganization", "period", "payloadType", "payloadMimeType", "address"], &["status", "connectionType", "payloadType", "address"]),
    ("EpisodeOfCare", &["implicitRules", "status", "type", "diagnosis", "patient", "managingOrganization", "period"], &["status", "patient"]),
    ("FamilyMemberHistory", &["implicitRules", "identifier", "instantiatesCanonical", "instantiatesUri", "status", "dataAbsentReason", "patient", "date", "name", "relationship", "sex", "age[x]", "estimatedAge", "deceased[x]", "reasonCode", "reasonReference"], &["status", "patient", "relationship"]),
    ("Flag", &["implicitRules", "identifier", "status", "category", "code", "subject", "period", "encounter", "author"], &["status", "code", "subject"]),
    ("Goal", &["implicitRules", "lifecycleStatus", "achievementStatus", "category", "priority", "description", "subject", "start[x]", "statusDate", "expressedBy"], &["lifecycleStatus", "description", "subject"]),
    ("Group", &["implicitRules", "identifier", "active", "type", "actual", "code", "name", "quantity", "managingEntity"], &["type", "actual"]),
    ("HealthcareService", &["implicitRules", "identifier", "active", "providedBy", "category", "type", "specialty", "location", "name", "comment", "photo"], &[]),
    ("ImagingStudy", &["implicitRules", "identifier", "status", "modality", "subject", "encounter", "started", "basedOn", "referrer", "interpreter", "endpoint", "numberOfSeries", "numberOfInstances", "procedureReference", "procedureCode", "location", "reasonCode", "reasonReference", "note", "description", "series"], &["status", "subject"]),
    ("Immunization", &["implicitRules", "status", "vaccineCode", "patient", "occurrence[x]", "primarySource", "performer", "note", "isSubpotent"], &["status", "vaccineCode", "patient", "occurrence[x]"]),
    ("List", &["implicitRules", "status", "mode", "title", "code", "subject", "date", "source"], &["status", "mode"]),
    ("Location", &["implicitRules", "identifier", "status", "operationalStatus", "name", "description", "mode", "type", "physicalType", "managingOrganization"], &[]),
    ("Medication", &["implicitRules", "identifier", "code", "status", "manufacturer", "amount"], &[]),
    ("MedicationAdministration", &["implicitRules", "instantiates", "partOf", "status", "medication[x]", "subject", "effective[x]", "performer"], &["status", "medication[x]", "subject", "effective[x]"]),
    ("MedicationDispense", &["implicitRules", "status", "medication[x]", "subject", "whenPrepared"], &["status", "medication[x]"]),
    ("MedicationRequest", &["implicitRules", "status", "intent", "priority", "doNotPerform", "reported[x]", "medication[x]", "subject", "authoredOn", "requester", "performerType", "instantiatesCanonical", "instantiatesUri", "basedOn", "groupIdentifier"], &["status", "intent", "medication[x]", "subject"]),
    ("MedicationStatement", &["implicitRules", "identifier", "basedOn", "partOf", "status", "category", "medication[x]", "subject", "context", "effective[x]", "dateAsserted"], &["status", "medication[x]", "subject"]),
    ("NutritionOrder", &["implicitRules", "instantiatesCanonical", "instantiatesUri", "status", "intent", "patient", "dateTime", "orderer"], &["status", "intent", "patient", "dateTime"]),
    ("Observation", &["implicitRules", "identifier", "basedOn", "partOf", "status", "code", "subject", "focus", "encounter", "effective[x]", "issued", "performer", "value[x]", "hasMember", "derivedFrom", "component"], &["status", "code"]),
    ("OperationOutcome", &["implicitRules", "issue"], &["issue"]),
    ("Organization", &["implicitRules", "identifier", "active", "type", "name", "partOf"], &[]),
    ("Patient", &["implicitRules", "identifier", "active", "name", "telecom", "gender", "birthDate", "deceased[x]", "address", "managingOrganization", "link"], &[]),
    ("Practitioner", &["implicitRules", "identifier", "active", "name", "telecom", "address", "gender", "birthDate"], &[]),
    ("PractitionerRole", &["implicitRules", "identifier", "active", "period", "practitioner", "organization", "code", "specialty", "location", "telecom"], &[]),
    ("Procedure", &["implicitRules", "identifier", "instantiatesCanonical", "instantiatesUri", "basedOn", "partOf", "status", "statusReason", "category", "code", "subject", "encounter", "performed[x]", "recorder", "asserter", "performer", "location", "reasonCode", "reasonReference", "bodySite", "outcome"], &["status", "subject"]),
    ("Provenance", &["implicitRules", "target", "recorded"], &["target", "recorded", "agent"]),
    ("Questionnaire", &["implicitRules", "url", "identifier", "version", "name", "title", "status", "experimental", "subjectType", "date", "publisher", "contact", "useContext", "jurisdiction", "effectivePeriod", "code"], &["status"]),
    ("QuestionnaireResponse", &["implicitRules", "identifier", "basedOn", "partOf", "questionnaire", "status", "subject", "encounter", "authored", "author", "source"], &["status"]),
    ("RelatedPerson", &["implicitRules", "identifier", "active", "patient", "relationship", "name", "telecom", "gender", "birthDate", "address"], &["patient"]),
    ("Schedule", &["implicitRules", "identifier", "active", "serviceCategory", "serviceType", "specialty", "actor", "planningHorizon"], &["actor"]),
    ("SearchParameter", &["implicitRules", "url", "version", "name", "status", "experimental", "date", "publisher", "contact", "description", "useContext", "jurisdiction", "code", "base", "type"], &["url", "name", "status", "description", "code", "base", "type"]),
    ("ServiceRequest", &["implicitRules", "identifier", "instantiatesCanonical", "instantiatesUri", "basedOn", "replaces", "requisition", "status", "intent", "category", "priority", "doNotPerform", "code", "orderDetail", "quantity[x]", "subject", "encounter", "occurrence[x]", "asNeeded[x]", "authoredOn", "requester", "performerType", "performer", "locationCode", "locationReference", "reasonCode", "reasonReference", "specimen", "bodySite", "patientInstruction"], &["status", "intent", "subject"]),
    ("Slot", &["implicitRules", "identifier", "serviceCategory", "serviceType", "specialty", "appointmentType", "schedule", "status", "start", "end"], &["schedule", "status", "start", "end"]),
    ("Specimen", &["implicitRules", "identifier", "accessionIdentifier", "status", "type", "subject", "receivedTime", "condition"], &[]),
    ("StructureDefinition", &["implicitRules", "url", "identifier", "version", "name", "title", "status", "experimental", "date", "publisher", "contact", "useContext", "jurisdiction", "keyword", "fhirVersion", "kind", "abstract", "context", "contextInvariant", "type", "baseDefinition", "derivation"], &["url", "name", "status", "kind", "abstract", "type"]),
    ("Task", &["implicitRules", "instantiatesCanonical", "instantiatesUri", "basedOn", "groupIdentifier", "partOf", "status", "statusReason", "businessStatus", "intent", "code", "description", "focus", "for", "encounter", "executionPeriod", "lastModified", "requester", "owner", "location"], &["status", "intent"]),
    ("ValueSet", &["implicitRules", "url", "identifier", "version", "name", "title", "status", "experimental", "date", "publisher", "contact", "useContext", "jurisdiction", "immutable"], &["status"]),
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn subset(params: &[(&str, &str)], resource: Value) -> Value {
        let mut params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let s = Subsetting::take(&mut params).unwrap();
        let t = resource["resourceType"].as_str().unwrap().to_string();
        serde_json::from_str(&s.apply(&t, &resource.to_string()).unwrap()).unwrap()
    }

    fn patient() -> Value {
        json!({
            "resourceType": "Patient", "id": "p1", "meta": {"versionId": "1"},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "identifier": [{"value": "1"}], "active": true, "name": [{"family": "F"}],
            "birthDate": "1970-01-01", "_birthDate": {"extension": []},
            "deceasedBoolean": false, "maritalStatus": {"text": "M"}, "contact": [{}]
        })
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn table_is_sorted() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn summary_true_keeps_summary_elements() {
        let out = subset(&[("_summary", "true")], patient());
        assert_eq!(
            keys(&out),
            ["resourceType", "id", "meta", "identifier", "active", "name", "birthDate", "_birthDate", "deceasedBoolean"]
        );
        assert_eq!(out["meta"]["tag"][0]["code"], "SUBSETTED");
        assert_eq!(out["meta"]["versionId"], "1");
    }

    #[test]
    fn summary_text_and_data() {
        let out = subset(&[("_summary", "text")], patient());
        assert_eq!(keys(&out), ["resourceType", "id", "meta", "text"]);
        // Parsed from text: the json! macro would turn 1.50 into an f64.
        let obs: Value = serde_json::from_str(
            r#"{"resourceType":"Observation","id":"o","status":"final","code":{},"text":{},"valueQuantity":{"value":1.50}}"#,
        )
        .unwrap();
        let out = subset(&[("_summary", "text")], obs.clone());
        assert_eq!(keys(&out), ["resourceType", "id", "status", "code", "text", "meta"]);
        let out = subset(&[("_summary", "data")], obs);
        assert_eq!(keys(&out), ["resourceType", "id", "status", "code", "valueQuantity", "meta"]);
        assert_eq!(out["valueQuantity"]["value"].to_string(), "1.50");
    }

    #[test]
    fn elements_keep_named_and_mandatory() {
        let out = subset(&[("_elements", "birthDate,Patient.active")], patient());
        assert_eq!(keys(&out), ["resourceType", "id", "meta", "active", "birthDate", "_birthDate"]);
        let obs = json!({"resourceType": "Observation", "id": "o", "status": "final", "code": {}, "valueQuantity": {}, "subject": {}});
        let out = subset(&[("_elements", "value")], obs);
        assert_eq!(keys(&out), ["resourceType", "id", "status", "code", "valueQuantity", "meta"]);
    }

    #[test]
    fn bare_names_do_not_match_prefixes() {
        assert!(names_element("value[x]", "valueQuantity"));
        assert!(names_element("value", "valueString"));
        assert!(!names_element("code", "codeFilter"));
        assert!(!names_element("value", "valueSet"));
    }

    #[test]
    fn bad_parameters() {
        let mut p = vec![("_summary".to_string(), "maybe".to_string())];
        assert!(Subsetting::take(&mut p).is_err());
        let mut p = vec![("_summary".to_string(), "true".to_string()), ("_elements".to_string(), "id".to_string())];
        assert!(Subsetting::take(&mut p).is_err());
        let mut p = vec![("_elements".to_string(), "a b".to_string())];
        assert!(Subsetting::take(&mut p).is_err());
    }
}
