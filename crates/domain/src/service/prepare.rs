//! Turning a client's resource into a version to store: checks, validation,
//! `id` and `meta` stamping, and search-index extraction.

use crate::error::{Error, ErrorKind};
use crate::store::{ContainedIndex, Method, Write};
use fhir::instant::Instant;
use fhir::search::Registry;
use fhir::search::text::TextIndex;
use serde_json::{Map, Value};
use std::sync::Arc;

/// True when `id` is a valid FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Checks the resource type named in a URL or bundle request.
/// `Parameters` is a resource type without a REST endpoint in R4
/// (<http://hl7.org/fhir/R4/parameters.html>): it is never stored.
pub fn check_type(resource_type: &str) -> Result<(), Error> {
    if resource_type == "Parameters" {
        Err(Error::new(ErrorKind::NotFound, "Parameters resources have no REST endpoint and are not stored"))
    } else if fhir::definitions::is_resource_type(resource_type) {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::NotFound, format!("unknown resource type '{}'", short(resource_type))))
    }
}

/// Checks an id taken from a URL.
pub fn check_id(id: &str) -> Result<(), Error> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::BadRequest, "invalid resource id: ids are 1-64 characters of A-Z a-z 0-9 - ."))
    }
}

/// Truncates a client-supplied token for a diagnostic message.
pub(crate) fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Validates a resource body for `resource_type`. `location` prefixes issue
/// expressions (e.g. `Bundle.entry[3].resource`) when the resource sits in a bundle.
pub fn validate(resource_type: &str, body: &Value, location: Option<&str>) -> Result<(), Error> {
    let Some(obj) = body.as_object() else {
        return Err(Error::new(ErrorKind::BadRequest, "the body must be a JSON object (a FHIR resource)"));
    };
    match obj.get("resourceType").and_then(Value::as_str) {
        None => {
            return Err(Error::new(ErrorKind::BadRequest, "the resource has no resourceType")
                .at(location.unwrap_or(resource_type).to_string()));
        }
        Some(rt) if rt != resource_type => {
            return Err(Error::new(
                ErrorKind::BadRequest,
                format!("resourceType '{}' does not match the type '{resource_type}' of the request", short(rt)),
            )
            .at(location.map_or_else(|| "resourceType".to_string(), |l| format!("{l}.resourceType"))));
        }
        Some(_) => {}
    }
    let mut issues = fhir::validation::validate(body);
    if !issues.iter().any(fhir::Issue::is_error) {
        return Ok(());
    }
    issues.retain(fhir::Issue::is_error);
    if let Some(location) = location {
        for issue in &mut issues {
            if let Some(expr) = &issue.expression {
                let rest = expr.strip_prefix(resource_type).unwrap_or(expr);
                issue.expression = Some(format!("{location}{rest}"));
            } else {
                issue.expression = Some(location.to_string());
            }
        }
    }
    Err(Error::with_issues(ErrorKind::Invalid, issues))
}

/// Sets `id`, `meta.versionId` and `meta.lastUpdated` (keeping the other meta
/// elements), serialises, and extracts the search index. `body` is borrowed:
/// the stamped resource is written out as it is serialised ([`Stamped`]),
/// never copied (a bulk load stamps millions). Neither the id nor those two
/// meta elements are search values or words, so the index and the words are
/// taken from `body` as it is.
pub fn stamp(
    registry: &Registry,
    resource_type: &str,
    id: &str,
    version_id: u64,
    last_updated: Instant,
    method: Method,
    body: &Value,
) -> Write {
    let index = registry.extract(body);
    let words = TextIndex::of(body);
    let contained = contained_index(registry, body);
    let text = match body.as_object() {
        // Into a String, with string keys only, serde_json cannot fail; a
        // fallback would store the body unstamped.
        Some(object) => serde_json::to_string(&Stamped { object, id, meta: stamped_meta(object, version_id, last_updated) })
            .expect("a JSON object with string keys serialises into a String"),
        None => body.to_string(),
    };
    Write {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        version_id,
        last_updated,
        method,
        body: Some(Arc::from(text)),
        index,
        text: words,
        contained,
    }
}

/// A resource object serialised with its `id` and `meta` stamped: as
/// FHIR JSON writers do, `resourceType` first and `id` second when the
/// object had no id (an id it had keeps its place, with the new value);
/// `meta` where it was, or last.
struct Stamped<'a> {
    object: &'a Map<String, Value>,
    id: &'a str,
    meta: Map<String, Value>,
}

impl serde::Serialize for Stamped<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let had_id = self.object.contains_key("id");
        let had_meta = self.object.contains_key("meta");
        let mut map = serializer.serialize_map(None)?;
        if !had_id {
            if let Some(resource_type) = self.object.get("resourceType") {
                map.serialize_entry("resourceType", resource_type)?;
            }
            map.serialize_entry("id", self.id)?;
        }
        for (key, value) in self.object {
            match key.as_str() {
                "resourceType" if !had_id => {}
                "id" => map.serialize_entry("id", self.id)?,
                "meta" => map.serialize_entry("meta", &self.meta)?,
                _ => map.serialize_entry(key, value)?,
            }
        }
        if !had_meta {
            map.serialize_entry("meta", &self.meta)?;
        }
        map.end()
    }
}

/// The `meta` of a stamped version: the object's own (when it is an
/// object) with `versionId` and `lastUpdated` set.
fn stamped_meta(object: &Map<String, Value>, version_id: u64, last_updated: Instant) -> Map<String, Value> {
    let mut meta = match object.get("meta") {
        Some(Value::Object(meta)) => meta.clone(),
        _ => Map::new(),
    };
    meta.insert("versionId".into(), Value::String(version_id.to_string()));
    meta.insert("lastUpdated".into(), Value::String(last_updated.to_fhir()));
    meta
}

/// The search values and words of each resource `body` contains
/// (search.html#contained), extracted as for a resource of its own type.
/// A contained resource without a valid id, or whose id an earlier one
/// already has, cannot be told apart (`#id`) and is not indexed.
pub fn contained_index(registry: &Registry, body: &Value) -> Vec<ContainedIndex> {
    let Some(list) = body.get("contained").and_then(Value::as_array) else { return Vec::new() };
    let mut out: Vec<ContainedIndex> = Vec::with_capacity(list.len());
    for resource in list {
        let (Some(resource_type), Some(id)) =
            (resource.get("resourceType").and_then(Value::as_str), resource.get("id").and_then(Value::as_str))
        else {
            continue;
        };
        if !is_valid_id(id) || !fhir::definitions::is_resource_type(resource_type) || out.iter().any(|c| c.id == id) {
            continue;
        }
        out.push(ContainedIndex {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            index: registry.extract(resource),
            text: TextIndex::of(resource),
        });
    }
    out
}

/// The JSON of the resource with id `contained_id` that `body` (a stored
/// container's JSON text) contains, and its type: what a search with
/// `_containedType=contained` answers for a match
/// ([`crate::store::contained_match_id`]). `None` when there is none.
pub fn contained_resource(body: &str, contained_id: &str) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(body).ok()?;
    let found = value.get("contained")?.as_array()?.iter().find(|c| c.get("id").and_then(Value::as_str) == Some(contained_id))?;
    let resource_type = found.get("resourceType")?.as_str()?.to_string();
    Some((resource_type, found.to_string()))
}

/// A tombstone version.
pub fn tombstone(resource_type: &str, id: &str, version_id: u64, last_updated: Instant) -> Write {
    Write {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        version_id,
        last_updated,
        method: Method::Delete,
        body: None,
        index: Vec::new(),
        text: TextIndex::default(),
        contained: Vec::new(),
    }
}

/// Parses stored JSON text back into a value.
pub fn parse_stored(text: &str) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|_| Error::new(ErrorKind::Internal, "a stored resource could not be parsed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_spec() {
        assert!(is_valid_id("a-B.9"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id(&"x".repeat(65)));
    }

    #[test]
    fn stamp_sets_meta_and_keeps_the_rest() {
        let body: Value =
            serde_json::from_str(r#"{"resourceType":"Observation","meta":{"tag":[{"code":"t"}]},"valueQuantity":{"value":1.50}}"#)
                .unwrap_or(Value::Null);
        let write = stamp(&Registry::core(), "Observation", "o1", 3, Instant(0), Method::Put, &body);
        let text = write.body.as_deref().unwrap_or("");
        assert!(text.starts_with(r#"{"resourceType":"Observation","id":"o1","meta":{"tag""#), "{text}");
        assert!(text.contains(r#""versionId":"3""#));
        assert!(text.contains(r#""value":1.50"#));
        assert!(write.contained.is_empty());
    }

    #[test]
    fn contained_resources_are_indexed_under_their_own_type() {
        let body = serde_json::json!({
            "resourceType": "MedicationRequest",
            "contained": [
                {"resourceType": "Medication", "id": "m1", "code": {"coding": [{"system": "http://x", "code": "A"}]}},
                {"resourceType": "Medication", "id": "m1", "code": {"text": "same id again"}},
                {"resourceType": "Medication", "code": {"text": "no id"}},
                {"resourceType": "Organization", "id": "o1", "name": "Acme Pharma"}
            ],
            "medicationReference": {"reference": "#m1"}
        });
        let write = stamp(&Registry::core(), "MedicationRequest", "r1", 1, Instant(0), Method::Post, &body);
        let kinds: Vec<(&str, &str)> = write.contained.iter().map(|c| (c.resource_type.as_str(), c.id.as_str())).collect();
        assert_eq!(kinds, vec![("Medication", "m1"), ("Organization", "o1")]);
        assert!(write.contained[0].index.iter().any(|e| e.param == "code"));
        assert!(write.contained[1].text.content.contains("acme"));
        let text = write.body.as_deref().unwrap_or("");
        let (resource_type, json) = contained_resource(text, "o1").unwrap_or_default();
        assert_eq!(resource_type, "Organization");
        assert!(json.contains("Acme Pharma"));
        assert!(contained_resource(text, "nope").is_none());
    }

    /// What a stamped version is: the body with `id` and `meta` set in
    /// place (this, with `preserve_order`, is what [`stamp`] writes out
    /// without copying the body).
    fn set_id_and_meta(obj: &mut Map<String, Value>, id: &str, version_id: u64, last_updated: Instant) {
        // Keep `resourceType` first and `id` second, as FHIR JSON writers do.
        let had_id = obj.contains_key("id");
        obj.insert("id".into(), Value::String(id.to_string()));
        if !had_id {
            // preserve_order appends new keys; move id right after resourceType.
            let entries: Vec<(String, Value)> = std::mem::take(obj).into_iter().collect();
            for (k, v) in entries.iter().filter(|(k, _)| k == "resourceType" || k == "id") {
                obj.insert(k.clone(), v.clone());
            }
            for (k, v) in entries.into_iter().filter(|(k, _)| k != "resourceType" && k != "id") {
                obj.insert(k, v);
            }
        }
        let meta = obj.entry("meta").or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("versionId".into(), Value::String(version_id.to_string()));
            meta.insert("lastUpdated".into(), Value::String(last_updated.to_fhir()));
        }
    }

    #[test]
    fn stamping_writes_what_setting_id_and_meta_in_place_would() {
        let bodies = [
            r#"{"resourceType":"Patient","id":"old","active":true}"#,
            r#"{"resourceType":"Patient","active":true}"#,
            r#"{"active":true,"resourceType":"Patient"}"#,
            r#"{"resourceType":"Patient","meta":{"tag":[{"code":"t"}],"versionId":"9"},"name":[{"family":"Ôé"}]}"#,
            r#"{"resourceType":"Patient","meta":"not an object","gender":"other"}"#,
            r#"{"resourceType":"Patient","gender":"other","meta":{"lastUpdated":"2020-01-01T00:00:00Z","source":"s"}}"#,
            r#"{"id":"x","resourceType":"Patient"}"#,
            r#"{}"#,
        ];
        for text in bodies {
            let body: Value = serde_json::from_str(text).expect("json");
            let mut expected = body.clone();
            if let Some(object) = expected.as_object_mut() {
                set_id_and_meta(object, "p1", 4, Instant(1_600_000_000_000_000));
            }
            let write = stamp(&Registry::core(), "Patient", "p1", 4, Instant(1_600_000_000_000_000), Method::Put, &body);
            assert_eq!(write.body.as_deref(), Some(expected.to_string().as_str()), "{text}");
        }
    }
}
