//! The demo's per-service summary, from the sidecars' Prometheus metrics as
//! the server side saw them (`reporter="destination"`): requests, success
//! rate (non-5xx, as Istio's dashboards count it), p50/p99 from
//! `istio_request_duration_milliseconds` buckets, and how requests split
//! across the service's workloads (the canary).

use std::collections::BTreeMap;

use super::metrics::{Sample, histogram_quantile, parse};

/// One service's row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceRow {
    /// Short service name, e.g. `reviews`.
    pub service: String,
    /// Requests served.
    pub requests: f64,
    /// Requests answered with a 5xx (or no status).
    pub errors: f64,
    /// Median latency in ms (from buckets), when there were requests.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in ms, when there were requests.
    pub p99_ms: Option<f64>,
    /// Requests per workload, e.g. `reviews-v1` → 90.
    pub by_workload: BTreeMap<String, f64>,
}

impl ServiceRow {
    /// Fraction of requests that did not fail (1.0 without requests).
    pub fn success_rate(&self) -> f64 {
        if self.requests > 0.0 {
            (self.requests - self.errors) / self.requests
        } else {
            1.0
        }
    }
}

fn is_error(code: &str) -> bool {
    code.parse::<u16>().map_or(true, |c| c == 0 || c >= 500)
}

/// One sidecar's metrics text and whose it is.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The workload, e.g. `reviews-v1`.
    pub workload: String,
    /// The service the workload serves, e.g. `reviews`.
    pub service: String,
    /// Its Prometheus text.
    pub text: String,
}

/// Builds the rows from each sidecar's metrics. Server-side samples of a
/// sidecar count for the service its workload serves (an inbound sample's
/// `destination_service` names the inbound cluster, `inbound|9080||`, as
/// Envoy's does). Rows come in `order` first (services named there), then
/// any other service alphabetically.
pub fn summarize(scrapes: &[Scrape], order: &[&str]) -> Vec<ServiceRow> {
    let mut rows: BTreeMap<String, ServiceRow> = BTreeMap::new();
    let mut buckets: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for Scrape {
        workload,
        service,
        text,
    } in scrapes
    {
        for s in parse(text) {
            if s.label("reporter") != "destination" {
                continue;
            }
            let row = rows.entry(service.clone()).or_insert_with(|| ServiceRow {
                service: service.clone(),
                ..Default::default()
            });
            match s.name.as_str() {
                "istio_requests_total" => {
                    row.requests += s.value;
                    if is_error(s.label("response_code")) {
                        row.errors += s.value;
                    }
                    *row.by_workload.entry(workload.clone()).or_default() += s.value;
                }
                "istio_request_duration_milliseconds_bucket" => {
                    add_bucket(&mut buckets, service, &s)
                }
                _ => {}
            }
        }
    }
    for (service, b) in buckets {
        let Some(row) = rows.get_mut(&service) else {
            continue;
        };
        let points: Vec<(f64, f64)> = b
            .iter()
            .filter_map(|(le, count)| le_value(le).map(|l| (l, *count)))
            .collect();
        row.p50_ms = histogram_quantile(0.5, &points);
        row.p99_ms = histogram_quantile(0.99, &points);
    }
    let mut out: Vec<ServiceRow> = order.iter().filter_map(|s| rows.remove(*s)).collect();
    out.extend(rows.into_values());
    out
}

fn le_value(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => le.parse().ok(),
    }
}

// Buckets of every label set of a service add up per bound (a sum by `le`).
fn add_bucket(buckets: &mut BTreeMap<String, BTreeMap<String, f64>>, service: &str, s: &Sample) {
    *buckets
        .entry(service.to_string())
        .or_default()
        .entry(s.label("le").to_string())
        .or_default() += s.value;
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}ms"),
        Some(v) => format!("{v:.1}ms"),
        None => "-".into(),
    }
}

/// Renders the rows as a table: `SERVICE REQUESTS SUCCESS P50 P99 SPLIT`.
pub fn table(rows: &[ServiceRow]) -> String {
    let mut lines = vec![
        ["SERVICE", "REQUESTS", "SUCCESS", "P50", "P99", "SPLIT"]
            .map(String::from)
            .to_vec(),
    ];
    for r in rows {
        let split = r
            .by_workload
            .iter()
            .map(|(w, n)| {
                let pct = if r.requests > 0.0 {
                    100.0 * n / r.requests
                } else {
                    0.0
                };
                format!("{w} {pct:.0}%")
            })
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(vec![
            r.service.clone(),
            format!("{:.0}", r.requests),
            format!("{:.1}%", 100.0 * r.success_rate()),
            ms(r.p50_ms),
            ms(r.p99_ms),
            split,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for l in lines {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(workload: &str, service: &str, ok: u32, failed: u32) -> Scrape {
        // What the proxy reports inbound: the inbound cluster as the service.
        let host = "inbound|9080||";
        let text = format!(
            r#"istio_requests_total{{reporter="destination",destination_service="{host}",response_code="200"}} {ok}
istio_requests_total{{reporter="destination",destination_service="{host}",response_code="503"}} {failed}
istio_requests_total{{reporter="source",destination_service="other.default.svc.cluster.local",response_code="200"}} 1000
istio_request_duration_milliseconds_bucket{{reporter="destination",destination_service="{host}",response_code="200",le="1.0"}} 0
istio_request_duration_milliseconds_bucket{{reporter="destination",destination_service="{host}",response_code="200",le="5.0"}} {ok}
istio_request_duration_milliseconds_bucket{{reporter="destination",destination_service="{host}",response_code="200",le="+Inf"}} {ok}
istio_request_duration_milliseconds_bucket{{reporter="destination",destination_service="{host}",response_code="503",le="1.0"}} {failed}
istio_request_duration_milliseconds_bucket{{reporter="destination",destination_service="{host}",response_code="503",le="5.0"}} {failed}
istio_request_duration_milliseconds_bucket{{reporter="destination",destination_service="{host}",response_code="503",le="+Inf"}} {failed}
"#
        );
        Scrape {
            workload: workload.into(),
            service: service.into(),
            text,
        }
    }

    #[test]
    fn rows_add_up_workloads_of_a_service_and_ignore_the_source_side() {
        let rows = summarize(
            &[
                scrape("reviews-v1", "reviews", 90, 0),
                scrape("reviews-v2", "reviews", 8, 2),
                scrape("productpage-v1", "productpage", 100, 0),
            ],
            &["productpage", "reviews"],
        );
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].service, "productpage");
        let reviews = &rows[1];
        assert_eq!(reviews.requests, 100.0);
        assert_eq!(reviews.errors, 2.0);
        assert!((reviews.success_rate() - 0.98).abs() < 1e-9);
        assert_eq!(reviews.by_workload["reviews-v1"], 90.0);
        assert_eq!(reviews.by_workload["reviews-v2"], 10.0);
        // 2 fast failures below 1ms, 98 in (1,5]: rank 50 is 48 into 98.
        let p50 = reviews.p50_ms.unwrap();
        assert!((p50 - (1.0 + 4.0 * 48.0 / 98.0)).abs() < 1e-9, "{p50}");
        assert!(reviews.p99_ms.unwrap() <= 5.0);
    }

    #[test]
    fn table_shows_success_percentiles_and_the_split() {
        let rows = summarize(
            &[
                scrape("reviews-v1", "reviews", 90, 0),
                scrape("reviews-v2", "reviews", 10, 0),
            ],
            &[],
        );
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SERVICE") && lines[0].contains("P99"));
        assert!(lines[1].starts_with("reviews"), "{t}");
        assert!(lines[1].contains("100.0%"), "{t}");
        assert!(lines[1].contains("reviews-v1 90%, reviews-v2 10%"), "{t}");
    }

    #[test]
    fn a_service_without_requests_shows_dashes() {
        let t = table(&[ServiceRow {
            service: "ratings".into(),
            ..Default::default()
        }]);
        assert!(t.lines().nth(1).unwrap().contains('-'), "{t}");
    }
}
