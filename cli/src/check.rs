//! `meshctl check`: health checks of the local mesh in the style of
//! `linkerd check`: `√` passed, `‼` warning, `×` failed, each failure with
//! a hint saying what to do. Exit code 1 when any check fails.
//!
//! Thresholds: the CA root warns with fewer than 30 days left; clock skew
//! between meshctl and meshd warns above 1 s and fails above 60 s (the CA
//! backdates certificates by 60 s, so a larger skew makes fresh
//! certificates look not yet valid to one side).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::access::{AccessArgs, AccessError, MeshdAccess};

/// Days of CA root validity below which `check` warns.
pub const ROOT_WARN_DAYS: i64 = 30;
/// Clock skew above which `check` warns.
pub const SKEW_WARN: Duration = Duration::from_secs(1);
/// Clock skew above which `check` fails.
pub const SKEW_FAIL: Duration = Duration::from_secs(60);

/// Flags of `meshctl check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: Format,
    /// Where meshd is, and how to reach it.
    #[command(flatten)]
    pub access: AccessArgs,
}

/// Output formats of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// √ / ‼ / × lines.
    Text,
    /// Machine-readable JSON.
    Json,
}

/// How one check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Passed (√).
    Ok,
    /// Worth a look (‼); does not fail the run.
    Warning,
    /// Failed (×); the run exits 1.
    Error,
}

impl Outcome {
    fn mark(self) -> &'static str {
        match self {
            Outcome::Ok => "√",
            Outcome::Warning => "‼",
            Outcome::Error => "×",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it went.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do about a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

fn check(name: &str, outcome: Outcome, detail: String, hint: Option<&str>) -> Check {
    Check {
        name: name.into(),
        outcome,
        detail,
        hint: hint.map(str::to_string),
    }
}

/// Every check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How meshd was reached (its address, or its Service via the API server).
    pub meshd: String,
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// Whether no check failed.
    pub success: bool,
}

impl Report {
    fn new(meshd: &str, checks: Vec<Check>) -> Self {
        let success = checks.iter().all(|c| c.outcome != Outcome::Error);
        Self {
            meshd: meshd.into(),
            checks,
            success,
        }
    }

    /// The process exit code: 1 when a check failed.
    pub fn exit_code(&self) -> i32 {
        if self.success { 0 } else { 1 }
    }

    /// The √ / ‼ / × lines.
    pub fn text(&self) -> String {
        let mut out = format!("meshd ({})\n", self.meshd);
        out.push_str(&"-".repeat(out.len() - 1));
        out.push('\n');
        for c in &self.checks {
            out.push_str(&format!("{} {}: {}\n", c.outcome.mark(), c.name, c.detail));
            if let Some(h) = &c.hint {
                out.push_str(&format!("    hint: {h}\n"));
            }
        }
        out.push('\n');
        out.push_str(if self.success {
            "Status check results are √\n"
        } else {
            "Status check results are ×\n"
        });
        out
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn now_ms() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_millis()).unwrap_or(0))
}

/// Checks meshd's version against meshctl's (`control_plane` of
/// `/debug/syncz` reads `meshd X.Y.Z`).
pub fn version_check(syncz: &Value) -> Check {
    let ours = env!("CARGO_PKG_VERSION");
    let theirs = syncz["control_plane"]
        .as_str()
        .and_then(|s| s.strip_prefix("meshd "))
        .unwrap_or("unknown");
    if theirs == ours {
        check(
            "meshd version matches meshctl",
            Outcome::Ok,
            format!("both {ours}"),
            None,
        )
    } else {
        check(
            "meshd version matches meshctl",
            Outcome::Warning,
            format!("meshd {theirs}, meshctl {ours}"),
            Some("run matching versions of meshd and meshctl"),
        )
    }
}

/// Checks the CA roots of `/debug/ca` at `now` (seconds since the epoch).
pub fn ca_check(ca: &Value, now: i64) -> Check {
    const NAME: &str = "CA root certificate is valid";
    let roots = ca["roots"].as_array().cloned().unwrap_or_default();
    if roots.is_empty() {
        return check(
            NAME,
            Outcome::Error,
            "meshd reports no CA root".into(),
            Some("check meshd's log and its --ca-dir"),
        );
    }
    let domain = ca["trust_domain"].as_str().unwrap_or("?");
    let mut worst = check(NAME, Outcome::Ok, String::new(), None);
    let mut least_days = i64::MAX;
    for r in &roots {
        let nb = r["not_before"].as_i64().unwrap_or(0);
        let na = r["not_after"].as_i64().unwrap_or(0);
        let subject = r["subject"].as_str().unwrap_or("?");
        if now < nb {
            return check(
                NAME,
                Outcome::Error,
                format!("root {subject} is not valid before {nb} (now {now})"),
                Some("fix the clock of this machine or meshd's"),
            );
        }
        if now > na {
            return check(
                NAME,
                Outcome::Error,
                format!("root {subject} expired"),
                Some("rotate the root: mesh-ca rotate-root --dir <ca-dir>, then restart meshd"),
            );
        }
        least_days = least_days.min((na - now) / 86_400);
    }
    if least_days < ROOT_WARN_DAYS {
        worst.outcome = Outcome::Warning;
        worst.hint = Some(
            "rotate the root soon: mesh-ca rotate-root --dir <ca-dir>, then restart meshd".into(),
        );
    }
    worst.detail = format!(
        "{} root(s) for trust domain {domain}, {least_days} days left",
        roots.len()
    );
    worst
}

/// Checks the skew between meshd's clock (`meshd_ms`) and ours, measured
/// as the midpoint of a request that took `rtt`.
pub fn skew_check(meshd_ms: i128, sent_ms: i128, rtt: Duration) -> Check {
    const NAME: &str = "clock skew between meshctl and meshd";
    let mid = sent_ms + i128::try_from(rtt.as_millis() / 2).unwrap_or(0);
    let skew_ms = meshd_ms - mid;
    // Half the round trip is the measurement's uncertainty.
    let uncertain = i128::try_from(rtt.as_millis() / 2).unwrap_or(0);
    let effective = (skew_ms.abs() - uncertain).max(0);
    let detail = format!("{skew_ms:+} ms (±{uncertain} ms)");
    if effective > i128::try_from(SKEW_FAIL.as_millis()).unwrap_or(i128::MAX) {
        check(
            NAME,
            Outcome::Error,
            detail,
            Some("synchronise the clocks (NTP): certificates are backdated only 60 s"),
        )
    } else if effective > i128::try_from(SKEW_WARN.as_millis()).unwrap_or(i128::MAX) {
        check(
            NAME,
            Outcome::Warning,
            detail,
            Some("synchronise the clocks (NTP)"),
        )
    } else {
        check(NAME, Outcome::Ok, detail, None)
    }
}

/// Checks the proxies of `/debug/syncz`: connected, and none in ERROR or
/// STALE.
pub fn proxy_checks(syncz: &Value) -> Vec<Check> {
    let proxies = syncz["proxies"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    if proxies.is_empty() {
        out.push(check(
            "proxies are connected",
            Outcome::Warning,
            "no proxy is connected".into(),
            Some("start a workload with its sidecar (mesh-proxy run), or meshctl demo"),
        ));
        return out;
    }
    out.push(check(
        "proxies are connected",
        Outcome::Ok,
        format!("{} connected", proxies.len()),
        None,
    ));
    let mut errors = Vec::new();
    let mut stale = Vec::new();
    for p in &proxies {
        let name = p["name"].as_str().unwrap_or("?");
        if let Some(states) = p["states"].as_object() {
            for (ty, s) in states {
                match s.as_str() {
                    Some("ERROR") => errors.push(format!("{name} {ty}")),
                    Some("STALE") => stale.push(format!("{name} {ty}")),
                    _ => {}
                }
            }
        }
    }
    const NAME: &str = "proxies are SYNCED";
    out.push(if !errors.is_empty() {
        check(
            NAME,
            Outcome::Error,
            format!("rejected config: {}", errors.join(", ")),
            Some("meshctl proxy-status <name> shows the proxy's error; fix that resource and re-apply"),
        )
    } else if !stale.is_empty() {
        check(
            NAME,
            Outcome::Warning,
            format!("not yet acknowledged: {}", stale.join(", ")),
            Some("re-run in a few seconds; if it persists, the proxy is stuck (meshctl proxy-status <name>)"),
        )
    } else {
        check(NAME, Outcome::Ok, "all SYNCED".into(), None)
    });
    out.push(check(
        "proxy certificates are valid",
        Outcome::Warning,
        "skipped: meshd does not track proxies' certificates".into(),
        Some("check one proxy with meshctl proxy-config secret --admin <its admin address>"),
    ));
    out
}

/// The hint for a meshd that could not be asked.
fn unreachable_hint(e: &AccessError) -> &'static str {
    match e {
        AccessError::Status { .. } => "is --meshd / MESHD_ADDR meshd's debug address (port 15014)?",
        AccessError::ApiServer { .. } => {
            "check meshd's pods and their logs in that namespace, or pass --mesh-namespace / --meshd"
        }
        AccessError::Config(_) | AccessError::Kube(_) => {
            "check --kubeconfig / --context (kubectl get pods should work), or pass --meshd"
        }
        _ => "start meshd, or point --meshd / MESHD_ADDR at it",
    }
}

/// Runs every check against meshd, reached through `access`.
pub async fn run_checks(access: &MeshdAccess) -> Report {
    let meshd = access.to_string();
    let mut checks = Vec::new();
    let syncz = match access.get_json("/debug/syncz").await {
        Ok(v) => {
            checks.push(check(
                "meshd is reachable",
                Outcome::Ok,
                format!("{meshd} answers"),
                None,
            ));
            v
        }
        Err(e) => {
            checks.push(check(
                "meshd is reachable",
                Outcome::Error,
                e.to_string(),
                Some(unreachable_hint(&e)),
            ));
            return Report::new(&meshd, checks);
        }
    };
    checks.push(version_check(&syncz));
    let sent = now_ms();
    let start = Instant::now();
    match access.get_json("/debug/ca").await {
        Ok(ca) => {
            let rtt = start.elapsed();
            checks.push(ca_check(&ca, now_secs()));
            match ca["now_ms"].as_u64() {
                Some(ms) => checks.push(skew_check(i128::from(ms), sent, rtt)),
                None => checks.push(check(
                    "clock skew between meshctl and meshd",
                    Outcome::Warning,
                    "skipped: meshd did not report its time".into(),
                    Some("upgrade meshd"),
                )),
            }
        }
        Err(e @ (AccessError::Status { .. } | AccessError::Json { .. })) => checks.push(check(
            "CA root certificate is valid",
            Outcome::Error,
            format!("/debug/ca: {e}"),
            Some("meshd's embedded CA did not load: check meshd's log and --ca-dir"),
        )),
        Err(e) => checks.push(check(
            "CA root certificate is valid",
            Outcome::Error,
            e.to_string(),
            Some("meshd stopped answering: check that it is still running"),
        )),
    }
    checks.extend(proxy_checks(&syncz));
    Report::new(&meshd, checks)
}

/// Runs `meshctl check`.
pub async fn run(args: Args) -> anyhow::Result<i32> {
    let report = match args.access.resolve().await {
        Ok(access) => run_checks(&access).await,
        Err(e) => Report::new(
            "not resolved",
            vec![check(
                "meshd is reachable",
                Outcome::Error,
                e.to_string(),
                Some(unreachable_hint(&e)),
            )],
        ),
    };
    match args.output {
        Format::Text => print!("{}", report.text()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(report.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_near_expiry_warns_and_expired_root_fails() {
        let ca = |na: i64| {
            serde_json::json!({"trust_domain": "cluster.local",
                "roots": [{"subject": "CN=root", "not_before": 0, "not_after": na}]})
        };
        let day = 86_400;
        assert_eq!(ca_check(&ca(400 * day), day).outcome, Outcome::Ok);
        assert_eq!(ca_check(&ca(10 * day), day).outcome, Outcome::Warning);
        assert_eq!(ca_check(&ca(day - 1), day).outcome, Outcome::Error);
    }

    #[test]
    fn skew_thresholds_allow_for_the_round_trip() {
        let rtt = Duration::from_millis(200);
        assert_eq!(skew_check(1_100, 0, rtt).outcome, Outcome::Ok);
        assert_eq!(skew_check(5_000, 0, rtt).outcome, Outcome::Warning);
        assert_eq!(skew_check(-90_000, 0, rtt).outcome, Outcome::Error);
    }
}
