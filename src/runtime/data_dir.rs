//! The data directory (`--data-dir`): reading the state at start, and writing
//! it as the node asks (`Output::Persist`), durably, before anything that
//! follows it is sent.
//!
//! A write goes to a temporary file, which is fsynced, renamed over `state`,
//! and then the directory is fsynced, so a crash at any point leaves either
//! the old state or the new one, never a torn file. The directory is locked
//! (`flock` on its `lock` file) for as long as the node runs: two nodes never
//! share one.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::durable::{DurableState, MAX_FILE_BYTES};
use crate::node::Durability;

const STATE: &str = "state";
const TEMP: &str = "state.tmp";
const LOCK: &str = "lock";

/// An open data directory: held locked while the node runs.
pub struct DataDir {
    path: PathBuf,
    /// The flock lives as long as this file is open.
    _lock: File,
}

impl DataDir {
    /// Open (or create, mode 0700) the directory, lock it, and read its state.
    /// Anything unreadable or corrupt is an error: never a silent fresh start.
    pub fn open(path: &Path, me: SocketAddr) -> Result<(Self, Durability)> {
        match fs::metadata(path) {
            Ok(meta) if !meta.is_dir() => {
                bail!("data directory {} is not a directory", path.display())
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .with_context(|| format!("cannot create data directory {}", path.display()))?,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read data directory {}", path.display()));
            }
        }
        let lock_path = path.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "data directory {} is in use by another ra process",
                path.display()
            );
        }
        let dir = Self {
            path: path.to_path_buf(),
            _lock: lock,
        };
        let state_path = path.join(STATE);
        let bytes = match fs::metadata(&state_path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok((dir, Durability::Fresh)),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", state_path.display()));
            }
            Ok(meta) if meta.len() > MAX_FILE_BYTES => bail!(
                "state file {} is corrupt: it is larger than {MAX_FILE_BYTES} bytes",
                state_path.display()
            ),
            Ok(_) => fs::read(&state_path)
                .with_context(|| format!("cannot read {}", state_path.display()))?,
        };
        let state = DurableState::decode(&bytes).map_err(|why| {
            anyhow::anyhow!(
                "state file {} is corrupt: {why}; move it away only if you accept that fences start over",
                state_path.display()
            )
        })?;
        if state.node != me {
            bail!(
                "data directory {} belongs to the node at {}, not to this one at {me}",
                path.display(),
                state.node
            );
        }
        Ok((dir, Durability::Restored(state)))
    }

    /// Write `state` durably: temporary file, fsync, rename, fsync the directory.
    pub fn write(&self, state: &DurableState) -> Result<()> {
        let temp = self.path.join(TEMP);
        let bytes = state
            .encode()
            .with_context(|| format!("cannot encode the state for {}", temp.display()))?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("cannot write {}", temp.display()))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", temp.display()))?;
        drop(file);
        let target = self.path.join(STATE);
        fs::rename(&temp, &target)
            .with_context(|| format!("cannot rename {} to {}", temp.display(), target.display()))?;
        File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("cannot fsync data directory {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::active_set::ActiveSet;
    use crate::protocol::ids::ProcessId;

    fn me() -> SocketAddr {
        "127.0.0.1:7000".parse().expect("addr")
    }

    #[test]
    fn written_state_reads_back_and_damage_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("data");
        let (dir, found) = DataDir::open(&path, me()).expect("fresh");
        assert_eq!(found, Durability::Fresh);
        let state = DurableState::new(me(), ActiveSet::founding(ProcessId::new(me(), 5), 3));
        dir.write(&state).expect("write");
        // Locked while open.
        let busy = DataDir::open(&path, me()).err().expect("in use");
        assert!(format!("{busy:#}").contains("in use"), "{busy:#}");
        drop(dir);
        let (_dir, found) = DataDir::open(&path, me()).expect("reopen");
        assert_eq!(found, Durability::Restored(state));
        drop(_dir);
        let other: SocketAddr = "127.0.0.1:7001".parse().expect("addr");
        let theirs = DataDir::open(&path, other).err().expect("another node's");
        assert!(format!("{theirs:#}").contains("belongs to"), "{theirs:#}");
        fs::write(path.join(STATE), b"ra-state 1 3 00\nabc\n").expect("damage");
        let corrupt = DataDir::open(&path, me()).err().expect("corrupt");
        assert!(format!("{corrupt:#}").contains("is corrupt"), "{corrupt:#}");
    }
}
