//! Pipelines: Processors that read other Processors' views
//! (`processor/NAME` inputs). Pure: the graph of one namespace, what is
//! wrong with a Processor's place in it, and who reads whom.

use std::collections::{BTreeMap, BTreeSet};

/// Each Processor of a namespace and the Processors it reads.
pub type Graph = BTreeMap<String, Vec<String>>;

/// Why a Processor's upstreams cannot be used, with the condition reason:
/// an upstream that does not exist, or a cycle through this Processor.
/// Named by the path from it, so the fix is plain.
pub fn problem(name: &str, graph: &Graph) -> Option<(&'static str, String)> {
    let ups = graph.get(name)?;
    if let Some(missing) = ups.iter().find(|u| !graph.contains_key(*u)) {
        return Some((
            "UpstreamMissing",
            format!("spec.inputs: processor/{missing}: no Processor {missing} in this namespace (path {name} → {missing})"),
        ));
    }
    cycle_through(name, graph)
        .map(|path| ("UpstreamCycle", format!("spec.inputs: Processors read each other in a cycle: {}", path.join(" → "))))
}

/// The shortest path from `name` along its upstreams back to itself.
fn cycle_through(name: &str, graph: &Graph) -> Option<Vec<String>> {
    // Breadth first, so the path shown is the shortest.
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut frontier: Vec<&str> = vec![name];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for at in frontier {
            for up in graph.get(at).into_iter().flatten() {
                if up == name {
                    let mut path = vec![name.to_string(), up.clone()];
                    let mut back = at;
                    while back != name {
                        path.insert(1, back.to_string());
                        back = came_from[back];
                    }
                    return Some(path);
                }
                if seen.insert(up) {
                    came_from.insert(up, at);
                    next.push(up.as_str());
                }
            }
        }
        frontier = next;
    }
    None
}

/// Every Processor downstream of `name`, nearest first (each once).
pub fn downstream_closure(name: &str, graph: &Graph) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut frontier = vec![name.to_string()];
    while let Some(at) = frontier.pop() {
        for d in downstreams(&at, graph) {
            if d != name && !out.contains(&d) {
                out.push(d.clone());
                frontier.insert(0, d);
            }
        }
    }
    out
}

/// The Processors that read `name`'s view, in name order.
pub fn downstreams(name: &str, graph: &Graph) -> Vec<String> {
    graph.iter().filter(|(_, ups)| ups.iter().any(|u| u == name)).map(|(d, _)| d.clone()).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        edges.iter().map(|(p, ups)| (p.to_string(), ups.iter().map(|u| u.to_string()).collect())).collect()
    }

    #[test]
    fn a_chain_is_fine_and_knows_its_readers() {
        let g = graph(&[("orders", &[]), ("totals", &["orders"]), ("fraud", &["totals"]), ("report", &["totals", "orders"])]);
        for p in ["orders", "totals", "fraud", "report"] {
            assert_eq!(problem(p, &g), None, "{p}");
        }
        assert_eq!(downstreams("totals", &g), ["fraud", "report"]);
        assert_eq!(downstreams("fraud", &g), Vec::<String>::new());
        assert_eq!(downstream_closure("orders", &g), ["report", "totals", "fraud"]);
        assert_eq!(downstream_closure("fraud", &g), Vec::<String>::new());
        let cyclic = graph(&[("a", &["b"]), ("b", &["a"])]);
        assert_eq!(downstream_closure("a", &cyclic), ["b"]);
    }

    #[test]
    fn a_missing_upstream_and_a_cycle_are_named_by_their_path() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["ghost"]), ("e", &["e"]), ("f", &["a"])]);
        assert_eq!(
            problem("a", &g).unwrap(),
            ("UpstreamCycle", "spec.inputs: Processors read each other in a cycle: a → b → c → a".into())
        );
        assert_eq!(problem("c", &g).unwrap().1, "spec.inputs: Processors read each other in a cycle: c → a → b → c");
        assert_eq!(problem("e", &g).unwrap().1, "spec.inputs: Processors read each other in a cycle: e → e");
        let (reason, message) = problem("d", &g).unwrap();
        assert_eq!(reason, "UpstreamMissing");
        assert!(message.contains("processor/ghost") && message.contains("d → ghost"), "{message}");
        // Reading from a cycle is not being in one: f waits, it is not refused for it.
        assert_eq!(problem("f", &g), None);
    }

    proptest! {
        /// A Processor is refused for a cycle exactly when following its
        /// upstreams leads back to it, and the path shown is such a walk.
        #[test]
        fn cycles_are_found_exactly(edges in proptest::collection::vec((0u8..6, 0u8..6), 0..12)) {
            let mut g: Graph = (0..6).map(|i| (format!("p{i}"), vec![])).collect();
            for (a, b) in &edges {
                let ups = g.get_mut(&format!("p{a}")).unwrap();
                if !ups.contains(&format!("p{b}")) {
                    ups.push(format!("p{b}"));
                }
            }
            for i in 0..6 {
                let name = format!("p{i}");
                // Reachability by brute force.
                let mut reach: BTreeSet<String> = g[&name].iter().cloned().collect();
                for _ in 0..6 {
                    let more: Vec<String> = reach.iter().flat_map(|r| g[r].clone()).collect();
                    reach.extend(more);
                }
                let found = cycle_through(&name, &g);
                prop_assert_eq!(found.is_some(), reach.contains(&name));
                if let Some(path) = found {
                    prop_assert_eq!(path.first(), Some(&name));
                    prop_assert_eq!(path.last(), Some(&name));
                    for w in path.windows(2) {
                        prop_assert!(g[&w[0]].contains(&w[1]), "{:?} is not a walk", path);
                    }
                }
            }
        }
    }
}
