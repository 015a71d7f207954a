//! `corekv-ctl`: the corekv admin and data CLI (`corekv-ctl --help`; README's
//! quick start). The commands live in `corekv_tools::ctl`; this file wires them to
//! the process: arguments, stdout / stderr, the exit code.
//!
//! Exit codes: 0 ok; 1 a definite negative (not found, version mismatch,
//! compacted, a failed verify); 2 usage or invalid input (clap's usage errors
//! too); 3 unavailable or indeterminate. `shell` exits 0 when its input ends.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use corekv_tools::ctl::args::{Cli, Command, SnapshotCommand, WalCommand, args_ask_for_json, usage_error_line};
use corekv_tools::ctl::render::{EXIT_OK, Failure, Rendered};
use corekv_tools::ctl::session::{Session, dump_refused, offline_failure};
use corekv_tools::ctl::shell;
use corekv_tools::offline;

/// Prints a result of a single command: a failure in human form to stderr,
/// everything else to stdout; the log to stderr. A closed stdout (say, `| head`)
/// is not an error worth a panic.
fn print(rendered: &Rendered, json: bool) {
    if let Some(log) = &rendered.log {
        eprintln!("corekv-ctl: {log}");
    }
    let text = rendered.lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let written = if rendered.failed && !json {
        io::stderr().lock().write_all(text.as_bytes())
    } else {
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())
    };
    // Nothing to tell the reader that went away.
    drop(written);
}

/// A usage error as one line (JSON when `--json` was among the arguments).
fn usage_error(error: &clap::Error, args: &[OsString]) -> ExitCode {
    let mut line = usage_error_line(error);
    if error.kind() == ErrorKind::InvalidSubcommand {
        line.push_str(" (corekv-ctl --help lists them)");
    }
    let json = args_ask_for_json(args);
    let rendered = Failure::invalid(line).render(json);
    print(&rendered, json);
    ExitCode::from(rendered.exit)
}

/// `wal dump` / `snapshot dump`: streamed to stdout (a dump can be long).
fn dump(path: &Path, wal: bool, json: bool) -> ExitCode {
    if json {
        let rendered = dump_refused(true).render(true);
        print(&rendered, true);
        return ExitCode::from(rendered.exit);
    }
    let mut out = io::stdout().lock();
    let done = if wal { offline::wal_dump(path, &mut out) } else { offline::snapshot_dump(path, &mut out) };
    let _ = out.flush();
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let rendered = offline_failure(e).render(false);
            print(&rendered, false);
            ExitCode::from(rendered.exit)
        }
    }
}

fn run_shell(session: &mut Session) -> ExitCode {
    let stdin = io::stdin();
    let done = if stdin.is_terminal() {
        shell::run_terminal(session)
    } else {
        shell::run_piped(session, &mut stdin.lock(), &mut io::stdout(), &mut io::stderr())
    };
    match done {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("corekv-ctl: shell: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => return usage_error(&e, &args),
    };
    let json = cli.global.json;
    let mut session = Session::new(&cli.global);
    match cli.command {
        Command::Shell => run_shell(&mut session),
        Command::Wal(WalCommand::Dump { path }) => dump(&path, true, json),
        Command::Snapshot(SnapshotCommand::Dump { path }) => dump(&path, false, json),
        command => {
            let rendered = session.run(command);
            print(&rendered, json);
            ExitCode::from(rendered.exit)
        }
    }
}
