//! Tickets and the door (API.md §12): issued with the payment, verifiable offline with the
//! public key alone, admitted exactly once however many gates scan them, refused when forged,
//! signed by another key, transferred away, or scanned again.

use crate::helpers::*;
use crate::on_both_stores;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{json, Value};

/// A user who bought `seats` seats of a fresh concert; answers (user, reservation, concert).
pub(crate) async fn buyer(app: &TestApp, seats: usize) -> (i64, i64, Concert) {
    let user = app.create_user(1_000_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(seats, 1_000).await;
    let reserved = body(app.reserve(user, token, &concert, &concert.seats).await).await;
    let id = reserved["reservationId"].as_i64().expect("a reservation");
    assert_eq!(app.pay(user, token, id).await.status().as_u16(), 201);
    (user, id, concert)
}

pub(crate) async fn tickets(app: &TestApp, user: i64) -> Vec<Value> {
    let listed = body(app.get(&format!("/v1/tickets/users/{user}"), None).await).await;
    listed["tickets"].as_array().expect("a list").clone()
}

pub(crate) async fn scan(app: &TestApp, code: &str, gate: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/checkins"))
        .header("X-Door-Key", ADMIN_KEY)
        .json(&json!({ "code": code, "gate": gate }))
        .send()
        .await
        .expect("the server answers")
}

/// What an offline scanner does with the public key alone: check the signature over
/// `bo1.<payload>`, then read the payload.
fn verify_offline(public_key: &[u8; 32], code: &str) -> Option<Value> {
    let key = VerifyingKey::from_bytes(public_key).ok()?;
    let (signed, signature) = code.rsplit_once('.')?;
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?).ok()?;
    key.verify_strict(signed.as_bytes(), &signature).ok()?;
    let payload = signed.strip_prefix("bo1.")?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

async fn public_key(app: &TestApp) -> [u8; 32] {
    let key = body(app.get("/v1/tickets/public-key", None).await).await;
    assert_eq!(key["algorithm"], "Ed25519");
    let bytes = STANDARD
        .decode(key["publicKey"].as_str().expect("base64"))
        .expect("base64");
    bytes.try_into().expect("32 bytes")
}

async fn a_payment_issues_one_ticket_per_seat_each_verifiable_offline(backend: Backend) {
    let app = spawn_app(backend).await;
    let (user, reservation, concert) = buyer(&app, 3).await;
    let held = tickets(&app, user).await;
    assert_eq!(held.len(), 3);
    let key = public_key(&app).await;
    let mut seats = Vec::new();
    for t in &held {
        assert_eq!(t["reservationId"], reservation);
        assert_eq!(t["scheduleId"], concert.schedule);
        assert_eq!(t["status"], "VALID");
        let claims = verify_offline(&key, t["code"].as_str().unwrap()).expect("a valid code");
        assert_eq!(claims["t"], t["ticketId"]);
        assert_eq!(claims["s"], concert.schedule);
        assert_eq!(claims["e"], t["seatId"]);
        assert_eq!(claims["v"], 1);
        seats.push(t["seatId"].as_i64().unwrap());
    }
    seats.sort_unstable();
    let mut bought = concert.seats.clone();
    bought.sort_unstable();
    assert_eq!(seats, bought);
    // Written in the payment's transaction: as many rows as seats, beside the payment.
    let rows = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM tickets WHERE reservation_id = {reservation}"
        ))
        .await;
    assert_eq!(rows, 3);
    let qr = app
        .get(
            &format!("/v1/tickets/{}/qr.svg?userId={user}", held[0]["ticketId"]),
            None,
        )
        .await;
    assert_eq!(qr.status().as_u16(), 200);
    assert_eq!(qr.headers()["content-type"], "image/svg+xml");
    assert!(qr.text().await.unwrap().contains("<svg"));
    // Another user does not see it.
    let other = app.create_user(0).await;
    assert_eq!(
        app.get(
            &format!("/v1/tickets/{}/qr.svg?userId={other}", held[0]["ticketId"]),
            None
        )
        .await
        .status()
        .as_u16(),
        404
    );
}
on_both_stores!(a_payment_issues_one_ticket_per_seat_each_verifiable_offline);

async fn a_thousand_scans_from_ten_gates_admit_exactly_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let (user, _, _) = buyer(&app, 1).await;
    let code = tickets(&app, user).await[0]["code"]
        .as_str()
        .unwrap()
        .to_string();
    let scans = (0..1000).map(|i| {
        let (app, code) = (&app, code.clone());
        async move {
            let gate = format!("gate-{}", i % 10);
            let answer = scan(app, &code, &gate).await;
            (answer.status().as_u16(), body(answer).await)
        }
    });
    let answers = futures_util::future::join_all(scans).await;
    let admitted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(admitted.len(), 1, "exactly one admission");
    assert_eq!(admitted[0]["result"], "ADMITTED");
    let first_gate: Vec<&str> = answers
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, b)| b["gate"].as_str().unwrap())
        .collect();
    assert_eq!(first_gate.len(), 999);
    // Every refusal names the same first scan; its gate is the admitted one's.
    let stored_gate = app
        .db
        .scalar("SELECT COUNT(DISTINCT gate) FROM tickets WHERE status = 'CHECKED_IN'")
        .await;
    assert_eq!(stored_gate, 1);
    let first = &first_gate[0];
    assert!(first_gate.iter().all(|g| g == first));
    let listed = tickets(&app, user).await;
    assert_eq!(listed[0]["status"], "CHECKED_IN");
    assert_eq!(listed[0]["checkedInAt"], admitted[0]["checkedInAt"]);
    for (status, b) in answers.iter().filter(|(s, _)| *s == 409) {
        assert_eq!(*status, 409);
        assert_eq!(b["error"], "already_checked_in");
        assert_eq!(b["checkedInAt"], admitted[0]["checkedInAt"]);
    }
}
on_both_stores!(a_thousand_scans_from_ten_gates_admit_exactly_one);

/// `code` with its payload changed and the signature kept.
fn tampered(code: &str) -> String {
    let parts: Vec<&str> = code.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["e"] = json!(claims["e"].as_i64().unwrap() + 1);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    format!("bo1.{payload}.{}", parts[2])
}

async fn forged_foreign_old_and_keyless_scans_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let (user, _, _) = buyer(&app, 2).await;
    let held = tickets(&app, user).await;
    let code = held[0]["code"].as_str().unwrap().to_string();
    assert_error(
        scan(&app, &tampered(&code), "g").await,
        400,
        "invalid_ticket",
        "invalid ticket",
    )
    .await;
    // The same claims signed by a key that is not the service's.
    let foreign = {
        let keys = boxoffice::domain::ticket::TicketKeys::from_seed([7; 32]);
        let payload = code.split('.').nth(1).unwrap();
        let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        keys.sign(&claims)
    };
    assert_error(
        scan(&app, &foreign, "g").await,
        400,
        "invalid_ticket",
        "invalid ticket",
    )
    .await;
    assert_error(
        scan(&app, "bo1.garbage", "g").await,
        400,
        "invalid_ticket",
        "invalid ticket",
    )
    .await;
    // Without the door's key (or the admin's).
    let keyless = app
        .client
        .post(app.url("/v1/checkins"))
        .header("X-Door-Key", "wrong")
        .json(&json!({ "code": code, "gate": "g" }))
        .send()
        .await
        .unwrap();
    assert_error(keyless, 403, "forbidden", "forbidden").await;
    // Transferred away: the old code is refused at once, the new one admitted once.
    let friend = app.create_user(0).await;
    let moved = app
        .client
        .post(app.url(&format!(
            "/v1/tickets/{}/transfer?userId={user}",
            held[0]["ticketId"]
        )))
        .json(&json!({ "toUserId": friend }))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status().as_u16(), 200);
    let moved = body(moved).await;
    assert_ne!(moved["code"], held[0]["code"]);
    assert_eq!(tickets(&app, friend).await.len(), 1);
    assert_eq!(tickets(&app, user).await.len(), 1);
    assert_error(
        scan(&app, &code, "g").await,
        400,
        "invalid_ticket",
        "invalid ticket",
    )
    .await;
    let new_code = moved["code"].as_str().unwrap();
    assert_eq!(scan(&app, new_code, "g").await.status().as_u16(), 200);
    // Checked in: no longer transferable.
    let again = app
        .client
        .post(app.url(&format!(
            "/v1/tickets/{}/transfer?userId={friend}",
            held[0]["ticketId"]
        )))
        .json(&json!({ "toUserId": user }))
        .send()
        .await
        .unwrap();
    assert_error(again, 409, "transfer_not_allowed", "transfer not allowed").await;
}
on_both_stores!(forged_foreign_old_and_keyless_scans_are_refused);

async fn offline_batches_from_two_gates_let_the_earliest_scan_win(backend: Backend) {
    let app = spawn_app(backend).await;
    let (user, _, _) = buyer(&app, 1).await;
    let code = tickets(&app, user).await[0]["code"]
        .as_str()
        .unwrap()
        .to_string();
    let batch = |gate: &'static str, at: &'static str| {
        let (app, code) = (&app, code.clone());
        async move {
            let answer = app
                .client
                .post(app.url("/v1/checkins/batch"))
                .header("X-Door-Key", ADMIN_KEY)
                .json(&json!({ "gate": gate, "scans": [ { "code": code, "scannedAt": at } ] }))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status().as_u16(), 200);
            body(answer).await["results"][0].clone()
        }
    };
    // The later scan reaches the service first; the earlier one still wins.
    let late = batch("south", "2030-01-01T20:05:00").await;
    assert_eq!(late["result"], "ADMITTED");
    let early = batch("north", "2030-01-01T20:01:00").await;
    assert_eq!(early["result"], "ADMITTED");
    let again = batch("south", "2030-01-01T20:05:00").await;
    assert_eq!(again["result"], "already_checked_in");
    assert_eq!(again["gate"], "north");
    assert_eq!(again["checkedInAt"], "2030-01-01T20:01:00");
    let stored = app
        .db
        .scalar("SELECT COUNT(*) FROM tickets WHERE gate = 'north' AND status = 'CHECKED_IN'")
        .await;
    assert_eq!(stored, 1);
    // And an online scan afterwards is told the earliest.
    let online = body(scan(&app, &code, "east").await).await;
    assert_eq!(online["gate"], "north");
}
on_both_stores!(offline_batches_from_two_gates_let_the_earliest_scan_win);

async fn a_transfer_racing_a_check_in_lets_exactly_one_win(backend: Backend) {
    let app = spawn_app(backend).await;
    for _ in 0..20 {
        let (user, _, _) = buyer(&app, 1).await;
        let friend = app.create_user(0).await;
        let t = tickets(&app, user).await[0].clone();
        let code = t["code"].as_str().unwrap();
        let transfer = app
            .client
            .post(app.url(&format!(
                "/v1/tickets/{}/transfer?userId={user}",
                t["ticketId"]
            )))
            .json(&json!({ "toUserId": friend }))
            .send();
        let (moved, scanned) = tokio::join!(transfer, scan(&app, code, "g"));
        let (moved, scanned) = (moved.unwrap().status().as_u16(), scanned.status().as_u16());
        // Either the transfer went first (the old code is then invalid) or the scan did (the
        // ticket is then no longer transferable): never both, never neither.
        assert!(
            (moved == 200 && scanned == 400) || (moved == 409 && scanned == 200),
            "transfer {moved}, scan {scanned}"
        );
    }
}
on_both_stores!(a_transfer_racing_a_check_in_lets_exactly_one_win);

async fn admissions_and_transfers_answered_before_a_kill_survive_it(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_process_app(db, &[]).await;
    let (user, _, _) = buyer(&app, 2).await;
    let friend = app.create_user(0).await;
    let held = tickets(&app, user).await;
    let key_before = public_key(&app).await;
    let admitted = body(scan(&app, held[0]["code"].as_str().unwrap(), "north").await).await;
    assert_eq!(admitted["result"], "ADMITTED");
    let moved = app
        .client
        .post(app.url(&format!(
            "/v1/tickets/{}/transfer?userId={user}",
            held[1]["ticketId"]
        )))
        .json(&json!({ "toUserId": friend }))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status().as_u16(), 200);
    let moved = body(moved).await;
    // SIGKILL right after the answers: nothing but the database carries them over.
    let app = app.crash().await;
    // The same key signs after the restart (kept in the store), so codes stay valid.
    assert_eq!(public_key(&app).await, key_before);
    let again = body(scan(&app, held[0]["code"].as_str().unwrap(), "south").await).await;
    assert_eq!(again["error"], "already_checked_in");
    assert_eq!(again["gate"], "north");
    assert_eq!(again["checkedInAt"], admitted["checkedInAt"]);
    let old = scan(&app, held[1]["code"].as_str().unwrap(), "south").await;
    assert_eq!(old.status().as_u16(), 400);
    assert_eq!(tickets(&app, friend).await[0]["code"], moved["code"]);
    let new = body(scan(&app, moved["code"].as_str().unwrap(), "south").await).await;
    assert_eq!(new["result"], "ADMITTED");
}
on_both_stores!(admissions_and_transfers_answered_before_a_kill_survive_it);
