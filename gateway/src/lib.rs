//! Gateways (`mesh-ingress`, `mesh-egress`) built on the proxy library.
//! Configured by `Gateway` and `ServiceEntry` resources; not built yet (a
//! later wave), the binaries only exist so the install layout is stable.
