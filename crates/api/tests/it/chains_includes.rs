//! Chains, `_has`, `_include` and `_revinclude` over HTTP, for what the
//! search table cannot show: resources created through the API (server ids),
//! deleted and missing include targets, paging with includes, the self link,
//! `_summary`, and the CapabilityStatement
//! (<http://hl7.org/fhir/R4/search.html#chaining>, #has, #include).

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

per_backend!(
    chains_and_has_follow_server_assigned_ids,
    deleted_and_missing_include_targets_are_skipped,
    includes_follow_the_page_and_are_not_counted,
    self_link_shows_includes_and_lenient_chains,
    summary_applies_to_included_resources,
    capability_statement_states_includes_and_chains,
    compartment_search_resolves_includes,
    revinclude_star_finds_referrers_of_every_type,
);

/// `Type/id` of the entries with `search.mode = mode`.
fn entries(bundle: &Value, mode: &str) -> Vec<String> {
    let mut out: Vec<String> = bundle["entry"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|e| e["search"]["mode"] == mode)
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap(),
                        e["resource"]["id"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

fn observation(patient: &str, code: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
    })
}

async fn chains_and_has_follow_server_assigned_ids(s: Server) {
    let org = s.create(json!({"resourceType": "Organization", "name": "Riverside Clinic"})).await;
    let mut ada = patient("Lovelace");
    ada["managingOrganization"] = json!({"reference": format!("Organization/{org}")});
    let ada = s.create(ada).await;
    let alan = s.create(patient("Turing")).await;
    let o1 = s.create(observation(&ada, "1234-5")).await;
    let o2 = s.create(observation(&alan, "9999-9")).await;

    let bundle = fhir_body(s.get("Observation?subject:Patient.family=lovelace").await).await;
    assert_eq!(entries(&bundle, "match"), vec![format!("Observation/{o1}")]);
    let bundle = fhir_body(s.get("Observation?subject.organization.name=riverside").await).await;
    assert_eq!(entries(&bundle, "match"), vec![format!("Observation/{o1}")]);
    let bundle = fhir_body(s.get("Patient?_has:Observation:patient:code=9999-9").await).await;
    assert_eq!(entries(&bundle, "match"), vec![format!("Patient/{alan}")]);

    // A renamed patient is found under the new name at once.
    let mut renamed = patient("Byron");
    renamed["id"] = json!(ada);
    let response = s.send_json(Method::PUT, &format!("Patient/{ada}"), &renamed).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let bundle = fhir_body(s.get("Observation?subject:Patient.family=lovelace").await).await;
    assert!(entries(&bundle, "match").is_empty());
    let bundle = fhir_body(s.get("Observation?subject:Patient.family=byron").await).await;
    assert_eq!(entries(&bundle, "match"), vec![format!("Observation/{o1}")]);

    // A deleted patient ends the chain; a deleted observation no longer counts for _has.
    assert_eq!(s.request(Method::DELETE, &format!("Patient/{ada}")).send().await.unwrap().status(), 204);
    let bundle = fhir_body(s.get("Observation?subject:Patient.family=byron").await).await;
    assert!(entries(&bundle, "match").is_empty());
    assert_eq!(s.request(Method::DELETE, &format!("Observation/{o2}")).send().await.unwrap().status(), 204);
    let bundle = fhir_body(s.get("Patient?_has:Observation:patient:code=9999-9").await).await;
    assert!(entries(&bundle, "match").is_empty());

    // Errors name the parameter.
    let outcome = expect_outcome(s.get("Observation?subject.nonsense=x").await, 400).await;
    assert_eq!(outcome["issue"][0]["expression"][0], "subject.nonsense");
}

async fn deleted_and_missing_include_targets_are_skipped(s: Server) {
    let gone = s.create(patient("Gone")).await;
    let kept = s.create(patient("Kept")).await;
    let o_gone = s.create(observation(&gone, "1")).await;
    let o_kept = s.create(observation(&kept, "1")).await;
    let o_missing = s.create(observation("never-created", "1")).await;
    assert_eq!(s.request(Method::DELETE, &format!("Patient/{gone}")).send().await.unwrap().status(), 204);

    let bundle = fhir_body(s.get("Observation?code=1&_include=Observation:subject&_total=accurate").await).await;
    assert_eq!(
        entries(&bundle, "match"),
        sorted(vec![
            format!("Observation/{o_gone}"),
            format!("Observation/{o_kept}"),
            format!("Observation/{o_missing}")
        ])
    );
    assert_eq!(entries(&bundle, "include"), vec![format!("Patient/{kept}")]);
    assert_eq!(bundle["total"], 3);
    let included = bundle["entry"].as_array().unwrap().iter().find(|e| e["search"]["mode"] == "include").unwrap();
    assert_eq!(included["fullUrl"], format!("{}/Patient/{kept}", s.base));

    // A deleted referrer is not reverse-included.
    assert_eq!(s.request(Method::DELETE, &format!("Observation/{o_kept}")).send().await.unwrap().status(), 204);
    let bundle = fhir_body(s.get(&format!("Patient?_id={kept}&_revinclude=Observation:subject")).await).await;
    assert_eq!(entries(&bundle, "match"), vec![format!("Patient/{kept}")]);
    assert!(entries(&bundle, "include").is_empty());
}

async fn includes_follow_the_page_and_are_not_counted(s: Server) {
    let mut patients = Vec::new();
    for family in ["Alpha", "Beta", "Gamma"] {
        let id = s.create(patient(family)).await;
        s.create(observation(&id, "paged")).await;
        patients.push(id);
    }
    let mut included = Vec::new();
    let mut url = Some(s.url("Observation?code=paged&_count=2&_include=Observation:subject&_total=accurate"));
    let mut pages = 0;
    while let Some(next) = url {
        let bundle: Value = s.client.get(&next).send().await.unwrap().json().await.unwrap();
        assert_eq!(bundle["total"], 3, "included resources are not counted");
        let matches = entries(&bundle, "match");
        let these = entries(&bundle, "include");
        assert_eq!(these.len(), matches.len(), "each page includes the subjects of its own matches");
        // Included entries follow the matches.
        let modes: Vec<&str> =
            bundle["entry"].as_array().unwrap().iter().map(|e| e["search"]["mode"].as_str().unwrap()).collect();
        assert!(modes.windows(2).all(|w| !(w[0] == "include" && w[1] == "match")), "{modes:?}");
        let next_link = link(&bundle, "next");
        if next_link.is_some() {
            assert!(next_link.as_deref().unwrap().contains("_include=Observation%3Asubject"), "{next_link:?}");
        }
        included.extend(these);
        url = next_link;
        pages += 1;
    }
    assert_eq!(pages, 2);
    assert_eq!(sorted(included), sorted(patients.iter().map(|p| format!("Patient/{p}")).collect()));
}

async fn self_link_shows_includes_and_lenient_chains(s: Server) {
    let id = s.create(patient("Linked")).await;
    s.create(observation(&id, "self")).await;
    let bundle = fhir_body(
        s.request(Method::GET, "Observation?code=self&subject.nonsense=x&_include=Observation:subject")
            .header("prefer", "handling=lenient")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let self_link = link(&bundle, "self").unwrap();
    assert!(self_link.contains("_include=Observation%3Asubject"), "{self_link}");
    assert!(!self_link.contains("nonsense"), "the ignored chain is not in the self link: {self_link}");
    assert_eq!(entries(&bundle, "include"), vec![format!("Patient/{id}")]);

    let bundle = fhir_body(s.get("Observation?subject:Patient.family=linked").await).await;
    let self_link = link(&bundle, "self").unwrap();
    assert!(self_link.contains("subject%3APatient.family=linked"), "{self_link}");
}

async fn summary_applies_to_included_resources(s: Server) {
    let id = s.create(patient("Summarised")).await;
    s.create(observation(&id, "summary")).await;
    let bundle = fhir_body(s.get("Observation?code=summary&_include=Observation:subject&_elements=id").await).await;
    let included = bundle["entry"].as_array().unwrap().iter().find(|e| e["search"]["mode"] == "include").unwrap();
    assert_eq!(included["resource"]["id"], id.as_str());
    assert!(included["resource"].get("name").is_none(), "{included}");
    let bundle = fhir_body(s.get("Observation?code=summary&_include=Observation:subject&_summary=count").await).await;
    assert_eq!(bundle["total"], 1);
    assert!(bundle.get("entry").is_none(), "{bundle}");
}

async fn capability_statement_states_includes_and_chains(s: Server) {
    let statement = fhir_body(s.get("metadata").await).await;
    let resources = statement["rest"][0]["resource"].as_array().unwrap();
    let observation = resources.iter().find(|r| r["type"] == "Observation").unwrap();
    let includes: Vec<&str> =
        observation["searchInclude"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(includes.contains(&"Observation:subject") && includes.contains(&"*"), "{includes:?}");
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    let rev: Vec<&str> = patient["searchRevInclude"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(rev.contains(&"Observation:subject") && rev.contains(&"Encounter:patient"), "{rev:?}");
    let subject = observation["searchParam"].as_array().unwrap().iter().find(|p| p["name"] == "subject").unwrap();
    assert!(subject["documentation"].as_str().unwrap().contains("_has"), "{subject}");
}

async fn compartment_search_resolves_includes(s: Server) {
    let id = s.create(patient("Compartment")).await;
    let other = s.create(patient("Elsewhere")).await;
    let obs = s.create(observation(&id, "c")).await;
    s.create(observation(&other, "c")).await;
    let bundle = fhir_body(s.get(&format!("Patient/{id}/Observation?_include=Observation:subject")).await).await;
    assert_eq!(entries(&bundle, "match"), vec![format!("Observation/{obs}")]);
    assert_eq!(entries(&bundle, "include"), vec![format!("Patient/{id}")]);
    let bundle = fhir_body(s.get(&format!("Patient/{id}/Observation?subject:Patient.family=compartment")).await).await;
    assert_eq!(entries(&bundle, "match"), vec![format!("Observation/{obs}")]);
}

async fn revinclude_star_finds_referrers_of_every_type(s: Server) {
    let ada = s.create(patient("Lovelace")).await;
    let other = s.create(patient("Other")).await;
    let obs = s.create(observation(&ada, "1")).await;
    let condition = s
        .create(json!({"resourceType": "Condition", "subject": {"reference": format!("Patient/{ada}")},
                       "code": {"text": "asthma"}}))
        .await;
    let allergy = s
        .create(json!({"resourceType": "AllergyIntolerance", "patient": {"reference": format!("Patient/{ada}")},
                       "code": {"text": "peanut"}}))
        .await;
    let related = s
        .create(json!({"resourceType": "RelatedPerson", "patient": {"reference": format!("Patient/{ada}")}}))
        .await;
    let linked = s
        .create(json!({"resourceType": "Patient", "link": [{"other": {"reference": format!("Patient/{ada}")}, "type": "seealso"}]}))
        .await;
    let _elsewhere = s.create(observation(&other, "1")).await;
    let bundle = fhir_body(s.get(&format!("Patient?_id={ada}&_revinclude=*")).await).await;
    assert_eq!(entries(&bundle, "match"), vec![format!("Patient/{ada}")]);
    assert_eq!(
        entries(&bundle, "include"),
        sorted(vec![
            format!("AllergyIntolerance/{allergy}"),
            format!("Condition/{condition}"),
            format!("Observation/{obs}"),
            format!("Patient/{linked}"),
            format!("RelatedPerson/{related}"),
        ])
    );
    assert!(bundle["link"][0]["url"].as_str().unwrap().contains("_revinclude=*"), "{}", bundle["link"][0]["url"]);
}
