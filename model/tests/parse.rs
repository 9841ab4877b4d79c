//! Parsing: YAML streams, JSON, apiVersions, and located decode errors.

use mesh_model::{Kind, Resource, parse_documents, parse_sourced};

fn errors(text: &str) -> Vec<String> {
    parse_documents(text, "t.yaml")
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n";

#[test]
fn unknown_spec_field_is_reported_with_its_path() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - rout:\n    - destination: {host: reviews}\n";
    assert_eq!(
        errors(text),
        vec![
            "t.yaml#1 VirtualService default/reviews: spec.http[0].rout: unknown field `rout`, expected one of `name`, `match`, `route`, `redirect`, `directResponse`, `delegate`, `rewrite`, `timeout`, `retries`, `fault`, `mirror`, `mirrors`, `mirrorPercentage`, `corsPolicy`, `headers`"
        ]
    );
}

#[test]
fn decode_errors_name_the_field_and_the_problem() {
    assert_eq!(
        errors(&format!(
            "{VS}spec:\n  http:\n  - route:\n    - destination: {{subset: v1}}\n"
        )),
        vec![
            "t.yaml#1 VirtualService default/r: spec.http[0].route[0].destination: missing field `host`"
        ]
    );
    assert_eq!(
        errors(&format!(
            "{VS}spec:\n  http:\n  - route:\n    - destination: {{host: a}}\n      weight: x\n"
        )),
        vec![
            "t.yaml#1 VirtualService default/r: spec.http[0].route[0].weight: invalid type: string \"x\", expected i32"
        ]
    );
    assert_eq!(
        errors(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: a\n  trafficPolicy: {loadBalancer: {simple: FOO}}\n"
        ),
        vec![
            "t.yaml#1 DestinationRule default/r: spec.trafficPolicy.loadBalancer.simple: unknown variant `FOO`, expected one of `UNSPECIFIED`, `RANDOM`, `PASSTHROUGH`, `ROUND_ROBIN`, `LEAST_REQUEST`, `LEAST_CONN`"
        ]
    );
}

#[test]
fn unknown_api_versions_and_kinds_are_rejected_clearly() {
    assert_eq!(
        errors("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: r}\n"),
        vec![
            "t.yaml#1 VirtualService default/r: apiVersion \"networking.istio.io/v2\" is not supported for VirtualService (use networking.istio.io/v1)"
        ]
    );
    assert_eq!(
        errors(
            "apiVersion: networking.istio.io/v1\nkind: EnvoyFilter\nmetadata: {name: r, namespace: x}\n"
        ),
        vec![
            "t.yaml#1 EnvoyFilter x/r: unknown kind \"EnvoyFilter\" (expected one of: VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, Gateway, Sidecar, PeerAuthentication, AuthorizationPolicy, RequestAuthentication, RateLimitPolicy)"
        ]
    );
    assert_eq!(
        errors("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: r}\n"),
        vec![
            "t.yaml#1 Deployment default/r: not a mesh resource (apiVersion \"apps/v1\", kind \"Deployment\")"
        ]
    );
    assert_eq!(
        errors("kind: Gateway\n"),
        vec!["t.yaml#1 Gateway default/: missing or non-string field \"apiVersion\""]
    );
    assert_eq!(
        errors("- 1\n"),
        vec!["t.yaml#1: a resource must be a mapping with apiVersion, kind, metadata and spec"]
    );
}

#[test]
fn syntax_errors_name_the_file_and_position() {
    assert_eq!(
        errors("a: [\n"),
        vec!["t.yaml: invalid YAML: line 1 column 4: unclosed bracket '['"]
    );
    assert_eq!(
        errors("{\"a\": "),
        vec!["t.yaml: invalid JSON: EOF while parsing a value at line 1 column 6"]
    );
}

#[test]
fn every_accepted_api_version_parses() {
    for kind in Kind::ALL {
        for version in kind.api_versions() {
            let text = format!(
                "apiVersion: {}/{version}\nkind: {kind}\nmetadata: {{name: x, namespace: ns}}\n",
                kind.api_group()
            );
            let res = parse_documents(&text, "t.yaml").unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(res.len(), 1);
            assert_eq!(res[0].kind(), kind);
            assert_eq!(res[0].namespace(), "ns");
            assert_eq!(
                res[0].api_version(),
                format!("{}/{version}", kind.api_group())
            );
        }
    }
}

#[test]
fn multi_document_streams_skip_empty_documents_and_count_the_rest() {
    let text = format!(
        "---\n{VS}spec: {{hosts: [a]}}\n---\n---\n# only a comment\n---\n{VS}  namespace: prod\nspec: {{hosts: [b\n"
    );
    let (ok, errs) = parse_sourced(&text, "s.yaml");
    // The second document has a syntax error, which fails the whole stream.
    assert!(ok.is_empty());
    assert_eq!(errs.len(), 1);

    let text = format!(
        "---\n{VS}spec: {{hosts: [a]}}\n---\n---\n# only a comment\n---\n{VS}spec: {{hosts: [b], bogus: 1}}\n---\n{VS}spec: {{hosts: [c]}}\n"
    );
    let (ok, errs) = parse_sourced(&text, "s.yaml");
    assert_eq!(
        ok.iter().map(|r| r.doc_index).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(ok[1].location(), "s.yaml#3");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0]
            .to_string()
            .starts_with("s.yaml#2 VirtualService default/r: spec.bogus: unknown field `bogus`"),
        "{}",
        errs[0]
    );
}

#[test]
fn json_input_single_array_and_list_forms_parse() {
    let one = r#"{"apiVersion":"networking.istio.io/v1","kind":"Gateway","metadata":{"name":"gw"},"spec":{"selector":{"istio":"ingressgateway"},"servers":[{"port":{"number":80,"name":"http","protocol":"HTTP"},"hosts":["*"]}]}}"#;
    let res = parse_documents(one, "g.json").unwrap();
    let Resource::Gateway(gw) = &res[0] else {
        panic!("{res:?}")
    };
    assert_eq!(gw.spec.servers[0].port.number, 80);
    assert_eq!(
        parse_documents(&format!("[{one},{one}]"), "g.json")
            .unwrap()
            .len(),
        2
    );
    let list = format!(r#"{{"apiVersion":"v1","kind":"List","items":[{one},{one},{one}]}}"#);
    assert_eq!(parse_documents(&list, "g.json").unwrap().len(), 3);
}

#[test]
fn metadata_tolerates_standard_kubernetes_fields_and_status() {
    let text = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: p\n  uid: abc\n  creationTimestamp: '2024-01-01T00:00:00Z'\n  managedFields: []\n  generation: 3\nspec:\n  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    8080: {mode: DISABLE}\nstatus: {}\n";
    let res = parse_documents(text, "p.yaml").unwrap();
    assert_eq!(res[0].meta().generation, Some(3));
    let Resource::PeerAuthentication(pa) = &res[0] else {
        panic!()
    };
    assert!(pa.spec.port_level_mtls.contains_key(&8080));
}

#[test]
fn resources_deserialize_through_serde_with_the_same_checks() {
    let v = serde_json::json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": "s"}, "spec": {"egress": [{"hosts": ["./*"]}]}});
    let r: Resource = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(r.to_json_value(), v);
    let bad = serde_json::json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "spec": {"egres": []}});
    let err = serde_json::from_value::<Resource>(bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("spec.egres: unknown field `egres`"),
        "{err}"
    );
}

#[test]
fn unknown_top_level_fields_are_errors_but_status_is_accepted() {
    assert_eq!(
        errors(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nsepc: {}\n"
        ),
        vec![
            "t.yaml#1 Gateway default/g: sepc: unknown field `sepc`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`"
        ]
    );
}

#[test]
fn streams_larger_than_the_yaml_parsers_default_budget_parse() {
    // serde-saphyr stops at 1,024 documents by default.
    let doc = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec:\n  egress: [{hosts: ['./*']}]\n";
    let text = vec![doc; 3000].join("---\n");
    assert_eq!(parse_documents(&text, "big.yaml").unwrap().len(), 3000);
}
