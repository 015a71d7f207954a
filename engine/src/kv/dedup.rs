//! The exactly-once table of one shard (DESIGN §6): per client, the replies of its
//! writes above its acked prefix, so a retry is answered from here instead of being
//! applied again.
//!
//! Part of the replicated state: it runs inside `apply` on the core that owns the
//! shard, on every replica, and travels in snapshots. Deterministic: time is the
//! log's own clock (the highest HLC stamp of the commands applied so far, passed in
//! by the shard), never a local clock, so every replica keeps and expires the same
//! entries. All maps are ordered (`BTreeMap`/`BTreeSet`), so iteration and eviction
//! order are the same everywhere.
//!
//! Rules, for a write `(client, seq, acked)`:
//! - the client's acked prefix rises to `acked`; replies at or below it are dropped;
//! - `seq ≤` the acked prefix: `indeterminate`, never applied again;
//! - a kept reply for `seq`: that reply, not applied again;
//! - `seq ≤ forgotten_max` (a reply dropped by eviction or age at or above it):
//!   `indeterminate`, never applied. This may also refuse a seq that was never
//!   applied (it arrived after a higher seq's reply was dropped): safe, the client
//!   hears `indeterminate` and the write never happens;
//! - otherwise it is applied and its reply kept.
//!
//! Bounds: at most [`DedupLimits::replies_per_client_max`] replies per client (the
//! lowest seq is evicted, its retries answer `indeterminate`); at most
//! [`DedupLimits::replies_max`] replies in all (the oldest in log time is evicted,
//! likewise); at most [`DedupLimits::clients_max`] clients: a new client beyond it is refused with
//! `unavailable` (certainly not applied) rather than forgetting a client that may
//! still retry; replies older than [`DedupLimits::reply_age_ts_max`] in log time are
//! dropped, and so are clients silent for that long. The age is far above any
//! client deadline, so no client still retries what expires. An expired client
//! that comes back is a new client: its new seqs apply.

use std::collections::{BTreeMap, BTreeSet};

use corekv_rpc::kv::{ClientId, Outcome, Seq, WriteTag};
use rkyv::{Archive, Deserialize, Serialize};

/// Default most clients with a session.
pub const CLIENTS_MAX_DEFAULT: usize = 100_000;
/// Default most kept replies per client (its in-flight window).
pub const REPLIES_PER_CLIENT_MAX_DEFAULT: usize = 1_024;
/// Default most kept replies in the whole table: about 100 bytes each with the
/// expiry index, so about 10 MiB per shard at worst.
pub const REPLIES_MAX_DEFAULT: usize = 100_000;
/// Default reply lifetime in HLC units: 10 minutes, against a 5 s client deadline.
pub const REPLY_AGE_TS_MAX_DEFAULT: u64 = (10 * 60 * 1000) << super::hlc::LOGICAL_BITS;

/// The table's bounds. Must be the same on every replica of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupLimits {
    /// Most clients with a session; a new client beyond it is refused (`unavailable`).
    pub clients_max: usize,
    /// Most kept replies per client; beyond it the lowest seq's reply is evicted.
    pub replies_per_client_max: usize,
    /// Most kept replies in all; beyond it the oldest reply (in log time) is evicted.
    pub replies_max: usize,
    /// Replies (and silent clients) older than this, in HLC units of log time, go.
    pub reply_age_ts_max: u64,
}

impl Default for DedupLimits {
    fn default() -> Self {
        DedupLimits {
            clients_max: CLIENTS_MAX_DEFAULT,
            replies_per_client_max: REPLIES_PER_CLIENT_MAX_DEFAULT,
            replies_max: REPLIES_MAX_DEFAULT,
            reply_age_ts_max: REPLY_AGE_TS_MAX_DEFAULT,
        }
    }
}

/// A reply kept for retries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KeptReply {
    /// Log time when the write was applied (its expiry clock).
    pub stamp_ts: u64,
    /// The reply, returned again to a retry.
    pub reply: Outcome,
}

/// One client's exactly-once state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClientSession {
    /// Every seq ≤ this has had its reply (the highest acked prefix seen).
    pub acked: Seq,
    /// The highest seq whose reply was evicted or expired (0: none).
    pub forgotten_max: Seq,
    /// Log time of the client's latest write.
    pub last_seen_ts: u64,
    /// Kept replies by seq, all above `acked`.
    pub replies: BTreeMap<Seq, KeptReply>,
}

/// The replicated part of the table: what a snapshot carries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupData {
    /// Sessions by client id.
    pub clients: BTreeMap<ClientId, ClientSession>,
}

/// What to do with a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// New: apply it, then [`Dedup::record`] its reply.
    Apply,
    /// A retry: answer this kept reply; do not apply.
    Replay(Outcome),
    /// Do not apply and do not record; answer this (`indeterminate`: it may have
    /// been applied before; `unavailable`: the table is full, certainly not applied).
    Refuse(Outcome),
}

/// The exactly-once table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    data: DedupData,
    limits: DedupLimits,
    /// (stamp, client, seq) of every kept reply: expiry in log-time order.
    reply_expiry: BTreeSet<(u64, ClientId, Seq)>,
    /// (last_seen, client) of every session: expiry of silent clients.
    client_expiry: BTreeSet<(u64, ClientId)>,
}

impl Dedup {
    /// An empty table.
    pub fn new(limits: DedupLimits) -> Self {
        assert!(
            limits.clients_max >= 1 && limits.replies_per_client_max >= 1 && limits.replies_max >= 1,
            "dedup limits must allow one entry"
        );
        Dedup { data: DedupData::default(), limits, reply_expiry: BTreeSet::new(), client_expiry: BTreeSet::new() }
    }

    /// A table over snapshot data, validated against `limits` and the log clock.
    pub(crate) fn from_data(data: DedupData, limits: DedupLimits, log_clock_ts: u64) -> Result<Self, String> {
        if data.clients.len() > limits.clients_max {
            return Err(format!("{} client sessions, above clients_max {}", data.clients.len(), limits.clients_max));
        }
        let replies: usize = data.clients.values().map(|s| s.replies.len()).sum();
        if replies > limits.replies_max {
            return Err(format!("{replies} kept replies, above replies_max {}", limits.replies_max));
        }
        let mut table = Dedup::new(limits);
        for (client, session) in &data.clients {
            let who = format!("client {:032x}", client.as_u128());
            if session.replies.len() > limits.replies_per_client_max {
                return Err(format!("{who}: {} kept replies, above the limit", session.replies.len()));
            }
            if session.last_seen_ts > log_clock_ts {
                return Err(format!("{who}: last seen at {} after the log clock {log_clock_ts}", session.last_seen_ts));
            }
            for (&seq, kept) in &session.replies {
                if seq <= session.acked {
                    return Err(format!("{who}: reply for seq {seq} at or below acked {}", session.acked));
                }
                if kept.stamp_ts > session.last_seen_ts {
                    return Err(format!("{who}: reply for seq {seq} stamped after the client's last write"));
                }
                table.reply_expiry.insert((kept.stamp_ts, *client, seq));
            }
            table.client_expiry.insert((session.last_seen_ts, *client));
        }
        table.data = data;
        Ok(table)
    }

    /// The replicated data, for snapshots.
    pub(crate) fn data(&self) -> &DedupData {
        &self.data
    }

    /// The session of `client`, if it has one.
    pub fn session(&self, client: &ClientId) -> Option<&ClientSession> {
        self.data.clients.get(client)
    }

    /// Number of client sessions.
    pub fn client_count(&self) -> usize {
        self.data.clients.len()
    }

    /// Drops replies and sessions older than the age limit at log time `now_ts`.
    pub fn expire(&mut self, now_ts: u64) {
        let cutoff = now_ts.saturating_sub(self.limits.reply_age_ts_max);
        while let Some(&(stamp, client, seq)) = self.reply_expiry.first() {
            if stamp >= cutoff {
                break;
            }
            self.reply_expiry.pop_first();
            self.forget(&client, seq);
        }
        while let Some(&(last_seen, client)) = self.client_expiry.first() {
            if last_seen >= cutoff {
                break;
            }
            self.client_expiry.pop_first();
            let session = self.data.clients.remove(&client).expect("indexed session exists");
            assert!(session.replies.is_empty(), "a silent client's replies expired before it");
        }
    }

    /// Decides whether the write `tag`, applied at log time `now_ts`, applies.
    /// Expires by age first, and raises the client's acked prefix.
    pub fn admit(&mut self, tag: &WriteTag, now_ts: u64) -> Admission {
        self.expire(now_ts);
        let Some(session) = self.data.clients.get_mut(&tag.client) else {
            if self.data.clients.len() >= self.limits.clients_max {
                return Admission::Refuse(Outcome::Unavailable);
            }
            return Admission::Apply;
        };
        if tag.acked > session.acked {
            session.acked = tag.acked;
            let kept = session.replies.split_off(&(tag.acked + 1));
            for (seq, dropped) in std::mem::replace(&mut session.replies, kept) {
                self.reply_expiry.remove(&(dropped.stamp_ts, tag.client, seq));
            }
        }
        let admission = if tag.seq <= session.acked {
            Admission::Refuse(Outcome::Indeterminate)
        } else if let Some(kept) = session.replies.get(&tag.seq) {
            Admission::Replay(kept.reply.clone())
        } else if tag.seq <= session.forgotten_max {
            Admission::Refuse(Outcome::Indeterminate)
        } else {
            Admission::Apply
        };
        self.touch(&tag.client, now_ts);
        admission
    }

    /// Keeps the reply of a write [`Dedup::admit`] let apply.
    pub fn record(&mut self, tag: &WriteTag, now_ts: u64, reply: Outcome) {
        let session = self.data.clients.entry(tag.client).or_insert_with(|| ClientSession {
            acked: tag.acked,
            forgotten_max: 0,
            last_seen_ts: now_ts,
            replies: BTreeMap::new(),
        });
        assert!(tag.seq > session.acked, "recording a seq at or below the acked prefix");
        let previous = session.replies.insert(tag.seq, KeptReply { stamp_ts: now_ts, reply });
        assert!(previous.is_none(), "a write was applied twice");
        self.reply_expiry.insert((now_ts, tag.client, tag.seq));
        if session.replies.len() > self.limits.replies_per_client_max {
            let (seq, evicted) = session.replies.pop_first().expect("over the limit means non-empty");
            session.forgotten_max = session.forgotten_max.max(seq);
            self.reply_expiry.remove(&(evicted.stamp_ts, tag.client, seq));
        }
        if self.reply_expiry.len() > self.limits.replies_max {
            let (_, client, seq) = self.reply_expiry.pop_first().expect("over the limit means non-empty");
            self.forget(&client, seq);
        }
        self.touch(&tag.client, now_ts);
    }

    /// Drops the kept reply `(client, seq)` (already out of the expiry index): a
    /// retry of it, or of any lower seq not kept, answers `indeterminate`.
    fn forget(&mut self, client: &ClientId, seq: Seq) {
        let session = self.data.clients.get_mut(client).expect("indexed reply has a session");
        session.replies.remove(&seq);
        session.forgotten_max = session.forgotten_max.max(seq);
    }

    fn touch(&mut self, client: &ClientId, now_ts: u64) {
        let session = self.data.clients.get_mut(client).expect("touching a known client");
        self.client_expiry.remove(&(session.last_seen_ts, *client));
        session.last_seen_ts = session.last_seen_ts.max(now_ts);
        self.client_expiry.insert((session.last_seen_ts, *client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_rpc::kv::OkReply;

    fn limits() -> DedupLimits {
        DedupLimits { clients_max: 2, replies_per_client_max: 3, replies_max: 5, reply_age_ts_max: 100 }
    }

    fn tag(client: u128, seq: Seq, acked: Seq) -> WriteTag {
        WriteTag { client: ClientId::from_u128(client), seq, acked }
    }

    fn written(v: u64) -> Outcome {
        Outcome::Ok(OkReply::Written { version: v })
    }

    /// Admits and, when admitted, records `written(seq)`; returns what the client hears.
    fn write(d: &mut Dedup, t: WriteTag, now: u64) -> Outcome {
        match d.admit(&t, now) {
            Admission::Apply => {
                d.record(&t, now, written(t.seq));
                written(t.seq)
            }
            Admission::Replay(r) | Admission::Refuse(r) => r,
        }
    }

    #[test]
    fn a_retry_gets_the_kept_reply_and_is_not_applied_again() {
        let mut d = Dedup::new(limits());
        assert_eq!(d.admit(&tag(1, 1, 0), 10), Admission::Apply);
        d.record(&tag(1, 1, 0), 10, written(42));
        assert_eq!(d.admit(&tag(1, 1, 0), 11), Admission::Replay(written(42)));
        assert_eq!(d.admit(&tag(1, 1, 0), 12), Admission::Replay(written(42)));
    }

    #[test]
    fn out_of_order_seqs_with_many_in_flight() {
        let mut d = Dedup::new(limits());
        assert_eq!(write(&mut d, tag(1, 3, 0), 1), written(3));
        assert_eq!(write(&mut d, tag(1, 1, 0), 2), written(1));
        assert_eq!(write(&mut d, tag(1, 2, 0), 3), written(2));
        for seq in 1..=3 {
            assert_eq!(d.admit(&tag(1, seq, 0), 4), Admission::Replay(written(seq)));
        }
    }

    #[test]
    fn acked_prefix_drops_replies_and_answers_indeterminate_below_it() {
        let mut d = Dedup::new(limits());
        write(&mut d, tag(1, 1, 0), 1);
        write(&mut d, tag(1, 2, 0), 2);
        write(&mut d, tag(1, 3, 2), 3);
        let session = d.session(&ClientId::from_u128(1)).unwrap();
        assert_eq!(session.acked, 2);
        assert_eq!(session.replies.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(d.admit(&tag(1, 2, 0), 4), Admission::Refuse(Outcome::Indeterminate));
        assert_eq!(d.admit(&tag(1, 1, 2), 4), Admission::Refuse(Outcome::Indeterminate));
        // A stale acked prefix never lowers it.
        assert_eq!(d.admit(&tag(1, 3, 1), 4), Admission::Replay(written(3)));
        assert_eq!(d.session(&ClientId::from_u128(1)).unwrap().acked, 2);
        assert_eq!(d.reply_expiry.len(), 1, "the expiry index follows the table");
    }

    #[test]
    fn eviction_over_the_per_client_limit_answers_indeterminate() {
        let mut d = Dedup::new(limits());
        for seq in 1..=4 {
            write(&mut d, tag(1, seq, 0), seq);
        }
        assert_eq!(d.admit(&tag(1, 1, 0), 5), Admission::Refuse(Outcome::Indeterminate));
        assert_eq!(d.admit(&tag(1, 2, 0), 5), Admission::Replay(written(2)));
        // A seq never seen but below an evicted one is refused, never applied.
        let mut d = Dedup::new(limits());
        for seq in [2, 3, 4, 5] {
            write(&mut d, tag(1, seq, 0), seq);
        }
        assert_eq!(d.admit(&tag(1, 1, 0), 6), Admission::Refuse(Outcome::Indeterminate));
        assert_eq!(d.admit(&tag(1, 6, 0), 6), Admission::Apply);
    }

    #[test]
    fn the_oldest_reply_in_the_table_is_evicted_beyond_the_total_limit() {
        let mut d = Dedup::new(limits());
        for seq in 1..=3 {
            write(&mut d, tag(1, seq, 0), seq);
        }
        write(&mut d, tag(2, 1, 0), 10);
        write(&mut d, tag(2, 2, 0), 11);
        assert_eq!(d.reply_expiry.len(), 5);
        write(&mut d, tag(2, 3, 0), 12);
        assert_eq!(d.reply_expiry.len(), 5);
        assert_eq!(d.admit(&tag(1, 1, 0), 13), Admission::Refuse(Outcome::Indeterminate));
        assert_eq!(d.admit(&tag(1, 2, 0), 13), Admission::Replay(written(2)));
        assert_eq!(d.admit(&tag(2, 1, 0), 13), Admission::Replay(written(1)));
    }

    #[test]
    fn a_full_table_refuses_new_clients_with_unavailable() {
        let mut d = Dedup::new(limits());
        write(&mut d, tag(1, 1, 0), 1);
        write(&mut d, tag(2, 1, 0), 1);
        assert_eq!(d.admit(&tag(3, 1, 0), 2), Admission::Refuse(Outcome::Unavailable));
        assert_eq!(d.client_count(), 2);
        assert_eq!(d.admit(&tag(1, 2, 0), 2), Admission::Apply, "known clients still write");
    }

    #[test]
    fn expiry_by_log_age_answers_indeterminate_then_forgets_silent_clients() {
        let mut d = Dedup::new(limits());
        write(&mut d, tag(1, 1, 0), 10);
        write(&mut d, tag(2, 1, 0), 50);
        // At log time 110 nothing is older than 100 units yet.
        assert_eq!(d.admit(&tag(1, 1, 0), 110), Admission::Replay(written(1)));
        // Client 1 was touched at 110; its reply (stamped 10) expires at 111.
        assert_eq!(d.admit(&tag(1, 1, 0), 111), Admission::Refuse(Outcome::Indeterminate));
        // Client 2 silent since 50: gone at 151, and its reply with it.
        d.expire(151);
        assert!(d.session(&ClientId::from_u128(2)).is_none());
        assert!(d.session(&ClientId::from_u128(1)).is_some());
        assert_eq!(d.client_count(), 1);
        assert_eq!(d.client_expiry.len(), 1);
        assert!(d.reply_expiry.is_empty());
    }

    #[test]
    fn same_commands_give_same_table_on_two_replicas() {
        let steps: Vec<(WriteTag, u64)> = (0..200u64)
            .map(|i| (tag((i % 5) as u128, i / 5 + 1 + (i % 3), (i / 5).saturating_sub(2)), i * 7))
            .collect();
        let run = || {
            let limits =
                DedupLimits { clients_max: 4, replies_per_client_max: 2, replies_max: 6, reply_age_ts_max: 60 };
            let mut d = Dedup::new(limits);
            let answers: Vec<Outcome> = steps.iter().map(|(t, now)| write(&mut d, *t, *now)).collect();
            (d, answers)
        };
        let (a, answers_a) = run();
        let (b, answers_b) = run();
        assert_eq!(a, b);
        assert_eq!(answers_a, answers_b);
        assert!(answers_a.contains(&Outcome::Indeterminate));
        assert!(answers_a.contains(&Outcome::Unavailable));
    }

    #[test]
    fn restore_rebuilds_indexes_and_rejects_inconsistent_data() {
        let mut d = Dedup::new(limits());
        write(&mut d, tag(1, 1, 0), 5);
        write(&mut d, tag(1, 2, 0), 6);
        let back = Dedup::from_data(d.data().clone(), limits(), 6).unwrap();
        assert_eq!(back, d);
        assert!(Dedup::from_data(d.data().clone(), limits(), 5).unwrap_err().contains("after the log clock"));
        let mut bad = d.data().clone();
        bad.clients.values_mut().next().unwrap().acked = 1;
        assert!(Dedup::from_data(bad, limits(), 6).unwrap_err().contains("at or below acked"));
        let small = DedupLimits { replies_per_client_max: 1, ..limits() };
        assert!(Dedup::from_data(d.data().clone(), small, 6).is_err());
    }
}
