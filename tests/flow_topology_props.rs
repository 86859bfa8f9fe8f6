//! Properties of topology validation over random graphs of steps.

use std::collections::BTreeSet;

use proptest::prelude::*;
use troupe::flow::{Topology, TopologyError};
use troupe::stage::StageKind;

fn graph() -> impl Strategy<Value = (usize, BTreeSet<(usize, usize)>)> {
    (1usize..12).prop_flat_map(|n| (Just(n), prop::collection::btree_set((0..n, 0..n), 0..30)))
}

fn topology(n: usize, edges: &BTreeSet<(usize, usize)>) -> Topology {
    let mut t = Topology::new();
    for i in 0..n {
        t.stage(format!("s{i}"), StageKind::Step);
    }
    for (a, b) in edges {
        t.edge(format!("s{a}"), format!("s{b}"));
    }
    t
}

proptest! {
    #[test]
    fn a_valid_order_respects_every_edge_and_a_cycle_is_real((n, edges) in graph()) {
        match topology(n, &edges).validate() {
            Ok(valid) => {
                let order = valid.start_order();
                prop_assert_eq!(order.len(), n);
                let position = |i: usize| order.iter().position(|&x| x == i).unwrap();
                for &(a, b) in &edges {
                    prop_assert!(position(a) < position(b), "edge s{} -> s{} out of order", a, b);
                }
            }
            Err(TopologyError::Cycle { path }) => {
                prop_assert!(path.len() >= 2);
                prop_assert_eq!(path.first(), path.last());
                for pair in path.windows(2) {
                    let a: usize = pair[0][1..].parse().unwrap();
                    let b: usize = pair[1][1..].parse().unwrap();
                    prop_assert!(edges.contains(&(a, b)), "s{} -> s{} is not an edge", a, b);
                }
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn forward_only_edges_always_validate((n, edges) in graph()) {
        let forward: BTreeSet<_> = edges.into_iter().filter(|(a, b)| a < b).collect();
        prop_assert!(topology(n, &forward).validate().is_ok());
    }
}
