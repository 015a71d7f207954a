//! Replica moves between real `corekv-server` processes (4 nodes × 2 cores,
//! issue 12; a move between two cores of one node is a hand-off, last test): `corekv-ctl shard move` hands the move to the meta group, the
//! shard's leader adds the target as a learner, streams it the snapshot, promotes
//! it, hands leadership over (the source led) and removes the source, which
//! deletes its copy; a writer keeps writing throughout and nothing acknowledged
//! is lost. Bounds on time here are liveness bounds, never speed claims.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_engine::snap::snapshot_file_name;
use corekv_rpc::client::blocking::Client;
use corekv_rpc::kv::{NodeId, ShardId, Version};
use corekv_tests::local;
use corekv_tools::ctl::args::{Command, GlobalArgs, ShardCommand};
use corekv_tools::ctl::session::Session;
use corekv_tools::launcher::{LaunchOptions, LocalCluster};

/// A liveness bound for a loaded 2-core machine, not a speed claim.
const DEADLINE: Duration = Duration::from_secs(20);
/// How long the move may take, start to end (a liveness bound).
const MOVE_WITHIN: Duration = Duration::from_secs(90);

type Acked = Arc<Mutex<BTreeMap<String, (Version, Vec<u8>)>>>;

fn write(client: &mut Client, acked: &Acked, key: String, value: Vec<u8>) {
    let version = client.put(key.as_bytes(), &value).expect("every shard serves writes");
    acked.lock().unwrap().insert(key, (version, value));
}

fn ctl(cluster: &LocalCluster, command: Command) -> (String, u8) {
    let global = GlobalArgs { cluster: Some(cluster.addrs().join(",")), json: true, timeout: MOVE_WITHIN };
    let rendered = Session::new(&global).run(command);
    (rendered.line, rendered.exit)
}

fn snapshot_path(cluster: &LocalCluster, node: NodeId, core: u16, shard: ShardId) -> PathBuf {
    cluster.dir().join(format!("node-{node}/core-{core}/snap")).join(snapshot_file_name(u64::from(shard)))
}

#[test]
fn a_replica_moves_between_running_nodes_under_load_and_its_source_deletes_its_copy() {
    let options = LaunchOptions {
        nodes: 4,
        shards: 8,
        // Small enough that every shard compacts into a snapshot file.
        extra_args: vec!["--snapshot-log-bytes".into(), "65536".into()],
        ..LaunchOptions::default()
    };
    let cluster = local::start_with(options);
    let mut client = local::connect(&cluster, DEADLINE);
    let acked: Acked = Arc::default();
    for i in 0..400 {
        write(&mut client, &acked, format!("key-{i:04}"), vec![b'a' + (i % 26) as u8; 2000]);
    }
    // The shard to move, from its leader to a node that does not hold it.
    let shard: ShardId = 3;
    let before = client.map().clone();
    let map = before.clone();
    let to = (1..=4).find(|&n| map.core_of(shard, n).is_none()).expect("4 nodes, 3 replicas");
    // Asked until some replica reports leading it (a status read may fall between
    // two leaders, or miss a core that answered late).
    let start = Instant::now();
    let from = loop {
        if let Some(&leader) = local::leaders(&client.status()).get(&shard) {
            break leader;
        }
        assert!(start.elapsed() < DEADLINE, "the shard has a leader");
        std::thread::sleep(Duration::from_millis(100));
    };
    let from_core = map.core_of(shard, from).expect("the leader holds it");
    let source_file = snapshot_path(&cluster, from, from_core, shard);
    assert!(source_file.exists(), "the source compacted into {}", source_file.display());

    // A refused move: the target already holds the shard.
    let holder = map.replicas(shard).iter().map(|r| r.node).find(|&n| n != from).expect("another replica");
    let refused = ShardCommand::Move { shard: shard.to_string(), from, to: holder, core: None, wait: false };
    let (line, exit) = ctl(&cluster, Command::Shard(refused));
    assert_eq!(exit, 2, "{line}");
    assert!(line.starts_with(r#"{"ok":false,"error":"invalid""#), "{line}");

    // A writer keeps writing to every shard while the replica moves.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let mut client = local::connect(&cluster, DEADLINE);
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                write(&mut client, &acked, format!("during-{i:05}"), format!("{i}").into_bytes());
                i += 1;
            }
            i
        })
    };
    let started = Instant::now();
    let command = ShardCommand::Move { shard: shard.to_string(), from, to, core: None, wait: true };
    let (line, exit) = ctl(&cluster, Command::Shard(command));
    assert_eq!((line.as_str(), exit), (r#"{"ok":true}"#, 0), "the move ends");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let written_during = writer.join().expect("the writer never fails");
    assert!(written_during > 0, "writes went on during the move");
    eprintln!("shard {shard} moved from node {from} to node {to} in {:?}", started.elapsed());

    client.refresh_map().expect("the map is served");
    let map = client.map().clone();
    assert!(map.core_of(shard, to).is_some() && map.core_of(shard, from).is_none(), "{:?}", map.group(shard));
    assert!(map.outgoing(shard).is_empty());
    // Only the moved shard changed hands.
    for other in (0..8).filter(|&s| s != shard) {
        assert_eq!(map.replicas(other), before.replicas(other), "shard {other} stayed put");
    }
    // The source deletes its copy once it learns the move is over.
    let gone = (0..200).any(|_| {
        let gone = !source_file.exists();
        if !gone {
            std::thread::sleep(Duration::from_millis(100));
        }
        gone
    });
    assert!(gone, "{} is deleted", source_file.display());
    // `shard list` shows the shard's own configuration.
    let listed = (0..200).any(|_| {
        let (line, _) = ctl(&cluster, Command::Shard(ShardCommand::List));
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
        let voters: Vec<u64> =
            v["shards"][shard as usize]["voters"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
        let done = voters.contains(&to) && !voters.contains(&from) && v["meta"]["leader"].is_u64();
        if !done {
            std::thread::sleep(Duration::from_millis(100));
        }
        done
    });
    assert!(listed, "shard list shows the new configuration");
    // Nothing acknowledged is lost.
    for (key, (version, value)) in acked.lock().unwrap().iter() {
        let got = client.get(key.as_bytes(), None).expect("reads are served");
        assert_eq!((got.version, &got.value), (*version, value), "{key}");
    }
}

/// `shard move S --from N --to N --core C`: node N's replica moves to its other
/// core (a hand-off: the old core stops, gives the new one its whole state, and
/// deletes its copy once the map lists the new core), led or not, while a
/// writer writes; nothing acknowledged is lost and no other replica moves.
#[test]
fn a_replica_changes_cores_under_load_and_its_old_core_deletes_its_copy() {
    let options = LaunchOptions {
        nodes: 3,
        shards: 8,
        extra_args: vec!["--snapshot-log-bytes".into(), "65536".into()],
        ..LaunchOptions::default()
    };
    let cluster = local::start_with(options);
    let mut client = local::connect(&cluster, DEADLINE);
    let acked: Acked = Arc::default();
    for i in 0..400 {
        write(&mut client, &acked, format!("key-{i:04}"), vec![b'a' + (i % 26) as u8; 2000]);
    }
    let shard: ShardId = 5;
    let before = client.map().clone();
    // The shard's leader's node: its replica hands leadership over first.
    let start = Instant::now();
    let node = loop {
        if let Some(&leader) = local::leaders(&client.status()).get(&shard) {
            break leader;
        }
        assert!(start.elapsed() < DEADLINE, "the shard has a leader");
        std::thread::sleep(Duration::from_millis(100));
    };
    let from_core = before.core_of(shard, node).expect("the leader holds it");
    let to_core = 1 - from_core;
    let source_file = snapshot_path(&cluster, node, from_core, shard);
    assert!(source_file.exists(), "the source compacted into {}", source_file.display());

    // Refused: no core named, or the core that holds it already.
    for core in [None, Some(from_core)] {
        let refused = ShardCommand::Move { shard: shard.to_string(), from: node, to: node, core, wait: false };
        let (line, exit) = ctl(&cluster, Command::Shard(refused));
        assert_eq!(exit, 2, "{line}");
        assert!(line.starts_with(r#"{"ok":false,"error":"invalid""#), "{line}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let mut client = local::connect(&cluster, DEADLINE);
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                write(&mut client, &acked, format!("during-{i:05}"), format!("{i}").into_bytes());
                i += 1;
            }
            i
        })
    };
    let started = Instant::now();
    let command =
        ShardCommand::Move { shard: shard.to_string(), from: node, to: node, core: Some(to_core), wait: true };
    let (line, exit) = ctl(&cluster, Command::Shard(command));
    assert_eq!((line.as_str(), exit), (r#"{"ok":true}"#, 0), "the hand-off ends");
    eprintln!("shard {shard} went from core {from_core} to core {to_core} of node {node} in {:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().expect("the writer never fails") > 0, "writes went on during the hand-off");

    client.refresh_map().expect("the map is served");
    let map = client.map().clone();
    assert_eq!(map.core_of(shard, node), Some(to_core), "{:?}", map.group(shard));
    assert!(map.handoff_of(shard).is_none() && map.outgoing(shard).is_empty());
    for other in (0..8).filter(|&s| s != shard) {
        assert_eq!(map.replicas(other), before.replicas(other), "shard {other} stayed put");
    }
    let nodes = |m: &corekv_rpc::map::ClusterMap| m.replicas(shard).iter().map(|r| r.node).collect::<Vec<_>>();
    assert_eq!(nodes(&map), nodes(&before), "the same nodes hold the shard");
    assert!(snapshot_path(&cluster, node, to_core, shard).exists(), "the new core wrote the state it took over");
    let gone = (0..200).any(|_| {
        let gone = !source_file.exists();
        if !gone {
            std::thread::sleep(Duration::from_millis(100));
        }
        gone
    });
    assert!(gone, "{} is deleted", source_file.display());
    for (key, (version, value)) in acked.lock().unwrap().iter() {
        let got = client.get(key.as_bytes(), None).expect("reads are served");
        assert_eq!((got.version, &got.value), (*version, value), "{key}");
    }
}
