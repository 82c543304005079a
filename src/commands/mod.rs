//! The client commands: `ra lock`, `ra status`, `ra members`. Each talks to a
//! node's client API over its local Unix socket (`proto/ra/v1/lock.proto`).

pub mod lock_command;
pub mod status;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tonic::transport::{Channel, Endpoint};

use crate::config::default_api_path;
use crate::wire::pb::lock_client::LockClient;

/// Exit statuses of `ra lock` beyond CMD's own (documented in README).
pub mod exit {
    /// The node could not be reached, or went away before the lock was granted.
    pub const NODE_UNREACHABLE: u8 = 69;
    /// The lock was lost while CMD ran (CMD was stopped).
    pub const LOCK_LOST: u8 = 75;
    /// `--timeout` ran out, or `--try` found the lock taken.
    pub const TIMED_OUT: u8 = 124;
    /// `ra lock` itself failed (bad arguments, a bad lock name).
    pub const OWN_ERROR: u8 = 125;
    /// CMD was found but could not run.
    pub const CANNOT_RUN: u8 = 126;
    /// CMD was not found.
    pub const NOT_FOUND: u8 = 127;
}

/// Where the API of `node` listens: a path (anything with a `/`) as given;
/// `:PORT`, `PORT` or `HOST:PORT` is the node started with `--bind` on that
/// port on this machine.
pub fn api_socket(node: &str) -> Result<PathBuf> {
    if node.contains('/') {
        return Ok(PathBuf::from(node));
    }
    let port_text = node.rsplit(':').next().unwrap_or(node);
    let port: u16 = port_text.parse().with_context(|| {
        format!("bad --node {node:?}: expected :PORT, PORT, HOST:PORT or the API socket's path")
    })?;
    if port == 0 {
        bail!("bad --node {node:?}: port 0 names no node");
    }
    Ok(default_api_path(port))
}

/// Connect to the API of `node`.
pub async fn connect(node: &str) -> Result<(LockClient<Channel>, PathBuf)> {
    let path = api_socket(node)?;
    if !path.exists() {
        bail!(
            "no node API at {} (is a node running with --bind {}? give --node PORT or the socket's path)",
            path.display(),
            node
        );
    }
    let endpoint = Endpoint::from_shared(format!("unix:{}", path.display()))
        .with_context(|| format!("bad API socket path {}", path.display()))?
        .connect_timeout(Duration::from_secs(2));
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the node API at {}", path.display()))?;
    Ok((LockClient::new(channel), path))
}

/// `30s`, `500ms`, `2m`, `1h 30m`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return if seconds.is_finite() && (0.0..=1e9).contains(&seconds) {
            Ok(Duration::from_secs_f64(seconds))
        } else {
            Err(format!(
                "{text:?} is not a duration from 0 s to a billion seconds"
            ))
        };
    }
    let parsed: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 30s, 500ms or 2m: {e}"))?;
    if parsed.is_negative() {
        return Err(format!("{text:?} is negative"));
    }
    Duration::try_from(parsed).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_arguments_name_the_api_socket() {
        let by_port = default_api_path(7001);
        assert_eq!(api_socket(":7001").expect("valid"), by_port);
        assert_eq!(api_socket("7001").expect("valid"), by_port);
        assert_eq!(api_socket("127.0.0.1:7001").expect("valid"), by_port);
        assert_eq!(
            api_socket("/run/ra/x.sock").expect("valid"),
            PathBuf::from("/run/ra/x.sock")
        );
        assert!(api_socket(":x").is_err());
        assert!(api_socket(":0").is_err());
        assert!(api_socket(":70000").is_err());
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-3s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1e300").is_err());
    }
}
