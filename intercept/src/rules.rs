//! Rule generation: a pure function from [`InterceptConfig`] to the
//! iptables-restore script and `ip` commands that implement it.

use crate::config::{Cidr, InterceptConfig, InterceptMode, PortSelection};

/// The mesh's chains per table, in the order they are created.
pub(crate) const NAT_CHAINS: [&str; 4] = [
    "MESH_INBOUND",
    "MESH_IN_REDIRECT",
    "MESH_OUTPUT",
    "MESH_REDIRECT",
];
pub(crate) const MANGLE_CHAINS: [&str; 3] = ["MESH_INBOUND", "MESH_DIVERT", "MESH_TPROXY"];
/// Jumps from built-in chains into ours: (table, built-in chain, our chain).
pub(crate) const JUMPS: [(&str, &str, &str); 3] = [
    ("nat", "PREROUTING", "MESH_INBOUND"),
    ("nat", "OUTPUT", "MESH_OUTPUT"),
    ("mangle", "PREROUTING", "MESH_INBOUND"),
];
/// Routing table TPROXY uses to deliver marked packets locally (Istio's).
pub(crate) const TPROXY_TABLE: &str = "133";

/// The rules for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `-A ...` lines for the nat table.
    pub nat: Vec<String>,
    /// `-A ...` lines for the mangle table (TPROXY only).
    pub mangle: Vec<String>,
    /// `ip` commands (argv without `ip`) for TPROXY's policy routing.
    pub ip_commands: Vec<Vec<String>>,
}

fn dest(c: &Cidr) -> String {
    if c.prefix == 0 {
        String::new()
    } else {
        format!(" -d {c}")
    }
}

fn inbound_rules(cfg: &InterceptConfig, chain_target: &str, out: &mut Vec<String>) {
    match &cfg.inbound_ports {
        PortSelection::All => {
            for p in &cfg.exclude_inbound_ports {
                out.push(format!("-A MESH_INBOUND -p tcp --dport {p} -j RETURN"));
            }
            out.push(format!("-A MESH_INBOUND -p tcp -j {chain_target}"));
        }
        PortSelection::Only(ports) => {
            for p in ports
                .iter()
                .filter(|p| !cfg.exclude_inbound_ports.contains(p))
            {
                out.push(format!(
                    "-A MESH_INBOUND -p tcp --dport {p} -j {chain_target}"
                ));
            }
        }
    }
}

fn captures_inbound(cfg: &InterceptConfig) -> bool {
    match &cfg.inbound_ports {
        PortSelection::All => true,
        PortSelection::Only(ports) => ports.iter().any(|p| !cfg.exclude_inbound_ports.contains(p)),
    }
}

impl Plan {
    /// Computes the rules.
    pub fn new(cfg: &InterceptConfig) -> Plan {
        let (uid, gid) = (cfg.proxy_uid, cfg.proxy_gid);
        let inbound = captures_inbound(cfg);
        let mut nat = vec![
            format!(
                "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports {}",
                cfg.outbound_port
            ),
            format!(
                "-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
                cfg.inbound_port
            ),
        ];
        let mut mangle = Vec::new();
        let mut ip_commands = Vec::new();
        if inbound {
            match cfg.mode {
                InterceptMode::Redirect => {
                    nat.push("-A PREROUTING -p tcp -j MESH_INBOUND".into());
                    inbound_rules(cfg, "MESH_IN_REDIRECT", &mut nat);
                }
                InterceptMode::Tproxy => {
                    let mark = cfg.tproxy_mark;
                    mangle.push("-A PREROUTING -p tcp -j MESH_INBOUND".into());
                    mangle.push(format!(
                        "-A MESH_DIVERT -j MARK --set-xmark {mark}/0xffffffff"
                    ));
                    mangle.push("-A MESH_DIVERT -j ACCEPT".into());
                    mangle.push(format!(
                        "-A MESH_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port {} --on-ip 0.0.0.0 --tproxy-mark {mark}/0xffffffff",
                        cfg.inbound_port
                    ));
                    // Packets of connections the proxy already owns go
                    // straight to its socket.
                    mangle.push("-A MESH_INBOUND -p tcp -m socket -j MESH_DIVERT".into());
                    inbound_rules(cfg, "MESH_TPROXY", &mut mangle);
                    ip_commands.push(
                        [
                            "-4",
                            "rule",
                            "add",
                            "fwmark",
                            &mark.to_string(),
                            "lookup",
                            TPROXY_TABLE,
                        ]
                        .map(String::from)
                        .to_vec(),
                    );
                    ip_commands.push(
                        [
                            "-4",
                            "route",
                            "add",
                            "local",
                            "0.0.0.0/0",
                            "dev",
                            "lo",
                            "table",
                            TPROXY_TABLE,
                        ]
                        .map(String::from)
                        .to_vec(),
                    );
                }
            }
        }
        nat.push("-A OUTPUT -p tcp -j MESH_OUTPUT".into());
        for p in &cfg.exclude_outbound_ports {
            nat.push(format!("-A MESH_OUTPUT -p tcp --dport {p} -j RETURN"));
        }
        // 127.0.0.6 is the source the inbound proxy uses toward the app.
        nat.push("-A MESH_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN".into());
        if inbound && cfg.mode == InterceptMode::Redirect {
            // The proxy calling its own pod through a service address goes
            // through inbound handling, as it would from another pod.
            nat.push(format!(
                "-A MESH_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner {uid} -j MESH_IN_REDIRECT"
            ));
        }
        nat.push(format!(
            "-A MESH_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN"
        ));
        nat.push(format!(
            "-A MESH_OUTPUT -m owner --uid-owner {uid} -j RETURN"
        ));
        nat.push(format!(
            "-A MESH_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN"
        ));
        nat.push(format!(
            "-A MESH_OUTPUT -m owner --gid-owner {gid} -j RETURN"
        ));
        nat.push("-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN".into());
        for c in &cfg.exclude_outbound_cidrs {
            nat.push(format!("-A MESH_OUTPUT -d {c} -j RETURN"));
        }
        for c in &cfg.include_outbound_cidrs {
            nat.push(format!("-A MESH_OUTPUT{} -j MESH_REDIRECT", dest(c)));
        }
        Plan {
            nat,
            mangle,
            ip_commands,
        }
    }

    /// The `iptables-restore --noflush` input: declaring a chain creates or
    /// flushes it, so re-applying rebuilds the chains instead of appending.
    pub fn restore_script(&self) -> String {
        let mut s = String::from("*nat\n");
        for c in NAT_CHAINS {
            s.push_str(&format!(":{c} - [0:0]\n"));
        }
        for r in &self.nat {
            s.push_str(r);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
        if !self.mangle.is_empty() {
            s.push_str("*mangle\n");
            for c in MANGLE_CHAINS {
                s.push_str(&format!(":{c} - [0:0]\n"));
            }
            for r in &self.mangle {
                s.push_str(r);
                s.push('\n');
            }
            s.push_str("COMMIT\n");
        }
        s
    }

    /// What `--dry-run` prints: the script, then the `ip` commands.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "# iptables-restore --noflush <<EOF\n{}# EOF\n",
            self.restore_script()
        );
        for cmd in &self.ip_commands {
            s.push_str(&format!("ip {}\n", cmd.join(" ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cidrs;

    #[test]
    fn default_redirect_plan_matches_istio_shape() {
        let plan = Plan::new(&InterceptConfig::default());
        let want = "\
*nat
:MESH_INBOUND - [0:0]
:MESH_IN_REDIRECT - [0:0]
:MESH_OUTPUT - [0:0]
:MESH_REDIRECT - [0:0]
-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j MESH_INBOUND
-A MESH_INBOUND -p tcp --dport 15020 -j RETURN
-A MESH_INBOUND -p tcp --dport 15021 -j RETURN
-A MESH_INBOUND -p tcp --dport 15090 -j RETURN
-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT
-A OUTPUT -p tcp -j MESH_OUTPUT
-A MESH_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A MESH_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MESH_IN_REDIRECT
-A MESH_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A MESH_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A MESH_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN
-A MESH_OUTPUT -j MESH_REDIRECT
COMMIT
";
        assert_eq!(plan.restore_script(), want);
        assert!(plan.ip_commands.is_empty());
    }

    #[test]
    fn port_list_and_exclusions_shape_the_rules() {
        let cfg = InterceptConfig {
            inbound_ports: PortSelection::Only(vec![9080, 15021]),
            exclude_outbound_ports: vec![5432],
            exclude_outbound_cidrs: parse_cidrs("10.96.0.1/32").unwrap(),
            include_outbound_cidrs: parse_cidrs("10.0.0.0/8,240.240.0.0/16").unwrap(),
            ..InterceptConfig::default()
        };
        let plan = Plan::new(&cfg);
        let inbound: Vec<_> = plan
            .nat
            .iter()
            .filter(|r| r.starts_with("-A MESH_INBOUND"))
            .collect();
        // 15021 is excluded even though listed: it is the proxy's health port.
        assert_eq!(
            inbound,
            ["-A MESH_INBOUND -p tcp --dport 9080 -j MESH_IN_REDIRECT"]
        );
        let out = plan.nat.join("\n");
        assert!(out.contains("-A MESH_OUTPUT -p tcp --dport 5432 -j RETURN"));
        assert!(out.contains("-A MESH_OUTPUT -d 10.96.0.1/32 -j RETURN\n-A MESH_OUTPUT -d 10.0.0.0/8 -j MESH_REDIRECT\n-A MESH_OUTPUT -d 240.240.0.0/16 -j MESH_REDIRECT"));
        // Exclusions come before the redirect, or they would never match.
        let excl = out.find("--dport 5432").unwrap();
        let redirect = out.find("-j MESH_REDIRECT").unwrap();
        assert!(excl < redirect);
    }

    #[test]
    fn empty_inbound_list_captures_no_inbound_traffic() {
        let cfg = InterceptConfig {
            inbound_ports: PortSelection::Only(vec![]),
            ..InterceptConfig::default()
        };
        let plan = Plan::new(&cfg);
        assert!(
            !plan
                .nat
                .iter()
                .any(|r| r.contains("PREROUTING") || r.contains("-j MESH_IN_REDIRECT"))
        );
        assert!(
            plan.nat
                .iter()
                .any(|r| r == "-A MESH_OUTPUT -j MESH_REDIRECT")
        );
    }

    #[test]
    fn tproxy_moves_inbound_to_mangle_with_policy_routing() {
        let cfg = InterceptConfig {
            mode: InterceptMode::Tproxy,
            ..InterceptConfig::default()
        };
        let plan = Plan::new(&cfg);
        assert!(!plan.nat.iter().any(|r| r.contains("PREROUTING")));
        assert!(
            plan.mangle
                .contains(&"-A MESH_INBOUND -p tcp -j MESH_TPROXY".to_string())
        );
        assert!(
            plan.mangle
                .iter()
                .any(|r| r.contains("TPROXY --on-port 15006")
                    && r.contains("--tproxy-mark 1337/0xffffffff"))
        );
        let script = plan.restore_script();
        assert!(script.contains(
            "*mangle\n:MESH_INBOUND - [0:0]\n:MESH_DIVERT - [0:0]\n:MESH_TPROXY - [0:0]\n"
        ));
        let describe = plan.describe();
        assert!(describe.ends_with("ip -4 rule add fwmark 1337 lookup 133\nip -4 route add local 0.0.0.0/0 dev lo table 133\n"), "{describe}");
    }
}
