//! What the operator's face asks of the decider besides decisions: an
//! explanation through the same checks (`not_ready`, the staleness
//! policy) and readiness by the same rule.

use std::sync::Arc;
use std::time::Duration;

use accessd_engine::{Decision, Explanation, Reason, Request, SharedSnapshot, explain};
use jiff::Timestamp;

use super::{SnapshotDecider, age_ms};

/// Whether the decider can answer from data, and why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// The version of the snapshot served (0: nothing loaded yet).
    pub version: u64,
    /// Milliseconds since the data was last confirmed current.
    pub age_ms: u32,
    /// The staleness policy, if any: older data is refused.
    pub max_age_ms: Option<u32>,
    /// `None` when ready; else the reason every decision would carry now
    /// ([`Reason::NotReady`] or [`Reason::StaleData`]).
    pub refusal: Option<Reason>,
}

impl Readiness {
    /// Whether decisions are made from data now.
    pub fn is_ready(&self) -> bool {
        self.refusal.is_none()
    }
}

impl SnapshotDecider {
    /// The snapshot decisions load.
    pub fn snapshot(&self) -> &Arc<SharedSnapshot> {
        &self.snapshot
    }

    /// The staleness policy: data older than this is refused.
    pub fn max_staleness(&self) -> Option<Duration> {
        self.max_age_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// What a decision made now would be refused for before the rules, by
    /// the same rule as [`Decider::decide`](crate::Decider::decide).
    pub fn readiness(&self) -> Readiness {
        let snapshot = self.snapshot.load();
        let age = age_ms(&self.snapshot, &snapshot, (self.clock)());
        Readiness {
            version: snapshot.version(),
            age_ms: age,
            max_age_ms: self.max_age_ms,
            refusal: refusal(snapshot.version(), age, self.max_age_ms),
        }
    }

    /// Explains the decision on `request` at `at` (now if `None`) on the
    /// current snapshot: the server's own checks first (nothing loaded,
    /// data older than the staleness policy, judged on the wall clock
    /// whatever `at` is, since they are about the data), then the engine's
    /// [`explain`]. Records no passage. Also returns the data's age.
    pub fn explain(&self, request: &Request<'_>, at: Option<Timestamp>) -> (Explanation, u32) {
        let snapshot = self.snapshot.load();
        let now = (self.clock)();
        let age = age_ms(&self.snapshot, &snapshot, now);
        let at = at.unwrap_or(now);
        let version = snapshot.version();
        let explanation = match refusal(version, age, self.max_age_ms) {
            Some(Reason::NotReady) => Explanation::refused(
                Decision::deny(Reason::NotReady, 0),
                at,
                "no data loaded yet (snapshot version 0)".into(),
            ),
            Some(reason) => Explanation::refused(
                Decision::deny(reason, version),
                at,
                format!(
                    "the data was last confirmed current {} ms ago, more than the staleness policy's {} ms",
                    age,
                    self.max_age_ms.unwrap_or_default()
                ),
            ),
            None => explain(&snapshot, &self.presence, request, at),
        };
        (explanation, age)
    }
}

/// The deny every decision gets before the rules, if any: the rule
/// [`SnapshotDecider`]'s `decide` applies (a test below holds them equal).
fn refusal(version: u64, age_ms: u32, max_age_ms: Option<u32>) -> Option<Reason> {
    if version == 0 {
        // Version 0 is the empty snapshot of a server that has loaded
        // nothing yet: say so rather than "unknown reader".
        Some(Reason::NotReady)
    } else if max_age_ms.is_some_and(|max| age_ms > max) {
        // The operator chose to refuse rather than grant on data the
        // source has not confirmed for too long.
        Some(Reason::StaleData)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use accessd_engine::{Change, CredentialKey, SiteFile, Snapshot, SnapshotBuilder, Verdict};

    use super::*;
    use crate::Decider;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn example(as_of: Timestamp) -> Arc<SharedSnapshot> {
        let site = SiteFile::parse(include_str!("../../../docs/examples/site.toml")).unwrap();
        let mut builder = SnapshotBuilder::new();
        assert!(
            builder
                .apply_all(site.records.into_iter().map(Change::Upsert))
                .is_empty()
        );
        Arc::new(SharedSnapshot::new(builder.publish(as_of)))
    }

    #[test]
    fn readiness_and_explain_refuse_exactly_when_decide_does() {
        let card: CredentialKey = "h10301:12:1001".parse().unwrap();
        let request = Request {
            reader: "lobby-in",
            credential: card,
            pin: None,
        };
        let loaded = at("2026-11-30T14:00:00Z");
        let empty = Arc::new(SharedSnapshot::new(Snapshot::empty(Timestamp::UNIX_EPOCH)));
        let cases = [
            (empty, Some(300), Reason::NotReady),
            (example(loaded), Some(300), Reason::StaleData),
            (example(loaded), Some(600), Reason::Granted),
            (example(loaded), Some(599), Reason::StaleData),
            (example(loaded), None, Reason::Granted),
        ];
        for (shared, max_s, expected) in cases {
            let now = at("2026-11-30T14:10:00Z");
            let decider = SnapshotDecider::with_policy(
                shared,
                Arc::default(),
                max_s.map(Duration::from_secs),
            )
            .with_clock(move || now);
            let (explained, age) = decider.explain(&request, None);
            let ready = decider.readiness();
            let asked = crate::server::Asked {
                request,
                request_id: 1,
                reader_time_ms: None,
                client: "test",
            };
            let answer = decider.decide(
                &decider.begin(),
                &asked,
                &mut crate::server::Journal::default(),
            );
            assert_eq!(answer.decision.reason, expected, "{max_s:?}");
            assert_eq!(explained.decision, answer.decision, "{max_s:?}");
            assert_eq!(age, answer.snapshot_age_ms);
            assert_eq!(ready.age_ms, answer.snapshot_age_ms);
            assert_eq!(
                ready.is_ready(),
                answer.decision.verdict == Verdict::Grant,
                "{max_s:?}"
            );
            assert_eq!(
                ready.refusal.is_some(),
                explained.steps[0].rule == accessd_engine::Rule::Data
            );
        }
    }
}
