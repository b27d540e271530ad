//! The current snapshot, swapped without pausing a decision, and the
//! instant its data was last confirmed.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::{ArcSwap, Guard};
use jiff::Timestamp;

use super::Snapshot;

/// A loaded snapshot (see [`SharedSnapshot::load`]): cheap to take, meant
/// to be held briefly (a request, a chunk of requests), not across waits.
pub type SnapshotGuard = Guard<Arc<Snapshot>>;

/// The current snapshot, shared between the writer that publishes new
/// versions and the decisions that read it.
///
/// Reading never blocks and never waits for the writer (`arc-swap`).
///
/// Besides the snapshot it keeps the latest instant the source confirmed
/// the current snapshot is up to date, so an idle source (a stream with no
/// changes) does not make fresh data look old: a snapshot's age is
/// `now - fresh_as_of(snapshot)`.
#[derive(Debug)]
pub struct SharedSnapshot {
    current: ArcSwap<Snapshot>,
    confirmed_ms: AtomicI64,
}

impl SharedSnapshot {
    /// Starts with `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        let confirmed_ms = AtomicI64::new(snapshot.as_of().as_millisecond());
        Self {
            current: ArcSwap::from_pointee(snapshot),
            confirmed_ms,
        }
    }

    /// The current snapshot. Hold the guard for one decision or one chunk
    /// of them, not across waits: a long-held guard keeps an old version
    /// alive.
    #[inline]
    pub fn load(&self) -> SnapshotGuard {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the current snapshot.
    pub fn store(&self, snapshot: Arc<Snapshot>) {
        self.confirmed_ms
            .fetch_max(snapshot.as_of().as_millisecond(), Ordering::Relaxed);
        self.current.store(snapshot);
    }

    /// Records that the source confirmed, at `at`, that nothing changed
    /// since the current snapshot (an empty stream read). Never moves the
    /// instant backwards.
    pub fn confirm(&self, at: Timestamp) {
        self.confirmed_ms
            .fetch_max(at.as_millisecond(), Ordering::Relaxed);
    }

    /// The instant `snapshot` (a version loaded from here) is known to be
    /// current: its own `as_of`, or a later confirmation.
    pub fn fresh_as_of(&self, snapshot: &Snapshot) -> Timestamp {
        let confirmed = self.confirmed_ms.load(Ordering::Relaxed);
        let ms = confirmed.max(snapshot.as_of().as_millisecond());
        Timestamp::from_millisecond(ms).unwrap_or(snapshot.as_of())
    }
}
