//! Compartments: the generated table is not stale, and every parameter it names is a
//! core reference parameter of its resource type that can point at the owner.
#![allow(clippy::unwrap_used)]

#[path = "../../../../xtask/src/compartments.rs"]
#[allow(dead_code, unreachable_pub)]
mod generator;

use fhir::compartments::{OWNER, compartment_types, params, resource_types};
use fhir::search::{ParamType, search_param};
use std::path::PathBuf;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Fails when `crates/fhir/definitions/compartments.json` differs from what
/// `cargo xtask codegen` writes from `xtask/vendor/compartments.json.gz`.
#[test]
fn compartment_table_is_not_stale() {
    let root = workspace_root();
    let rendered = generator::render_from_vendor(&root).expect("the generator runs on the vendored input");
    let committed = std::fs::read_to_string(root.join(generator::OUTPUT)).unwrap_or_default();
    assert!(committed == rendered, "{} is stale: run `cargo xtask codegen` and commit the result", generator::OUTPUT);
}

/// The sizes of the R4 base compartments: resource types with at least one link.
#[test]
fn compartments_have_their_r4_members() {
    let sizes: Vec<(&str, usize)> = compartment_types().map(|c| (c, resource_types(c).count())).collect();
    assert_eq!(
        sizes,
        [("Device", 32), ("Encounter", 25), ("Patient", 66), ("Practitioner", 59), ("RelatedPerson", 32)]
    );
    assert_eq!(params("Patient", "Patient").unwrap(), ["link"]);
    assert_eq!(params("Patient", "AllergyIntolerance").unwrap(), ["patient", "recorder", "asserter"]);
    assert_eq!(params("Practitioner", "Practitioner").unwrap(), [OWNER]);
    assert!(params("Patient", "Organization").is_none());
}

/// Each linking parameter exists for its resource type, is a reference, and (when the
/// parameter restricts its targets) may target the compartment type.
#[test]
fn every_link_is_a_reference_to_the_owner_type() {
    let mut checked = 0;
    for compartment in compartment_types() {
        for resource_type in resource_types(compartment) {
            assert!(fhir::definitions::is_resource_type(resource_type), "{resource_type}");
            for code in params(compartment, resource_type).unwrap() {
                if code == OWNER {
                    assert_eq!(resource_type, compartment, "{{def}} only links the owner type");
                    continue;
                }
                let def = search_param(resource_type, code)
                    .unwrap_or_else(|| panic!("{compartment}: {resource_type}.{code} is not a search parameter"));
                assert_eq!(def.kind, ParamType::Reference, "{resource_type}.{code}");
                assert!(
                    def.targets.is_empty() || def.targets.iter().any(|t| t == compartment),
                    "{resource_type}.{code} cannot reference a {compartment}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 299, "links in the five base definitions, {{def}} excluded");
}
