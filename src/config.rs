//! Settings: built-in defaults, then the config file, then flags; validated once
//! here so the rest of the program can trust them.
//!
//! A little over 500 lines with its tests: every setting's default, bound and error.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::membership::seal::Keyring;
use crate::node::NodeSettings;

/// The node's flags, as given on the command line (everything optional: the
/// config file and the defaults fill in the rest).
#[derive(Args, Debug, Default, Clone)]
pub struct NodeFlags {
    /// Address to listen on, UDP (SWIM) and TCP (gRPC) on the same port:
    /// `:PORT` (all interfaces) or `HOST:PORT`; port 0 picks a free one.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// A member to join through (`:PORT` is 127.0.0.1:PORT); repeat for more.
    #[arg(long, value_name = "ADDR")]
    pub join: Vec<String>,
    /// The address other nodes use to reach this one (default: the bind address,
    /// or 127.0.0.1 when bound to all interfaces).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// A TOML file with settings (see config/ra.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Most members of the active set; further nodes wait as spectators.
    #[arg(long, value_name = "N")]
    pub max_active: Option<u32>,
    /// How long Enter and --requests hold the lock, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub hold_ms: Option<u64>,
    /// Append one JSON line per entry and exit to this shared file.
    #[arg(long, value_name = "PATH")]
    pub cs_file: Option<PathBuf>,
    /// Keep the cluster's identity, the last active set and the highest epoch
    /// in this directory (fsynced), so fences go on rising after the whole
    /// cluster restarts. Without it, fences start over.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level: error, warn, info (the default: every message that leads into
    /// a critical section), debug, trace.
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
    /// More log lines (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Fewer log lines (-q warnings and errors, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// Take the lock N times, one after another, without stdin; then leave.
    #[arg(long, value_name = "N")]
    pub requests: Option<u32>,
    /// With --requests: keep serving the cluster once the N entries are done.
    #[arg(long)]
    pub stay: bool,
    /// The client API's Unix socket (default: one per port, under
    /// $XDG_RUNTIME_DIR/ra or /tmp/ra-UID; see `ra lock --node`).
    #[arg(long, value_name = "PATH")]
    pub api: Option<PathBuf>,
    /// Serve no client API.
    #[arg(long, conflicts_with = "api")]
    pub no_api: bool,
    /// Seal membership datagrams (encrypted and authenticated) and prove peer
    /// connections with a handshake, using the keys in FILE (base64, one per
    /// line, the first used to send; make one with `ra keygen`). Lock messages
    /// on a proven connection are not encrypted. Every node of the cluster
    /// needs it. SIGHUP re-reads it (key rotation).
    #[arg(long, value_name = "FILE")]
    pub cluster_key: Option<PathBuf>,
    /// Mutual TLS on the peer gRPC port: this node's certificate (PEM), which
    /// must name its advertised IP address as a subjectAltName. Needs
    /// --tls-key and --tls-ca too. Encrypts lock messages between nodes; the
    /// local API socket stays plain.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate (PEM) that signs every node's certificate: peers
    /// are accepted, as callers and as servers, only with a certificate it
    /// signed.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }

    /// Move `steps` levels louder (positive) or quieter (negative), within range.
    fn shifted(self, steps: i32) -> Self {
        let all = [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ];
        let at = all.iter().position(|l| *l == self).unwrap_or(2) as i32;
        all[(at + steps).clamp(0, 4) as usize]
    }
}

/// Everything needed to run one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub bind: SocketAddr,
    pub advertise: SocketAddr,
    pub join: Vec<SocketAddr>,
    pub settings: NodeSettings,
    /// How long the console's Enter and `--requests` hold the lock.
    pub console_hold: Duration,
    pub cs_file: Option<PathBuf>,
    /// Where the node keeps its state (`--data-dir`); none: nothing is kept.
    pub data_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    pub log_level: LogLevel,
    pub requests: u32,
    pub stay: bool,
    pub api: ApiSocket,
    /// The cluster key file, and the keys read from it at start.
    pub cluster_key: Option<(PathBuf, Keyring)>,
    /// Bounds of the peer server.
    pub limits: crate::runtime::transport::server::Limits,
    /// Mutual TLS on the peer port, its files read and checked at start.
    pub tls: Option<std::sync::Arc<crate::runtime::transport::tls::PeerTls>>,
}

/// Where the client API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiSocket {
    Off,
    /// [`default_api_path`] of the port the node binds (known once bound, for
    /// port 0).
    PerPort,
    At(PathBuf),
}

/// Longest duration any setting may have: a day. Beyond that a typo, never a
/// plan, and timer arithmetic stays far from overflow.
const MAX_SETTING_MS: u64 = 24 * 3600 * 1000;

/// Where the client API of the node on `port` listens by default:
/// `$XDG_RUNTIME_DIR/ra/PORT.sock`, else `/tmp/ra-UID/PORT.sock`.
pub fn default_api_path(port: u16) -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("ra"),
        // SAFETY: getuid has no preconditions and cannot fail.
        _ => std::env::temp_dir().join(format!("ra-{}", unsafe { libc::getuid() })),
    };
    dir.join(format!("{port}.sock"))
}

impl NodeConfig {
    /// Bound to 0.0.0.0 or [::]: other hosts can reach it, so the log says which
    /// address it advertises.
    pub fn binds_all_interfaces(&self) -> bool {
        self.bind.ip().is_unspecified()
    }
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    node: FileNode,
    #[serde(default)]
    cluster: FileCluster,
    #[serde(default)]
    swim: FileSwim,
    #[serde(default)]
    limits: FileLimits,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_peer_connections: Option<usize>,
    idle_timeout_ms: Option<u64>,
    window_kb: Option<u32>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileNode {
    bind: Option<String>,
    advertise: Option<String>,
    #[serde(default)]
    join: Vec<String>,
    max_active: Option<u32>,
    hold_ms: Option<u64>,
    cs_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    log_level: Option<LogLevel>,
    api: Option<PathBuf>,
    cluster_key: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    found_after_ms: Option<u64>,
    retry_join_ms: Option<u64>,
    takeover_after_ms: Option<u64>,
    proposal_timeout_ms: Option<u64>,
    leave_timeout_ms: Option<u64>,
    tick_ms: Option<u64>,
    grant_lease_ms: Option<u64>,
    refused_connection_is_proof: Option<bool>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileSwim {
    probe_period_ms: Option<u64>,
    probe_rtt_ms: Option<u64>,
    indirect_probes: Option<usize>,
    suspect_to_down_after_ms: Option<u64>,
    max_transmissions: Option<u8>,
    gossip_every_ms: Option<u64>,
    gossip_fanout: Option<usize>,
    announce_every_ms: Option<u64>,
    announce_to_down_every_ms: Option<u64>,
    remove_down_after_s: Option<u64>,
    max_packet_size: Option<usize>,
}

/// `:PORT` means every interface for binding.
pub fn parse_bind(text: &str) -> Result<SocketAddr> {
    parse_addr(text, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        .with_context(|| format!("bad --bind address {text:?} (expected :PORT or HOST:PORT)"))
}

/// `:PORT` means this host (127.0.0.1) for a peer address.
pub fn parse_peer(text: &str, what: &str) -> Result<SocketAddr> {
    parse_addr(text, IpAddr::V4(Ipv4Addr::LOCALHOST))
        .with_context(|| format!("bad {what} address {text:?} (expected :PORT or HOST:PORT)"))
}

fn parse_addr(text: &str, default_ip: IpAddr) -> Result<SocketAddr> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .context("the port is not a number from 0 to 65535")?;
        return Ok(SocketAddr::new(default_ip, port));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !text.contains(':') {
        bail!("missing the port");
    }
    // A host name: resolve it once, now, so a typo fails at start-up.
    let mut resolved = text
        .to_socket_addrs()
        .context("cannot resolve the host name")?;
    resolved
        .next()
        .context("the host name resolves to no address")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let message = e.message().to_string();
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(line) => {
                // The line itself names the setting; the message may not
                // ("invalid value: integer `256`, expected u8").
                let quoted: String = text
                    .lines()
                    .nth(line - 1)
                    .unwrap_or_default()
                    .trim()
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(80)
                    .collect();
                anyhow::anyhow!(
                    "config file {}, line {line} (`{quoted}`): {message}",
                    path.display()
                )
            }
            None => anyhow::anyhow!("config file {}: {message}", path.display()),
        }
    })
}

/// Merge defaults, the config file and the flags; check the result.
pub fn resolve(args: &NodeFlags) -> Result<NodeConfig> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let bind_text = args
        .bind
        .clone()
        .or(file.node.bind.clone())
        .context("--bind is required, for example `ra --bind :7000`")?;
    let bind = parse_bind(&bind_text)?;
    let advertise = match args.advertise.clone().or(file.node.advertise.clone()) {
        Some(text) => parse_peer(&text, "--advertise")?,
        None if bind.ip().is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bind.port())
        }
        None => bind,
    };
    if advertise.ip().is_unspecified() || (advertise.port() == 0 && bind.port() != 0) {
        bail!("--advertise must be an address other nodes can reach, not {advertise}");
    }
    let join_texts = if args.join.is_empty() {
        &file.node.join
    } else {
        &args.join
    };
    let join = join_texts
        .iter()
        .map(|j| parse_peer(j, "--join"))
        .collect::<Result<Vec<_>>>()?;

    let mut settings = NodeSettings::default();
    if let Some(n) = args.max_active.or(file.node.max_active) {
        if n == 0 || n as usize > crate::wire::MAX_MEMBERS {
            bail!(
                "--max-active must be from 1 to {}, not {n}",
                crate::wire::MAX_MEMBERS
            );
        }
        settings.max_active = n;
    }
    let mut errors = Vec::new();
    let mut checked_ms = |name: &str, value: u64| {
        if value > MAX_SETTING_MS {
            errors.push(format!(
                "{name} is {value} ms; at most {MAX_SETTING_MS} (a day)"
            ));
        }
        ms(value.min(MAX_SETTING_MS))
    };
    let console_hold = checked_ms(
        "--hold-ms",
        args.hold_ms.or(file.node.hold_ms).unwrap_or(1000),
    );
    let c = &file.cluster;
    let s = &file.swim;
    let fields: [(&str, &mut Duration, Option<u64>); 13] = [
        (
            "cluster.found_after_ms",
            &mut settings.found_after,
            c.found_after_ms,
        ),
        (
            "cluster.retry_join_ms",
            &mut settings.retry_join_every,
            c.retry_join_ms,
        ),
        (
            "cluster.takeover_after_ms",
            &mut settings.takeover_after,
            c.takeover_after_ms,
        ),
        (
            "cluster.proposal_timeout_ms",
            &mut settings.proposal_timeout,
            c.proposal_timeout_ms,
        ),
        (
            "cluster.leave_timeout_ms",
            &mut settings.leave_timeout,
            c.leave_timeout_ms,
        ),
        ("cluster.tick_ms", &mut settings.tick, c.tick_ms),
        (
            "cluster.grant_lease_ms",
            &mut settings.grant_lease,
            c.grant_lease_ms,
        ),
        (
            "swim.probe_period_ms",
            &mut settings.swim.probe_period,
            s.probe_period_ms,
        ),
        (
            "swim.probe_rtt_ms",
            &mut settings.swim.probe_rtt,
            s.probe_rtt_ms,
        ),
        (
            "swim.suspect_to_down_after_ms",
            &mut settings.swim.suspect_to_down_after,
            s.suspect_to_down_after_ms,
        ),
        (
            "swim.gossip_every_ms",
            &mut settings.swim.gossip_every,
            s.gossip_every_ms,
        ),
        (
            "swim.announce_every_ms",
            &mut settings.swim.announce_every,
            s.announce_every_ms,
        ),
        (
            "swim.announce_to_down_every_ms",
            &mut settings.swim.announce_to_down_every,
            s.announce_to_down_every_ms,
        ),
    ];
    for (name, target, value) in fields {
        if let Some(v) = value {
            *target = checked_ms(name, v);
        }
    }
    if let Some(error) = errors.first() {
        bail!("{error}");
    }
    for (name, value) in [
        ("cluster.retry_join_ms", settings.retry_join_every),
        ("cluster.proposal_timeout_ms", settings.proposal_timeout),
        ("cluster.tick_ms", settings.tick),
        ("cluster.grant_lease_ms", settings.grant_lease),
    ] {
        if value.is_zero() {
            bail!("{name} must be positive");
        }
    }

    if let Some(proof) = c.refused_connection_is_proof {
        settings.refused_connection_is_proof = proof;
    }

    let mut swim = settings.swim.clone();
    if let Some(v) = s.indirect_probes {
        swim.num_indirect_probes = v;
    }
    if let Some(v) = s.max_transmissions {
        swim.max_transmissions = v;
    }
    if let Some(v) = s.gossip_fanout {
        swim.gossip_fanout = v;
    }
    if let Some(v) = s.remove_down_after_s {
        swim.remove_down_after = Duration::from_secs(v);
    }
    if let Some(v) = s.max_packet_size {
        swim.max_packet_size = v;
    }
    swim.validate().map_err(anyhow::Error::msg)?;
    settings.swim = swim;

    let level = args.log_level.or(file.node.log_level).unwrap_or_default();
    let log_level = level.shifted(i32::from(args.verbose) - i32::from(args.quiet));
    let api = if args.no_api {
        ApiSocket::Off
    } else {
        match args.api.clone().or(file.node.api) {
            Some(path) => ApiSocket::At(path),
            None => ApiSocket::PerPort,
        }
    };
    let mut limits = crate::runtime::transport::server::Limits::default();
    let l = &file.limits;
    if let Some(n) = l.max_peer_connections {
        if !(8..=65_536).contains(&n) {
            bail!("limits.max_peer_connections must be from 8 to 65536, not {n}");
        }
        limits.max_connections = n;
    }
    if let Some(ms) = l.idle_timeout_ms {
        if !(1000..=MAX_SETTING_MS).contains(&ms) {
            bail!("limits.idle_timeout_ms must be from 1000 to {MAX_SETTING_MS}, not {ms}");
        }
        limits.idle_timeout = Duration::from_millis(ms);
    }
    if let Some(kb) = l.window_kb {
        if !(64..=16_384).contains(&kb) {
            bail!("limits.window_kb must be from 64 to 16384, not {kb}");
        }
        limits.window_bytes = kb * 1024;
    }
    let tls = resolve_tls(
        args,
        [&file.node.tls_cert, &file.node.tls_key, &file.node.tls_ca],
        advertise,
    )?;
    let cluster_key = match args.cluster_key.clone().or(file.node.cluster_key) {
        Some(path) => {
            let keys = crate::membership::keyfile::read(&path)?;
            Some((path, keys))
        }
        None => None,
    };
    Ok(NodeConfig {
        tls,
        cluster_key,
        limits,
        bind,
        advertise,
        join,
        settings,
        console_hold,
        cs_file: args.cs_file.clone().or(file.node.cs_file),
        data_dir: args.data_dir.clone().or(file.node.data_dir),
        log_format: args.log_format.or(file.node.log_format).unwrap_or_default(),
        log_level,
        requests: args.requests.unwrap_or(0),
        stay: args.stay,
        api,
    })
}

/// All three TLS files or none; the files are read and checked here, so a
/// bad one stops the node at start with one line.
fn resolve_tls(
    args: &NodeFlags,
    [file_cert, file_key, file_ca]: [&Option<PathBuf>; 3],
    advertise: SocketAddr,
) -> Result<Option<std::sync::Arc<crate::runtime::transport::tls::PeerTls>>> {
    let cert = args.tls_cert.clone().or(file_cert.clone());
    let key = args.tls_key.clone().or(file_key.clone());
    let ca = args.tls_ca.clone().or(file_ca.clone());
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => {
            let files = crate::runtime::transport::tls::TlsFiles { cert, key, ca };
            let tls = crate::runtime::transport::tls::load(files, advertise.ip())?;
            Ok(Some(std::sync::Arc::new(tls)))
        }
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                ("--tls-cert", cert.is_none()),
                ("--tls-key", key.is_none()),
                ("--tls-ca", ca.is_none()),
            ]
            .into_iter()
            .filter_map(|(flag, absent)| absent.then_some(flag))
            .collect();
            bail!(
                "--tls-cert, --tls-key and --tls-ca go together (or tls_cert, tls_key and tls_ca in the config file): {} missing",
                missing.join(" and ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_only_binds_everywhere_and_advertises_loopback() {
        let args = NodeFlags {
            bind: Some(":7000".into()),
            join: vec![":7001".into()],
            ..NodeFlags::default()
        };
        let config = resolve(&args).expect("valid");
        assert_eq!(config.bind, "0.0.0.0:7000".parse().expect("addr"));
        assert_eq!(config.advertise, "127.0.0.1:7000".parse().expect("addr"));
        assert_eq!(config.join, vec!["127.0.0.1:7001".parse().expect("addr")]);
        assert!(config.binds_all_interfaces());
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        for bad in ["7000", ":70000", ":x", "[::1]"] {
            let args = NodeFlags {
                bind: Some(bad.into()),
                ..NodeFlags::default()
            };
            let message = format!("{:#}", resolve(&args).expect_err(bad));
            assert!(message.contains("bad --bind address"), "{bad}: {message}");
        }
    }

    #[test]
    fn the_shipped_config_file_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ra.toml");
        let args = NodeFlags {
            bind: Some(":7000".into()),
            config: Some(path),
            ..NodeFlags::default()
        };
        let config = resolve(&args).expect("config/ra.toml parses");
        assert_eq!(config.settings, NodeSettings::default());
    }

    #[test]
    fn data_dir_comes_from_the_file_and_the_flag_wins() {
        let dir = tempfile::Builder::new()
            .prefix("ra-config-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("dd.toml");
        std::fs::write(&path, "[node]\ndata_dir = \"/var/lib/ra\"\n").expect("write");
        let mut args = NodeFlags {
            bind: Some(":7000".into()),
            config: Some(path),
            ..NodeFlags::default()
        };
        let from_file = resolve(&args).expect("valid").data_dir;
        assert_eq!(from_file, Some(PathBuf::from("/var/lib/ra")));
        args.data_dir = Some(PathBuf::from("/srv/ra"));
        assert_eq!(
            resolve(&args).expect("valid").data_dir,
            Some(PathBuf::from("/srv/ra"))
        );
        assert_eq!(
            resolve(&NodeFlags {
                bind: Some(":7000".into()),
                ..NodeFlags::default()
            })
            .expect("valid")
            .data_dir,
            None
        );
    }

    #[test]
    fn unknown_keys_are_reported_with_their_line() {
        let dir = tempfile::Builder::new()
            .prefix("ra-config-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[node]\nmax_active = 3\nhold = 5\n").expect("write");
        let args = NodeFlags {
            bind: Some(":7000".into()),
            config: Some(path),
            ..NodeFlags::default()
        };
        let message = format!("{:#}", resolve(&args).expect_err("unknown key"));
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("hold"), "{message}");
    }
}
