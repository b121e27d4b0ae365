//! A refund's side in the wallet (API.md §12, a cancelled performance): the credit, its
//! `REFUND` ledger row and the reservation `REFUNDED`, one submission, which depends on the
//! schedule's state it was decided under, as a payment's does.

use super::{wallet_or_refusal, WalletActor};
use crate::actors::durability::Acknowledgement;
use crate::actors::mailbox::{received, Reply};
use crate::actors::persister::Dependency;
use crate::domain::schedule::Reservation;
use crate::domain::ticket::Ticket;
use crate::domain::wallet::WalletRefusal;
use crate::domain::{Money, PaymentId};
use crate::store::{LedgerEntry, LedgerKind, WalletRecord, Writes};
use actix::prelude::*;
use std::time::Instant;

/// Credit the buyer of `refunded` with what they paid.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CreditRefund {
    /// The reservation as it is once refunded.
    pub refunded: Reservation,
    /// Its tickets, void: written in the same transaction.
    pub tickets: Vec<Ticket>,
    /// The payment refunded: the ledger row names it.
    pub payment: PaymentId,
    pub amount: Money,
    pub depends_on: Vec<Dependency>,
    /// Runs after the commit, before the reply: the schedule releases the seats.
    pub on_commit: Box<dyn FnOnce() + Send>,
    pub reply: Reply<Money, WalletRefusal>,
}

impl Handler<CreditRefund> for WalletActor {
    type Result = ();

    /// Credits and submits the refund's writes; answers the new balance after the commit.
    fn handle(&mut self, msg: CreditRefund, _: &mut Context<Self>) {
        received::<Self>();
        self.last_used = Instant::now();
        let Some((permit, reply)) = self
            .durability
            .reserve_along_or_refuse(&msg.depends_on, msg.reply)
        else {
            return;
        };
        let now = self.env.clock.now();
        let ledger_id = self.env.ids.ledger();
        let wallet = match wallet_or_refusal(&mut self.state, &self.durability) {
            Ok(wallet) => wallet,
            Err(refused) => return drop(reply.send(Err(refused))),
        };
        let balance = match wallet.credit(msg.amount) {
            Ok(balance) => balance,
            Err(refusal) => return self.durability.refuse_after_commit(permit, reply, refusal),
        };
        let user = wallet.user;
        let writes = msg
            .tickets
            .iter()
            .fold(Writes::default(), |w, t| w.ticket(t))
            .reservation(&msg.refunded)
            .wallet(WalletRecord {
                user,
                balance,
                at: now,
            })
            .ledger(LedgerEntry {
                id: ledger_id,
                user,
                kind: LedgerKind::Refund,
                amount: msg.amount,
                balance_after: balance,
                payment: Some(msg.payment),
                at: now,
            });
        let acknowledgement = Acknowledgement {
            on_commit: Some(msg.on_commit),
            ..Acknowledgement::new(writes, balance, now)
        };
        self.durability
            .acknowledge_after_commit(permit, acknowledgement, reply);
    }
}
