//! The TCP transport on loopback: peer links and the listener in one glommio
//! executor, the blocking client on glommio's blocking pool. Batching is asserted
//! by counters; waits are liveness bounds, never speed claims.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use corekv_rpc::blocking::{BlockingConn, ClientError};
use corekv_rpc::kv::{OkReply, Outcome, ReadOp, Request, RequestBody, Response};
use corekv_rpc::node::{
    self, AdminCall, AdminReply, ArchivedPeerBatch, CLIENT_CALLS_INFLIGHT_MAX, Call, CoreStats, HeartbeatItem, Hello,
    PeerMessage, Reply, Role, TaggedCall, WIRE_VERSION, Welcome,
};
use corekv_rpc::transport::{
    Inbound, LinkState, Listener, ListenerConfig, PeerId, PeerLink, PeerLinkConfig, ReplySender, SendRefused,
};
use glommio::{LocalExecutorBuilder, Placement};

const CLUSTER: u64 = 0xC0FE;
/// Liveness bound of every wait: far beyond what any of them needs.
const LIVENESS: Duration = Duration::from_secs(30);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

fn run<F, T>(test: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("transport-test")
        .spawn(move || async move { test().await })
        .expect("executor starts")
        .join()
        .expect("test executor")
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < LIVENESS, "not within {LIVENESS:?}: {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// A held call: its id, its key, and where to answer it.
type Held = (u64, Vec<u8>, ReplySender);

/// The server side of the tests: records peer messages, echoes client gets, and
/// holds gets of keys starting with "hold" until `hold_release_at` of them are
/// held, then answers those in reverse order from another task.
struct Recorder {
    peer_messages: RefCell<Vec<(PeerId, PeerMessage)>>,
    held: Rc<RefCell<Vec<Held>>>,
    hold_release_at: usize,
}

impl Recorder {
    fn new(hold_release_at: usize) -> Rc<Recorder> {
        Rc::new(Recorder { peer_messages: RefCell::default(), held: Rc::default(), hold_release_at })
    }

    fn received(&self) -> usize {
        self.peer_messages.borrow().len()
    }
}

fn echo(key: Vec<u8>, id: u64) -> Reply {
    Reply::Kv(Response::Outcome(Outcome::Ok(OkReply::Value { version: id, value: key })))
}

impl Inbound for Recorder {
    fn hello(&self, hello: &Hello, _from: SocketAddr) -> Result<Welcome, String> {
        if hello.cluster_id != 0 && hello.cluster_id != CLUSTER {
            return Err(format!("cluster id {:#x} is not ours ({CLUSTER:#x})", hello.cluster_id));
        }
        Ok(Welcome { cluster_id: CLUSTER, node: 1, core: 0, cores: 1 })
    }

    fn peer_batch(&self, from: PeerId, batch: &ArchivedPeerBatch) {
        let mut got = self.peer_messages.borrow_mut();
        for m in batch.messages.iter() {
            got.push((from, rkyv::deserialize::<PeerMessage, rkyv::rancor::Error>(m).expect("validated")));
        }
    }

    fn client_call(&self, call: TaggedCall, replies: &ReplySender) {
        let TaggedCall { id, call } = call;
        let reply = match call {
            Call::Admin(AdminCall::Stats) => {
                Reply::Admin(AdminReply::Stats(CoreStats { node: 1, ..Default::default() }))
            }
            Call::Admin(_) => Reply::Kv(Response::Busy),
            Call::Kv(Request { body: RequestBody::Read(ReadOp::Get { key, .. }), .. }) if key.starts_with(b"hold") => {
                self.held.borrow_mut().push((id, key, replies.clone()));
                if self.held.borrow().len() == self.hold_release_at {
                    let held = self.held.clone();
                    glommio::spawn_local(async move {
                        // glommio may poll a new task at once, inside this call;
                        // a timer defers the release until the connection's reader
                        // has handed out the whole frame and awaits the next.
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                        let calls: Vec<_> = held.borrow_mut().drain(..).collect();
                        for (id, key, sender) in calls.into_iter().rev() {
                            sender.reply(id, echo(key, id)).expect("connection open, call unanswered");
                        }
                    })
                    .detach();
                }
                return;
            }
            Call::Kv(Request { body: RequestBody::Read(ReadOp::Get { key, .. }), .. }) => echo(key, id),
            Call::Kv(_) => Reply::Kv(Response::Outcome(Outcome::Unavailable)),
        };
        replies.reply(id, reply).expect("connection open, call unanswered");
    }
}

fn get(key: &str) -> Call {
    Call::Kv(Request {
        shard: 0,
        epoch: 0,
        body: RequestBody::Read(ReadOp::Get { key: key.as_bytes().to_vec(), at: None }),
    })
}

fn peer_hello(node: u64, core: u16) -> Hello {
    Hello { wire_version: WIRE_VERSION, cluster_id: CLUSTER, to_node: 1, role: Role::Peer { node, core, cores: 2 } }
}

fn heartbeat(i: u64) -> PeerMessage {
    PeerMessage::Heartbeats {
        from: 2,
        to: 1,
        items: vec![HeartbeatItem { shard: i as u32, term: 1, commit: i, read_round: 0 }],
    }
}

fn listen(recorder: &Rc<Recorder>, addr: &str) -> Listener {
    Listener::bind(addr, recorder.clone(), ListenerConfig::default()).expect("bind")
}

#[test]
fn messages_queued_before_the_link_connects_go_out_as_one_frame() {
    run(|| async {
        let recorder = Recorder::new(usize::MAX);
        let listener = listen(&recorder, "127.0.0.1:0");
        let link = PeerLink::spawn(listener.local_addr().to_string(), peer_hello(2, 1), PeerLinkConfig::default());
        // Nothing has awaited yet: the writer has not even started connecting.
        for i in 0..100 {
            link.try_send(heartbeat(i)).expect("queue has room");
        }
        eventually("100 messages received", || recorder.received() == 100).await;

        let stats = link.stats();
        assert_eq!((stats.frames_sent, stats.messages_sent, stats.connects), (1, 100, 1), "{stats:?}");
        assert_eq!(stats.messages_dropped, 0);
        assert_eq!(listener.stats().peer_frames_received, 1);
        assert_eq!(listener.stats().peer_messages_received, 100);
        let got: Vec<(PeerId, PeerMessage)> = recorder.peer_messages.borrow().clone();
        assert!(got.iter().all(|(from, _)| *from == PeerId { node: 2, core: 1 }));
        let expected: Vec<PeerMessage> = (0..100).map(heartbeat).collect();
        assert_eq!(got.into_iter().map(|(_, m)| m).collect::<Vec<_>>(), expected, "in order");

        // Once connected, each flush is one frame whatever it holds.
        for i in 100..110 {
            link.try_send(heartbeat(i)).expect("queue has room");
        }
        eventually("110 messages received", || recorder.received() == 110).await;
        assert_eq!(link.stats().frames_sent, 2);
        listener.stop().await;
    });
}

#[test]
fn a_link_queue_is_bounded_and_a_down_link_drops_messages() {
    run(|| async {
        // A port nobody listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let config = PeerLinkConfig { queue_messages_max: 10, ..PeerLinkConfig::default() };
        let link = PeerLink::spawn(addr.to_string(), peer_hello(2, 0), config);
        let refused = (0..15).filter(|&i| link.try_send(heartbeat(i)).is_err()).count();
        assert_eq!(refused, 5);
        assert_eq!(link.queued(), 10);
        assert_eq!(link.try_send(heartbeat(99)), Err(SendRefused::QueueFull));

        eventually("the connect fails", || link.state() == LinkState::Down).await;
        assert_eq!(link.queued(), 0, "a failed link keeps nothing queued");
        assert_eq!(link.try_send(heartbeat(100)), Err(SendRefused::Down));
        let stats = link.stats();
        assert_eq!(stats.messages_dropped, 6 + 10 + 1, "{stats:?}");
        assert_eq!(stats.messages_sent, 0);
        assert!(stats.connect_failures >= 1);
    });
}

#[test]
fn client_calls_are_answered_by_id_through_the_blocking_client() {
    run(|| async {
        let recorder = Recorder::new(usize::MAX);
        let listener = listen(&recorder, "127.0.0.1:0");
        let addr = listener.local_addr().to_string();
        blocking(move || {
            let mut conn = BlockingConn::connect(&addr, CLUSTER, CLIENT_TIMEOUT).unwrap();
            assert_eq!(conn.welcome(), Welcome { cluster_id: CLUSTER, node: 1, core: 0, cores: 1 });
            match conn.call(Call::Admin(AdminCall::Stats)).unwrap() {
                Reply::Admin(AdminReply::Stats(stats)) => assert_eq!(stats.node, 1),
                other => panic!("unexpected reply {other:?}"),
            }
            let keys: Vec<String> = (0..50).map(|i| format!("key-{i}")).collect();
            let replies = conn.call_many(keys.iter().map(|k| get(k)).collect()).unwrap();
            for (key, reply) in keys.iter().zip(replies) {
                let Reply::Kv(Response::Outcome(Outcome::Ok(OkReply::Value { value, .. }))) = reply else {
                    panic!("unexpected reply {reply:?}");
                };
                assert_eq!(value, key.as_bytes());
            }
            // A client that does not know the cluster id learns it.
            let conn = BlockingConn::connect(&addr, 0, CLIENT_TIMEOUT).unwrap();
            assert_eq!(conn.welcome().cluster_id, CLUSTER);
        })
        .await;
        let stats = listener.stats();
        assert_eq!((stats.client_frames_received, stats.client_calls_received), (2, 51), "{stats:?}");
        assert_eq!(stats.bad_connections, 0);
        listener.stop().await;
    });
}

#[test]
fn late_replies_may_come_out_of_order_and_calls_beyond_the_inflight_limit_get_busy() {
    run(|| async {
        let recorder = Recorder::new(CLIENT_CALLS_INFLIGHT_MAX);
        let listener = listen(&recorder, "127.0.0.1:0");
        let addr = listener.local_addr().to_string();
        let excess = 5;
        let (ids, replies) = blocking(move || {
            let mut conn = BlockingConn::connect(&addr, CLUSTER, CLIENT_TIMEOUT).unwrap();
            let calls = (0..CLIENT_CALLS_INFLIGHT_MAX + excess).map(|i| get(&format!("hold-{i}"))).collect();
            let ids = conn.send(calls).unwrap();
            let mut replies = Vec::new();
            while replies.len() < ids.len() {
                replies.extend(conn.recv_frame().unwrap().replies);
            }
            // Everything answered: the budget is whole again.
            assert!(matches!(conn.call(get("after")).unwrap(), Reply::Kv(Response::Outcome(Outcome::Ok(_)))));
            (ids, replies)
        })
        .await;

        let busy: Vec<u64> = replies.iter().filter(|r| r.reply == Reply::Kv(Response::Busy)).map(|r| r.id).collect();
        assert_eq!(busy, ids[CLIENT_CALLS_INFLIGHT_MAX..].to_vec(), "exactly the excess is refused");
        let answered: Vec<u64> =
            replies.iter().filter(|r| r.reply != Reply::Kv(Response::Busy)).map(|r| r.id).collect();
        let mut reversed = ids[..CLIENT_CALLS_INFLIGHT_MAX].to_vec();
        reversed.reverse();
        assert_eq!(answered, reversed, "replies go out in the order the server gives them");
        for r in &replies {
            if let Reply::Kv(Response::Outcome(Outcome::Ok(OkReply::Value { version, .. }))) = &r.reply {
                assert_eq!(*version, r.id, "each reply carries its own call's id");
            }
        }
        assert_eq!(listener.stats().busy, excess as u64);
        listener.stop().await;
    });
}

/// Sends raw bytes and waits until the server closes the connection.
fn send_raw_and_expect_close(addr: &str, bytes: &[u8]) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn client_hello_frame() -> Vec<u8> {
    framed(&node::to_bytes(&Hello { wire_version: WIRE_VERSION, cluster_id: CLUSTER, to_node: 0, role: Role::Client }))
}

#[test]
fn bad_input_closes_that_connection_and_the_listener_serves_the_next_client() {
    run(|| async {
        let recorder = Recorder::new(usize::MAX);
        let listener = listen(&recorder, "127.0.0.1:0");
        let addr = listener.local_addr().to_string();
        let cases = blocking(move || {
            let mut bad_crc = client_hello_frame();
            bad_crc[5] ^= 0x01;
            let mut after_hello = client_hello_frame();
            after_hello.extend(framed(&[0xFF; 64]));
            let oversized = [u32::MAX.to_le_bytes(), 0u32.to_le_bytes()].concat();
            let cases: Vec<(&str, Vec<u8>)> = vec![
                ("garbage", b"GET / HTTP/1.1\r\nHost: corekv\r\n\r\n".to_vec()),
                ("oversized length", oversized),
                ("bad crc", bad_crc),
                ("invalid archive as hello", framed(&[0xFF; 64])),
                ("invalid archive after the handshake", after_hello),
            ];
            let count = cases.len() as u64;
            for (what, bytes) in cases {
                send_raw_and_expect_close(&addr, &bytes);
                let mut good = BlockingConn::connect(&addr, CLUSTER, CLIENT_TIMEOUT)
                    .unwrap_or_else(|e| panic!("after {what}: {e}"));
                assert!(good.call(get("k")).is_ok(), "after {what}");
            }
            match BlockingConn::connect(&addr, 0xBAD, CLIENT_TIMEOUT) {
                Err(ClientError::Refused(reason)) => {
                    assert!(reason.contains("0xbad") && reason.contains("0xc0fe"), "{reason}")
                }
                other => panic!("a wrong cluster id must be refused, got {other:?}"),
            }
            let mut good = BlockingConn::connect(&addr, CLUSTER, CLIENT_TIMEOUT).unwrap();
            assert!(good.call(get("k")).is_ok());
            count + 1
        })
        .await;
        eventually("every bad connection counted", || listener.stats().bad_connections == cases).await;
        listener.stop().await;
    });
}

#[test]
fn a_link_reconnects_after_the_listener_restarts() {
    run(|| async {
        let first = Recorder::new(usize::MAX);
        let listener = listen(&first, "127.0.0.1:0");
        let addr = listener.local_addr();
        let config = PeerLinkConfig { backoff_max: Duration::from_millis(100), ..PeerLinkConfig::default() };
        let link = PeerLink::spawn(addr.to_string(), peer_hello(3, 0), config);
        link.try_send(heartbeat(1)).unwrap();
        eventually("the first listener receives", || first.received() == 1).await;
        listener.stop().await;
        eventually("the link notices the closed connection", || link.state() != LinkState::Up).await;

        let second = Recorder::new(usize::MAX);
        // Same port: the TIME_WAIT leftovers of the first run must not stop it.
        let listener = listen(&second, &addr.to_string());
        let mut i = 2;
        while second.received() == 0 {
            // Messages sent while the link is down are dropped (Raft retransmits):
            // keep sending, as Raft would.
            let _ = link.try_send(heartbeat(i));
            i += 1;
            assert!(i < 10_000, "the link never reconnected");
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(link.stats().connects, 2);
        assert_eq!(first.received(), 1);
        listener.stop().await;
    });
}

#[test]
fn a_port_already_listened_on_is_refused_not_shared() {
    run(|| async {
        let recorder = Recorder::new(usize::MAX);
        let first = listen(&recorder, "127.0.0.1:0");
        let addr = first.local_addr().to_string();
        let second = Listener::bind(&addr, recorder.clone(), ListenerConfig::default());
        assert_eq!(second.err().map(|e| e.kind()), Some(std::io::ErrorKind::AddrInUse));
        first.stop().await;
    });
}

#[test]
fn a_silent_or_truncated_handshake_is_dropped_and_counted() {
    run(|| async {
        let recorder = Recorder::new(usize::MAX);
        let config = ListenerConfig { handshake_timeout: Duration::from_millis(200), ..ListenerConfig::default() };
        let listener = Listener::bind("127.0.0.1:0", recorder.clone(), config).unwrap();
        let addr = listener.local_addr().to_string();
        blocking(move || {
            // Connects and says nothing: closed when the handshake time runs out.
            send_raw_and_expect_close(&addr, &[]);
            // Half a frame, then hangs up.
            let hello = client_hello_frame();
            let mut stream = std::net::TcpStream::connect(&addr).unwrap();
            stream.write_all(&hello[..hello.len() / 2]).unwrap();
            drop(stream);
            let mut good = BlockingConn::connect(&addr, CLUSTER, CLIENT_TIMEOUT).unwrap();
            assert!(good.call(get("k")).is_ok());
        })
        .await;
        eventually("both bad connections counted", || listener.stats().bad_connections == 2).await;
        listener.stop().await;
    });
}
