//! The payment saga, the one operation that crosses actors: pin the hold in its schedule's
//! actor, debit the wallet (the payment, the ledger row, the reservation PAID and the spent
//! token in one transaction), then post the hold, or unpin it if nothing was committed. The
//! saga runs detached, so a client hanging up cannot strand a pinned hold.

use super::{settled_refusal, Engine, Located, Settlement};
use crate::actors::error::{BookingError, PaymentError, WalletError};
use crate::actors::idempotency::IdempotentWrite;
use crate::actors::mailbox::ask;
use crate::actors::persister::{ActorKey, Dependency, Unavailable};
use crate::actors::queue::ConsumeToken;
use crate::actors::schedule::{PinHold, PostHold, UnpinHold};
use crate::actors::wallet::{DebitForPayment, PaymentReceipt};
use crate::domain::queue::TokenRecord;
use crate::domain::schedule::{BookingRefusal, ScheduleBook};
use crate::domain::ticket::Ticket;
use crate::domain::{ReservationId, ScheduleId, Timestamp, TokenId, UserId};

/// A token spent by a payment's transaction (see [`Engine::spend_with_payment`]).
pub(crate) struct SpentWithPayment {
    pub(crate) depends_on: Dependency,
    pub(crate) record: Option<TokenRecord>,
    pub(crate) on_commit: Box<dyn FnOnce() + Send>,
}

impl Engine {
    /// Pays a reservation with the user's wallet; `token` is consumed in the same transaction
    /// (`None`: a waiting-list offer, which needs none).
    pub async fn pay(
        &self,
        user: UserId,
        id: ReservationId,
        token: Option<TokenId>,
        idempotency: Option<IdempotentWrite<PaymentReceipt>>,
    ) -> Result<PaymentReceipt, PaymentError> {
        if !self.user_exists(user) {
            return Err(PaymentError::UserNotFound);
        }
        let schedule = match self.locate(user, id).await? {
            Located::Actor(schedule) => schedule,
            Located::Settled(view) => return Err(settled_refusal(&view).into()),
        };
        let engine = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Detached: once pinned, the saga must reach post or unpin whatever the client does.
        actix_rt::spawn(async move {
            let _ = tx.send(engine.settle(user, id, schedule, token, idempotency).await);
        });
        let outcome = rx
            .await
            .unwrap_or(Err(PaymentError::Unavailable(Unavailable::Busy)));
        match outcome {
            // The pin found nothing: the reservation may have left memory since it was located.
            Err(PaymentError::Booking(BookingRefusal::ReservationNotFound)) => {
                Err(match self.left_memory(user, id).await? {
                    Some(view) => settled_refusal(&view).into(),
                    None => BookingRefusal::ReservationNotFound.into(),
                })
            }
            outcome => outcome,
        }
    }

    async fn settle(
        &self,
        user: UserId,
        id: ReservationId,
        schedule: ScheduleId,
        token: Option<TokenId>,
        idempotency: Option<IdempotentWrite<PaymentReceipt>>,
    ) -> Result<PaymentReceipt, PaymentError> {
        if !self.is_here(ActorKey::Schedule(schedule)) {
            let payment = Settlement {
                user,
                reservation: id,
                schedule,
                token,
                idempotency,
            };
            return self.elsewhere().settle(self, payment).await;
        }
        let addr = self.schedule(schedule)?;
        let pinned = ask(&addr, |reply| PinHold { id, user, reply })
            .await
            .map_err(BookingError::from)?;
        let now = self.now();
        let paid = ScheduleBook::as_paid(&pinned.reservation, now);
        let spent = token.map(|token| self.spend_with_payment(token, now));
        let mut depends_on = vec![(ActorKey::Schedule(schedule), pinned.generation)];
        depends_on.extend(spent.as_ref().map(|s| s.depends_on));
        let (spend, record) = spent.map_or((None, None), |s| (Some(s.on_commit), s.record));
        // One ticket per seat, written in the payment's own transaction (API.md §12).
        let tickets = Ticket::issue(&paid, now, || self.inner.env.ids.ticket());
        let on_commit: Box<dyn FnOnce() + Send> = {
            let schedule = addr.clone();
            let tickets = tickets.clone();
            Box::new(move || {
                schedule.do_send(PostHold { id, tickets });
                if let Some(spend) = spend {
                    spend();
                }
            })
        };
        let payment = self.inner.env.ids.payment();
        let wallet = self.wallet(user);
        let outcome = ask(&wallet, |reply| DebitForPayment {
            paid,
            tickets,
            spends: token,
            token: record,
            payment,
            depends_on,
            claims: Vec::new(),
            on_commit,
            idempotency,
            reply,
        })
        .await;
        if outcome.is_err() {
            // Not debited: give the hold back to its timer.
            addr.do_send(UnpinHold { id });
        }
        outcome.map_err(|e| PaymentError::from(WalletError::from(e)))
    }

    /// How a payment spends `token` in its own transaction (this node holds the queue): the
    /// queue state it depends on, the token as stored once spent, and what frees its slot
    /// after the commit, before the payment's answer.
    pub(crate) fn spend_with_payment(&self, token: TokenId, now: Timestamp) -> SpentWithPayment {
        let (view, queue) = (
            self.inner.queue_view.clone(),
            self.inner.registry.queue().clone(),
        );
        SpentWithPayment {
            depends_on: (ActorKey::Queue, self.inner.queue_view.generation()),
            record: self.inner.queue_view.consumed_record(token, now),
            // The same `now` as the stored record, not the commit's time: memory must say what
            // the database says, or a restart changes the spent token's `expiredAt`.
            on_commit: Box::new(move || {
                view.consume_committed(token, now);
                queue.do_send(ConsumeToken { token });
            }),
        }
    }
}
