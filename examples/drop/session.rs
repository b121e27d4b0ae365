//! One virtual user's HTTP: its kept-alive connection and request buffer, each exchange timed
//! into its step's statistics, 503s retried, and the answer sorted into a typed success, a
//! refusal with its error slug, or a broken exchange.

use crate::stats::{Stats, Step};
use crate::wire::{Conn, Failure, Pool, RequestBuf, Target};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// A 503 (`Retry-After`) is retried this many times, after this long: the point is to measure
/// the service, not to hammer it while it sheds load.
const UNAVAILABLE_RETRIES: usize = 3;
const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(20);

/// A response: the typed body of a success, or the error slug of a refusal.
pub enum Answer<T> {
    Ok(T),
    Refused(u16, String),
    /// No response, a body that did not arrive, or a success whose body did not parse.
    Broken(String),
}

impl<T> Answer<T> {
    /// Why the step did not succeed, for the report.
    pub fn why(&self) -> String {
        match self {
            Answer::Ok(_) => "ok".into(),
            Answer::Refused(status, slug) => format!("{status} {slug}"),
            Answer::Broken(why) => why.clone(),
        }
    }
}

/// The error envelope: only its slug matters here.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// A body parsed into the fields the drop needs; a parse error as text, for the report.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// One virtual user's connection and request buffer, for its whole drop.
pub struct Session<'s> {
    target: &'s Target,
    pool: &'s Pool,
    conn: Option<Conn>,
    request: RequestBuf,
}

impl<'s> Session<'s> {
    /// A session without a connection yet: its first exchange takes one from the pool.
    pub fn new(target: &'s Target, pool: &'s Pool) -> Session<'s> {
        Session {
            target,
            pool,
            conn: None,
            request: RequestBuf::new(),
        }
    }

    /// Writes the next request (sent by [`Session::send`]).
    pub fn prepare(
        &mut self,
        method: &str,
        path: std::fmt::Arguments<'_>,
        token: Option<i64>,
        body: Option<std::fmt::Arguments<'_>>,
    ) {
        self.request.prepare(self.target, method, path, token, body);
    }

    /// One exchange; sent once more on a new connection if a kept-alive one turned out to
    /// be closed before any of the answer arrived (as hyper does).
    async fn exchange(&mut self) -> Result<u16, String> {
        let mut conn = match self.conn.take() {
            Some(conn) if !conn.is_dead() => conn,
            _ => self.pool.take(self.target).await?,
        };
        let status = match conn.send(self.target, &self.request).await {
            Ok(status) => status,
            Err(Failure::Stale(_)) => {
                conn = Conn::open(self.target).await?;
                conn.send(self.target, &self.request)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Err(failure) => return Err(failure.to_string()),
        };
        self.conn = Some(conn);
        Ok(status)
    }

    /// Sends the prepared request, timing it (until the whole body is in) into `step`, and
    /// parses a success with `parse`; a 503 is retried a few times.
    pub async fn send<T>(
        &mut self,
        stats: &mut Stats,
        step: Step,
        mut parse: impl FnMut(&[u8]) -> Result<T, String>,
    ) -> Answer<T> {
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let exchanged = self.exchange().await;
            let micros = started.elapsed().as_micros() as u64;
            let s = stats.step(step);
            s.latency.record(micros);
            let status = match exchanged {
                Ok(status) => status,
                Err(e) => {
                    s.transport_errors += 1;
                    return Answer::Broken(format!("transport: {e}"));
                }
            };
            // `exchange` leaves the connection in place after every answer.
            let body = self.conn.as_ref().map(|c| c.body()).unwrap_or_default();
            if (200..300).contains(&status) {
                s.ok += 1;
                return match parse(body) {
                    Ok(parsed) => Answer::Ok(parsed),
                    Err(e) => Answer::Broken(format!("{status} with an unexpected body: {e}")),
                };
            }
            if status >= 500 {
                s.server_errors += 1;
            } else {
                s.client_errors += 1;
            }
            if status == 503 && attempt < UNAVAILABLE_RETRIES {
                attempt += 1;
                tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
                continue;
            }
            let slug = json::<ErrorBody>(body).map(|b| b.error).unwrap_or_default();
            return Answer::Refused(status, slug);
        }
    }

    /// Gives the connection back for the next user.
    pub fn finish(self) {
        if let Some(conn) = self.conn {
            self.pool.give(conn);
        }
    }
}
