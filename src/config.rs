//! Settings: built-in defaults, then the config file, then flags; validated once
//! here so the rest of the program can trust them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cli::{LogFormat, NodeArgs};
use crate::membership::settings::SwimSettings;
use crate::node::NodeSettings;

/// Everything needed to run one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub bind: SocketAddr,
    pub advertise: SocketAddr,
    pub join: Vec<SocketAddr>,
    pub settings: NodeSettings,
    pub cs_file: Option<PathBuf>,
    pub log_format: LogFormat,
    pub requests: u32,
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
    log_format: Option<LogFormat>,
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
            Some(line) => anyhow::anyhow!("config file {}, line {line}: {message}", path.display()),
            None => anyhow::anyhow!("config file {}: {message}", path.display()),
        }
    })
}

/// Merge defaults, the config file and the flags; check the result.
pub fn resolve(args: &NodeArgs) -> Result<NodeConfig> {
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
    if bind.port() == 0 {
        bail!("--bind needs a fixed port: peers reach this node by it, on UDP and TCP alike");
    }
    let advertise = match args.advertise.clone().or(file.node.advertise.clone()) {
        Some(text) => parse_peer(&text, "--advertise")?,
        None if bind.ip().is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bind.port())
        }
        None => bind,
    };
    if advertise.ip().is_unspecified() || advertise.port() == 0 {
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
        if n == 0 {
            bail!("--max-active must be at least 1");
        }
        settings.max_active = n;
    }
    if let Some(n) = args.hold_ms.or(file.node.hold_ms) {
        settings.hold = ms(n);
    }
    let c = &file.cluster;
    let apply = |target: &mut Duration, value: Option<u64>| {
        if let Some(v) = value {
            *target = ms(v);
        }
    };
    apply(&mut settings.found_after, c.found_after_ms);
    apply(&mut settings.retry_join_every, c.retry_join_ms);
    apply(&mut settings.takeover_after, c.takeover_after_ms);
    apply(&mut settings.proposal_timeout, c.proposal_timeout_ms);
    apply(&mut settings.leave_timeout, c.leave_timeout_ms);
    apply(&mut settings.tick, c.tick_ms);
    for (name, value) in [
        ("cluster.retry_join_ms", settings.retry_join_every),
        ("cluster.proposal_timeout_ms", settings.proposal_timeout),
        ("cluster.tick_ms", settings.tick),
    ] {
        if value.is_zero() {
            bail!("{name} must be positive");
        }
    }

    let s = &file.swim;
    let mut swim = SwimSettings::default();
    apply(&mut swim.probe_period, s.probe_period_ms);
    apply(&mut swim.probe_rtt, s.probe_rtt_ms);
    apply(&mut swim.suspect_to_down_after, s.suspect_to_down_after_ms);
    apply(&mut swim.gossip_every, s.gossip_every_ms);
    apply(&mut swim.announce_every, s.announce_every_ms);
    apply(
        &mut swim.announce_to_down_every,
        s.announce_to_down_every_ms,
    );
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

    Ok(NodeConfig {
        bind,
        advertise,
        join,
        settings,
        cs_file: args.cs_file.clone().or(file.node.cs_file),
        log_format: args.log_format.or(file.node.log_format).unwrap_or_default(),
        requests: args.requests.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_only_binds_everywhere_and_advertises_loopback() {
        let args = NodeArgs {
            bind: Some(":7000".into()),
            join: vec![":7001".into()],
            ..NodeArgs::default()
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
            let args = NodeArgs {
                bind: Some(bad.into()),
                ..NodeArgs::default()
            };
            let message = format!("{:#}", resolve(&args).expect_err(bad));
            assert!(message.contains("bad --bind address"), "{bad}: {message}");
        }
    }

    #[test]
    fn the_shipped_config_file_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ra.toml");
        let args = NodeArgs {
            bind: Some(":7000".into()),
            config: Some(path),
            ..NodeArgs::default()
        };
        let config = resolve(&args).expect("config/ra.toml parses");
        assert_eq!(config.settings, NodeSettings::default());
    }

    #[test]
    fn unknown_keys_are_reported_with_their_line() {
        let dir = std::env::temp_dir().join(format!("ra-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[node]\nmax_active = 3\nhold = 5\n").expect("write");
        let args = NodeArgs {
            bind: Some(":7000".into()),
            config: Some(path),
            ..NodeArgs::default()
        };
        let message = format!("{:#}", resolve(&args).expect_err("unknown key"));
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("hold"), "{message}");
    }
}
