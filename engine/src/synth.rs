//! Deterministic synthetic sites of a realistic shape, for the demo, the
//! benchmarks, load tests and `accessd seed`.
//!
//! The same [`SynthParams`] always give the same records. The shape follows
//! what a large campus looks like: a few sites in different time zones,
//! two readers (in and out) per door, door groups per building floor,
//! office-hours, extended, shift, weekend and 24/7 schedules with a holiday
//! set, a few hundred access levels, cardholders with one to three levels,
//! and a small share of suspended, lost, stolen, revoked, expired and
//! not-yet-valid credentials and holders.

use jiff::civil::{Date, Time, date};
use jiff::{SignedDuration, Timestamp};

use crate::credential::{CardFormat, CredentialKey};
use crate::model::{
    AccessLevelRecord, AreaRecord, AssignmentRecord, CardholderRecord, CredentialRecord,
    CredentialStatus, Day, Direction, DoorGroupRecord, DoorMode, DoorRecord, HolderStatus,
    HolidaySetRecord, Interval, PassbackMode, ReaderRecord, Record, ScheduleRecord, SiteRecord,
};
use crate::pin::PinHash;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthParams {
    /// Number of cardholders; each gets one credential, and every 20th a
    /// second one.
    pub holders: usize,
    /// Number of doors (two readers each).
    pub doors: usize,
    /// Number of access levels.
    pub levels: usize,
    /// Random seed.
    pub seed: u64,
    /// The instant validity windows are placed around.
    pub now: Timestamp,
    /// Give every n-th credential a PIN (0: none). Hashing is the slow part
    /// of generation, so large benchmarks keep this sparse.
    pub pin_every: usize,
}

impl Default for SynthParams {
    fn default() -> Self {
        Self {
            holders: 1000,
            doors: 200,
            levels: 50,
            seed: 42,
            now: Timestamp::UNIX_EPOCH,
            pin_every: 10,
        }
    }
}

/// The facility code of the synthetic site's cards.
pub const FACILITY: u32 = 4242;

/// Card numbers per facility code: a 48-bit Corporate 1000 card number has
/// 23 bits, and the synthetic numbers start at 100,000.
const CARDS_PER_FACILITY: u64 = (1 << 23) - 100_000;

/// The credential key of the `i`-th synthetic credential: numbers from
/// 100,000 under [`FACILITY`], then under the next facility codes, so that
/// every `i` up to billions is a card in range for its format.
pub fn card(i: u64) -> CredentialKey {
    let facility = FACILITY + (i / CARDS_PER_FACILITY) as u32;
    CredentialKey::card(
        CardFormat::CORP1000_48,
        facility,
        100_000 + i % CARDS_PER_FACILITY,
    )
}

/// The PIN of the `i`-th synthetic credential, if it has one.
pub fn pin_of(i: u64, params: &SynthParams) -> Option<String> {
    (params.pin_every > 0 && i.is_multiple_of(params.pin_every as u64))
        .then(|| format!("{:04}", 1000 + i % 9000))
}

const SITES: [(&str, &str); 4] = [
    ("nyc", "America/New_York"),
    ("lon", "Europe/London"),
    ("sgp", "Asia/Singapore"),
    ("sfo", "America/Los_Angeles"),
];

fn t(h: i8, m: i8) -> Time {
    Time::constant(h, m, 0, 0)
}

fn iv(days: &[Day], start: Time, end: Time) -> Interval {
    Interval {
        days: days.to_vec(),
        start,
        end,
    }
}

const WEEKDAYS: [Day; 5] = Day::WEEKDAYS;
const ALL_DAYS: [Day; 7] = Day::ALL;

/// The schedule ids, from most to least restrictive.
pub const SCHEDULES: [&str; 6] = [
    "office-hours",
    "extended-hours",
    "night-shift",
    "weekends",
    "cleaning",
    "always",
];

fn schedules() -> Vec<ScheduleRecord> {
    let holidays = vec!["public-holidays".to_owned()];
    vec![
        ScheduleRecord {
            id: "office-hours".into(),
            intervals: vec![iv(&WEEKDAYS, t(7, 0), t(19, 0))],
            holiday_sets: holidays.clone(),
            holiday_intervals: vec![],
        },
        ScheduleRecord {
            id: "extended-hours".into(),
            intervals: vec![
                iv(&WEEKDAYS, t(6, 0), t(22, 0)),
                iv(&[Day::Sat], t(8, 0), t(14, 0)),
            ],
            holiday_sets: holidays.clone(),
            holiday_intervals: vec![iv(&[], t(9, 0), t(13, 0))],
        },
        ScheduleRecord {
            id: "night-shift".into(),
            intervals: vec![iv(&WEEKDAYS, t(21, 0), t(7, 0))],
            holiday_sets: vec![],
            holiday_intervals: vec![],
        },
        ScheduleRecord {
            id: "weekends".into(),
            intervals: vec![iv(&[Day::Sat, Day::Sun], t(8, 0), t(20, 0))],
            holiday_sets: vec![],
            holiday_intervals: vec![],
        },
        ScheduleRecord {
            id: "cleaning".into(),
            intervals: vec![
                iv(&WEEKDAYS, t(5, 0), t(7, 0)),
                iv(&WEEKDAYS, t(19, 0), t(23, 0)),
            ],
            holiday_sets: holidays,
            holiday_intervals: vec![],
        },
        ScheduleRecord {
            id: "always".into(),
            intervals: vec![iv(&ALL_DAYS, t(0, 0), t(0, 0))],
            holiday_sets: vec![],
            holiday_intervals: vec![],
        },
    ]
}

fn holiday_dates() -> Vec<Date> {
    vec![
        date(2026, 1, 1),
        date(2026, 5, 25),
        date(2026, 7, 4),
        date(2026, 12, 25),
        date(2027, 1, 1),
        date(2027, 12, 25),
    ]
}

/// The id of door `i` of a synthetic site.
pub fn door_id(i: usize) -> String {
    format!("{}-d{i:05}", site_of(i))
}

/// The site of door `i`.
fn site_of(i: usize) -> &'static str {
    SITES.get(i % SITES.len()).map_or("nyc", |(site, _)| site)
}

/// The id of the entry reader of door `i`.
pub fn reader_in(i: usize) -> String {
    format!("{}-in", door_id(i))
}

/// Generates a synthetic site.
pub fn site(params: &SynthParams) -> Vec<Record> {
    let mut rng = fastrand::Rng::with_seed(params.seed);
    let mut out = Vec::with_capacity(params.holders * 3 + params.doors * 4 + params.levels * 2);
    let doors = params.doors.max(1);

    for (id, zone) in SITES {
        out.push(Record::Site(SiteRecord {
            id: id.into(),
            time_zone: zone.into(),
            lockdown: false,
        }));
        out.push(Record::Area(AreaRecord {
            id: format!("{id}-lab"),
            passback: PassbackMode::Soft,
            reset_after_s: Some(8 * 3600),
        }));
    }
    for i in 0..doors {
        let site = site_of(i);
        let mode = match rng.u32(0..1000) {
            0..10 => DoorMode::Locked,
            10..60 => DoorMode::CardAndPin,
            60..70 => DoorMode::Unlocked,
            _ => DoorMode::CardOnly,
        };
        let area = (i % 97 == 0).then(|| format!("{site}-lab"));
        out.push(Record::Door(DoorRecord {
            id: door_id(i),
            site: site.into(),
            mode,
            unlock_ms: if rng.u32(0..10) == 0 { 10_000 } else { 5_000 },
            area,
        }));
        for (suffix, direction) in [("in", Direction::In), ("out", Direction::Out)] {
            out.push(Record::Reader(ReaderRecord {
                id: format!("{}-{suffix}", door_id(i)),
                door: door_id(i),
                direction,
            }));
        }
    }
    // A door group per "floor" of 20 doors.
    let floors = doors.div_ceil(20);
    for f in 0..floors {
        out.push(Record::DoorGroup(DoorGroupRecord {
            id: format!("floor-{f:04}"),
            doors: (f * 20..((f + 1) * 20).min(doors)).map(door_id).collect(),
        }));
    }
    out.push(Record::HolidaySet(HolidaySetRecord {
        id: "public-holidays".into(),
        dates: holiday_dates(),
    }));
    out.extend(schedules().into_iter().map(Record::Schedule));
    let levels = params.levels.max(1);
    for l in 0..levels {
        // Most levels are office hours; a few are wider.
        let schedule = match rng.u32(0..100) {
            0..55 => "office-hours",
            55..75 => "extended-hours",
            75..83 => "night-shift",
            83..88 => "weekends",
            88..93 => "cleaning",
            _ => "always",
        };
        let groups = (0..rng.usize(1..=3))
            .map(|_| format!("floor-{:04}", rng.usize(0..floors)))
            .collect();
        let doors = (0..rng.usize(0..=5))
            .map(|_| door_id(rng.usize(0..doors)))
            .collect();
        out.push(Record::AccessLevel(AccessLevelRecord {
            id: format!("level-{l:04}"),
            doors,
            door_groups: dedup(groups),
            schedule: schedule.into(),
        }));
    }

    let day = SignedDuration::from_hours(24);
    let mut cred_index = 0u64;
    for h in 0..params.holders {
        let id = format!("H{h:07}");
        let (status, valid_from, valid_until) = match rng.u32(0..1000) {
            0..10 => (HolderStatus::Inactive, None, None),
            10..20 => (HolderStatus::Active, None, Some(params.now - day * 30)),
            20..25 => (HolderStatus::Active, Some(params.now + day * 14), None),
            _ => (HolderStatus::Active, None, None),
        };
        out.push(Record::Cardholder(CardholderRecord {
            id: id.clone(),
            status,
            valid_from,
            valid_until,
            lockdown_override: rng.u32(0..200) == 0,
        }));
        let mut taken = Vec::new();
        for _ in 0..rng.usize(1..=3) {
            let level = format!("level-{:04}", rng.usize(0..levels));
            if taken.contains(&level) {
                continue;
            }
            let valid_until = (rng.u32(0..50) == 0).then(|| params.now - day * 3);
            taken.push(level.clone());
            out.push(Record::Assignment(AssignmentRecord {
                holder: id.clone(),
                level,
                valid_from: None,
                valid_until,
            }));
        }
        let count = if h % 20 == 0 { 2 } else { 1 };
        for _ in 0..count {
            let i = cred_index;
            cred_index += 1;
            let status = match rng.u32(0..1000) {
                0..10 => CredentialStatus::Suspended,
                10..15 => CredentialStatus::Lost,
                15..18 => CredentialStatus::Stolen,
                18..30 => CredentialStatus::Revoked,
                _ => CredentialStatus::Active,
            };
            let valid_until = (rng.u32(0..100) == 0).then(|| params.now - day);
            let pin = pin_of(i, params).and_then(|p| {
                let mut salt = [0u8; 16];
                rng.fill(&mut salt);
                PinHash::new(&p, salt).ok()
            });
            out.push(Record::Credential(CredentialRecord {
                card: card(i),
                holder: id.clone(),
                status,
                valid_from: None,
                valid_until,
                pin,
            }));
        }
    }
    out
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every synthetic card is in range for its format and distinct, across
    /// the step to the next facility code (it used to overflow the 23-bit
    /// number past 8.29 million credentials).
    #[test]
    fn cards_stay_in_range_and_distinct_past_one_facility() {
        let Some((max_facility, max_number)) = CardFormat::CORP1000_48.limits() else {
            panic!("the format has limits");
        };
        let around = CARDS_PER_FACILITY - 2..CARDS_PER_FACILITY + 2;
        let cards: Vec<CredentialKey> = (0..3)
            .chain(around)
            .chain([2_000_000_000])
            .map(card)
            .collect();
        for key in &cards {
            let CredentialKey::Card {
                facility, number, ..
            } = *key
            else {
                panic!("{key:?} is not a card");
            };
            assert!(facility <= max_facility && number <= max_number, "{key}");
            let text = key.to_string();
            assert_eq!(text.parse::<CredentialKey>().as_ref(), Ok(key), "{text}");
        }
        let distinct: std::collections::BTreeSet<String> =
            cards.iter().map(|k| k.to_string()).collect();
        assert_eq!(distinct.len(), cards.len());
        assert_eq!(card(0).to_string(), "corp1000_48:4242:100000");
    }
}
