//! Decisions on the example site (docs/examples/site.toml): every reason
//! code, validity boundaries, holidays, daylight-saving transitions, lockdown
//! and anti-passback, including concurrent use.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod common;

use std::sync::{Arc, Barrier};

use accessd_engine::{
    CardholderRecord, Change, CredentialKey, CredentialRecord, Decision, DoorMode, DoorRecord,
    Presence, Reason, Record, RecordKey, Request, SiteFile, SiteRecord, Snapshot, SnapshotBuilder,
    Verdict, decide, decide_with_subject,
};
use jiff::Timestamp;

const EXAMPLE: &str = include_str!("../../docs/examples/site.toml");

fn builder_for(text: &str) -> SnapshotBuilder {
    let site = SiteFile::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let mut builder = SnapshotBuilder::new();
    let refused = builder.apply_all(site.records.into_iter().map(Change::Upsert));
    assert!(refused.is_empty(), "{refused:?}");
    builder
}

fn example() -> Snapshot {
    builder_for(EXAMPLE).publish(ts("2026-11-30T00:00:00Z"))
}

fn ts(s: &str) -> Timestamp {
    s.parse()
        .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
}

fn ask(
    snap: &Snapshot,
    presence: &Presence,
    reader: &str,
    card: &str,
    pin: Option<&str>,
    at: &str,
) -> Decision {
    let request = Request {
        reader,
        credential: card.parse::<CredentialKey>().unwrap(),
        pin: pin.map(str::as_bytes),
    };
    decide(snap, presence, &request, ts(at))
}

// Monday 2026-11-30, 09:00 in New York.
const MON_9: &str = "2026-11-30T09:00:00-05:00";

/// `decide_with_subject` (what the server calls when it records events)
/// decides exactly as `decide` (which skips the subject's reads), and its
/// subject is the one `Snapshot::subject` looks up, for every reader and
/// card of the example site every three hours of a week, anti-passback
/// included (each has its own presence, fed the same requests).
#[test]
fn deciding_with_the_subject_decides_the_same_and_names_the_right_subject() {
    let snapshot = example();
    let (readers, cards) = common::every_reader_and_card(&snapshot);
    let (plain, with_subject) = (Presence::new(), Presence::new());
    let mut holders_named = 0;
    for hour in (0..7 * 24).step_by(3) {
        let at = ts("2026-11-25T00:00:00Z") + jiff::SignedDuration::from_hours(hour);
        for reader in &readers {
            for card in &cards {
                let request = Request {
                    reader,
                    credential: *card,
                    pin: None,
                };
                let decided = decide(&snapshot, &plain, &request, at);
                let (again, subject) = decide_with_subject(&snapshot, &with_subject, &request, at);
                assert_eq!(decided, again, "{request:?} at {at}");
                if decided.reason != Reason::UnknownReader {
                    assert_eq!(subject, snapshot.subject(reader, card), "{request:?}");
                    holders_named += usize::from(subject.holder.is_some());
                }
            }
        }
    }
    assert!(holders_named > 0, "the example's cards have holders");
}

#[test]
fn every_reason_on_the_example_site() {
    use Reason::*;
    let snap = example();
    #[rustfmt::skip]
    let cases: &[(&str, &str, Option<&str>, &str, Reason)] = &[
        ("lobby-in", "h10301:12:1001", None, MON_9, Granted),
        ("lobby-in", "uid:04a1b2c3d4e5f6", None, MON_9, Granted),
        ("no-such-reader", "h10301:12:1001", None, MON_9, UnknownReader),
        ("lobby-in", "h10301:12:5555", None, MON_9, UnknownCredential),
        ("lobby-in", "uid:0badcafe", None, MON_9, UnknownCredential),
        ("lobby-in", "h10301:12:993", None, MON_9, CredentialSuspended),
        ("lobby-in", "h10301:12:990", None, MON_9, CredentialLost),
        ("lobby-in", "h10301:12:991", None, MON_9, CredentialStolen),
        ("lobby-in", "h10301:12:992", None, MON_9, CredentialRevoked),
        ("lobby-in", "h10301:12:2001", None, MON_9, CredentialNotYetValid),
        ("lobby-in", "h10301:12:2001", None, "2026-12-02T09:00:00-05:00", CredentialExpired),
        ("lobby-in", "h10301:12:1002", None, MON_9, HolderInactive),
        ("lobby-in", "h10301:12:1004", None, MON_9, HolderNotYetValid),
        ("lobby-in", "h10301:12:1003", None, MON_9, HolderExpired),
        ("loading-dock-in", "h10301:12:1001", None, MON_9, DoorLocked),
        ("loading-dock-in", "h10301:12:1005", None, MON_9, DoorLocked),
        ("vault-in", "h10301:12:1001", None, MON_9, DoorLockdown),
        ("vault-in", "h10301:12:1005", None, MON_9, Granted),
        ("server-room-in", "h10301:12:1006", None, MON_9, NoAccess),
        ("lab-in", "h10301:12:1006", None, MON_9, AccessNotValidNow),
        // Saturday morning: business hours do not cover it.
        ("lobby-in", "h10301:12:1001", None, "2026-11-28T10:00:00-05:00", OutsideSchedule),
        // Thanksgiving (a holiday in us-2026), a Thursday.
        ("lobby-in", "h10301:12:1001", None, "2026-11-26T10:00:00-05:00", OutsideSchedule),
        ("server-room-in", "h10301:12:1001", None, MON_9, PinRequired),
        ("server-room-in", "h10301:12:1001", Some("1111"), MON_9, PinWrong),
        ("server-room-in", "h10301:12:1001", Some("24a8"), MON_9, PinWrong),
        ("server-room-in", "h10301:12:1001", Some("2468"), MON_9, Granted),
        // Erin has access but no PIN enrolled.
        ("server-room-in", "h10301:12:1005", Some("2468"), MON_9, PinWrong),
        // Night shift runs past midnight: Monday 23:30 and Tuesday 05:59.
        ("lobby-in", "h10301:12:1006", None, "2026-11-30T23:30:00-05:00", Granted),
        ("lobby-in", "h10301:12:1006", None, "2026-12-01T05:59:00-05:00", Granted),
        ("lobby-in", "h10301:12:1006", None, "2026-12-01T06:00:00-05:00", OutsideSchedule),
        // Christmas 2026 is a Friday and a holiday: only the holiday window
        // 23:00-00:00 counts, not Friday's 22:00 start.
        ("lobby-in", "h10301:12:1006", None, "2026-12-25T22:30:00-05:00", OutsideSchedule),
        ("lobby-in", "h10301:12:1006", None, "2026-12-25T23:30:00-05:00", Granted),
    ];
    for (i, &(reader, card, pin, at, expected)) in cases.iter().enumerate() {
        let d = ask(&snap, &Presence::new(), reader, card, pin, at);
        assert_eq!(d.reason, expected, "case {i}: {reader} {card} {pin:?} {at}");
        assert_eq!(d.verdict, expected.verdict(), "case {i}");
        assert_eq!(d.snapshot_version, 1);
        if d.verdict == Verdict::Grant {
            assert!(d.unlock_ms > 0, "case {i}: a grant unlocks");
        } else {
            assert_eq!(d.unlock_ms, 0, "case {i}: a deny never unlocks");
        }
    }
}

#[test]
fn validity_from_is_inclusive_and_until_is_exclusive() {
    let snap = example();
    let p = Presence::new();
    let card = "h10301:12:2001"; // valid 2026-12-01 14:00Z to 22:00Z, holder frank
    let at = |t: &str| ask(&snap, &p, "lobby-in", card, None, t).reason;
    assert_eq!(
        at("2026-12-01T13:59:59.999Z"),
        Reason::CredentialNotYetValid
    );
    // From here on the credential is valid; frank's only level at the lobby
    // is the night shift, so the next rule answers.
    assert_eq!(at("2026-12-01T14:00:00Z"), Reason::OutsideSchedule);
    assert_eq!(at("2026-12-01T21:59:59.999Z"), Reason::OutsideSchedule);
    assert_eq!(at("2026-12-01T22:00:00Z"), Reason::CredentialExpired);
}

#[test]
fn holder_validity_boundaries() {
    // Dave is valid from 2027-01-04T14:00:00Z (Monday 09:00 EST).
    let snap = example();
    let p = Presence::new();
    let dave = |t: &str| ask(&snap, &p, "lobby-in", "h10301:12:1004", None, t).reason;
    assert_eq!(dave("2027-01-04T13:59:59.999Z"), Reason::HolderNotYetValid);
    assert_eq!(dave("2027-01-04T14:00:00Z"), Reason::Granted);
    // Carol's validity ends 2026-06-30T00:00Z, a Tuesday at 20:00 EDT
    // (outside business hours, so the rule after validity answers).
    let carol = |t: &str| ask(&snap, &p, "lobby-in", "h10301:12:1003", None, t).reason;
    assert_eq!(carol("2026-06-29T23:59:59.999Z"), Reason::OutsideSchedule);
    assert_eq!(carol("2026-06-30T00:00:00Z"), Reason::HolderExpired);
    assert_eq!(carol("2026-06-29T15:00:00Z"), Reason::Granted);
}

#[test]
fn assignment_validity_boundary() {
    // Frank's staff assignment ends 2026-10-01T00:00Z (Wednesday 20:00 EDT);
    // the lab is covered by staff only.
    let snap = example();
    let p = Presence::new();
    let frank = |t: &str| ask(&snap, &p, "lab-in", "h10301:12:1006", None, t).reason;
    assert_eq!(frank("2026-09-30T15:00:00Z"), Reason::Granted);
    assert_eq!(frank("2026-09-30T23:59:59.999Z"), Reason::OutsideSchedule);
    assert_eq!(frank("2026-10-01T00:00:00Z"), Reason::AccessNotValidNow);
}

const DST_SITE: &str = r#"
[[sites]]
id = "ny"
time_zone = "America/New_York"
[[doors]]
id = "d"
site = "ny"
[[readers]]
id = "r"
door = "d"
[[schedules]]
id = "gap"
intervals = [{ days = ["sun"], start = "02:00", end = "02:30" }]
[[schedules]]
id = "span"
intervals = [{ days = ["sun"], start = "01:30", end = "03:30" }]
[[schedules]]
id = "overlap"
intervals = [{ days = ["sun"], start = "01:00", end = "01:30" }]
[[access_levels]]
id = "gap"
doors = ["d"]
schedule = "gap"
[[access_levels]]
id = "span"
doors = ["d"]
schedule = "span"
[[access_levels]]
id = "overlap"
doors = ["d"]
schedule = "overlap"
[[cardholders]]
id = "g"
[[cardholders]]
id = "s"
[[cardholders]]
id = "o"
[[credentials]]
card = "fmt7:0:1"
holder = "g"
[[credentials]]
card = "fmt7:0:2"
holder = "s"
[[credentials]]
card = "fmt7:0:3"
holder = "o"
[[assignments]]
holder = "g"
level = "gap"
[[assignments]]
holder = "s"
level = "span"
[[assignments]]
holder = "o"
level = "overlap"
"#;

/// The UTC minutes of a day at which `card` is granted at reader `r`.
fn granted_minutes(snap: &Snapshot, card: &str, day_start_utc: &str) -> Vec<Timestamp> {
    let start = ts(day_start_utc);
    (0..24 * 60)
        .map(|m| start + jiff::SignedDuration::from_mins(m))
        .filter(|t| {
            let request = Request {
                reader: "r",
                credential: card.parse().unwrap(),
                pin: None,
            };
            decide(snap, &Presence::new(), &request, *t).verdict == Verdict::Grant
        })
        .collect()
}

#[test]
fn spring_forward_gap_minutes_never_occur() {
    // 2026-03-08: New York clocks jump from 02:00 EST to 03:00 EDT (07:00Z).
    let snap = builder_for(DST_SITE).publish(ts("2026-03-01T00:00:00Z"));
    assert!(granted_minutes(&snap, "fmt7:0:1", "2026-03-08T00:00:00Z").is_empty());
    // 01:30 EST to 03:30 EDT is one real hour.
    let span = granted_minutes(&snap, "fmt7:0:2", "2026-03-08T00:00:00Z");
    assert_eq!(span.len(), 60);
    assert_eq!(span.first(), Some(&ts("2026-03-08T06:30:00Z")));
    assert_eq!(span.last(), Some(&ts("2026-03-08T07:29:00Z")));
    // A week later, without a transition, the same schedules are ordinary.
    assert_eq!(
        granted_minutes(&snap, "fmt7:0:1", "2026-03-15T00:00:00Z").len(),
        30
    );
    assert_eq!(
        granted_minutes(&snap, "fmt7:0:2", "2026-03-15T00:00:00Z").len(),
        120
    );
}

#[test]
fn fall_back_overlap_minutes_occur_twice() {
    // 2026-11-01: New York clocks fall back from 02:00 EDT to 01:00 EST
    // (06:00Z), so 01:00-01:30 local happens twice.
    let snap = builder_for(DST_SITE).publish(ts("2026-10-01T00:00:00Z"));
    let overlap = granted_minutes(&snap, "fmt7:0:3", "2026-11-01T00:00:00Z");
    assert_eq!(overlap.len(), 60);
    assert!(overlap.contains(&ts("2026-11-01T05:00:00Z"))); // 01:00 EDT
    assert!(overlap.contains(&ts("2026-11-01T05:29:00Z")));
    assert!(!overlap.contains(&ts("2026-11-01T05:30:00Z")));
    assert!(overlap.contains(&ts("2026-11-01T06:00:00Z"))); // 01:00 EST
    assert!(overlap.contains(&ts("2026-11-01T06:29:00Z")));
    assert!(!overlap.contains(&ts("2026-11-01T06:30:00Z")));
    // 01:30-03:30 local: 01:30-02:00 happens twice (EDT, then EST), then
    // 02:00-03:30 EST once: 150 real minutes.
    let span = granted_minutes(&snap, "fmt7:0:2", "2026-11-01T00:00:00Z");
    assert_eq!(span.len(), 150);
}

#[test]
fn lockdown_of_a_site_and_its_override() {
    let mut builder = builder_for(EXAMPLE);
    let before = builder.publish(ts("2026-11-30T00:00:00Z"));
    let p = Presence::new();
    assert_eq!(
        ask(&before, &p, "lobby-in", "h10301:12:1001", None, MON_9).reason,
        Reason::Granted
    );
    builder
        .apply(Change::Upsert(Record::Site(SiteRecord {
            id: "hq".into(),
            time_zone: "America/New_York".into(),
            lockdown: true,
        })))
        .unwrap();
    let after = builder.publish(ts("2026-11-30T00:00:01Z"));
    assert!(after.version() > before.version());
    assert_eq!(
        ask(&after, &p, "lobby-in", "h10301:12:1001", None, MON_9).reason,
        Reason::DoorLockdown
    );
    // Erin has the override (and access): she passes.
    assert_eq!(
        ask(&after, &p, "lobby-in", "h10301:12:1005", None, MON_9).reason,
        Reason::Granted
    );
    // Locked beats the override.
    assert_eq!(
        ask(&after, &p, "loading-dock-in", "h10301:12:1005", None, MON_9).reason,
        Reason::DoorLocked
    );
    // The old snapshot still answers as before: snapshots are immutable.
    assert_eq!(
        ask(&before, &p, "lobby-in", "h10301:12:1001", None, MON_9).reason,
        Reason::Granted
    );
}

#[test]
fn unlocked_doors_still_evaluate_cards() {
    let mut builder = builder_for(EXAMPLE);
    builder
        .apply(Change::Upsert(Record::Door(DoorRecord {
            id: "lobby".into(),
            site: "hq".into(),
            mode: DoorMode::Unlocked,
            unlock_ms: 5000,
            area: None,
        })))
        .unwrap();
    let snap = builder.publish(ts("2026-11-30T00:00:00Z"));
    let p = Presence::new();
    assert_eq!(
        ask(&snap, &p, "lobby-in", "h10301:12:1001", None, MON_9).reason,
        Reason::Granted
    );
    assert_eq!(
        ask(&snap, &p, "lobby-in", "h10301:12:992", None, MON_9).reason,
        Reason::CredentialRevoked
    );
}

#[test]
fn a_credential_whose_holder_is_missing_is_denied() {
    let mut builder = builder_for(EXAMPLE);
    builder
        .apply(Change::Upsert(Record::Credential(CredentialRecord {
            card: "h10301:12:7777".parse().unwrap(),
            holder: "ghost".into(),
            status: Default::default(),
            valid_from: None,
            valid_until: None,
            pin: None,
        })))
        .unwrap();
    builder
        .apply(Change::Delete(RecordKey::Cardholder("alice".into())))
        .unwrap();
    let snap = builder.publish(ts("2026-11-30T00:00:00Z"));
    let p = Presence::new();
    assert_eq!(
        ask(&snap, &p, "lobby-in", "h10301:12:7777", None, MON_9).reason,
        Reason::HolderUnknown
    );
    assert_eq!(
        ask(&snap, &p, "lobby-in", "h10301:12:1001", None, MON_9).reason,
        Reason::HolderUnknown
    );
    // Alice comes back: her credentials and assignments were kept.
    builder
        .apply(Change::Upsert(Record::Cardholder(CardholderRecord {
            id: "alice".into(),
            status: Default::default(),
            valid_from: None,
            valid_until: None,
            lockdown_override: false,
        })))
        .unwrap();
    let snap = builder.publish(ts("2026-11-30T00:00:01Z"));
    assert_eq!(
        ask(&snap, &p, "lobby-in", "h10301:12:1001", None, MON_9).reason,
        Reason::Granted
    );
}

#[test]
fn hard_anti_passback_in_and_out() {
    let snap = example();
    let p = Presence::new();
    let erin = "h10301:12:1005";
    let at = "2026-11-30T10:00:00-05:00";
    assert_eq!(
        ask(&snap, &p, "garage-in", erin, None, at).reason,
        Reason::Granted
    );
    assert!(p.is_inside("erin", "garage"));
    assert_eq!(
        ask(&snap, &p, "garage-in", erin, None, at).reason,
        Reason::AntiPassback
    );
    assert_eq!(
        ask(&snap, &p, "garage-out", erin, None, at).reason,
        Reason::Granted
    );
    assert_eq!(
        ask(&snap, &p, "garage-out", erin, None, at).reason,
        Reason::AntiPassback
    );
    assert_eq!(
        ask(&snap, &p, "garage-in", erin, None, at).reason,
        Reason::Granted
    );
    // Presence is per holder: alice is unaffected.
    assert_eq!(
        ask(&snap, &p, "garage-out", "h10301:12:1001", None, at).reason,
        Reason::Granted
    );
    // A denied request records nothing: an unknown card at the gate.
    assert_eq!(
        ask(&snap, &p, "garage-in", "h10301:12:4242", None, at).reason,
        Reason::UnknownCredential
    );
}

#[test]
fn presence_survives_a_snapshot_swap() {
    let mut builder = builder_for(EXAMPLE);
    let first = builder.publish(ts("2026-11-30T00:00:00Z"));
    let p = Presence::new();
    let at = "2026-11-30T10:00:00-05:00";
    assert_eq!(
        ask(&first, &p, "garage-in", "h10301:12:1005", None, at).reason,
        Reason::Granted
    );
    builder
        .apply(Change::Delete(RecordKey::Credential(
            "h10301:12:990".parse().unwrap(),
        )))
        .unwrap();
    let second = builder.publish(ts("2026-11-30T00:00:01Z"));
    assert_eq!(
        ask(&second, &p, "garage-in", "h10301:12:1005", None, at).reason,
        Reason::AntiPassback
    );
}

#[test]
fn soft_and_timed_anti_passback() {
    let snap = example();
    let p = Presence::new();
    let alice = "h10301:12:1001";
    assert_eq!(
        ask(
            &snap,
            &p,
            "lab-in",
            alice,
            None,
            "2026-11-30T08:00:00-05:00"
        )
        .reason,
        Reason::Granted
    );
    // Soft: a second entry is granted with a warning.
    let d = ask(
        &snap,
        &p,
        "lab-in",
        alice,
        None,
        "2026-11-30T08:05:00-05:00",
    );
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Grant, Reason::GrantedPassbackWarning)
    );
    assert!(d.unlock_ms > 0);
    // Timed: 12 hours after the last passage presence is forgotten (the
    // next business day at 08:05 is 24 hours later).
    assert_eq!(
        ask(
            &snap,
            &p,
            "lab-in",
            alice,
            None,
            "2026-12-01T08:05:00-05:00"
        )
        .reason,
        Reason::Granted
    );
    assert_eq!(
        ask(
            &snap,
            &p,
            "lab-out",
            alice,
            None,
            "2026-12-01T18:00:00-05:00"
        )
        .reason,
        Reason::Granted
    );
    assert_eq!(
        ask(
            &snap,
            &p,
            "lab-out",
            alice,
            None,
            "2026-12-01T18:30:00-05:00"
        )
        .reason,
        Reason::GrantedPassbackWarning
    );
    // The reset boundary: presence is fresh for 12 hours minus a
    // millisecond after the last passage, and forgotten at 12 hours.
    let erin = "h10301:12:1005"; // the security level covers the lab always
    assert_eq!(
        ask(&snap, &p, "lab-in", erin, None, "2026-12-02T00:00:00Z").reason,
        Reason::Granted
    );
    assert_eq!(
        ask(&snap, &p, "lab-in", erin, None, "2026-12-02T11:59:59.999Z").reason,
        Reason::GrantedPassbackWarning
    );
    assert_eq!(
        ask(&snap, &p, "lab-in", erin, None, "2026-12-02T23:59:59.999Z").reason,
        Reason::Granted
    );
}

#[test]
fn concurrent_entries_of_one_holder_pass_exactly_once() {
    // Hard anti-passback must hold when several readers decide for the same
    // person at the same moment: the check and update are atomic per holder.
    let snap = Arc::new(example());
    let presence = Arc::new(Presence::new());
    for round in 0..20 {
        presence.forget("erin");
        let threads = 8;
        let barrier = Barrier::new(threads);
        let grants: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let d = ask(&snap, &presence, "garage-in", "h10301:12:1005", None, MON_9);
                        usize::from(d.verdict == Verdict::Grant)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(grants, 1, "round {round}: exactly one entry may pass");
    }
}

#[test]
fn concurrent_holders_do_not_interfere() {
    let snap = Arc::new(example());
    let presence = Arc::new(Presence::new());
    std::thread::scope(|s| {
        for card in ["h10301:12:1005", "h10301:12:1001"] {
            let (snap, presence) = (&snap, &presence);
            s.spawn(move || {
                for i in 0..500 {
                    let reader = if i % 2 == 0 {
                        "garage-in"
                    } else {
                        "garage-out"
                    };
                    let d = ask(snap, presence, reader, card, None, MON_9);
                    assert_eq!(d.reason, Reason::Granted, "{card} pass {i}");
                }
            });
        }
    });
}

#[test]
fn a_confirmed_snapshot_is_fresh_without_a_new_version() {
    use accessd_engine::SharedSnapshot;
    let mut builder = builder_for(EXAMPLE);
    let shared = SharedSnapshot::new(builder.publish(ts("2026-11-30T00:00:00Z")));
    let snap = shared.load_full();
    assert_eq!(shared.fresh_as_of(&snap), ts("2026-11-30T00:00:00Z"));
    // The source read an empty stream a minute later: same version, fresher.
    shared.confirm(ts("2026-11-30T00:01:00Z"));
    assert_eq!(shared.fresh_as_of(&snap), ts("2026-11-30T00:01:00Z"));
    assert_eq!(shared.load().version(), snap.version());
    // Confirmations never go backwards.
    shared.confirm(ts("2026-11-29T00:00:00Z"));
    assert_eq!(shared.fresh_as_of(&snap), ts("2026-11-30T00:01:00Z"));
    // A new version carries its own as_of.
    shared.store(std::sync::Arc::new(
        builder.publish(ts("2026-11-30T00:02:00Z")),
    ));
    assert_eq!(
        shared.fresh_as_of(&shared.load()),
        ts("2026-11-30T00:02:00Z")
    );
}

// ---- Behaviours docs/decisions.md promises (issue 12) ----

/// A small UTC site for the questions the example does not cover: door
/// `d` (reader `r`), weekday and weekend schedules, and cards of several
/// holders (see each test).
const SMALL: &str = r#"
[[sites]]
id = "hq"
time_zone = "UTC"

[[areas]]
id = "forgetful"
passback = "hard"
reset_after_s = 0

[[doors]]
id = "d"
site = "hq"

[[doors]]
id = "gate"
site = "hq"
area = "forgetful"

[[readers]]
id = "r"
door = "d"

[[readers]]
id = "gate-in"
door = "gate"
direction = "in"

[[schedules]]
id = "weekdays"
intervals = [{ days = ["mon", "tue", "wed", "thu", "fri"], start = "09:00", end = "17:00" }]

[[schedules]]
id = "weekend"
intervals = [{ days = ["sat", "sun"], start = "09:00", end = "17:00" }]

[[access_levels]]
id = "weekdays"
doors = ["d", "gate"]
schedule = "weekdays"

[[access_levels]]
id = "weekend"
doors = ["d"]
schedule = "weekend"

[[cardholders]]
id = "revoked-and-expired"

[[cardholders]]
id = "two-levels"

[[cardholders]]
id = "one-level"

[[cardholders]]
id = "normalised"

# Revoked, and its validity ended too.
[[credentials]]
card = "h10301:1:1"
holder = "revoked-and-expired"
status = "revoked"
valid_until = "2026-01-01T00:00:00Z"

[[credentials]]
card = "h10301:1:2"
holder = "two-levels"

[[credentials]]
card = "h10301:1:3"
holder = "one-level"

# Written with capitals, leading zeros and spaces: read as h10301:7:42.
[[credentials]]
card = " H10301:007:00042 "
holder = "normalised"

[[credentials]]
card = "UID:04A1B2"
holder = "normalised"

[[assignments]]
holder = "revoked-and-expired"
level = "weekdays"

# Weekdays expired, weekend still valid.
[[assignments]]
holder = "two-levels"
level = "weekdays"
valid_until = "2026-01-01T00:00:00Z"

[[assignments]]
holder = "two-levels"
level = "weekend"

# Only weekdays, expired.
[[assignments]]
holder = "one-level"
level = "weekdays"
valid_until = "2026-01-01T00:00:00Z"

[[assignments]]
holder = "normalised"
level = "weekdays"
"#;

fn small() -> Snapshot {
    builder_for(SMALL).publish(ts("2026-11-30T00:00:00Z"))
}

// Monday 2026-11-30 12:00 and Saturday 2026-11-28 12:00, UTC.
const MON_NOON: &str = "2026-11-30T12:00:00Z";
const SAT_NOON: &str = "2026-11-28T12:00:00Z";

#[test]
fn an_overnight_interval_follows_the_local_date_of_each_minute() {
    // The night shift runs mon-fri 22:00-06:00; Thursday 2026-11-26 and
    // Friday 2026-12-25 are holidays (holiday window 23:00-00:00).
    let snap = example();
    let p = Presence::new();
    let night = |t: &str| ask(&snap, &p, "lobby-in", "h10301:12:1006", None, t).reason;
    // Friday 12-25 is a holiday, so its 22:00 start does not happen, but
    // the part after midnight falls on Saturday 12-26, an ordinary day:
    // it runs.
    assert_eq!(night("2026-12-25T22:30:00-05:00"), Reason::OutsideSchedule);
    assert_eq!(night("2026-12-26T01:00:00-05:00"), Reason::Granted);
    assert_eq!(night("2026-12-26T05:59:00-05:00"), Reason::Granted);
    // Thursday 12-24 is ordinary, so its shift starts; the part after
    // midnight falls on the holiday 12-25, where only the holiday window
    // counts: it does not run.
    assert_eq!(night("2026-12-24T23:00:00-05:00"), Reason::Granted);
    assert_eq!(night("2026-12-25T01:00:00-05:00"), Reason::OutsideSchedule);
}

#[test]
fn the_earliest_rule_names_the_reason_when_several_apply() {
    let snap = small();
    let p = Presence::new();
    let at = |card: &str, t: &str| ask(&snap, &p, "r", card, None, t).reason;
    // Revoked and expired: the status is checked first.
    assert_eq!(at("h10301:1:1", MON_NOON), Reason::CredentialRevoked);
    // One assignment expired (its schedule would be active), another valid
    // but outside its schedule: outside_schedule wins over
    // access_not_valid_now.
    assert_eq!(at("h10301:1:2", MON_NOON), Reason::OutsideSchedule);
    // One assignment, both expired and outside its schedule: its validity
    // is checked first, its schedule never.
    assert_eq!(at("h10301:1:3", SAT_NOON), Reason::AccessNotValidNow);
    assert_eq!(at("h10301:1:3", MON_NOON), Reason::AccessNotValidNow);
}

#[test]
fn an_empty_pin_is_a_wrong_pin_and_a_pin_at_a_card_only_door_is_ignored() {
    let snap = example();
    let p = Presence::new();
    let alice = |reader, pin| ask(&snap, &p, reader, "h10301:12:1001", pin, MON_9).reason;
    assert_eq!(alice("server-room-in", Some("")), Reason::PinWrong);
    assert_eq!(alice("server-room-in", None), Reason::PinRequired);
    assert_eq!(alice("lobby-in", Some("")), Reason::Granted);
    assert_eq!(alice("lobby-in", Some("0000")), Reason::Granted);
}

#[test]
fn card_numbers_out_of_range_for_their_format() {
    // In a site file: refused, with the range.
    let text = SMALL.replace("h10301:1:3", "h10301:1:70000");
    let err = SiteFile::parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("h10301 card number `70000` is out of range: the format encodes 0 to 65535"),
        "{err}"
    );
    let text = SMALL.replace("h10301:1:3", "h10301:256:3");
    let err = SiteFile::parse(&text).unwrap_err().to_string();
    assert!(err.contains("facility code `256` is out of range"), "{err}");
    // From a reader: no card can be enrolled with it, so it is unknown.
    let snap = small();
    let request = Request {
        reader: "r",
        credential: CredentialKey::card(accessd_engine::CardFormat::H10301, 1, 70_000),
        pin: None,
    };
    let d = decide(&snap, &Presence::new(), &request, ts(MON_NOON));
    assert_eq!(d.reason, Reason::UnknownCredential);
}

#[test]
fn card_text_is_normalised() {
    let snap = small();
    let p = Presence::new();
    let at = |card: &str| ask(&snap, &p, "r", card, None, MON_NOON).reason;
    // Written ` H10301:007:00042 ` and `UID:04A1B2` in the file.
    assert_eq!(at("h10301:7:42"), Reason::Granted);
    assert_eq!(at("fmt1:7:42"), Reason::Granted);
    assert_eq!(at("uid:04a1b2"), Reason::Granted);
    let site = SiteFile::parse(SMALL).unwrap();
    let written = SiteFile::to_toml(&site.records).unwrap();
    assert!(written.contains("card = \"h10301:7:42\""), "{written}");
    assert!(written.contains("card = \"uid:04a1b2\""), "{written}");
}

#[test]
fn reset_after_0_forgets_every_passage_at_once() {
    // A hard area that forgets at once never refuses: every entry is a
    // first entry.
    let snap = small();
    let p = Presence::new();
    for _ in 0..3 {
        let d = ask(&snap, &p, "gate-in", "h10301:7:42", None, MON_NOON);
        assert_eq!(d.reason, Reason::Granted);
    }
}
