//! `meshctl proxy-config listeners|routes|clusters|endpoints|secret|bootstrap|all PROXY`:
//! a proxy's xDS config in istioctl's tables, or as JSON/YAML. By default
//! it asks meshd what it generates for the proxy
//! (`/debug/config_dump?proxyID=`); `--admin` reads a proxy's own admin
//! `/config_dump` (the last config it accepted, and its certificates).

pub mod dump;
pub mod secret;
pub mod tables;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::access::{AccessArgs, AccessError, MeshdAccess};
use dump::Dump;
use tables::Filter;

/// What to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Listeners and their filter chains.
    Listeners,
    /// Route configurations, one row per route.
    Routes,
    /// Clusters.
    Clusters,
    /// Endpoints of every cluster.
    Endpoints,
    /// Certificates (needs `--admin`: only the proxy holds them).
    Secret,
    /// The node the proxy presented.
    Bootstrap,
    /// Everything above.
    All,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// istioctl's tables.
    Short,
    /// The Envoy JSON of the selected resources.
    Json,
    /// The same as YAML.
    Yaml,
}

/// Flags of `meshctl proxy-config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to show.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The proxy: its NAME from `meshctl proxy-status` (`pod.namespace`) or
    /// node id. Optional with `--admin`.
    pub proxy: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "short")]
    pub output: Format,
    /// Read the proxy's admin `/config_dump` at this address (e.g.
    /// `127.0.0.1:15000`) instead of asking meshd.
    #[arg(long)]
    pub admin: Option<String>,
    /// Only this port (clusters, listeners, endpoints).
    #[arg(long)]
    pub port: Option<u32>,
    /// Only clusters of this service FQDN.
    #[arg(long)]
    pub fqdn: Option<String>,
    /// Only clusters of this subset.
    #[arg(long)]
    pub subset: Option<String>,
    /// Only `inbound` or `outbound` clusters.
    #[arg(long)]
    pub direction: Option<String>,
    /// Only endpoints of this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only the route configuration or secret of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Where meshd is, and how to reach it (not used with `--admin`).
    #[command(flatten)]
    pub access: AccessArgs,
}

impl Args {
    fn filter(&self) -> Filter {
        Filter {
            port: self.port,
            fqdn: self.fqdn.clone(),
            subset: self.subset.clone(),
            direction: self.direction.clone(),
            cluster: self.cluster.clone(),
            name: self.name.clone(),
        }
    }
}

/// The message when secrets are asked of meshd.
pub const SECRETS_NEED_ADMIN: &str = "meshd does not hold proxies' certificates (each proxy generates its key and gets its certificate from the CA); read them from the proxy's admin port: meshctl proxy-config secret --admin 127.0.0.1:15000";

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `path` from a proxy's admin port.
async fn admin_get(addr: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    let base = addr.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .uri(format!("{base}{path}"))
        .body(Full::new(Bytes::new()))
        .with_context(|| format!("bad admin address {base:?}"))?;
    let resp = client.request(req).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the proxy's admin port at {base} ({e}); it listens on 127.0.0.1:15000 inside the pod, or on the port given by mesh-proxy --admin-addr"
        )
    })?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Ok((status, value))
}

/// meshd's path of the config it generates for `proxy`.
pub fn config_dump_path(proxy: &str) -> String {
    format!("/debug/config_dump?proxyID={}", encode(proxy))
}

/// Fetches what meshd generates for `proxy`.
pub async fn fetch_from_meshd(access: &MeshdAccess, proxy: &str) -> Result<Dump, AccessError> {
    access.get_json(&config_dump_path(proxy)).await.map(Dump)
}

/// Fetches the dump from the proxy's admin port or from meshd.
pub async fn fetch(args: &Args) -> anyhow::Result<Result<Dump, String>> {
    let (status, body) = match (&args.admin, &args.proxy) {
        // As istioctl: EDS is in a proxy's dump only with include_eds.
        (Some(admin), _) => admin_get(admin, "/config_dump?include_eds").await?,
        (None, Some(proxy)) => {
            let access = args.access.resolve().await?;
            return Ok(fetch_from_meshd(&access, proxy)
                .await
                .map_err(|e| e.to_string()));
        }
        (None, None) => {
            return Ok(Err(
                "name the proxy (see `meshctl proxy-status`), or give --admin ADDR".into(),
            ));
        }
    };
    if status != 200 {
        let msg = body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        return Ok(Err(format!(
            "the proxy's admin port answered {status}: {msg}"
        )));
    }
    Ok(Ok(Dump(body)))
}

/// The resources of `kind` as JSON (what `-o json|yaml` prints).
pub fn selected(dump: &Dump, kind: Kind) -> Value {
    match kind {
        Kind::Listeners => Value::Array(dump.listeners()),
        Kind::Routes => Value::Array(dump.routes()),
        Kind::Clusters => Value::Array(dump.clusters()),
        Kind::Endpoints => Value::Array(dump.endpoints()),
        Kind::Secret => Value::Array(dump.secrets()),
        Kind::Bootstrap => dump.bootstrap().unwrap_or(Value::Null),
        Kind::All => dump.0.clone(),
    }
}

/// The table(s) of `kind`; `now` (seconds since the epoch) judges
/// certificate validity.
pub fn short(dump: &Dump, kind: Kind, filter: &Filter, now: i64) -> String {
    short_with(dump, kind, filter, now, None)
}

/// [`short`], with the endpoints a proxy has ejected (from `--admin`).
pub fn short_with(
    dump: &Dump,
    kind: Kind,
    filter: &Filter,
    now: i64,
    ejected: Option<&tables::Ejected>,
) -> String {
    match kind {
        Kind::Listeners => tables::listeners(dump, filter),
        Kind::Routes => tables::routes(dump, filter),
        Kind::Clusters => tables::clusters(dump, filter),
        Kind::Endpoints => tables::endpoints_with(dump, filter, ejected),
        Kind::Secret => secret::secrets(dump, filter.name.as_deref(), now),
        Kind::Bootstrap => tables::bootstrap(dump),
        Kind::All => {
            let mut out = String::new();
            for k in [
                Kind::Clusters,
                Kind::Listeners,
                Kind::Routes,
                Kind::Endpoints,
            ] {
                out.push_str(&short_with(dump, k, filter, now, ejected));
                out.push('\n');
            }
            if dump.has_secrets() {
                out.push_str(&short(dump, Kind::Secret, filter, now));
            }
            out
        }
    }
}

/// What `meshctl proxy-config` prints for `dump`, wherever it came from.
pub fn render(
    dump: &Dump,
    kind: Kind,
    output: Format,
    filter: &Filter,
    now: i64,
    ejected: Option<&tables::Ejected>,
) -> anyhow::Result<String> {
    Ok(match output {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&selected(dump, kind))?),
        Format::Yaml => serde_saphyr::to_string(&selected(dump, kind))?,
        Format::Short => short_with(dump, kind, filter, now, ejected),
    })
}

/// Runs `meshctl proxy-config`.
pub async fn run(args: Args) -> anyhow::Result<i32> {
    if args.kind == Kind::Secret && args.admin.is_none() {
        eprintln!("error: {SECRETS_NEED_ADMIN}");
        return Ok(1);
    }
    let dump = match fetch(&args).await? {
        Ok(d) => d,
        Err(msg) => {
            eprintln!("error: {msg}");
            return Ok(1);
        }
    };
    // The proxy knows which endpoints it ejected; meshd does not.
    let ejected = match (&args.admin, args.kind, args.output) {
        (Some(admin), Kind::Endpoints | Kind::All, Format::Short) => {
            match admin_get(admin, "/clusters").await {
                Ok((200, Value::String(text))) => Some(tables::parse_ejected(&text)),
                _ => None,
            }
        }
        _ => None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    print!(
        "{}",
        render(
            &dump,
            args.kind,
            args.output,
            &args.filter(),
            now,
            ejected.as_ref()
        )?
    );
    Ok(0)
}
