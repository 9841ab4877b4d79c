//! meshd scale benchmark: N services × M endpoints, P simulated delta-ADS
//! clients (in-process, over real gRPC on loopback). Measures the initial
//! full push, a push that changes every proxy's config, one endpoint change
//! reaching every proxy (p50/p99/max), and the process RSS.
//!
//! `cargo run -p mesh-control --profile bench --bin meshd-bench -- --services 1000 --endpoints 5 --proxies 1000`

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use mesh_control::config::Config;
use mesh_proto::envoy::pb::envoy::config::core::v3::Node;
use mesh_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

#[derive(Debug, Parser)]
struct Args {
    /// Services (ServiceEntries).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints per service.
    #[arg(long, default_value_t = 5)]
    endpoints: usize,
    /// Simulated proxies.
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
    /// gRPC connections the proxies' streams share (HTTP/2 multiplexing).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// meshd's debounce.
    #[arg(long, default_value = "100ms")]
    debounce: String,
    /// Simulated proxies decode every response in full (prost, every
    /// resource's `Any` copied) instead of the envelope only.
    #[arg(long)]
    full_decode: bool,
    /// Internal: run only the simulated proxies against this xDS address
    /// (the parent process runs meshd, so its RSS is meshd's alone).
    #[arg(long, hide = true)]
    clients_of: Option<String>,
}

fn service_entry(i: usize, endpoints: usize, salt: u32) -> String {
    let mut eps = String::new();
    for e in 0..endpoints {
        let last = if i == 0 && e == 0 { salt } else { 1 };
        eps.push_str(&format!(
            "  - {{address: 10.{}.{}.{}, labels: {{version: v{}}}}}\n",
            (i / 250) % 250,
            i % 250,
            (e as u32 + last) % 250,
            e % 2
        ));
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{i}, namespace: ns-{}}}\nspec:\n  hosts: [svc-{i}]\n  ports: [{{number: 80, name: http}}]\n  endpoints:\n{eps}---\n",
        i % 20
    )
}

/// What a simulated proxy reports.
#[derive(Debug)]
enum Event {
    /// Has CDS, every EDS it asked for, LDS and RDS.
    Ready(usize, Instant),
    /// Saw the watched resource name.
    Saw(usize, Instant),
    /// Proxy 0's resources and bytes per type URL when it became ready.
    Sizes(BTreeMap<String, (usize, usize)>),
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Child side: run the proxies, print `R|S <id> <unix-nanos>` per event,
/// read `T <type-url> <name>` targets from stdin.
async fn run_clients(args: &Args, addr: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }
    let (target_tx, target_rx) = watch::channel(None);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    for id in 0..args.proxies {
        let ch = channels[id % channels.len()].clone();
        let (t, e, full) = (target_rx.clone(), ev_tx.clone(), args.full_decode);
        tokio::spawn(async move {
            if let Err(err) = client(id, ch, full, t, e).await {
                eprintln!("client {id}: {err:#}");
            }
        });
    }
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut parts = line.splitn(3, ' ');
            if let (Some("T"), Some(t), Some(n)) = (parts.next(), parts.next(), parts.next()) {
                target_tx.send_replace(Some((t.to_string(), n.to_string())));
            }
        }
    });
    while let Some(ev) = ev_rx.recv().await {
        let now = Instant::now();
        let (tag, id, at) = match ev {
            Event::Ready(id, at) => ("R", id, at),
            Event::Saw(id, at) => ("S", id, at),
            Event::Sizes(sizes) => {
                for (ty, (count, bytes)) in sizes {
                    println!("B {ty} {count} {bytes}");
                }
                continue;
            }
        };
        let nanos = unix_nanos() - now.saturating_duration_since(at).as_nanos();
        println!("{tag} {id} {nanos}");
    }
    Ok(())
}

/// What a simulated proxy reads of a response: enough to ACK it, verify
/// the resource names it waits for and count the bytes.
#[derive(Debug, Default)]
struct Resp {
    type_url: String,
    nonce: String,
    names: Vec<String>,
    bytes: usize,
}

/// The envelope of a `DeltaDiscoveryResponse`: the type, the nonce and each
/// resource's name; prost skips the other fields (each resource's `Any`)
/// without copying them.
#[derive(Clone, PartialEq, prost::Message)]
struct LeanResponse {
    #[prost(message, repeated, tag = "2")]
    resources: Vec<LeanResource>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

/// A `Resource` of which only the name is decoded.
#[derive(Clone, PartialEq, prost::Message)]
struct LeanResource {
    #[prost(string, tag = "3")]
    name: String,
}

/// Encodes delta requests, decodes responses as [`LeanResponse`]s.
#[derive(Debug, Default, Clone, Copy)]
struct LeanCodec;

impl tonic::codec::Codec for LeanCodec {
    type Encode = DeltaDiscoveryRequest;
    type Decode = Resp;
    type Encoder = LeanCodec;
    type Decoder = LeanCodec;
    fn encoder(&mut self) -> LeanCodec {
        LeanCodec
    }
    fn decoder(&mut self) -> LeanCodec {
        LeanCodec
    }
}

impl tonic::codec::Encoder for LeanCodec {
    type Item = DeltaDiscoveryRequest;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: DeltaDiscoveryRequest,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        item.encode(buf)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Decoder for LeanCodec {
    type Item = Resp;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Resp>, tonic::Status> {
        use bytes::Buf;
        let bytes = buf.remaining();
        let m = LeanResponse::decode(buf)
            .map_err(|e| tonic::Status::internal(format!("malformed response: {e}")))?;
        Ok(Some(Resp {
            type_url: m.type_url,
            nonce: m.nonce,
            names: m.resources.into_iter().map(|r| r.name).collect(),
            bytes,
        }))
    }
}

/// The responses of one delta stream, however they are decoded.
enum Responses {
    Lean(tonic::Streaming<Resp>),
    Full(tonic::Streaming<DeltaDiscoveryResponse>),
}

impl Responses {
    async fn open(
        channel: tonic::transport::Channel,
        requests: mpsc::Receiver<DeltaDiscoveryRequest>,
        full: bool,
    ) -> anyhow::Result<Self> {
        const MAX: usize = 512 * 1024 * 1024;
        let requests = ReceiverStream::new(requests);
        if full {
            let mut c =
                AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX);
            return Ok(Self::Full(
                c.delta_aggregated_resources(requests).await?.into_inner(),
            ));
        }
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX);
        grpc.ready().await?;
        let path = http::uri::PathAndQuery::from_static(mesh_control::xds::wire::DELTA_PATH);
        let resp = grpc
            .streaming(tonic::Request::new(requests), path, LeanCodec)
            .await?;
        Ok(Self::Lean(resp.into_inner()))
    }

    async fn next(&mut self) -> anyhow::Result<Option<Resp>> {
        Ok(match self {
            Self::Lean(s) => s.message().await?,
            Self::Full(s) => s.message().await?.map(|r| Resp {
                bytes: r.encoded_len(),
                type_url: r.type_url,
                nonce: r.nonce,
                names: r.resources.into_iter().map(|r| r.name).collect(),
            }),
        })
    }
}

async fn client(
    id: usize,
    channel: tonic::transport::Channel,
    full: bool,
    target: watch::Receiver<Option<(String, String)>>,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(64);
    let node = Node {
        id: format!(
            "sidecar~10.99.{}.{}~bench-{id}.ns-0~ns-0.svc.cluster.local",
            id / 250,
            id % 250
        ),
        ..Default::default()
    };
    tx.send(DeltaDiscoveryRequest {
        node: Some(node),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await?;
    tx.send(DeltaDiscoveryRequest {
        type_url: LDS.into(),
        ..Default::default()
    })
    .await?;
    let mut stream = Responses::open(channel, rx, full).await?;
    // EDS names subscribed → received; and how many were received.
    let (mut eds, mut eds_have) = (HashMap::<String, bool>::new(), 0usize);
    let (mut cds, mut lds, mut rds, mut ready) = (false, false, false, false);
    // Per type: resources and bytes received before ready.
    let mut sizes: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    while let Some(resp) = stream.next().await? {
        let now = Instant::now();
        tx.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await?;
        if !ready {
            let e = sizes.entry(resp.type_url.clone()).or_default();
            e.0 += resp.names.len();
            e.1 += resp.bytes;
        }
        let seen_target = target
            .borrow()
            .as_ref()
            .is_some_and(|(t, name)| *t == resp.type_url && resp.names.iter().any(|n| n == name));
        if seen_target {
            let _ = events.send(Event::Saw(id, now));
        }
        match resp.type_url.as_str() {
            CDS => {
                cds = true;
                let mut new = Vec::new();
                for n in resp.names {
                    if n.starts_with("outbound|") && !eds.contains_key(&n) {
                        new.push(n.clone());
                        eds.insert(n, false);
                    }
                }
                if !new.is_empty() {
                    tx.send(DeltaDiscoveryRequest {
                        type_url: EDS.into(),
                        resource_names_subscribe: new,
                        ..Default::default()
                    })
                    .await?;
                }
            }
            EDS => {
                for n in &resp.names {
                    if let Some(got) = eds.get_mut(n)
                        && !*got
                    {
                        *got = true;
                        eds_have += 1;
                    }
                }
            }
            LDS => {
                if !lds {
                    tx.send(DeltaDiscoveryRequest {
                        type_url: RDS.into(),
                        resource_names_subscribe: vec!["80".into()],
                        ..Default::default()
                    })
                    .await?;
                }
                lds = true;
            }
            RDS => rds = resp.names.iter().any(|n| n == "80") || rds,
            _ => {}
        }
        if !ready && cds && lds && rds && !eds.is_empty() && eds_have == eds.len() {
            ready = true;
            if id == 0 {
                let _ = events.send(Event::Sizes(std::mem::take(&mut sizes)));
            }
            let _ = events.send(Event::Ready(id, now));
        }
    }
    Ok(())
}

/// User and system CPU seconds of process `pid` ("self" for this one).
fn cpu_seconds(pid: &str) -> f64 {
    // Fields 14 and 15 of /proc/<pid>/stat, after the parenthesised name,
    // in clock ticks (100 per second on Linux).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let (u, s) = (
                f.get(11)?.parse::<f64>().ok()?,
                f.get(12)?.parse::<f64>().ok()?,
            );
            Some((u + s) / 100.0)
        })
        .unwrap_or(0.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

async fn wait_all(
    events: &mut mpsc::UnboundedReceiver<Event>,
    n: usize,
    ready: bool,
) -> anyhow::Result<Vec<Instant>> {
    let mut seen = HashSet::new();
    let mut times = Vec::new();
    while seen.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(120), events.recv())
            .await
            .context("timed out waiting for proxies")?
            .context("clients gone")?;
        if let (Event::Ready(id, at), true) | (Event::Saw(id, at), false) = (ev, ready)
            && seen.insert(id)
        {
            times.push(at);
        }
    }
    Ok(times)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mesh_control::install_crypto_provider();
    let args = Args::parse();
    if let Some(addr) = args.clients_of.clone() {
        return run_clients(&args, &addr).await;
    }
    let dir = std::env::temp_dir().join(format!("meshd-bench-{}", std::process::id()));
    let config = Config::parse_from([
        "meshd",
        "--data-dir",
        dir.to_str().context("temp dir")?,
        "--http-addr",
        "127.0.0.1:0",
        "--ca-addr",
        "127.0.0.1:0",
        "--xds-addr",
        "127.0.0.1:0",
        "--debounce",
        &args.debounce,
    ]);
    let meshd = mesh_control::server::start(&config).await?;
    let mut text = String::new();
    for i in 0..args.services {
        text.push_str(&service_entry(i, args.endpoints, 1));
    }
    let objects =
        mesh_control::documents::parse(&text, "bench").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    meshd.shared.store.apply(objects).await?;
    let builder = meshd.shared.builder.clone();
    let mut snaps = builder.subscribe();
    while builder.current().services.len() < args.services {
        snaps.changed().await?;
    }
    let rss_before = rss_mb();
    println!(
        "meshd: {} services x {} endpoints, RSS before proxies {rss_before:.0} MB",
        args.services, args.endpoints
    );

    // Record when each snapshot is published, to measure pushes from there.
    let publications = Arc::new(std::sync::Mutex::new(Vec::<(u64, Instant)>::new()));
    {
        let (mut rx, log) = (builder.subscribe(), publications.clone());
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let v = rx.borrow_and_update().version;
                if let Ok(mut l) = log.lock() {
                    l.push((v, Instant::now()));
                }
            }
        });
    }
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    println!(
        "load average before the proxies connect: {}",
        load_average()
    );
    let started = Instant::now();
    let cpu_before = cpu_seconds("self");
    let mut child_args = vec![
        "--clients-of".to_string(),
        meshd.xds_addr.to_string(),
        "--proxies".to_string(),
        args.proxies.to_string(),
        "--connections".to_string(),
        args.connections.to_string(),
    ];
    if args.full_decode {
        child_args.push("--full-decode".into());
    }
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(&child_args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the client process")?;
    let mut child_in = child.stdin.take().context("child stdin")?;
    let child_out = child.stdout.take().context("child stdout")?;
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child_out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let p: Vec<&str> = line.split(' ').collect();
            if p.first() == Some(&"B") {
                let (ty, n, b) = (p.get(1), p.get(2), p.get(3));
                let short = ty.and_then(|t| t.rsplit('.').next()).unwrap_or("?");
                let (n, b) = (n.unwrap_or(&"?"), b.unwrap_or(&"?"));
                println!("  proxy 0 received {short}: {n} resources, {b} bytes");
                continue;
            }
            let (Some(tag), Some(id), Some(nanos)) = (p.first(), p.get(1), p.get(2)) else {
                continue;
            };
            let (Ok(id), Ok(nanos)) = (id.parse::<usize>(), nanos.parse::<u128>()) else {
                continue;
            };
            let ago = Duration::from_nanos(unix_nanos().saturating_sub(nanos) as u64);
            let at = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
            let ev = if *tag == "R" {
                Event::Ready(id, at)
            } else {
                Event::Saw(id, at)
            };
            let _ = ev_tx.send(ev);
        }
    });
    let child_pid = child.id().map(|p| p.to_string()).unwrap_or_default();
    let ready = wait_all(&mut ev_rx, args.proxies, true).await?;
    let (meshd_cpu, clients_cpu) = (cpu_seconds("self") - cpu_before, cpu_seconds(&child_pid));
    let initial = ready
        .iter()
        .max()
        .map(|t| t.duration_since(started))
        .unwrap_or_default();
    println!(
        "initial full push to {} proxies: {:.0} ms",
        args.proxies,
        initial.as_secs_f64() * 1000.0
    );
    println!(
        "CPU until every proxy was ready: meshd {meshd_cpu:.2} s, simulated proxies {clients_cpu:.2} s ({} decode); load average now {}",
        if args.full_decode { "full" } else { "envelope" },
        load_average()
    );
    println!(
        "meshd RSS with the proxies connected: {:.0} MB (clients run in a child process)",
        rss_mb()
    );

    // A change to every proxy's config: a new service (CDS/EDS/LDS/RDS).
    let new_cluster = format!(
        "outbound|80||svc-{}.ns-{}.svc.cluster.local",
        args.services,
        args.services % 20
    );
    child_in
        .write_all(format!("T {CDS} {new_cluster}\n").as_bytes())
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let version_before = builder.current().version;
    let applied = Instant::now();
    let objs =
        mesh_control::documents::parse(&service_entry(args.services, args.endpoints, 1), "bench")
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    meshd.shared.store.apply(objs).await?;
    let published = published_at(&publications, version_before).await;
    let times = wait_all(&mut ev_rx, args.proxies, false).await?;
    let all = times
        .iter()
        .max()
        .map(|t| t.duration_since(published))
        .unwrap_or_default();
    println!(
        "full push (new service) to all {} proxies: {:.0} ms after the snapshot, {:.0} ms after the write (debounce {})",
        args.proxies,
        all.as_secs_f64() * 1000.0,
        times
            .iter()
            .max()
            .map(|t| t.duration_since(applied))
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0,
        args.debounce
    );

    // One endpoint of one service changes.
    let cluster = "outbound|80||svc-0.ns-0.svc.cluster.local".to_string();
    child_in
        .write_all(format!("T {EDS} {cluster}\n").as_bytes())
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let version_before = builder.current().version;
    let applied = Instant::now();
    let objs = mesh_control::documents::parse(&service_entry(0, args.endpoints, 7), "bench")
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    meshd.shared.store.apply(objs).await?;
    let published = published_at(&publications, version_before).await;
    let times = wait_all(&mut ev_rx, args.proxies, false).await?;
    eprintln!(
        "debug: snapshot published {:?} after the write",
        published.saturating_duration_since(applied)
    );
    let mut lat: Vec<Duration> = times
        .iter()
        .map(|t| t.saturating_duration_since(published))
        .collect();
    lat.sort();
    println!(
        "endpoint change -> all proxies, after the snapshot: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; after the write: max {:.0} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0,
        percentile(&lat, 1.0).as_secs_f64() * 1000.0,
        times
            .iter()
            .max()
            .map(|t| t.duration_since(applied))
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    );
    println!(
        "final meshd RSS: {:.0} MB (peak {:.0} MB)",
        rss_mb(),
        status_mb("VmHWM:")
    );
    child.kill().await.ok();
    drop(meshd);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn published_at(log: &std::sync::Mutex<Vec<(u64, Instant)>>, before: u64) -> Instant {
    loop {
        if let Some(at) = log
            .lock()
            .ok()
            .and_then(|l| l.iter().find(|(v, _)| *v > before).map(|(_, at)| *at))
        {
            return at;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
