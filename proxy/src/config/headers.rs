//! Header additions and removals (`*_headers_to_add` / `*_headers_to_remove`).

use mesh_proto::envoy::pb::envoy::config::core::v3 as xc;
use mesh_proto::envoy::pb::google::protobuf as wkt;
use serde::Serialize;

use super::check::reject_set;
use super::{ConfigError, Ctx};

/// Header additions and removals for requests and responses.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderMutation {
    /// Added to the request.
    pub request_add: Vec<HeaderAdd>,
    /// Removed from the request.
    pub request_remove: Vec<String>,
    /// Added to the response.
    pub response_add: Vec<HeaderAdd>,
    /// Removed from the response.
    pub response_remove: Vec<String>,
}

/// How an added header combines with existing values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AppendAction {
    /// Append a value (Envoy's default).
    Append,
    /// Add only when absent.
    AddIfAbsent,
    /// Replace existing values, or add.
    Overwrite,
    /// Replace only when present.
    OverwriteIfExists,
}

/// One header to add.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderAdd {
    /// Lower-case name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Combination with existing values.
    pub action: AppendAction,
}

pub(crate) fn mutation(
    ctx: &Ctx,
    request_add: Vec<xc::HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<xc::HeaderValueOption>,
    response_remove: Vec<String>,
) -> Result<HeaderMutation, ConfigError> {
    let adds = |field: &str, v: Vec<xc::HeaderValueOption>| {
        v.into_iter()
            .enumerate()
            .map(|(i, h)| header_add(&ctx.idx(field, i), h))
            .collect::<Result<Vec<_>, _>>()
    };
    let lower = |v: Vec<String>| v.into_iter().map(|h| h.to_ascii_lowercase()).collect();
    Ok(HeaderMutation {
        request_add: adds("request_headers_to_add", request_add)?,
        request_remove: lower(request_remove),
        response_add: adds("response_headers_to_add", response_add)?,
        response_remove: lower(response_remove),
    })
}

fn header_add(ctx: &Ctx, h: xc::HeaderValueOption) -> Result<HeaderAdd, ConfigError> {
    use xc::header_value_option::HeaderAppendAction as A;
    let xc::HeaderValueOption {
        header,
        append,
        append_action,
        keep_empty_value,
    } = h;
    reject_set!(ctx; keep_empty_value);
    let xc::HeaderValue {
        key,
        value,
        raw_value,
    } = header.ok_or_else(|| ctx.missing("header"))?;
    let value = if raw_value.is_empty() {
        value
    } else {
        String::from_utf8(raw_value).map_err(|_| ctx.invalid("header.raw_value", "not UTF-8"))?
    };
    let name = key.to_ascii_lowercase();
    if http::HeaderName::from_bytes(name.as_bytes()).is_err()
        || http::HeaderValue::from_str(&value).is_err()
    {
        return Err(ctx.invalid(
            "header",
            format!("{key:?}: {value:?} is not a valid header"),
        ));
    }
    // The deprecated `append` wins when set, as in Envoy.
    let action = match append {
        Some(wkt::BoolValue { value: true }) => AppendAction::Append,
        Some(wkt::BoolValue { value: false }) => AppendAction::Overwrite,
        None => match A::try_from(append_action) {
            Ok(A::AppendIfExistsOrAdd) => AppendAction::Append,
            Ok(A::AddIfAbsent) => AppendAction::AddIfAbsent,
            Ok(A::OverwriteIfExistsOrAdd) => AppendAction::Overwrite,
            Ok(A::OverwriteIfExists) => AppendAction::OverwriteIfExists,
            Err(_) => {
                return Err(ctx.invalid("append_action", format!("unknown value {append_action}")));
            }
        },
    };
    Ok(HeaderAdd {
        name,
        value,
        action,
    })
}
