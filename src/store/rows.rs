//! Stored rows ↔ domain values, once for every SQL backend: each backend only says how to
//! read a column ([`Columns`]); what a row means, and when it is corrupt, is decided here, as
//! are the few values written the same way by both (hold states, plan labels, token times).

use super::{IdempotencyRecord, LedgerEntry, LedgerKind, StoreError};
use crate::domain::queue::{TokenRecord, TokenState};
use crate::domain::schedule::{Reservation, ReservationStatus, Seat};
use crate::domain::seat_plan::SeatPlan;
use crate::domain::{
    IdError, Money, PaymentId, ReservationId, ScheduleId, SeatId, Timestamp, TokenId, UserId,
};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use std::collections::BTreeMap;

/// Reading one column of a row, by name.
pub(super) trait Columns {
    fn int8(&self, column: &str) -> Result<i64, StoreError>;
    fn int8_or_null(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn int4(&self, column: &str) -> Result<i32, StoreError>;
    fn int4_or_null(&self, column: &str) -> Result<Option<i32>, StoreError>;
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn text_or_null(&self, column: &str) -> Result<Option<String>, StoreError>;
}

macro_rules! columns_for {
    ($row:ty) => {
        impl Columns for $row {
            fn int8(&self, column: &str) -> Result<i64, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn int8_or_null(&self, column: &str) -> Result<Option<i64>, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn int4(&self, column: &str) -> Result<i32, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn int4_or_null(&self, column: &str) -> Result<Option<i32>, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn text(&self, column: &str) -> Result<String, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn text_or_null(&self, column: &str) -> Result<Option<String>, StoreError> {
                Ok(self.try_get(column)?)
            }
        }
    };
}

columns_for!(PgRow);
columns_for!(SqliteRow);

/// The draw columns of the opening's row: (drawn at, first position, participants, digest),
/// all NULL while it is only scheduled.
pub(super) type DrawnColumns = (Option<i64>, Option<i64>, Option<i64>, Option<String>);

pub(super) fn opening_drawn_columns(
    record: &crate::domain::queue::OpeningRecord,
) -> Result<DrawnColumns, StoreError> {
    let Some(drawn) = &record.drawn else {
        return Ok((None, None, None, None));
    };
    let int = |n: u64| {
        i64::try_from(n).map_err(|_| StoreError::Corrupt(format!("opening count {n} out of range")))
    };
    Ok((
        Some(drawn.at.millis()),
        Some(int(drawn.first_position)?),
        Some(int(drawn.participants)?),
        Some(drawn.participants_digest.clone()),
    ))
}

pub(super) fn id<T>(raw: i64, parse: fn(i64) -> Result<T, IdError>) -> Result<T, StoreError> {
    parse(raw).map_err(|e| StoreError::Corrupt(format!("id {raw}: {e}")))
}

pub(super) fn money(raw: i64) -> Result<Money, StoreError> {
    Money::new(raw).ok_or_else(|| StoreError::Corrupt(format!("negative amount {raw}")))
}

fn at(row: &impl Columns, column: &str) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_millis(row.int8(column)?))
}

/// The hold state a reservation's seats carry.
pub(super) fn hold_state(status: ReservationStatus) -> &'static str {
    match status {
        ReservationStatus::Pending => "PENDING",
        ReservationStatus::Paid => "POSTED",
        ReservationStatus::Cancelled | ReservationStatus::Refunded => "VOIDED",
        ReservationStatus::Expired => "EXPIRED",
    }
}

/// A token's `admitted_at_ms`, `active_expires_at_ms` and `expired_at_ms` as written, given
/// the admissions of its batch (see `Writes::admissions`).
pub(super) fn token_times(
    token: &TokenRecord,
    admissions: &BTreeMap<TokenId, (Timestamp, Timestamp)>,
) -> (Option<i64>, Option<i64>, Option<i64>) {
    match token.state {
        TokenState::Waiting => (None, None, None),
        TokenState::Active {
            admitted_at,
            expires_at,
        } => (Some(admitted_at.millis()), Some(expires_at.millis()), None),
        // Admitted and expired in one batch: the admission is still recorded.
        TokenState::Expired { at } => match admissions.get(&token.id) {
            Some((admitted_at, expires_at)) => (
                Some(admitted_at.millis()),
                Some(expires_at.millis()),
                Some(at.millis()),
            ),
            None => (None, None, Some(at.millis())),
        },
    }
}

pub(super) fn seat(row: &impl Columns) -> Result<Seat, StoreError> {
    Ok(Seat {
        id: id(row.int8("id")?, SeatId::new)?,
        number: row.int4("seat_number")?,
        price: money(row.int8("price")?)?,
    })
}

/// A seat's plan labels (columns `grade`, `seat_row`, `plan_x`, `plan_y`), checked by the
/// same rules as the admin route: a stored label the route would refuse is corruption.
pub(super) fn seat_plan(row: &impl Columns) -> Result<SeatPlan, StoreError> {
    SeatPlan::new(
        row.text_or_null("grade")?,
        row.text_or_null("seat_row")?,
        row.int4_or_null("plan_x")?.map(i64::from),
        row.int4_or_null("plan_y")?.map(i64::from),
    )
    .map_err(|e| StoreError::Corrupt(format!("seat plan: {e}")))
}

/// The columns of a [`SeatPlan`], as bound into an insert.
pub(super) struct PlanColumns {
    pub grade: Option<String>,
    pub row: Option<String>,
    pub x: Option<i32>,
    pub y: Option<i32>,
}

impl PlanColumns {
    pub fn of(plan: Option<&SeatPlan>) -> PlanColumns {
        let position = plan.and_then(SeatPlan::position);
        PlanColumns {
            grade: plan.and_then(SeatPlan::grade).map(str::to_owned),
            row: plan.and_then(SeatPlan::row).map(str::to_owned),
            x: position.map(|p| i32::from(p.x())),
            y: position.map(|p| i32::from(p.y())),
        }
    }
}

pub(super) fn reservation(
    row: &impl Columns,
    schedule: ScheduleId,
    seats: Vec<SeatId>,
) -> Result<Reservation, StoreError> {
    let status = row.text("status")?;
    Ok(Reservation {
        id: id(row.int8("id")?, ReservationId::new)?,
        user: id(row.int8("user_id")?, UserId::new)?,
        schedule,
        seats,
        total: money(row.int8("total_price")?)?,
        created_at: at(row, "created_at_ms")?,
        expires_at: at(row, "expires_at_ms")?,
        status: ReservationStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("reservation status {status}")))?,
        updated_at: at(row, "updated_at_ms")?,
        pinned: false,
    })
}

pub(super) fn token(row: &impl Columns) -> Result<TokenRecord, StoreError> {
    let status = row.text("status")?;
    let required = |column: &str| -> Result<Timestamp, StoreError> {
        row.int8_or_null(column)?
            .map(Timestamp::from_millis)
            .ok_or_else(|| StoreError::Corrupt(format!("{status} token without {column}")))
    };
    let state = match status.as_str() {
        "WAITING" => TokenState::Waiting,
        "ACTIVE" => TokenState::Active {
            admitted_at: required("admitted_at_ms")?,
            expires_at: required("active_expires_at_ms")?,
        },
        "EXPIRED" => TokenState::Expired {
            at: required("expired_at_ms")?,
        },
        other => return Err(StoreError::Corrupt(format!("token status {other}"))),
    };
    let position = row.int8("position")?;
    Ok(TokenRecord {
        id: TokenId::new(row.int8("id")?).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        user: id(row.int8("user_id")?, UserId::new)?,
        position: u64::try_from(position)
            .map_err(|_| StoreError::Corrupt(format!("position {position}")))?,
        created_at: at(row, "created_at_ms")?,
        state,
    })
}

pub(super) fn ledger_entry(row: &impl Columns, user: UserId) -> Result<LedgerEntry, StoreError> {
    let kind = row.text("kind")?;
    Ok(LedgerEntry {
        id: row.int8("id")?,
        user,
        kind: match kind.as_str() {
            "RECHARGE" => LedgerKind::Recharge,
            "PAYMENT" => LedgerKind::Payment,
            "REFUND" => LedgerKind::Refund,
            other => return Err(StoreError::Corrupt(format!("ledger kind {other}"))),
        },
        amount: money(row.int8("amount")?)?,
        balance_after: money(row.int8("balance_after")?)?,
        payment: row
            .int8_or_null("payment_id")?
            .map(|p| id(p, PaymentId::new))
            .transpose()?,
        at: at(row, "created_at_ms")?,
    })
}

pub(super) fn idempotency(row: &impl Columns) -> Result<IdempotencyRecord, StoreError> {
    let status = row.int4("status")?;
    Ok(IdempotencyRecord {
        user: id(row.int8("user_id")?, UserId::new)?,
        key: row.text("key")?,
        fingerprint: row.text("fingerprint")?,
        status: u16::try_from(status)
            .map_err(|_| StoreError::Corrupt(format!("status {status}")))?,
        body: row.text("body")?,
        at: at(row, "created_at_ms")?,
    })
}
