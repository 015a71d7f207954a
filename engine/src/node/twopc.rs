//! Two-phase commit between shard leaders (DESIGN §8): the participant's and the
//! anchor's side, what applied transaction entries make a leader send, the
//! timers that resend and recover, leadership changes, and the messages. Sans
//! I/O, on the core that owns the shards; the client-facing side (locks, reads,
//! commits received) is in [`super::txn`].
//!
//! Every message is safe to lose, repeat and reorder: a participant votes from
//! replicated state when it can (an intent repeats its vote, a resolved
//! transaction answers its decision), an anchor answers queries from its record
//! and writes an abort decision before anyone acts when it has none, and the
//! timers resend what has no answer.

use std::collections::{BTreeMap, BTreeSet};

use corekv_rpc::kv::{Response, ShardId};
use corekv_rpc::map::Replica;
use corekv_rpc::node::{PeerMessage, TxnPeerMessage};
use corekv_rpc::raft::Index;
use corekv_rpc::txn::{AbortReason, Decision, ResolveItem, TxnId, TxnMeta, TxnSets, Vote};

use super::group::PendingRead;
use super::txn::{Parked, Resolving, TXN_QUERY_AFTER_TICKS, TXN_RESEND_TICKS, TXN_VOTE_TIMEOUT_TICKS, info, lock_keys};
use super::{NodeCore, PlantedBug};
use crate::kv::txn::{DecideCommand, PrepareCommand};
use crate::kv::{Applied, CommandBody};
use crate::txn::lock::TxnState as LockTxnState;

impl NodeCore {
    // ----- participants ------------------------------------------------------

    /// Prepares `txn`'s part on `shard` (for the anchor `anchor`): votes at once
    /// from replicated state when it can, else proposes the prepare record.
    pub(super) fn prepare_here(&mut self, shard: ShardId, anchor: ShardId, txn: TxnMeta, mut sets: TxnSets) {
        self.plant_skip_validation(shard, &mut sets);
        let g = &self.groups[&shard];
        if !g.is_leader {
            return;
        }
        if let Some(decision) = g.sm.txns().resolved(&txn.id) {
            return self.vote(shard, anchor, txn.id, Vote::Decided(decision));
        }
        if let Some(intent) = g.sm.txns().intent(&txn.id) {
            let bound = intent.bound;
            return self.vote(shard, anchor, txn.id, Vote::Yes { bound });
        }
        if g.txns.preparing.contains(&txn.id) {
            return; // its apply votes
        }
        if let Err(reason) = self.lock_for_prepare(shard, &txn, &sets) {
            return self.vote(shard, anchor, txn.id, Vote::No { reason });
        }
        let bound = self.hlc.now(self.now_ms);
        let g = self.groups.get_mut(&shard).expect("known group");
        g.txns.preparing.insert(txn.id);
        let prepare = CommandBody::Prepare(PrepareCommand { txn, anchor, bound, sets });
        self.propose_txn(shard, prepare, None, None, Some(txn.id));
    }

    /// Delivers `shard`'s vote to its anchor.
    pub(super) fn vote(&mut self, shard: ShardId, anchor: ShardId, txn: TxnId, vote: Vote) {
        if anchor == shard {
            self.on_vote(anchor, shard, txn, vote);
        } else {
            self.send_txn(shard, anchor, TxnPeerMessage::Vote { txn, vote });
        }
    }

    /// Decisions for `shard` to apply (from its anchor).
    pub(super) fn on_resolve(&mut self, shard: ShardId, anchor: ShardId, items: Vec<ResolveItem>) {
        let g = self.groups.get_mut(&shard).expect("known group");
        if !g.is_leader {
            return;
        }
        let mut done = Vec::new();
        for item in items {
            if g.sm.txns().intent(&item.txn).is_none() && g.sm.txns().resolved(&item.txn).is_some() {
                done.push(item.txn); // applied before: say so again
            } else {
                if self.cfg.planted_bug == PlantedBug::ReleaseLocksBeforeDecision {
                    g.locks.release(item.txn, self.now_ms);
                }
                g.txns.resolve_anchor.insert(item.txn, anchor);
                g.txns.resolve_queue.insert(item.txn, item);
            }
        }
        if !g.txns.resolve_queue.is_empty() {
            self.dirty.insert(shard);
        }
        if !done.is_empty() {
            self.send_txn(shard, anchor, TxnPeerMessage::Resolved { txns: done });
        }
    }

    // ----- the anchor --------------------------------------------------------

    pub(super) fn on_vote(&mut self, anchor: ShardId, from: ShardId, txn: TxnId, vote: Vote) {
        let Some(g) = self.groups.get_mut(&anchor) else { return };
        let Some(coord) = g.txns.coords.get_mut(&txn) else { return };
        if coord.deciding {
            return;
        }
        let decision = match vote {
            Vote::No { reason } => Some(Decision::Abort(reason)),
            Vote::Decided(decision) => Some(decision),
            Vote::Yes { bound } => {
                coord.votes.insert(from, bound);
                (coord.votes.len() == coord.shards.len())
                    .then(|| Decision::Commit(coord.votes.values().copied().max().unwrap_or(0)))
            }
        };
        if let Some(decision) = decision {
            self.decide(anchor, txn, decision);
        }
    }

    /// Proposes the coordinator's decision for `txn`.
    pub(super) fn decide(&mut self, anchor: ShardId, txn: TxnId, decision: Decision) {
        let g = self.groups.get_mut(&anchor).expect("known group");
        let Some(coord) = g.txns.coords.get_mut(&txn) else { return };
        coord.deciding = true;
        let participants = coord.shards.iter().map(|s| s.shard).filter(|&s| s != anchor).collect();
        let cmd = DecideCommand { txn, decision, participants, tag: Some(coord.tag), attempt_ts: coord.txn.attempt_ts };
        // The client's reply comes from the decide entry's apply.
        let client = coord.client.take();
        if client.is_some() {
            self.requests_pending -= 1;
        }
        let proposed = self.propose_txn(anchor, CommandBody::Decide(cmd), client, None, None);
        let g = self.groups.get_mut(&anchor).expect("known group");
        if proposed && self.cfg.planted_bug == PlantedBug::ReleaseLocksBeforeDecision {
            g.locks.release(txn, self.now_ms);
        }
        if !g.is_leader {
            // A leader change: the coordinator is gone, the new leader decides
            // from the participants' queries or the client's retry.
            g.txns.coords.remove(&txn);
        } else if !proposed && let Some(coord) = g.txns.coords.get_mut(&txn) {
            // No room for the entry now (the client heard busy and retries): the
            // next tick decides again.
            coord.deciding = false;
        }
    }

    pub(super) fn on_query(&mut self, anchor: ShardId, from: ShardId, txn: TxnId) {
        let g = self.groups.get_mut(&anchor).expect("known group");
        if !g.is_leader {
            return;
        }
        if let Some(decision) = g.sm.txns().decision(&txn) {
            let item = ResolveItem { txn, decision, attempt_ts: 0 };
            self.send_txn(anchor, from, TxnPeerMessage::Resolve { items: vec![item] });
        } else if !g.txns.coords.contains_key(&txn) {
            // Nobody coordinates it and nothing is decided: abort it, durably,
            // before anyone acts; a later commit finds this decision.
            let cmd = DecideCommand {
                txn,
                decision: Decision::Abort(AbortReason::Timeout),
                participants: vec![from],
                tag: None,
                attempt_ts: 0,
            };
            self.propose_txn(anchor, CommandBody::Decide(cmd), None, None, None);
        }
    }

    pub(super) fn on_resolved(&mut self, anchor: ShardId, from: ShardId, txns: Vec<TxnId>) {
        let g = self.groups.get_mut(&anchor).expect("known group");
        if !g.is_leader {
            return;
        }
        for txn in txns {
            if let Some(r) = g.txns.resolving.get_mut(&txn) {
                r.pending.remove(&from);
                if r.pending.is_empty() {
                    g.txns.resolving.remove(&txn);
                    g.txns.forget_queue.insert(txn);
                    self.dirty.insert(anchor);
                }
            }
        }
    }

    // ----- what applied entries produce ----------------------------------------

    /// After `shard` applied an entry: locks to release, votes and decisions to
    /// send (leaders only), reads an intent held to serve.
    pub(super) fn after_apply(&mut self, shard: ShardId, index: Index, applied: &Applied) {
        let now_ms = self.now_ms;
        let tick = self.ticks;
        let g = self.groups.get_mut(&shard).expect("known group");
        if let Some(txn) = g.txns.proposed.remove(&index) {
            g.locks.release(txn, now_ms);
        }
        if !g.is_leader {
            return;
        }
        match applied {
            Applied::Vote { txn, anchor, vote } => {
                g.txns.preparing.remove(txn);
                match vote {
                    Vote::No { reason } => g.locks.abort(*txn, *reason, now_ms),
                    Vote::Yes { .. } => {
                        // A prepare an earlier leader proposed: this table never
                        // granted its locks, so it takes them now, as prepared (its
                        // intent already stops every conflicting prepare).
                        if let Some(intent) = g.sm.txns().intent(txn)
                            && g.locks.state(*txn) != Some(LockTxnState::Prepared)
                        {
                            if g.locks.is_waiting(*txn) {
                                // A stale request of a transaction that has
                                // since committed: it cannot be granted.
                                g.locks.abort(*txn, AbortReason::Conflict, now_ms);
                            }
                            let (reads, ranges, writes) = lock_keys(&intent.sets);
                            let info = info(&intent.txn, now_ms);
                            g.locks.install_prepared(&info, &reads, &ranges, &writes, now_ms);
                        }
                    }
                    Vote::Decided(_) => {}
                }
                self.vote(shard, *anchor, *txn, *vote);
            }
            Applied::Decided { txn, decision, participants, reply } => {
                if let Some(coord) = g.txns.coords.remove(txn)
                    && let Some(client) = coord.client
                {
                    // A retry that arrived while the decision was in flight.
                    let reply = reply.clone().unwrap_or_else(|| decision.reply());
                    self.answer_pending(client, Response::Outcome(reply));
                }
                let g = self.groups.get_mut(&shard).expect("known group");
                g.locks.release(*txn, now_ms);
                if participants.is_empty() {
                    g.txns.resolving.remove(txn);
                } else {
                    let decision = match (*decision, self.cfg.planted_bug) {
                        (Decision::Commit(v), PlantedBug::SplitCommitVersion) => Decision::Commit(v + 1),
                        (d, _) => d,
                    };
                    let item = ResolveItem { txn: *txn, decision, attempt_ts: 0 };
                    let pending: BTreeSet<ShardId> = participants.iter().copied().collect();
                    g.txns.resolving.insert(*txn, Resolving { item, pending: pending.clone(), sent_tick: tick });
                    for p in pending {
                        self.send_txn(shard, p, TxnPeerMessage::Resolve { items: vec![item] });
                    }
                }
            }
            Applied::Resolved { txns } => {
                // Locks released, the anchors told.
                let mut by_anchor: BTreeMap<ShardId, Vec<TxnId>> = BTreeMap::new();
                for txn in txns {
                    g.locks.release(*txn, now_ms);
                    g.txns.queried.remove(txn);
                    if let Some(anchor) = g.txns.resolve_anchor.remove(txn) {
                        by_anchor.entry(anchor).or_default().push(*txn);
                    }
                }
                for (anchor, txns) in by_anchor {
                    self.send_txn(shard, anchor, TxnPeerMessage::Resolved { txns });
                }
            }
            Applied::Reply(_) | Applied::Blocked { .. } | Applied::Done => {}
        }
        self.lock_events(shard);
    }

    // ----- timers and the iteration ------------------------------------------

    /// Once per tick: lock timeouts, resends, queries, vote timeouts.
    pub(super) fn txn_tick(&mut self) {
        let now_ms = self.now_ms;
        let tick = self.ticks;
        let shards: Vec<ShardId> = self.groups.keys().copied().collect();
        for shard in shards {
            let g = self.groups.get_mut(&shard).expect("known group");
            if !g.is_leader {
                continue;
            }
            g.locks.tick(now_ms);
            if !g.txns.resolve_queue.is_empty() || !g.txns.forget_queue.is_empty() {
                // Entries that found no room before: try again.
                self.dirty.insert(shard);
            }
            self.lock_events(shard);
            let g = self.groups.get_mut(&shard).expect("known group");
            // Coordinators: resend prepares to silent participants; give up.
            let mut abort = Vec::new();
            let mut resend = Vec::new();
            let mut commit = Vec::new();
            for (txn, c) in g.txns.coords.iter_mut() {
                if c.deciding {
                    continue;
                }
                if c.votes.len() == c.shards.len() {
                    // Every vote is in but the decision found no room before.
                    commit.push((*txn, c.votes.values().copied().max().unwrap_or(0)));
                } else if tick.saturating_sub(c.started_tick) >= TXN_VOTE_TIMEOUT_TICKS {
                    abort.push(*txn);
                } else if tick.saturating_sub(c.sent_tick) >= TXN_RESEND_TICKS {
                    c.sent_tick = tick;
                    for s in &c.shards {
                        if s.shard != shard && !c.votes.contains_key(&s.shard) {
                            resend.push((s.shard, TxnPeerMessage::Prepare { txn: c.txn, sets: s.sets.clone() }));
                        }
                    }
                }
            }
            // Resolutions not acknowledged.
            for r in g.txns.resolving.values_mut() {
                if tick.saturating_sub(r.sent_tick) >= TXN_RESEND_TICKS {
                    r.sent_tick = tick;
                    for &p in &r.pending {
                        resend.push((p, TxnPeerMessage::Resolve { items: vec![r.item] }));
                    }
                }
            }
            // Intents nobody resolved: ask their anchors.
            let mut queries = Vec::new();
            let txns: Vec<(TxnId, ShardId)> = g.sm.txns().intents().map(|i| (i.txn.id, i.anchor)).collect();
            let sm = &g.sm;
            g.txns.queried.retain(|t, _| sm.txns().intent(t).is_some());
            for (txn, anchor) in txns {
                let last = g.txns.queried.entry(txn).or_insert(tick);
                if tick.saturating_sub(*last) >= TXN_QUERY_AFTER_TICKS {
                    *last = tick;
                    queries.push((txn, anchor));
                }
            }
            for (to, message) in resend {
                self.send_txn(shard, to, message);
            }
            for (txn, anchor) in queries {
                if anchor == shard {
                    self.on_query(shard, shard, txn);
                } else {
                    self.send_txn(shard, anchor, TxnPeerMessage::Query { txn });
                }
            }
            for txn in abort {
                self.decide(shard, txn, Decision::Abort(AbortReason::Timeout));
            }
            for (txn, version) in commit {
                self.decide(shard, txn, Decision::Commit(version));
            }
        }
    }

    /// Once per iteration, per dirty group: the batched resolve and forget entries.
    pub(super) fn propose_batched(&mut self, shard: ShardId) {
        let g = self.groups.get_mut(&shard).expect("known group");
        if !g.is_leader {
            return;
        }
        // An entry that finds no room now is tried again at the next iteration
        // (nothing else would bring a forget back).
        if !g.txns.resolve_queue.is_empty() {
            let queue = std::mem::take(&mut g.txns.resolve_queue);
            let items: Vec<ResolveItem> = queue.values().copied().collect();
            if !self.propose_txn(shard, CommandBody::Resolve(items), None, None, None) {
                self.groups.get_mut(&shard).expect("known group").txns.resolve_queue = queue;
            }
        }
        let g = self.groups.get_mut(&shard).expect("known group");
        if !g.txns.forget_queue.is_empty() {
            let queue = std::mem::take(&mut g.txns.forget_queue);
            let txns: Vec<TxnId> = queue.iter().copied().collect();
            if !self.propose_txn(shard, CommandBody::Forget(txns), None, None, None) {
                self.groups.get_mut(&shard).expect("known group").txns.forget_queue = queue;
            }
        }
    }

    /// This replica became `shard`'s leader: rebuild the lock table from the
    /// prepared intents and resume resolving the records it anchors.
    pub(super) fn txn_became_leader(&mut self, shard: ShardId) {
        let now_ms = self.now_ms;
        let tick = self.ticks;
        let g = self.groups.get_mut(&shard).expect("known group");
        for intent in g.sm.txns().intents() {
            if self.cfg.planted_bug == PlantedBug::ForgetPreparedOnLeaderChange && intent.anchor != shard {
                let item =
                    ResolveItem { txn: intent.txn.id, decision: Decision::Abort(AbortReason::Conflict), attempt_ts: 0 };
                g.txns.resolve_queue.insert(intent.txn.id, item);
                self.dirty.insert(shard);
            }
            let (reads, ranges, writes) = lock_keys(&intent.sets);
            g.locks.install_prepared(&info(&intent.txn, now_ms), &reads, &ranges, &writes, now_ms);
        }
        let records: Vec<(TxnId, Decision, Vec<ShardId>, u64)> =
            g.sm.txns().records().map(|(t, r)| (*t, r.decision, r.participants.clone(), r.attempt_ts)).collect();
        for (txn, decision, participants, attempt_ts) in records {
            let item = ResolveItem { txn, decision, attempt_ts };
            let pending: BTreeSet<ShardId> = participants.into_iter().collect();
            // Sent at the next resend tick.
            let sent_tick = tick.saturating_sub(TXN_RESEND_TICKS);
            g.txns.resolving.insert(txn, Resolving { item, pending, sent_tick });
        }
    }

    /// The invariant the simulator checks between steps: on every shard this
    /// core leads, every prepared transaction holds all its locks, as prepared,
    /// in the lock table, so no new lock is granted over an undecided intent.
    /// The first violation, described.
    pub fn txn_locks_violation(&self) -> Option<String> {
        for (shard, g) in self.groups.iter().filter(|(_, g)| g.is_leader) {
            for intent in g.sm.txns().intents() {
                let id = intent.txn.id;
                let (reads, ranges, writes) = lock_keys(&intent.sets);
                let state = g.locks.state(id);
                if state != Some(LockTxnState::Prepared) || !g.locks.holds(id, &reads, &ranges, &writes) {
                    return Some(format!(
                        "shard {shard}: transaction {id} is prepared but its leader's lock table has it {state:?}, \
                         holding {}",
                        if g.locks.holds(id, &reads, &ranges, &writes) { "all its locks" } else { "not all its locks" }
                    ));
                }
            }
        }
        None
    }

    /// This replica no longer leads `shard`: parked requests are answered (not
    /// applied), the lock table and coordinators are dropped.
    pub(super) fn txn_stepped_down(&mut self, shard: ShardId) {
        let g = self.groups.get_mut(&shard).expect("known group");
        let hint = g.leader;
        g.locks.clear();
        let parked = std::mem::take(&mut g.txns.parked);
        let mut waiting: Vec<PendingRead> =
            std::mem::take(&mut g.txns.intent_waiters).into_values().flatten().collect();
        waiting.append(&mut g.reads_after);
        let coords = std::mem::take(&mut g.txns.coords);
        g.txns.resolving.clear();
        g.txns.resolve_queue.clear();
        g.txns.forget_queue.clear();
        g.txns.preparing.clear();
        g.txns.queried.clear();
        g.txns.proposed.clear();
        g.txns.resolve_anchor.clear();
        for p in parked.into_values() {
            let client = match p {
                Parked::Read { client, .. } | Parked::Lock { client, .. } | Parked::Write { client, .. } => client,
            };
            self.answer_pending(client, Response::NotLeader { hint });
        }
        for r in waiting {
            self.answer_pending(r.client, Response::NotLeader { hint });
        }
        for c in coords.into_values() {
            if let Some(client) = c.client {
                // Not decided here: the client retries the commit with its tag at
                // the next leader, which finds a decision or coordinates again.
                self.answer_pending(client, Response::NotLeader { hint });
            }
        }
    }

    // ----- messages ----------------------------------------------------------

    /// Sends `message` from `from` to every replica of `to` (this core's own
    /// replica through the local inbox).
    pub(super) fn send_txn(&mut self, from: ShardId, to: ShardId, message: TxnPeerMessage) {
        let me = Replica { node: self.cfg.node, core: self.cfg.core };
        let replicas: Vec<Replica> = self.map.members(to).copied().collect();
        for r in replicas {
            let m = PeerMessage::Txn { from_shard: from, to_shard: to, message: message.clone() };
            if r == me {
                self.txn_inbox.push((from, to, message.clone()));
                self.dirty.insert(to);
            } else {
                self.outbox.push_other(r, m);
            }
        }
    }

    /// Tells every core of the cluster that `txn` was aborted on `shard` (see
    /// [`TxnPeerMessage::Abort`]); this core's other groups learn at once.
    pub(super) fn broadcast_txn_abort(&mut self, shard: ShardId, txn: TxnId, reason: AbortReason) {
        let me = Replica { node: self.cfg.node, core: self.cfg.core };
        let mut cores: BTreeMap<Replica, ShardId> = BTreeMap::new();
        for s in 0..self.map.shard_count() {
            for &r in self.map.members(s) {
                cores.entry(r).or_insert(s);
            }
        }
        for (r, to) in cores {
            if r != me {
                let message = TxnPeerMessage::Abort { txn, reason };
                self.outbox.push_other(r, PeerMessage::Txn { from_shard: shard, to_shard: to, message });
            }
        }
        self.on_txn_aborted(txn, reason);
    }

    /// `txn` was aborted on some shard while not prepared: every group this
    /// core leads where it is not prepared drops it.
    fn on_txn_aborted(&mut self, txn: TxnId, reason: AbortReason) {
        let now_ms = self.now_ms;
        let led: Vec<ShardId> = self.groups.iter().filter(|(_, g)| g.is_leader).map(|(s, _)| *s).collect();
        for shard in led {
            let g = self.groups.get_mut(&shard).expect("known group");
            let state = g.locks.state(txn);
            if matches!(state, Some(LockTxnState::Prepared | LockTxnState::Aborted(_)))
                || g.sm.txns().intent(&txn).is_some()
            {
                continue;
            }
            g.locks.abort(txn, reason, now_ms);
            self.lock_events(shard);
        }
    }

    /// A transaction message for `to` arrived (from the network or this core).
    pub(super) fn on_txn_message(&mut self, from: ShardId, to: ShardId, message: TxnPeerMessage) {
        if let TxnPeerMessage::Abort { txn, reason } = message {
            return self.on_txn_aborted(txn, reason);
        }
        let Some(g) = self.groups.get(&to) else { return };
        if !g.is_leader {
            return;
        }
        match message {
            TxnPeerMessage::Prepare { txn, sets } => {
                if sets.validate(&self.cfg.shard.limits).is_ok() {
                    self.prepare_here(to, from, txn, sets);
                }
            }
            TxnPeerMessage::Vote { txn, vote } => self.on_vote(to, from, txn, vote),
            TxnPeerMessage::Resolve { items } => self.on_resolve(to, from, items),
            TxnPeerMessage::Resolved { txns } => self.on_resolved(to, from, txns),
            TxnPeerMessage::Query { txn } => self.on_query(to, from, txn),
            TxnPeerMessage::Abort { .. } => {}
        }
    }

    /// Delivers the messages this core sent to its own replicas.
    pub(super) fn drain_txn_inbox(&mut self) {
        while !self.txn_inbox.is_empty() {
            for (from, to, message) in std::mem::take(&mut self.txn_inbox) {
                self.on_txn_message(from, to, message);
            }
        }
    }
}
