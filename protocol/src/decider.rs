//! The server's [`Decider`] over the engine's shared snapshot: one load of
//! the current snapshot per request, anti-passback presence, the staleness
//! policy, and `decide` on a clock (the wall clock unless one is given).
//!
//! It only reads snapshots; how they are built and swapped stays with the
//! loader (DynamoDB) or the site-file reader.

use std::sync::Arc;
use std::time::Duration;

use accessd_engine::{Decision, Presence, Reason, Request, SharedSnapshot, Snapshot, decide};
use jiff::Timestamp;

use crate::server::{Answer, Decider};

mod explain;

pub use explain::Readiness;

/// Where the decider reads the time.
type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Decides on whatever snapshot is current when a request arrives.
pub struct SnapshotDecider {
    snapshot: Arc<SharedSnapshot>,
    presence: Arc<Presence>,
    /// The staleness policy: past this age every decision is a
    /// `stale_data` deny. `None`: serve data of any age (the age still
    /// travels with every answer).
    max_age_ms: Option<u32>,
    clock: Clock,
}

impl std::fmt::Debug for SnapshotDecider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotDecider")
            .field("version", &self.snapshot.load().version())
            .field("max_age_ms", &self.max_age_ms)
            .finish_non_exhaustive()
    }
}

/// Milliseconds from the instant `snapshot` (a version loaded from
/// `shared`) was last known current to `now`, saturating; a snapshot from
/// the future (a clock step) counts as age 0.
pub fn age_ms(shared: &SharedSnapshot, snapshot: &Snapshot, now: Timestamp) -> u32 {
    let ms = now.as_millisecond() - shared.fresh_as_of(snapshot).as_millisecond();
    u32::try_from(ms.max(0)).unwrap_or(u32::MAX)
}

impl SnapshotDecider {
    /// A decider with its own presence and no staleness policy.
    pub fn new(snapshot: Arc<SharedSnapshot>) -> Self {
        Self::with_policy(snapshot, Arc::default(), None)
    }

    /// A decider sharing `presence` (so checkpoints can store it), denying
    /// with `stale_data` once the data is older than `max_staleness`.
    pub fn with_policy(
        snapshot: Arc<SharedSnapshot>,
        presence: Arc<Presence>,
        max_staleness: Option<Duration>,
    ) -> Self {
        Self {
            snapshot,
            presence,
            max_age_ms: max_staleness.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            clock: Arc::new(Timestamp::now),
        }
    }

    /// Reads the time from `clock` instead of the wall clock (tests pin
    /// it; schedules and validity need a fixed instant).
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The anti-passback presence decisions update.
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }
}

impl Decider for SnapshotDecider {
    fn decide(&self, request: &Request<'_>) -> Answer {
        // One load per request: the decision sees one consistent version
        // and never waits for the loader.
        let snapshot = self.snapshot.load();
        let now = (self.clock)();
        let age = age_ms(&self.snapshot, &snapshot, now);
        // Version 0 is the empty snapshot of a server that has loaded
        // nothing yet: say so rather than "unknown reader".
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
            snapshot_age_ms: age_ms(&self.snapshot, &snapshot, (self.clock)()),
        }
    }
}

#[cfg(test)]
mod tests {
    use accessd_engine::{CredentialKey, SiteFile, SnapshotBuilder, Verdict};

    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn example(as_of: Timestamp) -> Arc<SharedSnapshot> {
        let site = SiteFile::parse(include_str!("../../docs/examples/site.toml")).unwrap();
        let mut builder = SnapshotBuilder::new();
        assert!(
            builder
                .apply_all(site.records.into_iter().map(accessd_engine::Change::Upsert))
                .is_empty()
        );
        Arc::new(SharedSnapshot::new(builder.publish(as_of)))
    }

    fn lobby() -> Request<'static> {
        let card: CredentialKey = "h10301:12:1001".parse().unwrap();
        Request {
            reader: "lobby-in",
            credential: card,
            pin: None,
        }
    }

    #[test]
    fn nothing_loaded_is_not_ready() {
        let empty = Arc::new(SharedSnapshot::new(Snapshot::empty(Timestamp::UNIX_EPOCH)));
        let answer = SnapshotDecider::new(empty).decide(&lobby());
        assert_eq!(answer.decision.reason, Reason::NotReady);
    }

    #[test]
    fn the_staleness_policy_denies_past_its_age_and_the_age_is_the_last_confirmation() {
        let loaded = at("2026-11-30T14:00:00Z");
        let shared = example(loaded);
        let now = at("2026-11-30T14:10:00Z");
        let decider = SnapshotDecider::with_policy(
            Arc::clone(&shared),
            Arc::default(),
            Some(Duration::from_secs(300)),
        )
        .with_clock(move || now);
        let answer = decider.decide(&lobby());
        assert_eq!(answer.snapshot_age_ms, 600_000);
        assert_eq!(answer.decision.reason, Reason::StaleData);
        assert_eq!(answer.decision.verdict, Verdict::Deny);
        assert_eq!(answer.decision.snapshot_version, 1);
        // Confirmed current a minute ago: fresh enough, decided as usual.
        shared.confirm(at("2026-11-30T14:09:00Z"));
        let answer = decider.decide(&lobby());
        assert_eq!(answer.snapshot_age_ms, 60_000);
        assert_eq!(answer.decision.reason, Reason::Granted);
        // Without a policy the same old data is decided, its age shown.
        let open = SnapshotDecider::new(example(loaded)).with_clock(move || now);
        let answer = open.decide(&lobby());
        assert_eq!(
            (answer.decision.reason, answer.snapshot_age_ms),
            (Reason::Granted, 600_000)
        );
    }
}
