//! Cluster mode: any node accepts any request. One whose state lives in a shard another node
//! holds is forwarded to that node, once, over pooled keep-alive HTTP, marked with
//! [`HOP_HEADER`]; the owner answers it as if it had been asked directly. A request that
//! already made its hop is always answered here: a node that has lost the shard answers 503
//! `Retry-After`, never a second hop (two nodes that briefly disagree about an owner cannot
//! bounce a request between them).
//!
//! What routes where (`route_of`): the waiting room's routes go to the queue shard's owner,
//! a user's wallet and payment routes to their wallet bucket's owner, a hold to the
//! schedule's owner, and a reservation read or cancel to its schedule's owner. Everything
//! else (the catalog, seat maps, the admin routes, operations) is answered by any node: a
//! seat map of a schedule held elsewhere from a copy at most 250 ms old (`seat_copy.rs`).

use crate::actors::cluster::Membership;
use crate::domain::cluster::ShardId;
use crate::domain::{ReservationId, ScheduleId, UserId};
use crate::http::error::ApiError;
use crate::http::AppState;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use futures_util::StreamExt;
use std::time::Duration;

/// Marks a forwarded request; its value is the forwarding node's id.
pub const HOP_HEADER: &str = "x-boxoffice-hop";

/// A forwarded request waits at most this long for the owner: longer than a commit's own
/// 5 s limit, so the owner's answer (or its 503) is what the client sees.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(8);

/// Bodies read to find their schedule: a hold's body is well under this; a bigger one is
/// answered here (its route refuses it).
const ROUTED_BODY_LIMIT: usize = 16 * 1024;

/// Where a request's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Any node answers it.
    Local,
    Shard(ShardId),
    /// The reservation's schedule's shard (looked up).
    Reservation(ReservationId),
    /// A hold: the schedule named in its body.
    HoldBody,
}

/// The route of a request, from its method and path alone (a hold's body is read later).
pub fn route_of(method: &Method, path: &str) -> Route {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let user = |s: &str| s.parse::<i64>().ok().and_then(|u| UserId::new(u).ok());
    match parts.as_slice() {
        ["", "v1", "queue-tokens", "users", _] | ["", "v1", "queue-status", "users", _] => {
            Route::Shard(ShardId::Queue)
        }
        ["", "v1", "balance", "users", u, ..] | ["", "v1", "payments", "users", u, ..] => {
            user(u).map_or(Route::Local, |u| Route::Shard(ShardId::of_wallet(u)))
        }
        ["", "v1", "reservations"] if method == Method::POST => Route::HoldBody,
        ["", "v1", "reservations", id] => id
            .parse::<i64>()
            .ok()
            .and_then(|id| ReservationId::new(id).ok())
            .map_or(Route::Local, Route::Reservation),
        _ => Route::Local,
    }
}

/// The user a request names: in its path, or in a hold's body.
fn user_named(path: &str, body: Option<&[u8]>) -> Option<UserId> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Named {
        user_id: i64,
    }
    let in_path = path
        .split('/')
        .skip_while(|part| *part != "users")
        .nth(1)
        .and_then(|u| u.parse::<i64>().ok());
    let raw = match (in_path, body) {
        (Some(user), _) => user,
        (None, Some(body)) => serde_json::from_slice::<Named>(body).ok()?.user_id,
        (None, None) => return None,
    };
    UserId::new(raw).ok()
}

/// A waiting-room status poll (`GET /v1/queue-status/users/{id}`).
fn is_poll(req: &ServiceRequest) -> bool {
    req.method() == Method::GET && req.path().starts_with("/v1/queue-status/users/")
}

/// A poll's answer from the queue owner's snapshot, worked out by [`forward`] when it decided
/// to answer the poll here: the status route answers it once the request passes its checks.
#[derive(Clone, Copy)]
pub struct SnapshotAnswer(pub crate::domain::queue::TokenStatus);

/// Whether a poll is answered here from the queue owner's snapshot (cluster mode, on a node
/// that does not hold the queue; `None` on the owner). One that is not goes to the owner;
/// a token this node does not know is looked up meanwhile, so that its next poll stays here.
async fn poll_here(req: &ServiceRequest) -> Option<bool> {
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
fn learn_from_poll(req: &ServiceRequest, body: &[u8]) {
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

/// A user, concert or schedule created through another node may not be in this node's
/// catalog yet (it catches up within a quarter TTL): look in the store before the route
/// answers 404.
async fn learn_user(req: &ServiceRequest, body: Option<&[u8]>) {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return;
    };
    if let Some(user) = user_named(req.path(), body) {
        if !state.engine.user_exists(user) {
            state.engine.learn_user(user).await;
        }
    }
    let schedule = body
        .and_then(schedule_in)
        .or_else(|| schedule_in_path(req.path()));
    let unknown_concert =
        concert_named(req.path()).is_some_and(|c| !state.engine.concert_exists(c));
    if unknown_concert || schedule.is_some_and(|s| !state.engine.schedule_exists(s)) {
        state.engine.learn_catalog().await;
    }
}

/// The concert a path names (`/v1/concerts/{id}/…`).
fn concert_named(path: &str) -> Option<crate::domain::ConcertId> {
    let raw = path.strip_prefix("/v1/concerts/")?.split('/').next()?;
    crate::domain::ConcertId::new(raw.parse().ok()?).ok()
}

/// The schedule a seat-map path names (`/v1/concerts/{id}/schedules/{id}/seats`).
fn schedule_in_path(path: &str) -> Option<ScheduleId> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "v1", "concerts", _, "schedules", s, "seats"] => ScheduleId::new(s.parse().ok()?).ok(),
        _ => None,
    }
}

/// The schedule a hold's body names, if it is well-formed enough to say.
fn schedule_in(body: &[u8]) -> Option<ScheduleId> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Named {
        schedule_id: i64,
    }
    let named: Named = serde_json::from_slice(body).ok()?;
    ScheduleId::new(named.schedule_id).ok()
}

thread_local! {
    /// One pooled client per HTTP worker thread: each actix worker runs its own runtime, and a
    /// pooled connection belongs to the runtime that opened it.
    static CLIENT: reqwest::Client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .connect_timeout(Duration::from_secs(1))
        .timeout(FORWARD_TIMEOUT)
        .build()
        // Only fails on a TLS backend or resolver that cannot start; neither is compiled in.
        .expect("a plain HTTP client builds");
}

/// This worker thread's pooled client (also the peer client's: one pool per thread).
pub(super) fn client() -> reqwest::Client {
    CLIENT.with(reqwest::Client::clone)
}

/// Forwards what another node owns; everything else (and everything outside cluster mode)
/// goes on to the routes.
pub async fn forward(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let membership = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.cluster.clone());
    let Some(membership) = membership else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    if req.headers().contains_key(HOP_HEADER) {
        // Answered here, whatever this node holds; but it may not know the user yet.
        let body = if route_of(req.method(), req.path()) == Route::HoldBody {
            read_body(&mut req).await
        } else {
            None
        };
        learn_user(&req, body.as_deref()).await;
        if let Some(bytes) = body {
            req.set_payload(Payload::from(bytes));
        }
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    if is_poll(&req) {
        if let Some(answered_here) = poll_here(&req).await {
            if answered_here {
                return next
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_left_body);
            }
        }
    }
    let mut body = None;
    let shard = match route_of(req.method(), req.path()) {
        Route::Local => None,
        Route::Shard(shard) => Some(shard),
        Route::Reservation(id) => {
            let state = req.app_data::<web::Data<AppState>>().cloned();
            match state {
                Some(state) => state
                    .engine
                    .schedule_of_reservation(id)
                    .await
                    .map(ShardId::Schedule),
                None => None,
            }
        }
        Route::HoldBody => {
            let bytes = read_body(&mut req).await;
            let shard = bytes
                .as_deref()
                .and_then(schedule_in)
                .map(ShardId::Schedule);
            body = bytes;
            shard
        }
    };
    let target = shard.and_then(|shard| {
        let (owner, url) = owner_elsewhere(&membership, shard)?;
        Some((shard, owner, url))
    });
    let Some((shard, owner, target)) = target else {
        learn_user(&req, body.as_deref()).await;
        if let Some(bytes) = body {
            req.set_payload(Payload::from(bytes));
        }
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let body = match body {
        Some(bytes) => bytes,
        None => match read_body(&mut req).await {
            Some(bytes) => bytes,
            None => {
                let answer =
                    ApiError::InvalidRequest("request body too large".into()).error_response();
                return Ok(req.into_response(answer).map_into_right_body());
            }
        },
    };
    // An owner that stops answering (paused, partitioned) loses its lease within a TTL; a
    // request waiting on it is then answered 503 at once rather than at the timeout.
    let answer = tokio::select! {
        answer = send(&req, &target, membership.node_id(), body) => answer,
        () = owner_moves(&membership, shard, &owner) => {
            metrics::counter!("boxoffice_forwards_total", "outcome" => "owner_moved").increment(1);
            ApiError::Unavailable(format!("{shard} moved away from {owner} during a forward")).error_response()
        }
    };
    Ok(req.into_response(answer).map_into_right_body())
}

/// `shard`'s owner and its URL, as this node's last round saw them, unless it is this node.
pub(super) fn owner_elsewhere(membership: &Membership, shard: ShardId) -> Option<(String, String)> {
    let owner = owner_of(membership, shard)?;
    if owner == membership.node_id() {
        return None;
    }
    let view = membership.view();
    let url = view.nodes.iter().find(|n| n.node_id == owner)?.url.clone();
    Some((owner, url))
}

fn owner_of(membership: &Membership, shard: ShardId) -> Option<String> {
    let text = shard.to_string();
    membership
        .view()
        .shards
        .iter()
        .find(|s| s.shard == text)?
        .owner
        .clone()
}

/// Ends once this node's view says `shard` is no longer `owner`'s.
async fn owner_moves(membership: &Membership, shard: ShardId, owner: &str) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if owner_of(membership, shard).as_deref() != Some(owner) {
            return;
        }
    }
}

/// The whole body, if it is at most [`ROUTED_BODY_LIMIT`]; `None` past it or on a read error.
async fn read_body(req: &mut ServiceRequest) -> Option<Bytes> {
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.ok()?;
        if body.len() + chunk.len() > ROUTED_BODY_LIMIT {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body.freeze())
}

/// Headers that describe one connection, not the request: never passed along.
fn hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "host"
            | "content-length"
            | "proxy-connection"
            | "trailer"
    )
}

/// Sends the request to `target` and turns its answer into ours; an owner that cannot be
/// reached is a 503 with `Retry-After`.
async fn send(req: &ServiceRequest, target: &str, me: &str, body: Bytes) -> HttpResponse {
    let started = std::time::Instant::now();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut outgoing = client().request(method, format!("{target}{path}"));
    for (name, value) in req.headers() {
        if !hop_by_hop(name) {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    // The client's address, for the owner's logs and (with the nodes listed in
    // --trusted-proxy) its per-address budget.
    if let Some(peer) = req.peer_addr() {
        outgoing = outgoing.header("x-forwarded-for", peer.ip().to_string());
    }
    let outgoing = outgoing.header(HOP_HEADER, me).body(body);
    let result = outgoing.send().await;
    let answer = match result {
        Ok(response) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut answer = HttpResponse::build(status);
            for (name, value) in response.headers() {
                if !matches!(
                    name.as_str(),
                    "connection" | "keep-alive" | "transfer-encoding" | "content-length"
                ) {
                    answer.insert_header((name.as_str(), value.as_bytes()));
                }
            }
            match response.bytes().await {
                Ok(bytes) => {
                    metrics::counter!("boxoffice_forwards_total", "outcome" => "answered")
                        .increment(1);
                    if status == StatusCode::OK && is_poll(req) {
                        learn_from_poll(req, &bytes);
                    }
                    answer.body(bytes)
                }
                Err(error) => unreachable_owner(target, &error.to_string()),
            }
        }
        Err(error) => unreachable_owner(target, &error.to_string()),
    };
    metrics::histogram!("boxoffice_forward_seconds").record(started.elapsed().as_secs_f64());
    answer
}

fn unreachable_owner(target: &str, error: &str) -> HttpResponse {
    metrics::counter!("boxoffice_forwards_total", "outcome" => "unreachable").increment(1);
    ApiError::Unavailable(format!("forwarding to {target} failed: {error}")).error_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_finds_its_shard() {
        let user = |u: i64| UserId::new(u).expect("positive");
        let get = Method::GET;
        assert_eq!(
            route_of(&Method::POST, "/v1/queue-tokens/users/5"),
            Route::Shard(ShardId::Queue)
        );
        assert_eq!(
            route_of(&get, "/v1/queue-status/users/5"),
            Route::Shard(ShardId::Queue)
        );
        assert_eq!(
            route_of(&get, "/v1/balance/users/70"),
            Route::Shard(ShardId::of_wallet(user(70)))
        );
        assert_eq!(
            route_of(&Method::POST, "/v1/balance/users/70/recharge"),
            Route::Shard(ShardId::Wallets(6))
        );
        assert_eq!(
            route_of(&Method::POST, "/v1/payments/users/3"),
            Route::Shard(ShardId::Wallets(3))
        );
        assert_eq!(route_of(&Method::POST, "/v1/reservations"), Route::HoldBody);
        assert_eq!(
            route_of(&Method::DELETE, "/v1/reservations/12"),
            Route::Reservation(ReservationId::new(12).expect("positive"))
        );
        for local in [
            "/v1/concerts/1/schedules",
            "/v1/concerts/1/schedules/9/seats",
            "/v1/admin/users",
            "/readyz",
            "/",
            "/v1/balance/users/x",
        ] {
            assert_eq!(route_of(&get, local), Route::Local, "{local}");
        }
    }

    #[test]
    fn the_user_a_request_names() {
        let user = |u: i64| UserId::new(u).ok();
        assert_eq!(user_named("/v1/balance/users/7/recharge", None), user(7));
        assert_eq!(user_named("/v1/queue-tokens/users/9", None), user(9));
        assert_eq!(
            user_named("/v1/reservations", Some(br#"{"userId":3,"scheduleId":1}"#)),
            user(3)
        );
        assert_eq!(user_named("/v1/reservations", Some(b"{}")), None);
        assert_eq!(user_named("/v1/balance/users/0", None), None);
        assert_eq!(user_named("/v1/concerts/1/schedules", None), None);
    }

    #[test]
    fn a_hold_body_names_its_schedule_or_nothing() {
        assert_eq!(
            schedule_in(br#"{"userId":1,"scheduleId":4,"seatIds":[1]}"#),
            ScheduleId::new(4).ok()
        );
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"{"scheduleId":-1}"#,
            br#"{"scheduleId":"4"}"#,
        ] {
            assert_eq!(schedule_in(bad), None);
        }
    }
}
