//! Cluster mode: a refund whose schedule and wallet live on different nodes, the payment's
//! saga (`remote_payment.rs`) in reverse.
//!
//! The schedule's owner (where the refund route lands) records the refund in `RemotePins`,
//! pins the reservation's tickets in its book (the door and transfers refuse them), and asks
//! the wallet's owner to commit the credit, the REFUND ledger row, the reservation REFUNDED
//! and its tickets VOID in one transaction fenced on the wallet shard's epoch it names *and* on
//! the schedule shard's epoch the tickets were pinned under (a claim naming the schedule's
//! owner). Then the schedule's owner frees the seats in memory (to sale or the waiting list),
//! or unpins if nothing was committed.
//!
//! Why that credits once: the wallet's owner commits only under the wallet epoch the schedule's
//! owner named and only while the schedule's owner still holds its claim, so neither a moved
//! wallet nor a moved schedule can commit a credit its pin no longer stands for. A credit whose
//! outcome is unknown (the database did not say, or no answer came) keeps its pin, and the pin
//! resolver reads the outcome from the database once no commit of it can still be under way,
//! exactly as for a payment's pin: refunded means free the seats, otherwise unpin.

use super::peers::{CreditAsk, CreditOutcome, Peers};
use crate::actors::engine::{Engine, RefundElsewhere, RefundPin};
use crate::actors::error::RefundError;
use crate::actors::mailbox::ask;
use crate::actors::persister::{epoch_of, ActorKey, Unavailable};
use crate::actors::remote_pins::RemotePin;
use crate::actors::schedule::{PostRefund, UnpinRefund};
use crate::actors::wallet::{CreditForRefund, RefundReceipt};
use crate::actors::ActorError;
use crate::domain::cluster::ShardId;
use crate::domain::{ReservationId, ScheduleId, SeatId, UserId};
use crate::store::Fence;
use std::sync::Arc;
use std::time::Instant;

/// [`Engine::refund`]'s saga when the wallet's owner is another node (see the module doc).
pub(super) async fn refund_remote(
    engine: &Engine,
    peers: Arc<dyn Peers>,
    refund: RefundElsewhere,
) -> Result<RefundReceipt, RefundError> {
    let RefundElsewhere {
        paid,
        payment,
        idempotency,
    } = refund;
    let (id, buyer, schedule) = (paid.id, paid.user, paid.schedule);
    let seats = paid.seats.clone();
    let wallet_shard = ShardId::of_wallet(buyer);
    let (wallet_node, wallet_epoch) = peers
        .holder(wallet_shard)
        .ok_or(Unavailable::PeerUnreachable)?;
    // Recorded before the pin, so a rebuild of the book in between re-pins it; one refund at
    // a time per reservation.
    let recorded = engine.env().remote_pins.insert_new(
        id,
        RemotePin {
            schedule,
            user: buyer,
            wallet_node,
            wallet_shard: wallet_shard.to_string(),
            wallet_epoch,
            since: Instant::now(),
            uncertain_since: None,
            refund: Some(seats.clone()),
        },
    );
    if !recorded {
        return Err(RefundError::NotAllowed);
    }
    let RefundPin {
        refunded,
        tickets,
        generation,
        ..
    } = match engine.pin_refund(paid).await {
        Ok(pinned) => pinned,
        Err(error) => {
            engine.env().remote_pins.remove(id);
            return Err(error);
        }
    };
    let credit = CreditAsk {
        refunded,
        payment,
        tickets,
        schedule_epoch: epoch_of(generation),
        wallet_shard: wallet_shard.to_string(),
        wallet_epoch,
        key: idempotency.as_ref().map(|i| i.key_elsewhere()),
    };
    match peers.credit_refund(credit).await {
        Ok(CreditOutcome::Credited(receipt)) => {
            engine.env().remote_pins.remove(id);
            engine.finish_refund_pin(schedule, id, buyer, seats, true);
            // The row was written with the credit; this node's claim replays it from now on.
            if let Some(claim) = idempotency {
                let record = claim.record(&receipt, engine.now());
                claim.complete(record);
            }
            Ok(receipt)
        }
        Ok(CreditOutcome::Refused { retry }) => {
            engine.env().remote_pins.remove(id);
            engine.finish_refund_pin(schedule, id, buyer, seats, false);
            Err(if retry {
                Unavailable::Fenced.into()
            } else {
                RefundError::NotAllowed
            })
        }
        Ok(CreditOutcome::Unknown) => {
            // The pin stays: the resolver reads the outcome once no commit can be under way.
            engine.env().remote_pins.mark_uncertain(id);
            Err(Unavailable::CommitFailed.into())
        }
        Err(error) => {
            // The credit may be committing still: the pin stays until the wallet shard's
            // epoch can no longer commit, or the database shows it refunded.
            tracing::warn!(?error, reservation_id = %id, "a refund's credit at the wallet's owner failed");
            Err(Unavailable::PeerUnreachable.into())
        }
    }
}

impl Engine {
    /// The wallet owner's half: credits `credit`, pinned by node `from` (the schedule's
    /// owner), in one transaction fenced on this node's wallet epoch and on `from`'s claim.
    pub async fn credit_for_peer(&self, credit: CreditAsk, from: &str) -> CreditOutcome {
        let user = credit.refunded.user;
        if !self.user_exists(user) {
            self.learn_user(user).await;
        }
        // Only under the wallet epoch the schedule's owner recorded its pin against: a
        // commit under any other could outlive the moment that node judges the pin by.
        let shard = ShardId::of_wallet(user).to_string();
        if credit.wallet_shard != shard
            || self.persister().held_epoch(&shard) != Some(credit.wallet_epoch)
        {
            return CreditOutcome::Refused { retry: true };
        }
        let claim = Fence {
            shard: ShardId::Schedule(credit.refunded.schedule).to_string(),
            epoch: credit.schedule_epoch,
            owner: Some(from.to_string()),
        };
        let outcome = ask(&self.wallet(user), |reply| CreditForRefund {
            refunded: credit.refunded,
            payment: credit.payment,
            tickets: credit.tickets,
            depends_on: Vec::new(),
            claims: vec![claim],
            on_commit: Box::new(|| {}),
            idempotency: None,
            key_elsewhere: credit.key,
            reply,
        })
        .await;
        match outcome {
            Ok(receipt) => CreditOutcome::Credited(receipt),
            // Submitted, and the database did not say whether it took it.
            Err(ActorError::Unavailable(Unavailable::CommitFailed | Unavailable::Busy)) => {
                CreditOutcome::Unknown
            }
            Err(ActorError::Unavailable(_)) => CreditOutcome::Refused { retry: true },
            Err(ActorError::Rejected(_)) => CreditOutcome::Refused { retry: false },
        }
    }

    /// Frees a refund's seats (`refunded`) or unpins its tickets, in `schedule`'s book if this
    /// node has it (a new owner loaded whatever committed).
    pub(super) fn finish_refund_pin(
        &self,
        schedule: ScheduleId,
        id: ReservationId,
        buyer: UserId,
        seats: Vec<SeatId>,
        refunded: bool,
    ) {
        if !self.persister().may_write(ActorKey::Schedule(schedule)) {
            return;
        }
        let Some(addr) = self.registry().schedule(schedule) else {
            return;
        };
        if refunded {
            addr.do_send(PostRefund { id, buyer, seats });
        } else {
            addr.do_send(UnpinRefund { id });
        }
    }
}
