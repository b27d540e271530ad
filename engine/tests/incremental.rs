//! Property: any sequence of upserts and deletes applied incrementally (with
//! publishes in between) decides exactly like a full build from the final
//! records, whatever order those are applied in.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::collections::BTreeMap;

use accessd_engine::{
    AccessLevelRecord, AreaRecord, AssignmentRecord, CardFormat, CardholderRecord, Change,
    CredentialKey, CredentialRecord, CredentialStatus, Day, Direction, DoorGroupRecord, DoorMode,
    DoorRecord, HolderStatus, HolidaySetRecord, Interval, PassbackMode, PinHash, Presence,
    ReaderRecord, Record, RecordKey, Request, ScheduleRecord, SiteRecord, Snapshot,
    SnapshotBuilder, decide,
};
use jiff::Timestamp;
use jiff::civil::{Time, date};
use proptest::prelude::*;

const SITES: [&str; 2] = ["s0", "s1"];
const ZONES: [&str; 3] = ["America/New_York", "Europe/Berlin", "UTC"];
const DOORS: usize = 4;
const READERS: usize = 6;
const SCHEDULES: usize = 3;
const LEVELS: usize = 3;
const HOLDERS: usize = 4;
const CARDS: u64 = 6;

fn card(i: u64) -> CredentialKey {
    CredentialKey::card(CardFormat::H10301, 1, i)
}

fn at(hours: i64) -> Timestamp {
    Timestamp::from_second(1_795_000_000 + hours * 3600).unwrap()
}

/// One generated operation: which entity, which instance, a variant
/// selector, and whether it is a delete.
#[derive(Clone, Debug)]
struct Op {
    kind: u8,
    id: usize,
    variant: u8,
    delete: bool,
}

fn record(op: &Op) -> Record {
    let v = usize::from(op.variant);
    let i = op.id;
    match op.kind % 11 {
        0 => Record::Site(SiteRecord {
            id: SITES[i % SITES.len()].into(),
            time_zone: ZONES[v % ZONES.len()].into(),
            lockdown: v % 7 == 0,
        }),
        1 => Record::Door(DoorRecord {
            id: format!("d{}", i % DOORS),
            site: format!("s{}", v % 3), // s2 does not exist: a dangling ref
            mode: [
                DoorMode::CardOnly,
                DoorMode::CardAndPin,
                DoorMode::Locked,
                DoorMode::Lockdown,
                DoorMode::Unlocked,
            ][v % 5],
            unlock_ms: 1000 + v as u32,
            area: (v % 2 == 0).then(|| format!("a{}", v % 3)),
        }),
        2 => Record::Reader(ReaderRecord {
            id: format!("r{}", i % READERS),
            door: format!("d{}", v % (DOORS + 1)),
            direction: if v % 2 == 0 {
                Direction::In
            } else {
                Direction::Out
            },
        }),
        3 => Record::Area(AreaRecord {
            id: format!("a{}", i % 2),
            passback: [PassbackMode::None, PassbackMode::Soft, PassbackMode::Hard][v % 3],
            reset_after_s: (v % 2 == 0).then_some(3600),
        }),
        4 => Record::DoorGroup(DoorGroupRecord {
            id: format!("g{}", i % 2),
            doors: (0..=DOORS)
                .filter(|d| (v >> (d % 8)) & 1 == 1)
                .map(|d| format!("d{d}"))
                .collect(),
        }),
        5 => {
            let start = (v % 20) as i8;
            Record::Schedule(ScheduleRecord {
                id: format!("sc{}", i % SCHEDULES),
                intervals: vec![Interval {
                    days: Day::ALL
                        .into_iter()
                        .enumerate()
                        .filter(|(d, _)| (v + d) % 3 != 0)
                        .map(|(_, d)| d)
                        .collect(),
                    start: Time::constant(start, 0, 0, 0),
                    end: Time::constant((start + 4 + (v % 5) as i8) % 24, 30, 0, 0),
                }],
                holiday_sets: if v % 2 == 0 {
                    vec!["h0".into()]
                } else {
                    vec![]
                },
                holiday_intervals: vec![],
            })
        }
        6 => Record::HolidaySet(HolidaySetRecord {
            id: "h0".into(),
            dates: vec![date(2026, 11, 17 + (v % 7) as i8), date(2026, 11, 20)],
        }),
        7 => Record::AccessLevel(AccessLevelRecord {
            id: format!("l{}", i % LEVELS),
            doors: (0..DOORS)
                .filter(|d| (v >> d) & 1 == 1)
                .map(|d| format!("d{d}"))
                .collect(),
            door_groups: if v % 3 == 0 {
                vec![format!("g{}", v % 2)]
            } else {
                vec![]
            },
            schedule: format!("sc{}", v % (SCHEDULES + 1)),
        }),
        8 => Record::Cardholder(CardholderRecord {
            id: format!("h{}", i % HOLDERS),
            status: if v % 5 == 0 {
                HolderStatus::Inactive
            } else {
                HolderStatus::Active
            },
            valid_from: (v % 4 == 1).then(|| at(50)),
            valid_until: (v % 4 == 2).then(|| at(100)),
            lockdown_override: v % 3 == 0,
        }),
        9 => Record::Credential(CredentialRecord {
            card: card(i as u64 % CARDS),
            holder: format!("h{}", v % (HOLDERS + 1)),
            status: [
                CredentialStatus::Active,
                CredentialStatus::Active,
                CredentialStatus::Suspended,
                CredentialStatus::Revoked,
            ][v % 4],
            valid_from: (v % 5 == 1).then(|| at(20)),
            valid_until: (v % 5 == 2).then(|| at(120)),
            pin: (v % 2 == 0).then(|| PinHash::new("1234", [v as u8; 16]).unwrap()),
        }),
        _ => Record::Assignment(AssignmentRecord {
            holder: format!("h{}", i % (HOLDERS + 1)),
            level: format!("l{}", v % (LEVELS + 1)),
            valid_from: (v % 4 == 1).then(|| at(30)),
            valid_until: (v % 4 == 2).then(|| at(90)),
        }),
    }
}

fn op() -> impl Strategy<Value = Op> {
    (0u8..11, 0usize..8, any::<u8>(), prop::bool::weighted(0.25)).prop_map(
        |(kind, id, variant, delete)| Op {
            kind,
            id,
            variant,
            delete,
        },
    )
}

/// Every decision over all readers × all cards × a few instants × with and
/// without a PIN, each on a fresh presence so decisions are pure.
fn decisions(snap: &Snapshot) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    for r in 0..READERS {
        let reader = format!("r{r}");
        for c in 0..CARDS + 1 {
            for hour in [0i64, 25, 60, 75, 110, 130] {
                for pin in [None, Some(&b"1234"[..])] {
                    let request = Request {
                        reader: &reader,
                        credential: card(c),
                        pin,
                    };
                    let d = decide(snap, &Presence::new(), &request, at(hour));
                    out.push((d.reason.code(), d.unlock_ms));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn incremental_equals_full_build(ops in prop::collection::vec(op(), 1..80), publish_every in 1usize..10) {
        let mut incremental = SnapshotBuilder::new();
        let mut last_version = 0;
        let mut finals: BTreeMap<RecordKey, Record> = BTreeMap::new();
        for (n, op) in ops.iter().enumerate() {
            let record = record(op);
            let key = record.key();
            let change = if op.delete {
                finals.remove(&key);
                Change::Delete(key)
            } else {
                finals.insert(key, record.clone());
                Change::Upsert(record)
            };
            prop_assert!(incremental.apply(change).is_ok());
            if n % publish_every == 0 {
                let snap = incremental.publish(at(0));
                prop_assert!(snap.version() > last_version, "versions are monotonic");
                last_version = snap.version();
            }
        }
        let inc = incremental.publish(at(0));

        // What a checkpoint stores and restores: the small tables, then
        // one bundle per holder.
        let mut restored = SnapshotBuilder::new();
        prop_assert!(restored.apply_all(incremental.small_records().map(Change::Upsert)).is_empty());
        for bundle in incremental.bundles() {
            prop_assert!(restored.apply_bundle(bundle).is_empty());
        }
        let restored = restored.publish(at(0));
        prop_assert_eq!(inc.stats(), restored.stats());
        prop_assert_eq!(decisions(&inc), decisions(&restored));

        // Full build, in reverse key order to show order does not matter.
        let mut full = SnapshotBuilder::new();
        for record in finals.values().rev() {
            prop_assert!(full.apply(Change::Upsert(record.clone())).is_ok());
        }
        let full = full.publish(at(0));

        prop_assert_eq!(inc.stats(), full.stats());
        prop_assert_eq!(decisions(&inc), decisions(&full));
    }
}
