//! The one route table: every route's method, path template, handler, body limit, and the
//! shard its state lives in ([`ShardKey`]), which is how a cluster node finds the node that
//! answers it (`cluster::routing`). Registering a route here is all it takes to serve it, to
//! forward it, and to hold the OpenAPI document to it.

use super::{
    admin, balance, cluster, concerts, extract, live, live_history, metrics, openapi, ops,
    payments, queue,
};
// The fair opening's routes (API.md §11).
use super::opening;
use super::{reservations, waitlist, ApiError, ADMIN_BODY_LIMIT, BODY_LIMIT};
// Tickets and the door (API.md §12).
use super::{door, refunds, tickets};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

/// Where a route's state lives, so which node of a cluster answers it. Every route names one:
/// a route added without it does not compile, and `cluster::routing`'s tests hold each to the
/// path segment or body it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardKey {
    /// Answered by any node: the catalog, seat maps (from a copy at most 250 ms old), the
    /// admin routes and operations.
    AnyNode,
    /// The waiting room: the queue shard.
    Queue,
    /// The wallet bucket of the user in the path's `{userId}`.
    UserWallet,
    /// A hold: the schedule named in its body.
    HoldBody,
    /// The schedule of the reservation in the path's `{reservationId}` (looked up).
    ReservationSchedule,
    /// The schedule in the path's `{scheduleId}`: its waiting list, its cancellation.
    PathSchedule,
    /// The schedule of the ticket in the path's `{ticketId}` (looked up): a transfer.
    TicketSchedule,
    /// A check-in: the schedule its body's code names (read without verifying the code; the
    /// owner verifies it). A code that names none is answered where it lands.
    CodeBody,
    /// A batch of scans: each scan its code's schedule's. The node it lands on answers its own
    /// schedules' scans and sends each other schedule's to that schedule's owner as one batch
    /// (`cluster::scans`), then answers one body in the request's order.
    ScanSchedules,
}

/// The waiting room's status poll, which a cluster node may answer from the queue owner's
/// snapshot (`cluster::polls`).
pub(crate) const POLL_PATH: &str = "/v1/queue-status/users/{userId}";

/// The admin's fair opening (API.md §11).
const OPENING_ADMIN_PATH: &str = "/v1/admin/queue/opening";

/// One route: method, path template, shard key, handler, and an optional body limit of its own.
struct RouteSpec {
    method: Method,
    path: &'static str,
    key: ShardKey,
    route: actix_web::Route,
    body_limit: Option<usize>,
}

fn spec(method: Method, path: &'static str, key: ShardKey, route: actix_web::Route) -> RouteSpec {
    RouteSpec {
        method,
        path,
        key,
        route,
        body_limit: None,
    }
}

/// Every route the service serves: `configure_for` registers exactly these, the OpenAPI test
/// compares the document with exactly these, and the forwarder routes by exactly these.
fn routes() -> Vec<RouteSpec> {
    let mut all = queue_routes();
    all.extend(booking_routes());
    all.extend(wallet_routes());
    all.extend(ticket_routes());
    all.extend(admin_and_ops_routes());
    all.extend(waitlist_routes());
    all
}

/// The waiting list, a performance's cancellation and its audit (API.md §12): the schedule's
/// owner answers (the audit reads the database, so any node could; its owner has just written).
fn waitlist_routes() -> Vec<RouteSpec> {
    use Method as M;
    use ShardKey::PathSchedule;
    const ENTRY: &str = "/v1/concerts/{concertId}/schedules/{scheduleId}/waitlist/users/{userId}";
    vec![
        spec(M::POST, ENTRY, PathSchedule, web::post().to(waitlist::join)),
        spec(M::GET, ENTRY, PathSchedule, web::get().to(waitlist::read)),
        spec(
            M::DELETE,
            ENTRY,
            PathSchedule,
            web::delete().to(waitlist::leave),
        ),
        spec(
            M::POST,
            "/v1/admin/schedules/{scheduleId}/cancel",
            PathSchedule,
            web::post().to(waitlist::cancel_performance),
        ),
        spec(
            M::GET,
            "/v1/admin/schedules/{scheduleId}/audit",
            PathSchedule,
            web::get().to(waitlist::audit),
        ),
    ]
}

/// The waiting room's: all the queue shard's.
fn queue_routes() -> Vec<RouteSpec> {
    use Method as M;
    use ShardKey::Queue;
    vec![
        spec(
            M::POST,
            "/v1/queue-tokens/users/{userId}",
            Queue,
            web::post().to(queue::join),
        ),
        spec(
            M::GET,
            "/v1/queue-tokens/users/{userId}",
            Queue,
            web::get().to(queue::token),
        ),
        spec(M::GET, POLL_PATH, Queue, web::get().to(queue::status)),
        // The fair opening (API.md §11): the queue actor owns it, so its shard answers.
        spec(
            M::PUT,
            OPENING_ADMIN_PATH,
            Queue,
            web::put().to(opening::schedule),
        ),
        spec(
            M::DELETE,
            OPENING_ADMIN_PATH,
            Queue,
            web::delete().to(opening::cancel),
        ),
        spec(
            M::GET,
            "/v1/queue/opening",
            Queue,
            web::get().to(opening::opening),
        ),
        spec(
            M::GET,
            "/v1/queue/draw",
            Queue,
            web::get().to(opening::draw),
        ),
        // Any node issues a challenge (an HMAC, checked with the key every node shares); the
        // spent ones are remembered per node, and every join is answered by the queue's owner,
        // so each spend is checked there.
        spec(
            M::GET,
            "/v1/queue/challenge",
            ShardKey::AnyNode,
            web::get().to(queue::challenge),
        ),
    ]
}

/// The catalog's (any node), and the holds' (the schedule's).
fn booking_routes() -> Vec<RouteSpec> {
    use Method as M;
    use ShardKey::{AnyNode, HoldBody, ReservationSchedule};
    vec![
        spec(
            M::GET,
            "/v1/concerts/{concertId}/schedules",
            AnyNode,
            web::get().to(concerts::schedules),
        ),
        spec(
            M::GET,
            "/v1/concerts/{concertId}/schedules/{scheduleId}/seats",
            AnyNode,
            web::get().to(concerts::seats),
        ),
        spec(
            M::POST,
            "/v1/reservations",
            HoldBody,
            web::post().to(reservations::reserve),
        ),
        spec(
            M::GET,
            "/v1/reservations/{reservationId}",
            ReservationSchedule,
            web::get().to(reservations::read),
        ),
        spec(
            M::DELETE,
            "/v1/reservations/{reservationId}",
            ReservationSchedule,
            web::delete().to(reservations::cancel),
        ),
    ]
}

/// A user's payments and wallet: their wallet bucket's.
fn wallet_routes() -> Vec<RouteSpec> {
    use Method as M;
    use ShardKey::UserWallet;
    vec![
        spec(
            M::POST,
            "/v1/payments/users/{userId}",
            UserWallet,
            web::post().to(payments::pay),
        ),
        spec(
            M::POST,
            "/v1/payments/users/{userId}/progress",
            UserWallet,
            web::post().to(payments::progress),
        ),
        spec(
            M::GET,
            "/v1/balance/users/{userId}",
            UserWallet,
            web::get().to(balance::balance),
        ),
        spec(
            M::POST,
            "/v1/balance/users/{userId}/recharge",
            UserWallet,
            web::post().to(balance::recharge),
        ),
        spec(
            M::GET,
            "/v1/balance/users/{userId}/history",
            UserWallet,
            web::get().to(balance::history),
        ),
    ]
}

/// Tickets and the door (API.md §12). A holder's list, the key and a QR code are read from the
/// database, so any node answers them, whatever schedules the tickets are of. A check-in, a
/// transfer and a refund are decided by the schedule's actor, so its owner answers them: a
/// transfer's schedule is its ticket's (looked up), a check-in's the one its code names, and a
/// batch of scans is split by schedule. A refund's wallet, when another node holds it, is
/// credited there, fenced on both shards (`actors/cluster/remote_refund.rs`).
fn ticket_routes() -> Vec<RouteSpec> {
    use Method as M;
    use ShardKey::AnyNode;
    // 1,000 scans of about 250 bytes each.
    const BATCH_LIMIT: usize = 512 * 1024;
    vec![
        spec(
            M::GET,
            "/v1/tickets/users/{userId}",
            AnyNode,
            web::get().to(tickets::of_user),
        ),
        spec(
            M::GET,
            "/v1/tickets/public-key",
            AnyNode,
            web::get().to(tickets::public_key),
        ),
        spec(
            M::GET,
            "/v1/tickets/{ticketId}/qr.svg",
            AnyNode,
            web::get().to(tickets::qr),
        ),
        spec(
            M::POST,
            "/v1/tickets/{ticketId}/transfer",
            ShardKey::TicketSchedule,
            web::post().to(tickets::transfer),
        ),
        spec(
            M::POST,
            "/v1/reservations/{reservationId}/refund",
            ShardKey::ReservationSchedule,
            web::post().to(refunds::refund),
        ),
        spec(
            M::POST,
            "/v1/checkins",
            ShardKey::CodeBody,
            web::post().to(door::check_in),
        ),
        RouteSpec {
            body_limit: Some(BATCH_LIMIT),
            ..spec(
                M::POST,
                "/v1/checkins/batch",
                ShardKey::ScanSchedules,
                web::post().to(door::batch),
            )
        },
    ]
}

/// The admin routes and operations: any node's.
fn admin_and_ops_routes() -> Vec<RouteSpec> {
    use Method as M;
    use ShardKey::AnyNode;
    vec![
        RouteSpec {
            body_limit: Some(ADMIN_BODY_LIMIT),
            ..spec(
                M::POST,
                "/v1/admin/users",
                AnyNode,
                web::post().to(admin::create_user),
            )
        },
        RouteSpec {
            body_limit: Some(ADMIN_BODY_LIMIT),
            ..spec(
                M::POST,
                "/v1/admin/concerts",
                AnyNode,
                web::post().to(admin::create_concert),
            )
        },
        spec(M::GET, live::PATH, AnyNode, web::get().to(live::live)),
        spec(
            M::GET,
            "/v1/admin/live/history",
            AnyNode,
            web::get().to(live_history::history),
        ),
        spec(
            M::GET,
            "/v1/admin/cluster",
            AnyNode,
            web::get().to(cluster::view::cluster),
        ),
        spec(M::GET, "/healthz", AnyNode, web::get().to(ops::healthz)),
        spec(M::GET, "/readyz", AnyNode, web::get().to(ops::readyz)),
        spec(M::GET, "/metrics", AnyNode, web::get().to(ops::metrics)),
        spec(
            M::GET,
            "/openapi.json",
            AnyNode,
            web::get().to(openapi::openapi),
        ),
    ]
}

/// (method, path template, shard key) of every route served: what the forwarder matches.
pub(crate) fn keyed_route_table() -> Vec<(Method, &'static str, ShardKey)> {
    routes()
        .into_iter()
        .map(|r| (r.method, r.path, r.key))
        .collect()
}

/// (method, path template) of every route served.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes().into_iter().map(|r| (r.method, r.path)).collect()
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Every route: the one listener when `--ops-bind` is not set.
    All,
    /// Every route but [`ops::OPS_ONLY_PATHS`]: the public listener beside an ops listener.
    Public,
    /// Only [`ops::OPS_PATHS`]: the `--ops-bind` listener.
    Ops,
}

impl Listener {
    fn serves(self, path: &str) -> bool {
        match self {
            Listener::All => true,
            Listener::Public => !ops::OPS_ONLY_PATHS.contains(&path),
            Listener::Ops => ops::OPS_PATHS.contains(&path),
        }
    }
}

/// Registers every route `listener` serves, and the envelope for every way a request can fail
/// to reach one: the routes it does not serve are 404 envelopes. The pages (`crate::web`) are
/// beside the API, not in it: the server adds them next to these.
pub fn configure_for(cfg: &mut web::ServiceConfig, listener: Listener) {
    cfg.app_data(extract::json_config(BODY_LIMIT))
        .app_data(extract::path_config())
        .app_data(extract::query_config());
    // Group the routes by path: one resource per path, so an unsupported method on a known
    // path is a 405 envelope (with the path's methods in `Allow`) rather than a 404.
    type Group = (
        &'static str,
        Option<usize>,
        Vec<Method>,
        Vec<actix_web::Route>,
    );
    let mut by_path: Vec<Group> = Vec::new();
    for r in routes().into_iter().filter(|r| listener.serves(r.path)) {
        match by_path.iter_mut().find(|(path, ..)| *path == r.path) {
            Some((_, limit, methods, list)) => {
                *limit = limit.or(r.body_limit);
                methods.push(r.method);
                list.push(r.route);
            }
            None => by_path.push((r.path, r.body_limit, vec![r.method], vec![r.route])),
        }
    }
    for (path, limit, methods, list) in by_path {
        let allow = allow_header(&methods);
        let mut resource = web::resource(path)
            // Before any extractor: an encoded body is refused unread.
            .wrap(actix_web::middleware::from_fn(
                extract::refuse_encoded_bodies,
            ))
            .app_data(metrics::RouteLabel(path))
            .default_service(web::to(move || method_not_allowed(allow.clone())));
        if let Some(limit) = limit {
            resource = resource.app_data(extract::json_config(limit));
        }
        for route in list {
            resource = resource.route(route);
        }
        cfg.service(resource);
    }
    // The node-to-node routes (cluster mode) are beside the API too; the ops listener has
    // none of them.
    if listener != Listener::Ops {
        cluster::internal::configure(cfg);
    }
    cfg.default_service(web::to(not_found));
}

async fn not_found(_: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// RFC 9110 §15.5.6: a 405 lists the methods the resource does support.
async fn method_not_allowed(allow: HeaderValue) -> HttpResponse {
    let mut response = ApiError::MethodNotAllowed.error_response();
    response.headers_mut().insert(header::ALLOW, allow);
    response
}

/// `Allow` for a path served with `methods`.
fn allow_header(methods: &[Method]) -> HeaderValue {
    let listed: Vec<&str> = methods.iter().map(Method::as_str).collect();
    HeaderValue::from_str(&listed.join(", ")).expect("method names are valid header text")
}
