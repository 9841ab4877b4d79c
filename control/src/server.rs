//! Starts meshd's components and wires them together.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::Shared;
use crate::store::{ConfigStore, FilesStore, SqliteStore};

/// Errors starting meshd.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("opening the config store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A listen address could not be bound.
    #[error(
        "binding {addr}: {source} (is another meshd running? pick another address with --{flag})"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which flag sets it.
        flag: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A running meshd (its tasks stop when this is dropped).
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP API/debug server listens.
    pub http_addr: SocketAddr,
    /// Shared handles (store, registry, ...).
    pub shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens the stores, binds the listeners and spawns every task.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let mut tasks = Vec::new();
    let store: Arc<dyn ConfigStore> = match &config.config_dir {
        Some(dir) => {
            let files = FilesStore::open(dir)?;
            tasks.push(files.spawn_poller());
            Arc::new(files)
        }
        None => Arc::new(SqliteStore::open(&config.data_dir()).await?),
    };
    tracing::info!(store = %store.describe(), "config store open");
    let shared = Arc::new(Shared { store });
    let http = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.http_addr,
            flag: "http-addr",
            source,
        })?;
    let http_addr = http.local_addr().map_err(|source| StartError::Bind {
        addr: config.http_addr,
        flag: "http-addr",
        source,
    })?;
    tasks.push(tokio::spawn(crate::http::serve(http, shared.clone())));
    tracing::info!(%http_addr, "management API and debug endpoints listening");
    Ok(Running {
        http_addr,
        shared,
        tasks,
    })
}
