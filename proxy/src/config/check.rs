//! Helpers shared by the xDS → domain conversions: the "is this field set"
//! test behind the reject-by-name rule, typed `Any` decoding and the small
//! protobuf well-known types.

use std::collections::HashMap;
use std::time::Duration;

use mesh_proto::envoy::pb::google::protobuf as wkt;

use super::{ConfigError, Ctx};

/// Whether a protobuf field carries a value other than its default. A set
/// field the proxy does not implement is rejected by name.
pub(crate) trait IsSet {
    /// True when the field differs from its protobuf default.
    fn is_set(&self) -> bool;
}

impl<T> IsSet for Option<T> {
    fn is_set(&self) -> bool {
        self.is_some()
    }
}

impl<T> IsSet for Vec<T> {
    fn is_set(&self) -> bool {
        !self.is_empty()
    }
}

impl<K, V> IsSet for HashMap<K, V> {
    fn is_set(&self) -> bool {
        !self.is_empty()
    }
}

impl IsSet for String {
    fn is_set(&self) -> bool {
        !self.is_empty()
    }
}

impl IsSet for bool {
    fn is_set(&self) -> bool {
        *self
    }
}

macro_rules! impl_is_set_num {
    ($($t:ty),*) => {$(
        impl IsSet for $t {
            fn is_set(&self) -> bool {
                *self != 0
            }
        }
    )*};
}
impl_is_set_num!(i32, u32, i64, u64);

/// Returns `Err(Unsupported)` naming the first listed field that is set.
/// Every call site destructures its proto without `..`, so a field added to
/// the proto breaks the build instead of being ignored.
macro_rules! reject_set {
    ($ctx:expr; $($field:ident),+ $(,)?) => {
        $(
            if $crate::config::check::IsSet::is_set(&$field) {
                return Err($ctx.unsupported(stringify!($field)));
            }
        )+
    };
}
pub(crate) use reject_set;

/// Decodes a typed config after checking its type URL.
pub(crate) fn decode_any<T>(ctx: &Ctx, field: &str, any: &wkt::Any) -> Result<T, ConfigError>
where
    T: prost::Message + prost::Name + Default,
{
    let want = T::type_url();
    if any.type_url != want {
        return Err(ctx.invalid(field, format!("expected type {want}, got {}", any.type_url)));
    }
    T::decode(any.value.as_slice()).map_err(|source| ConfigError::Decode {
        resource: ctx.resource(),
        field: ctx.path_of(field),
        type_url: want,
        source,
    })
}

/// Converts a protobuf `Duration`, rejecting negative values.
pub(crate) fn duration(ctx: &Ctx, field: &str, d: &wkt::Duration) -> Result<Duration, ConfigError> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(ctx.invalid(field, "negative duration"));
    }
    // Both parts are non-negative here, so the casts cannot wrap.
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An optional protobuf `Duration`.
pub(crate) fn opt_duration(
    ctx: &Ctx,
    field: &str,
    d: Option<&wkt::Duration>,
) -> Result<Option<Duration>, ConfigError> {
    d.map(|d| duration(ctx, field, d)).transpose()
}

/// Compiles an Envoy `safe_regex` (RE2 syntax, whole-string match).
pub(crate) fn full_regex(ctx: &Ctx, field: &str, re: &str) -> Result<regex::Regex, ConfigError> {
    regex::Regex::new(&format!("^(?:{re})$")).map_err(|source| ConfigError::Regex {
        resource: ctx.resource(),
        field: ctx.path_of(field),
        source,
    })
}

/// Compiles a regex used for substitution (not anchored: Envoy replaces
/// every match).
pub(crate) fn sub_regex(ctx: &Ctx, field: &str, re: &str) -> Result<regex::Regex, ConfigError> {
    regex::Regex::new(re).map_err(|source| ConfigError::Regex {
        resource: ctx.resource(),
        field: ctx.path_of(field),
        source,
    })
}
