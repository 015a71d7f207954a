//! How `corekv-ctl` prints a result: pure functions from a result to its JSON
//! line or human lines and its exit code. The JSON shapes are the issue's, field
//! for field and in that order (serde structs serialize in declaration order);
//! versions are u64 printed as exact integers.
//!
//! Exit codes: 0 ok; 1 a definite negative; 2 usage or invalid input; 3
//! unavailable or indeterminate.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use corekv_rpc::kv::Version;
use corekv_rpc::txn::{AbortReason, TxnId};
use serde::Serialize;

use corekv_rpc::client::{Got, KvError, ScanPage, VersionEntry};

/// Exit code of success.
pub const EXIT_OK: u8 = 0;
/// Exit code of a definite negative: not found, version mismatch, compacted, a
/// failed verify, no local cluster.
pub const EXIT_NEGATIVE: u8 = 1;
/// Exit code of a usage error or invalid input (clap's own usage errors too).
pub const EXIT_INVALID: u8 = 2;
/// Exit code of `unavailable` and `indeterminate`: the cluster did not give a
/// definite answer before the deadline.
pub const EXIT_UNKNOWN: u8 = 3;

/// A result made ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The result's lines: one JSON object, or one or more human lines.
    pub lines: Vec<String>,
    /// The result on one line: what `shell` prints (the JSON object, or the human
    /// lines condensed).
    pub line: String,
    /// A failure: a single command prints its human lines to stderr.
    pub failed: bool,
    /// A note for stderr: the reason behind `unavailable` / `indeterminate` in JSON
    /// mode, whose shapes carry no message.
    pub log: Option<String>,
    /// The process exit code this result asks for.
    pub exit: u8,
}

impl Rendered {
    /// A successful result: its JSON object, or its human lines and one-line form.
    pub fn ok(json: bool, value: &impl Serialize, human: Vec<String>, line: String) -> Rendered {
        if json {
            let text = to_json(value);
            Rendered { lines: vec![text.clone()], line: text, failed: false, log: None, exit: EXIT_OK }
        } else {
            Rendered { lines: human, line, failed: false, log: None, exit: EXIT_OK }
        }
    }

    /// A successful result of one human line.
    pub fn ok_line(json: bool, value: &impl Serialize, human: String) -> Rendered {
        Rendered::ok(json, value, vec![human.clone()], human)
    }
}

/// Serializes a result; our structs of plain fields cannot fail to.
pub fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("plain structs always serialize")
}

/// A command that did not succeed, in every form it is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The JSON `error` word (DESIGN §6's outcome words, plus `verify_failed`,
    /// `no_cluster`, `already_running`, `launch_failed` of the tools).
    pub word: &'static str,
    /// `version_mismatch`'s current version.
    pub version: Option<Version>,
    /// The JSON `message` (kept out of the shapes that have none).
    pub message: Option<String>,
    /// `aborted`'s reason (its word: `wounded`, `died`, `conflict`, `validation`, `timeout`).
    pub reason: Option<AbortReason>,
    /// The human line, without the `error: ` prefix.
    pub text: String,
    /// A note for stderr in JSON mode.
    pub log: Option<String>,
    /// The exit code.
    pub exit: u8,
}

impl Failure {
    /// Bad input: `{"ok":false,"error":"invalid","message":…}`, exit 2.
    pub fn invalid(message: impl Into<String>) -> Failure {
        let message = message.into();
        Failure::new("invalid", format!("invalid: {message}"), Some(message), EXIT_INVALID)
    }

    /// `unavailable` for a change handed to the meta group that was not seen
    /// through by the deadline: it may well be applied, and goes on (the
    /// client library's wording, "certainly not applied", would be wrong).
    /// Exit 3, the reason on stderr in JSON mode, like any `unavailable`.
    pub fn goes_on(reason: String) -> Failure {
        let text = format!("unavailable: {reason}");
        Failure { log: Some(text.clone()), ..Failure::new("unavailable", text, None, EXIT_UNKNOWN) }
    }

    /// Any failure with a message in JSON.
    pub fn new(word: &'static str, text: String, message: Option<String>, exit: u8) -> Failure {
        Failure { word, version: None, message, reason: None, text, log: None, exit }
    }

    /// Renders the failure as one line.
    pub fn render(&self, json: bool) -> Rendered {
        let line = if json {
            to_json(&FailureJson {
                ok: false,
                error: self.word,
                version: self.version,
                message: self.message.as_deref(),
                reason: self.reason.map(|r| r.word()),
            })
        } else {
            format!("error: {}", self.text)
        };
        let log = if json { self.log.clone() } else { None };
        Rendered { lines: vec![line.clone()], line, failed: true, log, exit: self.exit }
    }
}

impl From<KvError> for Failure {
    /// The human line is the client library's own wording, so corekv-ctl, the
    /// bench and the library say the same; the JSON carries no message for
    /// `unavailable` / `indeterminate` (the issue's shapes), so their reason is
    /// a log line on stderr.
    fn from(error: KvError) -> Failure {
        let word = error.word();
        let text = error.to_string();
        match error {
            KvError::NotFound | KvError::Compacted => Failure::new(word, text, None, EXIT_NEGATIVE),
            KvError::VersionMismatch { current } => {
                Failure { version: Some(current), ..Failure::new(word, text, None, EXIT_NEGATIVE) }
            }
            KvError::Unavailable { .. } | KvError::Indeterminate { .. } => {
                Failure { log: Some(text.clone()), ..Failure::new(word, text, None, EXIT_UNKNOWN) }
            }
            KvError::Invalid { message } => Failure::invalid(message),
            KvError::Aborted { reason } => {
                Failure { reason: Some(reason), ..Failure::new(word, text, None, EXIT_NEGATIVE) }
            }
        }
    }
}

#[derive(Serialize)]
struct FailureJson<'a> {
    ok: bool,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<Version>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// Bytes as a JSON string: the text when they are UTF-8, else base64 (for the
/// `*_b64` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonBytes {
    /// UTF-8 text.
    Text(String),
    /// Base64 of bytes that are not UTF-8.
    Base64(String),
}

impl JsonBytes {
    /// Classifies `bytes`.
    pub fn of(bytes: &[u8]) -> JsonBytes {
        match std::str::from_utf8(bytes) {
            Ok(text) => JsonBytes::Text(text.to_string()),
            Err(_) => JsonBytes::Base64(BASE64.encode(bytes)),
        }
    }

    /// (text, base64): exactly one is `Some`.
    pub(crate) fn split(self) -> (Option<String>, Option<String>) {
        match self {
            JsonBytes::Text(t) => (Some(t), None),
            JsonBytes::Base64(b) => (None, Some(b)),
        }
    }
}

/// Bytes for a person: the text when it is UTF-8 without control characters
/// (which would break the one-line answers), else `b64:` and base64.
pub fn human_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_string(),
        _ => format!("b64:{}", BASE64.encode(bytes)),
    }
}

#[derive(Serialize)]
struct WrittenJson {
    ok: bool,
    version: Version,
}

/// put / delete / cas: `{"ok":true,"version":N}`; human: the version.
pub fn render_written(version: Version, json: bool) -> Rendered {
    Rendered::ok_line(json, &WrittenJson { ok: true, version }, version.to_string())
}

#[derive(Serialize)]
struct BegunJson {
    ok: bool,
    txn: String,
    start_version: Version,
}

/// begin: `{"ok":true,"txn":"<id>","start_version":N}` (a read-only
/// transaction's snapshot version); human: the id and the version.
pub fn render_begun(id: TxnId, start_version: Version, read_only: bool, json: bool) -> Rendered {
    let human = if read_only {
        format!("read-only transaction {id} reads at version {start_version}")
    } else {
        format!("transaction {id} began at version {start_version}")
    };
    Rendered::ok_line(json, &BegunJson { ok: true, txn: id.to_string(), start_version }, human)
}

#[derive(Serialize)]
struct DoneJson {
    ok: bool,
}

/// A put or delete inside a transaction (no version until the commit), and
/// abort: `{"ok":true}`; human: `human`.
pub fn render_done(human: &str, json: bool) -> Rendered {
    Rendered::ok_line(json, &DoneJson { ok: true }, human.to_string())
}

/// commit: `{"ok":true,"version":N}`, the version of every key written (a
/// read-only transaction's snapshot version); human: `committed at version N`.
pub fn render_committed(version: Version, json: bool) -> Rendered {
    Rendered::ok_line(json, &WrittenJson { ok: true, version }, format!("committed at version {version}"))
}

#[derive(Serialize)]
struct GotJson {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
    version: Version,
}

/// get: `{"ok":true,"value":"…","version":N}` (`value_b64` for bytes that are
/// not UTF-8); human: the value, with `verbose` its version after it.
pub fn render_got(got: &Got, verbose: bool, json: bool) -> Rendered {
    let (value, value_b64) = JsonBytes::of(&got.value).split();
    let human = if verbose {
        format!("{} (version {})", human_bytes(&got.value), got.version)
    } else {
        human_bytes(&got.value)
    };
    Rendered::ok_line(json, &GotJson { ok: true, value, value_b64, version: got.version }, human)
}

#[derive(Serialize)]
struct TxnJson {
    ok: bool,
    version: Version,
    start_version: Version,
    attempts: u32,
    reads: Vec<TxnReadJson>,
}

#[derive(Serialize)]
struct TxnReadJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<Version>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

/// txn: `{"ok":true,"version":N,"start_version":N,"attempts":K,"reads":[…]}`, one
/// get-shaped object with `"key"` per get (`{"key":"a","ok":false,
/// "error":"not_found"}` for a missing key); human: one line for the commit and
/// one per get.
pub fn render_txn(done: &crate::ctl::session::TxnDone, json: bool) -> Rendered {
    let mut reads = Vec::new();
    let mut human = vec![format!(
        "committed at version {} (start version {}, {} attempt{})",
        done.version,
        done.start_version,
        done.attempts,
        if done.attempts == 1 { "" } else { "s" }
    )];
    for (key, got) in &done.reads {
        let (k, k_b64) = JsonBytes::of(key).split();
        match got {
            Ok(got) => {
                let (value, value_b64) = JsonBytes::of(&got.value).split();
                human.push(format!("{} = {} (version {})", human_bytes(key), human_bytes(&got.value), got.version));
                reads.push(TxnReadJson {
                    key: k,
                    key_b64: k_b64,
                    ok: true,
                    value,
                    value_b64,
                    version: Some(got.version),
                    error: None,
                });
            }
            Err(e) => {
                human.push(format!("{}: {e}", human_bytes(key)));
                reads.push(TxnReadJson {
                    key: k,
                    key_b64: k_b64,
                    ok: false,
                    value: None,
                    value_b64: None,
                    version: None,
                    error: Some(e.word()),
                });
            }
        }
    }
    let line = human.join("; ");
    let value =
        TxnJson { ok: true, version: done.version, start_version: done.start_version, attempts: done.attempts, reads };
    Rendered::ok(json, &value, human, line)
}

#[derive(Serialize)]
struct VersionsJson {
    ok: bool,
    versions: Vec<VersionJson>,
}

#[derive(Serialize)]
struct VersionJson {
    version: Version,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

/// versions, newest first: `{"ok":true,"versions":[{"version":N,"value":"…"},
/// {"version":N,"deleted":true}]}`; human: one line per version.
pub fn render_versions(versions: &[VersionEntry], json: bool) -> Rendered {
    let items = versions.iter().map(|v| {
        let (value, value_b64) = if v.deleted { (None, None) } else { JsonBytes::of(&v.value).split() };
        VersionJson { version: v.version, value, value_b64, deleted: v.deleted }
    });
    let human: Vec<String> = versions
        .iter()
        .map(|v| {
            if v.deleted {
                format!("{} (deleted)", v.version)
            } else {
                format!("{} {}", v.version, human_bytes(&v.value))
            }
        })
        .collect();
    let line = if human.is_empty() { "(no versions)".to_string() } else { human.join(", ") };
    let lines = if human.is_empty() { vec![line.clone()] } else { human };
    Rendered::ok(json, &VersionsJson { ok: true, versions: items.collect() }, lines, line)
}

#[derive(Serialize)]
struct ScanJson {
    ok: bool,
    items: Vec<ScanItemJson>,
    more: bool,
}

#[derive(Serialize)]
struct ScanItemJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
    version: Version,
}

/// scan: `{"ok":true,"items":[{"key":"…","value":"…","version":N}],"more":B}`
/// (`key_b64` / `value_b64` for bytes that are not UTF-8); human: one line per
/// key, `(more)` at the end when the limit cut the range short.
pub fn render_scan(page: &ScanPage, json: bool) -> Rendered {
    let items = page.items.iter().map(|item| {
        let (key, key_b64) = JsonBytes::of(&item.key).split();
        let (value, value_b64) = JsonBytes::of(&item.value).split();
        ScanItemJson { key, key_b64, value, value_b64, version: item.version }
    });
    let mut human: Vec<String> = page
        .items
        .iter()
        .map(|i| format!("{} = {} (version {})", human_bytes(&i.key), human_bytes(&i.value), i.version))
        .collect();
    if human.is_empty() {
        human.push("(no keys)".to_string());
    }
    if page.more {
        human.push("(more)".to_string());
    }
    let line = human.join("; ");
    Rendered::ok(json, &ScanJson { ok: true, items: items.collect(), more: page.more }, human, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    use corekv_rpc::kv::ScanItem;

    fn got(value: &[u8], version: Version) -> Got {
        Got { version, value: value.to_vec() }
    }

    #[test]
    fn writes_print_their_version_exactly() {
        let r = render_written(18_446_744_073_709_551_615, true);
        assert_eq!(r.lines, [r#"{"ok":true,"version":18446744073709551615}"#]);
        assert_eq!(r.exit, EXIT_OK);
        assert!(!r.failed);
        assert_eq!(render_written(7, false).lines, ["7"]);
    }

    #[test]
    fn transaction_lines_have_the_issue_shapes() {
        let id = TxnId { client: corekv_rpc::kv::ClientId::from_u128(0xab), attempt: 3 };
        let begun = render_begun(id, 42, false, true);
        assert_eq!(begun.line, r#"{"ok":true,"txn":"000000000000000000000000000000ab-3","start_version":42}"#);
        assert_eq!(
            render_begun(id, 42, false, false).line,
            "transaction 000000000000000000000000000000ab-3 began at version 42"
        );
        assert_eq!(
            render_begun(id, 7, true, false).line,
            "read-only transaction 000000000000000000000000000000ab-3 reads at version 7"
        );
        assert_eq!(
            (render_done("ok", true).line.as_str(), render_done("ok", false).line.as_str()),
            (r#"{"ok":true}"#, "ok")
        );
        assert_eq!(render_committed(9, true).line, r#"{"ok":true,"version":9}"#);
        assert_eq!(render_committed(9, false).line, "committed at version 9");
        let aborted = Failure::from(KvError::Aborted { reason: AbortReason::Wounded }).render(true);
        assert_eq!(
            (aborted.line.as_str(), aborted.exit),
            (r#"{"ok":false,"error":"aborted","reason":"wounded"}"#, EXIT_NEGATIVE)
        );
    }

    #[test]
    fn get_prints_value_or_value_b64() {
        let r = render_got(&got(b"hello", 42), false, true);
        assert_eq!(r.line, r#"{"ok":true,"value":"hello","version":42}"#);
        let r = render_got(&got(&[0xff, 0xfe], 9_007_199_254_740_993), false, true);
        assert_eq!(r.line, r#"{"ok":true,"value_b64":"//4=","version":9007199254740993}"#);
        assert_eq!(render_got(&got(b"hello", 42), false, false).line, "hello");
        assert_eq!(render_got(&got(b"hello", 42), true, false).line, "hello (version 42)");
        assert_eq!(render_got(&got(&[0xff], 1), false, false).line, "b64:/w==");
        assert_eq!(render_got(&got(b"two\nlines", 1), false, false).line, "b64:dHdvCmxpbmVz");
        let r = render_got(&got(b"say \"hi\"\n", 1), false, true);
        assert_eq!(r.line, r#"{"ok":true,"value":"say \"hi\"\n","version":1}"#);
    }

    #[test]
    fn failures_have_the_issue_shapes_and_exit_codes() {
        let cases = [
            (KvError::NotFound, r#"{"ok":false,"error":"not_found"}"#, "error: not found", EXIT_NEGATIVE),
            (
                KvError::VersionMismatch { current: 0 },
                r#"{"ok":false,"error":"version_mismatch","version":0}"#,
                "error: version mismatch: the key is absent",
                EXIT_NEGATIVE,
            ),
            (
                KvError::Compacted,
                r#"{"ok":false,"error":"compacted"}"#,
                "error: compacted: that version is older than the retained history",
                EXIT_NEGATIVE,
            ),
            (
                KvError::Unavailable { reason: "no node of 127.0.0.1:1 answered: refused".into() },
                r#"{"ok":false,"error":"unavailable"}"#,
                "error: unavailable (certainly not applied): no node of 127.0.0.1:1 answered: refused",
                EXIT_UNKNOWN,
            ),
            (
                KvError::Indeterminate { reason: "deadline".into() },
                r#"{"ok":false,"error":"indeterminate"}"#,
                "error: indeterminate (may or may not have been applied): deadline",
                EXIT_UNKNOWN,
            ),
            (
                KvError::Invalid { message: "key is empty".into() },
                r#"{"ok":false,"error":"invalid","message":"key is empty"}"#,
                "error: invalid: key is empty",
                EXIT_INVALID,
            ),
        ];
        for (error, json, human, exit) in cases {
            let failure = Failure::from(error);
            let j = failure.render(true);
            assert_eq!(
                (j.lines.as_slice(), j.line.as_str(), j.exit, j.failed),
                ([json.to_string()].as_slice(), json, exit, true)
            );
            let h = failure.render(false);
            assert_eq!((h.line.as_str(), h.exit, h.log.clone()), (human, exit, None));
        }
        let unavailable = Failure::from(KvError::Unavailable { reason: "r".into() }).render(true);
        assert_eq!(
            unavailable.log.as_deref(),
            Some("unavailable (certainly not applied): r"),
            "the reason goes to stderr"
        );
        let mismatch = Failure::from(KvError::VersionMismatch { current: 7 }).render(false);
        assert_eq!(mismatch.line, "error: version mismatch: current version 7");
    }

    #[test]
    fn versions_list_newest_first_with_deletes_marked() {
        let versions = [
            VersionEntry { version: 30, deleted: false, value: b"new".to_vec() },
            VersionEntry { version: 20, deleted: true, value: Vec::new() },
            VersionEntry { version: 10, deleted: false, value: vec![0xc3] },
        ];
        let r = render_versions(&versions, true);
        assert_eq!(
            r.line,
            r#"{"ok":true,"versions":[{"version":30,"value":"new"},{"version":20,"deleted":true},{"version":10,"value_b64":"ww=="}]}"#
        );
        let h = render_versions(&versions, false);
        assert_eq!(h.lines, ["30 new", "20 (deleted)", "10 b64:ww=="]);
        assert_eq!(h.line, "30 new, 20 (deleted), 10 b64:ww==");
        assert_eq!(render_versions(&[], true).line, r#"{"ok":true,"versions":[]}"#);
        assert_eq!(render_versions(&[], false).lines, ["(no versions)"]);
    }

    #[test]
    fn scans_list_items_and_more() {
        let page = ScanPage {
            items: vec![
                ScanItem { key: b"a".to_vec(), version: 5, value: b"1".to_vec() },
                ScanItem { key: vec![0xff], version: 6, value: vec![0xfe] },
                ScanItem { key: b"c".to_vec(), version: 7, value: Vec::new() },
            ],
            more: true,
        };
        assert_eq!(
            render_scan(&page, true).line,
            r#"{"ok":true,"items":[{"key":"a","value":"1","version":5},{"key_b64":"/w==","value_b64":"/g==","version":6},{"key":"c","value":"","version":7}],"more":true}"#
        );
        let h = render_scan(&page, false);
        assert_eq!(h.lines, ["a = 1 (version 5)", "b64:/w== = b64:/g== (version 6)", "c =  (version 7)", "(more)"]);
        assert!(!h.line.contains('\n'));
        let empty = ScanPage { items: Vec::new(), more: false };
        assert_eq!(render_scan(&empty, true).line, r#"{"ok":true,"items":[],"more":false}"#);
        assert_eq!(render_scan(&empty, false).line, "(no keys)");
    }

    #[test]
    fn human_bytes_escape_what_would_break_a_line() {
        assert_eq!(human_bytes(b"plain text"), "plain text");
        assert_eq!(human_bytes("ünïcödé".as_bytes()), "ünïcödé");
        assert_eq!(human_bytes(b"tab\there"), "b64:dGFiCWhlcmU=");
        assert_eq!(human_bytes(b""), "");
    }
}
