//! The door's load generator (API.md §12): durable check-ins per second over HTTP. Against a
//! running server it buys `--tickets` tickets (a concert of that many seats, bought 4 at a time
//! by fresh users through the waiting room), reads their codes, then sends one
//! `POST /v1/checkins` per ticket, `--concurrency` at a time, and reports the rate and latency
//! percentiles of the check-ins (every one ADMITTED, each answered only once durable).
//!
//! ```sh
//! cargo run --release -- serve --database-url postgres://postgres@127.0.0.1:5432/door \
//!     --admin-key "$(printf 'k%.0s' $(seq 40))" --max-active 100000 &
//! cargo run --release --example checkins -- --base-url http://127.0.0.1:8080 \
//!     --admin-key "$(printf 'k%.0s' $(seq 40))" --tickets 20000 --concurrency 256
//! ```

use clap::Parser;
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use reqwest::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Durable check-ins per second over HTTP")]
struct Args {
    #[arg(long)]
    base_url: String,
    #[arg(long)]
    admin_key: String,
    /// Tickets to buy and then check in (a multiple of 4).
    #[arg(long, default_value_t = 10_000)]
    tickets: usize,
    /// Check-ins in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn post(client: &Client, url: String, key: &str, body: Value) -> Result<Value, Failure> {
    let answer = client
        .post(url)
        .header("X-Admin-Key", key)
        .json(&body)
        .send()
        .await?;
    Ok(answer.json().await?)
}

/// A fresh user buys four seats: join, wait for ACTIVE, hold, pay.
async fn buy(args: &Args, client: &Client, concert: &Value, seats: &[i64]) -> Result<i64, Failure> {
    let base = &args.base_url;
    let user = post(
        client,
        format!("{base}/v1/admin/users"),
        &args.admin_key,
        json!({ "name": "door", "balance": 1_000_000 }),
    )
    .await?["userId"]
        .as_i64()
        .ok_or("no user id")?;
    let joined = post(
        client,
        format!("{base}/v1/queue-tokens/users/{user}"),
        "",
        json!({}),
    )
    .await?;
    let token = joined["tokenId"].as_i64().ok_or("no token")?;
    for _ in 0..600 {
        let status: Value = client
            .get(format!("{base}/v1/queue-status/users/{user}"))
            .header("TOKEN-ID", token.to_string())
            .send()
            .await?
            .json()
            .await?;
        if status["status"] == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hold = json!({ "userId": user, "concertId": concert["concertId"], "scheduleId": concert["schedules"][0]["scheduleId"], "seatIds": seats });
    let held: Value = client
        .post(format!("{base}/v1/reservations"))
        .header("TOKEN-ID", token.to_string())
        .json(&hold)
        .send()
        .await?
        .json()
        .await?;
    let reservation = held["reservationId"].as_i64().ok_or("no reservation")?;
    client
        .post(format!("{base}/v1/payments/users/{user}"))
        .header("TOKEN-ID", token.to_string())
        .json(&json!({ "reservationId": reservation }))
        .send()
        .await?
        .error_for_status()?;
    Ok(user)
}

async fn codes_of(args: &Args, client: &Client, user: i64) -> Result<Vec<String>, Failure> {
    let listed: Value = client
        .get(format!("{}/v1/tickets/users/{user}", args.base_url))
        .send()
        .await?
        .json()
        .await?;
    Ok(listed["tickets"]
        .as_array()
        .ok_or("no tickets")?
        .iter()
        .filter_map(|t| t["code"].as_str().map(str::to_string))
        .collect())
}

async fn prepare(args: &Args, client: &Client) -> Result<Vec<String>, Failure> {
    let seats: Vec<Value> = (1..=args.tickets)
        .map(|n| json!({ "seatNumber": n, "price": 100 }))
        .collect();
    let concert = post(client, format!("{}/v1/admin/concerts", args.base_url), &args.admin_key,
        json!({ "name": "door", "schedules": [ { "concertAt": "2099-01-01T20:00:00", "reservationAt": "2020-01-01T00:00:00", "seats": seats } ] }))
        .await?;
    let seat_ids: Vec<i64> = concert["schedules"][0]["seatIds"]
        .as_array()
        .ok_or("no seat ids in the created concert")?
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    let buyers: Vec<Result<i64, Failure>> = stream::iter(seat_ids.chunks(4))
        .map(|four| buy(args, client, &concert, four))
        .buffer_unordered(64)
        .collect()
        .await;
    let mut codes = Vec::with_capacity(args.tickets);
    for user in buyers {
        codes.extend(codes_of(args, client, user?).await?);
    }
    Ok(codes)
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let client = Client::builder().pool_max_idle_per_host(1024).build()?;
    let codes = prepare(&args, &client).await?;
    eprintln!("{} tickets bought; checking them in", codes.len());
    let started = Instant::now();
    let outcomes: Vec<(u16, Duration)> = stream::iter(codes)
        .map(|code| {
            let client = &client;
            let url = format!("{}/v1/checkins", args.base_url);
            let key = args.admin_key.clone();
            async move {
                let at = Instant::now();
                let status = client
                    .post(url)
                    .header("X-Door-Key", key)
                    .json(&json!({ "code": code, "gate": "bench" }))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                (status, at.elapsed())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut latency = Histogram::<u64>::new(3)?;
    for (_, took) in &outcomes {
        latency.record(took.as_micros() as u64)?;
    }
    let admitted = outcomes.iter().filter(|(s, _)| *s == 200).count();
    println!(
        "check-ins: {admitted} admitted of {} in {:.2} s = {:.0}/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        outcomes.len(),
        elapsed.as_secs_f64(),
        outcomes.len() as f64 / elapsed.as_secs_f64(),
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.max() as f64 / 1000.0,
    );
    Ok(())
}
