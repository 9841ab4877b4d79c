//! TLS transport sockets (`envoy.transport_sockets.tls`): the Istio mutual
//! TLS subset of `UpstreamTlsContext` and `DownstreamTlsContext`. The
//! certificates themselves never come over xDS: the SDS names `default`
//! (own SVID) and `ROOTCA` (trust bundle) refer to the proxy's CA client.

use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3 as xt;
use serde::Serialize;

use super::check::{decode_any, reject_set};
use super::{ConfigError, Ctx};

/// Name of the TLS transport socket.
pub(crate) const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
/// SDS name of the proxy's own certificate.
pub(crate) const SVID_SECRET: &str = "default";
/// SDS name of the trust bundle.
pub(crate) const ROOTS_SECRET: &str = "ROOTCA";

/// Outbound TLS origination for a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    /// SNI sent to the peer.
    pub sni: String,
    /// ALPN offered to the peer.
    pub alpn: Vec<String>,
    /// SPIFFE IDs (URI SANs) the peer certificate may carry; empty means
    /// any certificate signed by the trust bundle.
    pub expected_sans: Vec<String>,
}

/// Inbound TLS termination for a filter chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DownstreamTls {
    /// Ask for and verify a client certificate.
    pub require_client_certificate: bool,
    /// ALPN accepted from clients.
    pub alpn: Vec<String>,
    /// SPIFFE IDs a client certificate may carry; empty means any.
    pub expected_sans: Vec<String>,
}

fn typed_tls<T>(ctx: &Ctx, ts: xc::TransportSocket) -> Result<T, ConfigError>
where
    T: prost::Message + prost::Name + Default,
{
    let xc::TransportSocket { name, config_type } = ts;
    if name != TLS_SOCKET {
        return Err(ctx.invalid("name", format!("unsupported transport socket {name:?}")));
    }
    match config_type {
        Some(xc::transport_socket::ConfigType::TypedConfig(any)) => {
            decode_any(ctx, "typed_config", &any)
        }
        None => Err(ctx.missing("typed_config")),
    }
}

/// Converts a cluster's `transport_socket`.
pub(crate) fn upstream(ctx: &Ctx, ts: xc::TransportSocket) -> Result<UpstreamTls, ConfigError> {
    let tls: xt::UpstreamTlsContext = typed_tls(ctx, ts)?;
    let ctx = ctx.at("typed_config");
    let xt::UpstreamTlsContext {
        common_tls_context,
        sni,
        auto_host_sni,
        auto_sni_san_validation,
        allow_renegotiation,
        max_session_keys,
        enforce_rsa_key_usage,
    } = tls;
    reject_set!(ctx; auto_host_sni, auto_sni_san_validation, allow_renegotiation, max_session_keys, enforce_rsa_key_usage);
    let common = common_tls_context.ok_or_else(|| ctx.missing("common_tls_context"))?;
    let (alpn, expected_sans) = common_context(&ctx.at("common_tls_context"), common)?;
    Ok(UpstreamTls {
        sni,
        alpn,
        expected_sans,
    })
}

/// Converts a filter chain's `transport_socket`.
pub(crate) fn downstream(ctx: &Ctx, ts: xc::TransportSocket) -> Result<DownstreamTls, ConfigError> {
    let tls: xt::DownstreamTlsContext = typed_tls(ctx, ts)?;
    let ctx = ctx.at("typed_config");
    let xt::DownstreamTlsContext {
        common_tls_context,
        require_client_certificate,
        require_sni,
        disable_stateful_session_resumption,
        session_timeout,
        ocsp_staple_policy,
        full_scan_certs_on_sni_mismatch,
        prefer_client_ciphers,
        session_ticket_keys_type,
    } = tls;
    reject_set!(ctx; require_sni, disable_stateful_session_resumption, session_timeout, ocsp_staple_policy,
        full_scan_certs_on_sni_mismatch, prefer_client_ciphers, session_ticket_keys_type);
    let common = common_tls_context.ok_or_else(|| ctx.missing("common_tls_context"))?;
    let (alpn, expected_sans) = common_context(&ctx.at("common_tls_context"), common)?;
    Ok(DownstreamTls {
        require_client_certificate: require_client_certificate.is_some_and(|b| b.value),
        alpn,
        expected_sans,
    })
}

fn sds_name(ctx: &Ctx, cfg: xt::SdsSecretConfig, want: &str) -> Result<(), ConfigError> {
    let xt::SdsSecretConfig { name, sds_config } = cfg;
    reject_set!(ctx; sds_config);
    if name != want {
        return Err(ctx.invalid(
            "name",
            format!("only the secret {want:?} is available, got {name:?}"),
        ));
    }
    Ok(())
}

/// Returns (ALPN, expected URI SANs).
fn common_context(
    ctx: &Ctx,
    c: xt::CommonTlsContext,
) -> Result<(Vec<String>, Vec<String>), ConfigError> {
    use xt::common_tls_context::ValidationContextType as V;
    let xt::CommonTlsContext {
        tls_params,
        tls_certificates,
        tls_certificate_sds_secret_configs,
        tls_certificate_provider_instance,
        custom_tls_certificate_selector,
        tls_certificate_certificate_provider,
        tls_certificate_certificate_provider_instance,
        alpn_protocols,
        custom_handshaker,
        key_log,
        validation_context_type,
    } = c;
    reject_set!(ctx; tls_params, tls_certificates, tls_certificate_provider_instance, custom_tls_certificate_selector,
        tls_certificate_certificate_provider, tls_certificate_certificate_provider_instance, custom_handshaker, key_log);
    if tls_certificate_sds_secret_configs.len() != 1 {
        return Err(ctx.invalid(
            "tls_certificate_sds_secret_configs",
            "exactly one entry (\"default\") is supported",
        ));
    }
    for (i, s) in tls_certificate_sds_secret_configs.into_iter().enumerate() {
        sds_name(
            &ctx.idx("tls_certificate_sds_secret_configs", i),
            s,
            SVID_SECRET,
        )?;
    }
    let sans = match validation_context_type {
        Some(V::CombinedValidationContext(combined)) => {
            let ctx = ctx.at("combined_validation_context");
            let xt::common_tls_context::CombinedCertificateValidationContext {
                default_validation_context,
                validation_context_sds_secret_config,
                validation_context_certificate_provider,
                validation_context_certificate_provider_instance,
            } = combined;
            reject_set!(ctx; validation_context_certificate_provider, validation_context_certificate_provider_instance);
            let sds = validation_context_sds_secret_config
                .ok_or_else(|| ctx.missing("validation_context_sds_secret_config"))?;
            sds_name(
                &ctx.at("validation_context_sds_secret_config"),
                sds,
                ROOTS_SECRET,
            )?;
            match default_validation_context {
                Some(v) => validation_context(&ctx.at("default_validation_context"), v)?,
                None => Vec::new(),
            }
        }
        Some(V::ValidationContextSdsSecretConfig(sds)) => {
            sds_name(
                &ctx.at("validation_context_sds_secret_config"),
                sds,
                ROOTS_SECRET,
            )?;
            Vec::new()
        }
        Some(V::ValidationContext(_)) => return Err(ctx.unsupported("validation_context")),
        Some(V::ValidationContextCertificateProvider(_)) => {
            return Err(ctx.unsupported("validation_context_certificate_provider"));
        }
        Some(V::ValidationContextCertificateProviderInstance(_)) => {
            return Err(ctx.unsupported("validation_context_certificate_provider_instance"));
        }
        None => return Err(ctx.missing("combined_validation_context")),
    };
    Ok((alpn_protocols, sans))
}

fn validation_context(
    ctx: &Ctx,
    v: xt::CertificateValidationContext,
) -> Result<Vec<String>, ConfigError> {
    use mesh_proto::envoy::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
    let xt::CertificateValidationContext {
        trusted_ca,
        ca_certificate_provider_instance,
        system_root_certs,
        watched_directory,
        verify_certificate_spki,
        verify_certificate_hash,
        match_typed_subject_alt_names,
        match_subject_alt_names,
        require_signed_certificate_timestamp,
        crl,
        allow_expired_certificate,
        trust_chain_verification,
        custom_validator_config,
        only_verify_leaf_cert_crl,
        max_verify_depth,
        suppress_client_ca_list,
    } = v;
    reject_set!(ctx; trusted_ca, ca_certificate_provider_instance, system_root_certs, watched_directory,
        verify_certificate_spki, verify_certificate_hash, match_subject_alt_names,
        require_signed_certificate_timestamp, crl, allow_expired_certificate, trust_chain_verification,
        custom_validator_config, only_verify_leaf_cert_crl, max_verify_depth, suppress_client_ca_list);
    let mut sans = Vec::new();
    for (i, m) in match_typed_subject_alt_names.into_iter().enumerate() {
        let ctx = ctx.idx("match_typed_subject_alt_names", i);
        let xt::SubjectAltNameMatcher {
            san_type,
            matcher,
            oid,
        } = m;
        reject_set!(ctx; oid);
        if san_type != xt::subject_alt_name_matcher::SanType::Uri as i32 {
            return Err(ctx.invalid("san_type", "only URI SANs (SPIFFE IDs) are supported"));
        }
        let Some(matcher) = matcher else {
            return Err(ctx.missing("matcher"));
        };
        let mctx = ctx.at("matcher");
        let mesh_proto::envoy::pb::envoy::r#type::matcher::v3::StringMatcher {
            ignore_case,
            match_pattern,
        } = matcher;
        reject_set!(mctx; ignore_case);
        match match_pattern {
            Some(MatchPattern::Exact(s)) => sans.push(s),
            _ => return Err(mctx.invalid("match_pattern", "only exact SPIFFE IDs are supported")),
        }
    }
    Ok(sans)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mesh_proto::envoy::pb::envoy::r#type::matcher::v3 as xm;
    use mesh_proto::envoy::pb::google::protobuf as wkt;
    use prost::Message;

    pub(crate) fn istio_upstream(sni: &str, san: &str) -> xc::TransportSocket {
        let ctx = xt::UpstreamTlsContext {
            sni: sni.into(),
            common_tls_context: Some(xt::CommonTlsContext {
                alpn_protocols: vec!["istio-peer-exchange".into(), "istio".into()],
                tls_certificate_sds_secret_configs: vec![xt::SdsSecretConfig {
                    name: "default".into(),
                    sds_config: None,
                }],
                validation_context_type: Some(
                    xt::common_tls_context::ValidationContextType::CombinedValidationContext(
                        xt::common_tls_context::CombinedCertificateValidationContext {
                            default_validation_context: Some(xt::CertificateValidationContext {
                                match_typed_subject_alt_names: vec![xt::SubjectAltNameMatcher {
                                    san_type: xt::subject_alt_name_matcher::SanType::Uri as i32,
                                    matcher: Some(xm::StringMatcher {
                                        ignore_case: false,
                                        match_pattern: Some(
                                            xm::string_matcher::MatchPattern::Exact(san.into()),
                                        ),
                                    }),
                                    oid: String::new(),
                                }],
                                ..Default::default()
                            }),
                            validation_context_sds_secret_config: Some(xt::SdsSecretConfig {
                                name: "ROOTCA".into(),
                                sds_config: None,
                            }),
                            ..Default::default()
                        },
                    ),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        xc::TransportSocket {
            name: TLS_SOCKET.into(),
            config_type: Some(xc::transport_socket::ConfigType::TypedConfig(wkt::Any {
                type_url: <xt::UpstreamTlsContext as prost::Name>::type_url(),
                value: ctx.encode_to_vec(),
            })),
        }
    }

    #[test]
    fn istio_mutual_upstream_context_converts() {
        let ctx = Ctx::new("Cluster", "c");
        let tls = upstream(
            &ctx,
            istio_upstream(
                "outbound_.9080_._.r",
                "spiffe://cluster.local/ns/default/sa/r",
            ),
        )
        .unwrap();
        assert_eq!(tls.sni, "outbound_.9080_._.r");
        assert_eq!(tls.alpn, ["istio-peer-exchange", "istio"]);
        assert_eq!(
            tls.expected_sans,
            ["spiffe://cluster.local/ns/default/sa/r"]
        );
    }

    #[test]
    fn inline_certificates_are_rejected_by_name() {
        let mut ts = istio_upstream("s", "spiffe://x");
        let Some(xc::transport_socket::ConfigType::TypedConfig(any)) = &mut ts.config_type else {
            unreachable!()
        };
        let mut u = xt::UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
        u.common_tls_context
            .as_mut()
            .unwrap()
            .tls_certificates
            .push(Default::default());
        any.value = u.encode_to_vec();
        let err = upstream(&Ctx::new("Cluster", "c").at("transport_socket"), ts).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cluster c: unsupported field transport_socket.typed_config.common_tls_context.tls_certificates"
        );
    }
}
