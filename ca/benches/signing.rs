//! End-to-end gRPC signing throughput: a CA served over TLS on loopback,
//! many in-flight `CreateCertificate` calls over a few HTTP/2 connections,
//! CSRs generated before the timed loop.
//!
//! Run: `cargo bench -p mesh-ca --bench signing`
//! Knobs (env): BENCH_REQUESTS (20000), BENCH_CONCURRENCY (256),
//! BENCH_CONNECTIONS (4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mesh_ca::auth::Authenticator;
use mesh_ca::csr::build_csr_pem;
use mesh_ca::metrics::CaMetrics;
use mesh_ca::server::{ServeOptions, serve};
use mesh_ca::token::JoinTokens;
use mesh_ca::{CertificateAuthority, InitOptions, IssuePolicy, SpiffeId};
use mesh_proto::ca::v1::CreateCertificateRequest;
use mesh_proto::ca::v1::certificate_service_client::CertificateServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    mesh_ca::install_crypto_provider();
    let requests = env("BENCH_REQUESTS", 20_000);
    let concurrency = env("BENCH_CONCURRENCY", 256);
    let connections = env("BENCH_CONNECTIONS", 4).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(requests, concurrency, connections))
}

async fn run(requests: usize, concurrency: usize, connections: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut opts = InitOptions::new("cluster.local");
    opts.intermediate = true;
    let ca = Arc::new(CertificateAuthority::init(
        dir.path(),
        &opts,
        IssuePolicy::default(),
    )?);
    let tokens = Arc::new(JoinTokens::in_memory(&rand::random::<[u8; 32]>()));
    let id: SpiffeId = "spiffe://cluster.local/ns/bench/sa/workload".parse()?;
    let token = tokens.create(&id, Duration::from_secs(3600), false);
    let auth = Authenticator::default().with_join_tokens(tokens);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let ca = ca.clone();
        async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            serve(
                ca,
                auth,
                CaMetrics::default(),
                listener,
                &ServeOptions::default(),
                shutdown,
            )
            .await
        }
    });

    let warmup = 1_000.min(requests);
    eprintln!("generating {} CSRs (ECDSA P-256)...", requests + warmup);
    let csrs: Vec<String> = (0..requests + warmup)
        .map(|_| build_csr_pem(&id, &rcgen::KeyPair::generate()?))
        .collect::<Result<_, _>>()?;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.trust_bundle().pem()))
        .domain_name("mesh-ca");
    let mut clients = Vec::new();
    for _ in 0..connections {
        let channel = Channel::from_shared(format!("https://{addr}"))?
            .tls_config(tls.clone())?
            .connect()
            .await?;
        clients.push(CertificateServiceClient::new(channel));
    }
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;

    let fire = |batch: Vec<String>| {
        let clients = clients.clone();
        let bearer = bearer.clone();
        futures_util::stream::iter(batch.into_iter().enumerate())
            .map(move |(i, csr_pem)| {
                let mut client = clients[i % clients.len()].clone();
                let bearer = bearer.clone();
                async move {
                    let mut req = tonic::Request::new(CreateCertificateRequest {
                        csr_pem,
                        validity_seconds: 0,
                    });
                    req.metadata_mut().insert("authorization", bearer);
                    client.create_certificate(req).await
                }
            })
            .buffer_unordered(concurrency)
            .fold(0usize, |errors, r| async move {
                match r {
                    Ok(resp) if resp.get_ref().cert_chain.len() == 3 => errors,
                    _ => errors + 1,
                }
            })
    };

    let mut csrs = csrs;
    let timed = csrs.split_off(warmup);
    let errors = fire(csrs).await;
    anyhow::ensure!(errors == 0, "{errors} warm-up requests failed");

    let start = Instant::now();
    let errors = fire(timed).await;
    let elapsed = start.elapsed();
    anyhow::ensure!(errors == 0, "{errors} timed requests failed");

    let rate = requests as f64 / elapsed.as_secs_f64();
    println!(
        "mesh-ca signing: {requests} SVIDs in {:.2} s = {rate:.0} SVIDs/s \
         (concurrency {concurrency}, {connections} HTTP/2 connections, TLS, \
         ECDSA P-256 via intermediate, {} cores)",
        elapsed.as_secs_f64(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    );
    let _ = stop.send(());
    server.await??;
    Ok(())
}
