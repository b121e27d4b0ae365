//! Cluster mode's share of the persister: the shards this node holds and the epoch it took
//! each under, the epoch packed into every actor's generation, the claims each batch is fenced
//! on, and what happens when the fence refuses one. A single node never installs any of it:
//! [`FenceState`] exists only once [`Persister::fence_with`] has run, and every branch here is
//! behind it.

use super::batch::{record, Batch};
use super::failure::{refuse_alone, requeue_behind, Retry};
use super::pipeline::{Back, Front};
use super::{ActorKey, Persister, RebuildHook, Shared, Submission, Unavailable};
use crate::store::Fence;
use dashmap::DashMap;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

/// How a cluster node fences its batches: its id, and the shard each actor's state lives in.
pub struct Fencing {
    pub node: String,
    pub shard_of: Box<dyn Fn(ActorKey) -> String + Send + Sync>,
}

/// In cluster mode an actor's generation carries the epoch of the shard lease it was loaded
/// under in its high bits, and rebuilds count in the low bits: so a dependency names the
/// epoch its decision was made under (what the fence checks), and a state loaded under a
/// newer epoch is always a newer generation than any before it.
pub const EPOCH_SHIFT: u32 = 32;

/// The first generation of an actor loaded under shard epoch `epoch`.
pub fn generation_under(epoch: u64) -> u64 {
    epoch << EPOCH_SHIFT
}

/// The shard epoch a generation was loaded under (0 outside cluster mode).
pub fn epoch_of(generation: u64) -> u64 {
    generation >> EPOCH_SHIFT
}

/// Actors, each with the generation it must reach.
type Actors = Vec<(ActorKey, u64)>;

/// The claims of one batch being formed: each once, and the actors already claimed for.
#[derive(Default)]
pub(super) struct Claims {
    pub(super) fences: Vec<Fence>,
    seen: std::collections::HashSet<(ActorKey, u64)>,
}

/// What fencing adds to the persister's state, built by [`Persister::fence_with`] alone.
pub(super) struct FenceState {
    fencing: Fencing,
    /// The shards this node holds, at the epoch it took each one under. An actor of a shard
    /// not in here, or of an older epoch, is stale: its writes are refused before they are
    /// queued, and the database's fence refuses any that get further.
    held: DashMap<String, u64>,
}

impl FenceState {
    fn shard_of(&self, key: ActorKey) -> String {
        (self.fencing.shard_of)(key)
    }

    /// This node's id, which the fenced commit audits its writes under.
    pub(super) fn node(&self) -> &str {
        &self.fencing.node
    }

    /// Whether state of `key` loaded at `generation` was loaded under an epoch this node does
    /// not hold now (never took, lost, or retook since).
    pub(super) fn is_stale(&self, key: ActorKey, generation: u64) -> bool {
        self.held.get(&self.shard_of(key)).map(|e| *e) != Some(epoch_of(generation))
    }

    /// The first generation of the epoch this node holds `key`'s shard at (0 if it does not).
    pub(super) fn min_generation(&self, key: ActorKey) -> u64 {
        let epoch = self.held.get(&self.shard_of(key)).map_or(0, |e| *e);
        generation_under(epoch)
    }

    /// Adds the claims `submission` was decided under to `claims`, once each: the epoch of
    /// each dependency's shard (in its generation) and the claims on other nodes' shards.
    pub(super) fn claim(&self, submission: &Submission, claims: &mut Claims) {
        for &(key, generation) in &submission.deps {
            let epoch = epoch_of(generation);
            // A batch's submissions mostly share a few actors: naming the shard (a string
            // built by the cluster) and comparing claims is done once per actor and epoch,
            // not once per submission.
            if epoch == 0 || !claims.seen.insert((key, epoch)) {
                continue;
            }
            let fence = Fence::own(self.shard_of(key), epoch);
            if !claims.fences.contains(&fence) {
                claims.fences.push(fence);
            }
        }
        for fence in &submission.remote {
            if !claims.fences.contains(fence) {
                claims.fences.push(fence.clone());
            }
        }
    }

    /// Whether every write of `batch` carries, among the batch's fences, the epoch it was
    /// decided under (for the persister's assertions).
    pub(super) fn carries_its_epochs(&self, batch: &Batch) -> bool {
        batch.submissions.iter().all(|s| {
            let own = s.deps.iter().all(|&(key, generation)| {
                let epoch = epoch_of(generation);
                epoch == 0
                    || batch
                        .fences
                        .contains(&Fence::own(self.shard_of(key), epoch))
            });
            own && s.remote.iter().all(|f| batch.fences.contains(f))
        })
    }

    /// Whether `submission` was decided under one of the `stale` claims.
    fn decided_under(&self, submission: &Submission, stale: &[Fence]) -> bool {
        submission.deps.iter().any(|&(key, generation)| {
            stale.contains(&Fence::own(self.shard_of(key), epoch_of(generation)))
        }) || submission.remote.iter().any(|f| stale.contains(f))
    }

    /// Splits `actors` into those of shards gone to another node and those still held here.
    pub(super) fn split_gone(&self, actors: Actors) -> (Actors, Actors) {
        actors
            .into_iter()
            .partition(|(key, _)| !self.held.contains_key(&self.shard_of(*key)))
    }
}

impl Persister {
    /// Installs what to call with the actors of submissions the fence refused: their shard
    /// belongs to another node now, so they are dropped, not rebuilt (set once, at startup).
    /// Without it they go to the rebuild hook.
    pub fn on_fenced(&self, hook: RebuildHook) {
        // A second install would be a startup bug; the first hook stays.
        let _ = self.shared.fenced.set(hook);
    }

    /// Fences every batch from now on (cluster mode; set once, at startup, before any write):
    /// each dependency's shard must still be held at the epoch in its generation when the
    /// batch commits. Dependencies of generation below [`generation_under`]`(1)` carry no
    /// claim.
    pub fn fence_with(&self, fencing: Fencing) {
        // A second install would be a startup bug; the first stays.
        let _ = self.shared.fence.set(FenceState {
            fencing,
            held: DashMap::new(),
        });
    }

    /// Cluster mode: this node now holds `shard` at `epoch` (its lease was just taken). Actors
    /// of the shard must be at [`generation_under`]`(epoch)` or above to write.
    pub fn hold_shard(&self, shard: &str, epoch: u64) {
        // Membership takes leases only after startup fenced the persister; a shard held
        // without the fence would check nothing.
        debug_assert!(
            self.shared.fence.get().is_some(),
            "a shard is held only in cluster mode, after fence_with"
        );
        if let Some(fence) = self.shared.fence.get() {
            fence.held.insert(shard.to_string(), epoch);
        }
    }

    /// Cluster mode: this node no longer holds `shard` (released, or found taken over), unless
    /// it was retaken under a newer epoch meanwhile.
    pub fn lose_shard(&self, shard: &str, epoch: u64) {
        if let Some(fence) = self.shared.fence.get() {
            fence.held.remove_if(shard, |_, held| *held <= epoch);
        }
    }

    /// Cluster mode: every shard this node holds, with its epoch.
    pub fn held_shards(&self) -> Vec<(String, u64)> {
        self.shared.fence.get().map_or_else(Vec::new, |fence| {
            fence
                .held
                .iter()
                .map(|e| (e.key().clone(), *e.value()))
                .collect()
        })
    }

    /// Whether an actor of `key` may write at all: always outside cluster mode, and in it
    /// only while this node holds the actor's shard.
    pub fn may_write(&self, key: ActorKey) -> bool {
        match self.shared.fence.get() {
            Some(fence) => fence.held.contains_key(&fence.shard_of(key)),
            None => true,
        }
    }

    /// Cluster mode: this node's id (`None` outside cluster mode).
    pub fn node_id(&self) -> Option<String> {
        self.shared.fence.get().map(|f| f.node().to_string())
    }

    /// Cluster mode: the epoch this node holds `shard` at, if it does.
    pub fn held_epoch(&self, shard: &str) -> Option<u64> {
        let fence = self.shared.fence.get()?;
        fence.held.get(shard).map(|e| *e)
    }
}

/// The fence refused the front: the submissions decided under a claim that no longer holds
/// are refused and their actors handed to the fenced hook (dropped: another node owns them
/// now); the rest go back as a batch of their own, ahead of anything newer.
pub(super) async fn fence_out(
    shared: &Shared,
    failed: Front,
    back: Option<Back>,
    stale: &[Fence],
    retry: &mut VecDeque<Retry>,
) {
    record(shared, &failed.batch);
    drop(failed.state);
    requeue_behind(back, retry).await;
    let fence = shared
        .fence
        .get()
        .expect("only a fenced batch is refused by the fence, and only with fencing installed");
    // The database says these are not ours at these epochs any more: refuse at once whatever
    // else is built on them, until the shard is taken again (under a newer epoch).
    // (Another node's claim going stale says nothing about what this node holds.)
    for claim in stale.iter().filter(|f| f.owner.is_none()) {
        fence
            .held
            .remove_if(&claim.shard, |_, held| *held <= claim.epoch);
    }
    let (refused, kept): (Vec<Submission>, Vec<Submission>) = failed
        .batch
        .submissions
        .into_iter()
        .partition(|s| fence.decided_under(s, stale));
    shared
        .stats
        .fence_refusals
        .fetch_add(refused.len() as u64, Ordering::Relaxed);
    metrics::counter!("boxoffice_fence_refusals_total").increment(refused.len() as u64);
    let last_seq = failed.batch.last_seq;
    if kept.is_empty() {
        refuse_alone(shared, refused, Unavailable::Fenced, true);
        shared.resolved_seq.fetch_max(last_seq, Ordering::AcqRel);
    } else {
        // Answered before the rest commits: nothing the rest holds can depend on them (a
        // dependency on the same actor would carry the same stale claim).
        refuse_alone(shared, refused, Unavailable::Fenced, true);
        retry.push_front(Retry {
            submissions: kept,
            last_seq,
        });
    }
}

#[cfg(test)]
mod tests;
