//! Nodes leaving a cluster of real `corekv-server` processes (4 nodes × 2 cores,
//! issue 12), each scenario from a fresh cluster: a node drained and then
//! removed; a node killed for good and removed with `--force`, its replicas
//! re-created from the survivors; a move stuck on a hung target that holds up
//! no other shard. Every acknowledged write reads back. Bounds on time here are
//! liveness bounds, never speed claims.

use std::collections::BTreeMap;
use std::time::Duration;

use corekv_rpc::client::blocking::Client;
use corekv_rpc::kv::{NodeId, Version};
use corekv_rpc::map::NodeState;
use corekv_tests::local;
use corekv_tools::ctl::args::{Command, GlobalArgs, NodeCommand, ShardCommand};
use corekv_tools::ctl::session::Session;
use corekv_tools::launcher::{LaunchOptions, LocalCluster};

/// A liveness bound for a loaded 2-core machine, not a speed claim.
const DEADLINE: Duration = Duration::from_secs(20);
/// How long a drain or a re-replication may take (a liveness bound).
const CHANGE_WITHIN: Duration = Duration::from_secs(90);

type Acked = BTreeMap<String, (Version, Vec<u8>)>;

fn four_nodes() -> LocalCluster {
    let options = LaunchOptions {
        nodes: 4,
        shards: 8,
        // Small enough that shards compact into snapshot files, which moves ship.
        extra_args: vec!["--snapshot-log-bytes".into(), "65536".into()],
        ..LaunchOptions::default()
    };
    local::start_with(options)
}

fn ctl(cluster: &LocalCluster, command: Command) -> (String, u8) {
    // Only live nodes are given: the session finds the cluster through them.
    let global = GlobalArgs { cluster: Some(cluster.addrs().join(",")), json: true, timeout: CHANGE_WITHIN };
    let rendered = Session::new(&global).run(command);
    (rendered.line, rendered.exit)
}

fn write_all(client: &mut Client, acked: &mut Acked, round: u32) {
    for i in 0..200 {
        let key = format!("key-{i:04}");
        let value = vec![b'a' + ((i + round) % 26) as u8; 1000];
        let version = client.put(key.as_bytes(), &value).expect("every shard serves writes");
        acked.insert(key, (version, value));
    }
}

fn check_all(client: &mut Client, acked: &Acked) {
    for (key, (version, value)) in acked {
        let got = client.get(key.as_bytes(), None).expect("every shard serves reads");
        assert_eq!((got.version, &got.value), (*version, value), "{key}: an acknowledged write was lost");
    }
}

/// The voters of every shard as `shard list` reports them, and that every shard
/// has a leader.
fn voters(cluster: &LocalCluster) -> Vec<Vec<NodeId>> {
    let (line, exit) = ctl(cluster, Command::Shard(ShardCommand::List));
    assert_eq!(exit, 0, "{line}");
    let list: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    let shards = list["shards"].as_array().expect("shards");
    shards
        .iter()
        .map(|s| {
            assert!(s["leader"].is_u64(), "every shard has a leader: {s}");
            s["voters"].as_array().expect("voters").iter().map(|v| v.as_u64().expect("id")).collect()
        })
        .collect()
}

#[test]
fn a_drained_node_hands_its_replicas_over_and_is_removed_and_refusals_say_why() {
    let cluster = four_nodes();
    let mut client = local::connect(&cluster, DEADLINE);
    let mut acked = Acked::new();
    write_all(&mut client, &mut acked, 0);

    // Removing a node that still holds replicas is refused.
    let (line, exit) = ctl(&cluster, Command::Node(NodeCommand::Remove { node: 2, force: false, wait: false }));
    assert_eq!(exit, 2, "{line}");
    assert!(line.starts_with(r#"{"ok":false,"error":"invalid","message":"node 2 is up, not drained"#), "{line}");

    let (line, exit) = ctl(&cluster, Command::Node(NodeCommand::Drain { node: 4, wait: true }));
    assert_eq!((line.as_str(), exit), (r#"{"ok":true}"#, 0));
    assert!(voters(&cluster).iter().all(|v| v.len() == 3 && !v.contains(&4)), "{:?}", voters(&cluster));
    // Three up nodes are left for three replicas: no other node may drain.
    let (line, exit) = ctl(&cluster, Command::Node(NodeCommand::Drain { node: 1, wait: false }));
    assert_eq!(exit, 2, "{line}");
    assert!(line.contains("cannot leave"), "{line}");

    let (line, exit) = ctl(&cluster, Command::Node(NodeCommand::Remove { node: 4, force: false, wait: true }));
    assert_eq!((line.as_str(), exit), (r#"{"ok":true}"#, 0));
    let (line, exit) = ctl(&cluster, Command::Node(NodeCommand::List));
    assert_eq!(exit, 0, "{line}");
    let list: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    let nodes = list["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4, "a removed node stays listed: {line}");
    assert_eq!(nodes[3]["state"], "removed", "{line}");
    assert_eq!(nodes[3]["replicas"], 0, "{line}");
    for n in &nodes[..3] {
        assert_eq!((n["state"].as_str(), n["replicas"].as_u64()), (Some("up"), Some(8)), "{line}");
    }
    client.refresh_map().expect("a map");
    assert_eq!(client.map().node(4).map(|n| n.state), Some(NodeState::Removed));
    // The removed node deleted every replica's snapshot file.
    let snaps: usize = (0..2)
        .map(|core| std::fs::read_dir(cluster.dir().join(format!("node-4/core-{core}/snap"))).map_or(0, |d| d.count()))
        .sum();
    assert_eq!(snaps, 0, "node 4 keeps no snapshot file");
    write_all(&mut client, &mut acked, 1);
    check_all(&mut client, &acked);
}

#[test]
fn a_node_killed_for_good_is_removed_by_force_and_every_shard_gets_three_voters_again() {
    let mut cluster = four_nodes();
    let mut client = local::connect(&cluster, DEADLINE);
    let mut acked = Acked::new();
    write_all(&mut client, &mut acked, 0);
    cluster.kill(3).expect("kill -9");
    let (line, exit) = ctl(&cluster, Command::Node(NodeCommand::Remove { node: 3, force: true, wait: true }));
    assert_eq!((line.as_str(), exit), (r#"{"ok":true}"#, 0));
    let after = voters(&cluster);
    assert!(after.iter().all(|v| v.len() == 3 && !v.contains(&3)), "{after:?}");
    write_all(&mut client, &mut acked, 1);
    check_all(&mut client, &acked);
}

#[test]
fn a_move_stuck_on_a_hung_target_holds_up_no_other_shard() {
    let cluster = four_nodes();
    let mut client = local::connect(&cluster, DEADLINE);
    let mut acked = Acked::new();
    write_all(&mut client, &mut acked, 0);
    let map = client.map().clone();
    let shard = 5;
    let to = (1..=4).find(|&n| map.core_of(shard, n).is_none()).expect("4 nodes, 3 replicas");
    let from = map.replicas(shard)[1].node;
    local::pause(&cluster, to).expect("SIGSTOP");
    let command = ShardCommand::Move { shard: shard.to_string(), from, to, core: None, wait: false };
    let (line, exit) = ctl(&cluster, Command::Shard(command));
    assert_eq!((line.as_str(), exit), (r#"{"ok":true}"#, 0));
    // The target never answers: the move cannot finish, and every shard whose
    // majority is up (all of them: the hung node is one of three replicas at
    // most) keeps serving reads and writes.
    write_all(&mut client, &mut acked, 1);
    check_all(&mut client, &acked);
    local::resume(&cluster, to).expect("SIGCONT");
}
