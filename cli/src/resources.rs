//! `meshctl apply|get|delete`: resources in meshd's store, over meshd's
//! management API (HTTP/JSON on the debug port, see docs/meshd.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Default address of meshd's management API.
pub const DEFAULT_MESHD: &str = "http://127.0.0.1:15014";

/// Where meshd is (shared by every command that talks to it).
#[derive(Debug, Clone, clap::Args)]
pub struct MeshdArgs {
    /// meshd's management/debug address [default: http://127.0.0.1:15014;
    /// where a command supports it, through the Kubernetes API server when
    /// no meshd answers there and a kubeconfig is found].
    #[arg(long = "meshd", env = "MESHD_ADDR")]
    pub meshd: Option<String>,
}

impl MeshdArgs {
    /// The address to talk to directly: `--meshd`/`MESHD_ADDR`, or
    /// [`DEFAULT_MESHD`].
    pub fn addr(&self) -> &str {
        self.meshd.as_deref().unwrap_or(DEFAULT_MESHD)
    }
}

/// Output formats of `get` and `proxy-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A human table.
    Table,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// Flags of `meshctl apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Files or directories of YAML/JSON to apply.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Where meshd is.
    #[command(flatten)]
    pub meshd: MeshdArgs,
}

/// Flags of `meshctl get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Resource kind, e.g. `virtualservice` or `vs`; `all` for every kind.
    pub kind: String,
    /// Resource name; all of the kind when omitted.
    pub name: Option<String>,
    /// Namespace (all namespaces when listing without it; `default` for a
    /// named resource).
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
    /// Where meshd is.
    #[command(flatten)]
    pub meshd: MeshdArgs,
}

/// Flags of `meshctl delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Resource kind, e.g. `virtualservice` or `vs`.
    #[arg(required_unless_present = "files")]
    pub kind: Option<String>,
    /// Resource name.
    #[arg(required_unless_present = "files")]
    pub name: Option<String>,
    /// Namespace of the resource.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
    /// Delete the resources named in these files instead.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
    pub files: Vec<PathBuf>,
    /// Where meshd is.
    #[command(flatten)]
    pub meshd: MeshdArgs,
}

/// Runs `meshctl apply`.
pub async fn apply(args: ApplyArgs) -> anyhow::Result<i32> {
    let body = read_inputs(&args.files)?;
    let (status, resp) = request(args.meshd.addr(), "POST", "/apis/v1/apply", body).await?;
    report_writes(status, &resp)
}

/// Runs `meshctl get`.
pub async fn get(args: GetArgs) -> anyhow::Result<i32> {
    let path = match &args.name {
        Some(name) => format!(
            "/apis/v1/{}/{}/{}",
            args.kind,
            args.namespace.as_deref().unwrap_or("default"),
            name
        ),
        None => match &args.namespace {
            Some(ns) => format!("/apis/v1/{}?namespace={ns}", args.kind),
            None => format!("/apis/v1/{}", args.kind),
        },
    };
    let (status, resp) = request(args.meshd.addr(), "GET", &path, String::new()).await?;
    if status != 200 {
        eprintln!("error: {}", error_text(&resp));
        return Ok(1);
    }
    let items = match args.name {
        Some(_) => vec![resp.clone()],
        None => resp["items"].as_array().cloned().unwrap_or_default(),
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&resp)?),
        Output::Yaml => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                print!("{}", serde_saphyr::to_string(item)?);
            }
        }
        Output::Table => {
            if items.is_empty() {
                eprintln!("No resources found.");
                return Ok(0);
            }
            println!(
                "{:<20} {:<16} {:<32} {:>10} {:>8}",
                "KIND", "NAMESPACE", "NAME", "GENERATION", "VERSION"
            );
            for item in &items {
                println!(
                    "{:<20} {:<16} {:<32} {:>10} {:>8}",
                    item["kind"].as_str().unwrap_or(""),
                    item["metadata"]["namespace"].as_str().unwrap_or(""),
                    item["metadata"]["name"].as_str().unwrap_or(""),
                    item["metadata"]["generation"],
                    item["metadata"]["resourceVersion"].as_str().unwrap_or(""),
                );
            }
        }
    }
    Ok(0)
}

/// Runs `meshctl delete`.
pub async fn delete(args: DeleteArgs) -> anyhow::Result<i32> {
    let (status, resp) = if !args.files.is_empty() {
        let body = read_inputs(&args.files)?;
        request(args.meshd.addr(), "POST", "/apis/v1/delete", body).await?
    } else {
        let (Some(kind), Some(name)) = (&args.kind, &args.name) else {
            bail!("give KIND NAME or -f FILE");
        };
        let path = format!("/apis/v1/{kind}/{}/{name}", args.namespace);
        request(args.meshd.addr(), "DELETE", &path, String::new()).await?
    };
    report_writes(status, &resp)
}

fn report_writes(status: u16, resp: &serde_json::Value) -> anyhow::Result<i32> {
    if status != 200 {
        eprintln!("error: {}", error_text(resp));
        for e in resp["errors"].as_array().into_iter().flatten() {
            eprintln!("  {}", e.as_str().unwrap_or_default());
        }
        return Ok(1);
    }
    let mut code = 0;
    for r in resp["results"].as_array().into_iter().flatten() {
        let outcome = r["outcome"].as_str().unwrap_or("?");
        let kind = r["key"]["kind"].as_str().unwrap_or("").to_ascii_lowercase();
        let ns = r["key"]["namespace"].as_str().unwrap_or("");
        let name = r["key"]["name"].as_str().unwrap_or("");
        if outcome == "notfound" {
            eprintln!("{kind}/{name} (namespace {ns}) not found");
            code = 1;
        } else {
            println!("{kind}/{name} {outcome} (namespace {ns})");
        }
    }
    Ok(code)
}

fn error_text(resp: &serde_json::Value) -> String {
    resp["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| resp.to_string())
}

/// Reads files and the YAML/JSON files of directories, joined as one
/// multi-document YAML stream (JSON is YAML).
fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<String> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        bail!("no .yaml, .yml or .json files found in {paths:?}");
    }
    let mut out = String::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        out.push_str("---\n");
        out.push_str(&text);
        out.push('\n');
    }
    Ok(out)
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if p.as_os_str() == "-" {
        bail!("reading from stdin is not supported; give a file or directory");
    }
    if p.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(p)
            .with_context(|| format!("reading directory {}", p.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|e| {
                matches!(
                    e.extension().and_then(|x| x.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        entries.sort();
        out.extend(entries);
    } else if p.exists() {
        out.push(p.to_path_buf());
    } else {
        bail!("{} does not exist", p.display());
    }
    Ok(())
}

/// One HTTP request to meshd; the JSON response (or the text wrapped in a
/// string) and its status. Connection failures say how to start meshd.
pub(crate) async fn request(
    base: &str,
    method: &str,
    path: &str,
    body: String,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let base = base.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("content-type", "application/yaml")
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("bad meshd address {base:?}"))?;
    let resp = client.request(req).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach meshd at {base} ({e}); is meshd running? start it with `meshd`, or point --meshd / MESHD_ADDR at it"
        )
    })?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .context("reading meshd's response")?
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    Ok((status, value))
}
