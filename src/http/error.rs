//! The error envelope: every error of every route, mapped once from the typed errors below it.

use crate::actors::{AdminError, BookingError, PaymentError, QueueError, Unavailable, WalletError};
use crate::domain::queue::TokenRefusal;
use crate::domain::schedule::BookingRefusal;
use crate::domain::wallet::WalletRefusal;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Every error a client can see. The `Display` text is the envelope's `message`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("invalid token")]
    InvalidToken,
    #[error("token expired")]
    TokenExpired,
    #[error("token not active")]
    TokenNotActive,
    #[error("user not found")]
    UserNotFound,
    #[error("token not found")]
    TokenNotFound,
    #[error("concert not found")]
    ConcertNotFound,
    #[error("schedule not found")]
    ScheduleNotFound,
    #[error("seat not found")]
    SeatNotFound,
    #[error("reservation not found")]
    ReservationNotFound,
    #[error("reservation failed")]
    ReservationFailed,
    #[error("reservation not open")]
    ReservationNotOpen,
    #[error("seat limit exceeded")]
    SeatLimitExceeded,
    #[error("reservation expired")]
    ReservationExpired,
    #[error("reservation already paid")]
    ReservationAlreadyPaid,
    #[error("payment in progress")]
    PaymentInProgress,
    #[error("reservation cancelled")]
    ReservationCancelled,
    #[error("not enough balance")]
    NotEnoughBalance,
    #[error("invalid recharge amount")]
    InvalidRechargeAmount,
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The cause goes to the log, never to the client.
    #[error("service unavailable")]
    Unavailable(String),
    #[error("payment failed")]
    PaymentFailed(String),
    #[error("recharge failed")]
    RechargeFailed(String),
    #[error("internal error")]
    Internal(String),
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
    /// The stable machine-readable slug.
    pub fn slug(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidToken => "invalid_token",
            ApiError::TokenExpired => "token_expired",
            ApiError::TokenNotActive => "token_not_active",
            ApiError::UserNotFound => "user_not_found",
            ApiError::TokenNotFound => "token_not_found",
            ApiError::ConcertNotFound => "concert_not_found",
            ApiError::ScheduleNotFound => "schedule_not_found",
            ApiError::SeatNotFound => "seat_not_found",
            ApiError::ReservationNotFound => "reservation_not_found",
            ApiError::ReservationFailed => "reservation_failed",
            ApiError::ReservationNotOpen => "reservation_not_open",
            ApiError::SeatLimitExceeded => "seat_limit_exceeded",
            ApiError::ReservationExpired => "reservation_expired",
            ApiError::ReservationAlreadyPaid => "reservation_already_paid",
            ApiError::PaymentInProgress => "payment_in_progress",
            ApiError::ReservationCancelled => "reservation_cancelled",
            ApiError::NotEnoughBalance => "not_enough_balance",
            ApiError::InvalidRechargeAmount => "invalid_recharge_amount",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::PaymentFailed(_) => "payment_failed",
            ApiError::RechargeFailed(_) => "recharge_failed",
            ApiError::Internal(_) => "internal_error",
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::InvalidRequest(message.into())
    }

    fn message(&self) -> String {
        match self {
            ApiError::Unavailable(_) => "service unavailable".into(),
            ApiError::PaymentFailed(_) => "payment failed".into(),
            ApiError::RechargeFailed(_) => "recharge failed".into(),
            ApiError::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::ReservationFailed
            | ApiError::ReservationNotOpen
            | ApiError::SeatLimitExceeded
            | ApiError::ReservationExpired
            | ApiError::NotEnoughBalance
            | ApiError::InvalidRechargeAmount => StatusCode::BAD_REQUEST,
            ApiError::InvalidToken | ApiError::TokenExpired | ApiError::TokenNotActive => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UserNotFound
            | ApiError::TokenNotFound
            | ApiError::ConcertNotFound
            | ApiError::ScheduleNotFound
            | ApiError::SeatNotFound
            | ApiError::ReservationNotFound
            | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::ReservationAlreadyPaid
            | ApiError::PaymentInProgress
            | ApiError::ReservationCancelled => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PaymentFailed(_) | ApiError::RechargeFailed(_) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            ApiError::Unavailable(cause) => tracing::warn!(cause = %cause, "answered 503"),
            ApiError::PaymentFailed(cause)
            | ApiError::RechargeFailed(cause)
            | ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, slug = self.slug(), "answered 500")
            }
            _ => {}
        }
        let mut response = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(ErrorBody {
            code: status.as_u16(),
            error: self.slug(),
            message: self.message(),
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
        }
    }
}

impl From<WalletRefusal> for ApiError {
    fn from(rule: WalletRefusal) -> Self {
        match rule {
            WalletRefusal::InvalidRechargeAmount { .. } => ApiError::InvalidRechargeAmount,
            WalletRefusal::InsufficientFunds { .. } => ApiError::NotEnoughBalance,
            WalletRefusal::UserNotFound => ApiError::UserNotFound,
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
