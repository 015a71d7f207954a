//! Min-cost flow with lexicographic costs: the solver under the rebalancing planner
//! ([`super::plan`]).
//!
//! A cost is a vector compared lexicographically (the first part matters most), so
//! the planner states its priorities (balance, then fewest moves, then fewest bytes)
//! as parts instead of as hand-picked big weights that could overflow. Vectors of
//! integers under lexicographic order form an ordered group, which is all the
//! successive-shortest-path method needs.
//!
//! Pure and deterministic: the same edges added in the same order give the same
//! flow (Dijkstra's ties break on the vertex index). Runs wherever the planner runs.
//!
//! Invariant: with the current potentials every residual edge has a non-negative
//! reduced cost (asserted on every relaxation); the caller sets initial potentials
//! that make it so and keeps any flow it pushes by hand a minimum-cost one.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// How many parts a cost has.
pub(super) const COST_PARTS: usize = 6;

/// A cost: parts compared lexicographically, the first the most important.
pub(super) type Cost = [i128; COST_PARTS];

/// The cost of nothing.
pub(super) const ZERO: Cost = [0; COST_PARTS];

/// `a + b`, part by part.
pub(super) fn add(a: Cost, b: Cost) -> Cost {
    std::array::from_fn(|i| a[i] + b[i])
}

/// `a - b`, part by part.
fn sub(a: Cost, b: Cost) -> Cost {
    std::array::from_fn(|i| a[i] - b[i])
}

/// A cost with one part set.
pub(super) fn unit(part: usize, amount: i128) -> Cost {
    let mut cost = ZERO;
    cost[part] = amount;
    cost
}

/// An edge of the residual graph; edge `e ^ 1` is its reverse.
struct Edge {
    to: usize,
    residual: i64,
    cost: Cost,
}

/// A flow network over vertices `0..vertices`.
pub(super) struct Network {
    edges: Vec<Edge>,
    out: Vec<Vec<usize>>,
    potential: Vec<Cost>,
}

/// The id of an edge added by [`Network::add_edge`].
pub(super) type EdgeId = usize;

impl Network {
    /// A network with `vertices` vertices and no edges, all potentials zero.
    pub(super) fn new(vertices: usize) -> Self {
        Network { edges: Vec::new(), out: vec![Vec::new(); vertices], potential: vec![ZERO; vertices] }
    }

    /// Adds an edge `from -> to` carrying at most `capacity` units at `cost` each.
    pub(super) fn add_edge(&mut self, from: usize, to: usize, capacity: i64, cost: Cost) -> EdgeId {
        assert!(capacity >= 0, "an edge's capacity is never negative");
        let id = self.edges.len();
        self.edges.push(Edge { to, residual: capacity, cost });
        self.edges.push(Edge { to: from, residual: 0, cost: std::array::from_fn(|i| -cost[i]) });
        self.out[from].push(id);
        self.out[to].push(id + 1);
        id
    }

    /// Sets the potential of `vertex` (before any search).
    pub(super) fn set_potential(&mut self, vertex: usize, potential: Cost) {
        self.potential[vertex] = potential;
    }

    /// Room left on `edge`.
    pub(super) fn residual(&self, edge: EdgeId) -> i64 {
        self.edges[edge].residual
    }

    /// Units flowing over `edge`.
    pub(super) fn flow(&self, edge: EdgeId) -> i64 {
        self.edges[edge ^ 1].residual
    }

    /// Sends `amount` more units over `edge` by hand (the caller keeps the flow a
    /// minimum-cost one for its value).
    pub(super) fn push(&mut self, edge: EdgeId, amount: i64) {
        assert!(self.edges[edge].residual >= amount, "pushed past an edge's capacity");
        self.edges[edge].residual -= amount;
        self.edges[edge ^ 1].residual += amount;
    }

    /// Sends up to `limit` more units from `source` to `sink`, each along a
    /// cheapest path; returns how many went. Starting from a minimum-cost flow,
    /// the result is a minimum-cost flow of its value.
    ///
    /// Primal-dual: one Dijkstra moves the potentials on so that the cheapest
    /// paths are exactly the paths of zero reduced cost, then blocking flows
    /// over those edges (Dinic's level graphs) send every unit such paths can
    /// carry before the next Dijkstra. A plan sends hundreds of units along
    /// paths of a few distinct costs, so this runs a few searches instead of
    /// one per unit.
    pub(super) fn min_cost_flow(&mut self, source: usize, sink: usize, limit: i64) -> i64 {
        let mut sent = 0;
        while sent < limit && self.shortest_paths(source, sink) {
            // The search left a path of zero reduced cost to the sink, so the
            // first blocking flow sends at least one unit.
            let mut went = self.blocking_flow(source, sink, limit - sent);
            if went == 0 {
                break;
            }
            while went > 0 {
                sent += went;
                went = self.blocking_flow(source, sink, limit - sent);
            }
        }
        sent
    }

    /// True when `edge`, leaving `from`, has room and a zero reduced cost: it
    /// lies on a cheapest path under the current potentials.
    fn admissible(&self, from: usize, edge: EdgeId) -> bool {
        let e = &self.edges[edge];
        e.residual > 0 && add(e.cost, self.potential[from]) == self.potential[e.to]
    }

    /// Sends up to `limit` units along admissible edges, over the paths with the
    /// fewest edges first (a level graph), until no such path is left; returns
    /// how many went. Each push keeps every reduced cost non-negative: an
    /// admissible edge's reverse has a zero reduced cost too.
    fn blocking_flow(&mut self, source: usize, sink: usize, limit: i64) -> i64 {
        if limit <= 0 {
            return 0;
        }
        let vertices = self.out.len();
        let mut level = vec![u32::MAX; vertices];
        level[source] = 0;
        let mut queue = std::collections::VecDeque::from([source]);
        while let Some(u) = queue.pop_front() {
            if u == sink {
                break;
            }
            for &e in &self.out[u] {
                let to = self.edges[e].to;
                if level[to] == u32::MAX && self.admissible(u, e) {
                    level[to] = level[u] + 1;
                    queue.push_back(to);
                }
            }
        }
        if level[sink] == u32::MAX {
            return 0;
        }
        // Depth-first along the level graph with a cursor per vertex: an edge
        // the cursor passed leads nowhere (full, or to a dead end) for the rest
        // of this level graph.
        let mut cursor = vec![0usize; vertices];
        let mut path: Vec<EdgeId> = Vec::new();
        let mut sent = 0;
        let mut u = source;
        while sent < limit {
            if u == sink {
                let amount = path.iter().fold(limit - sent, |a, &e| a.min(self.edges[e].residual));
                for &e in &path {
                    self.push(e, amount);
                }
                sent += amount;
                path.clear();
                u = source;
                continue;
            }
            let next = loop {
                let Some(&e) = self.out[u].get(cursor[u]) else { break None };
                let to = self.edges[e].to;
                if level[to] == level[u] + 1 && self.admissible(u, e) {
                    break Some(e);
                }
                cursor[u] += 1;
            };
            match next {
                Some(e) => {
                    path.push(e);
                    u = self.edges[e].to;
                }
                None => {
                    // A dead end: retreat and skip the edge that led here.
                    let Some(e) = path.pop() else { break };
                    level[u] = u32::MAX;
                    u = self.edges[e ^ 1].to;
                    cursor[u] += 1;
                }
            }
        }
        sent
    }

    /// Dijkstra over reduced costs; true when `sink` is reachable, after moving
    /// the potentials on so that its cheapest paths have zero reduced cost.
    fn shortest_paths(&mut self, source: usize, sink: usize) -> bool {
        let vertices = self.out.len();
        let mut dist: Vec<Option<Cost>> = vec![None; vertices];
        let mut done = vec![false; vertices];
        let mut heap = BinaryHeap::new();
        dist[source] = Some(ZERO);
        heap.push(Reverse((ZERO, source)));
        while let Some(Reverse((d, u))) = heap.pop() {
            if done[u] {
                continue;
            }
            done[u] = true;
            if u == sink {
                break;
            }
            for &e in &self.out[u] {
                let edge = &self.edges[e];
                if edge.residual == 0 || done[edge.to] {
                    continue;
                }
                let reduced = sub(add(edge.cost, self.potential[u]), self.potential[edge.to]);
                assert!(reduced >= ZERO, "negative reduced cost: the potentials are wrong");
                let candidate = add(d, reduced);
                if dist[edge.to].is_none_or(|old| candidate < old) {
                    dist[edge.to] = Some(candidate);
                    heap.push(Reverse((candidate, edge.to)));
                }
            }
        }
        let Some(reach) = dist[sink].filter(|_| done[sink]) else { return false };
        // Capping every distance at the sink's keeps all reduced costs
        // non-negative, those of vertices never settled included.
        for v in 0..vertices {
            let d = match dist[v] {
                Some(d) if done[v] => d,
                _ => reach,
            };
            self.potential[v] = add(self.potential[v], d);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    impl Network {
        /// The textbook method, one unit's path per search: the reference the
        /// primal-dual method must match in cost.
        fn min_cost_flow_path_by_path(&mut self, source: usize, sink: usize, limit: i64) -> i64 {
            let mut sent = 0;
            while sent < limit && self.shortest_paths(source, sink) {
                let before = sent;
                sent += self.one_path(source, sink);
                if sent == before {
                    break;
                }
            }
            sent
        }

        /// Sends one unit along a path of admissible edges (depth first).
        fn one_path(&mut self, source: usize, sink: usize) -> i64 {
            let mut seen = vec![false; self.out.len()];
            let mut path = Vec::new();
            if self.find(source, sink, &mut seen, &mut path) {
                path.iter().for_each(|&e| self.push(e, 1));
                1
            } else {
                0
            }
        }

        fn find(&self, u: usize, sink: usize, seen: &mut [bool], path: &mut Vec<EdgeId>) -> bool {
            if u == sink {
                return true;
            }
            seen[u] = true;
            for &e in &self.out[u] {
                let to = self.edges[e].to;
                if !seen[to] && self.admissible(u, e) {
                    path.push(e);
                    if self.find(to, sink, seen, path) {
                        return true;
                    }
                    path.pop();
                }
            }
            false
        }

        fn total_cost(&self) -> Cost {
            (0..self.edges.len()).step_by(2).fold(ZERO, |sum, e| {
                let units = i128::from(self.flow(e));
                add(sum, std::array::from_fn(|i| self.edges[e].cost[i] * units))
            })
        }
    }

    /// A random layered network: source -> left -> right -> sink, costs
    /// non-negative (so zero potentials are valid), lexicographic in two parts.
    fn network(left: usize, right: usize, edges: &[(usize, usize, i64, i128, i128)]) -> Network {
        let (source, sink) = (0, 1);
        let mut net = Network::new(2 + left + right);
        for l in 0..left {
            net.add_edge(source, 2 + l, 2, ZERO);
        }
        for r in 0..right {
            net.add_edge(2 + left + r, sink, 3, unit(0, (r % 2) as i128));
        }
        for &(l, r, cap, a, b) in edges {
            let mut cost = unit(1, a);
            cost[2] = b;
            net.add_edge(2 + l % left, 2 + left + r % right, cap, cost);
        }
        net
    }

    proptest! {
        /// The primal-dual method sends as many units as the path-by-path one,
        /// at the same (minimum) cost, for every limit.
        #[test]
        fn primal_dual_matches_path_by_path(
            left in 1usize..8,
            right in 1usize..8,
            edges in proptest::collection::vec((0usize..8, 0usize..8, 1i64..3, 0i128..4, 0i128..50), 0..40),
            limit in 0i64..30,
        ) {
            let mut fast = network(left, right, &edges);
            let mut slow = network(left, right, &edges);
            let sent = fast.min_cost_flow(0, 1, limit);
            prop_assert_eq!(sent, slow.min_cost_flow_path_by_path(0, 1, limit));
            prop_assert_eq!(fast.total_cost(), slow.total_cost());
        }
    }

    /// Many units over paths of one cost take one search, not one each, and a
    /// path through a reverse edge (a unit rerouted) is found.
    #[test]
    fn a_reroute_through_a_reverse_edge_keeps_the_flow_cheapest() {
        // 0 source, 1 sink, 2 and 3 left, 4 and 5 right. Left 2 may use either
        // right vertex; left 3 only right 4, which is cheap. Sending 1 unit puts
        // left 2 on right 4; sending 2 must move it to right 5.
        let mut net = Network::new(6);
        net.add_edge(0, 2, 1, ZERO);
        net.add_edge(0, 3, 1, ZERO);
        let a = net.add_edge(2, 4, 1, ZERO);
        let b = net.add_edge(2, 5, 1, unit(1, 1));
        let c = net.add_edge(3, 4, 1, unit(1, 1));
        net.add_edge(4, 1, 1, ZERO);
        net.add_edge(5, 1, 1, ZERO);
        assert_eq!(net.min_cost_flow(0, 1, 1), 1);
        assert_eq!((net.flow(a), net.flow(b), net.flow(c)), (1, 0, 0));
        assert_eq!(net.min_cost_flow(0, 1, 1), 1);
        assert_eq!((net.flow(a), net.flow(b), net.flow(c)), (0, 1, 1));
        assert_eq!(net.total_cost(), unit(1, 2));
    }
}
