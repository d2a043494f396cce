//! Points in time as Hearth stores them: microseconds since the Unix epoch, UTC.
//!
//! FHIR `instant` values (meta.lastUpdated, history `_since`) are rendered and
//! parsed here so every layer agrees on one representation.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub i64);

impl Instant {
    pub fn now() -> Instant {
        let now = OffsetDateTime::now_utc();
        Instant((now.unix_timestamp_nanos() / 1_000) as i64)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// FHIR instant text, e.g. `2024-03-01T10:15:30.123456Z`.
    pub fn to_fhir(self) -> String {
        let nanos = i128::from(self.0) * 1_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => {
                let micros = t.microsecond();
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second(),
                    micros
                )
            }
            Err(_) => "1970-01-01T00:00:00.000000Z".to_string(),
        }
    }

    /// HTTP-date (RFC 7231 IMF-fixdate) for Last-Modified.
    pub fn to_http_date(self) -> String {
        let nanos = i128::from(self.0) * 1_000;
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            return "Thu, 01 Jan 1970 00:00:00 GMT".to_string();
        };
        let weekday = match t.weekday() {
            time::Weekday::Monday => "Mon",
            time::Weekday::Tuesday => "Tue",
            time::Weekday::Wednesday => "Wed",
            time::Weekday::Thursday => "Thu",
            time::Weekday::Friday => "Fri",
            time::Weekday::Saturday => "Sat",
            time::Weekday::Sunday => "Sun",
        };
        const MONTHS: [&str; 12] =
            ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let month = MONTHS.get(usize::from(u8::from(t.month())) - 1).copied().unwrap_or("Jan");
        format!(
            "{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} GMT",
            t.day(),
            t.year(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    /// Parses a full FHIR `instant` or `dateTime` with time zone (RFC 3339).
    /// Values outside the years 0001-9999 once in UTC are refused: FHIR
    /// cannot write them back.
    pub fn parse(text: &str) -> Option<Instant> {
        let t = OffsetDateTime::parse(text, &Rfc3339).ok()?.checked_to_offset(time::UtcOffset::UTC)?;
        if !(1..=9999).contains(&t.year()) {
            return None;
        }
        Some(Instant((t.unix_timestamp_nanos() / 1_000) as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_fhir_text() {
        let t = Instant(1_709_288_130_123_456);
        assert_eq!(t.to_fhir(), "2024-03-01T10:15:30.123456Z");
        assert_eq!(Instant::parse(&t.to_fhir()), Some(t));
        assert_eq!(t.to_http_date(), "Fri, 01 Mar 2024 10:15:30 GMT");
    }

    #[test]
    fn refuses_instants_fhir_cannot_write() {
        assert_eq!(Instant::parse("9999-12-31T23:59:59-14:00"), None);
        assert!(Instant::parse("9999-12-31T09:59:59-14:00").is_some());
        assert_eq!(Instant::parse("not a time"), None);
    }
}
