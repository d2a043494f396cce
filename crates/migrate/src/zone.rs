//! The time zone of a project's local date-times (`[defaults] timezone`):
//! a fixed offset (`+02:00`, `Z`, `UTC`) or one of the US zones by its IANA
//! name, with the US daylight-saving rule in force since 2007 (second Sunday
//! of March to first Sunday of November, at 02:00 local time). Other IANA
//! names are refused, not guessed.

use time::{Date, Month};

/// A zone: a standard offset in minutes and whether US daylight saving applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone {
    standard_minutes: i32,
    us_dst: bool,
}

const US: &[(&str, i32, bool)] = &[
    ("America/New_York", -300, true),
    ("America/Detroit", -300, true),
    ("America/Chicago", -360, true),
    ("America/Denver", -420, true),
    ("America/Phoenix", -420, false),
    ("America/Los_Angeles", -480, true),
    ("America/Anchorage", -540, true),
    ("Pacific/Honolulu", -600, false),
];

impl Zone {
    /// Reads a zone name or offset.
    pub fn parse(text: &str) -> Result<Self, String> {
        if matches!(text, "Z" | "UTC" | "Etc/UTC") {
            return Ok(Self { standard_minutes: 0, us_dst: false });
        }
        if let Some((_, minutes, dst)) = US.iter().find(|(name, ..)| *name == text) {
            return Ok(Self { standard_minutes: *minutes, us_dst: *dst });
        }
        let b = text.as_bytes();
        if b.len() == 6 && (b[0] == b'+' || b[0] == b'-') && b[3] == b':' {
            let h: i32 = text[1..3].parse().map_err(|_| format!("time zone {text:?}: not +hh:mm"))?;
            let m: i32 = text[4..6].parse().map_err(|_| format!("time zone {text:?}: not +hh:mm"))?;
            let sign = if b[0] == b'-' { -1 } else { 1 };
            return Ok(Self { standard_minutes: sign * (h * 60 + m), us_dst: false });
        }
        Err(format!(
            "time zone {text:?} is not known: use an offset such as -06:00, UTC, or one of {}",
            US.iter().map(|(n, ..)| *n).collect::<Vec<_>>().join(", ")
        ))
    }

    /// `YYYY-MM-DDThh:mm:ss` local time with its offset appended.
    pub fn localise(&self, text: &str) -> Option<String> {
        let year: i32 = text.get(0..4)?.parse().ok()?;
        let month: u8 = text.get(5..7)?.parse().ok()?;
        let day: u8 = text.get(8..10)?.parse().ok()?;
        let hour: u8 = text.get(11..13)?.parse().ok()?;
        let date = Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()?;
        let mut minutes = self.standard_minutes;
        if self.us_dst && year >= 2007 {
            let start = nth_sunday(year, Month::March, 2)?;
            let end = nth_sunday(year, Month::November, 1)?;
            let after_start = date > start || (date == start && hour >= 2);
            let before_end = date < end || (date == end && hour < 2);
            if after_start && before_end {
                minutes += 60;
            }
        }
        let sign = if minutes < 0 { '-' } else { '+' };
        let abs = minutes.abs();
        Some(format!("{}{sign}{:02}:{:02}", &text[..19.min(text.len())], abs / 60, abs % 60))
    }
}

fn nth_sunday(year: i32, month: Month, n: u8) -> Option<Date> {
    let first = Date::from_calendar_date(year, month, 1).ok()?;
    let offset = (7 - first.weekday().number_days_from_sunday()) % 7;
    Date::from_calendar_date(year, month, 1 + offset + 7 * (n - 1)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn us_daylight_saving_and_fixed_offsets() {
        let chicago = Zone::parse("America/Chicago").expect("zone");
        assert_eq!(chicago.localise("2024-07-01T10:30:00").as_deref(), Some("2024-07-01T10:30:00-05:00"));
        assert_eq!(chicago.localise("2024-01-15T10:30:00").as_deref(), Some("2024-01-15T10:30:00-06:00"));
        // 2024: DST from March 10 to November 3.
        assert_eq!(chicago.localise("2024-03-10T01:00:00").as_deref(), Some("2024-03-10T01:00:00-06:00"));
        assert_eq!(chicago.localise("2024-03-10T03:00:00").as_deref(), Some("2024-03-10T03:00:00-05:00"));
        assert_eq!(chicago.localise("2024-11-03T02:30:00").as_deref(), Some("2024-11-03T02:30:00-06:00"));
        let fixed = Zone::parse("+05:30").expect("offset");
        assert_eq!(fixed.localise("2024-07-01T10:30:00").as_deref(), Some("2024-07-01T10:30:00+05:30"));
        assert!(Zone::parse("Europe/Paris").is_err());
    }
}
