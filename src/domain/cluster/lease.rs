//! The lease rule of cluster mode, pure: who holds a shard under which epoch, how a takeover
//! moves it, and which writes the lease still admits (the fence).
//!
//! PostgreSQL applies this rule in SQL, where row locks keep a takeover and a fenced commit
//! apart (`store/cluster.rs` takes a lease, `store/postgres_writes.rs` fences a batch); the
//! memory store applies it through [`ShardLease`], under its one lock.

/// One shard's lease as stored: its holder (`None` once released) and the epoch of the last
/// takeover (0 before the first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardLease {
    owner: Option<String>,
    epoch: u64,
}

impl ShardLease {
    /// Who holds the shard, if anyone.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A takeover (the compare-and-set that bumps the epoch): `node` holds the shard under the
    /// next epoch, which no write decided under an earlier one matches. Taking its own shard
    /// again bumps it too: a restarted node's old incarnation must be fenced as well.
    /// Returns the new epoch.
    pub fn take(&mut self, node: &str) -> u64 {
        self.owner = Some(node.to_string());
        self.epoch += 1;
        debug_assert!(self.admits(node, self.epoch), "a takeover admits its taker");
        self.epoch
    }

    /// The fence: whether a write `owner` decided under `epoch` may commit. Only while that
    /// owner still holds the shard at that very epoch; a released lease admits nothing.
    pub fn admits(&self, owner: &str, epoch: u64) -> bool {
        self.owner.as_deref() == Some(owner) && self.epoch == epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_takeover_fences_every_write_decided_under_the_epoch_before() {
        let mut lease = ShardLease::default();
        assert!(!lease.admits("a", 0), "a lease never taken admits nothing");
        assert_eq!(lease.take("a"), 1);
        assert!(lease.admits("a", 1));
        assert!(!lease.admits("b", 1), "only the holder");
        assert_eq!(lease.take("b"), 2);
        assert!(!lease.admits("a", 1), "the ex-owner is fenced");
        assert!(lease.admits("b", 2));
        assert_eq!(
            lease.take("b"),
            3,
            "a restart under the same id bumps it too"
        );
        assert!(!lease.admits("b", 2));
        assert_eq!((lease.owner(), lease.epoch()), (Some("b"), 3));
    }
}
