//! The ticket-drop load generator: virtual users do the whole drop over HTTP — join the
//! waiting room, poll until ACTIVE, list the schedules, read a seat map, reserve (again, on
//! other seats, after "reservation failed"), pay, and, if asked, what a ticket holder does
//! next (check in at the door, refund, transfer) — closed-loop or open-loop, and it reports
//! throughput and latency percentiles per step. At the end it checks the invariants against
//! the store: no seat sold twice, sold seats = paid reservations = acknowledged payments,
//! every balance = recharges − payments + refunds, every answered check-in, refund and
//! transfer stored as answered, and the service's own audit of each schedule. It exits
//! non-zero if one fails.
//!
//! ```sh
//! # In-process server on a throwaway SQLite file (the CI smoke run, under 30 s):
//! cargo run --release --example drop -- --smoke
//! # The same drop with a ticket's life after the sale mixed in:
//! cargo run --release --example drop -- --spawn --database-url postgres://postgres@127.0.0.1:5432/drop \
//!     --checkin-percent 20 --refund-percent 10 --transfer-percent 10
//! # A bigger drop on PostgreSQL, server in-process:
//! cargo run --release --example drop -- --spawn --database-url postgres://postgres@127.0.0.1:5432/drop \
//!     --users 20000 --seats 20000 --schedules 4 --concurrency 256
//! # Against a running server (its admin key; --database-url for the invariant checks):
//! cargo run --release --example drop -- --base-url http://127.0.0.1:8080 --admin-key KEY \
//!     --database-url postgres://…/boxoffice
//! # Against three nodes, users round robin, 503s and connection errors retried twice:
//! cargo run --release --example drop -- --base-url http://127.0.0.1:8081,http://127.0.0.1:8082 \
//!     --base-url http://127.0.0.1:8083 --retry-503 2 --admin-key KEY --database-url postgres://…
//! ```
//!
//! The measured phase speaks HTTP/1.1 through its own small client (`wire.rs`), so the
//! generator costs the shared cores as little as it can; `--verify-seat-maps` (on with
//! `--smoke`) checks its seat-map scan against a full JSON parse.
//!
//! Setup (creating users, funding their wallets with a recharge, creating the concert) is done
//! over HTTP with the admin key and is not part of the measured phase. Users are created with
//! a zero balance and funded by a recharge so the ledger explains every balance.

use args::Args;
use boxoffice::store::MemoryStore;
use clap::Parser;
use invariants::Expectations;
use nodes::Nodes;
use reqwest::Client;
use scenario::Scenario;
use setup::{PRICE, SPAWN_ADMIN_KEY};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod args;
mod audit;
mod invariants;
mod nodes;
mod retry;
mod scenario;
mod seat_map;
#[path = "../support/server.rs"]
mod server;
mod session;
mod setup;
mod stats;
mod wire;

fn main() -> ExitCode {
    let args = Args::parse().resolved();
    if let Err(e) = args.check() {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    boxoffice::telemetry::init_with_default("warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the client runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // The throwaway SQLite file of a spawned server without --database-url.
    let scratch = std::env::temp_dir().join(format!("boxoffice-drop-{}", std::process::id()));
    let database_url = match (&args.database_url, args.spawn) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => {
            if let Err(e) = std::fs::create_dir_all(&scratch) {
                eprintln!("cannot create {}: {e}", scratch.display());
                return ExitCode::from(2);
            }
            Some(format!("sqlite://{}", scratch.join("drop.db").display()))
        }
        (None, false) => None,
    };
    // An in-memory store lives while a handle is held: hold one for the checks at the end.
    let memory = match &database_url {
        Some(url) if url.starts_with("memory:") => runtime.block_on(MemoryStore::connect(url)).ok(),
        _ => None,
    };
    let spawned = if args.spawn {
        let url = database_url.clone().unwrap_or_default();
        match setup::spawn_server(&args, &url) {
            Ok(spawned) => Some(spawned),
            Err(e) => {
                eprintln!("cannot start the server: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    // The in-process server, else every --base-url (resolved() spawns when none is given).
    let bases = match &spawned {
        Some(s) => vec![s.base.clone()],
        None => args.base_urls.clone(),
    };
    let admin_key = if spawned.is_some() {
        SPAWN_ADMIN_KEY.to_string()
    } else {
        args.admin_key.clone().unwrap_or_default()
    };
    let code = runtime.block_on(drive(
        &args,
        &bases,
        admin_key,
        database_url.as_deref(),
        memory,
    ));
    if let Some(spawned) = spawned {
        // Graceful: in-flight requests finish and the persister drains before the thread ends.
        runtime.block_on(spawned.handle.stop(true));
        let _ = spawned.thread.join();
    }
    if args.database_url.is_none() && args.spawn && !args.keep {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    code
}

/// Sets the drop up, runs it, prints the report and checks the invariants: the exit code is 1
/// if an invariant fails (or cannot be checked), or a request was answered 5xx or with a body
/// the generator could not read (unless `--tolerate-5xx`), 2 if the run could not start or no user
/// completed.
async fn drive(
    args: &Args,
    bases: &[String],
    admin_key: String,
    database_url: Option<&str>,
    memory: Option<MemoryStore>,
) -> ExitCode {
    let client = match Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(64))
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("cannot build the HTTP client: {e}");
            return ExitCode::from(2);
        }
    };
    // Setup goes to the first node; every node serves the same database.
    let Some(base) = bases.first().cloned() else {
        eprintln!("no base URL to send the drop to");
        return ExitCode::from(2);
    };
    let setup_started = Instant::now();
    let fund = PRICE * args.seats_per_user as i64;
    let users = match setup::create_users(&client, &base, &admin_key, args.users, fund).await {
        Ok(users) if !users.is_empty() => users,
        Ok(_) => {
            eprintln!("no users: nothing to do");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("setup failed: {e}");
            return ExitCode::from(2);
        }
    };
    // The users transfers go to (funded like the others, so the ledger explains them too).
    let recipients = match args.transfer_recipients() {
        0 => Vec::new(),
        n => match setup::create_users(&client, &base, &admin_key, n, fund).await {
            Ok(recipients) => recipients,
            Err(e) => {
                eprintln!("setup failed: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let (concert, schedules) = match setup::create_concert(&client, &base, &admin_key, args).await {
        Ok(created) => created,
        Err(e) => {
            eprintln!("setup failed: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "setup: {} users funded with {fund} won each, concert {concert} with {} schedules of {} seats, in {:.1} s ({})",
        users.len(),
        schedules.len(),
        args.seats_per_schedule(),
        setup_started.elapsed().as_secs_f64(),
        match args.open_loop_rate {
            Some(rate) => format!("open loop at {rate}/s, at most {} in flight", args.concurrency),
            None => format!("closed loop, {} users at once", args.concurrency),
        }
    );
    if bases.len() > 1 {
        println!(
            "users round robin over {} nodes: {}",
            bases.len(),
            bases.join(", ")
        );
    }
    let nodes = match Nodes::resolve(bases, Duration::from_secs(30)).await {
        Ok(nodes) => nodes,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let door_key = args.door_key.clone().unwrap_or_else(|| admin_key.clone());
    let last = recipients.last().copied().unwrap_or(users[users.len() - 1]);
    let bounds = (users[0], last.max(users[users.len() - 1]));
    let sc = Scenario::new(nodes, concert, &schedules, args).after_sale(door_key, recipients);
    let (mut stats, elapsed, started, dropped) = scenario::run(Arc::new(sc), Arc::new(users)).await;
    stats::report(&stats, elapsed, started, dropped);
    let faults_ok = faults_tolerated(&stats, args.tolerate_5xx);

    let Some(url) = database_url else {
        println!("\nno --database-url: invariants not checked");
        return if !faults_ok {
            ExitCode::from(1)
        } else if stats.completed > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    };
    let expectations = Expectations {
        users: bounds,
        schedules,
        acknowledged_payments: stats.completed,
        unknown_payments: stats.unknown_payments,
        waitlisted: stats.waitlisted,
        after: std::mem::take(&mut stats.after),
    };
    let mut checks = match invariants::check(url, memory, &expectations).await {
        Ok(checks) => checks,
        Err(e) => {
            eprintln!("cannot check the invariants: {e}");
            return ExitCode::from(1);
        }
    };
    checks.extend(audit::checks(&client, &base, &admin_key, &expectations.schedules).await);
    if !invariants::print(&checks) || !faults_ok {
        return ExitCode::from(1);
    }
    if stats.completed == 0 {
        eprintln!("no user completed the drop");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

/// Whether the run's 5xx answers, unreadable bodies (none, or tolerated) and steps after the
/// sale answered otherwise than promised (none) let it pass; prints why not.
fn faults_tolerated(stats: &stats::Stats, tolerate_5xx: bool) -> bool {
    let (server_errors, unreadable) = stats.server_faults();
    // A 5xx after the sale is counted above; the rest is a broken promise.
    let after_sale = stats.after_sale_failed;
    if after_sale > 0 && !tolerate_5xx {
        eprintln!("FAILED: {after_sale} steps after the sale were not answered as promised");
    }
    if unreadable > 0 {
        eprintln!("FAILED: {unreadable} answers with a body the generator could not read");
    }
    if server_errors > 0 && !tolerate_5xx {
        eprintln!("FAILED: {server_errors} answers were 5xx (--tolerate-5xx for a fault run)");
    }
    unreadable == 0 && (server_errors == 0 && after_sale == 0 || tolerate_5xx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stats::{Stats, Step};

    #[test]
    fn any_5xx_or_unreadable_answer_fails_the_run() {
        assert!(faults_tolerated(&Stats::new(), false));
        let mut one_503 = Stats::new();
        one_503.step(Step::Pay).server_errors += 1;
        assert!(!faults_tolerated(&one_503, false));
        assert!(faults_tolerated(&one_503, true), "a fault run expects 5xx");
        let mut mismatch = Stats::new();
        mismatch.step(Step::Seats).unreadable += 1;
        assert!(!faults_tolerated(&mismatch, false));
        assert!(
            !faults_tolerated(&mismatch, true),
            "an unreadable seat map is never tolerated"
        );
        let mut refused = Stats::new();
        refused.fail_after_sale("refund: 409 refund_not_allowed");
        assert!(!faults_tolerated(&refused, false));
        assert!(
            faults_tolerated(&refused, true),
            "a fault run may lose a step after the sale"
        );
    }
}
