//! The transaction lab (issue 11, DESIGN §8): named scenarios, each an
//! interleaving scripted step by step in the whole-cluster simulator, under each
//! conflict policy, with keys on one shard and on three.
//!
//! A calm cluster of 3 nodes × 2 cores, 8 shards of 3 replicas, no faults and no
//! other client. The scripted client ([`Cluster::script_get`] and friends) sends
//! one request at a time and the test runs simulated time until its answer:
//! "T2 waits" is "T2 has no answer after [`WAIT_MS`] simulated ms while nothing
//! else happens", which the simulator makes deterministic. Transactions are
//! begun in order, so the one begun first is the older. Aborts are asserted with
//! their exact reason, and every scenario ends by reading its keys back (values
//! and versions) and by the run's own checks ([`Cluster::finish`]: replicas
//! agree, and the scripted transactions' history is strictly serializable).
//!
//! Each scenario runs 20 seeds (`CORE_SIM_SEEDS=<n>` for more, `CORE_SEED=<s>`
//! for one); a failure prints the `CORE_SEED` that reproduces it.

use corekv_engine::node::PlantedBug;
use corekv_engine::sim::cluster::script::{Handle, TxnEnd, TxnHandle};
use corekv_engine::sim::cluster::{Cluster, ClusterConfig};
use corekv_engine::sim::seed_list;
use corekv_rpc::kv::{OkReply, Outcome, Version};
use corekv_rpc::txn::{AbortReason, Policy};

/// Every shard elects a leader well within this (elections take 100–200 ms).
const LEADERS_MS_MAX: u64 = 5_000;
/// A step that must be answered gets this long: a calm cluster answers in a few
/// simulated ms, and this stays far below the lock-wait backstop (5 s).
const STEP_MS_MAX: u64 = 1_000;
/// A request that waits for a lock must still be unanswered after this long.
const WAIT_MS: u64 = 500;

/// Where the scenario's keys `x`, `y`, `z` live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// All three on one shard: every commit is one-phase.
    OneShard,
    /// On three shards whose preferred leaders are three different nodes: every
    /// commit touching two of them is a two-phase commit.
    ThreeShards,
}

/// Runs `scenario` on a fresh lab for each seed.
fn run(name: &str, layout: Layout, policy: Policy, scenario: fn(&mut Lab)) {
    for seed in seed_list(name) {
        let outcome = std::panic::catch_unwind(|| {
            let mut lab = Lab::new(seed, layout, policy, PlantedBug::None);
            scenario(&mut lab);
            lab.finish();
        });
        if let Err(panic) = outcome {
            eprintln!("lab scenario {name} ({layout:?}, {policy}) failed: rerun with CORE_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

/// Runs `scenario` with `bug` planted in every node core, for each seed: the
/// scenario must fail every time (its assertions or the run's checks catch
/// the bug), else it proves nothing about the behaviour it names.
fn planted(name: &str, layout: Layout, policy: Policy, bug: PlantedBug, scenario: fn(&mut Lab)) {
    for seed in seed_list(name) {
        let outcome = std::panic::catch_unwind(|| {
            let mut lab = Lab::new(seed, layout, policy, bug);
            scenario(&mut lab);
            lab.finish();
        });
        assert!(outcome.is_err(), "CORE_SEED={seed}: {name} passed with {bug:?} planted");
    }
}

/// One scenario's cluster and keys.
struct Lab {
    c: Cluster,
    policy: Policy,
    x: Vec<u8>,
    y: Vec<u8>,
    z: Vec<u8>,
}

impl Lab {
    fn new(seed: u64, layout: Layout, policy: Policy, planted_bug: PlantedBug) -> Lab {
        let mut cfg = ClusterConfig::new(seed, 3, 2);
        cfg.planted_bug = planted_bug;
        cfg.clients = 0;
        cfg.keys = 0;
        cfg.txn_clients = 0;
        let mut c = Cluster::new(cfg);
        // A leader change would drop the lock tables mid-scenario (a new leader
        // rebuilds only prepared transactions' locks): start once leadership
        // has settled on each shard's preferred replica.
        assert!(c.run_until_preferred_leaders(LEADERS_MS_MAX), "every shard is led by its preferred replica");
        // Shards 0, 1, 2 have their first replicas on nodes 1, 2, 3.
        let shards = match layout {
            Layout::OneShard => [0, 0, 0],
            Layout::ThreeShards => [0, 1, 2],
        };
        let key_on = |prefix: &str, shard| {
            (0..10_000)
                .map(|i| format!("{prefix}{i}").into_bytes())
                .find(|k| c.map().shard_of(k) == shard)
                .expect("some key lands on every shard")
        };
        let (x, y, z) = (key_on("x", shards[0]), key_on("y", shards[1]), key_on("z", shards[2]));
        Lab { c, policy, x, y, z }
    }

    fn begin(&mut self) -> TxnHandle {
        self.c.script_begin(self.policy)
    }

    /// Runs until `h` is answered; its answer.
    fn answer(&mut self, h: Handle, what: &str) -> Outcome {
        match self.c.run_until_reply(h, STEP_MS_MAX) {
            Some(outcome) => outcome,
            None => panic!("{what}: no answer after {STEP_MS_MAX} simulated ms"),
        }
    }

    /// Asserts that `h` is still unanswered after `WAIT_MS` more simulated ms.
    fn waits(&mut self, h: Handle, what: &str) {
        let answer = self.c.run_until_reply(h, WAIT_MS);
        assert_eq!(answer, None, "{what} must wait");
    }

    /// A transactional read of `key` that must be answered: (version, value).
    fn read(&mut self, t: TxnHandle, key: &[u8]) -> (Version, Option<Vec<u8>>) {
        let h = self.c.script_get(t, key);
        self.read_answer(h)
    }

    fn read_answer(&mut self, h: Handle) -> (Version, Option<Vec<u8>>) {
        match self.answer(h, "a read") {
            Outcome::Ok(OkReply::TxnValue { version, value }) => (version, value),
            other => panic!("a read answered {other:?}"),
        }
    }

    /// A transactional write whose lock must be granted at once.
    fn write(&mut self, t: TxnHandle, key: &[u8], value: &[u8]) {
        let h = self.c.script_put(t, key, value);
        self.granted(h);
    }

    fn granted(&mut self, h: Handle) {
        assert_eq!(self.answer(h, "a lock"), Outcome::Ok(OkReply::Done), "the lock is granted");
    }

    /// Commits `t`, which must commit; its commit version. Returns once every
    /// participant applied the decision, so `t` holds no lock any more.
    fn commit(&mut self, t: TxnHandle) -> Version {
        let h = self.c.script_commit(t);
        let version = match self.answer(h, "a commit") {
            Outcome::Ok(OkReply::Written { version }) => version,
            other => panic!("a commit answered {other:?}"),
        };
        assert_eq!(self.c.script_end_of(t), Some(TxnEnd::Committed(version)));
        assert!(self.c.run_until_resolved(t, STEP_MS_MAX), "every participant applies the commit");
        version
    }

    /// Commits `t`, which must abort for `reason`.
    fn commit_aborts(&mut self, t: TxnHandle, reason: AbortReason) {
        let h = self.c.script_commit(t);
        self.aborted(t, h, reason);
    }

    /// `h`, a step of `t`, answers `aborted` with `reason`; the client then
    /// releases `t`'s locks everywhere, and the step returns once they are gone.
    fn aborted(&mut self, t: TxnHandle, h: Handle, reason: AbortReason) {
        assert_eq!(self.answer(h, "an aborted step"), Outcome::Aborted { reason });
        assert_eq!(self.c.script_end_of(t), Some(TxnEnd::Aborted(reason)));
        self.abort(t);
    }

    /// The client aborts `t` (or cleans up after an abort): every shard it
    /// touched drops its locks, and no participant keeps an intent of it.
    fn abort(&mut self, t: TxnHandle) {
        for h in self.c.script_abort(t) {
            assert_eq!(self.answer(h, "a release"), Outcome::Ok(OkReply::Done));
        }
        assert!(self.c.run_until_resolved(t, STEP_MS_MAX), "every participant applies the abort");
    }

    /// A plain linearizable read of `key`: its version and value, `None` when
    /// absent.
    fn read_back(&mut self, key: &[u8]) -> Option<(Version, Vec<u8>)> {
        let h = self.c.script_read(key);
        match self.answer(h, "a read back") {
            Outcome::Ok(OkReply::Value { version, value }) => Some((version, value)),
            Outcome::NotFound => None,
            other => panic!("a read back answered {other:?}"),
        }
    }

    fn finish(self) {
        if let Err(failure) = self.c.finish() {
            panic!("the run's checks failed: {failure}");
        }
    }
}

fn keys(lab: &Lab) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (lab.x.clone(), lab.y.clone(), lab.z.clone())
}

/// The scenarios, each a function of a fresh lab (its policy and layout chosen
/// by the test that runs it).
mod scenarios {
    use super::*;

    /// Commit persists all writes: every key written, with one version.
    pub fn commit_persists_all_writes(lab: &mut Lab) {
        let (x, y, z) = keys(lab);
        let t = lab.begin();
        lab.write(t, &x, b"x1");
        lab.write(t, &y, b"y1");
        lab.write(t, &z, b"z1");
        let v = lab.commit(t);
        assert_eq!(lab.read_back(&x), Some((v, b"x1".to_vec())));
        assert_eq!(lab.read_back(&y), Some((v, b"y1".to_vec())));
        assert_eq!(lab.read_back(&z), Some((v, b"z1".to_vec())));
    }

    /// Abort discards all writes: the keys keep the values committed before,
    /// and the aborted transaction's locks are gone.
    pub fn abort_discards_all_writes(lab: &mut Lab) {
        let (x, y, z) = keys(lab);
        let t0 = lab.begin();
        for (key, value) in [(&x, b"x0"), (&y, b"y0"), (&z, b"z0")] {
            lab.write(t0, key, value);
        }
        let v0 = lab.commit(t0);
        let t1 = lab.begin();
        assert_eq!(lab.read(t1, &x), (v0, Some(b"x0".to_vec())));
        for (key, value) in [(&x, b"x1"), (&y, b"y1"), (&z, b"z1")] {
            lab.write(t1, key, value);
        }
        lab.abort(t1);
        assert_eq!(lab.c.script_end_of(t1), Some(TxnEnd::Aborted(AbortReason::Requested)));
        for (key, value) in [(&x, b"x0"), (&y, b"y0"), (&z, b"z0")] {
            assert_eq!(lab.read_back(key), Some((v0, value.to_vec())));
        }
        // Nothing of t1 is left: a younger transaction locks all three at once.
        let t2 = lab.begin();
        for (key, value) in [(&x, b"x2"), (&y, b"y2"), (&z, b"z2")] {
            lab.write(t2, key, value);
        }
        let v2 = lab.commit(t2);
        assert!(v2 > v0);
        for (key, value) in [(&x, b"x2"), (&y, b"y2"), (&z, b"z2")] {
            assert_eq!(lab.read_back(key), Some((v2, value.to_vec())));
        }
    }

    /// An older reader of x, then a younger writer of x: the writer aborts
    /// (no-wait, `conflict`), waits until the reader commits (wound-wait) or
    /// dies (wait-die, `died`); under OCC the writer commits first and the
    /// reader fails validation.
    pub fn older_reader_then_younger_writer(lab: &mut Lab) {
        let (x, y, _) = keys(lab);
        let reader = lab.begin();
        let writer = lab.begin();
        assert_eq!(lab.read(reader, &x), (0, None));
        let lock = lab.c.script_put(writer, &x, b"x-writer");
        match lab.policy {
            Policy::NoWait | Policy::WaitDie => {
                let reason = if lab.policy == Policy::NoWait { AbortReason::Conflict } else { AbortReason::Died };
                lab.aborted(writer, lock, reason);
                lab.write(reader, &y, b"y-reader");
                let v = lab.commit(reader);
                assert_eq!(lab.read_back(&x), None);
                assert_eq!(lab.read_back(&y), Some((v, b"y-reader".to_vec())));
            }
            Policy::WoundWait => {
                lab.waits(lock, "a younger writer behind an older reader");
                lab.write(reader, &y, b"y-reader");
                let v_reader = lab.commit(reader);
                lab.granted(lock);
                let v_writer = lab.commit(writer);
                assert_eq!(lab.read_back(&x), Some((v_writer, b"x-writer".to_vec())));
                assert_eq!(lab.read_back(&y), Some((v_reader, b"y-reader".to_vec())));
            }
            Policy::Occ => {
                // OCC locks nothing before the commit: the writer goes first.
                lab.granted(lock);
                let v_writer = lab.commit(writer);
                lab.write(reader, &y, b"y-reader");
                lab.commit_aborts(reader, AbortReason::Validation);
                assert_eq!(lab.read_back(&x), Some((v_writer, b"x-writer".to_vec())));
                assert_eq!(lab.read_back(&y), None);
            }
        }
    }

    /// Read before write: T1 and T2 both read x; T1 commits; then T2 writes x
    /// (an upgrade of its shared lock, which T1 no longer shares) and commits.
    /// Both commit, under every policy.
    pub fn read_before_write_both_commit(lab: &mut Lab) {
        let (x, y, _) = keys(lab);
        let t0 = lab.begin();
        lab.write(t0, &x, b"x0");
        let v0 = lab.commit(t0);
        let t1 = lab.begin();
        let t2 = lab.begin();
        assert_eq!(lab.read(t1, &x), (v0, Some(b"x0".to_vec())));
        assert_eq!(lab.read(t2, &x), (v0, Some(b"x0".to_vec())));
        lab.write(t1, &y, b"y1");
        let v1 = lab.commit(t1);
        lab.write(t2, &x, b"x2");
        let v2 = lab.commit(t2);
        assert!(v2 > v0, "a key's versions increase");
        assert_eq!(lab.read_back(&x), Some((v2, b"x2".to_vec())));
        assert_eq!(lab.read_back(&y), Some((v1, b"y1".to_vec())));
    }

    /// Write-write: T1 and T2 (both begun) write x and y; T1 commits first,
    /// then T2; both commit, in that order: T2's versions are above T1's and
    /// its values are the ones left.
    pub fn write_write_both_commit_in_order(lab: &mut Lab) {
        let (x, y, _) = keys(lab);
        let t1 = lab.begin();
        let t2 = lab.begin();
        lab.write(t1, &x, b"x1");
        lab.write(t1, &y, b"y1");
        let v1 = lab.commit(t1);
        assert_eq!(lab.read_back(&x), Some((v1, b"x1".to_vec())));
        lab.write(t2, &x, b"x2");
        lab.write(t2, &y, b"y2");
        let v2 = lab.commit(t2);
        assert!(v2 > v1, "the later writer's version is above the earlier's");
        assert_eq!(lab.read_back(&x), Some((v2, b"x2".to_vec())));
        assert_eq!(lab.read_back(&y), Some((v2, b"y2".to_vec())));
    }

    /// Three transactions in a write/read cycle: T1 reads x and writes y, T2
    /// reads y and writes z, T3 reads z and writes x (T1 oldest). All three read
    /// first, then each asks its write lock, then they commit. Never do all
    /// three commit (that would be a cycle); under no-wait exactly one does.
    pub fn three_txn_cycle(lab: &mut Lab) {
        let (x, y, z) = keys(lab);
        let t1 = lab.begin();
        let t2 = lab.begin();
        let t3 = lab.begin();
        assert_eq!(lab.read(t1, &x), (0, None));
        assert_eq!(lab.read(t2, &y), (0, None));
        assert_eq!(lab.read(t3, &z), (0, None));
        let committed = match lab.policy {
            Policy::NoWait => {
                // Each write lock meets the next transaction's read lock.
                let h1 = lab.c.script_put(t1, &y, b"y1");
                lab.aborted(t1, h1, AbortReason::Conflict);
                let h2 = lab.c.script_put(t2, &z, b"z2");
                lab.aborted(t2, h2, AbortReason::Conflict);
                // t1 released x: t3 goes through.
                lab.write(t3, &x, b"x3");
                vec![(t3, lab.commit(t3))]
            }
            Policy::WaitDie => {
                // The older waits for the younger; the youngest, t3, meets the
                // oldest, t1, and dies: the wait chain t1 -> t2 -> t3 breaks.
                let h1 = lab.c.script_put(t1, &y, b"y1");
                lab.waits(h1, "t1 behind the younger t2");
                let h2 = lab.c.script_put(t2, &z, b"z2");
                lab.waits(h2, "t2 behind the younger t3");
                let h3 = lab.c.script_put(t3, &x, b"x3");
                lab.aborted(t3, h3, AbortReason::Died);
                lab.granted(h2);
                let v2 = lab.commit(t2);
                lab.granted(h1);
                let v1 = lab.commit(t1);
                vec![(t2, v2), (t1, v1)]
            }
            Policy::WoundWait => {
                // The oldest, t1, wounds t2 for y; t2 learns it at its next step.
                lab.write(t1, &y, b"y1");
                let h2 = lab.c.script_put(t2, &z, b"z2");
                lab.aborted(t2, h2, AbortReason::Wounded);
                // t3, younger than t1, waits for x until t1 commits.
                let h3 = lab.c.script_put(t3, &x, b"x3");
                lab.waits(h3, "t3 behind the older t1");
                let v1 = lab.commit(t1);
                lab.granted(h3);
                let v3 = lab.commit(t3);
                vec![(t1, v1), (t3, v3)]
            }
            Policy::Occ => {
                // No locks: the writes go through; the commits validate in turn.
                lab.write(t1, &y, b"y1");
                lab.write(t2, &z, b"z2");
                lab.write(t3, &x, b"x3");
                let v1 = lab.commit(t1);
                lab.commit_aborts(t2, AbortReason::Validation);
                let v3 = lab.commit(t3);
                vec![(t1, v1), (t3, v3)]
            }
        };
        assert!(committed.len() < 3, "all three committing would be a cycle");
        let (x_left, y_left, z_left) = match lab.policy {
            Policy::NoWait => (Some(committed[0].1), None, None),
            Policy::WaitDie => (None, Some(committed[1].1), Some(committed[0].1)),
            Policy::WoundWait | Policy::Occ => (Some(committed[1].1), Some(committed[0].1), None),
        };
        for (key, version, value) in [(&x, x_left, b"x3"), (&y, y_left, b"y1"), (&z, z_left, b"z2")] {
            assert_eq!(lab.read_back(key), version.map(|v| (v, value.to_vec())));
        }
    }

    /// Wound-wait: an older reader wounds the younger holder of an exclusive
    /// lock and reads at once; the younger learns `wounded` at its commit, and
    /// none of its writes (on every shard it locked) remains.
    pub fn wound_wait_older_wounds_younger(lab: &mut Lab) {
        let (x, y, _) = keys(lab);
        let older = lab.begin();
        let younger = lab.begin();
        // y first: the younger's anchor is y's shard, x's shard a participant.
        lab.write(younger, &y, b"y-younger");
        lab.write(younger, &x, b"x-younger");
        assert_eq!(lab.read(older, &x), (0, None), "the older does not wait");
        lab.commit_aborts(younger, AbortReason::Wounded);
        lab.write(older, &x, b"x-older");
        let v = lab.commit(older);
        assert_eq!(lab.read_back(&x), Some((v, b"x-older".to_vec())));
        assert_eq!(lab.read_back(&y), None);
    }

    /// Wound-wait: a wound reaches the wounded transaction on every shard
    /// (issue 11: "wounds and deaths reach holders on other cores and nodes").
    /// The younger holds a read lock of x; the older's write of x wounds it
    /// and is granted at once; the younger's next lock request, for y, is
    /// refused `wounded` wherever y lives, and it does not wound anyone there.
    pub fn wound_wait_wound_reaches_every_shard_of_the_younger(lab: &mut Lab) {
        let (x, y, _) = keys(lab);
        let older = lab.begin();
        let younger = lab.begin();
        assert_eq!(lab.read(younger, &x), (0, None));
        lab.write(older, &x, b"x-older");
        let lock = lab.c.script_put(younger, &y, b"y-younger");
        lab.aborted(younger, lock, AbortReason::Wounded);
        let v = lab.commit(older);
        assert_eq!(lab.read_back(&x), Some((v, b"x-older".to_vec())));
        assert_eq!(lab.read_back(&y), None);
    }

    /// Wound-wait: a younger reader waits for the older holder of an exclusive
    /// lock, and reads the older's write once it committed.
    pub fn wound_wait_younger_waits_for_older(lab: &mut Lab) {
        let (x, y, _) = keys(lab);
        let older = lab.begin();
        let younger = lab.begin();
        lab.write(older, &x, b"x-older");
        lab.write(older, &y, b"y-older");
        let read = lab.c.script_get(younger, &x);
        lab.waits(read, "a younger reader behind an older writer");
        let v_older = lab.commit(older);
        assert_eq!(lab.read_answer(read), (v_older, Some(b"x-older".to_vec())));
        lab.write(younger, &y, b"y-younger");
        let v_younger = lab.commit(younger);
        assert!(v_younger > v_older);
        assert_eq!(lab.read_back(&x), Some((v_older, b"x-older".to_vec())));
        assert_eq!(lab.read_back(&y), Some((v_younger, b"y-younger".to_vec())));
    }

    /// Wait-die: an older reader waits for the younger holder of an exclusive
    /// lock, and reads the younger's write once it committed.
    pub fn wait_die_older_waits_for_younger(lab: &mut Lab) {
        let (x, y, _) = keys(lab);
        let older = lab.begin();
        let younger = lab.begin();
        lab.write(younger, &x, b"x-younger");
        lab.write(younger, &y, b"y-younger");
        let read = lab.c.script_get(older, &x);
        lab.waits(read, "an older reader behind a younger writer");
        let v_younger = lab.commit(younger);
        assert_eq!(lab.read_answer(read), (v_younger, Some(b"x-younger".to_vec())));
        lab.write(older, &y, b"y-older");
        let v_older = lab.commit(older);
        assert!(v_older > v_younger);
        assert_eq!(lab.read_back(&x), Some((v_younger, b"x-younger".to_vec())));
        assert_eq!(lab.read_back(&y), Some((v_older, b"y-older".to_vec())));
    }

    /// Wait-die: a younger reader of a locked key dies; it is retried with its
    /// original start version, so by then it is older than a transaction begun
    /// after its first attempt: it waits for that one instead of dying again,
    /// and commits, at its second attempt with its first start version.
    pub fn wait_die_younger_dies_then_commits_with_its_start(lab: &mut Lab) {
        let (x, y, _) = keys(lab);
        let t1 = lab.begin();
        let t2 = lab.begin();
        lab.write(t1, &x, b"x1");
        lab.write(t1, &y, b"y1");
        let read = lab.c.script_get(t2, &x);
        lab.aborted(t2, read, AbortReason::Died);
        let v1 = lab.commit(t1);
        // t3 begins after t2's first attempt, and locks x.
        let t3 = lab.begin();
        lab.write(t3, &x, b"x3");
        let t2_again = lab.c.script_retry(t2);
        let (first, second) = (lab.c.script_meta(t2), lab.c.script_meta(t2_again));
        assert_eq!(second.age.start, first.age.start, "the retry keeps its start version");
        assert_eq!(second.id.client, first.id.client);
        assert_ne!(second.id, first.id, "a retry is a new attempt");
        assert!(second.age.older_than(&lab.c.script_meta(t3).age));
        let read = lab.c.script_get(t2_again, &x);
        lab.waits(read, "the retried, now older, reader behind t3");
        let v3 = lab.commit(t3);
        assert_eq!(lab.read_answer(read), (v3, Some(b"x3".to_vec())));
        lab.write(t2_again, &x, b"x2");
        lab.write(t2_again, &y, b"y2");
        let v2 = lab.commit(t2_again);
        assert_eq!(lab.c.script_attempts(t2_again), 2);
        assert!(v1 < v3 && v3 < v2);
        assert_eq!(lab.read_back(&x), Some((v2, b"x2".to_vec())));
        assert_eq!(lab.read_back(&y), Some((v2, b"y2".to_vec())));
    }
}

/// One test per layout and policy: `scenario::one_shard::wound_wait`, ….
macro_rules! lab_tests {
    ($scenario:ident: $($policy_name:ident => $policy:expr),+ $(,)?) => {
        mod $scenario {
            use super::*;
            mod one_shard {
                use super::*;
                $(
                    #[test]
                    fn $policy_name() {
                        let name = concat!(stringify!($scenario), "::one_shard");
                        run(name, Layout::OneShard, $policy, scenarios::$scenario);
                    }
                )+
            }
            mod three_shards {
                use super::*;
                $(
                    #[test]
                    fn $policy_name() {
                        let name = concat!(stringify!($scenario), "::three_shards");
                        run(name, Layout::ThreeShards, $policy, scenarios::$scenario);
                    }
                )+
            }
        }
    };
}

macro_rules! every_policy {
    ($($scenario:ident),+ $(,)?) => {
        $(
            lab_tests!($scenario:
                no_wait => Policy::NoWait,
                wait_die => Policy::WaitDie,
                wound_wait => Policy::WoundWait,
                occ => Policy::Occ,
            );
        )+
    };
}

every_policy!(
    commit_persists_all_writes,
    abort_discards_all_writes,
    older_reader_then_younger_writer,
    read_before_write_both_commit,
    write_write_both_commit_in_order,
    three_txn_cycle,
);
lab_tests!(wound_wait_older_wounds_younger: wound_wait => Policy::WoundWait);
lab_tests!(wound_wait_wound_reaches_every_shard_of_the_younger: wound_wait => Policy::WoundWait);
lab_tests!(wound_wait_younger_waits_for_older: wound_wait => Policy::WoundWait);
lab_tests!(wait_die_older_waits_for_younger: wait_die => Policy::WaitDie);
lab_tests!(wait_die_younger_dies_then_commits_with_its_start: wait_die => Policy::WaitDie);

/// OCC's validation skipped: the older reader commits although the younger
/// writer overwrote what it read.
#[test]
fn planted_skipped_validation_fails_older_reader_then_younger_writer() {
    for layout in [Layout::OneShard, Layout::ThreeShards] {
        let name = "planted_skipped_validation";
        let bug = PlantedBug::SkipTxnValidation;
        planted(name, layout, Policy::Occ, bug, scenarios::older_reader_then_younger_writer);
    }
}

/// Participants told another commit version than the anchor's: one
/// transaction's keys read back at different versions.
#[test]
fn planted_split_commit_version_fails_commit_persists_all_writes() {
    let bug = PlantedBug::SplitCommitVersion;
    for policy in Policy::ALL {
        planted(
            "planted_split_commit_version",
            Layout::ThreeShards,
            policy,
            bug,
            scenarios::commit_persists_all_writes,
        );
    }
}
