//! The real `mesh-proxy run` binary's admin `/config_dump`: the
//! `BootstrapConfigDump` first, its node equal to the one the proxy sends
//! the control plane (built from the flags), and Envoy's query parameters
//! (`resource`, `mask`, `name_regex`, `include_eds`) with Envoy's answers
//! to bad ones.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_proto::envoy::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use support::*;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";

/// A free loopback port (bound, read, released: the proxy binds it next).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The proxy process, killed when the test ends.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` on the admin port: (status, content type, body).
async fn get(admin: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let stream = tokio::net::TcpStream::connect(admin).await.ok()?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, ctype, String::from_utf8_lossy(&body).into_owned()))
}

async fn dump(admin: SocketAddr, path: &str) -> serde_json::Value {
    let (status, ctype, body) = get(admin, path).await.expect("admin answers");
    assert_eq!(status, 200, "{path}: {body}");
    assert_eq!(ctype, "application/json");
    serde_json::from_str(&body).unwrap()
}

fn types(dump: &serde_json::Value) -> Vec<String> {
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap().to_owned())
        .collect()
}

fn cluster_names(dump: &serde_json::Value) -> Vec<String> {
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["dynamic_active_clusters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| c["cluster"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn running_proxy_dumps_its_bootstrap_and_answers_envoys_query_parameters() {
    let mut ads = FakeAds::start().await;
    let (admin_port, health, prom, status) = (free_port(), free_port(), free_port(), free_port());
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let _proxy = Proxy(
        Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
            .args(["run", "--xds-address", &ads.url()])
            .args([
                "--node-id",
                "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local",
            ])
            .args(["--namespace", "default", "--service-account", "reviews"])
            .args(["--workload-name", "reviews-v1", "--service-name", "reviews"])
            .args(["--labels", "app=reviews,version=v1"])
            .args(["--locality", "us-east/zone-a/rack-1"])
            .args(["--service-ports", "http:9080"])
            .args(["--interception-mode", "NONE", "--concurrency", "1"])
            .args(["--admin-port", &admin_port.to_string()])
            .args(["--health-port", &health.to_string()])
            .args(["--prometheus-port", &prom.to_string()])
            .args(["--status-port", &status.to_string()])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mesh-proxy starts"),
    );

    // The node the proxy sends the control plane.
    let first = ads
        .expect_delta("CDS subscribe", |r| r.type_url == CDS())
        .await;
    let sent =
        mesh_proto::envoy_json::to_json(first.node.as_ref().expect("node on the first request"))
            .unwrap();

    ads.push_delta(
        &CDS(),
        "c1",
        vec![
            (
                REVIEWS.into(),
                any(&eds_cluster(REVIEWS, LbPolicy::RoundRobin)),
            ),
            (
                RATINGS.into(),
                any(&eds_cluster(RATINGS, LbPolicy::RoundRobin)),
            ),
        ],
        vec![],
    );
    ads.push_delta(
        &EDS(),
        "e1",
        vec![(
            REVIEWS.into(),
            any(&cla(REVIEWS, &[("127.0.0.1:9081".parse().unwrap(), 1, 1)])),
        )],
        vec![],
    );
    // Poll (with a deadline) until the admin serves both clusters and the
    // endpoints.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let full = loop {
        if let Some((200, _, body)) = get(admin, "/config_dump?include_eds").await {
            let d: serde_json::Value = serde_json::from_str(&body).unwrap();
            let eds = &d["configs"][2]["dynamic_endpoint_configs"];
            if cluster_names(&d).len() == 2 && eds.as_array().is_some_and(|a| !a.is_empty()) {
                break d;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "config never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Envoy's order, EDS only with include_eds.
    let all = [
        "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
        "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
        "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
        "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
        "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
    ];
    assert_eq!(types(&full), all);
    let plain = dump(admin, "/config_dump").await;
    let without_eds: Vec<&str> = all
        .iter()
        .copied()
        .filter(|t| !t.contains("Endpoints"))
        .collect();
    assert_eq!(types(&plain), without_eds);

    // The bootstrap: the node exactly as sent over xDS, from the flags.
    let b = &plain["configs"][0]["bootstrap"];
    assert_eq!(b["node"], sent, "bootstrap node = the node sent to meshd");
    let node = &b["node"];
    assert_eq!(
        node["id"],
        "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local"
    );
    assert_eq!(node["cluster"], "reviews");
    assert_eq!(node["metadata"]["LABELS"]["version"], "v1");
    assert_eq!(node["metadata"]["SERVICE_ACCOUNT"], "reviews");
    assert_eq!(node["metadata"]["MESH_SERVICE_PORTS"], "http:9080");
    assert_eq!(node["locality"]["zone"], "zone-a");
    assert!(
        plain["configs"][0]["last_updated"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let sock = |a: &serde_json::Value| {
        let s = &a["socket_address"];
        format!("{}:{}", s["address"].as_str().unwrap(), s["port_value"])
    };
    assert_eq!(sock(&b["admin"]["address"]), admin.to_string());
    let xds = &b["static_resources"]["clusters"][0];
    assert_eq!(xds["name"], "xds-grpc");
    assert_eq!(
        sock(&xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]),
        ads.addr.to_string()
    );
    assert!(xds.get("transport_socket").is_none(), "plaintext xDS");
    let ports: Vec<(String, String)> = b["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap().to_owned(), sock(&l["address"])))
        .collect();
    assert_eq!(
        ports,
        [
            ("health".to_owned(), format!("0.0.0.0:{health}")),
            ("prometheus".to_owned(), format!("0.0.0.0:{prom}")),
            ("status".to_owned(), format!("0.0.0.0:{status}")),
        ]
    );
    assert_eq!(
        b["dynamic_resources"]["ads_config"]["api_type"],
        "DELTA_GRPC"
    );

    // ?resource=: only that field's entries, each packed as Envoy does.
    let r = dump(admin, "/config_dump?resource=dynamic_active_clusters").await;
    assert_eq!(
        types(&r),
        ["type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster"; 2]
    );
    assert_eq!(r["configs"][0]["version_info"], "c1");
    // ... with a mask applied inside each entry's cluster.
    let r = dump(
        admin,
        "/config_dump?resource=dynamic_active_clusters&mask=cluster.name",
    )
    .await;
    let c = r["configs"][0].as_object().unwrap();
    assert_eq!(c.keys().collect::<Vec<_>>(), ["@type", "cluster"]);
    assert_eq!(
        c["cluster"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["@type", "name"]
    );
    // ?mask= alone: the dumps it fits, trimmed.
    let m = dump(admin, "/config_dump?mask=bootstrap.node.id").await;
    assert_eq!(
        m,
        serde_json::json!({"configs": [{
            "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "bootstrap": {"node": {"id": node["id"]}}}]})
    );
    // ?name_regex=: whole names, across clusters and endpoints.
    let n = dump(admin, "/config_dump?include_eds&name_regex=.*reviews.*").await;
    assert_eq!(cluster_names(&n), [REVIEWS]);
    assert_eq!(
        n["configs"][2]["dynamic_endpoint_configs"][0]["endpoint_config"]["cluster_name"],
        REVIEWS
    );
    assert_eq!(n["configs"][0], plain["configs"][0], "the bootstrap stays");
    // Endpoints are a resource only with include_eds.
    let e = dump(
        admin,
        "/config_dump?include_eds&resource=dynamic_endpoint_configs",
    )
    .await;
    assert_eq!(e["configs"].as_array().unwrap().len(), 1);

    // Bad parameters: Envoy's status and text.
    for (path, want, text) in [
        (
            "/config_dump?resource=dynamic_endpoint_configs",
            404,
            "dynamic_endpoint_configs not found in config dump",
        ),
        (
            "/config_dump?resource=nope",
            404,
            "nope not found in config dump",
        ),
        (
            "/config_dump?resource=bootstrap",
            400,
            "bootstrap is not a repeated field. Use ?mask=bootstrap to get only this field",
        ),
        (
            "/config_dump?resource=dynamic_active_clusters&mask=nope",
            400,
            "FieldMask nope could not be successfully used.",
        ),
        (
            "/config_dump?mask=nope",
            400,
            "FieldMask nope could not be successfully applied to any configs.",
        ),
        (
            "/config_dump?name_regex=(",
            400,
            "Error while parsing name_regex from (:",
        ),
    ] {
        let (status, ctype, body) = get(admin, path).await.unwrap();
        assert_eq!(status, want, "{path}: {body}");
        assert!(ctype.starts_with("text/plain"), "{path}: {ctype}");
        assert!(body.starts_with(text), "{path}: {body}");
    }
}
