//! Duplicate-key detection for JSON request bodies.
//!
//! RFC 8259 §4 leaves the meaning of repeated object names open, and
//! serde_json keeps the last one: `{"gender":"male","gender":"female"}`
//! would silently lose "male". FHIR JSON has each property at most once
//! (<http://hl7.org/fhir/R4/json.html>), so a body that repeats a key is
//! refused instead of guessed at.
//!
//! The check is a second, allocation-light pass over a text that already
//! parsed into a `serde_json::Value`: the first pass keeps numbers exact
//! (`arbitrary_precision`) with serde_json's own code, and this pass only
//! compares keys, borrowing them from the input unless they hold escapes.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// Objects with more keys than this switch from a linear scan to a hash set,
/// so a hostile object with very many keys stays linear overall.
const LINEAR_KEYS: usize = 16;

/// Longest key shown in a location; longer keys are clipped.
const SHOWN_KEY_CHARS: usize = 64;

/// One step from the root of a JSON document to a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// The first repeated key of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Duplicate {
    /// From the root to the repeated key (the last step), outermost first.
    pub(crate) path: Vec<Step>,
    /// Where the parser stood when it read the repeat (1-based).
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Duplicate {
    /// The location as a FHIRPath-style expression: `Patient.name[0].given`
    /// when the document is a resource (`root` is its type), `$this[1].value`
    /// for other documents such as a JSON Patch. Keys that are not plain
    /// identifiers are quoted with backticks, as FHIRPath delimits them.
    pub(crate) fn expression(&self, root: Option<&str>) -> String {
        let mut out = String::new();
        match (root, self.path.first()) {
            (Some(root), _) => out.push_str(root),
            (None, Some(Step::Index(_))) => out.push_str("$this"),
            (None, _) => {}
        }
        for step in &self.path {
            match step {
                Step::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    push_identifier(&mut out, key);
                }
                Step::Index(index) => {
                    out.push('[');
                    out.push_str(&index.to_string());
                    out.push(']');
                }
            }
        }
        out
    }
}

fn push_identifier(out: &mut String, key: &str) {
    let plain = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let clipped: String = key.chars().take(SHOWN_KEY_CHARS).collect();
    let ellipsis = if clipped.len() < key.len() { "..." } else { "" };
    if plain {
        out.push_str(&clipped);
        out.push_str(ellipsis);
    } else {
        out.push('`');
        out.push_str(&clipped.replace('`', "\\`"));
        out.push_str(ellipsis);
        out.push('`');
    }
}

/// The first object key repeated within one object, anywhere in `bytes`.
/// `bytes` must be JSON that serde_json already accepted (as a `Value`, with
/// the same nesting limit); for other input the answer is `None`.
pub(crate) fn first_duplicate(bytes: &[u8]) -> Option<Duplicate> {
    let mut keys = Vec::new();
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let error = Scan { keys: &mut keys, found: &mut found }.deserialize(&mut deserializer).err()?;
    let mut path = found?;
    // Steps were pushed while unwinding, innermost first.
    path.reverse();
    Some(Duplicate { path, line: error.line(), column: error.column() })
}

/// Walks one value. `keys` is a stack shared by every open object (each
/// object owns the part above where it started), so the common case of
/// small objects allocates nothing per object. `found` receives the path to
/// a repeat, one step per level as the error unwinds.
struct Scan<'a, 'de> {
    keys: &'a mut Vec<Cow<'de, str>>,
    found: &'a mut Option<Vec<Step>>,
}

impl<'de> Scan<'_, 'de> {
    fn child(&mut self) -> Scan<'_, 'de> {
        Scan { keys: &mut *self.keys, found: &mut *self.found }
    }

    fn on_unwind(&mut self, step: impl FnOnce() -> Step) {
        if let Some(path) = self.found.as_mut() {
            path.push(step());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Scan<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            match seq.next_element_seed(self.child()) {
                Ok(Some(())) => index += 1,
                Ok(None) => return Ok(()),
                Err(error) => {
                    self.on_unwind(|| Step::Index(index));
                    return Err(error);
                }
            }
        }
    }

    // With `arbitrary_precision`, serde_json presents a non-integer number
    // as a one-entry map; one key can never repeat, so it needs no case.
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let start = self.keys.len();
        let mut many: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let repeated = match &many {
                Some(set) => set.contains(&key),
                None => self.keys[start..].contains(&key),
            };
            if repeated {
                *self.found = Some(vec![Step::Key(key.into_owned())]);
                return Err(de::Error::custom("duplicate JSON object key"));
            }
            if let Err(error) = map.next_value_seed(self.child()) {
                self.on_unwind(|| Step::Key(key.into_owned()));
                return Err(error);
            }
            match &mut many {
                Some(set) => {
                    set.insert(key);
                }
                None => {
                    self.keys.push(key);
                    if self.keys.len() - start > LINEAR_KEYS {
                        many = Some(self.keys.drain(start..).collect());
                    }
                }
            }
        }
        self.keys.truncate(start);
        Ok(())
    }
}

/// A key, borrowed from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key.to_owned()))
    }

    fn visit_string<E>(self, key: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(text: &str) -> Option<(String, usize, usize)> {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let root = value.get("resourceType").and_then(serde_json::Value::as_str);
        first_duplicate(text.as_bytes()).map(|d| (d.expression(root), d.line, d.column))
    }

    #[test]
    fn distinct_keys_pass() {
        assert_eq!(at(r#"{"resourceType":"Patient","gender":"male","_gender":{"id":"a"}}"#), None);
        assert_eq!(at(r#"[{"a":1},{"a":2},{"b":{"a":3,"b":[{"a":1.50}]}}]"#), None);
        // The same key in sibling and nested objects is no repeat.
        assert_eq!(at(r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":1}]}"#), None);
        assert_eq!(at("1.50"), None);
        assert_eq!(at(r#"{"x":-0.0,"y":1e400,"z":"\u0041"}"#), None);
    }

    #[test]
    fn repeats_are_found_with_their_path() {
        let (expression, line, column) = at(r#"{"resourceType":"Patient","gender":"male","gender":"female"}"#).unwrap();
        assert_eq!(expression, "Patient.gender");
        assert_eq!(line, 1);
        assert!(column > 40, "{column}");
        assert_eq!(
            at(r#"{"resourceType":"Patient","name":[{"given":["a"]},{"family":"x","given":[],"family":"y"}]}"#).unwrap().0,
            "Patient.name[1].family"
        );
        assert_eq!(
            at(r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"1","id":"2"}}]}"#)
                .unwrap()
                .0,
            "Bundle.entry[0].resource.id"
        );
        assert_eq!(at(r#"[{"op":"add"},{"op":"add","value":{"a":1,"a":1}}]"#).unwrap().0, "$this[1].value.a");
        assert_eq!(at(r#"{"a b":{"c":1,"c":2}}"#).unwrap().0, "`a b`.c");
        // Escaped and plain spellings of one key are the same key.
        assert_eq!(at(r#"{"gender":"male","g\u0065nder":"female"}"#).unwrap().0, "gender");
        // Number values do not confuse the scan (arbitrary_precision).
        assert_eq!(at(r#"{"v":1.50,"w":2.5,"v":3}"#).unwrap().0, "v");
    }

    #[test]
    fn many_keys_use_a_set() {
        let mut text = String::from("{");
        for i in 0..5000 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        assert_eq!(at(&format!("{}\"z\":0}}", text)), None);
        let repeated = format!("{}\"k4321\":0}}", text);
        assert_eq!(at(&repeated).unwrap().0, "k4321");
        let early = format!("{}\"k3\":0}}", text);
        assert_eq!(at(&early).unwrap().0, "k3");
        // A repeat among the first few keys, before the switch to a set.
        assert_eq!(at(r#"{"a":1,"b":2,"a":3}"#).unwrap().0, "a");
    }

    #[test]
    fn long_keys_are_clipped() {
        let key = "k".repeat(500);
        let text = format!(r#"{{"{key}":1,"{key}":2}}"#);
        let expression = at(&text).unwrap().0;
        assert!(expression.len() < 80, "{expression}");
        assert!(expression.ends_with("..."), "{expression}");
    }
}
