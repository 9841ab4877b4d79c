//! ServiceEntry, WorkloadEntry, Gateway and Sidecar rules.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{Errs, protocol};
use crate::common::Port;
use crate::networking::{
    GatewaySpec, Resolution, ServerTlsMode, ServiceEntrySpec, SidecarSpec, WorkloadEntrySpec,
};

fn port(e: &mut Errs, p: &str, port: &Port, name_required: bool) {
    e.port(&format!("{p}.number"), port.number);
    if let Some(t) = port.target_port {
        e.port(&format!("{p}.targetPort"), t);
    }
    match &port.name {
        Some(name) => e.label(&format!("{p}.name"), name),
        None if name_required => e.add(format!("{p}.name"), "a port name is required"),
        None => {}
    }
    if let Some(proto) = &port.protocol {
        protocol(e, &format!("{p}.protocol"), proto);
    }
}

pub(super) fn service_entry(e: &mut Errs, spec: &ServiceEntrySpec) {
    e.non_empty("spec.hosts", &spec.hosts, "host");
    let resolution = spec.resolution.unwrap_or(Resolution::None);
    for (i, h) in spec.hosts.iter().enumerate() {
        e.non_empty_str(&format!("spec.hosts[{i}]"), h);
        if h.starts_with('*') && matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin) {
            e.add(
                format!("spec.hosts[{i}]"),
                format!("wildcard host {h:?} cannot use DNS resolution"),
            );
        }
    }
    e.export_to("spec.exportTo", &spec.export_to);
    e.non_empty("spec.ports", &spec.ports, "port");
    let mut numbers = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        port(e, &format!("spec.ports[{i}]"), p, true);
        if !numbers.insert(p.number) {
            e.add(
                format!("spec.ports[{i}].number"),
                format!("duplicate port {}", p.number),
            );
        }
    }
    if !spec.endpoints.is_empty() && spec.workload_selector.is_some() {
        e.add(
            "spec",
            "endpoints and workloadSelector are mutually exclusive",
        );
    }
    if resolution == Resolution::Static
        && spec.endpoints.is_empty()
        && spec.workload_selector.is_none()
    {
        e.add(
            "spec.endpoints",
            "resolution STATIC needs endpoints or a workloadSelector",
        );
    }
    for (i, ep) in spec.endpoints.iter().enumerate() {
        let p = format!("spec.endpoints[{i}]");
        workload_entry(e, &p, ep);
        if resolution == Resolution::Static
            && let Some(addr) = &ep.address
            && addr.parse::<IpAddr>().is_err()
            && !addr.starts_with("unix://")
        {
            e.add(
                format!("{p}.address"),
                format!("resolution STATIC needs an IP address, got {addr:?}"),
            );
        }
    }
}

pub(super) fn workload_entry(e: &mut Errs, p: &str, spec: &WorkloadEntrySpec) {
    match &spec.address {
        Some(a) => e.non_empty_str(&format!("{p}.address"), a),
        None => e.add(format!("{p}.address"), "address is required"),
    }
    for (name, number) in &spec.ports {
        e.port(&format!("{p}.ports.{name}"), *number);
    }
    if let Some(sa) = &spec.service_account {
        e.label(&format!("{p}.serviceAccount"), sa);
    }
}

pub(super) fn gateway(e: &mut Errs, spec: &GatewaySpec) {
    e.non_empty("spec.servers", &spec.servers, "server");
    for (i, s) in spec.servers.iter().enumerate() {
        let p = format!("spec.servers[{i}]");
        port(e, &format!("{p}.port"), &s.port, false);
        e.non_empty(&format!("{p}.hosts"), &s.hosts, "host");
        for (j, h) in s.hosts.iter().enumerate() {
            e.non_empty_str(&format!("{p}.hosts[{j}]"), h);
        }
        let proto = s
            .port
            .protocol
            .as_deref()
            .unwrap_or("")
            .to_ascii_uppercase();
        match &s.tls {
            None if proto == "HTTPS" || proto == "TLS" => {
                e.add(
                    format!("{p}.tls"),
                    format!("protocol {proto} needs tls settings"),
                );
            }
            Some(tls) if tls.https_redirect != Some(true) || tls.mode.is_some() => {
                let mode = tls.mode.unwrap_or(ServerTlsMode::Simple);
                let has_files = tls.server_certificate.is_some() && tls.private_key.is_some();
                if matches!(
                    mode,
                    ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
                ) && tls.credential_name.is_none()
                    && !has_files
                {
                    e.add(
                        format!("{p}.tls"),
                        "SIMPLE and MUTUAL modes need credentialName, or serverCertificate and privateKey",
                    );
                }
                if matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
                    && tls.credential_name.is_none()
                    && tls.ca_certificates.is_none()
                {
                    e.add(
                        format!("{p}.tls.caCertificates"),
                        "MUTUAL mode needs caCertificates or credentialName",
                    );
                }
            }
            _ => {}
        }
    }
}

pub(super) fn sidecar(e: &mut Errs, spec: &SidecarSpec) {
    e.non_empty("spec.egress", &spec.egress, "egress listener");
    for (i, l) in spec.ingress.iter().enumerate() {
        port(e, &format!("spec.ingress[{i}].port"), &l.port, false);
    }
    for (i, l) in spec.egress.iter().enumerate() {
        let p = format!("spec.egress[{i}]");
        if let Some(pt) = &l.port {
            port(e, &format!("{p}.port"), pt, false);
        }
        e.non_empty(&format!("{p}.hosts"), &l.hosts, "host");
        for (j, h) in l.hosts.iter().enumerate() {
            let ok = h
                .split_once('/')
                .is_some_and(|(ns, host)| !ns.is_empty() && !host.is_empty());
            if !ok {
                e.add(
                    format!("{p}.hosts[{j}]"),
                    format!("{h:?} must be namespace/host (e.g. \"./*\" or \"istio-system/*\")"),
                );
            }
        }
    }
}
