//! Where each shard should live: rendezvous (highest-random-weight) hashing over the live
//! nodes, with a bound on load.
//!
//! Every node computes the same placement from the same set of live nodes and shards, with no
//! coordination: the answer depends only on names. Rendezvous hashing moves only the shards
//! whose top-scoring node joined or left (about `1/n` of them), and needs no ring or virtual
//! nodes (it is the ~20 lines the crates wrap). Plain rendezvous can still give one node three
//! hot schedules of three, so placement is **bounded**: each kind of shard (the queue, the
//! schedules, the wallet buckets) is balanced on its own, and no node takes more than
//! `ceil(LOAD_BOUND × shards of that kind ÷ nodes)` of a kind: a shard whose best node is full
//! goes to its next best (Mirrokni, Thorup and Zadimoghaddam, "Consistent hashing with bounded
//! loads", 2018).
//!
//! Placement is advice. Ownership is the lease: a node takes a shard only by a compare-and-set
//! in PostgreSQL, so two nodes that briefly disagree about the live set cannot both own it.

use super::ShardId;
use std::collections::BTreeMap;

/// How far above an even share one node's load of one kind may go (`c` in the paper): 1.25
/// keeps every node within 25 % of its share and still moves few shards on a join.
pub const LOAD_BOUND: f64 = 1.25;

/// The chosen node of each shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    owners: BTreeMap<ShardId, String>,
}

impl Placement {
    /// The node a shard should live on; `None` only when there were no nodes.
    pub fn owner(&self, shard: ShardId) -> Option<&str> {
        self.owners.get(&shard).map(String::as_str)
    }

    /// The shards placed on one node, in order.
    pub fn shards_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = ShardId> + 'a {
        self.owners
            .iter()
            .filter(move |(_, owner)| owner.as_str() == node)
            .map(|(shard, _)| *shard)
    }

    /// Every (shard, node), in shard order.
    pub fn iter(&self) -> impl Iterator<Item = (ShardId, &str)> {
        self.owners.iter().map(|(s, n)| (*s, n.as_str()))
    }
}

/// Places `shards` on `nodes` (node ids; duplicates are ignored). Deterministic: the same sets
/// give the same placement on every node, whatever their order.
pub fn place(shards: &[ShardId], nodes: &[&str]) -> Placement {
    let mut nodes: Vec<&str> = nodes.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let mut placement = Placement::default();
    if nodes.is_empty() {
        return placement;
    }
    let mut shards: Vec<ShardId> = shards.to_vec();
    shards.sort_unstable();
    shards.dedup();
    for kind in ["queue", "schedule", "wallets"] {
        let group: Vec<ShardId> = shards
            .iter()
            .copied()
            .filter(|s| s.kind() == kind)
            .collect();
        place_group(&group, &nodes, &mut placement);
    }
    placement
}

/// One kind's shards, bounded-load. Shards are placed in the order of their own hash, so that
/// which shard meets a full node first does not depend on how ids were handed out.
fn place_group(group: &[ShardId], nodes: &[&str], placement: &mut Placement) {
    if group.is_empty() {
        return;
    }
    let capacity = capacity(group.len(), nodes.len());
    let mut load = vec![0usize; nodes.len()];
    let mut order: Vec<(u64, ShardId, String)> = group
        .iter()
        .map(|s| {
            let text = s.to_string();
            (hash(text.as_bytes(), b""), *s, text)
        })
        .collect();
    order.sort_unstable();
    for (_, shard, text) in order {
        let mut ranked: Vec<(u64, usize)> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (score(&text, node), i))
            .collect();
        // Highest score first; equal scores (practically never) by node order.
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let chosen = ranked
            .iter()
            .map(|&(_, i)| i)
            .find(|&i| load[i] < capacity)
            // capacity × nodes ≥ shards, so some node always has room.
            .expect("the bound leaves room for every shard");
        load[chosen] += 1;
        placement.owners.insert(shard, nodes[chosen].to_string());
    }
}

/// How many shards of one kind a node may take: the even share rounded up, plus the slack
/// `LOAD_BOUND` allows rounded down. Rounding the whole `c × share` up instead would let one of
/// three nodes take two of three hot schedules. Always ≥ 1, and capacity × nodes ≥ shards.
pub fn capacity(shards: usize, nodes: usize) -> usize {
    let nodes = nodes.max(1);
    let share = shards.div_ceil(nodes);
    let slack = ((LOAD_BOUND - 1.0) * shards as f64 / nodes as f64).floor() as usize;
    (share + slack).max(1)
}

/// The rendezvous score of a (shard, node) pair.
fn score(shard: &str, node: &str) -> u64 {
    hash(shard.as_bytes(), node.as_bytes())
}

/// FNV-1a over `a`, a separator and `b`, then the SplitMix64 finaliser for avalanche. Fixed
/// and written out here, not `std`'s hasher, because every node of a cluster (and the next
/// release, in a rolling upgrade) must compute the same scores.
fn hash(a: &[u8], b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.iter().chain(&[0xff]).chain(b) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ScheduleId;
    use proptest::prelude::*;

    fn schedules(n: i64) -> Vec<ShardId> {
        (1..=n)
            .map(|i| ShardId::Schedule(ScheduleId::new(i).expect("positive")))
            .collect()
    }

    fn all_shards(schedules_n: i64) -> Vec<ShardId> {
        let mut shards = schedules(schedules_n);
        shards.push(ShardId::Queue);
        shards.extend(ShardId::wallet_buckets());
        shards
    }

    fn node_names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node-{i}")).collect()
    }

    fn refs(names: &[String]) -> Vec<&str> {
        names.iter().map(String::as_str).collect()
    }

    /// Fixed scores: a change to the hash would move shards between two releases of a rolling
    /// upgrade, so it must be a deliberate change to this test too.
    #[test]
    fn scores_are_stable_across_releases() {
        assert_eq!(score("schedule:1", "node-1"), 0x7549_b760_8055_b679);
        assert_eq!(score("queue", "node-2"), 0x9151_01c1_3c7c_47dd);
    }

    #[test]
    fn three_hot_schedules_on_three_nodes_go_one_each() {
        let names = node_names(3);
        let placement = place(&schedules(3), &refs(&names));
        for name in &names {
            assert_eq!(placement.shards_of(name).count(), 1, "{placement:?}");
        }
    }

    #[test]
    fn no_nodes_places_nothing_and_one_node_takes_everything() {
        assert_eq!(place(&all_shards(5), &[]).iter().count(), 0);
        let placement = place(&all_shards(5), &["solo"]);
        assert_eq!(placement.shards_of("solo").count(), 5 + 1 + 64);
    }

    proptest! {
        /// Every shard placed exactly once, on a live node, and no node above the bound for
        /// any kind.
        #[test]
        fn placement_is_total_and_bounded(schedules_n in 0i64..40, nodes_n in 1usize..12) {
            let names = node_names(nodes_n);
            let shards = all_shards(schedules_n);
            let placement = place(&shards, &refs(&names));
            prop_assert_eq!(placement.iter().count(), shards.len());
            for kind in ["queue", "schedule", "wallets"] {
                let of_kind = shards.iter().filter(|s| s.kind() == kind).count();
                if of_kind == 0 { continue; }
                let cap = capacity(of_kind, nodes_n);
                prop_assert!(cap as f64 <= (LOAD_BOUND * of_kind as f64 / nodes_n as f64).ceil().max(1.0));
                for name in &names {
                    let load = placement.shards_of(name).filter(|s| s.kind() == kind).count();
                    prop_assert!(load <= cap, "{name} has {load} {kind} shards, bound {cap}");
                }
            }
        }

        /// The same sets in any order give the same placement.
        #[test]
        fn placement_is_deterministic(schedules_n in 0i64..30, nodes_n in 1usize..8, seed in any::<u64>()) {
            let names = node_names(nodes_n);
            let mut shuffled = refs(&names);
            let mut shards = all_shards(schedules_n);
            // A cheap deterministic shuffle from the seed.
            let k = (seed as usize) % shuffled.len().max(1);
            shuffled.rotate_left(k);
            shards.reverse();
            prop_assert_eq!(place(&all_shards(schedules_n), &refs(&names)), place(&shards, &shuffled));
        }

        /// A node joining takes about its share, and the bound moves few others: at most
        /// twice the fair share moves in all.
        #[test]
        fn a_join_moves_little(schedules_n in 0i64..40, nodes_n in 1usize..10) {
            let before_names = node_names(nodes_n);
            let after_names = node_names(nodes_n + 1);
            let shards = all_shards(schedules_n);
            let before = place(&shards, &refs(&before_names));
            let after = place(&shards, &refs(&after_names));
            let moved = shards.iter().filter(|s| before.owner(**s) != after.owner(**s)).count();
            let fair = shards.len().div_ceil(nodes_n + 1);
            prop_assert!(moved <= 2 * fair + 2, "{moved} of {} moved, fair share {fair}", shards.len());
        }

        /// A node leaving moves its own shards, and the bound moves few others.
        #[test]
        fn a_leave_moves_little(schedules_n in 0i64..40, nodes_n in 2usize..10, leaving in 0usize..10) {
            let names = node_names(nodes_n);
            let leaving = &names[leaving % nodes_n];
            let remaining: Vec<&str> = refs(&names).into_iter().filter(|n| n != leaving).collect();
            let shards = all_shards(schedules_n);
            let before = place(&shards, &refs(&names));
            let after = place(&shards, &remaining);
            let own = before.shards_of(leaving).count();
            let moved = shards.iter().filter(|s| before.owner(**s) != after.owner(**s)).count();
            prop_assert!(moved >= own);
            let fair = shards.len().div_ceil(nodes_n);
            prop_assert!(moved <= own + fair + 2, "{moved} moved, {own} were the leaver's");
        }
    }
}
