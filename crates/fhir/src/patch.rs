//! Patch: JSON Patch (RFC 6902) and FHIRPath Patch (a Parameters resource).
//! See <http://hl7.org/fhir/R4/http.html#patch> and <http://hl7.org/fhir/R4/fhirpatch.html>.
