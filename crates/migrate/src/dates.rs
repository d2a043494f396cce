//! Date formats as a mapping declares them (`MM/DD/YYYY`, `YYYY-MM-DD`,
//! `YYYY-MM-DD hh:mm`): tokens `YYYY` `MM` `DD` `hh` `mm` `ss`, anything else
//! literal. A value is read with the first declared format it matches, and
//! comes out as FHIR text (`1987-03-04`, `2024-05-06T10:30:00`).

/// One piece of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Literal(char),
}

/// A parsed date format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormat {
    parts: Vec<Part>,
}

const TOKENS: [(&str, Part); 6] = [
    ("YYYY", Part::Year),
    ("MM", Part::Month),
    ("DD", Part::Day),
    ("hh", Part::Hour),
    ("mm", Part::Minute),
    ("ss", Part::Second),
];

impl DateFormat {
    /// Reads a format; it must contain `YYYY`, `MM` and `DD`, and no other
    /// letters than its tokens.
    pub fn parse(format: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = format;
        'outer: while let Some(c) = rest.chars().next() {
            for (token, part) in &TOKENS {
                if let Some(after) = rest.strip_prefix(token) {
                    parts.push(part.clone());
                    rest = after;
                    continue 'outer;
                }
            }
            if c.is_alphabetic() && c != 'T' && c != 'Z' {
                return Err(format!(
                    "date format {format:?}: {c:?} is not a token (YYYY MM DD hh mm ss) nor a separator"
                ));
            }
            parts.push(Part::Literal(c));
            rest = &rest[c.len_utf8()..];
        }
        for required in [Part::Year, Part::Month, Part::Day] {
            if !parts.contains(&required) {
                return Err(format!("date format {format:?} lacks YYYY, MM or DD"));
            }
        }
        Ok(Self { parts })
    }

    /// Reads `value`: FHIR date or dateTime text, or `None` when the value
    /// does not match or is not a real date (`02/30/2020`). Month, day and
    /// time fields take one or two digits.
    pub fn read(&self, value: &str) -> Option<String> {
        let mut rest = value.trim();
        let (mut y, mut mo, mut d) = (0u32, 0u32, 0u32);
        let mut time: [Option<u32>; 3] = [None; 3];
        for part in &self.parts {
            if let Part::Literal(c) = part {
                rest = rest.strip_prefix(*c)?;
                continue;
            }
            let max_digits = if *part == Part::Year { 4 } else { 2 };
            let digits = rest.bytes().take(max_digits).take_while(u8::is_ascii_digit).count();
            if digits == 0 || (*part == Part::Year && digits != 4) {
                return None;
            }
            let n: u32 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            match part {
                Part::Year => y = n,
                Part::Month => mo = n,
                Part::Day => d = n,
                Part::Hour => time[0] = Some(n),
                Part::Minute => time[1] = Some(n),
                Part::Second => time[2] = Some(n),
                Part::Literal(_) => {}
            }
        }
        if !rest.is_empty() || !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
            return None;
        }
        let date = format!("{y:04}-{mo:02}-{d:02}");
        match time {
            [None, None, None] => Some(date),
            [h, m, s] => {
                let (h, m, s) = (h.unwrap_or(0), m.unwrap_or(0), s.unwrap_or(0));
                // A format ending in a literal `Z` reads UTC times, kept as UTC.
                let utc = if self.parts.last() == Some(&Part::Literal('Z')) { "Z" } else { "" };
                (h < 24 && m < 60 && s < 60).then(|| format!("{date}T{h:02}:{m:02}:{s:02}{utc}"))
            }
        }
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Reads `value` with the first of `formats` that matches.
pub fn read_any(formats: &[&str], value: &str) -> Option<String> {
    formats.iter().filter_map(|f| DateFormat::parse(f).ok()).find_map(|f| f.read(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_us_and_iso_dates_and_date_times() {
        let us = DateFormat::parse("MM/DD/YYYY").expect("format");
        assert_eq!(us.read("03/04/1987").as_deref(), Some("1987-03-04"));
        assert_eq!(us.read("3/4/1987").as_deref(), Some("1987-03-04"));
        assert_eq!(us.read("1987-03-04"), None);
        assert_eq!(us.read("02/29/2023"), None, "not a leap year");
        assert_eq!(us.read("02/29/2024").as_deref(), Some("2024-02-29"));
        let dt = DateFormat::parse("YYYY-MM-DD hh:mm").expect("format");
        assert_eq!(dt.read("2024-05-06 10:30").as_deref(), Some("2024-05-06T10:30:00"));
        assert_eq!(dt.read("2024-05-06 25:30"), None);
        let utc = DateFormat::parse("YYYY-MM-DDThh:mm:ssZ").expect("format");
        assert_eq!(utc.read("2019-02-17T05:07:38Z").as_deref(), Some("2019-02-17T05:07:38Z"));
        assert_eq!(read_any(&["MM/DD/YYYY", "YYYY-MM-DD"], "2020-12-31").as_deref(), Some("2020-12-31"));
        assert_eq!(read_any(&["MM/DD/YYYY", "YYYY-MM-DD"], ""), None);
    }

    #[test]
    fn rejects_formats_with_unknown_letters_or_missing_parts() {
        assert!(DateFormat::parse("DD.MM.YY").is_err());
        assert!(DateFormat::parse("YYYY-MM").is_err());
        assert!(DateFormat::parse("YYYYMMDD").is_ok());
        assert_eq!(DateFormat::parse("YYYYMMDD").expect("f").read("20240131").as_deref(), Some("2024-01-31"));
    }
}
