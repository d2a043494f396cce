//! FHIR type names as FHIRPath sees them over plain JSON: choice-element
//! suffixes (`valueQuantity`), the subtype relation used by `is`/`as`/`ofType`,
//! and resource types. See <http://hl7.org/fhir/R4/datatypes.html> and
//! <http://hl7.org/fhir/R4/formats.html#choice>.

/// True when `suffix` (the part of a JSON key after a choice element's name)
/// names a data type, so `valueQuantity` is `value` of type Quantity while
/// `valueSet` is not a choice of `value`. The names are the `*` open type list
/// of <http://hl7.org/fhir/R4/datatypes.html#open> as JSON spells them
/// (first letter upper-cased); a `match` compiles to a length switch, which
/// matters on the extraction hot path.
pub(crate) fn is_choice_suffix(suffix: &str) -> bool {
    matches!(
        suffix,
        "Base64Binary"
            | "Boolean"
            | "Canonical"
            | "Code"
            | "Date"
            | "DateTime"
            | "Decimal"
            | "Id"
            | "Instant"
            | "Integer"
            | "Markdown"
            | "Oid"
            | "PositiveInt"
            | "String"
            | "Time"
            | "UnsignedInt"
            | "Uri"
            | "Url"
            | "Uuid"
            | "Address"
            | "Age"
            | "Annotation"
            | "Attachment"
            | "CodeableConcept"
            | "Coding"
            | "ContactPoint"
            | "Count"
            | "Distance"
            | "Duration"
            | "HumanName"
            | "Identifier"
            | "Money"
            | "Period"
            | "Quantity"
            | "Range"
            | "Ratio"
            | "Reference"
            | "SampledData"
            | "Signature"
            | "Timing"
            | "ContactDetail"
            | "Contributor"
            | "DataRequirement"
            | "Expression"
            | "ParameterDefinition"
            | "RelatedArtifact"
            | "TriggerDefinition"
            | "UsageContext"
            | "Dosage"
            | "Meta"
    )
}

/// The direct parent of a data type in the FHIR type hierarchy, for the
/// types where `is`/`as` must see through a specialisation.
fn parent(type_name: &str) -> Option<&'static str> {
    const PAIRS: &[(&str, &str)] = &[
        ("age", "Quantity"),
        ("distance", "Quantity"),
        ("duration", "Quantity"),
        ("count", "Quantity"),
        ("moneyquantity", "Quantity"),
        ("simplequantity", "Quantity"),
        ("code", "string"),
        ("id", "string"),
        ("markdown", "string"),
        ("url", "uri"),
        ("canonical", "uri"),
        ("oid", "uri"),
        ("uuid", "uri"),
        ("unsignedint", "integer"),
        ("positiveint", "integer"),
    ];
    PAIRS.iter().find(|(child, _)| child.eq_ignore_ascii_case(type_name)).map(|(_, p)| *p)
}

/// Whether a value of data type `actual` is a `wanted` (same type or a
/// specialisation of it). Type names compare without case so that the JSON
/// suffix `DateTime` matches `dateTime` and `System.String` matches `string`.
pub(crate) fn conforms(actual: &str, wanted: &str) -> bool {
    if actual.eq_ignore_ascii_case(wanted) || wanted == "Element" || wanted == "Base" {
        return true;
    }
    let mut current = actual;
    // The hierarchy is at most two levels deep.
    for _ in 0..3 {
        match parent(current) {
            Some(p) if p.eq_ignore_ascii_case(wanted) => return true,
            Some(p) => current = p,
            None => return false,
        }
    }
    false
}

/// Whether a resource of type `actual` is a `wanted` (Resource and
/// DomainResource are the abstract bases, <http://hl7.org/fhir/R4/resource.html>).
pub(crate) fn resource_conforms(actual: &str, wanted: &str) -> bool {
    actual == wanted
        || wanted == "Resource"
        || (wanted == "DomainResource" && !matches!(actual, "Bundle" | "Binary" | "Parameters"))
}

/// Primitive types represented as JSON strings.
pub(crate) fn is_string_primitive(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "string",
        "code",
        "id",
        "markdown",
        "uri",
        "url",
        "canonical",
        "oid",
        "uuid",
        "base64Binary",
        "date",
        "dateTime",
        "instant",
        "time",
        "xhtml",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Primitive types represented as JSON numbers.
pub(crate) fn is_number_primitive(name: &str) -> bool {
    ["integer", "decimal", "unsignedInt", "positiveInt"].iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// A plausible resource type name: `Patient`, not `http:` or `#x`.
pub(crate) fn looks_like_resource_type(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase()) && name.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn subtypes_conform_to_their_parents() {
        assert!(conforms("Age", "Quantity"));
        assert!(conforms("DateTime", "dateTime"));
        assert!(conforms("code", "String"));
        assert!(conforms("canonical", "uri"));
        assert!(!conforms("Quantity", "Age"));
        assert!(!conforms("Period", "dateTime"));
        assert!(resource_conforms("Patient", "DomainResource"));
        assert!(!resource_conforms("Bundle", "DomainResource"));
        assert!(is_choice_suffix("Quantity") && !is_choice_suffix("Set"));
    }
}
