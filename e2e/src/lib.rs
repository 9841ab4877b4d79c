//! End-to-end harness: network-namespace pods, the demo application and
//! the benchmark harness.
