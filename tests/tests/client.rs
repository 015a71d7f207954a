//! The client library against real `corekv-server` processes (3 nodes × 2 cores):
//! the blocking client's every operation with DESIGN §6's outcomes, and the async
//! client pipelining hundreds of requests from one client over one connection per
//! core (asserted by the servers' frame counters, not by timing).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use corekv_engine::runtime::{run_local, spawn_local};
use corekv_rpc::client::blocking::Client as BlockingClient;
use corekv_rpc::client::{Client, ClientConfig, KvError};
use corekv_rpc::kv::KEY_BYTES_MAX;
use corekv_rpc::map::META_SHARD;
use corekv_tests::local;
use corekv_tools::launcher::{LaunchOptions, LocalCluster};

fn start() -> LocalCluster {
    let options = LaunchOptions { nodes: 3, cores: 2, build_if_missing: true, ..LaunchOptions::default() };
    LocalCluster::start(options).expect("the cluster starts and every shard elects a leader")
}

fn config(cluster: &LocalCluster) -> ClientConfig {
    let mut config = ClientConfig::new(cluster.addrs());
    // A liveness bound for a loaded 2-core machine, not a speed claim.
    config.deadline = Duration::from_secs(20);
    config
}

/// Client frames received by every core, from a status in which every core
/// answered (a loaded core may miss one attempt's timeout: ask again, bounded).
fn client_frames_received(client: &mut BlockingClient) -> u64 {
    let mut errors = Vec::new();
    for _ in 0..20 {
        let status = client.status();
        let cores: Vec<_> = status.nodes.iter().flat_map(|n| &n.cores).collect();
        if cores.iter().all(|c| c.stats.is_some()) {
            return cores.iter().filter_map(|c| c.stats).map(|s| s.client_frames_received).sum();
        }
        errors.extend(cores.iter().filter_map(|c| c.error.clone()));
    }
    panic!("some core never answered status: {errors:?}");
}

#[test]
fn blocking_and_async_clients_keep_design_6_promises() {
    let cluster = start();
    let mut client = BlockingClient::connect(config(&cluster)).expect("the map is served");

    // Writes and reads with versions.
    let v1 = client.put(b"alpha", b"one").unwrap();
    let v2 = client.put(b"alpha", b"two").unwrap();
    assert!(v2 > v1, "versions rise per key");
    let got = client.get(b"alpha", None).unwrap();
    assert_eq!((got.version, got.value.as_slice()), (v2, &b"two"[..]));
    let old = client.get(b"alpha", Some(v2 - 1)).unwrap();
    assert_eq!((old.version, old.value.as_slice()), (v1, &b"one"[..]), "get --at reads the older version");
    assert_eq!(client.get(b"alpha", Some(v1 - 1)), Err(KvError::NotFound));

    // Compare-and-set on versions.
    assert_eq!(client.cas(b"alpha", v1, b"x"), Err(KvError::VersionMismatch { current: v2 }));
    let v3 = client.cas(b"alpha", v2, b"three").unwrap();
    assert_eq!(client.cas(b"fresh", 0, b"new").map(|v| v > 0), Ok(true), "0 = only if absent");
    assert!(matches!(client.cas(b"fresh", 0, b"again"), Err(KvError::VersionMismatch { .. })));

    // Delete: a tombstone in the history, not found afterwards, not found again.
    let v4 = client.delete(b"alpha").unwrap();
    assert!(v4 > v3);
    assert_eq!(client.get(b"alpha", None), Err(KvError::NotFound));
    assert_eq!(client.delete(b"alpha"), Err(KvError::NotFound));
    assert_eq!(client.cas(b"alpha", 0, b"back").map(|v| v > v4), Ok(true), "a deleted key counts as absent");
    let history = client.versions(b"alpha").unwrap();
    let shape: Vec<(bool, &[u8])> = history.iter().map(|e| (e.deleted, e.value.as_slice())).collect();
    assert_eq!(
        shape,
        [(false, &b"back"[..]), (true, &b""[..]), (false, &b"three"[..]), (false, &b"two"[..]), (false, &b"one"[..])]
    );
    assert!(history.windows(2).all(|w| w[0].version > w[1].version), "newest first");

    // Bad input is refused before it is sent, in plain words.
    let huge = vec![b'k'; KEY_BYTES_MAX + 1];
    assert!(matches!(client.put(&huge, b"v"), Err(KvError::Invalid { message }) if message.contains("limit")));
    assert!(matches!(client.scan(b"a", b"b", 0), Err(KvError::Invalid { .. })));

    // Scan: every shard asked, merged in key order, cut to the limit.
    for i in 0..30 {
        client.put(format!("scan-{i:02}").as_bytes(), format!("{i}").as_bytes()).unwrap();
    }
    let page = client.scan(b"scan-", b"scan-~", 20).unwrap();
    let keys: Vec<String> = page.items.iter().map(|i| String::from_utf8(i.key.clone()).unwrap()).collect();
    assert_eq!(keys, (0..20).map(|i| format!("scan-{i:02}")).collect::<Vec<_>>());
    assert!(page.more);
    let rest = client.scan(b"scan-20", b"scan-~", 100).unwrap();
    assert_eq!(rest.items.len(), 10);
    assert!(!rest.more);

    // Status: every core answers with its shards and counters, and names a
    // leader of every shard and of the meta group. The servers spread leaders by
    // transfer and a loaded machine may call an election, so a single report can
    // catch a shard between leaders: ask again, within a liveness bound.
    let shards = client.map().shard_count();
    let mut last = String::new();
    let settled = (0..200).any(|_| {
        let status = local::full_status(&mut client, Duration::from_secs(20));
        assert_eq!(status.nodes.len(), 3);
        let led = local::leaders(&status);
        let meta_leaders = status
            .nodes
            .iter()
            .flat_map(|n| &n.cores)
            .flat_map(|c| &c.shards)
            .filter(|s| s.is_leader && s.shard == META_SHARD)
            .count();
        if led.keys().copied().eq(0..shards) && meta_leaders >= 1 {
            return true;
        }
        last = format!("shards led: {:?} of {shards}; meta leaders claimed: {meta_leaders}", led.keys());
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    assert!(settled, "some shard never named a leader: {last}");

    // The async client: 400 writes in flight at once from one client id.
    let frames_before = client_frames_received(&mut client);
    let async_config = config(&cluster);
    const WRITES: usize = 400;
    let results = run_local("client-test", async move {
        let client = Client::connect(async_config).await.expect("the map is served");
        let versions = Rc::new(RefCell::new(vec![0u64; WRITES]));
        let tasks: Vec<_> = (0..WRITES)
            .map(|i| {
                let client = client.clone();
                let versions = versions.clone();
                spawn_local(async move {
                    let v = client.put(format!("async-{i:03}").as_bytes(), format!("v{i}").as_bytes()).await;
                    versions.borrow_mut()[i] = v.expect("a healthy cluster takes every write");
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let reads: Vec<_> = (0..WRITES)
            .map(|i| {
                let client = client.clone();
                spawn_local(async move {
                    let got = client.get(format!("async-{i:03}").as_bytes(), None).await.expect("written above");
                    (got.version, got.value)
                })
            })
            .collect();
        let mut read_back = Vec::with_capacity(WRITES);
        for read in reads {
            read_back.push(read.await);
        }
        let page = client.scan(b"async-", b"async-~", 1000).await.expect("scan");
        let versions = versions.borrow().clone();
        (versions, read_back, page.items.len())
    })
    .expect("an executor starts");
    let (versions, read_back, scanned) = results;
    for i in 0..WRITES {
        assert_eq!(read_back[i], (versions[i], format!("v{i}").into_bytes()), "async-{i:03}");
    }
    assert_eq!(scanned, WRITES);
    let frames = client_frames_received(&mut client) - frames_before;
    // 400 writes and 400 reads in flight together, 64 scan requests, and the
    // status calls around them: requests issued together share frames.
    let requests = 2 * WRITES as u64 + 64;
    assert!(frames * 4 < requests, "{frames} client frames for {requests} requests: pipelining did not batch");
}

#[test]
fn an_unreachable_cluster_is_unavailable_within_the_deadline() {
    let mut config = ClientConfig::new(vec!["127.0.0.1:1".to_string()]);
    config.deadline = Duration::from_millis(300);
    match BlockingClient::connect(config) {
        Err(KvError::Unavailable { reason }) => assert!(reason.contains("127.0.0.1:1"), "{reason}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

/// "unavailable" means certainly not applied, "ok" means applied and durable:
/// the async client writes unique keys while a node is killed (kill -9) and
/// restarted; afterwards every ok write reads back with its version, every
/// unavailable write is absent, and an indeterminate one may be either.
#[test]
fn async_writes_through_a_kill_keep_their_outcome_words() {
    let cluster = start();
    let victim = cluster.options().nodes as u64; // the last node: leads some shards
    let addrs = cluster.addrs();
    let nemesis = std::thread::spawn(move || {
        let mut cluster = cluster;
        std::thread::sleep(Duration::from_millis(1500));
        cluster.kill(victim).expect("kill -9");
        std::thread::sleep(Duration::from_secs(3));
        cluster.restart(victim).expect("restart");
        cluster
    });
    let mut async_config = ClientConfig::new(addrs);
    async_config.deadline = Duration::from_secs(3);
    let outcomes = run_local("client-fault-test", async move {
        let client = Client::connect(async_config).await.expect("the map is served");
        let mut outcomes = Vec::new();
        let started = std::time::Instant::now();
        let mut round = 0;
        while started.elapsed() < Duration::from_secs(8) {
            let writes: Vec<_> = (0..40)
                .map(|i| {
                    let client = client.clone();
                    let key = format!("fault-{round:04}-{i:02}");
                    spawn_local(async move {
                        let result = client.put(key.as_bytes(), key.as_bytes()).await;
                        (key, result)
                    })
                })
                .collect();
            for write in writes {
                outcomes.push(write.await);
            }
            round += 1;
        }
        outcomes
    })
    .expect("an executor starts");
    let mut cluster = nemesis.join().expect("the nemesis thread");
    cluster.wait_ready(Duration::from_secs(60)).expect("the cluster heals");
    let mut config = config(&cluster);
    config.deadline = Duration::from_secs(20);
    let mut reader = BlockingClient::connect(config).expect("the map is served");
    let mut counts = std::collections::BTreeMap::new();
    for (key, result) in &outcomes {
        let word = match result {
            Ok(_) => "ok",
            Err(e) => e.word(),
        };
        *counts.entry(word).or_insert(0usize) += 1;
        let read = reader.get(key.as_bytes(), None);
        match result {
            Ok(version) => {
                let got = read.unwrap_or_else(|e| panic!("{key}: acknowledged at {version}, now {e}"));
                assert_eq!((got.version, got.value.as_slice()), (*version, key.as_bytes()), "{key}");
            }
            Err(KvError::Unavailable { reason }) => {
                assert_eq!(read, Err(KvError::NotFound), "{key} was reported unavailable ({reason}) yet applied");
            }
            Err(KvError::Indeterminate { .. }) => {
                assert!(matches!(read, Ok(_) | Err(KvError::NotFound)), "{key}: {read:?}");
            }
            Err(other) => panic!("{key}: a put cannot end {other}"),
        }
    }
    eprintln!("outcomes through the kill: {counts:?}");
    assert!(counts.get("ok").copied().unwrap_or(0) >= 100, "the cluster kept serving: {counts:?}");
}
