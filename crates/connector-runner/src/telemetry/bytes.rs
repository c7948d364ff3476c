//! Byte-size histograms: `total_contribution_bytes` (what each source tick
//! committed) and `destination_connector_egress_bytes` (what each delivery sent), the
//! names the platform's monitoring guide queries.

use std::fmt::Write as _;

use super::line;

/// Upper bounds in bytes: 1 KiB to 1 GiB, each four times the one before, so a
/// scrape page of a few KiB and a bulk export of hundreds of MiB both land in a
/// bucket of their own with eleven buckets in all.
pub const BYTE_BUCKETS: [u64; 11] = [
    1 << 10,
    1 << 12,
    1 << 14,
    1 << 16,
    1 << 18,
    1 << 20,
    1 << 22,
    1 << 24,
    1 << 26,
    1 << 28,
    1 << 30,
];

/// One series' histogram of byte sizes.
#[derive(Debug, Default, Clone)]
pub(super) struct ByteHistogram {
    buckets: [u64; BYTE_BUCKETS.len()],
    sum: u64,
    count: u64,
}

impl ByteHistogram {
    pub(super) fn observe(&mut self, bytes: u64) {
        for (bound, count) in BYTE_BUCKETS.iter().zip(&mut self.buckets) {
            if bytes <= *bound {
                *count += 1;
            }
        }
        self.sum = self.sum.saturating_add(bytes);
        self.count += 1;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `_bucket`, `_sum` and `_count` lines of one series.
    pub(super) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let bucket = format!("{name}_bucket");
        let mut le = String::new();
        for (bound, count) in BYTE_BUCKETS.iter().zip(self.buckets) {
            le.clear();
            let _ = write!(le, "{bound}");
            line(out, &bucket, labels, Some(("le", &le)), count);
        }
        line(out, &bucket, labels, Some(("le", "+Inf")), self.count);
        line(out, &format!("{name}_sum"), labels, None, self.sum);
        line(out, &format!("{name}_count"), labels, None, self.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_edges_inclusive() {
        let mut h = ByteHistogram::default();
        for bytes in [0, 1024, 1025, 5_000_000, 2 << 30] {
            h.observe(bytes);
        }
        let mut out = String::new();
        h.render(&mut out, "b", "x=\"1\"");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "b_bucket{x=\"1\",le=\"1024\"} 2");
        assert_eq!(lines[1], "b_bucket{x=\"1\",le=\"4096\"} 3");
        assert_eq!(lines[6], "b_bucket{x=\"1\",le=\"4194304\"} 3");
        assert_eq!(lines[7], "b_bucket{x=\"1\",le=\"16777216\"} 4");
        assert_eq!(lines[10], "b_bucket{x=\"1\",le=\"1073741824\"} 4");
        assert_eq!(lines[11], "b_bucket{x=\"1\",le=\"+Inf\"} 5");
        assert_eq!(
            lines[12],
            format!(
                "b_sum{{x=\"1\"}} {}",
                1024 + 1025 + 5_000_000 + (2u64 << 30)
            )
        );
        assert_eq!(lines[13], "b_count{x=\"1\"} 5");
    }
}
