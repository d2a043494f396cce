//! Tests of URL search-parameter parsing, one group per parameter type.

use super::*;
use crate::search::ranges::{date_range, decimal_range};

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn ok(rt: &str, list: &[(&str, &str)]) -> Parsed {
    parse(&Registry::core(), Some(rt), &pairs(list), false).unwrap_or_else(|e| panic!("{list:?}: {e:?}"))
}

fn err(rt: &str, list: &[(&str, &str)]) -> Vec<Issue> {
    parse(&Registry::core(), Some(rt), &pairs(list), false).expect_err("should fail")
}

/// The matchers of the single filter.
fn matchers(rt: &str, name: &str, value: &str) -> Vec<Match> {
    let parsed = ok(rt, &[(name, value)]);
    assert_eq!(parsed.query.filters.len(), 1);
    parsed.query.filters[0].any_of.iter().map(|c| c.matcher.clone()).collect()
}

fn one(rt: &str, name: &str, value: &str) -> Match {
    let mut m = matchers(rt, name, value);
    assert_eq!(m.len(), 1, "{m:?}");
    m.remove(0)
}

#[test]
fn comma_is_or_and_repetition_is_and() {
    let parsed = ok("Patient", &[("family", "smith,jones"), ("family", "x")]);
    assert_eq!(parsed.query.filters.len(), 2);
    assert_eq!(parsed.query.filters[0].any_of.len(), 2);
    assert_eq!(parsed.query.filters[0].any_of[1].param, "family");
    assert_eq!(parsed.applied, pairs(&[("family", "smith,jones"), ("family", "x")]));
    assert_eq!(parsed.query.resource_type.as_deref(), Some("Patient"));
    // An escaped comma is part of the value.
    assert_eq!(matchers("Patient", "family", r"a\,b"), vec![Match::String { value: "a,b".into(), mode: StringMode::Prefix }]);
}

#[test]
fn strings_prefix_exact_contains() {
    assert_eq!(one("Patient", "family", "Núñez"), Match::String { value: "nunez".into(), mode: StringMode::Prefix });
    assert_eq!(one("Patient", "family:exact", "Núñez"), Match::String { value: "Núñez".into(), mode: StringMode::Exact });
    assert_eq!(one("Patient", "name:contains", "EZ"), Match::String { value: "ez".into(), mode: StringMode::Contains });
    assert_eq!(err("Patient", &[("family:text", "x")])[0].code, IssueType::Invalid);
}

#[test]
fn tokens_in_every_form() {
    let token = |system: TokenSystem, code: Option<&str>, negate: bool| Match::Token { system, code: code.map(str::to_string), negate };
    assert_eq!(one("Patient", "identifier", "123"), token(TokenSystem::Any, Some("123"), false));
    assert_eq!(one("Patient", "identifier", "urn:mrn|123"), token(TokenSystem::Is("urn:mrn".into()), Some("123"), false));
    assert_eq!(one("Patient", "identifier", "|123"), token(TokenSystem::NoSystem, Some("123"), false));
    assert_eq!(one("Patient", "identifier", "urn:mrn|"), token(TokenSystem::Is("urn:mrn".into()), None, false));
    assert_eq!(one("Patient", "gender:not", "male"), token(TokenSystem::Any, Some("male"), true));
    assert_eq!(one("Observation", "code:text", "Body Wéight"), Match::TokenText("body weight".into()));
    assert_eq!(one("Patient", "identifier", r"a\|b|c"), token(TokenSystem::Is("a|b".into()), Some("c"), false));
    assert_eq!(
        matchers("Observation", "code", "http://loinc.org|1,http://loinc.org|2").len(),
        2
    );
    assert_eq!(one("Patient", "_tag", "http://t|x"), token(TokenSystem::Is("http://t".into()), Some("x"), false));
    assert_eq!(err("Patient", &[("identifier", "a|b|c")])[0].code, IssueType::Invalid);
    assert_eq!(err("Patient", &[("identifier", "|")])[0].code, IssueType::Invalid);
}

#[test]
fn token_of_type_in_and_hierarchy_modifiers() {
    let parsed = ok("Patient", &[("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345")]);
    let condition = &parsed.query.filters[0].any_of[0];
    assert_eq!(condition.param, "identifier:of-type", "of-type values are indexed under their own parameter");
    assert_eq!(
        condition.matcher,
        tm(TokenSystem::Is("http://terminology.hl7.org/CodeSystem/v2-0203".into()), Some("MR|12345"), false)
    );
    assert_eq!(one("Patient", "identifier:of-type", "|MR|1"), tm(TokenSystem::NoSystem, Some("MR|1"), false));
    for bad in ["MR|1", "a|b|c|d", "s||1", "s|MR|"] {
        assert_eq!(err("Patient", &[("identifier:of-type", bad)])[0].code, IssueType::Invalid, "{bad}");
    }
    assert_eq!(
        one("Patient", "gender:in", "http://vs"),
        Match::InValueSet { value_set: "http://vs".into(), negate: false }
    );
    assert_eq!(
        one("Observation", "code:not-in", "ValueSet/vitals"),
        Match::InValueSet { value_set: "ValueSet/vitals".into(), negate: true }
    );
    assert_eq!(
        one("Condition", "code:below", "http://snomed.info/sct|404684003"),
        Match::Subsumption { system: "http://snomed.info/sct".into(), code: "404684003".into(), below: true }
    );
    assert_eq!(
        one("Condition", "code:above", "http://snomed.info/sct|1"),
        Match::Subsumption { system: "http://snomed.info/sct".into(), code: "1".into(), below: false }
    );
    assert_eq!(err("Condition", &[("code:below", "404684003")])[0].code, IssueType::Invalid, "a system is needed");
    assert_eq!(err("Condition", &[("code:below", "|1")])[0].code, IssueType::Invalid);
}

#[test]
fn references_by_id_type_and_url() {
    let reference = |t: Option<&str>, id: &str| Match::Reference { target_type: t.map(str::to_string), id: id.into() };
    assert_eq!(one("Observation", "subject", "Patient/123"), reference(Some("Patient"), "123"));
    assert_eq!(one("Observation", "subject", "123"), reference(None, "123"));
    assert_eq!(one("Observation", "subject:Patient", "123"), reference(Some("Patient"), "123"));
    assert_eq!(one("Observation", "subject", "Patient/123/_history/2"), reference(Some("Patient"), "123"));
    assert_eq!(
        one("Observation", "subject", "http://other.org/fhir/Patient/1"),
        Match::ReferenceUrl("http://other.org/fhir/Patient/1".into())
    );
    assert_eq!(
        one("QuestionnaireResponse", "questionnaire", "http://example.org/q|1.0"),
        Match::ReferenceUrl("http://example.org/q|1.0".into())
    );
    assert_eq!(err("Observation", &[("subject:Medication", "1")])[0].code, IssueType::Invalid);
    assert_eq!(err("Observation", &[("subject:Patient", "Group/1")])[0].code, IssueType::Invalid);
    assert_eq!(err("Observation", &[("subject", "Patient/bad id")])[0].code, IssueType::Invalid);
    assert_eq!(err("Observation", &[("subject", "patient/1")])[0].code, IssueType::Invalid);
    let parsed = ok("Observation", &[("subject:identifier", "urn:mrn|12345")]);
    let condition = &parsed.query.filters[0].any_of[0];
    assert_eq!(condition.param, "subject:identifier");
    assert_eq!(condition.matcher, Match::Token { system: TokenSystem::Is("urn:mrn".into()), code: Some("12345".into()), negate: false });
    assert_eq!(err("Observation", &[("subject:above", "Patient/1")])[0].code, IssueType::NotSupported);
    let chained = err("Observation", &[("subject.nonsense", "x")]);
    assert_eq!(chained[0].code, IssueType::Invalid);
    assert_eq!(chained[0].expression.as_deref(), Some("subject.nonsense"));
}

#[test]
fn dates_with_prefixes_and_precision() {
    let (low, high) = date_range("2024-03").unwrap();
    assert_eq!(one("Patient", "birthdate", "2024-03"), Match::Date { prefix: Prefix::Eq, low, high });
    assert_eq!(one("Patient", "birthdate", "ge2024-03"), Match::Date { prefix: Prefix::Ge, low, high });
    for (text, prefix) in [("ne", Prefix::Ne), ("gt", Prefix::Gt), ("lt", Prefix::Lt), ("le", Prefix::Le), ("sa", Prefix::Sa), ("eb", Prefix::Eb), ("ap", Prefix::Ap), ("eq", Prefix::Eq)] {
        assert!(matches!(one("Patient", "birthdate", &format!("{text}2024")), Match::Date { prefix: p, .. } if p == prefix));
    }
    // An unencoded '+' arrives as a space.
    let (low, _) = date_range("2024-03-01T10:00:00+01:00").unwrap();
    assert!(matches!(one("Encounter", "date", "lt2024-03-01T10:00:00 01:00"), Match::Date { low: l, .. } if l == low));
    assert_eq!(err("Patient", &[("birthdate", "2024-13")])[0].code, IssueType::Invalid);
    assert_eq!(err("Patient", &[("birthdate", "xx2024")])[0].code, IssueType::Invalid);
    assert_eq!(err("Patient", &[("birthdate:exact", "2024")])[0].code, IssueType::Invalid);
}

#[test]
fn last_updated_and_id() {
    let (low, high) = date_range("2024-01-01").unwrap();
    let parsed = ok("Patient", &[("_lastUpdated", "gt2024-01-01"), ("_id", "a,b")]);
    assert_eq!(parsed.query.filters[0].any_of[0].matcher, Match::LastUpdated { prefix: Prefix::Gt, low, high });
    assert_eq!(
        parsed.query.filters[1].any_of.iter().map(|c| c.matcher.clone()).collect::<Vec<_>>(),
        vec![Match::Id("a".into()), Match::Id("b".into())]
    );
    assert_eq!(err("Patient", &[("_id", "not an id!")])[0].code, IssueType::Invalid);
    assert_eq!(err("Patient", &[("_lastUpdated", "yesterday")])[0].code, IssueType::Invalid);
}

#[test]
fn numbers_and_quantities() {
    let (low, high) = decimal_range("0.25").unwrap();
    assert_eq!(one("RiskAssessment", "probability", "gt0.25"), Match::Number { prefix: Prefix::Gt, low, high });
    let (low, high) = decimal_range("5.4").unwrap();
    // UCUM units are searched in canonical form (grams here), among the
    // values indexed in canonical units.
    let parsed = ok("Observation", &[("value-quantity", "le5.4|http://unitsofmeasure.org|mg")]);
    assert_eq!(parsed.query.filters[0].any_of[0].param, "value-quantity:canonical");
    assert_eq!(ok("Observation", &[("value-quantity", "5.4")]).query.filters[0].any_of[0].param, "value-quantity");
    assert_eq!(
        ok("Observation", &[("value-quantity", "5.4|http://unitsofmeasure.org|Cel")]).query.filters[0].any_of[0].param,
        "value-quantity"
    );
    assert_eq!(
        one("Observation", "value-quantity", "le5.4|http://unitsofmeasure.org|mg"),
        Match::Quantity {
            prefix: Prefix::Le,
            low: 0.00535,
            high: 0.00545,
            system: Some("http://unitsofmeasure.org".into()),
            code: Some("g".into())
        }
    );
    // Units without a canonical form, and other systems, stay as written.
    assert_eq!(
        one("Observation", "value-quantity", "5.4|http://unitsofmeasure.org|Cel"),
        Match::Quantity { prefix: Prefix::Eq, low, high, system: Some("http://unitsofmeasure.org".into()), code: Some("Cel".into()) }
    );
    assert_eq!(
        one("Observation", "value-quantity", "5.4|http://other|mg"),
        Match::Quantity { prefix: Prefix::Eq, low, high, system: Some("http://other".into()), code: Some("mg".into()) }
    );
    assert_eq!(
        one("Observation", "value-quantity", "5.4||mg"),
        Match::Quantity { prefix: Prefix::Eq, low, high, system: None, code: Some("mg".into()) }
    );
    assert_eq!(one("Observation", "value-quantity", "5.4"), Match::Quantity { prefix: Prefix::Eq, low, high, system: None, code: None });
    assert_eq!(err("Observation", &[("value-quantity", "5.4|mg")])[0].code, IssueType::Invalid);
    assert_eq!(err("Observation", &[("value-quantity", "heavy")])[0].code, IssueType::Invalid);
    assert_eq!(err("RiskAssessment", &[("probability", "high")])[0].code, IssueType::Invalid);
}

#[test]
fn uris_with_below_and_above() {
    assert_eq!(one("ValueSet", "url", "http://x/vs"), Match::Uri { value: "http://x/vs".into(), mode: UriMode::Exact });
    assert_eq!(one("ValueSet", "url:below", "http://x/"), Match::Uri { value: "http://x/".into(), mode: UriMode::Below });
    assert_eq!(one("ValueSet", "url:above", "http://x/a/b"), Match::Uri { value: "http://x/a/b".into(), mode: UriMode::Above });
    assert_eq!(one("Patient", "_profile", "http://p"), Match::Uri { value: "http://p".into(), mode: UriMode::Exact });
}

#[test]
fn missing_on_every_type() {
    assert_eq!(one("Patient", "birthdate:missing", "true"), Match::Missing(true));
    assert_eq!(one("Patient", "family:missing", "false"), Match::Missing(false));
    assert_eq!(one("Observation", "subject:missing", "true"), Match::Missing(true));
    assert_eq!(err("Patient", &[("gender:missing", "maybe")])[0].code, IssueType::Invalid);
}

#[test]
fn result_parameters() {
    let parsed = ok(
        "Patient",
        &[("_count", "5000"), ("_sort", "-birthdate,family,_lastUpdated"), ("_total", "accurate"), ("_summary", "count"),
          ("_elements", "name, birthDate"), ("_format", "json"), ("_pretty", "true")],
    );
    assert_eq!(parsed.query.count, MAX_COUNT);
    assert_eq!(
        parsed.query.sort,
        vec![
            SortKey { param: "birthdate".into(), descending: true },
            SortKey { param: "family".into(), descending: false },
            SortKey { param: "_lastUpdated".into(), descending: false },
        ]
    );
    assert_eq!(parsed.query.total, TotalMode::Accurate);
    assert_eq!(parsed.summary.as_deref(), Some("count"));
    assert_eq!(parsed.elements, Some(vec!["name".to_string(), "birthDate".to_string()]));
    assert_eq!(parsed.applied.len(), 5, "_format and _pretty are not applied: {:?}", parsed.applied);
    assert_eq!(parsed.applied[0], ("_count".to_string(), "1000".to_string()));
    assert!(parsed.query.filters.is_empty());
    assert_eq!(ok("Patient", &[("_count", "0")]).query.count, 0);
    assert_eq!(ok("Patient", &[]).query.count, DEFAULT_COUNT);
    assert_eq!(ok("Patient", &[("_offset", "40")]).query.offset, 40);
    for bad in [("_count", "-1"), ("_count", "ten"), ("_sort", "nope"), ("_sort", "-"), ("_total", "all"), ("_summary", "yes"), ("_elements", ",")] {
        assert_eq!(err("Patient", &[bad])[0].code, IssueType::Invalid, "{bad:?}");
    }
    assert_eq!(err("Observation", &[("_sort", "code-value-quantity")])[0].code, IssueType::NotSupported);
}

#[test]
fn contained_and_contained_type() {
    let plain = ok("Patient", &[("_contained", "false"), ("_containedType", "container")]);
    assert_eq!(plain.applied.len(), 2);
    assert_eq!((plain.query.contained, plain.query.contained_type), (ContainedMode::No, ContainedType::Container));
    assert_eq!(ok("Patient", &[]).query.contained, ContainedMode::No);
    let only = ok("Medication", &[("_contained", "true"), ("code", "x"), ("_containedType", "contained")]);
    assert_eq!((only.query.contained, only.query.contained_type), (ContainedMode::Only, ContainedType::Contained));
    assert_eq!(only.applied.len(), 3);
    let both = ok("Medication", &[("_contained", "both")]);
    assert_eq!((both.query.contained, both.query.contained_type), (ContainedMode::Both, ContainedType::Container));
    // `_containedType` alone changes nothing that is searched.
    assert_eq!(ok("Medication", &[("_containedType", "contained")]).query.contained, ContainedMode::No);
    for bad in [("_contained", "maybe"), ("_contained", "TRUE"), ("_containedType", "both"), ("_containedType", "")] {
        assert_eq!(err("Patient", &[bad])[0].code, IssueType::Invalid, "{bad:?}");
    }
    // Sorting containers of any type by a parameter, or every type at once.
    let issues = err("Medication", &[("_contained", "true"), ("_sort", "code")]);
    assert_eq!((issues[0].code, issues[0].expression.as_deref()), (IssueType::NotSupported, Some("_contained")));
    assert!(ok("Medication", &[("_contained", "both"), ("_sort", "-_lastUpdated,_id")]).query.contained == ContainedMode::Both);
    let sorted = ok("Medication", &[("_contained", "true"), ("_containedType", "contained"), ("_sort", "code")]);
    assert_eq!(sorted.query.sort.len(), 1);
    let issues = parse(&Registry::core(), None, &pairs(&[("_contained", "true")]), false).unwrap_err();
    assert_eq!(issues[0].code, IssueType::NotSupported);
    let typed = parse(&Registry::core(), None, &pairs(&[("_contained", "true"), ("_type", "Medication")]), false).unwrap();
    assert_eq!(typed.query.contained, ContainedMode::Only);
    // Lenient: the search goes on without `_contained`.
    let lenient = parse(&Registry::core(), Some("Medication"), &pairs(&[("_contained", "true"), ("_sort", "code")]), true).unwrap();
    assert_eq!(lenient.query.contained, ContainedMode::No);
    assert_eq!(lenient.ignored, vec!["_contained"]);
    assert_eq!(lenient.applied, pairs(&[("_sort", "code")]));
}

#[test]
fn unknown_and_unsupported_parameters_strict_and_lenient() {
    let issues = err("Patient", &[("nonsense", "1"), ("family", "ok"), ("_list", "x"), ("_has:Observation:nonsense:code", "x")]);
    assert_eq!(issues.len(), 3, "every problem is reported: {issues:?}");
    assert_eq!(issues[0].code, IssueType::Invalid);
    assert_eq!(issues[0].expression.as_deref(), Some("nonsense"));
    assert_eq!(issues[1].code, IssueType::NotSupported);
    assert_eq!(issues[2].code, IssueType::Invalid);
    assert!(issues.iter().all(|i| !i.diagnostics.contains("ok")), "values are not echoed");

    let parsed = parse(&Registry::core(), 
        Some("Patient"),
        &pairs(&[("nonsense", "1"), ("family", "ok"), ("birthdate", "garbage"), ("family:fuzzy", "x")]),
        true,
    )
    .unwrap();
    assert_eq!(parsed.ignored, vec!["nonsense", "birthdate", "family:fuzzy"]);
    assert_eq!(parsed.applied, pairs(&[("family", "ok")]));
    assert_eq!(parsed.query.filters.len(), 1);

    assert_eq!(err("Observation", &[("code-value-quantity", "a$b")])[0].code, IssueType::Invalid);
    assert_eq!(err("Patient", &[("_filter", "x")])[0].code, IssueType::NotSupported);
    assert_eq!(err("Patient", &[("family", "")])[0].code, IssueType::Invalid);
    assert_eq!(err("Patient", &[("family", "a,,b")])[0].code, IssueType::Invalid);
}

#[test]
fn system_search_uses_common_parameters_and_type() {
    let parsed = parse(&Registry::core(), None, &pairs(&[("_type", "Patient"), ("_tag", "x")]), false).unwrap();
    assert_eq!(parsed.query.resource_type.as_deref(), Some("Patient"));
    assert_eq!(parsed.query.filters.len(), 1);
    assert_eq!(parse(&Registry::core(), None, &pairs(&[("family", "x")]), false).unwrap_err()[0].code, IssueType::Invalid);
    assert_eq!(parse(&Registry::core(), None, &pairs(&[("_type", "Patient,Observation")]), false).unwrap_err()[0].code, IssueType::NotSupported);
    assert_eq!(parse(&Registry::core(), None, &pairs(&[("_type", "patient")]), false).unwrap_err()[0].code, IssueType::Invalid);
}

#[test]
fn never_panics_on_arbitrary_parameters() {
    use proptest::prelude::*;
    proptest!(|(name in "[a-z_:.\\-A-Z]{0,16}", value in "[ -~]{0,24}", lenient in any::<bool>())| {
        let _ = parse(&Registry::core(), Some("Observation"), &[(name.clone(), value.clone())], lenient);
        let _ = parse(&Registry::core(), None, &[(name, value)], lenient);
    });
}

#[test]
fn composites_split_on_dollar_and_parse_each_component() {
    let (low, high) = decimal_range("100").unwrap();
    assert_eq!(
        one("Observation", "code-value-quantity", "http://loinc.org|8480-6$gt100"),
        Match::Composite(vec![
            tm(TokenSystem::Is("http://loinc.org".into()), Some("8480-6"), false),
            Match::Quantity { prefix: Prefix::Gt, low, high, system: None, code: None },
        ])
    );
    assert_eq!(
        one("Observation", "component-code-value-concept", r"http://loinc.org|8480-6$http://s|a\$b"),
        Match::Composite(vec![
            tm(TokenSystem::Is("http://loinc.org".into()), Some("8480-6"), false),
            tm(TokenSystem::Is("http://s".into()), Some("a$b"), false),
        ]),
        "an escaped dollar belongs to the value"
    );
    assert_eq!(matchers("Group", "characteristic-value", "gender$male,age$adult").len(), 2, "comma is OR");
    let (low, high) = date_range("2024-03").unwrap();
    assert_eq!(
        one("Observation", "code-value-date", "1234$ge2024-03"),
        Match::Composite(vec![tm(TokenSystem::Any, Some("1234"), false), Match::Date { prefix: Prefix::Ge, low, high }])
    );
    assert_eq!(ok("Observation", &[("code-value-quantity:missing", "true")]).query.filters[0].any_of[0].matcher, Match::Missing(true));
    for bad in ["8480-6", "a$b$c", "$gt100", "a$", "a$heavy"] {
        assert_eq!(err("Observation", &[("code-value-quantity", bad)])[0].code, IssueType::Invalid, "{bad}");
    }
    assert_eq!(err("Observation", &[("code-value-quantity:exact", "a$1")])[0].code, IssueType::Invalid);
}

#[test]
fn ap_widens_numbers_and_quantities_by_ten_percent() {
    let Match::Number { prefix: Prefix::Ap, low, high } = one("RiskAssessment", "probability", "ap100") else { panic!() };
    assert!((low - 90.0).abs() < 1e-9 && (high - 110.0).abs() < 1e-9, "{low} {high}");
    // The precision of the value, when wider than 10%.
    let Match::Number { low, high, .. } = one("RiskAssessment", "probability", "ap1") else { panic!() };
    assert_eq!((low, high), (0.5, 1.5));
    let Match::Quantity { low, high, .. } = one("Observation", "value-quantity", "ap100||mg") else { panic!() };
    assert!((low - 90.0).abs() < 1e-9 && (high - 110.0).abs() < 1e-9, "{low} {high}");
    let Match::Quantity { low, high, .. } = one("Observation", "value-quantity", "ap100|http://unitsofmeasure.org|mg") else {
        panic!()
    };
    assert!((low - 0.09).abs() < 1e-12 && (high - 0.11).abs() < 1e-12, "in grams: {low} {high}");
    let Match::Number { low, high, .. } = one("RiskAssessment", "probability", "100") else { panic!() };
    assert_eq!((low, high), (99.5, 100.5), "other prefixes keep the precision range");
}

#[test]
fn combo_composites_search_the_observation_and_its_components() {
    let parsed = ok("Observation", &[("combo-code-value-quantity", "http://loinc.org|8480-6$gt140,x$5|http://unitsofmeasure.org|mg")]);
    let params: Vec<&str> = parsed.query.filters[0].any_of.iter().map(|c| c.param.as_str()).collect();
    assert_eq!(params, [
        "code-value-quantity",
        "component-code-value-quantity",
        "code-value-quantity:canonical",
        "component-code-value-quantity:canonical"
    ]);
    let parsed = ok("Observation", &[("combo-code-value-concept:missing", "false")]);
    assert_eq!(parsed.query.filters.len(), 1);
    assert_eq!(parsed.query.filters[0].any_of.len(), 2);
    // Missing from both: two filters.
    let parsed = ok("Observation", &[("combo-code-value-concept:missing", "true")]);
    let filters: Vec<(&str, &Match)> =
        parsed.query.filters.iter().map(|f| (f.any_of[0].param.as_str(), &f.any_of[0].matcher)).collect();
    assert_eq!(filters, [("code-value-concept", &Match::Missing(true)), ("component-code-value-concept", &Match::Missing(true))]);
    assert_eq!(parsed.applied.len(), 1);
}

#[test]
fn combo_tokens_and_quantities_search_the_observation_and_its_components() {
    let params = |name: &str, value: &str| -> Vec<String> {
        ok("Observation", &[(name, value)]).query.filters[0].any_of.iter().map(|c| c.param.clone()).collect()
    };
    assert_eq!(params("combo-code", "http://loinc.org|8480-6"), ["code", "component-code"]);
    assert_eq!(params("combo-code:text", "systolic"), ["code", "component-code"]);
    assert_eq!(params("combo-value-quantity", "gt5"), ["value-quantity", "component-value-quantity"]);
    assert_eq!(
        params("combo-value-quantity", "5|http://unitsofmeasure.org|mg"),
        ["value-quantity:canonical", "component-value-quantity:canonical"]
    );
    // A negation holds for both: two filters, each of one parameter.
    let parsed = ok("Observation", &[("combo-code:not", "http://loinc.org|8480-6")]);
    let filters: Vec<(&str, &Match)> =
        parsed.query.filters.iter().map(|f| (f.any_of[0].param.as_str(), &f.any_of[0].matcher)).collect();
    let not = tm(TokenSystem::Is("http://loinc.org".into()), Some("8480-6"), true);
    assert_eq!(filters, [("code", &not), ("component-code", &not)]);
    // Several negated codes are not two filters' worth: refused, not half answered.
    assert_eq!(err("Observation", &[("combo-code:not", "a,b")])[0].code, IssueType::NotSupported);
    assert_eq!(err("DiagnosticReport", &[("result.combo-code:not", "a")])[0].code, IssueType::NotSupported);
    assert_eq!(err("Observation", &[("_sort", "combo-code")])[0].code, IssueType::NotSupported);
}

fn tm(system: TokenSystem, code: Option<&str>, negate: bool) -> Match {
    Match::Token { system, code: code.map(str::to_string), negate }
}

#[test]
fn text_and_content_are_full_text_conditions() {
    let phrases = |words: &[&str], prefix: bool| TextPhrase { words: words.iter().map(|w| w.to_string()).collect(), prefix };
    let parsed = parse(
        &Registry::core(),
        Some("Condition"),
        &pairs(&[("_text", "Diabètes \"Type 2\",asthma OR copd*"), ("_content", "Smith"), ("code", "x")]),
        false,
    )
    .unwrap();
    let filters = &parsed.query.filters;
    assert_eq!(filters.len(), 3);
    let text: Vec<&Match> = filters[0].any_of.iter().map(|c| &c.matcher).collect();
    assert_eq!(text, vec![
        &Match::Text { field: TextField::Narrative, phrases: vec![phrases(&["diabetes"], false), phrases(&["type", "2"], false)] },
        &Match::Text { field: TextField::Narrative, phrases: vec![phrases(&["asthma"], false)] },
        &Match::Text { field: TextField::Narrative, phrases: vec![phrases(&["copd"], true)] },
    ]);
    assert_eq!(filters[1].any_of[0].matcher, Match::Text { field: TextField::Content, phrases: vec![phrases(&["smith"], false)] });

    // System search, and an escaped comma is no OR.
    let parsed = parse(&Registry::core(), None, &pairs(&[("_text", "a\\,b")]), false).unwrap();
    assert_eq!(parsed.query.filters[0].any_of.len(), 1);

    assert_eq!(err("Patient", &[("_text", "!!")])[0].code, IssueType::Invalid);
    assert_eq!(err("Patient", &[("_content", "a,")])[0].code, IssueType::Invalid);
    assert_eq!(err("Patient", &[("_text:exact", "a")])[0].code, IssueType::NotSupported);
    // Bundle, Binary and Parameters are no DomainResources: no narrative.
    assert_eq!(err("Binary", &[("_text", "a")])[0].code, IssueType::Invalid);
    assert!(parse(&Registry::core(), Some("Binary"), &pairs(&[("_content", "a")]), false).is_ok());
}
