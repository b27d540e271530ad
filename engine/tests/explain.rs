//! `explain` agrees with `decide`: the same verdict, reason, unlock time
//! and version for every request of the example site at every hour of a
//! week with holidays, with and without PINs, along anti-passback
//! sequences (explain reads presence, decide records it), and on a
//! synthetic site with validity windows and timed assignments. Plus what
//! the trace says, level by level.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod common;

use accessd_engine::synth::{self, SynthParams};
use accessd_engine::{
    AssignmentState, Change, CredentialKey, Outcome, Presence, Reason, Request, Rule, SiteFile,
    Snapshot, SnapshotBuilder, decide, explain,
};
use jiff::{SignedDuration, Timestamp};

const EXAMPLE: &str = include_str!("../../docs/examples/site.toml");

fn snapshot_of(text: &str) -> Snapshot {
    let site = SiteFile::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let mut builder = SnapshotBuilder::new();
    let refused = builder.apply_all(site.records.into_iter().map(Change::Upsert));
    assert!(refused.is_empty(), "{refused:?}");
    builder.publish(ts("2026-11-30T00:00:00Z"))
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Explains, then decides on the same presence, and checks they agree.
/// Returns the reason.
fn agree(snapshot: &Snapshot, presence: &Presence, request: &Request<'_>, at: Timestamp) -> Reason {
    let explained = explain(snapshot, presence, request, at);
    let decided = decide(snapshot, presence, request, at);
    assert_eq!(
        explained.decision, decided,
        "{request:?} at {at}: trace {:#?}",
        explained.steps
    );
    // The trace ends with the rule that decided a deny.
    let last = explained.steps.last().unwrap();
    if decided.reason.verdict() == accessd_engine::Verdict::Deny {
        assert_eq!(last.outcome, Outcome::Deny, "{:?}", explained.steps);
        assert_eq!(last.reason, Some(decided.reason));
    } else {
        assert!(explained.steps.iter().all(|s| s.outcome != Outcome::Deny));
    }
    decided.reason
}

#[test]
fn explain_agrees_with_decide_on_every_request_of_the_example_site_for_a_week() {
    for text in [
        EXAMPLE.to_owned(),
        // The whole site in lockdown: only the override passes.
        EXAMPLE.replacen(
            "time_zone = \"America/New_York\"",
            "time_zone = \"America/New_York\"\nlockdown = true",
            1,
        ),
    ] {
        let snapshot = snapshot_of(&text);
        let (readers, cards) = common::every_reader_and_card(&snapshot);
        // Thanksgiving week into December: a holiday, weekdays, a weekend,
        // validity bounds of the example's holders and assignments.
        let start = ts("2026-11-25T00:00:00Z");
        let mut seen = std::collections::BTreeSet::new();
        let presence = Presence::new();
        for hour in 0..(9 * 24) {
            let at = start + SignedDuration::from_hours(hour);
            for reader in &readers {
                for &card in &cards {
                    for pin in [None, Some("2468"), Some("0000")] {
                        let request = Request {
                            reader,
                            credential: card,
                            pin: pin.map(str::as_bytes),
                        };
                        seen.insert(agree(&snapshot, &presence, &request, at));
                    }
                }
            }
        }
        // The example exercises most reasons; the walk must have met them.
        for reason in [
            Reason::Granted,
            Reason::GrantedPassbackWarning,
            Reason::UnknownReader,
            Reason::UnknownCredential,
            Reason::DoorLocked,
            Reason::DoorLockdown,
            Reason::AntiPassback,
        ] {
            assert!(seen.contains(&reason), "{reason} never met: {seen:?}");
        }
        if !text.contains("lockdown = true") {
            for reason in [
                Reason::CredentialLost,
                Reason::CredentialStolen,
                Reason::CredentialRevoked,
                Reason::HolderInactive,
                Reason::NoAccess,
                Reason::OutsideSchedule,
                Reason::PinRequired,
                Reason::PinWrong,
            ] {
                assert!(seen.contains(&reason), "{reason} never met: {seen:?}");
            }
        }
    }
}

#[test]
fn explain_agrees_with_decide_on_a_synthetic_site() {
    let now = ts("2026-11-30T14:00:00Z");
    let params = SynthParams {
        holders: 400,
        doors: 40,
        levels: 12,
        seed: 10,
        now,
        pin_every: 7,
    };
    let mut builder = SnapshotBuilder::new();
    let refused = builder.apply_all(synth::site(&params).into_iter().map(Change::Upsert));
    assert!(refused.is_empty(), "{refused:?}");
    let snapshot = builder.publish(now);
    let presence = Presence::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut rng = fastrand::Rng::with_seed(3);
    let readers: Vec<String> = snapshot.reader_ids().map(str::to_owned).collect();
    for i in 0..20_000u64 {
        let card = synth::card(rng.u64(0..420));
        let reader = &readers[rng.usize(..readers.len())];
        let pin = synth::pin_of(rng.u64(0..420), &params);
        let at = now + SignedDuration::from_mins(rng.i64(-3 * 24 * 60..3 * 24 * 60));
        let request = Request {
            reader,
            credential: card,
            pin: pin.as_deref().map(str::as_bytes).filter(|_| i % 3 != 0),
        };
        seen.insert(agree(&snapshot, &presence, &request, at));
    }
    assert!(seen.len() >= 6, "too few reasons met: {seen:?}");
}

#[test]
fn the_trace_says_what_each_rule_and_level_found() {
    let snapshot = snapshot_of(EXAMPLE);
    let presence = Presence::new();
    let card: CredentialKey = "h10301:12:1001".parse().unwrap();
    let request = Request {
        reader: "lobby-in",
        credential: card,
        pin: None,
    };
    // Monday 9:00 in New York: granted through a level with an active
    // schedule.
    let e = explain(
        &snapshot,
        &presence,
        &request,
        ts("2026-11-30T09:00:00-05:00"),
    );
    assert_eq!(e.decision.reason, Reason::Granted);
    assert_eq!(e.door.as_deref(), Some("lobby"));
    assert_eq!(e.site.as_deref(), Some("hq"));
    assert_eq!(e.holder.as_deref(), Some("alice"));
    assert_eq!(
        e.local_time.as_deref(),
        Some("2026-11-30T09:00:00-05:00 Monday (America/New_York)")
    );
    let rules: Vec<Rule> = e.steps.iter().map(|s| s.rule).collect();
    assert_eq!(
        rules,
        [
            Rule::Reader,
            Rule::Credential,
            Rule::Holder,
            Rule::Door,
            Rule::Access,
            Rule::Pin,
            Rule::AntiPassback
        ]
    );
    let granting: Vec<&str> = e
        .levels
        .iter()
        .filter(|l| l.grants)
        .map(|l| l.level.as_str())
        .collect();
    assert!(!granting.is_empty(), "{:#?}", e.levels);
    for level in &e.levels {
        assert!(level.resolved);
        assert_eq!(level.assignment, AssignmentState::Valid);
        if level.grants {
            assert!(level.covers_door);
            assert_eq!(level.schedule_active, Some(true));
        }
    }
    // Monday 23:00: the lobby's levels cover the door, no schedule active.
    let e = explain(
        &snapshot,
        &presence,
        &request,
        ts("2026-11-30T23:00:00-05:00"),
    );
    assert_eq!(e.decision.reason, Reason::OutsideSchedule);
    let access = e.steps.last().unwrap();
    assert_eq!((access.rule, access.outcome), (Rule::Access, Outcome::Deny));
    assert!(
        access.detail.contains("2026-11-30T23:00:00-05:00 Monday"),
        "{}",
        access.detail
    );
    assert!(
        e.levels
            .iter()
            .any(|l| l.covers_door && l.schedule_active == Some(false)),
        "{:#?}",
        e.levels
    );
    // A revoked card stops at the credential rule.
    let revoked = Request {
        credential: "h10301:12:992".parse().unwrap(),
        ..request
    };
    let e = explain(
        &snapshot,
        &presence,
        &revoked,
        ts("2026-11-30T09:00:00-05:00"),
    );
    assert_eq!(e.decision.reason, Reason::CredentialRevoked);
    assert_eq!(e.steps.len(), 2);
    assert_eq!(e.steps[1].detail, "credential `h10301:12:992` is revoked");
    assert!(e.levels.is_empty());
}

#[test]
fn explain_never_records_a_passage() {
    let snapshot = snapshot_of(EXAMPLE);
    let presence = Presence::new();
    let request = Request {
        reader: "garage-in",
        credential: "h10301:12:1005".parse().unwrap(),
        pin: None,
    };
    let at = ts("2026-11-30T10:00:00-05:00");
    for _ in 0..3 {
        assert_eq!(
            explain(&snapshot, &presence, &request, at).decision.reason,
            Reason::Granted
        );
    }
    assert_eq!(presence.generation(), 0);
    assert!(presence.is_empty());
    assert_eq!(
        decide(&snapshot, &presence, &request, at).reason,
        Reason::Granted
    );
    let e = explain(&snapshot, &presence, &request, at);
    assert_eq!(e.decision.reason, Reason::AntiPassback);
    assert_eq!(e.steps.last().unwrap().rule, Rule::AntiPassback);
}
