//! Cluster mode: what this node asks of the others for a payment or a refund whose wallet and
//! schedule live on different nodes. The engine speaks this trait; `http/cluster/peer_client.rs` carries it
//! over HTTP, so `actors/` knows nothing of the wire.

use crate::actors::idempotency::KeyElsewhere;
use crate::actors::wallet::RefundReceipt;
use crate::domain::cluster::ShardId;
use crate::domain::queue::LineSnapshot;
use crate::domain::schedule::{BookingRefusal, Reservation};
use crate::domain::ticket::Ticket;
use crate::domain::{PaymentId, ReservationId, ScheduleId, TokenId, UserId};
use std::future::Future;
use std::pin::Pin;

/// A call to another node, boxed so the trait stays object-safe.
pub type PeerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PeerError>> + Send + 'a>>;

/// Why a call to another node gave no answer to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// The owner decided, and said no (the hold expired, is not this user's, ...).
    Refused(BookingRefusal),
    /// The owner could not be reached, or could not decide now (moved, paused, rebuilding).
    Unavailable(String),
}

/// Pin this user's hold for a payment decided under the wallet shard's `wallet_epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinAsk {
    pub reservation: ReservationId,
    pub user: UserId,
    pub wallet_shard: String,
    pub wallet_epoch: u64,
}

/// A hold the schedule's owner pinned: what to write it as, and under whose epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedRemotely {
    pub reservation: Reservation,
    /// The node that pinned it, holding the schedule's shard at `epoch`.
    pub owner: String,
    pub epoch: u64,
}

/// What the wallet's owner tells the schedule's owner after its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// Committed: the seats are sold.
    Paid,
    /// Nothing was committed, and nothing will be.
    Refused,
    /// The database did not say (a commit that failed in flight): the schedule's owner reads
    /// the outcome later, once no commit of it can still be under way.
    Unknown,
}

/// Credit a refund pinned at the schedule's owner (the asking node, holding the schedule's
/// shard at `schedule_epoch`) to the wallet of its buyer, decided under the wallet shard's
/// `wallet_epoch`: one transaction fenced on both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditAsk {
    /// The reservation as the credit writes it: REFUNDED.
    pub refunded: Reservation,
    pub payment: Option<PaymentId>,
    /// Its tickets as the credit writes them: VOID.
    pub tickets: Vec<Ticket>,
    pub schedule_epoch: u64,
    pub wallet_shard: String,
    pub wallet_epoch: u64,
    /// The idempotency key the schedule's owner claimed: its row goes in the credit's
    /// transaction.
    pub key: Option<KeyElsewhere>,
}

/// How the wallet's owner answered a refund's credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditOutcome {
    /// Committed.
    Credited(RefundReceipt),
    /// Nothing was committed, and nothing will be; `retry`: refused for now (the fence, a
    /// moved shard), not by the refund's rules.
    Refused { retry: bool },
    /// The database did not say whether it committed.
    Unknown,
}

/// The other nodes, as a payment or a refund sees them.
pub trait Peers: Send + Sync {
    /// Asks `schedule`'s owner to pin a hold.
    fn pin(&self, schedule: ScheduleId, ask: PinAsk) -> PeerFuture<'_, PinnedRemotely>;

    /// Tells `schedule`'s owner how the payment of a hold it pinned ended.
    fn settle(
        &self,
        schedule: ScheduleId,
        reservation: ReservationId,
        outcome: PaymentOutcome,
    ) -> PeerFuture<'_, ()>;

    /// The node holding `shard` and its epoch, as this node's last view has them.
    fn holder(&self, shard: ShardId) -> Option<(String, u64)>;

    /// Asks the wallet's owner to credit a refund pinned here.
    fn credit_refund(&self, ask: CreditAsk) -> PeerFuture<'_, CreditOutcome>;

    /// Asks the waiting room's owner to spend a token a payment used.
    fn spend_token(&self, token: TokenId) -> PeerFuture<'_, ()>;

    /// Sends the waiting room's owner the waiters whose polls were answered here; answers
    /// which of them no longer wait, and the owner's snapshot of the line.
    fn queue_sync(&self, touches: Vec<TokenId>) -> PeerFuture<'_, (Vec<TokenId>, LineSnapshot)>;
}
