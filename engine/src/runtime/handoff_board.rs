//! The states of hand-offs between two cores of this process (issue 12): a
//! stopped source's core posts its replica's whole state for the target core,
//! which takes it at its next tick. The state moves in memory (its snapshot is
//! shared, not copied); a crash loses it with both replicas' cores, and the
//! target asks the restarted source again.
//!
//! One slot per core, each a mutex taken only on this rare path: a core looks
//! at its own slot's flag every tick without locking, and locks it only when
//! something waits there. A slot keeps the newest state per shard (a source
//! asked twice posts twice), so it holds at most one state per shard.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use corekv_rpc::map::CoreIndex;

use crate::node::Handoff;

/// The hand-off slots of one process's cores.
#[derive(Debug)]
pub struct HandoffBoard {
    slots: Vec<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    waiting: AtomicBool,
    states: Mutex<Vec<Handoff>>,
}

impl HandoffBoard {
    /// A board for `cores` cores.
    pub fn new(cores: u16) -> HandoffBoard {
        HandoffBoard { slots: (0..cores).map(|_| Slot::default()).collect() }
    }

    /// Posts `state` for core `core` (a core this process does not run: dropped).
    pub fn post(&self, core: CoreIndex, state: Handoff) {
        let Some(slot) = self.slots.get(usize::from(core)) else { return };
        let mut states = slot.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        states.retain(|s| s.shard() != state.shard());
        states.push(state);
        slot.waiting.store(true, Ordering::Release);
    }

    /// The states posted for core `core` since it last looked.
    pub fn take(&self, core: CoreIndex) -> Vec<Handoff> {
        let Some(slot) = self.slots.get(usize::from(core)) else { return Vec::new() };
        if !slot.waiting.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        let mut states = slot.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut *states)
    }
}
