//! Validation rules, each asserting its exact message with its location.

use mesh_model::load_documents;

/// The messages for one document made of `head` (apiVersion, kind, metadata)
/// and `spec`.
fn problems(kind: &str, spec: &str) -> Vec<String> {
    let api = match kind {
        "PeerAuthentication" | "AuthorizationPolicy" | "RequestAuthentication" => {
            "security.istio.io/v1"
        }
        "RateLimitPolicy" => "policy.mesh.dev/v1alpha1",
        _ => "networking.istio.io/v1",
    };
    let text = format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec:\n{spec}");
    let (ok, errs) = load_documents(&text, "f.yaml");
    assert!(ok.is_empty() || errs.is_empty());
    errs.iter()
        .map(|e| {
            let s = e.to_string();
            let prefix = format!("f.yaml#1 {kind} default/x: ");
            s.strip_prefix(&prefix).unwrap_or(&s).to_string()
        })
        .collect()
}

fn assert_problems(kind: &str, spec: &str, want: &[&str]) {
    assert_eq!(problems(kind, spec), want, "{kind}:\n{spec}");
}

const VS_HEAD: &str = "  hosts: [reviews]\n  http:\n";

#[test]
fn full_message_names_file_document_resource_and_field() {
    let text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: ok}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 80}\n    - {destination: {host: reviews, subset: v2}, weight: 10}\n";
    let (ok, errs) = load_documents(text, "reviews.yaml");
    assert_eq!(ok.len(), 1);
    let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        vec![
            "reviews.yaml#2 VirtualService default/reviews: spec.http[1].route[0].weight: weights sum to 90, must be 100"
        ]
    );
}

#[test]
fn virtual_service_weights_must_be_in_range() {
    assert_problems(
        "VirtualService",
        &format!(
            "{VS_HEAD}  - route:\n    - {{destination: {{host: a}}, weight: 120}}\n    - {{destination: {{host: b}}, weight: -20}}\n"
        ),
        &[
            "spec.http[0].route[0].weight: weight 120 must be between 0 and 100",
            "spec.http[0].route[1].weight: weight -20 must be between 0 and 100",
        ],
    );
}

#[test]
fn virtual_service_needs_hosts_and_routes() {
    assert_problems(
        "VirtualService",
        "  gateways: [mesh]\n",
        &[
            "spec.hosts: at least one host is required",
            "spec: at least one of http, tls or tcp routes is required",
        ],
    );
    assert_problems(
        "VirtualService",
        &format!("{VS_HEAD}  - match: [{{uri: {{prefix: /a}}}}]\n"),
        &[
            "spec.http[0].route: at least one destination is required unless redirect, directResponse or delegate is set",
        ],
    );
}

#[test]
fn redirect_direct_response_and_route_are_mutually_exclusive() {
    assert_problems(
        "VirtualService",
        &format!(
            "{VS_HEAD}  - route: [{{destination: {{host: a}}}}]\n    redirect: {{uri: /b}}\n    directResponse: {{status: 503}}\n"
        ),
        &[
            "spec.http[0]: redirect and route are mutually exclusive",
            "spec.http[0]: directResponse and route are mutually exclusive",
            "spec.http[0]: redirect and directResponse are mutually exclusive",
        ],
    );
    assert_problems(
        "VirtualService",
        &format!(
            "{VS_HEAD}  - redirect: {{uri: /b, redirectCode: 200}}\n  - directResponse: {{status: 700, body: {{string: a, bytes: YQ==}}}}\n"
        ),
        &[
            "spec.http[0].redirect.redirectCode: redirectCode 200 must be one of 301, 302, 303, 307, 308",
            "spec.http[1].directResponse.status: status 700 must be between 200 and 599",
            "spec.http[1].directResponse.body: must set exactly one of string or bytes",
        ],
    );
}

#[test]
fn string_matches_need_exactly_one_form_and_a_valid_regex() {
    assert_problems(
        "VirtualService",
        &format!(
            "{VS_HEAD}  - match:\n    - uri: {{exact: /a, prefix: /b}}\n      method: {{}}\n      authority: {{regex: '(a'}}\n      headers: {{x-user: {{regex: '[z'}}}}\n    route: [{{destination: {{host: a}}}}]\n"
        ),
        &[
            "spec.http[0].match[0].uri: must set exactly one of exact, prefix or regex",
            "spec.http[0].match[0].method: must set exactly one of exact, prefix or regex",
            "spec.http[0].match[0].authority.regex: invalid regex \"(a\": unclosed group",
            "spec.http[0].match[0].headers.x-user.regex: invalid regex \"[z\": unclosed character class",
        ],
    );
}

#[test]
fn durations_must_parse_and_be_positive_except_timeout_zero() {
    assert_problems(
        "VirtualService",
        &format!(
            "{VS_HEAD}  - route: [{{destination: {{host: a}}}}]\n    timeout: 0s\n    retries: {{attempts: 3, perTryTimeout: 0s}}\n  - route: [{{destination: {{host: a}}}}]\n    timeout: 5 seconds\n"
        ),
        &[
            "spec.http[0].retries.perTryTimeout: duration \"0s\" must be positive",
            "spec.http[1].timeout: invalid duration \"5 seconds\": expected a number and a unit (h, m, s, ms, us, ns), e.g. \"1.5s\"",
        ],
    );
}

#[test]
fn fault_injection_rules() {
    assert_problems(
        "VirtualService",
        &format!(
            "{VS_HEAD}  - route: [{{destination: {{host: a}}}}]\n    fault: {{}}\n  - route: [{{destination: {{host: a}}}}]\n    fault:\n      delay: {{percentage: {{value: 150}}}}\n      abort: {{httpStatus: 503, grpcStatus: UNAVAILABLE}}\n  - route: [{{destination: {{host: a}}}}]\n    fault: {{abort: {{percentage: {{value: 10}}}}}}\n"
        ),
        &[
            "spec.http[0].fault: at least one of delay or abort is required",
            "spec.http[1].fault.delay.fixedDelay: fixedDelay is required",
            "spec.http[1].fault.delay.percentage.value: percentage 150 must be between 0 and 100",
            "spec.http[1].fault.abort: httpStatus and grpcStatus are mutually exclusive",
            "spec.http[2].fault.abort: one of httpStatus or grpcStatus is required",
        ],
    );
}

#[test]
fn mirror_and_mirrors_are_mutually_exclusive() {
    assert_problems(
        "VirtualService",
        &format!(
            "{VS_HEAD}  - route: [{{destination: {{host: a}}}}]\n    mirror: {{host: b}}\n    mirrors: [{{destination: {{host: c}}}}]\n    mirrorPercentage: {{value: -1}}\n"
        ),
        &[
            "spec.http[0]: mirror and mirrors are mutually exclusive",
            "spec.http[0].mirrorPercentage.value: percentage -1 must be between 0 and 100",
        ],
    );
}

#[test]
fn ports_and_subset_names_are_checked() {
    assert_problems(
        "VirtualService",
        &format!(
            "{VS_HEAD}  - route: [{{destination: {{host: a, subset: V_1, port: {{number: 70000}}}}}}]\n"
        ),
        &[
            "spec.http[0].route[0].destination.subset: \"V_1\" is not a valid DNS-1123 label (at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit)",
            "spec.http[0].route[0].destination.port.number: port 70000 must be between 1 and 65535",
        ],
    );
}

#[test]
fn tcp_and_tls_routes_need_destinations_and_sni() {
    assert_problems(
        "VirtualService",
        "  hosts: [a]\n  tcp:\n  - route: []\n  tls:\n  - match: [{port: 443}]\n    route: [{destination: {host: a}, weight: 50}, {destination: {host: b}, weight: 40}]\n",
        &[
            "spec.tcp[0].route: at least one destination is required",
            "spec.tls[0].match[0].sniHosts: at least one SNI host is required",
            "spec.tls[0].route[0].weight: weights sum to 90, must be 100",
        ],
    );
}

#[test]
fn resource_names_must_be_dns_1123() {
    let text = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: Bad_Name, namespace: -ns}\nspec:\n  egress: [{hosts: ['./*']}]\n";
    let errs: Vec<String> = load_documents(text, "s.yaml")
        .1
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        vec![
            "s.yaml#1 Sidecar -ns/Bad_Name: metadata.name: \"Bad_Name\" is not a valid DNS-1123 subdomain (lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit)",
            "s.yaml#1 Sidecar -ns/Bad_Name: metadata.namespace: \"-ns\" is not a valid DNS-1123 label (at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit)",
        ]
    );
}

#[test]
fn destination_rule_rules() {
    assert_problems(
        "DestinationRule",
        "  host: ''\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN, consistentHash: {httpHeaderName: x, useSourceIp: true}}\n    connectionPool:\n      tcp: {maxConnections: 0, connectTimeout: 0s}\n      http: {http1MaxPendingRequests: -1}\n    outlierDetection: {maxEjectionPercent: 101, interval: 1x}\n    tls: {mode: MUTUAL}\n    portLevelSettings: [{loadBalancer: {simple: RANDOM}}]\n  subsets:\n  - labels: {version: v1}\n  - name: v2\n  - name: v2\n    trafficPolicy: {connectionPool: {http: {maxRetries: 0}}}\n",
        &[
            "spec.host: must not be empty",
            "spec.trafficPolicy.loadBalancer: simple and consistentHash are mutually exclusive",
            "spec.trafficPolicy.loadBalancer.consistentHash: must set exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
            "spec.trafficPolicy.connectionPool.tcp.maxConnections: 0 must be > 0",
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration \"0s\" must be positive",
            "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests: -1 must be > 0",
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 101 must be between 0 and 100",
            "spec.trafficPolicy.outlierDetection.interval: invalid duration \"1x\": expected a number and a unit (h, m, s, ms, us, ns), e.g. \"1.5s\"",
            "spec.trafficPolicy.tls.mode: MUTUAL mode needs clientCertificate and privateKey, or credentialName",
            "spec.trafficPolicy.portLevelSettings[0].port: port is required",
            "spec.subsets[0].name: a subset needs a name",
            "spec.subsets[2].name: duplicate subset name \"v2\"",
            "spec.subsets[2].trafficPolicy.connectionPool.http.maxRetries: 0 must be > 0",
        ],
    );
}

#[test]
fn service_entry_rules() {
    assert_problems(
        "ServiceEntry",
        "  location: MESH_EXTERNAL\n",
        &[
            "spec.hosts: at least one host is required",
            "spec.ports: at least one port is required",
        ],
    );
    assert_problems(
        "ServiceEntry",
        "  hosts: ['*.example.com', db.internal]\n  ports: [{number: 5432, protocol: tcp}, {number: 5432, name: pg, protocol: FOO}]\n  resolution: DNS\n",
        &[
            "spec.hosts[0]: wildcard host \"*.example.com\" cannot use DNS resolution",
            "spec.ports[0].name: a port name is required",
            "spec.ports[1].protocol: unknown protocol \"FOO\" (expected one of HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, MYSQL, REDIS, UDP)",
            "spec.ports[1].number: duplicate port 5432",
        ],
    );
    assert_problems(
        "ServiceEntry",
        "  hosts: [db.internal]\n  ports: [{number: 5432, name: pg}]\n  resolution: STATIC\n",
        &["spec.endpoints: resolution STATIC needs endpoints or a workloadSelector"],
    );
    assert_problems(
        "ServiceEntry",
        "  hosts: [db.internal]\n  ports: [{number: 5432, name: pg}]\n  resolution: STATIC\n  endpoints: [{address: db.example.com, ports: {pg: 0}}]\n",
        &[
            "spec.endpoints[0].ports.pg: port 0 must be between 1 and 65535",
            "spec.endpoints[0].address: resolution STATIC needs an IP address, got \"db.example.com\"",
        ],
    );
}

#[test]
fn workload_entry_needs_an_address() {
    assert_problems(
        "WorkloadEntry",
        "  labels: {app: vm}\n",
        &["spec.address: address is required"],
    );
}

#[test]
fn gateway_rules() {
    assert_problems(
        "Gateway",
        "  selector: {istio: ingressgateway}\n",
        &["spec.servers: at least one server is required"],
    );
    assert_problems(
        "Gateway",
        "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: []\n  - port: {number: 8443, name: mtls, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}\n  - port: {number: 9443, name: simple, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPLE}\n",
        &[
            "spec.servers[0].hosts: at least one host is required",
            "spec.servers[0].tls: protocol HTTPS needs tls settings",
            "spec.servers[1].tls.caCertificates: MUTUAL mode needs caCertificates or credentialName",
            "spec.servers[2].tls: SIMPLE and MUTUAL modes need credentialName, or serverCertificate and privateKey",
        ],
    );
}

#[test]
fn sidecar_rules() {
    assert_problems(
        "Sidecar",
        "  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        &["spec.egress: at least one egress listener is required"],
    );
    assert_problems(
        "Sidecar",
        "  egress: [{hosts: [reviews, './*']}]\n",
        &[
            "spec.egress[0].hosts[0]: \"reviews\" must be namespace/host (e.g. \"./*\" or \"istio-system/*\")",
        ],
    );
}

#[test]
fn peer_authentication_port_level_needs_a_selector() {
    assert_problems(
        "PeerAuthentication",
        "  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n    70000: {mode: DISABLE}\n",
        &[
            "spec.portLevelMtls: port level mTLS needs a selector",
            "spec.portLevelMtls.70000: port 70000 must be between 1 and 65535",
        ],
    );
}

#[test]
fn authorization_policy_rules() {
    assert_problems(
        "AuthorizationPolicy",
        "  action: CUSTOM\n",
        &["spec.provider: action CUSTOM needs a provider"],
    );
    assert_problems(
        "AuthorizationPolicy",
        "  action: DENY\n  provider: {name: ext}\n  rules:\n  - from: [{source: {}}, {source: {ipBlocks: [10.0.0.0/33, 1.2.3.4]}}]\n    to: [{operation: {ports: ['80', http]}}]\n    when: [{key: 'request.headers[x]'}]\n",
        &[
            "spec.provider: provider is only allowed with action CUSTOM",
            "spec.rules[0].from[0].source: at least one field must be set",
            "spec.rules[0].from[1].source.ipBlocks[0]: \"10.0.0.0/33\" is not a valid IP address or CIDR",
            "spec.rules[0].to[0].operation.ports[1]: \"http\" is not a valid port",
            "spec.rules[0].when[0]: at least one of values or notValues is required",
        ],
    );
}

#[test]
fn request_authentication_rules() {
    assert_problems(
        "RequestAuthentication",
        "  jwtRules:\n  - issuer: ''\n    jwksUri: file:///jwks\n    jwks: '{}'\n",
        &[
            "spec.jwtRules[0].issuer: must not be empty",
            "spec.jwtRules[0]: jwksUri and jwks are mutually exclusive",
            "spec.jwtRules[0].jwksUri: jwksUri \"file:///jwks\" must be an http(s) URL",
        ],
    );
}

#[test]
fn rate_limit_policy_rules() {
    assert_problems(
        "RateLimitPolicy",
        "  selector: {matchLabels: {app: a}}\n",
        &["spec.limits: at least one limit is required"],
    );
    assert_problems(
        "RateLimitPolicy",
        "  limits:\n  - name: a\n    match: {pathPrefix: api}\n    tokenBucket: {maxTokens: 0, tokensPerFill: 1, fillInterval: 0s}\n    responseCode: 200\n  - name: a\n    tokenBucket: {maxTokens: 10, tokensPerFill: 10, fillInterval: 1s}\n",
        &[
            "spec.limits[0].tokenBucket.maxTokens: 0 must be > 0",
            "spec.limits[0].tokenBucket.tokensPerFill: tokensPerFill 1 must not exceed maxTokens 0",
            "spec.limits[0].tokenBucket.fillInterval: duration \"0s\" must be positive",
            "spec.limits[0].responseCode: responseCode 200 must be between 400 and 599",
            "spec.limits[0].match.pathPrefix: pathPrefix \"api\" must start with '/'",
            "spec.limits[1].name: duplicate limit name \"a\"",
        ],
    );
}

#[test]
fn export_to_takes_dot_star_tilde_or_namespaces() {
    assert_problems(
        "DestinationRule",
        "  host: a\n  exportTo: ['.', '*', '~', prod, Bad]\n",
        &["spec.exportTo[4]: \"Bad\" must be \".\", \"*\", \"~\" or a namespace name"],
    );
}
