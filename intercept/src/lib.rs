//! Transparent interception: the iptables rules `mesh-proxy init` writes in a
//! pod's network namespace so that the app's TCP traffic passes through the
//! sidecar without the app knowing.
//!
//! Outbound connections (from any uid but the proxy's) are redirected to the
//! proxy's outbound port (15001), inbound connections to the app's ports to
//! the inbound port (15006). The proxy's own traffic (uid/gid 1337) is never
//! redirected, which is what keeps it from looping. Inbound can use TPROXY
//! instead of REDIRECT, which keeps the original destination as the socket's
//! local address (and the source address visible to the app).
//!
//! The rules live in the mesh's own chains (`MESH_*`) so that applying is
//! idempotent (chains flushed and rebuilt, jumps from the built-in chains
//! added once) and cleanup removes exactly what was added. Rule generation
//! is a pure function ([`Plan::new`]), tested by comparing scripts; applying
//! runs `iptables-restore` and `ip`.
//!
//! This is its own crate (not a module of the proxy) so that the e2e harness
//! and a future CNI plugin use the same rules.

mod apply;
mod args;
mod config;
mod rules;

pub use apply::{ApplyError, apply, cleanup};
pub use args::{InitArgs, InitError, run_init};
pub use config::{Cidr, InterceptConfig, InterceptMode, ParseError, PortSelection};
pub use rules::Plan;
