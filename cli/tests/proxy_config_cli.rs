//! `meshctl proxy-config` tables against recorded config dumps (golden
//! text). Set `MESH_UPDATE_GOLDEN=1` to rewrite the golden files after an
//! intended change, then review the diff.

use std::path::PathBuf;

use mesh_cli::proxy_config::dump::Dump;
use mesh_cli::proxy_config::tables::Filter;
use mesh_cli::proxy_config::{Kind, short};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/proxy_config")
}

fn load(name: &str) -> Dump {
    let text = std::fs::read_to_string(golden_dir().join(name)).unwrap();
    Dump(serde_json::from_str(&text).unwrap())
}

/// Compares with (or, with MESH_UPDATE_GOLDEN=1, writes) a golden file.
fn golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("MESH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden {}; run with MESH_UPDATE_GOLDEN=1",
            path.display()
        )
    });
    assert_eq!(actual, want, "{name} differs from the golden file");
}

// 2026-11-24T00:00:00Z: the recorded certificates are valid then.
const NOW: i64 = 1_795_478_400;

#[test]
fn meshd_dump_renders_istioctl_tables() {
    let dump = load("meshd_dump.json");
    let all = Filter::default();
    golden("clusters.txt", &short(&dump, Kind::Clusters, &all, NOW));
    golden("listeners.txt", &short(&dump, Kind::Listeners, &all, NOW));
    golden("routes.txt", &short(&dump, Kind::Routes, &all, NOW));
    golden("endpoints.txt", &short(&dump, Kind::Endpoints, &all, NOW));
    golden("bootstrap.txt", &short(&dump, Kind::Bootstrap, &all, NOW));
}

#[test]
fn filters_narrow_the_tables_like_istioctl_flags() {
    let dump = load("meshd_dump.json");
    let subset = Filter {
        fqdn: Some("reviews.default.svc.cluster.local".into()),
        subset: Some("v1".into()),
        ..Default::default()
    };
    let t = short(&dump, Kind::Clusters, &subset, NOW);
    assert_eq!(t.lines().count(), 2, "{t}");
    assert!(
        t.contains("reviews.default.svc.cluster.local   9080   v1"),
        "{t}"
    );
    let inbound = Filter {
        direction: Some("inbound".into()),
        ..Default::default()
    };
    let t = short(&dump, Kind::Clusters, &inbound, NOW);
    assert_eq!(t.lines().count(), 2, "{t}");
    let port = Filter {
        port: Some(15006),
        ..Default::default()
    };
    let t = short(&dump, Kind::Listeners, &port, NOW);
    assert!(t.lines().skip(1).all(|l| l.contains("15006")), "{t}");
    let cluster = Filter {
        cluster: Some("outbound|9080|v2|reviews.default.svc.cluster.local".into()),
        ..Default::default()
    };
    let t = short(&dump, Kind::Endpoints, &cluster, NOW);
    assert_eq!(t.lines().count(), 1, "v2 has no endpoints: {t}");
}

#[test]
fn proxy_admin_dump_renders_secrets_and_the_accepted_resources() {
    let dump = load("proxy_dump.json");
    let all = Filter::default();
    golden("proxy_secret.txt", &short(&dump, Kind::Secret, &all, NOW));
    golden("proxy_all.txt", &short(&dump, Kind::All, &all, NOW));
    let t = short(&dump, Kind::Secret, &all, NOW);
    assert!(
        t.contains("default         Cert Chain   ACTIVE   true"),
        "{t}"
    );
    assert!(
        t.contains("ROOTCA          CA           ACTIVE   true"),
        "{t}"
    );
}

#[test]
fn secrets_asked_of_meshd_say_to_use_the_admin_port() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["proxy-config", "secret", "reviews-v1.default"])
        .env("MESHD_ADDR", "127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("meshd does not hold proxies' certificates"),
        "{err}"
    );
    assert!(err.contains("--admin"), "{err}");
}
