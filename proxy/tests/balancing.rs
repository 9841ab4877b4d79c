//! Load balancing and outlier detection on loopback: consistent hashing
//! (header, generated cookie) on RING_HASH and MAGLEV clusters, ejection
//! shown in `/clusters`, the panic threshold, and `UH` on an empty cluster.

mod local;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use local::{Backend, Proxy, Reply, config, metric};
use mesh_proto::envoy::pb::envoy::config::cluster::v3 as xcl;
use mesh_proto::envoy::pb::envoy::config::route::v3 as xr;
use mesh_proto::envoy::pb::envoy::r#type::v3 as xt;
use mesh_proto::envoy::pb::google::protobuf as wkt;
use support::{route, static_cluster};

fn hashed(mut r: xr::Route, policy: xr::route_action::hash_policy::PolicySpecifier) -> xr::Route {
    let Some(xr::route::Action::Route(ra)) = &mut r.action else {
        unreachable!()
    };
    ra.hash_policy = vec![xr::route_action::HashPolicy {
        policy_specifier: Some(policy),
        terminal: false,
    }];
    r
}

fn by_header(name: &str) -> xr::route_action::hash_policy::PolicySpecifier {
    xr::route_action::hash_policy::PolicySpecifier::Header(xr::route_action::hash_policy::Header {
        header_name: name.into(),
        regex_rewrite: None,
    })
}

async fn backends(n: usize) -> Vec<Backend> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Backend::always(200).await);
    }
    out
}

/// Which backend (by port in the body) answers each of `keys` users.
async fn owners(p: &Proxy, keys: usize) -> Vec<String> {
    let mut out = Vec::new();
    for k in 0..keys {
        let user = format!("user-{k}");
        let (s, body, _) = p.send("GET", "/", &[("x-user", &user)], Bytes::new()).await;
        assert_eq!(s, 200);
        out.push(body);
    }
    out
}

/// `policy` keeps a header's key on one endpoint, and removing an endpoint
/// moves its keys; of the other keys at most `may_move` move (ring hash:
/// none; Maglev rebuilds its table and shifts a few per cent of the
/// remaining entries, bounded over 10,000 keys in `lb/hash.rs`).
async fn sticky_by_header(policy: xcl::cluster::LbPolicy, may_move: usize) {
    let bs = backends(4).await;
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let mut c = static_cluster("hashed", &addrs);
    c.lb_policy = policy as i32;
    let routes = vec![hashed(route("/", "hashed"), by_header("x-user"))];
    let p = Proxy::start(vec![c.clone()], routes.clone()).await;
    let first = owners(&p, 60).await;
    assert_eq!(first, owners(&p, 60).await, "a key keeps its endpoint");
    let used: HashSet<_> = first.iter().collect();
    assert!(used.len() >= 3, "keys spread over the endpoints: {used:?}");
    // Remove one endpoint: only its keys move.
    let gone = addrs[0].port().to_string();
    let mut fewer = static_cluster("hashed", &addrs[1..]);
    fewer.lb_policy = policy as i32;
    p.tx.send_replace(Arc::new(config(p.addr, vec![fewer], routes, vec![])));
    let after = owners(&p, 60).await;
    let mut moved = 0;
    for (before, now) in first.iter().zip(&after) {
        if *before != gone && before != now {
            moved += 1;
        }
        assert_ne!(*now, gone);
    }
    assert!(
        moved <= may_move,
        "{moved} keys of remaining endpoints moved (at most {may_move})"
    );
}

#[tokio::test]
async fn ring_hash_keeps_a_header_key_on_one_endpoint_and_moves_only_removed_keys() {
    sticky_by_header(xcl::cluster::LbPolicy::RingHash, 0).await;
}

#[tokio::test]
async fn maglev_keeps_a_header_key_on_one_endpoint_and_moves_only_removed_keys() {
    sticky_by_header(xcl::cluster::LbPolicy::Maglev, 6).await;
}

#[tokio::test]
async fn a_generated_cookie_pins_the_client_to_one_endpoint() {
    use xr::route_action::hash_policy::{Cookie, PolicySpecifier};
    let bs = backends(5).await;
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let mut c = static_cluster("hashed", &addrs);
    c.lb_policy = xcl::cluster::LbPolicy::RingHash as i32;
    let policy = PolicySpecifier::Cookie(Cookie {
        name: "sticky".into(),
        ttl: Some(wkt::Duration {
            seconds: 300,
            nanos: 0,
        }),
        path: "/".into(),
        attributes: vec![],
    });
    let p = Proxy::start(vec![c], vec![hashed(route("/", "hashed"), policy)]).await;
    // Raw hyper to read the Set-Cookie header.
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client
        .request(
            hyper::Request::get(format!("http://{}/", p.addr))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("Max-Age=300"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let mut seen = HashMap::new();
    for _ in 0..20 {
        let (s, body, _) = p
            .send("GET", "/", &[("cookie", &cookie)], Bytes::new())
            .await;
        assert_eq!(s, 200);
        *seen.entry(body).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        1,
        "with the cookie every call lands on one endpoint: {seen:?}"
    );
}

fn outlier_cluster(addrs: &[std::net::SocketAddr], panic: Option<f64>) -> xcl::Cluster {
    let mut c = static_cluster("od", addrs);
    c.lb_policy = xcl::cluster::LbPolicy::RoundRobin as i32;
    c.outlier_detection = Some(xcl::OutlierDetection {
        consecutive_5xx: Some(wkt::UInt32Value { value: 3 }),
        max_ejection_percent: Some(wkt::UInt32Value { value: 100 }),
        ..Default::default()
    });
    if let Some(p) = panic {
        c.common_lb_config = Some(xcl::cluster::CommonLbConfig {
            healthy_panic_threshold: Some(xt::Percent { value: p }),
            ..Default::default()
        });
    }
    c
}

#[tokio::test]
async fn an_ejected_endpoint_gets_no_traffic_and_shows_failed_outlier_check() {
    let bad = Backend::always(503).await;
    let good = Backend::always(200).await;
    let p = Proxy::start(
        vec![outlier_cluster(&[bad.addr, good.addr], None)],
        vec![route("/", "od")],
    )
    .await;
    let mut failures = 0;
    for _ in 0..6 {
        if p.get("/").await.0 != 200 {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "three 503s eject the bad endpoint");
    let before = bad.requests();
    for _ in 0..20 {
        assert_eq!(p.get("/").await.0, 200);
    }
    assert_eq!(
        bad.requests(),
        before,
        "nothing reaches an ejected endpoint"
    );
    let config = p.shared.config.borrow().clone();
    let text = mesh_proxy::admin::clusters(&config, &p.shared.balancers);
    assert!(
        text.contains(&format!(
            "od::{}::health_flags::/failed_outlier_check",
            bad.addr
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("od::{}::health_flags::healthy", good.addr)),
        "{text}"
    );
    let m = p.metrics();
    assert_eq!(
        metric(
            &m,
            "envoy_cluster_outlier_detection_ejections_enforced_total{cluster_name=\"od\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn below_the_panic_threshold_ejected_endpoints_get_traffic_again() {
    // Three endpoints, two always fail: once both are ejected only a third
    // is usable, under the 50% panic threshold, so all three get traffic.
    let bad1 = Backend::always(503).await;
    let bad2 = Backend::always(503).await;
    let good = Backend::always(200).await;
    let addrs = [bad1.addr, bad2.addr, good.addr];
    let p = Proxy::start(vec![outlier_cluster(&addrs, None)], vec![route("/", "od")]).await;
    for _ in 0..30 {
        p.get("/").await;
    }
    let lb = p.shared.balancers.cluster("od");
    assert!(lb.outliers.is_ejected(bad1.addr) && lb.outliers.is_ejected(bad2.addr));
    let before = bad1.requests() + bad2.requests();
    for _ in 0..9 {
        p.get("/").await;
    }
    assert!(
        bad1.requests() + bad2.requests() > before,
        "panic mode balances over all endpoints"
    );
    // With panic off (threshold 0) the ejected ones stay out.
    let p0 = Proxy::start(
        vec![outlier_cluster(&addrs, Some(0.0))],
        vec![route("/", "od")],
    )
    .await;
    for _ in 0..30 {
        p0.get("/").await;
    }
    let before = bad1.requests() + bad2.requests();
    for _ in 0..9 {
        assert_eq!(p0.get("/").await.0, 200);
    }
    assert_eq!(bad1.requests() + bad2.requests(), before);
}

#[tokio::test]
async fn a_cluster_without_endpoints_answers_503_uh() {
    let p = Proxy::start(vec![static_cluster("none", &[])], vec![route("/", "none")]).await;
    let (s, _, flags) = p.get("/").await;
    assert_eq!((s, flags.as_str()), (503, "UH"));
    let _ = Reply::Reset;
}
