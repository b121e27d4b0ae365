//! Answering submissions unavailable: the one way a commit that failed reaches its actors
//! (stale past their generation, asked to rebuild). The pipeline and the failure protocol both
//! end here.

use super::{lock, ActorKey, Dependency, Shared, Submission, Unavailable};
use std::sync::atomic::Ordering;

/// Marks every actor of `deps` stale past its generation, and notes it in `actors` (once per
/// actor, at the highest generation it must reach).
pub(super) fn mark_stale(shared: &Shared, deps: &[Dependency], actors: &mut Vec<(ActorKey, u64)>) {
    for &(key, generation) in deps {
        let next = generation + 1;
        shared.any_stale.store(true, Ordering::Release);
        let mut min = shared.stale.entry(key).or_insert(0);
        if *min < next {
            *min = next;
        }
        if let Some(existing) = actors.iter_mut().find(|(k, _)| *k == key) {
            existing.1 = existing.1.max(next);
        } else {
            actors.push((key, next));
        }
    }
}

/// Fails `failed` and everything queued behind it, marks their actors stale, asks them to rebuild.
pub(super) fn fail(shared: &Shared, mut failed: Vec<Submission>) {
    let mut rebuild: Vec<(ActorKey, u64)> = Vec::new();
    {
        let mut pending = lock(shared);
        failed.extend(pending.queue.drain(..));
        for s in &failed {
            mark_stale(shared, &s.deps, &mut rebuild);
        }
        let last = failed.iter().map(|s| s.seq).max().unwrap_or(0);
        shared.resolved_seq.fetch_max(last, Ordering::AcqRel);
    }
    tracing::warn!(
        submissions = failed.len(),
        actors = rebuild.len(),
        "answering unavailable and rebuilding"
    );
    for s in failed {
        if let Some(done) = s.done {
            done(Err(Unavailable::CommitFailed));
        }
    }
    if let Some(hook) = shared.rebuild.get() {
        hook(rebuild);
    }
}
