//! Cluster mode's side of the engine's [`Elsewhere`]: a piece of state is here when this
//! node holds its shard (the persister's fence says so); otherwise polls are answered from
//! the queue owner's snapshot (`remote_polls.rs`), seat maps from a copy of the database
//! (`seat_copy.rs`), tokens from what the queue's owner committed, a payment by asking
//! the schedule's owner to pin the hold (`remote_payment.rs`), and a refund by asking the
//! wallet's owner to credit it (`remote_refund.rs`).

use super::peers::Peers;
use super::queue_copy::QueueCopy;
use super::seat_copy::SeatCopies;
use crate::actors::engine::elsewhere::Later;
use crate::actors::engine::{Elsewhere, Engine, RefundElsewhere, Settlement};
use crate::actors::error::{BookingError, PaymentError, RefundError};
use crate::actors::persister::ActorKey;
use crate::actors::schedule::SeatMap;
use crate::actors::wallet::{PaymentReceipt, RefundReceipt};
use crate::domain::queue::{OpeningPhase, TokenRecord, TokenRefusal, TokenStatus};
use crate::domain::schedule::ScheduleInfo;
use crate::domain::{TokenId, UserId};
use std::any::Any;
use std::sync::Arc;

/// What this node keeps to answer for state the other nodes hold.
pub struct OtherNodes {
    /// How this node asks the others.
    pub(crate) peers: Arc<dyn Peers>,
    /// Seat maps of schedules other nodes hold.
    pub(crate) seat_copies: SeatCopies,
    /// What polls are answered from when another node holds the queue.
    pub(crate) queue_copy: QueueCopy,
    /// When the last reload [`Engine::learn_catalog`] finished had started; held while a
    /// reload runs, so callers wait for it instead of starting their own.
    pub(crate) catalog_reloaded_at: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl OtherNodes {
    pub fn new(peers: Arc<dyn Peers>) -> OtherNodes {
        OtherNodes {
            peers,
            seat_copies: SeatCopies::default(),
            queue_copy: QueueCopy::default(),
            catalog_reloaded_at: tokio::sync::Mutex::new(None),
        }
    }
}

impl Engine {
    /// Cluster mode: how this node asks the others (set once, at startup).
    pub fn set_peers(&self, peers: Arc<dyn Peers>) {
        self.set_elsewhere(Arc::new(OtherNodes::new(peers)));
    }

    /// Cluster mode's state, once [`Engine::set_peers`] installed it.
    pub(crate) fn other_nodes(&self) -> Option<&OtherNodes> {
        self.elsewhere().as_any().downcast_ref::<OtherNodes>()
    }
}

impl Elsewhere for OtherNodes {
    fn is_here(&self, engine: &Engine, key: ActorKey) -> bool {
        engine.persister().may_write(key)
    }

    fn poll(&self, engine: &Engine, user: UserId, token: Option<TokenId>) -> Option<TokenStatus> {
        engine.poll_here(user, token)
    }

    fn opening_phase(&self, engine: &Engine) -> Option<OpeningPhase> {
        engine.opening_phase_from_snapshot()
    }

    fn authorize<'a>(
        &'a self,
        engine: &'a Engine,
        token: TokenId,
        user: Option<UserId>,
    ) -> Later<'a, Option<Result<TokenRecord, TokenRefusal>>> {
        Box::pin(async move {
            // This node's line is a copy from when it last loaded it, so a token it does not
            // know, or knows as not yet ACTIVE, may have been admitted since. The database
            // has what the queue's owner committed.
            let stored = engine
                .store_handle()
                .run(move |s| async move { s.load_token(token).await })
                .await;
            match stored {
                Ok(Some(record)) => Some(record.authorizes(user, engine.now()).map(|()| record)),
                Ok(None) => None,
                Err(error) => {
                    tracing::warn!(%error, "token lookup failed; answering from the local line");
                    None
                }
            }
        })
    }

    fn seats<'a>(
        &'a self,
        engine: &'a Engine,
        info: ScheduleInfo,
    ) -> Later<'a, Result<SeatMap, BookingError>> {
        Box::pin(self.seat_copies.copy(engine, info))
    }

    fn settle<'a>(
        &'a self,
        engine: &'a Engine,
        payment: Settlement,
    ) -> Later<'a, Result<PaymentReceipt, PaymentError>> {
        Box::pin(super::remote_payment::settle_remote(
            engine,
            self.peers.clone(),
            payment,
        ))
    }

    fn refund<'a>(
        &'a self,
        engine: &'a Engine,
        refund: RefundElsewhere,
    ) -> Later<'a, Result<RefundReceipt, RefundError>> {
        Box::pin(super::remote_refund::refund_remote(
            engine,
            self.peers.clone(),
            refund,
        ))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
