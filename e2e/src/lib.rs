//! End-to-end harness, the demo application and (later) the benchmark
//! harness. The demo application is a library here so that tests and
//! benchmarks can run it in-process as well as through its binary.

pub mod demo;
