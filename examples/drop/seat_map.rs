//! Seat ids on the wire: the free ones scanned out of a seat map (checked against a full parse
//! when asked), and the chosen ones written into a reservation's body.

use crate::session::json;
use memchr::memmem;
use serde::Deserialize;
use std::sync::LazyLock;

/// The seat map, fully parsed: only to check [`free_seats`] against.
#[derive(Deserialize)]
struct SeatsBody {
    seats: Vec<SeatBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeatBody {
    seat_id: i64,
    seat_status: String,
}

static SEAT_ID: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"seatId\":"));
static SEAT_STATUS: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"seatStatus\":\""));

/// The free seats' ids in a seat map, found by scanning for the two fields the drop needs
/// instead of parsing about 70 kB of JSON per map (that parse was the generator's largest
/// cost after HTTP itself). It relies on the server writing `seatId` before `seatStatus` in
/// each seat; with `verify` the answer is checked against a full parse, and a disagreement
/// is an error (the CI smoke run verifies every map).
pub fn free_seats(body: &[u8], verify: bool) -> Result<Vec<i64>, String> {
    let start = memmem::find(body, b"\"seats\":[").ok_or("a seat map without seats")?;
    let mut rest = &body[start..];
    let mut free = Vec::new();
    let mut seen = 0;
    while let Some(at) = SEAT_ID.find(rest) {
        rest = &rest[at + SEAT_ID.needle().len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 18 {
            return Err("a seatId that is not a number".into());
        }
        let id = rest[..digits]
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        let at = SEAT_STATUS
            .find(rest)
            .ok_or("a seat without a seatStatus")?;
        rest = &rest[at + SEAT_STATUS.needle().len()..];
        if rest.starts_with(b"AVAILABLE\"") {
            free.push(id);
        } else if !rest.starts_with(b"UNAVAILABLE\"") {
            return Err("a seatStatus that is neither AVAILABLE nor UNAVAILABLE".into());
        }
        seen += 1;
    }
    if verify {
        let parsed: SeatsBody = json(body)?;
        let expected: Vec<i64> = parsed
            .seats
            .iter()
            .filter(|s| s.seat_status == "AVAILABLE")
            .map(|s| s.seat_id)
            .collect();
        if parsed.seats.len() != seen || expected != free {
            return Err(format!(
                "the seat-map scanner disagrees with the JSON parser: {seen} seats, {} free \
                 scanned; {} seats, {} free parsed",
                free.len(),
                parsed.seats.len(),
                expected.len()
            ));
        }
    }
    Ok(free)
}

/// Seat ids as a JSON array's contents.
pub struct Ids<'a>(pub &'a [i64]);

impl std::fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &[u8] = br#"{"concertId":1,"concertAt":"2099-01-01T10:00:00","seats":[{"seatId":11,"seatNumber":1,"seatStatus":"AVAILABLE","seatPrice":10000},{"seatId":12,"seatNumber":2,"seatStatus":"UNAVAILABLE","seatPrice":10000},{"seatId":13,"seatNumber":3,"seatStatus":"AVAILABLE","seatPrice":10000}]}"#;

    #[test]
    fn the_scan_finds_the_free_seats_and_agrees_with_the_parser() {
        assert_eq!(free_seats(MAP, false), Ok(vec![11, 13]));
        assert_eq!(free_seats(MAP, true), Ok(vec![11, 13]));
        let none = br#"{"concertId":1,"concertAt":"x","seats":[]}"#;
        assert_eq!(free_seats(none, true), Ok(vec![]));
    }

    #[test]
    fn a_map_the_scan_would_misread_is_an_error() {
        // Status before id: the scan pairs each id with the next seat's status.
        let reordered = br#"{"concertId":1,"concertAt":"x","seats":[{"seatStatus":"UNAVAILABLE","seatId":11},{"seatStatus":"AVAILABLE","seatId":12}]}"#;
        assert!(free_seats(reordered, true).is_err());
        let unknown = br#"{"seats":[{"seatId":11,"seatStatus":"SOLD"}]}"#;
        assert!(free_seats(unknown, false).is_err());
        let not_a_number = br#"{"seats":[{"seatId":"11","seatStatus":"AVAILABLE"}]}"#;
        assert!(free_seats(not_a_number, false).is_err());
        assert!(free_seats(b"{}", false).is_err());
    }

    #[test]
    fn seat_ids_are_written_as_a_json_array() {
        assert_eq!(format!("[{}]", Ids(&[])), "[]");
        assert_eq!(format!("[{}]", Ids(&[4, 5, 6])), "[4,5,6]");
    }
}
