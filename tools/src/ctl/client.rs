//! TEMPORARY stand-in for `corekv_rpc::client` (the lead's client library, landing on
//! main as a `client:` commit): the same names and signatures, so the rest of
//! `corekv-ctl` builds and is unit-tested against them. Deleted at the merge of main.

#![allow(missing_docs, dead_code)]

use std::time::Duration;

use corekv_rpc::kv::{NodeId, Version};
use corekv_rpc::map::ClusterMap;
use corekv_rpc::node::{CoreStats, ShardStatus};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub cluster: Vec<String>,
    pub deadline: Duration,
    pub attempt_timeout: Duration,
    pub connect_timeout: Duration,
}

impl ClientConfig {
    pub fn new(cluster: Vec<String>) -> ClientConfig {
        ClientConfig {
            cluster,
            deadline: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

pub fn parse_cluster(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        match part.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => out.push(part.to_string()),
            _ => return Err(format!("{part:?} is not HOST:PORT")),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    NotFound,
    VersionMismatch { current: Version },
    Compacted,
    Unavailable { reason: String },
    Indeterminate { reason: String },
    Invalid { message: String },
}

impl KvError {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub version: Version,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    pub version: Version,
    pub deleted: bool,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub items: Vec<corekv_rpc::kv::ScanItem>,
    pub more: bool,
}

#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub cluster_id: u64,
    pub epoch: u64,
    pub nodes: Vec<NodeStatus>,
}

#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
    pub cores: Vec<CoreStatus>,
}

#[derive(Debug, Clone)]
pub struct CoreStatus {
    pub core: u16,
    pub addr: String,
    pub error: Option<String>,
    pub stats: Option<CoreStats>,
    pub shards: Vec<ShardStatus>,
}

pub mod blocking {
    use super::*;

    #[derive(Debug)]
    pub struct Client {
        config: ClientConfig,
        map: ClusterMap,
    }

    fn stand_in(config: &ClientConfig) -> KvError {
        KvError::Unavailable { reason: format!("no node of {} answered: client stand-in", config.cluster.join(",")) }
    }

    impl Client {
        pub fn connect(config: ClientConfig) -> Result<Client, KvError> {
            Err(stand_in(&config))
        }
        pub fn put(&mut self, _key: &[u8], _value: &[u8]) -> Result<Version, KvError> {
            Err(stand_in(&self.config))
        }
        pub fn delete(&mut self, _key: &[u8]) -> Result<Version, KvError> {
            Err(stand_in(&self.config))
        }
        pub fn cas(&mut self, _key: &[u8], _expected: Version, _value: &[u8]) -> Result<Version, KvError> {
            Err(stand_in(&self.config))
        }
        pub fn get(&mut self, _key: &[u8], _at: Option<Version>) -> Result<Got, KvError> {
            Err(stand_in(&self.config))
        }
        pub fn versions(&mut self, _key: &[u8]) -> Result<Vec<VersionEntry>, KvError> {
            Err(stand_in(&self.config))
        }
        pub fn scan(&mut self, _start: &[u8], _end: &[u8], _limit: u32) -> Result<ScanPage, KvError> {
            Err(stand_in(&self.config))
        }
        pub fn status(&mut self) -> ClusterStatus {
            ClusterStatus { cluster_id: 0, epoch: 0, nodes: Vec::new() }
        }
        pub fn map(&self) -> &ClusterMap {
            &self.map
        }
        pub fn set_deadline(&mut self, deadline: Duration) {
            self.config.deadline = deadline;
        }
    }
}
