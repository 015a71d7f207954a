//! Real `corekv-server` processes on loopback (DESIGN §11): three nodes with two
//! cores each elect leaders for every shard, serve reads and writes, survive
//! `kill -9` of any one node and of all three at once, and never lose an
//! acknowledged write. Bounds on time here are liveness bounds, never speed claims.

use std::collections::BTreeMap;
use std::time::Duration;

use corekv_rpc::client::blocking::Client;
use corekv_tests::local::{self, READY_WITHIN};

/// A liveness bound for a loaded 2-core machine, not a speed claim.
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// Writes `count` keys with `round` in their values, remembering what was
/// acknowledged.
fn write_round(client: &mut Client, acked: &mut BTreeMap<String, (u64, String)>, round: u32, count: u32) {
    for i in 0..count {
        let key = format!("key-{i:04}");
        let value = format!("round {round} value {i}");
        let version = client.put(key.as_bytes(), value.as_bytes()).expect("a majority is up: the write succeeds");
        if let Some((old, _)) = acked.get(&key) {
            assert!(version > *old, "{key}: version {version} after {old}: versions only rise");
        }
        acked.insert(key, (version, value));
    }
}

fn check_all(client: &mut Client, acked: &BTreeMap<String, (u64, String)>) {
    for (key, (version, value)) in acked {
        let got = client.get(key.as_bytes(), None).expect("reads are served");
        assert_eq!(
            (got.version, got.value),
            (*version, value.clone().into_bytes()),
            "{key}: an acknowledged write was lost"
        );
    }
}

#[test]
fn three_nodes_serve_and_survive_kill_9_of_each_node_and_of_all_at_once() {
    let mut cluster = local::start(3, 64);
    let mut client = local::connect(&cluster, REQUEST_DEADLINE);
    assert_eq!(client.map().shard_count(), 64);
    // Leaders spread as placement says: each shard's preferred replica leads it
    // once balancing has run (a liveness bound, not a speed claim).
    let preferred: BTreeMap<u32, u64> = (0..64).map(|s| (s, client.map().replicas(s)[0].node)).collect();
    let balanced = (0..600).any(|_| {
        let done = local::leaders(&client.status()) == preferred;
        if !done {
            std::thread::sleep(Duration::from_millis(100));
        }
        done
    });
    if !balanced {
        let status = client.status();
        let leaders = local::leaders(&status);
        let off: Vec<String> = preferred
            .iter()
            .filter(|(s, n)| leaders.get(s) != Some(n))
            .map(|(s, n)| {
                let replicas: Vec<String> = status
                    .nodes
                    .iter()
                    .flat_map(|node| node.cores.iter().flat_map(move |c| c.shards.iter().map(move |x| (node.id, x))))
                    .filter(|(_, x)| x.shard == *s)
                    .map(|(id, x)| format!("node {id}: {x:?}"))
                    .collect();
                format!("shard {s} (preferred {n}, led by {:?}): {}", leaders.get(s), replicas.join("; "))
            })
            .collect();
        panic!("every shard ends up led by its preferred replica; not so:\n{}", off.join("\n"));
    }
    let mut per_node = BTreeMap::new();
    for node in preferred.values() {
        *per_node.entry(*node).or_insert(0) += 1;
    }
    assert!(per_node.values().all(|&n| (21..=22).contains(&n)), "leaders spread over nodes: {per_node:?}");

    let mut acked = BTreeMap::new();
    write_round(&mut client, &mut acked, 0, 200);
    check_all(&mut client, &acked);
    // A scan gathers from every shard, merged in key order, cut at the limit.
    let items = client.scan(b"key-0010", b"key-0100", 50).expect("scans").items;
    let keys: Vec<String> = items.iter().map(|i| String::from_utf8(i.key.clone()).unwrap()).collect();
    let expected: Vec<String> = (10..60).map(|i| format!("key-{i:04}")).collect();
    assert_eq!(keys, expected);
    for item in &items {
        let (version, value) = &acked[&String::from_utf8(item.key.clone()).unwrap()];
        assert_eq!((item.version, &item.value), (*version, &value.clone().into_bytes()));
    }

    for (round, victim) in (1..).zip(1..=3u64) {
        cluster.kill(victim).expect("kill -9");
        // The shards it led elect new leaders among the two left; writes go on.
        write_round(&mut client, &mut acked, round, 60);
        check_all(&mut client, &acked);
        cluster.restart(victim).expect("restarts");
        cluster.wait_ready(READY_WITHIN).expect("every shard has a leader again");
    }
    check_all(&mut client, &acked);

    for node in 1..=3 {
        cluster.kill(node).expect("kill -9");
    }
    for node in 1..=3 {
        cluster.restart(node).expect("restarts");
    }
    cluster.wait_ready(READY_WITHIN).expect("every shard has a leader after a full restart");
    let mut client = local::connect(&cluster, REQUEST_DEADLINE);
    check_all(&mut client, &acked);
    write_round(&mut client, &mut acked, 9, 20);
    check_all(&mut client, &acked);

    // Every core did its share, and the counters say the batching happened.
    let stats = local::core_stats(&local::full_status(&mut client, READY_WITHIN));
    assert_eq!(stats.len(), 6, "three nodes, two cores each, all answer stats");
    assert!(stats.iter().all(|s| s.groups > 0), "every core holds replicas: {stats:?}");
    let fdatasyncs: u64 = stats.iter().map(|s| s.wal_fdatasyncs).sum();
    assert!(fdatasyncs > 0, "the WAL syncs");
    for node in 1..=3 {
        let status = cluster.terminate(node).expect("SIGTERM");
        assert!(status.is_some_and(|s| s.success()), "node {node} stops cleanly on SIGTERM: {status:?}");
    }
}
