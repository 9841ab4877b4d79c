//! `mesh-bench`: the proxy benchmark (issue 5, "Figures"). On loopback, with
//! each proxy pinned to its own core and one worker, it loads a backend
//! directly, through a mesh-proxy pair (mutual TLS between them), through an
//! Envoy pair configured by the same xDS resources and the same
//! certificates, and optionally through an HAProxy pair; oha at a fixed rate
//! gives latency and CPU per request, wrk gives the maximum throughput.
//! Everything here but the orchestration ([`run`]) is pure and unit-tested.

pub mod backend;
pub mod certs;
pub mod figures;
pub mod load;
pub mod parse;
pub mod procs;
pub mod report;
pub mod resources;
pub mod run;
pub mod scenario;
pub mod xds;

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A load tool exited with an error.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        /// The tool.
        tool: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A tool's output could not be parsed.
    #[error(transparent)]
    Parse(#[from] parse::ParseError),
    /// A proxy rejected the benchmark's configuration.
    #[error("a proxy NACKed the benchmark's xDS resources: {0}")]
    Nack(String),
    /// A scenario never started serving.
    #[error("not ready: {0}")]
    NotReady(String),
    /// Certificates could not be made.
    #[error("certificates: {0}")]
    Certs(String),
    /// Requests failed during a measured run.
    #[error("{scenario}: {detail}")]
    Failures {
        /// The scenario.
        scenario: String,
        /// What failed.
        detail: String,
    },
}

impl BenchError {
    /// An I/O error with what was being done.
    pub fn io(what: &str, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
