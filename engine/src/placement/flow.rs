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
    pub(super) fn min_cost_flow(&mut self, source: usize, sink: usize, limit: i64) -> i64 {
        let mut sent = 0;
        while sent < limit {
            let Some(prev) = self.shortest_paths(source, sink) else { break };
            let mut amount = limit - sent;
            let mut at = sink;
            while at != source {
                let e = prev[at];
                amount = amount.min(self.edges[e].residual);
                at = self.edges[e ^ 1].to;
            }
            let mut at = sink;
            while at != source {
                let e = prev[at];
                self.push(e, amount);
                at = self.edges[e ^ 1].to;
            }
            sent += amount;
        }
        sent
    }

    /// Dijkstra over reduced costs; returns the edge into each vertex on its
    /// cheapest path when `sink` is reachable, after moving the potentials on.
    fn shortest_paths(&mut self, source: usize, sink: usize) -> Option<Vec<usize>> {
        let vertices = self.out.len();
        let mut dist: Vec<Option<Cost>> = vec![None; vertices];
        let mut done = vec![false; vertices];
        let mut prev = vec![usize::MAX; vertices];
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
                    prev[edge.to] = e;
                    heap.push(Reverse((candidate, edge.to)));
                }
            }
        }
        let reach = dist[sink].filter(|_| done[sink])?;
        // Capping every distance at the sink's keeps all reduced costs
        // non-negative, those of vertices never settled included.
        for v in 0..vertices {
            let d = match dist[v] {
                Some(d) if done[v] => d,
                _ => reach,
            };
            self.potential[v] = add(self.potential[v], d);
        }
        Some(prev)
    }
}
