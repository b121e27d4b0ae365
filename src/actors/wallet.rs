//! `WalletActor`: one per user, started on first use and stopped when idle. Orders the user's
//! recharges and debits; the balance it keeps is never negative.

use super::durability::{Acknowledgement, Durability};
use super::env::{ActorEnv, IdDashMap};
use super::error::ActorError;
use super::idempotency::{IdempotentWrite, KeyElsewhere};
use super::loading::{self, Fetch, Loaded, Loads, Rebuild};
use super::mailbox::{received, Named, Reply};
use super::persister::{ActorKey, Dependency};
use crate::domain::queue::TokenRecord;
use crate::domain::schedule::Reservation;
use crate::domain::wallet::{Wallet, WalletRefusal};
use crate::domain::{Money, PaymentId, TokenId, UserId};
use crate::store::{Fence, LedgerEntry, LedgerKind, PaymentRecord, WalletRecord, Writes};
use actix::prelude::*;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// A wallet idle this long stops (it is reloaded from the database on next use).
const IDLE_STOP: Duration = Duration::from_secs(60);

/// A payment's receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentReceipt {
    pub payment: PaymentId,
    pub amount: Money,
}

/// The live wallet actors, by user. The registry owns it and starts actors into it; a wallet
/// actor that stops removes itself through a `Weak`, so it never holds the registry.
#[derive(Default)]
pub struct WalletDirectory {
    slots: IdDashMap<UserId, WalletSlot>,
}

struct WalletSlot {
    /// Which incarnation of this user's wallet actor this is, so a stopped one removes only
    /// itself, never a successor.
    instance: u64,
    addr: Addr<WalletActor>,
}

impl WalletDirectory {
    /// The user's running wallet actor, or the one `start` starts (given its instance number).
    pub fn get_or_start(
        &self,
        user: UserId,
        instance: impl FnOnce() -> u64,
        start: impl FnOnce(u64) -> Addr<WalletActor>,
    ) -> Addr<WalletActor> {
        match self.slots.entry(user) {
            dashmap::Entry::Occupied(slot) if slot.get().addr.connected() => {
                slot.get().addr.clone()
            }
            entry => {
                let instance = instance();
                let addr = start(instance);
                entry.insert(WalletSlot {
                    instance,
                    addr: addr.clone(),
                });
                addr
            }
        }
    }

    /// The user's wallet actor, if one is running.
    pub fn running(&self, user: UserId) -> Option<Addr<WalletActor>> {
        self.slots.get(&user).map(|slot| slot.addr.clone())
    }

    /// Every user with a running wallet actor.
    pub fn running_users(&self) -> Vec<UserId> {
        self.slots.iter().map(|slot| *slot.key()).collect()
    }

    /// A stopped actor leaves (only if no successor took its place).
    fn forget(&self, user: UserId, instance: u64) {
        self.slots
            .remove_if(&user, |_, slot| slot.instance == instance);
    }
}

pub struct WalletActor {
    user: UserId,
    instance: u64,
    env: Arc<ActorEnv>,
    directory: Weak<WalletDirectory>,
    durability: Durability,
    /// `Ready(None)`: the user has no wallet row (no such user).
    state: Loaded<Option<Wallet>>,
    last_used: Instant,
}

impl WalletActor {
    pub fn new(
        user: UserId,
        instance: u64,
        env: Arc<ActorEnv>,
        directory: Weak<WalletDirectory>,
    ) -> WalletActor {
        // Past any generation a failed commit left behind for this user.
        let generation = env.persister.min_generation(ActorKey::Wallet(user));
        let durability = Durability::new(ActorKey::Wallet(user), generation, env.persister.clone());
        WalletActor {
            user,
            instance,
            env,
            directory,
            durability,
            state: Loaded::Loading,
            last_used: Instant::now(),
        }
    }
}

/// The wallet to decide on, or the refusal to answer instead.
fn wallet_or_refusal<'a>(
    state: &'a mut Loaded<Option<Wallet>>,
    durability: &Durability,
) -> Result<&'a mut Wallet, ActorError<WalletRefusal>> {
    match state.ready_mut(durability) {
        Ok(Some(wallet)) => Ok(wallet),
        Ok(None) => Err(ActorError::Rejected(WalletRefusal::UserNotFound)),
        Err(why) => Err(ActorError::Unavailable(why)),
    }
}

impl Named for WalletActor {
    const KIND: &'static str = "wallet";
}

impl Loads for WalletActor {
    type State = Option<Wallet>;
    type Fetched = Option<Money>;

    fn state_mut(&mut self) -> &mut Loaded<Option<Wallet>> {
        &mut self.state
    }

    fn durability_mut(&mut self) -> &mut Durability {
        &mut self.durability
    }

    fn fetch(&self) -> Fetch<Option<Money>> {
        let user = self.user;
        Box::pin(
            self.env
                .store
                .run(move |store| async move { store.load_wallet(user).await }),
        )
    }

    fn install(&mut self, balance: Option<Money>, _: &mut Context<Self>) {
        self.state = Loaded::Ready(balance.map(|b| Wallet::new(self.user, b)));
    }
}

impl Actor for WalletActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.env.settings.mailbox_capacity);
        loading::load(self, ctx);
        ctx.run_interval(IDLE_STOP / 2, |act, ctx| {
            // Never stop with writes in flight: a successor would load a balance without them.
            if act.last_used.elapsed() >= IDLE_STOP && act.durability.settled() {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(directory) = self.directory.upgrade() {
            directory.forget(self.user, self.instance);
        }
    }
}

/// Add money to the wallet.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Recharge {
    /// As the client sent it: the wallet judges it.
    pub amount: i64,
    pub idempotency: Option<IdempotentWrite<Money>>,
    pub reply: Reply<Money, WalletRefusal>,
}

impl Handler<Recharge> for WalletActor {
    type Result = ();

    /// Adds the amount and answers the new balance after the commit.
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %self.user))]
    fn handle(&mut self, msg: Recharge, _: &mut Context<Self>) {
        received::<Self>();
        self.last_used = Instant::now();
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let now = self.env.clock.now();
        let max = self.env.settings.max_recharge;
        let ledger_id = self.env.ids.ledger();
        let wallet = match wallet_or_refusal(&mut self.state, &self.durability) {
            Ok(wallet) => wallet,
            Err(refused) => return drop(reply.send(Err(refused))),
        };
        match wallet.recharge(msg.amount, max) {
            Ok(balance) => {
                let user = wallet.user;
                let writes = Writes::default()
                    .wallet(WalletRecord {
                        user,
                        balance,
                        at: now,
                    })
                    .ledger(LedgerEntry {
                        id: ledger_id,
                        user,
                        kind: LedgerKind::Recharge,
                        // Accepted by `recharge`, so positive.
                        amount: Money::new(msg.amount).unwrap_or(Money::ZERO),
                        balance_after: balance,
                        payment: None,
                        at: now,
                    });
                let acknowledgement = Acknowledgement {
                    idempotency: msg.idempotency,
                    ..Acknowledgement::new(writes, balance, now)
                };
                self.durability
                    .acknowledge_after_commit(permit, acknowledgement, reply);
            }
            Err(refusal) => self.durability.refuse_after_commit(permit, reply, refusal),
        }
    }
}

/// Read the balance.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadBalance {
    pub reply: Reply<Money, WalletRefusal>,
}

impl Handler<ReadBalance> for WalletActor {
    type Result = ();

    /// Answers the balance as of every acknowledged change.
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %self.user))]
    fn handle(&mut self, msg: ReadBalance, _: &mut Context<Self>) {
        received::<Self>();
        self.last_used = Instant::now();
        let balance = match wallet_or_refusal(&mut self.state, &self.durability) {
            Ok(wallet) => wallet.balance(),
            Err(refused) => return drop(msg.reply.send(Err(refused))),
        };
        self.durability.answer_when_settled(msg.reply, Ok(balance));
    }
}

/// Pay a pinned reservation: debit, and write the debit, the paid reservation, the payment
/// and the consumed token in one transaction.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DebitForPayment {
    pub paid: Reservation,
    /// One ticket per seat, issued in the payment's transaction (API.md §12).
    pub tickets: Vec<crate::domain::ticket::Ticket>,
    /// The token the payment was authorized with: it buys once (see `Wallet::pay`).
    pub spends: Option<TokenId>,
    /// The token as stored once spent, when this node holds the queue (else its owner spends
    /// it after the commit).
    pub token: Option<TokenRecord>,
    pub payment: PaymentId,
    /// The schedule and queue states the payment was decided on.
    pub depends_on: Vec<Dependency>,
    /// Cluster mode: the claims on shards other nodes hold that it was decided under (the
    /// schedule's, when its owner pinned the hold); checked in the payment's transaction.
    pub claims: Vec<Fence>,
    /// Runs after the commit, before the reply: posts the hold and frees the token's slot.
    pub on_commit: Box<dyn FnOnce() + Send>,
    pub idempotency: Option<IdempotentWrite<PaymentReceipt>>,
    pub reply: Reply<PaymentReceipt, WalletRefusal>,
}

impl Handler<DebitForPayment> for WalletActor {
    type Result = ();

    /// Debits and submits the payment's writes; answers after the commit.
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %self.user, reservation_id = %msg.paid.id))]
    fn handle(&mut self, msg: DebitForPayment, _: &mut Context<Self>) {
        received::<Self>();
        self.last_used = Instant::now();
        let Some((permit, reply)) = self
            .durability
            .reserve_along_or_refuse(&msg.depends_on, msg.reply)
        else {
            return;
        };
        let permit = permit.claiming(msg.claims);
        let now = self.env.clock.now();
        let ledger_id = self.env.ids.ledger();
        let amount = msg.paid.total;
        let wallet = match wallet_or_refusal(&mut self.state, &self.durability) {
            Ok(wallet) => wallet,
            Err(refused) => return drop(reply.send(Err(refused))),
        };
        let balance = match wallet.pay(msg.spends, amount) {
            Ok(balance) => balance,
            Err(refusal) => return self.durability.refuse_after_commit(permit, reply, refusal),
        };
        let user = wallet.user;
        let mut writes = Writes::default()
            .reservation(&msg.paid)
            .payment(PaymentRecord {
                id: msg.payment,
                reservation: msg.paid.id,
                user,
                amount,
                at: now,
            })
            .wallet(WalletRecord {
                user,
                balance,
                at: now,
            })
            .ledger(LedgerEntry {
                id: ledger_id,
                user,
                kind: LedgerKind::Payment,
                amount,
                balance_after: balance,
                payment: Some(msg.payment),
                at: now,
            });
        if let Some(token) = msg.token {
            writes = writes.token(token);
        }
        for ticket in &msg.tickets {
            writes = writes.ticket(ticket);
        }
        let receipt = PaymentReceipt {
            payment: msg.payment,
            amount,
        };
        // The payment's other states are part of this write: a failure must rebuild them too.
        let acknowledgement = Acknowledgement {
            idempotency: msg.idempotency,
            on_commit: Some(msg.on_commit),
            ..Acknowledgement::new(writes, receipt, now)
        };
        self.durability
            .acknowledge_after_commit(permit, acknowledgement, reply);
    }
}

mod refund;
pub use refund::CreditRefund;

impl Handler<Rebuild> for WalletActor {
    type Result = ();

    /// Reloads the balance under the new generation.
    fn handle(&mut self, msg: Rebuild, ctx: &mut Context<Self>) {
        loading::rebuild(self, msg, ctx);
    }
}

/// What a refund gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundReceipt {
    pub reservation: crate::domain::ReservationId,
    /// The REFUND ledger row's id.
    pub refund: i64,
    pub amount: Money,
    pub balance: Money,
}

/// Credit a refunded reservation: the credit, the REFUND ledger row, the reservation REFUNDED
/// (its holds voided) and its tickets VOID, in one transaction.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CreditForRefund {
    pub refunded: Reservation,
    /// The payment refunded: the REFUND ledger row names it (the audit counts it so).
    pub payment: Option<PaymentId>,
    pub tickets: Vec<crate::domain::ticket::Ticket>,
    /// The schedule state the refund was pinned in.
    pub depends_on: Vec<Dependency>,
    /// Cluster mode: the claim on the schedule's shard its owner pinned the refund under,
    /// when that owner is another node; checked in the credit's transaction.
    pub claims: Vec<Fence>,
    /// Runs after the commit, before the reply: frees the seats in the schedule's book.
    pub on_commit: Box<dyn FnOnce() + Send>,
    pub idempotency: Option<IdempotentWrite<RefundReceipt>>,
    /// Cluster mode: the key the schedule's owner claimed for this refund; its row is
    /// written with the credit.
    pub key_elsewhere: Option<KeyElsewhere>,
    pub reply: Reply<RefundReceipt, WalletRefusal>,
}

impl Handler<CreditForRefund> for WalletActor {
    type Result = ();

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %self.user, reservation_id = %msg.refunded.id))]
    fn handle(&mut self, msg: CreditForRefund, _: &mut Context<Self>) {
        received::<Self>();
        self.last_used = Instant::now();
        let Some((permit, reply)) = self
            .durability
            .reserve_along_or_refuse(&msg.depends_on, msg.reply)
        else {
            return;
        };
        let permit = permit.claiming(msg.claims);
        let now = self.env.clock.now();
        let refund = self.env.ids.ledger();
        let amount = msg.refunded.total;
        let wallet = match wallet_or_refusal(&mut self.state, &self.durability) {
            Ok(wallet) => wallet,
            Err(refused) => return drop(reply.send(Err(refused))),
        };
        let balance = match wallet.refund(amount) {
            Ok(balance) => balance,
            Err(refusal) => return self.durability.refuse_after_commit(permit, reply, refusal),
        };
        let user = wallet.user;
        let mut writes = Writes::default()
            .reservation(&msg.refunded)
            .wallet(WalletRecord {
                user,
                balance,
                at: now,
            })
            .ledger(LedgerEntry {
                id: refund,
                user,
                kind: LedgerKind::Refund,
                amount,
                balance_after: balance,
                payment: msg.payment,
                at: now,
            });
        for ticket in &msg.tickets {
            writes = writes.ticket(ticket);
        }
        let receipt = RefundReceipt {
            reservation: msg.refunded.id,
            refund,
            amount,
            balance,
        };
        if let Some(key) = msg.key_elsewhere {
            writes.idempotency.push(key.record(&receipt, user, now));
        }
        let acknowledgement = Acknowledgement {
            idempotency: msg.idempotency,
            on_commit: Some(msg.on_commit),
            ..Acknowledgement::new(writes, receipt, now)
        };
        self.durability
            .acknowledge_after_commit(permit, acknowledgement, reply);
    }
}
