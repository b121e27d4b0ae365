//! The persister's pipeline end to end (issue 14): on PostgreSQL, under concurrent holds,
//! cancellations, recharges and payments, batch N+1's statements go out while batch N commits.
//! Whatever the batches' overlaps (a seat released in one and taken again in the next, a
//! reservation inserted in one and cancelled in the next, a recharge and the payment it pays
//! for), the database ends exactly as the service's memory says, before and after a restart.
//!
//! The orders themselves are pinned down batch by batch in `actors/persister.rs`
//! (`on_postgres`); this is the same promise under real traffic.

use crate::helpers::*;
use crate::on_postgres;
use futures_util::future::join_all;
use rand::Rng;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};

/// Clients at once, rounds each, and the seats every client's cancelled holds contend for.
const CLIENTS: usize = 24;
const ROUNDS: usize = 12;
const HOT_SEATS: usize = 8;
/// Each client pays for a seat of its own every this many rounds (3 times in all).
const PAY_EVERY: usize = 5;
const PRICE: i64 = 100;

/// What one client saw: every reservation it was given and its last answered status.
type Seen = BTreeMap<i64, String>;

async fn pipelined_commits_leave_the_database_as_memory_says(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| {
        s.engine.max_active = 10_000;
        s.engine.pipeline_commits = true;
    })
    .await;
    let staged_before = staged_behind(&app).await;
    let concert = app
        .create_concert(HOT_SEATS + CLIENTS * ROUNDS.div_ceil(PAY_EVERY), PRICE)
        .await;
    let users = app.create_users(CLIENTS, 0).await;
    let seen: Vec<Seen> = join_all(
        users
            .iter()
            .enumerate()
            .map(|(i, user)| client(&app, &concert, i, *user)),
    )
    .await;
    let seen: Seen = seen.into_iter().flatten().collect();
    assert!(
        seen.values().any(|s| s == "CANCELLED") && seen.values().any(|s| s == "PAID"),
        "the traffic cancelled and paid: {seen:?}"
    );
    // Other tests of this process count into the same metric, so this only shows that staging
    // ran during this one; the unit tests of the persister observe it batch by batch.
    assert!(
        staged_behind(&app).await > staged_before,
        "no batch was staged behind another"
    );

    let observer = app.create_user(0).await;
    let token = app.active_token(observer).await;
    let memory = state(&app, &users, token, &concert).await;
    assert_database_agrees(&app, &seen, &memory).await;
    let app = app.restart().await;
    let token = app.active_token(observer).await;
    let rebuilt = state(&app, &users, token, &concert).await;
    assert_eq!(
        rebuilt, memory,
        "the state rebuilt from the database is the one in memory"
    );
}
on_postgres!(pipelined_commits_leave_the_database_as_memory_says);

/// One client's rounds: hold a hot seat and cancel it at once, or, every `PAY_EVERY` rounds,
/// hold a seat of its own, recharge exactly its price and pay with it.
async fn client(app: &TestApp, concert: &Concert, index: usize, user: i64) -> Seen {
    let mut seen = Seen::new();
    let mut token = app.active_token(user).await;
    for round in 0..ROUNDS {
        let paying = round % PAY_EVERY == 0;
        let seat = if paying {
            concert.seats[HOT_SEATS + index * ROUNDS.div_ceil(PAY_EVERY) + round / PAY_EVERY]
        } else {
            concert.seats[rand::rng().random_range(0..HOT_SEATS)]
        };
        let held = app.reserve(user, token, concert, &[seat]).await;
        let status = held.status().as_u16();
        let answer = body(held).await;
        if status == 400 {
            assert_eq!(answer["error"], "reservation_failed", "{answer}");
            assert!(!paying, "a client's own seat is never taken: {answer}");
            continue;
        }
        assert_eq!(status, 201, "{answer}");
        let id = answer["reservationId"].as_i64().expect("a reservation id");
        seen.insert(id, "PAYMENT_PENDING".into());
        if paying {
            let recharged = app.recharge(user, json!(PRICE)).await;
            assert_eq!(recharged.status().as_u16(), 200);
            let paid = app.pay(user, token, id).await;
            assert_eq!(paid.status().as_u16(), 201, "{}", body(paid).await);
            seen.insert(id, "PAID".into());
            // A payment spends the token: the next round needs a new one.
            token = app.active_token(user).await;
        } else {
            let cancelled = app
                .client
                .delete(app.url(&format!("/v1/reservations/{id}?userId={user}")))
                .header("TOKEN-ID", token)
                .send()
                .await
                .expect("request sent");
            assert_eq!(cancelled.status().as_u16(), 200);
            seen.insert(id, "CANCELLED".into());
        }
    }
    seen
}

/// What the service answers from memory: each user's balance and the seats taken.
#[derive(Debug, PartialEq, Eq)]
struct Answered {
    balances: Vec<i64>,
    taken: HashSet<i64>,
}

async fn state(app: &TestApp, users: &[i64], token: i64, concert: &Concert) -> Answered {
    let mut balances = Vec::with_capacity(users.len());
    for user in users {
        balances.push(app.balance(*user).await);
    }
    let taken = app
        .seat_map(token, concert)
        .await
        .into_iter()
        .filter(|(_, free)| !free)
        .map(|(id, _)| id)
        .collect();
    Answered { balances, taken }
}

async fn assert_database_agrees(app: &TestApp, seen: &Seen, memory: &Answered) {
    let stored = app.db.scalar("SELECT COUNT(*) FROM reservations").await;
    assert_eq!(
        stored as usize,
        seen.len(),
        "every acknowledged hold, and no other"
    );
    for (id, status) in seen {
        let matching = app
            .db
            .scalar(&format!(
                "SELECT COUNT(*) FROM reservations WHERE id = {id} AND status = '{status}'"
            ))
            .await;
        assert_eq!(matching, 1, "reservation {id} is {status} in memory");
    }
    let live = app
        .db
        .scalar("SELECT COUNT(*) FROM holds WHERE state IN ('PENDING', 'POSTED')")
        .await;
    assert_eq!(live as usize, memory.taken.len());
    for seat in &memory.taken {
        let held = app
            .db
            .scalar(&format!(
                "SELECT COUNT(*) FROM holds WHERE seat_id = {seat} AND state IN ('PENDING', 'POSTED')"
            ))
            .await;
        assert_eq!(held, 1, "seat {seat} is taken in memory");
    }
    let balances = app
        .db
        .scalar("SELECT COALESCE(SUM(balance), 0)::int8 FROM wallets")
        .await;
    assert_eq!(balances, memory.balances.iter().sum::<i64>());
    assert!(
        memory.balances.iter().all(|b| *b == 0),
        "each recharge paid for one seat"
    );
    let recharged = app
        .db
        .scalar("SELECT COUNT(*) FROM ledger WHERE kind = 'RECHARGE'")
        .await;
    let paid = app
        .db
        .scalar("SELECT COUNT(*) FROM ledger WHERE kind = 'PAYMENT'")
        .await;
    let payments = app.db.scalar("SELECT COUNT(*) FROM payments").await;
    let sold = seen.values().filter(|s| *s == "PAID").count() as i64;
    assert_eq!((recharged, paid, payments), (sold, sold, sold));
}

/// `boxoffice_persister_staged_behind_total` as /metrics has it (0 before the first).
async fn staged_behind(app: &TestApp) -> u64 {
    let text = app
        .get("/metrics", None)
        .await
        .text()
        .await
        .expect("a metrics body");
    text.lines()
        .find_map(|line| line.strip_prefix("boxoffice_persister_staged_behind_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}
