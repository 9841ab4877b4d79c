//! VirtualService rules.

use super::Errs;
use crate::networking::{
    Destination, HttpFaultInjection, HttpMatchRequest, HttpRoute, RouteDestination,
    VirtualServiceSpec,
};

pub(super) fn validate(e: &mut Errs, spec: &VirtualServiceSpec) {
    e.non_empty("spec.hosts", &spec.hosts, "host");
    for (i, h) in spec.hosts.iter().enumerate() {
        e.non_empty_str(&format!("spec.hosts[{i}]"), h);
    }
    for (i, g) in spec.gateways.iter().enumerate() {
        e.non_empty_str(&format!("spec.gateways[{i}]"), g);
    }
    e.export_to("spec.exportTo", &spec.export_to);
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        e.add(
            "spec",
            "at least one of http, tls or tcp routes is required",
        );
    }
    for (i, route) in spec.http.iter().enumerate() {
        http_route(e, &format!("spec.http[{i}]"), route);
    }
    for (i, route) in spec.tcp.iter().enumerate() {
        let p = format!("spec.tcp[{i}]");
        for (j, m) in route.matches.iter().enumerate() {
            if let Some(port) = m.port {
                e.port(&format!("{p}.match[{j}].port"), port);
            }
        }
        l4_routes(e, &p, &route.route);
    }
    for (i, route) in spec.tls.iter().enumerate() {
        let p = format!("spec.tls[{i}]");
        e.non_empty(&format!("{p}.match"), &route.matches, "match");
        for (j, m) in route.matches.iter().enumerate() {
            e.non_empty(
                &format!("{p}.match[{j}].sniHosts"),
                &m.sni_hosts,
                "SNI host",
            );
            if let Some(port) = m.port {
                e.port(&format!("{p}.match[{j}].port"), port);
            }
        }
        l4_routes(e, &p, &route.route);
    }
}

fn http_route(e: &mut Errs, p: &str, r: &HttpRoute) {
    for (j, m) in r.matches.iter().enumerate() {
        http_match(e, &format!("{p}.match[{j}]"), m);
    }
    let answers = [
        ("redirect", r.redirect.is_some()),
        ("directResponse", r.direct_response.is_some()),
        ("delegate", r.delegate.is_some()),
    ];
    if r.route.is_empty() && !answers.iter().any(|(_, set)| *set) {
        e.add(
            format!("{p}.route"),
            "at least one destination is required unless redirect, directResponse or delegate is set",
        );
    }
    for (name, set) in answers {
        if set && !r.route.is_empty() {
            e.add(p, format!("{name} and route are mutually exclusive"));
        }
    }
    if r.redirect.is_some() && r.direct_response.is_some() {
        e.add(p, "redirect and directResponse are mutually exclusive");
    }
    let weights: Vec<Option<i32>> = r.route.iter().map(|d| d.weight).collect();
    weights_ok(e, &format!("{p}.route"), &weights);
    for (k, d) in r.route.iter().enumerate() {
        destination(e, &format!("{p}.route[{k}].destination"), &d.destination);
    }
    if let Some(redirect) = &r.redirect {
        if let Some(port) = redirect.port {
            e.port(&format!("{p}.redirect.port"), port);
        }
        if let Some(code) = redirect.redirect_code
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            e.add(
                format!("{p}.redirect.redirectCode"),
                format!("redirectCode {code} must be one of 301, 302, 303, 307, 308"),
            );
        }
    }
    if let Some(dr) = &r.direct_response {
        if !(200..=599).contains(&dr.status) {
            e.add(
                format!("{p}.directResponse.status"),
                format!("status {} must be between 200 and 599", dr.status),
            );
        }
        if let Some(body) = &dr.body
            && body.string.is_some() == body.bytes.is_some()
        {
            e.add(
                format!("{p}.directResponse.body"),
                "must set exactly one of string or bytes",
            );
        }
    }
    if let Some(rw) = &r.rewrite
        && let Some(rr) = &rw.uri_regex_rewrite
    {
        if rw.uri.is_some() {
            e.add(
                format!("{p}.rewrite"),
                "uri and uriRegexRewrite are mutually exclusive",
            );
        }
        e.regex(&format!("{p}.rewrite.uriRegexRewrite.match"), &rr.matches);
    }
    e.opt_duration(&format!("{p}.timeout"), &r.timeout, true);
    if let Some(retries) = &r.retries {
        if retries.attempts < 0 {
            e.add(
                format!("{p}.retries.attempts"),
                format!("{} must be >= 0", retries.attempts),
            );
        }
        e.opt_duration(
            &format!("{p}.retries.perTryTimeout"),
            &retries.per_try_timeout,
            false,
        );
    }
    if let Some(fault) = &r.fault {
        fault_injection(e, &format!("{p}.fault"), fault);
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        e.add(p, "mirror and mirrors are mutually exclusive");
    }
    if let Some(m) = &r.mirror {
        destination(e, &format!("{p}.mirror"), m);
    }
    if let Some(pct) = &r.mirror_percentage {
        e.percent(&format!("{p}.mirrorPercentage.value"), pct.value);
    }
    for (k, m) in r.mirrors.iter().enumerate() {
        destination(e, &format!("{p}.mirrors[{k}].destination"), &m.destination);
        if let Some(pct) = &m.percentage {
            e.percent(&format!("{p}.mirrors[{k}].percentage.value"), pct.value);
        }
    }
    if let Some(cors) = &r.cors_policy {
        for (k, o) in cors.allow_origins.iter().enumerate() {
            e.string_match(&format!("{p}.corsPolicy.allowOrigins[{k}]"), o);
        }
        e.opt_duration(&format!("{p}.corsPolicy.maxAge"), &cors.max_age, true);
    }
}

fn http_match(e: &mut Errs, p: &str, m: &HttpMatchRequest) {
    for (field, sm) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            e.string_match(&format!("{p}.{field}"), sm);
        }
    }
    for (field, map) in [
        ("headers", &m.headers),
        ("queryParams", &m.query_params),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (name, sm) in map {
            let path = format!("{p}.{field}.{name}");
            // An empty StringMatch on a header means "present with any value".
            if sm.exact.is_some() as u8 + sm.prefix.is_some() as u8 + sm.regex.is_some() as u8 > 1 {
                e.add(&path, "must set exactly one of exact, prefix or regex");
            }
            if let Some(re) = &sm.regex {
                e.regex(&format!("{path}.regex"), re);
            }
        }
    }
    if let Some(port) = m.port {
        e.port(&format!("{p}.port"), port);
    }
}

fn fault_injection(e: &mut Errs, p: &str, f: &HttpFaultInjection) {
    if f.delay.is_none() && f.abort.is_none() {
        e.add(p, "at least one of delay or abort is required");
    }
    if let Some(d) = &f.delay {
        match &d.fixed_delay {
            Some(v) => e.duration(&format!("{p}.delay.fixedDelay"), v, false),
            None => e.add(format!("{p}.delay.fixedDelay"), "fixedDelay is required"),
        }
        if let Some(pct) = &d.percentage {
            e.percent(&format!("{p}.delay.percentage.value"), pct.value);
        }
        if let Some(pct) = d.percent {
            e.percent(&format!("{p}.delay.percent"), f64::from(pct));
        }
    }
    if let Some(a) = &f.abort {
        match (a.http_status, &a.grpc_status) {
            (Some(_), Some(_)) => e.add(
                format!("{p}.abort"),
                "httpStatus and grpcStatus are mutually exclusive",
            ),
            (None, None) => e.add(
                format!("{p}.abort"),
                "one of httpStatus or grpcStatus is required",
            ),
            (Some(s), None) if !(200..=599).contains(&s) => e.add(
                format!("{p}.abort.httpStatus"),
                format!("httpStatus {s} must be between 200 and 599"),
            ),
            _ => {}
        }
        if let Some(pct) = &a.percentage {
            e.percent(&format!("{p}.abort.percentage.value"), pct.value);
        }
    }
}

fn l4_routes(e: &mut Errs, p: &str, route: &[RouteDestination]) {
    e.non_empty(&format!("{p}.route"), route, "destination");
    let weights: Vec<Option<i32>> = route.iter().map(|d| d.weight).collect();
    weights_ok(e, &format!("{p}.route"), &weights);
    for (k, d) in route.iter().enumerate() {
        destination(e, &format!("{p}.route[{k}].destination"), &d.destination);
    }
}

/// Each weight 0..=100; with more than one destination they sum to 100. The
/// sum problem is reported on the first destination's weight.
fn weights_ok(e: &mut Errs, p: &str, weights: &[Option<i32>]) {
    for (k, w) in weights.iter().enumerate() {
        if let Some(w) = w
            && !(0..=100).contains(w)
        {
            e.add(
                format!("{p}[{k}].weight"),
                format!("weight {w} must be between 0 and 100"),
            );
        }
    }
    if weights.len() > 1 {
        let sum: i64 = weights.iter().map(|w| i64::from(w.unwrap_or(0))).sum();
        if sum != 100 {
            e.add(
                format!("{p}[0].weight"),
                format!("weights sum to {sum}, must be 100"),
            );
        }
    }
}

fn destination(e: &mut Errs, p: &str, d: &Destination) {
    e.non_empty_str(&format!("{p}.host"), &d.host);
    if let Some(subset) = &d.subset {
        e.label(&format!("{p}.subset"), subset);
    }
    if let Some(port) = &d.port {
        e.port(&format!("{p}.port.number"), port.number);
    }
}
