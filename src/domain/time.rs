//! Instants as milliseconds since the Unix epoch, and the seed's wall-clock text format.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use std::time::Duration;

/// The seed's timestamp format: seconds precision, no offset (`2024-07-04T10:00:00`).
pub const SEED_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// An instant, in milliseconds since the Unix epoch (UTC). Stored as `BIGINT` in both stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Timestamp {
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

    /// Formats in the seed's format, in the given zone offset. Years 0..=9999 are formatted
    /// by hand, because every response formats times and chrono's strftime interpreter is slow
    /// (docs/BENCHMARKS.md); other years take chrono's path.
    pub fn format(self, offset: FixedOffset) -> String {
        let local = self.0.div_euclid(1000) + i64::from(offset.local_minus_utc());
        let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
        // Days since 1970-01-01 to a civil date (H. Hinnant, "chrono-Compatible Low-Level
        // Date Algorithms"), in 400-year eras.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if !(0..=9999).contains(&year) {
            return self.format_with_chrono(offset);
        }
        let mut text = *b"0000-00-00T00:00:00";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, secs / 3600);
        put(14, 2, secs / 60 % 60);
        put(17, 2, secs % 60);
        text.iter().map(|b| char::from(*b)).collect()
    }

    /// The seed's format through chrono: the general path, and the reference for the fast one.
    fn format_with_chrono(self, offset: FixedOffset) -> String {
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
    fn the_fast_format_is_chronos_format() {
        let offsets = [0, 9 * 3600, -(3 * 3600 + 1800), 14 * 3600, -12 * 3600];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut instants = vec![
            0i64,
            -1,
            1,
            951_782_400_000,
            4_102_444_800_000,
            -62_167_219_200_000,
            253_402_300_799_999,
            253_402_300_800_000,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Within about ±2,000 years of 1970, millisecond precision.
            instants.push((x % 126_230_400_000_000) as i64 - 63_115_200_000_000);
        }
        for secs in offsets {
            let offset = FixedOffset::east_opt(secs).expect("within a day");
            for ms in &instants {
                let t = Timestamp::from_millis(*ms);
                assert_eq!(
                    t.format(offset),
                    t.format_with_chrono(offset),
                    "{ms} at {secs}"
                );
            }
        }
    }

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
