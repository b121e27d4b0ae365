//! The pure rules of cluster mode: what a shard is, and which live node should own each one.
//!
//! Who *does* own a shard is not decided here: that is a lease row in PostgreSQL, taken by a
//! compare-and-set that bumps its epoch (`store/cluster.rs`). Placement only says where a
//! shard should go when it is free, so that every node computes the same answer from the same
//! list of live nodes, with no messages between them.

pub mod lease;
pub mod placement;
pub mod shard;

pub use lease::ShardLease;
pub use placement::{place, Placement, LOAD_BOUND};
pub use shard::{ShardError, ShardId, WALLET_BUCKETS};
