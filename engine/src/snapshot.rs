//! The immutable snapshot and the builder that makes new versions of it.
//!
//! A [`Snapshot`] has two parts with different update strategies:
//!
//! ```text
//!   Snapshot ─┬─ Arc<Topology>   sites, doors, readers, areas, schedules,
//!             │                  holidays, door groups, access levels:
//!             │                  thousands of rows, rebuilt whole on change
//!             └─ ShardedMap      credential key → credential entry, each with
//!                                an Arc of its holder (status, validity,
//!                                level assignments): millions of rows,
//!                                changed one entry at a time by path copying
//! ```
//!
//! INVARIANT(holder-arc): every credential entry's holder `Arc` is the
//! current entry of that holder in the builder. The builder keeps a reverse
//! index (holder → credential keys) and replaces the `Arc` in every
//! credential of a holder whenever the holder or one of its assignments
//! changes.
//!
//! INVARIANT(topology-indices): door, site, area and schedule indices inside
//! a [`Topology`] refer to that same topology; they are never kept across
//! rebuilds.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use hashbrown::HashMap;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::credential::CredentialKey;
use crate::model::{
    AccessLevelRecord, AreaRecord, CardholderRecord, Change, CredentialRecord, CredentialStatus,
    Direction, DoorGroupRecord, DoorMode, DoorRecord, HolderStatus, HolidaySetRecord, PassbackMode,
    ReaderRecord, Record, RecordKey, ScheduleRecord, SiteRecord,
};
use crate::pin::PinHash;
use crate::schedule::{CompiledSchedule, ScheduleError};
use crate::shard::ShardedMap;

type FixedState = foldhash::fast::FixedState;
type RandomState = foldhash::fast::RandomState;

/// A validity window in milliseconds since the epoch: `from` inclusive,
/// `until` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Validity {
    from: i64,
    until: i64,
}

/// Where an instant lies relative to a validity window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Within {
    Before,
    Inside,
    After,
}

impl Validity {
    fn new(from: Option<Timestamp>, until: Option<Timestamp>) -> Self {
        Self {
            from: from.map_or(i64::MIN, |t| t.as_millisecond()),
            until: until.map_or(i64::MAX, |t| t.as_millisecond()),
        }
    }

    #[inline]
    pub(crate) fn at(&self, now_ms: i64) -> Within {
        if now_ms < self.from {
            Within::Before
        } else if now_ms >= self.until {
            Within::After
        } else {
            Within::Inside
        }
    }
}

/// A site as decisions need it.
#[derive(Debug)]
pub(crate) struct SiteEntry {
    pub(crate) tz: TimeZone,
    pub(crate) lockdown: bool,
}

/// A door as decisions need it.
#[derive(Debug)]
pub(crate) struct DoorEntry {
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
    pub(crate) levels: HashMap<Box<str>, LevelEntry, FixedState>,
    /// References that did not resolve when this topology was built.
    problems: Vec<String>,
}

/// A cardholder as decisions need it, shared by all its credentials.
#[derive(Debug)]
pub(crate) struct HolderEntry {
    pub(crate) id: Arc<str>,
    /// `None` while no cardholder record exists for this id.
    pub(crate) core: Option<HolderCore>,
    /// Sorted by level id, so the entry is a function of the records alone.
    pub(crate) assignments: Box<[AssignmentEntry]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HolderCore {
    pub(crate) status: HolderStatus,
    pub(crate) validity: Validity,
    pub(crate) lockdown_override: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct AssignmentEntry {
    pub(crate) level: Arc<str>,
    pub(crate) validity: Validity,
}

/// A credential as decisions need it.
#[derive(Debug, Clone)]
pub(crate) struct CredEntry {
    pub(crate) status: CredentialStatus,
    pub(crate) validity: Validity,
    pub(crate) pin: Option<Arc<PinHash>>,
    pub(crate) holder: Arc<HolderEntry>,
}

/// An immutable, versioned view of all the data, made by a
/// [`SnapshotBuilder`] and read by [`decide`](crate::decide).
///
/// Cloning is cheap (a few `Arc`s); snapshots share unchanged data.
#[derive(Clone)]
pub struct Snapshot {
    version: u64,
    as_of: Timestamp,
    pub(crate) topology: Arc<Topology>,
    pub(crate) creds: ShardedMap<CredentialKey, CredEntry, RandomState>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("as_of", &self.as_of)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counts of what a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotStats {
    /// Credentials.
    pub credentials: usize,
    /// Readers that resolve to a door.
    pub readers: usize,
    /// Doors that resolve to a site.
    pub doors: usize,
    /// Access levels that resolve to a schedule.
    pub access_levels: usize,
    /// References that did not resolve (see [`Snapshot::problems`]).
    pub problems: usize,
}

impl Snapshot {
    /// A snapshot with no data, version 0: every decision is a deny.
    pub fn empty(as_of: Timestamp) -> Self {
        Self {
            version: 0,
            as_of,
            topology: Arc::default(),
            creds: ShardedMap::with_hasher(RandomState::default()),
        }
    }

    /// The version; a builder's versions only go up.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The instant the data was known to be current, as given by the
    /// publisher; `now - as_of` is the snapshot's age.
    pub fn as_of(&self) -> Timestamp {
        self.as_of
    }

    /// What the snapshot holds.
    pub fn stats(&self) -> SnapshotStats {
        let t = &self.topology;
        SnapshotStats {
            credentials: self.creds.len(),
            readers: t.readers.len(),
            doors: t.doors.len(),
            access_levels: t.levels.len(),
            problems: t.problems.len(),
        }
    }

    /// References between sites, doors, readers, areas, schedules, holiday
    /// sets, door groups and levels that did not resolve. Each one can only
    /// make something deny, never grant.
    pub fn problems(&self) -> &[String] {
        &self.topology.problems
    }

    /// Whether a credential with this key exists.
    pub fn has_credential(&self, key: &CredentialKey) -> bool {
        self.creds.get(key).is_some()
    }

    /// Every credential key, in no particular order (for load generators
    /// and exports).
    pub fn credential_keys(&self) -> impl Iterator<Item = &CredentialKey> {
        self.creds.iter().map(|(k, _)| k)
    }

    /// Every reader id, in no particular order.
    pub fn reader_ids(&self) -> impl Iterator<Item = &str> {
        self.topology.readers.keys().map(|k| &**k)
    }
}

/// The current snapshot, shared between the writer that publishes new
/// versions and the decisions that read it.
///
/// Reading never blocks and never waits for the writer (`arc-swap`).
#[derive(Debug)]
pub struct SharedSnapshot(ArcSwap<Snapshot>);

impl SharedSnapshot {
    /// Starts with `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self(ArcSwap::from_pointee(snapshot))
    }

    /// The current snapshot. Hold the guard for one decision, not longer:
    /// a long-held guard keeps an old version alive.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.0.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Replaces the current snapshot.
    pub fn store(&self, snapshot: Arc<Snapshot>) {
        self.0.store(snapshot);
    }
}

/// Why a record was refused by [`SnapshotBuilder::apply`]. The builder is
/// unchanged when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A site names a time zone that is not in the IANA database.
    #[error("site `{site}`: unknown time zone `{zone}` (use an IANA name like `Europe/Paris`)")]
    TimeZone {
        /// The site id.
        site: String,
        /// The zone name given.
        zone: String,
    },
    /// A schedule's intervals are invalid.
    #[error("schedule `{schedule}`: {source}")]
    Schedule {
        /// The schedule id.
        schedule: String,
        /// What is wrong.
        source: ScheduleError,
    },
    /// A validity window ends before it starts.
    #[error("{what}: valid_until is before valid_from")]
    Validity {
        /// Which record.
        what: String,
    },
    /// An id is empty.
    #[error("{what}: id is empty")]
    EmptyId {
        /// Which kind of record.
        what: &'static str,
    },
}

#[derive(Default)]
struct SmallRecords {
    sites: BTreeMap<String, SiteRecord>,
    doors: BTreeMap<String, DoorRecord>,
    readers: BTreeMap<String, ReaderRecord>,
    areas: BTreeMap<String, AreaRecord>,
    door_groups: BTreeMap<String, DoorGroupRecord>,
    schedules: BTreeMap<String, ScheduleRecord>,
    holiday_sets: BTreeMap<String, HolidaySetRecord>,
    levels: BTreeMap<String, AccessLevelRecord>,
}

/// Per-holder state the builder needs and decisions do not.
struct HolderState {
    entry: Arc<HolderEntry>,
    assignments: BTreeMap<Arc<str>, Validity>,
    /// INVARIANT(holder-arc): the keys of every credential whose entry holds
    /// `entry`.
    creds: Vec<CredentialKey>,
}

/// Makes snapshots from records: a full build by applying every record,
/// then one [`publish`](Self::publish); incremental updates by applying
/// changes to the same builder and publishing again.
///
/// Publishing costs O(changes since the last publish), not O(data): the new
/// snapshot shares everything unchanged with the previous one.
pub struct SnapshotBuilder {
    small: SmallRecords,
    small_dirty: bool,
    topology: Arc<Topology>,
    holders: HashMap<Arc<str>, HolderState, RandomState>,
    creds: ShardedMap<CredentialKey, CredEntry, RandomState>,
    version: u64,
}

impl Default for SnapshotBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn check_validity(
    from: Option<Timestamp>,
    until: Option<Timestamp>,
    what: impl FnOnce() -> String,
) -> Result<(), ApplyError> {
    match (from, until) {
        (Some(f), Some(u)) if u < f => Err(ApplyError::Validity { what: what() }),
        _ => Ok(()),
    }
}

impl SnapshotBuilder {
    /// An empty builder; its first published version is 1.
    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// An empty builder whose first published version is `version + 1`,
    /// for a process that must keep versions monotonic across restarts.
    pub fn starting_at(version: u64) -> Self {
        Self {
            small: SmallRecords::default(),
            small_dirty: true,
            topology: Arc::default(),
            holders: HashMap::with_hasher(RandomState::default()),
            creds: ShardedMap::with_hasher(RandomState::default()),
            version,
        }
    }

    /// The version of the last published snapshot.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of credentials currently held.
    pub fn credential_count(&self) -> usize {
        self.creds.len()
    }

    /// Applies one change. A record that is invalid on its own (bad time
    /// zone, bad schedule, inverted validity) is refused and changes
    /// nothing; references to other records are resolved at publish time.
    pub fn apply(&mut self, change: Change) -> Result<(), ApplyError> {
        match change {
            Change::Upsert(record) => self.upsert(record),
            Change::Delete(key) => {
                self.delete(key);
                Ok(())
            }
        }
    }

    /// Applies many changes, returning the refused ones with their errors.
    pub fn apply_all(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
    ) -> Vec<(Change, ApplyError)> {
        let mut refused = Vec::new();
        for change in changes {
            if let Err(e) = self.apply(change.clone()) {
                refused.push((change, e));
            }
        }
        refused
    }

    fn upsert(&mut self, record: Record) -> Result<(), ApplyError> {
        validate(&record)?;
        let small = &mut self.small;
        match record {
            Record::Site(r) => drop(small.sites.insert(r.id.clone(), r)),
            Record::Door(r) => drop(small.doors.insert(r.id.clone(), r)),
            Record::Reader(r) => drop(small.readers.insert(r.id.clone(), r)),
            Record::Area(r) => drop(small.areas.insert(r.id.clone(), r)),
            Record::DoorGroup(r) => drop(small.door_groups.insert(r.id.clone(), r)),
            Record::Schedule(r) => drop(small.schedules.insert(r.id.clone(), r)),
            Record::HolidaySet(r) => drop(small.holiday_sets.insert(r.id.clone(), r)),
            Record::AccessLevel(r) => drop(small.levels.insert(r.id.clone(), r)),
            Record::Cardholder(r) => {
                self.upsert_holder(r);
                return Ok(());
            }
            Record::Credential(r) => {
                self.upsert_credential(r);
                return Ok(());
            }
            Record::Assignment(r) => {
                let validity = Validity::new(r.valid_from, r.valid_until);
                let state = self.holder_state(&r.holder);
                state.assignments.insert(Arc::from(r.level), validity);
                self.refresh_holder(&r.holder);
                return Ok(());
            }
        }
        self.small_dirty = true;
        Ok(())
    }

    fn delete(&mut self, key: RecordKey) {
        let small = &mut self.small;
        let removed = match key {
            RecordKey::Site(id) => small.sites.remove(&id).is_some(),
            RecordKey::Door(id) => small.doors.remove(&id).is_some(),
            RecordKey::Reader(id) => small.readers.remove(&id).is_some(),
            RecordKey::Area(id) => small.areas.remove(&id).is_some(),
            RecordKey::DoorGroup(id) => small.door_groups.remove(&id).is_some(),
            RecordKey::Schedule(id) => small.schedules.remove(&id).is_some(),
            RecordKey::HolidaySet(id) => small.holiday_sets.remove(&id).is_some(),
            RecordKey::AccessLevel(id) => small.levels.remove(&id).is_some(),
            RecordKey::Cardholder(id) => {
                if let Some(state) = self.holders.get_mut(id.as_str()) {
                    state.entry = Arc::new(HolderEntry {
                        id: Arc::clone(&state.entry.id),
                        core: None,
                        assignments: state.entry.assignments.clone(),
                    });
                    self.refresh_holder(&id);
                }
                false
            }
            RecordKey::Credential(key) => {
                if let Some(old) = self.creds.remove(&key) {
                    self.unlink_credential(&old.holder.id, &key);
                }
                false
            }
            RecordKey::Assignment { holder, level } => {
                if let Some(state) = self.holders.get_mut(holder.as_str())
                    && state.assignments.remove(level.as_str()).is_some()
                {
                    self.refresh_holder(&holder);
                }
                false
            }
        };
        self.small_dirty |= removed;
    }

    fn holder_state(&mut self, id: &str) -> &mut HolderState {
        if !self.holders.contains_key(id) {
            let id: Arc<str> = Arc::from(id);
            let state = HolderState {
                entry: Arc::new(HolderEntry {
                    id: Arc::clone(&id),
                    core: None,
                    assignments: Box::new([]),
                }),
                assignments: BTreeMap::new(),
                creds: Vec::new(),
            };
            self.holders.insert(id, state);
        }
        // Just inserted if it was missing.
        self.holders
            .get_mut(id)
            .unwrap_or_else(|| unreachable!("holder state inserted above"))
    }

    fn upsert_holder(&mut self, r: CardholderRecord) {
        let core = HolderCore {
            status: r.status,
            validity: Validity::new(r.valid_from, r.valid_until),
            lockdown_override: r.lockdown_override,
        };
        let state = self.holder_state(&r.id);
        state.entry = Arc::new(HolderEntry {
            id: Arc::clone(&state.entry.id),
            core: Some(core),
            assignments: state.entry.assignments.clone(),
        });
        self.refresh_holder(&r.id);
    }

    /// Rebuilds a holder's entry from its state and points its credentials
    /// at it (INVARIANT(holder-arc)); forgets a holder with nothing left.
    fn refresh_holder(&mut self, id: &str) {
        let Some(state) = self.holders.get_mut(id) else {
            return;
        };
        let assignments: Box<[AssignmentEntry]> = state
            .assignments
            .iter()
            .map(|(level, validity)| AssignmentEntry {
                level: Arc::clone(level),
                validity: *validity,
            })
            .collect();
        let entry = Arc::new(HolderEntry {
            id: Arc::clone(&state.entry.id),
            core: state.entry.core,
            assignments,
        });
        state.entry = Arc::clone(&entry);
        if state.entry.core.is_none() && state.assignments.is_empty() && state.creds.is_empty() {
            self.holders.remove(id);
            return;
        }
        for key in &state.creds {
            self.creds
                .update(key, |cred| cred.holder = Arc::clone(&entry));
        }
    }

    fn upsert_credential(&mut self, r: CredentialRecord) {
        let key = r.card;
        let holder = {
            let state = self.holder_state(&r.holder);
            if !state.creds.contains(&key) {
                state.creds.push(key);
            }
            Arc::clone(&state.entry)
        };
        let entry = CredEntry {
            status: r.status,
            validity: Validity::new(r.valid_from, r.valid_until),
            pin: r.pin.map(Arc::new),
            holder,
        };
        if let Some(old) = self.creds.insert(key, entry)
            && *old.holder.id != *r.holder
        {
            self.unlink_credential(&old.holder.id, &key);
        }
    }

    fn unlink_credential(&mut self, holder: &str, key: &CredentialKey) {
        if let Some(state) = self.holders.get_mut(holder) {
            state.creds.retain(|k| k != key);
            if state.entry.core.is_none() && state.assignments.is_empty() && state.creds.is_empty()
            {
                self.holders.remove(holder);
            }
        }
    }

    /// Makes a new snapshot version of everything applied so far. `as_of`
    /// is the instant the data is known to be current (the snapshot's age
    /// is measured from it).
    pub fn publish(&mut self, as_of: Timestamp) -> Snapshot {
        if self.small_dirty {
            self.topology = Arc::new(build_topology(&self.small));
            self.small_dirty = false;
        }
        self.version += 1;
        Snapshot {
            version: self.version,
            as_of,
            topology: Arc::clone(&self.topology),
            creds: self.creds.clone(),
        }
    }
}

pub(crate) fn validate(record: &Record) -> Result<(), ApplyError> {
    let (kind, id) = match record {
        Record::Site(r) => ("site", &r.id),
        Record::Door(r) => ("door", &r.id),
        Record::Reader(r) => ("reader", &r.id),
        Record::Area(r) => ("area", &r.id),
        Record::DoorGroup(r) => ("door group", &r.id),
        Record::Schedule(r) => ("schedule", &r.id),
        Record::HolidaySet(r) => ("holiday set", &r.id),
        Record::AccessLevel(r) => ("access level", &r.id),
        Record::Cardholder(r) => ("cardholder", &r.id),
        Record::Credential(r) => ("credential holder", &r.holder),
        Record::Assignment(r) => ("assignment holder", &r.holder),
    };
    if id.is_empty() {
        return Err(ApplyError::EmptyId { what: kind });
    }
    match record {
        Record::Site(r) => {
            TimeZone::get(&r.time_zone).map_err(|_| ApplyError::TimeZone {
                site: r.id.clone(),
                zone: r.time_zone.clone(),
            })?;
        }
        Record::Schedule(r) => {
            CompiledSchedule::compile(r, []).map_err(|source| ApplyError::Schedule {
                schedule: r.id.clone(),
                source,
            })?;
        }
        Record::Cardholder(r) => check_validity(r.valid_from, r.valid_until, || {
            format!("cardholder `{}`", r.id)
        })?,
        Record::Credential(r) => check_validity(r.valid_from, r.valid_until, || {
            format!("credential `{}`", r.card)
        })?,
        Record::Assignment(r) => check_validity(r.valid_from, r.valid_until, || {
            format!("assignment of `{}` to `{}`", r.level, r.holder)
        })?,
        _ => {}
    }
    Ok(())
}

/// Builds the compiled topology from the small records. A reference that
/// does not resolve leaves the referring entry out (or the reference
/// ignored) and is listed in `problems`: it can only cause denies.
fn build_topology(small: &SmallRecords) -> Topology {
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
        t.levels
            .insert(Box::from(level.id.as_str()), LevelEntry { doors, schedule });
    }

    t.problems = problems;
    t
}
