//! `meshctl proxy-status`: xDS sync state of every proxy, as meshd sees it
//! (`/debug/syncz`), in istioctl's layout.

use std::fmt::Write as _;

use crate::access::{AccessArgs, AccessError, MeshdAccess};
use crate::resources::Output;

/// Flags of `meshctl proxy-status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One proxy to explain in detail (its NAME or node id).
    pub name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
    /// Where meshd is, and how to reach it.
    #[command(flatten)]
    pub access: AccessArgs,
}

const TYPES: [&str; 4] = ["CDS", "LDS", "EDS", "RDS"];

/// Fetches meshd's `/debug/syncz`.
pub async fn fetch(access: &MeshdAccess) -> Result<serde_json::Value, AccessError> {
    access.get_json("/debug/syncz").await
}

/// What a command prints, and its exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// The exit code.
    pub code: i32,
    /// Printed on stdout.
    pub stdout: String,
    /// Printed on stderr.
    pub stderr: String,
}

impl Rendered {
    /// Prints both streams and returns the exit code.
    pub fn print(self) -> i32 {
        print!("{}", self.stdout);
        eprint!("{}", self.stderr);
        self.code
    }
}

/// Renders `/debug/syncz`: the table of every proxy, or one proxy (`name`)
/// explained.
pub fn render(
    syncz: &serde_json::Value,
    name: Option<&str>,
    output: Output,
) -> anyhow::Result<Rendered> {
    let proxies = syncz["proxies"].as_array().cloned().unwrap_or_default();
    let cp = syncz["control_plane"]
        .as_str()
        .unwrap_or("meshd")
        .to_string();
    if let Some(name) = name {
        let Some(p) = proxies
            .iter()
            .find(|p| p["name"] == name || p["node"]["id"] == name)
        else {
            return Ok(Rendered {
                code: 1,
                stdout: String::new(),
                stderr: format!(
                    "no connected proxy named {name:?}; list them with `meshctl proxy-status`\n"
                ),
            });
        };
        return explain(p, output);
    }
    let stdout = match output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&proxies)?),
        Output::Yaml => serde_saphyr::to_string(&proxies)?,
        Output::Table => table(&proxies, &cp),
    };
    Ok(Rendered {
        code: 0,
        stdout,
        stderr: String::new(),
    })
}

/// Runs `meshctl proxy-status`.
pub async fn run(args: Args) -> anyhow::Result<i32> {
    let access = args.access.resolve().await?;
    let syncz = match fetch(&access).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    Ok(render(&syncz, args.name.as_deref(), args.output)?.print())
}

/// istioctl's table: `NAME CLUSTER CDS LDS EDS RDS CONTROL-PLANE VERSION`.
pub fn table(proxies: &[serde_json::Value], control_plane: &str) -> String {
    let mut rows = vec![
        [
            "NAME",
            "CLUSTER",
            "CDS",
            "LDS",
            "EDS",
            "RDS",
            "CONTROL-PLANE",
            "VERSION",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in proxies {
        let mut row = vec![
            p["name"].as_str().unwrap_or("").to_string(),
            p["node"]["cluster"].as_str().unwrap_or("").to_string(),
        ];
        for t in TYPES {
            row.push(p["states"][t].as_str().unwrap_or("NOT SENT").to_string());
        }
        row.push(control_plane.to_string());
        row.push(p["node"]["version"].as_str().unwrap_or("").to_string());
        rows.push(row);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn explain(p: &serde_json::Value, output: Output) -> anyhow::Result<Rendered> {
    let mut out = String::new();
    match output {
        Output::Json => {
            out = format!("{}\n", serde_json::to_string_pretty(p)?);
        }
        Output::Yaml => out = serde_saphyr::to_string(p)?,
        Output::Table => {}
    }
    if output != Output::Table {
        return Ok(Rendered {
            code: 0,
            stdout: out,
            stderr: String::new(),
        });
    }
    writeln!(
        out,
        "Proxy {} (node {})",
        p["name"].as_str().unwrap_or(""),
        p["node"]["id"].as_str().unwrap_or("")
    )?;
    writeln!(
        out,
        "  stream: {}, snapshot {}",
        p["protocol"].as_str().unwrap_or(""),
        p["snapshot_version"]
    )?;
    let mut code = 0;
    for t in TYPES {
        let s = &p["types"][t];
        let state = p["states"][t].as_str().unwrap_or("NOT SENT");
        writeln!(
            out,
            "  {t}: {state} (sent {}, acked {}, {} resources)",
            s["sent_version"].as_str().unwrap_or("-"),
            s["acked_version"].as_str().unwrap_or("-"),
            s["resources"].as_u64().unwrap_or(0)
        )?;
        match state {
            "ERROR" => {
                code = 1;
                writeln!(
                    out,
                    "    the proxy rejected version {} and keeps serving its last good config:\n    {}",
                    s["nack_version"].as_str().unwrap_or("?"),
                    s["nack_message"].as_str().unwrap_or("")
                )?;
                writeln!(
                    out,
                    "    fix the resource it names (meshctl get ... -o yaml), then re-apply"
                )?;
            }
            "STALE" => {
                code = 1;
                writeln!(
                    out,
                    "    sent but not yet acknowledged; if this persists the proxy is stuck or overloaded"
                )?;
                if let Some(m) = s["nack_message"].as_str() {
                    writeln!(out, "    last rejection: {m}")?;
                }
            }
            _ => {}
        }
    }
    Ok(Rendered {
        code,
        stdout: out,
        stderr: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_istioctl_columns() {
        let p = serde_json::json!({
            "name": "a.default",
            "node": {"cluster": "a", "version": "1.40.0"},
            "states": {"CDS": "SYNCED", "LDS": "SYNCED", "EDS": "ERROR", "RDS": "NOT SENT"}
        });
        let t = table(&[p], "meshd 0.1.0");
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[0].contains("CONTROL-PLANE"));
        assert!(lines[1].contains("ERROR") && lines[1].contains("NOT SENT"));
    }
}
