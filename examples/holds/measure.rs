//! The measured window, per-connection tallies, CPU read from `/proc`, and the report.

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// When the measurement starts and ends; every connection runs from `start` until `end`.
#[derive(Clone, Copy)]
pub struct Window {
    pub measure_from: Instant,
    pub end: Instant,
}

impl Window {
    pub fn new(warmup: Duration, seconds: Duration) -> Window {
        let start = Instant::now();
        Window {
            measure_from: start + warmup,
            end: start + warmup + seconds,
        }
    }

    pub fn is_over(&self) -> bool {
        Instant::now() >= self.end
    }

    pub async fn wait_until_measuring(&self) {
        tokio::time::sleep_until(self.measure_from.into()).await;
    }

    pub async fn wait_until_over(&self) {
        tokio::time::sleep_until(self.end.into()).await;
    }
}

/// One connection's count of what finished inside the window.
pub struct Tally {
    pub ok: u64,
    pub refused: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Histogram<u64>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            ok: 0,
            refused: 0,
            errors: 0,
            first_error: None,
            // Microseconds, 1 µs to 1 minute, 3 significant figures.
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }

    /// Records one hold that started at `started`: counted only if it ended in the window.
    pub fn record(&mut self, window: &Window, started: Instant, outcome: Result<bool, String>) {
        let ended = Instant::now();
        if ended < window.measure_from || ended > window.end {
            return;
        }
        match outcome {
            Ok(true) => {
                self.ok += 1;
                let micros = (ended - started).as_micros() as u64;
                self.latency.saturating_record(micros.max(1));
            }
            Ok(false) => self.refused += 1,
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.refused += other.refused;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Both histograms have the same bounds.
        let _ = self.latency.add(other.latency);
    }
}

/// CPU seconds (user + system) so far of every process matching `which`.
pub fn cpu_seconds(which: &Processes) -> f64 {
    let ticks = clock_ticks();
    let mut total = 0.0;
    let pids: Vec<u32> = match which {
        Processes::WalMegabytes(url) => return wal_megabytes(url),
        Processes::Pid(pid) => vec![*pid],
        Processes::Named(name) => std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|pid: &u32| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == *name)
            })
            .collect(),
    };
    for pid in pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command (which may hold spaces) start after its ')'.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
                let user: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                let system: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                total += (user + system) / ticks;
            }
        }
    }
    total
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux this runs on; `getconf` says so if it differs.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

pub enum Processes {
    Pid(u32),
    Named(&'static str),
    /// Not a process: the WAL PostgreSQL has written (at this server URL), in MB, so that
    /// "µs per success" reads as WAL bytes per success (issue 30).
    WalMegabytes(String),
}

/// `pg_current_wal_lsn()` of the server at `url`, in MB, through `psql` (0 if unreadable).
fn wal_megabytes(url: &str) -> f64 {
    std::process::Command::new("psql")
        .args([
            "-XAtqc",
            "SELECT pg_current_wal_lsn() - '0/0'",
            &format!("{url}/postgres"),
        ])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .map_or(0.0, |bytes| bytes / 1e6)
}

/// CPU of the serving processes over the measured window.
pub struct CpuMeter {
    parts: Vec<(&'static str, Processes, f64)>,
}

impl CpuMeter {
    pub fn new(parts: Vec<(&'static str, Processes)>) -> CpuMeter {
        CpuMeter {
            parts: parts.into_iter().map(|(n, p)| (n, p, 0.0)).collect(),
        }
    }

    pub fn start(&mut self) {
        for (_, p, at) in &mut self.parts {
            *at = cpu_seconds(p);
        }
    }

    /// CPU seconds each part spent since `start`.
    pub fn stop(&self) -> Vec<(&'static str, f64)> {
        self.parts
            .iter()
            .map(|(n, p, at)| (*n, cpu_seconds(p) - at))
            .collect()
    }
}

/// One system's result.
pub struct Outcome {
    pub system: String,
    pub tally: Tally,
    pub seconds: f64,
    pub cpu: Vec<(&'static str, f64)>,
}

impl Outcome {
    pub fn per_sec(&self) -> f64 {
        self.tally.ok as f64 / self.seconds
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        self.tally.latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// CPU per success, in microseconds, per process group.
    fn cpu_per_success(&self) -> String {
        if self.tally.ok == 0 {
            return "-".into();
        }
        self.cpu
            .iter()
            .map(|(n, s)| format!("{n} {:.1}", s * 1e6 / self.tally.ok as f64))
            .collect::<Vec<_>>()
            .join(" + ")
    }

    pub fn summary(&self) -> String {
        format!(
            "{}: {:.0} successful holds/s ({} ok, {} refused, {} errors{}), p50 {:.2} ms, p99 {:.2} ms, CPU µs/success: {}",
            self.system,
            self.per_sec(),
            self.tally.ok,
            self.tally.refused,
            self.tally.errors,
            self.tally
                .first_error
                .as_ref()
                .map(|e| format!(": first {e}"))
                .unwrap_or_default(),
            self.percentile_ms(0.5),
            self.percentile_ms(0.99),
            self.cpu_per_success(),
        )
    }
}

pub fn print_table(args: &crate::Args, results: &[Outcome]) {
    println!(
        "\n{} connections, 2-seat all-or-nothing holds, {} s measured after {} s warm-up\n",
        args.connections, args.seconds, args.warmup_secs
    );
    println!("| system | successful durable holds/s | p50 ms | p99 ms | refused | errors | CPU µs per success |");
    println!("|---|---|---|---|---|---|---|");
    for r in results {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
            r.system,
            r.per_sec(),
            r.percentile_ms(0.5),
            r.percentile_ms(0.99),
            r.tally.refused,
            r.tally.errors,
            r.cpu_per_success()
        );
    }
}

/// Runs `connections` tasks made by `task` inside a window, measures the CPU of `cpu`, and
/// merges their tallies.
pub async fn drive<F, Fut>(
    system: String,
    args: &crate::Args,
    mut cpu: CpuMeter,
    task: F,
) -> Result<Outcome, String>
where
    F: Fn(usize, Window) -> Fut,
    Fut: std::future::Future<Output = Result<Tally, String>> + Send + 'static,
{
    let window = Window::new(
        Duration::from_secs(args.warmup_secs),
        Duration::from_secs(args.seconds),
    );
    let handles: Vec<_> = (0..args.connections)
        .map(|c| tokio::spawn(task(c, window)))
        .collect();
    window.wait_until_measuring().await;
    cpu.start();
    window.wait_until_over().await;
    let used = cpu.stop();
    let mut tally = Tally::new();
    for h in handles {
        let t = tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .map_err(|_| "a connection did not stop within 30 s of the window's end".to_string())?
            .map_err(|e| format!("a connection panicked: {e}"))??;
        tally.merge(t);
    }
    Ok(Outcome {
        system,
        tally,
        seconds: window.end.duration_since(window.measure_from).as_secs_f64(),
        cpu: used,
    })
}
