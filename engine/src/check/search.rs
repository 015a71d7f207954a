//! The search for a linearization of one key's history: Wing & Gong's
//! backtracking with Lowe's just-in-time linearization and memoisation.
//!
//! Owns the event list and the search loop; knows nothing of keys or bytes.
//!
//! The history becomes a list of call and return events ordered by time (at
//! equal times calls come first, so operations that touch count as concurrent:
//! that can only accept more histories, never reject a good one). At each
//! node of the depth-first search, the operations that may be linearized next
//! are those whose call precedes the first return left in the list (the
//! operation owning that return must take effect before anything invoked
//! after it). Linearizing one removes its events. A node whose first return
//! belongs to an operation that cannot be linearized any more is a dead end.
//! An empty list of returns means every operation that had to take effect has.
//!
//! Three kinds of operations ([`Deadline`]):
//! - required: must take effect before its return;
//! - optional with a deadline (the shrinker's weakened writes): before its
//!   return, or never; "never" is a choice taken at its return event;
//! - unbounded (indeterminate writes): no return event; anywhere after the
//!   call, or never.
//!
//! Choices are tried in list (time) order, except that indeterminate writes
//! that no read-at can see ([`Searcher::must_be_used`]) come last: those the
//! search leaves out until an operation needs them (just in time), while the
//! others, which a late read-at may reveal, are first tried soon after their
//! call, where a write that took effect usually did. The order only decides
//! how soon an answer comes, never which. The memo is keyed on
//! (settled required and deadline operations, model state) and holds the sets
//! of unbounded operations linearized when that key was met. A node is skipped
//! when a set met before is a subset of its own: the earlier node had every
//! choice this one has (an unbounded write never has to be linearized) from
//! the same state, so this one cannot succeed where that one did not. This
//! subsumption is what keeps many indeterminate writes from multiplying the
//! search by every subset of them.
//!
//! Invariants: an operation is unlinked from the event list iff it is settled
//! on the current path, and operations are relinked in the reverse order of
//! unlinking; the memo never holds more than `states_max` entries, and running
//! out of it answers [`Search::Unknown`], never a pass.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};

use super::history::Version;
use super::model::{Seen, State, Step};

/// By when an operation must have taken effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// It must take effect by this time.
    Required(u64),
    /// It may take effect by this time, or never.
    Optional(u64),
    /// It may take effect at any time after its invocation, or never.
    Unbounded,
}

impl Deadline {
    fn time(self) -> Option<u64> {
        match self {
            Deadline::Required(time) | Deadline::Optional(time) => Some(time),
            Deadline::Unbounded => None,
        }
    }
}

/// One operation of the key as the search sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyOp {
    pub(crate) step: Step,
    pub(crate) invoke_time: u64,
    pub(crate) deadline: Deadline,
}

/// How the search ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Search {
    /// A linearization exists.
    Linearizable { states_explored: u64 },
    /// None exists. `longest_prefix` is the longest partial linearization met
    /// (operation indices in order) and `blocked` the operation whose return
    /// the search could not get past from it.
    NotLinearizable { longest_prefix: Vec<usize>, blocked: usize, states_explored: u64 },
    /// The memo filled up before an answer.
    Unknown { states_explored: u64 },
}

const NIL: usize = usize::MAX;

#[derive(Clone, Copy, Debug)]
struct Event {
    op: usize,
    is_call: bool,
}

/// The doubly linked event list, with unlinking that can be undone
/// ("dancing links"). Node `head` is a sentinel before the first event.
struct EventList {
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
    call_node: Vec<usize>,
    return_node: Vec<usize>,
}

impl EventList {
    fn new(ops: &[KeyOp]) -> EventList {
        let mut timed: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (op, key_op) in ops.iter().enumerate() {
            // `false` sorts first: calls before returns at equal times.
            timed.push((key_op.invoke_time, false, op));
            if let Some(time) = key_op.deadline.time() {
                timed.push((time, true, op));
            }
        }
        timed.sort_unstable();
        let count = timed.len();
        let head = count;
        let mut list = EventList {
            events: Vec::with_capacity(count),
            next: vec![NIL; count + 1],
            prev: vec![NIL; count + 1],
            head,
            call_node: vec![NIL; ops.len()],
            return_node: vec![NIL; ops.len()],
        };
        let mut previous = head;
        for (node, &(_, is_return, op)) in timed.iter().enumerate() {
            list.events.push(Event { op, is_call: !is_return });
            if is_return {
                list.return_node[op] = node;
            } else {
                list.call_node[op] = node;
            }
            list.next[previous] = node;
            list.prev[node] = previous;
            previous = node;
        }
        list
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn unlink(&mut self, node: usize) {
        let (before, after) = (self.prev[node], self.next[node]);
        self.next[before] = after;
        if after != NIL {
            self.prev[after] = before;
        }
    }

    fn relink(&mut self, node: usize) {
        let (before, after) = (self.prev[node], self.next[node]);
        self.next[before] = node;
        if after != NIL {
            self.prev[after] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if self.return_node[op] != NIL {
            self.unlink(self.return_node[op]);
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.return_node[op] != NIL {
            self.relink(self.return_node[op]);
        }
        self.relink(self.call_node[op]);
    }
}

/// A set of small integers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }
    fn clear(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }
    fn contains(&self, index: usize) -> bool {
        self.0[index / 64] & (1 << (index % 64)) != 0
    }
    fn is_subset(&self, other: &Bitset) -> bool {
        self.0.iter().zip(&other.0).all(|(mine, theirs)| mine & !theirs == 0)
    }
}

/// One step the search may take from a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    /// Linearize the operation now.
    Linearize(usize),
    /// Its deadline has come: the optional operation never took effect.
    Omit(usize),
}

impl Choice {
    fn op(self) -> usize {
        match self {
            Choice::Linearize(op) | Choice::Omit(op) => op,
        }
    }
}

/// A node of the depth-first search: the state on entry, its choices, and the
/// choice being explored below it with the other states it could lead to.
struct Node {
    entry_state: State,
    choices: Vec<Choice>,
    cursor: usize,
    taken: Option<Choice>,
    /// The step into this node forbids a put next ([`Searcher::must_be_used`]).
    restricted: bool,
    alternatives: Vec<State>,
}

/// Memo: (settled required and deadline operations, state) -> the sets of
/// unbounded operations linearized when it was met, none a subset of another.
/// A deterministic hasher: the memo is never iterated in hash order, but the
/// checker stays free of process-wide randomness all the same.
/// The key's last element says whether the step into the node was a
/// [`Searcher::must_be_used`] write, which restricts the node's choices.
type Memo = HashMap<(Bitset, State, bool), Vec<Bitset>, BuildHasherDefault<DefaultHasher>>;

struct Searcher<'a> {
    ops: &'a [KeyOp],
    /// Per operation: its index in `settled` or, if unbounded, in `unbounded`.
    rank: Vec<usize>,
    /// Per operation: a write that may never have happened (unbounded or
    /// optional) and that no read-at can see later.
    /// Linearized right before a put it changes nothing that any operation
    /// observes (the put hides it; leaving it out only lowers the put's lower
    /// bound), so the search never puts a put right after one: every
    /// linearization has a shorter one without that write, which it finds.
    must_be_used: Vec<bool>,
    /// `GetAt` operations sorted by `at_version`, for pruning the chain.
    reads_at: Vec<(Version, usize)>,
    list: EventList,
    settled: Bitset,
    unbounded: Bitset,
    state: State,
    stack: Vec<Node>,
    memo: Memo,
    states_explored: u64,
    states_max: u64,
    longest: Option<(Vec<usize>, usize)>,
}

/// Searches for a linearization of `ops`, exploring at most `states_max`
/// distinct nodes.
pub(crate) fn search(ops: &[KeyOp], states_max: u64) -> Search {
    let mut reads_at: Vec<(Version, usize)> =
        ops.iter().enumerate().filter_map(|(op, key_op)| key_op.step.at_version().map(|at| (at, op))).collect();
    reads_at.sort_unstable();
    let (mut settled_count, mut unbounded_count) = (0, 0);
    let rank = ops
        .iter()
        .map(|key_op| {
            let counter =
                if key_op.deadline == Deadline::Unbounded { &mut unbounded_count } else { &mut settled_count };
            *counter += 1;
            *counter - 1
        })
        .collect();
    let must_be_used = must_be_used(ops);
    let mut searcher = Searcher {
        ops,
        rank,
        must_be_used,
        reads_at,
        list: EventList::new(ops),
        settled: Bitset::new(settled_count),
        unbounded: Bitset::new(unbounded_count),
        state: State::default(),
        stack: Vec::new(),
        memo: Memo::default(),
        states_explored: 0,
        states_max,
        longest: None,
    };
    searcher.run()
}

/// See [`Searcher::must_be_used`]. A write is exempt when a read-at could see
/// its entry after later writes: one returning its value (or, for a delete,
/// one returning not-found).
fn must_be_used(ops: &[KeyOp]) -> Vec<bool> {
    let mut values_read_at = Vec::new();
    let mut not_found_read_at = false;
    for key_op in ops {
        match key_op.step {
            Step::GetAt { seen: Seen::Value { value, .. }, .. } => values_read_at.push(value),
            Step::GetAt { seen: Seen::NotFound, .. } => not_found_read_at = true,
            _ => {}
        }
    }
    ops.iter()
        .map(|key_op| {
            if let Deadline::Required(_) = key_op.deadline {
                return false;
            }
            match key_op.step {
                Step::Put { value, .. } | Step::Cas { value, .. } => !values_read_at.contains(&value),
                Step::Delete { .. } => !not_found_read_at,
                _ => false,
            }
        })
        .collect()
}

/// Returned when the memo is full.
struct OutOfStates;

impl Searcher<'_> {
    fn run(&mut self) -> Search {
        let states_explored = |searcher: &Searcher| searcher.states_explored;
        match self.walk() {
            Ok(true) => Search::Linearizable { states_explored: states_explored(self) },
            Ok(false) => {
                // A failed search always meets a required return unless every
                // return is optional, and then it cannot fail; stay total anyway.
                let (longest_prefix, blocked) = self.longest.take().unwrap_or_default();
                Search::NotLinearizable { longest_prefix, blocked, states_explored: states_explored(self) }
            }
            Err(OutOfStates) => Search::Unknown { states_explored: states_explored(self) },
        }
    }

    /// True when a linearization was found, false when none exists.
    fn walk(&mut self) -> Result<bool, OutOfStates> {
        loop {
            // Enter the node for the current state.
            let restricted = self.restricted();
            let Some(choices) = self.choices(restricted) else {
                return Ok(true);
            };
            self.stack.push(Node {
                entry_state: self.state.clone(),
                choices,
                cursor: 0,
                taken: None,
                restricted,
                alternatives: Vec::new(),
            });
            // Find the next unexplored step, backing up through exhausted nodes.
            while !self.step_from_top()? {
                self.stack.pop();
                if self.stack.is_empty() {
                    return Ok(false);
                }
            }
        }
    }

    /// The choices at the current node in the order of the module doc; `None`
    /// when no return event is left, i.e. the current prefix is a
    /// linearization.
    fn choices(&mut self, restricted: bool) -> Option<Vec<Choice>> {
        let mut choices = Vec::new();
        let mut just_in_time = Vec::new();
        let mut node = self.list.first();
        while node != NIL {
            let Event { op, is_call } = self.list.events[node];
            if is_call && restricted && matches!(self.ops[op].step, Step::Put { .. }) {
                node = self.list.next[node];
                continue;
            }
            if !is_call {
                match self.ops[op].deadline {
                    Deadline::Optional(_) => choices.push(Choice::Omit(op)),
                    _ => self.note_blocked(op),
                }
                choices.extend(just_in_time);
                return Some(choices);
            }
            if self.ops[op].deadline == Deadline::Unbounded && self.must_be_used[op] {
                just_in_time.push(Choice::Linearize(op));
            } else {
                choices.push(Choice::Linearize(op));
            }
            node = self.list.next[node];
        }
        None
    }

    /// True when the step into the current node linearized a write that the
    /// next step must not hide ([`Searcher::must_be_used`]).
    fn restricted(&self) -> bool {
        self.stack.last().and_then(|node| node.taken.map(|choice| self.restricts(node, choice))).unwrap_or(false)
    }

    /// Whether taking `choice` at `node` restricts the next node. Leaving an
    /// optional operation out is no step of the linearization: it passes the
    /// restriction on.
    fn restricts(&self, node: &Node, choice: Choice) -> bool {
        match choice {
            Choice::Linearize(op) => self.must_be_used[op],
            Choice::Omit(_) => node.restricted,
        }
    }

    /// Moves to a new child of the top node: the next alternative state of the
    /// choice taken there, or the next choice. False when the node is spent
    /// (its taken choice, if any, undone).
    fn step_from_top(&mut self) -> Result<bool, OutOfStates> {
        let mut node = self.stack.pop().expect("a node to step from");
        let result = self.step_from(&mut node);
        self.stack.push(node);
        result
    }

    fn step_from(&mut self, node: &mut Node) -> Result<bool, OutOfStates> {
        if let Some(choice) = node.taken {
            let op = choice.op();
            let restricts = self.restricts(node, choice);
            if let Some(next) = self.take_new(&mut node.alternatives, restricts)? {
                self.state = next;
                return Ok(true);
            }
            self.mark(op, false);
            self.list.unlift(op);
            self.state = node.entry_state.clone();
            node.taken = None;
        }
        while let Some(&choice) = node.choices.get(node.cursor) {
            node.cursor += 1;
            let op = choice.op();
            let mut candidates = match choice {
                Choice::Linearize(_) => node.entry_state.successors(&self.ops[op].step),
                Choice::Omit(_) => vec![node.entry_state.clone()],
            };
            self.mark(op, true);
            let reads_at = self.remaining_reads_at();
            for candidate in &mut candidates {
                candidate.prune(&reads_at);
            }
            // `take_new` pops: reverse to try them in the model's order.
            candidates.reverse();
            if let Some(next) = self.take_new(&mut candidates, self.restricts(node, choice))? {
                self.state = next;
                self.list.lift(op);
                node.taken = Some(choice);
                node.alternatives = candidates;
                return Ok(true);
            }
            self.mark(op, false);
        }
        Ok(false)
    }

    /// Records `op` as settled on the current path, or not.
    fn mark(&mut self, op: usize, settled: bool) {
        let set = if self.ops[op].deadline == Deadline::Unbounded { &mut self.unbounded } else { &mut self.settled };
        if settled {
            set.set(self.rank[op]);
        } else {
            set.clear(self.rank[op]);
        }
    }

    /// Pops the first candidate that the memo does not subsume, and records it.
    /// `restricted`: the step leading there restricts the next one.
    fn take_new(&mut self, candidates: &mut Vec<State>, restricted: bool) -> Result<Option<State>, OutOfStates> {
        while let Some(candidate) = candidates.pop() {
            let seen = self.memo.entry((self.settled.clone(), candidate.clone(), restricted)).or_default();
            if seen.iter().any(|earlier| earlier.is_subset(&self.unbounded)) {
                continue;
            }
            if self.states_explored >= self.states_max {
                return Err(OutOfStates);
            }
            // Sets that contain this one are subsumed by it from now on.
            seen.retain(|earlier| !self.unbounded.is_subset(earlier));
            seen.push(self.unbounded.clone());
            self.states_explored += 1;
            return Ok(Some(candidate));
        }
        Ok(None)
    }

    /// The `at_version`s of the `GetAt` reads not linearized yet, ascending.
    fn remaining_reads_at(&self) -> Vec<Version> {
        self.reads_at.iter().filter(|(_, op)| !self.settled.contains(self.rank[*op])).map(|(at, _)| *at).collect()
    }

    fn note_blocked(&mut self, op: usize) {
        let depth = self.stack.len();
        if self.longest.as_ref().is_none_or(|(prefix, _)| depth > prefix.len()) {
            let prefix = self
                .stack
                .iter()
                .filter_map(|node| match node.taken {
                    Some(Choice::Linearize(op)) => Some(op),
                    _ => None,
                })
                .collect();
            self.longest = Some((prefix, op));
        }
    }
}
