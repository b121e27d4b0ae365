//! The waiting room: tokens in join order, FIFO admission under a cap and a rate, expiry of
//! active tokens (time to live, or used by a payment) and of waiters that stopped polling, the
//! measured admission rate, and the wait estimate and poll pacing a status poll answers.
//!
//! Layout. A ticket drop puts a million people in this line, so it is laid out by join
//! position, not by token: the line region is a `VecDeque` of 40-byte slots indexed by
//! `position - base`, and two maps send a token id or a user id to a position. Tokens that
//! left the front of the line (ACTIVE or EXPIRED) move to `settled`, a vector kept in position
//! order (they are moved front first) and searched by bisection, so the deque only spans the
//! live part of the line and its front is compacted as admission moves past it.
//!
//! Costs. Every operation is O(log n) or amortised O(1); nothing scans the line. "Waiting
//! ahead" is a prefix sum of a Fenwick tree over positions (one bit per waiter); active and
//! idle expiry come from deadline heaps checked lazily; admission walks from the front and
//! each slot is walked past once. One `advance` does at most [`STEP_BUDGET`] transitions of
//! each kind, so the writer's lock is never held for long even when a crowd leaves at once.
//!
//! Files: `line` is the line and its operations; `token` the token, its states and what a
//! poll answers; `policy` the admission policy, the wait estimate and poll pacing; `slot` the
//! packed 40-byte slot; `loader` the rebuild from stored records; `rate` the measured
//! admission rate; `fenwick` the count of waiters ahead; `superseded` the tokens users
//! replaced, still answered as EXPIRED within a bounded window; `draw` the fair opening's
//! seeded, publicly verifiable order of the pre-queue (API.md §11).
//! replaced, still answered as EXPIRED within a bounded window; `pow` the join's proof of work
//! (challenges, their check, the spent ones).

mod draw;
mod fenwick;
mod line;
mod loader;
mod opening;
mod policy;
pub mod pow;
mod rate;
mod slot;
mod snapshot;
mod superseded;
#[cfg(test)]
mod test_support;
mod token;

pub use draw::{
    draw, draw_tokens, draw_with, verify, Draw, DrawMismatch, DrawSeed, PublicName, PublishedDraw,
    SEED_BYTES,
};
pub use line::WaitingLine;
pub use loader::LineLoader;
pub use opening::{
    ComputedDraw, DrawOutcome, DrawPage, Drawn, DrawnRecord, Opening, OpeningRecord,
    OpeningRefusal, OpeningStatus, OpeningSummary, Participants, PreparedDraw,
};
pub use policy::{AdmissionPolicy, POLL_CEILING, POLL_FLOOR};
pub use rate::RATE_WINDOW;
pub use snapshot::{LineSnapshot, OpeningPhase, MAX_SNAPSHOT_BLOCKS, SNAPSHOT_BLOCK};
pub use superseded::SUPERSEDED_WINDOW;
pub use token::{Joined, TokenRecord, TokenRefusal, TokenState, TokenStatus};

use std::time::Duration;

/// Transitions of each kind (active expiry, idle expiry, admission) one `advance` performs at
/// most; the rest wait for the next call (the next 50 ms tick). Bounds the writer's lock hold
/// (and the size of one persister submission) when tens of thousands become due together.
pub const STEP_BUDGET: usize = 4096;
/// Slots one `advance` walks past at the front while admitting, at most (a walked slot is a
/// few cache misses: 16,384 of them hold the lock for a few milliseconds at worst).
const WALK_BUDGET: usize = 4 * STEP_BUDGET;
/// The rate bucket's depth: this long's worth of admissions (plus one) at most at once.
pub const BURST: Duration = Duration::from_millis(250);
