//! Lexical checks of FHIR R4 primitive values (<http://hl7.org/fhir/R4/datatypes.html#primitive>),
//! hand-written for speed; the crate's tests compare them with the regexes that the core
//! StructureDefinitions declare (`crates/fhir/definitions/structures.json`).
//!
//! Each check returns the reason a value is invalid. Reasons never quote the value.

use crate::definitions::Primitive;
use serde_json::Value;

/// Strings are limited to 1 MiB characters (datatypes.html#string); checked in bytes as a
/// cheap upper bound first.
const MAX_STRING_CHARS: usize = 1024 * 1024;

/// The outcome of checking one value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finding {
    Ok,
    /// An error: the value does not conform.
    Invalid(&'static str),
}

/// Checks a JSON value against primitive type `p` (JSON representation from
/// <http://hl7.org/fhir/R4/json.html#primitive>: booleans and numbers are JSON
/// booleans and numbers, everything else a JSON string).
pub(crate) fn check(p: Primitive, value: &Value) -> Finding {
    match p {
        Primitive::Boolean => match value {
            Value::Bool(_) => Finding::Ok,
            _ => Finding::Invalid("a boolean must be the JSON literal true or false"),
        },
        Primitive::Integer | Primitive::PositiveInt | Primitive::UnsignedInt => match value {
            Value::Number(n) => integer(p, n),
            _ => Finding::Invalid("an integer must be a JSON number"),
        },
        // Any JSON number matches the decimal regex, which is the JSON number grammar.
        Primitive::Decimal => match value {
            Value::Number(_) => Finding::Ok,
            _ => Finding::Invalid("a decimal must be a JSON number"),
        },
        _ => match value {
            Value::String(s) => string_format(p, s),
            _ => Finding::Invalid("this primitive must be a JSON string"),
        },
    }
}

fn integer(p: Primitive, n: &serde_json::Number) -> Finding {
    // With arbitrary_precision, as_i64 parses the written text: `1.0` and `1e2` are not integers.
    let Some(v) = n.as_i64() else {
        return Finding::Invalid("not an integer, or out of the 32-bit range");
    };
    let min = match p {
        Primitive::PositiveInt => 1,
        Primitive::UnsignedInt => 0,
        _ => i64::from(i32::MIN),
    };
    if v < min || v > i64::from(i32::MAX) {
        return Finding::Invalid(match p {
            Primitive::PositiveInt => "a positiveInt must be between 1 and 2147483647",
            Primitive::UnsignedInt => "an unsignedInt must be between 0 and 2147483647",
            _ => "an integer must be a 32-bit signed value",
        });
    }
    Finding::Ok
}

/// Java's `\s`, which the spec's regexes mean: space, tab, LF, VT, FF, CR. All are ASCII,
/// so scanning the UTF-8 bytes is exact (multi-byte sequences hold no ASCII bytes).
fn is_regex_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Checks the string forms of the primitives.
pub(crate) fn string_format(p: Primitive, s: &str) -> Finding {
    // json.html#primitive: a string value is never empty; it is absent, or holds at least one
    // character of non-whitespace content.
    if s.is_empty() {
        return Finding::Invalid("empty strings are not allowed: omit the element instead");
    }
    if p != Primitive::Xhtml && s.bytes().all(is_regex_space) {
        return Finding::Invalid("a value must hold more than whitespace");
    }
    let ok = match p {
        Primitive::String | Primitive::Markdown => return text(s),
        Primitive::Code => code(s),
        Primitive::Id => s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
        Primitive::Uri | Primitive::Url | Primitive::Canonical => !s.bytes().any(is_regex_space),
        Primitive::Oid => oid(s),
        Primitive::Uuid => uuid(s),
        Primitive::Base64Binary => base64(s),
        Primitive::Date => date_time(s, DateForm::Date),
        Primitive::DateTime => date_time(s, DateForm::DateTime),
        Primitive::Instant => date_time(s, DateForm::Instant),
        Primitive::Time => time(s.as_bytes()).is_some_and(|rest| rest.is_empty()),
        Primitive::Xhtml => return super::narrative::check_div(s),
        Primitive::Boolean | Primitive::Integer | Primitive::PositiveInt | Primitive::UnsignedInt | Primitive::Decimal => {
            false
        }
    };
    if ok { Finding::Ok } else { Finding::Invalid(reason(p)) }
}

fn reason(p: Primitive) -> &'static str {
    match p {
        Primitive::Code => "a code has no leading, trailing or repeated whitespace",
        Primitive::Id => "an id is 1-64 characters of A-Z a-z 0-9 - .",
        Primitive::Uri | Primitive::Url | Primitive::Canonical => "a uri contains no whitespace",
        Primitive::Oid => "an oid is urn:oid: followed by a dotted number starting 0, 1 or 2",
        Primitive::Uuid => "a uuid is urn:uuid: followed by a lower-case 8-4-4-4-12 hex uuid",
        Primitive::Base64Binary => "not valid base64",
        Primitive::Date => "a date is YYYY, YYYY-MM or YYYY-MM-DD, and a real calendar date",
        Primitive::DateTime => {
            "a dateTime is YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss)(Z|+hh:mm|-hh:mm) with a time zone"
        }
        Primitive::Instant => "an instant is YYYY-MM-DDThh:mm:ss(.sss)(Z|+hh:mm|-hh:mm)",
        Primitive::Time => "a time is hh:mm:ss(.sss)",
        _ => "invalid value",
    }
}

/// string and markdown: `[ \r\n\t\S]+`, at most 1 MiB; other control characters SHOULD NOT appear.
fn text(s: &str) -> Finding {
    if s.len() > MAX_STRING_CHARS && s.chars().count() > MAX_STRING_CHARS {
        return Finding::Invalid("strings are limited to 1 MiB characters");
    }
    // datatypes.html#string: "Strings SHALL NOT contain Unicode character points
    // below 32, except for u0009 (horizontal tab), u0010 (carriage return) and
    // u0013 (line feed)". A NUL would also be refused by PostgreSQL text columns.
    for b in s.bytes() {
        if b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r') {
            return Finding::Invalid("strings may not contain control characters other than tab, CR and LF");
        }
    }
    Finding::Ok
}

/// `[^\s]+(\s[^\s]+)*`
fn code(s: &str) -> bool {
    let mut prev_space = true; // so a leading space fails
    for b in s.bytes() {
        let space = is_regex_space(b);
        if space && prev_space {
            return false;
        }
        prev_space = space;
    }
    !prev_space
}

/// `urn:oid:[0-2](\.(0|[1-9][0-9]*))+`
fn oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else { return false };
    let mut parts = rest.split('.');
    if !matches!(parts.next(), Some("0" | "1" | "2")) {
        return false;
    }
    let mut count = 0;
    for part in parts {
        count += 1;
        let b = part.as_bytes();
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
            return false;
        }
    }
    count >= 1
}

/// `urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
pub(crate) fn uuid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:uuid:") else { return false };
    let b = rest.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

/// `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`: groups of four base64 characters, whitespace between
/// groups. Padding is also required to be at the end, as base64 (RFC 4648) requires.
fn base64(s: &str) -> bool {
    let mut count = 0usize;
    let mut padding = 0usize;
    let mut in_group = 0usize;
    for c in s.bytes() {
        if is_regex_space(c) {
            if in_group != 0 {
                return false; // whitespace inside a group of four
            }
            continue;
        }
        match c {
            b'=' => padding += 1,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' if padding == 0 => {}
            _ => return false,
        }
        count += 1;
        in_group = (in_group + 1) % 4;
    }
    count > 0 && in_group == 0 && padding <= 2
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DateForm {
    Date,
    DateTime,
    Instant,
}

fn digits(b: &[u8], n: usize) -> Option<(u32, &[u8])> {
    if b.len() < n || !b[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = b[..n].iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    Some((v, &b[n..]))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        _ => 28,
    }
}

/// date, dateTime and instant: the spec's regexes, and (datatypes.html#date) the date must be
/// a real calendar date, so `2021-02-30` is rejected although the regex would pass it.
fn date_time(s: &str, form: DateForm) -> bool {
    let b = s.as_bytes();
    let Some((year, rest)) = digits(b, 4) else { return false };
    if year == 0 {
        return false;
    }
    if rest.is_empty() {
        return form != DateForm::Instant;
    }
    let Some((month, rest)) = rest.strip_prefix(b"-").and_then(|r| digits(r, 2)) else { return false };
    if !(1..=12).contains(&month) {
        return false;
    }
    if rest.is_empty() {
        return form != DateForm::Instant;
    }
    let Some((day, rest)) = rest.strip_prefix(b"-").and_then(|r| digits(r, 2)) else { return false };
    if day < 1 || day > days_in_month(year, month) {
        return false;
    }
    if rest.is_empty() {
        return form != DateForm::Instant;
    }
    if form == DateForm::Date {
        return false;
    }
    let Some(rest) = rest.strip_prefix(b"T").and_then(time) else { return false };
    zone(rest)
}

/// `([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?`; returns what follows.
fn time(b: &[u8]) -> Option<&[u8]> {
    let (h, rest) = digits(b, 2)?;
    let (m, rest) = digits(rest.strip_prefix(b":")?, 2)?;
    let (sec, mut rest) = digits(rest.strip_prefix(b":")?, 2)?;
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    Some(rest)
}

/// `Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)`
fn zone(b: &[u8]) -> bool {
    if b == b"Z" {
        return true;
    }
    let Some(rest) = b.strip_prefix(b"+").or_else(|| b.strip_prefix(b"-")) else { return false };
    let Some((h, rest)) = digits(rest, 2) else { return false };
    let Some((m, rest)) = rest.strip_prefix(b":").and_then(|r| digits(r, 2)) else { return false };
    rest.is_empty() && m <= 59 && (h <= 13 || (h == 14 && m == 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(p: Primitive, v: Value) -> bool {
        check(p, &v) == Finding::Ok
    }

    #[test]
    fn numbers_and_booleans() {
        assert!(ok(Primitive::Boolean, json!(true)));
        assert!(!ok(Primitive::Boolean, json!("true")));
        assert!(ok(Primitive::Integer, json!(-2147483648i64)));
        assert!(!ok(Primitive::Integer, json!(2147483648i64)));
        assert!(!ok(Primitive::Integer, serde_json::from_str::<Value>("1.0").unwrap()));
        assert!(!ok(Primitive::Integer, serde_json::from_str::<Value>("1e2").unwrap()));
        assert!(!ok(Primitive::PositiveInt, json!(0)));
        assert!(ok(Primitive::UnsignedInt, json!(0)));
        assert!(!ok(Primitive::UnsignedInt, json!(-1)));
        assert!(ok(Primitive::Decimal, serde_json::from_str::<Value>("1.50").unwrap()));
        assert!(!ok(Primitive::Decimal, json!("1.5")));
    }

    #[test]
    fn dates_and_times() {
        for good in ["2018", "1973-06", "1905-08-23", "2000-02-29", "2015-02-07T13:28:17.239+02:00", "2017-01-01T00:00:00Z"] {
            assert!(ok(Primitive::DateTime, json!(good)), "{good}");
        }
        for bad in ["0000", "2018-13", "2018-02-29", "2015-02-07T13:28:17", "2015-02-07T24:00:00Z", "2015-02-07T13:28Z", "18-01-01", "2015-02-07T13:28:17+14:30"] {
            assert!(!ok(Primitive::DateTime, json!(bad)), "{bad}");
        }
        assert!(ok(Primitive::Date, json!("1905-08-23")));
        assert!(!ok(Primitive::Date, json!("1905-08-23T10:00:00Z")));
        assert!(ok(Primitive::Instant, json!("2015-02-07T13:28:17.239+02:00")));
        assert!(!ok(Primitive::Instant, json!("2015-02-07")));
        assert!(ok(Primitive::Time, json!("23:59:60.5")));
        assert!(!ok(Primitive::Time, json!("24:00:00")));
    }

    #[test]
    fn strings_codes_ids_and_uris() {
        assert!(!ok(Primitive::String, json!("")));
        assert!(!ok(Primitive::String, json!("   ")));
        assert!(ok(Primitive::String, json!(" padded text ")));
        assert!(!ok(Primitive::String, json!("a\u{0B}b")));
        assert!(matches!(check(Primitive::String, &json!("a\u{01}b")), Finding::Invalid(_)));
        assert!(matches!(check(Primitive::String, &json!("a\u{00}b")), Finding::Invalid(_)));
        assert!(ok(Primitive::Code, json!("in progress")));
        assert!(!ok(Primitive::Code, json!(" final")));
        assert!(!ok(Primitive::Code, json!("in  progress")));
        assert!(ok(Primitive::Id, json!("a-B.9")));
        assert!(!ok(Primitive::Id, json!("a_b")));
        assert!(!ok(Primitive::Id, json!("x".repeat(65))));
        assert!(ok(Primitive::Uri, json!("http://example.org/a|1.0")));
        assert!(!ok(Primitive::Uri, json!("http://example.org/a b")));
        assert!(ok(Primitive::Oid, json!("urn:oid:1.2.840.10008")));
        assert!(!ok(Primitive::Oid, json!("urn:oid:3.1")));
        assert!(!ok(Primitive::Oid, json!("urn:oid:1")));
        assert!(ok(Primitive::Uuid, json!("urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7")));
        assert!(!ok(Primitive::Uuid, json!("urn:uuid:53FEFA32-fcbb-4ff8-8a92-55ee120877b7")));
        assert!(ok(Primitive::Base64Binary, json!("aGVs\n bG8=")));
        assert!(!ok(Primitive::Base64Binary, json!("aGVsbG8")));
        assert!(!ok(Primitive::Base64Binary, json!("aG=sbG8=")));
    }
}
