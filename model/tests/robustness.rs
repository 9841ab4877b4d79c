//! The decoder never panics on mangled input (a deterministic stand-in for
//! the `model/fuzz` target, so CI exercises the same property), and the spec
//! types produce JSON schemas for CRD generation.

use mesh_model::analysis::analyze;
use mesh_model::load_documents;

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mangled_examples_never_panic_the_decoder_or_the_analysis() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    let pieces: &[&[u8]] = &[
        b"---\n",
        b": ",
        b"- ",
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b"'",
        b"\n  ",
        b"*",
        b"&a ",
        b"!!int ",
        b"-1",
        b"99999999999999999999",
        b"1.5e400",
        b"null",
        b"~",
        b"\t",
        b"#",
        b"\xc3\xa9",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..2000 {
        let mut data = seeds[round % seeds.len()].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(data.len() + 1);
            match rng.below(3) {
                0 => {
                    let p = pieces[rng.below(pieces.len())];
                    data.splice(at..at, p.iter().copied());
                }
                1 if at < data.len() => {
                    let end = (at + 1 + rng.below(16)).min(data.len());
                    data.drain(at..end);
                }
                _ => {
                    if at < data.len() {
                        data[at] = (rng.next() & 0x7f) as u8;
                    }
                }
            }
        }
        let Ok(text) = String::from_utf8(data) else {
            continue;
        };
        let (resources, _) = load_documents(&text, "m.yaml");
        let _ = analyze(&resources);
    }
}

#[test]
fn spec_types_generate_json_schemas() {
    use mesh_model::networking::{DestinationRuleSpec, VirtualServiceSpec};
    use mesh_model::policy::RateLimitPolicySpec;
    let vs = serde_json::to_value(schemars::schema_for!(VirtualServiceSpec)).unwrap();
    assert!(vs.to_string().contains("\"mirrorPercentage\""));
    let dr = serde_json::to_value(schemars::schema_for!(DestinationRuleSpec)).unwrap();
    assert!(dr.to_string().contains("\"ROUND_ROBIN\""));
    let rl = serde_json::to_value(schemars::schema_for!(RateLimitPolicySpec)).unwrap();
    assert!(rl.to_string().contains("\"tokenBucket\""));
}
