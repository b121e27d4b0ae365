//! The run's preparation, outside the measured phase: the in-process server with this run's
//! settings, and over HTTP with the admin key the funded users and the concert they buy into.
//! Users are created with a zero balance and funded by a recharge so the ledger explains
//! every balance.

use crate::args::Args;
use crate::server::{self, Spawned};
use boxoffice::config::Settings;
use futures_util::stream::{self, StreamExt};
use reqwest::{Client, RequestBuilder};
use serde_json::{json, Value};

/// Every seat's price, in won.
pub const PRICE: i64 = 10_000;
/// The admin key an in-process server is given.
pub const SPAWN_ADMIN_KEY: &str = "drop-load-generator-admin-key-32-bytes";

/// A POST carrying the admin key.
fn admin(drop_client: &Client, key: &str, url: String) -> RequestBuilder {
    drop_client.post(url).header("X-Admin-Key", key)
}

/// Creates the users (zero balance) and funds each with a recharge; returns their ids.
pub async fn create_users(
    client: &Client,
    base: &str,
    key: &str,
    n: usize,
    fund: i64,
) -> Result<Vec<i64>, String> {
    let made: Vec<Result<i64, String>> = stream::iter(0..n)
        .map(|i| async move {
            let created = admin(client, key, format!("{base}/v1/admin/users"))
                .json(&json!({ "name": format!("drop-{i}"), "balance": 0 }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = created.status();
            let body: Value = created.json().await.map_err(|e| e.to_string())?;
            let user = body["userId"]
                .as_i64()
                .ok_or_else(|| format!("creating a user answered {status}: {body}"))?;
            let charged = client
                .post(format!("{base}/v1/balance/users/{user}/recharge"))
                .json(&json!({ "amount": fund }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !charged.status().is_success() {
                return Err(format!(
                    "recharging user {user} answered {}",
                    charged.status()
                ));
            }
            Ok(user)
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut users = made.into_iter().collect::<Result<Vec<i64>, String>>()?;
    users.sort_unstable();
    Ok(users)
}

/// Creates the concert; returns its id and its schedules' ids.
pub async fn create_concert(
    client: &Client,
    base: &str,
    key: &str,
    args: &Args,
) -> Result<(i64, Vec<i64>), String> {
    let per_schedule = args.seats_per_schedule();
    let schedules: Vec<Value> = (0..args.schedules)
        .map(|i| {
            let seats: Vec<Value> = (1..=per_schedule)
                .map(|n| json!({ "seatNumber": n, "price": PRICE }))
                .collect();
            json!({
                "concertAt": format!("2099-01-{:02}T10:00:00", i % 28 + 1),
                "reservationAt": "2020-01-01T00:00:00",
                "seats": seats,
            })
        })
        .collect();
    let response = admin(client, key, format!("{base}/v1/admin/concerts"))
        .json(&json!({ "name": "drop", "schedules": schedules }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    let concert = body["concertId"]
        .as_i64()
        .ok_or_else(|| format!("creating the concert answered {status}: {body}"))?;
    let ids = body["schedules"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["scheduleId"].as_i64()).collect())
        .unwrap_or_default();
    Ok((concert, ids))
}

/// Starts the application in-process with this run's settings.
pub fn spawn_server(args: &Args, url: &str) -> Result<Spawned, String> {
    let mut settings = Settings::for_database(url);
    settings.admin_key = Some(SPAWN_ADMIN_KEY.into());
    settings.http_workers = args.server_workers.max(1);
    settings.engine.max_active = args.max_active as usize;
    settings.engine.max_seats_per_user = args.seats_per_user as u32;
    settings.join_pow.bits = args.join_pow_bits;
    server::spawn_server(settings)
}
