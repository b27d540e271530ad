//! The server's [`Decider`]: the engine's shared snapshot, the presence
//! state and `decide`, on the wall clock. Kept in the binary so that the
//! protocol crate never learns how snapshots are built or swapped.

use std::sync::Arc;
use std::time::Duration;

use accessd_engine::{Decision, Presence, Reason, Request, SharedSnapshot, Snapshot, decide};
use accessd_protocol::{Answer, Decider};
use jiff::Timestamp;

/// Decides on whatever snapshot is current when a request arrives.
#[derive(Debug)]
pub(crate) struct SnapshotDecider {
    snapshot: Arc<SharedSnapshot>,
    presence: Arc<Presence>,
    /// The staleness policy: past this age every decision is a
    /// `stale_data` deny. `None`: serve data of any age (the age still
    /// travels with every answer).
    max_age_ms: Option<u32>,
}

impl SnapshotDecider {
    pub(crate) fn new(snapshot: Arc<SharedSnapshot>) -> Self {
        Self::with_policy(snapshot, Arc::default(), None)
    }

    /// A decider sharing `presence` (so checkpoints can store it) under a
    /// staleness policy.
    pub(crate) fn with_policy(
        snapshot: Arc<SharedSnapshot>,
        presence: Arc<Presence>,
        max_staleness: Option<Duration>,
    ) -> Self {
        Self {
            snapshot,
            presence,
            max_age_ms: max_staleness.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
        }
    }
}

/// Milliseconds from the instant `snapshot` was last known current to
/// `now`, saturating; a snapshot from the future (clock step) counts as
/// age 0.
pub(crate) fn age_ms(shared: &SharedSnapshot, snapshot: &Snapshot, now: Timestamp) -> u32 {
    let ms = now.as_millisecond() - shared.fresh_as_of(snapshot).as_millisecond();
    u32::try_from(ms.max(0)).unwrap_or(u32::MAX)
}

impl Decider for SnapshotDecider {
    fn decide(&self, request: &Request<'_>) -> Answer {
        // One load per request: the decision sees one consistent version
        // and never waits for the loader.
        let snapshot = self.snapshot.load();
        let now = Timestamp::now();
        // Version 0 is the empty snapshot of a server that has loaded
        // nothing yet: say so rather than "unknown reader".
        let age = age_ms(&self.snapshot, &snapshot, now);
        let decision = if snapshot.version() == 0 {
            Decision::deny(Reason::NotReady, 0)
        } else if self.max_age_ms.is_some_and(|max| age > max) {
            // The operator chose to refuse rather than grant on data the
            // source has not confirmed for too long.
            Decision::deny(Reason::StaleData, snapshot.version())
        } else {
            decide(&snapshot, &self.presence, request, now)
        };
        Answer {
            decision,
            snapshot_age_ms: age,
        }
    }

    fn refuse(&self, reason: Reason) -> Answer {
        let snapshot = self.snapshot.load();
        Answer {
            decision: Decision::deny(reason, snapshot.version()),
            snapshot_age_ms: age_ms(&self.snapshot, &snapshot, Timestamp::now()),
        }
    }
}
