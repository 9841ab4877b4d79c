//! PeerAuthentication, AuthorizationPolicy, RequestAuthentication and
//! RateLimitPolicy rules.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::Errs;
use crate::common::Selector;
use crate::policy::RateLimitPolicySpec;
use crate::security::{
    Action, AuthorizationPolicySpec, Operation, PeerAuthenticationSpec, RequestAuthenticationSpec,
    Source,
};

fn has_selector(s: &Option<Selector>) -> bool {
    s.as_ref().is_some_and(|s| !s.match_labels.is_empty())
}

pub(super) fn peer_authentication(e: &mut Errs, spec: &PeerAuthenticationSpec) {
    if !spec.port_level_mtls.is_empty() && !has_selector(&spec.selector) {
        e.add("spec.portLevelMtls", "port level mTLS needs a selector");
    }
    for port in spec.port_level_mtls.keys() {
        e.port(&format!("spec.portLevelMtls.{port}"), *port);
    }
}

pub(super) fn authorization_policy(e: &mut Errs, spec: &AuthorizationPolicySpec) {
    let targeted = spec.target_ref.is_some() || !spec.target_refs.is_empty();
    if has_selector(&spec.selector) && targeted {
        e.add("spec", "selector and targetRef(s) are mutually exclusive");
    }
    let action = spec.action.unwrap_or(Action::Allow);
    match (action, &spec.provider) {
        (Action::Custom, None) => e.add("spec.provider", "action CUSTOM needs a provider"),
        (Action::Custom, Some(p)) => e.non_empty_str("spec.provider.name", &p.name),
        (_, Some(_)) => e.add(
            "spec.provider",
            "provider is only allowed with action CUSTOM",
        ),
        (_, None) => {}
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let p = format!("spec.rules[{i}]");
        for (j, from) in rule.from.iter().enumerate() {
            source(e, &format!("{p}.from[{j}].source"), &from.source);
        }
        for (j, to) in rule.to.iter().enumerate() {
            operation(e, &format!("{p}.to[{j}].operation"), &to.operation);
        }
        for (j, c) in rule.when.iter().enumerate() {
            let cp = format!("{p}.when[{j}]");
            e.non_empty_str(&format!("{cp}.key"), &c.key);
            if c.values.is_empty() && c.not_values.is_empty() {
                e.add(cp, "at least one of values or notValues is required");
            }
        }
    }
}

fn source(e: &mut Errs, p: &str, s: &Source) {
    let lists = [
        &s.principals,
        &s.not_principals,
        &s.request_principals,
        &s.not_request_principals,
        &s.namespaces,
        &s.not_namespaces,
        &s.ip_blocks,
        &s.not_ip_blocks,
        &s.remote_ip_blocks,
        &s.not_remote_ip_blocks,
        &s.service_accounts,
        &s.not_service_accounts,
    ];
    if lists.iter().all(|l| l.is_empty()) {
        e.add(p, "at least one field must be set");
    }
    for (field, list) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        for (k, block) in list.iter().enumerate() {
            if !is_ip_or_cidr(block) {
                e.add(
                    format!("{p}.{field}[{k}]"),
                    format!("{block:?} is not a valid IP address or CIDR"),
                );
            }
        }
    }
}

fn is_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<IpAddr>().is_ok(),
        Some((ip, len)) => match (ip.parse::<IpAddr>(), len.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        },
    }
}

fn operation(e: &mut Errs, p: &str, o: &Operation) {
    let lists = [
        &o.hosts,
        &o.not_hosts,
        &o.ports,
        &o.not_ports,
        &o.methods,
        &o.not_methods,
        &o.paths,
        &o.not_paths,
    ];
    if lists.iter().all(|l| l.is_empty()) {
        e.add(p, "at least one field must be set");
    }
    for (field, list) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
        for (k, port) in list.iter().enumerate() {
            match port.parse::<u32>() {
                Ok(n) => e.port(&format!("{p}.{field}[{k}]"), n),
                Err(_) => e.add(
                    format!("{p}.{field}[{k}]"),
                    format!("{port:?} is not a valid port"),
                ),
            }
        }
    }
}

pub(super) fn request_authentication(e: &mut Errs, spec: &RequestAuthenticationSpec) {
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        let p = format!("spec.jwtRules[{i}]");
        e.non_empty_str(&format!("{p}.issuer"), &rule.issuer);
        if rule.jwks_uri.is_some() && rule.jwks.is_some() {
            e.add(p.clone(), "jwksUri and jwks are mutually exclusive");
        }
        if let Some(uri) = &rule.jwks_uri
            && !(uri.starts_with("https://") || uri.starts_with("http://"))
        {
            e.add(
                format!("{p}.jwksUri"),
                format!("jwksUri {uri:?} must be an http(s) URL"),
            );
        }
        for (j, h) in rule.from_headers.iter().enumerate() {
            e.non_empty_str(&format!("{p}.fromHeaders[{j}].name"), &h.name);
        }
        e.opt_duration(&format!("{p}.timeout"), &rule.timeout, false);
    }
}

pub(super) fn rate_limit_policy(e: &mut Errs, spec: &RateLimitPolicySpec) {
    e.non_empty("spec.limits", &spec.limits, "limit");
    let mut names = BTreeSet::new();
    for (i, limit) in spec.limits.iter().enumerate() {
        let p = format!("spec.limits[{i}]");
        if limit.name.is_empty() {
            e.add(format!("{p}.name"), "a limit needs a name");
        } else {
            e.label(&format!("{p}.name"), &limit.name);
            if !names.insert(limit.name.as_str()) {
                e.add(
                    format!("{p}.name"),
                    format!("duplicate limit name {:?}", limit.name),
                );
            }
        }
        let tb = &limit.token_bucket;
        e.positive(
            &format!("{p}.tokenBucket.maxTokens"),
            Some(i64::from(tb.max_tokens)),
        );
        e.positive(
            &format!("{p}.tokenBucket.tokensPerFill"),
            Some(i64::from(tb.tokens_per_fill)),
        );
        if tb.tokens_per_fill > tb.max_tokens {
            e.add(
                format!("{p}.tokenBucket.tokensPerFill"),
                format!(
                    "tokensPerFill {} must not exceed maxTokens {}",
                    tb.tokens_per_fill, tb.max_tokens
                ),
            );
        }
        e.duration(
            &format!("{p}.tokenBucket.fillInterval"),
            &tb.fill_interval,
            false,
        );
        if let Some(code) = limit.response_code
            && !(400..=599).contains(&code)
        {
            e.add(
                format!("{p}.responseCode"),
                format!("responseCode {code} must be between 400 and 599"),
            );
        }
        if let Some(m) = &limit.matches
            && let Some(prefix) = &m.path_prefix
            && !prefix.starts_with('/')
        {
            e.add(
                format!("{p}.match.pathPrefix"),
                format!("pathPrefix {prefix:?} must start with '/'"),
            );
        }
    }
}
