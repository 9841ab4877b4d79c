//! Host names: expanding short names to FQDNs and matching wildcards.
//!
//! Expansion rules of [`fqdn`] (a documented extension of Istio's, which only
//! expands names without a dot):
//!
//! - `*` and `*.example.com` are kept as they are;
//! - `reviews` becomes `reviews.<namespace>.svc.<cluster_domain>`;
//! - `reviews.prod` becomes `reviews.prod.svc.<cluster_domain>` unless its
//!   last label is a common top-level domain (`httpbin.org` stays as is);
//! - `reviews.prod.svc` gets `.<cluster_domain>` appended;
//! - anything else is taken as a fully qualified name.

/// The cluster domain when none is configured.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Last labels that make a two-label name a public DNS name rather than
/// `service.namespace`.
const COMMON_TLDS: &[&str] = &[
    "com",
    "org",
    "net",
    "io",
    "dev",
    "edu",
    "gov",
    "mil",
    "info",
    "biz",
    "co",
    "app",
    "cloud",
    "ai",
    "me",
    "us",
    "uk",
    "de",
    "fr",
    "eu",
    "local",
    "localhost",
    "internal",
    "example",
    "test",
    "invalid",
];

/// Expands `host` (as written in a resource of `namespace`) to a fully
/// qualified name; see the module docs for the rules.
pub fn fqdn(host: &str, namespace: &str, cluster_domain: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.starts_with('*') {
        return host;
    }
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [name] => format!("{name}.{namespace}.svc.{cluster_domain}"),
        [name, ns] if !COMMON_TLDS.contains(ns) => format!("{name}.{ns}.svc.{cluster_domain}"),
        [_, _, "svc"] => format!("{host}.{cluster_domain}"),
        _ => host,
    }
}

/// Whether `host` is matched by `pattern`: exact (case-insensitive), `*`
/// (everything), or `*.suffix` (any name ending in `.suffix`, at any depth).
/// `host` may itself be a wildcard, in which case it matches when every name
/// it covers is covered by `pattern`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    // `*.example.com` covers `a.example.com` and `*.a.example.com`.
    let (host_rest, host_wild) = match host.strip_prefix('*') {
        Some(rest) => (rest, true),
        None => (host, false),
    };
    // Byte-wise, so that a non-ASCII host cannot split a character.
    let ends_with = |s: &str| {
        let (s, suffix) = (s.as_bytes(), suffix.as_bytes());
        s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    (host_rest.len() > suffix.len() && ends_with(host_rest))
        || (host_wild && host_rest.eq_ignore_ascii_case(suffix))
}

/// Whether some name is matched by both `a` and `b` (two host sets overlap).
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    host_matches(a, b) || host_matches(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_expand_in_the_resource_namespace() {
        let d = DEFAULT_CLUSTER_DOMAIN;
        assert_eq!(
            fqdn("reviews", "default", d),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            fqdn("reviews.prod", "default", d),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(
            fqdn("reviews.prod.svc", "default", d),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(
            fqdn("reviews.prod.svc.cluster.local", "default", d),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(fqdn("httpbin.org", "default", d), "httpbin.org");
        assert_eq!(fqdn("api.example.com", "default", d), "api.example.com");
        assert_eq!(fqdn("*.example.com", "default", d), "*.example.com");
        assert_eq!(fqdn("*", "default", d), "*");
        assert_eq!(
            fqdn("Reviews", "ns", "corp.internal"),
            "reviews.ns.svc.corp.internal"
        );
    }

    #[test]
    fn wildcards_match_by_suffix() {
        assert!(host_matches("*", "anything.example.com"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "aexample.com"));
        assert!(host_matches("a.example.com", "A.Example.com"));
        assert!(!host_matches("a.example.com", "b.example.com"));
        assert!(host_matches("*.example.com", "*.a.example.com"));
        assert!(host_matches("*.example.com", "*.example.com"));
        assert!(!host_matches("*.a.example.com", "*.example.com"));
        assert!(hosts_overlap("*.a.example.com", "*.example.com"));
        assert!(!host_matches("*.com", "\u{e9}\u{e9}"));
        assert!(host_matches("*.Example.com", "a.example.COM"));
        assert!(!hosts_overlap("a.example.com", "b.example.com"));
    }
}
