//! What FHIRPath Patch needs to know of the R4 structures (from
//! [`crate::definitions`]): whether a child element repeats, and the JSON
//! name a choice element takes for a value type (formats.html#choice).

use crate::definitions::{self, Definitions, ElementType, TypeDef};
use crate::fhirpath::Step;
use serde_json::Value;

/// A type of the resource being patched, when the definitions know it.
#[derive(Clone, Copy)]
pub(crate) struct Type {
    defs: &'static Definitions,
    def: &'static TypeDef,
}

/// How a child is written in JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Child {
    /// The JSON property name (`valueQuantity` for `value` with a Quantity).
    pub(crate) key: String,
    pub(crate) repeats: bool,
    /// The child's type, to shape values given as nested parts.
    pub(crate) ty: Option<TypeName>,
}

/// An opaque handle on a complex type (see [`Type::child_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TypeName(usize);

/// The type of the node at `steps` in `root`, or `None` when unknown.
pub(crate) fn type_at(root: &Value, steps: &[Step]) -> Option<Type> {
    let defs = definitions::get()?;
    let resource = |node: &Value| Some(Type { defs, def: defs.resource(node.get("resourceType")?.as_str()?)? });
    let mut ty = resource(root);
    let mut node = root;
    // A resource-typed element (`contained`): its type shows on the object itself.
    let mut pending_resource = false;
    for step in steps {
        match step {
            Step::Index(i) => node = node.get(*i)?,
            Step::Key(key) => {
                let (_, _, variant) = ty?.def.property(key)?;
                node = node.get(key.as_str())?;
                match variant.ty {
                    ElementType::Complex(id) => ty = Some(Type { defs, def: defs.types.get(id)? }),
                    ElementType::Resource => pending_resource = true,
                    ElementType::Primitive(_) | ElementType::Attribute(_) => return None,
                }
            }
        }
        if pending_resource && node.is_object() {
            ty = resource(node);
            pending_resource = false;
        }
    }
    if pending_resource { None } else { ty }
}

impl Type {
    /// The child `name` of this type when a value of FHIR type `value_type`
    /// (a JSON choice suffix such as `Quantity`, or `None` for nested parts)
    /// is put there. `Err` with a reason when the type has no such child.
    pub(crate) fn child(&self, name: &str, value_type: Option<&str>) -> Result<Child, String> {
        if let Some((_, element, variant)) = self.def.property(name) {
            return Ok(Child { key: name.to_string(), repeats: element.is_array(), ty: complex(variant.ty) });
        }
        let choice = format!("{name}[x]");
        let Some(element) = self.def.elements.iter().find(|e| *e.name == *choice) else {
            return Err(format!("{} has no element {name}", self.def.name));
        };
        let Some(suffix) = value_type else {
            return Err(format!("{name} is a choice element: give the value with its type (value[x])"));
        };
        let key = format!("{name}{suffix}");
        match element.variants.iter().find(|v| *v.json_name == *key) {
            Some(variant) => Ok(Child { key, repeats: false, ty: complex(variant.ty) }),
            None => Err(format!("{name} does not take a {suffix}")),
        }
    }

    /// The type named by a [`TypeName`].
    pub(crate) fn of(&self, name: TypeName) -> Option<Type> {
        Some(Type { defs: self.defs, def: self.defs.types.get(name.0)? })
    }
}

fn complex(ty: ElementType) -> Option<TypeName> {
    match ty {
        ElementType::Complex(id) => Some(TypeName(id)),
        _ => None,
    }
}
