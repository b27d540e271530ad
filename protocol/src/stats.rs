//! Decisions answered and how long the server took over them, kept in
//! process for the operator's console (`/v1/status`): counters and a
//! histogram of service time, cumulative since start. A reader takes two
//! [`Stats::read`]s and subtracts them to get a rate and the quantiles of
//! that interval.
//!
//! Service time is measured per chunk of frames read from a stream: from
//! the chunk's arrival to its answers handed to QUIC (decisions and their
//! access events included; the network and the client's side not). Every
//! request of a chunk shares its chunk's time.
//!
//! The histogram has four buckets per power of two of microseconds (at
//! most 19 % wide), like HdrHistogram at two significant bits, so
//! recording is one atomic addition and a few shifts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Buckets of the service-time histogram: up to 2^28 µs (268 s); slower
/// lands in the last.
pub const BUCKETS: usize = 108;

/// The process's decision statistics.
pub static STATS: Stats = Stats::new();

/// Decision counters and the service-time histogram.
pub struct Stats {
    grants: AtomicU64,
    denies: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// The statistics at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatsReading {
    /// Grants answered since start (QUIC and HTTP).
    pub grants: u64,
    /// Denies answered since start (QUIC and HTTP).
    pub denies: u64,
    /// Chunks timed, by service-time bucket (see [`bucket_bounds_us`]).
    pub service_time_buckets: Vec<u64>,
}

impl Stats {
    const fn new() -> Self {
        Self {
            grants: AtomicU64::new(0),
            denies: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }

    /// Counts decisions answered.
    pub fn count(&self, grants: u64, denies: u64) {
        if grants > 0 {
            self.grants.fetch_add(grants, Ordering::Relaxed);
        }
        if denies > 0 {
            self.denies.fetch_add(denies, Ordering::Relaxed);
        }
    }

    /// Records the service time of one chunk.
    pub fn service_time(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if let Some(b) = self.buckets.get(bucket(us)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters and histogram now.
    pub fn read(&self) -> StatsReading {
        StatsReading {
            grants: self.grants.load(Ordering::Relaxed),
            denies: self.denies.load(Ordering::Relaxed),
            service_time_buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// The bucket of a time in microseconds.
fn bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros() as usize; // >= 2
    let sub = ((us >> (octave - 2)) & 3) as usize;
    ((octave - 1) * 4 + sub).min(BUCKETS - 1)
}

/// Each bucket's upper bound in microseconds (exclusive): bucket `i`
/// holds times from bound `i - 1` (0 for the first) up to bound `i`.
pub fn bucket_bounds_us() -> Vec<u64> {
    (0..BUCKETS)
        .map(|i| {
            if i < 4 {
                return i as u64 + 1;
            }
            let octave = i / 4 + 1;
            let sub = (i % 4) as u64;
            (5 + sub) << (octave - 2)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_lands_in_the_bucket_whose_bounds_hold_it() {
        let bounds = bucket_bounds_us();
        for us in (0..5000).chain([65_535, 65_536, 1 << 27, (1 << 28) - 1]) {
            let b = bucket(us);
            let lower = if b == 0 { 0 } else { bounds[b - 1] };
            assert!(
                lower <= us && us < bounds[b],
                "{us} µs in bucket {b} [{lower}, {})",
                bounds[b]
            );
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        // Two significant bits: a bucket is at most a quarter of its lower bound wide.
        for w in bounds.windows(2).skip(4) {
            assert!((w[1] - w[0]) * 4 <= w[0], "{w:?}");
        }
    }

    #[test]
    fn readings_count_what_was_recorded() {
        let stats = Stats::new();
        stats.count(3, 1);
        stats.service_time(Duration::from_micros(10));
        stats.service_time(Duration::from_micros(11));
        let r = stats.read();
        assert_eq!((r.grants, r.denies), (3, 1));
        assert_eq!(r.service_time_buckets[bucket(10)], 2);
        assert_eq!(r.service_time_buckets.iter().sum::<u64>(), 2);
    }
}
