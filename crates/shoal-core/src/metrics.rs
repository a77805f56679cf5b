//! Prometheus metrics in the text exposition format (version 0.0.4): [`Exposition`] writes
//! families of samples, [`Histogram`] keeps a latency distribution. The tracker and the agent
//! both serve `/metrics` with them, so both follow the same conventions: names
//! `shoal_<component>_…`, counters ending in `_total`, durations in `_seconds`, sizes in
//! `_bytes`.

use std::fmt::{Display, Write};
use std::time::Duration;

/// The `Content-Type` of a `/metrics` answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of [`Histogram`]'s buckets, in seconds: from 100 µs (an answer on the same
/// host) to 2.5 s (a request that is about to time out).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// What a family of samples measures, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until the process restarts); the name ends in `_total`.
    Counter,
    /// Goes up and down: a level now.
    Gauge,
    /// A distribution: `_bucket`, `_sum` and `_count` samples, written by
    /// [`Exposition::histogram`].
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A `/metrics` answer being written: each family is a [`family`](Self::family) header
/// followed by its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the family `name`: its `# HELP` and `# TYPE` lines. Every sample of a family
    /// must follow its header, before the next family starts.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of `name` with `labels` (names are the caller's constants; values are
    /// escaped).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// A family header and one sample without labels: the common case of a counter or gauge.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The samples of one histogram of the family `name` (whose header was written with
    /// [`Kind::Histogram`]): cumulative buckets, `+Inf`, sum and count.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(histogram.buckets) {
            cumulative += n;
            self.out.push_str(name);
            self.out.push_str("_bucket");
            write_labels(&mut self.out, labels, Some(&bound.to_string()));
            let _ = writeln!(self.out, " {cumulative}");
        }
        self.out.push_str(name);
        self.out.push_str("_bucket");
        write_labels(&mut self.out, labels, Some("+Inf"));
        let _ = writeln!(self.out, " {}", histogram.count);
        self.out.push_str(name);
        self.out.push_str("_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", histogram.sum_secs);
        self.out.push_str(name);
        self.out.push_str("_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", histogram.count);
    }

    /// The answer's text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let le = le.map(|bound| ("le", bound));
    for (i, (name, value)) in labels.iter().copied().chain(le).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A latency distribution over [`LATENCY_BUCKETS`]; the caller keeps it behind its own lock.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_secs: f64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_secs += secs;
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaped_labels() {
        let mut out = Exposition::new();
        out.single("shoal_x_total", Kind::Counter, "Things.\nMore.", 3);
        out.family("shoal_y_bytes", Kind::Gauge, "Bytes.");
        out.sample("shoal_y_bytes", &[("path", "a\"b\\c\nd")], 7);
        assert_eq!(
            out.finish(),
            "# HELP shoal_x_total Things.\\nMore.\n# TYPE shoal_x_total counter\n\
             shoal_x_total 3\n# HELP shoal_y_bytes Bytes.\n# TYPE shoal_y_bytes gauge\n\
             shoal_y_bytes{path=\"a\\\"b\\\\c\\nd\"} 7\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        assert_eq!(h.count(), 3);
        let mut out = Exposition::new();
        out.family("shoal_t_seconds", Kind::Histogram, "Latency.");
        out.histogram("shoal_t_seconds", &[("route", "/a")], &h);
        let text = out.finish();
        assert!(text.contains("shoal_t_seconds_bucket{route=\"/a\",le=\"0.0001\"} 1\n"));
        assert!(text.contains("shoal_t_seconds_bucket{route=\"/a\",le=\"0.0025\"} 1\n"));
        assert!(text.contains("shoal_t_seconds_bucket{route=\"/a\",le=\"0.005\"} 2\n"));
        assert!(text.contains("shoal_t_seconds_bucket{route=\"/a\",le=\"2.5\"} 2\n"));
        assert!(text.contains("shoal_t_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("shoal_t_seconds_count{route=\"/a\"} 3\n"));
        assert!(text.contains("shoal_t_seconds_sum{route=\"/a\"} 10.00305"));
    }
}
