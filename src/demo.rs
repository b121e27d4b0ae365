//! Demo data for `serve --demo`: users, a concert with upcoming schedules and a graded seat
//! plan (rows of VIP, R and S seats with an aisle), loaded only into an empty store, and a
//! "try this" block to start from.

use crate::actors::AdminError;
use crate::actors::Engine;
use crate::domain::catalog::{NewConcert, NewSchedule};
use crate::domain::seat_plan::SeatPlan;
use crate::domain::{Money, Timestamp};
use std::time::Duration;

/// Demo users get ids 1..=USERS (the store is empty, so the sequence starts at 1).
pub const USERS: usize = 100;
/// What each demo user starts with: enough for a couple of the dearest seats.
pub const OPENING_BALANCE: i64 = 300_000;
const SCHEDULES: u64 = 3;
/// (grade, rows, price): VIP in front, then R, then S. Rows are lettered from A at the front.
const GRADES: [(&str, i32, i64); 3] = [("VIP", 1, 150_000), ("R", 2, 110_000), ("S", 3, 80_000)];
/// Seats in every row, numbered on from the row in front (row A is 1-10, row B 11-20, …).
const SEATS_PER_ROW: i32 = 10;
/// The aisle runs after this many seats of a row: one empty place on the plan.
const AISLE_AFTER: i32 = 5;

const DAY: Duration = Duration::from_secs(86_400);

/// Loads the demo into an empty store. `None` when the store already has data.
pub async fn seed_if_empty(engine: &Engine) -> Result<Option<i64>, AdminError> {
    if !engine.is_empty() {
        return Ok(None);
    }
    let balance = Money::new(OPENING_BALANCE).expect("a positive constant");
    for n in 1..=USERS {
        engine
            .create_user(format!("demo user {n}"), balance)
            .await?;
    }
    let now = engine.now();
    // Booking opened an hour ago; the concerts are one, two and three weeks out.
    let opened = Timestamp::from_millis(now.millis() - 3_600_000);
    let (seats, plan) = demo_plan();
    let schedules = (1..=SCHEDULES)
        .map(|week| NewSchedule {
            concert_at: evening_of(now.plus(DAY * 7 * week as u32)),
            reservation_at: opened,
            seats: seats.clone(),
            plan: plan.clone(),
        })
        .collect();
    let concert = NewConcert {
        name: "boxoffice demo concert".into(),
        schedules,
    };
    let created = engine.create_concert(concert).await?;
    Ok(Some(created.id.get()))
}

/// The demo hall, row by row from the front: (seat number, price) and each seat's grade, row
/// letter and place. `x` leaves one empty place for the aisle; `y` is the row.
fn demo_plan() -> (Vec<(i32, Money)>, Vec<SeatPlan>) {
    let mut seats = Vec::new();
    let mut plan = Vec::new();
    let mut row = 0;
    for (grade, rows, price) in GRADES {
        let price = Money::new(price).expect("a positive constant");
        for _ in 0..rows {
            let letter = char::from(b'A' + row as u8).to_string();
            for place in 0..SEATS_PER_ROW {
                let x = place + i32::from(place >= AISLE_AFTER);
                seats.push((row * SEATS_PER_ROW + place + 1, price));
                plan.push(
                    SeatPlan::new(
                        Some(grade.to_string()),
                        Some(letter.clone()),
                        Some(i64::from(x)),
                        Some(i64::from(row)),
                    )
                    .expect("the demo's labels are short, printable and on the plan"),
                );
            }
            row += 1;
        }
    }
    (seats, plan)
}

/// 20:00 UTC of the day of `t`: concerts start in the evening.
fn evening_of(t: Timestamp) -> Timestamp {
    let day_ms = DAY.as_millis() as i64;
    Timestamp::from_millis(t.millis() - t.millis().rem_euclid(day_ms) + 20 * 3_600_000)
}

/// The block printed once the demo is serving.
pub fn try_this(address: &str, concert: i64) -> String {
    let mut first_row = 0;
    let grades: Vec<String> = GRADES
        .iter()
        .map(|(g, rows, p)| {
            let letters = |r: i32| char::from(b'A' + r as u8);
            let named = if *rows == 1 {
                format!("row {}", letters(first_row))
            } else {
                format!(
                    "rows {}-{}",
                    letters(first_row),
                    letters(first_row + rows - 1)
                )
            };
            first_row += rows;
            format!("{} {g} at {p} in {named}", rows * SEATS_PER_ROW)
        })
        .collect();
    format!(
        "\nboxoffice demo: users 1-{USERS} ({OPENING_BALANCE} won each), concert {concert} with {SCHEDULES} schedules \
         of {} seats ({}; {SEATS_PER_ROW} a row, aisle in the middle).\n\
         Try a drop as user 1 (seats 11 and 12 are R, row B):\n\
         \x20 curl -s -XPOST {address}/v1/queue-tokens/users/1\n\
         \x20 TOKEN=$(curl -s {address}/v1/queue-tokens/users/1 | sed 's/.*\"tokenId\":\\([0-9]*\\).*/\\1/')\n\
         \x20 curl -s {address}/v1/queue-status/users/1 -H \"TOKEN-ID: $TOKEN\"\n\
         \x20 curl -s {address}/v1/concerts/{concert}/schedules -H \"TOKEN-ID: $TOKEN\"\n\
         \x20 curl -s {address}/v1/concerts/{concert}/schedules/1/seats -H \"TOKEN-ID: $TOKEN\"\n\
         \x20 curl -s -XPOST {address}/v1/reservations -H \"TOKEN-ID: $TOKEN\" -H 'Content-Type: application/json' \\\n\
         \x20      -d '{{\"userId\":1,\"concertId\":{concert},\"scheduleId\":1,\"seatIds\":[11,12]}}'\n\
         \x20 curl -s -XPOST {address}/v1/payments/users/1 -H \"TOKEN-ID: $TOKEN\" -H 'Content-Type: application/json' -d '{{\"reservationId\":1}}'\n\
         \x20 curl -s {address}/v1/balance/users/1\n",
        GRADES.iter().map(|(_, rows, _)| rows).sum::<i32>() * SEATS_PER_ROW,
        grades.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_hall_is_rows_of_vip_r_and_s_with_an_aisle() {
        let (seats, plan) = demo_plan();
        assert_eq!(seats.len(), 60);
        assert_eq!(plan.len(), seats.len());
        let numbers: Vec<i32> = seats.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, (1..=60).collect::<Vec<_>>(), "ids row by row");
        let label = |n: usize| {
            let p = &plan[n - 1];
            let at = p.position().unwrap();
            (
                p.grade().unwrap(),
                p.row().unwrap(),
                at.x(),
                at.y(),
                seats[n - 1].1.won(),
            )
        };
        assert_eq!(label(1), ("VIP", "A", 0, 0, 150_000));
        assert_eq!(label(5), ("VIP", "A", 4, 0, 150_000));
        assert_eq!(label(6), ("VIP", "A", 6, 0, 150_000), "the aisle is x = 5");
        assert_eq!(label(11), ("R", "B", 0, 1, 110_000));
        assert_eq!(label(12), ("R", "B", 1, 1, 110_000));
        assert_eq!(label(30), ("R", "C", 10, 2, 110_000));
        assert_eq!(label(31), ("S", "D", 0, 3, 80_000));
        assert_eq!(label(60), ("S", "F", 10, 5, 80_000));
        assert!(plan.iter().all(|p| p.position().unwrap().x() != 5));
    }

    #[test]
    fn the_try_this_block_names_the_plan() {
        let text = try_this("http://127.0.0.1:8080", 1);
        assert!(text.contains("60 seats (10 VIP at 150000 in row A, 20 R at 110000 in rows B-C, 30 S at 80000 in rows D-F; 10 a row"), "{text}");
        assert!(text.contains("\"seatIds\":[11,12]"));
    }
}
