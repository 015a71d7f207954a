//! The data dir's layout and identity (DESIGN §5): `DATA/cluster.id` says which
//! cluster, node and core count the dir belongs to; `DATA/core-<i>/wal` and
//! `DATA/core-<i>/snap` hold each core's WAL segments and shard snapshots.
//!
//! The identity file is written once, before anything else in the dir (to a
//! temp name, fsynced, renamed, the dir fsynced), so a dir with data always says
//! whose data it is; a restart with another cluster id, node id or core count is
//! refused instead of mixing two clusters' logs.
//!
//! ```text
//! cluster_id=0x1f2e3d4c5b6a7988
//! node_id=2
//! cores=2
//! ```

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use corekv_rpc::kv::NodeId;
use corekv_rpc::map::CoreIndex;

use super::{ConfigError, ServerConfig};

/// The identity file's name inside the data dir.
pub const CLUSTER_ID_FILE: &str = "cluster.id";
/// The name the identity file is written under before its rename.
const CLUSTER_ID_TEMP_FILE: &str = "cluster.id.tmp";
/// Largest identity file read: three short lines.
const CLUSTER_ID_FILE_BYTES_MAX: u64 = 4096;

/// Whose data a data dir holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataDirIdentity {
    /// The cluster id.
    pub cluster_id: u64,
    /// The node id.
    pub node_id: NodeId,
    /// The node's core count (one WAL per core).
    pub cores: u16,
}

impl fmt::Display for DataDirIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {:#018x} node {} with {} cores", self.cluster_id, self.node_id, self.cores)
    }
}

impl DataDirIdentity {
    /// The identity file's text.
    pub fn to_file_text(&self) -> String {
        format!("cluster_id={:#018x}\nnode_id={}\ncores={}\n", self.cluster_id, self.node_id, self.cores)
    }

    /// Parses an identity file's text, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<DataDirIdentity, String> {
        let mut lines = text.lines();
        let mut field = |key: &str| -> Result<String, String> {
            let line = lines.next().ok_or_else(|| format!("no `{key}=` line"))?;
            let value = line.strip_prefix(key).and_then(|rest| rest.strip_prefix('='));
            value.map(str::to_string).ok_or_else(|| format!("expected `{key}=…`, found `{}`", line.escape_debug()))
        };
        let cluster_id = field("cluster_id")?;
        let node_id = field("node_id")?;
        let cores = field("cores")?;
        if let Some(extra) = lines.next() {
            return Err(format!("unexpected line `{}`", extra.escape_debug()));
        }
        let cluster_id = cluster_id
            .strip_prefix("0x")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .ok_or_else(|| format!("cluster_id `{cluster_id}` is not a hex number 0x…"))?;
        let node_id = node_id.parse().map_err(|_| format!("node_id `{node_id}` is not a number"))?;
        let cores = cores.parse().map_err(|_| format!("cores `{cores}` is not a number"))?;
        Ok(DataDirIdentity { cluster_id, node_id, cores })
    }
}

/// Whether this start created the data dir's identity or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirState {
    /// First start: the identity file was just written.
    Fresh,
    /// A restart: the identity file was there and matches.
    Existing,
}

/// The directory of core `core` inside `data_dir` (its `wal/` and `snap/` are below).
pub fn core_dir(data_dir: &Path, core: CoreIndex) -> PathBuf {
    data_dir.join(format!("core-{core}"))
}

/// Makes the data dir ready for this configuration: creates it if absent,
/// writes or checks its identity file, and creates every core's `wal/` and
/// `snap/` dirs.
pub fn prepare_data_dir(config: &ServerConfig) -> Result<DataDirState, ConfigError> {
    let dir = &config.data_dir;
    let expected = config.data_dir_identity();
    fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    let id_path = dir.join(CLUSTER_ID_FILE);
    let state = match read_identity(&id_path)? {
        Some(found) if found == expected => DataDirState::Existing,
        Some(found) => return Err(ConfigError::ForeignDataDir { path: dir.clone(), found, expected }),
        None => {
            refuse_data_without_identity(dir)?;
            write_identity(dir, &expected)?;
            DataDirState::Fresh
        }
    };
    for core in 0..config.cores {
        let core_path = core_dir(dir, core);
        for sub in ["wal", "snap"] {
            let path = core_path.join(sub);
            fs::create_dir_all(&path).map_err(io_error("create", &path))?;
        }
        sync_dir(&core_path)?;
    }
    sync_dir(dir)?;
    Ok(state)
}

/// A dir without an identity file must hold no WAL segments or snapshots: they
/// would be of an unknown cluster (the file was lost or deleted), and claiming
/// them for this one could mix two clusters' logs.
fn refuse_data_without_identity(dir: &Path) -> Result<(), ConfigError> {
    let entries = fs::read_dir(dir).map_err(io_error("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error("list", dir))?;
        if !entry.file_name().to_string_lossy().starts_with("core-") {
            continue;
        }
        for sub in ["wal", "snap"] {
            let path = entry.path().join(sub);
            let has_files = match fs::read_dir(&path) {
                Ok(mut files) => files.next().is_some(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(io_error("list", &path)(e)),
            };
            if has_files {
                return Err(ConfigError::DataWithoutIdentity { path: path.clone() });
            }
        }
    }
    Ok(())
}

/// The identity of data dir `dir`, `None` when it has none yet (a first start).
pub fn read_data_dir_identity(dir: &Path) -> Result<Option<DataDirIdentity>, ConfigError> {
    read_identity(&dir.join(CLUSTER_ID_FILE))
}

/// The identity in `path`, `None` when there is no such file.
fn read_identity(path: &Path) -> Result<Option<DataDirIdentity>, ConfigError> {
    let garbled = |reason: String| ConfigError::GarbledIdentity { path: path.to_path_buf(), reason };
    let bytes = match fs::File::open(path) {
        Ok(file) => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(file, CLUSTER_ID_FILE_BYTES_MAX + 1), &mut bytes)
                .map_err(io_error("read", path))?;
            bytes
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open", path)(e)),
    };
    if bytes.len() as u64 > CLUSTER_ID_FILE_BYTES_MAX {
        return Err(garbled(format!("longer than {CLUSTER_ID_FILE_BYTES_MAX} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|_| garbled("not UTF-8 text".into()))?;
    DataDirIdentity::parse(&text).map(Some).map_err(garbled)
}

/// Writes the identity file atomically and durably: temp name, fsync, rename,
/// fsync of the dir.
fn write_identity(dir: &Path, identity: &DataDirIdentity) -> Result<(), ConfigError> {
    let temp = dir.join(CLUSTER_ID_TEMP_FILE);
    let mut file = fs::File::create(&temp).map_err(io_error("create", &temp))?;
    file.write_all(identity.to_file_text().as_bytes()).map_err(io_error("write", &temp))?;
    file.sync_all().map_err(io_error("fsync", &temp))?;
    drop(file);
    let path = dir.join(CLUSTER_ID_FILE);
    fs::rename(&temp, &path).map_err(io_error("rename", &temp))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), ConfigError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("fsync", dir))
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError {
    let path = path.to_path_buf();
    move |source| ConfigError::DataDirIo { op, path, source }
}
