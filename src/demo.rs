//! Demo data for `serve --demo`: users, a concert with upcoming schedules and a graded seat
//! map, loaded only into an empty store, and a "try this" block to start from.

use crate::actors::AdminError;
use crate::actors::Engine;
use crate::domain::catalog::{NewConcert, NewSchedule};
use crate::domain::{Money, Timestamp};
use std::time::Duration;

/// Demo users get ids 1..=USERS (the store is empty, so the sequence starts at 1).
pub const USERS: usize = 100;
/// What each demo user starts with: enough for a couple of the dearest seats.
pub const OPENING_BALANCE: i64 = 300_000;
const SCHEDULES: u64 = 3;
/// (grade, seats, price): VIP in front, then R, then S.
const GRADES: [(&str, i32, i64); 3] = [("VIP", 10, 150_000), ("R", 20, 110_000), ("S", 30, 80_000)];

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
    let mut seats = Vec::new();
    let mut number = 1;
    for (_, count, price) in GRADES {
        for _ in 0..count {
            seats.push((number, Money::new(price).expect("a positive constant")));
            number += 1;
        }
    }
    let schedules = (1..=SCHEDULES)
        .map(|week| NewSchedule {
            concert_at: evening_of(now.plus(DAY * 7 * week as u32)),
            reservation_at: opened,
            seats: seats.clone(),
        })
        .collect();
    let concert = NewConcert {
        name: "boxoffice demo concert".into(),
        schedules,
    };
    let created = engine.create_concert(concert).await?;
    Ok(Some(created.id.get()))
}

/// 20:00 UTC of the day of `t`: concerts start in the evening.
fn evening_of(t: Timestamp) -> Timestamp {
    let day_ms = DAY.as_millis() as i64;
    Timestamp::from_millis(t.millis() - t.millis().rem_euclid(day_ms) + 20 * 3_600_000)
}

/// The block printed once the demo is serving.
pub fn try_this(address: &str, concert: i64) -> String {
    let grades: Vec<String> = GRADES
        .iter()
        .map(|(g, n, p)| format!("{n} {g} at {p}"))
        .collect();
    format!(
        "\nboxoffice demo: users 1-{USERS} ({OPENING_BALANCE} won each), concert {concert} with {SCHEDULES} schedules \
         of {} seats ({}).\n\
         Try a drop as user 1:\n\
         \x20 curl -s -XPOST {address}/v1/queue-tokens/users/1\n\
         \x20 TOKEN=$(curl -s {address}/v1/queue-tokens/users/1 | sed 's/.*\"tokenId\":\\([0-9]*\\).*/\\1/')\n\
         \x20 curl -s {address}/v1/queue-status/users/1 -H \"TOKEN-ID: $TOKEN\"\n\
         \x20 curl -s {address}/v1/concerts/{concert}/schedules -H \"TOKEN-ID: $TOKEN\"\n\
         \x20 curl -s {address}/v1/concerts/{concert}/schedules/1/seats -H \"TOKEN-ID: $TOKEN\"\n\
         \x20 curl -s -XPOST {address}/v1/reservations -H \"TOKEN-ID: $TOKEN\" -H 'Content-Type: application/json' \\\n\
         \x20      -d '{{\"userId\":1,\"concertId\":{concert},\"scheduleId\":1,\"seatIds\":[11,12]}}'\n\
         \x20 curl -s -XPOST {address}/v1/payments/users/1 -H \"TOKEN-ID: $TOKEN\" -H 'Content-Type: application/json' -d '{{\"reservationId\":1}}'\n\
         \x20 curl -s {address}/v1/balance/users/1\n",
        GRADES.iter().map(|(_, n, _)| n).sum::<i32>(),
        grades.join(", "),
    )
}
