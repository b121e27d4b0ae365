//! Instants as milliseconds since the Unix epoch, and the seed's wall-clock text format.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use std::time::Duration;

/// The seed's timestamp format: seconds precision, no offset (`2024-07-04T10:00:00`).
pub const SEED_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// An instant, in milliseconds since the Unix epoch (UTC). Stored as `BIGINT` in both stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// `self + duration`, saturating instead of overflowing.
    pub fn plus(self, duration: Duration) -> Timestamp {
        let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// How long from `self` until `later`; zero when `later` is not later.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }

    /// Formats in the seed's format, in the given zone offset.
    pub fn format(self, offset: FixedOffset) -> String {
        match DateTime::from_timestamp_millis(self.0) {
            Some(utc) => utc.with_timezone(&offset).format(SEED_FORMAT).to_string(),
            // Only reachable for instants hundreds of thousands of years away; keep it readable.
            None => self.0.to_string(),
        }
    }

    /// Parses the seed's format, read as local time in `offset`.
    pub fn parse(text: &str, offset: FixedOffset) -> Option<Timestamp> {
        let naive = NaiveDateTime::parse_from_str(text, SEED_FORMAT).ok()?;
        let local = offset.from_local_datetime(&naive).single()?;
        Some(Timestamp(local.timestamp_millis()))
    }
}

/// Parses a zone offset such as `+09:00`, `-03:30` or `Z`.
pub fn parse_offset(text: &str) -> Option<FixedOffset> {
    if text == "Z" || text == "UTC" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = minutes.parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_seed() {
        let utc = parse_offset("+00:00").unwrap();
        let t = Timestamp::parse("2024-07-04T10:00:00", utc).unwrap();
        assert_eq!(t.format(utc), "2024-07-04T10:00:00");
        let seoul = parse_offset("+09:00").unwrap();
        assert_eq!(t.format(seoul), "2024-07-04T19:00:00");
        assert_eq!(Timestamp::parse("2024-07-04T19:00:00", seoul), Some(t));
    }

    #[test]
    fn rejects_malformed_text() {
        let utc = parse_offset("Z").unwrap();
        assert_eq!(Timestamp::parse("2024-07-04 10:00", utc), None);
        assert_eq!(parse_offset("9"), None);
        assert_eq!(parse_offset("+25:00"), None);
    }

    #[test]
    fn durations_saturate() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.plus(Duration::from_secs(2)).millis(), 3_000);
        assert_eq!(t.until(Timestamp::from_millis(500)), Duration::ZERO);
    }
}
