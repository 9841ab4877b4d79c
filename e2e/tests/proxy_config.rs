//! `meshctl proxy-config` and `meshctl check` against a running local mesh
//! (meshd and its CA, sidecars with real interception, demo apps) in
//! network namespaces.

use std::process::Command;

use mesh_e2e::mesh::{LocalMesh, Workload};
use mesh_e2e::netns::e2e_available;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

#[test]
fn meshctl_proxy_config_lists_a_sidecars_clusters_and_check_passes() {
    if !e2e_available("meshctl_proxy_config_lists_a_sidecars_clusters_and_check_passes") {
        return;
    }
    let mut mesh = LocalMesh::start("proxycfg");
    mesh.workload(Workload {
        name: "reviews-v1",
        service_account: "reviews",
        service: Some("reviews"),
        version: "v1",
        svid_ttl: None,
    });
    let client = mesh.workload(Workload::client("productpage"));
    mesh.wait_synced(2);
    let meshctl = mesh.bin("meshctl").unwrap();
    let netns = mesh.node.netns().to_string();
    let run = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &netns, &meshctl])
            .args(args)
            .args(["--meshd", &mesh.api])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // The table, through meshd's /debug/config_dump.
    let (code, table, err) = run(&["proxy-config", "clusters", "productpage.default"]);
    assert_eq!(code, Some(0), "{table}{err}");
    assert!(table.starts_with("SERVICE FQDN"), "{table}");
    assert!(
        table.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.starts_with(&["reviews.default.svc.cluster.local", "9080", "-", "outbound"])
        }),
        "{table}"
    );
    // The Envoy JSON carries Istio's cluster name.
    let (code, json, err) = run(&[
        "proxy-config",
        "clusters",
        "productpage.default",
        "-o",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let clusters: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        clusters
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == REVIEWS),
        "{json}"
    );
    let (code, listeners, err) = run(&["proxy-config", "listeners", "productpage.default"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(listeners.contains("15001"), "{listeners}");

    // An unknown proxy: meshd's 404 names the connected ones.
    let (code, _, err) = run(&["proxy-config", "clusters", "nope.default"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("productpage.default"), "{err}");

    // The sidecar's own admin /config_dump, read inside its pod: what it
    // accepted, and its certificates from the CA (only the proxy has them).
    let admin = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &client.netns, &meshctl])
            .args(args)
            .args(["--admin", "127.0.0.1:15000"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let secrets = admin(&["proxy-config", "secret"]);
    let rows: Vec<Vec<&str>> = secrets
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&["default", "Cert", "Chain", "ACTIVE", "true"])),
        "{secrets}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&["ROOTCA", "CA", "ACTIVE", "true"])),
        "{secrets}"
    );
    // The sidecar's bootstrap: the node its flags made, as sent to meshd.
    let bootstrap = admin(&["proxy-config", "bootstrap"]);
    let field = |name: &str| {
        bootstrap
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {name} in {bootstrap}"))
    };
    assert_eq!(
        field("NODE ID"),
        format!(
            "sidecar~{}~productpage.default~default.svc.cluster.local",
            client.ip
        )
    );
    assert_eq!(field("METADATA SERVICE_ACCOUNT"), "productpage");
    assert_eq!(field("METADATA INSTANCE_IPS"), client.ip.to_string());
    let accepted = admin(&["proxy-config", "clusters"]);
    assert!(
        accepted.contains("reviews.default.svc.cluster.local"),
        "{accepted}"
    );
    // With --admin, OUTLIER CHECK comes from the proxy's /clusters.
    let endpoints = admin(&["proxy-config", "endpoints", "--cluster", REVIEWS]);
    assert!(
        endpoints.lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1..) == Some(&["HEALTHY", "OK", REVIEWS][..])
        }),
        "{endpoints}"
    );

    // meshctl check passes on the running mesh.
    let (code, out, err) = run(&["check"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("√ proxies are SYNCED"), "{out}");
    assert!(out.contains("Status check results are √"), "{out}");
}
