//! A Fenwick tree over join positions: how many waiters are ahead of a position, in O(log n).

/// Counts of waiters by join position, with O(log n) prefix sums and appends. `u32` cells:
/// 4 bytes per position (counts fit; arithmetic wraps, and the true sums are never negative).
#[derive(Debug)]
pub(super) struct Fenwick {
    /// Position of index 1.
    base: u64,
    /// 1-indexed; `tree[0]` is unused.
    tree: Vec<u32>,
}

impl Fenwick {
    pub(super) fn new(base: u64) -> Fenwick {
        Fenwick {
            base,
            tree: vec![0],
        }
    }

    /// A tree over `base..` with the given bits, in O(n).
    pub(super) fn build(base: u64, bits: impl Iterator<Item = bool>) -> Fenwick {
        let mut tree = vec![0u32];
        tree.extend(bits.map(u32::from));
        let n = tree.len();
        for i in 1..n {
            let parent = i + (i & i.wrapping_neg());
            if parent < n {
                tree[parent] = tree[parent].wrapping_add(tree[i]);
            }
        }
        Fenwick { base, tree }
    }

    /// The position of index 1: positions before it count as nobody.
    pub(super) fn base(&self) -> u64 {
        self.base
    }

    /// Cells the tree holds (`tree[0]` included): its memory, 4 bytes each.
    #[cfg(test)]
    pub(super) fn cells(&self) -> usize {
        self.tree.len()
    }

    fn index(&self, position: u64) -> Option<usize> {
        usize::try_from(position.checked_sub(self.base)?)
            .ok()
            .map(|i| i + 1)
    }

    pub(super) fn add(&mut self, position: u64, delta: i32) {
        let Some(i) = self.index(position) else {
            return;
        };
        while self.tree.len() <= i {
            self.push();
        }
        let delta = delta as u32;
        let mut j = i;
        while j < self.tree.len() {
            self.tree[j] = self.tree[j].wrapping_add(delta);
            j += j & j.wrapping_neg();
        }
    }

    /// Appends a zero slot; its node covers the range below it, summed from existing nodes.
    fn push(&mut self) {
        let i = self.tree.len();
        let low = i & i.wrapping_neg();
        let covered = self.prefix(i - 1).wrapping_sub(self.prefix(i - low));
        self.tree.push(covered);
    }

    fn prefix(&self, mut i: usize) -> u32 {
        let mut sum = 0u32;
        while i > 0 {
            sum = sum.wrapping_add(self.tree[i]);
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// How many set positions lie strictly before `position`.
    pub(super) fn count_before(&self, position: u64) -> u64 {
        let i = match self.index(position) {
            Some(i) => (i - 1).min(self.tree.len() - 1),
            None => 0,
        };
        u64::from(self.prefix(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The set positions of `bits` (index 0 is `base`) strictly before `position`.
    fn naive_count_before(base: u64, bits: &[bool], position: u64) -> u64 {
        let before = position.saturating_sub(base).min(bits.len() as u64) as usize;
        bits[..before].iter().filter(|b| **b).count() as u64
    }

    #[test]
    fn positions_before_the_base_count_as_nobody() {
        let mut tree = Fenwick::build(10, [true, true].into_iter());
        tree.add(5, 1);
        assert_eq!(tree.count_before(9), 0);
        assert_eq!(tree.count_before(10), 0);
        assert_eq!(tree.count_before(11), 1);
        assert_eq!(tree.count_before(12), 2);
        assert_eq!(tree.count_before(1_000), 2);
    }

    proptest! {
        /// Sets and clears in any order, on a tree built from bits or grown from nothing: every
        /// prefix sum is the count a plain vector of flags gives.
        #[test]
        fn prefix_sums_match_a_vector_of_flags(
            base in 1..1_000u64,
            initial in prop::collection::vec(any::<bool>(), 0..100),
            flips in prop::collection::vec(0..150usize, 0..200),
            built in any::<bool>(),
        ) {
            let (mut bits, mut tree) = if built {
                let tree = Fenwick::build(base, initial.iter().copied());
                (initial, tree)
            } else {
                (Vec::new(), Fenwick::new(base))
            };
            for i in flips {
                if bits.len() <= i {
                    bits.resize(i + 1, false);
                }
                let position = base + i as u64;
                tree.add(position, if bits[i] { -1 } else { 1 });
                bits[i] = !bits[i];
                for p in base.saturating_sub(2)..=base + bits.len() as u64 + 2 {
                    prop_assert_eq!(tree.count_before(p), naive_count_before(base, &bits, p));
                }
            }
            for p in base.saturating_sub(2)..=base + bits.len() as u64 + 2 {
                prop_assert_eq!(tree.count_before(p), naive_count_before(base, &bits, p));
            }
        }
    }
}
