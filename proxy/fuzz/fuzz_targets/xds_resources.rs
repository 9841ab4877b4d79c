//! Arbitrary bytes decoded as each xDS resource type and converted into the
//! proxy's config: conversion must return Ok or a ConfigError, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::envoy::pb::envoy::config::{cluster, endpoint, listener, route};
use mesh_proxy::config::{Cluster, Listener, LoadAssignment, RouteConfig};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = cluster::v3::Cluster::decode(data) {
        let _ = Cluster::try_from(c);
    }
    if let Ok(l) = listener::v3::Listener::decode(data) {
        let _ = Listener::try_from(l);
    }
    if let Ok(r) = route::v3::RouteConfiguration::decode(data) {
        let _ = RouteConfig::try_from(r);
    }
    if let Ok(e) = endpoint::v3::ClusterLoadAssignment::decode(data) {
        let _ = LoadAssignment::try_from(e);
    }
});
