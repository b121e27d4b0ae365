//! `GET /v1/admin/live`: the operator dashboard's one stream (Server-Sent Events).
//!
//! A sampler reads the engine's counters every [`SAMPLE_EVERY`] and publishes one frame, JSON
//! already rendered, through a `watch` channel. Each open stream sends the latest frame it has
//! not sent yet: a client that reads slowly skips to the newest frame, so nothing queues per
//! client. The sampler works only while someone watches. When shutdown starts the feed is
//! closed and every stream ends, so open dashboards do not hold SIGTERM up for the server's
//! shutdown timeout. The route is documented, left out of the fuzzed routes, and left out of
//! the request-latency histogram (a stream's life is not a latency).

use super::admin::AdminAccess;
use super::error::ErrorBody;
use super::extract::id;
use super::live_history::{History, Point};
use super::{ApiError, AppState};
use crate::actors::schedule::SeatSample;
use crate::actors::Engine;
use crate::domain::queue::OpeningPhase;
use crate::domain::{ScheduleId, Timestamp};
use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use chrono::FixedOffset;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};

/// How often a frame is published: the dashboard's refresh, and the bound on its cost.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Streams open at once; past it a new one is a 503 (each costs a socket and a frame copy).
pub const MAX_STREAMS: usize = 16;
/// Schedules sampled per frame, lowest ids first.
pub const MAX_SCHEDULES: usize = 64;
/// The route, as the metrics middleware names it (it keeps streams out of the latency histogram).
pub const PATH: &str = "/v1/admin/live";

/// What the feed carries.
#[derive(Debug, Clone)]
enum Feed {
    /// No sample yet: streams wait for the first.
    Starting,
    Frame(Arc<Frame>),
    /// Shutdown started: streams end.
    Closed,
}

/// One sample, rendered: the figures every stream shares, and each schedule's seat map.
#[derive(Debug)]
struct Frame {
    /// The snapshot's JSON object without its closing brace, so each stream appends its
    /// schedule's `seatMap` without parsing or re-rendering the rest.
    figures: String,
    /// (schedule id, its `seatMap` JSON), by schedule id.
    seat_maps: Vec<(i64, Arc<str>)>,
}

impl Frame {
    /// The SSE event for a client watching `schedule` (the first schedule when `None`).
    fn event(&self, schedule: Option<i64>) -> Bytes {
        let map = match schedule {
            Some(id) => self.seat_maps.iter().find(|(s, _)| *s == id),
            None => self.seat_maps.first(),
        };
        let map = map.map_or("null", |(_, json)| json);
        let mut event = String::with_capacity(self.figures.len() + map.len() + 24);
        event.push_str("data: ");
        event.push_str(&self.figures);
        event.push_str(",\"seatMap\":");
        event.push_str(map);
        event.push_str("}\n\n");
        Bytes::from(event)
    }
}

/// The dashboard's feed: the channel the sampler publishes into, and the open streams.
pub struct LiveFeed {
    frames: Arc<watch::Sender<Feed>>,
    streams: Arc<AtomicUsize>,
    history: Arc<History>,
}

impl LiveFeed {
    /// Starts the sampler on the current (actix) runtime.
    pub fn start(engine: Engine, timezone: FixedOffset) -> LiveFeed {
        let (tx, _) = watch::channel(Feed::Starting);
        let frames = Arc::new(tx);
        let history = Arc::new(History::new(SAMPLE_EVERY));
        let sampler = Sampler {
            engine,
            timezone,
            frames: frames.clone(),
            history: history.clone(),
        };
        actix_web::rt::spawn(sampler.run());
        LiveFeed {
            frames,
            streams: Arc::new(AtomicUsize::new(0)),
            history,
        }
    }

    /// The last ten minutes of figures.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Shutdown started: every stream ends after its current frame, the sampler stops, and no
    /// new stream opens.
    pub fn close(&self) {
        self.frames.send_replace(Feed::Closed);
    }

    /// A stream of events for `schedule`, or 503 when shutting down or [`MAX_STREAMS`] are open.
    fn subscribe(&self, schedule: Option<i64>) -> Result<Stream, ApiError> {
        let receiver = self.frames.subscribe();
        if matches!(*receiver.borrow(), Feed::Closed) {
            return Err(ApiError::Unavailable("shutting down".into()));
        }
        let slot = StreamSlot::take(&self.streams)
            .ok_or_else(|| ApiError::Unavailable("too many live streams".into()))?;
        Ok(Stream {
            receiver,
            schedule,
            sent_any: false,
            _slot: slot,
        })
    }
}

/// One open stream's place in [`MAX_STREAMS`], given back when the stream is dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(open: &Arc<AtomicUsize>) -> Option<StreamSlot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_STREAMS).then_some(n + 1)
        })
        .ok()
        .map(|_| StreamSlot(open.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One client's stream.
struct Stream {
    receiver: watch::Receiver<Feed>,
    schedule: Option<i64>,
    /// Whether a frame went out: the next must then be newer.
    sent_any: bool,
    _slot: StreamSlot,
}

impl Stream {
    /// The next event: the newest frame not sent yet (however many were published since), or
    /// `None` once the feed is closed.
    async fn next(&mut self) -> Option<Bytes> {
        if self.sent_any {
            // Wait for a frame newer than the one just sent; a dropped sender is a close too.
            self.receiver.changed().await.ok()?;
        }
        loop {
            // One `Arc` cloned out: the channel's lock is not held across the wait below.
            let feed = self.receiver.borrow_and_update().clone();
            match feed {
                Feed::Frame(frame) => {
                    self.sent_any = true;
                    return Some(frame.event(self.schedule));
                }
                Feed::Closed => return None,
                Feed::Starting => self.receiver.changed().await.ok()?,
            }
        }
    }

    fn into_body(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
        futures_util::stream::unfold(self, |mut stream| async move {
            let event = stream.next().await?;
            Some((Ok(event), stream))
        })
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct LiveQuery {
    /// The schedule whose seats the stream carries (default: the lowest-numbered running one).
    #[param(minimum = 1)]
    schedule_id: Option<i64>,
}

/// Live figures, one Server-Sent Event (`data:` a [`LiveSnapshot`]) at most every 500 ms,
/// until the client leaves or the service shuts down.
#[utoipa::path(get, path = "/v1/admin/live", tag = "admin",
    params(("X-Admin-Key" = String, Header), LiveQuery),
    responses(
        (status = 200, description = "text/event-stream; each event's data is a LiveSnapshot",
            content_type = "text/event-stream", body = LiveSnapshot),
        (status = 400, description = "invalid_request (a malformed scheduleId)", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "schedule_not_found", body = ErrorBody),
        (status = 503, description = "unavailable: shutting down, or too many streams open", body = ErrorBody),
    ))]
pub(super) async fn live(
    _admin: AdminAccess,
    state: web::Data<AppState>,
    query: web::Query<LiveQuery>,
) -> Result<HttpResponse, ApiError> {
    let schedule = match query.into_inner().schedule_id {
        Some(raw) => {
            let schedule = id(raw, ScheduleId::new)?;
            state.engine.watch_schedule(schedule)?;
            Some(schedule.get())
        }
        None => None,
    };
    let stream = state.live.subscribe(schedule)?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // A proxy in front must pass each event on as it comes, not buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream.into_body()))
}

/// The figures of one event (its `seatMap` is appended per client: see [`SeatMapBody`]).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveSnapshot {
    /// When it was sampled, in Unix milliseconds (the charts' clock).
    at_ms: i64,
    queue: QueueFigures,
    opening: OpeningFigures,
    holds_per_second: HoldRates,
    commit: CommitFigures,
    unavailable_per_second: f64,
    schedules: Vec<ScheduleFigures>,
    /// The chosen schedule's seats; `null` when no schedule is running.
    #[schema(nullable)]
    seat_map: Option<SeatMapBody>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct QueueFigures {
    waiting: usize,
    active: usize,
    /// `null` until the line has admitted anyone recently.
    #[schema(nullable)]
    admissions_per_second: Option<f64>,
}

/// The fair opening (API.md §11) as this node sees it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct OpeningFigures {
    /// `NONE`, `SCHEDULED` (the pre-queue is filling) or `DRAWN`.
    status: &'static str,
    #[schema(nullable)]
    opens_at: Option<String>,
    /// Seconds until the draw while scheduled (0 once due).
    #[schema(nullable)]
    seconds_to_opening: Option<f64>,
    /// The pre-queue so far while scheduled; the participants once drawn.
    participants: u64,
    /// How long the draw took on this node (null if this node did not draw).
    #[schema(nullable)]
    draw_ms: Option<f64>,
}

impl OpeningFigures {
    fn of(engine: &Engine, timezone: FixedOffset) -> OpeningFigures {
        let (status, opens_at, participants) = match engine.opening_phase() {
            None => ("NONE", None, 0),
            Some(OpeningPhase::Prequeue {
                opens_at_ms,
                arrivals,
            }) => (
                "SCHEDULED",
                Some(Timestamp::from_millis(opens_at_ms)),
                arrivals,
            ),
            Some(OpeningPhase::Drawn { participants, .. }) => ("DRAWN", None, participants),
        };
        OpeningFigures {
            status,
            opens_at: opens_at.map(|at| at.format(timezone)),
            seconds_to_opening: opens_at.map(|at| engine.now().until(at).as_secs_f64()),
            participants,
            draw_ms: engine.last_draw().map(|d| d.as_secs_f64() * 1e3),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct HoldRates {
    placed: f64,
    /// Refused because a seat was taken.
    refused: f64,
    expired: f64,
    /// Cancelled by their owner.
    voided: f64,
    paid: f64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CommitFigures {
    /// Over the last interval; `null` when nothing was committed in it.
    #[schema(nullable)]
    p50_ms: Option<f64>,
    #[schema(nullable)]
    p99_ms: Option<f64>,
    /// Submissions per batch over the last interval.
    #[schema(nullable)]
    mean_batch: Option<f64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ScheduleFigures {
    schedule_id: i64,
    concert_id: i64,
    sold: usize,
    held: usize,
    seats: usize,
}

/// One schedule's seats: ids in seat-map order, and one letter per seat, `F` free, `H` held
/// (in memory, its write possibly in flight), `S` sold.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeatMapBody {
    schedule_id: i64,
    seat_ids: Vec<i64>,
    #[schema(pattern = "^[FHS]*$")]
    states: String,
}

/// The counters a rate is the difference of.
struct Reading {
    at: Instant,
    counters: crate::actors::live_stats::LiveCounters,
    commits: crate::actors::live_stats::HistogramCounts,
    batches: (u64, u64),
}

impl Reading {
    fn take(engine: &Engine) -> Reading {
        Reading {
            at: Instant::now(),
            counters: engine.live().read(),
            commits: engine.commit_latency(),
            batches: engine.batches(),
        }
    }
}

/// The sampler: a history point every [`SAMPLE_EVERY`], and a frame too while anyone
/// watches, until the feed closes.
struct Sampler {
    engine: Engine,
    timezone: FixedOffset,
    frames: Arc<watch::Sender<Feed>>,
    history: Arc<History>,
}

impl Sampler {
    async fn run(self) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Reading::take(&self.engine);
        loop {
            tick.tick().await;
            if matches!(*self.frames.borrow(), Feed::Closed) {
                break;
            }
            let watched = self.frames.receiver_count() > 0;
            let samples = if watched {
                self.engine.sample_schedules(MAX_SCHEDULES).await
            } else {
                Vec::new()
            };
            let now = Reading::take(&self.engine);
            let snapshot = figures(&self.engine, self.timezone, &last, &now, &samples);
            self.history.push(snapshot.point());
            last = now;
            if !watched {
                continue;
            }
            let frame = render(&snapshot, &samples);
            // Never overwrite a close that came while sampling.
            self.frames.send_if_modified(|feed| {
                if matches!(feed, Feed::Closed) {
                    return false;
                }
                *feed = Feed::Frame(Arc::new(frame));
                true
            });
        }
    }
}

impl LiveSnapshot {
    /// The charted part of the figures, for the history.
    fn point(&self) -> Point {
        Point {
            at_ms: self.at_ms,
            waiting: self.queue.waiting,
            admissions_per_second: self.queue.admissions_per_second,
            placed: self.holds_per_second.placed,
            refused: self.holds_per_second.refused,
            expired: self.holds_per_second.expired,
            paid: self.holds_per_second.paid,
            commit_p99_ms: self.commit.p99_ms,
        }
    }
}

/// The figures of one interval, from two readings.
fn figures(
    engine: &Engine,
    timezone: FixedOffset,
    last: &Reading,
    now: &Reading,
    samples: &[(crate::domain::schedule::ScheduleInfo, SeatSample)],
) -> LiveSnapshot {
    let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-3);
    let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
    let (c, p) = (&now.counters, &last.counters);
    let commits = now.commits.since(&last.commits);
    let batches = now.batches.0.saturating_sub(last.batches.0);
    let submissions = now.batches.1.saturating_sub(last.batches.1);
    let (waiting, active) = engine.queue_counts();
    LiveSnapshot {
        at_ms: engine.now().millis(),
        queue: QueueFigures {
            waiting,
            active,
            admissions_per_second: engine.admission_rate(),
        },
        opening: OpeningFigures::of(engine, timezone),
        holds_per_second: HoldRates {
            placed: rate(c.placed, p.placed),
            refused: rate(c.refused, p.refused),
            expired: rate(c.expired, p.expired),
            voided: rate(c.voided, p.voided),
            paid: rate(c.paid, p.paid),
        },
        commit: CommitFigures {
            p50_ms: commits.quantile_ms(0.5),
            p99_ms: commits.quantile_ms(0.99),
            mean_batch: (batches > 0).then(|| submissions as f64 / batches as f64),
        },
        unavailable_per_second: rate(c.unavailable, p.unavailable),
        schedules: samples
            .iter()
            .map(|(info, s)| ScheduleFigures {
                schedule_id: info.id.get(),
                concert_id: info.concert_id.get(),
                sold: s.sold,
                held: s.held,
                seats: s.states.len(),
            })
            .collect(),
        seat_map: None,
    }
}

/// One frame: the figures rendered once, and each sampled schedule's seat map.
fn render(
    snapshot: &LiveSnapshot,
    samples: &[(crate::domain::schedule::ScheduleInfo, SeatSample)],
) -> Frame {
    let mut figures =
        serde_json::to_string(snapshot).expect("plain numbers and strings always serialize");
    // `seatMap` is the last field and `None` here: cut `,"seatMap":null}` so each stream
    // appends its own.
    let tail = ",\"seatMap\":null}";
    let cut = figures
        .strip_suffix(tail)
        .map(str::len)
        .expect("seatMap is the snapshot's last field, and None here");
    figures.truncate(cut);
    let seat_maps = samples
        .iter()
        .map(|(info, s)| {
            let body = SeatMapBody {
                schedule_id: info.id.get(),
                seat_ids: s.seat_ids.iter().map(|id| id.get()).collect(),
                states: String::from_utf8_lossy(&s.states).into_owned(),
            };
            let json = serde_json::to_string(&body).expect("integers and letters always serialize");
            (body.schedule_id, Arc::<str>::from(json))
        })
        .collect();
    Frame { figures, seat_maps }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn frame(n: u64) -> Feed {
        Feed::Frame(Arc::new(Frame {
            figures: format!("{{\"n\":{n}"),
            seat_maps: vec![(7, "{\"scheduleId\":7}".into())],
        }))
    }

    /// A feed with no sampler: the test publishes into it.
    fn feed() -> LiveFeed {
        LiveFeed {
            frames: Arc::new(watch::channel(Feed::Starting).0),
            streams: Arc::new(AtomicUsize::new(0)),
            history: Arc::new(History::new(SAMPLE_EVERY)),
        }
    }

    #[tokio::test]
    async fn a_slow_reader_skips_to_the_newest_frame() {
        let feed = feed();
        let mut s = feed.subscribe(None).expect("under the stream limit");
        feed.frames.send_replace(frame(1));
        assert_eq!(
            s.next().await.expect("a frame"),
            "data: {\"n\":1,\"seatMap\":{\"scheduleId\":7}}\n\n"
        );
        // Ten frames while the client reads nothing: it gets only the last.
        for n in 2..=11 {
            feed.frames.send_replace(frame(n));
        }
        let mut body = Box::pin(s.into_body());
        let next = body.next().await.expect("a frame").expect("infallible");
        assert!(next.starts_with(b"data: {\"n\":11,"), "{next:?}");
        let later = tokio::time::timeout(Duration::from_millis(50), body.next()).await;
        assert!(later.is_err(), "no older frame is queued behind it");
    }

    #[tokio::test]
    async fn a_close_ends_every_stream() {
        let feed = feed();
        let mut body = Box::pin(feed.subscribe(None).expect("open").into_body());
        feed.frames.send_replace(frame(1));
        assert!(body.next().await.is_some());
        feed.close();
        assert!(body.next().await.is_none());
        drop(body);
        assert_eq!(
            feed.streams.load(Ordering::Acquire),
            0,
            "the slot is given back"
        );
    }

    #[tokio::test]
    async fn a_stream_waits_for_the_first_sample() {
        let feed = feed();
        let mut s = feed.subscribe(None).expect("open");
        let early = tokio::time::timeout(Duration::from_millis(50), s.next()).await;
        assert!(early.is_err(), "nothing to send before the first sample");
        feed.frames.send_replace(frame(3));
        assert!(s.next().await.is_some());
    }

    #[test]
    fn streams_past_the_limit_are_refused() {
        let feed = feed();
        let open: Vec<_> = (0..MAX_STREAMS)
            .map(|_| feed.subscribe(None).expect("under the limit"))
            .collect();
        assert!(feed.subscribe(None).is_err());
        drop(open);
        assert!(feed.subscribe(None).is_ok());
        feed.close();
        assert!(
            feed.subscribe(None).is_err(),
            "no stream opens after a close"
        );
    }

    #[test]
    fn an_event_carries_the_chosen_schedules_map() {
        let f = Frame {
            figures: "{\"a\":1".into(),
            seat_maps: vec![(1, "\"one\"".into()), (2, "\"two\"".into())],
        };
        assert_eq!(f.event(None), "data: {\"a\":1,\"seatMap\":\"one\"}\n\n");
        assert_eq!(f.event(Some(2)), "data: {\"a\":1,\"seatMap\":\"two\"}\n\n");
        assert_eq!(f.event(Some(9)), "data: {\"a\":1,\"seatMap\":null}\n\n");
    }
}
