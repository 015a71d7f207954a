//! The newest cluster map a core installed, kept in `DATA/core-<i>/map` so that a
//! restart routes and places replicas by it, not by the founding map.
//!
//! Layout: magic `CKVMAP02` (8 bytes), CRC32 of the payload (u32 LE), payload
//! length (u64 LE), the payload (the rkyv-encoded `ClusterMap`). Written to a
//! temporary name, fsynced, renamed, the directory fsynced. A file that fails
//! any check is an error naming it: a core never guesses its placement.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use corekv_rpc::map::ClusterMap;

const MAGIC: &[u8; 8] = b"CKVMAP03";
/// The magic of the map files of corekv before node states (wire version 4).
const MAGIC_V1: &[u8; 8] = b"CKVMAP01";
/// The magic of the map files of corekv before hand-offs between cores (wire
/// version 9).
const MAGIC_V2: &[u8; 8] = b"CKVMAP02";
const HEADER_BYTES: usize = 8 + 4 + 8;
/// A map file larger than this is refused before it is read whole.
const MAP_FILE_BYTES_MAX: u64 = 64 << 20;
const FILE_NAME: &str = "map";
const TEMP_NAME: &str = "map.tmp";

fn path_of(core_dir: &Path) -> PathBuf {
    core_dir.join(FILE_NAME)
}

/// Writes `map` as the core's map file, durably.
pub fn save(core_dir: &Path, map: &ClusterMap) -> Result<(), String> {
    let payload = corekv_rpc::node::to_bytes(map);
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let temp = core_dir.join(TEMP_NAME);
    let err = |op: &str, path: &Path, e: std::io::Error| format!("{op} {}: {e}", path.display());
    let mut file = File::create(&temp).map_err(|e| err("create", &temp, e))?;
    file.write_all(&bytes).map_err(|e| err("write", &temp, e))?;
    file.sync_data().map_err(|e| err("fdatasync", &temp, e))?;
    drop(file);
    let path = path_of(core_dir);
    std::fs::rename(&temp, &path).map_err(|e| err("rename", &temp, e))?;
    File::open(core_dir).and_then(|d| d.sync_all()).map_err(|e| err("fsync directory", core_dir, e))
}

/// The core's map file, if it has one.
pub fn load(core_dir: &Path) -> Result<Option<ClusterMap>, String> {
    let path = path_of(core_dir);
    let bytes = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("stat {}: {e}", path.display())),
        Ok(meta) if meta.len() > MAP_FILE_BYTES_MAX => {
            return Err(format!("{}: {} bytes, more than a map file may hold", path.display(), meta.len()));
        }
        Ok(_) => std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?,
    };
    decode(&bytes).map(Some).map_err(|why| format!("{}: {why}", path.display()))
}

fn decode(bytes: &[u8]) -> Result<ClusterMap, String> {
    if bytes.len() >= 8 && &bytes[..8] == MAGIC_V1 {
        return Err("a map file of an older corekv (before node states), which this version does not read".into());
    }
    if bytes.len() >= 8 && &bytes[..8] == MAGIC_V2 {
        return Err("a map file of an older corekv (before hand-offs), which this version does not read".into());
    }
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err("not a map file (bad magic or short header)".into());
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() as u64 != len {
        return Err(format!("the header says {len} payload bytes, the file has {}", payload.len()));
    }
    if crc32fast::hash(payload) != crc {
        return Err("CRC mismatch".into());
    }
    corekv_rpc::archive::from_unaligned::<ClusterMap>(payload)
}

#[cfg(test)]
mod tests {
    use corekv_rpc::map::{NodeInfo, Replica, ShardReplicas};

    use super::*;

    fn map() -> ClusterMap {
        let nodes =
            vec![NodeInfo { id: 1, addr: "127.0.0.1:7000".into(), cores: 2, state: corekv_rpc::map::NodeState::Up }];
        let one = ShardReplicas::new(vec![Replica { node: 1, core: 1 }]);
        ClusterMap { cluster_id: 5, epoch: 9, nodes, shards: vec![one.clone()], meta: one, rebalance: false }
    }

    #[test]
    fn a_saved_map_loads_back_and_a_damaged_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("corekv-map-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir).unwrap(), None);
        save(&dir, &map()).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(map()));
        let path = dir.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(load(&dir).unwrap_err().contains("CRC"));
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert!(load(&dir).unwrap_err().contains("not a map file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
