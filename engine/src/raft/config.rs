//! Tunables of one Raft group, in ticks and bytes. Every limit is named here.

use corekv_rpc::raft::NodeId;
use thiserror::Error;

/// Configuration of one Raft node (one replica of one group).
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id (never 0).
    pub id: NodeId,
    /// Base election timeout. A follower campaigns after a random timeout in
    /// `[election_timeout_ticks, 2 × election_timeout_ticks)` without a leader.
    pub election_timeout_ticks: u32,
    /// A leader sends heartbeats this often.
    pub heartbeat_interval_ticks: u32,
    /// Run a pre-vote before a real election, so a node that was cut off does not
    /// disturb a stable leader when it rejoins (Raft thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within an election timeout
    /// steps down; followers ignore votes while they hear from a leader.
    pub check_quorum: bool,
    /// Appends in flight to one follower, at most.
    pub inflight_msgs_max: usize,
    /// Entry bytes in flight to one follower, at most (0 = no byte limit).
    pub inflight_bytes_max: u64,
    /// Entry bytes in one append message, at most (one entry always fits).
    pub append_bytes_max: u64,
    /// Entry bytes proposed but not yet committed, at most; beyond, proposals are
    /// refused as busy (back-pressure instead of an unbounded log).
    pub uncommitted_bytes_max: u64,
    /// Entry bytes handed to the application in one `Ready`, at most.
    pub apply_bytes_max: u64,
    /// Snapshot bytes in one chunk.
    pub snapshot_chunk_bytes: u64,
    /// A follower refuses a snapshot larger than this.
    pub snapshot_bytes_max: u64,
    /// Reads the leader may hold waiting for a heartbeat round, at most.
    pub pending_reads_max: usize,
    /// Serve reads under a leader lease instead of a heartbeat round when the
    /// lease holds. Needs `check_quorum`. Costs one election timeout after a node
    /// starts, during which it grants no vote (it may have acknowledged a lease
    /// before it crashed).
    pub lease_read: bool,
    /// The lease lasts `election_timeout_ticks - lease_drift_margin_ticks` from
    /// the send of the heartbeat round a majority answered: the margin covers clock
    /// drift between nodes.
    pub lease_drift_margin_ticks: u32,
}

impl Config {
    /// Defaults for node `id`, meant for 10 ms ticks: election after 1–2 s,
    /// heartbeats every 100 ms.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_ticks: 100,
            heartbeat_interval_ticks: 10,
            pre_vote: true,
            check_quorum: true,
            inflight_msgs_max: 256,
            inflight_bytes_max: 8 << 20,
            append_bytes_max: 1 << 20,
            uncommitted_bytes_max: 64 << 20,
            apply_bytes_max: 4 << 20,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_bytes_max: 16 << 30,
            pending_reads_max: 4096,
            lease_read: false,
            lease_drift_margin_ticks: 10,
        }
    }

    /// Checks the configuration for values that would make Raft unsafe or stuck.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &'static str| Err(ConfigError(what));
        if self.id == 0 {
            return bad("id must not be 0");
        }
        if self.heartbeat_interval_ticks == 0 {
            return bad("heartbeat_interval_ticks must be at least 1");
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return bad("election_timeout_ticks must exceed heartbeat_interval_ticks");
        }
        if self.inflight_msgs_max == 0 {
            return bad("inflight_msgs_max must be at least 1");
        }
        if self.snapshot_chunk_bytes == 0 || self.append_bytes_max == 0 || self.apply_bytes_max == 0 {
            return bad("byte limits must be positive");
        }
        if self.lease_read && !self.check_quorum {
            return bad("lease_read needs check_quorum");
        }
        if self.lease_read && self.lease_drift_margin_ticks >= self.election_timeout_ticks {
            return bad("lease_drift_margin_ticks must be below election_timeout_ticks");
        }
        Ok(())
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid raft configuration: {0}")]
pub struct ConfigError(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(Config::new(1).validate(), Ok(()));
        assert!(Config { id: 0, ..Config::new(1) }.validate().is_err());
        let c = Config { election_timeout_ticks: 5, heartbeat_interval_ticks: 5, ..Config::new(1) };
        assert_eq!(c.validate(), Err(ConfigError("election_timeout_ticks must exceed heartbeat_interval_ticks")));
        let c = Config { lease_read: true, check_quorum: false, ..Config::new(1) };
        assert!(c.validate().is_err());
    }
}
