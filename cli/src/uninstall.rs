//! `meshctl uninstall`: deletes what `meshctl install` applied, in reverse
//! order (webhooks first, so no pod creation waits on a meshd being
//! removed). The CRDs, and with them every mesh resource in the cluster,
//! stay unless `--purge`.

use std::io::Write;

use kube::Client;
use kube::api::DeleteParams;

use crate::install::{InstallError, Target, targets};
use crate::manifest::GenerateArgs;

/// Flags of `meshctl uninstall`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The profile, values and namespace used to install.
    #[command(flatten)]
    pub generate: GenerateArgs,
    /// Also delete the CRDs (and so every VirtualService, DestinationRule...).
    #[arg(long)]
    pub purge: bool,
    /// Which Kubernetes cluster to uninstall from.
    #[command(flatten)]
    pub kube: crate::access::KubeArgs,
}

/// Deletes `targets` in reverse order; objects already gone are fine.
/// CRDs are kept unless `purge`. Prints one line per object.
pub async fn delete_all(
    client: &Client,
    targets: &[Target],
    purge: bool,
    out: &mut impl Write,
) -> Result<(), InstallError> {
    for t in targets.iter().rev() {
        if t.resource.kind == "CustomResourceDefinition" && !purge {
            continue;
        }
        match t
            .api(client)
            .delete(&t.name, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                let _ = writeln!(out, "✔ deleted {}", t.label());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let _ = writeln!(out, "- {} (not found)", t.label());
            }
            Err(source) => {
                return Err(InstallError::Api {
                    what: format!("deleting {}", t.label()),
                    source,
                });
            }
        }
    }
    if !purge {
        let _ = writeln!(
            out,
            "The mesh CRDs were kept (with your mesh resources); `meshctl uninstall --purge` deletes them too."
        );
    }
    Ok(())
}

/// Runs `meshctl uninstall`.
pub async fn run(args: Args) -> anyhow::Result<i32> {
    let values = args.generate.values()?;
    let ns = args.generate.namespace.clone();
    let objects = crate::manifest::install::objects(&values, &ns);
    let targets = targets(&objects, &ns)?;
    let client = args.kube.required_client().await.map_err(|e| {
        anyhow::anyhow!(
            "no Kubernetes cluster to uninstall from (set KUBECONFIG, pass --kubeconfig, or run in a pod): {e}"
        )
    })?;
    delete_all(&client, &targets, args.purge, &mut std::io::stdout()).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::tests::{mock, not_found};
    use crate::manifest::values::{Profile, Values};
    use http::Method;
    use serde_json::json;

    fn demo_targets() -> Vec<Target> {
        let objects =
            crate::manifest::install::objects(&Values::for_profile(Profile::Demo), "mesh-system");
        targets(&objects, "mesh-system").unwrap()
    }

    #[tokio::test]
    async fn uninstall_deletes_in_reverse_order_and_keeps_the_crds() {
        let t = demo_targets();
        let (client, seen) = mock(|_, p, _| {
            if p.ends_with("/mesh-config") {
                (404, not_found())
            } else {
                (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                )
            }
        });
        let mut out = Vec::new();
        delete_all(&client, &t, false, &mut out).await.unwrap();
        let seen = seen.lock().unwrap();
        assert!(seen.iter().all(|s| s.0 == Method::DELETE));
        assert!(
            seen[0].1.contains("webhookconfigurations"),
            "webhooks first: {:?}",
            seen[0]
        );
        assert_eq!(
            seen.last().unwrap().1,
            "/api/v1/namespaces/mesh-system",
            "namespace last"
        );
        assert!(
            !seen
                .iter()
                .any(|s| s.1.contains("customresourcedefinitions"))
        );
        let printed = String::from_utf8(out).unwrap();
        assert!(
            printed.contains("- ConfigMap mesh-system/mesh-config (not found)"),
            "{printed}"
        );
        assert!(printed.contains("--purge"), "{printed}");
    }

    #[tokio::test]
    async fn uninstall_purge_deletes_the_crds_too() {
        let t = demo_targets();
        let (client, seen) = mock(|_, _, _| {
            (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            )
        });
        delete_all(&client, &t, true, &mut Vec::new())
            .await
            .unwrap();
        let crds = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                s.1.starts_with("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/")
            })
            .count();
        assert_eq!(crds, mesh_model::Kind::ALL.len());
    }
}
