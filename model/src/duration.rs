//! Durations written the way Istio users write them: `1s`, `0.5s`, `100ms`,
//! `1m`, `1h30m`.
//!
//! Resource types keep durations as the user's string so that YAML
//! round-trips exactly; [`parse`] turns one into a [`std::time::Duration`].
//! Accepted units: `h`, `m`, `s`, `ms`, `us` (or `µs`), `ns`; components may
//! be chained (`1m30s`) and may have a decimal fraction (`1.5s`). A bare `0`
//! is zero. Negative durations are rejected.

use std::time::Duration;

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration")]
    Empty,
    /// The string has a sign; durations are never negative.
    #[error("duration {0:?} must not be negative")]
    Negative(String),
    /// The string does not follow `<number><unit>...`.
    #[error(
        "invalid duration {0:?}: expected a number and a unit (h, m, s, ms, us, ns), e.g. \"1.5s\""
    )]
    Syntax(String),
    /// The value does not fit in a `Duration`.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses a duration such as `1s`, `0.5s`, `100ms` or `1h30m`.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(s.to_string()));
    }
    let body = s.strip_prefix('+').unwrap_or(s);
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    let syntax = || DurationError::Syntax(s.to_string());
    let mut rest = body;
    let mut total_nanos: u128 = 0;
    if rest.is_empty() {
        return Err(syntax());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(syntax)?;
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return Err(syntax()),
        };
        total_nanos = total_nanos
            .checked_add(component_nanos(num, unit_nanos).ok_or_else(syntax)?)
            .ok_or_else(|| DurationError::Overflow(s.to_string()))?;
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(s.to_string()))?;
    // The remainder of a division by 1e9 always fits in a u32.
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// `num` (digits with an optional fraction) times `unit_nanos`, truncated to
/// whole nanoseconds; `None` if `num` is malformed.
fn component_nanos(num: &str, unit_nanos: u128) -> Option<u128> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int_val: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut nanos = int_val.checked_mul(unit_nanos)?;
    // Digits beyond nanosecond precision cannot change the result.
    let mut scale = unit_nanos;
    for d in frac.bytes().take(20) {
        scale /= 10;
        nanos = nanos.checked_add(u128::from(d - b'0') * scale)?;
    }
    Some(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_style_durations_parse() {
        for (s, want) in [
            ("1s", Duration::from_secs(1)),
            ("0.5s", Duration::from_millis(500)),
            ("100ms", Duration::from_millis(100)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5m", Duration::from_secs(90)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("250us", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
            (".5s", Duration::from_millis(500)),
        ] {
            assert_eq!(parse(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn malformed_durations_are_rejected_with_the_reason() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("-1s"), Err(DurationError::Negative("-1s".into())));
        for s in ["1", "s", "1x", "1.2.3s", "abc", "1s2", "."] {
            assert_eq!(parse(s), Err(DurationError::Syntax(s.into())), "{s}");
        }
        assert_eq!(
            parse("99999999999999999999h"),
            Err(DurationError::Overflow("99999999999999999999h".into()))
        );
    }
}
