//! The builder that makes new versions of the snapshot from records and
//! changes.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{HashMap, HashTable};
use jiff::Timestamp;

use super::holder::{AssignmentEntry, Cold, HolderCore, HolderEntry, Hot, Validity, cred_entry};
use super::short::ShortStr;
use super::topology::{Topology, build_topology};
use super::{FixedState, Snapshot};
use crate::credential::CredentialKey;
use crate::credmap::CredMap;
use crate::model::{
    AccessLevelRecord, AreaRecord, CardholderRecord, Change, CredentialRecord, DoorGroupRecord,
    DoorRecord, HolidaySetRecord, ReaderRecord, Record, RecordKey, ScheduleRecord, SiteRecord,
};
use crate::validate::{ApplyError, validate};

type RandomState = foldhash::fast::RandomState;

/// Numbers for access level ids, so assignments hold a `u32` and
/// decisions index a vector instead of hashing a string. Numbers are never
/// reused or forgotten, so they stay valid across topology rebuilds.
#[derive(Default, Clone)]
pub(super) struct LevelIds {
    pub(super) numbers: HashMap<Arc<str>, u32, FixedState>,
}

impl LevelIds {
    pub(super) fn number(&mut self, id: &str) -> u32 {
        if let Some(&n) = self.numbers.get(id) {
            return n;
        }
        let n = self.numbers.len() as u32;
        self.numbers.insert(Arc::from(id), n);
        n
    }

    pub(super) fn get(&self, id: &str) -> Option<u32> {
        self.numbers.get(id).copied()
    }

    pub(super) fn len(&self) -> usize {
        self.numbers.len()
    }
}

#[derive(Default, Clone)]
pub(super) struct SmallRecords {
    pub(super) sites: BTreeMap<String, SiteRecord>,
    pub(super) doors: BTreeMap<String, DoorRecord>,
    pub(super) readers: BTreeMap<String, ReaderRecord>,
    pub(super) areas: BTreeMap<String, AreaRecord>,
    pub(super) door_groups: BTreeMap<String, DoorGroupRecord>,
    pub(super) schedules: BTreeMap<String, ScheduleRecord>,
    pub(super) holiday_sets: BTreeMap<String, HolidaySetRecord>,
    pub(super) levels: BTreeMap<String, AccessLevelRecord>,
}

/// A holder's entry taken apart for a change.
pub(super) struct HolderParts {
    pub(super) core: Option<HolderCore>,
    pub(super) assignments: Vec<AssignmentEntry>,
    pub(super) creds: Vec<CredentialKey>,
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
    pub(super) small: SmallRecords,
    small_dirty: bool,
    topology: Arc<Topology>,
    /// Every holder entry, found by its id.
    pub(super) holders: HashTable<Arc<HolderEntry>>,
    pub(super) hasher: RandomState,
    pub(super) levels: LevelIds,
    pub(super) creds: CredMap<Hot, Cold>,
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
                self.modify_holder(r.holder, |h| {
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
                self.modify_holder(id, |h| h.core = None);
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
                    self.modify_holder(holder, |h| h.assignments.retain(|a| a.level != level));
                }
                false
            }
        };
        self.small_dirty |= removed;
    }

    pub(super) fn find_holder(&self, id: &str) -> Option<&Arc<HolderEntry>> {
        let hash = self.hasher.hash_one(id);
        self.holders.find(hash, |e| e.id() == id)
    }

    /// Changes holder `id` (created empty if it does not exist) with `f`,
    /// stores the new entry and points every credential of the holder at
    /// it (INVARIANT(holder-arc)). A holder left with no record, no
    /// assignment and no credential is forgotten. Returns the new entry.
    ///
    /// `id` may be owned: a new holder keeps it instead of a copy (a
    /// million of them are made by a large file's load).
    fn modify_holder<I: AsRef<str> + Into<Box<str>>>(
        &mut self,
        id: I,
        f: impl FnOnce(&mut HolderParts),
    ) -> Option<Arc<HolderEntry>> {
        let id_owned = id;
        let id = id_owned.as_ref();
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
                let entry = Arc::new(HolderEntry::new(ShortStr::new(id_owned), parts));
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
                    *hot = Hot::of(hot.status, cold.extras.as_deref(), &entry);
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
        self.modify_holder(r.id, |h| h.core = Some(core));
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
            _ => self.modify_holder(r.holder.as_str(), |h| h.creds.push(key)),
        };
        let Some(holder) = holder else {
            // Cannot happen: the holder now has at least this credential.
            return;
        };
        let (hot, cold) = cred_entry(r, holder);
        self.creds.insert(key, hot, cold);
    }

    /// Room for `n` more cardholders, for a load that knows how many come.
    pub(crate) fn reserve_holders(&mut self, n: usize) {
        let hasher = &self.hasher;
        self.holders.reserve(n, |e| hasher.hash_one(e.id()));
    }

    /// Whether a record with `record`'s key was applied: for a reader that
    /// applies a file's records as they come and must refuse duplicates.
    pub(crate) fn holds_key_of(&self, record: &Record) -> bool {
        let small = &self.small;
        match record {
            Record::Site(r) => small.sites.contains_key(&r.id),
            Record::Door(r) => small.doors.contains_key(&r.id),
            Record::Reader(r) => small.readers.contains_key(&r.id),
            Record::Area(r) => small.areas.contains_key(&r.id),
            Record::DoorGroup(r) => small.door_groups.contains_key(&r.id),
            Record::Schedule(r) => small.schedules.contains_key(&r.id),
            Record::HolidaySet(r) => small.holiday_sets.contains_key(&r.id),
            Record::AccessLevel(r) => small.levels.contains_key(&r.id),
            Record::Cardholder(r) => self.find_holder(&r.id).is_some_and(|h| h.core().is_some()),
            Record::Credential(r) => self.creds.get(&r.card).is_some(),
            Record::Assignment(r) => self.levels.get(&r.level).is_some_and(|level| {
                self.find_holder(&r.holder)
                    .is_some_and(|h| h.assignments().any(|a| a.level == level))
            }),
        }
    }

    /// Whether every credential and assignment applied names a cardholder
    /// with a record, and every assignment an access level with one (as a
    /// site file must; a table may hold either before the other).
    pub(crate) fn references_resolve(&self) -> bool {
        let defined: std::collections::HashSet<u32> = self
            .small
            .levels
            .keys()
            .filter_map(|id| self.levels.get(id))
            .collect();
        self.holders
            .iter()
            .all(|h| h.core().is_some() && h.assignments().all(|a| defined.contains(&a.level)))
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
