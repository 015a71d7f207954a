//! The search for a linearization of one key's history: Wing & Gong's
//! backtracking with Lowe's just-in-time linearization and memoisation.
//!
//! Owns the event list and the search loop; knows nothing of keys or bytes.
//!
//! The history becomes a list of call and return events ordered by time (at
//! equal times calls come first, so operations that touch count as concurrent:
//! that can only accept more histories, never reject a good one). The search
//! walks the list: at a call it tries to linearize that operation now (the
//! model must accept it and the pair (set of linearized operations, resulting
//! state) must be new), removes its events and starts again from the head; at
//! a return it has met an operation that had to take effect before it returned
//! but could not, so it undoes the last choice. Indeterminate writes have no
//! return event: they may be linearized anywhere after their call, or never.
//! Operations with [`Deadline::Optional`] (the shrinker's weakened writes) may
//! take effect before their return or never: at their return event the search
//! records that they were left out, as a step of its own, so that the memo sees
//! the same set whether they took effect or not. Reaching the end of the list
//! means every operation with a return has been linearized or left out.
//!
//! Invariants: the undo stack and the event list change together (an operation
//! is on the stack iff its events are unlinked, and they are relinked in the
//! reverse order of unlinking); the memo never holds more than `states_max`
//! entries, and running out of it answers [`Search::Unknown`], never a pass.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, DefaultHasher};

use super::history::Version;
use super::model::{State, Step};

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
    NotLinearizable {
        longest_prefix: Vec<usize>,
        blocked: usize,
        states_explored: u64,
    },
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
            list.events.push(Event {
                op,
                is_call: !is_return,
            });
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

/// A set of operation indices.
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
}

/// One operation done (linearized, or left out at its optional deadline): the
/// state before it, and the other states it could have led to, not tried yet.
struct Frame {
    op: usize,
    previous: State,
    alternatives: Vec<State>,
}

/// A deterministic hasher: the memo's iteration order is never used, but the
/// checker stays free of process-wide randomness all the same.
type Memo = HashSet<(Bitset, State), BuildHasherDefault<DefaultHasher>>;

struct Searcher<'a> {
    ops: &'a [KeyOp],
    /// `GetAt` operations sorted by `at_version`, for pruning the chain.
    reads_at: Vec<(Version, usize)>,
    list: EventList,
    linearized: Bitset,
    state: State,
    stack: Vec<Frame>,
    memo: Memo,
    states_max: u64,
    longest: Option<(Vec<usize>, usize)>,
}

/// Searches for a linearization of `ops`, exploring at most `states_max`
/// distinct (linearized set, state) pairs.
pub(crate) fn search(ops: &[KeyOp], states_max: u64) -> Search {
    let mut reads_at: Vec<(Version, usize)> = ops
        .iter()
        .enumerate()
        .filter_map(|(op, key_op)| key_op.step.at_version().map(|at| (at, op)))
        .collect();
    reads_at.sort_unstable();
    let mut searcher = Searcher {
        ops,
        reads_at,
        list: EventList::new(ops),
        linearized: Bitset::new(ops.len()),
        state: State::default(),
        stack: Vec::new(),
        memo: Memo::default(),
        states_max,
        longest: None,
    };
    searcher.run()
}

/// Returned when the memo is full.
struct OutOfStates;

impl Searcher<'_> {
    fn states_explored(&self) -> u64 {
        self.memo.len() as u64
    }

    fn run(&mut self) -> Search {
        match self.walk() {
            Ok(true) => Search::Linearizable {
                states_explored: self.states_explored(),
            },
            Ok(false) => {
                let (longest_prefix, blocked) = self
                    .longest
                    .take()
                    .expect("a failed search met at least one return");
                Search::NotLinearizable {
                    longest_prefix,
                    blocked,
                    states_explored: self.states_explored(),
                }
            }
            Err(OutOfStates) => Search::Unknown {
                states_explored: self.states_explored(),
            },
        }
    }

    /// True when a linearization was found, false when none exists.
    fn walk(&mut self) -> Result<bool, OutOfStates> {
        let mut node = self.list.first();
        while node != NIL {
            let Event { op, is_call } = self.list.events[node];
            if is_call {
                let candidates = self.state.successors(&self.ops[op].step);
                node = if self.advance(op, candidates)? {
                    self.list.first()
                } else {
                    self.list.next[node]
                };
                continue;
            }
            if let Deadline::Optional(_) = self.ops[op].deadline {
                // Its deadline passed: from here on it never took effect.
                if self.advance(op, vec![self.state.clone()])? {
                    node = self.list.first();
                    continue;
                }
            } else {
                self.note_blocked(op);
            }
            match self.backtrack()? {
                Some(resume) => node = resume,
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Marks `op` done, moving to the first of `candidates` (states after it,
    /// in the model's order) not explored before; the rest stay on the stack as
    /// alternatives. False when every candidate was explored already.
    fn advance(&mut self, op: usize, mut candidates: Vec<State>) -> Result<bool, OutOfStates> {
        self.linearized.set(op);
        let observable_min = self.observable_min();
        for candidate in &mut candidates {
            candidate.prune(observable_min);
        }
        candidates.reverse();
        match self.take_new(&mut candidates)? {
            Some(next) => {
                let previous = std::mem::replace(&mut self.state, next);
                self.stack.push(Frame {
                    op,
                    previous,
                    alternatives: candidates,
                });
                self.list.lift(op);
                Ok(true)
            }
            None => {
                self.linearized.clear(op);
                Ok(false)
            }
        }
    }

    /// Undoes the last choice: tries its next alternative state, or gives the
    /// operation back to the list. Returns the node to continue from (`NIL`
    /// ends the walk with success), or `None` when no choice is left.
    fn backtrack(&mut self) -> Result<Option<usize>, OutOfStates> {
        let Some(mut frame) = self.stack.pop() else {
            return Ok(None);
        };
        if let Some(next) = self.take_new(&mut frame.alternatives)? {
            self.state = next;
            self.stack.push(frame);
            return Ok(Some(self.list.first()));
        }
        self.linearized.clear(frame.op);
        self.state = frame.previous;
        self.list.unlift(frame.op);
        // Continue just after its call. If that is a return, `walk` backtracks
        // again; if it is the end of the list, only optional calls remain
        // unlinearized and the prefix is complete.
        Ok(Some(self.list.next[self.list.call_node[frame.op]]))
    }

    /// Pops memo-new candidates (`self.linearized` already holds the operation).
    fn take_new(&mut self, candidates: &mut Vec<State>) -> Result<Option<State>, OutOfStates> {
        while let Some(candidate) = candidates.pop() {
            let key = (self.linearized.clone(), candidate);
            if self.memo.contains(&key) {
                continue;
            }
            if self.states_explored() >= self.states_max {
                return Err(OutOfStates);
            }
            let candidate = key.1.clone();
            self.memo.insert(key);
            return Ok(Some(candidate));
        }
        Ok(None)
    }

    /// The smallest `at_version` of a `GetAt` not linearized yet.
    fn observable_min(&self) -> Version {
        self.reads_at
            .iter()
            .find(|(_, op)| !self.linearized.contains(*op))
            .map_or(Version::MAX, |(at, _)| *at)
    }

    fn note_blocked(&mut self, op: usize) {
        let depth = self.stack.len();
        if self
            .longest
            .as_ref()
            .is_none_or(|(prefix, _)| depth > prefix.len())
        {
            let prefix = self.stack.iter().map(|frame| frame.op).collect();
            self.longest = Some((prefix, op));
        }
    }
}
