//! Durable holds, three ways, side by side in one run: boxoffice over HTTP, a Redis Lua hold
//! with `appendfsync always`, and the PostgreSQL row-lock design. Same concurrency, same hold
//! shape (two seats, all or nothing), seats plentiful so nearly every hold succeeds, every
//! success counted only once it is durable.
//!
//! ```text
//! cargo build --release --bin boxoffice --example holds
//! target/release/examples/holds                       # all three, PostgreSQL for boxoffice
//! target/release/examples/holds --systems boxoffice --store sqlite
//! ```
//!
//! Each system gets a fresh store (a new PostgreSQL database, a new Redis on a free port with
//! its own directory, a new SQLite file) and is run for `--seconds` after a short warm-up.
//! CPU per success is read from `/proc` for the serving processes: the boxoffice child, the
//! private redis-server, and every `postgres` process (the database's share of each system).

mod boxoffice;
mod measure;
mod plan;
mod redis;
mod row_locks;
#[path = "../drop/wire.rs"]
#[allow(dead_code)]
mod wire;

use clap::Parser;
use measure::Outcome;
use std::process::ExitCode;

#[derive(Parser, Debug, Clone)]
#[command(about = "Durable 2-seat holds/s: boxoffice over HTTP vs durable Redis vs row locks")]
pub struct Args {
    /// Requests in flight: keep-alive connections for each system.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Measured seconds per system (after --warmup-secs).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Seats available per system: enough that no run runs out (two per hold).
    #[arg(long, default_value_t = 1_000_000)]
    pub seats: usize,
    /// Which systems, comma separated: boxoffice, pipelined (this build with
    /// `--pipeline-commits`), cluster (this build as a one-node `--cluster`), redis, rowlocks,
    /// and `before` (with --before-bin).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "boxoffice,redis,rowlocks"
    )]
    pub systems: Vec<String>,
    /// The store of the boxoffice run: postgres or sqlite.
    #[arg(long, default_value = "postgres")]
    pub store: String,
    /// The PostgreSQL server (a fresh database is created on it and dropped after).
    #[arg(
        long,
        env = "BOXOFFICE_TEST_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub postgres: String,
    /// The boxoffice binary (default: beside this example, `target/release/boxoffice`).
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
    /// Another boxoffice binary (an older build), run as the system `before` in the same run.
    #[arg(long)]
    pub before_bin: Option<std::path::PathBuf>,
    /// HTTP worker threads of the boxoffice server (default: its own default).
    #[arg(long)]
    pub server_workers: Option<u16>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime builds on any machine that runs this");
    match runtime.block_on(run(&args)) {
        Ok(results) => {
            measure::print_table(&args, &results);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<Vec<Outcome>, String> {
    let plan = plan::Plan::new(args.seats, args.connections)?;
    let mut results = Vec::new();
    for system in &args.systems {
        let outcome = match system.as_str() {
            "boxoffice" => boxoffice::run(args, &plan, boxoffice::Build::This).await?,
            "pipelined" => boxoffice::run(args, &plan, boxoffice::Build::Pipelined).await?,
            "cluster" => boxoffice::run(args, &plan, boxoffice::Build::Cluster).await?,
            "before" => {
                let bin = args
                    .before_bin
                    .as_deref()
                    .ok_or("the system `before` needs --before-bin")?;
                boxoffice::run(args, &plan, boxoffice::Build::Before(bin)).await?
            }
            "redis" => redis::run(args, &plan).await?,
            "rowlocks" => row_locks::run(args, &plan).await?,
            other => {
                return Err(format!(
                    "unknown system {other:?} (boxoffice, pipelined, before, redis, rowlocks)"
                ))
            }
        };
        eprintln!("{}", outcome.summary());
        results.push(outcome);
    }
    Ok(results)
}
