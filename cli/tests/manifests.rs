//! `meshctl manifest generate`: the rendered install per profile is pinned
//! by golden files, committed as deploy/manifests/mesh.yaml, accepted by
//! kubernetes-validate, and `--set` mistakes are reported by key.

use std::path::{Path, PathBuf};
use std::process::Command;

use mesh_cli::manifest::{GenerateArgs, Profile, generate_yaml};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn args(profile: Profile) -> GenerateArgs {
    GenerateArgs {
        profile,
        set: Vec::new(),
        namespace: "mesh-system".to_string(),
    }
}

/// Compares `generated` with the file at `rel` (from the repo root);
/// `UPDATE_GOLDEN=1` rewrites it.
fn assert_file(rel: &str, generated: &str, regenerate: &str) {
    let path = root().join(rel);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{rel} is out of date with `meshctl manifest generate`: run `{regenerate}`"
    );
}

#[test]
fn each_profile_matches_its_golden_file() {
    for p in Profile::ALL {
        assert_file(
            &format!("cli/tests/golden/{}.yaml", p.as_str()),
            &generate_yaml(&args(p)).unwrap(),
            "UPDATE_GOLDEN=1 cargo test -p mesh-cli --test manifests",
        );
    }
}

#[test]
fn deploy_manifest_is_the_default_profile() {
    assert_file(
        "deploy/manifests/mesh.yaml",
        &generate_yaml(&args(Profile::Default)).unwrap(),
        "UPDATE_GOLDEN=1 cargo test -p mesh-cli --test manifests",
    );
}

fn kinds(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn profiles_differ_in_webhooks_budget_and_replicas() {
    let minimal = generate_yaml(&args(Profile::Minimal)).unwrap();
    let default = generate_yaml(&args(Profile::Default)).unwrap();
    let demo = generate_yaml(&args(Profile::Demo)).unwrap();
    let has = |y: &str, k: &str| kinds(y).iter().any(|x| x == k);
    assert!(!has(&minimal, "MutatingWebhookConfiguration"));
    assert!(!has(&minimal, "PodDisruptionBudget"));
    assert!(has(&default, "MutatingWebhookConfiguration"));
    assert!(has(&default, "ValidatingWebhookConfiguration"));
    assert!(has(&default, "PodDisruptionBudget"));
    assert!(has(&demo, "MutatingWebhookConfiguration"));
    assert!(!has(&demo, "PodDisruptionBudget"));
    assert!(default.contains("failurePolicy: Fail"));
    assert!(demo.contains("failurePolicy: Ignore"));
    assert!(demo.contains("mtlsMode: PERMISSIVE"));
    assert!(default.contains("replicas: 2"));
    for y in [&minimal, &default, &demo] {
        assert_eq!(
            kinds(y)
                .iter()
                .filter(|k| *k == "CustomResourceDefinition")
                .count(),
            10
        );
    }
}

#[test]
fn set_overrides_values_and_namespace_moves_every_namespaced_object() {
    let mut a = args(Profile::Default);
    a.set = vec![
        "meshd.replicas=5".into(),
        "global.hub=registry.example/mesh".into(),
        "global.tag=1.2.3".into(),
    ];
    a.namespace = "other-ns".into();
    let y = generate_yaml(&a).unwrap();
    assert!(y.contains("replicas: 5"));
    assert!(y.contains("image: registry.example/mesh/meshd:1.2.3"));
    assert!(!y.contains("mesh-system"), "{y}");
    assert!(y.contains("namespace: other-ns"));
}

fn meshctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

#[test]
fn unknown_set_key_fails_naming_the_key() {
    let out = meshctl(&["manifest", "generate", "--set", "meshd.replica=2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--set meshd.replica: unknown key"), "{err}");
    assert!(
        err.contains("meshd.replicas"),
        "lists the known keys: {err}"
    );

    let out = meshctl(&["manifest", "generate", "--set", "meshd.replicas=many"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("meshd.replicas=many: expected an integer"),
        "{err}"
    );

    let out = meshctl(&[
        "manifest",
        "generate",
        "--profile",
        "demo",
        "--set",
        "pdb.enabled=true",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind: PodDisruptionBudget"));
}

/// Runs an offline validator from PyPI; `None` when it is not installed and
/// the suite is not required to run everything (CI sets MESH_E2E_REQUIRED=1
/// and scripts/test.sh installs kubernetes-validate).
fn run_tool(test: &str, program: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if std::env::var("MESH_E2E_REQUIRED").as_deref() == Ok("1") => {
            panic!("{test}: cannot run {program}: {e} (scripts/test.sh installs it)")
        }
        Err(e) => {
            eprintln!("skipping {test}: cannot run {program}: {e} (scripts/test.sh installs it)");
            None
        }
    }
}

#[test]
fn every_profile_passes_kubernetes_validate_strict() {
    for p in Profile::ALL {
        let file = format!("cli/tests/golden/{}.yaml", p.as_str());
        let Some(out) = run_tool(
            "every_profile_passes_kubernetes_validate_strict",
            "kubernetes-validate",
            &["--strict", "-k", "1.33.0", &file],
        ) else {
            return;
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{file}: {text}");
        let objects = kinds(&generate_yaml(&args(p)).unwrap()).len();
        assert_eq!(
            text.matches(" passed for resource ").count(),
            objects,
            "{file}: {text}"
        );
    }
}

fn deep_merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                deep_merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn chart_values(profile: Profile) -> serde_json::Value {
    let dir = root().join("deploy/helm/mesh");
    let read = |f: &str| -> serde_json::Value {
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let mut values = read("values.yaml");
    if profile != Profile::Default {
        deep_merge(
            &mut values,
            &read(&format!("values-{}.yaml", profile.as_str())),
        );
    }
    values
}

#[test]
fn helm_values_files_are_the_profiles() {
    for p in Profile::ALL {
        assert_eq!(
            &chart_values(p),
            mesh_cli::manifest::Values::for_profile(p).tree(),
            "deploy/helm/mesh values for profile {}",
            p.as_str()
        );
    }
}

#[test]
fn helm_chart_crds_are_the_generated_crds() {
    let chart = std::fs::read_to_string(root().join("deploy/helm/mesh/crds/crds.yaml")).unwrap();
    assert!(
        chart == mesh_cli::manifest::crds_yaml().unwrap(),
        "deploy/helm/mesh/crds/crds.yaml is stale: cp deploy/crds/crds.yaml deploy/helm/mesh/crds/"
    );
}

fn object_key(o: &serde_json::Value) -> String {
    format!(
        "{}/{}/{}",
        o["kind"].as_str().unwrap_or_default(),
        o["metadata"]["namespace"].as_str().unwrap_or_default(),
        o["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// The chart rendered by real Helm (the Go library in PyPI's
/// helm-python-sdk, offline) gives the same objects as `meshctl manifest
/// generate`, for every profile and a non-default namespace. Skipped with a
/// printed reason when helm-python-sdk is not installed, failed instead when
/// MESH_HELM_REQUIRED=1.
#[test]
fn helm_chart_renders_the_same_objects_as_meshctl() {
    for p in Profile::ALL {
        for ns in ["mesh-system", "other-ns"] {
            let out = Command::new("python3")
                .args([
                    "deploy/tests/helm_render.py",
                    "deploy/helm/mesh",
                    p.as_str(),
                    ns,
                ])
                .current_dir(root())
                .output();
            let out = match out {
                Ok(out) if out.status.code() != Some(3) => out,
                other => {
                    let why = match other {
                        Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                        Err(e) => e.to_string(),
                    };
                    if std::env::var("MESH_HELM_REQUIRED").as_deref() == Ok("1") {
                        panic!(
                            "cannot render the chart with Helm: {why} (pip install helm-python-sdk)"
                        );
                    }
                    eprintln!(
                        "skipping helm_chart_renders_the_same_objects_as_meshctl: {why} (pip install helm-python-sdk)"
                    );
                    return;
                }
            };
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut helm: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
            let mut a = args(p);
            a.namespace = ns.to_string();
            let mut ours = mesh_cli::manifest::install::objects(&a.values().unwrap(), ns);
            helm.sort_by_key(object_key);
            ours.sort_by_key(object_key);
            let keys = |v: &[serde_json::Value]| v.iter().map(object_key).collect::<Vec<_>>();
            assert_eq!(keys(&helm), keys(&ours), "profile {} ns {ns}", p.as_str());
            for (h, o) in helm.iter().zip(&ours) {
                assert!(
                    h == o,
                    "profile {} ns {ns}: {} differs\nhelm:    {h}\nmeshctl: {o}",
                    p.as_str(),
                    object_key(o)
                );
            }
        }
    }
}

/// `(package, binary targets)` of every workspace member, from cargo metadata.
fn workspace_bins() -> Vec<(String, Vec<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let bins = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect();
            (p["name"].as_str().unwrap().to_string(), bins)
        })
        .collect()
}

/// The words following `flag` in `text` (`-p mesh-proxy` -> `mesh-proxy`).
fn flag_values(text: &str, flag: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].to_string())
        .collect()
}

#[test]
fn dockerfiles_build_existing_crates_and_binaries() {
    let bins = workspace_bins();
    let dir = root().join("deploy/docker");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("Dockerfile") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(text.contains("cargo build --release --locked"), "{name}");
        let crates = flag_values(&text, "-p");
        assert_eq!(crates.len(), 1, "{name}: one -p CRATE: {crates:?}");
        let Some((_, crate_bins)) = bins.iter().find(|(p, _)| *p == crates[0]) else {
            panic!("{name}: -p {} is not a workspace package", crates[0]);
        };
        let wanted = flag_values(&text, "--bin");
        assert!(!wanted.is_empty(), "{name}: names its --bin");
        for bin in &wanted {
            assert!(
                crate_bins.contains(bin),
                "{name}: {} has no binary {bin} (it has {crate_bins:?})",
                crates[0]
            );
            assert!(
                text.contains(&format!("target/release/{bin}")),
                "{name}: copies target/release/{bin}"
            );
        }
        let entry = text
            .lines()
            .rfind(|l| l.starts_with("ENTRYPOINT"))
            .unwrap_or_else(|| panic!("{name}: no ENTRYPOINT"));
        assert!(
            wanted
                .iter()
                .any(|b| entry.contains(&format!("/usr/local/bin/{b}\""))),
            "{name}: ENTRYPOINT runs one of {wanted:?}: {entry}"
        );
    }
    assert_eq!(seen, 5, "meshd, proxy, ca, gateway, demo-app");
    let proxy = std::fs::read_to_string(dir.join("proxy.Dockerfile")).unwrap();
    assert!(proxy.contains("iptables"), "mesh-proxy init needs iptables");
}

#[test]
fn kind_scripts_parse_with_bash_n() {
    let dir = root().join("e2e/kind");
    let mut scripts: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sh"))
        .collect();
    scripts.sort();
    assert_eq!(scripts, ["common.sh", "demo.sh", "down.sh", "up.sh"]);
    for s in &scripts {
        let Some(out) = run_tool(
            "kind_scripts_parse_with_bash_n",
            "bash",
            &["-n", &format!("e2e/kind/{s}")],
        ) else {
            return;
        };
        assert!(
            out.status.success(),
            "{s}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn kind_cluster_has_two_workers_in_different_zones() {
    let text = std::fs::read_to_string(root().join("deploy/kind/cluster.yaml")).unwrap();
    let cfg: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let nodes = cfg["nodes"].as_array().unwrap();
    let zone = |n: &serde_json::Value| {
        n["labels"]["topology.kubernetes.io/zone"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let workers: Vec<String> = nodes
        .iter()
        .filter(|n| n["role"] == "worker")
        .map(zone)
        .collect();
    assert_eq!(nodes.len(), 3);
    assert_eq!(workers.len(), 2);
    assert_ne!(workers[0], workers[1]);
}

#[test]
fn bookshop_passes_kubernetes_validate_strict() {
    let Some(out) = run_tool(
        "bookshop_passes_kubernetes_validate_strict",
        "kubernetes-validate",
        &["--strict", "-k", "1.33.0", "e2e/kind/bookshop.yaml"],
    ) else {
        return;
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), 13, "{text}");
    for d in [
        "productpage-v1",
        "reviews-v1",
        "reviews-v2",
        "ratings-v1",
        "client",
    ] {
        assert!(text.contains(&format!("deployment/{d} ")), "{d}: {text}");
    }
}

#[test]
fn install_dry_run_prints_what_manifest_generate_prints() {
    let flags = [
        "--profile",
        "demo",
        "--set",
        "meshd.replicas=3",
        "-n",
        "mesh-demo",
    ];
    let install = meshctl(&[&["install", "--dry-run"][..], &flags[..]].concat());
    let generate = meshctl(&[&["manifest", "generate"][..], &flags[..]].concat());
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    assert!(generate.status.success());
    assert_eq!(install.stdout, generate.stdout);
    assert!(String::from_utf8_lossy(&install.stdout).contains("replicas: 3"));
}

#[test]
fn install_without_a_cluster_says_how_to_reach_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["install", "--profile", "minimal"])
        .env("RUST_BACKTRACE", "0")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no Kubernetes cluster to install to"), "{err}");
    assert!(out.stdout.is_empty(), "nothing applied, nothing printed");
}

/// `--set global.hub/global.tag` name meshd's image and the sidecar image
/// meshd's injector uses: the `mesh-config` ConfigMap's `proxyImage`, which
/// the Deployment mounts at meshd's `--mesh-config-dir` (meshd reads it
/// there: control/tests/kube_webhook.rs injects a pod with it).
#[test]
fn set_hub_and_tag_name_the_injected_sidecar_image() {
    let out = meshctl(&[
        "manifest",
        "generate",
        "--set",
        "global.hub=x",
        "--set",
        "global.tag=y",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_json::Value> = yaml
        .split("\n---\n")
        .filter(|d| !d.trim().is_empty() && d.trim() != "---")
        .map(|d| serde_saphyr::from_str(d.trim_start_matches("---\n")).unwrap())
        .collect();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let config = find("ConfigMap", "mesh-config");
    assert_eq!(config["data"]["proxyImage"], "x/mesh-proxy:y");
    let meshd = &find("Deployment", "meshd")["spec"]["template"]["spec"];
    let container = &meshd["containers"][0];
    assert_eq!(container["image"], "x/meshd:y");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let dir = args
        .iter()
        .find_map(|a| a.strip_prefix("--mesh-config-dir="))
        .expect("meshd reads its mesh config from a directory");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .expect("the mesh config directory is mounted");
    let volume = meshd["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["configMap"]["name"], "mesh-config");
}
