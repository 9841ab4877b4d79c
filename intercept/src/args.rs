//! The `mesh-proxy init` command line, with Istio's short flags so existing
//! habits (and istio-iptables invocations) carry over.

use crate::apply::{ApplyError, apply, cleanup};
use crate::config::{
    InterceptConfig, InterceptMode, ParseError, parse_cidrs, parse_port_selection, parse_ports,
};
use crate::rules::Plan;

/// Flags of `mesh-proxy init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Port of the proxy's outbound listener.
    #[arg(short = 'p', long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Port of the proxy's inbound listener.
    #[arg(short = 'z', long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// uid the proxy runs as (its traffic is never redirected).
    #[arg(short = 'u', long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// gid the proxy runs as.
    #[arg(short = 'g', long, default_value_t = 1337)]
    pub proxy_gid: u32,
    /// Inbound capture mode.
    #[arg(short = 'm', long, value_enum, default_value_t = InterceptMode::Redirect)]
    pub mode: InterceptMode,
    /// Inbound ports to capture: `*` or a comma-separated list.
    #[arg(short = 'b', long, default_value = "*")]
    pub inbound_ports: String,
    /// Inbound ports never captured (comma-separated).
    #[arg(short = 'd', long, default_value = "15020,15021,15090")]
    pub exclude_inbound_ports: String,
    /// Outbound CIDRs to capture: `*` or a comma-separated list.
    #[arg(short = 'i', long, default_value = "*")]
    pub include_outbound_cidrs: String,
    /// Outbound CIDRs never captured (comma-separated).
    #[arg(short = 'x', long, default_value = "")]
    pub exclude_outbound_cidrs: String,
    /// Outbound ports never captured (comma-separated).
    #[arg(short = 'o', long, default_value = "")]
    pub exclude_outbound_ports: String,
    /// Print the rules instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the rules instead of adding them.
    #[arg(long, conflicts_with = "dry_run")]
    pub cleanup: bool,
}

/// Why `mesh-proxy init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A flag value is malformed.
    #[error("--{flag}: {source}")]
    Flag {
        /// The flag's long name.
        flag: &'static str,
        /// What is wrong with the value.
        #[source]
        source: ParseError,
    },
    /// Applying or removing the rules failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl InitArgs {
    /// Turns the flags into a configuration, naming the flag that is wrong.
    pub fn config(&self) -> Result<InterceptConfig, InitError> {
        let flag = |flag: &'static str| move |source| InitError::Flag { flag, source };
        Ok(InterceptConfig {
            mode: self.mode,
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid,
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            inbound_ports: parse_port_selection(&self.inbound_ports)
                .map_err(flag("inbound-ports"))?,
            exclude_inbound_ports: parse_ports(&self.exclude_inbound_ports)
                .map_err(flag("exclude-inbound-ports"))?,
            include_outbound_cidrs: parse_cidrs(&self.include_outbound_cidrs)
                .map_err(flag("include-outbound-cidrs"))?,
            exclude_outbound_cidrs: parse_cidrs(&self.exclude_outbound_cidrs)
                .map_err(flag("exclude-outbound-cidrs"))?,
            exclude_outbound_ports: parse_ports(&self.exclude_outbound_ports)
                .map_err(flag("exclude-outbound-ports"))?,
            tproxy_mark: 1337,
        })
    }
}

/// Runs `mesh-proxy init`: applies, prints (`--dry-run`) or removes
/// (`--cleanup`) the rules; returns what to print on stdout.
pub fn run_init(args: &InitArgs) -> Result<String, InitError> {
    if args.cleanup {
        cleanup()?;
        return Ok("interception rules removed\n".into());
    }
    let plan = Plan::new(&args.config()?);
    if args.dry_run {
        return Ok(plan.describe());
    }
    apply(&plan)?;
    Ok(format!(
        "interception rules applied ({} nat, {} mangle)\n",
        plan.nat.len(),
        plan.mangle.len()
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    #[test]
    fn istio_short_flags_parse_into_the_config() {
        let cli = Cli::try_parse_from([
            "init",
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-m",
            "TPROXY",
            "-b",
            "9080,9090",
            "-x",
            "10.96.0.0/12",
            "-o",
            "5432",
        ])
        .unwrap();
        let cfg = cli.init.config().unwrap();
        assert_eq!(cfg.mode, InterceptMode::Tproxy);
        assert_eq!(
            cfg.inbound_ports,
            crate::PortSelection::Only(vec![9080, 9090])
        );
        assert_eq!(cfg.exclude_outbound_ports, vec![5432]);
        assert_eq!(cfg.exclude_outbound_cidrs[0].to_string(), "10.96.0.0/12");
    }

    #[test]
    fn bad_flag_value_names_the_flag() {
        let cli = Cli::try_parse_from(["init", "--inbound-ports", "80,http"]).unwrap();
        assert_eq!(
            cli.init.config().unwrap_err().to_string(),
            "--inbound-ports: \"http\" is not a port number (1-65535)"
        );
    }

    #[test]
    fn dry_run_prints_without_touching_the_system() {
        let cli = Cli::try_parse_from(["init", "--dry-run"]).unwrap();
        let out = run_init(&cli.init).unwrap();
        assert!(
            out.starts_with("# iptables-restore --noflush <<EOF\n*nat\n"),
            "{out}"
        );
    }
}
