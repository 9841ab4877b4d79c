//! `meshctl proxy-status`: xDS sync state of every proxy, as meshd sees it
//! (`/debug/syncz`), in istioctl's layout.

use crate::resources::{MeshdArgs, Output, request};

/// Flags of `meshctl proxy-status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One proxy to explain in detail (its NAME or node id).
    pub name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
    /// Where meshd is.
    #[command(flatten)]
    pub meshd: MeshdArgs,
    /// Namespace of meshd's Service when reached through the Kubernetes API
    /// server (used when --meshd/MESHD_ADDR are not given and a kubeconfig is).
    #[arg(long = "mesh-namespace", default_value = "mesh-system")]
    pub mesh_namespace: String,
}

/// Fetches `/debug/syncz` through the API server when meshd's address was
/// left at its default and a Kubernetes config is available.
async fn syncz_via_api_server(args: &Args) -> Option<anyhow::Result<serde_json::Value>> {
    if args.meshd.meshd != crate::resources::DEFAULT_MESHD
        || std::env::var_os("MESHD_ADDR").is_some()
    {
        return None;
    }
    let client = kube::Client::try_default().await.ok()?;
    let access = crate::access::MeshdAccess::ApiServer(client, args.mesh_namespace.clone());
    Some(match access.get("/debug/syncz").await {
        Ok(body) => serde_json::from_slice(&body).map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    })
}

const TYPES: [&str; 4] = ["CDS", "LDS", "EDS", "RDS"];

/// Runs `meshctl proxy-status`.
pub async fn run(args: Args) -> anyhow::Result<i32> {
    let syncz = match syncz_via_api_server(&args).await {
        Some(r) => r?,
        None => {
            let (status, syncz) =
                request(&args.meshd.meshd, "GET", "/debug/syncz", String::new()).await?;
            if status != 200 {
                eprintln!("error: meshd answered {status}: {syncz}");
                return Ok(1);
            }
            syncz
        }
    };
    let proxies = syncz["proxies"].as_array().cloned().unwrap_or_default();
    let cp = syncz["control_plane"]
        .as_str()
        .unwrap_or("meshd")
        .to_string();
    if let Some(name) = &args.name {
        let Some(p) = proxies
            .iter()
            .find(|p| p["name"] == name.as_str() || p["node"]["id"] == name.as_str())
        else {
            eprintln!("no connected proxy named {name:?}; list them with `meshctl proxy-status`");
            return Ok(1);
        };
        return explain(p, args.output);
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&proxies)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&proxies)?),
        Output::Table => print!("{}", table(&proxies, &cp)),
    }
    Ok(0)
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

fn explain(p: &serde_json::Value, output: Output) -> anyhow::Result<i32> {
    match output {
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(p)?);
            return Ok(0);
        }
        Output::Yaml => {
            print!("{}", serde_saphyr::to_string(p)?);
            return Ok(0);
        }
        Output::Table => {}
    }
    println!(
        "Proxy {} (node {})",
        p["name"].as_str().unwrap_or(""),
        p["node"]["id"].as_str().unwrap_or("")
    );
    println!(
        "  stream: {}, snapshot {}",
        p["protocol"].as_str().unwrap_or(""),
        p["snapshot_version"]
    );
    let mut code = 0;
    for t in TYPES {
        let s = &p["types"][t];
        let state = p["states"][t].as_str().unwrap_or("NOT SENT");
        println!(
            "  {t}: {state} (sent {}, acked {}, {} resources)",
            s["sent_version"].as_str().unwrap_or("-"),
            s["acked_version"].as_str().unwrap_or("-"),
            s["resources"].as_u64().unwrap_or(0)
        );
        match state {
            "ERROR" => {
                code = 1;
                println!(
                    "    the proxy rejected version {} and keeps serving its last good config:\n    {}",
                    s["nack_version"].as_str().unwrap_or("?"),
                    s["nack_message"].as_str().unwrap_or("")
                );
                println!("    fix the resource it names (meshctl get ... -o yaml), then re-apply");
            }
            "STALE" => {
                code = 1;
                println!(
                    "    sent but not yet acknowledged; if this persists the proxy is stuck or overloaded"
                );
                if let Some(m) = s["nack_message"].as_str() {
                    println!("    last rejection: {m}");
                }
            }
            _ => {}
        }
    }
    Ok(code)
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
