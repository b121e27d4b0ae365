//! A refund (API.md §12), the payment's saga backwards: pin the reservation's tickets in its
//! schedule's actor (the door and transfers refuse them meanwhile), credit the wallet (the
//! credit, the REFUND ledger row, the reservation REFUNDED and its tickets VOID in one
//! transaction), then free the seats, or unpin if nothing was committed. Detached like the
//! payment, so a client hanging up cannot strand a pin.

use super::Engine;
use crate::actors::error::{ActorError, RefundError};
use crate::actors::idempotency::IdempotentWrite;
use crate::actors::mailbox::ask;
use crate::actors::persister::{ActorKey, Unavailable};
use crate::actors::schedule::{PinRefund, PostRefund, UnpinRefund};
use crate::actors::wallet::{CreditForRefund, RefundReceipt};
use crate::domain::schedule::{Reservation, ReservationStatus};
use crate::domain::ticket::TicketStatus;
use crate::domain::{PaymentId, ReservationId, UserId};

impl Engine {
    /// Refunds `user`'s paid reservation `id` to their wallet.
    pub async fn refund(
        &self,
        user: UserId,
        id: ReservationId,
        idempotency: Option<IdempotentWrite<RefundReceipt>>,
    ) -> Result<RefundReceipt, RefundError> {
        if !self.user_exists(user) {
            return Err(RefundError::UserNotFound);
        }
        let stored = self
            .store_handle()
            .run(move |s| async move { s.load_reservation(id).await })
            .await
            .map_err(|error| {
                tracing::warn!(%error, "reservation lookup failed");
                RefundError::Unavailable(Unavailable::CommitFailed)
            })?
            .filter(|s| s.reservation.user == user)
            .ok_or(RefundError::ReservationNotFound)?;
        let paid = stored.reservation;
        if paid.status != ReservationStatus::Paid {
            return Err(RefundError::NotAllowed);
        }
        let payment = self
            .store_handle()
            .run(move |s| async move { s.payment_of(id).await })
            .await
            .map_err(|error| {
                tracing::warn!(%error, "payment lookup failed");
                RefundError::Unavailable(Unavailable::CommitFailed)
            })?;
        let here =
            self.is_here(ActorKey::Schedule(paid.schedule)) && self.is_here(ActorKey::Wallet(user));
        if !here {
            // Cluster mode: the schedule's and the wallet's owner must be this node.
            return Err(Unavailable::PeerUnreachable.into());
        }
        let engine = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        actix_rt::spawn(async move {
            let _ = tx.send(engine.settle_refund(paid, payment, idempotency).await);
        });
        rx.await
            .unwrap_or(Err(RefundError::Unavailable(Unavailable::Busy)))
    }

    async fn settle_refund(
        &self,
        paid: Reservation,
        payment: Option<PaymentId>,
        idempotency: Option<IdempotentWrite<RefundReceipt>>,
    ) -> Result<RefundReceipt, RefundError> {
        let (id, buyer, schedule) = (paid.id, paid.user, paid.schedule);
        let addr = self
            .schedule(schedule)
            .map_err(|_| RefundError::ReservationNotFound)?;
        let pinned = ask(&addr, |reply| PinRefund { id, buyer, reply })
            .await
            .map_err(|e| match e {
                ActorError::Rejected(_) => RefundError::NotAllowed,
                ActorError::Unavailable(u) => u.into(),
            })?;
        let now = self.now();
        let seats = paid.seats.clone();
        let refunded = Reservation {
            status: ReservationStatus::Refunded,
            updated_at: now,
            pinned: false,
            ..paid
        };
        let tickets = pinned
            .tickets
            .into_iter()
            .map(|mut t| {
                t.status = TicketStatus::Void;
                t.updated_at = now;
                t
            })
            .collect();
        let on_commit: Box<dyn FnOnce() + Send> = {
            let addr = addr.clone();
            Box::new(move || addr.do_send(PostRefund { id, buyer, seats }))
        };
        let outcome = ask(&self.wallet(buyer), |reply| CreditForRefund {
            refunded,
            payment,
            tickets,
            depends_on: vec![(ActorKey::Schedule(schedule), pinned.generation)],
            on_commit,
            idempotency,
            reply,
        })
        .await;
        if outcome.is_err() {
            addr.do_send(UnpinRefund { id });
        }
        outcome.map_err(|e| match e {
            ActorError::Rejected(_) => RefundError::NotAllowed,
            ActorError::Unavailable(u) => u.into(),
        })
    }
}
