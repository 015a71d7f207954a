//! The peer servers `corekv-bench compare` runs itself: etcd members and Redis
//! servers from Debian's packages, on free loopback ports, with data dirs and
//! logs under the comparison's own dir. Never the packaged services, never
//! their default ports. Dropping a [`Servers`] stops every process it started
//! (SIGTERM, then SIGKILL after a grace period), on success and on error alike.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::http_get;

/// How long a server may take to answer after it starts.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of a log quoted in an error.
const LOG_TAIL_LINES: usize = 15;

/// Finds `binary` on the PATH; when it is missing and we are root, installs the
/// Debian `package` that ships it (`apt-get update` first when the package is
/// unknown). The error says what to install.
pub fn ensure_installed(binary: &str, package: &str) -> Result<PathBuf, String> {
    if let Some(path) = on_path(binary) {
        return Ok(path);
    }
    let hint = format!("{binary} is not installed: install Debian's {package} (apt-get install {package})");
    if !nix::unistd::geteuid().is_root() || on_path("apt-get").is_none() {
        return Err(hint);
    }
    eprintln!("corekv-bench: installing {package} (apt-get) ...");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let updated = Command::new("apt-get").args(["update", "-qq"]).stdout(Stdio::null()).status();
        if !updated.is_ok_and(|s| s.success()) || !install() {
            return Err(format!("{hint}; apt-get could not install it"));
        }
    }
    on_path(binary).ok_or(hint)
}

fn on_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(binary)).find(|p| p.is_file())
}

/// `n` free loopback ports.
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    corekv_tools::launcher::pick_base_ports(n, 1).map_err(|e| e.to_string())
}

/// The processes of one system under test.
#[derive(Debug)]
pub struct Servers {
    /// What runs (`etcd 3 members`).
    pub name: String,
    /// Client addresses, `127.0.0.1:PORT` each.
    pub client_addrs: Vec<String>,
    procs: Vec<(String, Child, PathBuf)>,
}

impl Servers {
    /// Starts `bin args` as `name`, its output in `log`.
    fn spawn(&mut self, name: &str, bin: &Path, args: &[String], log: PathBuf) -> Result<(), String> {
        let out = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        self.procs.push((name.to_string(), child, log));
        Ok(())
    }

    /// Polls `ready` until it holds, a process exits (its log tail is the error),
    /// or the deadline passes.
    fn wait_ready(&mut self, mut ready: impl FnMut(&Servers) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if ready(self) {
                return Ok(());
            }
            for (name, child, log) in &mut self.procs {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("{name} exited ({status}) while starting; {}:\n{}", log.display(), tail(log)));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not become ready within {READY_DEADLINE:?}", self.name));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to all, then waits; SIGKILL to any still running after the grace.
    pub fn stop(&mut self) {
        for (_, child, _) in &self.procs {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (name, child, _) in &mut self.procs {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        eprintln!("corekv-bench: {name} ignored SIGTERM for {STOP_GRACE:?}: killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.procs.clear();
    }

    /// The pids, for a profiler.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|(_, c, _)| c.id()).collect()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of `log`.
fn tail(log: &Path) -> String {
    let Ok(file) = File::open(log) else { return String::new() };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// The command line of etcd member `i` (0-based) of a loopback cluster whose
/// members listen for clients on `client_ports` and for peers on `peer_ports`.
/// fsync stays on (etcd's default); everything not named is etcd's default.
pub fn etcd_args(i: usize, client_ports: &[u16], peer_ports: &[u16], dir: &Path, token: &str) -> Vec<String> {
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let cluster =
        peer_ports.iter().enumerate().map(|(j, p)| format!("m{}={}", j + 1, url(*p))).collect::<Vec<_>>().join(",");
    let member_dir = dir.join(format!("m{}", i + 1));
    [
        ("--name", format!("m{}", i + 1)),
        ("--data-dir", member_dir.display().to_string()),
        ("--listen-client-urls", url(client_ports[i])),
        ("--advertise-client-urls", url(client_ports[i])),
        ("--listen-peer-urls", url(peer_ports[i])),
        ("--initial-advertise-peer-urls", url(peer_ports[i])),
        ("--initial-cluster", cluster),
        ("--initial-cluster-state", "new".to_string()),
        ("--initial-cluster-token", token.to_string()),
        ("--logger", "zap".to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// Starts a `members`-member etcd cluster under `dir` and waits until every
/// member reports itself healthy.
pub fn start_etcd(members: usize, dir: &Path) -> Result<Servers, String> {
    let bin = ensure_installed("etcd", "etcd-server")?;
    let ports = free_ports(2 * members)?;
    let (client_ports, peer_ports) = ports.split_at(members);
    let dir = dir.join("etcd");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let token = format!("corekv-bench-{}", std::process::id());
    let mut servers = Servers {
        name: format!("etcd {members} members"),
        client_addrs: client_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        procs: Vec::new(),
    };
    for i in 0..members {
        let args = etcd_args(i, client_ports, peer_ports, &dir, &token);
        servers.spawn(&format!("etcd member m{}", i + 1), &bin, &args, dir.join(format!("m{}.log", i + 1)))?;
    }
    servers.wait_ready(|s| {
        s.client_addrs.iter().all(|a| http_get(a, "/health").is_ok_and(|body| body.contains("\"health\":\"true\"")))
    })?;
    Ok(servers)
}

/// How a Redis server persists writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisDurability {
    /// `appendonly yes`, `appendfsync always`: every write fsynced before its reply.
    FsyncAlways,
    /// No AOF, no RDB snapshots: the in-memory ceiling.
    None,
}

/// The command line of a Redis server on `port` with data in `dir`.
pub fn redis_args(port: u16, dir: &Path, durability: RedisDurability) -> Vec<String> {
    let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--daemonize", "no", "--save", ""]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--dir".to_string(), dir.display().to_string()]);
    let persistence: &[&str] = match durability {
        RedisDurability::FsyncAlways => &["--appendonly", "yes", "--appendfsync", "always"],
        RedisDurability::None => &["--appendonly", "no"],
    };
    args.extend(persistence.iter().map(|s| s.to_string()));
    args
}

/// Starts one Redis server under `dir` and waits until it answers `PING`.
pub fn start_redis(durability: RedisDurability, dir: &Path) -> Result<Servers, String> {
    let bin = ensure_installed("redis-server", "redis-server")?;
    let port = free_ports(1)?[0];
    let label = match durability {
        RedisDurability::FsyncAlways => "redis-fsync",
        RedisDurability::None => "redis-memory",
    };
    let dir = dir.join(label);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut servers =
        Servers { name: label.to_string(), client_addrs: vec![format!("127.0.0.1:{port}")], procs: Vec::new() };
    let log = dir.join("redis.log");
    servers.spawn(label, &bin, &redis_args(port, &dir, durability), log)?;
    servers.wait_ready(|s| redis_ping(&s.client_addrs[0]))?;
    Ok(servers)
}

fn redis_ping(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// `redis-benchmark -t set` at `clients` connections, one request in flight each:
/// its SETs per second.
pub fn redis_benchmark_set(
    addr: &str,
    clients: usize,
    requests: u64,
    value_bytes: usize,
    keys: u64,
) -> Result<f64, String> {
    let bin = ensure_installed("redis-benchmark", "redis-tools")?;
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} has no port"))?;
    let output = Command::new(bin)
        .args(["-h", host, "-p", port, "-t", "set", "-P", "1", "--csv"])
        .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
        .args(["-d", &value_bytes.to_string(), "-r", &keys.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_redis_benchmark_csv(&text, "SET").ok_or_else(|| {
        format!("redis-benchmark printed no SET rate: {}", String::from_utf8_lossy(&output.stderr).trim())
    })
}

/// The requests per second of `test` in `redis-benchmark --csv` output.
pub fn parse_redis_benchmark_csv(text: &str, test: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let mut fields = line.split(',').map(|f| f.trim().trim_matches('"'));
        (fields.next()? == test).then(|| fields.next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_members_know_each_other_and_keep_fsync() {
        let args = etcd_args(1, &[2001, 2002, 2003], &[3001, 3002, 3003], Path::new("/d"), "tok");
        let value = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(value("--name"), "m2");
        assert_eq!(value("--data-dir"), "/d/m2");
        assert_eq!(value("--listen-client-urls"), "http://127.0.0.1:2002");
        assert_eq!(value("--initial-advertise-peer-urls"), "http://127.0.0.1:3002");
        assert_eq!(
            value("--initial-cluster"),
            "m1=http://127.0.0.1:3001,m2=http://127.0.0.1:3002,m3=http://127.0.0.1:3003"
        );
        assert!(!args.iter().any(|a| a.contains("unsafe")), "fsync must stay on: {args:?}");
    }

    #[test]
    fn redis_durability_is_spelled_out() {
        let fsync = redis_args(7000, Path::new("/d"), RedisDurability::FsyncAlways).join(" ");
        assert!(fsync.contains("--appendonly yes --appendfsync always") && fsync.contains("--port 7000"), "{fsync}");
        let memory = redis_args(7000, Path::new("/d"), RedisDurability::None);
        let save = memory.iter().position(|a| a == "--save").unwrap();
        assert_eq!(memory[save + 1], "", "no RDB snapshots");
        assert!(memory.join(" ").contains("--appendonly no"));
    }

    #[test]
    fn redis_benchmark_csv_is_read() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\"\n\"SET\",\"81234.56\",\"0.383\",\"0.112\"\n";
        assert_eq!(parse_redis_benchmark_csv(csv, "SET"), Some(81234.56));
        assert_eq!(parse_redis_benchmark_csv(csv, "GET"), None);
        assert_eq!(parse_redis_benchmark_csv("", "SET"), None);
    }
}
