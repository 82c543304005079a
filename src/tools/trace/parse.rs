//! Reading the logs: every line that is a node's typed record ([`LogRecord`]),
//! in time order across files. Anything else (a line that is not JSON, a record
//! of the shell without a node, a line of another schema) is skipped and counted,
//! so a log with a backtrace in it still draws.

use std::net::SocketAddr;

use crate::event::{Event, LogRecord};
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::LockName;

/// One node event.
#[derive(Clone, Debug)]
pub(super) struct Ev {
    /// Microseconds since the Unix epoch.
    pub t: i64,
    pub time: jiff::Timestamp,
    /// The process that logged it.
    pub process: ProcessId,
    pub event: Event,
}

impl Ev {
    /// Its lane: processes restarted on one address share it.
    pub fn node(&self) -> SocketAddr {
        self.process.addr
    }

    /// The lock it is about, if it is about one.
    pub fn lock(&self) -> Option<&LockName> {
        lock_of(&self.event)
    }
}

pub(super) struct Parsed {
    pub files: Vec<String>,
    /// Sorted by time; ties keep file order, then line order.
    pub events: Vec<Ev>,
    /// Lines that are not node events.
    pub skipped: usize,
}

pub(super) fn parse_logs(logs: &[(String, String)]) -> Parsed {
    let mut keyed = Vec::new();
    let mut skipped = 0;
    for (file, (_, text)) in logs.iter().enumerate() {
        for (line, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            match parse_line(raw) {
                Some(ev) => keyed.push(((ev.t, file, line), ev)),
                None => skipped += 1,
            }
        }
    }
    keyed.sort_by_key(|(key, _)| *key);
    Parsed {
        files: logs.iter().map(|(name, _)| name.clone()).collect(),
        events: keyed.into_iter().map(|(_, ev)| ev).collect(),
        skipped,
    }
}

fn parse_line(raw: &str) -> Option<Ev> {
    let record = LogRecord::from_json(raw.trim()).ok()?;
    Some(Ev {
        t: record.time.as_microsecond(),
        time: record.time,
        process: record.node?,
        event: record.event,
    })
}

/// The lock an event is about.
pub(super) fn lock_of(event: &Event) -> Option<&LockName> {
    match event {
        Event::Asked { lock, .. }
        | Event::RequestIssued { lock, .. }
        | Event::RequestSent { lock, .. }
        | Event::RequestReceived { lock, .. }
        | Event::ReplySent { lock, .. }
        | Event::ReplyReceived { lock, .. }
        | Event::ReplyIgnored { lock, .. }
        | Event::ReplyExpired { lock, .. }
        | Event::NewerSetSent { lock, .. }
        | Event::Reissued { lock, .. }
        | Event::Withdrawn { lock, .. }
        | Event::Enter { lock, .. }
        | Event::Exit { lock, .. }
        | Event::Cancelled { lock, .. }
        | Event::Lost { lock, .. }
        | Event::FenceSpaceExhausted { lock, .. } => Some(lock),
        _ => None,
    }
}
