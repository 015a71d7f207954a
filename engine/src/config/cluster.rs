//! The founding cluster as the user writes it (`--initial-cluster
//! 1=HOST:PORT/CORES,…`) and the address rules every node's ports must keep
//! (DESIGN §9: core i of a node listens on its base port + i).

use corekv_rpc::kv::NodeId;
use corekv_rpc::map::{NODE_CORES_MAX, NodeInfo};

use super::ConfigError;

/// Parses `1=HOST:PORT/CORES,2=HOST:PORT,…` into nodes sorted by id. An entry
/// without `/CORES` gets `default_cores` (this node's `--cores`).
pub fn parse_initial_cluster(text: &str, default_cores: u16) -> Result<Vec<NodeInfo>, ConfigError> {
    let mut nodes = Vec::new();
    for entry in text.split(',').map(str::trim) {
        nodes.push(parse_entry(entry, default_cores)?);
    }
    nodes.sort_by_key(|n| n.id);
    if let Some(pair) = nodes.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(ConfigError::DuplicateNode { id: pair[0].id });
    }
    Ok(nodes)
}

fn parse_entry(entry: &str, default_cores: u16) -> Result<NodeInfo, ConfigError> {
    let bad = |reason: String| ConfigError::ClusterEntry { entry: entry.to_string(), reason };
    let Some((id, rest)) = entry.split_once('=') else {
        return Err(bad("expected ID=HOST:PORT or ID=HOST:PORT/CORES".into()));
    };
    let id: NodeId = match id.trim().parse() {
        Ok(0) | Err(_) => return Err(bad(format!("node id `{}` is not a number from 1", id.trim()))),
        Ok(id) => id,
    };
    let (addr, cores) = match rest.rsplit_once('/') {
        None => (rest.trim(), default_cores),
        Some((addr, cores)) => match cores.trim().parse::<u16>() {
            Ok(c) if (1..=NODE_CORES_MAX).contains(&c) => (addr.trim(), c),
            _ => return Err(bad(format!("core count `{}` is not a number from 1 to {NODE_CORES_MAX}", cores.trim()))),
        },
    };
    if let Err(reason) = split_host_port(addr) {
        return Err(bad(format!("address `{addr}` is not HOST:PORT: {reason}")));
    }
    Ok(NodeInfo { id, addr: addr.to_string(), cores, state: corekv_rpc::map::NodeState::Up })
}

/// `HOST:PORT` split in two, or why it is not one. IPv6 hosts go in brackets.
pub fn split_host_port(addr: &str) -> Result<(&str, u16), &'static str> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("no port");
    };
    if host.is_empty() {
        return Err("no host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 host must be in brackets, as in [::1]:7100");
    }
    match port.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be a fixed listening port"),
        Ok(port) => Ok((host, port)),
        Err(_) => Err("the port is not a number from 1 to 65535"),
    }
}

/// Every node's ports (base port + core index) fit in u16 and no two nodes on one
/// host share a port.
pub fn check_ports(nodes: &[NodeInfo]) -> Result<(), ConfigError> {
    let mut ranges = Vec::with_capacity(nodes.len());
    for node in nodes {
        let (host, base) = split_host_port(&node.addr).map_err(|reason| ConfigError::Address {
            what: format!("node {}'s address", node.id),
            addr: node.addr.clone(),
            reason,
        })?;
        let last = u32::from(base) + u32::from(node.cores) - 1;
        if last > u32::from(u16::MAX) {
            return Err(ConfigError::PortOverflow { id: node.id, addr: node.addr.clone(), cores: node.cores });
        }
        ranges.push((host, u32::from(base), last, node.id));
    }
    for (i, &(host, first, last, id)) in ranges.iter().enumerate() {
        let clash = ranges[i + 1..].iter().find(|&&(h, f, l, _)| h == host && f <= last && first <= l);
        if let Some(&(_, other_first, _, other)) = clash {
            let port = first.max(other_first);
            return Err(ConfigError::PortCollision { first: id, second: other, addr: format!("{host}:{port}") });
        }
    }
    Ok(())
}

/// The normal form of a node list, as `--initial-cluster` takes it (cores explicit).
pub fn format_initial_cluster(nodes: &[NodeInfo]) -> String {
    let entries: Vec<String> = nodes.iter().map(|n| format!("{}={}/{}", n.id, n.addr, n.cores)).collect();
    entries.join(",")
}
