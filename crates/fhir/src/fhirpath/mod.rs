//! A compiled FHIRPath subset: what search-parameter expressions and FHIRPath Patch need.
//!
//! An expression is parsed once into an AST ([`Expr::compile`]) and then
//! evaluated many times over `serde_json::Value` resources, borrowing from the
//! JSON ([`Item`]). [`Expr::for_resource_type`] prunes the union branches that
//! cannot apply to one resource type, so the shared core parameters
//! (`clinical-patient` lists 30 resource types) cost one branch per resource.
//!
//! Supported (<http://hl7.org/fhirpath/N1/>): paths and choice elements,
//! `|`, indexers, `= != ~ !~ < > <= >= in contains and or xor implies`,
//! `is`/`as` (operators and functions), `ofType()`, `where()`, `select()`,
//! `exists()`, `all()`, `empty()`, `not()`, `first()`, `last()`, `tail()`,
//! `skip()`, `take()`, `count()`, `resolve()`, `extension(url)`, `hasValue()`,
//! `startsWith()`, `endsWith()`, `contains()`, `trace()`, literals, `%resource`,
//! `%context`, `%ucum`, `%sct`, `%loinc` and `$this`. Arithmetic, quantity
//! literals, `$index`/`$total` and other functions are compile errors.

mod eval;
mod lexer;
mod locate;
mod parser;
mod types;

pub use eval::Item;
pub use locate::{Location, Located, Step};
pub(crate) use types::{is_choice_suffix, looks_like_resource_type};

use parser::{Func, Node};
use serde_json::Value;

/// A FHIRPath expression that does not parse or uses something outside the subset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath error at offset {offset}: {message}")]
pub struct FhirPathError {
    /// Byte offset in the expression text.
    pub offset: usize,
    pub message: String,
}

impl FhirPathError {
    pub(crate) fn at(offset: usize, message: impl Into<String>) -> FhirPathError {
        FhirPathError { offset, message: message.into() }
    }
}

/// A compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    text: String,
    node: Node,
}

/// Compiles `text`; shorthand for [`Expr::compile`].
pub fn compile(text: &str) -> Result<Expr, FhirPathError> {
    Expr::compile(text)
}

impl Expr {
    pub fn compile(text: &str) -> Result<Expr, FhirPathError> {
        let tokens = lexer::tokenize(text)?;
        let node = parser::parse(&tokens, text.len())?;
        Ok(Expr { text: text.to_string(), node })
    }

    /// The source text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when the expression can never yield anything (e.g. every branch
    /// named another resource type after [`Expr::for_resource_type`]).
    pub fn is_empty(&self) -> bool {
        self.node == Node::Empty
    }

    /// The expression as it applies to resources of `resource_type`: leading
    /// type filters (`Observation.code`) that name another type become empty
    /// and are dropped from unions; those that match become the resource itself.
    /// Evaluating the result on a resource of that type gives the same items
    /// as evaluating the original.
    pub fn for_resource_type(&self, resource_type: &str) -> Expr {
        Expr { text: self.text.clone(), node: specialize(&self.node, resource_type) }
    }

    /// Evaluates over `resource` (the context and `%resource`).
    pub fn evaluate<'a>(&'a self, resource: &'a Value) -> Vec<Item<'a>> {
        let ctx = eval::Context { root: resource };
        eval::eval(&self.node, &ctx, &[Item::Node { value: resource, ty: None }])
    }

    /// Evaluates with `focus` as the context and `resource` as `%resource`.
    pub fn evaluate_on<'a>(&'a self, resource: &'a Value, focus: Item<'a>) -> Vec<Item<'a>> {
        let ctx = eval::Context { root: resource };
        eval::eval(&self.node, &ctx, &[focus])
    }

    /// Where in `resource` the expression's items are, for FHIRPath Patch.
    /// Fails when the expression is not a path (paths, `where()`, indexers,
    /// `first()`/`last()`/`tail()`/`skip()`/`take()`, `ofType()`/`as`,
    /// `extension()` and `resolve()` of contained resources are paths).
    pub fn locate<'r>(&self, resource: &'r Value) -> Result<Vec<Located<'r>>, FhirPathError> {
        locate::locate(&self.node, resource)
    }

    /// For `insert`/`move`: when the expression ends with a child name
    /// (`Patient.identifier`), the expression of its parent and the name.
    pub fn split_last_name(&self) -> Option<(Expr, &str)> {
        match &self.node {
            Node::Child { focus, name } => Some((Expr { text: self.text.clone(), node: (**focus).clone() }, name)),
            _ => None,
        }
    }
}

/// Functions that yield nothing on an empty input, so a pruned focus prunes the call.
fn empty_in_empty_out(func: Func) -> bool {
    !matches!(func, Func::Exists | Func::All | Func::Empty | Func::Count | Func::HasValue)
}

fn specialize(node: &Node, resource_type: &str) -> Node {
    let wrap = |focus: &Node, build: &dyn Fn(Box<Node>) -> Node| {
        let focus = specialize(focus, resource_type);
        if focus == Node::Empty { Node::Empty } else { build(Box::new(focus)) }
    };
    match node {
        Node::TypeFilter { focus, type_name } if **focus == Node::This => {
            if types::resource_conforms(resource_type, type_name) {
                Node::This
            } else {
                Node::Empty
            }
        }
        Node::TypeFilter { focus, type_name } => {
            wrap(focus, &|f| Node::TypeFilter { focus: f, type_name: type_name.clone() })
        }
        Node::Child { focus, name } => wrap(focus, &|f| Node::Child { focus: f, name: name.clone() }),
        Node::Index { focus, index } => wrap(focus, &|f| Node::Index { focus: f, index: index.clone() }),
        Node::Type { focus, op, type_name } => {
            wrap(focus, &|f| Node::Type { focus: f, op: *op, type_name: type_name.clone() })
        }
        Node::Call { focus, func, args } => {
            let f = specialize(focus, resource_type);
            if f == Node::Empty && empty_in_empty_out(*func) {
                Node::Empty
            } else {
                Node::Call { focus: Box::new(f), func: *func, args: args.clone() }
            }
        }
        Node::Union(parts) => {
            let mut kept: Vec<Node> =
                parts.iter().map(|p| specialize(p, resource_type)).filter(|p| *p != Node::Empty).collect();
            match kept.len() {
                0 => Node::Empty,
                1 => kept.pop().unwrap_or(Node::Empty),
                _ => Node::Union(kept),
            }
        }
        Node::Binary { op, left, right } => Node::Binary {
            op: *op,
            left: Box::new(specialize(left, resource_type)),
            right: Box::new(specialize(right, resource_type)),
        },
        other => other.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
