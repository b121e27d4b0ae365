//! The live state of the service and its only writers: one `QueueActor`, one `ScheduleActor`
//! per schedule, one `WalletActor` per user, the persister that makes their decisions durable,
//! and the [`Engine`] that routes each request to the one actor that owns its state.
//!
//! Every actor decides synchronously inside its message handler (no `.await` on the database
//! there), hands its row writes to the persister, and lets the reply go out only after the
//! commit. Mailboxes are bounded: a full one is a prompt "unavailable", never a growing queue.
//!
//! The files, from the bottom up (each imports only those above it):
//!
//! - [`live_stats`]: the dashboard's counters; [`persister`]: group commit, and the failure
//!   protocol;
//! - [`error`]: the area errors; [`mailbox`]: asking an actor and hearing back;
//! - [`idempotency`]: replayable answers; [`durability`]: an actor's link to the persister
//!   and its named answer paths; [`remote_pins`]: holds pinned for another node's payment;
//! - [`env`](mod@env): what every actor is given; [`loading`]: load, retry and rebuild;
//! - the actors: [`queue`], [`schedule`], [`wallet`]; [`answer`]: what an idempotency key
//!   replays, in domain terms;
//! - [`catalog`]: what exists; [`registry`]: the live actors;
//! - [`engine`]: the operations the HTTP layer calls, on a single node; [`recovery`]: boot;
//! - [`cluster`]: a layer above the engine: cluster mode's membership, the shards this node
//!   holds, and the engine's answers for state held elsewhere (its
//!   [`Elsewhere`](engine::Elsewhere)).

pub mod answer;
pub mod catalog;
pub mod cluster;
pub mod durability;
pub mod engine;
pub mod env;
pub mod error;
pub mod idempotency;
pub mod live_stats;
pub mod loading;
pub mod mailbox;
pub mod persister;
pub mod queue;
pub mod recovery;
pub mod registry;
pub mod remote_pins;
pub mod schedule;
pub mod wallet;

pub use engine::Engine;
pub use env::EngineSettings;
pub use error::{
    ActorError, AdminError, BookingError, PaymentError, QueueError, WaitlistError, WalletError,
};
pub use mailbox::MAILBOX_CAPACITY;
pub use persister::{ActorKey, Persister, Unavailable};
