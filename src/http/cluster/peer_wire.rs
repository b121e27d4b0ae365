//! Cluster mode: the JSON of the node-to-node routes (`internal.rs` serves them,
//! `peer_client.rs` calls them). Not part of the public contract: both ends are this build.

use crate::actors::cluster::peers::{CreditOutcome, PaymentOutcome};
use crate::actors::idempotency::KeyElsewhere;
use crate::actors::wallet::RefundReceipt;
use crate::domain::queue::LineSnapshot;
use crate::domain::schedule::{BookingRefusal, Reservation, ReservationStatus};
use crate::domain::ticket::{Ticket, TicketStatus};
use crate::domain::{
    Money, PaymentId, ReservationId, ScheduleId, SeatId, TicketId, Timestamp, TokenId, UserId,
};
use serde::{Deserialize, Serialize};

/// Where the node-to-node routes live; the forwarder never forwards them.
pub const PINS_PATH: &str = "/v1/internal/pins";
pub const SPENT_TOKENS_PATH: &str = "/v1/internal/spent-tokens/{tokenId}";
pub const QUEUE_SYNC_PATH: &str = "/v1/internal/queue-sync";
pub const REFUND_CREDITS_PATH: &str = "/v1/internal/refund-credits";

/// A refund credit's body at most: a reservation and one ticket per seat (a reservation has
/// at most the per-user seat limit of seats).
pub const REFUND_CREDIT_BODY_LIMIT: usize = 256 * 1024;

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

/// `POST /v1/internal/refund-credits`: the schedule's owner asks the wallet's owner to credit a
/// refund it pinned.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditBody {
    /// The asking node, which holds the schedule's shard at `schedule_epoch`.
    pub from: String,
    pub schedule_epoch: u64,
    /// The reservation as the credit writes it (REFUNDED).
    pub reservation: WireReservation,
    pub payment_id: Option<PaymentId>,
    /// Its tickets as the credit writes them (VOID).
    pub tickets: Vec<WireTicket>,
    pub wallet_shard: String,
    pub wallet_epoch: u64,
    pub idempotency_key: Option<String>,
    pub idempotency_fingerprint: Option<String>,
}

impl CreditBody {
    /// The key the asking node claimed, when it sent both halves.
    pub fn key(&self) -> Option<KeyElsewhere> {
        Some(KeyElsewhere {
            key: self.idempotency_key.clone()?,
            fingerprint: self.idempotency_fingerprint.clone()?,
        })
    }
}

/// A voided ticket as the credit writes it (a refunded ticket was never checked in).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireTicket {
    pub id: TicketId,
    pub reservation_id: ReservationId,
    pub schedule_id: ScheduleId,
    pub seat_id: SeatId,
    pub holder: UserId,
    pub version: u32,
    pub issued_at: i64,
    pub updated_at: i64,
}

impl From<&Ticket> for WireTicket {
    fn from(t: &Ticket) -> WireTicket {
        WireTicket {
            id: t.id,
            reservation_id: t.reservation,
            schedule_id: t.schedule,
            seat_id: t.seat,
            holder: t.holder,
            version: t.version,
            issued_at: t.issued_at.millis(),
            updated_at: t.updated_at.millis(),
        }
    }
}

impl From<WireTicket> for Ticket {
    fn from(w: WireTicket) -> Ticket {
        Ticket {
            id: w.id,
            reservation: w.reservation_id,
            schedule: w.schedule_id,
            seat: w.seat_id,
            holder: w.holder,
            version: w.version,
            status: TicketStatus::Void,
            issued_at: Timestamp::from_millis(w.issued_at),
            check_in: None,
            updated_at: Timestamp::from_millis(w.updated_at),
        }
    }
}

/// The answer: the credit committed (with what it wrote), refused, or unknown.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CreditAnswer {
    #[serde(rename_all = "camelCase")]
    Credited {
        reservation_id: ReservationId,
        refund_id: i64,
        amount: i64,
        balance: i64,
    },
    Refused {
        retry: bool,
    },
    Unknown,
}

impl From<&CreditOutcome> for CreditAnswer {
    fn from(outcome: &CreditOutcome) -> CreditAnswer {
        match outcome {
            CreditOutcome::Credited(r) => CreditAnswer::Credited {
                reservation_id: r.reservation,
                refund_id: r.refund,
                amount: r.amount.won(),
                balance: r.balance.won(),
            },
            CreditOutcome::Refused { retry } => CreditAnswer::Refused { retry: *retry },
            CreditOutcome::Unknown => CreditAnswer::Unknown,
        }
    }
}

impl TryFrom<CreditAnswer> for CreditOutcome {
    type Error = String;

    fn try_from(answer: CreditAnswer) -> Result<CreditOutcome, String> {
        let money = |won: i64| Money::new(won).ok_or_else(|| format!("bad amount {won}"));
        Ok(match answer {
            CreditAnswer::Credited {
                reservation_id,
                refund_id,
                amount,
                balance,
            } => CreditOutcome::Credited(RefundReceipt {
                reservation: reservation_id,
                refund: refund_id,
                amount: money(amount)?,
                balance: money(balance)?,
            }),
            CreditAnswer::Refused { retry } => CreditOutcome::Refused { retry },
            CreditAnswer::Unknown => CreditOutcome::Unknown,
        })
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
    fn a_refund_credit_crosses_the_wire_unchanged() {
        let ticket = Ticket {
            id: TicketId::new(11).expect("positive"),
            reservation: ReservationId::new(7).expect("positive"),
            schedule: ScheduleId::new(2).expect("positive"),
            seat: SeatId::new(9).expect("positive"),
            holder: UserId::new(3).expect("positive"),
            version: 2,
            status: TicketStatus::Void,
            issued_at: Timestamp::from_millis(5_000),
            check_in: None,
            updated_at: Timestamp::from_millis(9_000),
        };
        let text = serde_json::to_string(&WireTicket::from(&ticket)).expect("serializes");
        let back: WireTicket = serde_json::from_str(&text).expect("parses");
        assert_eq!(Ticket::from(back), ticket);
        for outcome in [
            CreditOutcome::Credited(RefundReceipt {
                reservation: ReservationId::new(7).expect("positive"),
                refund: 40,
                amount: Money::new(2_000).expect("valid"),
                balance: Money::new(5_000).expect("valid"),
            }),
            CreditOutcome::Refused { retry: true },
            CreditOutcome::Refused { retry: false },
            CreditOutcome::Unknown,
        ] {
            let text = serde_json::to_string(&CreditAnswer::from(&outcome)).expect("serializes");
            let back: CreditAnswer = serde_json::from_str(&text).expect("parses");
            assert_eq!(CreditOutcome::try_from(back), Ok(outcome));
        }
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
