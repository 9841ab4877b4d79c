//! The demo's one-line progress (requests so far, rate, errors), refreshed
//! in place while it runs.

use std::time::Instant;

/// Turns successive request totals into a progress line with a rate.
#[derive(Debug, Default)]
pub struct Progress {
    last: Option<(Instant, f64)>,
    rps: f64,
}

impl Progress {
    /// Records `requests` and `errors` (cumulative) seen at `now` and
    /// returns the line to show (without the carriage return).
    pub fn update(&mut self, now: Instant, requests: f64, errors: f64) -> String {
        if let Some((then, before)) = self.last {
            let secs = now.duration_since(then).as_secs_f64();
            if secs > 0.0 && requests >= before {
                self.rps = (requests - before) / secs;
            }
        }
        self.last = Some((now, requests));
        line(requests, self.rps, errors)
    }
}

/// `requests 1234 | 19.8 rps | errors 0 | Ctrl-C to stop`.
pub fn line(requests: f64, rps: f64, errors: f64) -> String {
    format!("requests {requests:.0} | {rps:.1} rps | errors {errors:.0} | Ctrl-C to stop")
}

/// What to print so the line replaces the previous one on a terminal.
pub fn in_place(line: &str) -> String {
    format!("\r\x1b[K{line}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_comes_from_the_difference_between_two_updates() {
        let mut p = Progress::default();
        let t0 = Instant::now();
        assert_eq!(
            p.update(t0, 100.0, 0.0),
            "requests 100 | 0.0 rps | errors 0 | Ctrl-C to stop"
        );
        let l = p.update(t0 + Duration::from_secs(2), 140.0, 1.0);
        assert_eq!(l, "requests 140 | 20.0 rps | errors 1 | Ctrl-C to stop");
        // A counter that went backwards (a restarted sidecar) keeps the last rate.
        let l = p.update(t0 + Duration::from_secs(3), 10.0, 1.0);
        assert!(l.contains("20.0 rps"), "{l}");
    }

    #[test]
    fn in_place_returns_to_the_line_start_and_clears_it() {
        assert_eq!(in_place("x"), "\r\x1b[Kx");
    }
}
