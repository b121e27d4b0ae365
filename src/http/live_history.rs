//! The last ten minutes of the dashboard's figures (`GET /v1/admin/live/history`), so a page
//! opened in the middle of a drop draws what happened before it came: the sampler records a
//! point every tick whether or not anyone watches (a few counter reads), and keeps a bounded
//! ring of them.

use super::admin::AdminAccess;
use super::error::ErrorBody;
use super::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use utoipa::ToSchema;

/// How far back the history reaches.
pub const SPAN: Duration = Duration::from_secs(600);

/// One sample of the figures the dashboard charts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = LivePoint)]
pub struct Point {
    /// When, in Unix milliseconds (the charts' x axis; no zone needed).
    pub at_ms: i64,
    pub waiting: usize,
    #[schema(nullable)]
    pub admissions_per_second: Option<f64>,
    pub placed: f64,
    pub refused: f64,
    pub expired: f64,
    pub paid: f64,
    #[schema(nullable)]
    pub commit_p99_ms: Option<f64>,
}

/// A bounded ring of points, one per tick of `every`.
#[derive(Debug)]
pub struct History {
    every: Duration,
    capacity: usize,
    points: Mutex<VecDeque<Point>>,
}

impl History {
    /// A history of [`SPAN`] at one point per `every`.
    pub fn new(every: Duration) -> History {
        let capacity = usize::try_from(SPAN.as_millis() / every.as_millis().max(1))
            .unwrap_or(usize::MAX)
            .max(1);
        History {
            every,
            capacity,
            points: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// Records a point, forgetting the oldest past the span.
    pub fn push(&self, point: Point) {
        // A poisoned lock still holds whole points (a push cannot half-happen).
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        if points.len() == self.capacity {
            points.pop_front();
        }
        points.push_back(point);
    }

    fn body(&self) -> HistoryBody {
        let points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        HistoryBody {
            every_ms: u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX),
            points: points.iter().copied().collect(),
        }
    }
}

/// The history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = LiveHistoryBody)]
pub struct HistoryBody {
    /// Milliseconds between two points.
    every_ms: u64,
    points: Vec<Point>,
}

/// The last ten minutes of the live figures, a point every 500 ms, oldest first.
#[utoipa::path(get, path = "/v1/admin/live/history", tag = "admin",
    params(("X-Admin-Key" = String, Header)),
    responses(
        (status = 200, description = "the points", body = HistoryBody),
        (status = 403, description = "forbidden", body = ErrorBody),
    ))]
pub(super) async fn history(_admin: AdminAccess, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.live.history().body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at_ms: i64) -> Point {
        Point {
            at_ms,
            waiting: 1,
            admissions_per_second: None,
            placed: 0.0,
            refused: 0.0,
            expired: 0.0,
            paid: 0.0,
            commit_p99_ms: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_last_ten_minutes_oldest_first() {
        let history = History::new(Duration::from_millis(500));
        for at in 0..1_300 {
            history.push(point(at));
        }
        let body = history.body();
        assert_eq!(body.every_ms, 500);
        assert_eq!(body.points.len(), 1_200);
        assert_eq!(body.points.first().map(|p| p.at_ms), Some(100));
        assert_eq!(body.points.last().map(|p| p.at_ms), Some(1_299));
    }
}
