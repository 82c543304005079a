//! The tools around the node: `ra demo`, `ra check`, `ra trace`, `ra bench`.

pub mod bench;
pub mod check;
pub mod demo;
pub mod time;
pub mod trace;

/// A loopback port free right now for both UDP and TCP: a node needs the same
/// port number for SWIM and gRPC.
pub fn free_loopback_port() -> anyhow::Result<u16> {
    use std::net::{Ipv4Addr, TcpListener, UdpSocket};
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let port = udp.local_addr()?.port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("found no loopback port free for both UDP and TCP")
}
