//! The immutable snapshot and the builder that makes new versions of it.
//!
//! A [`Snapshot`] has two parts with different update strategies:
//!
//! ```text
//!   Snapshot ─┬─ Arc<Topology>   sites, doors, readers, areas, schedules,
//!             │                  holidays, door groups, access levels:
//!             │                  thousands of rows, rebuilt whole on change
//!             └─ CredMap         credential key → credential entry (a hot
//!                                half inline in the table, a cold half with
//!                                an Arc of its holder: status, validity,
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
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{HashMap, HashTable};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::credential::CredentialKey;
use crate::credmap::CredMap;
use crate::model::{
    AccessLevelRecord, AreaRecord, CardholderRecord, Change, CredentialRecord, CredentialStatus,
    Direction, DoorGroupRecord, DoorMode, DoorRecord, HolderStatus, HolidaySetRecord, PassbackMode,
    ReaderRecord, Record, RecordKey, ScheduleRecord, SiteRecord,
};
use crate::pin::PinHash;
use crate::schedule::CompiledSchedule;
pub use crate::validate::ApplyError;
use crate::validate::validate;

mod export;
mod lookup;
mod names;
mod shared;
mod topology;
mod warm;

pub use export::HolderBundle;
pub use lookup::{CredentialView, HolderView, LevelView, ReaderView};
pub use shared::SharedSnapshot;
use topology::build_topology;
pub use warm::CredentialStore;
use warm::Warm;

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
    const ALWAYS: Self = Self {
        from: i64::MIN,
        until: i64::MAX,
    };

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
    problems: Vec<String>,
    /// The ids behind the indices above, for explanations.
    pub(crate) names: names::Names,
}

/// A cardholder as decisions need it, shared by all its credentials.
///
/// Laid out for memory, since there are about as many holders as
/// credentials: the common parts (status, level numbers) are plain, the
/// rare ones (validity windows) are boxed and absent when unused, and an
/// empty boxed slice allocates nothing.
#[derive(Debug)]
pub(crate) struct HolderEntry {
    id: Box<str>,
    /// `None` while no cardholder record exists for this id.
    status: Option<HolderStatus>,
    lockdown_override: bool,
    /// Levels assigned without a validity window, sorted.
    levels: Box<[u32]>,
    /// Validity windows, for the few holders that have any.
    rare: Option<Box<Rare>>,
    /// INVARIANT(holder-arc): the keys of every credential whose entry
    /// holds this entry. The builder's reverse index, kept here so that it
    /// costs no second map.
    creds: Box<[CredentialKey]>,
}

/// The rare parts of a holder, in one allocation.
#[derive(Debug)]
struct Rare {
    /// The holder's own validity.
    validity: Validity,
    /// Assignments with a validity window, sorted by level.
    timed: Box<[AssignmentEntry]>,
}

impl HolderEntry {
    fn new(id: Box<str>, parts: HolderParts) -> Self {
        let (core, assignments, creds) = (parts.core, parts.assignments, parts.creds);
        let levels = assignments
            .iter()
            .filter(|a| a.validity == Validity::ALWAYS)
            .map(|a| a.level)
            .collect();
        let timed: Box<[AssignmentEntry]> = assignments
            .iter()
            .filter(|a| a.validity != Validity::ALWAYS)
            .copied()
            .collect();
        let validity = core.map_or(Validity::ALWAYS, |c| c.validity);
        let rare = (validity != Validity::ALWAYS || !timed.is_empty())
            .then(|| Box::new(Rare { validity, timed }));
        Self {
            id,
            status: core.map(|c| c.status),
            lockdown_override: core.is_some_and(|c| c.lockdown_override),
            levels,
            rare,
            creds: creds.into_boxed_slice(),
        }
    }

    /// The parts, for a change; sorted by level.
    fn parts(&self) -> HolderParts {
        let mut assignments: Vec<AssignmentEntry> = self.assignments().collect();
        assignments.sort_by_key(|a| a.level);
        HolderParts {
            core: self.core(),
            assignments,
            creds: self.creds.to_vec(),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Status, validity and override; `None` without a cardholder record.
    #[inline]
    pub(crate) fn core(&self) -> Option<HolderCore> {
        self.status.map(|status| HolderCore {
            status,
            validity: self.rare.as_ref().map_or(Validity::ALWAYS, |r| r.validity),
            lockdown_override: self.lockdown_override,
        })
    }

    /// Every assignment, in no particular order.
    #[inline]
    pub(crate) fn assignments(&self) -> impl Iterator<Item = AssignmentEntry> + '_ {
        self.levels
            .iter()
            .map(|&level| AssignmentEntry {
                level,
                validity: Validity::ALWAYS,
            })
            .chain(self.rare.iter().flat_map(|r| r.timed.iter().copied()))
    }

    fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.levels.is_empty()
            && self.rare.is_none()
            && self.creds.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HolderCore {
    pub(crate) status: HolderStatus,
    pub(crate) validity: Validity,
    pub(crate) lockdown_override: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AssignmentEntry {
    /// The level's number (see `LevelIds`).
    pub(crate) level: u32,
    pub(crate) validity: Validity,
}

/// A credential as decisions need it, in two halves stored side by side in
/// the credential table (see `credmap`): the hot half beside the key, in
/// the cache line every lookup reads, and the cold half in the next line,
/// read only when the hot half says it is needed. There is one of these
/// per credential, millions of them, so together they are 24 bytes.
#[derive(Clone, Copy)]
pub(crate) struct Cred<'a> {
    pub(crate) hot: Hot,
    /// `Some` for every stored credential. A reference, so finding the
    /// entry does not read it.
    cold: &'a Option<Cold>,
}

/// The credential's status and, when the holder is simple enough, an
/// inline copy of it: most holders have a record, no validity window and at
/// most three assignments without validity windows, to levels numbered
/// below 65,536. 8 bytes: four keys and their hot halves fill a cache line.
///
/// INVARIANT(holder-arc): the holder part is derived from the cold half's
/// holder and refreshed with it. INVARIANT(hot-extras): `EXTRAS` is set
/// exactly when the cold half has extras.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hot {
    pub(crate) status: CredentialStatus,
    /// `LEN_MASK`, `OVERRIDE`, `HOLDER_ACTIVE`, `HOLDER_INACTIVE`, `EXTRAS`.
    flags: u8,
    levels: [u16; FAST_LEVELS],
}

const FAST_LEVELS: usize = 3;
/// How many of `levels` are used.
const LEN_MASK: u8 = 0b11;
const OVERRIDE: u8 = 1 << 2;
/// The holder is inline and active; with `HOLDER_INACTIVE`, inline and
/// inactive; with neither, not inline: read the cold half's holder.
const HOLDER_ACTIVE: u8 = 1 << 3;
const HOLDER_INACTIVE: u8 = 1 << 4;
/// The credential has a validity window or a PIN (in the cold half).
const EXTRAS: u8 = 1 << 5;

impl Hot {
    fn of(status: CredentialStatus, extras: bool, holder: &HolderEntry) -> Self {
        let not_inline = Self {
            status,
            flags: if extras { EXTRAS } else { 0 },
            levels: [0; FAST_LEVELS],
        };
        let Some(core) = holder.core() else {
            return not_inline;
        };
        if holder.rare.is_some() || holder.levels.len() > FAST_LEVELS {
            return not_inline;
        }
        let mut hot = not_inline;
        for (slot, level) in hot.levels.iter_mut().zip(holder.levels.iter()) {
            let Ok(level) = u16::try_from(*level) else {
                return not_inline;
            };
            *slot = level;
        }
        hot.flags |= holder.levels.len() as u8 & LEN_MASK;
        hot.flags |= match core.status {
            HolderStatus::Active => HOLDER_ACTIVE,
            HolderStatus::Inactive => HOLDER_INACTIVE,
        };
        if core.lockdown_override {
            hot.flags |= OVERRIDE;
        }
        hot
    }

    /// Whether the holder is inline.
    #[inline]
    pub(crate) fn is_inline(&self) -> bool {
        self.flags & (HOLDER_ACTIVE | HOLDER_INACTIVE) != 0
    }

    /// The inline holder's core, if it is inline.
    #[inline]
    pub(crate) fn core(&self) -> Option<HolderCore> {
        let status = if self.flags & HOLDER_ACTIVE != 0 {
            HolderStatus::Active
        } else if self.flags & HOLDER_INACTIVE != 0 {
            HolderStatus::Inactive
        } else {
            return None;
        };
        Some(HolderCore {
            status,
            validity: Validity::ALWAYS,
            lockdown_override: self.flags & OVERRIDE != 0,
        })
    }

    /// The inline holder's assignments (empty when not inline).
    #[inline]
    pub(crate) fn assignments(&self) -> impl Iterator<Item = AssignmentEntry> + '_ {
        let len = if self.is_inline() {
            usize::from(self.flags & LEN_MASK)
        } else {
            0
        };
        self.levels.iter().take(len).map(|&level| AssignmentEntry {
            level: level.into(),
            validity: Validity::ALWAYS,
        })
    }

    #[inline]
    fn has_extras(&self) -> bool {
        self.flags & EXTRAS != 0
    }
}

/// The cold half of a credential: its holder, and its extras if it has
/// any. Read for the rare credentials whose hot half is not enough.
#[derive(Debug, Clone)]
pub(crate) struct Cold {
    /// INVARIANT(holder-arc).
    pub(crate) holder: Arc<HolderEntry>,
    /// INVARIANT(hot-extras).
    pub(crate) extras: Option<Arc<CredExtras>>,
}

/// The rarer parts of a credential.
#[derive(Debug)]
pub(crate) struct CredExtras {
    pub(crate) validity: Validity,
    pub(crate) pin: Option<PinHash>,
}

/// The halves of credential record `r`, whose holder entry is `holder`.
fn cred_entry(r: CredentialRecord, holder: Arc<HolderEntry>) -> (Hot, Cold) {
    let validity = Validity::new(r.valid_from, r.valid_until);
    let extras = (validity != Validity::ALWAYS || r.pin.is_some()).then(|| {
        Arc::new(CredExtras {
            validity,
            pin: r.pin,
        })
    });
    let hot = Hot::of(r.status, extras.is_some(), &holder);
    (hot, Cold { holder, extras })
}

impl<'a> Cred<'a> {
    fn new((hot, cold): (Hot, &'a Option<Cold>)) -> Self {
        Self { hot, cold }
    }

    /// The holder's entry; `None` only if the table broke its promise
    /// that every stored credential has a cold half.
    #[inline]
    pub(crate) fn holder(&self) -> Option<&'a HolderEntry> {
        self.cold.as_ref().map(|c| &*c.holder)
    }

    /// The extras, read only when the hot half says there are some.
    #[inline]
    pub(crate) fn extras(&self) -> Option<&'a CredExtras> {
        if !self.hot.has_extras() {
            return None;
        }
        self.cold.as_ref()?.extras.as_deref()
    }

    /// Fails closed: extras announced but missing read as expired.
    #[inline]
    pub(crate) fn validity_at(&self, now_ms: i64) -> Within {
        if !self.hot.has_extras() {
            return Within::Inside;
        }
        self.extras()
            .map_or(Within::After, |e| e.validity.at(now_ms))
    }

    #[inline]
    pub(crate) fn pin(&self) -> Option<&'a PinHash> {
        self.extras().and_then(|e| e.pin.as_ref())
    }
}

/// Numbers for access level ids, so assignments hold a `u32` and
/// decisions index a vector instead of hashing a string. Numbers are never
/// reused or forgotten, so they stay valid across topology rebuilds.
#[derive(Default, Clone)]
struct LevelIds {
    numbers: HashMap<Arc<str>, u32, FixedState>,
}

impl LevelIds {
    fn number(&mut self, id: &str) -> u32 {
        if let Some(&n) = self.numbers.get(id) {
            return n;
        }
        let n = self.numbers.len() as u32;
        self.numbers.insert(Arc::from(id), n);
        n
    }

    fn get(&self, id: &str) -> Option<u32> {
        self.numbers.get(id).copied()
    }

    fn len(&self) -> usize {
        self.numbers.len()
    }
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
    pub(crate) creds: CredMap<Hot, Cold>,
    /// Credentials read in place while the builder is rebuilt (see
    /// [`Snapshot::warm`]); `None` on every snapshot a builder publishes.
    warm: Option<Arc<Warm>>,
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
            creds: CredMap::new(),
            warm: None,
        }
    }

    /// This snapshot, also serving every credential of `store` that its
    /// own table lacks: what a process serves from a memory-mapped
    /// checkpoint while its builder is rebuilt. Meant for a snapshot
    /// published from the small tables only; a store's credential is
    /// compiled on first use exactly as the builder compiles it, against
    /// this snapshot's topology.
    pub fn warm(mut self, store: Arc<dyn CredentialStore>) -> Self {
        self.warm = Some(Arc::new(Warm::new(store, &self.topology)));
        self
    }

    /// Whether this snapshot reads its credentials from a store (see
    /// [`warm`](Self::warm)). Such a snapshot answers decisions and
    /// lookups by card, not lookups by cardholder id.
    pub fn is_warm(&self) -> bool {
        self.warm.is_some()
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
            credentials: self.creds.len() + self.warm.as_ref().map_or(0, |w| w.len()),
            readers: t.readers.len(),
            doors: t.doors.len(),
            access_levels: t.levels.iter().flatten().count(),
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
        self.cred(key).is_some()
    }

    /// The credential under `key`.
    #[inline]
    pub(crate) fn cred(&self, key: &CredentialKey) -> Option<Cred<'_>> {
        match self.creds.get(key) {
            Some(entry) => Some(Cred::new(entry)),
            None => self.warm.as_deref()?.cred(key),
        }
    }

    /// Every credential, in no particular order.
    pub(crate) fn creds(&self) -> impl Iterator<Item = (CredentialKey, Cred<'_>)> {
        self.creds.iter().map(|(k, h, c)| (k, Cred::new((h, c))))
    }

    /// Every credential key, in no particular order (for load generators
    /// and exports).
    pub fn credential_keys(&self) -> impl Iterator<Item = CredentialKey> + '_ {
        self.creds.iter().map(|(k, _, _)| k)
    }

    /// Every reader id, in no particular order.
    pub fn reader_ids(&self) -> impl Iterator<Item = &str> {
        self.topology.readers.keys().map(|k| &**k)
    }

    /// Who and where a request is about, for its access event: the
    /// reader's door and site, the credential's cardholder. Each is `None`
    /// when this snapshot does not know it (an unknown reader or card).
    pub fn subject(&self, reader: &str, credential: &CredentialKey) -> Subject<'_> {
        let t = &*self.topology;
        let door = t.readers.get(reader).and_then(|r| t.doors.get(r.door));
        Subject {
            door: door.map(|d| &*d.id),
            site: door.and_then(|d| t.sites.get(d.site)).map(|s| &*s.id),
            holder: self
                .cred(credential)
                .and_then(|c| c.holder())
                .map(HolderEntry::id),
        }
    }
}

/// Where and who a request is about (see [`Snapshot::subject`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The door of the reader.
    pub door: Option<&'a str>,
    /// The site of that door.
    pub site: Option<&'a str>,
    /// The cardholder of the credential.
    pub holder: Option<&'a str>,
}

#[derive(Default, Clone)]
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

/// A holder's entry taken apart for a change.
struct HolderParts {
    core: Option<HolderCore>,
    assignments: Vec<AssignmentEntry>,
    creds: Vec<CredentialKey>,
}

/// Makes snapshots from records: a full build by applying every record,
/// then one [`publish`](Self::publish); incremental updates by applying
/// changes to the same builder and publishing again.
///
/// Publishing costs O(changes since the last publish), not O(data): the new
/// snapshot shares everything unchanged with the previous one.
///
/// A clone shares every entry with the original (a pointer copy per
/// cardholder: milliseconds at a million) and is independent from then on:
/// what a checkpoint is written from while the original goes on changing.
#[derive(Clone)]
pub struct SnapshotBuilder {
    small: SmallRecords,
    small_dirty: bool,
    topology: Arc<Topology>,
    /// Every holder entry, found by its id.
    holders: HashTable<Arc<HolderEntry>>,
    hasher: RandomState,
    levels: LevelIds,
    creds: CredMap<Hot, Cold>,
    version: u64,
}

impl Default for SnapshotBuilder {
    fn default() -> Self {
        Self::new()
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
            holders: HashTable::new(),
            hasher: RandomState::default(),
            levels: LevelIds::default(),
            creds: CredMap::new(),
            version,
        }
    }

    /// The version of the last published snapshot.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies one change. A record that is invalid on its own (bad time
    /// zone, bad schedule, inverted validity) is refused and changes
    /// nothing; references to other records are resolved at publish time.
    pub fn apply(&mut self, change: Change) -> Result<(), ApplyError> {
        if let Change::Upsert(record) = &change {
            validate(record)?;
        }
        self.apply_valid(change);
        Ok(())
    }

    /// Applies many changes, returning the refused ones with their errors.
    pub fn apply_all(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
    ) -> Vec<(Change, ApplyError)> {
        let mut refused = Vec::new();
        for change in changes {
            // Checked by reference, so a refused change can be handed back
            // without cloning every accepted one.
            if let Change::Upsert(record) = &change
                && let Err(e) = validate(record)
            {
                refused.push((change, e));
                continue;
            }
            self.apply_valid(change);
        }
        refused
    }

    /// Applies a change whose record (if any) passed [`validate`].
    fn apply_valid(&mut self, change: Change) {
        match change {
            Change::Upsert(record) => self.upsert_valid(record),
            Change::Delete(key) => self.delete(key),
        }
    }

    /// Upserts a record that passed [`validate`].
    fn upsert_valid(&mut self, record: Record) {
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
                return;
            }
            Record::Credential(r) => {
                self.upsert_credential(r);
                return;
            }
            Record::Assignment(r) => {
                let entry = AssignmentEntry {
                    level: self.levels.number(&r.level),
                    validity: Validity::new(r.valid_from, r.valid_until),
                };
                self.modify_holder(&r.holder, |h| {
                    match h
                        .assignments
                        .binary_search_by_key(&entry.level, |a| a.level)
                    {
                        Ok(i) => {
                            if let Some(slot) = h.assignments.get_mut(i) {
                                *slot = entry;
                            }
                        }
                        Err(i) => h.assignments.insert(i, entry),
                    }
                });
                return;
            }
        }
        self.small_dirty = true;
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
                self.modify_holder(&id, |h| h.core = None);
                false
            }
            RecordKey::Credential(key) => {
                if let Some((_, Some(old))) = self.creds.remove(&key) {
                    self.modify_holder(old.holder.id(), |h| h.creds.retain(|k| *k != key));
                }
                false
            }
            RecordKey::Assignment { holder, level } => {
                if let Some(level) = self.levels.get(&level) {
                    self.modify_holder(&holder, |h| h.assignments.retain(|a| a.level != level));
                }
                false
            }
        };
        self.small_dirty |= removed;
    }

    fn find_holder(&self, id: &str) -> Option<&Arc<HolderEntry>> {
        let hash = self.hasher.hash_one(id);
        self.holders.find(hash, |e| e.id() == id)
    }

    /// Changes holder `id` (created empty if it does not exist) with `f`,
    /// stores the new entry and points every credential of the holder at
    /// it (INVARIANT(holder-arc)). A holder left with no record, no
    /// assignment and no credential is forgotten. Returns the new entry.
    fn modify_holder(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut HolderParts),
    ) -> Option<Arc<HolderEntry>> {
        let hash = self.hasher.hash_one(id);
        let entry = match self.holders.find_entry(hash, |e| e.id() == id) {
            Ok(mut slot) => {
                // An entry no snapshot and no credential shares (a holder
                // still being built up during a bootstrap) changes in place;
                // being unique, it has no credential entry to repoint.
                if let Some(unique) = Arc::get_mut(slot.get_mut()) {
                    let mut parts = unique.parts();
                    f(&mut parts);
                    *unique = HolderEntry::new(std::mem::take(&mut unique.id), parts);
                    if unique.is_empty() {
                        slot.remove();
                        return None;
                    }
                    return Some(Arc::clone(slot.get()));
                }
                let mut parts = slot.get().parts();
                f(&mut parts);
                let entry = Arc::new(HolderEntry::new(slot.get().id.clone(), parts));
                if entry.is_empty() {
                    slot.remove();
                    return None;
                }
                *slot.get_mut() = Arc::clone(&entry);
                entry
            }
            Err(_) => {
                let mut parts = HolderParts {
                    core: None,
                    assignments: Vec::new(),
                    creds: Vec::new(),
                };
                f(&mut parts);
                let entry = Arc::new(HolderEntry::new(Box::from(id), parts));
                if entry.is_empty() {
                    return None;
                }
                let hasher = &self.hasher;
                self.holders
                    .insert_unique(hash, Arc::clone(&entry), |e| hasher.hash_one(e.id()));
                entry
            }
        };
        for key in &entry.creds {
            self.creds.update(key, |hot, cold| {
                if let Some(cold) = cold {
                    *hot = Hot::of(hot.status, cold.extras.is_some(), &entry);
                    cold.holder = Arc::clone(&entry);
                }
            });
        }
        Some(entry)
    }

    fn upsert_holder(&mut self, r: CardholderRecord) {
        let core = HolderCore {
            status: r.status,
            validity: Validity::new(r.valid_from, r.valid_until),
            lockdown_override: r.lockdown_override,
        };
        self.modify_holder(&r.id, |h| h.core = Some(core));
    }

    fn upsert_credential(&mut self, r: CredentialRecord) {
        let key = r.card;
        let moved_from = self
            .creds
            .get(&key)
            .and_then(|(_, old)| old.as_ref())
            .filter(|old| old.holder.id() != r.holder)
            .map(|old| Arc::clone(&old.holder));
        if let Some(old) = moved_from {
            self.modify_holder(old.id(), |h| h.creds.retain(|k| *k != key));
        }
        let holder = match self.find_holder(&r.holder) {
            Some(h) if h.creds.contains(&key) => Some(Arc::clone(h)),
            _ => self.modify_holder(&r.holder, |h| h.creds.push(key)),
        };
        let Some(holder) = holder else {
            // Cannot happen: the holder now has at least this credential.
            return;
        };
        let (hot, cold) = cred_entry(r, holder);
        self.creds.insert(key, hot, cold);
    }

    /// Makes a new snapshot version of everything applied so far. `as_of`
    /// is the instant the data is known to be current (the snapshot's age
    /// is measured from it).
    pub fn publish(&mut self, as_of: Timestamp) -> Snapshot {
        if self.small_dirty {
            for id in self.small.levels.keys() {
                self.levels.number(id);
            }
            self.topology = Arc::new(build_topology(&self.small, &self.levels));
            self.small_dirty = false;
        }
        self.version += 1;
        Snapshot {
            version: self.version,
            as_of,
            topology: Arc::clone(&self.topology),
            creds: self.creds.clone(),
            warm: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_entries_stay_small() {
        // The credential table's size is the engine's memory footprint.
        assert_eq!(std::mem::size_of::<Hot>(), 8);
        assert_eq!(std::mem::size_of::<Option<Cold>>(), 16);
        assert_eq!(std::mem::size_of::<HolderEntry>(), 64);
    }
}
