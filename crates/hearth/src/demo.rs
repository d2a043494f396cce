//! The demo data set of `hearth serve --demo`: synthetic patients from the
//! seeded generator, tagged so that they are recognised and loaded only once.

use crate::synth;
use domain::Service;
use domain::service::Handling;
use serde_json::{Value, json};

/// The tag on every demo resource.
pub const DEMO_TAG_SYSTEM: &str = "https://hearth.example/fhir/tags";
pub const DEMO_TAG_CODE: &str = "demo";
/// How many demo patients are loaded.
pub const DEMO_PATIENTS: usize = 25;
const DEMO_SEED: u64 = 2024;

/// Loads the demo patients unless they are already there. Returns how many
/// were loaded, or `None` when they were present.
pub async fn load_once(service: &Service, base_url: &str) -> anyhow::Result<Option<usize>> {
    let params = vec![
        ("_tag".to_string(), format!("{DEMO_TAG_SYSTEM}|{DEMO_TAG_CODE}")),
        ("_count".to_string(), "1".to_string()),
    ];
    let existing = service
        .search(&domain::access::Access::system("hearth demo"), Some("Patient"), &params, Handling::Strict)
        .await
        .map_err(|e| anyhow::anyhow!("checking for demo data: {}", e.message()))?;
    if !existing.page.items.is_empty() {
        return Ok(None);
    }
    for index in 0..DEMO_PATIENTS {
        let mut bundle = synth::patient_bundle(DEMO_SEED, index);
        tag_entries(&mut bundle);
        service
            .bundle(&domain::access::Access::system("hearth demo"), bundle, base_url, None)
            .await
            .map_err(|e| anyhow::anyhow!("loading demo patient {index}: {}", e.message()))?;
    }
    Ok(Some(DEMO_PATIENTS))
}

fn tag_entries(bundle: &mut Value) {
    let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) else { return };
    for entry in entries {
        let Some(resource) = entry.get_mut("resource").and_then(Value::as_object_mut) else { continue };
        let meta = resource.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let tags = meta.entry("tag").or_insert_with(|| json!([]));
            if let Some(tags) = tags.as_array_mut() {
                tags.push(json!({"system": DEMO_TAG_SYSTEM, "code": DEMO_TAG_CODE, "display": "Hearth demo data"}));
            }
        }
    }
}
