//! `meshctl proxy-config secret`: the proxy's certificates as its admin
//! `/config_dump` shows them (`SecretsConfigDump`), with validity, serial
//! and dates read from the PEM (as istioctl does). Only the proxy knows
//! them: meshd's dump has no secrets section.

use base64::Engine as _;
use serde_json::Value;

use super::dump::{Dump, field, str_field};
use super::tables::render;

/// One certificate's facts.
#[derive(Debug, Clone, PartialEq)]
pub struct CertFacts {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Start of validity, seconds since the epoch.
    pub not_before: i64,
    /// End of validity, seconds since the epoch.
    pub not_after: i64,
}

/// The bytes of a `DataSource` (`inline_bytes` is base64 in proto3 JSON).
fn data_source(ds: &Value) -> Option<Vec<u8>> {
    if let Some(b) = field(ds, "inline_bytes").as_str() {
        return base64::engine::general_purpose::STANDARD.decode(b).ok();
    }
    field(ds, "inline_string")
        .as_str()
        .map(|s| s.as_bytes().to_vec())
}

/// Facts of the first certificate in a PEM bundle.
pub fn first_cert(pem: &[u8]) -> Option<CertFacts> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(CertFacts {
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// `2026-11-24T14:00:00Z` for seconds since the epoch (UTC).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar),
    // counting in 400-year eras that start on March 1st.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `RESOURCE NAME  TYPE  STATUS  VALID CERT  SERIAL NUMBER  NOT AFTER  NOT BEFORE`.
pub fn secrets(dump: &Dump, name: Option<&str>, now: i64) -> String {
    let mut rows = Vec::new();
    for s in dump.secrets() {
        let res = str_field(&s, "name");
        if name.is_some_and(|n| n != res) {
            continue;
        }
        let secret = field(&s, "secret");
        let (ty, pem) = if !field(secret, "tls_certificate").is_null() {
            (
                "Cert Chain",
                data_source(field(field(secret, "tls_certificate"), "certificate_chain")),
            )
        } else {
            (
                "CA",
                data_source(field(field(secret, "validation_context"), "trusted_ca")),
            )
        };
        let facts = pem.as_deref().and_then(first_cert);
        let row = match facts {
            Some(f) => vec![
                res.to_string(),
                ty.to_string(),
                "ACTIVE".to_string(),
                (f.not_before <= now && now <= f.not_after).to_string(),
                f.serial,
                rfc3339(f.not_after),
                rfc3339(f.not_before),
            ],
            None => vec![
                res.to_string(),
                ty.to_string(),
                "ACTIVE".to_string(),
                "false".to_string(),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
            ],
        };
        rows.push(row);
    }
    render(
        &[
            "RESOURCE NAME",
            "TYPE",
            "STATUS",
            "VALID CERT",
            "SERIAL NUMBER",
            "NOT AFTER",
            "NOT BEFORE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_478_400 + 3_661), "2026-11-24T01:01:01Z");
    }
}
