//! Cluster mode: any node accepts any request. One whose state lives in a shard another node
//! holds is forwarded to that node, once, over pooled keep-alive HTTP, marked with
//! [`HOP_HEADER`]; the owner answers it as if it had been asked directly. A request that
//! already made its hop is always answered here: a node that has lost the shard answers 503
//! `Retry-After`, never a second hop (two nodes that briefly disagree about an owner cannot
//! bounce a request between them).
//!
//! What routes where is the route table's (`routing.rs`); a poll may be answered here from the
//! queue owner's snapshot (`polls.rs`).

pub use super::owners::HOP_HEADER;
use super::owners::{client, owner_elsewhere, owner_of};
use super::polls::{learn_from_poll, poll_here};
use super::routing::{
    classify, concert_named, hold_names, schedule_in_path, schedule_of_code, user_named, HoldNames,
    Route,
};
use crate::actors::cluster::Membership;
use crate::domain::cluster::ShardId;
use crate::http::error::ApiError;
use crate::http::AppState;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use futures_util::StreamExt;
use std::time::Duration;

/// Bodies read to find their schedule: a hold's body is well under this; a bigger one is
/// answered here (its route refuses it).
const ROUTED_BODY_LIMIT: usize = 16 * 1024;

/// A response of the forwarder: the routes' (left) or the owner's, or this node's refusal (right).
type Answered<B> = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

/// The node a request goes to.
struct Owner {
    shard: ShardId,
    node: String,
    url: String,
}

/// Forwards what another node owns; everything else (and everything outside cluster mode)
/// goes on to the routes.
pub async fn forward<B: MessageBody>(mut req: ServiceRequest, next: Next<B>) -> Answered<B> {
    let membership = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.cluster.clone());
    let Some(membership) = membership else {
        return pass_on(req, next).await;
    };
    if req.headers().contains_key(HOP_HEADER) {
        return answer_forwarded(req, next).await;
    }
    let (route, poll) = classify(req.method(), req.path());
    if poll && poll_here(&req).await == Some(true) {
        return pass_on(req, next).await;
    }
    let (shard, body) = shard_of(&mut req, route).await;
    let owner = shard.and_then(|shard| {
        let (node, url) = owner_elsewhere(&membership, shard)?;
        Some(Owner { shard, node, url })
    });
    match owner {
        Some(owner) => Ok(forward_to(req, &membership, owner, body.map(|b| b.bytes), poll).await),
        None => answer_here(req, next, body).await,
    }
}

/// A body the forwarder read to route its request, handed back to the routes; a hold's with
/// what it names, parsed once.
struct ReadBody {
    bytes: Bytes,
    names: Option<HoldNames>,
}

impl ReadBody {
    fn plain(bytes: Bytes) -> ReadBody {
        ReadBody { bytes, names: None }
    }

    fn hold(bytes: Bytes) -> ReadBody {
        let names = Some(hold_names(&bytes));
        ReadBody { bytes, names }
    }
}

/// The request goes on to the routes as it came.
async fn pass_on<B: MessageBody>(req: ServiceRequest, next: Next<B>) -> Answered<B> {
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// A request that already made its hop is answered here, whatever this node holds; but this
/// node may not know its user, concert or schedule yet.
async fn answer_forwarded<B: MessageBody>(mut req: ServiceRequest, next: Next<B>) -> Answered<B> {
    let body = if classify(req.method(), req.path()).0 == Route::HoldBody {
        read_body(&mut req).await.map(ReadBody::hold)
    } else {
        None
    };
    answer_here(req, next, body).await
}

/// The routes answer it here, once this node has caught up with what it names; `body` (if it
/// was read to route the request) is handed back to them.
async fn answer_here<B: MessageBody>(
    mut req: ServiceRequest,
    next: Next<B>,
    body: Option<ReadBody>,
) -> Answered<B> {
    let names = body.as_ref().and_then(|b| b.names);
    learn_user(&req, names.as_ref()).await;
    if let Some(body) = body {
        req.set_payload(Payload::from(body.bytes));
    }
    pass_on(req, next).await
}

/// A user, concert or schedule created through another node may not be in this node's
/// catalog yet (it catches up within a quarter TTL): look in the store before the route
/// answers 404.
async fn learn_user(req: &ServiceRequest, names: Option<&HoldNames>) {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return;
    };
    if let Some(user) = user_named(req.path(), names) {
        if !state.engine.user_exists(user) {
            state.engine.learn_user(user).await;
        }
    }
    let schedule = names
        .and_then(|n| n.schedule)
        .or_else(|| schedule_in_path(req.path()));
    let unknown_concert =
        concert_named(req.path()).is_some_and(|c| !state.engine.concert_exists(c));
    if unknown_concert || schedule.is_some_and(|s| !state.engine.schedule_exists(s)) {
        state.engine.learn_catalog().await;
    }
}

/// The shard a request's state lives in (`None`: any node answers it), and its body if it
/// was read to say.
async fn shard_of(req: &mut ServiceRequest, route: Route) -> (Option<ShardId>, Option<ReadBody>) {
    match route {
        // A batch of scans is split by schedule where it lands (`scans.rs`).
        Route::Local | Route::Scans => (None, None),
        Route::Shard(shard) => (Some(shard), None),
        Route::Ticket(id) => {
            let state = req.app_data::<web::Data<AppState>>().cloned();
            let schedule = match state {
                Some(state) => state.engine.schedule_of_ticket(id).await,
                None => None,
            };
            (schedule.map(ShardId::Schedule), None)
        }
        Route::CodeBody => {
            let bytes = read_body(req).await;
            let shard = bytes
                .as_deref()
                .and_then(schedule_of_code)
                .map(ShardId::Schedule);
            (shard, bytes.map(ReadBody::plain))
        }
        Route::Reservation(id) => {
            let state = req.app_data::<web::Data<AppState>>().cloned();
            let schedule = match state {
                Some(state) => state.engine.schedule_of_reservation(id).await,
                None => None,
            };
            (schedule.map(ShardId::Schedule), None)
        }
        Route::HoldBody => {
            let body = read_body(req).await.map(ReadBody::hold);
            let shard = body
                .as_ref()
                .and_then(|b| b.names?.schedule)
                .map(ShardId::Schedule);
            (shard, body)
        }
    }
}

/// Sends the request to its shard's owner and answers with the owner's answer.
async fn forward_to<B>(
    mut req: ServiceRequest,
    membership: &Membership,
    owner: Owner,
    body: Option<Bytes>,
    poll: bool,
) -> ServiceResponse<EitherBody<B>> {
    let body = match body {
        Some(bytes) => bytes,
        None => match read_body(&mut req).await {
            Some(bytes) => bytes,
            None => {
                let answer =
                    ApiError::InvalidRequest("request body too large".into()).error_response();
                return req.into_response(answer).map_into_right_body();
            }
        },
    };
    let Owner { shard, node, url } = owner;
    // An owner that stops answering (paused, partitioned) loses its lease within a TTL; a
    // request waiting on it is then answered 503 at once rather than at the timeout.
    let answer = tokio::select! {
        answer = send(&req, &url, membership.node_id(), body, poll) => answer,
        () = owner_moves(membership, shard, &node) => {
            metrics::counter!("boxoffice_forwards_total", "outcome" => "owner_moved").increment(1);
            ApiError::Unavailable(format!("{shard} moved away from {node} during a forward")).error_response()
        }
    };
    req.into_response(answer).map_into_right_body()
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

/// Sends the request to `target` and turns its answer into ours (a `poll`'s answer is learned
/// from); an owner that cannot be reached is a 503 with `Retry-After`.
async fn send(
    req: &ServiceRequest,
    target: &str,
    me: &str,
    body: Bytes,
    poll: bool,
) -> HttpResponse {
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
                    if status == StatusCode::OK && poll {
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
