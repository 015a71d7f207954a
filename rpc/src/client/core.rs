//! The client's decisions, sans I/O: which replica a request goes to, what an
//! answer means, when to retry and what to report when the deadline passes. The
//! async and the blocking client drive the same code, so both keep the same
//! promises (DESIGN §6):
//!
//! - a write is retried with the SAME [`WriteTag`] until it gets a definite answer
//!   or its deadline, so the shard applies it at most once;
//! - the result is `unavailable` only when no attempt can have been applied (none
//!   was sent, or every one sent was answered "not applied"); once an attempt of a
//!   write was sent without a definite answer, the write ends `indeterminate`
//!   unless a later attempt learns its fate;
//! - reads are always safe to retry; a read that runs out of time is `unavailable`.
//!
//! Time comes in as `now` from the driver; nothing here reads a clock.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::{ClientConfig, KvError};
use crate::kv::{ClientId, KEY_BYTES_MAX, NodeId, Outcome, Response, SCAN_ITEMS_MAX, Seq, ShardId, WriteTag};
use crate::map::{ClusterMap, CoreIndex, Replica};

/// First pause before retrying a busy or leaderless shard; it doubles per retry.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between retries.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// Redirects followed back to back before the client pauses: two replicas that
/// name each other (an election in flight) must not make it spin.
const REDIRECTS_WITHOUT_PAUSE: u32 = 3;

/// The exactly-once state of one client: its id, the next sequence number and the
/// writes not yet finished (DESIGN §6).
#[derive(Debug, Clone)]
pub struct Session {
    id: ClientId,
    next_seq: Seq,
    /// Writes begun and not finished; the acked prefix sits just below the smallest.
    open: BTreeSet<Seq>,
}

impl Session {
    /// A session for client `id`; sequence numbers start at 1.
    pub fn new(id: ClientId) -> Session {
        Session { id, next_seq: 1, open: BTreeSet::new() }
    }

    /// The client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Tags a new write: the next sequence number, and the acked prefix (every seq
    /// below the oldest unfinished write has had its reply).
    pub fn begin(&mut self) -> WriteTag {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.open.insert(seq);
        let oldest = *self.open.first().expect("seq was just inserted");
        WriteTag { client: self.id, seq, acked: oldest - 1 }
    }

    /// The write `seq` is over, whatever its result. An `indeterminate` write is
    /// over too: once the acked prefix passes it, the shard refuses any late copy of
    /// it (`indeterminate`, never applied), so it cannot take effect later.
    pub fn finish(&mut self, seq: Seq) {
        self.open.remove(&seq);
    }

    /// Writes begun and not finished.
    pub fn open_writes(&self) -> usize {
        self.open.len()
    }

    /// How far the newest sequence number is ahead of the oldest unfinished one: the
    /// span of replies a shard may have to keep for this client.
    pub fn window(&self) -> u64 {
        self.open.first().map_or(0, |oldest| self.next_seq - oldest)
    }
}

/// Where a request goes: one core of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node.
    pub node: NodeId,
    /// Its core that owns the shard's replica.
    pub core: CoreIndex,
    /// That core's address.
    pub addr: String,
}

/// The cluster map and the leaders the client has learned.
#[derive(Debug, Clone)]
pub struct Router {
    map: ClusterMap,
    leaders: HashMap<ShardId, NodeId>,
}

impl Router {
    /// Routes by `map`.
    pub fn new(map: ClusterMap) -> Router {
        Router { map, leaders: HashMap::new() }
    }

    /// The map in use.
    pub fn map(&self) -> &ClusterMap {
        &self.map
    }

    /// Takes a newer map; an older or equal epoch is ignored. Leaders learned stay
    /// where they are still replicas.
    pub fn update_map(&mut self, map: ClusterMap) {
        if map.epoch < self.map.epoch || (map.epoch == self.map.epoch && map == self.map) {
            return;
        }
        self.leaders.retain(|&shard, node| map.members(shard).any(|r| r.node == *node));
        self.map = map;
    }

    /// The shard that owns `key`.
    pub fn shard_of(&self, key: &[u8]) -> ShardId {
        self.map.shard_of(key)
    }

    /// The replica to ask for `shard`: the `rotation`-th after the best guess at its
    /// leader (the leader last learned, else the preferred replica). Replicas on
    /// their way out count: a move's source is a voter, and often the leader,
    /// until its replacement has caught up.
    pub fn target(&self, shard: ShardId, rotation: usize) -> Option<Target> {
        let members: Vec<Replica> = self.map.members(shard).copied().collect();
        if members.is_empty() {
            return None;
        }
        let first =
            self.leaders.get(&shard).and_then(|leader| members.iter().position(|r| r.node == *leader)).unwrap_or(0);
        let replica = members[(first + rotation) % members.len()];
        let addr = self.map.core_addr(replica.node, replica.core)?;
        Some(Target { node: replica.node, core: replica.core, addr })
    }

    /// `node` answered for `shard` as its leader, or was named leader in a hint.
    /// A node that holds no replica of the shard is ignored.
    pub fn learn_leader(&mut self, shard: ShardId, node: NodeId) -> bool {
        if self.map.core_of(shard, node).is_some() {
            self.leaders.insert(shard, node);
            true
        } else {
            false
        }
    }

    /// Forgets the leader of `shard` if it is `node`.
    pub fn forget_leader(&mut self, shard: ShardId, node: NodeId) {
        if self.leaders.get(&shard) == Some(&node) {
            self.leaders.remove(&shard);
        }
    }

    /// The addresses to ask for a fresh map: every node's core 0.
    pub fn map_sources(&self) -> Vec<String> {
        self.map.nodes.iter().map(|n| n.addr.clone()).collect()
    }
}

/// What the driver does next for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send (again) now, to where [`Attempt::target`] says.
    Send,
    /// Pause this long, then send.
    Pause(Duration),
    /// Fetch a fresh cluster map, hand it to [`Router::update_map`], then send.
    RefreshMap,
    /// The request is over with this answer from the shard.
    Done(Outcome),
    /// The request is over without a definite answer.
    Failed(KvError),
}

/// How an attempt that got no answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// Nothing reached the server (the connection could not be made).
    NotSent,
    /// The request may have reached the server: the connection broke or no answer
    /// came in time.
    MaybeSent,
}

/// The retry state of one request to one shard.
#[derive(Debug, Clone)]
pub struct Attempt {
    shard: ShardId,
    is_write: bool,
    deadline: Instant,
    /// Some attempt of this write was sent and no definite answer followed it.
    maybe_applied: bool,
    rotation: usize,
    tries: u32,
    redirects_in_a_row: u32,
    /// The map was refreshed for a leader hint it did not know: once per
    /// attempt, so a hint that stays unknown cannot loop.
    refreshed_for_hint: bool,
    backoff: Duration,
    last: String,
}

impl Attempt {
    /// A request to `shard`, a write or a read, due by `deadline`.
    pub fn new(shard: ShardId, is_write: bool, deadline: Instant) -> Attempt {
        Attempt {
            shard,
            is_write,
            deadline,
            maybe_applied: false,
            rotation: 0,
            tries: 0,
            redirects_in_a_row: 0,
            refreshed_for_hint: false,
            backoff: RETRY_BACKOFF_MIN,
            last: String::from("no attempt was made"),
        }
    }

    /// The shard asked.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// When the request gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Attempts sent so far.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Where to send the next attempt; `None` (with the request failed by
    /// [`Attempt::give_up`]) when the map names no reachable replica.
    pub fn target(&self, router: &Router) -> Option<Target> {
        router.target(self.shard, self.rotation)
    }

    /// How long the driver may wait for the answer of an attempt sent at `now`.
    pub fn wait_for(&self, config: &ClientConfig, now: Instant) -> Duration {
        config.attempt_timeout.min(self.deadline.saturating_duration_since(now))
    }

    /// Call before each send: `false` when the deadline has passed (then finish with
    /// [`Attempt::give_up`]).
    pub fn may_send(&mut self, now: Instant) -> bool {
        if now >= self.deadline {
            return false;
        }
        self.tries += 1;
        true
    }

    /// The request's end when time ran out: `indeterminate` for a write that may have
    /// been applied, else `unavailable`.
    pub fn give_up(&self) -> KvError {
        let reason = format!("no answer within the deadline ({} attempts; last: {})", self.tries, self.last);
        if self.is_write && self.maybe_applied {
            KvError::Indeterminate { reason }
        } else {
            KvError::Unavailable { reason }
        }
    }

    fn pause(&mut self, now: Instant) -> Next {
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(RETRY_BACKOFF_MAX);
        if now + pause >= self.deadline {
            return Next::Failed(self.give_up());
        }
        Next::Pause(pause)
    }

    fn move_on(&mut self) {
        self.rotation += 1;
    }

    /// The shard's (or a replica's) answer to the attempt sent to `target`.
    pub fn on_response(&mut self, router: &mut Router, target: &Target, response: Response, now: Instant) -> Next {
        match response {
            Response::Outcome(Outcome::Indeterminate) if self.is_write => {
                // The replica lost leadership with the write proposed: its fate is
                // unknown, and a retry with the same tag settles it.
                self.maybe_applied = true;
                self.last = format!("node {} lost leadership with the write in flight", target.node);
                router.forget_leader(self.shard, target.node);
                self.move_on();
                self.redirects_in_a_row = 0;
                self.pause(now)
            }
            Response::Outcome(Outcome::Unavailable) if self.is_write && self.maybe_applied => {
                // This attempt was refused, but an earlier one may still apply.
                self.last = format!("node {} refused the write before proposing it", target.node);
                self.pause(now)
            }
            Response::Outcome(outcome) => {
                router.learn_leader(self.shard, target.node);
                Next::Done(outcome)
            }
            Response::NotLeader { hint } => {
                router.forget_leader(self.shard, target.node);
                self.last = format!("node {} is not the leader of shard {}", target.node, self.shard);
                let known = hint != 0 && hint != target.node && router.learn_leader(self.shard, hint);
                if hint != 0 && hint != target.node && !known && !self.refreshed_for_hint {
                    // The leader is a node this map does not place the shard on:
                    // the map is older than a replica move.
                    self.refreshed_for_hint = true;
                    return Next::RefreshMap;
                }
                if known {
                    self.rotation = 0;
                    self.redirects_in_a_row += 1;
                    if self.redirects_in_a_row <= REDIRECTS_WITHOUT_PAUSE {
                        return Next::Send;
                    }
                } else {
                    self.move_on();
                }
                self.redirects_in_a_row = 0;
                self.pause(now)
            }
            Response::WrongShard { hint, epoch } => {
                self.last = format!("node {} does not serve shard {} (its map epoch {epoch})", target.node, self.shard);
                router.forget_leader(self.shard, target.node);
                if hint != 0 {
                    router.learn_leader(self.shard, hint);
                }
                if epoch > router.map().epoch {
                    return Next::RefreshMap;
                }
                self.move_on();
                self.pause(now)
            }
            Response::Busy => {
                self.last = format!("node {} is busy", target.node);
                self.pause(now)
            }
        }
    }

    /// The attempt sent to `target` got no answer.
    pub fn on_lost(&mut self, router: &mut Router, target: &Target, lost: Lost, why: &str, now: Instant) -> Next {
        if lost == Lost::MaybeSent {
            self.maybe_applied = true;
        }
        self.last = format!("node {} at {}: {why}", target.node, target.addr);
        router.forget_leader(self.shard, target.node);
        self.move_on();
        self.redirects_in_a_row = 0;
        self.pause(now)
    }

    /// A map refresh failed: pause and try the old map again.
    pub fn on_map_refresh_failed(&mut self, why: &str, now: Instant) -> Next {
        self.last = format!("cannot refresh the cluster map: {why}");
        self.pause(now)
    }
}

/// Pause between rounds of asking the bootstrap addresses for the map.
pub const BOOTSTRAP_PAUSE: Duration = Duration::from_millis(50);

/// The answer when no address of `addrs` gave the cluster map in time; `errors`
/// says what each one did (each names its address).
pub fn no_map(addrs: &[String], errors: &[String]) -> KvError {
    let detail = if errors.is_empty() { "no time left to ask".to_string() } else { errors.join("; ") };
    KvError::Unavailable { reason: format!("no node of {} answered: {detail}", addrs.join(",")) }
}

/// Checks a key before anything is sent, so a bad one never costs a round trip.
pub fn check_key(what: &str, key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::Invalid { message: format!("{what} is empty") });
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(KvError::Invalid {
            message: format!("{what} is {} bytes, above the {KEY_BYTES_MAX}-byte limit", key.len()),
        });
    }
    Ok(())
}

/// Checks a scan's bounds and limit before anything is sent.
pub fn check_scan(start: &[u8], end: &[u8], limit: u32) -> Result<(), KvError> {
    if !start.is_empty() {
        check_key("scan start", start)?;
    }
    if !end.is_empty() {
        check_key("scan end", end)?;
    }
    if limit == 0 || limit > SCAN_ITEMS_MAX {
        return Err(KvError::Invalid { message: format!("scan limit {limit} is outside 1..={SCAN_ITEMS_MAX}") });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::OkReply;
    use crate::map::{NodeInfo, ShardReplicas};

    fn map(epoch: u64) -> ClusterMap {
        ClusterMap {
            cluster_id: 9,
            epoch,
            nodes: (1..=3)
                .map(|id| NodeInfo {
                    id,
                    addr: format!("127.0.0.1:{}", 7000 + id * 100),
                    cores: 2,
                    state: crate::map::NodeState::Up,
                })
                .collect(),
            shards: vec![
                ShardReplicas::new(vec![Replica { node: 1, core: 0 }, Replica { node: 2, core: 1 }]),
                ShardReplicas::new(vec![Replica { node: 3, core: 1 }, Replica { node: 1, core: 1 }]),
            ],
            meta: ShardReplicas::new(vec![Replica { node: 1, core: 0 }]),
            rebalance: false,
        }
    }

    fn ok() -> Response {
        Response::Outcome(Outcome::Ok(OkReply::Written { version: 5 }))
    }

    #[test]
    fn acked_prefix_stays_below_the_oldest_open_write() {
        let mut s = Session::new(ClientId::from_u128(1));
        let a = s.begin();
        let b = s.begin();
        let c = s.begin();
        assert_eq!((a.seq, a.acked), (1, 0));
        assert_eq!((b.seq, b.acked), (2, 0));
        assert_eq!((c.seq, c.acked), (3, 0));
        s.finish(2);
        assert_eq!(s.begin().acked, 0, "seq 1 is still open");
        s.finish(1);
        let e = s.begin();
        assert_eq!((e.seq, e.acked), (5, 2), "3 is open: 1 and 2 are acked");
        assert!(e.validate().is_ok());
        assert_eq!(s.window(), 3);
        s.finish(3);
        s.finish(4);
        s.finish(5);
        assert_eq!(s.begin().acked, 5);
    }

    #[test]
    fn routes_to_the_preferred_replica_then_the_learned_leader_then_rotates() {
        let mut r = Router::new(map(1));
        let t = r.target(1, 0).unwrap();
        assert_eq!((t.node, t.core, t.addr.as_str()), (3, 1, "127.0.0.1:7301"));
        assert!(r.learn_leader(1, 1));
        assert_eq!(r.target(1, 0).unwrap().node, 1);
        assert_eq!(r.target(1, 1).unwrap().node, 3);
        assert!(!r.learn_leader(1, 2), "node 2 holds no replica of shard 1");
        r.forget_leader(1, 1);
        assert_eq!(r.target(1, 0).unwrap().node, 3);
    }

    #[test]
    fn a_leader_on_its_way_out_is_asked_until_it_hands_over() {
        // Shard 1 moves from node 3 (its leader) to node 2: the map lists node 2
        // as wanted and node 3 as outgoing while the new replica catches up.
        let mut moving = map(2);
        moving.shards[1] = ShardReplicas::new(vec![Replica { node: 2, core: 0 }, Replica { node: 1, core: 1 }]);
        moving.shards[1].outgoing = vec![Replica { node: 3, core: 1 }];
        let mut r = Router::new(map(1));
        assert!(r.learn_leader(1, 3));
        r.update_map(moving);
        assert_eq!(r.target(1, 0).unwrap().node, 3, "the leader learned before the move is kept");
        r.forget_leader(1, 3);
        let now = Instant::now();
        let mut a = Attempt::new(1, true, now + Duration::from_secs(5));
        let t = a.target(&r).unwrap();
        assert_eq!(t.node, 2, "the preferred replica first");
        assert_eq!(a.on_response(&mut r, &t, Response::NotLeader { hint: 3 }, now), Next::Send);
        let t = a.target(&r).unwrap();
        assert_eq!((t.node, t.core), (3, 1), "then the leader it names, though it is leaving");
        let members: Vec<NodeId> = (0..3).map(|k| r.target(1, k).unwrap().node).collect();
        assert_eq!(members, [3, 2, 1], "rotation covers every member");
    }

    #[test]
    fn not_leader_hint_is_followed_at_once_then_with_pauses() {
        let mut r = Router::new(map(1));
        let now = Instant::now();
        let mut a = Attempt::new(0, true, now + Duration::from_secs(5));
        let t = a.target(&r).unwrap();
        assert_eq!(t.node, 1);
        assert_eq!(a.on_response(&mut r, &t, Response::NotLeader { hint: 2 }, now), Next::Send);
        let t = a.target(&r).unwrap();
        assert_eq!(t.node, 2);
        // Ping-pong: the replicas keep naming each other.
        let mut pauses = 0;
        for _ in 0..8 {
            let t = a.target(&r).unwrap();
            let hint = if t.node == 1 { 2 } else { 1 };
            if let Next::Pause(_) = a.on_response(&mut r, &t, Response::NotLeader { hint }, now) {
                pauses += 1;
            }
        }
        assert!(pauses >= 2, "a redirect loop pauses");
        let t = a.target(&r).unwrap();
        assert_eq!(a.on_response(&mut r, &t, ok(), now), Next::Done(Outcome::Ok(OkReply::Written { version: 5 })));
        assert_eq!(r.target(0, 0).unwrap().node, t.node, "the answering node is remembered as leader");
    }

    #[test]
    fn a_leader_the_map_does_not_know_refreshes_the_map_once_per_attempt() {
        // Shard 0 is on nodes 1 and 2; node 3 leads it after a move this map is too
        // old to show.
        let mut r = Router::new(map(1));
        let now = Instant::now();
        let mut a = Attempt::new(0, true, now + Duration::from_secs(5));
        let t = a.target(&r).unwrap();
        assert_eq!(a.on_response(&mut r, &t, Response::NotLeader { hint: 3 }, now), Next::RefreshMap);
        let t = a.target(&r).unwrap();
        let again = a.on_response(&mut r, &t, Response::NotLeader { hint: 3 }, now);
        assert!(matches!(again, Next::Pause(_)), "no second refresh for the same attempt: {again:?}");
    }

    #[test]
    fn a_write_never_sent_ends_unavailable_a_write_maybe_sent_ends_indeterminate() {
        let mut r = Router::new(map(1));
        let now = Instant::now();
        let deadline = now + Duration::from_secs(1);
        let mut a = Attempt::new(0, true, deadline);
        assert!(a.may_send(now));
        let t = a.target(&r).unwrap();
        assert!(matches!(a.on_lost(&mut r, &t, Lost::NotSent, "refused", now), Next::Pause(_)));
        assert_eq!(a.target(&r).unwrap().node, 2, "the next replica is tried");
        assert!(matches!(a.give_up(), KvError::Unavailable { .. }));
        let t = a.target(&r).unwrap();
        a.on_lost(&mut r, &t, Lost::MaybeSent, "timed out", now);
        assert!(matches!(a.give_up(), KvError::Indeterminate { .. }));
        // A definite answer to a retry settles it, whatever came before.
        let t = a.target(&r).unwrap();
        assert!(matches!(a.on_response(&mut r, &t, ok(), now), Next::Done(_)));
        assert!(!a.may_send(deadline), "no attempt after the deadline");
    }

    #[test]
    fn a_read_that_runs_out_of_time_is_unavailable() {
        let mut r = Router::new(map(1));
        let now = Instant::now();
        let mut a = Attempt::new(0, false, now + Duration::from_millis(100));
        let t = a.target(&r).unwrap();
        a.on_lost(&mut r, &t, Lost::MaybeSent, "timed out", now);
        assert!(matches!(a.give_up(), KvError::Unavailable { .. }));
    }

    #[test]
    fn stepped_down_write_is_retried_and_refusal_after_it_is_not_unavailable() {
        let mut r = Router::new(map(1));
        let now = Instant::now();
        let mut a = Attempt::new(0, true, now + Duration::from_secs(5));
        let t = a.target(&r).unwrap();
        assert!(matches!(a.on_response(&mut r, &t, Response::Outcome(Outcome::Indeterminate), now), Next::Pause(_)));
        let t = a.target(&r).unwrap();
        assert!(matches!(a.on_response(&mut r, &t, Response::Outcome(Outcome::Unavailable), now), Next::Pause(_)));
        assert!(matches!(a.give_up(), KvError::Indeterminate { .. }));
        // A read's indeterminate cannot happen; an unavailable answer to a fresh
        // write is final.
        let mut b = Attempt::new(0, true, now + Duration::from_secs(5));
        let t = b.target(&r).unwrap();
        assert_eq!(
            b.on_response(&mut r, &t, Response::Outcome(Outcome::Unavailable), now),
            Next::Done(Outcome::Unavailable)
        );
    }

    #[test]
    fn wrong_shard_with_a_newer_epoch_refreshes_the_map() {
        let mut r = Router::new(map(1));
        let now = Instant::now();
        let mut a = Attempt::new(1, false, now + Duration::from_secs(5));
        let t = a.target(&r).unwrap();
        assert_eq!(a.on_response(&mut r, &t, Response::WrongShard { hint: 0, epoch: 2 }, now), Next::RefreshMap);
        let mut newer = map(2);
        newer.shards[1].replicas.reverse();
        r.update_map(newer);
        assert_eq!(r.map().epoch, 2);
        assert_eq!(a.target(&r).unwrap().node, 1, "the new map's preferred replica");
        r.update_map(map(1));
        assert_eq!(r.map().epoch, 2, "an older map is ignored");
    }

    #[test]
    fn busy_backs_off_and_fails_at_the_deadline() {
        let mut r = Router::new(map(1));
        let now = Instant::now();
        let mut a = Attempt::new(0, false, now + Duration::from_millis(50));
        let t = a.target(&r).unwrap();
        let mut waited = Duration::ZERO;
        loop {
            match a.on_response(&mut r, &t, Response::Busy, now + waited) {
                Next::Pause(p) => waited += p,
                Next::Failed(e) => {
                    assert_eq!(e.word(), "unavailable");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(waited <= Duration::from_millis(50));
    }

    #[test]
    fn keys_are_checked_before_sending() {
        assert!(check_key("key", b"k").is_ok());
        assert_eq!(check_key("key", b"").unwrap_err().word(), "invalid");
        assert_eq!(check_key("key", &vec![0; KEY_BYTES_MAX + 1]).unwrap_err().word(), "invalid");
    }
}
