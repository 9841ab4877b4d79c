//! meshctl against the real meshd binary on its embedded SQLite store:
//! apply, re-apply, get, rejection with field paths, delete, proxy-status
//! and version; and the hint when meshd is not running.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_e2e::bins::workspace_bin;

/// A meshd started on ephemeral loopback ports; killed (by PID) on drop.
struct Meshd {
    child: Child,
    http: String,
    _dir: tempfile::TempDir,
}

impl Drop for Meshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the end of the escape sequence (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn start_meshd() -> Meshd {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(workspace_bin("meshd"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args([
            "--xds-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--ca-addr",
            "127.0.0.1:0",
            "--debounce",
            "20ms",
        ])
        // meshd logs (tracing's default) on stdout.
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let logs = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(logs).lines().map_while(Result::ok) {
            let line = strip_ansi(&line);
            if let Some(rest) = line.split("http_addr=").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("meshd never said where its API listens");
    Meshd {
        child,
        http: format!("http://{addr}"),
        _dir: dir,
    }
}

fn meshctl(meshd: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(workspace_bin("meshctl"))
        .args(args)
        .env("MESHD_ADDR", meshd)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn examples(name: &str) -> String {
    format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn meshctl_manages_resources_in_a_real_meshd() {
    let meshd = start_meshd();
    let m = meshd.http.as_str();
    let canary = examples("canary-split.yaml");

    let (ok, out, err) = meshctl(m, &["apply", "-f", &canary]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("virtualservice/reviews created"), "{out}");
    let (ok, out, _) = meshctl(m, &["apply", "-f", &canary]);
    assert!(ok);
    assert!(out.contains("virtualservice/reviews unchanged"), "{out}");

    let (ok, out, err) = meshctl(m, &["get", "vs", "reviews", "-n", "bookinfo", "-o", "json"]);
    assert!(ok, "{err}");
    let vs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(vs["metadata"]["generation"], 1);
    assert_eq!(vs["spec"]["hosts"][0], "reviews");

    // An invalid document is refused whole, with its field path.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: bookinfo}\nspec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: ratings, subset: v1}\n      weight: 60\n    - destination: {host: ratings, subset: v2}\n      weight: 30\n",
    )
    .unwrap();
    let (ok, out, err) = meshctl(m, &["apply", "-f", bad.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("spec.http[0].route") && err.contains("weights sum to 90, must be 100"),
        "{err}"
    );
    let (_, out, _) = meshctl(m, &["get", "vs", "-n", "bookinfo"]);
    assert!(
        !out.contains("ratings"),
        "nothing of the refused batch was stored: {out}"
    );

    let (ok, out, _) = meshctl(m, &["proxy-status"]);
    assert!(ok);
    assert!(
        out.starts_with("NAME") && out.contains("CONTROL-PLANE"),
        "{out}"
    );
    let (ok, out, _) = meshctl(m, &["version"]);
    assert!(ok);
    assert!(
        out.contains(&format!(
            "control plane version: meshd {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );

    let (ok, out, err) = meshctl(m, &["delete", "vs", "reviews", "-n", "bookinfo"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = meshctl(m, &["get", "vs", "reviews", "-n", "bookinfo"]);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn meshctl_says_how_to_start_meshd_when_it_is_not_running() {
    // Bind then drop: a loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let (ok, _, err) = meshctl(&m, &["get", "vs"]);
    assert!(!ok);
    assert!(
        err.contains("is meshd running? start it with `meshd`"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let (ok, out, _) = meshctl(&m, &["version"]);
    assert!(ok, "version works without meshd");
    assert!(out.contains(&format!(
        "client version: meshctl {}",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(out.contains("control plane version: unknown"), "{out}");
}
