//! End-to-end harness, the demo application and the load generator.
//! The demo application and the load generator are libraries here so that
//! tests and benchmarks can run them in-process as well as through their
//! binaries; `netns` builds pods as network namespaces for the e2e suite.

pub mod bench;
pub mod bins;
pub mod bookshop;
pub mod demo;
pub mod explicit;
pub mod load;
pub mod mesh;
pub mod netns;
