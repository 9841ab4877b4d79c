//! String, header and query-parameter matchers (Envoy's `StringMatcher`,
//! `HeaderMatcher`, `QueryParameterMatcher`).

use mesh_proto::envoy::pb::envoy::config::route::v3 as xr;
use mesh_proto::envoy::pb::envoy::r#type::matcher::v3 as xm;
use regex::Regex;

use super::check::{full_regex, reject_set};
use super::{ConfigError, Ctx};

/// A string matcher.
#[derive(Debug, Clone)]
pub enum StringMatch {
    /// Equal to the value.
    Exact(String),
    /// Starts with the value.
    Prefix(String),
    /// Ends with the value.
    Suffix(String),
    /// Contains the value.
    Contains(String),
    /// Matches the whole string.
    Regex(Regex),
}

/// A [`StringMatch`] with its case sensitivity.
#[derive(Debug, Clone)]
pub struct CasedMatch {
    /// The pattern.
    pub pattern: StringMatch,
    /// Compare ASCII case-insensitively (not for regexes).
    pub ignore_case: bool,
}

impl CasedMatch {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let eq = |a: &str, b: &str| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match &self.pattern {
            StringMatch::Exact(s) => eq(value, s),
            StringMatch::Prefix(s) => {
                value.len() >= s.len()
                    && value.is_char_boundary(s.len())
                    && eq(&value[..s.len()], s)
            }
            StringMatch::Suffix(s) => {
                value.len() >= s.len()
                    && value.is_char_boundary(value.len() - s.len())
                    && eq(&value[value.len() - s.len()..], s)
            }
            StringMatch::Contains(s) => {
                if self.ignore_case {
                    value.to_ascii_lowercase().contains(&s.to_ascii_lowercase())
                } else {
                    value.contains(s.as_str())
                }
            }
            StringMatch::Regex(re) => re.is_match(value),
        }
    }
}

/// How a header is matched.
#[derive(Debug, Clone)]
pub enum HeaderMatchKind {
    /// Present (true) or absent (false).
    Present(bool),
    /// The value matches.
    Value(CasedMatch),
}

/// A header matcher; pseudo-headers `:method`, `:authority`, `:path` and
/// `:scheme` are matched like Envoy does.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Lower-case header name.
    pub name: String,
    /// The test applied.
    pub kind: HeaderMatchKind,
    /// Negate the result.
    pub invert: bool,
}

impl HeaderMatch {
    /// Whether a header value (None when absent) satisfies the matcher.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let hit = match (&self.kind, value) {
            (HeaderMatchKind::Present(want), v) => v.is_some() == *want,
            (HeaderMatchKind::Value(m), Some(v)) => m.matches(v),
            (HeaderMatchKind::Value(_), None) => false,
        };
        hit != self.invert
    }
}

/// A query parameter matcher.
#[derive(Debug, Clone)]
pub struct QueryMatch {
    /// Parameter name.
    pub name: String,
    /// Value test; `None` means "present".
    pub value: Option<CasedMatch>,
}

impl QueryMatch {
    /// Whether the parameter value (None when absent) satisfies the matcher.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (&self.value, value) {
            (None, v) => v.is_some(),
            (Some(m), Some(v)) => m.matches(v),
            (Some(_), None) => false,
        }
    }
}

pub(crate) fn regex_matcher(ctx: &Ctx, m: xm::RegexMatcher) -> Result<Regex, ConfigError> {
    let xm::RegexMatcher { regex, engine_type } = m;
    // engine_type only selects Google RE2, which is the only engine anyway.
    let _ = engine_type;
    full_regex(ctx, "regex", &regex)
}

pub(crate) fn string_matcher(ctx: &Ctx, m: xm::StringMatcher) -> Result<CasedMatch, ConfigError> {
    use xm::string_matcher::MatchPattern;
    let xm::StringMatcher {
        ignore_case,
        match_pattern,
    } = m;
    let pattern = match match_pattern {
        Some(MatchPattern::Exact(s)) => StringMatch::Exact(s),
        Some(MatchPattern::Prefix(s)) => StringMatch::Prefix(s),
        Some(MatchPattern::Suffix(s)) => StringMatch::Suffix(s),
        Some(MatchPattern::Contains(s)) => StringMatch::Contains(s),
        Some(MatchPattern::SafeRegex(re)) => {
            StringMatch::Regex(regex_matcher(&ctx.at("safe_regex"), re)?)
        }
        Some(MatchPattern::Custom(_)) => return Err(ctx.unsupported("custom")),
        None => return Err(ctx.missing("match_pattern")),
    };
    Ok(CasedMatch {
        pattern,
        ignore_case,
    })
}

pub(crate) fn header_matcher(ctx: &Ctx, m: xr::HeaderMatcher) -> Result<HeaderMatch, ConfigError> {
    use xr::header_matcher::HeaderMatchSpecifier as S;
    let xr::HeaderMatcher {
        name,
        invert_match,
        treat_missing_header_as_empty,
        header_match_specifier,
    } = m;
    reject_set!(ctx; treat_missing_header_as_empty);
    let exact = |p| CasedMatch {
        pattern: p,
        ignore_case: false,
    };
    let kind = match header_match_specifier {
        Some(S::ExactMatch(s)) => HeaderMatchKind::Value(exact(StringMatch::Exact(s))),
        Some(S::PrefixMatch(s)) => HeaderMatchKind::Value(exact(StringMatch::Prefix(s))),
        Some(S::SuffixMatch(s)) => HeaderMatchKind::Value(exact(StringMatch::Suffix(s))),
        Some(S::ContainsMatch(s)) => HeaderMatchKind::Value(exact(StringMatch::Contains(s))),
        Some(S::SafeRegexMatch(re)) => HeaderMatchKind::Value(exact(StringMatch::Regex(
            regex_matcher(&ctx.at("safe_regex_match"), re)?,
        ))),
        Some(S::StringMatch(sm)) => {
            HeaderMatchKind::Value(string_matcher(&ctx.at("string_match"), sm)?)
        }
        Some(S::PresentMatch(p)) => HeaderMatchKind::Present(p),
        Some(S::RangeMatch(_)) => return Err(ctx.unsupported("range_match")),
        // No specifier: Envoy treats this as "present".
        None => HeaderMatchKind::Present(true),
    };
    Ok(HeaderMatch {
        name: name.to_ascii_lowercase(),
        kind,
        invert: invert_match,
    })
}

pub(crate) fn query_matcher(
    ctx: &Ctx,
    m: xr::QueryParameterMatcher,
) -> Result<QueryMatch, ConfigError> {
    use xr::query_parameter_matcher::QueryParameterMatchSpecifier as S;
    let xr::QueryParameterMatcher {
        name,
        query_parameter_match_specifier,
    } = m;
    let value = match query_parameter_match_specifier {
        Some(S::StringMatch(sm)) => Some(string_matcher(&ctx.at("string_match"), sm)?),
        Some(S::PresentMatch(true)) | None => None,
        Some(S::PresentMatch(false)) => {
            return Err(ctx.invalid("present_match", "must be true when set"));
        }
    };
    Ok(QueryMatch { name, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cased(p: StringMatch, ignore_case: bool) -> CasedMatch {
        CasedMatch {
            pattern: p,
            ignore_case,
        }
    }

    #[test]
    fn string_matchers_follow_envoy_semantics() {
        assert!(cased(StringMatch::Prefix("/api".into()), false).matches("/api/v1"));
        assert!(!cased(StringMatch::Prefix("/API".into()), false).matches("/api/v1"));
        assert!(cased(StringMatch::Prefix("/API".into()), true).matches("/api/v1"));
        assert!(cased(StringMatch::Suffix(".json".into()), false).matches("a.json"));
        assert!(cased(StringMatch::Contains("MID".into()), true).matches("amidb"));
        let ctx = Ctx::new("Test", "t");
        let re = full_regex(&ctx, "r", "/v[0-9]+").unwrap();
        // safe_regex matches the whole value, not a substring.
        assert!(cased(StringMatch::Regex(re.clone()), false).matches("/v12"));
        assert!(!cased(StringMatch::Regex(re), false).matches("/v12/x"));
    }

    #[test]
    fn header_matcher_without_specifier_means_present_and_invert_negates() {
        let ctx = Ctx::new("Test", "t");
        let m = header_matcher(
            &ctx,
            xr::HeaderMatcher {
                name: "X-User".into(),
                invert_match: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.name, "x-user");
        assert!(!m.matches(Some("bob")));
        assert!(m.matches(None));
    }

    #[test]
    fn header_range_match_is_rejected_by_name() {
        let ctx = Ctx::new("Test", "t");
        let err = header_matcher(
            &ctx.at("headers[0]"),
            xr::HeaderMatcher {
                name: "x".into(),
                header_match_specifier: Some(xr::header_matcher::HeaderMatchSpecifier::RangeMatch(
                    Default::default(),
                )),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Test t: unsupported field headers[0].range_match"
        );
    }
}
