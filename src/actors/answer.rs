//! The answers an idempotency key replays, in domain terms: a hold's reservation, a payment's
//! receipt, a recharged balance. The deciding actor stores one with its effect; the HTTP layer
//! renders it, live and on replay, with the same function, so a replay is byte-identical. The
//! stored form is this module's own serialization (a retried key survives a restart), not a
//! response body.

use super::idempotency::{Replayable, StoredAnswer, ANSWER_FORMAT};
use super::schedule::ReservationView;
use super::wallet::PaymentReceipt;
use crate::domain::schedule::{Reservation, ReservationStatus};
use crate::domain::{
    ConcertId, Money, PaymentId, ReservationId, ScheduleId, SeatId, Timestamp, UserId,
};
use serde::{Deserialize, Serialize};

/// What a request with an idempotency key was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Seats held: the reservation as its owner sees it.
    Held(ReservationView),
    /// A reservation paid.
    Paid(PaymentReceipt),
    /// A wallet recharged: its balance after.
    Recharged { user: UserId, balance: Money },
    /// A paid reservation refunded (API.md §12).
    Refunded(super::wallet::RefundReceipt),
}

/// What [`Answer::from_stored`] found in a stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// An answer in domain terms.
    Answer(Answer),
    /// An answer stored by a version before domain answers: replayed as it was stored.
    AsStored(StoredAnswer),
}

/// Why a stored answer could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("stored answer unreadable: {0}")]
pub struct Unreadable(String);

impl Answer {
    /// The answer as the store keeps it.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(&Stored::from(self))
            .expect("a stored answer holds only numbers, strings and booleans")
    }

    /// A stored answer read back.
    pub fn from_stored(stored: &StoredAnswer) -> Result<Replay, Unreadable> {
        if stored.format != ANSWER_FORMAT {
            return Ok(Replay::AsStored(stored.clone()));
        }
        let parsed: Stored =
            serde_json::from_str(&stored.text).map_err(|e| Unreadable(e.to_string()))?;
        Ok(Replay::Answer(Answer::try_from(parsed)?))
    }
}

impl Replayable for ReservationView {
    fn to_stored(&self, _user: UserId) -> String {
        Answer::Held(self.clone()).to_stored()
    }
}

impl Replayable for PaymentReceipt {
    fn to_stored(&self, _user: UserId) -> String {
        Answer::Paid(*self).to_stored()
    }
}

impl Replayable for super::wallet::RefundReceipt {
    fn to_stored(&self, _user: UserId) -> String {
        Answer::Refunded(*self).to_stored()
    }
}

/// A recharge's answer: the balance of the key's user.
impl Replayable for Money {
    fn to_stored(&self, user: UserId) -> String {
        Answer::Recharged {
            user,
            balance: *self,
        }
        .to_stored()
    }
}

/// The stored form: plain numbers and names, so that what is stored does not change with how
/// the domain types are laid out in memory.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Stored {
    Held(HeldView),
    #[serde(rename_all = "camelCase")]
    Paid {
        payment_id: PaymentId,
        amount: i64,
    },
    #[serde(rename_all = "camelCase")]
    Recharged {
        user_id: UserId,
        balance: i64,
    },
    #[serde(rename_all = "camelCase")]
    Refunded {
        reservation_id: ReservationId,
        refund_id: i64,
        amount: i64,
        balance: i64,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeldView {
    reservation_id: ReservationId,
    user_id: UserId,
    schedule_id: ScheduleId,
    seat_ids: Vec<SeatId>,
    total: i64,
    created_at_ms: i64,
    expires_at_ms: i64,
    status: String,
    updated_at_ms: i64,
    pinned: bool,
    concert_id: ConcertId,
    concert_name: String,
    concert_at_ms: i64,
    /// (seat number, price) in the order requested.
    seats: Vec<(i32, i64)>,
}

impl From<&Answer> for Stored {
    fn from(answer: &Answer) -> Stored {
        match answer {
            Answer::Held(view) => Stored::Held(HeldView::from(view)),
            Answer::Paid(receipt) => Stored::Paid {
                payment_id: receipt.payment,
                amount: receipt.amount.won(),
            },
            Answer::Recharged { user, balance } => Stored::Recharged {
                user_id: *user,
                balance: balance.won(),
            },
            Answer::Refunded(receipt) => Stored::Refunded {
                reservation_id: receipt.reservation,
                refund_id: receipt.refund,
                amount: receipt.amount.won(),
                balance: receipt.balance.won(),
            },
        }
    }
}

impl TryFrom<Stored> for Answer {
    type Error = Unreadable;

    fn try_from(stored: Stored) -> Result<Answer, Unreadable> {
        Ok(match stored {
            Stored::Held(view) => Answer::Held(ReservationView::try_from(view)?),
            Stored::Paid { payment_id, amount } => Answer::Paid(PaymentReceipt {
                payment: payment_id,
                amount: money(amount)?,
            }),
            Stored::Recharged { user_id, balance } => Answer::Recharged {
                user: user_id,
                balance: money(balance)?,
            },
            Stored::Refunded {
                reservation_id,
                refund_id,
                amount,
                balance,
            } => Answer::Refunded(super::wallet::RefundReceipt {
                reservation: reservation_id,
                refund: refund_id,
                amount: money(amount)?,
                balance: money(balance)?,
            }),
        })
    }
}

impl From<&ReservationView> for HeldView {
    fn from(view: &ReservationView) -> HeldView {
        let r = &view.reservation;
        HeldView {
            reservation_id: r.id,
            user_id: r.user,
            schedule_id: r.schedule,
            seat_ids: r.seats.clone(),
            total: r.total.won(),
            created_at_ms: r.created_at.millis(),
            expires_at_ms: r.expires_at.millis(),
            status: r.status.as_str().to_string(),
            updated_at_ms: r.updated_at.millis(),
            pinned: r.pinned,
            concert_id: view.concert_id,
            concert_name: view.concert_name.clone(),
            concert_at_ms: view.concert_at.millis(),
            seats: view.seats.iter().map(|(n, p)| (*n, p.won())).collect(),
        }
    }
}

impl TryFrom<HeldView> for ReservationView {
    type Error = Unreadable;

    fn try_from(view: HeldView) -> Result<ReservationView, Unreadable> {
        let status = ReservationStatus::parse(&view.status)
            .ok_or_else(|| Unreadable(format!("status {}", view.status)))?;
        let seats = view
            .seats
            .into_iter()
            .map(|(n, p)| Ok((n, money(p)?)))
            .collect::<Result<_, Unreadable>>()?;
        Ok(ReservationView {
            reservation: Reservation {
                id: view.reservation_id,
                user: view.user_id,
                schedule: view.schedule_id,
                seats: view.seat_ids,
                total: money(view.total)?,
                created_at: Timestamp::from_millis(view.created_at_ms),
                expires_at: Timestamp::from_millis(view.expires_at_ms),
                status,
                updated_at: Timestamp::from_millis(view.updated_at_ms),
                pinned: view.pinned,
            },
            concert_name: view.concert_name,
            concert_at: Timestamp::from_millis(view.concert_at_ms),
            concert_id: view.concert_id,
            seats,
        })
    }
}

fn money(won: i64) -> Result<Money, Unreadable> {
    Money::new(won).ok_or_else(|| Unreadable(format!("amount {won}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<T, E: std::fmt::Debug>(n: i64, new: fn(i64) -> Result<T, E>) -> T {
        new(n).expect("positive")
    }

    fn view() -> ReservationView {
        ReservationView {
            reservation: Reservation {
                id: id(7, ReservationId::new),
                user: id(3, UserId::new),
                schedule: id(2, ScheduleId::new),
                seats: vec![id(11, SeatId::new), id(12, SeatId::new)],
                total: Money::new(3_000).expect("positive"),
                created_at: Timestamp::from_millis(1_000),
                expires_at: Timestamp::from_millis(301_000),
                status: ReservationStatus::Pending,
                updated_at: Timestamp::from_millis(1_000),
                pinned: false,
            },
            concert_name: "Night \"Live\"".into(),
            concert_at: Timestamp::from_millis(9_000_000),
            concert_id: id(1, ConcertId::new),
            seats: vec![
                (5, Money::new(1_000).expect("positive")),
                (6, Money::new(2_000).expect("positive")),
            ],
        }
    }

    fn round_trip(answer: Answer) -> Answer {
        let stored = StoredAnswer {
            format: ANSWER_FORMAT,
            text: answer.to_stored(),
        };
        match Answer::from_stored(&stored).expect("readable") {
            Replay::Answer(answer) => answer,
            Replay::AsStored(_) => panic!("stored in domain terms"),
        }
    }

    #[test]
    fn every_answer_reads_back_as_it_was_stored() {
        let answers = [
            Answer::Held(view()),
            Answer::Paid(PaymentReceipt {
                payment: id(4, PaymentId::new),
                amount: Money::new(3_000).expect("positive"),
            }),
            Answer::Recharged {
                user: id(3, UserId::new),
                balance: Money::new(500).expect("positive"),
            },
        ];
        for answer in answers {
            assert_eq!(round_trip(answer.clone()), answer);
        }
    }

    #[test]
    fn an_answer_stored_before_domain_answers_is_replayed_as_stored() {
        let older = StoredAnswer {
            format: 201,
            text: "{\"paymentId\":1}".into(),
        };
        assert_eq!(
            Answer::from_stored(&older).expect("readable"),
            Replay::AsStored(older)
        );
    }
}
