//! The etcd driver: etcd's v3 API through the `etcd-client` crate (gRPC over
//! tonic), on the tokio current-thread runtime of [`super::run`].
//!
//! Clients share connections as etcd's benchmark tool shares them: client `i`
//! uses connection `i % conns`, and connection `j` goes to endpoint
//! `j % endpoints` (a write sent to a follower is forwarded to the leader by etcd
//! itself). Reads are etcd's default linearizable `Range`, the same guarantee as
//! corekv's reads.

use std::rc::Rc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KvClient};

use super::WriteCounts;
use crate::runner::{Answer, Driver};

/// How long connecting to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A key no workload writes: the reachability probe reads it.
const PROBE_KEY: &[u8] = b"\xffcorekv-bench-probe";

/// One etcd client: a share of one gRPC connection.
#[derive(Clone)]
pub struct EtcdDriver {
    kv: KvClient,
    counts: Rc<WriteCounts>,
}

impl std::fmt::Debug for EtcdDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDriver").finish_non_exhaustive()
    }
}

impl EtcdDriver {
    /// `clients` drivers over `conns` connections spread over `endpoints`, each
    /// connection checked with one read; writes are counted in `counts`.
    pub async fn connect_all(
        endpoints: &[String],
        clients: usize,
        conns: usize,
        timeout: Duration,
        counts: &Rc<WriteCounts>,
    ) -> Result<Vec<EtcdDriver>, String> {
        let options = ConnectOptions::new().with_timeout(timeout).with_connect_timeout(CONNECT_TIMEOUT);
        let mut connections = Vec::with_capacity(conns);
        for j in 0..conns {
            let endpoint = &endpoints[j % endpoints.len()];
            let client = Client::connect([format!("http://{endpoint}")], Some(options.clone()))
                .await
                .map_err(|e| format!("cannot reach etcd at {endpoint}: {e}"))?;
            let mut kv = client.kv_client();
            kv.get(PROBE_KEY, None).await.map_err(|e| format!("cannot reach etcd at {endpoint}: {e}"))?;
            connections.push(kv);
        }
        Ok((0..clients)
            .map(|i| EtcdDriver { kv: connections[i % connections.len()].clone(), counts: counts.clone() })
            .collect())
    }
}

impl Driver for EtcdDriver {
    async fn read(&self, key: &[u8]) -> Answer {
        match self.kv.clone().get(key, None).await {
            Ok(got) => match got.kvs().first() {
                Some(kv) => Answer::value(Some(kv.mod_revision() as u64), kv.value().to_vec()),
                None => Answer::err("not_found"),
            },
            Err(_) => Answer::err("unavailable"),
        }
    }

    async fn write(&self, key: &[u8], value: &[u8]) -> Answer {
        self.counts.sent();
        match self.kv.clone().put(key, value, None).await {
            Ok(put) => {
                self.counts.ok();
                Answer::ok(put.header().map(|h| h.revision() as u64))
            }
            // Sent and not answered: it may or may not have been committed.
            Err(_) => Answer::err("indeterminate"),
        }
    }

    async fn scan(&self, start: &[u8], count: u32) -> Answer {
        let options = GetOptions::new().with_from_key().with_limit(i64::from(count));
        match self.kv.clone().get(start, Some(options)).await {
            Ok(_) => Answer::ok(None),
            Err(_) => Answer::err("unavailable"),
        }
    }
}
