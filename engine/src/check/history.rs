//! Recorded client histories: what a client asked ([`Call`]), what it was told
//! ([`Outcome`]) and when ([`Operation`]).
//!
//! Owns the history types and their validation. Pure data: no I/O, no clocks.
//!
//! Invariants checked by [`validate`] (a history read from a file is untrusted
//! input, so a bad one is an error value, never a panic):
//! - an operation never returns before it was invoked;
//! - an operation that never returned carries no definite outcome (only
//!   `Indeterminate` or `Unavailable`);
//! - every outcome is one the call can produce (a put never answers `NotFound`).
//!
//! Times are in whatever monotone unit the recorder used (nanoseconds in bench
//! histories, ticks in the simulator); the checker only compares them.

use std::fmt;

/// A client as the recorder names it. The checker does not require a client's
/// operations to be sequential; the id is carried for reports only.
pub type ClientId = u64;

/// A per-key version (DESIGN §6): strictly increasing per key, never 0 for a
/// written version. 0 means "absent" where an outcome reports a current version.
pub type Version = u64;

/// One request on the versioned register of one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    /// Read the newest version of `key`.
    Get {
        /// The key read.
        key: Vec<u8>,
    },
    /// Read the newest version of `key` that is ≤ `at_version`.
    GetAt {
        /// The key read.
        key: Vec<u8>,
        /// The newest version the answer may have.
        at_version: Version,
    },
    /// Write `value` under a new version.
    Put {
        /// The key written.
        key: Vec<u8>,
        /// The value written.
        value: Vec<u8>,
    },
    /// Write a tombstone under a new version, if the key is live.
    Delete {
        /// The key deleted.
        key: Vec<u8>,
    },
    /// Write `value` iff the key's current version is `expected_version`
    /// (0: only if the key is absent or deleted).
    Cas {
        /// The key written.
        key: Vec<u8>,
        /// The version the key must have; 0 = absent or deleted.
        expected_version: Version,
        /// The value written on success.
        value: Vec<u8>,
    },
}

impl Call {
    /// The key this call touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Call::Get { key }
            | Call::GetAt { key, .. }
            | Call::Put { key, .. }
            | Call::Delete { key }
            | Call::Cas { key, .. } => key,
        }
    }

    /// True for calls that may change the key (put, delete, cas).
    pub fn is_write(&self) -> bool {
        matches!(self, Call::Put { .. } | Call::Delete { .. } | Call::Cas { .. })
    }

    fn name(&self) -> &'static str {
        match self {
            Call::Get { .. } => "get",
            Call::GetAt { .. } => "get_at",
            Call::Put { .. } => "put",
            Call::Delete { .. } => "delete",
            Call::Cas { .. } => "cas",
        }
    }
}

/// What the client was told, in DESIGN §6's outcome words.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A read found `value` at `version`.
    Value {
        /// The value read.
        value: Vec<u8>,
        /// The version of that value.
        version: Version,
    },
    /// A read found nothing (absent, deleted, or no version ≤ V), or a delete
    /// found nothing to delete and wrote nothing.
    NotFound,
    /// A put, cas or delete took effect with this new version.
    Written {
        /// The version the write created.
        version: Version,
    },
    /// A cas did not take effect: the key's version was `current` (0 when
    /// absent or deleted).
    VersionMismatch {
        /// The key's version when the cas was applied.
        current: Version,
    },
    /// A read at a version older than the retained history.
    Compacted,
    /// Certainly not applied (no leader, busy, refused before proposal).
    Unavailable,
    /// The client never learned the outcome: a write may take effect at any
    /// point after its invocation, or never.
    Indeterminate,
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Value { .. } => "value",
            Outcome::NotFound => "not_found",
            Outcome::Written { .. } => "written",
            Outcome::VersionMismatch { .. } => "version_mismatch",
            Outcome::Compacted => "compacted",
            Outcome::Unavailable => "unavailable",
            Outcome::Indeterminate => "indeterminate",
        }
    }

    /// True when the client learned something definite (anything but
    /// `Unavailable` and `Indeterminate`).
    pub fn is_definite(&self) -> bool {
        !matches!(self, Outcome::Unavailable | Outcome::Indeterminate)
    }
}

/// One operation of a history: a call, its outcome and its real-time window.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    /// The client that issued the call.
    pub client: ClientId,
    /// When the call was sent.
    pub invoke_time: u64,
    /// When the answer arrived; `None` if it never did.
    pub return_time: Option<u64>,
    /// What was asked.
    pub call: Call,
    /// What was answered.
    pub outcome: Outcome,
}

impl Operation {
    /// True when the operation must be linearized inside its window: a definite
    /// answer that constrains the register. Unavailable operations, reads with
    /// no answer and `Compacted` reads constrain nothing; an indeterminate write
    /// is optional (see the module doc of `check`).
    pub fn constrains(&self) -> bool {
        match self.outcome {
            Outcome::Unavailable | Outcome::Compacted => false,
            Outcome::Indeterminate => self.call.is_write(),
            _ => true,
        }
    }
}

/// Why a history cannot be checked. `index` is the operation's position in the
/// slice given to the checker.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The operation returned before it was invoked.
    #[error("operation {index}: returned at {return_time} before its invocation at {invoke_time}")]
    ReturnBeforeInvoke {
        /// Position of the operation.
        index: usize,
        /// Its invoke time.
        invoke_time: u64,
        /// Its return time.
        return_time: u64,
    },
    /// The operation has no return time but a definite outcome.
    #[error("operation {index}: outcome {outcome} without a return time")]
    DefiniteOutcomeWithoutReturn {
        /// Position of the operation.
        index: usize,
        /// The outcome word.
        outcome: &'static str,
    },
    /// The call cannot produce this outcome.
    #[error("operation {index}: a {call} cannot answer {outcome}")]
    OutcomeDoesNotFitCall {
        /// Position of the operation.
        index: usize,
        /// The call word.
        call: &'static str,
        /// The outcome word.
        outcome: &'static str,
    },
    /// A single-key check was given operations on more than one key.
    #[error("operation {index}: on another key than operation 0")]
    MoreThanOneKey {
        /// Position of the first operation on another key.
        index: usize,
    },
}

/// Checks the invariants listed in the module doc.
pub fn validate(ops: &[Operation]) -> Result<(), HistoryError> {
    for (index, op) in ops.iter().enumerate() {
        validate_one(index, op)?;
    }
    Ok(())
}

fn validate_one(index: usize, op: &Operation) -> Result<(), HistoryError> {
    match op.return_time {
        Some(return_time) if return_time < op.invoke_time => {
            return Err(HistoryError::ReturnBeforeInvoke { index, invoke_time: op.invoke_time, return_time });
        }
        None if op.outcome.is_definite() => {
            return Err(HistoryError::DefiniteOutcomeWithoutReturn { index, outcome: op.outcome.name() });
        }
        _ => {}
    }
    let fits = matches!(
        (&op.call, &op.outcome),
        (_, Outcome::Unavailable | Outcome::Indeterminate)
            | (Call::Get { .. }, Outcome::Value { .. } | Outcome::NotFound)
            | (Call::GetAt { .. }, Outcome::Value { .. } | Outcome::NotFound | Outcome::Compacted)
            | (Call::Put { .. }, Outcome::Written { .. })
            | (Call::Delete { .. }, Outcome::Written { .. } | Outcome::NotFound)
            | (Call::Cas { .. }, Outcome::Written { .. } | Outcome::VersionMismatch { .. })
    );
    if fits {
        Ok(())
    } else {
        Err(HistoryError::OutcomeDoesNotFitCall { index, call: op.call.name(), outcome: op.outcome.name() })
    }
}

/// Shows bytes as text when printable ASCII, escaped otherwise.
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &byte in self.0 {
            write!(f, "{}", std::ascii::escape_default(byte))?;
        }
        f.write_str("\"")
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Get { key } => write!(f, "get {}", Bytes(key)),
            Call::GetAt { key, at_version } => write!(f, "get {} at {at_version}", Bytes(key)),
            Call::Put { key, value } => write!(f, "put {} = {}", Bytes(key), Bytes(value)),
            Call::Delete { key } => write!(f, "delete {}", Bytes(key)),
            Call::Cas { key, expected_version, value } => {
                write!(f, "cas {} if version {expected_version} = {}", Bytes(key), Bytes(value))
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Value { value, version } => write!(f, "{} @ {version}", Bytes(value)),
            Outcome::Written { version } => write!(f, "written @ {version}"),
            Outcome::VersionMismatch { current } => {
                write!(f, "version_mismatch (current {current})")
            }
            other => f.write_str(other.name()),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let returned = match self.return_time {
            Some(time) => time.to_string(),
            None => "never".to_owned(),
        };
        write!(f, "client {} [{} .. {returned}] {} -> {}", self.client, self.invoke_time, self.call, self.outcome)
    }
}
