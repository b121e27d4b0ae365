//! What the waiting room's owner publishes each second for the other nodes of a cluster, so
//! that they answer most polls themselves: the admission frontier, the waiters in each block
//! of positions behind it, and the admission rate. A node answers a waiter's place from it to
//! within one block; a token in the first block past the frontier (about to be admitted, or
//! just admitted) asks the owner, and so does anything the snapshot cannot place. Admission
//! itself never looks at a snapshot: it stays at the owner, strictly FIFO.

use super::policy::estimated_wait;
use super::{AdmissionPolicy, TokenRecord, TokenState, TokenStatus};
use crate::domain::Timestamp;
use serde::{Deserialize, Serialize};

/// Positions per block at least: the first block past the frontier asks the owner.
pub const SNAPSHOT_BLOCK: u64 = 64;

/// Blocks at most; a longer line gets wider blocks (a 1M-waiter line: blocks of 245).
pub const MAX_SNAPSHOT_BLOCKS: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineSnapshot {
    pub taken_at_ms: i64,
    /// Every position before this is no longer WAITING (admitted or gone).
    pub frontier: u64,
    /// The next position a join would get: the snapshot covers `[frontier, end)`.
    pub end: u64,
    /// Positions per block.
    pub block: u64,
    /// WAITING tokens in each block, the first starting at `frontier`.
    pub waiting: Vec<u32>,
    /// The admission rate a wait estimate uses, if one is known.
    pub rate: Option<f64>,
    /// Where a fair opening is, when one is under way: what a poll adds to its answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening: Option<OpeningPhase>,
}

/// What a waiter's poll adds while a fair opening is under way (API.md §11), as the owner's
/// line has it; a node answering polls from the snapshot adds the same. From `opensAt` until
/// the snapshot of the drawn line, that node sends every poll to the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "phase")]
pub enum OpeningPhase {
    /// Scheduled, not drawn: when it is drawn, and how many have arrived.
    Prequeue { opens_at_ms: i64, arrivals: u64 },
    /// Drawn and committed: place k of the draw holds position `first_position + k - 1`.
    Drawn {
        first_position: u64,
        participants: u64,
    },
}

impl OpeningPhase {
    /// The place in the draw of a waiter at `position`, if the draw placed it.
    pub fn drawn_place(&self, position: u64) -> Option<u64> {
        match *self {
            OpeningPhase::Drawn {
                first_position,
                participants,
            } => position
                .checked_sub(first_position)
                .filter(|&k| k < participants)
                .map(|k| k + 1),
            OpeningPhase::Prequeue { .. } => None,
        }
    }
}

impl LineSnapshot {
    /// The block width for a line of `span` positions.
    pub fn block_for(span: u64) -> u64 {
        SNAPSHOT_BLOCK.max(span.div_ceil(MAX_SNAPSHOT_BLOCKS))
    }

    /// WAITING tokens ahead of `position`, to within one block: every waiter of the blocks
    /// before its own, and its own block's waiters in proportion to its offset in it. `None`
    /// when the owner must answer: the first block past the frontier (about to move), before
    /// the frontier (no longer waiting), or past what the snapshot covers (joined since).
    pub fn ahead_of(&self, position: u64) -> Option<u64> {
        if self.block == 0 || position < self.frontier.saturating_add(self.block) {
            return None;
        }
        if position >= self.end {
            return None;
        }
        let offset = position - self.frontier;
        let index = usize::try_from(offset / self.block).ok()?;
        let own = u64::from(*self.waiting.get(index)?);
        let before: u64 = self.waiting[..index].iter().map(|&w| u64::from(w)).sum();
        Some(before + own * (offset % self.block) / self.block)
    }

    /// What a poll of `record` (a waiter, as stored) answers from this snapshot at `now`,
    /// with its idle deadline at `idle_deadline`; `None` when the owner must answer.
    pub fn status_of(
        &self,
        record: TokenRecord,
        idle_deadline: Timestamp,
        policy: &AdmissionPolicy,
        now: Timestamp,
    ) -> Option<TokenStatus> {
        if record.state != TokenState::Waiting || now >= idle_deadline {
            return None;
        }
        // Drawn since (or about to be): the owner knows the waiter's drawn place.
        if let Some(OpeningPhase::Prequeue { opens_at_ms, .. }) = self.opening {
            if now.millis() >= opens_at_ms {
                return None;
            }
        }

        let ahead = self.ahead_of(record.position)?;
        let rate = policy.estimate_rate(self.rate);
        let estimated_wait = estimated_wait(record.state, ahead, || rate);
        Some(TokenStatus {
            record,
            ahead,
            expires_at: idle_deadline,
            estimated_wait,
            poll_after: policy.poll_after(record.state, ahead, estimated_wait),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{created, ids, policy, t, user};
    use super::super::WaitingLine;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_block_and_anything_uncovered_ask_the_owner() {
        let snapshot = LineSnapshot {
            taken_at_ms: 0,
            frontier: 100,
            end: 400,
            block: 64,
            waiting: vec![64, 64, 64, 64, 44],
            rate: None,
            opening: None,
        };
        assert_eq!(snapshot.ahead_of(99), None, "before the frontier");
        assert_eq!(snapshot.ahead_of(163), None, "the first block");
        assert_eq!(snapshot.ahead_of(164), Some(64));
        assert_eq!(snapshot.ahead_of(196), Some(96));
        assert_eq!(snapshot.ahead_of(399), Some(256 + 44 * 43 / 64));
        assert_eq!(snapshot.ahead_of(400), None, "joined since");
    }

    #[test]
    fn blocks_widen_so_a_snapshot_stays_small() {
        assert_eq!(LineSnapshot::block_for(10), SNAPSHOT_BLOCK);
        assert_eq!(LineSnapshot::block_for(1_000_000), 245);
        assert!(1_000_000u64.div_ceil(LineSnapshot::block_for(1_000_000)) <= MAX_SNAPSHOT_BLOCKS);
    }

    proptest! {
        /// Against the owner's exact count, over lines with gaps (admitted and abandoned
        /// waiters): every place the snapshot answers is within one block of the truth.
        #[test]
        fn a_place_from_the_snapshot_is_within_one_block(
            joins in 1usize..2_000,
            admitted in 0usize..300,
            gaps in proptest::collection::vec(any::<bool>(), 0..2_000),
        ) {
            let mut line = WaitingLine::new(policy(admitted), 1);
            let mut next = ids();
            let mut tokens = Vec::new();
            for n in 0..joins {
                tokens.push(created(line.join(user(n as i64 + 1), &mut next, t(0))));
            }
            line.advance(t(1));
            // Some waiters stop polling and are swept; the rest poll on.
            for (token, gap) in tokens.iter().zip(&gaps) {
                if !*gap {
                    line.touch(token.id, t(60_000));
                }
            }
            line.advance(t(125_000));
            let snapshot = line.snapshot(t(125_000));
            for token in &tokens {
                let status = line.status(token.id, t(125_000)).expect("known");
                if status.record.state != TokenState::Waiting {
                    continue; // Only waiters are placed; the caller checks the state.
                }
                let answered = snapshot.ahead_of(token.position);
                // Past the first block, a waiter is placed from the snapshot: a snapshot that
                // answered nothing would otherwise pass this property.
                if token.position >= snapshot.frontier + snapshot.block {
                    prop_assert!(answered.is_some(), "position {} not placed", token.position);
                }
                let Some(approx) = answered else { continue };
                let exact = status.ahead;
                prop_assert!(approx.abs_diff(exact) <= snapshot.block, "{approx} vs {exact}");
            }
        }
    }
}
