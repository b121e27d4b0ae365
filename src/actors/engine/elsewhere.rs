//! The one thing the single-node engine knows of other nodes: whether a piece of state is
//! held here, and, when it is not, who answers for it. On a single node [`AllHere`] says
//! everything is here and nothing below runs; cluster mode hands the engine its own
//! implementation (`actors/cluster/`), which answers from copies or asks the owning node.

use super::Engine;
use crate::actors::error::{BookingError, PaymentError, RefundError};
use crate::actors::idempotency::IdempotentWrite;
use crate::actors::persister::ActorKey;
use crate::actors::schedule::SeatMap;
use crate::actors::wallet::{PaymentReceipt, RefundReceipt};
use crate::domain::queue::{OpeningPhase, TokenRecord, TokenRefusal, TokenStatus};
use crate::domain::schedule::Reservation;
use crate::domain::schedule::ScheduleInfo;
use crate::domain::{PaymentId, ReservationId, ScheduleId, TokenId, UserId};
use std::any::Any;
use std::future::Future;
use std::pin::Pin;

/// An answer that takes a call to another node or to the database (boxed: the trait stays
/// object-safe).
pub type Later<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A payment of a hold whose schedule another node holds.
pub struct Settlement {
    pub user: UserId,
    pub reservation: ReservationId,
    pub schedule: ScheduleId,
    /// `None` for a waiting-list offer, paid without a queue token.
    pub token: Option<TokenId>,
    pub idempotency: Option<IdempotentWrite<PaymentReceipt>>,
}

/// A refund, decided here (this node holds the schedule), of a user whose wallet another node
/// holds.
pub struct RefundElsewhere {
    /// The reservation as stored: PAID.
    pub paid: Reservation,
    /// The payment refunded, which the REFUND ledger row names.
    pub payment: Option<PaymentId>,
    pub idempotency: Option<IdempotentWrite<RefundReceipt>>,
}

/// Where state other nodes hold is answered. Each method is handed the engine it serves.
pub trait Elsewhere: Send + Sync + 'static {
    /// Whether the state of `key` (the queue, a schedule, a wallet) is held by this node.
    fn is_here(&self, engine: &Engine, key: ActorKey) -> bool;

    /// A waiting-room poll answered from a copy of another node's line, when it can be.
    fn poll(&self, engine: &Engine, user: UserId, token: Option<TokenId>) -> Option<TokenStatus>;

    /// Where a fair opening on the line another node holds is, as the copy of that line has
    /// it.
    fn opening_phase(&self, engine: &Engine) -> Option<OpeningPhase>;

    /// A token this node's line does not authorize, as the queue's owner committed it; `None`
    /// when nothing better is known.
    fn authorize<'a>(
        &'a self,
        engine: &'a Engine,
        token: TokenId,
        user: Option<UserId>,
    ) -> Later<'a, Option<Result<TokenRecord, TokenRefusal>>>;

    /// The seat map of a schedule another node holds.
    fn seats<'a>(
        &'a self,
        engine: &'a Engine,
        info: ScheduleInfo,
    ) -> Later<'a, Result<SeatMap, BookingError>>;

    /// Pays a hold whose schedule another node holds.
    fn settle<'a>(
        &'a self,
        engine: &'a Engine,
        payment: Settlement,
    ) -> Later<'a, Result<PaymentReceipt, PaymentError>>;

    /// Refunds a reservation of a schedule held here to a wallet another node holds.
    fn refund<'a>(
        &'a self,
        engine: &'a Engine,
        refund: RefundElsewhere,
    ) -> Later<'a, Result<RefundReceipt, RefundError>>;

    /// The implementation itself, for the layer that installed it (cluster mode reaches its
    /// own state through the engine this way).
    fn as_any(&self) -> &dyn Any;
}

/// A single node: every piece of state is here, so nothing is ever asked elsewhere.
pub struct AllHere;

impl Elsewhere for AllHere {
    fn is_here(&self, _: &Engine, _: ActorKey) -> bool {
        true
    }

    fn poll(&self, _: &Engine, _: UserId, _: Option<TokenId>) -> Option<TokenStatus> {
        None
    }

    fn opening_phase(&self, _: &Engine) -> Option<OpeningPhase> {
        None
    }

    fn authorize<'a>(
        &'a self,
        _: &'a Engine,
        _: TokenId,
        _: Option<UserId>,
    ) -> Later<'a, Option<Result<TokenRecord, TokenRefusal>>> {
        Box::pin(async { None })
    }

    fn seats<'a>(
        &'a self,
        _: &'a Engine,
        _: ScheduleInfo,
    ) -> Later<'a, Result<SeatMap, BookingError>> {
        // Never asked: every schedule is here.
        Box::pin(async { Err(BookingError::ScheduleNotFound) })
    }

    fn settle<'a>(
        &'a self,
        _: &'a Engine,
        _: Settlement,
    ) -> Later<'a, Result<PaymentReceipt, PaymentError>> {
        // Never asked: every schedule is here.
        Box::pin(async {
            Err(PaymentError::Booking(
                crate::domain::schedule::BookingRefusal::ReservationNotFound,
            ))
        })
    }

    fn refund<'a>(
        &'a self,
        _: &'a Engine,
        _: RefundElsewhere,
    ) -> Later<'a, Result<RefundReceipt, RefundError>> {
        // Never asked: every wallet is here.
        Box::pin(async { Err(RefundError::ReservationNotFound) })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
