//! `mesh-proxy drain`: what the injected preStop hook runs. It asks the
//! local proxy's admin port to stop accepting (`POST /drain`), then polls
//! `GET /drain` until no downstream connection is left or the timeout
//! passes, so the kubelet's SIGTERM comes after in-flight work is done.

use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use crate::health::http_request;

/// Why draining failed.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The admin port did not answer.
    #[error("the proxy's admin port did not answer: {0}")]
    Admin(String),
    /// The admin port refused the request.
    #[error("the admin port answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: http::StatusCode,
        /// Body.
        body: String,
    },
}

/// Open downstream connections, from the `GET /drain` status line
/// (`{"draining":true,"active_connections":3}`).
pub fn active_connections(status: &str) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_str(status.trim()).ok()?;
    v.get("active_connections")?
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
}

/// Drains the proxy whose admin listens on 127.0.0.1:`admin_port`. Returns
/// the connections still open when it stopped waiting (0: fully drained).
pub async fn drain(admin_port: u16, timeout: Duration) -> Result<usize, DrainError> {
    let call = |method: Method| async move {
        let (status, body) = http_request(
            method,
            "127.0.0.1",
            admin_port,
            "/drain",
            &[],
            Duration::from_secs(2),
        )
        .await
        .map_err(DrainError::Admin)?;
        let body = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            Ok(body)
        } else {
            Err(DrainError::Refused { status, body })
        }
    };
    call(Method::POST).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = active_connections(&call(Method::GET).await?).unwrap_or(0);
        if left == 0 || Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_open_connection_count() {
        assert_eq!(
            active_connections("{\"draining\":true,\"active_connections\":3}\n"),
            Some(3)
        );
        assert_eq!(active_connections("not json"), None);
    }
}
