//! `meshctl version`: the client's version and, when meshd answers, the
//! control plane's (as istioctl shows both).

use crate::resources::{MeshdArgs, request};

/// Flags of `meshctl version`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where meshd is.
    #[command(flatten)]
    pub meshd: MeshdArgs,
    /// Only the client's version; don't ask meshd.
    #[arg(long)]
    pub client: bool,
}

/// Runs `meshctl version`. An unreachable meshd is reported, not an error:
/// the client's version is still useful.
pub async fn run(args: Args) -> anyhow::Result<i32> {
    println!("client version: meshctl {}", env!("CARGO_PKG_VERSION"));
    if args.client {
        return Ok(0);
    }
    match request(args.meshd.addr(), "GET", "/debug/syncz", String::new()).await {
        Ok((200, syncz)) => {
            let cp = syncz["control_plane"]
                .as_str()
                .unwrap_or("meshd (version unknown)");
            let proxies = syncz["proxies"].as_array().map_or(0, Vec::len);
            println!(
                "control plane version: {cp} at {} ({proxies} proxies connected)",
                args.meshd.addr()
            );
        }
        Ok((status, body)) => {
            println!("control plane version: unknown (meshd answered {status}: {body})")
        }
        Err(e) => println!("control plane version: unknown ({e})"),
    }
    Ok(0)
}
