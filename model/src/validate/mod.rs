//! Per-resource validation, following Istio's rules.
//!
//! [`Resource::validate`] returns every problem with the path of the field
//! from the resource's root (`spec.http[1].route[0].weight`); map entries are
//! addressed with a dot (`spec.http[0].match[0].headers.x-user`).
//!
//! Weights: with more than one destination, weights must sum to 100 (the
//! rule of Istio's v1alpha3-era validation, kept because it catches typos);
//! recent Istio releases treat weights as relative and would accept them.
//!
//! Durations: `timeout` may be `0s` (Istio's "no timeout"); every other
//! duration must be positive.

mod destination_rule;
mod security;
mod service;
mod virtual_service;

use crate::common::StringMatch;
use crate::duration;
use crate::parse::FieldError;
use crate::resource::Resource;

impl Resource {
    /// Every validation problem of this resource; empty when it is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut e = Errs::default();
        validate_meta(&mut e, self);
        match self {
            Resource::VirtualService(o) => virtual_service::validate(&mut e, &o.spec),
            Resource::DestinationRule(o) => destination_rule::validate(&mut e, &o.spec),
            Resource::ServiceEntry(o) => service::service_entry(&mut e, &o.spec),
            Resource::WorkloadEntry(o) => service::workload_entry(&mut e, "spec", &o.spec),
            Resource::Gateway(o) => service::gateway(&mut e, &o.spec),
            Resource::Sidecar(o) => service::sidecar(&mut e, &o.spec),
            Resource::PeerAuthentication(o) => security::peer_authentication(&mut e, &o.spec),
            Resource::AuthorizationPolicy(o) => security::authorization_policy(&mut e, &o.spec),
            Resource::RequestAuthentication(o) => security::request_authentication(&mut e, &o.spec),
            Resource::RateLimitPolicy(o) => security::rate_limit_policy(&mut e, &o.spec),
        }
        e.0
    }
}

fn validate_meta(e: &mut Errs, r: &Resource) {
    let meta = r.meta();
    if meta.name.is_empty() {
        e.add("metadata.name", "must not be empty");
    } else if !is_dns1123_subdomain(&meta.name) {
        e.add("metadata.name", subdomain_message(&meta.name));
    }
    if let Some(ns) = &meta.namespace
        && !is_dns1123_label(ns)
    {
        e.add("metadata.namespace", label_message(ns));
    }
}

/// Collected problems.
#[derive(Debug, Default)]
pub(crate) struct Errs(pub(crate) Vec<FieldError>);

impl Errs {
    /// Records `message` at `path`.
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    /// A DNS-1123 label (subset, port and limit names).
    pub(crate) fn label(&mut self, path: &str, value: &str) {
        if !is_dns1123_label(value) {
            self.add(path, label_message(value));
        }
    }

    /// A port number, 1..=65535.
    pub(crate) fn port(&mut self, path: &str, port: u32) {
        if !(1..=65535).contains(&port) {
            self.add(path, format!("port {port} must be between 1 and 65535"));
        }
    }

    /// A duration; `allow_zero` for timeouts where `0s` means "none".
    pub(crate) fn duration(&mut self, path: &str, value: &str, allow_zero: bool) {
        match duration::parse(value) {
            Err(err) => self.add(path, err.to_string()),
            Ok(d) if d.is_zero() && !allow_zero => {
                self.add(path, format!("duration {value:?} must be positive"))
            }
            Ok(_) => {}
        }
    }

    /// An optional duration.
    pub(crate) fn opt_duration(&mut self, path: &str, value: &Option<String>, allow_zero: bool) {
        if let Some(v) = value {
            self.duration(path, v, allow_zero);
        }
    }

    /// A percentage, 0..=100.
    pub(crate) fn percent(&mut self, path: &str, value: f64) {
        if !(0.0..=100.0).contains(&value) {
            self.add(
                path,
                format!("percentage {value} must be between 0 and 100"),
            );
        }
    }

    /// An optional count that must be > 0 when set.
    pub(crate) fn positive(&mut self, path: &str, value: Option<i64>) {
        if let Some(v) = value
            && v <= 0
        {
            self.add(path, format!("{v} must be > 0"));
        }
    }

    /// A regular expression (RE2 syntax, checked with the `regex` crate).
    pub(crate) fn regex(&mut self, path: &str, re: &str) {
        if let Err(err) = regex::Regex::new(re) {
            let text = err.to_string();
            // The crate's message ends with a line `error: <reason>`.
            let reason = text.lines().last().unwrap_or_default();
            let reason = reason.strip_prefix("error: ").unwrap_or(reason);
            self.add(path, format!("invalid regex {re:?}: {reason}"));
        }
    }

    /// A `StringMatch`: exactly one of exact, prefix, regex; the regex compiles.
    pub(crate) fn string_match(&mut self, path: &str, m: &StringMatch) {
        let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            self.add(path, "must set exactly one of exact, prefix or regex");
        }
        if let Some(re) = &m.regex {
            self.regex(&format!("{path}.regex"), re);
        }
    }

    /// A list that must not be empty.
    pub(crate) fn non_empty<T>(&mut self, path: &str, items: &[T], what: &str) {
        if items.is_empty() {
            self.add(path, format!("at least one {what} is required"));
        }
    }

    /// `exportTo` entries: `.`, `*`, `~` or a namespace name.
    pub(crate) fn export_to(&mut self, path: &str, values: &[String]) {
        for (i, v) in values.iter().enumerate() {
            if !matches!(v.as_str(), "." | "*" | "~") && !is_dns1123_label(v) {
                self.add(
                    format!("{path}[{i}]"),
                    format!("{v:?} must be \".\", \"*\", \"~\" or a namespace name"),
                );
            }
        }
    }

    /// A string that must not be empty.
    pub(crate) fn non_empty_str(&mut self, path: &str, value: &str) {
        if value.is_empty() {
            self.add(path, "must not be empty");
        }
    }
}

/// Whether `s` is a DNS-1123 label: at most 63 lowercase letters, digits or
/// `-`, starting and ending with a letter or digit.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS-1123 subdomain: at most 253 characters of
/// dot-separated labels.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn label_message(value: &str) -> String {
    format!(
        "{value:?} is not a valid DNS-1123 label (at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit)"
    )
}

fn subdomain_message(value: &str) -> String {
    format!(
        "{value:?} is not a valid DNS-1123 subdomain (lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit)"
    )
}

/// Known port protocols (Istio's, case-insensitive).
const PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "MYSQL", "REDIS", "UDP",
];

/// Checks a port protocol name.
pub(crate) fn protocol(e: &mut Errs, path: &str, proto: &str) {
    if !PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(proto)) {
        e.add(
            path,
            format!(
                "unknown protocol {proto:?} (expected one of {})",
                PROTOCOLS.join(", ")
            ),
        );
    }
}
