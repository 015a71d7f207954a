//! `corekv-ctl`: the corekv admin and data CLI.
//!
//! Today it holds the offline tools (WAL and snapshot dump/verify, DESIGN §5);
//! data commands (get/put/…), `status`, `local` and the node/shard admin join as
//! further [`Command`] variants. Exit codes: 0 success, 1 a problem found or an
//! operation failed (reported on stderr), 2 a usage error (clap's default).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corekv_tools::offline::{self, OfflineError};

#[derive(Debug, Parser)]
#[command(name = "corekv-ctl", version, about = "corekv admin and data CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Offline write-ahead log tools (no server needed).
    #[command(subcommand)]
    Wal(WalCommand),
    /// Offline shard snapshot tools (no server needed).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Print segment headers, batches and records.
    Dump {
        /// A data dir, a core dir (`core-<i>`) or a wal dir.
        path: PathBuf,
    },
    /// Recover every WAL as a starting node would; report the first problem
    /// with file and offset.
    Verify {
        /// A data dir, a core dir (`core-<i>`) or a wal dir.
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Print snapshot headers and chunk lists.
    Dump {
        /// A data dir, a core dir, a snap dir or a snapshot file.
        path: PathBuf,
    },
    /// Check every chunk CRC and the end frame; report the first problem.
    Verify {
        /// A data dir, a core dir, a snap dir or a snapshot file.
        path: PathBuf,
    },
}

fn run(command: Command) -> Result<(), OfflineError> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Wal(WalCommand::Dump { path }) => offline::wal_dump(&path, &mut out),
        Command::Wal(WalCommand::Verify { path }) => offline::wal_verify(&path, &mut out),
        Command::Snapshot(SnapshotCommand::Dump { path }) => offline::snapshot_dump(&path, &mut out),
        Command::Snapshot(SnapshotCommand::Verify { path }) => offline::snapshot_verify(&path, &mut out),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corekv-ctl: {e}");
            ExitCode::from(1)
        }
    }
}
