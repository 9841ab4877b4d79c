//! Arbitrary bytes into the config decoder: it must return resources or
//! errors, never panic; whatever parses must validate, analyze and
//! round-trip through JSON without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (resources, _errors) = mesh_model::load_documents(text, "fuzz.yaml");
    let _ = mesh_model::analysis::analyze(&resources);
    for r in &resources {
        let json = serde_json::to_string(&r.resource).unwrap_or_default();
        if let Ok(back) = mesh_model::parse_documents(&json, "fuzz.json") {
            assert_eq!(back, vec![r.resource.clone()]);
        }
    }
});
