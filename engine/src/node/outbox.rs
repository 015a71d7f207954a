//! The messages one core will send, grouped by destination core (DESIGN §3, §4).
//!
//! Everything one loop iteration produces for a destination core leaves as one
//! frame. Heartbeats are further coalesced: the heartbeats of every group this core
//! leads, for one destination core, become one [`PeerMessage::Heartbeats`], and
//! periodic ones wait for the core's heartbeat boundary so that an idle core sends
//! one heartbeat message per destination core per interval, whatever its shard
//! count. Heartbeats that confirm a read leave at once.

use std::collections::BTreeMap;

use corekv_rpc::kv::ShardId;
use corekv_rpc::map::Replica;
use corekv_rpc::node::{HeartbeatItem, HeartbeatResponseItem, PeerBatch, PeerMessage};
use corekv_rpc::raft::{Message, MessageBody, NodeId};

/// Outbound messages of one core, by destination core.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    messages: BTreeMap<Replica, Vec<PeerMessage>>,
    heartbeats: BTreeMap<Replica, Vec<HeartbeatItem>>,
    heartbeats_urgent: bool,
    responses: BTreeMap<Replica, Vec<HeartbeatResponseItem>>,
}

/// What [`Outbox::take`] handed out, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    pub frames: u64,
    pub messages: u64,
    pub heartbeat_messages: u64,
}

impl Outbox {
    /// Queues `message` of group `shard` for `dest`. `urgent`: a heartbeat that a
    /// read waits for.
    pub fn push(&mut self, dest: Replica, shard: ShardId, message: Message, urgent: bool) {
        match message.body {
            MessageBody::Heartbeat { commit, read_round } => {
                let item = HeartbeatItem { shard, term: message.term, commit, read_round };
                self.heartbeats.entry(dest).or_default().push(item);
                self.heartbeats_urgent |= urgent;
            }
            MessageBody::HeartbeatResponse { read_round } => {
                let item = HeartbeatResponseItem { shard, term: message.term, read_round };
                self.responses.entry(dest).or_default().push(item);
            }
            _ => self.messages.entry(dest).or_default().push(PeerMessage::Raft { shard, message }),
        }
    }

    /// Queues a message that is not a group's Raft message (transaction traffic).
    pub fn push_other(&mut self, dest: Replica, message: PeerMessage) {
        self.messages.entry(dest).or_default().push(message);
    }

    /// True when something would leave before the next heartbeat boundary.
    pub fn has_due(&self) -> bool {
        !self.messages.is_empty()
            || !self.responses.is_empty()
            || (self.heartbeats_urgent && !self.heartbeats.is_empty())
    }

    /// One batch per destination core: every message queued, heartbeat answers
    /// coalesced, and the coalesced heartbeats when `heartbeat_boundary` (or a read
    /// waits for them). `me` is this node.
    pub fn take(&mut self, me: NodeId, clock: u64, heartbeat_boundary: bool) -> (Vec<(Replica, PeerBatch)>, Taken) {
        let mut batches: BTreeMap<Replica, PeerBatch> = BTreeMap::new();
        let mut taken = Taken::default();
        for (dest, messages) in std::mem::take(&mut self.messages) {
            taken.messages += messages.len() as u64;
            batches.insert(dest, PeerBatch { clock, messages, ..PeerBatch::default() }); // the queue becomes the frame
        }
        for (dest, items) in std::mem::take(&mut self.responses) {
            taken.messages += 1;
            let message = PeerMessage::HeartbeatResponses { from: me, to: dest.node, items };
            batches.entry(dest).or_insert_with(|| PeerBatch { clock, ..PeerBatch::default() }).messages.push(message);
        }
        if heartbeat_boundary || self.heartbeats_urgent {
            self.heartbeats_urgent = false;
            for (dest, items) in std::mem::take(&mut self.heartbeats) {
                taken.messages += 1;
                taken.heartbeat_messages += 1;
                let message = PeerMessage::Heartbeats { from: me, to: dest.node, items };
                batches
                    .entry(dest)
                    .or_insert_with(|| PeerBatch { clock, ..PeerBatch::default() })
                    .messages
                    .push(message);
            }
        }
        taken.frames = batches.len() as u64;
        (batches.into_iter().collect(), taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(from: NodeId, to: NodeId) -> Message {
        Message { from, to, term: 3, body: MessageBody::Heartbeat { commit: 5, read_round: 1 } }
    }

    #[test]
    fn heartbeats_of_many_groups_to_one_core_are_one_message_at_the_boundary() {
        let mut out = Outbox::default();
        let dest = Replica { node: 2, core: 1 };
        for shard in 0..64 {
            out.push(dest, shard, hb(1, 2), false);
        }
        let (batches, taken) = out.take(1, 9, false);
        assert!(batches.is_empty(), "periodic heartbeats wait for the boundary");
        assert_eq!(taken, Taken::default());
        let (batches, taken) = out.take(1, 9, true);
        assert_eq!(batches.len(), 1);
        assert_eq!(taken, Taken { frames: 1, messages: 1, heartbeat_messages: 1 });
        assert_eq!(batches[0].1.clock, 9, "every frame carries the sender's clock");
        match &batches[0].1.messages[0] {
            PeerMessage::Heartbeats { items, .. } => assert_eq!(items.len(), 64),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!out.has_due());
    }

    #[test]
    fn a_read_heartbeat_leaves_at_once_with_the_others() {
        let mut out = Outbox::default();
        let dest = Replica { node: 2, core: 0 };
        out.push(dest, 1, hb(1, 2), false);
        out.push(dest, 2, hb(1, 2), true);
        let (batches, taken) = out.take(1, 9, false);
        assert_eq!(taken.heartbeat_messages, 1);
        assert_eq!(batches.len(), 1);
    }

    #[test]
    fn all_messages_for_one_core_share_a_frame() {
        let mut out = Outbox::default();
        let a = Replica { node: 2, core: 0 };
        let b = Replica { node: 3, core: 1 };
        for shard in 0..10 {
            out.push(a, shard, Message { from: 1, to: 2, term: 1, body: MessageBody::TimeoutNow }, false);
            out.push(b, shard, Message { from: 1, to: 3, term: 1, body: MessageBody::TimeoutNow }, false);
            let resp = Message { from: 1, to: 3, term: 1, body: MessageBody::HeartbeatResponse { read_round: 2 } };
            out.push(b, shard, resp, false);
        }
        let (batches, taken) = out.take(1, 9, false);
        assert_eq!(taken.frames, 2);
        assert_eq!(taken.messages, 21, "20 Raft messages and one coalesced answer");
        assert_eq!(batches.len(), 2);
    }
}
