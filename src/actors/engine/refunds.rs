//! A refund (API.md §12), the payment's saga backwards: pin the reservation's tickets in its
//! schedule's actor (the door and transfers refuse them meanwhile), credit the wallet (the
//! credit, the REFUND ledger row, the reservation REFUNDED and its tickets VOID in one
//! transaction), then free the seats, or unpin if nothing was committed. Detached like the
//! payment, so a client hanging up cannot strand a pin. In cluster mode the schedule's owner
//! answers it; when another node holds the wallet, that node commits the credit, fenced on
//! this node's claim on the schedule (`Elsewhere::refund`).

use super::elsewhere::RefundElsewhere;
use super::Engine;
use crate::actors::error::{ActorError, RefundError};
use crate::actors::idempotency::IdempotentWrite;
use crate::actors::mailbox::ask;
use crate::actors::persister::{ActorKey, Unavailable};
use crate::actors::schedule::{PinRefund, PostRefund, ScheduleActor, UnpinRefund};
use crate::actors::wallet::{CreditForRefund, RefundReceipt};
use crate::domain::schedule::{Reservation, ReservationStatus};
use crate::domain::ticket::{Ticket, TicketStatus};
use crate::domain::{PaymentId, ReservationId, UserId};
use actix::Addr;

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
        if !self.is_here(ActorKey::Schedule(paid.schedule)) {
            // Cluster mode: routed to the schedule's owner, which this node no longer is.
            return Err(Unavailable::PeerUnreachable.into());
        }
        let wallet_here = self.is_here(ActorKey::Wallet(user));
        let engine = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        actix_rt::spawn(async move {
            let refunded = if wallet_here {
                engine.settle_refund(paid, payment, idempotency).await
            } else {
                // Cluster mode: the wallet's owner credits it, fenced on this node's claim.
                let refund = RefundElsewhere {
                    paid,
                    payment,
                    idempotency,
                };
                engine.elsewhere().refund(&engine, refund).await
            };
            let _ = tx.send(refunded);
        });
        rx.await
            .unwrap_or(Err(RefundError::Unavailable(Unavailable::Busy)))
    }

    /// Pins a paid reservation's tickets for its refund at its schedule's actor: what the
    /// credit writes (the reservation REFUNDED, its tickets VOID) and the book's generation
    /// it was pinned in.
    pub(crate) async fn pin_refund(&self, paid: Reservation) -> Result<RefundPin, RefundError> {
        let (id, buyer) = (paid.id, paid.user);
        let addr = self
            .schedule(paid.schedule)
            .map_err(|_| RefundError::ReservationNotFound)?;
        let pinned = ask(&addr, |reply| PinRefund { id, buyer, reply })
            .await
            .map_err(|e| match e {
                ActorError::Rejected(_) => RefundError::NotAllowed,
                ActorError::Unavailable(u) => u.into(),
            })?;
        let now = self.now();
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
        Ok(RefundPin {
            addr,
            refunded,
            tickets,
            generation: pinned.generation,
        })
    }

    async fn settle_refund(
        &self,
        paid: Reservation,
        payment: Option<PaymentId>,
        idempotency: Option<IdempotentWrite<RefundReceipt>>,
    ) -> Result<RefundReceipt, RefundError> {
        let (id, buyer, schedule) = (paid.id, paid.user, paid.schedule);
        let seats = paid.seats.clone();
        let RefundPin {
            addr,
            refunded,
            tickets,
            generation,
        } = self.pin_refund(paid).await?;
        let on_commit: Box<dyn FnOnce() + Send> = {
            let addr = addr.clone();
            Box::new(move || addr.do_send(PostRefund { id, buyer, seats }))
        };
        let outcome = ask(&self.wallet(buyer), |reply| CreditForRefund {
            refunded,
            payment,
            tickets,
            depends_on: vec![(ActorKey::Schedule(schedule), generation)],
            claims: Vec::new(),
            on_commit,
            idempotency,
            key_elsewhere: None,
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

/// A refund pinned at its schedule's actor, ready for the wallet's credit.
pub(crate) struct RefundPin {
    pub addr: Addr<ScheduleActor>,
    /// The reservation as the credit writes it: REFUNDED.
    pub refunded: Reservation,
    /// Its tickets as the credit writes them: VOID.
    pub tickets: Vec<Ticket>,
    /// The book's generation the tickets were pinned in.
    pub generation: u64,
}
