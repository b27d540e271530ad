//! The small tables compiled for decisions: sites with their time zones,
//! doors, readers, areas, schedules with their holidays, access levels.
//! Their entries, the `Topology` that holds them, and its build from the
//! builder's small records.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::hash_table::Entry;
use hashbrown::{HashMap, HashTable};
use jiff::tz::TimeZone;

use super::builder::{LevelIds, SmallRecords};
use super::short::ShortStr;
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

/// A reader as decisions need it, with what a decision reads of its door
/// and site copied in: one entry read instead of three dependent ones.
/// (The topology is rebuilt whenever any of them changes.)
#[derive(Debug)]
pub(crate) struct ReaderEntry {
    /// Index into `Topology::doors`.
    pub(crate) door: usize,
    /// The door's site, an index into `Topology::sites`.
    pub(crate) site: u32,
    /// The door's anti-passback area, an index into `Topology::areas`.
    pub(crate) area: Option<u32>,
    /// The door's unlock time.
    pub(crate) unlock_ms: u32,
    pub(crate) direction: Direction,
    /// The door's mode.
    pub(crate) mode: DoorMode,
    /// Whether the door's site is in lockdown.
    pub(crate) site_lockdown: bool,
}

/// The readers by id: a table of (id, entry) pairs with the id inside the
/// pair, so that a lookup reads one slot and compares in place (see
/// [`ShortStr::is`]), where a `HashMap<Box<str>, _>` followed a pointer to
/// each candidate's id and called `memcmp` on it.
#[derive(Debug, Default)]
pub(crate) struct Readers {
    table: HashTable<(ShortStr, ReaderEntry)>,
    hasher: FixedState,
}

impl Readers {
    #[inline]
    pub(crate) fn get(&self, id: &str) -> Option<&ReaderEntry> {
        let hash = self.hasher.hash_one(id);
        self.table
            .find(hash, |(key, _)| key.is(id))
            .map(|(_, entry)| entry)
    }

    /// Adds or replaces the reader `id`.
    fn insert(&mut self, id: &str, entry: ReaderEntry) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(id);
        match self.table.entry(
            hash,
            |(key, _)| key.is(id),
            |(key, _)| hasher.hash_one(key.as_str()),
        ) {
            Entry::Occupied(mut slot) => slot.get_mut().1 = entry,
            Entry::Vacant(slot) => drop(slot.insert((ShortStr::new(id), entry))),
        }
    }

    /// Every reader, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &ReaderEntry)> {
        self.table.iter().map(|(id, entry)| (id.as_str(), entry))
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

/// An anti-passback area as decisions need it.
#[derive(Debug)]
pub(crate) struct AreaEntry {
    pub(crate) id: Arc<str>,
    pub(crate) passback: PassbackMode,
    pub(crate) reset_after_ms: Option<i64>,
}

/// An access level as decisions need it: its schedule. Its doors are a
/// row of `Topology::level_doors`.
#[derive(Debug)]
pub(crate) struct LevelEntry {
    pub(crate) schedule: usize,
}

/// Everything but cardholders and credentials, compiled for decisions.
#[derive(Debug, Default)]
pub(crate) struct Topology {
    pub(crate) readers: Readers,
    pub(crate) doors: Vec<DoorEntry>,
    pub(crate) sites: Vec<SiteEntry>,
    pub(crate) areas: Vec<AreaEntry>,
    pub(crate) schedules: Vec<CompiledSchedule>,
    /// Indexed by the builder's level number (see `LevelIds`); `None` for
    /// a number whose level does not exist or does not resolve.
    pub(crate) levels: Vec<Option<LevelEntry>>,
    /// The doors of each level as a bitset, `door_words` words a level,
    /// level after level, all in one allocation: a decision finds the word
    /// from the level number and the door index without reading the level
    /// entry first (one dependent load fewer). Zero for a level that does
    /// not resolve.
    level_doors: Vec<u64>,
    door_words: usize,
    /// References that did not resolve when this topology was built.
    pub(super) problems: Vec<String>,
    /// The ids behind the indices above, for explanations.
    pub(crate) names: names::Names,
}

impl Topology {
    /// Whether access level `level` (its number) covers door `door` (its
    /// index). False for a level that does not exist or does not resolve.
    #[inline]
    pub(crate) fn covers(&self, level: u32, door: usize) -> bool {
        (level as usize)
            .checked_mul(self.door_words)
            .and_then(|row| row.checked_add(door / 64))
            .filter(|_| door / 64 < self.door_words)
            .and_then(|at| self.level_doors.get(at))
            .is_some_and(|w| w & (1 << (door % 64)) != 0)
    }
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
        let found = door_idx.get(reader.door.as_str()).and_then(|&i| {
            let door = t.doors.get(i)?;
            Some((i, door, t.sites.get(door.site)?))
        });
        match found {
            Some((i, door, site)) => {
                t.readers.insert(
                    &reader.id,
                    ReaderEntry {
                        door: i,
                        site: door.site as u32,
                        area: door.area.map(|a| a as u32),
                        unlock_ms: door.unlock_ms,
                        direction: reader.direction,
                        mode: door.mode,
                        site_lockdown: site.lockdown,
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
    t.door_words = words;
    t.level_doors = vec![0; level_ids.len() * words];
    t.levels = (0..level_ids.len()).map(|_| None).collect();
    for level in small.levels.values() {
        let Some(&schedule) = schedule_idx.get(level.schedule.as_str()) else {
            problems.push(format!(
                "access level `{}`: unknown schedule `{}` (level grants nothing)",
                level.id, level.schedule
            ));
            continue;
        };
        let mut doors = vec![0u64; words];
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
        if let Some(n) = level_ids.get(&level.id).map(|n| n as usize)
            && let Some(slot) = t.levels.get_mut(n)
            && let Some(row) = t.level_doors.get_mut(n * words..(n + 1) * words)
        {
            row.copy_from_slice(&doors);
            *slot = Some(LevelEntry { schedule });
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
