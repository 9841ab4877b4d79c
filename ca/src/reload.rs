//! Noticing that a CA directory changed (`mesh-ca rotate-root`, the two
//! rotation steps, or replaced `cacerts` files) and loading it again, for a
//! server that runs for a long time on one directory (meshd's embedded CA).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::authority::{
    CA_CERT, CERT_CHAIN, CertificateAuthority, IssuePolicy, ROOT_CERT, TRUST_BUNDLE,
};

/// How often meshd looks at its CA directory.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The files whose contents decide which CA a directory holds.
const WATCHED: [&str; 4] = [CA_CERT, CERT_CHAIN, ROOT_CERT, TRUST_BUNDLE];

/// The watched files' contents (a missing file reads as empty).
fn fingerprint(dir: &std::path::Path) -> Vec<Vec<u8>> {
    WATCHED
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap_or_default())
        .collect()
}

/// Every `every`, compares the CA files in `dir` with what was last loaded;
/// when they differ, loads the CA again and sends it on `tx` (servers,
/// serving-certificate renewals and bundle publishers follow the watch). A
/// CA that does not load (files half-written) is logged and retried at the
/// next check; the previous CA stays in use. Ends when every receiver is
/// gone.
pub fn spawn_dir_watch(
    dir: PathBuf,
    trust_domain: String,
    policy: IssuePolicy,
    tx: watch::Sender<Arc<CertificateAuthority>>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut loaded = fingerprint(&dir);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            let now = fingerprint(&dir);
            if now == loaded {
                continue;
            }
            match CertificateAuthority::load(&dir, Some(&trust_domain), policy) {
                Ok(ca) => {
                    tracing::info!(dir = %dir.display(), roots = ca.trust_bundle().roots().len(), "CA directory changed; CA reloaded");
                    loaded = now;
                    tx.send_replace(Arc::new(ca));
                }
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "CA directory changed but does not load; keeping the current CA");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::InitOptions;

    #[tokio::test(start_paused = true)]
    async fn a_rotated_root_is_loaded_and_announced() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::init(
            dir.path(),
            &InitOptions::new("example.org"),
            IssuePolicy::default(),
        )
        .unwrap();
        let (tx, mut rx) = watch::channel(Arc::new(ca));
        let task = spawn_dir_watch(
            dir.path().to_path_buf(),
            "example.org".into(),
            IssuePolicy::default(),
            tx,
            Duration::from_secs(10),
        );
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(!rx.has_changed().unwrap(), "nothing changed yet");
        CertificateAuthority::prepare_root_rotation(dir.path(), IssuePolicy::default()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.borrow().trust_bundle().roots().len(), 2);
        task.abort();
    }
}
