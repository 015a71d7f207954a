//! Starting a node that did not found its cluster (issue 12): `--join` on a first
//! start, and every restart after it.
//!
//! A first start with `--join ADDR[,ADDR…]` connects to the cluster as a client
//! does (its handshake carries cluster id 0 and learns the real one), reads the
//! cluster's map, and asks the meta group to add this node (id, address, cores).
//! The request is checked first against that map with the meta group's own
//! rules, so an id the cluster already gives another node, or a removed id, is
//! refused at once with the reason. Once the map shows this node, its cluster id
//! goes into the data dir's identity file and the map into every core's map
//! file: a restart then needs no `--join` and starts from them. A `--join` with
//! a data dir that already belongs to a cluster is checked against it (a data
//! dir of another cluster is refused).

use std::time::{Duration, Instant};

use corekv_rpc::client::ClientConfig;
use corekv_rpc::client::blocking::Client;
use corekv_rpc::map::{ClusterMap, NodeInfo, NodeState};
use corekv_rpc::node::MetaEdit;

use crate::config::{ServerConfig, read_data_dir_identity};
use crate::placement::nodes;

/// How long a joining node waits for the cluster's map to show it.
const JOIN_WITHIN: Duration = Duration::from_secs(60);
/// How often it reads the map: the meta group adds a node in about one commit,
/// and the node's start waits for it.
const LOOK_INTERVAL: Duration = Duration::from_millis(10);
/// How often it asks again while the map does not show it (repeats are
/// harmless; a new meta leader may have dropped the request).
const ASK_INTERVAL: Duration = Duration::from_millis(500);

/// Why a node that did not found its cluster cannot start.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The request or the data dir is wrong: the operator must change something
    /// (exit code 2).
    #[error("{0}")]
    Refused(String),
    /// The cluster could not be reached or did not add the node in time (exit
    /// code 1; trying again may work).
    #[error("{0}")]
    Failed(String),
}

/// Settles `config.cluster_id` for a node started without `--initial-cluster`:
/// from its data dir on a restart, from the cluster on a join. Answers the
/// cluster's map after a join (to be saved as every core's map file before the
/// cores start), `None` on a restart.
pub fn resolve(config: &mut ServerConfig) -> Result<Option<ClusterMap>, JoinError> {
    let identity = read_data_dir_identity(&config.data_dir).map_err(|e| JoinError::Refused(e.to_string()))?;
    match identity {
        Some(found) => {
            if found.node_id != config.id || found.cores != config.cores {
                return Err(JoinError::Refused(format!(
                    "data dir {} belongs to {found}, not node {} with {} cores",
                    config.data_dir.display(),
                    config.id,
                    config.cores
                )));
            }
            if !config.join.is_empty() {
                let client = connect(&config.join)?;
                let map = client.map();
                if map.cluster_id != found.cluster_id {
                    return Err(JoinError::Refused(format!(
                        "data dir {} belongs to cluster {:#018x}; --join reached cluster {:#018x}",
                        config.data_dir.display(),
                        found.cluster_id,
                        map.cluster_id
                    )));
                }
                refuse_removed(map, config.id)?;
            }
            config.cluster_id = found.cluster_id;
            Ok(None)
        }
        None if config.join.is_empty() => Err(JoinError::Refused(format!(
            "data dir {} is new: a first start needs --initial-cluster (to found a cluster) or --join (to join one)",
            config.data_dir.display()
        ))),
        None => join(config).map(Some),
    }
}

fn connect(addrs: &[String]) -> Result<Client, JoinError> {
    Client::connect(ClientConfig::new(addrs.to_vec()))
        .map_err(|e| JoinError::Failed(format!("cannot reach the cluster at {}: {e}", addrs.join(","))))
}

fn refuse_removed(map: &ClusterMap, id: u64) -> Result<(), JoinError> {
    if map.node(id).is_some_and(|n| n.state == NodeState::Removed) {
        return Err(JoinError::Refused(format!("node {id} was removed from this cluster; its id is never reused")));
    }
    Ok(())
}

fn join(config: &mut ServerConfig) -> Result<ClusterMap, JoinError> {
    let mut client = connect(&config.join)?;
    let me = NodeInfo { id: config.id, addr: config.listen.clone(), cores: config.cores, state: NodeState::Up };
    // The meta group's own rules, on the map the cluster gave: a used or removed
    // id is refused here with its reason. (The same join again, after a crash
    // before the identity file was written, changes nothing and goes on.)
    nodes::add_node(client.map(), &me).map_err(|e| JoinError::Refused(format!("the cluster refuses the join: {e}")))?;
    let deadline = Instant::now() + JOIN_WITHIN;
    let mut asked: Option<Instant> = None;
    loop {
        if let Some(known) = client.map().node(me.id) {
            if known.addr != me.addr || known.cores != me.cores {
                let why = format!("node id {} was given to {} with {} cores meanwhile", me.id, known.addr, known.cores);
                return Err(JoinError::Refused(why));
            }
            refuse_removed(client.map(), me.id)?;
            config.cluster_id = client.map().cluster_id;
            return Ok(client.map().clone());
        }
        if Instant::now() >= deadline {
            return Err(JoinError::Failed(format!(
                "the cluster did not add node {} within {JOIN_WITHIN:?} (is its meta group up?)",
                me.id
            )));
        }
        if asked.is_none_or(|at| at.elapsed() >= ASK_INTERVAL) {
            asked = Some(Instant::now());
            if let Err(e) = client.submit_meta(MetaEdit::AddNode { node: me.clone() }) {
                tracing::warn!(error = %e, "the join request did not reach the meta group; trying again");
            }
        }
        std::thread::sleep(LOOK_INTERVAL);
        if let Err(e) = client.refresh_map() {
            tracing::warn!(error = %e, "cannot read the cluster's map; trying again");
        }
    }
}
