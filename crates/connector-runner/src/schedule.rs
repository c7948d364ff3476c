//! Bucketed scheduling on the clock grid. Time is cut into buckets of `schedule_ms`
//! counted from the Unix epoch, so every connector with the same schedule has the
//! same buckets and rows of different connectors line up on `timestamp`. Each
//! connector fires at a stable phase inside its bucket, so connectors spread over
//! the interval instead of all firing at once (as Prometheus does by hashing the
//! target); the phase moves the firing time, never the bucket.

/// FNV-1a over the pieces in turn: the same on every process and every Rust version.
fn fnv1a<'a>(pieces: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in pieces.into_iter().flat_map(str::bytes) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// MurmurHash3's 64-bit finalizer: FNV-1a's last bytes reach only its low bits, so
/// runner ids that differ in their last character (`r-a`, `r-b`) would otherwise
/// split connectors 50/25/25 rather than evenly.
fn avalanche(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The connector's phase offset in `[0, schedule_ms)`: FNV-1a of its id, so it is the
/// same on every process.
pub fn phase_ms(connector_id: &str, schedule_ms: u64) -> i64 {
    i64::try_from(fnv1a([connector_id]) % schedule_ms.max(1)).unwrap_or(0)
}

/// Which of the live runners ticks the connector: rendezvous hashing, so every runner
/// that sees the same live set picks the same owner, and a runner joining or leaving
/// moves only its own share of connectors. `None` when no runner is live.
///
/// Ownership only spares the others a claim that would lose: the lease and the
/// ledger still decide who commits, so two runners that disagree for a moment (one
/// has not seen a newcomer yet) cost a claim, never a second commit.
pub fn owner<'a>(connector_id: &str, live_runners: &'a [String]) -> Option<&'a str> {
    live_runners
        .iter()
        .max_by_key(|runner| {
            let hash = fnv1a([connector_id, "\0", runner.as_str()]);
            (avalanche(hash), runner.as_str())
        })
        .map(String::as_str)
}

fn schedule_i64(schedule_ms: u64) -> i64 {
    i64::try_from(schedule_ms.max(1)).unwrap_or(i64::MAX)
}

/// The start of the grid bucket that contains `now_ms`: a multiple of `schedule_ms`.
pub fn bucket_start(now_ms: i64, schedule_ms: u64) -> i64 {
    let s = schedule_i64(schedule_ms);
    now_ms.div_euclid(s) * s
}

/// The newest bucket whose firing time (`bucket + phase_ms`) is at or before `now_ms`.
pub fn due_bucket(now_ms: i64, schedule_ms: u64, phase_ms: i64) -> i64 {
    bucket_start(now_ms - phase_ms, schedule_ms)
}

/// When the bucket after the one due at `now_ms` fires.
pub fn next_firing(now_ms: i64, schedule_ms: u64, phase_ms: i64) -> i64 {
    due_bucket(now_ms, schedule_ms, phase_ms) + schedule_i64(schedule_ms) + phase_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_spread_evenly_and_a_leaver_moves_only_its_share() {
        let three: Vec<String> = ["r-a", "r-b", "r-c"].map(String::from).to_vec();
        let ids: Vec<String> = (0..3000).map(|i| format!("connector-{i}")).collect();
        let mut counts = std::collections::HashMap::new();
        for id in &ids {
            *counts.entry(owner(id, &three).unwrap()).or_insert(0) += 1;
        }
        for runner in &three {
            let n = counts[runner.as_str()];
            assert!((850..1150).contains(&n), "{runner} owns {n} of 3000");
        }
        let two = &three[..2];
        for id in &ids {
            let before = owner(id, &three).unwrap();
            if before != "r-c" {
                assert_eq!(owner(id, two), Some(before), "{id} moved without reason");
            }
        }
        assert_eq!(owner("x", &[]), None);
    }

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
    fn buckets_sit_on_the_grid_whatever_the_phase() {
        assert_eq!(bucket_start(10_250, 1000), 10_000);
        assert_eq!(bucket_start(10_000, 1000), 10_000);
        assert_eq!(bucket_start(-1, 1000), -1000);
        // Phase 200: bucket 10_000 fires at 10_200, so at 10_199 the due one is 9_000.
        assert_eq!(due_bucket(10_250, 1000, 200), 10_000);
        assert_eq!(due_bucket(10_199, 1000, 200), 9_000);
        assert_eq!(due_bucket(10_200, 1000, 200), 10_000);
        assert_eq!(next_firing(10_199, 1000, 200), 10_200);
        assert_eq!(next_firing(10_200, 1000, 200), 11_200);
        for now in [0, 1, 14_999, 15_000, 1_764_000_123_456] {
            for id in ["a", "node-7", "c5"] {
                let due = due_bucket(now, 15_000, phase_ms(id, 15_000));
                assert_eq!(due % 15_000, 0, "{id} at {now}");
                assert!(due <= now);
            }
        }
    }
}
