//! PLACEHOLDER for the node runtime's entry point, kept only so the `corekv-server`
//! binary builds on the `server-cli` branch. The node-runtime branch owns this
//! file and replaces it whole at merge with the real `run` (same signature).

pub use crate::config::ServerConfig;

/// Why the node could not run (one line).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The node could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// Runs the node until it is shut down.
///
/// PLACEHOLDER (replaced by the node-runtime branch at merge): always fails.
pub fn run(config: ServerConfig) -> Result<(), ServerError> {
    let _ = config;
    Err(ServerError::Setup("node runtime not built yet".into()))
}
