//! Patch: JSON Patch (RFC 6902) and FHIRPath Patch (a Parameters resource).
//! See <http://hl7.org/fhir/R4/http.html#patch> and <http://hl7.org/fhir/R4/fhirpatch.html>.
//!
//! Both return the patched copy or the issues that stopped the patch; the
//! input is never changed and no input makes them panic. Whether the result is
//! a valid resource with the same type and id is for the caller to check (it
//! validates every write anyway).

mod fhirpath_patch;
mod structure;

pub use fhirpath_patch::apply_fhirpath_patch;

use crate::outcome::{Issue, IssueType};
use serde::Deserialize as _;
use serde_json::Value;

/// Applies an RFC 6902 JSON Patch document (`application/json-patch+json`).
/// Operations apply in order; the first that fails stops the patch and its
/// issue names it (`expression`: the operation's index in the document).
pub fn apply_json_patch(resource: &Value, patch: &Value) -> Result<Value, Vec<Issue>> {
    let Some(operations) = patch.as_array() else {
        return Err(vec![Issue::error(IssueType::Invalid, "a JSON Patch document is an array of operations")]);
    };
    let mut parsed = Vec::with_capacity(operations.len());
    for (i, op) in operations.iter().enumerate() {
        match json_patch::PatchOperation::deserialize(op) {
            Ok(op) => parsed.push(op),
            Err(_) => {
                return Err(vec![
                    Issue::error(IssueType::Invalid, format!("JSON Patch operation {i} is malformed"))
                        .at(format!("[{i}]")),
                ]);
            }
        }
    }
    let mut doc = resource.clone();
    // `patch_unsafe` does not roll back: the copy is discarded on failure anyway.
    match json_patch::patch_unsafe(&mut doc, &parsed) {
        Ok(()) => Ok(doc),
        Err(e) => {
            let code = match e.kind {
                json_patch::PatchErrorKind::TestFailed => IssueType::Processing,
                _ => IssueType::Invalid,
            };
            Err(vec![
                Issue::error(code, format!("JSON Patch operation {} failed: {}", e.operation, e.kind))
                    .at(format!("[{}]", e.operation)),
            ])
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applies_rfc6902_operations_in_order() {
        let patient = json!({"resourceType": "Patient", "id": "1", "active": true, "name": [{"family": "A"}]});
        let patch = json!([
            {"op": "test", "path": "/active", "value": true},
            {"op": "replace", "path": "/active", "value": false},
            {"op": "add", "path": "/name/-", "value": {"family": "B"}},
            {"op": "copy", "from": "/name/0", "path": "/name/-"},
            {"op": "move", "from": "/name/2", "path": "/name/0"},
            {"op": "remove", "path": "/name/1"},
            {"op": "add", "path": "/birthDate", "value": "1970-01-01"}
        ]);
        let out = apply_json_patch(&patient, &patch).unwrap();
        assert_eq!(
            out,
            json!({"resourceType": "Patient", "id": "1", "active": false, "name": [{"family": "A"}, {"family": "B"}], "birthDate": "1970-01-01"})
        );
        assert_eq!(patient["active"], json!(true), "the input is not changed");
    }

    #[test]
    fn failures_name_the_operation() {
        let patient = json!({"resourceType": "Patient", "id": "1", "active": true});
        let issues = apply_json_patch(
            &patient,
            &json!([{"op": "replace", "path": "/active", "value": false}, {"op": "test", "path": "/active", "value": true}]),
        )
        .unwrap_err();
        assert_eq!(issues[0].code, IssueType::Processing);
        assert_eq!(issues[0].expression.as_deref(), Some("[1]"));

        let issues = apply_json_patch(&patient, &json!([{"op": "remove", "path": "/nope"}])).unwrap_err();
        assert_eq!((issues[0].code, issues[0].expression.as_deref()), (IssueType::Invalid, Some("[0]")));

        let issues = apply_json_patch(&patient, &json!([{"op": "add", "path": "/a", "value": 1}, {"op": "jump"}])).unwrap_err();
        assert_eq!(issues[0].expression.as_deref(), Some("[1]"));
        assert!(apply_json_patch(&patient, &json!({"op": "add"})).is_err());
        assert!(apply_json_patch(&patient, &json!([{"op": "add", "path": "no-slash", "value": 1}])).is_err());
        assert_eq!(apply_json_patch(&patient, &json!([])).unwrap(), patient);
    }
}
