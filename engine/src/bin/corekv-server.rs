//! `corekv-server`: runs one corekv node (DESIGN §10).
//!
//! Exit codes: 0 after a clean shutdown (and for `--help`, `--version`,
//! `--print-config`); 2 when the configuration or the data dir is unusable, or
//! the cluster refuses a `--join` (one line on stderr says why); 1 when the node
//! fails while running, or cannot reach the cluster it joins.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use corekv_engine::config::{Cli, DataDirState, ServerConfig, prepare_data_dir};
use corekv_engine::runtime::join::{self, JoinError};
use corekv_engine::runtime::server;

/// The configuration or the data dir is unusable (as clap's usage errors).
const EXIT_CONFIG: u8 = 2;
/// The node failed while running.
const EXIT_RUN: u8 = 1;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version: print and exit 0
        Err(e) => return fail(EXIT_CONFIG, &clap_error_line(&e)),
    };
    let mut config = match ServerConfig::from_cli(&cli, std::env::var("RUST_LOG").ok().as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(EXIT_CONFIG, &e.to_string()),
    };
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_tracing(&config.log);
    // A node that joined (or joins) a running cluster learns its cluster id from
    // its data dir or from the cluster.
    let joined = if config.is_founding() {
        None
    } else {
        match join::resolve(&mut config) {
            Ok(joined) => joined,
            Err(e @ JoinError::Refused(_)) => return fail(EXIT_CONFIG, &e.to_string()),
            Err(e @ JoinError::Failed(_)) => return fail(EXIT_RUN, &e.to_string()),
        }
    };
    let state = match prepare_data_dir(&config) {
        Ok(state) => state,
        Err(e) => return fail(EXIT_CONFIG, &e.to_string()),
    };
    tracing::info!(
        node = config.id,
        cluster_id = format_args!("{:#018x}", config.cluster_id),
        cores = config.cores,
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        first_start = state == DataDirState::Fresh,
        "starting corekv-server"
    );
    match server::run(config, joined) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_RUN, &e.to_string()),
    }
}

/// Logs to stderr through `filter` (already checked when the config resolved).
fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Clap's message without its usage block, on one line.
fn clap_error_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
    let first = first.trim().strip_prefix("error: ").unwrap_or(first.trim());
    format!("{first} (see --help)")
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("corekv-server: {message}");
    ExitCode::from(code)
}
