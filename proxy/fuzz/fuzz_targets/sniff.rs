//! Protocol sniffing on arbitrary first bytes: never panics, and a verdict
//! on a prefix never changes when more bytes arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proxy::listener::detect::classify;

fuzz_target!(|data: &[u8]| {
    let full = classify(data);
    for n in 0..data.len() {
        if let Some(early) = classify(&data[..n]) {
            assert_eq!(Some(early), full, "verdict changed after {n} bytes");
            break;
        }
    }
});
