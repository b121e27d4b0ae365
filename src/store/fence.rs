//! The ownership claims a batch is committed under in cluster mode ([`Fence`]), and the one
//! check both fencing stores make of them.

use super::StoreError;

/// An ownership claim a batch's writes were decided under: `shard` held at `epoch` (cluster
/// mode). A fenced commit writes only if every claim still holds, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence {
    pub shard: String,
    pub epoch: u64,
    /// Who holds it: `None` for the committing node itself; another node's id for a claim on
    /// a shard that node decided for (a payment commits its schedule's side at the wallet's
    /// owner, under the schedule owner's epoch).
    pub owner: Option<String>,
}

impl Fence {
    /// A claim on a shard the committing node holds itself.
    pub fn own(shard: impl Into<String>, epoch: u64) -> Fence {
        Fence {
            shard: shard.into(),
            epoch,
            owner: None,
        }
    }

    /// The node this claim says holds the shard, `node` being the committing one.
    pub fn owner_or<'a>(&'a self, node: &'a str) -> &'a str {
        self.owner.as_deref().unwrap_or(node)
    }
}

/// `Ok` when every claim of `fences` holds by `holds`, else [`StoreError::Fenced`] with the
/// claims that do not (nothing of the batch may then be written).
pub(super) fn check(fences: &[Fence], holds: impl Fn(&Fence) -> bool) -> Result<(), StoreError> {
    let stale: Vec<Fence> = fences.iter().filter(|f| !holds(f)).cloned().collect();
    if stale.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Fenced(stale))
    }
}
