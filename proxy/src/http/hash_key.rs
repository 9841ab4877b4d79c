//! The consistent-hash key of a request, from the route's `hash_policy`
//! (header, cookie, source IP, query parameter), combined as Envoy does:
//! each policy that yields a value is mixed in, a `terminal` one that
//! yields stops the list. A cookie policy with a TTL generates the cookie
//! when the request has none, and the response sets it.

use std::net::SocketAddr;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};

use crate::config::HashPolicy;
use crate::lb::hash::hash64;

/// A request's hash key and the cookie to set on its response, if one was
/// generated.
#[derive(Debug, Default)]
pub struct HashKey {
    /// The key (`None`: no policy yielded a value; the pick is random).
    pub key: Option<u64>,
    /// `Set-Cookie` value for a generated cookie.
    pub set_cookie: Option<HeaderValue>,
}

/// Computes the key of a request.
pub fn compute(
    policies: &[(HashPolicy, bool)],
    headers: &HeaderMap,
    query: Option<&str>,
    peer: SocketAddr,
) -> HashKey {
    let mut out = HashKey::default();
    for (policy, terminal) in policies {
        let value: Option<u64> = match policy {
            HashPolicy::Header(name) => headers.get(name.as_str()).map(|v| hash64(v.as_bytes())),
            HashPolicy::SourceIp => Some(hash64(peer.ip().to_string().as_bytes())),
            HashPolicy::QueryParameter(name) => {
                query_param(query, name).map(|v| hash64(v.as_bytes()))
            }
            HashPolicy::Cookie { name, ttl, path } => match cookie(headers, name) {
                Some(v) => Some(hash64(v.as_bytes())),
                None => ttl.map(|ttl| {
                    let value = generated_value(peer);
                    out.set_cookie = set_cookie(name, &value, ttl.as_secs(), path);
                    hash64(value.as_bytes())
                }),
            },
        };
        if let Some(v) = value {
            out.key = Some(match out.key {
                Some(prev) => prev.rotate_left(1) ^ v,
                None => v,
            });
            if *terminal {
                break;
            }
        }
    }
    out
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

/// A fresh cookie value: the hash of the client address and the time, in
/// hex (what Envoy does too).
fn generated_value(peer: SocketAddr) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:016x}", hash64(format!("{peer}{nanos}").as_bytes()))
}

fn set_cookie(name: &str, value: &str, max_age: u64, path: &str) -> Option<HeaderValue> {
    let mut s = format!("{name}=\"{value}\"; Max-Age={max_age}");
    if !path.is_empty() {
        s.push_str("; Path=");
        s.push_str(path);
    }
    s.push_str("; HttpOnly");
    HeaderValue::from_str(&s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn peer() -> SocketAddr {
        "10.1.2.3:5555".parse().unwrap()
    }

    #[test]
    fn header_query_and_source_ip_keys_are_stable_and_distinct() {
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        let by_header = [(HashPolicy::Header("x-user".into()), false)];
        let a = compute(&by_header, &h, None, peer()).key.unwrap();
        assert_eq!(compute(&by_header, &h, None, peer()).key, Some(a));
        h.insert("x-user", "bob".parse().unwrap());
        assert_ne!(compute(&by_header, &h, None, peer()).key, Some(a));
        assert_eq!(
            compute(&by_header, &HeaderMap::new(), None, peer()).key,
            None
        );

        let by_query = [(HashPolicy::QueryParameter("u".into()), false)];
        let q = compute(&by_query, &h, Some("a=1&u=carol"), peer()).key;
        assert_eq!(q, Some(hash64(b"carol")));
        assert_eq!(compute(&by_query, &h, Some("a=1"), peer()).key, None);

        let by_ip = [(HashPolicy::SourceIp, false)];
        let other: SocketAddr = "10.1.2.3:6666".parse().unwrap();
        assert_eq!(
            compute(&by_ip, &h, None, peer()).key,
            compute(&by_ip, &h, None, other).key,
            "the port does not matter"
        );
    }

    #[test]
    fn a_missing_cookie_with_ttl_is_generated_and_set_and_a_present_one_is_used() {
        let policy = [(
            HashPolicy::Cookie {
                name: "sticky".into(),
                ttl: Some(Duration::from_secs(60)),
                path: "/".into(),
            },
            false,
        )];
        let fresh = compute(&policy, &HeaderMap::new(), None, peer());
        let set = fresh.set_cookie.unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("sticky=\""), "{set}");
        assert!(set.ends_with("; Max-Age=60; Path=/; HttpOnly"), "{set}");
        // The client sends it back: same key, nothing to set.
        let value = set.split('"').nth(1).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("other=1; sticky=\"{value}\"").parse().unwrap(),
        );
        let again = compute(&policy, &h, None, peer());
        assert_eq!(again.key, fresh.key);
        assert!(again.set_cookie.is_none());
        // Without a TTL nothing is generated.
        let no_ttl = [(
            HashPolicy::Cookie {
                name: "sticky".into(),
                ttl: None,
                path: String::new(),
            },
            false,
        )];
        let none = compute(&no_ttl, &HeaderMap::new(), None, peer());
        assert!(none.key.is_none() && none.set_cookie.is_none());
    }

    #[test]
    fn a_terminal_policy_that_yields_stops_the_list() {
        let mut h = HeaderMap::new();
        h.insert("a", "1".parse().unwrap());
        let terminal = [
            (HashPolicy::Header("a".into()), true),
            (HashPolicy::SourceIp, false),
        ];
        assert_eq!(compute(&terminal, &h, None, peer()).key, Some(hash64(b"1")));
        let both = [
            (HashPolicy::Header("a".into()), false),
            (HashPolicy::SourceIp, false),
        ];
        assert_ne!(compute(&both, &h, None, peer()).key, Some(hash64(b"1")));
    }
}
