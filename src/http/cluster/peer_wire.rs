//! Cluster mode: the JSON of the node-to-node routes (`internal.rs` serves them,
//! `peer_client.rs` calls them). Not part of the public contract: both ends are this build.

use crate::actors::cluster::peers::PaymentOutcome;
use crate::domain::queue::LineSnapshot;
use crate::domain::schedule::{BookingRefusal, Reservation, ReservationStatus};
use crate::domain::{Money, ReservationId, ScheduleId, SeatId, Timestamp, TokenId, UserId};
use serde::{Deserialize, Serialize};

/// Where the node-to-node routes live; the forwarder never forwards them.
pub const PINS_PATH: &str = "/v1/internal/pins";
pub const SPENT_TOKENS_PATH: &str = "/v1/internal/spent-tokens/{tokenId}";
pub const QUEUE_SYNC_PATH: &str = "/v1/internal/queue-sync";

/// A sync's body at most: [`MAX_TOUCHES_PER_SYNC`](crate::actors::cluster::queue_copy::MAX_TOUCHES_PER_SYNC)
/// token ids of up to 16 digits and a comma each, and the braces.
pub const QUEUE_SYNC_BODY_LIMIT: usize = 256 * 1024;

/// `POST /v1/internal/queue-sync`: the waiters whose polls another node answered.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueSyncBody {
    pub touches: Vec<TokenId>,
}

/// The answer: which of them no longer wait, and the owner's snapshot.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSyncAnswer {
    pub gone: Vec<TokenId>,
    pub snapshot: LineSnapshot,
}

/// The longest shard name a pin request may carry (`wallets:63` is ten bytes).
pub const MAX_SHARD_NAME: usize = 32;

/// `POST /v1/internal/pins`: the wallet owner asks the schedule owner to pin a hold.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinBody {
    pub reservation_id: ReservationId,
    pub user_id: UserId,
    /// The asking node, which holds `wallet_shard` at `wallet_epoch`.
    pub from: String,
    pub wallet_shard: String,
    pub wallet_epoch: u64,
}

/// The answer: the pinned hold, or the rule that refused it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PinAnswer {
    Pinned {
        reservation: WireReservation,
        owner: String,
        epoch: u64,
    },
    Refused(WireRefusal),
}

/// The refusals a pin can meet.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WireRefusal {
    ReservationNotFound,
    Expired,
    AlreadyPaid,
    PaymentInProgress,
    Cancelled,
}

impl From<&BookingRefusal> for WireRefusal {
    fn from(refusal: &BookingRefusal) -> WireRefusal {
        match refusal {
            BookingRefusal::Expired => WireRefusal::Expired,
            BookingRefusal::AlreadyPaid => WireRefusal::AlreadyPaid,
            BookingRefusal::PaymentInProgress => WireRefusal::PaymentInProgress,
            BookingRefusal::Cancelled => WireRefusal::Cancelled,
            // The hold rules (seats, limits) cannot refuse a pin.
            _ => WireRefusal::ReservationNotFound,
        }
    }
}

impl From<WireRefusal> for BookingRefusal {
    fn from(refusal: WireRefusal) -> BookingRefusal {
        match refusal {
            WireRefusal::ReservationNotFound => BookingRefusal::ReservationNotFound,
            WireRefusal::Expired => BookingRefusal::Expired,
            WireRefusal::AlreadyPaid => BookingRefusal::AlreadyPaid,
            WireRefusal::PaymentInProgress => BookingRefusal::PaymentInProgress,
            WireRefusal::Cancelled => BookingRefusal::Cancelled,
        }
    }
}

/// A reservation as the paying node must write it: every column, times in epoch ms.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireReservation {
    pub id: ReservationId,
    pub user_id: UserId,
    pub schedule_id: ScheduleId,
    pub seat_ids: Vec<SeatId>,
    pub total: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub status: String,
    pub updated_at: i64,
}

impl From<&Reservation> for WireReservation {
    fn from(r: &Reservation) -> WireReservation {
        WireReservation {
            id: r.id,
            user_id: r.user,
            schedule_id: r.schedule,
            seat_ids: r.seats.clone(),
            total: r.total.won(),
            created_at: r.created_at.millis(),
            expires_at: r.expires_at.millis(),
            status: r.status.as_str().to_string(),
            updated_at: r.updated_at.millis(),
        }
    }
}

impl TryFrom<WireReservation> for Reservation {
    type Error = String;

    fn try_from(w: WireReservation) -> Result<Reservation, String> {
        Ok(Reservation {
            id: w.id,
            user: w.user_id,
            schedule: w.schedule_id,
            seats: w.seat_ids,
            total: Money::new(w.total).ok_or_else(|| format!("bad total {}", w.total))?,
            created_at: Timestamp::from_millis(w.created_at),
            expires_at: Timestamp::from_millis(w.expires_at),
            status: ReservationStatus::parse(&w.status)
                .ok_or_else(|| format!("bad status {:?}", w.status))?,
            updated_at: Timestamp::from_millis(w.updated_at),
            // Pinned at its owner; the paying node writes it as paid.
            pinned: true,
        })
    }
}

/// `POST /v1/internal/pins/{reservationId}/outcome`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutcomeBody {
    pub outcome: WireOutcome,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WireOutcome {
    Paid,
    Refused,
    Unknown,
}

impl From<PaymentOutcome> for WireOutcome {
    fn from(outcome: PaymentOutcome) -> WireOutcome {
        match outcome {
            PaymentOutcome::Paid => WireOutcome::Paid,
            PaymentOutcome::Refused => WireOutcome::Refused,
            PaymentOutcome::Unknown => WireOutcome::Unknown,
        }
    }
}

impl From<WireOutcome> for PaymentOutcome {
    fn from(outcome: WireOutcome) -> PaymentOutcome {
        match outcome {
            WireOutcome::Paid => PaymentOutcome::Paid,
            WireOutcome::Refused => PaymentOutcome::Refused,
            WireOutcome::Unknown => PaymentOutcome::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_crosses_the_wire_unchanged() {
        let r = Reservation {
            id: ReservationId::new(7).expect("positive"),
            user: UserId::new(3).expect("positive"),
            schedule: ScheduleId::new(2).expect("positive"),
            seats: vec![
                SeatId::new(9).expect("positive"),
                SeatId::new(4).expect("positive"),
            ],
            total: Money::new(2_000).expect("valid"),
            created_at: Timestamp::from_millis(1_000),
            expires_at: Timestamp::from_millis(301_000),
            status: ReservationStatus::Pending,
            updated_at: Timestamp::from_millis(1_000),
            pinned: true,
        };
        let text = serde_json::to_string(&WireReservation::from(&r)).expect("serializes");
        let back: WireReservation = serde_json::from_str(&text).expect("parses");
        assert_eq!(Reservation::try_from(back), Ok(r));
        let bad = text.replace("\"PAYMENT_PENDING\"", "\"MAYBE\"");
        let bad: WireReservation = serde_json::from_str(&bad).expect("parses");
        assert!(Reservation::try_from(bad).is_err());
    }

    #[test]
    fn each_pin_refusal_keeps_its_meaning() {
        for refusal in [
            BookingRefusal::ReservationNotFound,
            BookingRefusal::Expired,
            BookingRefusal::AlreadyPaid,
            BookingRefusal::PaymentInProgress,
            BookingRefusal::Cancelled,
        ] {
            assert_eq!(BookingRefusal::from(WireRefusal::from(&refusal)), refusal);
        }
    }
}
