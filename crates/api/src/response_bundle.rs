//! Writes searchset and history Bundles as text, splicing in the stored
//! resource JSON as it is: no resource is parsed or re-serialised unless
//! `_summary`/`_elements` asks for a subset. See
//! <http://hl7.org/fhir/R4/bundle.html> and <http://hl7.org/fhir/R4/http.html#paging>.

use bytes::Bytes;
use domain::store::{Method, StoredResource};

/// `Bundle.type` of the responses written here.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BundleType {
    Searchset,
    History,
}

impl BundleType {
    fn code(self) -> &'static str {
        match self {
            BundleType::Searchset => "searchset",
            BundleType::History => "history",
        }
    }
}

/// A Bundle being written: header first, then entries, then `finish`.
pub(crate) struct BundleWriter {
    buf: Vec<u8>,
    entries: usize,
}

impl BundleWriter {
    /// `links` are (relation, url) pairs.
    pub(crate) fn new(kind: BundleType, total: Option<u64>, links: &[(&str, String)], capacity: usize) -> BundleWriter {
        let mut buf = Vec::with_capacity(256 + capacity);
        buf.extend_from_slice(b"{\"resourceType\":\"Bundle\",\"type\":\"");
        buf.extend_from_slice(kind.code().as_bytes());
        buf.push(b'"');
        if let Some(total) = total {
            buf.extend_from_slice(b",\"total\":");
            buf.extend_from_slice(total.to_string().as_bytes());
        }
        if !links.is_empty() {
            buf.extend_from_slice(b",\"link\":[");
            for (i, (relation, url)) in links.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(b"{\"relation\":");
                push_string(&mut buf, relation);
                buf.extend_from_slice(b",\"url\":");
                push_string(&mut buf, url);
                buf.push(b'}');
            }
            buf.push(b']');
        }
        BundleWriter { buf, entries: 0 }
    }

    fn start_entry(&mut self, full_url: &str) {
        self.buf.extend_from_slice(if self.entries == 0 { b",\"entry\":[" } else { b"," });
        self.entries += 1;
        self.buf.extend_from_slice(b"{\"fullUrl\":");
        push_string(&mut self.buf, full_url);
    }

    /// A search match: `resource_json` must be one JSON object (stored text).
    pub(crate) fn match_entry(&mut self, full_url: &str, resource_json: &str) {
        self.start_entry(full_url);
        self.buf.extend_from_slice(b",\"resource\":");
        self.buf.extend_from_slice(resource_json.as_bytes());
        self.buf.extend_from_slice(b",\"search\":{\"mode\":\"match\"}}");
    }

    /// A resource that `_include` or `_revinclude` added
    /// (<http://hl7.org/fhir/R4/search.html#include>).
    pub(crate) fn include_entry(&mut self, full_url: &str, resource_json: &str) {
        self.start_entry(full_url);
        self.buf.extend_from_slice(b",\"resource\":");
        self.buf.extend_from_slice(resource_json.as_bytes());
        self.buf.extend_from_slice(b",\"search\":{\"mode\":\"include\"}}");
    }

    /// An OperationOutcome about the search itself (`search.mode = outcome`),
    /// with one warning.
    pub(crate) fn outcome_entry(&mut self, code: &str, diagnostics: &str) {
        self.buf.extend_from_slice(if self.entries == 0 { b",\"entry\":[" } else { b"," });
        self.entries += 1;
        self.buf.extend_from_slice(b"{\"resource\":{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"warning\",\"code\":");
        push_string(&mut self.buf, code);
        self.buf.extend_from_slice(b",\"diagnostics\":");
        push_string(&mut self.buf, diagnostics);
        self.buf.extend_from_slice(b"}]},\"search\":{\"mode\":\"outcome\"}}");
    }

    /// A history entry (<http://hl7.org/fhir/R4/http.html#history>): the
    /// version (absent for a delete), how it was made and its outcome.
    pub(crate) fn history_entry(&mut self, full_url: &str, version: &StoredResource, resource_json: Option<&str>) {
        self.start_entry(full_url);
        if let Some(json) = resource_json {
            self.buf.extend_from_slice(b",\"resource\":");
            self.buf.extend_from_slice(json.as_bytes());
        }
        let url = match version.method {
            Method::Post => version.resource_type.clone(),
            _ => format!("{}/{}", version.resource_type, version.id),
        };
        let status = match version.method {
            Method::Post => "201 Created",
            Method::Put if version.version_id == 1 => "201 Created",
            Method::Put | Method::Patch => "200 OK",
            Method::Delete => "204 No Content",
        };
        self.buf.extend_from_slice(b",\"request\":{\"method\":");
        push_string(&mut self.buf, version.method.as_str());
        self.buf.extend_from_slice(b",\"url\":");
        push_string(&mut self.buf, &url);
        self.buf.extend_from_slice(b"},\"response\":{\"status\":");
        push_string(&mut self.buf, status);
        self.buf.extend_from_slice(b",\"etag\":");
        push_string(&mut self.buf, &crate::negotiation::etag(version.version_id));
        self.buf.extend_from_slice(b",\"lastModified\":");
        push_string(&mut self.buf, &version.last_updated.to_fhir());
        self.buf.extend_from_slice(b"}}");
    }

    pub(crate) fn finish(mut self) -> Bytes {
        if self.entries > 0 {
            self.buf.push(b']');
        }
        self.buf.push(b'}');
        Bytes::from(self.buf)
    }
}

/// Appends a JSON string literal, escaped.
fn push_string(buf: &mut Vec<u8>, text: &str) {
    // Writing a &str into a Vec cannot fail; a failure would only lose the value.
    if serde_json::to_writer(&mut *buf, text).is_err() {
        buf.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use fhir::instant::Instant;
    use serde_json::Value;
    use std::sync::Arc;

    #[test]
    fn writes_valid_json() {
        let links = [("self", "http://x/fhir/Patient?name=a\"b".to_string())];
        let mut w = BundleWriter::new(BundleType::Searchset, Some(2), &links, 0);
        w.match_entry("http://x/fhir/Patient/1", r#"{"resourceType":"Patient","id":"1","x":1.50}"#);
        w.match_entry("http://x/fhir/Patient/2", r#"{"resourceType":"Patient","id":"2"}"#);
        let v: Value = serde_json::from_slice(&w.finish()).unwrap();
        assert_eq!(v["total"], 2);
        assert_eq!(v["link"][0]["url"], "http://x/fhir/Patient?name=a\"b");
        assert_eq!(v["entry"][0]["resource"]["x"].to_string(), "1.50");
        assert_eq!(v["entry"][1]["search"]["mode"], "match");

        let mut w = BundleWriter::new(BundleType::Searchset, None, &[], 0);
        w.match_entry("http://x/fhir/Observation/1", r#"{"resourceType":"Observation","id":"1"}"#);
        w.include_entry("http://x/fhir/Patient/2", r#"{"resourceType":"Patient","id":"2"}"#);
        w.outcome_entry("too-costly", "some \"included\" resources were left out");
        let v: Value = serde_json::from_slice(&w.finish()).unwrap();
        assert_eq!(v["entry"][1]["search"]["mode"], "include");
        assert_eq!(v["entry"][1]["resource"]["id"], "2");
        assert_eq!(v["entry"][2]["search"]["mode"], "outcome");
        assert_eq!(v["entry"][2]["resource"]["issue"][0]["code"], "too-costly");

        let empty: Value = serde_json::from_slice(&BundleWriter::new(BundleType::History, None, &[], 0).finish()).unwrap();
        assert_eq!(empty, serde_json::json!({"resourceType": "Bundle", "type": "history"}));
    }

    #[test]
    fn history_entries() {
        let deleted = StoredResource {
            resource_type: "Patient".into(),
            id: "1".into(),
            version_id: 2,
            last_updated: Instant(0),
            method: Method::Delete,
            body: None,
        };
        let created = StoredResource { version_id: 1, method: Method::Post, body: Some(Arc::from("{}")), ..deleted.clone() };
        let mut w = BundleWriter::new(BundleType::History, Some(2), &[], 0);
        w.history_entry("u", &deleted, None);
        w.history_entry("u", &created, created.body.as_deref());
        let v: Value = serde_json::from_slice(&w.finish()).unwrap();
        assert!(v["entry"][0].get("resource").is_none());
        assert_eq!(v["entry"][0]["request"]["method"], "DELETE");
        assert_eq!(v["entry"][0]["request"]["url"], "Patient/1");
        assert_eq!(v["entry"][1]["request"]["url"], "Patient");
        assert_eq!(v["entry"][1]["response"]["status"], "201 Created");
        assert_eq!(v["entry"][1]["response"]["etag"], "W/\"1\"");
    }
}
