//! Implicit precision of FHIR dates and numbers as ranges, shared by indexing
//! and query parsing so both sides agree (<http://hl7.org/fhir/R4/search.html#date>,
//! <http://hl7.org/fhir/R4/search.html#number>).

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// A FHIR date, dateTime or instant (`2024`, `2024-03`, `2024-03-01`,
/// `2024-03-01T10:15`, `2024-03-01T10:15:30.25+02:00`) as the inclusive range
/// of microseconds since the epoch (UTC) that its precision covers: `2024`
/// is the whole year. A dateTime without a time zone is taken as UTC.
/// `None` when the text is not a valid date.
pub fn date_range(text: &str) -> Option<(i64, i64)> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = num(0, 4)?;
    if b.len() == 4 {
        let start = days_from_civil(year, 1, 1) * MICROS_PER_DAY;
        return Some((start, days_from_civil(year + 1, 1, 1) * MICROS_PER_DAY - 1));
    }
    if b.get(4) != Some(&b'-') {
        return None;
    }
    let month = num(5, 2)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    if b.len() == 7 {
        let start = days_from_civil(year, month, 1) * MICROS_PER_DAY;
        let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
        return Some((start, days_from_civil(ny, nm, 1) * MICROS_PER_DAY - 1));
    }
    if b.get(7) != Some(&b'-') {
        return None;
    }
    let day = num(8, 2)?;
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let day_start = days_from_civil(year, month, day) * MICROS_PER_DAY;
    if b.len() == 10 {
        return Some((day_start, day_start + MICROS_PER_DAY - 1));
    }
    if b.get(10) != Some(&b'T') {
        return None;
    }
    let hour = num(11, 2)?;
    if b.get(13) != Some(&b':') {
        return None;
    }
    let minute = num(14, 2)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut pos = 16;
    let mut second = 0;
    // The width of the range: a minute unless seconds are given.
    let mut width = 60 * MICROS_PER_SECOND;
    let mut fraction = 0;
    if b.get(pos) == Some(&b':') {
        second = num(pos + 1, 2)?;
        // 60 is a leap second; it is folded into the last second of the minute.
        if second > 60 {
            return None;
        }
        second = second.min(59);
        pos += 3;
        width = MICROS_PER_SECOND;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let digits = b[pos..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            // Precision finer than a microsecond is truncated.
            let used = digits.min(6);
            let mut value = 0i64;
            for &d in &b[pos..pos + used] {
                value = value * 10 + i64::from(d - b'0');
            }
            let scale = 10i64.pow(u32::try_from(6 - used).unwrap_or(0));
            fraction = value * scale;
            width = scale;
            pos += digits;
        }
    }
    let offset_seconds = match b.get(pos) {
        None => 0,
        Some(b'Z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() && b.get(pos + 3) == Some(&b':') => {
            let oh = num(pos + 1, 2)?;
            let om = num(pos + 4, 2)?;
            if oh > 14 || om > 59 {
                return None;
            }
            let s = (oh * 60 + om) * 60;
            if *sign == b'-' { -s } else { s }
        }
        _ => return None,
    };
    let local = day_start + ((hour * 60 + minute) * 60 + second) * MICROS_PER_SECOND + fraction;
    let start = local - offset_seconds * MICROS_PER_SECOND;
    Some((start, start + width - 1))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A decimal as written (`1.5`, `100`, `-0.25`, `1.5e3`) and the range its
/// precision implies: half a unit of the last written digit either side, so
/// `1.5` is [1.45, 1.55) and `100` is [99.5, 100.5) (search.html#number).
/// `None` when the text is not a number.
pub fn decimal_range(text: &str) -> Option<(f64, f64)> {
    let (value, half) = decimal_with_half_unit(text)?;
    Some((value - half, value + half))
}

/// The value of a decimal text and half a unit of its last significant digit.
pub fn decimal_with_half_unit(text: &str) -> Option<(f64, f64)> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let digits = mantissa.strip_prefix(['-', '+']).unwrap_or(mantissa);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if int.is_empty() || !int.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if digits.contains('.') && frac.is_empty() {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    let decimals = i32::try_from(frac.len()).ok()?;
    let half = 0.5 * 10f64.powi(exponent.checked_sub(decimals)?);
    (value.is_finite() && half.is_finite()).then_some((value, half))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::instant::Instant;

    fn at(text: &str) -> i64 {
        Instant::parse(text).unwrap().micros()
    }

    #[test]
    fn dates_cover_their_precision() {
        assert_eq!(date_range("2024"), Some((at("2024-01-01T00:00:00Z"), at("2025-01-01T00:00:00Z") - 1)));
        assert_eq!(date_range("2024-02"), Some((at("2024-02-01T00:00:00Z"), at("2024-03-01T00:00:00Z") - 1)));
        assert_eq!(date_range("2023-12"), Some((at("2023-12-01T00:00:00Z"), at("2024-01-01T00:00:00Z") - 1)));
        assert_eq!(date_range("2024-02-29"), Some((at("2024-02-29T00:00:00Z"), at("2024-03-01T00:00:00Z") - 1)));
        assert_eq!(date_range("2024-03-01T10:15"), Some((at("2024-03-01T10:15:00Z"), at("2024-03-01T10:16:00Z") - 1)));
        assert_eq!(
            date_range("2024-03-01T10:15:30+02:00"),
            Some((at("2024-03-01T08:15:30Z"), at("2024-03-01T08:15:31Z") - 1))
        );
        assert_eq!(
            date_range("2024-03-01T10:15:30.25Z"),
            Some((at("2024-03-01T10:15:30.25Z"), at("2024-03-01T10:15:30.26Z") - 1))
        );
        assert_eq!(
            date_range("2024-03-01T10:15:30.1234567-05:00"),
            Some((at("2024-03-01T15:15:30.123456Z"), at("2024-03-01T15:15:30.123456Z")))
        );
        // No time zone: UTC.
        assert_eq!(date_range("2024-03-01T10:15:30").map(|r| r.0), Some(at("2024-03-01T10:15:30Z")));
        assert_eq!(date_range("1969-12-31").map(|r| r.1), Some(-1));
    }

    #[test]
    fn invalid_dates_are_none() {
        for bad in ["", "24", "2024-13", "2023-02-29", "2024-1-01", "2024-01-01T25:00", "2024-01-01T10", "2024-01-01X",
            "2024-01-01T10:00:00+2", "2024-01-01T10:00:00.Z", "2024-01-01T10:00Z1", "２０２４"]
        {
            assert_eq!(date_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_carry_their_precision() {
        let (lo, hi) = decimal_range("1.5").unwrap();
        assert!((lo - 1.45).abs() < 1e-12 && (hi - 1.55).abs() < 1e-12);
        assert_eq!(decimal_range("100"), Some((99.5, 100.5)));
        assert_eq!(decimal_range("-2"), Some((-2.5, -1.5)));
        let (lo, hi) = decimal_range("1.50").unwrap();
        assert!((lo - 1.495).abs() < 1e-12 && (hi - 1.505).abs() < 1e-12);
        assert_eq!(decimal_range("1e2"), Some((50.0, 150.0)));
        for bad in ["", "abc", "1.", ".5", "1e", "--1", "1.2.3", "NaN", "inf", "1e999"] {
            assert_eq!(decimal_range(bad), None, "{bad}");
        }
    }
}
