//! Renders the metrics registry for scrapers: prometheus-client writes OpenMetrics text,
//! and this module turns it into the Prometheus text format 0.0.4 that `promtool check
//! metrics` and every Prometheus version read.
//!
//! This module must not know any metric by name; it only rewrites the format.

/// The content type of [`Metrics::encode`](super::Metrics::encode)'s output: the Prometheus text format 0.0.4,
/// which both Prometheus and `promtool check metrics` read.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Turns prometheus-client's OpenMetrics text into the Prometheus text format 0.0.4.
///
/// The two differ in ways that `promtool check metrics` and older scrapers reject: the
/// `# EOF` trailer and `# UNIT` lines do not exist in 0.0.4, and a counter's `# HELP` /
/// `# TYPE` lines name the family without `_total` while its samples carry it. Families
/// with no series yet are left out, as Prometheus's own clients do, rather than sent as
/// headers without samples (which promtool flags).
pub(crate) fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // Families declared `counter`, so their HELP line (which precedes TYPE) can be
    // renamed too: collect them in a first pass.
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    // Header lines of the current family, written out only once a sample follows.
    let mut headers = String::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let header = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match header {
            Some((kind, rest)) => {
                if kind == "# HELP " {
                    // A new family starts; the previous one had no samples.
                    headers.clear();
                }
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                headers.push_str(kind);
                headers.push_str(name);
                if counters.contains(name) && !name.ends_with("_total") {
                    headers.push_str("_total");
                }
                headers.push(' ');
                headers.push_str(tail);
                headers.push('\n');
            }
            None => {
                out.push_str(&headers);
                headers.clear();
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_counters_eof_and_empty_families_are_rewritten() {
        let openmetrics = "# HELP am_requests Requests.\n\
                           # TYPE am_requests counter\n\
                           am_requests_total{a=\"b\"} 1\n\
                           # HELP am_idle Never set.\n\
                           # TYPE am_idle counter\n\
                           # HELP am_wait_seconds Wait.\n\
                           # TYPE am_wait_seconds gauge\n\
                           # UNIT am_wait_seconds seconds\n\
                           am_wait_seconds 1.5\n\
                           # EOF\n";
        assert_eq!(
            openmetrics_to_prometheus_text(openmetrics),
            "# HELP am_requests_total Requests.\n\
             # TYPE am_requests_total counter\n\
             am_requests_total{a=\"b\"} 1\n\
             # HELP am_wait_seconds Wait.\n\
             # TYPE am_wait_seconds gauge\n\
             am_wait_seconds 1.5\n"
        );
    }
}
