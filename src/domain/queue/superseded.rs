//! Tokens their users replaced by joining again: remembered, within a bounded window, so a
//! replaced token still answers EXPIRED (API.md: "the token existed but has expired"), and
//! answers it the same way after a restart as before it.
//!
//! The bound is a window of join positions, not a clock: a replaced token is kept while the
//! join that replaced it is among the last [`SUPERSEDED_WINDOW`] joins. Every join takes one
//! position and replaces at most one token, so at most that many are kept (about 5 MB), and a
//! restart finds exactly the same set with one index range scan over that many rows (see the
//! stores' `load_superseded_tokens`), whatever the size of the table.

use super::TokenRecord;
use crate::domain::ids::IdMap;
use crate::domain::TokenId;
use std::collections::VecDeque;

/// Replaced tokens are remembered while their replacement is among the last this many joins.
pub const SUPERSEDED_WINDOW: u64 = 65_536;

/// The replaced tokens of the window, by id, and the order they leave it in.
#[derive(Debug, Default)]
pub(super) struct SupersededTokens {
    by_id: IdMap<TokenId, TokenRecord>,
    /// (position of the replacing token, replaced id), ascending: the front leaves first.
    order: VecDeque<(u64, TokenId)>,
}

impl SupersededTokens {
    /// Remembers `record`, replaced by the token at position `by`. Calls come in ascending
    /// `by` order (joins are numbered in order, and the stores stream them so).
    pub(super) fn insert(&mut self, record: TokenRecord, by: u64) {
        debug_assert!(self.order.back().is_none_or(|(last, _)| *last < by));
        if self.by_id.insert(record.id, record).is_none() {
            self.order.push_back((by, record.id));
        }
    }

    /// Forgets every token replaced before the window that ends just below `next_position`.
    pub(super) fn slide(&mut self, next_position: u64) {
        let first_kept = next_position.saturating_sub(SUPERSEDED_WINDOW);
        while let Some(&(by, id)) = self.order.front() {
            if by >= first_kept {
                break;
            }
            self.order.pop_front();
            self.by_id.remove(&id);
        }
    }

    pub(super) fn get(&self, id: TokenId) -> Option<&TokenRecord> {
        self.by_id.get(&id)
    }

    pub(super) fn contains(&self, id: TokenId) -> bool {
        self.by_id.contains_key(&id)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}
