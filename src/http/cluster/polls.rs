//! Cluster mode: a waiting-room poll (`GET /v1/queue-status/users/{userId}`) on a node that
//! does not hold the queue is answered from the queue owner's snapshot where it can be, and
//! what the owner answers to one that is forwarded is learned, so the next stays here.

use super::routing::user_named;
use crate::http::AppState;
use actix_web::dev::ServiceRequest;
use actix_web::web;
use actix_web::HttpMessage;

/// A poll's answer from the queue owner's snapshot, worked out by [`forward`](super::forward()) when it decided
/// to answer the poll here: the status route answers it once the request passes its checks.
#[derive(Clone, Copy)]
pub struct SnapshotAnswer(pub crate::domain::queue::TokenStatus);

/// Whether a poll is answered here from the queue owner's snapshot (cluster mode, on a node
/// that does not hold the queue; `None` on the owner). One that is not goes to the owner;
/// a token this node does not know is looked up meanwhile, so that its next poll stays here.
pub(super) async fn poll_here(req: &ServiceRequest) -> Option<bool> {
    let state = req.app_data::<web::Data<AppState>>()?;
    if !state.engine.queue_is_remote() {
        metrics::counter!("boxoffice_polls_total", "answered" => "owner").increment(1);
        return None;
    }
    let user = user_named(req.path(), None)?;
    let token = token_header(req);
    if let Some(status) = state.engine.poll_here(user, token) {
        if !state.engine.user_exists(user) {
            state.engine.learn_user(user).await;
        }
        // The handler answers this (after its own checks) rather than working it out again.
        req.extensions_mut().insert(SnapshotAnswer(status));
        metrics::counter!("boxoffice_polls_total", "answered" => "snapshot").increment(1);
        return Some(true);
    }
    if let Some(token) = token.filter(|t| !state.engine.knows_waiter(*t)) {
        let engine = state.engine.clone();
        actix_rt::spawn(async move { engine.learn_waiter(token).await });
    }
    metrics::counter!("boxoffice_polls_total", "answered" => "forwarded").increment(1);
    Some(false)
}

/// The owner's answer to a forwarded poll names the waiter's place: learned, so that its
/// next poll here is answered from the snapshot.
pub(super) fn learn_from_poll(req: &ServiceRequest, body: &[u8]) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer<'a> {
        queue_id: u64,
        join_at: &'a str,
        status: &'a str,
    }
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return;
    };
    let (Some(user), Some(token)) = (user_named(req.path(), None), token_header(req)) else {
        return;
    };
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
        return;
    };
    let Some(created_at) = crate::domain::Timestamp::parse(answer.join_at, state.timezone) else {
        return;
    };
    if answer.status == "WAITING" {
        state
            .engine
            .learn_waiter_record(crate::domain::queue::TokenRecord {
                id: token,
                user,
                position: answer.queue_id,
                created_at,
                state: crate::domain::queue::TokenState::Waiting,
            });
    }
}

/// The request's `TOKEN-ID`, if it holds a token id.
fn token_header(req: &ServiceRequest) -> Option<crate::domain::TokenId> {
    req.headers()
        .get("TOKEN-ID")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|n| crate::domain::TokenId::new(n).ok())
}
