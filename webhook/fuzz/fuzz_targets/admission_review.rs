//! Arbitrary bytes as the body of `/inject` and `/validate`: the handlers
//! must answer or return a `ReviewError` (HTTP 400), never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(review) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = mesh_webhook::review_inject(&review, &mesh_inject::InjectConfig::default());
    let _ = mesh_webhook::review_validate(&review);
});
