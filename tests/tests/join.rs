//! A node joins a running cluster of real `corekv-server` processes (issue 12):
//! 3 nodes × 2 cores with data and a writer running, a 4th starts with `--join`.
//! The meta leader rebalances on its own: the new node ends with its share of
//! the replicas, every move goes onto it (none between nodes 1–3), each source
//! deletes its copy, and every acknowledged write reads back; the new node then
//! restarts from its data dir. A second join with a used id is refused with exit
//! code 2. Bounds on time here are liveness bounds, never speed claims.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_engine::snap::snapshot_file_name;
use corekv_rpc::client::blocking::Client;
use corekv_rpc::kv::{NodeId, ShardId, Version};
use corekv_tests::local;
use corekv_tools::launcher::{LaunchOptions, LocalCluster, find_server_binary, pick_base_ports};

/// A liveness bound for a loaded 2-core machine, not a speed claim.
const DEADLINE: Duration = Duration::from_secs(20);
/// How long the rebalance after the join may take (a liveness bound).
const BALANCED_WITHIN: Duration = Duration::from_secs(120);

type Acked = Arc<Mutex<BTreeMap<String, (Version, Vec<u8>)>>>;

fn snapshot_path(cluster: &LocalCluster, node: NodeId, core: u16, shard: ShardId) -> PathBuf {
    cluster.dir().join(format!("node-{node}/core-{core}/snap")).join(snapshot_file_name(u64::from(shard)))
}

fn holders(client: &Client, shard: ShardId) -> BTreeSet<NodeId> {
    client.map().replicas(shard).iter().map(|r| r.node).collect()
}

#[test]
fn a_fourth_node_joins_under_load_takes_its_share_and_only_moves_onto_it_happen() {
    let options = LaunchOptions {
        nodes: 3,
        shards: 8,
        // Every shard compacts into a snapshot file, which the moves ship.
        extra_args: vec!["--snapshot-log-bytes".into(), "65536".into()],
        ..LaunchOptions::default()
    };
    let mut cluster = local::start_with(options);
    let mut client = local::connect(&cluster, DEADLINE);
    let acked: Acked = Arc::default();
    for i in 0..400 {
        let key = format!("key-{i:04}");
        let value = vec![b'a' + (i % 26) as u8; 2000];
        let version = client.put(key.as_bytes(), &value).expect("writes are served");
        acked.lock().unwrap().insert(key, (version, value));
    }
    let before: Vec<BTreeSet<NodeId>> = (0..8).map(|s| holders(&client, s)).collect();
    let cores_before: BTreeMap<(ShardId, NodeId), u16> = (0..8)
        .flat_map(|s| client.map().replicas(s).iter().map(move |r| ((s, r.node), r.core)).collect::<Vec<_>>())
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let mut client = local::connect(&cluster, DEADLINE);
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("live-{i:05}");
                let value = format!("written while node 4 joins: {i}").into_bytes();
                let version = client.put(key.as_bytes(), &value).expect("writes are served during the join");
                acked.lock().unwrap().insert(key, (version, value));
                i += 1;
            }
        })
    };

    let joined = cluster.join_node().expect("node 4 starts");
    assert_eq!(joined, 4);
    // 24 replicas over four nodes of two cores each: six on the new node.
    let start = Instant::now();
    loop {
        client.refresh_map().expect("a map");
        let map = client.map();
        let settled = map.groups().all(|s| map.outgoing(s).is_empty());
        if settled && !map.rebalance && (0..8).filter(|&s| holders(&client, s).contains(&4)).count() == 6 {
            break;
        }
        assert!(start.elapsed() < BALANCED_WITHIN, "not balanced: {:?}", map.shards);
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer never failed");

    // Leaders follow by transfer: eight shards, two led by each of the four.
    let start = Instant::now();
    loop {
        let status = client.status();
        let leaders_of = |node: NodeId| {
            let shards = status.nodes.iter().flat_map(|n| &n.cores).flat_map(|c| &c.shards);
            shards.filter(|s| s.shard < 8 && s.is_leader && s.leader == node).count()
        };
        let led: Vec<usize> = (1..=4).map(leaders_of).collect();
        if led == [2, 2, 2, 2] {
            break;
        }
        assert!(start.elapsed() < BALANCED_WITHIN, "leaders per node 1..=4: {led:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    for s in 0..8u32 {
        let after = holders(&client, s);
        assert!(
            after.difference(&before[s as usize]).all(|&n| n == 4),
            "shard {s}: {:?} -> {after:?}",
            before[s as usize]
        );
        // The node that gave its replica up deleted the snapshot file.
        for &gone in before[s as usize].difference(&after) {
            let path = snapshot_path(&cluster, gone, cores_before[&(s, gone)], s);
            assert!(!path.exists(), "{} is left behind", path.display());
        }
    }
    // The cluster's snapshot files together hold about three copies of the data,
    // not the moved copies on top (slop: versions and headers).
    let data: u64 = acked.lock().unwrap().iter().map(|(k, (_, v))| (k.len() + v.len()) as u64).sum();
    let mut snap_bytes = 0;
    for node in 1..=4 {
        for core in 0..2 {
            let dir = cluster.dir().join(format!("node-{node}/core-{core}/snap"));
            for entry in std::fs::read_dir(&dir).expect("a snap dir") {
                snap_bytes += entry.expect("an entry").metadata().expect("metadata").len();
            }
        }
    }
    assert!(
        snap_bytes <= 3 * data + 3 * data / 4 + (256 << 10),
        "{snap_bytes} snapshot bytes for {data} bytes of data"
    );

    let check = |client: &mut Client| {
        for (key, (version, value)) in acked.lock().unwrap().iter() {
            let got = client.get(key.as_bytes(), None).expect("reads are served");
            assert_eq!((got.version, &got.value), (*version, value), "{key}: an acknowledged write was lost");
        }
    };
    check(&mut client);
    // The new node restarts from its data dir and saved map.
    cluster.restart(4).expect("node 4 restarts");
    cluster.wait_ready(DEADLINE * 3).expect("every shard has a leader again");
    check(&mut client);

    // Another server asking to join as node 2 is refused: one line, exit code 2.
    let bin = find_server_binary(true).expect("the server binary");
    let port = pick_base_ports(1, 2).expect("a free port")[0];
    let intruder = cluster.dir().join("intruder");
    let output = std::process::Command::new(&bin)
        .args(["--id", "2", "--cores", "2", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&intruder)
        .args(["--join", &cluster.addrs()[0]])
        .output()
        .expect("the server runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("node id 2 is already used"), "{stderr}");
    assert!(!intruder.join("cluster.id").exists(), "a refused join leaves no identity behind");

    // Two servers ask to join as node 5 at once: one is added, the other is
    // refused with exit code 2 (not left waiting for a map that will never show
    // it at its address).
    let ports = pick_base_ports(2, 2).expect("free ports");
    let mut racers: Vec<Option<std::process::Child>> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            std::process::Command::new(&bin)
                .args(["--id", "5", "--cores", "2", "--listen", &format!("127.0.0.1:{port}")])
                .arg("--data-dir")
                .arg(cluster.dir().join(format!("racer-{i}")))
                .args(["--join", &cluster.addrs()[0]])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map(Some)
                .expect("the server starts")
        })
        .collect();
    let start = Instant::now();
    let loser = loop {
        if let Some(i) =
            racers.iter_mut().position(|r| r.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()))
        {
            break racers[i].take().expect("exited");
        }
        assert!(start.elapsed() < BALANCED_WITHIN, "neither racer was refused");
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = loser.wait_with_output().expect("its output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("node id 5"), "{stderr}");
    let mut winner = racers.into_iter().flatten().next().expect("the other racer");
    assert!(winner.try_wait().expect("a status").is_none(), "the winner runs");
    client.refresh_map().expect("a map");
    assert!(client.map().node(5).is_some(), "the winner is in the map");
    winner.kill().expect("stop the winner");
    let _ = winner.wait();
}
