//! The error envelope: every error of every route, mapped once from the typed errors below it.

use crate::actors::{AdminError, BookingError, PaymentError, QueueError, Unavailable, WalletError};
use crate::domain::queue::TokenRefusal;
use crate::domain::schedule::BookingRefusal;
use crate::domain::wallet::WalletRefusal;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;

/// Every error a client can see. [`ApiError::row`] gives each its status, slug and message.
#[derive(Debug)]
pub enum ApiError {
    InvalidRequest(String),
    InvalidToken,
    TokenExpired,
    TokenNotActive,
    UserNotFound,
    TokenNotFound,
    ConcertNotFound,
    ScheduleNotFound,
    SeatNotFound,
    ReservationNotFound,
    ReservationFailed,
    ReservationNotOpen,
    SeatLimitExceeded,
    ReservationExpired,
    ReservationAlreadyPaid,
    PaymentInProgress,
    ReservationCancelled,
    NotEnoughBalance,
    InvalidRechargeAmount,
    IdempotencyKeyReused,
    OpeningAlreadyDrawn,
    DrawNotFound,
    HeadersTooLarge,
    /// `--auth jwt`: the bearer is missing, malformed, forged, expired or of another algorithm.
    Unauthorized,
    /// The admin key is missing or wrong (its message says which), or a bearer is another
    /// user's (message `forbidden`).
    /// A JSON body not sent as JSON, or an encoded (compressed) request body.
    UnsupportedMediaType(&'static str),
    Forbidden(&'static str),
    NotFound,
    MethodNotAllowed,
    /// Over a request budget or a limit that frees up with time; `Retry-After` says when the
    /// next request can pass.
    RateLimited {
        retry_after_secs: u64,
    },
    /// The request body did not arrive within `--body-timeout-secs`.
    RequestTimeout,
    /// The cause goes to the log, never to the client.
    Unavailable(String),
    /// `--join-pow-bits`: a new join without `X-Queue-Pow`.
    PowRequired,
    /// `--join-pow-bits`: a malformed, forged, expired, reused or too weak solution.
    PowInvalid,
    /// The waiting list (API.md §12): no entry of this user on this schedule.
    WaitlistEntryNotFound,
    /// A second join of the same user on the same schedule.
    WaitlistAlreadyJoined,
    /// Seats of the schedule are on general sale: hold them instead.
    WaitlistSeatsOnSale,
    /// The list holds its maximum of entries.
    WaitlistFull,
    /// Booking closed, or the performance cancelled: nobody is offered anything.
    WaitlistClosed,
    /// The operator cancelled the performance: nothing more is sold.
    PerformanceCancelled,
    /// The tickets' errors (API.md §12).
    InvalidTicket,
    /// The first admitted scan's time (formatted) and gate, sent beside the envelope's fields.
    AlreadyCheckedIn {
        checked_in_at: String,
        gate: String,
    },
    TicketVoid,
    TicketNotFound,
    TransferNotAllowed,
    RefundNotAllowed,
}

/// The error envelope every route answers with.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The HTTP status, as a number.
    #[schema(example = 404)]
    code: u16,
    /// A stable machine-readable slug.
    #[schema(example = "user_not_found")]
    error: &'static str,
    /// The seed's human-readable text.
    #[schema(example = "user not found")]
    message: String,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::InvalidRequest(message.into())
    }

    /// The variant's (status, slug, message): the envelope's one table, laid out as the
    /// contract's error table, so a new variant is one line. Slugs and messages are the
    /// contract's, byte for byte.
    #[rustfmt::skip]
    fn row(&self) -> (u16, &'static str, &str) {
        use ApiError::*;
        match self {
            InvalidRequest(message) => (400, "invalid_request",          message),
            InvalidToken            => (401, "invalid_token",            "invalid token"),
            TokenExpired            => (401, "token_expired",            "token expired"),
            TokenNotActive          => (401, "token_not_active",         "token not active"),
            UserNotFound            => (404, "user_not_found",           "user not found"),
            TokenNotFound           => (404, "token_not_found",          "token not found"),
            ConcertNotFound         => (404, "concert_not_found",        "concert not found"),
            ScheduleNotFound        => (404, "schedule_not_found",       "schedule not found"),
            SeatNotFound            => (404, "seat_not_found",           "seat not found"),
            ReservationNotFound     => (404, "reservation_not_found",    "reservation not found"),
            ReservationFailed       => (400, "reservation_failed",       "reservation failed"),
            ReservationNotOpen      => (400, "reservation_not_open",     "reservation not open"),
            SeatLimitExceeded       => (400, "seat_limit_exceeded",      "seat limit exceeded"),
            ReservationExpired      => (400, "reservation_expired",      "reservation expired"),
            ReservationAlreadyPaid  => (409, "reservation_already_paid", "reservation already paid"),
            PaymentInProgress       => (409, "payment_in_progress",      "payment in progress"),
            ReservationCancelled    => (409, "reservation_cancelled",    "reservation cancelled"),
            NotEnoughBalance        => (400, "not_enough_balance",       "not enough balance"),
            InvalidRechargeAmount   => (400, "invalid_recharge_amount",  "invalid recharge amount"),
            IdempotencyKeyReused    => (422, "idempotency_key_reused",   "idempotency key reused"),
            OpeningAlreadyDrawn     => (409, "opening_already_drawn",    "opening already drawn"),
            DrawNotFound            => (404, "draw_not_found",           "draw not found"),
            HeadersTooLarge         => (431, "headers_too_large",        "request headers too large"),
            Unauthorized            => (401, "unauthorized",             "unauthorized"),
            UnsupportedMediaType(m) => (415, "unsupported_media_type",   m),
            Forbidden(message)      => (403, "forbidden",                message),
            NotFound                => (404, "not_found",                "not found"),
            MethodNotAllowed        => (405, "method_not_allowed",       "method not allowed"),
            RateLimited { .. }      => (429, "rate_limited",             "too many requests"),
            RequestTimeout          => (408, "request_timeout",          "request timeout"),
            Unavailable(_)          => (503, "unavailable",              "service unavailable"),
            PowRequired             => (403, "pow_required",             "proof of work required"),
            PowInvalid              => (403, "pow_invalid",              "proof of work invalid"),
            WaitlistEntryNotFound   => (404, "waitlist_entry_not_found", "waitlist entry not found"),
            WaitlistAlreadyJoined   => (409, "waitlist_already_joined",  "already on the waiting list"),
            WaitlistSeatsOnSale     => (409, "seats_on_sale",            "seats are on sale: hold them instead"),
            WaitlistFull            => (409, "waitlist_full",            "waiting list full"),
            WaitlistClosed          => (409, "waitlist_closed",          "waiting list closed"),
            PerformanceCancelled    => (409, "performance_cancelled",    "performance cancelled"),
            InvalidTicket           => (400, "invalid_ticket",           "invalid ticket"),
            AlreadyCheckedIn { .. } => (409, "already_checked_in",       "already checked in"),
            TicketVoid              => (410, "ticket_void",              "ticket void"),
            TicketNotFound          => (404, "ticket_not_found",         "ticket not found"),
            TransferNotAllowed      => (409, "transfer_not_allowed",     "transfer not allowed"),
            RefundNotAllowed        => (409, "refund_not_allowed",       "refund not allowed"),
        }
    }
}

/// The envelope's `message`.
impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.row().2)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.row().0).expect("every status in the table is a valid code")
    }

    fn error_response(&self) -> HttpResponse {
        let (_, slug, message) = self.row();
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        match self {
            ApiError::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "answered 503");
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::RateLimited { retry_after_secs } => {
                let secs = (*retry_after_secs).max(1);
                response.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            // The rest of a late body may never come: the connection is not reused.
            ApiError::RequestTimeout => {
                response.force_close();
            }
            ApiError::AlreadyCheckedIn {
                checked_in_at,
                gate,
            } => {
                return response.json(serde_json::json!({
                    "code": status.as_u16(),
                    "error": slug,
                    "message": message,
                    "checkedInAt": checked_in_at,
                    "gate": gate,
                }));
            }
            _ => {}
        }
        response.json(ErrorBody {
            code: status.as_u16(),
            error: slug,
            message: message.to_owned(),
        })
    }
}

impl From<Unavailable> for ApiError {
    fn from(u: Unavailable) -> Self {
        ApiError::Unavailable(u.to_string())
    }
}

impl From<TokenRefusal> for ApiError {
    fn from(rule: TokenRefusal) -> Self {
        match rule {
            TokenRefusal::Invalid => ApiError::InvalidToken,
            TokenRefusal::Expired => ApiError::TokenExpired,
            TokenRefusal::NotActive => ApiError::TokenNotActive,
        }
    }
}

impl From<BookingRefusal> for ApiError {
    fn from(rule: BookingRefusal) -> Self {
        match rule {
            BookingRefusal::SeatNotFound { .. } => ApiError::SeatNotFound,
            BookingRefusal::SeatUnavailable { .. } => ApiError::ReservationFailed,
            BookingRefusal::NotOpen => ApiError::ReservationNotOpen,
            BookingRefusal::SeatLimitExceeded { .. } => ApiError::SeatLimitExceeded,
            BookingRefusal::NoSeats => ApiError::invalid("seatIds must not be empty"),
            BookingRefusal::DuplicateSeat { .. } => {
                ApiError::invalid("seatIds must not repeat a seat")
            }
            BookingRefusal::ReservationNotFound => ApiError::ReservationNotFound,
            BookingRefusal::Expired => ApiError::ReservationExpired,
            BookingRefusal::AlreadyPaid => ApiError::ReservationAlreadyPaid,
            BookingRefusal::PaymentInProgress => ApiError::PaymentInProgress,
            BookingRefusal::Cancelled => ApiError::ReservationCancelled,
            BookingRefusal::PerformanceCancelled => ApiError::PerformanceCancelled,
        }
    }
}

impl From<WalletRefusal> for ApiError {
    fn from(rule: WalletRefusal) -> Self {
        match rule {
            WalletRefusal::InvalidRechargeAmount { .. } => ApiError::InvalidRechargeAmount,
            WalletRefusal::InsufficientFunds { .. } => ApiError::NotEnoughBalance,
            WalletRefusal::UserNotFound => ApiError::UserNotFound,
            WalletRefusal::TokenSpent => ApiError::TokenExpired,
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::UserNotFound => ApiError::UserNotFound,
            QueueError::TokenNotFound => ApiError::TokenNotFound,
            QueueError::Token(rule) => rule.into(),
            QueueError::Unavailable(u) => u.into(),
        }
    }
}

impl From<BookingError> for ApiError {
    fn from(e: BookingError) -> Self {
        match e {
            BookingError::UserNotFound => ApiError::UserNotFound,
            BookingError::ConcertNotFound => ApiError::ConcertNotFound,
            BookingError::ScheduleNotFound => ApiError::ScheduleNotFound,
            BookingError::Refused(rule) => rule.into(),
            BookingError::Unavailable(u) => u.into(),
        }
    }
}

impl From<WalletError> for ApiError {
    fn from(e: WalletError) -> Self {
        match e {
            WalletError::UserNotFound => ApiError::UserNotFound,
            WalletError::Refused(rule) => rule.into(),
            WalletError::Unavailable(u) => u.into(),
        }
    }
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        match e {
            PaymentError::UserNotFound => ApiError::UserNotFound,
            PaymentError::Booking(rule) => rule.into(),
            PaymentError::Wallet(rule) => rule.into(),
            PaymentError::Unavailable(u) => u.into(),
        }
    }
}

impl From<crate::actors::error::TicketError> for ApiError {
    fn from(e: crate::actors::error::TicketError) -> Self {
        use crate::actors::error::TicketError;
        match e {
            TicketError::UserNotFound => ApiError::UserNotFound,
            TicketError::TicketNotFound => ApiError::TicketNotFound,
            TicketError::TransferNotAllowed => ApiError::TransferNotAllowed,
            TicketError::Unavailable(u) => u.into(),
        }
    }
}

/// A door refusal outside a handler that knows the zone (only "unavailable" in practice: the
/// door's handlers map each scan's refusal with the zone themselves).
impl From<crate::actors::error::DoorError> for ApiError {
    fn from(e: crate::actors::error::DoorError) -> Self {
        use crate::actors::error::DoorError;
        use crate::domain::ticket::DoorRefusal;
        match e {
            DoorError::Refused(DoorRefusal::Invalid) => ApiError::InvalidTicket,
            DoorError::Refused(DoorRefusal::Void) => ApiError::TicketVoid,
            DoorError::Refused(DoorRefusal::AlreadyCheckedIn(first)) => {
                ApiError::AlreadyCheckedIn {
                    checked_in_at: first
                        .at
                        .format(chrono::FixedOffset::east_opt(0).expect("zero")),
                    gate: first.gate,
                }
            }
            DoorError::Unavailable(u) => u.into(),
        }
    }
}

impl From<crate::actors::error::RefundError> for ApiError {
    fn from(e: crate::actors::error::RefundError) -> Self {
        use crate::actors::error::RefundError;
        match e {
            RefundError::UserNotFound => ApiError::UserNotFound,
            RefundError::ReservationNotFound => ApiError::ReservationNotFound,
            RefundError::NotAllowed => ApiError::RefundNotAllowed,
            RefundError::Unavailable(u) => u.into(),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::DuplicateSeatNumber => {
                ApiError::invalid("a seat number appears twice in one schedule")
            }
            AdminError::Store(error) => {
                ApiError::Unavailable(format!("admin write failed: {error}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    /// (status, Retry-After, body) of the envelope an error answers with.
    fn envelope(error: ApiError) -> (StatusCode, Option<String>, String) {
        let (head, body) = error.error_response().into_parts();
        let retry_after = head
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().expect("Retry-After is ASCII").to_owned());
        let bytes = body
            .try_into_bytes()
            .expect("a JSON envelope is one complete body");
        let text = String::from_utf8(bytes.to_vec()).expect("the envelope is UTF-8 JSON");
        (head.status(), retry_after, text)
    }

    #[test]
    fn a_503_keeps_its_cause_out_of_the_body_and_asks_for_a_retry() {
        let (status, retry_after, body) =
            envelope(ApiError::Unavailable("db at 10.0.0.7 refused".into()));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(
            body,
            r#"{"code":503,"error":"unavailable","message":"service unavailable"}"#
        );
    }

    #[test]
    fn a_refusal_over_budget_says_when_to_come_back() {
        let (status, retry_after, body) = envelope(ApiError::RateLimited {
            retry_after_secs: 3,
        });
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after.as_deref(), Some("3"));
        assert_eq!(
            body,
            r#"{"code":429,"error":"rate_limited","message":"too many requests"}"#
        );
        let (status, _, body) = envelope(ApiError::RequestTimeout);
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            body,
            r#"{"code":408,"error":"request_timeout","message":"request timeout"}"#
        );
    }

    #[test]
    fn a_429_says_when_to_retry_and_a_415_why() {
        let (_, retry_after, _) = envelope(ApiError::RateLimited {
            retry_after_secs: 3600,
        });
        assert_eq!(retry_after.as_deref(), Some("3600"));
        let (_, retry_after, _) = envelope(ApiError::RateLimited {
            retry_after_secs: 0,
        });
        assert_eq!(
            retry_after.as_deref(),
            Some("1"),
            "never tells a client to retry at once"
        );
        let (status, retry_after, body) =
            envelope(ApiError::UnsupportedMediaType("expected a JSON body"));
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(retry_after, None);
        assert_eq!(
            body,
            r#"{"code":415,"error":"unsupported_media_type","message":"expected a JSON body"}"#
        );
    }

    #[test]
    fn a_variant_with_its_own_message_sends_it() {
        let (status, retry_after, body) = envelope(ApiError::invalid("limit must be 1 to 100"));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(retry_after, None);
        assert_eq!(
            body,
            r#"{"code":400,"error":"invalid_request","message":"limit must be 1 to 100"}"#
        );
    }
}
