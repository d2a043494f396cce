//! Evaluation of a compiled FHIRPath AST over `serde_json::Value`, borrowing
//! from the resource: navigation never clones JSON.
//!
//! Semantics follow <http://hl7.org/fhirpath/N1/>, with the FHIR mapping of
//! <http://hl7.org/fhir/R4/fhirpath.html>: choice elements are navigated by
//! their base name (`Observation.value` finds `valueQuantity` and knows it is
//! a Quantity) and `resolve()` yields the target type of a reference without
//! loading it (all search expressions need is `resolve() is Patient`).

use super::parser::{BinOp, Func, Node, TypeOp};
use super::types;
use serde_json::Value;

/// One item of a FHIRPath result collection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    /// A node of the resource. `ty` is its FHIR type when known: from a choice
    /// element's suffix (`Quantity` for `valueQuantity`) or a contained
    /// resource reached through `resolve()`.
    Node { value: &'a Value, ty: Option<&'a str> },
    Boolean(bool),
    Integer(i64),
    /// Decimal literal text as written.
    Decimal(&'a str),
    String(&'a str),
    /// Date/time literal text without the `@`.
    DateTime(&'a str),
    /// What `resolve()` knows of a reference it cannot load: the target's type.
    Resolved { type_name: &'a str },
}

impl<'a> Item<'a> {
    /// The JSON node, when the item is one.
    pub fn value(&self) -> Option<&'a Value> {
        match self {
            Item::Node { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The FHIR type of a node when known from the JSON (choice suffix).
    pub fn type_name(&self) -> Option<&'a str> {
        match self {
            Item::Node { ty, .. } => *ty,
            _ => None,
        }
    }

    /// The item as text: a JSON string or a string literal.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Item::Node { value: Value::String(s), .. } => Some(s.as_str()),
            Item::String(s) | Item::DateTime(s) => Some(s),
            _ => None,
        }
    }

    /// Whether the item is of FHIR type `type_name` or a specialisation of it.
    /// Without a known type, the JSON shape decides: strings match any
    /// string-based primitive, objects any complex type (FHIR JSON does not say more).
    pub fn is_type(&self, type_name: &str) -> bool {
        match *self {
            Item::Node { ty: Some(ty), .. } => types::conforms(ty, type_name),
            Item::Node { value, ty: None } => match value {
                Value::Object(map) => match map.get("resourceType").and_then(Value::as_str) {
                    Some(rt) => types::resource_conforms(rt, type_name),
                    None => type_name.starts_with(|c: char| c.is_ascii_uppercase()) && !is_resource_name(type_name),
                },
                Value::String(_) => types::is_string_primitive(type_name),
                Value::Number(_) => types::is_number_primitive(type_name),
                Value::Bool(_) => type_name.eq_ignore_ascii_case("boolean"),
                _ => false,
            },
            Item::Boolean(_) => type_name.eq_ignore_ascii_case("boolean"),
            Item::Integer(_) => type_name.eq_ignore_ascii_case("integer"),
            Item::Decimal(_) => type_name.eq_ignore_ascii_case("decimal"),
            Item::String(_) => type_name.eq_ignore_ascii_case("string"),
            Item::DateTime(_) => type_name.eq_ignore_ascii_case("dateTime"),
            Item::Resolved { type_name: actual } => types::resource_conforms(actual, type_name),
        }
    }
}

fn is_resource_name(name: &str) -> bool {
    matches!(name, "Resource" | "DomainResource")
}

/// What evaluation needs besides the focus: the resource (`%resource`).
pub(crate) struct Context<'a> {
    pub(crate) root: &'a Value,
}

pub(crate) fn eval<'a>(node: &'a Node, ctx: &Context<'a>, this: &[Item<'a>]) -> Vec<Item<'a>> {
    match node {
        Node::Empty => Vec::new(),
        Node::This => this.to_vec(),
        Node::Root => vec![Item::Node { value: ctx.root, ty: None }],
        Node::Bool(b) => vec![Item::Boolean(*b)],
        Node::Str(s) => vec![Item::String(s)],
        Node::Number(n) => vec![number_item(n)],
        Node::DateTime(d) => vec![Item::DateTime(d)],
        Node::Child { focus, name } => {
            let mut names = [""; MAX_PATH];
            if let Some(len) = plain_path(node, &mut names) {
                let mut out = Vec::new();
                for item in this {
                    if let Item::Node { value, .. } = item {
                        descend(value, &names[..len], &mut out);
                    }
                }
                return out;
            }
            let input = eval(focus, ctx, this);
            let mut out = Vec::with_capacity(input.len());
            for item in input {
                if let Item::Node { value: Value::Object(map), .. } = item {
                    child(map, name, &mut out);
                }
            }
            out
        }
        Node::TypeFilter { focus, type_name } => {
            let mut items = eval(focus, ctx, this);
            items.retain(|item| item.is_type(type_name));
            items
        }
        Node::Index { focus, index } => {
            let items = eval(focus, ctx, this);
            match single_integer(&eval(index, ctx, this)) {
                Some(i) if i >= 0 => usize::try_from(i).ok().and_then(|i| items.get(i).copied()).into_iter().collect(),
                _ => Vec::new(),
            }
        }
        Node::Type { focus, op, type_name } => {
            let mut items = eval(focus, ctx, this);
            match op {
                TypeOp::As | TypeOp::OfType => {
                    items.retain(|item| item.is_type(type_name));
                    items
                }
                TypeOp::Is => match items.as_slice() {
                    [item] => vec![Item::Boolean(item.is_type(type_name))],
                    _ => Vec::new(),
                },
            }
        }
        Node::Union(parts) => {
            let mut out: Vec<Item<'a>> = Vec::new();
            // Large collections (a Group with thousands of members) are
            // de-duplicated through a set of node addresses, not pairwise.
            let mut nodes: Option<std::collections::HashSet<(*const Value, Option<&'a str>)>> = None;
            for part in parts {
                for item in eval(part, ctx, this) {
                    if out.len() == LINEAR_DEDUP && nodes.is_none() {
                        nodes = Some(out.iter().filter_map(node_key).collect());
                    }
                    let duplicate = match (&mut nodes, node_key(&item)) {
                        (Some(set), Some(key)) => !set.insert(key),
                        _ => out.iter().any(|seen| same_item(seen, &item)),
                    };
                    if !duplicate {
                        out.push(item);
                    }
                }
            }
            out
        }
        Node::Binary { op, left, right } => binary(*op, left, right, ctx, this),
        Node::Call { focus, func, args } => {
            let input = eval(focus, ctx, this);
            call(*func, input, args, ctx, this)
        }
    }
}

/// Children named `name` of a JSON object, flattening arrays. When the object
/// has no such key, `name` may be a choice element: `value` finds `valueQuantity`.
/// The child `name` of a JSON object: the value as stored (maybe an array)
/// and, for a choice element found by its base name, the type suffix.
fn child_value<'a>(map: &'a serde_json::Map<String, Value>, name: &str) -> Option<(&'a Value, Option<&'a str>)> {
    // Resources and data types have few keys: one pass comparing keys is
    // cheaper than hashing the name, and finds a choice element on the way.
    if map.len() > 24
        && let Some(value) = map.get(name)
    {
        return Some((value, None));
    }
    let mut choice = None;
    for (key, value) in map {
        if key.len() == name.len() {
            if key == name {
                return Some((value, None));
            }
        } else if choice.is_none()
            && let Some(suffix) = key.strip_prefix(name)
            && types::is_choice_suffix(suffix)
        {
            // Only one value[x] may be present (formats.html#choice).
            choice = Some((value, Some(suffix)));
        }
    }
    choice
}

/// Children named `name` of a JSON object, flattening arrays. When the object
/// has no such key, `name` may be a choice element: `value` finds `valueQuantity`.
fn child<'a>(map: &'a serde_json::Map<String, Value>, name: &str, out: &mut Vec<Item<'a>>) {
    if let Some((value, ty)) = child_value(map, name) {
        push_flat(value, ty, out);
    }
}

/// Longest pure path handled without intermediate collections.
const MAX_PATH: usize = 8;

/// If `node` is a plain path from the focus (`a.b.c`), its names, root first.
fn plain_path<'n>(mut node: &'n Node, names: &mut [&'n str; MAX_PATH]) -> Option<usize> {
    let mut len = 0;
    loop {
        match node {
            Node::Child { focus, name } => {
                if len == MAX_PATH {
                    return None;
                }
                names[len] = name;
                len += 1;
                node = focus;
            }
            Node::This => break,
            _ => return None,
        }
    }
    names[..len].reverse();
    Some(len)
}

/// Depth-first navigation of `names` from `value`, pushing what the last name finds.
fn descend<'a>(value: &'a Value, names: &[&str], out: &mut Vec<Item<'a>>) {
    let Some((first, rest)) = names.split_first() else { return };
    let Value::Object(map) = value else { return };
    let Some((found, ty)) = child_value(map, first) else { return };
    if rest.is_empty() {
        push_flat(found, ty, out);
        return;
    }
    match found {
        Value::Array(items) => items.iter().for_each(|v| descend(v, rest, out)),
        v => descend(v, rest, out),
    }
}

fn push_flat<'a>(value: &'a Value, ty: Option<&'a str>, out: &mut Vec<Item<'a>>) {
    match value {
        Value::Array(items) => out.extend(items.iter().filter(|v| !v.is_null()).map(|v| Item::Node { value: v, ty })),
        Value::Null => {}
        _ => out.push(Item::Node { value, ty }),
    }
}

fn number_item(text: &str) -> Item<'_> {
    match text.parse::<i64>() {
        Ok(i) if !text.contains('.') => Item::Integer(i),
        _ => Item::Decimal(text),
    }
}

fn single_integer(items: &[Item<'_>]) -> Option<i64> {
    match items {
        [Item::Integer(i)] => Some(*i),
        [Item::Node { value: Value::Number(n), .. }] => n.as_i64(),
        _ => None,
    }
}

/// Union size up to which duplicates are found by comparing pairs.
const LINEAR_DEDUP: usize = 32;

fn node_key<'a>(item: &Item<'a>) -> Option<(*const Value, Option<&'a str>)> {
    match item {
        Item::Node { value, ty } => Some((std::ptr::from_ref(*value), *ty)),
        _ => None,
    }
}

/// Identity for union de-duplication: the same JSON node, or equal values.
fn same_item(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (a, b) {
        (Item::Node { value: x, ty: tx }, Item::Node { value: y, ty: ty_ }) => std::ptr::eq(*x, *y) && tx == ty_,
        (Item::Node { .. }, _) | (_, Item::Node { .. }) => false,
        _ => a == b,
    }
}

/// FHIRPath singleton evaluation of a collection as a Boolean (§4.5):
/// `Some(b)` for one boolean, `Some(true)` for one other item, `None` for empty.
fn truth(items: &[Item<'_>]) -> Option<bool> {
    match items {
        [] => None,
        [Item::Boolean(b)] | [Item::Node { value: Value::Bool(b), .. }] => Some(*b),
        [_] => Some(true),
        _ => None,
    }
}

/// A comparable view of an item.
#[derive(Debug, Clone, Copy)]
enum Atom<'a> {
    Bool(bool),
    Num(f64),
    Str(&'a str),
    Complex(&'a Value),
    Type(&'a str),
}

fn atom<'a>(item: &Item<'a>) -> Atom<'a> {
    match *item {
        Item::Node { value, .. } => match value {
            Value::Bool(b) => Atom::Bool(*b),
            // Comparison only: stored values keep their text.
            Value::Number(n) => Atom::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Atom::Str(s),
            other => Atom::Complex(other),
        },
        Item::Boolean(b) => Atom::Bool(b),
        Item::Integer(i) => Atom::Num(i as f64),
        Item::Decimal(d) => Atom::Num(d.parse().unwrap_or(f64::NAN)),
        Item::String(s) | Item::DateTime(s) => Atom::Str(s),
        Item::Resolved { type_name } => Atom::Type(type_name),
    }
}

fn atoms_equal(a: Atom<'_>, b: Atom<'_>, equivalent: bool) -> bool {
    match (a, b) {
        (Atom::Bool(x), Atom::Bool(y)) => x == y,
        (Atom::Num(x), Atom::Num(y)) => {
            if equivalent {
                (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0)
            } else {
                x == y
            }
        }
        (Atom::Str(x), Atom::Str(y)) => {
            if equivalent {
                normalize_ws(x).eq_ignore_ascii_case(&normalize_ws(y))
            } else {
                x == y
            }
        }
        (Atom::Complex(x), Atom::Complex(y)) => x == y,
        (Atom::Type(x), Atom::Type(y)) => x == y,
        _ => false,
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `=` / `~` over collections (§6.1): empty operand gives empty; otherwise
/// equal lengths with pairwise-equal items.
fn collections_equal(left: &[Item<'_>], right: &[Item<'_>], equivalent: bool) -> Option<bool> {
    if left.is_empty() || right.is_empty() {
        return if equivalent { Some(left.is_empty() && right.is_empty()) } else { None };
    }
    if left.len() != right.len() {
        return Some(false);
    }
    Some(left.iter().zip(right).all(|(a, b)| atoms_equal(atom(a), atom(b), equivalent)))
}

fn compare(left: &[Item<'_>], right: &[Item<'_>]) -> Option<std::cmp::Ordering> {
    match (left, right) {
        ([a], [b]) => match (atom(a), atom(b)) {
            (Atom::Num(x), Atom::Num(y)) => x.partial_cmp(&y),
            (Atom::Str(x), Atom::Str(y)) => Some(x.cmp(y)),
            _ => None,
        },
        _ => None,
    }
}

fn binary<'a>(op: BinOp, left: &'a Node, right: &'a Node, ctx: &Context<'a>, this: &[Item<'a>]) -> Vec<Item<'a>> {
    let l = eval(left, ctx, this);
    // Three-valued logic short-circuits where the result is already known (§6.5).
    match op {
        BinOp::And if truth(&l) == Some(false) => return vec![Item::Boolean(false)],
        BinOp::Or if truth(&l) == Some(true) => return vec![Item::Boolean(true)],
        BinOp::Implies if truth(&l) == Some(false) => return vec![Item::Boolean(true)],
        _ => {}
    }
    let r = eval(right, ctx, this);
    let result: Option<bool> = match op {
        BinOp::Eq => collections_equal(&l, &r, false),
        BinOp::NotEq => collections_equal(&l, &r, false).map(|b| !b),
        BinOp::Equiv => collections_equal(&l, &r, true),
        BinOp::NotEquiv => collections_equal(&l, &r, true).map(|b| !b),
        BinOp::Lt => compare(&l, &r).map(|o| o.is_lt()),
        BinOp::Gt => compare(&l, &r).map(|o| o.is_gt()),
        BinOp::Le => compare(&l, &r).map(|o| o.is_le()),
        BinOp::Ge => compare(&l, &r).map(|o| o.is_ge()),
        BinOp::In => membership(&l, &r),
        BinOp::Contains => membership(&r, &l),
        BinOp::And => match (truth(&l), truth(&r)) {
            (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        BinOp::Or => match (truth(&l), truth(&r)) {
            (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        BinOp::Xor => match (truth(&l), truth(&r)) {
            (Some(a), Some(b)) => Some(a != b),
            _ => None,
        },
        BinOp::Implies => match (truth(&l), truth(&r)) {
            (_, Some(true)) => Some(true),
            (Some(true), Some(false)) => Some(false),
            _ => None,
        },
    };
    result.map(Item::Boolean).into_iter().collect()
}

/// `item in collection`: empty item gives empty.
fn membership(item: &[Item<'_>], collection: &[Item<'_>]) -> Option<bool> {
    match item {
        [] => None,
        [one] => Some(collection.iter().any(|c| atoms_equal(atom(one), atom(c), false))),
        _ => None,
    }
}

fn call<'a>(func: Func, input: Vec<Item<'a>>, args: &'a [Node], ctx: &Context<'a>, this: &[Item<'a>]) -> Vec<Item<'a>> {
    let arg = args.first();
    match func {
        Func::Where => {
            let Some(criteria) = arg else { return Vec::new() };
            input.into_iter().filter(|item| truth(&eval(criteria, ctx, std::slice::from_ref(item))) == Some(true)).collect()
        }
        Func::Select => {
            let Some(projection) = arg else { return Vec::new() };
            input.iter().flat_map(|item| eval(projection, ctx, std::slice::from_ref(item))).collect()
        }
        Func::Exists => {
            let found = match arg {
                Some(criteria) => {
                    input.iter().any(|item| truth(&eval(criteria, ctx, std::slice::from_ref(item))) == Some(true))
                }
                None => !input.is_empty(),
            };
            vec![Item::Boolean(found)]
        }
        Func::All => {
            let Some(criteria) = arg else { return Vec::new() };
            let all = input.iter().all(|item| truth(&eval(criteria, ctx, std::slice::from_ref(item))) == Some(true));
            vec![Item::Boolean(all)]
        }
        Func::Empty => vec![Item::Boolean(input.is_empty())],
        Func::Not => truth(&input).map(|b| Item::Boolean(!b)).into_iter().collect(),
        Func::First => input.first().copied().into_iter().collect(),
        Func::Last => input.last().copied().into_iter().collect(),
        Func::Tail => input.into_iter().skip(1).collect(),
        Func::Skip | Func::Take => {
            let n = arg.and_then(|a| single_integer(&eval(a, ctx, this))).unwrap_or(0);
            let n = usize::try_from(n.max(0)).unwrap_or(0);
            if func == Func::Skip { input.into_iter().skip(n).collect() } else { input.into_iter().take(n).collect() }
        }
        Func::Count => vec![Item::Integer(i64::try_from(input.len()).unwrap_or(i64::MAX))],
        Func::Resolve => input.iter().filter_map(|item| resolve(item, ctx)).collect(),
        Func::Extension => {
            let urls = arg.map(|a| eval(a, ctx, this)).unwrap_or_default();
            let Some(url) = urls.first().and_then(Item::as_str) else { return Vec::new() };
            let mut out = Vec::new();
            for item in &input {
                if let Some(Value::Array(extensions)) = item.value().and_then(|v| v.get("extension")) {
                    for ext in extensions {
                        if ext.get("url").and_then(Value::as_str) == Some(url) {
                            out.push(Item::Node { value: ext, ty: None });
                        }
                    }
                }
            }
            out
        }
        Func::HasValue => {
            let has = matches!(input.as_slice(), [Item::Node { value: Value::String(_) | Value::Number(_) | Value::Bool(_), .. }]);
            vec![Item::Boolean(has)]
        }
        Func::StartsWith | Func::EndsWith | Func::Contains => {
            let needle = arg.map(|a| eval(a, ctx, this)).unwrap_or_default();
            match (input.as_slice(), needle.as_slice()) {
                ([s], [n]) => match (s.as_str(), n.as_str()) {
                    (Some(s), Some(n)) => vec![Item::Boolean(match func {
                        Func::StartsWith => s.starts_with(n),
                        Func::EndsWith => s.ends_with(n),
                        _ => s.contains(n),
                    })],
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            }
        }
        Func::Trace => input,
    }
}

/// `resolve()` without a repository (fhirpath.html#functions): a local
/// reference `#id` finds the contained resource; a relative or absolute
/// RESTful reference (`Patient/1`, `http://x/fhir/Patient/1/_history/2`) or a
/// canonical (`http://x/ValueSet/v|1.0`) yields its type; `Reference.type` is
/// used when the reference text says nothing.
fn resolve<'a>(item: &Item<'a>, ctx: &Context<'a>) -> Option<Item<'a>> {
    let value = item.value()?;
    let (text, declared) = match value {
        Value::Object(map) => (map.get("reference").and_then(Value::as_str), map.get("type").and_then(Value::as_str)),
        Value::String(s) => (Some(s.as_str()), None),
        _ => (None, None),
    };
    if let Some(text) = text {
        if let Some(id) = text.strip_prefix('#') {
            let contained = ctx.root.get("contained")?.as_array()?;
            return contained
                .iter()
                .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
                .map(|r| Item::Node { value: r, ty: None });
        }
        if let Some(type_name) = reference_type(text) {
            return Some(Item::Resolved { type_name });
        }
    }
    declared.filter(|t| types::looks_like_resource_type(t)).map(|type_name| Item::Resolved { type_name })
}

/// The resource type named by a reference or canonical URL, if any.
pub(crate) fn reference_type(text: &str) -> Option<&str> {
    let text = text.split(['|', '#', '?']).next().unwrap_or(text);
    let text = match text.find("/_history/") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut segments = text.rsplit('/');
    let id = segments.next()?;
    let type_name = segments.next()?;
    (!id.is_empty() && types::looks_like_resource_type(type_name)).then_some(type_name)
}
