//! The original destination of a redirected connection.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The destination the client meant: `SO_ORIGINAL_DST` under iptables
/// REDIRECT, else the local address (TPROXY keeps the original address as
/// the local one; without interception it is the listener's own address).
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    from_netfilter(stream).or_else(|| stream.local_addr().ok())
}

#[cfg(target_os = "linux")]
fn from_netfilter(stream: &TcpStream) -> Option<SocketAddr> {
    use nix::sys::socket::{SockaddrIn, SockaddrIn6, getsockopt, sockopt};
    let local = stream.local_addr().ok()?;
    let addr = if local.is_ipv4() {
        let sin = getsockopt(stream, sockopt::OriginalDst).ok()?;
        SocketAddr::V4(SockaddrIn::from(sin).into())
    } else {
        let sin6 = getsockopt(stream, sockopt::Ip6tOriginalDst).ok()?;
        SocketAddr::V6(SockaddrIn6::from(sin6).into())
    };
    // Without a REDIRECT rule the kernel may report the socket's own
    // address; either way it is the right answer.
    Some(addr)
}

#[cfg(not(target_os = "linux"))]
fn from_netfilter(_stream: &TcpStream) -> Option<SocketAddr> {
    None
}
