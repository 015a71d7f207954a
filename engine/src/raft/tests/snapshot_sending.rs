//! Snapshot sending under a send credit (how the node core holds replica moves to
//! `--move-rate`), and snapshot transfers resumed after a broken connection. Uses
//! the parent module's harness; only node 1 ticks, so it stays the leader.

use std::sync::Arc;

use super::*;
use crate::raft::progress::SnapshotTransfer;

/// Ticks the leader until node 3 installed the snapshot (at most `ticks` times,
/// then fails): the chunks sent meanwhile.
fn tick_until_installed(h: &mut Harness, ticks: usize) -> Vec<(Index, u64, u64)> {
    let mut chunks = vec![];
    for _ in 0..ticks {
        if snapshot_installed_on_3(h) {
            break;
        }
        chunks.extend(tick_leader(h));
    }
    assert!(snapshot_installed_on_3(h), "the snapshot was installed within {ticks} ticks");
    chunks
}

/// Node 3 missed ten entries the leader then compacted into a snapshot of `bytes`
/// bytes, sent in chunks of `chunk_bytes`, four in flight.
pub(super) fn follower_3_needs_a_snapshot(bytes: usize, chunk_bytes: u64) -> Harness {
    follower_3_of_n_needs_a_snapshot(3, bytes, chunk_bytes)
}

/// As [`follower_3_needs_a_snapshot`], in a group of `n` nodes.
pub(super) fn follower_3_of_n_needs_a_snapshot(n: u64, bytes: usize, chunk_bytes: u64) -> Harness {
    let mut h = Harness::new(n, |c| c.snapshot_chunk_bytes = chunk_bytes);
    h.elect(1);
    h.settle();
    h.cut.insert(3);
    for i in 0..10u8 {
        h.node(1).propose(vec![i]).unwrap();
        h.settle();
    }
    h.node(1).compact(Arc::from(vec![7u8; bytes]));
    h.cut.clear();
    h
}

/// As [`follower_3_needs_a_snapshot`], with the leader's sending limited and the
/// transfer to node 3 started (without credit, so nothing sent yet).
fn limited_transfer_started(bytes: usize, chunk_bytes: u64) -> Harness {
    let mut h = follower_3_needs_a_snapshot(bytes, chunk_bytes);
    h.node(1).limit_snapshot_sending();
    for _ in 0..10 {
        if transfer_to_3(&h).is_some() {
            break;
        }
        assert_eq!(tick_leader(&mut h), vec![], "no credit, no chunk");
    }
    assert!(transfer_to_3(&h).is_some(), "node 3 needs the snapshot");
    h
}

fn transfer_to_3(h: &Harness) -> Option<&SnapshotTransfer> {
    h.nodes[&1].progress(3).and_then(|p| p.snapshot.as_ref())
}

fn snapshot_installed_on_3(h: &Harness) -> bool {
    h.nodes[&3].status().snapshot_index == h.nodes[&1].status().snapshot_index
}

/// `(snapshot index, offset, bytes)` of a snapshot chunk.
fn chunk(m: &Message) -> Option<(Index, u64, u64)> {
    match &m.body {
        MessageBody::Snapshot { meta, offset, chunk, .. } => Some((meta.index, *offset, chunk.len() as u64)),
        _ => None,
    }
}

/// Delivers until quiet, dropping what `keep` refuses; returns every chunk sent.
fn deliver(h: &mut Harness, mut keep: impl FnMut(&Message) -> bool) -> Vec<(Index, u64, u64)> {
    let mut chunks = vec![];
    pump(h, |m| {
        chunks.extend(chunk(m));
        keep(m)
    });
    chunks
}

/// One leader tick, then everything delivered until quiet; returns the chunks sent.
fn tick_leader(h: &mut Harness) -> Vec<(Index, u64, u64)> {
    h.node(1).tick();
    deliver(h, |_| true)
}

fn bytes_sent(h: &Harness) -> u64 {
    h.nodes[&1].status().snapshot_bytes_sent
}

#[test]
fn with_the_limit_on_and_no_credit_a_leader_sends_no_chunk() {
    let mut h = limited_transfer_started(40, 4);
    for _ in 0..20 {
        assert_eq!(tick_leader(&mut h), vec![], "heartbeat answers must not send without credit");
    }
    assert_eq!(bytes_sent(&h), 0);
    assert_eq!(h.nodes[&1].snapshot_bytes_wanted(), 4, "one chunk first, to learn where node 3 stands");
    assert_eq!(h.nodes[&3].snapshot_bytes_wanted(), 0, "a follower wants nothing");
    assert_eq!(h.nodes[&3].status().snapshot_index, 0);
}

#[test]
fn granting_exactly_one_chunk_of_credit_sends_exactly_one_chunk() {
    let mut h = limited_transfer_started(40, 4);
    let index = h.nodes[&1].status().snapshot_index;
    h.node(1).grant_snapshot_credit(3);
    assert_eq!(deliver(&mut h, |_| true), vec![], "3 bytes do not cover a 4-byte chunk");
    h.node(1).grant_snapshot_credit(1);
    let rd = h.node(1).ready();
    let chunks: Vec<_> = rd.messages.iter().filter_map(chunk).collect();
    assert_eq!(chunks, vec![(index, 0, 4)], "the grant's chunk is in the next Ready");
    assert_eq!(h.nodes[&1].snapshot_credit_bytes(), Some(0), "its bytes were deducted");
    assert_eq!(h.nodes[&1].snapshot_bytes_wanted(), 0, "nothing more before node 3 answers");
    assert_eq!(bytes_sent(&h), 4);
    step_all(&mut h, rd.messages);
    let answers = drain(&mut h, 3);
    step_all(&mut h, answers);
    assert_eq!(h.nodes[&1].snapshot_bytes_wanted(), 16, "then a window of four chunks");
}

#[test]
fn a_credit_limited_transfer_completes_and_never_sends_more_than_was_granted() {
    let mut h = limited_transfer_started(40, 4);
    let index = h.nodes[&1].status().snapshot_index;
    let mut granted = 0;
    for _ in 0..100 {
        if snapshot_installed_on_3(&h) {
            break;
        }
        assert!(h.nodes[&1].snapshot_bytes_wanted() > 0, "wanted while the transfer is under way");
        h.node(1).grant_snapshot_credit(3); // less than a chunk: credit must accumulate
        granted += 3;
        tick_leader(&mut h);
        assert!(bytes_sent(&h) <= granted, "{} bytes sent on {granted} granted", bytes_sent(&h));
    }
    assert!(snapshot_installed_on_3(&h), "the transfer never completed");
    assert_eq!(h.installed[&3], vec![index]);
    assert_eq!(bytes_sent(&h), 40, "no chunk sent twice");
    assert_eq!(h.nodes[&1].snapshot_bytes_wanted(), 0, "nothing wanted once done");
    tick_leader(&mut h);
    assert_eq!(h.nodes[&3].status().commit, h.nodes[&1].status().commit, "the log follows the snapshot");
}

#[test]
fn a_lost_chunk_is_resent_only_when_paid_for() {
    let mut h = limited_transfer_started(40, 4);
    let index = h.nodes[&1].status().snapshot_index;
    h.node(1).grant_snapshot_credit(4);
    let mut all = deliver(&mut h, |_| true);
    assert_eq!(all, vec![(index, 0, 4)], "the first chunk, alone");
    h.node(1).grant_snapshot_credit(16);
    let mut lost = false;
    let window = deliver(&mut h, |m| {
        let drop = !lost && chunk(m).is_some_and(|(_, offset, _)| offset == 4);
        lost |= drop;
        !drop
    });
    assert_eq!(window.iter().map(|c| c.1).collect::<Vec<_>>(), vec![4, 8, 12, 16]);
    all.extend(window);
    // Node 3 holds bytes 0..4 and dropped 8..20 (out of order): all is owed from 4.
    for _ in 0..20 {
        assert_eq!(tick_leader(&mut h), vec![], "no resend without credit, however many heartbeats");
    }
    assert_eq!(h.nodes[&1].snapshot_bytes_wanted(), 16, "the window from the gap at 4");
    h.node(1).grant_snapshot_credit(4);
    let resent = deliver(&mut h, |_| true);
    assert_eq!(resent, vec![(index, 4, 4)], "exactly the lost chunk, once");
    all.extend(resent);
    let mut granted = 24;
    for _ in 0..20 {
        if snapshot_installed_on_3(&h) {
            break;
        }
        h.node(1).grant_snapshot_credit(4);
        granted += 4;
        all.extend(tick_leader(&mut h));
    }
    assert!(snapshot_installed_on_3(&h));
    let sends_of = |offset| all.iter().filter(|c| c.1 == offset).count();
    let sends: Vec<usize> = (0..10).map(|i| sends_of(4 * i)).collect();
    assert_eq!(sends, vec![1, 2, 2, 2, 2, 1, 1, 1, 1, 1], "the broken window once more, nothing else");
    assert_eq!(bytes_sent(&h), 56, "40 bytes and the four chunks of the broken window again");
    assert_eq!(bytes_sent(&h), granted, "every byte sent, resends included, was paid for");
}

#[test]
fn without_the_limit_a_snapshot_is_sent_without_credit() {
    let mut h = follower_3_needs_a_snapshot(40, 4);
    assert_eq!(h.nodes[&1].snapshot_credit_bytes(), None, "unlimited by default");
    h.node(1).grant_snapshot_credit(4);
    assert_eq!(h.nodes[&1].snapshot_credit_bytes(), None, "a grant does not switch the limit on");
    let chunks = tick_until_installed(&mut h, 10);
    assert_eq!(chunks.len(), 10);
    assert_eq!(bytes_sent(&h), 40);
}

#[test]
fn the_one_empty_chunk_of_an_empty_snapshot_needs_no_credit() {
    let mut h = follower_3_needs_a_snapshot(0, 4);
    h.node(1).limit_snapshot_sending();
    let mut chunks = vec![];
    for _ in 0..10 {
        if snapshot_installed_on_3(&h) {
            break;
        }
        chunks.extend(tick_leader(&mut h));
    }
    let index = h.nodes[&1].status().snapshot_index;
    assert_eq!(h.installed[&3], vec![index]);
    assert_eq!(chunks, vec![(index, 0, 0)]);
    assert_eq!(bytes_sent(&h), 0);
}

/// Lets `n` chunks reach node 3, then breaks the link between 1 and 3: everything
/// in flight between them is lost (the last chunk's answer too) and the leader is
/// told. Returns the offset the leader had seen acknowledged.
fn break_link_after_chunks(h: &mut Harness, n: usize) -> u64 {
    let mut delivered = 0;
    for _ in 0..20 {
        if delivered >= n {
            break;
        }
        h.node(1).tick();
        deliver(h, |m| {
            if ![(1, 3), (3, 1)].contains(&(m.from, m.to)) {
                return true;
            }
            if delivered >= n {
                return false;
            }
            delivered += usize::from(chunk(m).is_some());
            true
        });
    }
    assert_eq!(delivered, n, "the transfer never got that far");
    h.node(1).report_unreachable(3);
    transfer_to_3(h).expect("the transfer was under way").acked_offset
}

#[test]
fn a_transfer_interrupted_by_a_broken_connection_resumes_from_the_acknowledged_offset() {
    let mut h = follower_3_needs_a_snapshot(400, 10);
    let index = h.nodes[&1].status().snapshot_index;
    let acked = break_link_after_chunks(&mut h, 20);
    assert!(acked >= 100, "most of 20 chunks were acknowledged, not {acked} bytes");
    let after = tick_until_installed(&mut h, 20);
    assert_eq!(h.installed[&3], vec![index]);
    assert_eq!(after.first().map(|c| c.1), Some(acked), "resumed from the acknowledged offset, not 0");
    let sent = bytes_sent(&h);
    assert!(sent < 400 + 400 / 4, "{sent} bytes sent for a 400-byte snapshot: {after:?}");
    let offsets: Vec<u64> = after.iter().map(|c| c.1).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "nothing sent twice after the resume: {offsets:?}");
}

#[test]
fn a_transfer_interrupted_while_the_leader_compacted_again_restarts_with_the_newer_snapshot() {
    let mut h = follower_3_needs_a_snapshot(400, 10);
    let old = h.nodes[&1].status().snapshot_index;
    break_link_after_chunks(&mut h, 20);
    // While node 3 is unreachable the group moves on and the leader compacts again:
    // the log between the two snapshots is gone, so the old one is of no use.
    h.cut.insert(3);
    for i in 0..5u8 {
        h.node(1).propose(vec![i]).unwrap();
        h.settle();
    }
    h.node(1).compact(Arc::from(vec![9u8; 300]));
    let new = h.nodes[&1].status().snapshot_index;
    assert!(new > old);
    h.cut.clear();
    let before = bytes_sent(&h);
    let after = tick_until_installed(&mut h, 20);
    assert_eq!(h.installed[&3], vec![new], "the old snapshot was never installed");
    assert_eq!(after.first(), Some(&(new, 0, 10)), "started over from offset 0 with the newer snapshot");
    assert!(after.iter().all(|c| c.0 == new), "no chunk of the old snapshot after the break");
    assert_eq!(bytes_sent(&h) - before, 300, "node 3 dropped its partial copy and took the new one whole");
    tick_leader(&mut h);
    assert_eq!(h.nodes[&3].status().commit, h.nodes[&1].status().commit);
}
