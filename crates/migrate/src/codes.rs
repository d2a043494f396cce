//! Checks of standard codes during conversion: a code that claims a
//! standard system must be a code of that system, or it is kept as a local
//! code with its text and reported (never dropped).
//!
//! - ICD-10-CM: against the CDC's code list (`data/icd10cm-2026-04.txt.gz`,
//!   the April 2026 release: every category and code, written without the
//!   dot; public domain, from <https://www.cdc.gov/nchs/icd/icd-10-cm/files.html>
//!   as packaged by the PyPI project `simple-icd-10-cm` 1.5.0). A category
//!   that has subcodes exists but is not billable: accepted with a warning.
//! - LOINC: `NNNNN-C`, with the mod 10 check digit LOINC defines
//!   (<https://loinc.org/kb/users-guide/calculating-mod-10-check-digits/>).
//! - SNOMED CT: an SCTID of 6 to 18 digits whose partition identifier names
//!   a concept (`00`, or `10` in an extension) and whose last digit is its
//!   Verhoeff check digit (SNOMED CT Technical Implementation Guide, 6.1).
//! - RxNorm: an RXCUI, 1 to 8 digits (no list: RxNorm's full content is
//!   distributed under the UMLS licence, per monthly release).
//! - CVX: 1 to 3 digits. The CDC's CVX code set is public domain and small,
//!   but no package of the registries Hearth builds from ships it current:
//!   the PyPI packages that handle CVX check its format as well, and HL7
//!   v2.8.1 table 0292 (in `hl7apy`) stops at code 122, without the
//!   COVID-19 vaccines (207 and up), so checking against it would make
//!   current codes local. A list is to come as a data file with its source
//!   and date, as ICD-10-CM's.
//! - UCUM units: parsed by Hearth's UCUM canonicaliser
//!   ([`fhir::search::ucum`]); the non-linear units it does not convert
//!   (`Cel`, `[degF]`, `[pH]`) are known too.
//!
//! These checks are hand-written: each is a few lines over a published
//! algorithm or list, and no crate does them.

use std::collections::HashSet;
use std::io::Read;
use std::sync::OnceLock;

/// ICD-10-CM.
pub const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
/// LOINC.
pub const LOINC: &str = "http://loinc.org";
/// SNOMED CT.
pub const SNOMED: &str = "http://snomed.info/sct";
/// RxNorm.
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
/// CVX (vaccines administered).
pub const CVX: &str = "http://hl7.org/fhir/sid/cvx";

/// What a standard code's check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A code of the system (or a system Hearth does not check).
    Valid,
    /// A code of the system that should be looked at (e.g. an ICD-10-CM
    /// category that is not billable); the text says why.
    Warning(String),
    /// Not a code of the system; the text says why.
    Invalid(String),
}

/// Checks `code` against `system`.
pub fn check(system: &str, code: &str) -> Check {
    match system {
        ICD10CM => icd10cm(code),
        LOINC => loinc(code),
        SNOMED => snomed(code),
        RXNORM => digits(code, 1, 8, "an RxNorm RXCUI is 1 to 8 digits"),
        CVX => digits(code, 1, 3, "a CVX code is 1 to 3 digits"),
        _ => Check::Valid,
    }
}

/// Whether `code` is a UCUM unit code Hearth understands.
pub fn is_ucum(code: &str) -> bool {
    matches!(code, "Cel" | "[degF]" | "[pH]") || fhir::search::ucum::canonical(code).is_some()
}

fn digits(code: &str, min: usize, max: usize, rule: &str) -> Check {
    if (min..=max).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) {
        Check::Valid
    } else {
        Check::Invalid(rule.to_owned())
    }
}

/// The CDC list: every category and code, without dots.
fn icd10cm_list() -> &'static HashSet<String> {
    static LIST: OnceLock<HashSet<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        let packed: &[u8] = include_bytes!("../data/icd10cm-2026-04.txt.gz");
        let mut text = String::new();
        // The list is compiled in: failing to unpack it is a build defect
        // that every conversion test would show.
        if flate2::read::GzDecoder::new(packed).read_to_string(&mut text).is_err() {
            text.clear();
        }
        text.lines().map(str::to_owned).collect()
    })
}

fn icd10cm(code: &str) -> Check {
    let (head, tail) = code.split_once('.').unwrap_or((code, ""));
    let shaped = head.len() == 3
        && code.contains('.') != tail.is_empty()
        && tail.len() <= 4
        && code.bytes().filter(|b| *b != b'.').all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    if !shaped {
        return Check::Invalid("an ICD-10-CM code is a letter, two characters, and up to four more after a dot".into());
    }
    let bare = format!("{head}{tail}");
    let list = icd10cm_list();
    if !list.contains(&bare) {
        return Check::Invalid("not in the ICD-10-CM code list (CDC, April 2026 release)".into());
    }
    let has_children = (b'0'..=b'9').chain(b'A'..=b'Z').any(|c| list.contains(&format!("{bare}{}", c as char)));
    if has_children {
        Check::Warning(format!("{code} is an ICD-10-CM category with subcodes: not billable as it is"))
    } else {
        Check::Valid
    }
}

fn loinc(code: &str) -> Check {
    let rule = "a LOINC code is 1 to 7 digits, a hyphen and its check digit";
    let Some((number, check)) = code.split_once('-') else {
        return Check::Invalid(rule.into());
    };
    if !(1..=7).contains(&number.len())
        || !number.bytes().all(|b| b.is_ascii_digit())
        || check.len() != 1
        || !check.bytes().all(|b| b.is_ascii_digit())
    {
        return Check::Invalid(rule.into());
    }
    let expected = loinc_check_digit(number);
    if check.as_bytes()[0] - b'0' == expected {
        Check::Valid
    } else {
        Check::Invalid(format!("LOINC check digit of {number} is {expected}, not {check}"))
    }
}

/// LOINC's mod 10 check digit: digits in odd positions from the right are
/// doubled, the digits of the results and of the other positions summed.
fn loinc_check_digit(number: &str) -> u8 {
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let twice = d * 2;
                twice / 10 + twice % 10
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

/// Verhoeff's permutation table: row `i` is the permutation
/// (0 1 5 8 9 4 2 7)(3 6) applied `i` times.
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// Whether the last digit of `number` is its Verhoeff check digit.
fn verhoeff_valid(number: &str) -> bool {
    let mut c = 0u8;
    for (i, b) in number.bytes().rev().enumerate() {
        c = VERHOEFF_D[c as usize][VERHOEFF_P[i % 8][(b - b'0') as usize] as usize];
    }
    c == 0
}

fn snomed(code: &str) -> Check {
    if !(6..=18).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) || code.starts_with('0') {
        return Check::Invalid("a SNOMED CT identifier is 6 to 18 digits".into());
    }
    let partition = &code[code.len() - 3..code.len() - 1];
    if partition != "00" && partition != "10" {
        return Check::Invalid(format!("partition {partition} of a SNOMED CT identifier does not name a concept"));
    }
    if verhoeff_valid(code) {
        Check::Valid
    } else {
        Check::Invalid("the SNOMED CT check digit (Verhoeff) does not match".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icd10cm_codes_are_checked_against_the_cdc_list() {
        assert_eq!(check(ICD10CM, "E11.9"), Check::Valid);
        assert_eq!(check(ICD10CM, "I10"), Check::Valid);
        assert_eq!(check(ICD10CM, "J45.909"), Check::Valid);
        assert!(matches!(check(ICD10CM, "E11"), Check::Warning(_)), "a category with subcodes");
        assert!(matches!(check(ICD10CM, "E11.99"), Check::Invalid(_)), "shaped like a code, not in the list");
        assert!(matches!(check(ICD10CM, "LOC-77"), Check::Invalid(_)));
        assert!(matches!(check(ICD10CM, "E119"), Check::Invalid(_)), "the dot is required after three characters");
        assert!(icd10cm_list().len() > 90_000);
    }

    #[test]
    fn verhoeff_rows_are_powers_of_the_first_permutation() {
        for i in 1..8 {
            for x in 0..10 {
                assert_eq!(VERHOEFF_P[i][x], VERHOEFF_P[1][VERHOEFF_P[i - 1][x] as usize], "row {i}, column {x}");
            }
        }
    }

    #[test]
    fn loinc_check_digits() {
        for good in ["2345-7", "4548-4", "8480-6", "8462-4", "8867-4", "29463-7", "8302-2", "8310-5", "718-7"] {
            assert_eq!(check(LOINC, good), Check::Valid, "{good}");
        }
        assert!(matches!(check(LOINC, "2345-8"), Check::Invalid(m) if m.contains("check digit of 2345 is 7")));
        assert!(matches!(check(LOINC, "GLU"), Check::Invalid(_)));
        assert!(matches!(check(LOINC, "12345678-1"), Check::Invalid(_)));
    }

    #[test]
    fn snomed_identifiers_have_a_concept_partition_and_a_verhoeff_digit() {
        for good in ["44054006", "38341003", "195967001", "73211009", "91936005", "300916003", "111088007", "387458008", "387406002", "227493005"] {
            assert_eq!(check(SNOMED, good), Check::Valid, "{good}");
        }
        assert!(matches!(check(SNOMED, "44054007"), Check::Invalid(m) if m.contains("Verhoeff")));
        assert!(matches!(check(SNOMED, "44054016"), Check::Invalid(m) if m.contains("partition")));
        assert!(matches!(check(SNOMED, "123"), Check::Invalid(_)));
    }

    #[test]
    fn rxnorm_cvx_and_units() {
        assert_eq!(check(RXNORM, "860975"), Check::Valid);
        assert!(matches!(check(RXNORM, "MET500"), Check::Invalid(_)));
        assert_eq!(check(CVX, "08"), Check::Valid);
        assert_eq!(check(CVX, "140"), Check::Valid);
        assert!(matches!(check(CVX, "FLU"), Check::Invalid(_)));
        assert_eq!(check("urn:hearth:local:x", "anything"), Check::Valid);
        assert!(is_ucum("mg/dL") && is_ucum("[degF]") && is_ucum("mm[Hg]") && !is_ucum("mg/dl/xyz("));
    }
}
