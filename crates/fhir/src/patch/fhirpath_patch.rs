//! FHIRPath Patch (<http://hl7.org/fhir/R4/fhirpatch.html>): a Parameters
//! resource whose `operation` parameters add, insert, delete, replace and move
//! elements located by FHIRPath.

use super::structure::{self, Child, Type};
use crate::fhirpath::{self, Location, Step};
use crate::outcome::{Issue, IssueType};
use serde_json::{Map, Value};

/// Applies a FHIRPath Patch Parameters resource. Operations apply in order;
/// the first that fails stops the patch with one issue naming it
/// (`Parameters.parameter[i]`).
pub fn apply_fhirpath_patch(resource: &Value, parameters: &Value) -> Result<Value, Vec<Issue>> {
    if parameters.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(vec![Issue::error(IssueType::Invalid, "a FHIRPath Patch is a Parameters resource")]);
    }
    let operations = match parameters.get("parameter") {
        None => &[][..],
        Some(Value::Array(list)) => list.as_slice(),
        Some(_) => return Err(vec![Issue::error(IssueType::Invalid, "Parameters.parameter must be an array").at("Parameters.parameter")]),
    };
    let mut doc = resource.clone();
    for (i, parameter) in operations.iter().enumerate() {
        let at = format!("Parameters.parameter[{i}]");
        let op = Operation::parse(parameter)
            .map_err(|why| vec![Issue::error(IssueType::Invalid, format!("patch operation {i}: {why}")).at(at.clone())])?;
        op.apply(&mut doc).map_err(|(code, why)| {
            vec![Issue::error(code, format!("patch operation {i} ({}): {why}", op.kind.code())).at(at.clone())]
        })?;
    }
    Ok(doc)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Insert,
    Delete,
    Replace,
    Move,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::Add => "add",
            Kind::Insert => "insert",
            Kind::Delete => "delete",
            Kind::Replace => "replace",
            Kind::Move => "move",
        }
    }
}

/// One `operation` parameter (fhirpatch.html#parameters).
struct Operation<'a> {
    kind: Kind,
    path: &'a str,
    name: Option<&'a str>,
    /// The `value` part: holds `value[x]`, nested `part`s, or a `resource`.
    value: Option<&'a Map<String, Value>>,
    index: Option<usize>,
    source: Option<usize>,
    destination: Option<usize>,
}

type Failure = (IssueType, String);

fn invalid(why: impl Into<String>) -> Failure {
    (IssueType::Invalid, why.into())
}

fn processing(why: impl Into<String>) -> Failure {
    (IssueType::Processing, why.into())
}

impl<'a> Operation<'a> {
    fn parse(parameter: &'a Value) -> Result<Operation<'a>, String> {
        if parameter.get("name").and_then(Value::as_str) != Some("operation") {
            return Err("every parameter must be named operation".into());
        }
        let parts = parameter.get("part").and_then(Value::as_array).ok_or("operation without parts")?;
        let mut kind = None;
        let mut path = None;
        let mut name = None;
        let mut value = None;
        let (mut index, mut source, mut destination) = (None, None, None);
        for part in parts {
            let part = part.as_object().ok_or("a part is not an object")?;
            let part_name = part.get("name").and_then(Value::as_str).ok_or("a part without a name")?;
            let text = || {
                ["valueString", "valueCode"]
                    .iter()
                    .find_map(|k| part.get(*k).and_then(Value::as_str))
                    .ok_or_else(|| format!("part {part_name} needs a string value"))
            };
            let integer = || {
                ["valueInteger", "valueUnsignedInt", "valuePositiveInt", "valueDecimal"]
                    .iter()
                    .find_map(|k| part.get(*k).and_then(Value::as_u64))
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| format!("part {part_name} needs a non-negative integer"))
            };
            let slot_taken = match part_name {
                "type" => {
                    let code = text()?;
                    kind.replace(match code {
                        "add" => Kind::Add,
                        "insert" => Kind::Insert,
                        "delete" => Kind::Delete,
                        "replace" => Kind::Replace,
                        "move" => Kind::Move,
                        _ => return Err("type must be add, insert, delete, replace or move".into()),
                    })
                    .is_some()
                }
                "path" => path.replace(text()?).is_some(),
                "name" => name.replace(text()?).is_some(),
                "value" => value.replace(part).is_some(),
                "index" => index.replace(integer()?).is_some(),
                "source" => source.replace(integer()?).is_some(),
                "destination" => destination.replace(integer()?).is_some(),
                other => return Err(format!("unknown part {other}")),
            };
            if slot_taken {
                return Err(format!("part {part_name} is repeated"));
            }
        }
        let kind = kind.ok_or("operation without a type")?;
        let path = path.ok_or("operation without a path")?;
        let needs = |present: bool, what: &str| if present { Ok(()) } else { Err(format!("{} needs {what}", kind.code())) };
        match kind {
            Kind::Add => {
                needs(name.is_some(), "a name")?;
                needs(value.is_some(), "a value")?;
            }
            Kind::Insert => {
                needs(index.is_some(), "an index")?;
                needs(value.is_some(), "a value")?;
            }
            Kind::Replace => needs(value.is_some(), "a value")?,
            Kind::Move => {
                needs(source.is_some(), "a source")?;
                needs(destination.is_some(), "a destination")?;
            }
            Kind::Delete => {}
        }
        Ok(Operation { kind, path, name, value, index, source, destination })
    }

    fn apply(&self, doc: &mut Value) -> Result<(), Failure> {
        let expr = fhirpath::compile(self.path).map_err(|e| invalid(format!("path: {e}")))?;
        match self.kind {
            Kind::Add => {
                let at = single(&expr, doc)?.ok_or_else(|| processing("the path matches nothing"))?;
                let name = self.name.unwrap_or_default();
                let part = self.value.ok_or_else(|| invalid("no value"))?;
                let ty = structure::type_at(doc, &at.steps);
                let target = at.get_mut(doc).and_then(Value::as_object_mut).ok_or_else(|| processing("the path does not select an element with children"))?;
                let child = child_of(ty, target, name, value_suffix(part))?;
                let value = part_value(part, child.ty.and_then(|t| ty.and_then(|ty| ty.of(t))))?;
                match target.get_mut(&child.key) {
                    Some(Value::Array(list)) => list.push(value),
                    Some(_) => return Err(processing(format!("{name} is already present and does not repeat"))),
                    None => {
                        target.insert(child.key, if child.repeats { Value::Array(vec![value]) } else { value });
                    }
                }
            }
            Kind::Insert | Kind::Move => {
                let (parent, name) = expr
                    .split_last_name()
                    .ok_or_else(|| invalid("the path must end with the name of a list element"))?;
                let at = single(&parent, doc)?.ok_or_else(|| processing("the path matches nothing"))?;
                let ty = structure::type_at(doc, &at.steps);
                let target = at.get_mut(doc).and_then(Value::as_object_mut).ok_or_else(|| processing("the path does not select a list"))?;
                let child = child_of(ty, target, name, None)?;
                if !child.repeats {
                    return Err(processing(format!("{name} is not a list")));
                }
                if self.kind == Kind::Insert {
                    let part = self.value.ok_or_else(|| invalid("no value"))?;
                    let value = part_value(part, child.ty.and_then(|t| ty.and_then(|ty| ty.of(t))))?;
                    let index = self.index.unwrap_or_default();
                    let list = target.entry(child.key.clone()).or_insert_with(|| Value::Array(Vec::new()));
                    let list = list.as_array_mut().ok_or_else(|| processing(format!("{name} is not a list")))?;
                    if index > list.len() {
                        return Err(processing(format!("index {index} is past the end of the list ({})", list.len())));
                    }
                    list.insert(index, value);
                    shift_primitive_extensions(target, &child.key, |ext| {
                        if index <= ext.len() {
                            ext.insert(index, Value::Null);
                        }
                    });
                } else {
                    let (source, destination) = (self.source.unwrap_or_default(), self.destination.unwrap_or_default());
                    let list = target.get_mut(&child.key).and_then(Value::as_array_mut).ok_or_else(|| processing(format!("there is no {name} list")))?;
                    if source >= list.len() || destination >= list.len() {
                        return Err(processing(format!("source and destination must be below {}", list.len())));
                    }
                    let moved = list.remove(source);
                    list.insert(destination, moved);
                    shift_primitive_extensions(target, &child.key, |ext| {
                        if source < ext.len() && destination < ext.len() {
                            let moved = ext.remove(source);
                            ext.insert(destination, moved);
                        }
                    });
                }
            }
            Kind::Delete => {
                // Deleting what is not there is not an error (fhirpatch.html: "if found").
                let Some(at) = single(&expr, doc)? else { return Ok(()) };
                remove(doc, &at)?;
            }
            Kind::Replace => {
                let found = expr.locate(doc).map_err(|e| invalid(format!("path: {e}")))?;
                let (at, old_type) = match found.as_slice() {
                    [one] => (one.location.clone(), one.type_name.map(str::to_string)),
                    [] => return Err(processing("the path matches nothing")),
                    _ => return Err(processing("the path matches more than one element")),
                };
                let part = self.value.ok_or_else(|| invalid("no value"))?;
                let new_type = value_suffix(part);
                let value = part_value(part, structure::type_at(doc, &at.steps))?;
                match (at.steps.split_last(), old_type.as_deref(), new_type) {
                    // A choice element changing type changes its JSON name (formats.html#choice).
                    (Some((Step::Key(key), parent)), Some(old), Some(new)) if old != new => {
                        let base = key.strip_suffix(old).unwrap_or(key).to_string();
                        let parent = Location { steps: parent.to_vec() };
                        let object = parent.get_mut(doc).and_then(Value::as_object_mut).ok_or_else(|| processing("cannot replace here"))?;
                        object.remove(key.as_str());
                        object.remove(&format!("_{key}"));
                        object.insert(format!("{base}{new}"), value);
                    }
                    (None, _, _) => return Err(invalid("the whole resource cannot be replaced")),
                    _ => {
                        let slot = at.get_mut(doc).ok_or_else(|| processing("the path matches nothing"))?;
                        *slot = value;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The one location `expr` selects, `None` when it selects nothing.
fn single(expr: &fhirpath::Expr, doc: &Value) -> Result<Option<Location>, Failure> {
    let found = expr.locate(doc).map_err(|e| invalid(format!("path: {e}")))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.location.clone())),
        _ => Err(processing("the path matches more than one element")),
    }
}

/// How the child `name` of `target` is written. Without definitions for the
/// type, the JSON decides: an existing array repeats, anything else does not.
fn child_of(ty: Option<Type>, target: &Map<String, Value>, name: &str, value_type: Option<&str>) -> Result<Child, Failure> {
    match ty {
        Some(ty) => ty.child(name, value_type).map_err(invalid),
        None => Ok(Child { key: name.to_string(), repeats: target.get(name).is_some_and(Value::is_array), ty: None }),
    }
}

/// The type suffix of a part's `value[x]` (`Quantity` for `valueQuantity`).
fn value_suffix(part: &Map<String, Value>) -> Option<&str> {
    part.keys().find_map(|k| k.strip_prefix("value").filter(|s| fhirpath::is_choice_suffix(s)))
}

/// The JSON value a part carries: its `value[x]`, its `resource`, or an
/// object built from nested parts (fhirpatch.html: complex values are given
/// as parts named after their children). `ty` shapes repeating children.
fn part_value(part: &Map<String, Value>, ty: Option<Type>) -> Result<Value, Failure> {
    part_value_at(part, ty, 0)
}

/// Deepest nesting of parts accepted (FHIR data types nest far less).
const MAX_PART_DEPTH: usize = 32;

fn part_value_at(part: &Map<String, Value>, ty: Option<Type>, depth: usize) -> Result<Value, Failure> {
    if depth > MAX_PART_DEPTH {
        return Err(invalid("parts nested too deeply"));
    }
    if let Some(suffix) = value_suffix(part) {
        return Ok(part.get(&format!("value{suffix}")).cloned().unwrap_or(Value::Null));
    }
    if let Some(resource) = part.get("resource") {
        return Ok(resource.clone());
    }
    let Some(parts) = part.get("part").and_then(Value::as_array) else {
        return Err(invalid("a value needs value[x], resource or parts"));
    };
    let mut object = Map::new();
    for sub in parts {
        let sub = sub.as_object().ok_or_else(|| invalid("a part is not an object"))?;
        let name = sub.get("name").and_then(Value::as_str).ok_or_else(|| invalid("a part without a name"))?;
        let child = child_of(ty, &object, name, value_suffix(sub))?;
        let value = part_value_at(sub, child.ty.and_then(|t| ty.and_then(|ty| ty.of(t))), depth + 1)?;
        match object.get_mut(&child.key) {
            Some(Value::Array(list)) => list.push(value),
            // Without definitions a repeated name becomes a list.
            Some(existing) if ty.is_none() => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            Some(_) => return Err(invalid(format!("{name} is given twice but does not repeat"))),
            None => {
                object.insert(child.key, if child.repeats { Value::Array(vec![value]) } else { value });
            }
        }
    }
    Ok(Value::Object(object))
}

/// Keeps the `_name` array of primitive extensions (json.html#primitive) in
/// step with the `name` array it annotates.
fn shift_primitive_extensions(object: &mut Map<String, Value>, key: &str, change: impl FnOnce(&mut Vec<Value>)) {
    if let Some(Value::Array(ext)) = object.get_mut(&format!("_{key}")) {
        change(ext);
    }
}

/// Removes the node at `at`: from its list (dropping the list when it
/// empties) or from its object, with its primitive extensions.
fn remove(doc: &mut Value, at: &Location) -> Result<(), Failure> {
    let Some((last, parent_steps)) = at.steps.split_last() else {
        return Err(invalid("the whole resource cannot be deleted"));
    };
    match last {
        Step::Key(key) => {
            let parent = Location { steps: parent_steps.to_vec() };
            let object = parent.get_mut(doc).and_then(Value::as_object_mut).ok_or_else(|| processing("cannot delete here"))?;
            object.remove(key.as_str());
            object.remove(&format!("_{key}"));
        }
        Step::Index(i) => {
            let Some((Step::Key(key), owner_steps)) = parent_steps.split_last() else {
                return Err(processing("cannot delete here"));
            };
            let owner = Location { steps: owner_steps.to_vec() };
            let object = owner.get_mut(doc).and_then(Value::as_object_mut).ok_or_else(|| processing("cannot delete here"))?;
            let list = object.get_mut(key.as_str()).and_then(Value::as_array_mut).ok_or_else(|| processing("cannot delete here"))?;
            if *i >= list.len() {
                return Err(processing("cannot delete here"));
            }
            list.remove(*i);
            let now_empty = list.is_empty();
            shift_primitive_extensions(object, key, |ext| {
                if *i < ext.len() {
                    ext.remove(*i);
                }
            });
            // FHIR JSON has no empty arrays (json.html#arrays).
            if now_empty {
                object.remove(key.as_str());
                object.remove(&format!("_{key}"));
            }
        }
    }
    Ok(())
}
