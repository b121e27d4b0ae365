//! `WalletActor`: one per user, started on first use and stopped when idle. Orders the user's
//! recharges and debits; the balance it keeps is never negative.

use super::engine::Core;
use super::persister::{ActorKey, Dependency};
use super::{ActorError, Durability, Reply, Unavailable};
use crate::domain::queue::TokenRecord;
use crate::domain::schedule::Reservation;
use crate::domain::wallet::{Wallet, WalletRefusal};
use crate::domain::{Money, PaymentId, UserId};
use crate::store::{LedgerEntry, LedgerKind, PaymentRecord, StoreError, WalletRecord, Writes};
use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A wallet idle this long stops (it is reloaded from the database on next use).
const IDLE_STOP: Duration = Duration::from_secs(60);
const RELOAD_BACKOFF: Duration = Duration::from_millis(500);

/// A payment's receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentReceipt {
    pub payment: PaymentId,
    pub amount: Money,
}

enum State {
    Loading,
    Unloaded,
    Missing,
    Ready(Wallet),
}

pub struct WalletActor {
    user: UserId,
    /// Which incarnation of this user's wallet actor this is, so the registry removes only us.
    pub(super) instance: u64,
    core: Arc<Core>,
    durability: Durability,
    state: State,
    last_used: Instant,
}

impl WalletActor {
    pub fn new(user: UserId, instance: u64, core: Arc<Core>) -> WalletActor {
        let durability = Durability::new(
            ActorKey::Wallet(user),
            core.wallet_generation(user),
            core.persister.clone(),
        );
        WalletActor {
            user,
            instance,
            core,
            durability,
            state: State::Loading,
            last_used: Instant::now(),
        }
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        self.state = State::Loading;
        let user = self.user;
        let fut = self
            .core
            .store
            .run(move |store| async move { store.load_wallet(user).await });
        ctx.wait(
            fut.into_actor(self)
                .map(|result, act, ctx| act.install(result, ctx)),
        );
    }

    fn install(&mut self, loaded: Result<Option<Money>, StoreError>, ctx: &mut Context<Self>) {
        match loaded {
            Ok(Some(balance)) => self.state = State::Ready(Wallet::new(self.user, balance)),
            Ok(None) => self.state = State::Missing,
            Err(error) => {
                tracing::warn!(user_id = %self.user, error = %error, "wallet load failed; retrying");
                self.state = State::Unloaded;
                ctx.run_later(RELOAD_BACKOFF, |act, ctx| {
                    if matches!(act.state, State::Unloaded) {
                        act.load(ctx);
                    }
                });
            }
        }
    }

    /// The wallet, or the reason there is none to answer from.
    fn wallet<T>(
        &mut self,
        reply: Reply<T, WalletRefusal>,
    ) -> Option<(Reply<T, WalletRefusal>, &mut Wallet)> {
        self.last_used = Instant::now();
        if self.durability.is_stale() {
            let _ = reply.send(Err(ActorError::Unavailable(Unavailable::Rebuilding)));
            return None;
        }
        match &mut self.state {
            State::Ready(wallet) => Some((reply, wallet)),
            State::Missing => {
                let _ = reply.send(Err(ActorError::Rejected(WalletRefusal::UserNotFound)));
                None
            }
            State::Loading | State::Unloaded => {
                let _ = reply.send(Err(ActorError::Unavailable(Unavailable::Rebuilding)));
                None
            }
        }
    }
}

impl super::Named for WalletActor {
    const KIND: &'static str = "wallet";
}

impl Actor for WalletActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.core.settings.mailbox_capacity);
        self.load(ctx);
        ctx.run_interval(IDLE_STOP / 2, |act, ctx| {
            // Never stop with writes in flight: a successor would load a balance without them.
            if act.last_used.elapsed() >= IDLE_STOP && act.durability.settled() {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.core
            .forget_wallet(self.user, self.instance, self.durability.generation());
    }
}

/// Add money to the wallet.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Recharge {
    /// As the client sent it: the wallet judges it.
    pub amount: i64,
    pub idempotency: Option<super::idempotency::IdempotentWrite<Money>>,
    pub reply: Reply<Money, WalletRefusal>,
}

impl Handler<Recharge> for WalletActor {
    type Result = ();

    /// Adds the amount and answers the new balance after the commit.
    fn handle(&mut self, msg: Recharge, _: &mut Context<Self>) {
        super::received::<Self>();
        let permit = match self.durability.reserve() {
            Ok(p) => p,
            Err(u) => return drop(msg.reply.send(Err(ActorError::Unavailable(u)))),
        };
        let now = self.core.clock.now();
        let max = self.core.settings.max_recharge;
        let ledger_id = self.core.next_ledger_id();
        let Some((reply, wallet)) = self.wallet(msg.reply) else {
            return;
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
                self.durability.commit_answer(
                    permit,
                    writes,
                    reply,
                    balance,
                    msg.idempotency,
                    now,
                    None,
                );
            }
            Err(rule) => self
                .durability
                .commit_then(permit, Writes::default(), reply, Err(rule)),
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
    fn handle(&mut self, msg: ReadBalance, _: &mut Context<Self>) {
        super::received::<Self>();
        let Some((reply, wallet)) = self.wallet(msg.reply) else {
            return;
        };
        let balance = wallet.balance();
        self.durability.answer(reply, Ok(balance));
    }
}

/// Pay a pinned reservation: debit, and write the debit, the paid reservation, the payment
/// and the consumed token in one transaction.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DebitForPayment {
    pub paid: Reservation,
    pub token: Option<TokenRecord>,
    pub payment: PaymentId,
    /// The schedule and queue states the payment was decided on.
    pub depends_on: Vec<Dependency>,
    /// Runs after the commit, before the reply: posts the hold and frees the token's slot.
    pub on_commit: Box<dyn FnOnce() + Send>,
    pub idempotency: Option<super::idempotency::IdempotentWrite<PaymentReceipt>>,
    pub reply: Reply<PaymentReceipt, WalletRefusal>,
}

impl Handler<DebitForPayment> for WalletActor {
    type Result = ();

    /// Debits and submits the payment's writes; answers after the commit.
    fn handle(&mut self, msg: DebitForPayment, _: &mut Context<Self>) {
        super::received::<Self>();
        let mut deps = msg.depends_on;
        deps.push(self.durability.dependency());
        let permit = match self.core.persister.reserve(&deps) {
            Ok(p) => p,
            Err(u) => return drop(msg.reply.send(Err(ActorError::Unavailable(u)))),
        };
        let now = self.core.clock.now();
        let ledger_id = self.core.next_ledger_id();
        let amount = msg.paid.total;
        let Some((reply, wallet)) = self.wallet(msg.reply) else {
            return;
        };
        let balance = match wallet.debit(amount) {
            Ok(balance) => balance,
            Err(rule) => {
                return self
                    .durability
                    .commit_then(permit, Writes::default(), reply, Err(rule))
            }
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
        let receipt = PaymentReceipt {
            payment: msg.payment,
            amount,
        };
        // The payment's other states are part of this write: a failure must rebuild them too.
        self.durability.commit_answer(
            permit,
            writes,
            reply,
            receipt,
            msg.idempotency,
            now,
            Some(msg.on_commit),
        );
    }
}

/// Rebuild from the database after a failed commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RebuildWallet {
    pub generation: u64,
}

impl Handler<RebuildWallet> for WalletActor {
    type Result = ();

    /// Reloads the balance under the new generation.
    fn handle(&mut self, msg: RebuildWallet, ctx: &mut Context<Self>) {
        if msg.generation <= self.durability.generation() {
            return;
        }
        self.durability.rebuilt(msg.generation);
        self.load(ctx);
    }
}
