//! The dependency graph of the live transactions, its strongly connected
//! components (iterative Tarjan) and the extraction and classification of one
//! cycle. See the module doc of `serial` for the edges and the search order.
//!
//! Nodes below `txn_nodes` are transactions ([`Node`]s of the resolution);
//! the others are real-time barriers. Edges are stored compressed by source
//! (offsets into one array), in insertion order, so every answer is
//! deterministic.

use std::collections::VecDeque;

use super::resolve::{KeyId, Node, Resolution};
use super::{
    Anomaly, AnomalyKind, CYCLE_STARTS_MAX, Edge, EdgeKind, G_SINGLE_EDGE_VISITS_MAX, KeyText, Txn, TxnKind,
    TxnOutcome, Version,
};

/// Edge-kind bits, to select the edges a pass may follow.
pub(super) const WW: u8 = 1;
pub(super) const WR: u8 = 2;
pub(super) const RW: u8 = 4;
pub(super) const RT: u8 = 8;

/// An edge's reason, with the key as an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Label {
    Ww {
        key: KeyId,
        overwritten: Version,
        version: Version,
    },
    Wr {
        key: KeyId,
        version: Version,
    },
    Rw {
        key: KeyId,
        read: Version,
        overwritten_by: Version,
    },
    /// Into or out of a barrier: part of a real-time path.
    RealTime,
}

impl Label {
    fn bit(self) -> u8 {
        match self {
            Label::Ww { .. } => WW,
            Label::Wr { .. } => WR,
            Label::Rw { .. } => RW,
            Label::RealTime => RT,
        }
    }
}

pub(super) struct Graph {
    /// Nodes below this are transactions; the rest are barriers.
    txn_nodes: u32,
    /// Whether real-time edges were drawn.
    strict: bool,
    /// Out-edges of node n are `offsets[n]..offsets[n + 1]`.
    offsets: Vec<usize>,
    sources: Vec<u32>,
    targets: Vec<u32>,
    labels: Vec<Label>,
}

/// Strongly connected components: `of[node]` and the size of each.
pub(super) struct Components {
    of: Vec<u32>,
    sizes: Vec<u32>,
}

impl Components {
    fn is_cyclic(&self, node: u32) -> bool {
        self.sizes[self.of[node as usize] as usize] >= 2
    }
}

/// How a path search ended.
enum Path {
    Found(Vec<usize>),
    NotFound,
    OutOfBudget,
}

/// Reusable breadth-first-search state: entries are valid only where `stamp`
/// equals the current generation, so no search clears a whole array.
struct Scratch {
    stamp: Vec<u32>,
    generation: u32,
    dist: Vec<u32>,
    parent: Vec<usize>,
    deque: VecDeque<(u32, u32)>,
}

impl Scratch {
    fn new(nodes: usize) -> Scratch {
        Scratch {
            stamp: vec![0; nodes],
            generation: 0,
            dist: vec![0; nodes],
            parent: vec![0; nodes],
            deque: VecDeque::new(),
        }
    }

    fn dist(&self, node: u32) -> u32 {
        if self.stamp[node as usize] == self.generation { self.dist[node as usize] } else { u32::MAX }
    }

    fn set(&mut self, node: u32, dist: u32, parent: usize) {
        self.stamp[node as usize] = self.generation;
        self.dist[node as usize] = dist;
        self.parent[node as usize] = parent;
    }
}

impl Graph {
    /// The graph of a resolved history; real-time barriers when `strict`.
    pub(super) fn build(txns: &[Txn], resolution: &Resolution<'_>, strict: bool) -> Graph {
        let txn_nodes = u32::try_from(resolution.live.len()).expect("fewer than 2^32 transactions");
        let mut edges: Vec<(u32, u32, Label)> = Vec::new();
        for (key, writers) in resolution.writers.iter().enumerate() {
            let key = key as KeyId;
            for pair in writers.windows(2) {
                let (overwritten, from) = pair[0];
                let (version, to) = pair[1];
                edges.push((from, to, Label::Ww { key, overwritten, version }));
            }
        }
        for read in &resolution.reads {
            if let Some(writer) = read.writer {
                assert_ne!(writer, read.reader, "resolution never names a reader its own writer");
                edges.push((writer, read.reader, Label::Wr { key: read.key, version: read.version }));
            }
            let writers = &resolution.writers[read.key as usize];
            let next = writers.partition_point(|&(version, _)| version <= read.version);
            if let Some(&(overwritten_by, next_writer)) = writers.get(next)
                && next_writer != read.reader
            {
                let label = Label::Rw { key: read.key, read: read.version, overwritten_by };
                edges.push((read.reader, next_writer, label));
            }
        }
        let barriers = if strict { real_time_edges(txns, resolution, txn_nodes, &mut edges) } else { 0 };
        Graph::from_edges(txn_nodes, barriers, strict, &edges)
    }

    /// Lays out edges compressed by source, keeping their order per source.
    pub(super) fn from_edges(txn_nodes: u32, barriers: u32, strict: bool, edges: &[(u32, u32, Label)]) -> Graph {
        let nodes = txn_nodes as usize + barriers as usize;
        let mut offsets = vec![0usize; nodes + 1];
        for &(from, to, _) in edges {
            assert!((from as usize) < nodes && (to as usize) < nodes, "edge {from} -> {to} outside {nodes} nodes");
            offsets[from as usize + 1] += 1;
        }
        for node in 0..nodes {
            offsets[node + 1] += offsets[node];
        }
        let mut fill = offsets.clone();
        let mut sources = vec![0; edges.len()];
        let mut targets = vec![0; edges.len()];
        let mut labels = vec![Label::RealTime; edges.len()];
        for &(from, to, label) in edges {
            let slot = &mut fill[from as usize];
            sources[*slot] = from;
            targets[*slot] = to;
            labels[*slot] = label;
            *slot += 1;
        }
        Graph { txn_nodes, strict, offsets, sources, targets, labels }
    }

    fn nodes(&self) -> usize {
        self.offsets.len() - 1
    }

    fn is_txn(&self, node: u32) -> bool {
        node < self.txn_nodes
    }

    /// 0-1 weights: a hop into a barrier costs nothing, so a path's length is
    /// the number of transaction-to-transaction edges it collapses to.
    fn weight(&self, node: u32) -> u32 {
        u32::from(self.is_txn(node))
    }

    fn out_edges(&self, node: u32) -> std::ops::Range<usize> {
        self.offsets[node as usize]..self.offsets[node as usize + 1]
    }

    /// Tarjan's algorithm over the edges whose kind is in `mask`, with an
    /// explicit stack (histories have 100k transactions; recursion would
    /// overflow the thread's stack).
    pub(super) fn components(&self, mask: u8) -> Components {
        const UNVISITED: u32 = u32::MAX;
        let nodes = self.nodes();
        let mut index = vec![UNVISITED; nodes];
        let mut low = vec![0u32; nodes];
        let mut on_stack = vec![false; nodes];
        let mut stack: Vec<u32> = Vec::new();
        let mut calls: Vec<(u32, usize)> = Vec::new();
        let mut of = vec![0u32; nodes];
        let mut sizes: Vec<u32> = Vec::new();
        let mut next_index = 0u32;
        for root in 0..nodes as u32 {
            if index[root as usize] != UNVISITED {
                continue;
            }
            index[root as usize] = next_index;
            low[root as usize] = next_index;
            next_index += 1;
            stack.push(root);
            on_stack[root as usize] = true;
            calls.push((root, self.offsets[root as usize]));
            while let Some(&mut (node, ref mut edge)) = calls.last_mut() {
                if *edge < self.offsets[node as usize + 1] {
                    let current = *edge;
                    *edge += 1;
                    if self.labels[current].bit() & mask == 0 {
                        continue;
                    }
                    let target = self.targets[current];
                    if index[target as usize] == UNVISITED {
                        index[target as usize] = next_index;
                        low[target as usize] = next_index;
                        next_index += 1;
                        stack.push(target);
                        on_stack[target as usize] = true;
                        calls.push((target, self.offsets[target as usize]));
                    } else if on_stack[target as usize] {
                        low[node as usize] = low[node as usize].min(index[target as usize]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent as usize] = low[parent as usize].min(low[node as usize]);
                }
                if low[node as usize] == index[node as usize] {
                    let component = sizes.len() as u32;
                    let mut size = 0;
                    loop {
                        let member = stack.pop().expect("the component's root is on the stack");
                        on_stack[member as usize] = false;
                        of[member as usize] = component;
                        size += 1;
                        if member == node {
                            break;
                        }
                    }
                    sizes.push(size);
                }
            }
        }
        Components { of, sizes }
    }

    /// The first transaction node (in input order) on a cycle, if any.
    fn first_cyclic(&self, components: &Components) -> Option<u32> {
        (0..self.txn_nodes).find(|&node| components.is_cyclic(node))
    }

    /// One cycle, as edge indices, found in the most specific edge set first
    /// (see the module doc of `serial`); `None` when the whole graph is
    /// acyclic.
    pub(super) fn find_cycle(&self) -> Option<Vec<usize>> {
        self.find_cycle_within(G_SINGLE_EDGE_VISITS_MAX)
    }

    /// [`Graph::find_cycle`] with the G-single search's budget given.
    fn find_cycle_within(&self, g_single_edge_visits_max: u64) -> Option<Vec<usize>> {
        let all = WW | WR | RW | if self.strict { RT } else { 0 };
        self.first_cyclic(&self.components(all))?;
        let mut scratch = Scratch::new(self.nodes());
        let real_time: &[u8] = if self.strict { &[0, RT] } else { &[0] };
        for &extra in real_time {
            for layer in [WW, WW | WR, WW | WR | RW] {
                let mask = layer | extra;
                let components = self.components(mask);
                let Some(first) = self.first_cyclic(&components) else {
                    continue;
                };
                if layer & RW != 0
                    && let Some(cycle) = self.g_single(&mut scratch, &components, mask, g_single_edge_visits_max)
                {
                    return Some(cycle);
                }
                return Some(self.shortest_cycle(&mut scratch, &components, first, mask));
            }
        }
        unreachable!("the graph over all edges has a cycle, so its last layer does")
    }

    /// A shortest cycle through one of the first [`CYCLE_STARTS_MAX`]
    /// transactions of `first`'s component.
    fn shortest_cycle(&self, scratch: &mut Scratch, components: &Components, first: u32, mask: u8) -> Vec<usize> {
        let component = components.of[first as usize];
        let starts = (first..self.txn_nodes).filter(|&node| components.of[node as usize] == component);
        let mut best: Option<Vec<usize>> = None;
        for start in starts.take(CYCLE_STARTS_MAX) {
            let mut unlimited = u64::MAX;
            let Path::Found(cycle) = self.path(scratch, start, start, mask, components, &mut unlimited) else {
                unreachable!("a node of a cyclic component is on a cycle inside it");
            };
            if best.as_ref().is_none_or(|best| self.length(&cycle) < self.length(best)) {
                best = Some(cycle);
            }
        }
        best.expect("a cyclic component has a transaction node")
    }

    fn length(&self, path: &[usize]) -> usize {
        path.iter().filter(|&&edge| self.is_txn(self.targets[edge])).count()
    }

    /// A cycle with exactly one `rw` edge: for each `rw` edge u -> v inside a
    /// cyclic component, a path from v back to u without `rw` edges. `None`
    /// when there is none or the budget ran out.
    fn g_single(
        &self,
        scratch: &mut Scratch,
        components: &Components,
        mask: u8,
        edge_visits_max: u64,
    ) -> Option<Vec<usize>> {
        let mut budget = edge_visits_max;
        for node in (0..self.txn_nodes).filter(|&node| components.is_cyclic(node)) {
            for edge in self.out_edges(node) {
                let target = self.targets[edge];
                if self.labels[edge].bit() != RW || components.of[target as usize] != components.of[node as usize] {
                    continue;
                }
                match self.path(scratch, target, node, mask & !RW, components, &mut budget) {
                    Path::Found(path) => return Some([edge].into_iter().chain(path).collect()),
                    Path::NotFound => {}
                    Path::OutOfBudget => return None,
                }
            }
        }
        None
    }

    /// A shortest path of at least one edge from `from` to the transaction
    /// `to` over `mask` edges, inside `from`'s component, by 0-1
    /// breadth-first search. Every edge scanned costs one unit of `budget`.
    fn path(
        &self,
        scratch: &mut Scratch,
        from: u32,
        to: u32,
        mask: u8,
        components: &Components,
        budget: &mut u64,
    ) -> Path {
        assert!(self.is_txn(to), "paths end at transactions");
        let component = components.of[from as usize];
        scratch.generation += 1;
        scratch.deque.clear();
        scratch.set(from, 0, usize::MAX);
        scratch.deque.push_back((from, 0));
        while let Some((node, dist)) = scratch.deque.pop_front() {
            if dist > scratch.dist(node) {
                continue;
            }
            for edge in self.out_edges(node) {
                if *budget == 0 {
                    return Path::OutOfBudget;
                }
                *budget -= 1;
                let target = self.targets[edge];
                if self.labels[edge].bit() & mask == 0 || components.of[target as usize] != component {
                    continue;
                }
                if target == to {
                    // Nodes leave the deque in order of distance, and an edge
                    // into a transaction costs 1: the first edge found into
                    // `to` ends a shortest path.
                    return Path::Found(self.trace(scratch, from, node, edge));
                }
                let weight = self.weight(target);
                if dist + weight < scratch.dist(target) {
                    scratch.set(target, dist + weight, edge);
                    if weight == 0 {
                        scratch.deque.push_front((target, dist));
                    } else {
                        scratch.deque.push_back((target, dist + weight));
                    }
                }
            }
        }
        Path::NotFound
    }

    /// The edges from `from` to `last`'s parent chain, then `edge`.
    fn trace(&self, scratch: &Scratch, from: u32, last: u32, edge: usize) -> Vec<usize> {
        let mut path = vec![edge];
        let mut node = last;
        while node != from {
            let parent = scratch.parent[node as usize];
            path.push(parent);
            node = self.sources[parent];
        }
        path.reverse();
        path
    }

    /// The cycle over transactions: each barrier run collapsed to one
    /// real-time edge, as (from, label, to).
    pub(super) fn collapse(&self, cycle: &[usize]) -> Vec<(Node, Label, Node)> {
        let mut collapsed = Vec::with_capacity(cycle.len());
        let mut real_time_from = None;
        for &edge in cycle {
            let (from, to, label) = (self.sources[edge], self.targets[edge], self.labels[edge]);
            if label != Label::RealTime {
                collapsed.push((from, label, to));
                continue;
            }
            if self.is_txn(from) {
                real_time_from = Some(from);
            }
            if self.is_txn(to) {
                let from = real_time_from.take().expect("a real-time run starts at a transaction");
                collapsed.push((from, Label::RealTime, to));
            }
        }
        collapsed
    }

    /// The first anomaly the graph shows, if any.
    /// The cycle is rotated to start at its smallest transaction id, so that
    /// one cycle always prints the same way.
    pub(super) fn find_anomaly(&self, txns: &[Txn], resolution: &Resolution<'_>) -> Option<Anomaly> {
        let mut cycle = self.collapse(&self.find_cycle()?);
        let first = (0..cycle.len()).min_by_key(|&index| resolution.txn(txns, cycle[index].0).id).unwrap_or(0);
        cycle.rotate_left(first);
        Some(describe(&cycle, txns, resolution))
    }
}

/// Draws real-time order among live read-write transactions through barrier
/// nodes; returns the number of barriers. Only a committed transaction's
/// return bounds when it took effect: one of unknown outcome may have
/// committed after its client gave up, so it only ever comes after others.
fn real_time_edges(
    txns: &[Txn],
    resolution: &Resolution<'_>,
    txn_nodes: u32,
    edges: &mut Vec<(u32, u32, Label)>,
) -> u32 {
    let read_write: Vec<Node> =
        (0..txn_nodes).filter(|&node| resolution.txn(txns, node).kind == TxnKind::ReadWrite).collect();
    let mut returns: Vec<(u64, Node)> = read_write
        .iter()
        .filter(|&&node| matches!(resolution.txn(txns, node).outcome, TxnOutcome::Committed { .. }))
        .filter_map(|&node| resolution.txn(txns, node).return_time.map(|time| (time, node)))
        .collect();
    returns.sort_unstable();
    let barriers = u32::try_from(returns.len()).expect("fewer than 2^32 transactions");
    for (position, &(_, node)) in returns.iter().enumerate() {
        let barrier = txn_nodes + position as u32;
        edges.push((node, barrier, Label::RealTime));
        if position > 0 {
            edges.push((barrier - 1, barrier, Label::RealTime));
        }
    }
    for &node in &read_write {
        let invoke_time = resolution.txn(txns, node).invoke_time;
        let returned_before = returns.partition_point(|&(time, _)| time < invoke_time);
        if returned_before > 0 {
            edges.push((txn_nodes + returned_before as u32 - 1, node, Label::RealTime));
        }
    }
    barriers
}

/// The kind of a cycle, by its edges, and whether it needs real time.
pub(super) fn classify(cycle: &[(Node, Label, Node)]) -> (AnomalyKind, bool) {
    let count = |bit: u8| cycle.iter().filter(|(_, label, _)| label.bit() == bit).count();
    let kind = match (count(RW), count(WR)) {
        (0, 0) => AnomalyKind::G0,
        (0, _) => AnomalyKind::G1c,
        (1, _) => AnomalyKind::GSingle,
        _ => AnomalyKind::G2,
    };
    (kind, count(RT) > 0)
}

fn describe(cycle: &[(Node, Label, Node)], txns: &[Txn], resolution: &Resolution<'_>) -> Anomaly {
    let (kind, needs_real_time) = classify(cycle);
    let id = |node: Node| resolution.txn(txns, node).id;
    let key = |key: KeyId| resolution.keys[key as usize].to_vec();
    let mut edges = Vec::with_capacity(cycle.len());
    let mut sentences = Vec::with_capacity(cycle.len());
    for &(from, label, to) in cycle {
        let (from_txn, to_txn) = (resolution.txn(txns, from), resolution.txn(txns, to));
        let (a, b) = (from_txn.id, to_txn.id);
        let (edge_kind, sentence) = match label {
            Label::Ww { key: k, overwritten, version } => (
                EdgeKind::Ww { key: key(k), overwritten, version },
                format!("T{a} wrote {k}@{overwritten}, which T{b} overwrote with {k}@{version}", k = KeyText(&key(k))),
            ),
            Label::Wr { key: k, version } => (
                EdgeKind::Wr { key: key(k), version },
                format!("T{b} read T{a}'s write {k}@{version}", k = KeyText(&key(k))),
            ),
            Label::Rw { key: k, read, overwritten_by } => (
                EdgeKind::Rw { key: key(k), read, overwritten_by },
                format!("T{a} read {k}@{read}, which T{b} overwrote with {k}@{overwritten_by}", k = KeyText(&key(k))),
            ),
            Label::RealTime => (
                EdgeKind::RealTime,
                format!(
                    "T{a} returned at {} before T{b} was invoked at {}",
                    from_txn.return_time.expect("a real-time edge starts at a returned transaction"),
                    to_txn.invoke_time
                ),
            ),
        };
        edges.push(Edge { from: a, kind: edge_kind, to: b });
        sentences.push(sentence);
    }
    let explanation = format!("{}; so each must precede the next, around a cycle", sentences.join("; "));
    Anomaly {
        kind,
        needs_real_time,
        txns: cycle.iter().map(|&(from, _, _)| id(from)).collect(),
        cycle: edges,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    //! The classification on hand-built graphs, G0 included: a well-formed
    //! history cannot produce a `ww` cycle (one commit version per
    //! transaction), so only a graph built by hand can show it is named.

    use super::*;

    fn ww(version: Version) -> Label {
        Label::Ww { key: 0, overwritten: version, version: version + 1 }
    }

    fn wr(version: Version) -> Label {
        Label::Wr { key: 0, version }
    }

    fn rw(version: Version) -> Label {
        Label::Rw { key: 0, read: version, overwritten_by: version + 1 }
    }

    fn kind_of(txn_nodes: u32, barriers: u32, edges: &[(u32, u32, Label)]) -> Option<(AnomalyKind, bool)> {
        let graph = Graph::from_edges(txn_nodes, barriers, barriers > 0, edges);
        graph.find_cycle().map(|cycle| classify(&graph.collapse(&cycle)))
    }

    #[test]
    fn a_ww_cycle_is_g0() {
        let edges = [(0, 1, ww(1)), (1, 2, ww(2)), (2, 0, ww(3))];
        assert_eq!(kind_of(3, 0, &edges), Some((AnomalyKind::G0, false)));
    }

    #[test]
    fn g0_is_preferred_to_a_shorter_cycle_with_reads() {
        let edges = [(0, 1, wr(1)), (1, 0, rw(1)), (0, 2, ww(1)), (2, 3, ww(2)), (3, 0, ww(3))];
        assert_eq!(kind_of(4, 0, &edges), Some((AnomalyKind::G0, false)));
    }

    #[test]
    fn a_ww_wr_cycle_is_g1c() {
        let edges = [(0, 1, ww(1)), (1, 0, wr(2))];
        assert_eq!(kind_of(2, 0, &edges), Some((AnomalyKind::G1c, false)));
    }

    #[test]
    fn g_single_is_found_behind_a_shorter_g2() {
        // 0 -rw-> 1 -rw-> 0 is the shortest cycle (G2); 0 -rw-> 2 -wr-> 3
        // -wr-> 0 has one rw edge and must be preferred.
        let edges = [(0, 1, rw(1)), (1, 0, rw(2)), (0, 2, rw(3)), (2, 3, wr(4)), (3, 0, wr(5))];
        let graph = Graph::from_edges(4, 0, false, &edges);
        let cycle = graph.collapse(&graph.find_cycle().expect("cyclic"));
        assert_eq!(classify(&cycle), (AnomalyKind::GSingle, false));
        assert_eq!(cycle.len(), 3);
    }

    #[test]
    fn out_of_budget_the_shortest_cycle_is_reported_as_what_it_is() {
        // The graph of the test above, with no budget for the G-single
        // search: still an anomaly, named by the edges of the cycle reported.
        let edges = [(0, 1, rw(1)), (1, 0, rw(2)), (0, 2, rw(3)), (2, 3, wr(4)), (3, 0, wr(5))];
        let graph = Graph::from_edges(4, 0, false, &edges);
        let cycle = graph.collapse(&graph.find_cycle_within(0).expect("cyclic"));
        assert_eq!(classify(&cycle), (AnomalyKind::G2, false));
        assert_eq!(cycle.len(), 2);
    }

    #[test]
    fn two_rw_edges_are_g2() {
        let edges = [(0, 1, rw(1)), (1, 0, rw(2))];
        assert_eq!(kind_of(2, 0, &edges), Some((AnomalyKind::G2, false)));
    }

    #[test]
    fn a_cycle_through_barriers_needs_real_time_and_collapses() {
        // Transactions 0 and 1, barriers 2 and 3: 0 -> b2 -> b3 -> 1 is one
        // real-time edge; 1 -rw-> 0 closes the cycle.
        let edges = [(0, 2, Label::RealTime), (2, 3, Label::RealTime), (3, 1, Label::RealTime), (1, 0, rw(1))];
        let graph = Graph::from_edges(2, 2, true, &edges);
        let cycle = graph.collapse(&graph.find_cycle().expect("cyclic"));
        assert_eq!(cycle.len(), 2);
        assert_eq!(classify(&cycle), (AnomalyKind::GSingle, true));
    }

    #[test]
    fn data_cycles_are_reported_before_real_time_ones() {
        // A real-time cycle 0 -rt-> 1 -rw-> 0 and a data cycle 2 <-> 3.
        let edges = [(0, 4, Label::RealTime), (4, 1, Label::RealTime), (1, 0, rw(1)), (2, 3, ww(1)), (3, 2, wr(2))];
        let graph = Graph::from_edges(4, 1, true, &edges);
        let cycle = graph.collapse(&graph.find_cycle().expect("cyclic"));
        assert_eq!(classify(&cycle), (AnomalyKind::G1c, false));
    }

    #[test]
    fn an_acyclic_graph_has_no_cycle() {
        let edges = [(0, 1, ww(1)), (1, 2, wr(2)), (0, 2, rw(3))];
        assert_eq!(kind_of(3, 0, &edges), None);
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let nodes = 200_000u32;
        let mut edges: Vec<(u32, u32, Label)> = (0..nodes - 1).map(|node| (node, node + 1, wr(1))).collect();
        assert_eq!(kind_of(nodes, 0, &edges), None);
        edges.push((nodes - 1, 0, rw(1)));
        assert_eq!(kind_of(nodes, 0, &edges), Some((AnomalyKind::GSingle, false)));
    }
}
