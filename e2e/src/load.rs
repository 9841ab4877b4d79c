//! A small fixed-rate HTTP load generator for the e2e suite and the demo:
//! counts answers by status and by a field of the JSON reply (which version
//! answered), and records latency percentiles.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// What to send and how fast.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The logical URL; its authority is sent as `Host`.
    pub url: hyper::Uri,
    /// Connect here instead of the URL's authority (a sidecar's explicit port).
    pub via: Option<SocketAddr>,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Requests per second over all workers; 0 means as fast as possible.
    pub rps: u32,
    /// Parallel workers (connections).
    pub concurrency: u32,
    /// Stop after this many requests.
    pub requests: u64,
    /// JSON pointer into the reply whose value is counted, e.g. `/version`.
    pub group_by: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// The outcome of a load run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Requests sent.
    pub total: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Everything else, including connection errors and timeouts.
    pub failed: u64,
    /// Answers per status code; 0 is a failure below HTTP.
    pub by_status: BTreeMap<u16, u64>,
    /// 2xx answers per value found at `group_by`.
    pub by_group: BTreeMap<String, u64>,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency in milliseconds.
    pub p99_ms: f64,
    /// The first few failure reasons, for diagnosis.
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Tally {
    report: LoadReport,
    latencies: Vec<Duration>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        let r = &mut self.report;
        r.total += other.report.total;
        r.ok += other.report.ok;
        r.failed += other.report.failed;
        for (k, v) in other.report.by_status {
            *r.by_status.entry(k).or_default() += v;
        }
        for (k, v) in other.report.by_group {
            *r.by_group.entry(k).or_default() += v;
        }
        for e in other.report.errors {
            if r.errors.len() < 10 {
                r.errors.push(e);
            }
        }
        self.latencies.extend(other.latencies);
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest-rank: the smallest value with at least q of the samples at or below it.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

/// Runs the load and returns the counts.
pub async fn run(spec: LoadSpec) -> LoadReport {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let workers = spec.concurrency.max(1);
    let per_worker = spec.requests.div_ceil(u64::from(workers));
    let interval =
        (spec.rps > 0).then(|| Duration::from_secs_f64(f64::from(workers) / f64::from(spec.rps)));
    let mut handles = Vec::new();
    let mut remaining = spec.requests;
    for _ in 0..workers {
        let n = per_worker.min(remaining);
        remaining -= n;
        let (client, spec) = (client.clone(), spec.clone());
        handles.push(tokio::spawn(async move {
            worker(client, spec, n, interval).await
        }));
    }
    let mut tally = Tally::default();
    for h in handles {
        if let Ok(t) = h.await {
            tally.merge(t);
        }
    }
    tally.latencies.sort();
    tally.report.p50_ms = percentile(&tally.latencies, 0.50);
    tally.report.p99_ms = percentile(&tally.latencies, 0.99);
    tally.report
}

async fn worker(
    client: Client<HttpConnector, Empty<Bytes>>,
    spec: LoadSpec,
    n: u64,
    interval: Option<Duration>,
) -> Tally {
    let mut tally = Tally::default();
    let mut ticker = interval.map(|i| {
        let mut t = tokio::time::interval(i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    for _ in 0..n {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(spec.timeout, once(&client, &spec)).await;
        tally.latencies.push(started.elapsed());
        tally.report.total += 1;
        let (status, group, error) = match outcome {
            Ok(Ok((status, body))) => {
                let group = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.pointer(&spec.group_by)
                            .map(|g| g.as_str().map_or_else(|| g.to_string(), str::to_string))
                    });
                let err = (!(200..300).contains(&status)).then(|| {
                    format!(
                        "status {status}: {}",
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    )
                });
                (status, group, err)
            }
            Ok(Err(e)) => (0, None, Some(e)),
            Err(_) => (0, None, Some(format!("timed out after {:?}", spec.timeout))),
        };
        *tally.report.by_status.entry(status).or_default() += 1;
        match error {
            None => {
                tally.report.ok += 1;
                *tally
                    .report
                    .by_group
                    .entry(group.unwrap_or_else(|| "-".into()))
                    .or_default() += 1;
            }
            Some(e) => {
                tally.report.failed += 1;
                if tally.report.errors.len() < 10 {
                    tally.report.errors.push(e);
                }
            }
        }
    }
    tally
}

async fn once(
    client: &Client<HttpConnector, Empty<Bytes>>,
    spec: &LoadSpec,
) -> Result<(u16, Bytes), String> {
    let authority = spec.url.authority().ok_or("URL has no host")?.as_str();
    let connect = spec
        .via
        .map_or_else(|| authority.to_string(), |a| a.to_string());
    let path = spec.url.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::get(format!("http://{connect}{path}")).header(HOST, authority);
    for (k, v) in &spec.headers {
        req = req.header(k, v);
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&v[..1], 0.99), 1.0);
    }
}
