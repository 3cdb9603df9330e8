//! What the heartbeat keeps across restarts, under `<state_dir>/heartbeat/`:
//!
//! - `generation-<node>`: this node's generation number (`hg`), raised at every
//!   start. The peer drops messages of an older generation, so packets recorded
//!   before a restart cannot be replayed after it.
//! - `uuid-<node>`: this node's UUID (`srcuuid`), made once, as heartbeat's
//!   `hb_uuid`.
//! - `peer-generation-<peer>`: the peer's last generation seen, so that this node
//!   too rejects replays of an older generation after its own restart.
//!
//! Files are written to a temporary name, synced, then renamed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// This node's identity for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootState {
    /// This run's generation: above every earlier one.
    pub generation: u64,
    pub uuid: [u8; 16],
    /// The peer's last generation seen, if any.
    pub peer_generation: Option<u64>,
}

/// The state directory of one node.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    node: String,
    peer: String,
}

impl StateStore {
    /// Creates `<state_dir>/heartbeat` (mode 0700) if needed.
    pub fn open(state_dir: &Path, node: &str, peer: &str) -> Result<StateStore, Error> {
        let dir = state_dir.join("heartbeat");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| Error::StateDir {
                path: dir.clone(),
                step: "create the directory for",
                source,
            })?;
        Ok(StateStore {
            dir,
            node: node.to_owned(),
            peer: peer.to_owned(),
        })
    }

    fn generation_path(&self) -> PathBuf {
        self.dir.join(format!("generation-{}", self.node))
    }

    fn uuid_path(&self) -> PathBuf {
        self.dir.join(format!("uuid-{}", self.node))
    }

    fn peer_generation_path(&self) -> PathBuf {
        self.dir.join(format!("peer-generation-{}", self.peer))
    }

    /// Starts a run: the new generation is above the stored one and at least
    /// `now_unix` (so it still rises if the directory was lost), and is stored
    /// before it is used.
    pub fn boot(&self, now_unix: u64) -> Result<BootState, Error> {
        let previous = read_number(&self.generation_path())?;
        let generation = previous.map_or(now_unix, |p| p.saturating_add(1).max(now_unix));
        write_atomic(&self.generation_path(), &format!("{generation}\n"))?;
        let uuid = match read_uuid(&self.uuid_path())? {
            Some(uuid) => uuid,
            None => {
                let uuid = new_uuid().map_err(|source| Error::StateDir {
                    path: self.uuid_path(),
                    step: "make a UUID for",
                    source,
                })?;
                write_atomic(&self.uuid_path(), &format!("{}\n", format_uuid(&uuid)))?;
                uuid
            }
        };
        let peer_generation = read_number(&self.peer_generation_path())?;
        Ok(BootState {
            generation,
            uuid,
            peer_generation,
        })
    }

    /// Remembers the peer's generation.
    pub fn save_peer_generation(&self, generation: u64) -> Result<(), Error> {
        write_atomic(&self.peer_generation_path(), &format!("{generation}\n"))
    }
}

fn read_text(path: &Path) -> Result<Option<String>, Error> {
    let mut text = String::new();
    match File::open(path).and_then(|mut f| f.read_to_string(&mut text)) {
        Ok(_) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::StateDir {
            path: path.to_owned(),
            step: "read",
            source,
        }),
    }
}

fn read_number(path: &Path) -> Result<Option<u64>, Error> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    text.trim().parse().map(Some).map_err(|_| Error::StateDir {
        path: path.to_owned(),
        step: "parse",
        source: io::Error::new(io::ErrorKind::InvalidData, "not a number"),
    })
}

fn read_uuid(path: &Path) -> Result<Option<[u8; 16]>, Error> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    parse_uuid(text.trim())
        .map(Some)
        .ok_or_else(|| Error::StateDir {
            path: path.to_owned(),
            step: "parse",
            source: io::Error::new(io::ErrorKind::InvalidData, "not a UUID"),
        })
}

fn write_atomic(path: &Path, text: &str) -> Result<(), Error> {
    let err = |step, source| Error::StateDir {
        path: path.to_owned(),
        step,
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err("write", e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| err("write", e))?;
    fs::rename(&tmp, path).map_err(|e| err("replace", e))?;
    if let Some(dir) = path.parent() {
        // Make the rename durable; a failure here loses nothing but durability.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// A random (version 4) UUID.
fn new_uuid() -> io::Result<[u8; 16]> {
    let mut uuid = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut uuid)?;
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    Ok(uuid)
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let hex: Vec<String> = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    )
}

pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if digits.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        uuid[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generation_rises_and_uuid_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path(), "lvs1", "lvs2").expect("open");
        let first = store.boot(1000).expect("boot");
        assert_eq!(first.generation, 1000);
        assert_eq!(first.peer_generation, None);
        assert_eq!(first.uuid[6] >> 4, 4);
        // Same second (or a clock gone back): still higher.
        let second = store.boot(1000).expect("boot");
        assert_eq!(second.generation, 1001);
        let third = store.boot(900).expect("boot");
        assert_eq!(third.generation, 1002);
        // Clock ahead: jumps to it.
        assert_eq!(store.boot(5000).expect("boot").generation, 5000);
        assert_eq!(second.uuid, first.uuid);
        store.save_peer_generation(77).expect("save");
        assert_eq!(store.boot(1).expect("boot").peer_generation, Some(77));
        let mode = fs::metadata(dir.path().join("heartbeat"))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let text = fs::read_to_string(dir.path().join("heartbeat/uuid-lvs1")).expect("uuid");
        assert_eq!(parse_uuid(text.trim()), Some(first.uuid));
    }

    #[test]
    fn corrupt_state_is_an_error_that_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path(), "lvs1", "lvs2").expect("open");
        fs::write(dir.path().join("heartbeat/generation-lvs1"), "garbage").expect("write");
        let e = store.boot(1).expect_err("corrupt");
        assert!(e.to_string().contains("generation-lvs1"), "{e}");
    }

    #[test]
    fn uuid_text() {
        let uuid = [
            0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x56, 0x78, 0x12, 0x34,
            0x56, 0x78,
        ];
        assert_eq!(format_uuid(&uuid), "12345678-1234-5678-1234-567812345678");
        assert_eq!(
            parse_uuid("12345678-1234-5678-1234-567812345678"),
            Some(uuid)
        );
        assert_eq!(parse_uuid("12345678123456781234567812345678"), None);
        assert_eq!(parse_uuid("x2345678-1234-5678-1234-567812345678"), None);
    }
}
