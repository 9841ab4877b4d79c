//! Admin (`/config_dump`, `/clusters`, `/ready`, `/stats/prometheus`),
//! health (`/healthz/ready`) and Prometheus (`/stats/prometheus`) endpoints.
//! Each port serves only its own paths.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::config::{Discovery, ProxyConfig};
use crate::config_dump::{BootstrapDump, DumpQuery};
use crate::http::flags::{ProxyBody, text};
use crate::runtime::Shared;

/// Which endpoint set a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Admin on 15000 (localhost only).
    Admin,
    /// Health on 15021.
    Health,
    /// Prometheus on 15090.
    Prometheus,
}

/// Serves `role` on a bound listener until the process exits (without a
/// bootstrap: `/config_dump` then has no `BootstrapConfigDump`).
pub async fn serve(tcp: TcpListener, role: Role, shared: Arc<Shared>) {
    serve_with(tcp, role, shared, None).await
}

/// [`serve`], with the bootstrap `/config_dump` shows first.
pub async fn serve_with(
    tcp: TcpListener,
    role: Role,
    shared: Arc<Shared>,
    bootstrap: Option<Arc<BootstrapDump>>,
) {
    loop {
        let (stream, _) = match tcp.accept().await {
            Ok(c) => c,
            Err(error) => {
                warn!(?role, %error, "admin accept failed");
                continue;
            }
        };
        let shared = shared.clone();
        let bootstrap = bootstrap.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let bootstrap = bootstrap.clone();
                async move {
                    Ok::<_, Infallible>(respond_with(role, &req, &shared, bootstrap.as_deref()))
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder.serve_connection(TokioIo::new(stream), svc).await {
                debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

/// The answer of `role`'s port to `req` (the health port's
/// `/app-health/...` paths are served by [`crate::health`] first).
pub fn respond(role: Role, req: &Request<Incoming>, shared: &Shared) -> Response<ProxyBody> {
    respond_with(role, req, shared, None)
}

/// [`respond`], with the bootstrap `/config_dump` shows first.
pub fn respond_with(
    role: Role,
    req: &Request<Incoming>,
    shared: &Shared,
    bootstrap: Option<&BootstrapDump>,
) -> Response<ProxyBody> {
    let config = shared.config.borrow().clone();
    let has_config = config.is_ready();
    let has_svid = !shared
        .svid_required
        .load(std::sync::atomic::Ordering::Relaxed)
        || shared.svid.borrow().is_some();
    let ready_reply = || match (has_config, has_svid) {
        (true, true) => text(StatusCode::OK, "LIVE\n"),
        (false, _) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "PRE_INITIALIZING: waiting for clusters and listeners\n",
        ),
        (true, false) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "PRE_INITIALIZING: waiting for the workload certificate from the CA\n",
        ),
    };
    match (role, req.uri().path()) {
        (Role::Health, "/healthz/ready") | (Role::Admin, "/ready") => ready_reply(),
        (Role::Admin | Role::Prometheus, "/stats/prometheus") => {
            let mut r = text(StatusCode::OK, shared.metrics.encode());
            if let Ok(v) = "application/openmetrics-text; version=1.0.0; charset=utf-8".parse() {
                r.headers_mut().insert(http::header::CONTENT_TYPE, v);
            }
            r
        }
        (Role::Admin, "/config_dump") => config_dump(req, &config, shared, bootstrap),
        (Role::Admin, "/clusters") => text(StatusCode::OK, clusters(&config, &shared.balancers)),
        (Role::Admin, "/logging") => logging(req, shared),
        (Role::Admin, "/drain_listeners" | "/drain") if req.method() == http::Method::POST => {
            shared.draining.send_replace(true);
            text(StatusCode::OK, "OK: listeners stopped accepting\n")
        }
        (Role::Admin, "/drain") => text(
            StatusCode::OK,
            format!(
                "{{\"draining\":{},\"active_connections\":{}}}\n",
                *shared.draining.borrow(),
                shared.active_connections()
            ),
        ),
        (Role::Admin, "/quitquitquit") if req.method() == http::Method::POST => {
            shared.quit.notify_one();
            text(StatusCode::OK, "OK: draining, then exiting\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Envoy's `/config_dump[?resource=&mask=&name_regex=&include_eds]`.
fn config_dump(
    req: &Request<Incoming>,
    config: &ProxyConfig,
    shared: &Shared,
    bootstrap: Option<&BootstrapDump>,
) -> Response<ProxyBody> {
    let svid = shared.svid.borrow().clone();
    let rendered = DumpQuery::parse(req.uri().query())
        .and_then(|q| crate::config_dump::render(config, svid.as_deref(), bootstrap, &q));
    match rendered {
        Ok(json) => {
            let mut r = text(StatusCode::OK, json);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => {
            debug!(error = %e, query = ?req.uri().query(), "config_dump refused");
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = text(status, format!("{e}\n"));
            r.headers_mut().insert(
                http::header::X_CONTENT_TYPE_OPTIONS,
                http::HeaderValue::from_static("nosniff"),
            );
            r
        }
    }
}

fn logging(req: &Request<Incoming>, shared: &Shared) -> Response<ProxyBody> {
    let level = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("level=")));
    match (level, shared.log_control.get()) {
        (None, _) => text(
            StatusCode::BAD_REQUEST,
            "usage: POST /logging?level=<filter>, e.g. debug or mesh_proxy=trace\n",
        ),
        (Some(_), None) => text(
            StatusCode::NOT_IMPLEMENTED,
            "log level control is not available in this process\n",
        ),
        (Some(level), Some(ctl)) => match (ctl.0)(level) {
            Ok(()) => text(StatusCode::OK, format!("log level set to {level}\n")),
            Err(e) => text(
                StatusCode::BAD_REQUEST,
                format!("invalid level {level:?}: {e}\n"),
            ),
        },
    }
}

/// Envoy-like `/clusters` text: one line per endpoint with health flags
/// (EDS health, and `/failed_outlier_check` while outlier detection has
/// the endpoint ejected, as Envoy writes it), weight, priority and locality.
pub fn clusters(config: &ProxyConfig, balancers: &crate::lb::Balancers) -> String {
    let mut out = String::new();
    for (name, cluster) in &config.clusters {
        let _ = writeln!(out, "{name}::lb_policy::{:?}", cluster.lb_policy);
        if matches!(cluster.discovery, Discovery::OriginalDst) {
            let _ = writeln!(out, "{name}::original_dst");
            continue;
        }
        let Some(la) = config.cluster_endpoints(cluster) else {
            let _ = writeln!(out, "{name}::no_endpoints_yet");
            continue;
        };
        let ejected = balancers.cluster(name).outliers.ejected();
        for e in &la.endpoints {
            let mut flags = format!("{:?}", e.health).to_lowercase();
            if ejected.contains(&e.address) {
                flags = match e.health {
                    crate::config::Health::Healthy => "/failed_outlier_check".to_owned(),
                    _ => format!("{flags}/failed_outlier_check"),
                };
            }
            let _ = writeln!(
                out,
                "{name}::{}::health_flags::{}::weight::{}::priority::{}::locality::{}",
                e.address, flags, e.weight, e.priority, e.locality
            );
        }
    }
    out
}
