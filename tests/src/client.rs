//! A stand-in with the shape of `corekv_rpc::client` (its blocking facade), over
//! [`crate::TestClient`], until the client library lands: the harness is written
//! against this API so that switching is a change of imports.
//!
//! Writes it cannot finish are `indeterminate`, never `unavailable`: an earlier
//! attempt may have been proposed, so nothing is certain.

use std::time::Duration;

use corekv_rpc::kv::{OkReply, Outcome, ReadOp, Version, WriteOp};
use corekv_rpc::map::ClusterMap;
use corekv_rpc::node::{CoreStats, ShardStatus};

use crate::{Answer, TestClient};

/// How a client reaches the cluster and how long it tries.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Core 0 addresses.
    pub cluster: Vec<String>,
    /// How long one request (retries included) may take.
    pub deadline: Duration,
    /// Unused by the stand-in.
    pub attempt_timeout: Duration,
    /// Unused by the stand-in.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// The defaults, for `cluster`.
    pub fn new(cluster: Vec<String>) -> ClientConfig {
        ClientConfig {
            cluster,
            deadline: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Why a request did not succeed, in DESIGN §6's outcome words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// Absent or deleted.
    NotFound,
    /// A cas found another version.
    VersionMismatch {
        /// The key's version (0 when absent).
        current: Version,
    },
    /// Older than the retained history.
    Compacted,
    /// Certainly not applied.
    Unavailable {
        /// What was seen last.
        reason: String,
    },
    /// May or may not have been applied.
    Indeterminate {
        /// What was seen last.
        reason: String,
    },
    /// Bad input.
    Invalid {
        /// What is wrong.
        message: String,
    },
}

impl KvError {
    /// DESIGN §6's word.
    pub fn word(&self) -> &'static str {
        match self {
            KvError::NotFound => "not_found",
            KvError::VersionMismatch { .. } => "version_mismatch",
            KvError::Compacted => "compacted",
            KvError::Unavailable { .. } => "unavailable",
            KvError::Indeterminate { .. } => "indeterminate",
            KvError::Invalid { .. } => "invalid",
        }
    }
}

/// A value read, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// The version read.
    pub version: Version,
    /// Its value.
    pub value: Vec<u8>,
}

/// The whole cluster as its cores report it.
#[derive(Debug, Clone, Default)]
pub struct ClusterStatus {
    /// Every node that answered.
    pub nodes: Vec<NodeStatus>,
}

/// One node's report.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// The node's id.
    pub id: u64,
    /// Every core that answered.
    pub cores: Vec<CoreStatus>,
}

/// One core's report.
#[derive(Debug, Clone)]
pub struct CoreStatus {
    /// Its counters.
    pub stats: Option<CoreStats>,
    /// The shard replicas it holds.
    pub shards: Vec<ShardStatus>,
}

/// The blocking facade.
pub mod blocking {
    use super::*;

    /// A blocking client: one client id.
    #[derive(Debug)]
    pub struct Client {
        inner: TestClient,
    }

    impl Client {
        /// Learns the cluster map from any address.
        pub fn connect(config: ClientConfig) -> Result<Client, KvError> {
            TestClient::connect(&config.cluster, config.deadline)
                .map(|inner| Client { inner })
                .map_err(|reason| KvError::Unavailable { reason })
        }

        /// The cluster map.
        pub fn map(&self) -> &ClusterMap {
            self.inner.map()
        }

        /// Changes the per-request deadline.
        pub fn set_deadline(&mut self, deadline: Duration) {
            self.inner.set_deadline(deadline);
        }

        fn written(answer: Answer) -> Result<Version, KvError> {
            match answer {
                Answer::Outcome(Outcome::Ok(OkReply::Written { version })) => Ok(version),
                Answer::Outcome(Outcome::Unavailable) | Answer::GaveUp(_) => {
                    Err(KvError::Indeterminate { reason: format!("{answer:?}") })
                }
                Answer::Outcome(other) => Err(definite(other)),
            }
        }

        /// Puts `value` at `key`.
        pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Version, KvError> {
            Self::written(self.inner.write(WriteOp::Put { key: key.to_vec(), value: value.to_vec() }))
        }

        /// Deletes `key`.
        pub fn delete(&mut self, key: &[u8]) -> Result<Version, KvError> {
            Self::written(self.inner.write(WriteOp::Delete { key: key.to_vec() }))
        }

        /// Compare-and-set.
        pub fn cas(&mut self, key: &[u8], expected: Version, value: &[u8]) -> Result<Version, KvError> {
            Self::written(self.inner.write(WriteOp::Cas { key: key.to_vec(), expected, value: value.to_vec() }))
        }

        /// Get, latest or at a version.
        pub fn get(&mut self, key: &[u8], at: Option<Version>) -> Result<Got, KvError> {
            match self.inner.read(ReadOp::Get { key: key.to_vec(), at }) {
                Answer::Outcome(Outcome::Ok(OkReply::Value { version, value })) => Ok(Got { version, value }),
                Answer::Outcome(Outcome::Unavailable | Outcome::Indeterminate) | Answer::GaveUp(_) => {
                    Err(KvError::Unavailable { reason: "no answer".into() })
                }
                Answer::Outcome(other) => Err(definite(other)),
            }
        }

        /// Every core's report.
        pub fn status(&mut self) -> ClusterStatus {
            let mut nodes: Vec<NodeStatus> = Vec::new();
            let stats = self.inner.stats();
            for (node, core, shards) in self.inner.status() {
                let stats = stats.iter().find(|s| s.node == node && s.core == core).copied();
                let entry = match nodes.iter_mut().find(|n| n.id == node) {
                    Some(entry) => entry,
                    None => {
                        nodes.push(NodeStatus { id: node, cores: Vec::new() });
                        nodes.last_mut().expect("pushed")
                    }
                };
                entry.cores.push(CoreStatus { stats, shards });
            }
            ClusterStatus { nodes }
        }
    }

    fn definite(outcome: Outcome) -> KvError {
        match outcome {
            Outcome::NotFound => KvError::NotFound,
            Outcome::VersionMismatch { current } => KvError::VersionMismatch { current },
            Outcome::Compacted => KvError::Compacted,
            Outcome::Invalid { message } => KvError::Invalid { message },
            other => KvError::Indeterminate { reason: format!("{other:?}") },
        }
    }
}
