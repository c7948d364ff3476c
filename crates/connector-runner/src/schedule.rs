//! Bucketed scheduling. Time is cut into buckets of `schedule_ms`, shifted by a
//! stable per-connector phase so connectors spread over the interval instead of
//! all firing at once (as Prometheus does by hashing the target).

/// The connector's phase offset in `[0, schedule_ms)`: FNV-1a of its id, so it is the
/// same on every process and every Rust version.
pub fn phase_ms(connector_id: &str, schedule_ms: u64) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in connector_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::try_from(hash % schedule_ms.max(1)).unwrap_or(0)
}

/// The start of the bucket that contains `now_ms`.
pub fn bucket_start(now_ms: i64, schedule_ms: u64, phase_ms: i64) -> i64 {
    let s = i64::try_from(schedule_ms.max(1)).unwrap_or(i64::MAX);
    (now_ms - phase_ms).div_euclid(s) * s + phase_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_is_stable_and_in_range() {
        assert_eq!(phase_ms("a", 1000), phase_ms("a", 1000));
        for id in ["a", "b", "3f2c-uuid", ""] {
            assert!((0..1000).contains(&phase_ms(id, 1000)));
        }
        // Different ids spread out.
        let phases: std::collections::HashSet<_> = (0..100)
            .map(|i| phase_ms(&format!("c{i}"), 15_000))
            .collect();
        assert!(phases.len() > 90);
    }

    #[test]
    fn buckets() {
        assert_eq!(bucket_start(10_250, 1000, 200), 10_200);
        assert_eq!(bucket_start(10_199, 1000, 200), 9_200);
        assert_eq!(bucket_start(10_200, 1000, 200), 10_200);
        assert_eq!(bucket_start(-1, 1000, 0), -1000);
    }
}
