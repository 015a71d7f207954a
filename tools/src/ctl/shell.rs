//! `corekv-ctl shell`: commands from standard input, one per line, words split
//! as a POSIX shell does (so quotes work), one result line per command on
//! stdout, in order, flushed at once. A bad line answers `invalid` and the shell
//! goes on; logs go to stderr; blank lines and `#` comments answer nothing;
//! `exit`, `quit` or the end of input end it (exit code 0). A prompt and line
//! editing only when stdin is a terminal.
//!
//! The session's open transaction (`begin` … `commit` or `abort`) does not
//! outlive the shell: however it ends, the transaction is aborted and its locks
//! released, with a note on stderr.

use std::io::{self, BufRead, Read, Write};

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use super::args::{LineCli, usage_error_line};
use super::render::{Failure, Rendered};
use super::session::Session;

/// Longest line read, in bytes: a key (4 KiB) and a value (1 MiB by default)
/// with quoting fit with room to spare; a longer line answers `invalid`.
pub const LINE_BYTES_MAX: usize = 4 << 20;
/// The prompt shown at a terminal.
pub const PROMPT: &str = "corekv> ";

/// What one line asks of the shell.
#[derive(Debug)]
pub enum LineAction {
    /// Nothing: a blank line or a comment.
    Skip,
    /// End the shell.
    Exit,
    /// Print this answer.
    Answer(Rendered),
}

/// Runs one line in the session.
pub fn answer_line(session: &mut Session, line: &str) -> LineAction {
    let json = session.json();
    let words = match shell_words::split(line) {
        Ok(words) => words,
        Err(e) => {
            return LineAction::Answer(Failure::invalid(format!("cannot split the line into words: {e}")).render(json));
        }
    };
    match words.first().map(String::as_str) {
        None => LineAction::Skip,
        Some("exit" | "quit") if words.len() == 1 => LineAction::Exit,
        Some("help") => LineAction::Answer(help(&words[1..], json)),
        Some(_) => match LineCli::try_parse_from(&words) {
            Ok(parsed) => LineAction::Answer(session.run_line(parsed.command)),
            Err(e) if e.kind() == ErrorKind::DisplayHelp => LineAction::Answer(help(&words[..1], json)),
            Err(e) => LineAction::Answer(Failure::invalid(usage_error_line(&e)).render(json)),
        },
    }
}

#[derive(serde::Serialize)]
struct HelpJson {
    ok: bool,
    help: String,
}

/// One line of help: the commands, or one command's usage and options.
pub fn help(topic: &[String], json: bool) -> Rendered {
    let root = LineCli::command();
    let text = match topic.first() {
        None => {
            let names: Vec<&str> = root.get_subcommands().map(|c| c.get_name()).filter(|n| *n != "help").collect();
            format!("commands: {}, exit; `help COMMAND` shows one", names.join(", "))
        }
        Some(name) => match root.find_subcommand(name) {
            Some(command) => command_help(command),
            None => return Failure::invalid(format!("unknown command {name:?}")).render(json),
        },
    };
    Rendered::ok_line(json, &HelpJson { ok: true, help: text.clone() }, text)
}

fn command_help(command: &clap::Command) -> String {
    let mut command = command.clone();
    let usage = command.render_usage().to_string();
    let usage = usage.trim().trim_start_matches("Usage:").trim().trim_start_matches("corekv-ctl ");
    let about = command.get_about().map(|a| a.to_string()).unwrap_or_default();
    let mut text = format!("{usage}: {about}");
    let options: Vec<String> = command
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            (long != "help").then(|| format!("--{long}: {}", a.get_help().map(|h| h.to_string()).unwrap_or_default()))
        })
        .collect();
    if !options.is_empty() {
        text.push_str(&format!(" (options: {})", options.join("; ")));
    }
    let subcommands: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).filter(|n| *n != "help").collect();
    if !subcommands.is_empty() {
        text.push_str(&format!(" (subcommands: {})", subcommands.join(", ")));
    }
    text
}

/// Writes an answer: its one line to `out` (flushed at once), its log to `err`.
fn write_answer(answer: &Rendered, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<()> {
    if let Some(log) = &answer.log {
        // Logs are best effort: a closed stderr must not stop the answers.
        let _ = writeln!(err, "{log}");
    }
    writeln!(out, "{}", answer.line)?;
    out.flush()
}

/// Ends the session: aborts its open transaction, noted on `err`.
fn end_session(session: &mut Session, err: &mut dyn Write) {
    if let Some(id) = session.end() {
        // Logs are best effort, as in write_answer.
        let _ = writeln!(err, "corekv-ctl: transaction {id} was still open when the shell ended: aborted");
    }
}

/// Runs the shell over `input` (not a terminal): reads until the end of input or
/// `exit`, then aborts the open transaction. Fails only when writing an answer
/// fails (say, the reader went away).
pub fn run_piped(
    session: &mut Session,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    let done = answer_lines(session, input, out, err);
    end_session(session, err);
    done
}

fn answer_lines(
    session: &mut Session,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        let read = (&mut *input).take(LINE_BYTES_MAX as u64 + 1).read_until(b'\n', &mut bytes)?;
        if read == 0 {
            return Ok(());
        }
        let action = if bytes.len() > LINE_BYTES_MAX && !bytes.ends_with(b"\n") {
            skip_rest_of_line(input)?;
            LineAction::Answer(
                Failure::invalid(format!("line longer than {LINE_BYTES_MAX} bytes")).render(session.json()),
            )
        } else {
            match std::str::from_utf8(&bytes) {
                Ok(line) => answer_line(session, line.trim_end_matches(['\n', '\r'])),
                Err(_) => LineAction::Answer(Failure::invalid("the line is not UTF-8").render(session.json())),
            }
        };
        match action {
            LineAction::Skip => {}
            LineAction::Exit => return Ok(()),
            LineAction::Answer(answer) => write_answer(&answer, out, err)?,
        }
    }
}

/// Drops input up to and including the next newline.
fn skip_rest_of_line(input: &mut dyn BufRead) -> io::Result<()> {
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let len = buffer.len();
                input.consume(len);
            }
        }
    }
}

/// Runs the shell at a terminal: a prompt, line editing and history (in memory).
/// Ctrl-C clears the line; Ctrl-D, `exit` or `quit` end the shell, and abort the
/// open transaction.
pub fn run_terminal(session: &mut Session) -> io::Result<()> {
    let done = edit_lines(session);
    end_session(session, &mut io::stderr());
    done
}

fn edit_lines(session: &mut Session) -> io::Result<()> {
    let mut editor = rustyline::DefaultEditor::new().map_err(io::Error::other)?;
    let mut out = io::stdout();
    let mut err = io::stderr();
    loop {
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(io::Error::other(e)),
        };
        if !line.trim().is_empty() {
            // History is a convenience: a failure to record a line is not worth stopping for.
            let _ = editor.add_history_entry(line.as_str());
        }
        match answer_line(session, &line) {
            LineAction::Skip => {}
            LineAction::Exit => return Ok(()),
            LineAction::Answer(answer) => write_answer(&answer, &mut out, &mut err)?,
        }
    }
}

/// The JSON of a help line, for tests of the shapes.
#[cfg(test)]
fn help_json(text: &str) -> String {
    super::render::to_json(&HelpJson { ok: true, help: text.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::memory::{probed_session, session};

    fn run(json: bool, input: &str) -> (String, String) {
        let (mut s, _) = session(json);
        let mut out = Vec::new();
        let mut err = Vec::new();
        run_piped(&mut s, &mut input.as_bytes(), &mut out, &mut err).unwrap();
        (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn one_answer_per_command_in_order_and_a_bad_line_goes_on() {
        let input = "put greeting 'hello world'\n\nget greeting\n# a comment\nxyzzy now\nget \"greeting\" -v\nget missing\ncas greeting 0 x\n";
        let (out, _) = run(true, input);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"ok":true,"version":1}"#,
                r#"{"ok":true,"value":"hello world","version":1}"#,
                r#"{"ok":false,"error":"invalid","message":"unknown command \"xyzzy\""}"#,
                r#"{"ok":true,"value":"hello world","version":1}"#,
                r#"{"ok":false,"error":"not_found"}"#,
                r#"{"ok":false,"error":"version_mismatch","version":1}"#,
            ]
        );
        let (human, _) = run(false, input);
        assert_eq!(
            human.lines().collect::<Vec<_>>(),
            [
                "1",
                "hello world",
                "error: invalid: unknown command \"xyzzy\"",
                "hello world (version 1)",
                "error: not found",
                "error: version mismatch: current version 1",
            ]
        );
    }

    #[test]
    fn quotes_escapes_and_unbalanced_quotes() {
        let (out, _) =
            run(true, "put 'a key' \"it's \\\"quoted\\\"\"\nscan a b\nget 'a key\nput x\\ y z\nscan '' ''\n");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], r#"{"ok":true,"version":1}"#);
        assert_eq!(
            lines[1],
            r#"{"ok":true,"items":[{"key":"a key","value":"it's \"quoted\"","version":1}],"more":false}"#
        );
        assert!(
            lines[2].starts_with(r#"{"ok":false,"error":"invalid","message":"cannot split the line into words"#),
            "{}",
            lines[2]
        );
        assert_eq!(lines[3], r#"{"ok":true,"version":2}"#);
        assert_eq!(
            lines[4],
            r#"{"ok":true,"items":[{"key":"a key","value":"it's \"quoted\"","version":1},{"key":"x y","value":"z","version":2}],"more":false}"#
        );
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn exit_and_quit_end_the_shell_and_so_does_the_end_of_input() {
        let (out, _) = run(true, "put k v\nexit\nput k w\n");
        assert_eq!(out.lines().count(), 1);
        let (out, _) = run(true, "put k v\nquit\n");
        assert_eq!(out.lines().count(), 1);
        let (out, _) = run(true, "put k v");
        assert_eq!(out.lines().count(), 1, "a last line without a newline still runs");
        let (out, _) = run(true, "");
        assert_eq!(out, "");
    }

    #[test]
    fn global_options_are_refused_per_line_and_nested_shells_too() {
        let (out, _) = run(true, "get k --json\nshell\n");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].contains(r#""error":"invalid""#) && lines[0].contains("--json"), "{}", lines[0]);
        assert_eq!(lines[1], r#"{"ok":false,"error":"invalid","message":"`shell` cannot run inside the shell"}"#);
    }

    #[test]
    fn non_utf8_and_overlong_lines_are_invalid_and_the_shell_goes_on() {
        let (mut s, _) = session(true);
        let mut input = b"put k v\nget \xff\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', LINE_BYTES_MAX + 10));
        input.extend(b"\nget k\n");
        let mut out = Vec::new();
        run_piped(&mut s, &mut input.as_slice(), &mut out, &mut Vec::new()).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"ok":true,"version":1}"#,
                r#"{"ok":false,"error":"invalid","message":"the line is not UTF-8"}"#,
                r#"{"ok":false,"error":"invalid","message":"line longer than 4194304 bytes"}"#,
                r#"{"ok":true,"value":"v","version":1}"#,
            ]
        );
    }

    #[test]
    fn the_end_of_input_aborts_the_open_transaction() {
        let (mut s, probe) = probed_session(true);
        let mut err = Vec::new();
        run_piped(&mut s, &mut "begin\nput x 1\nget x\n".as_bytes(), &mut Vec::new(), &mut err).unwrap();
        assert_eq!(probe.aborts.get(), 1, "its locks are released");
        assert_eq!(s.open_txn(), None);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "corekv-ctl: transaction 00000000000000000000000000000001-1 was still open when the shell ended: aborted\n"
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run_piped(&mut s, &mut "get x\nbegin\nexit\n".as_bytes(), &mut out, &mut err).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with(r#"{"ok":false,"error":"not_found"}"#), "nothing was written: {out}");
        assert_eq!(probe.aborts.get(), 2, "`exit` ends it too");
    }

    #[test]
    fn a_transaction_for_people() {
        let (out, _) = run(false, "begin\nput x 1\nget x -v\ndelete x\ncommit\nbegin --read-only\nabort\n");
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "transaction 00000000000000000000000000000001-1 began at version 1",
                "ok",
                "1 (version 0)",
                "ok",
                "committed at version 1",
                "read-only transaction 00000000000000000000000000000001-2 reads at version 1",
                "aborted",
            ]
        );
    }

    #[test]
    fn help_is_one_line() {
        let (out, _) = run(false, "help\nhelp get\nget --help\nhelp nope\n");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines[0].starts_with(
                "commands: put, get, delete, cas, versions, scan, status, shard, node, rebalance, shell, wal"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with("get [OPTIONS] <KEY>: Print KEY's newest value"), "{}", lines[1]);
        assert!(lines[1].contains("--at: Read the newest version at or below this one"), "{}", lines[1]);
        assert_eq!(lines[2], lines[1]);
        assert_eq!(lines[3], "error: invalid: unknown command \"nope\"");
        let (json, _) = run(true, "help\n");
        let first = json.lines().next().unwrap();
        assert!(first.starts_with(r#"{"ok":true,"help":"commands: "#), "{first}");
        assert_eq!(help_json("x"), r#"{"ok":true,"help":"x"}"#);
    }
}
