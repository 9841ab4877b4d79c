//! The fields of the `envoy.admin.v3` dump messages the proxy emits, which
//! `?resource=` and `?mask=` are checked against (the proxy carries no
//! protobuf descriptors of its own). Below a packed resource (`cluster`,
//! `listener`, ...) or the `bootstrap`, fields are not known here: paths
//! there are applied without being checked.

/// What a field holds, as far as masks and `?resource=` care.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A scalar, enum or well-known type: a mask path ends here.
    Leaf,
    /// A message whose fields are not listed here (paths below pass unchecked).
    Open,
    /// A packed resource (`google.protobuf.Any`); paths below pass unchecked.
    Any,
    /// A message listed here.
    Msg(&'static Msg),
    /// A repeated message field: what `?resource=` selects.
    Repeated(&'static Msg),
}

/// A message: its full protobuf name and its fields.
#[derive(Debug)]
pub struct Msg {
    /// Full name, e.g. `envoy.admin.v3.ClustersConfigDump.DynamicCluster`.
    pub type_name: &'static str,
    /// Fields by proto name.
    pub fields: &'static [(&'static str, Kind)],
}

impl Msg {
    /// The kind of field `name`, if the message has it.
    pub fn field(&self, name: &str) -> Option<Kind> {
        self.fields
            .iter()
            .find_map(|(n, k)| (*n == name).then_some(*k))
    }

    /// Whether a FieldMask path (`a.b.c`) names a field of this message:
    /// every step must exist, and only a message may be stepped through.
    pub fn has_path(&self, path: &str) -> bool {
        let mut frags = path.split('.');
        let mut cur = self;
        while let Some(frag) = frags.next() {
            let Some(kind) = cur.field(frag) else {
                return false;
            };
            let mut rest = frags.clone().peekable();
            if rest.peek().is_none() {
                return true;
            }
            match kind {
                Kind::Msg(m) => cur = m,
                Kind::Open | Kind::Any => return rest.all(|f| !f.is_empty()),
                Kind::Leaf | Kind::Repeated(_) => return false,
            }
        }
        false
    }
}

use Kind::{Any, Leaf, Open, Repeated};

static STATIC_CLUSTER: Msg = Msg {
    type_name: "envoy.admin.v3.ClustersConfigDump.StaticCluster",
    fields: &[("cluster", Any), ("last_updated", Leaf)],
};
static DYNAMIC_CLUSTER: Msg = Msg {
    type_name: "envoy.admin.v3.ClustersConfigDump.DynamicCluster",
    fields: &[
        ("version_info", Leaf),
        ("cluster", Any),
        ("last_updated", Leaf),
        ("error_state", Open),
        ("client_status", Leaf),
    ],
};
static STATIC_ENDPOINT: Msg = Msg {
    type_name: "envoy.admin.v3.EndpointsConfigDump.StaticEndpointConfig",
    fields: &[("endpoint_config", Any), ("last_updated", Leaf)],
};
static DYNAMIC_ENDPOINT: Msg = Msg {
    type_name: "envoy.admin.v3.EndpointsConfigDump.DynamicEndpointConfig",
    fields: &[
        ("version_info", Leaf),
        ("endpoint_config", Any),
        ("last_updated", Leaf),
        ("error_state", Open),
        ("client_status", Leaf),
    ],
};
static STATIC_LISTENER: Msg = Msg {
    type_name: "envoy.admin.v3.ListenersConfigDump.StaticListener",
    fields: &[("listener", Any), ("last_updated", Leaf)],
};
static LISTENER_STATE: Msg = Msg {
    type_name: "envoy.admin.v3.ListenersConfigDump.DynamicListenerState",
    fields: &[
        ("version_info", Leaf),
        ("listener", Any),
        ("last_updated", Leaf),
    ],
};
static DYNAMIC_LISTENER: Msg = Msg {
    type_name: "envoy.admin.v3.ListenersConfigDump.DynamicListener",
    fields: &[
        ("name", Leaf),
        ("active_state", Kind::Msg(&LISTENER_STATE)),
        ("warming_state", Kind::Msg(&LISTENER_STATE)),
        ("draining_state", Kind::Msg(&LISTENER_STATE)),
        ("error_state", Open),
        ("client_status", Leaf),
    ],
};
static STATIC_ROUTE: Msg = Msg {
    type_name: "envoy.admin.v3.RoutesConfigDump.StaticRouteConfig",
    fields: &[("route_config", Any), ("last_updated", Leaf)],
};
static DYNAMIC_ROUTE: Msg = Msg {
    type_name: "envoy.admin.v3.RoutesConfigDump.DynamicRouteConfig",
    fields: &[
        ("version_info", Leaf),
        ("route_config", Any),
        ("last_updated", Leaf),
        ("error_state", Open),
        ("client_status", Leaf),
    ],
};
static STATIC_SECRET: Msg = Msg {
    type_name: "envoy.admin.v3.SecretsConfigDump.StaticSecret",
    fields: &[("name", Leaf), ("last_updated", Leaf), ("secret", Any)],
};
static DYNAMIC_SECRET: Msg = Msg {
    type_name: "envoy.admin.v3.SecretsConfigDump.DynamicSecret",
    fields: &[
        ("name", Leaf),
        ("version_info", Leaf),
        ("last_updated", Leaf),
        ("secret", Any),
        ("error_state", Open),
        ("client_status", Leaf),
    ],
};

/// The top-level dumps, in Envoy's order.
static SECTIONS: &[Msg] = &[
    Msg {
        type_name: "envoy.admin.v3.BootstrapConfigDump",
        fields: &[("bootstrap", Open), ("last_updated", Leaf)],
    },
    Msg {
        type_name: "envoy.admin.v3.ClustersConfigDump",
        fields: &[
            ("version_info", Leaf),
            ("static_clusters", Repeated(&STATIC_CLUSTER)),
            ("dynamic_active_clusters", Repeated(&DYNAMIC_CLUSTER)),
            ("dynamic_warming_clusters", Repeated(&DYNAMIC_CLUSTER)),
        ],
    },
    Msg {
        type_name: "envoy.admin.v3.EndpointsConfigDump",
        fields: &[
            ("static_endpoint_configs", Repeated(&STATIC_ENDPOINT)),
            ("dynamic_endpoint_configs", Repeated(&DYNAMIC_ENDPOINT)),
        ],
    },
    Msg {
        type_name: "envoy.admin.v3.ListenersConfigDump",
        fields: &[
            ("version_info", Leaf),
            ("static_listeners", Repeated(&STATIC_LISTENER)),
            ("dynamic_listeners", Repeated(&DYNAMIC_LISTENER)),
        ],
    },
    Msg {
        type_name: "envoy.admin.v3.RoutesConfigDump",
        fields: &[
            ("static_route_configs", Repeated(&STATIC_ROUTE)),
            ("dynamic_route_configs", Repeated(&DYNAMIC_ROUTE)),
        ],
    },
    Msg {
        type_name: "envoy.admin.v3.SecretsConfigDump",
        fields: &[
            ("static_secrets", Repeated(&STATIC_SECRET)),
            ("dynamic_active_secrets", Repeated(&DYNAMIC_SECRET)),
            ("dynamic_warming_secrets", Repeated(&DYNAMIC_SECRET)),
        ],
    },
];

/// The dump message of a `@type` URL (`type.googleapis.com/<name>`).
pub fn section(type_url: &str) -> Option<&'static Msg> {
    let name = type_url.rsplit_once('/').map_or(type_url, |(_, n)| n);
    SECTIONS.iter().find(|m| m.type_name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_paths_are_checked_down_to_the_packed_resource() {
        let c = section("type.googleapis.com/envoy.admin.v3.ClustersConfigDump").unwrap();
        assert!(c.has_path("dynamic_active_clusters"));
        assert!(!c.has_path("dynamic_active_clusters.cluster"), "repeated");
        assert!(!c.has_path("nope"));
        assert!(DYNAMIC_CLUSTER.has_path("cluster.name"));
        assert!(DYNAMIC_CLUSTER.has_path("cluster.load_assignment.cluster_name"));
        assert!(!DYNAMIC_CLUSTER.has_path("version_info.x"), "a leaf");
        assert!(!DYNAMIC_CLUSTER.has_path("cluster."));
        assert!(DYNAMIC_LISTENER.has_path("active_state.listener.name"));
        assert!(!DYNAMIC_LISTENER.has_path("active_state.nope"));
    }
}
