//! Fresh snapshots for transfers (`raft/node/fresh_snapshots.rs`): a leader whose
//! latest snapshot is older than its applied index waits for the application's
//! answer before it streams one. Only node 1 ticks, so it stays the leader.

use std::sync::Arc;

use super::*;

/// Node 3 missed entries 1..=10 that the leader compacted into a 40-byte
/// snapshot, then five more the leader applied after it: its latest snapshot is
/// older than its applied index. The leader asks for fresh snapshots when `fresh`;
/// node 3 is back but not yet probed.
fn leader_with_an_old_snapshot(fresh: bool) -> Harness {
    let mut h = snapshot_sending::follower_3_needs_a_snapshot(40, 4);
    h.cut.insert(3);
    for i in 10..15u8 {
        h.node(1).propose(vec![i]).unwrap();
        h.settle();
    }
    h.cut.clear();
    if fresh {
        h.node(1).want_fresh_snapshots();
    }
    let st = h.nodes[&1].status();
    assert!(st.snapshot_index < st.applied, "the latest snapshot is older than the applied index");
    h
}

/// Ticks the leader (delivering everything) until it waits for a snapshot.
fn tick_until_wanted(h: &mut Harness) -> Vec<Message> {
    let mut sent = vec![];
    for _ in 0..10 {
        if h.nodes[&1].snapshot_wanted() {
            return sent;
        }
        h.node(1).tick();
        pump(h, |m| {
            sent.push(m.clone());
            true
        });
    }
    panic!("the leader never asked for a fresh snapshot");
}

fn chunk_indexes(msgs: &[Message]) -> Vec<Index> {
    msgs.iter()
        .filter_map(|m| match &m.body {
            MessageBody::Snapshot { meta, .. } if m.to == 3 => Some(meta.index),
            _ => None,
        })
        .collect()
}

/// Delivers until quiet; returns every message sent.
fn deliver_all(h: &mut Harness) -> Vec<Message> {
    let mut sent = vec![];
    pump(h, |m| {
        sent.push(m.clone());
        true
    });
    sent
}

/// Delivers, ticking the leader, until node 3 installed a snapshot (at most 20
/// ticks); returns the indexes of the snapshot chunks sent to it.
fn deliver_until_3_installed(h: &mut Harness) -> Vec<Index> {
    let mut chunks = chunk_indexes(&deliver_all(h));
    for _ in 0..20 {
        if h.installed.contains_key(&3) {
            break;
        }
        h.node(1).tick();
        chunks.extend(chunk_indexes(&deliver_all(h)));
    }
    chunks
}

#[test]
fn a_transfer_from_an_old_snapshot_waits_and_streams_the_fresh_one_taken_for_it() {
    let mut h = leader_with_an_old_snapshot(true);
    let old = h.nodes[&1].status().snapshot_index;
    let sent = tick_until_wanted(&mut h);
    assert_eq!(chunk_indexes(&sent), Vec::<Index>::new(), "no chunk of the old snapshot goes out");
    assert!(!h.nodes[&1].snapshot_streaming());
    for _ in 0..5 {
        h.node(1).tick();
        assert_eq!(chunk_indexes(&deliver_all(&mut h)), Vec::<Index>::new(), "it waits, however long");
    }
    assert!(h.nodes[&1].snapshot_wanted(), "until the application answers");

    let applied = h.nodes[&1].status().applied;
    h.node(1).compact(Arc::from(vec![9u8; 24]));
    assert!(!h.nodes[&1].snapshot_wanted());
    assert!(h.nodes[&1].snapshot_streaming());
    let chunks = deliver_until_3_installed(&mut h);
    assert!(applied > old);
    assert!(!chunks.is_empty() && chunks.iter().all(|&i| i == applied), "only the fresh snapshot streams: {chunks:?}");
    assert_eq!(h.installed[&3], vec![applied], "node 3 installs the fresh snapshot, at the applied index");
    h.node(1).propose(vec![99]).unwrap();
    h.settle();
    assert_eq!(h.nodes[&3].status().commit, h.nodes[&1].status().commit, "and then follows the log");
}

#[test]
fn a_declined_fresh_snapshot_streams_the_latest_one() {
    let mut h = leader_with_an_old_snapshot(true);
    let old = h.nodes[&1].status().snapshot_index;
    tick_until_wanted(&mut h);
    h.node(1).send_latest_snapshot();
    assert!(!h.nodes[&1].snapshot_wanted());
    let chunks = deliver_until_3_installed(&mut h);
    assert!(!chunks.is_empty() && chunks.iter().all(|&i| i == old), "the latest snapshot streams: {chunks:?}");
    assert_eq!(h.installed[&3], vec![old]);
    h.settle();
    assert_eq!(h.nodes[&3].status().commit, h.nodes[&1].status().commit, "the entries after it follow");
}

#[test]
fn a_transfer_from_a_snapshot_at_the_applied_index_starts_at_once() {
    let mut h = snapshot_sending::follower_3_needs_a_snapshot(40, 4);
    h.node(1).want_fresh_snapshots();
    let st = h.nodes[&1].status();
    assert_eq!(st.snapshot_index, st.applied);
    let mut chunks = vec![];
    for _ in 0..10 {
        assert!(!h.nodes[&1].snapshot_wanted(), "nothing newer to wait for");
        h.node(1).tick();
        chunks.extend(chunk_indexes(&deliver_all(&mut h)));
        if h.installed.contains_key(&3) {
            break;
        }
    }
    assert_eq!(h.installed[&3], vec![st.snapshot_index]);
    assert!(chunks.iter().all(|&i| i == st.snapshot_index));
}

#[test]
fn without_fresh_snapshots_a_transfer_never_waits() {
    let mut h = leader_with_an_old_snapshot(false);
    for _ in 0..10 {
        h.node(1).tick();
        deliver_all(&mut h);
        assert!(!h.nodes[&1].snapshot_wanted());
    }
    assert!(h.installed.contains_key(&3), "the old snapshot was sent and installed");
}

#[test]
fn a_fresh_compaction_is_harmful_while_another_follower_needs_the_log_after_the_latest_snapshot() {
    // Five nodes: node 3 missed everything up to the compaction (it needs a
    // snapshot whatever happens); node 2 missed only the entries after it, which a
    // compaction to the applied index would take from it.
    let mut h = snapshot_sending::follower_3_of_n_needs_a_snapshot(5, 40, 4);
    h.cut.insert(2);
    for i in 10..15u8 {
        h.node(1).propose(vec![i]).unwrap();
        h.settle();
    }
    h.node(1).want_fresh_snapshots();
    let st = h.nodes[&1].status();
    assert!(st.snapshot_index < st.applied);
    let node_2 = h.nodes[&1].progress(2).expect("a follower").clone();
    assert!(node_2.match_index >= st.snapshot_index && node_2.match_index < st.applied, "{node_2:?}");
    assert!(!h.nodes[&1].compaction_harmless(), "node 2 would lose the entries it needs");

    // Node 2 back (node 3 still away): it replays the log and the compaction
    // harms nobody; node 3, whose need predates the latest snapshot, does not count.
    h.cut.remove(&2);
    for _ in 0..50 {
        if h.nodes[&2].status().commit >= st.applied {
            break;
        }
        h.node(1).tick();
        h.settle();
    }
    assert!(h.nodes[&2].status().commit >= st.applied, "node 2 caught up");
    assert!(h.nodes[&1].compaction_harmless());

    // Node 3 back: it waits for a snapshot and does not make it harmful either.
    h.cut.clear();
    tick_until_wanted(&mut h);
    assert!(h.nodes[&1].compaction_harmless());
    h.node(1).compact(Arc::from(vec![9u8; 8]));
    assert!(!h.nodes[&1].compaction_harmless(), "a transfer streams the latest snapshot now");
}
