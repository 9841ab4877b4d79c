//! What to intercept.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// How inbound connections are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[clap(rename_all = "UPPER")]
pub enum InterceptMode {
    /// NAT REDIRECT (the default, as in Istio): the proxy reads the original
    /// destination with `SO_ORIGINAL_DST`.
    #[default]
    Redirect,
    /// TPROXY for inbound: the original destination is the socket's local
    /// address and the client's address is preserved. Outbound still uses
    /// REDIRECT.
    Tproxy,
}

/// Which inbound ports are captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelection {
    /// Every port (`*`), minus the excluded ones.
    All,
    /// Only these ports (an empty list captures no inbound traffic).
    Only(Vec<u16>),
}

/// An IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

/// Why a flag value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a port number in 1..=65535.
    #[error("{0:?} is not a port number (1-65535)")]
    Port(String),
    /// Not an IPv4 CIDR like 10.0.0.0/8 (IPv6 interception is not supported yet).
    #[error("{0:?} is not an IPv4 CIDR like 10.0.0.0/8 (IPv6 is not supported yet)")]
    Cidr(String),
}

impl FromStr for Cidr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError::Cidr(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| err())?),
            None => (s, 32),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        if prefix > 32 {
            return Err(err());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a comma-separated port list; empty input is an empty list.
pub(crate) fn parse_ports(s: &str) -> Result<Vec<u16>, ParseError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ParseError::Port(p.to_string()))
        })
        .collect()
}

/// Parses `*` or a comma-separated port list.
pub(crate) fn parse_port_selection(s: &str) -> Result<PortSelection, ParseError> {
    if s.trim() == "*" {
        Ok(PortSelection::All)
    } else {
        parse_ports(s).map(PortSelection::Only)
    }
}

/// Parses a comma-separated CIDR list; `*` means everything (0.0.0.0/0).
pub(crate) fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, ParseError> {
    if s.trim() == "*" {
        return Ok(vec![Cidr {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        }]);
    }
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::parse)
        .collect()
}

/// Everything that decides the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptConfig {
    /// REDIRECT or TPROXY for inbound.
    pub mode: InterceptMode,
    /// uid of the proxy; its traffic is never redirected.
    pub proxy_uid: u32,
    /// gid of the proxy; its traffic is never redirected.
    pub proxy_gid: u32,
    /// Port of the proxy's outbound listener.
    pub outbound_port: u16,
    /// Port of the proxy's inbound listener.
    pub inbound_port: u16,
    /// Inbound ports captured.
    pub inbound_ports: PortSelection,
    /// Inbound ports never captured (the proxy's own ports, ssh, ...).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destinations captured (empty: none).
    pub include_outbound_cidrs: Vec<Cidr>,
    /// Outbound destinations never captured.
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Outbound destination ports never captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Packet mark and routing table used by TPROXY.
    pub tproxy_mark: u32,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        InterceptConfig {
            mode: InterceptMode::Redirect,
            proxy_uid: 1337,
            proxy_gid: 1337,
            outbound_port: 15001,
            inbound_port: 15006,
            inbound_ports: PortSelection::All,
            exclude_inbound_ports: vec![15020, 15021, 15090],
            include_outbound_cidrs: vec![Cidr {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
            }],
            exclude_outbound_cidrs: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            tproxy_mark: 1337,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_parse_and_bad_ones_say_why() {
        assert_eq!(parse_ports("80, 443,").unwrap(), vec![80, 443]);
        assert_eq!(parse_ports("").unwrap(), Vec::<u16>::new());
        assert_eq!(
            parse_ports("80,0").unwrap_err().to_string(),
            "\"0\" is not a port number (1-65535)"
        );
        assert_eq!(parse_port_selection("*").unwrap(), PortSelection::All);
        assert_eq!(
            parse_cidrs("10.0.0.0/8,1.2.3.4").unwrap()[1].to_string(),
            "1.2.3.4/32"
        );
        assert_eq!(parse_cidrs("*").unwrap()[0].to_string(), "0.0.0.0/0");
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert_eq!(
            parse_cidrs("fd00::/8").unwrap_err().to_string(),
            "\"fd00::/8\" is not an IPv4 CIDR like 10.0.0.0/8 (IPv6 is not supported yet)"
        );
    }
}
