//! Evaluation of a path expression to locations in the JSON (object keys and
//! array indexes), so FHIRPath Patch can change what the path selects
//! (<http://hl7.org/fhir/R4/fhirpatch.html>).

use super::FhirPathError;
use super::eval::{self, Context, Item};
use super::parser::{Func, Node, TypeOp};
use super::types;
use serde_json::Value;

/// One step from a JSON value to a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A path from the resource root to a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub steps: Vec<Step>,
}

impl Location {
    fn with(&self, step: Step) -> Location {
        let mut steps = Vec::with_capacity(self.steps.len() + 1);
        steps.extend(self.steps.iter().cloned());
        steps.push(step);
        Location { steps }
    }

    /// The node at this location in `root`.
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.steps.iter().try_fold(root, |v, step| match step {
            Step::Key(k) => v.get(k.as_str()),
            Step::Index(i) => v.get(*i),
        })
    }

    /// The node at this location in `root`, mutably.
    pub fn get_mut<'a>(&self, root: &'a mut Value) -> Option<&'a mut Value> {
        self.steps.iter().try_fold(root, |v, step| match step {
            Step::Key(k) => v.get_mut(k.as_str()),
            Step::Index(i) => v.get_mut(*i),
        })
    }
}

/// A node selected by a path, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<'a> {
    pub location: Location,
    pub value: &'a Value,
    /// The FHIR type when the JSON says it (choice element suffix).
    pub type_name: Option<&'a str>,
}

impl<'a> Located<'a> {
    fn item(&self) -> Item<'a> {
        Item::Node { value: self.value, ty: self.type_name }
    }
}

pub(crate) fn locate<'r>(node: &Node, root: &'r Value) -> Result<Vec<Located<'r>>, FhirPathError> {
    let ctx = Context { root };
    walk(node, &ctx)
}

fn not_a_path(what: &str) -> FhirPathError {
    FhirPathError::at(0, format!("{what} does not select elements of the resource"))
}

fn walk<'r>(node: &Node, ctx: &Context<'r>) -> Result<Vec<Located<'r>>, FhirPathError> {
    Ok(match node {
        Node::This | Node::Root => vec![Located { location: Location::default(), value: ctx.root, type_name: None }],
        Node::Empty => Vec::new(),
        Node::TypeFilter { focus, type_name } | Node::Type { focus, op: TypeOp::As | TypeOp::OfType, type_name } => {
            let mut found = walk(focus, ctx)?;
            found.retain(|l| l.item().is_type(type_name));
            found
        }
        Node::Child { focus, name } => {
            let mut out = Vec::new();
            for parent in walk(focus, ctx)? {
                let Value::Object(map) = parent.value else { continue };
                let (key, value, ty) = match map.get_key_value(name.as_str()) {
                    Some((k, v)) => (k, v, None),
                    None => match map.iter().find_map(|(k, v)| {
                        k.strip_prefix(name.as_str()).filter(|s| types::is_choice_suffix(s)).map(|s| (k, v, Some(s)))
                    }) {
                        Some(found) => found,
                        None => continue,
                    },
                };
                let at = parent.location.with(Step::Key(key.clone()));
                match value {
                    Value::Array(items) => {
                        for (i, v) in items.iter().enumerate() {
                            out.push(Located { location: at.with(Step::Index(i)), value: v, type_name: ty });
                        }
                    }
                    Value::Null => {}
                    v => out.push(Located { location: at, value: v, type_name: ty }),
                }
            }
            out
        }
        Node::Index { focus, index } => {
            let found = walk(focus, ctx)?;
            let this = [Item::Node { value: ctx.root, ty: None }];
            let i = match eval::eval(index, ctx, &this).as_slice() {
                [Item::Integer(i)] => *i,
                _ => return Err(not_a_path("a non-integer index")),
            };
            usize::try_from(i).ok().and_then(|i| found.into_iter().nth(i)).into_iter().collect()
        }
        Node::Call { focus, func, args } => {
            let found = walk(focus, ctx)?;
            let this = [Item::Node { value: ctx.root, ty: None }];
            let count_arg = || match args.first().map(|a| eval::eval(a, ctx, &this)).as_deref() {
                Some([Item::Integer(n)]) => Ok(usize::try_from(*n).unwrap_or(0)),
                _ => Err(not_a_path("skip()/take() without an integer")),
            };
            match func {
                Func::Where => {
                    let Some(criteria) = args.first() else { return Ok(Vec::new()) };
                    found
                        .into_iter()
                        .filter(|l| {
                            let item = l.item();
                            matches!(
                                eval::eval(criteria, ctx, std::slice::from_ref(&item)).as_slice(),
                                [Item::Boolean(true)] | [Item::Node { value: Value::Bool(true), .. }]
                            )
                        })
                        .collect()
                }
                Func::First => found.into_iter().take(1).collect(),
                Func::Last => found.into_iter().last().into_iter().collect(),
                Func::Tail => found.into_iter().skip(1).collect(),
                Func::Skip => found.into_iter().skip(count_arg()?).collect(),
                Func::Take => found.into_iter().take(count_arg()?).collect(),
                Func::Trace => found,
                Func::Extension => {
                    let urls = args.first().map(|a| eval::eval(a, ctx, &this)).unwrap_or_default();
                    let Some(url) = urls.first().and_then(Item::as_str) else { return Ok(Vec::new()) };
                    let mut out = Vec::new();
                    for parent in found {
                        if let Some(Value::Array(exts)) = parent.value.get("extension") {
                            let at = parent.location.with(Step::Key("extension".into()));
                            for (i, ext) in exts.iter().enumerate() {
                                if ext.get("url").and_then(Value::as_str) == Some(url) {
                                    out.push(Located { location: at.with(Step::Index(i)), value: ext, type_name: None });
                                }
                            }
                        }
                    }
                    out
                }
                Func::Resolve => {
                    // Only contained resources are reachable (fhirpatch.html: resolve()
                    // SHALL only be used to refer to contained resources).
                    let mut out = Vec::new();
                    let contained = ctx.root.get("contained").and_then(Value::as_array);
                    for reference in found {
                        let target = reference.value.get("reference").and_then(Value::as_str);
                        let Some(id) = target.and_then(|t| t.strip_prefix('#')) else {
                            return Err(not_a_path("resolve() of a non-contained reference"));
                        };
                        let Some(list) = contained else { continue };
                        if let Some((i, r)) =
                            list.iter().enumerate().find(|(_, r)| r.get("id").and_then(Value::as_str) == Some(id))
                        {
                            out.push(Located {
                                location: Location { steps: vec![Step::Key("contained".into()), Step::Index(i)] },
                                value: r,
                                type_name: None,
                            });
                        }
                    }
                    out
                }
                _ => return Err(not_a_path("a function other than where/first/last/tail/skip/take/extension/resolve")),
            }
        }
        Node::Type { op: TypeOp::Is, .. } => return Err(not_a_path("'is'")),
        Node::Union(_) => return Err(not_a_path("a union")),
        Node::Binary { .. } => return Err(not_a_path("an operator")),
        Node::Bool(_) | Node::Str(_) | Node::Number(_) | Node::DateTime(_) => return Err(not_a_path("a literal")),
    })
}
