//! Hostile and invalid input against a real server (DESIGN §1.4, §9; issue 9):
//! - hostile bytes on a server port (random bytes, a frame cut short, a header
//!   cut short, an oversized length, a bad CRC, a handshake that is not a hello,
//!   a hello of another wire version or another cluster, and the same garbage
//!   after a good handshake) each get that one connection closed, are counted
//!   once in the server's `bad_connections` and logged with their reason, and
//!   never take the server down;
//! - invalid requests (a key or a value over its limit, a write tag out of
//!   order) are answered `invalid`, by the client library before sending and by
//!   the server itself when a raw request carries them, on a connection that
//!   stays open;
//! - through all of it nothing acknowledged is lost and the server keeps
//!   serving; it still stops cleanly on SIGTERM.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use corekv_rpc::blocking::BlockingConn;
use corekv_rpc::client::KvError;
use corekv_rpc::client::blocking::Client;
use corekv_rpc::frame::{FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX};
use corekv_rpc::kv::{ClientId, KEY_BYTES_MAX, Outcome, Request, RequestBody, Response, WriteOp, WriteTag};
use corekv_rpc::node::{self, Call, Hello, HelloReply, Reply, Role, WIRE_VERSION};
use corekv_rpc::transport::HELLO_BYTES_MAX;
use corekv_tests::{knobs, local};
use corekv_tools::launcher::{LaunchOptions, LocalCluster};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A liveness bound: the server closes a bad connection long before this.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);
/// A liveness bound for a request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);
/// The server's value limit in this test (`--value-bytes-max`), below the
/// default so that only the server can know it.
const VALUE_BYTES_MAX: usize = 64 << 10;
/// A liveness bound on every core answering a status call.
const STATUS_WITHIN: Duration = Duration::from_secs(60);
/// Random byte strings sent, each on its own connection.
const RANDOM_CONNECTIONS: usize = 6;

/// Sends `bytes`, closes the sending half (so a frame cut short is cut short
/// for the server too), and reads until the server closes; returns what it sent
/// back.
fn send_and_expect_close(mut stream: TcpStream, bytes: &[u8]) -> Vec<u8> {
    stream.set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
    // The server may close before it has read everything: a failed write or a
    // reset is a close too.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

fn frame(payload: &[u8], crc: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn good_frame(payload: &[u8]) -> Vec<u8> {
    frame(payload, crc32fast::hash(payload))
}

fn hello(cluster_id: u64, wire_version: u32) -> Vec<u8> {
    node::to_bytes(&Hello { wire_version, cluster_id, to_node: 0, role: Role::Client })
}

/// A connection past a good client handshake.
fn welcomed(addr: &str, cluster_id: u64) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
    stream.write_all(&good_frame(&hello(cluster_id, WIRE_VERSION))).unwrap();
    let reply = read_frame(&mut stream);
    match node::from_bytes::<HelloReply>(&reply).expect("a valid hello reply") {
        HelloReply::Refused { reason } => panic!("a good hello was refused: {reason}"),
        _ => stream,
    }
}

fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    stream.read_exact(&mut header).expect("a frame header");
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).expect("a frame payload");
    payload
}

fn bad_connections(client: &mut Client) -> u64 {
    local::stat_sum(&local::full_status(client, STATUS_WITHIN), |s| s.bad_connections)
}

#[test]
fn hostile_bytes_cost_only_their_own_connection_and_invalid_requests_are_answered_invalid() {
    let seed = knobs::seed();
    eprintln!("seed {seed}: rerun with {}", knobs::rerun_hint(seed));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let options = LaunchOptions {
        nodes: 1,
        shards: 8,
        extra_args: vec!["--value-bytes-max".into(), VALUE_BYTES_MAX.to_string()],
        ..LaunchOptions::default()
    };
    let mut cluster = local::start_with(options);
    let mut client = local::connect(&cluster, REQUEST_DEADLINE);
    let cluster_id = client.map().cluster_id;
    let acked: Vec<(String, u64)> = (0..20)
        .map(|i| {
            let key = format!("before-{i}");
            let version = client.put(key.as_bytes(), key.as_bytes()).expect("serves");
            (key, version)
        })
        .collect();
    let bad_before = bad_connections(&mut client);
    // Both cores listen: every hostile connection goes to one of them in turn.
    let addrs: Vec<String> = (0..local::CORES).map(|core| format!("127.0.0.1:{}", port(&cluster) + core)).collect();
    let mut hostile = 0usize;
    let mut attack = |bytes: &[u8]| {
        let addr = &addrs[hostile % addrs.len()];
        hostile += 1;
        send_and_expect_close(TcpStream::connect(addr).expect("connects"), bytes)
    };

    // Random bytes: whatever their length field says, they are judged or cut short.
    for _ in 0..RANDOM_CONNECTIONS {
        let len = rng.random_range(1..=2048usize);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
        attack(&bytes);
    }
    // A hello cut short inside its payload, and a header cut short.
    let whole = good_frame(&hello(cluster_id, WIRE_VERSION));
    attack(&whole[..whole.len() - 3]);
    attack(&whole[..5]);
    // Lengths above the limits: refused before anything is allocated.
    attack(&[(FRAME_PAYLOAD_BYTES_MAX + 1).to_le_bytes(), [0; 4]].concat());
    attack(&[u32::MAX.to_le_bytes(), [0; 4]].concat());
    attack(&[(HELLO_BYTES_MAX + 1).to_le_bytes(), [0; 4]].concat());
    // A well-formed hello whose CRC is wrong.
    let payload = hello(cluster_id, WIRE_VERSION);
    attack(&frame(&payload, crc32fast::hash(&payload) ^ 1));
    // A garbage handshake: a sound frame whose payload is no hello.
    let junk: Vec<u8> = (0..64).map(|_| rng.random::<u8>()).collect();
    attack(&good_frame(&junk));
    // Another wire version, and another cluster: refused with a reason, then closed.
    for (foreign, expect) in
        [(hello(cluster_id, WIRE_VERSION + 1), "wire version"), (hello(0xdead_beef, WIRE_VERSION), "0xdeadbeef")]
    {
        let answer = attack(&good_frame(&foreign));
        assert!(answer.len() > FRAME_HEADER_BYTES, "a refusal is sent before the close");
        match node::from_bytes::<HelloReply>(&answer[FRAME_HEADER_BYTES..]).expect("a valid reply") {
            HelloReply::Refused { reason } => assert!(reason.contains(expect), "names {expect}: {reason}"),
            other => panic!("a foreign hello was welcomed: {other:?}"),
        }
    }
    // The same garbage after a good handshake.
    let after_hello: Vec<Vec<u8>> = vec![
        frame(&junk, crc32fast::hash(&junk) ^ 1),
        good_frame(&junk),
        good_frame(&junk)[..20].to_vec(),
        [(FRAME_PAYLOAD_BYTES_MAX + 1).to_le_bytes(), [0; 4]].concat(),
    ];
    for bytes in &after_hello {
        let addr = &addrs[hostile % addrs.len()];
        hostile += 1;
        send_and_expect_close(welcomed(addr, cluster_id), bytes);
    }

    // Invalid requests through the client library: refused with a clear word.
    let long_key = vec![b'k'; KEY_BYTES_MAX + 1];
    assert!(matches!(client.put(&long_key, b"v"), Err(KvError::Invalid { message }) if message.contains("limit")));
    assert!(matches!(client.get(&long_key, None), Err(KvError::Invalid { .. })));
    let max_key = vec![b'k'; KEY_BYTES_MAX];
    client.put(&max_key, b"at the limit").expect("a key of exactly the limit is fine");
    // Only the server knows its value limit: it answers, and the client passes it on.
    let big = vec![b'v'; VALUE_BYTES_MAX + 1];
    match client.put(b"big", &big) {
        Err(KvError::Invalid { message }) => assert!(message.contains("limit"), "says why: {message}"),
        other => panic!("a value over the server's limit was answered {other:?}"),
    }
    assert!(matches!(client.cas(b"big", 0, &big), Err(KvError::Invalid { .. })));
    client.put(b"big", &big[..VALUE_BYTES_MAX]).expect("a value of exactly the limit is fine");

    // The same requests raw, so that the server's own checks answer: invalid, and
    // the connection stays open for the next request.
    let map = client.map().clone();
    let raw_call = |conn: &mut BlockingConn, key: &[u8], tag: WriteTag, op: WriteOp| {
        let request = Request { shard: map.shard_of(key), epoch: map.epoch, body: RequestBody::Write { tag, op } };
        match conn.call(Call::Kv(request)).expect("the connection stays open") {
            Reply::Kv(Response::Outcome(outcome)) => outcome,
            other => panic!("unexpected answer {other:?}"),
        }
    };
    let key = b"raw".to_vec();
    let core = map.core_of(map.shard_of(&key), 1).expect("node 1 holds every shard");
    let mut conn = BlockingConn::connect(&addrs[core as usize], cluster_id, REQUEST_DEADLINE).expect("connects");
    let id = ClientId::from_u128(rng.random::<u128>());
    let tag = |seq, acked| WriteTag { client: id, seq, acked };
    let invalid = [
        (tag(1, 0), WriteOp::Put { key: long_key.clone(), value: b"v".to_vec() }),
        (tag(1, 0), WriteOp::Put { key: Vec::new(), value: b"v".to_vec() }),
        (tag(1, 0), WriteOp::Put { key: key.clone(), value: big.clone() }),
        (tag(0, 0), WriteOp::Put { key: key.clone(), value: b"v".to_vec() }),
        (tag(2, 2), WriteOp::Put { key: key.clone(), value: b"v".to_vec() }),
    ];
    for (tag, op) in invalid {
        let what = format!("{op:?}").chars().take(60).collect::<String>();
        let outcome = raw_call(&mut conn, &key, tag, op);
        assert!(matches!(outcome, Outcome::Invalid { .. }), "{what} with {tag:?} was answered {outcome:?}");
    }
    let outcome = raw_call(&mut conn, &key, tag(1, 0), WriteOp::Put { key: key.clone(), value: b"ok".to_vec() });
    assert!(matches!(outcome, Outcome::Ok(_)), "a valid request on the same connection: {outcome:?}");

    // Still serving, nothing acknowledged lost, each hostile connection counted
    // once (invalid requests are answers, not bad connections) and logged.
    client.put(b"after", b"2").expect("serves after the attacks");
    assert_eq!(client.get(b"after", None).map(|g| g.value), Ok(b"2".to_vec()));
    for (key, version) in &acked {
        let got = client.get(key.as_bytes(), None).expect("serves");
        assert_eq!((got.version, got.value.as_slice()), (*version, key.as_bytes()), "{key} was lost");
    }
    assert_eq!(client.get(b"raw", None).map(|g| g.value), Ok(b"ok".to_vec()));
    let counted = bad_connections(&mut client) - bad_before;
    assert_eq!(counted, hostile as u64, "each hostile connection is counted once (seed {seed})");
    let log = std::fs::read_to_string(cluster.log_path(1)).expect("the node's log");
    for reason in
        ["exceeds the maximum", "CRC mismatch", "closed inside a frame", "not a valid message", "wire version"]
    {
        assert!(log.contains(reason), "the log names the reason {reason:?}:\n{log}");
    }
    let status = cluster.terminate(1).expect("SIGTERM");
    assert!(status.is_some_and(|s| s.success()), "stops cleanly: {status:?}");
}

/// Core 0's port of the only node.
fn port(cluster: &LocalCluster) -> u16 {
    let addr = cluster.node_addr(1).expect("node 1");
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("HOST:PORT")
}
