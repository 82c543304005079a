//! One `ra` process started by a tool or a test: its own ports, a JSON log in a
//! file, stdin piped so lines can be typed at it, and its typed log records read
//! back as it writes them. Used by `ra demo`, `ra bench`'s footprint and the
//! integration tests.
//!
//! A node is started with `--bind 127.0.0.1:0` unless told otherwise: it binds a
//! port free for both UDP and TCP itself and names it in its first log record
//! (`listening`), which [`RaProcess::start`] waits for. Nothing picks a port,
//! closes it and hopes it is still free when the node binds it. That record is
//! logged at info level: start nodes without `-q`.
//!
//! The process is killed when the value is dropped, and also (Linux's
//! `PR_SET_PDEATHSIG`) when the thread that started it ends, so a harness that
//! is itself killed leaves nothing behind.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::event::{Event, LogRecord};
use crate::protocol::ids::ProcessId;

/// How long a node may take to bind and log its first line.
const LISTENING_WITHIN: Duration = Duration::from_secs(10);

/// What to start: `ra --bind BIND [args...] --log-format json`.
#[derive(Clone, Debug)]
pub struct Spawn {
    /// The `ra` executable.
    pub exe: PathBuf,
    /// Where `NAME.log` (stderr: the JSON log) and `NAME.out` (stdout) go.
    pub dir: PathBuf,
    /// Names the files; a restarted node needs a new one.
    pub name: String,
    /// `127.0.0.1:0` by default: the node picks its port.
    pub bind: String,
    pub args: Vec<OsString>,
}

impl Spawn {
    pub fn new(exe: impl Into<PathBuf>, dir: impl Into<PathBuf>, name: &str) -> Self {
        Self {
            exe: exe.into(),
            dir: dir.into(),
            name: name.to_string(),
            bind: "127.0.0.1:0".to_string(),
            args: Vec::new(),
        }
    }

    /// Bind this address instead of a free port (a restart on the same address).
    pub fn bind(mut self, addr: impl ToString) -> Self {
        self.bind = addr.to_string();
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--join ADDR`.
    pub fn join(self, seed: SocketAddr) -> Self {
        self.arg("--join").arg(seed.to_string())
    }
}

/// A running (or finished) `ra` process and what its log said so far.
pub struct RaProcess {
    pub name: String,
    /// The process, as its first log record named it.
    pub me: ProcessId,
    pub log: PathBuf,
    pub out: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Bytes of the log already read, up to the last complete line.
    read_offset: u64,
    records: Vec<LogRecord>,
    /// Log lines that are not JSON (a panic, a library writing on its own).
    other_lines: Vec<String>,
}

impl RaProcess {
    /// Start the process and wait until it has bound its port.
    pub fn start(spawn: Spawn) -> Result<Self> {
        let log = spawn.dir.join(format!("{}.log", spawn.name));
        let out = spawn.dir.join(format!("{}.out", spawn.name));
        let mut command = Command::new(&spawn.exe);
        command
            .arg("--bind")
            .arg(&spawn.bind)
            .args(&spawn.args)
            .args(["--log-format", "json"])
            .stdin(Stdio::piped())
            .stdout(File::create(&out).with_context(|| format!("cannot create {}", out.display()))?)
            .stderr(
                File::create(&log).with_context(|| format!("cannot create {}", log.display()))?,
            );
        // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", spawn.exe.display()))?;
        let stdin = child.stdin.take();
        let mut process = Self {
            name: spawn.name,
            // Until the first record says otherwise.
            me: ProcessId::new(SocketAddr::from(([127, 0, 0, 1], 0)), 0),
            log,
            out,
            child,
            stdin,
            read_offset: 0,
            records: Vec::new(),
            other_lines: Vec::new(),
        };
        process.me = process.wait_listening(LISTENING_WITHIN)?;
        Ok(process)
    }

    fn wait_listening(&mut self, within: Duration) -> Result<ProcessId> {
        let deadline = Instant::now() + within;
        loop {
            self.poll()?;
            if let Some(me) = self.records.iter().find_map(|r| match &r.event {
                Event::Listening { node, .. } => Some(*node),
                _ => None,
            }) {
                return Ok(me);
            }
            if let Some(status) = self.child.try_wait()? {
                self.poll()?;
                bail!(
                    "{} exited ({status}) before listening: {}",
                    self.name,
                    self.other_lines.join(" / ")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not log where it listens within {within:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address peers reach it at.
    pub fn addr(&self) -> SocketAddr {
        self.me.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the log's new complete lines. Lines that are not JSON are kept
    /// aside; a JSON line that does not fit the schema is an error, so a changed
    /// log format is noticed rather than read as silence.
    pub fn poll(&mut self) -> Result<usize> {
        let Ok(mut file) = File::open(&self.log) else {
            return Ok(0);
        };
        file.seek(SeekFrom::Start(self.read_offset))?;
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        let before = self.records.len();
        loop {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.read_offset += n as u64;
            let text = line.trim();
            if text.starts_with('{') {
                let record = LogRecord::from_json(text).with_context(|| {
                    format!(
                        "{}: a log line that does not fit the schema: {text}",
                        self.log.display()
                    )
                })?;
                self.records.push(record);
            } else if !text.is_empty() {
                self.other_lines.push(text.to_string());
            }
        }
        Ok(self.records.len() - before)
    }

    /// Every record so far, reading the log first.
    pub fn records(&mut self) -> Result<&[LogRecord]> {
        self.poll()?;
        Ok(&self.records)
    }

    /// The records read by the last [`RaProcess::poll`], without reading.
    pub fn records_read(&self) -> &[LogRecord] {
        &self.records
    }

    /// Lines of the log that were not JSON records.
    pub fn other_lines(&self) -> &[String] {
        &self.other_lines
    }

    /// Whether some record read so far matches.
    pub fn logged(&self, pick: impl Fn(&Event) -> bool) -> bool {
        self.records.iter().any(|r| pick(&r.event))
    }

    /// How many records read so far match.
    pub fn count(&self, pick: impl Fn(&Event) -> bool) -> usize {
        self.records.iter().filter(|r| pick(&r.event)).count()
    }

    /// The members of the active set this node installed last, if any.
    pub fn active_set(&self) -> Option<&[ProcessId]> {
        self.records.iter().rev().find_map(|r| match &r.event {
            Event::ActiveSetInstalled { members, .. } => Some(members.as_slice()),
            _ => None,
        })
    }

    /// Whether the set this node installed last seats as many of `cluster`
    /// processes as the set's own cap (`max_active`) allows.
    pub fn active_set_full(&self, cluster: usize) -> bool {
        self.records.iter().rev().find_map(|r| match &r.event {
            Event::ActiveSetInstalled {
                members,
                max_active,
                ..
            } => {
                let cap = usize::try_from(*max_active).unwrap_or(usize::MAX);
                Some(members.len() == cluster.min(cap))
            }
            _ => None,
        }) == Some(true)
    }

    /// Type a line on its stdin (an empty line asks for the lock `default`).
    pub fn type_line(&mut self, line: &str) -> Result<()> {
        let name = &self.name;
        let stdin = self
            .stdin
            .as_mut()
            .with_context(|| format!("{name}'s stdin is closed"))?;
        writeln!(stdin, "{line}").with_context(|| format!("{name} stopped reading its input"))?;
        stdin.flush()?;
        Ok(())
    }

    /// Press Enter `times` times at once.
    pub fn request(&mut self, times: usize) -> Result<()> {
        let name = &self.name;
        let stdin = self
            .stdin
            .as_mut()
            .with_context(|| format!("{name}'s stdin is closed"))?;
        stdin.write_all("\n".repeat(times).as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// End of input, as when a script's stdin runs out.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety concerns;
        // the child is not reaped before `kill`/`wait` below, so the pid is ours.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has ended.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Wait for the process to end by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The log file's whole text (for a failure message).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RaProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The settings file the tools give their nodes: the founder need not wait the
/// shipped 4 s for an old cluster that cannot exist on a fresh loopback.
pub fn write_quick_config(path: &Path, found_after: Duration) -> Result<()> {
    std::fs::write(
        path,
        format!("[cluster]\nfound_after_ms = {}\n", found_after.as_millis()),
    )
    .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first line every node writes must read back: it is how a harness
    /// learns the port. So must a library's diagnostic line (a note). Both
    /// events have a field named like one of the record's own.
    #[test]
    fn records_whose_fields_echo_the_records_read_back() {
        let me = ProcessId::new("127.0.0.1:7001".parse().unwrap(), 1_795_787_026_022_138);
        let record = LogRecord {
            time: jiff::Timestamp::UNIX_EPOCH,
            level: "INFO".into(),
            node: Some(me),
            event: Event::Listening {
                node: me,
                bind: "0.0.0.0:7001".parse().unwrap(),
                api: None,
                authenticated: false,
                tls: false,
                data_dir: None,
            },
            message: "listening".into(),
        };
        let note = LogRecord {
            node: None,
            event: Event::Note {
                message: "a library said so".into(),
            },
            ..record.clone()
        };
        for record in [record, note] {
            let line = serde_json::to_string(&record).unwrap();
            let back = crate::event::parse_log(&line).expect("reads back");
            assert_eq!(back, vec![record]);
        }
    }
}
