//! Cluster mode: a payment whose wallet and schedule live on different nodes.
//!
//! The wallet's owner (where the payment route lands) asks the schedule's owner to pin the
//! hold, then commits the debit, the ledger row, the payment and the reservation PAID in one
//! transaction fenced on its own wallet shard's epoch *and* on the schedule shard's epoch the
//! pin was made under (a claim naming the schedule's owner). Then it tells the schedule's
//! owner to post the hold, or to unpin it if nothing was committed.
//!
//! Why that sells a seat once: the schedule's owner keeps the pin (expiry waits, a rebuilt
//! book re-pins it) until it hears the outcome, and releases an unsettled pin only once the
//! wallet shard's epoch the payment was decided under can no longer commit (the shard moved
//! on or was released); then the database says what happened: paid means sold, otherwise
//! unpin. If the schedule's shard moves instead, its new owner loads whatever committed, and
//! the payment's claim on the old epoch is refused by the fence. No timer decides either way.

use super::peers::{PaymentOutcome, PeerError, Peers, PinAsk, PinnedRemotely};
use super::shard_of;
use crate::actors::engine::{settled_refusal, Engine, Located, Settlement};
use crate::actors::error::{PaymentError, WalletError};
use crate::actors::mailbox::ask;
use crate::actors::persister::{epoch_of, ActorKey, Unavailable};
use crate::actors::queue::SpendToken;
use crate::actors::remote_pins::RemotePin;
use crate::actors::schedule::{PinHold, PostHold, UnpinHold};
use crate::actors::wallet::{DebitForPayment, PaymentReceipt};
use crate::actors::ActorError;
use crate::domain::cluster::ShardId;
use crate::domain::schedule::{BookingRefusal, ReservationStatus, ScheduleBook};
use crate::domain::ticket::Ticket;
use crate::domain::{ReservationId, ScheduleId, TokenId, UserId};
use crate::store::{Fence, Lease};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an unknown outcome waits before the database is asked: past the persister's
/// commit limit, with room for a statement the database had still running.
pub const UNKNOWN_OUTCOME_WAIT: Duration = Duration::from_secs(15);

/// A pin older than this is looked up in the database even with its wallet owner alive: a
/// settle that never arrived would leave a paid hold sold only in the database.
pub const LOST_SETTLE_WAIT: Duration = Duration::from_secs(60);

/// How many times, and how far apart at first, an outcome is sent again after a failure.
const SETTLE_RETRIES: u32 = 6;
const SETTLE_BACKOFF: Duration = Duration::from_millis(250);

/// [`Engine::pay`]'s saga when the schedule's owner is another node (see the module doc).
pub(super) async fn settle_remote(
    engine: &Engine,
    peers: Arc<dyn Peers>,
    payment: Settlement,
) -> Result<PaymentReceipt, PaymentError> {
    let Settlement {
        user,
        reservation: id,
        schedule,
        token,
        idempotency,
    } = payment;
    let wallet_shard = shard_of(ActorKey::Wallet(user)).to_string();
    let wallet_epoch = engine
        .persister()
        .held_epoch(&wallet_shard)
        .ok_or(Unavailable::Fenced)?;
    let ask_pin = PinAsk {
        reservation: id,
        user,
        wallet_shard,
        wallet_epoch,
    };
    let pinned = peers.pin(schedule, ask_pin).await.map_err(|e| match e {
        PeerError::Refused(refusal) => PaymentError::Booking(refusal),
        PeerError::Unavailable(why) => {
            tracing::warn!(%why, reservation_id = %id, "pin at the schedule's owner failed");
            PaymentError::Unavailable(Unavailable::PeerUnreachable)
        }
    })?;
    let claim = Fence {
        shard: ShardId::Schedule(schedule).to_string(),
        epoch: pinned.epoch,
        owner: Some(pinned.owner.clone()),
    };
    // The token is the waiting room's: spent in this transaction only when this node
    // holds the queue, else by its owner right after the commit (one more write; a token
    // left ACTIVE by a crash between the two ends at its idle timeout).
    let queue_here = engine.persister().may_write(ActorKey::Queue);
    let now = engine.now();
    let (depends_on, token_record, on_commit): (_, _, Box<dyn FnOnce() + Send>) =
        match token.filter(|_| queue_here) {
            Some(token) => {
                let spent = engine.spend_with_payment(token, now);
                (vec![spent.depends_on], spent.record, spent.on_commit)
            }
            None => (Vec::new(), None, Box::new(|| {})),
        };
    let payment = engine.env().ids.payment();
    let wallet = engine.wallet(user);
    let paid = ScheduleBook::as_paid(&pinned.reservation, now);
    let tickets = Ticket::issue(&paid, now, || engine.env().ids.ticket());
    let outcome = ask(&wallet, |reply| DebitForPayment {
        paid,
        tickets,
        spends: token,
        token: token_record,
        payment,
        depends_on,
        claims: vec![claim],
        on_commit,
        idempotency,
        reply,
    })
    .await;
    let told = outcome_of(&outcome);
    // Once inline, so a read at the schedule's owner right after the answer sees the
    // seats sold; then in the background until it is heard.
    if peers.settle(schedule, id, told).await.is_err() {
        actix_rt::spawn(settle_until_heard(peers.clone(), schedule, id, told));
    }
    if let Some(token) = token.filter(|_| told == PaymentOutcome::Paid && !queue_here) {
        if let Err(error) = peers.spend_token(token).await {
            tracing::warn!(
                ?error,
                "the waiting room's owner did not spend a paid token"
            );
        }
    }
    outcome.map_err(|e| PaymentError::from(WalletError::from(e)))
}

impl Engine {
    /// The schedule owner's half: pins `ask_pin`'s hold for node `from`'s payment, and keeps
    /// the pin until it is settled (see the module doc).
    pub async fn pin_for_peer(
        &self,
        ask_pin: PinAsk,
        from: &str,
    ) -> Result<PinnedRemotely, PaymentError> {
        let (id, user) = (ask_pin.reservation, ask_pin.user);
        let node = self
            .persister()
            .node_id()
            .ok_or(Unavailable::PeerUnreachable)?;
        if !self.user_exists(user) {
            self.learn_user(user).await;
        }
        let schedule = match self.locate(user, id).await? {
            Located::Actor(schedule) => schedule,
            Located::Settled(view) => return Err(settled_refusal(&view).into()),
        };
        if !self.persister().may_write(ActorKey::Schedule(schedule)) {
            return Err(Unavailable::Fenced.into());
        }
        // Recorded before the pin, so a rebuild of the book in between re-pins it; one
        // payment at a time per reservation.
        let recorded = self.env().remote_pins.insert_new(
            id,
            RemotePin {
                schedule,
                user,
                wallet_node: from.to_string(),
                wallet_shard: ask_pin.wallet_shard,
                wallet_epoch: ask_pin.wallet_epoch,
                since: Instant::now(),
                uncertain_since: None,
                refund: None,
            },
        );
        if !recorded {
            return Err(BookingRefusal::PaymentInProgress.into());
        }
        let addr = match self.schedule(schedule) {
            Ok(addr) => addr,
            Err(error) => {
                self.env().remote_pins.remove(id);
                return Err(error.into());
            }
        };
        match ask(&addr, |reply| PinHold { id, user, reply }).await {
            Ok(pinned) => Ok(PinnedRemotely {
                reservation: pinned.reservation,
                owner: node,
                epoch: epoch_of(pinned.generation),
            }),
            Err(error) => {
                self.env().remote_pins.remove(id);
                Err(match error {
                    ActorError::Rejected(refusal) => PaymentError::Booking(refusal),
                    ActorError::Unavailable(why) => PaymentError::Unavailable(why),
                })
            }
        }
    }

    /// The schedule owner's half: the payment of `id` ended as `outcome`.
    pub async fn settle_for_peer(&self, id: ReservationId, outcome: PaymentOutcome) {
        match outcome {
            PaymentOutcome::Unknown => self.env().remote_pins.mark_uncertain(id),
            PaymentOutcome::Paid | PaymentOutcome::Refused => {
                let pinned = self.env().remote_pins.remove(id);
                let buyer = pinned.as_ref().map(|p| p.user);
                let schedule = pinned
                    .map(|p| p.schedule)
                    .or_else(|| self.env().reservations.schedule_of(id));
                self.finish_pin(schedule, id, buyer, outcome == PaymentOutcome::Paid)
                    .await;
            }
        }
    }

    /// Posts or unpins `id` in its schedule's book, if this node has the book.
    async fn finish_pin(
        &self,
        schedule: Option<ScheduleId>,
        id: ReservationId,
        buyer: Option<UserId>,
        paid: bool,
    ) {
        let Some(addr) = schedule.and_then(|s| self.registry().schedule(s)) else {
            return;
        };
        if paid {
            // The tickets were issued by the paying node's transaction: the book needs them
            // for the door, transfers and refunds before its next load.
            let tickets = match buyer {
                Some(buyer) => self.tickets_paid_elsewhere(buyer, id).await,
                None => Vec::new(),
            };
            addr.do_send(PostHold { id, tickets });
        } else {
            addr.do_send(UnpinHold { id });
        }
    }

    /// The tickets of reservation `id`, paid by `buyer` on another node, as that node's
    /// transaction committed them (its buyer holds them all: nothing can transfer one before
    /// this book has it). Empty if the database cannot say now: the book then reads them at
    /// its next load.
    async fn tickets_paid_elsewhere(&self, buyer: UserId, id: ReservationId) -> Vec<Ticket> {
        let held = self
            .store_handle()
            .run(move |s| async move { s.tickets_of_holder(buyer).await })
            .await;
        match held {
            Ok(held) => held
                .into_iter()
                .map(|stored| stored.ticket)
                .filter(|t| t.reservation == id)
                .collect(),
            Err(error) => {
                tracing::warn!(%error, reservation_id = %id, "a paid hold's tickets could not be read");
                Vec::new()
            }
        }
    }

    /// The waiting room owner's half: a payment elsewhere used `token`.
    pub fn spend_token_for_peer(&self, token: TokenId) -> Result<(), Unavailable> {
        if !self.persister().may_write(ActorKey::Queue) {
            return Err(Unavailable::Fenced);
        }
        self.registry().queue().do_send(SpendToken { token });
        Ok(())
    }

    /// The pins this node holds for other nodes' payments (and refunds, whose "paid" is
    /// REFUNDED) that no settle will end: the
    /// wallet shard they were decided under moved on (read from `leases`, the database's
    /// shard map read after that move), or their outcome was unknown long enough, or they
    /// are old enough that a settle may have been lost. The database then says whether each
    /// was paid. Returns how many it resolved.
    pub async fn resolve_remote_pins(&self, leases: &[Lease]) -> usize {
        let mut resolved = 0;
        for (id, pin) in self.env().remote_pins.older_than(Duration::from_secs(1)) {
            if !self.persister().may_write(ActorKey::Schedule(pin.schedule)) {
                // Its schedule moved: the new owner loaded what committed, and the payment's
                // claim on this node's epoch can no longer commit.
                self.env().remote_pins.remove(id);
                continue;
            }
            let wallet_moved = !leases.iter().any(|l| {
                l.shard == pin.wallet_shard
                    && l.owner.as_deref() == Some(pin.wallet_node.as_str())
                    && l.epoch == pin.wallet_epoch
            });
            let unknown_long_enough = pin
                .uncertain_since
                .is_some_and(|t| t.elapsed() >= UNKNOWN_OUTCOME_WAIT);
            let maybe_lost = pin.since.elapsed() >= LOST_SETTLE_WAIT;
            if !(wallet_moved || unknown_long_enough || maybe_lost) {
                continue;
            }
            let stored = self
                .store_handle()
                .run(move |s| async move { s.load_reservation(id).await })
                .await;
            // What its commit makes of the reservation: paid, or (a refund's) refunded.
            let committed = if pin.refund.is_some() {
                ReservationStatus::Refunded
            } else {
                ReservationStatus::Paid
            };
            let paid = match stored {
                Ok(Some(stored)) => stored.reservation.status == committed,
                Ok(None) => false,
                Err(error) => {
                    tracing::warn!(%error, "a remote pin's outcome could not be read");
                    continue;
                }
            };
            if !(paid || wallet_moved || unknown_long_enough) {
                // Its payment may still commit: keep it.
                continue;
            }
            tracing::info!(reservation_id = %id, paid, wallet_moved, "resolved a remote pin");
            self.env().remote_pins.remove(id);
            match pin.refund {
                Some(seats) => self.finish_refund_pin(pin.schedule, id, pin.user, seats, paid),
                None => {
                    self.finish_pin(Some(pin.schedule), id, Some(pin.user), paid)
                        .await;
                }
            }
            resolved += 1;
        }
        resolved
    }

    /// Pins held here for other nodes' payments (for tests and `/metrics`).
    pub fn remote_pins(&self) -> usize {
        self.env().remote_pins.len()
    }
}

fn outcome_of<E>(outcome: &Result<PaymentReceipt, ActorError<E>>) -> PaymentOutcome {
    match outcome {
        Ok(_) => PaymentOutcome::Paid,
        // Submitted, and the database did not say whether it took it.
        Err(ActorError::Unavailable(Unavailable::CommitFailed | Unavailable::Busy)) => {
            PaymentOutcome::Unknown
        }
        // Refused before it was submitted, or by the fence inside the transaction.
        Err(_) => PaymentOutcome::Refused,
    }
}

/// Sends `outcome` again, backing off, until the schedule's owner hears it (or it is clear
/// nobody will: the pin is then resolved from the database by whoever holds the schedule).
async fn settle_until_heard(
    peers: Arc<dyn Peers>,
    schedule: ScheduleId,
    id: ReservationId,
    outcome: PaymentOutcome,
) {
    let mut wait = SETTLE_BACKOFF;
    for _ in 0..SETTLE_RETRIES {
        tokio::time::sleep(wait).await;
        if peers.settle(schedule, id, outcome).await.is_ok() {
            return;
        }
        wait *= 2;
    }
    tracing::warn!(reservation_id = %id, ?outcome, "a payment's outcome was never heard by its schedule's owner");
}
