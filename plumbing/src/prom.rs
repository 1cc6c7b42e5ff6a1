//! A small Prometheus kit for the control plane's `/metrics`: counters and histograms keyed by
//! label values, and the text exposition format (version 0.0.4). Lock-free on the hot path is
//! not needed here (the control plane records per RPC, per pass, per Podman call), so each
//! family is a mutex around a map; label sets are bounded by the caller (method names, phases,
//! a fixed list of Podman operations).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets in seconds: 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Escapes a label value (`\`, `"` and newlines), as the text format requires.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `{a="x",b="y"}` for `names` and `values` (empty when there are no labels).
fn label_set(names: &[&str], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some((n, v)) = extra {
        parts.push(format!("{n}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A family of counters, one per label-value tuple.
#[derive(Debug)]
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        CounterVec {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one to the counter of `values` (one per label name).
    pub fn inc(&self, values: &[&str]) {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        *self
            .values
            .lock()
            .expect("counter poisoned")
            .entry(key)
            .or_default() += 1;
    }

    /// The counter of `values` (0 if never incremented).
    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.values
            .lock()
            .expect("counter poisoned")
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        for (values, n) in self.values.lock().expect("counter poisoned").iter() {
            let _ = writeln!(
                out,
                "{}{} {n}",
                self.name,
                label_set(self.labels, values, None)
            );
        }
    }
}

#[derive(Debug, Clone)]
struct Series {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A family of histograms over [`LATENCY_BUCKETS`] (seconds), one per label-value tuple.
#[derive(Debug)]
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, Series>>,
}

impl HistogramVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        HistogramVec {
            name,
            help,
            labels,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one observation of `d` for `values`.
    pub fn observe(&self, values: &[&str], d: Duration) {
        let secs = d.as_secs_f64();
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut series = self.series.lock().expect("histogram poisoned");
        let s = series.entry(key).or_insert_with(|| Series {
            buckets: vec![0; LATENCY_BUCKETS.len()],
            sum: 0.0,
            count: 0,
        });
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                s.buckets[i] += 1;
            }
        }
        s.sum += secs;
        s.count += 1;
    }

    /// Observations recorded for `values`.
    pub fn count(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.series
            .lock()
            .expect("histogram poisoned")
            .get(&key)
            .map_or(0, |s| s.count)
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        for (values, s) in self.series.lock().expect("histogram poisoned").iter() {
            for (bound, n) in LATENCY_BUCKETS.iter().zip(&s.buckets) {
                let le = bound.to_string();
                let _ = writeln!(
                    out,
                    "{}_bucket{} {n}",
                    self.name,
                    label_set(self.labels, values, Some(("le", &le)))
                );
            }
            let _ = writeln!(
                out,
                "{}_bucket{} {}",
                self.name,
                label_set(self.labels, values, Some(("le", "+Inf"))),
                s.count
            );
            let labels = label_set(self.labels, values, None);
            let _ = writeln!(out, "{}_sum{labels} {}", self.name, s.sum);
            let _ = writeln!(out, "{}_count{labels} {}", self.name, s.count);
        }
    }
}

/// Renders a gauge family whose values are computed at scrape time.
pub fn render_gauge(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &[(String, f64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (v, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_as_text_format() {
        static C: CounterVec = CounterVec::new("t_total", "Things.", &["method", "code"]);
        static H: HistogramVec = HistogramVec::new("t_seconds", "Latency.", &["op"]);
        C.inc(&["Apply", "OK"]);
        C.inc(&["Apply", "OK"]);
        C.inc(&["Say \"hi\"\n", "Internal"]);
        H.observe(&["get"], Duration::from_millis(3));
        H.observe(&["get"], Duration::from_secs(100));
        let mut out = String::new();
        C.render(&mut out);
        H.render(&mut out);
        assert!(
            out.contains("t_total{method=\"Apply\",code=\"OK\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("method=\"Say \\\"hi\\\"\\n\""), "{out}");
        assert!(
            out.contains("t_seconds_bucket{op=\"get\",le=\"0.0025\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{op=\"get\",le=\"0.005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{op=\"get\",le=\"+Inf\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("t_seconds_count{op=\"get\"} 2\n"), "{out}");
        assert_eq!(C.get(&["Apply", "OK"]), 2);
        assert_eq!(H.count(&["get"]), 2);
    }
}
