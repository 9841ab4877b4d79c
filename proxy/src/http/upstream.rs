//! Upstream HTTP clients: one hyper-util pooled client per cluster (the
//! pool inside is keyed by endpoint address, so connections are pooled per
//! endpoint), rebuilt when the cluster's connection settings change.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{Cluster, UpstreamProtocol};

/// A pooled HTTP client.
pub type HttpClient = Client<HttpConnector, Incoming>;

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    http2: bool,
}

/// Clients by cluster name.
#[derive(Debug, Default)]
pub struct Upstreams {
    clients: Mutex<HashMap<String, (Settings, HttpClient)>>,
}

impl Upstreams {
    /// The client for `cluster`; `downstream_h2` decides the protocol for
    /// clusters that follow the downstream one.
    pub fn client(&self, cluster: &Cluster, downstream_h2: bool) -> HttpClient {
        let http2 = match cluster.http.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Downstream => downstream_h2,
        };
        let settings = Settings {
            connect_timeout: cluster.connect_timeout,
            idle_timeout: cluster.http.idle_timeout,
            http2,
        };
        let key = if http2 {
            format!("{}#h2", cluster.name)
        } else {
            cluster.name.clone()
        };
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, c)) = map.get(&key)
            && *s == settings
        {
            return c.clone();
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        // Envoy's default upstream idle timeout is one hour.
        builder.pool_idle_timeout(settings.idle_timeout.unwrap_or(Duration::from_secs(3600)));
        builder.http2_only(http2);
        let client = builder.build(connector);
        map.insert(key, (settings, client.clone()));
        client
    }
}
