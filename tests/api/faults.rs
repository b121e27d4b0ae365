//! A failed commit: its callers and everyone queued behind it get 503, the actors rebuild
//! from the database, and no decision built on the undone change is ever acknowledged.
//! Faults are real: a trigger makes PostgreSQL stall, then refuse, a chosen write.

use crate::helpers::*;
use crate::on_postgres;
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Makes every insert into or update of `table` matching `condition` wait 1.5 s, then fail. (At 300 ms a
/// loaded machine could miss the stall between two looks at `pg_stat_activity`: the commit
/// came and went before `until_stalled` saw it.)
async fn sabotage(app: &TestApp, table: &str, condition: &str) {
    app.db
        .execute(&format!(
            "CREATE FUNCTION chaos() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF {condition} THEN PERFORM pg_sleep(1.5); RAISE EXCEPTION 'injected fault'; END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER chaos BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION chaos();"
        ))
        .await;
}

/// Makes every insert into `table` wait 1.5 s, then succeed: a slow commit, not a failed one.
pub(crate) async fn slow_down(app: &TestApp, table: &str) {
    app.db
        .execute(&format!(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_sleep(1.5); RETURN NEW; END $$;
             CREATE TRIGGER slow BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION slow();"
        ))
        .await;
}

/// Waits until a write of this test's database is inside the injected fault's stall, so a
/// request sent now arrives while that commit is in flight (a fixed sleep raced it on a loaded
/// machine).
pub(crate) async fn until_stalled(app: &TestApp) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stalled = "SELECT COUNT(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event = 'PgSleep'";
    while app.db.scalar(stalled).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no write reached the injected stall"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts `user`'s hold of `seats` (one seat) under a fault that stalls its commit for 1.5 s
/// and then fails it; returns the pending answer once it is seen to be stalled.
async fn stalled_hold<'a>(
    app: &'a TestApp,
    (user, token): (i64, i64),
    concert: &'a Concert,
    seats: &'a [i64],
) -> Pin<Box<dyn Future<Output = reqwest::Response> + 'a>> {
    sabotage(app, "holds", &format!("NEW.seat_id = {}", seats[0])).await;
    let mut answer = Box::pin(app.reserve(user, token, concert, seats));
    tokio::select! {
        _ = &mut answer => panic!("the hold's commit should be stalled"),
        _ = until_stalled(app) => {}
    }
    answer
}

/// `N` users, each with an ACTIVE token.
async fn users_with_tokens<const N: usize>(app: &TestApp) -> [(i64, i64); N] {
    let users = app.create_users(N, 0).await;
    let mut out = [(0, 0); N];
    for (slot, user) in out.iter_mut().zip(users) {
        *slot = (user, app.active_token(user).await);
    }
    out
}

async fn heal(app: &TestApp, table: &str) {
    app.db
        .execute(&format!(
            "DROP TRIGGER chaos ON {table}; DROP FUNCTION chaos();"
        ))
        .await;
}

async fn a_debit_that_spent_an_uncommitted_recharge_is_never_acknowledged(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(1, 500).await;
    let id = body(app.reserve(user, token, &concert, &concert.seats).await).await["reservationId"]
        .as_i64()
        .unwrap();
    sabotage(&app, "ledger", "NEW.amount = 777").await;
    let recharge = app.recharge(user, json!(777));
    let payment = async {
        // Arrives while the recharge's commit is stalled: the wallet says 777 in memory.
        until_stalled(&app).await;
        app.pay(user, token, id).await
    };
    let (recharged, paid) = tokio::join!(recharge, payment);
    assert_eq!(
        recharged
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert_error(recharged, 503, "unavailable", "service unavailable").await;
    assert_error(paid, 503, "unavailable", "service unavailable").await;
    heal(&app, "ledger").await;
    assert_eq!(
        app.balance(user).await,
        0,
        "the wallet was rebuilt from the database"
    );
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM payments").await, 0);
    // Nothing stays broken: the hold is intact and payable once money really arrives. (The
    // wallet may still be finishing its rebuild on a loaded machine: it must recover by
    // itself within seconds, answering 503 meanwhile, never a wrong balance.)
    let mut recharged = app.recharge(user, json!(500)).await.status().as_u16();
    for _ in 0..25 {
        if recharged != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        recharged = app.recharge(user, json!(500)).await.status().as_u16();
    }
    assert_eq!(recharged, 200);
    assert_eq!(app.pay(user, token, id).await.status().as_u16(), 201);
    assert_eq!(app.balance(user).await, 0);
    assert_eq!(
        app.get("/readyz", None).await.status().as_u16(),
        200,
        "ready again by itself"
    );
}
on_postgres!(a_debit_that_spent_an_uncommitted_recharge_is_never_acknowledged);

async fn a_refusal_caused_by_an_uncommitted_hold_is_never_acknowledged(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.create_user(0).await;
    let bob = app.create_user(0).await;
    let (ta, tb) = (app.active_token(alice).await, app.active_token(bob).await);
    let concert = app.create_concert(2, 500).await;
    let seat = concert.seats[0];
    sabotage(&app, "holds", &format!("NEW.seat_id = {seat}")).await;
    let wanted = [seat];
    let first = app.reserve(alice, ta, &concert, &wanted);
    let second = async {
        until_stalled(&app).await;
        app.reserve(bob, tb, &concert, &[seat]).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_error(first, 503, "unavailable", "service unavailable").await;
    // Bob was refused only because of Alice's hold, which never became durable.
    assert_error(second, 503, "unavailable", "service unavailable").await;
    heal(&app, "holds").await;
    assert!(
        app.seat_map(tb, &concert)
            .await
            .iter()
            .all(|(_, free)| *free),
        "the schedule was rebuilt"
    );
    assert_eq!(
        app.reserve(bob, tb, &concert, &[seat])
            .await
            .status()
            .as_u16(),
        201
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM holds WHERE state = 'PENDING'")
            .await,
        1
    );
}
on_postgres!(a_refusal_caused_by_an_uncommitted_hold_is_never_acknowledged);

async fn a_refusal_caused_by_a_committed_hold_does_not_wait_for_other_writes(backend: Backend) {
    let app = spawn_app(backend).await;
    let [(alice, ta), (bob, tb), (carol, tc)] = users_with_tokens(&app).await;
    let concert = app.create_concert(2, 500).await;
    let (taken, stalled) = ([concert.seats[0]], [concert.seats[1]]);
    let held = app.reserve(alice, ta, &concert, &taken).await;
    assert_eq!(held.status().as_u16(), 201, "Alice's hold is committed");
    // Carol's hold on the other seat sits in a stalled commit for 1.5 s, then fails.
    let mut carol_answer = stalled_hold(&app, (carol, tc), &concert, &stalled).await;
    // Bob wants Alice's seat: her hold is durable, so no failure can make his refusal wrong,
    // and it must not wait for Carol's commit.
    let bob_answer = tokio::select! {
        answer = app.reserve(bob, tb, &concert, &taken) => answer,
        _ = &mut carol_answer => panic!("Bob's refusal waited for an unrelated commit"),
    };
    assert_error(bob_answer, 400, "reservation_failed", "reservation failed").await;
    assert_error(
        carol_answer.await,
        503,
        "unavailable",
        "service unavailable",
    )
    .await;
    heal(&app, "holds").await;
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM holds WHERE state = 'PENDING'")
            .await,
        1,
        "only Alice's hold exists"
    );
}
on_postgres!(a_refusal_caused_by_a_committed_hold_does_not_wait_for_other_writes);

async fn the_seat_map_shows_committed_state_without_waiting_for_a_stalled_hold(backend: Backend) {
    let app = spawn_app(backend).await;
    let [(alice, ta), (_bob, tb), (carol, tc)] = users_with_tokens(&app).await;
    let concert = app.create_concert(3, 500).await;
    let (sold, stalled) = ([concert.seats[0]], [concert.seats[1]]);
    assert_eq!(
        app.reserve(carol, tc, &concert, &sold)
            .await
            .status()
            .as_u16(),
        201
    );
    // Alice's hold sits in a stalled commit for 1.5 s, then fails.
    let mut alice_answer = stalled_hold(&app, (alice, ta), &concert, &stalled).await;
    // Bob's map comes while Alice's hold is still being written, and shows what the
    // database has: Carol's committed hold taken, Alice's seat still free.
    let map = tokio::select! {
        map = app.seat_map(tb, &concert) => map,
        _ = &mut alice_answer => panic!("the seat map waited for an unrelated commit"),
    };
    assert_eq!(
        map,
        vec![
            (concert.seats[0], false),
            (concert.seats[1], true),
            (concert.seats[2], true)
        ]
    );
    assert_error(
        alice_answer.await,
        503,
        "unavailable",
        "service unavailable",
    )
    .await;
    heal(&app, "holds").await;
    assert_eq!(app.seat_map(tb, &concert).await, map, "and so it stays");
}
on_postgres!(the_seat_map_shows_committed_state_without_waiting_for_a_stalled_hold);

async fn a_seat_map_waits_while_freed_seats_are_being_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let [(alice, ta), (_bob, tb)] = users_with_tokens(&app).await;
    let concert = app.create_concert(1, 500).await;
    let held = body(app.reserve(alice, ta, &concert, &concert.seats).await).await;
    let id = held["reservationId"].as_i64().expect("a reservation id");
    // Alice cancels; the write that frees the seat stalls, then fails.
    // (The release is an update of the hold's row.)
    sabotage(&app, "holds", "NEW.state = 'VOIDED'").await;
    let cancel = async {
        app.client
            .delete(app.url(&format!("/v1/reservations/{id}?userId={alice}")))
            .header("TOKEN-ID", ta)
            .send()
            .await
            .expect("request sent")
    };
    let map = async {
        until_stalled(&app).await;
        let path = format!(
            "/v1/concerts/{}/schedules/{}/seats",
            concert.id, concert.schedule
        );
        app.get(&path, Some(tb)).await
    };
    let (cancelled, map) = tokio::join!(cancel, map);
    assert_error(cancelled, 503, "unavailable", "service unavailable").await;
    // The seat was free only in memory: the map never showed it so.
    assert_error(map, 503, "unavailable", "service unavailable").await;
    heal(&app, "holds").await;
    assert_eq!(
        app.seat_map(tb, &concert).await,
        vec![(concert.seats[0], false)]
    );
}
on_postgres!(a_seat_map_waits_while_freed_seats_are_being_written);

async fn a_failed_join_leaves_no_token_and_the_line_recovers(backend: Backend) {
    let app = spawn_app(backend).await;
    let users = app.create_users(2, 0).await;
    sabotage(&app, "queue_tokens", &format!("NEW.user_id = {}", users[0])).await;
    assert_error(
        app.join(users[0]).await,
        503,
        "unavailable",
        "service unavailable",
    )
    .await;
    heal(&app, "queue_tokens").await;
    let read = app
        .get(&format!("/v1/queue-tokens/users/{}", users[0]), None)
        .await;
    assert_error(read, 404, "token_not_found", "token not found").await;
    assert_eq!(app.join(users[0]).await.status().as_u16(), 201);
    assert_eq!(app.join(users[1]).await.status().as_u16(), 201);
}
on_postgres!(a_failed_join_leaves_no_token_and_the_line_recovers);
