//! A small reader of the Prometheus text format, enough for the demo's
//! summary: samples with their labels, and histogram quantiles computed from
//! cumulative buckets the way Prometheus' `histogram_quantile` does.

use std::collections::BTreeMap;

/// One sample line: `name{k="v",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `istio_requests_total`.
    pub name: String,
    /// Labels by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, or "" when absent.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Parses Prometheus text exposition. Comments, blank lines and lines that
/// do not parse are skipped (a summary must not fail on one odd line).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, after)
        }
        None => {
            let end = line.find(char::is_whitespace)?;
            (&line[..end], BTreeMap::new(), &line[end..])
        }
    };
    // A timestamp may follow the value.
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: name.trim().to_string(),
        labels,
        value,
    })
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows `}`.
fn parse_labels(s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        let body = rest[eq + 1..].trim_start();
        let mut chars = body.char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        labels.insert(key, value);
        rest = &body[end? + 1..];
    }
}

/// The `q`-quantile (0..=1) of a histogram given as cumulative buckets
/// `(upper bound, count)`, like Prometheus' `histogram_quantile`: linear
/// interpolation inside the bucket holding the rank, the lower bound of the
/// first bucket taken as 0; a rank in the `+Inf` bucket gives the highest
/// finite bound. `None` without observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut b: Vec<(f64, f64)> = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    if total <= 0.0 || q.is_nan() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let i = b.iter().position(|(_, count)| *count >= rank)?;
    let (upper, count) = b[i];
    if upper.is_infinite() {
        // Nothing to interpolate to: the highest finite bound.
        return Some(b[..i].last().map_or(0.0, |(u, _)| *u));
    }
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { b[i - 1] };
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP istio_requests Requests handled
# TYPE istio_requests counter
istio_requests_total{reporter="destination",destination_service="reviews.default.svc.cluster.local",response_code="200"} 42
istio_requests_total{reporter="source",destination_service="ratings.default.svc.cluster.local",response_code="503"} 3 1700000000000
istio_request_duration_milliseconds_bucket{reporter="destination",le="+Inf"} 42
odd line without value
up 1
"#;

    #[test]
    fn samples_keep_their_labels_and_values_and_skip_comments() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(s[0].name, "istio_requests_total");
        assert_eq!(s[0].label("reporter"), "destination");
        assert_eq!(
            s[0].label("destination_service"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(s[0].value, 42.0);
        // A timestamp after the value is ignored.
        assert_eq!(s[1].value, 3.0);
        assert_eq!(s[2].label("le"), "+Inf");
        assert_eq!(s[3].name, "up");
        assert_eq!(s[3].label("missing"), "");
    }

    #[test]
    fn escaped_quotes_and_commas_stay_inside_label_values() {
        let s = parse(r#"m{a="x\"y,z",b="\\n"} 1.5e3"#);
        assert_eq!(s[0].label("a"), "x\"y,z");
        assert_eq!(s[0].label("b"), "\\n");
        assert_eq!(s[0].value, 1500.0);
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket_like_prometheus() {
        // 10 in (0,1], 80 in (1,5], 10 in (5,10].
        let b = [
            (1.0, 10.0),
            (5.0, 90.0),
            (10.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        // Rank 50 is 40 into the 80 of (1,5]: 1 + 4 * 40/80 = 3.
        assert_eq!(histogram_quantile(0.5, &b), Some(3.0));
        // Rank 5 is half of the first bucket, from 0.
        assert_eq!(histogram_quantile(0.05, &b), Some(0.5));
        // Rank 99 is 9 into (5,10]: 5 + 5 * 9/10 = 9.5.
        assert_eq!(histogram_quantile(0.99, &b), Some(9.5));
    }

    #[test]
    fn quantile_in_the_inf_bucket_is_the_highest_finite_bound() {
        let b = [(0.5, 1.0), (1.0, 2.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.99, &b), Some(1.0));
    }

    #[test]
    fn quantile_of_an_empty_histogram_is_none_and_order_does_not_matter() {
        assert_eq!(histogram_quantile(0.5, &[]), None);
        assert_eq!(
            histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        let shuffled = [(f64::INFINITY, 4.0), (10.0, 4.0), (5.0, 2.0)];
        assert_eq!(histogram_quantile(0.5, &shuffled), Some(5.0));
    }
}
