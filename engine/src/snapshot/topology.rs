//! The small tables compiled for decisions: sites with their time zones,
//! doors, readers, areas, schedules with their holidays, access levels.
//! Their entries, the `Topology` that holds them, and its build from the
//! builder's small records.

use std::sync::Arc;

use hashbrown::HashMap;
use jiff::tz::TimeZone;

use super::builder::{LevelIds, SmallRecords};
use super::{FixedState, names};
use crate::model::{Direction, DoorMode, PassbackMode};
use crate::schedule::CompiledSchedule;

/// A site as decisions need it.
#[derive(Debug)]
pub(crate) struct SiteEntry {
    pub(crate) id: Box<str>,
    pub(crate) tz: TimeZone,
    pub(crate) lockdown: bool,
}

/// A door as decisions need it.
#[derive(Debug)]
pub(crate) struct DoorEntry {
    pub(crate) id: Box<str>,
    pub(crate) site: usize,
    pub(crate) mode: DoorMode,
    pub(crate) unlock_ms: u32,
    pub(crate) area: Option<usize>,
}

/// A reader as decisions need it.
#[derive(Debug)]
pub(crate) struct ReaderEntry {
    pub(crate) door: usize,
    pub(crate) direction: Direction,
}

/// An anti-passback area as decisions need it.
#[derive(Debug)]
pub(crate) struct AreaEntry {
    pub(crate) id: Arc<str>,
    pub(crate) passback: PassbackMode,
    pub(crate) reset_after_ms: Option<i64>,
}

/// An access level as decisions need it: a door bitset and a schedule.
#[derive(Debug)]
pub(crate) struct LevelEntry {
    doors: Box<[u64]>,
    pub(crate) schedule: usize,
}

impl LevelEntry {
    #[inline]
    pub(crate) fn covers(&self, door: usize) -> bool {
        self.doors
            .get(door / 64)
            .is_some_and(|w| w & (1 << (door % 64)) != 0)
    }
}

/// Everything but cardholders and credentials, compiled for decisions.
#[derive(Debug, Default)]
pub(crate) struct Topology {
    pub(crate) readers: HashMap<Box<str>, ReaderEntry, FixedState>,
    pub(crate) doors: Vec<DoorEntry>,
    pub(crate) sites: Vec<SiteEntry>,
    pub(crate) areas: Vec<AreaEntry>,
    pub(crate) schedules: Vec<CompiledSchedule>,
    /// Indexed by the builder's level number (see `LevelIds`); `None` for
    /// a number whose level does not exist or does not resolve.
    pub(crate) levels: Vec<Option<LevelEntry>>,
    /// References that did not resolve when this topology was built.
    pub(super) problems: Vec<String>,
    /// The ids behind the indices above, for explanations.
    pub(crate) names: names::Names,
}

/// Builds the compiled topology from the small records. A reference that
/// does not resolve leaves the referring entry out (or the reference
/// ignored) and is listed in `problems`: it can only cause denies.
pub(super) fn build_topology(small: &SmallRecords, level_ids: &LevelIds) -> Topology {
    let mut problems = Vec::new();
    let mut t = Topology::default();

    let mut site_idx = HashMap::<&str, usize, FixedState>::default();
    for site in small.sites.values() {
        // Validated on apply; a zone that vanished from the database since
        // is reported and the site left out.
        match TimeZone::get(&site.time_zone) {
            Ok(tz) => {
                site_idx.insert(&site.id, t.sites.len());
                t.sites.push(SiteEntry {
                    id: Box::from(site.id.as_str()),
                    tz,
                    lockdown: site.lockdown,
                });
            }
            Err(_) => problems.push(format!(
                "site `{}`: unknown time zone `{}`",
                site.id, site.time_zone
            )),
        }
    }

    let mut area_idx = HashMap::<&str, usize, FixedState>::default();
    for area in small.areas.values() {
        area_idx.insert(&area.id, t.areas.len());
        t.areas.push(AreaEntry {
            id: Arc::from(area.id.as_str()),
            passback: area.passback,
            reset_after_ms: area.reset_after_s.map(|s| i64::from(s) * 1000),
        });
    }

    let mut door_idx = HashMap::<&str, usize, FixedState>::default();
    for door in small.doors.values() {
        let Some(&site) = site_idx.get(door.site.as_str()) else {
            problems.push(format!(
                "door `{}`: unknown site `{}` (door left out)",
                door.id, door.site
            ));
            continue;
        };
        let area = match &door.area {
            None => None,
            Some(a) => match area_idx.get(a.as_str()) {
                Some(&i) => Some(i),
                None => {
                    problems.push(format!(
                        "door `{}`: unknown area `{a}` (anti-passback off for it)",
                        door.id
                    ));
                    None
                }
            },
        };
        door_idx.insert(&door.id, t.doors.len());
        t.doors.push(DoorEntry {
            id: Box::from(door.id.as_str()),
            site,
            mode: door.mode,
            unlock_ms: door.unlock_ms,
            area,
        });
    }

    for reader in small.readers.values() {
        match door_idx.get(reader.door.as_str()) {
            Some(&door) => {
                t.readers.insert(
                    Box::from(reader.id.as_str()),
                    ReaderEntry {
                        door,
                        direction: reader.direction,
                    },
                );
            }
            None => problems.push(format!(
                "reader `{}`: unknown door `{}` (reader left out)",
                reader.id, reader.door
            )),
        }
    }

    let mut schedule_idx = HashMap::<&str, usize, FixedState>::default();
    for schedule in small.schedules.values() {
        let mut dates = Vec::new();
        for set in &schedule.holiday_sets {
            match small.holiday_sets.get(set) {
                Some(h) => dates.extend(h.dates.iter().copied()),
                None => problems.push(format!(
                    "schedule `{}`: unknown holiday set `{set}` (ignored)",
                    schedule.id
                )),
            }
        }
        match CompiledSchedule::compile(schedule, dates) {
            Ok(compiled) => {
                schedule_idx.insert(&schedule.id, t.schedules.len());
                t.schedules.push(compiled);
            }
            Err(e) => problems.push(format!("schedule `{}`: {e}", schedule.id)),
        }
    }

    let words = t.doors.len().div_ceil(64);
    t.levels = (0..level_ids.len()).map(|_| None).collect();
    for level in small.levels.values() {
        let Some(&schedule) = schedule_idx.get(level.schedule.as_str()) else {
            problems.push(format!(
                "access level `{}`: unknown schedule `{}` (level grants nothing)",
                level.id, level.schedule
            ));
            continue;
        };
        let mut doors = vec![0u64; words].into_boxed_slice();
        let mut missing = Vec::new();
        let mut set = |door: &str, via: String| match door_idx.get(door) {
            Some(&i) => {
                if let Some(w) = doors.get_mut(i / 64) {
                    *w |= 1 << (i % 64);
                }
            }
            None => missing.push(format!(
                "access level `{}`: unknown door `{door}`{via} (ignored)",
                level.id
            )),
        };
        for door in &level.doors {
            set(door, String::new());
        }
        for group in &level.door_groups {
            match small.door_groups.get(group) {
                Some(g) => {
                    for door in &g.doors {
                        set(door, format!(" in group `{group}`"));
                    }
                }
                None => problems.push(format!(
                    "access level `{}`: unknown door group `{group}` (ignored)",
                    level.id
                )),
            }
        }
        problems.append(&mut missing);
        // Numbered in `publish` before this build.
        if let Some(slot) = level_ids
            .get(&level.id)
            .and_then(|n| t.levels.get_mut(n as usize))
        {
            *slot = Some(LevelEntry { doors, schedule });
        }
    }

    t.names = names::Names::of(
        site_idx.iter().map(|(id, &i)| (*id, i)),
        door_idx.iter().map(|(id, &i)| (*id, i)),
        schedule_idx.iter().map(|(id, &i)| (*id, i)),
        level_ids,
    );
    t.problems = problems;
    t
}
