//! The servers a run spreads its users over (`--base-url A,B,…`): one resolved target and
//! one connection pool per node, and the round robin that gives each user its node.

use crate::wire::{Pool, Target};
use std::time::Duration;

/// Every node of the run, in the order given.
pub struct Nodes {
    nodes: Vec<(Target, Pool)>,
}

impl Nodes {
    /// Resolves every base URL; the first that does not resolve is the error.
    pub async fn resolve(bases: &[String], timeout: Duration) -> Result<Nodes, String> {
        if bases.is_empty() {
            return Err("no base URL to send the drop to".into());
        }
        let mut nodes = Vec::with_capacity(bases.len());
        for base in bases {
            nodes.push((Target::resolve(base, timeout).await?, Pool::new()));
        }
        Ok(Nodes { nodes })
    }

    /// The node of the `index`th user to start (its target and pool): round robin.
    pub fn for_user(&self, index: usize) -> (&Target, &Pool) {
        let (target, pool) = &self.nodes[round_robin(index, self.nodes.len())];
        (target, pool)
    }
}

/// Which of `count` nodes the `index`th user goes to: users spread evenly, in turn. One node
/// (or, defensively, none) is always node 0.
pub fn round_robin(index: usize, count: usize) -> usize {
    index % count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_take_the_nodes_in_turn_and_evenly() {
        let picked: Vec<usize> = (0..7).map(|i| round_robin(i, 3)).collect();
        assert_eq!(picked, [0, 1, 2, 0, 1, 2, 0]);
        let mut per_node = [0usize; 4];
        for i in 0..1_001 {
            per_node[round_robin(i, 4)] += 1;
        }
        assert!(
            per_node.iter().all(|n| (250..=251).contains(n)),
            "{per_node:?}"
        );
    }

    #[test]
    fn one_node_takes_everyone() {
        assert!((0..100).all(|i| round_robin(i, 1) == 0));
        assert_eq!(round_robin(5, 0), 0);
    }

    #[tokio::test]
    async fn every_base_url_must_resolve() {
        let bases = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let two = Nodes::resolve(
            &bases(&["http://127.0.0.1:9", "http://127.0.0.1:10"]),
            Duration::from_secs(1),
        )
        .await
        .expect("literal addresses resolve");
        assert_eq!(two.nodes.len(), 2);
        let bad = Nodes::resolve(
            &bases(&["http://127.0.0.1:9", "https://127.0.0.1:10"]),
            Duration::from_secs(1),
        )
        .await;
        assert!(bad.is_err());
        assert!(Nodes::resolve(&[], Duration::from_secs(1)).await.is_err());
    }
}
