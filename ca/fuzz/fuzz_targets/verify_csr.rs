//! Arbitrary bytes into the CSR decoder, as DER and as PEM: it must accept
//! or reject with an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mesh_ca::csr::verify_csr_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mesh_ca::csr::verify_csr_pem(text);
    }
});
