//! Applying and removing the rules in the current network namespace.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::rules::{JUMPS, MANGLE_CHAINS, NAT_CHAINS, Plan, TPROXY_TABLE};

/// Why the rules could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A tool could not be started (not installed, not on PATH).
    #[error("cannot run {tool}: {source} (install the iptables and iproute2 packages)")]
    Spawn {
        /// The tool.
        tool: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and refused the rules.
    #[error(
        "{command} failed: {stderr} (interception needs root or CAP_NET_ADMIN in the pod's network namespace)"
    )]
    Failed {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

fn run(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<(), ApplyError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ApplyError::Spawn {
            tool: tool.to_string(),
            source,
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| ApplyError::Spawn {
                tool: tool.to_string(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| ApplyError::Spawn {
            tool: tool.to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ApplyError::Failed {
            command: format!("{tool} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Removes everything [`apply`] adds; absent rules are not an error, so
/// cleanup is safe to run any number of times.
pub fn cleanup() -> Result<(), ApplyError> {
    for (table, builtin, ours) in JUMPS {
        // A rule may have been added more than once by an older tool; the
        // bound only guards against a loop if deletion kept "succeeding".
        for _ in 0..64 {
            if run(
                "iptables",
                &["-w", "-t", table, "-D", builtin, "-p", "tcp", "-j", ours],
                None,
            )
            .is_err()
            {
                break;
            }
        }
    }
    for (table, chains) in [("nat", &NAT_CHAINS[..]), ("mangle", &MANGLE_CHAINS[..])] {
        for chain in chains {
            let _ = run("iptables", &["-w", "-t", table, "-F", chain], None);
        }
        for chain in chains {
            let _ = run("iptables", &["-w", "-t", table, "-X", chain], None);
        }
    }
    for _ in 0..64 {
        if run("ip", &["-4", "rule", "del", "lookup", TPROXY_TABLE], None).is_err() {
            break;
        }
    }
    let _ = run("ip", &["-4", "route", "flush", "table", TPROXY_TABLE], None);
    Ok(())
}

/// Applies the plan: removes any earlier rules, then writes the new ones in
/// one `iptables-restore` transaction (all or nothing per table).
pub fn apply(plan: &Plan) -> Result<(), ApplyError> {
    cleanup()?;
    run(
        "iptables-restore",
        &["-w", "--noflush"],
        Some(&plan.restore_script()),
    )?;
    for cmd in &plan.ip_commands {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        run("ip", &args, None)?;
    }
    Ok(())
}
