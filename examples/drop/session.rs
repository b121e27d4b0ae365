//! One virtual user's HTTP: its kept-alive connection and request buffer, each exchange timed
//! into its step's statistics, failures retried as the [`RetryPolicy`] says (each POST under
//! one `Idempotency-Key` for all its tries), and the answer sorted into a typed success, a
//! refusal with its error slug, or a broken exchange.

use crate::retry::{self, RetryPolicy};
use crate::stats::{Stats, Step};
use crate::wire::{Conn, Failure, Pool, RequestBuf, Target};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fmt::Write;
use std::time::Instant;

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

/// Whether the server answers a repeat of `step`'s request as it answered the first, so it
/// may be sent again even if the first reached the server: GETs; a join (it answers the live
/// token it gave, key or not); a hold, a payment or a refund under its `Idempotency-Key` (the
/// first answer is replayed). Without a key, a repeated hold would be refused for the seats
/// the first one took, and a repeated payment as already paid.
pub fn replayable(step: Step, keyed: bool) -> bool {
    match step {
        Step::Challenge
        | Step::Join
        | Step::Poll
        | Step::Schedules
        | Step::Seats
        | Step::Tickets => true,
        Step::Reserve | Step::Pay | Step::Refund => keyed,
        // A repeated join is `waitlist_already_joined`, a repeated check-in
        // `already_checked_in`, a repeated transfer `ticket_not_found`: not the first answer.
        Step::Waitlist | Step::Checkin | Step::Transfer => false,
    }
}

/// One virtual user's connection and request buffer, for its whole drop.
pub struct Session<'s> {
    target: &'s Target,
    pool: &'s Pool,
    conn: Option<Conn>,
    request: RequestBuf,
    policy: RetryPolicy,
    /// `Idempotency-Key`s are `drop-{run}-{user}-{n}`: unique per POST of the run, the same
    /// for every try of it.
    run: u32,
    user: i64,
    posts: u32,
    key: String,
    keyed: bool,
    /// The next POST carries a key whatever the policy (a refund always does).
    force_key: bool,
}

impl<'s> Session<'s> {
    /// A session of `user` in the run `run` (which makes its keys unique across runs on one
    /// database), without a connection yet: its first exchange takes one from the pool.
    pub fn new(
        target: &'s Target,
        pool: &'s Pool,
        policy: RetryPolicy,
        run: u32,
        user: i64,
    ) -> Session<'s> {
        Session {
            target,
            pool,
            conn: None,
            request: RequestBuf::new(),
            policy,
            run,
            user,
            posts: 0,
            key: String::new(),
            keyed: false,
            force_key: false,
        }
    }

    /// Writes the next request (sent by [`Session::send`]); a POST gets a fresh key when the
    /// policy sends them.
    pub fn prepare(
        &mut self,
        method: &str,
        path: std::fmt::Arguments<'_>,
        token: Option<i64>,
        body: Option<std::fmt::Arguments<'_>>,
    ) {
        self.keyed = method == "POST" && (self.policy.sends_keys() || self.force_key);
        self.force_key = false;
        if self.keyed {
            self.posts += 1;
            self.key.clear();
            // Writing into a String cannot fail.
            let _ = write!(self.key, "drop-{:x}-{}-{}", self.run, self.user, self.posts);
        }
        let key = self.keyed.then_some(self.key.as_str());
        self.request
            .prepare(self.target, method, path, token, key, body);
    }

    /// Writes a POST that carries an `Idempotency-Key` whatever the policy.
    pub fn prepare_keyed_post(
        &mut self,
        path: std::fmt::Arguments<'_>,
        body: Option<std::fmt::Arguments<'_>>,
    ) {
        self.force_key = true;
        self.prepare("POST", path, None, body);
    }

    /// Adds a header to the prepared request.
    pub fn add_header(&mut self, name: &str, value: &str) {
        self.request.add_header(name, value);
    }

    /// One exchange; sent once more on a new connection if a kept-alive one turned out to
    /// be closed before any of the answer arrived (as hyper does). A failure says whether
    /// the request may have reached the server.
    async fn exchange(&mut self) -> Result<u16, (retry::Failure, String)> {
        let not_connected = |e: String| (retry::Failure::NotConnected, e);
        let broken = |e: Failure| (retry::Failure::Broken, e.to_string());
        let mut conn = match self.conn.take() {
            Some(conn) if !conn.is_dead() => conn,
            _ => self.pool.take(self.target).await.map_err(not_connected)?,
        };
        let status = match conn.send(self.target, &self.request).await {
            Ok(status) => status,
            Err(Failure::Stale(_)) => {
                conn = Conn::open(self.target).await.map_err(not_connected)?;
                conn.send(self.target, &self.request)
                    .await
                    .map_err(broken)?
            }
            Err(failure) => return Err(broken(failure)),
        };
        self.conn = Some(conn);
        Ok(status)
    }

    /// Sends the prepared request, timing each try (until the whole body is in) into `step`,
    /// and parses a success with `parse`; a 503 or a connection error is tried again as the
    /// policy says (a bounded number of times, each after at most a second).
    pub async fn send<T>(
        &mut self,
        stats: &mut Stats,
        step: Step,
        mut parse: impl FnMut(&[u8]) -> Result<T, String>,
    ) -> Answer<T> {
        let replayable = replayable(step, self.keyed);
        let mut retried = 0;
        loop {
            let started = Instant::now();
            let exchanged = self.exchange().await;
            let micros = started.elapsed().as_micros() as u64;
            let s = stats.step(step);
            s.latency.record(micros);
            let status = match exchanged {
                Ok(status) => status,
                Err((failure, e)) => {
                    s.transport_errors += 1;
                    if let Some(wait) = self.policy.delay(retried, failure, replayable) {
                        retried += 1;
                        s.retries += 1;
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Answer::Broken(format!("transport: {e}"));
                }
            };
            // `exchange` leaves the connection in place after every answer.
            let body = self.conn.as_ref().map(|c| c.body()).unwrap_or_default();
            if (200..300).contains(&status) {
                s.ok += 1;
                return match parse(body) {
                    Ok(parsed) => Answer::Ok(parsed),
                    Err(e) => {
                        s.unreadable += 1;
                        Answer::Broken(format!("{status} with an unexpected body: {e}"))
                    }
                };
            }
            if status >= 500 {
                s.server_errors += 1;
            } else {
                s.client_errors += 1;
            }
            if status == 503 {
                let retry_after = self.conn.as_ref().and_then(Conn::retry_after);
                let failure = retry::Failure::Unavailable { retry_after };
                if let Some(wait) = self.policy.delay(retried, failure, replayable) {
                    retried += 1;
                    s.retries += 1;
                    tokio::time::sleep(wait).await;
                    continue;
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::STEPS;

    #[test]
    fn only_requests_a_repeat_cannot_double_may_be_sent_again_after_they_may_have_arrived() {
        let names = |keyed: bool, replays: bool| -> Vec<&str> {
            STEPS
                .iter()
                .filter(|s| replayable(**s, keyed) == replays)
                .map(|s| s.name())
                .collect()
        };
        assert_eq!(
            names(true, true),
            [
                "challenge",
                "join",
                "poll",
                "schedules",
                "seats",
                "reserve",
                "pay",
                "tickets",
                "refund"
            ]
        );
        assert_eq!(
            names(false, false),
            ["reserve", "pay", "waitlist", "checkin", "refund", "transfer"],
            "without a key"
        );
        assert_eq!(
            names(true, false),
            ["waitlist", "checkin", "transfer"],
            "a join of the list, a check-in and a transfer are never repeated"
        );
    }
}
