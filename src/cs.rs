//! The critical section itself: a line on stdout, and optionally a line appended
//! to a shared file, from which `ra check` proves that no two entries overlapped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::protocol::lock::{Fence, LockName};

/// What a line of the shared file records; written "enter" or "exit".
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CsEvent {
    Enter,
    Exit,
}

/// One line of the shared file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CsRecord {
    pub event: CsEvent,
    pub node: String,
    /// The lock; files written before locks had names hold only `default`.
    #[serde(default = "default_lock")]
    pub lock: String,
    /// The fencing token.
    pub fence: u64,
    pub lamport: u64,
    pub unix_us: u64,
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub request_id: u64,
    #[serde(default)]
    pub pid: u32,
}

fn default_lock() -> String {
    crate::protocol::lock::DEFAULT_LOCK.to_string()
}

pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub struct CriticalSection {
    node: SocketAddr,
    file: Option<(PathBuf, File)>,
    print: bool,
}

impl CriticalSection {
    pub fn open(node: SocketAddr, path: Option<&Path>, print: bool) -> Result<Self> {
        let file = match path {
            Some(path) => {
                // O_APPEND: each line lands whole at the end, whoever else writes.
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| {
                        format!("cannot open the critical-section file {}", path.display())
                    })?;
                Some((path.to_path_buf(), file))
            }
            None => None,
        };
        Ok(Self { node, file, print })
    }

    pub fn enter(&mut self, lock: &LockName, fence: Fence, lamport: u64, request_id: u64) {
        if self.print {
            println!("{} holds {lock} (fence {fence})", self.node);
        }
        self.append(CsEvent::Enter, lock, fence, lamport, request_id);
    }

    pub fn exit(&mut self, lock: &LockName, fence: Fence, lamport: u64) {
        if self.print {
            println!("{} released {lock} (fence {fence})", self.node);
        }
        self.append(CsEvent::Exit, lock, fence, lamport, 0);
    }

    fn append(
        &mut self,
        event: CsEvent,
        lock: &LockName,
        fence: Fence,
        lamport: u64,
        request_id: u64,
    ) {
        let Some((path, file)) = self.file.as_mut() else {
            return;
        };
        let record = CsRecord {
            event,
            node: self.node.to_string(),
            lock: lock.to_string(),
            // Out-of-range fences never happen (epochs stop at the edge); a 0
            // would show up in `ra check` as a falling fence, never pass silently.
            fence: fence.token().unwrap_or(0),
            lamport,
            unix_us: unix_us(),
            epoch: fence.epoch,
            request_id,
            pid: std::process::id(),
        };
        let mut line = match serde_json::to_string(&record) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(target: "ra::cs", "cannot encode a record for {}: {e}", path.display());
                return;
            }
        };
        line.push('\n');
        // One write call per line, so appends from several processes never interleave.
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::error!(target: "ra::cs", "cannot append to {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared file's lines read as they did when the event was text, and
    /// any other value is refused rather than read as one of the two.
    #[test]
    fn events_are_written_enter_and_exit_and_nothing_else_reads() {
        let line = r#"{"event":"exit","node":"127.0.0.1:1","lock":"default","fence":5,"lamport":2,"unix_us":3,"epoch":0,"request_id":0,"pid":9}"#;
        let record: CsRecord = serde_json::from_str(line).expect("a record");
        assert_eq!(record.event, CsEvent::Exit);
        assert_eq!(serde_json::to_string(&record).expect("encode"), line);
        assert_eq!(
            serde_json::to_string(&CsEvent::Enter).expect("encode"),
            r#""enter""#
        );
        for other in ["jump", "Enter", "EXIT", ""] {
            let line = line.replace(r#""exit""#, &format!("{other:?}"));
            assert!(serde_json::from_str::<CsRecord>(&line).is_err(), "{line}");
        }
    }
}
