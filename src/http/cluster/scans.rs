//! Cluster mode: a batch of scans (`POST /v1/checkins/batch`) whose codes name schedules that
//! several nodes hold. The node it lands on answers its own schedules' scans and sends each
//! other owner that owner's scans as one batch, marked with [`HOP_HEADER`] (so the owner
//! answers all of them itself and never sends any on); the door route then answers one body
//! in the request's order. A batch is at most `MAX_BATCH_SCANS` scans, so it makes at most one
//! call per other node.

use super::owners::{client, owner_elsewhere, HOP_HEADER};
use crate::domain::cluster::ShardId;
use crate::domain::ticket::schedule_named;
use crate::domain::ScheduleId;
use crate::http::AppState;
use actix_web::HttpRequest;
use std::collections::BTreeMap;

/// The scans (by their index in the request) another node decides, grouped by that node's URL.
pub type Elsewhere = BTreeMap<String, Vec<usize>>;

/// Which of `codes` another node decides, by that node's URL; the rest are answered here (a
/// code that names no schedule too: it is refused here as on any node). Empty outside cluster
/// mode and for a batch that already made its hop.
pub fn owners_elsewhere<'a>(
    state: &AppState,
    req: &HttpRequest,
    codes: impl Iterator<Item = &'a str>,
) -> Elsewhere {
    let mut elsewhere = Elsewhere::new();
    let Some(membership) = state.cluster.as_ref() else {
        return elsewhere;
    };
    if req.headers().contains_key(HOP_HEADER) {
        return elsewhere;
    }
    for (i, code) in codes.enumerate() {
        let owner = schedule_named(code)
            .and_then(|s| ScheduleId::new(s).ok())
            .and_then(|s| owner_elsewhere(membership, ShardId::Schedule(s)));
        if let Some((_, url)) = owner {
            elsewhere.entry(url).or_default().push(i);
        }
    }
    elsewhere
}

/// Sends `body` (a batch of scans, as the door route reads one) to the node at `url` as one
/// hop of `req`, with its door key; the owner's results, one per scan in `body`'s order.
pub async fn send_batch(
    state: &AppState,
    req: &HttpRequest,
    url: &str,
    body: &serde_json::Value,
) -> Result<Vec<serde_json::Value>, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        results: Vec<serde_json::Value>,
    }
    let me = state
        .cluster
        .as_ref()
        .map_or("", |membership| membership.node_id());
    // Bytes and a content type by hand: the service's reqwest has no `json` feature (only the
    // tests' does), so `cargo build` of the binary alone must not need it.
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let mut outgoing = client()
        .post(format!("{url}{}", req.path()))
        .header(HOP_HEADER, me)
        .header("content-type", "application/json")
        .body(bytes);
    for name in ["x-door-key", "x-admin-key"] {
        if let Some(value) = req.headers().get(name) {
            outgoing = outgoing.header(name, value.as_bytes());
        }
    }
    let response = outgoing.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{url} answered {status}"));
    }
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok(answer.results)
}
