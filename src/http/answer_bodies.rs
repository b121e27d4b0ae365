//! The JSON bodies of the answers an `Idempotency-Key` can replay (a hold, a payment, a
//! recharge, a refund): one function each, called by the live handler and by the replay in
//! `idempotency.rs` alike, so a replay is byte for byte the first answer.

use super::AppState;
use crate::actors::schedule::ReservationView;
use crate::actors::wallet::{PaymentReceipt, RefundReceipt};
use crate::domain::{Money, UserId};
use chrono::FixedOffset;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceBody {
    user_id: i64,
    current_amount: i64,
}

pub fn balance_body(user: UserId, balance: Money) -> BalanceBody {
    BalanceBody {
        user_id: user.get(),
        current_amount: balance.won(),
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentBody {
    payment_id: i64,
    amount: i64,
    #[schema(example = "COMPLETED")]
    payment_status: &'static str,
}

/// A payment's answer, live and replayed (see `idempotency.rs`).
pub fn paid_body(receipt: &PaymentReceipt) -> PaymentBody {
    PaymentBody {
        payment_id: receipt.payment.get(),
        amount: receipt.amount.won(),
        payment_status: "COMPLETED",
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundBody {
    reservation_id: i64,
    /// The REFUND entry of the owner's ledger.
    refund_id: i64,
    amount: i64,
    /// Always `REFUNDED`.
    reservation_status: &'static str,
}

/// A refund's answer, live and replayed (see `idempotency.rs`).
pub fn refunded_body(receipt: &RefundReceipt) -> RefundBody {
    RefundBody {
        reservation_id: receipt.reservation.get(),
        refund_id: receipt.refund,
        amount: receipt.amount.won(),
        reservation_status: "REFUNDED",
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationBody {
    reservation_id: i64,
    concert_id: i64,
    concert_name: String,
    concert_at: String,
    seats: Vec<SeatLine>,
    total_price: i64,
    #[schema(example = "PAYMENT_PENDING")]
    reservation_status: &'static str,
    expires_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeatLine {
    seat_number: i32,
    price: i64,
}

pub fn reservation_body(state: &AppState, view: &ReservationView) -> ReservationBody {
    reservation_body_in(state.timezone, view)
}

fn reservation_body_in(tz: FixedOffset, view: &ReservationView) -> ReservationBody {
    let r = &view.reservation;
    ReservationBody {
        reservation_id: r.id.get(),
        concert_id: view.concert_id.get(),
        concert_name: view.concert_name.clone(),
        concert_at: view.concert_at.format(tz),
        seats: view
            .seats
            .iter()
            .map(|(n, p)| SeatLine {
                seat_number: *n,
                price: p.won(),
            })
            .collect(),
        total_price: r.total.won(),
        reservation_status: r.status.as_str(),
        expires_at: r.expires_at.format(tz),
    }
}
