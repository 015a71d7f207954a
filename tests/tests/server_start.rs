//! A core that cannot start takes the whole server down at once (fail-stop), so a
//! launcher that lost a port race sees the exit and retries, instead of waiting on
//! a server that serves without one of its cores. Liveness bounds only.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corekv_tools::launcher::{ClusterLock, find_server_binary};

#[test]
fn a_core_that_cannot_listen_stops_the_server() {
    let _lock = ClusterLock::acquire(&ClusterLock::default_path()).expect("the process-test lock");
    let server = find_server_binary(true).expect("corekv-server is found or built");
    // Core 1 listens on base + 1: hold that port.
    let (base, _held) = loop {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if let Ok(held) = TcpListener::bind(("127.0.0.1", base + 1)) {
            break (base, held);
        }
    };
    let dir = std::env::temp_dir().join(format!("corekv-server-start-{}", std::process::id()));
    let mut child = Command::new(server)
        .args(["--id", "1", "--cores", "2", "--listen", &format!("127.0.0.1:{base}")])
        .args(["--initial-cluster", &format!("1=127.0.0.1:{base}/2")])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the server kept running without its core 1");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{}", base + 1)), "the error names the port: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
