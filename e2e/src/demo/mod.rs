//! The demo application: a small HTTP service in the style of a book shop.
//!
//! Each instance is one service at one version. On every request it waits the
//! configured latency, fails with the configured probability, calls its
//! upstreams in order, and answers JSON naming its service, its version and the
//! SPIFFE ID of its caller (from the `x-forwarded-client-cert` header that an
//! inbound sidecar sets, as Envoy does), plus each upstream's answer.

mod server;
mod upstream;

pub use server::{DemoConfig, Reply, serve};
pub use upstream::{Upstream, UpstreamError, UpstreamReply};

/// Extracts the caller's SPIFFE ID from an `x-forwarded-client-cert` value
/// (`By=...;Hash=...;URI=spiffe://...`). With several elements (one per hop),
/// the last one is the immediate caller.
pub fn caller_from_xfcc(xfcc: &str) -> Option<String> {
    let last = xfcc.rsplit(',').next()?;
    last.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("URI")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_is_the_uri_of_the_last_xfcc_element() {
        let v = "By=spiffe://cluster.local/ns/default/sa/reviews;Hash=ab;URI=spiffe://cluster.local/ns/default/sa/productpage";
        assert_eq!(
            caller_from_xfcc(v).as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/productpage")
        );
        let two = "By=a;URI=spiffe://td/ns/x/sa/first,By=b;URI=\"spiffe://td/ns/y/sa/second\"";
        assert_eq!(
            caller_from_xfcc(two).as_deref(),
            Some("spiffe://td/ns/y/sa/second")
        );
        assert_eq!(caller_from_xfcc("By=a;Hash=b"), None);
    }
}
