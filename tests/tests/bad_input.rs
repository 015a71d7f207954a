//! Hostile bytes on a server port (DESIGN §1.4): random garbage, an oversized
//! length, a bad CRC and a handshake of another cluster each get that connection
//! closed with a logged reason, and the server keeps serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use corekv_rpc::frame::FRAME_PAYLOAD_BYTES_MAX;
use corekv_rpc::node::{self, Hello, HelloReply, Role, WIRE_VERSION};
use corekv_tests::local;
use corekv_tools::launcher::{LaunchOptions, LocalCluster};

const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// Sends `bytes` and reads until the server closes the connection; returns what it
/// sent back first.
fn send_and_expect_close(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
    // The server may close before it has read everything: a reset is a close too.
    let _ = stream.write_all(bytes);
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

#[test]
fn garbage_oversize_bad_crc_and_a_foreign_cluster_are_disconnected_and_the_server_serves_on() {
    let options = LaunchOptions { nodes: 1, cores: 2, shards: 8, build_if_missing: true, ..LaunchOptions::default() };
    let mut cluster = LocalCluster::start(options).expect("starts");
    let addr = cluster.addrs()[0].clone();
    let mut client = local::connect(&cluster, Duration::from_secs(20));
    client.put(b"before", b"1").expect("serves");

    // Random bytes: a length and CRC that mean nothing.
    let mut garbage: Vec<u8> = (0..256u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    // A length that fits what was sent, so the server judges the bytes at once
    // rather than waiting for more.
    garbage[..4].copy_from_slice(&200u32.to_le_bytes());
    send_and_expect_close(&addr, &garbage);
    // A length above the maximum: refused before anything is allocated.
    let mut oversize = (FRAME_PAYLOAD_BYTES_MAX + 1).to_le_bytes().to_vec();
    oversize.extend_from_slice(&[0; 4]);
    send_and_expect_close(&addr, &oversize);
    // A well-formed hello whose CRC is wrong.
    let hello = Hello { wire_version: WIRE_VERSION, cluster_id: 0, to_node: 0, role: Role::Client };
    let payload = node::to_bytes(&hello);
    send_and_expect_close(&addr, &frame(&payload, crc32fast::hash(&payload) ^ 1));
    // Another cluster's hello: refused with both ids named, then closed.
    let foreign = Hello { wire_version: WIRE_VERSION, cluster_id: 0xdead_beef, to_node: 0, role: Role::Client };
    let payload = node::to_bytes(&foreign);
    let answer = send_and_expect_close(&addr, &frame(&payload, crc32fast::hash(&payload)));
    assert!(answer.len() > 8, "a refusal is sent before the close");
    match node::from_bytes::<HelloReply>(&answer[8..]).expect("a valid reply") {
        HelloReply::Refused { reason } => {
            assert!(reason.contains("0xdeadbeef"), "names the foreign id: {reason}");
            assert!(reason.contains(&format!("{:#x}", client.map().cluster_id)), "names ours: {reason}");
        }
        other => panic!("a foreign cluster was welcomed: {other:?}"),
    }

    // Still serving, and it counted and logged each one.
    client.put(b"after", b"2").expect("serves after the attacks");
    assert_eq!(client.get(b"before", None).unwrap().value, b"1".to_vec());
    let bad = local::stat_sum(&client.status(), |s| s.bad_connections);
    assert_eq!(bad, 4, "each hostile connection is counted once");
    let log = std::fs::read_to_string(cluster.log_path(1)).expect("the node's log");
    for reason in ["exceeds the maximum", "CRC mismatch", "cluster"] {
        assert!(log.contains(reason), "the log names the reason {reason:?}:\n{log}");
    }
    let status = cluster.terminate(1).expect("SIGTERM");
    assert!(status.is_some_and(|s| s.success()), "stops cleanly: {status:?}");
}
