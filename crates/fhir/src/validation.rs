//! Validation of a resource against the R4 core StructureDefinitions: JSON shape, known
//! elements, cardinality, choice types, primitive formats, required bindings, references,
//! contained resources, Bundle entries and narrative.
//!
//! One pass over the JSON tree, driven by the lookup tables of [`crate::definitions`]. The
//! FHIRPath location of an issue is kept as a stack of borrowed segments and only rendered
//! to a string when an issue is reported, so that valid resources cost no allocation per
//! element. Invariants are not evaluated in general; a few cheap core ones are checked
//! directly (ele-1, ext-1, ref-1, dom-2 to dom-5, txt-1/txt-2 in part).
//!
//! Issue codes: `structure` for JSON shape and unknown elements, `value` for primitive
//! formats, `required` for missing elements, `code-invalid` for required-binding failures,
//! `invalid` for the rest (references, contained resources, extensions). Diagnostics never
//! quote values other than short codes and names.

mod narrative;
mod primitive;

use crate::definitions::{self, Definitions, ElementDef, ElementType, Primitive, TypeDef, Variant};
use crate::outcome::{Issue, IssueType, Severity};
use primitive::Finding;
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Deeper paths than this are rejected rather than followed (recursive elements such as
/// `Extension.extension` could otherwise nest without bound in a constructed value).
const MAX_PATH_SEGMENTS: usize = 256;

/// Validates `resource`; returns every problem found (errors and warnings).
pub fn validate(resource: &Value) -> Vec<Issue> {
    let Some(defs) = definitions::get() else {
        let reason = definitions::load_error().unwrap_or("unknown");
        return vec![Issue {
            severity: Severity::Fatal,
            code: IssueType::Exception,
            diagnostics: format!("the FHIR definitions could not be loaded: {reason}"),
            expression: None,
        }];
    };
    let mut validator = Validator { defs, path: Vec::with_capacity(16), issues: Vec::new(), frames: Vec::new() };
    validator.resource(resource, Nesting::Root);
    validator.issues
}

/// One step of a FHIRPath location.
#[derive(Clone, Copy)]
enum Segment<'a> {
    Name(&'a str),
    Index(usize),
}

/// Where a resource sits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nesting {
    /// The resource validated.
    Root,
    /// `Bundle.entry.resource`, `Parameters.parameter.resource`: a resource of its own.
    Entry,
    /// `DomainResource.contained`.
    Contained,
}

/// What JSON object [`Validator::object`] walks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    Resource,
    Element,
    /// The `_name` object of a primitive.
    PrimitiveExtras,
}

/// A resource that may contain others (root or entry), with what its local references need.
#[derive(Default)]
struct Frame<'a> {
    contained: Vec<ContainedInfo<'a>>,
    /// The contained resource being walked, if any.
    current: Option<usize>,
    /// Ids named by `#id` strings in references, canonicals, uris and urls (dom-3).
    local_ids: Vec<&'a str>,
    /// `Reference.reference` values `#id`, with their location (ref-1).
    local_references: Vec<(&'a str, String)>,
}

struct ContainedInfo<'a> {
    /// The index in the container's `contained` array.
    index: usize,
    id: Option<&'a str>,
    /// True when the contained resource refers to its container with `#` (dom-3).
    refers_to_container: bool,
}

struct Validator<'a> {
    defs: &'static Definitions,
    path: Vec<Segment<'a>>,
    issues: Vec<Issue>,
    frames: Vec<Frame<'a>>,
}

/// A short, printable excerpt of a client-supplied token (a code or a name) for diagnostics.
fn short(text: &str) -> String {
    let mut out: String = text.chars().take(24).map(|c| if c.is_control() { '?' } else { c }).collect();
    if text.chars().count() > 24 {
        out.push('…');
    }
    out
}

impl<'a> Validator<'a> {
    fn render(&self, extra: Option<Segment<'_>>) -> Option<String> {
        if self.path.is_empty() && extra.is_none() {
            return None;
        }
        let mut out = String::with_capacity(64);
        for segment in self.path.iter().copied().chain(extra) {
            match segment {
                Segment::Name(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Segment::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        Some(out)
    }

    fn report(&mut self, severity: Severity, code: IssueType, diagnostics: impl Into<String>, extra: Option<Segment<'_>>) {
        let expression = self.render(extra);
        self.issues.push(Issue { severity, code, diagnostics: diagnostics.into(), expression });
    }

    fn error(&mut self, code: IssueType, diagnostics: impl Into<String>) {
        self.report(Severity::Error, code, diagnostics, None);
    }

    fn error_at(&mut self, code: IssueType, diagnostics: impl Into<String>, extra: Segment<'_>) {
        self.report(Severity::Error, code, diagnostics, Some(extra));
    }

    /// A resource: `resourceType`, then its elements (resource.html, json.html#resources).
    fn resource(&mut self, value: &'a Value, nesting: Nesting) {
        // A contained resource is registered first, so that a defect in it does not also
        // surface as a dangling local reference elsewhere.
        let mut saved_current = None;
        if nesting == Nesting::Contained {
            let index = match self.path.last() {
                Some(Segment::Index(i)) => *i,
                _ => 0,
            };
            if let Some(frame) = self.frames.last_mut() {
                // A contained resource inside a contained resource (dom-2, reported) is not
                // a contained resource of the frame.
                if frame.current.is_none() {
                    saved_current = Some(frame.current);
                    frame.current = Some(frame.contained.len());
                    let id = value.get("id").and_then(Value::as_str);
                    frame.contained.push(ContainedInfo { index, id, refers_to_container: false });
                }
            }
        }
        self.resource_body(value, nesting);
        if let (Some(frame), Some(previous)) = (self.frames.last_mut(), saved_current) {
            frame.current = previous;
        }
    }

    fn resource_body(&mut self, value: &'a Value, nesting: Nesting) {
        let Some(obj) = value.as_object() else {
            self.error(IssueType::Structure, "a resource must be a JSON object");
            return;
        };
        let resource_type = match obj.get("resourceType") {
            Some(Value::String(name)) => name.as_str(),
            Some(_) => {
                self.error_at(IssueType::Structure, "resourceType must be a string", Segment::Name("resourceType"));
                return;
            }
            None => {
                self.error_at(IssueType::Structure, "the resource has no resourceType", Segment::Name("resourceType"));
                return;
            }
        };
        let Some(ty) = self.defs.resource(resource_type) else {
            let message = format!("unknown resource type '{}'", short(resource_type));
            self.error_at(IssueType::Structure, message, Segment::Name("resourceType"));
            return;
        };
        let root = self.path.is_empty();
        if root {
            self.path.push(Segment::Name(&ty.name));
        }
        if nesting != Nesting::Contained {
            self.frames.push(Frame::default());
        }

        self.object(obj, ty, ObjectKind::Resource);

        if nesting == Nesting::Contained {
            self.contained_rules(obj);
        } else if let Some(frame) = self.frames.pop() {
            self.local_reference_rules(frame);
        }
        if root {
            self.path.pop();
        }
    }

    /// dom-2, dom-4, dom-5 (domainresource.html#invs, resource.html#contained): a contained
    /// resource has no contained resources of its own, no meta.versionId or meta.lastUpdated,
    /// and no security labels.
    fn contained_rules(&mut self, obj: &'a Map<String, Value>) {
        if obj.contains_key("contained") {
            self.error_at(IssueType::Invalid, "a contained resource must not contain resources (dom-2)", Segment::Name("contained"));
        }
        if let Some(Value::Object(meta)) = obj.get("meta") {
            for (name, rule) in [("versionId", "dom-4"), ("lastUpdated", "dom-4"), ("security", "dom-5")] {
                if meta.contains_key(name) {
                    self.path.push(Segment::Name("meta"));
                    let message = format!("a contained resource must not have meta.{name} ({rule})");
                    self.error_at(IssueType::Invalid, message, Segment::Name(name));
                    self.path.pop();
                }
            }
        }
    }

    /// ref-1 (reference.html: a local reference `#id` names a contained resource) and dom-3
    /// (each contained resource is referenced from the resource, or refers to it with `#`).
    fn local_reference_rules(&mut self, frame: Frame<'a>) {
        for (id, expression) in &frame.local_references {
            if !frame.contained.iter().any(|c| c.id == Some(*id)) {
                self.issues.push(
                    Issue::error(
                        IssueType::Invalid,
                        "the local reference names no contained resource (ref-1)",
                    )
                    .at(expression.clone()),
                );
            }
        }
        for contained in &frame.contained {
            let Some(id) = contained.id else { continue };
            if !contained.refers_to_container && !frame.local_ids.contains(&id) {
                self.path.push(Segment::Name("contained"));
                self.error_at(
                    IssueType::Invalid,
                    "a contained resource must be referenced from the containing resource, or refer to it (dom-3)",
                    Segment::Index(contained.index),
                );
                self.path.pop();
            }
        }
    }

    /// The elements of a complex value, resource or primitive's `_name` object.
    fn object(&mut self, obj: &'a Map<String, Value>, ty: &'static TypeDef, kind: ObjectKind) {
        let is_resource = kind == ObjectKind::Resource;
        if self.path.len() > MAX_PATH_SEGMENTS {
            self.error(IssueType::Structure, "the content is nested too deeply");
            return;
        }
        let content = obj.len() - usize::from(is_resource && obj.contains_key("resourceType"));
        // ele-1: every element has a value or children; json.html: no empty objects.
        if content == 0 && !is_resource {
            self.error(IssueType::Structure, "an element must have a value or children; empty objects are not allowed (ele-1)");
            return;
        }
        if kind == ObjectKind::Element && content == 1 && obj.contains_key("id") {
            self.error(IssueType::Structure, "an element must have children other than id (ele-1)");
        }
        let mut present: u128 = 0;
        // For choice elements, the variant used first: (element index, variant index).
        let mut chosen: [(u16, u16); 8] = [(u16::MAX, 0); 8];
        let mut chosen_len = 0usize;
        for (key, value) in obj {
            if is_resource && key == "resourceType" {
                continue;
            }
            let (name, underscore) = match key.strip_prefix('_') {
                Some(name) => (name, true),
                None => (key.as_str(), false),
            };
            let Some((at, element, variant)) = ty.property(name) else {
                let message = format!("unknown element '{}'", short(key));
                self.error_at(IssueType::Structure, message, Segment::Name(name));
                continue;
            };
            if element.is_choice() {
                // formats.html#choice: only one of the type variants may appear.
                match chosen[..chosen_len].iter().find(|(e, _)| *e == at.element) {
                    Some(&(_, first)) if first != at.variant => {
                        let message = format!("only one type of {} may be given", element.name);
                        self.error_at(IssueType::Structure, message, Segment::Name(name));
                        continue;
                    }
                    Some(_) => {}
                    None if chosen_len < chosen.len() => {
                        chosen[chosen_len] = (at.element, at.variant);
                        chosen_len += 1;
                    }
                    None => {}
                }
            }
            present |= 1u128 << at.element;
            if underscore {
                self.primitive_extension(obj, &variant.json_name, value, element, variant);
            } else {
                self.element(obj, &variant.json_name, value, element, variant);
            }
        }
        for &index in &ty.required {
            if present & (1u128 << index) == 0
                && let Some(element) = ty.elements.get(usize::from(index))
            {
                let name: &'static str = element.name.strip_suffix("[x]").unwrap_or(&element.name);
                let message = format!("missing required element '{}' (minimum cardinality {})", element.name, element.min);
                self.error_at(IssueType::Required, message, Segment::Name(name));
            }
        }
    }

    /// The JSON property `name` of an element: an array for repeating elements, a single
    /// value otherwise (json.html#arrays), with nulls only as placeholders in primitive arrays.
    fn element(&mut self, obj: &'a Map<String, Value>, name: &'static str, value: &'a Value, element: &'static ElementDef, variant: &'static Variant) {
        self.path.push(Segment::Name(name));
        if element.is_array() {
            match value {
                Value::Array(items) => {
                    if items.is_empty() {
                        self.error(IssueType::Structure, "arrays must not be empty: omit the element instead");
                    }
                    if let Some(max) = element.max
                        && items.len() > max as usize
                    {
                        self.error(IssueType::Structure, format!("at most {max} values are allowed"));
                    }
                    if element.min > 1 && items.len() < element.min as usize && !items.is_empty() {
                        self.error(IssueType::Required, format!("at least {} values are required", element.min));
                    }
                    for (i, item) in items.iter().enumerate() {
                        self.path.push(Segment::Index(i));
                        if item.is_null() {
                            let placeholder = matches!(variant.ty, ElementType::Primitive(_))
                                && extension_at(obj, name, i).is_some_and(|e| !e.is_null());
                            if !placeholder {
                                self.error(IssueType::Structure, "null is only allowed in a primitive array whose _ sibling has an extension at the same index");
                            }
                        } else {
                            self.value(item, element, variant);
                        }
                        self.path.pop();
                    }
                }
                _ => self.error(IssueType::Structure, format!("{} repeats, so it must be a JSON array", element.name)),
            }
        } else {
            match value {
                Value::Array(_) => self.error(IssueType::Structure, format!("{} does not repeat, so it must not be an array", element.name)),
                Value::Null => self.error(IssueType::Structure, "null is not allowed: omit the element instead"),
                _ => self.value(value, element, variant),
            }
        }
        self.path.pop();
    }

    /// `_name`: the id and extensions of a primitive (json.html#primitive).
    fn primitive_extension(&mut self, obj: &'a Map<String, Value>, name: &'static str, value: &'a Value, element: &'static ElementDef, variant: &'static Variant) {
        self.path.push(Segment::Name(name));
        if !matches!(variant.ty, ElementType::Primitive(p) if p != Primitive::Xhtml) {
            self.error(IssueType::Structure, format!("'_{name}' is only allowed for primitive elements"));
            self.path.pop();
            return;
        }
        let element_type = &self.defs.types[self.defs.known.element];
        if element.is_array() {
            match value {
                Value::Array(extensions) => {
                    let values = match obj.get(name) {
                        Some(Value::Array(values)) => Some(values),
                        _ => None,
                    };
                    if let Some(values) = values
                        && values.len() != extensions.len()
                    {
                        self.error(IssueType::Structure, format!("'{name}' and '_{name}' must have the same length"));
                    }
                    for (i, extension) in extensions.iter().enumerate() {
                        self.path.push(Segment::Index(i));
                        match extension {
                            // A null with no value at the same index leaves nothing (the
                            // value side reports a null it has).
                            Value::Null => {
                                if values.is_none_or(|v| v.get(i).is_none()) {
                                    self.error(IssueType::Structure, "a null in '_' needs a value at the same index");
                                }
                            }
                            Value::Object(o) => {
                                let has_value = values.and_then(|v| v.get(i)).is_some_and(|v| !v.is_null());
                                self.primitive_extras(o, element_type, has_value);
                            }
                            _ => self.error(IssueType::Structure, "a primitive's '_' entry must be an object with id and extension"),
                        }
                        self.path.pop();
                    }
                }
                _ => self.error(IssueType::Structure, format!("'_{name}' must be an array, as '{name}' repeats")),
            }
        } else {
            match value {
                Value::Object(o) => {
                    let has_value = obj.get(name).is_some_and(|v| !v.is_null());
                    self.primitive_extras(o, element_type, has_value);
                }
                _ => self.error(IssueType::Structure, format!("'_{name}' must be an object with id and extension")),
            }
        }
        self.path.pop();
    }

    /// A primitive's `_name` object: its id and extensions. ele-1 holds for the primitive as
    /// a whole: an id alone is enough when the primitive has a value.
    fn primitive_extras(&mut self, obj: &'a Map<String, Value>, element_type: &'static TypeDef, has_value: bool) {
        if !has_value && obj.len() == 1 && obj.contains_key("id") {
            self.error(IssueType::Structure, "a primitive must have a value or extensions (ele-1)");
        }
        self.object(obj, element_type, ObjectKind::PrimitiveExtras);
    }

    /// One value of an element, by its type.
    fn value(&mut self, value: &'a Value, element: &'static ElementDef, variant: &'static Variant) {
        match variant.ty {
            ElementType::Primitive(p) | ElementType::Attribute(p) => {
                match primitive::check(p, value) {
                    Finding::Ok => {}
                    Finding::Invalid(reason) => {
                        let message = format!("invalid {}: {reason}", p.name());
                        self.error(IssueType::Value, message);
                        return;
                    }
                }
                let Value::String(text) = value else { return };
                if let (Primitive::Code, Some(vs)) = (p, element.binding) {
                    let vs = &self.defs.value_sets[vs];
                    if !vs.has_code(text) {
                        let message = format!("the code '{}' is not in the required value set {}", short(text), vs.url);
                        self.error(IssueType::CodeInvalid, message);
                    }
                }
                if matches!(p, Primitive::Canonical | Primitive::Uri | Primitive::Url)
                    && let Some(id) = text.strip_prefix('#')
                {
                    self.note_local(id, None);
                }
            }
            ElementType::Complex(id) => {
                let Value::Object(obj) = value else {
                    self.error(IssueType::Structure, format!("{} must be a JSON object", element.name));
                    return;
                };
                let Some(ty) = self.defs.types.get(id) else { return };
                self.object(obj, ty, ObjectKind::Element);
                let known = self.defs.known;
                if id == known.reference {
                    self.reference(obj, &variant.targets);
                } else if id == known.extension {
                    self.extension(obj);
                } else if let Some(vs) = element.binding {
                    if id == known.coding {
                        self.coding(obj, vs);
                    } else if id == known.codeable_concept
                        && let Some(Value::Array(codings)) = obj.get("coding")
                    {
                        self.path.push(Segment::Name("coding"));
                        for (i, coding) in codings.iter().enumerate() {
                            if let Value::Object(coding) = coding {
                                self.path.push(Segment::Index(i));
                                self.coding(coding, vs);
                                self.path.pop();
                            }
                        }
                        self.path.pop();
                    }
                }
            }
            ElementType::Resource => {
                let nesting = if &*element.name == "contained" { Nesting::Contained } else { Nesting::Entry };
                self.resource(value, nesting);
            }
        }
    }

    /// A Coding under a required binding: when its system is one the value set draws on,
    /// the code must be one of that system's codes in the value set (terminologies.html#required).
    fn coding(&mut self, obj: &'a Map<String, Value>, vs: definitions::ValueSetId) {
        let (Some(Value::String(system)), Some(Value::String(code))) = (obj.get("system"), obj.get("code")) else { return };
        let vs = &self.defs.value_sets[vs];
        if let Some(codes) = vs.codes_of(system)
            && !codes.contains(code.as_str())
        {
            let message = format!("the code '{}' is not in the required value set {}", short(code), vs.url);
            self.error_at(IssueType::CodeInvalid, message, Segment::Name("code"));
        }
    }

    /// ext-1: an extension has either a value or nested extensions, not both (extensibility.html).
    fn extension(&mut self, obj: &'a Map<String, Value>) {
        let has_value = obj.keys().any(|k| k.starts_with("value") || k.starts_with("_value"));
        let has_extensions = obj.contains_key("extension");
        if has_value == has_extensions {
            self.error(IssueType::Invalid, "an extension must have either a value[x] or nested extensions, not both (ext-1)");
        }
    }

    fn note_local(&mut self, id: &'a str, reference_path: Option<String>) {
        let Some(frame) = self.frames.last_mut() else { return };
        if id.is_empty() {
            // `#` alone: a contained resource referring to its container (references.html#contained).
            if let Some(current) = frame.current
                && let Some(contained) = frame.contained.get_mut(current)
            {
                contained.refers_to_container = true;
            }
            return;
        }
        frame.local_ids.push(id);
        if let Some(path) = reference_path {
            frame.local_references.push((id, path));
        }
    }

    /// `Reference.reference` (references.html#Reference): a local `#id`, an absolute URL, a
    /// `urn:uuid:` or `urn:oid:`, or a relative `Type/id` or `Type/id/_history/vid` (a
    /// conditional `Type?query` is allowed for transactions, http.html#trules). A relative
    /// reference names a known resource type, allowed by the element's target types.
    fn reference(&mut self, obj: &'a Map<String, Value>, targets: &'static [Box<str>]) {
        let Some(Value::String(reference)) = obj.get("reference") else { return };
        let reference = reference.as_str();
        if reference.is_empty() {
            return; // reported as an invalid string already
        }
        if let Some(id) = reference.strip_prefix('#') {
            let path = if id.is_empty() { None } else { self.render(Some(Segment::Name("reference"))) };
            self.note_local(id, path);
            return;
        }
        let problem = if reference.starts_with("urn:uuid:") {
            (!primitive::uuid(reference)).then(|| "a urn:uuid: reference must hold a lower-case uuid".to_string())
        } else if reference.starts_with("urn:oid:") {
            (primitive::string_format(Primitive::Oid, reference) != Finding::Ok)
                .then(|| "a urn:oid: reference must hold a valid oid".to_string())
        } else if has_scheme(reference) {
            absolute_type(reference).and_then(|t| target_problem(t, targets))
        } else {
            relative_problem(reference, targets)
        };
        if let Some(message) = problem {
            self.error_at(IssueType::Invalid, message, Segment::Name("reference"));
        }
    }
}

/// The `_name` entry at `index`, for a null placeholder in the `name` array.
fn extension_at<'v>(obj: &'v Map<String, Value>, name: &str, index: usize) -> Option<&'v Value> {
    let mut key = String::with_capacity(name.len() + 1);
    key.push('_');
    key.push_str(name);
    obj.get(&key)?.as_array()?.get(index)
}

/// True when `text` starts with a URI scheme (`http:`, `urn:`...; RFC 3986 section 3.1).
fn has_scheme(text: &str) -> bool {
    let Some(colon) = text.find(':') else { return false };
    let scheme = &text.as_bytes()[..colon];
    !scheme.is_empty()
        && scheme[0].is_ascii_alphabetic()
        && scheme.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// The resource type of an absolute RESTful URL `.../Type/id` or `.../Type/id/_history/vid`.
fn absolute_type(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let mut segments = path.rsplit('/');
    let last = segments.next()?;
    let second = segments.next()?;
    let ty = if second == "_history" {
        segments.next()?;
        segments.next()?
    } else {
        let _ = last;
        second
    };
    definitions::is_resource_type(ty).then_some(ty)
}

fn target_problem(ty: &str, targets: &[Box<str>]) -> Option<String> {
    if targets.is_empty() || targets.iter().any(|t| &**t == ty || &**t == "Resource") {
        return None;
    }
    let allowed: Vec<&str> = targets.iter().map(|t| &**t).collect();
    Some(format!("a reference to a {ty} is not allowed here (allowed: {})", allowed.join(", ")))
}

fn relative_problem(reference: &str, targets: &[Box<str>]) -> Option<String> {
    let (path, query) = match reference.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (reference, None),
    };
    let mut segments = path.split('/');
    let ty = segments.next().unwrap_or("");
    if !definitions::is_resource_type(ty) {
        return Some("a relative reference must start with a known resource type".into());
    }
    let (first, second, third, fourth) = (segments.next(), segments.next(), segments.next(), segments.next());
    let shape_ok = match (query, first, second, third, fourth) {
        (Some(q), None, ..) => !q.is_empty(),
        (None, Some(id), None, ..) => is_id(id),
        (None, Some(id), Some("_history"), Some(version), None) => is_id(id) && is_id(version),
        _ => false,
    };
    if !shape_ok {
        return Some("a relative reference must be Type/id or Type/id/_history/version".into());
    }
    target_problem(ty, targets)
}

fn is_id(text: &str) -> bool {
    string_is(Primitive::Id, text)
}

fn string_is(p: Primitive, text: &str) -> bool {
    primitive::string_format(p, text) == Finding::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(resource: Value) -> Vec<(String, &'static str)> {
        validate(&resource)
            .into_iter()
            .filter(Issue::is_error)
            .map(|i| (i.expression.unwrap_or_default(), i.code.code()))
            .collect()
    }

    #[test]
    fn accepts_a_small_patient() {
        let patient = json!({
            "resourceType": "Patient", "id": "p1",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Pat</div>"},
            "name": [{"family": "Doe", "given": ["J", null], "_given": [null, {"extension": [
                {"url": "http://example.org/x", "valueString": "y"}]}]}],
            "gender": "female", "birthDate": "1970-01-01",
            "managingOrganization": {"reference": "Organization/o1"},
            "deceasedBoolean": false
        });
        assert_eq!(errors(patient), vec![]);
    }

    #[test]
    fn reports_each_rule_at_its_path() {
        assert_eq!(errors(json!({"resourceType": "Patient", "foo": 1})), vec![("Patient.foo".into(), "structure")]);
        assert_eq!(errors(json!({"resourceType": "Patient", "birthDate": "1970-13-01"})), vec![("Patient.birthDate".into(), "value")]);
        assert_eq!(errors(json!({"resourceType": "Patient", "gender": "f"})), vec![("Patient.gender".into(), "code-invalid")]);
        assert_eq!(errors(json!({"resourceType": "Patient", "name": {"family": "x"}})), vec![("Patient.name".into(), "structure")]);
        assert_eq!(errors(json!({"resourceType": "Observation", "code": {"text": "x"}})), vec![("Observation.status".into(), "required")]);
        assert_eq!(
            errors(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "valueString": "a", "valueBoolean": true})),
            vec![("Observation.valueBoolean".into(), "structure")]
        );
        assert_eq!(
            errors(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "Practitioner/1"}})),
            vec![("Observation.subject.reference".into(), "invalid")]
        );
        assert_eq!(errors(json!({"resourceType": "Nope"})), vec![("resourceType".into(), "structure")]);
        assert_eq!(
            errors(json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "active": "yes"}}]})),
            vec![("Bundle.entry[0].resource.active".into(), "value")]
        );
    }

    #[test]
    fn never_panics_on_odd_values() {
        for value in [json!(null), json!([]), json!("Patient"), json!({}), json!({"resourceType": 1}), json!({"resourceType": "Patient", "_id": []})] {
            let _ = validate(&value);
        }
    }
}
