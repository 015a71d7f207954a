//! A minority cannot make progress, with real `corekv-server` processes
//! (DESIGN §4, §6): with one node of three killed and another hung (SIGSTOP),
//! a write is `indeterminate` or `unavailable`, never acknowledged, and a read is
//! not served, both on a shard the surviving node leads (its proposals cannot
//! commit, and it cannot confirm its leadership) and on one it does not (no
//! leader can be elected). Once the nodes are back, each write shows as either
//! completed or visibly absent (an `unavailable` one always absent), the same
//! client retries and succeeds, and the whole history, the writes of unknown
//! fate included, is linearizable.

use std::time::Duration;

use corekv_engine::check::{Call, Outcome};
use corekv_rpc::client::KvError;
use corekv_rpc::kv::NodeId;
use corekv_tests::history::{Recorder, check_linearizable};
use corekv_tests::{knobs, local};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The deadline of requests to the minority: long enough for several attempts
/// (an attempt waits up to a second), short enough to keep the test short.
const MINORITY_DEADLINE: Duration = Duration::from_secs(2);
/// A liveness bound for requests to a healthy cluster.
const HEALTHY_DEADLINE: Duration = Duration::from_secs(20);
/// The node that stays up.
const SURVIVOR: NodeId = 1;

#[test]
fn a_minority_acknowledges_no_write_and_serves_no_read_and_the_writes_settle_once_healed() {
    let seed = knobs::seed();
    eprintln!("seed {seed}: rerun with {}", knobs::rerun_hint(seed));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let began = std::time::Instant::now();
    let mut cluster = local::start(3, 8);
    eprintln!("started in {:?}", began.elapsed());
    let mut client = local::connect(&cluster, HEALTHY_DEADLINE);
    let recorder = Recorder::new();
    let dump = cluster.dir().join("history.txt");

    // One key on a shard the survivor leads, one on a shard another node leads
    // (as the cluster says now; if leadership moves meanwhile, the assertions
    // below hold all the same).
    let leaders = local::leaders(&client.status());
    let led_by = |client: &corekv_rpc::client::blocking::Client, survivor_leads: bool| {
        (0..1000)
            .map(|i| format!("m-{i}").into_bytes())
            .find(|key| leaders.get(&client.map().shard_of(key)).is_some_and(|&l| (l == SURVIVOR) == survivor_leads))
            .expect("with 8 shards over 3 nodes both kinds of key exist")
    };
    let keys = [led_by(&client, true), led_by(&client, false)];
    let mut before = Vec::new();
    for key in &keys {
        let value = [key.as_slice(), b"-before"].concat();
        let call = Call::Put { key: key.clone(), value: value.clone() };
        let outcome = recorder.write(0, call, || client.put(key, &value)).expect("a put's answer");
        assert!(matches!(outcome, Outcome::Written { .. }), "a healthy cluster acknowledges: {outcome:?}");
        before.push(value);
    }

    // Two of three down: one killed, one hung.
    let (killed, hung): (NodeId, NodeId) = if rng.random_bool(0.5) { (2, 3) } else { (3, 2) };
    eprintln!("killing node {killed}, hanging node {hung}; node {SURVIVOR} survives");
    cluster.kill(killed).expect("kill -9");
    local::pause(&cluster, hung).expect("SIGSTOP");
    client.set_deadline(MINORITY_DEADLINE);
    let mut minority_outcomes = Vec::new();
    for key in &keys {
        let value = [key.as_slice(), b"-minority"].concat();
        let call = Call::Put { key: key.clone(), value: value.clone() };
        let outcome = recorder.write(0, call, || client.put(key, &value)).expect("a put's answer");
        assert!(
            matches!(outcome, Outcome::Indeterminate | Outcome::Unavailable),
            "a minority acknowledged a write of {:?}: {outcome:?}",
            String::from_utf8_lossy(key)
        );
        let read = client.get(key, None);
        assert!(
            matches!(read, Err(KvError::Unavailable { .. })),
            "a minority served a read of {:?}: {read:?}",
            String::from_utf8_lossy(key)
        );
        minority_outcomes.push((value, outcome));
    }

    // Back to three: each write completed or is visibly absent.
    eprintln!("minority phase done at {:?}", began.elapsed());
    let healing = std::time::Instant::now();
    local::resume(&cluster, hung).expect("SIGCONT");
    cluster.restart(killed).expect("restarts");
    cluster.wait_ready(local::READY_WITHIN).expect("every shard has a leader again");
    eprintln!("healed in {:?}", healing.elapsed());
    client.set_deadline(HEALTHY_DEADLINE);
    for ((key, (value, outcome)), old) in keys.iter().zip(&minority_outcomes).zip(&before) {
        let name = String::from_utf8_lossy(key);
        let read = recorder.read(0, key, || client.get(key, None)).expect("a get's answer");
        let Outcome::Value { value: seen, .. } = &read else { panic!("{name} lost its value: {read:?}") };
        let completed = seen == value;
        assert!(completed || seen == old, "{name} reads {seen:?}: neither the minority's write nor the one before");
        assert!(!completed || *outcome == Outcome::Indeterminate, "{name}: a write answered {outcome:?} took effect");
        eprintln!("{name}: the minority's write ({outcome:?}) {}", if completed { "completed" } else { "is absent" });

        // The same client retries, and the retry is what the key then holds.
        let call = Call::Put { key: key.clone(), value: value.clone() };
        let retried = recorder.write(0, call, || client.put(key, value)).expect("a put's answer");
        let Outcome::Written { version } = retried else { panic!("{name}: the retry failed: {retried:?}") };
        let settled = [key.as_slice(), b"-settled"].concat();
        let call = Call::Cas { key: key.clone(), expected_version: version, value: settled.clone() };
        let cas = recorder.write(0, call, || client.cas(key, version, &settled)).expect("a cas's answer");
        assert!(matches!(cas, Outcome::Written { .. }), "{name}: a cas on the retry's version: {cas:?}");
        let last = recorder.read(0, key, || client.get(key, None)).expect("a get's answer");
        assert!(matches!(&last, Outcome::Value { value, .. } if *value == settled), "{name} reads {last:?}");
    }
    eprintln!("settled at {:?}", began.elapsed());
    check_linearizable(&recorder.ops(), &dump).unwrap_or_else(|report| panic!("{report}\nseed {seed}"));
    cluster.stop();
}
