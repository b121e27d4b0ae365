//! Which shard a request's state lives in, read from the route table: each route of
//! `http::routes` names its [`ShardKey`], and a request is
//! matched against that same table (method and path template), so a route added there is
//! forwarded by what it names, never by a second list of path patterns here.
//!
//! What routes where: the waiting room's routes go to the queue shard's owner, a user's wallet
//! and payment routes to their wallet bucket's owner, a hold to the schedule's owner, and a
//! reservation read, cancel or refund to its schedule's owner, a transfer to its ticket's
//! schedule's owner, a check-in to the owner of the schedule its code names, and a batch of
//! scans is split by schedule where it lands (`scans.rs`). Everything else (the catalog, seat
//! maps, the admin routes, operations) is answered by any node: a seat map of a schedule held
//! elsewhere from a copy at most 250 ms old (`seat_copy.rs`). A request no route serves (a
//! 404 or 405) is answered here: any node's envelope is the same.

use crate::domain::cluster::ShardId;
use crate::domain::ticket::schedule_named;
use crate::domain::{ReservationId, ScheduleId, TicketId, UserId};
use crate::http::routes::{keyed_route_table, POLL_PATH};
use crate::http::ShardKey;
use actix_web::dev::{Path, ResourceDef};
use actix_web::http::Method;
use std::sync::OnceLock;

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
    /// The ticket's schedule's shard (looked up).
    Ticket(TicketId),
    /// A check-in: the schedule its body's code names.
    CodeBody,
    /// A batch of scans, split by schedule where it lands.
    Scans,
}

/// One route of the table, its path template compiled.
struct KeyedRoute {
    method: Method,
    path: &'static str,
    template: ResourceDef,
    key: ShardKey,
}

/// The route table, compiled once: matching a path is then a few comparisons and, for the
/// templates with an id in them, a short regex.
fn table() -> &'static [KeyedRoute] {
    static TABLE: OnceLock<Vec<KeyedRoute>> = OnceLock::new();
    TABLE.get_or_init(|| {
        keyed_route_table()
            .into_iter()
            .map(|(method, path, key)| KeyedRoute {
                method,
                path,
                template: ResourceDef::new(path),
                key,
            })
            .collect()
    })
}

/// The table's route a request's method and path match, with the path segments it captured.
fn matched<'a>(method: &Method, path: &'a str) -> Option<(&'static KeyedRoute, Path<&'a str>)> {
    table()
        .iter()
        .filter(|route| route.method == method)
        .find_map(|route| {
            let mut params = Path::new(path);
            route
                .template
                .capture_match_info(&mut params)
                .then_some((route, params))
        })
}

/// The route of a request, from the table's route its method and path match (a hold's body
/// is read later); [`Route::Local`] when no route serves it.
#[cfg(test)]
pub fn route_of(method: &Method, path: &str) -> Route {
    matched(method, path).map_or(Route::Local, |(route, params)| keyed(route.key, &params))
}

/// The route of a request (as [`route_of`]) and whether it is the waiting room's status poll
/// ([`POLL_PATH`]), from one match of the table: the forwarder asks both of every request
/// (matching the table twice was a measured cost per request, issue 26).
pub(super) fn classify(method: &Method, path: &str) -> (Route, bool) {
    matched(method, path).map_or((Route::Local, false), |(route, params)| {
        (keyed(route.key, &params), route.path == POLL_PATH)
    })
}

/// A route's key, given the path segments its template captured. An id that does not parse
/// is answered here (its route refuses it with the same envelope any node would).
fn keyed(key: ShardKey, params: &Path<&str>) -> Route {
    let id = |name: &str| params.get(name)?.parse::<i64>().ok();
    match key {
        ShardKey::AnyNode => Route::Local,
        ShardKey::Queue => Route::Shard(ShardId::Queue),
        ShardKey::UserWallet => id("userId")
            .and_then(|user| UserId::new(user).ok())
            .map_or(Route::Local, |user| Route::Shard(ShardId::of_wallet(user))),
        ShardKey::HoldBody => Route::HoldBody,
        ShardKey::ReservationSchedule => id("reservationId")
            .and_then(|id| ReservationId::new(id).ok())
            .map_or(Route::Local, Route::Reservation),
        ShardKey::PathSchedule => id("scheduleId")
            .and_then(|id| ScheduleId::new(id).ok())
            .map_or(Route::Local, |s| Route::Shard(ShardId::Schedule(s))),
        ShardKey::TicketSchedule => id("ticketId")
            .and_then(|id| TicketId::new(id).ok())
            .map_or(Route::Local, Route::Ticket),
        ShardKey::CodeBody => Route::CodeBody,
        ShardKey::ScanSchedules => Route::Scans,
    }
}

// What a request names, for this node to catch up with before it answers one here
// (`forward.rs`) and for polls (`polls.rs`): not for routing, which is the table's alone.

/// The user a request names: in its path, or in a hold's body (read by [`hold_names`]).
pub(super) fn user_named(path: &str, body: Option<&HoldNames>) -> Option<UserId> {
    let in_path = path
        .split('/')
        .skip_while(|part| *part != "users")
        .nth(1)
        .and_then(|u| u.parse::<i64>().ok())
        .and_then(|raw| UserId::new(raw).ok());
    in_path.or_else(|| body?.user)
}

/// What a hold's body names, read once: the schedule that routes it and the user this node
/// may have to learn, each if the body is well-formed enough to say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct HoldNames {
    pub(super) user: Option<UserId>,
    pub(super) schedule: Option<ScheduleId>,
}

pub(super) fn hold_names(body: &[u8]) -> HoldNames {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Named {
        user_id: Option<i64>,
        schedule_id: Option<i64>,
    }
    let Ok(named) = serde_json::from_slice::<Named>(body) else {
        return HoldNames::default();
    };
    HoldNames {
        user: named.user_id.and_then(|u| UserId::new(u).ok()),
        schedule: named.schedule_id.and_then(|s| ScheduleId::new(s).ok()),
    }
}

/// The concert a path names (`/v1/concerts/{id}/…`).
pub(super) fn concert_named(path: &str) -> Option<crate::domain::ConcertId> {
    let raw = path.strip_prefix("/v1/concerts/")?.split('/').next()?;
    crate::domain::ConcertId::new(raw.parse().ok()?).ok()
}

/// The schedule a seat-map path names (`/v1/concerts/{id}/schedules/{id}/seats`).
pub(super) fn schedule_in_path(path: &str) -> Option<ScheduleId> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "v1", "concerts", _, "schedules", s, "seats"] => ScheduleId::new(s.parse().ok()?).ok(),
        _ => None,
    }
}

/// The schedule a check-in's body's code names, if the body and the code are well-formed
/// enough to say (the code's signature is the owner's to check).
pub(super) fn schedule_of_code(body: &[u8]) -> Option<ScheduleId> {
    #[derive(serde::Deserialize)]
    struct Scan {
        code: String,
    }
    let scan: Scan = serde_json::from_slice(body).ok()?;
    ScheduleId::new(schedule_named(&scan.code)?).ok()
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
        assert_eq!(
            route_of(&Method::POST, "/v1/reservations/12/refund"),
            Route::Reservation(ReservationId::new(12).expect("positive"))
        );
        assert_eq!(
            route_of(&Method::POST, "/v1/tickets/8/transfer"),
            Route::Ticket(TicketId::new(8).expect("positive"))
        );
        assert_eq!(route_of(&Method::POST, "/v1/checkins"), Route::CodeBody);
        assert_eq!(route_of(&Method::POST, "/v1/checkins/batch"), Route::Scans);
        assert_eq!(route_of(&get, "/v1/tickets/8/qr.svg"), Route::Local);
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
        let hold = hold_names(br#"{"userId":3,"scheduleId":1}"#);
        assert_eq!(user_named("/v1/reservations", Some(&hold)), user(3));
        assert_eq!(
            user_named("/v1/reservations", Some(&hold_names(b"{}"))),
            None
        );
        assert_eq!(user_named("/v1/balance/users/0", None), None);
        assert_eq!(user_named("/v1/concerts/1/schedules", None), None);
    }

    #[test]
    fn a_hold_body_names_its_schedule_and_user_or_nothing() {
        assert_eq!(
            hold_names(br#"{"userId":1,"scheduleId":4,"seatIds":[1]}"#),
            HoldNames {
                user: UserId::new(1).ok(),
                schedule: ScheduleId::new(4).ok(),
            }
        );
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"{"scheduleId":-1}"#,
            br#"{"scheduleId":"4"}"#,
        ] {
            assert_eq!(hold_names(bad).schedule, None);
        }
    }

    #[test]
    fn one_match_says_the_route_and_whether_it_is_the_poll() {
        let get = Method::GET;
        assert_eq!(
            classify(&get, "/v1/queue-status/users/5"),
            (route_of(&get, "/v1/queue-status/users/5"), true)
        );
        assert_eq!(
            classify(&Method::POST, "/v1/reservations"),
            (Route::HoldBody, false)
        );
        assert_eq!(classify(&get, "/nowhere"), (Route::Local, false));
    }

    /// The fair opening's routes: the queue actor's state, though not under `/v1/queue-`.
    const OPENING_ROUTES: [&str; 3] = [
        "/v1/queue/opening",
        "/v1/queue/draw",
        "/v1/admin/queue/opening",
    ];

    /// `route_of` as it was before the route table named each route's shard: string patterns.
    fn route_of_by_patterns(method: &Method, path: &str) -> Route {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let user = |s: &str| s.parse::<i64>().ok().and_then(|u| UserId::new(u).ok());
        match parts.as_slice() {
            ["", "v1", "queue-tokens", "users", _] | ["", "v1", "queue-status", "users", _] => {
                Route::Shard(ShardId::Queue)
            }
            // The fair opening (API.md §11): the queue actor's.
            ["", "v1", "queue", "opening" | "draw"] | ["", "v1", "admin", "queue", "opening"] => {
                Route::Shard(ShardId::Queue)
            }
            ["", "v1", "balance", "users", u, ..] | ["", "v1", "payments", "users", u, ..] => {
                user(u).map_or(Route::Local, |u| Route::Shard(ShardId::of_wallet(u)))
            }
            ["", "v1", "reservations"] if method == Method::POST => Route::HoldBody,
            // The waiting list, a cancellation, an audit (API.md §12): the schedule's.
            ["", "v1", "concerts", _, "schedules", s, "waitlist", ..]
            | ["", "v1", "admin", "schedules", s, "cancel" | "audit"] => s
                .parse::<i64>()
                .ok()
                .and_then(|s| ScheduleId::new(s).ok())
                .map_or(Route::Local, |s| Route::Shard(ShardId::Schedule(s))),
            ["", "v1", "reservations", id] | ["", "v1", "reservations", id, "refund"] => id
                .parse::<i64>()
                .ok()
                .and_then(|id| ReservationId::new(id).ok())
                .map_or(Route::Local, Route::Reservation),
            // A check-in and a transfer (API.md §12): their ticket's schedule's.
            ["", "v1", "tickets", id, "transfer"] if method == Method::POST => id
                .parse::<i64>()
                .ok()
                .and_then(|id| TicketId::new(id).ok())
                .map_or(Route::Local, Route::Ticket),
            ["", "v1", "checkins"] if method == Method::POST => Route::CodeBody,
            ["", "v1", "checkins", "batch"] if method == Method::POST => Route::Scans,
            _ => Route::Local,
        }
    }

    /// `template` with each `{name}` replaced by its value.
    fn filled(template: &str, values: &[(&str, &str)]) -> String {
        values
            .iter()
            .fold(template.to_string(), |path, (name, value)| {
                path.replace(&format!("{{{name}}}"), value)
            })
    }

    #[test]
    fn every_route_is_routed_as_the_path_patterns_routed_it() {
        let ids = ["70", "12", "1", "9", "0", "-3", "x", "99999999999999999999"];
        for (method, template, key) in keyed_route_table() {
            for id in ids {
                let values = [
                    ("userId", id),
                    ("reservationId", id),
                    ("concertId", "1"),
                    ("scheduleId", id),
                    ("ticketId", id),
                ];
                let path = filled(template, &values);
                assert!(
                    !path.contains('{'),
                    "{template} has an id this test does not fill"
                );
                assert_eq!(
                    route_of(&method, &path),
                    route_of_by_patterns(&method, &path),
                    "{method} {path} ({key:?})"
                );
            }
        }
    }

    #[test]
    fn every_key_reads_what_its_route_names() {
        for (method, template, key) in keyed_route_table() {
            let names = match key {
                ShardKey::AnyNode => true,
                ShardKey::Queue => {
                    template.starts_with("/v1/queue-") || OPENING_ROUTES.contains(&template)
                }
                ShardKey::UserWallet => template.contains("/users/{userId}"),
                ShardKey::HoldBody => method == Method::POST && !template.contains('{'),
                ShardKey::ReservationSchedule => template.contains("{reservationId}"),
                ShardKey::PathSchedule => template.contains("{scheduleId}"),
                ShardKey::TicketSchedule => template.contains("{ticketId}"),
                ShardKey::CodeBody | ShardKey::ScanSchedules => {
                    method == Method::POST && template.starts_with("/v1/checkins")
                }
            };
            assert!(names, "{method} {template} is keyed {key:?}");
        }
    }

    #[test]
    fn a_route_that_keeps_state_in_a_shard_is_keyed_to_it() {
        // A route reading a user's wallet or payments, the line, or a reservation, keyed as
        // answered by any node would be answered from the wrong node's state.
        for (method, template, key) in keyed_route_table() {
            let stateful = [
                "/v1/queue-",
                "/v1/balance/",
                "/v1/payments/",
                "/v1/reservations",
                "/v1/admin/schedules/",
            ]
            .iter()
            .any(|prefix| template.starts_with(prefix))
                || OPENING_ROUTES.contains(&template)
                || template.contains("/waitlist/")
                // The door's and a transfer's: decided by the ticket's schedule.
                || template.starts_with("/v1/checkins")
                || template.ends_with("/transfer");
            assert_eq!(stateful, key != ShardKey::AnyNode, "{method} {template}");
        }
    }

    #[test]
    fn a_check_in_names_its_codes_schedule_or_nothing() {
        use crate::domain::ticket::{CodeClaims, TicketKeys};
        let claims = CodeClaims {
            t: 1,
            s: 6,
            e: 2,
            v: 1,
            i: 0,
        };
        let code = TicketKeys::from_seed([1; 32]).sign(&claims);
        let body = serde_json::json!({"code": code, "gate": "north"}).to_string();
        assert_eq!(schedule_of_code(body.as_bytes()), ScheduleId::new(6).ok());
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"{"code":"bo1.xx.yy","gate":"n"}"#,
            br#"{"code":7}"#,
        ] {
            assert_eq!(schedule_of_code(bad), None);
        }
    }

    #[test]
    fn only_the_status_route_is_a_poll() {
        assert!(classify(&Method::GET, "/v1/queue-status/users/5").1);
        assert!(!classify(&Method::POST, "/v1/queue-status/users/5").1);
        assert!(!classify(&Method::GET, "/v1/queue-tokens/users/5").1);
        assert!(!classify(&Method::GET, "/v1/balance/users/5").1);
    }

    #[test]
    fn a_request_no_route_serves_is_answered_here() {
        for (method, path) in [
            (Method::GET, "/v1/reservations"),
            (Method::PUT, "/v1/queue-tokens/users/5"),
            (Method::GET, "/v1/internal/pins"),
            (Method::GET, "/v1/nothing/users/5"),
        ] {
            assert_eq!(route_of(&method, path), Route::Local, "{method} {path}");
        }
    }
}
