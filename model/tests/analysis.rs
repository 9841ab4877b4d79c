//! Cross-resource analysis: each code with its exact message.

use mesh_model::analysis::{Finding, Severity, analyze};
use mesh_model::load_documents;

fn run(text: &str) -> Vec<String> {
    let (resources, errors) = load_documents(text, "a.yaml");
    assert!(errors.is_empty(), "{errors:#?}");
    analyze(&resources)
        .iter()
        .map(ToString::to_string)
        .collect()
}

const DR_V1: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}]\n";

fn vs(name: &str, extra: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [reviews]\n{extra}  http:\n{http}"
    )
}

#[test]
fn route_to_undefined_subset_is_an_error() {
    let text = format!(
        "{DR_V1}---\n{}",
        vs(
            "reviews",
            "",
            "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 50}\n    - {destination: {host: reviews, subset: v3}, weight: 50}\n"
        )
    );
    assert_eq!(
        run(&text),
        vec![
            "Error [MESH0101] VirtualService default/reviews (a.yaml#2): spec.http[0].route[1].destination.subset: subset \"v3\" of host \"reviews.default.svc.cluster.local\" is not defined by any DestinationRule. Hint: add subset \"v3\" to the DestinationRule for reviews.default.svc.cluster.local, or remove it from the route"
        ]
    );
}

#[test]
fn subset_defined_by_a_destination_rule_in_another_form_of_the_host_is_found() {
    let dr = DR_V1.replace("host: reviews", "host: reviews.default.svc.cluster.local");
    let text = format!(
        "{dr}---\n{}",
        vs(
            "reviews",
            "",
            "  - route: [{destination: {host: reviews, subset: v1}}]\n"
        )
    );
    assert_eq!(run(&text), Vec::<String>::new());
}

#[test]
fn missing_gateway_is_an_error() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: web, namespace: edge}\nspec:\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n";
    let text = format!(
        "{gw}---\n{DR_V1}---\n{}",
        vs(
            "reviews",
            "  gateways: [mesh, edge/web, web]\n",
            "  - route: [{destination: {host: reviews}}]\n"
        )
    );
    assert_eq!(
        run(&text),
        vec![
            "Error [MESH0102] VirtualService default/reviews (a.yaml#3): spec.gateways[2]: gateway \"default/web\" is not defined. Hint: create the Gateway, or fix the name (namespace/name, or name in the VirtualService's namespace)"
        ]
    );
}

#[test]
fn two_virtual_services_for_one_host_conflict_on_the_same_gateway_only() {
    let route = "  - route: [{destination: {host: reviews}}]\n";
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: web}\nspec:\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n";
    let text = format!(
        "{gw}---\n{}---\n{}---\n{}",
        vs("a", "", route),
        vs("b", "  gateways: [web]\n", route),
        vs("c", "  gateways: [mesh]\n", route)
    );
    assert_eq!(
        run(&text),
        vec![
            "Error [MESH0103] VirtualService default/c (a.yaml#4): host \"reviews.default.svc.cluster.local\" on gateway \"mesh\" is also routed by VirtualService default/a. Hint: merge the routes into one VirtualService per host and gateway"
        ]
    );
}

#[test]
fn plain_text_toward_strict_workloads_is_an_error() {
    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: pay}\nspec:\n  mtls: {mode: STRICT}\n";
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ledger, namespace: pay}\nspec:\n  host: ledger\n  trafficPolicy: {tls: {mode: DISABLE}}\n";
    assert_eq!(
        run(&format!("{pa}---\n{dr}")),
        vec![
            "Error [MESH0104] DestinationRule pay/ledger (a.yaml#2): spec.trafficPolicy.tls.mode: DISABLE sends plain text to \"ledger.pay.svc.cluster.local\", whose workloads require mTLS (PeerAuthentication pay/strict is STRICT). Hint: use tls.mode ISTIO_MUTUAL (or drop the tls block), or make the PeerAuthentication PERMISSIVE"
        ]
    );
    // A workload-specific PERMISSIVE policy overrides the namespace's STRICT.
    let permissive = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: ledger, namespace: pay}\nspec:\n  selector: {matchLabels: {app: ledger}}\n  mtls: {mode: PERMISSIVE}\n";
    assert_eq!(
        run(&format!("{pa}---\n{permissive}---\n{dr}")),
        Vec::<String>::new()
    );
    // A mesh-wide STRICT policy in the root namespace counts too.
    let mesh = pa.replace("namespace: pay", "namespace: istio-system");
    assert_eq!(run(&format!("{mesh}---\n{dr}")).len(), 1);
}

#[test]
fn destination_matching_no_known_host_is_a_warning() {
    let text = format!(
        "{DR_V1}---\n{}",
        vs(
            "reviews",
            "",
            "  - route: [{destination: {host: ratings}}]\n    mirror: {host: ratings}\n"
        )
    );
    assert_eq!(
        run(&text),
        vec![
            "Warning [MESH0105] VirtualService default/reviews (a.yaml#2): spec.http[0].route[0].destination.host: \"ratings.default.svc.cluster.local\" matches no ServiceEntry, DestinationRule or VirtualService host in the analyzed files. Hint: check the host name, or add a ServiceEntry (or DestinationRule) for it"
        ]
    );
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\nspec:\n  hosts: ['*.example.com']\n  ports: [{number: 443, name: tls, protocol: TLS}]\n";
    let text = format!(
        "{se}---\n{}",
        vs(
            "reviews",
            "",
            "  - route: [{destination: {host: api.example.com}}]\n"
        )
    );
    assert_eq!(run(&text), Vec::<String>::new());
}

#[test]
fn rate_limit_on_an_unknown_route_name_is_a_warning() {
    let rlp = "apiVersion: policy.mesh.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: rl}\nspec:\n  limits:\n  - name: a\n    match: {routeName: serch}\n    tokenBucket: {maxTokens: 10, tokensPerFill: 1, fillInterval: 1s}\n";
    let text = format!(
        "{DR_V1}---\n{}---\n{rlp}",
        vs(
            "reviews",
            "",
            "  - name: search\n    route: [{destination: {host: reviews}}]\n"
        )
    );
    assert_eq!(
        run(&text),
        vec![
            "Warning [MESH0106] RateLimitPolicy default/rl (a.yaml#3): spec.limits[0].match.routeName: no VirtualService has an HTTP route named \"serch\". Hint: name the route in the VirtualService (http[].name), or fix routeName"
        ]
    );
}

#[test]
fn findings_are_sorted_errors_first_and_serialize_to_json() {
    let text = vs(
        "reviews",
        "",
        "  - route: [{destination: {host: reviews, subset: v9}}]\n  - route: [{destination: {host: nowhere}}]\n",
    );
    let (resources, _) = load_documents(&text, "a.yaml");
    let findings = analyze(&resources);
    let sev: Vec<Severity> = findings.iter().map(|f| f.severity).collect();
    assert_eq!(sev, vec![Severity::Error, Severity::Warning]);
    let json = serde_json::to_value(&findings[0]).unwrap();
    assert_eq!(json["code"], "MESH0101");
    assert_eq!(json["severity"], "Error");
    assert_eq!(json["source"], "a.yaml#1");
}

#[test]
fn model_errors_become_located_findings() {
    let text = vs(
        "reviews",
        "",
        "  - route:\n    - {destination: {host: a}, weight: 60}\n    - {destination: {host: b}, weight: 30}\n",
    );
    let (_, errors) = load_documents(&text, "r.yaml");
    let f = Finding::from_model_error(&errors[0]);
    assert_eq!(
        f.to_string(),
        "Error [MESH0002] VirtualService default/reviews (r.yaml#1): spec.http[0].route[0].weight: weights sum to 90, must be 100. Hint: fix the field named above"
    );
    let (_, errors) = load_documents("a: [", "bad.yaml");
    assert_eq!(
        Finding::from_model_error(&errors[0]).to_string(),
        "Error [MESH0001] (bad.yaml): invalid YAML: line 1 column 4: unclosed bracket '['. Hint: fix the document so that it decodes"
    );
}
