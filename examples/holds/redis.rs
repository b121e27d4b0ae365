//! The durable-Redis baseline: a private `redis-server` on a free port with `appendonly yes`
//! and `appendfsync always` (it fsyncs the AOF before answering each event-loop round), and a
//! Lua script that holds every seat or none and records the reservation. Spoken to in RESP
//! over one keep-alive connection per client, `EVALSHA` each time.

use crate::boxoffice::free_port;
use crate::measure::{drive, CpuMeter, Outcome, Processes, Tally};
use crate::plan::Plan;
use crate::Args;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// KEYS are the seats, ARGV[1] the reservation id, ARGV[2] the user: all free, or nothing.
const HOLD: &str = "for i = 1, #KEYS do if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end end \
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1]) end \
redis.call('HSET', 'reservation:' .. ARGV[1], 'user', ARGV[2], 'seats', table.concat(KEYS, ','), 'status', 'PAYMENT_PENDING') \
return 1";

struct Redis {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn command(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One RESP connection, one request at a time.
struct Resp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Resp {
    async fn open(port: u16) -> Result<Resp, String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Resp {
            stream,
            buf: Vec::with_capacity(256),
        })
    }

    /// Sends `request` and returns the reply's first line (without CRLF); bulk replies are
    /// read whole and returned as their payload.
    async fn call(&mut self, request: &[u8]) -> Result<String, String> {
        self.stream
            .write_all(request)
            .await
            .map_err(|e| e.to_string())?;
        self.buf.clear();
        let line_end = loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            let mut chunk = [0u8; 512];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("redis closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let line = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
        if let Some(len) = line.strip_prefix('$') {
            let len: usize = len.parse().map_err(|_| format!("bad reply {line}"))?;
            while self.buf.len() < line_end + 2 + len + 2 {
                let mut chunk = [0u8; 512];
                let n = self
                    .stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("redis closed the connection".into());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(
                String::from_utf8_lossy(&self.buf[line_end + 2..line_end + 2 + len]).to_string(),
            );
        }
        Ok(line)
    }
}

async fn start() -> Result<(Redis, u16), String> {
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("holds-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(&dir)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server: {e} (apt-get install redis-server)"))?;
    let redis = Redis { child, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = Resp::open(port).await {
            if c.call(&command(&[b"PING"]))
                .await
                .is_ok_and(|r| r == "+PONG")
            {
                return Ok((redis, port));
            }
        }
        if Instant::now() > deadline {
            return Err("redis-server did not answer within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(args: &Args, plan: &Plan) -> Result<Outcome, String> {
    let (redis, port) = start().await?;
    let mut setup = Resp::open(port).await?;
    let sha = setup
        .call(&command(&[b"SCRIPT", b"LOAD", HOLD.as_bytes()]))
        .await?;
    if sha.len() != 40 {
        return Err(format!("SCRIPT LOAD answered {sha}"));
    }
    // The baseline is only fair if every write is on disk before its answer.
    let info = setup.call(&command(&[b"INFO", b"persistence"])).await?;
    if !info.contains("aof_enabled:1") {
        return Err(format!(
            "redis on port {port} has no append-only file: {info}"
        ));
    }
    let sha = Arc::new(sha);
    let plan = Arc::new(Plan {
        schedules: plan.schedules,
        users: plan.users,
        connections: plan.connections,
    });
    let pid = redis.child.id();
    let outcome = drive(
        "Redis Lua hold, appendfsync always".into(),
        args,
        CpuMeter::new(vec![("redis", Processes::Pid(pid))]),
        |c, window| {
            let (sha, plan) = (sha.clone(), plan.clone());
            async move {
                let mut tally = Tally::new();
                let mut conn = Resp::open(port).await?;
                for (n, hold) in plan.holds_of(c).enumerate() {
                    if window.is_over() {
                        break;
                    }
                    let k1 = format!("seat:{}:{}", hold.schedule, hold.seats[0]);
                    let k2 = format!("seat:{}:{}", hold.schedule, hold.seats[1]);
                    let rid = format!("{c}-{n}");
                    let user = hold.user.to_string();
                    let request = command(&[
                        b"EVALSHA",
                        sha.as_bytes(),
                        b"2",
                        k1.as_bytes(),
                        k2.as_bytes(),
                        rid.as_bytes(),
                        user.as_bytes(),
                    ]);
                    let started = Instant::now();
                    let outcome = match conn.call(&request).await {
                        Ok(r) if r == ":1" => Ok(true),
                        Ok(r) if r == ":0" => Ok(false),
                        Ok(r) => Err(r),
                        Err(e) => Err(e),
                    };
                    tally.record(&window, started, outcome);
                }
                Ok(tally)
            }
        },
    )
    .await;
    drop(redis);
    outcome
}
