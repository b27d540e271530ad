//! The builder's state as records again, for checkpoints: what was applied
//! and not deleted, in a form the builder takes back.
//!
//! Holders and credentials are kept as compact entries, not as records, so
//! their records are made anew here; validity windows come back at the
//! millisecond precision decisions use. They come grouped by cardholder
//! ([`HolderBundle`]), which is how [`SnapshotBuilder::apply_bundle`]
//! takes them back fastest: one holder entry made once, its credentials
//! inserted next to it while it is in cache.

use std::hash::BuildHasher;
use std::sync::Arc;

use jiff::Timestamp;

use super::SnapshotBuilder;
use super::builder::HolderParts;
use super::holder::{AssignmentEntry, Cred, HolderCore, HolderEntry, Validity, cred_entry};
use super::short::ShortStr;
use crate::model::{AssignmentRecord, CardholderRecord, CredentialRecord, Record};
use crate::snapshot::ApplyError;
use crate::validate::validate;

fn bound(ms: i64, open: i64) -> Option<Timestamp> {
    (ms != open)
        .then(|| Timestamp::from_millisecond(ms).ok())
        .flatten()
}

impl Validity {
    fn start(self) -> Option<Timestamp> {
        bound(self.from, i64::MIN)
    }
    fn end(self) -> Option<Timestamp> {
        bound(self.until, i64::MAX)
    }
}

/// One cardholder id with everything that hangs off it: its record (if
/// any), its level assignments and its credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderBundle {
    /// The cardholder id.
    pub id: String,
    /// The cardholder record; `None` when only assignments or credentials
    /// name this id.
    pub holder: Option<CardholderRecord>,
    /// Its level assignments.
    pub assignments: Vec<AssignmentRecord>,
    /// Its credentials.
    pub credentials: Vec<CredentialRecord>,
}

impl HolderBundle {
    /// The bundle's records, one by one.
    pub fn into_records(self) -> impl Iterator<Item = Record> {
        (self.holder.map(Record::Cardholder).into_iter())
            .chain(self.assignments.into_iter().map(Record::Assignment))
            .chain(self.credentials.into_iter().map(Record::Credential))
    }
}

impl SnapshotBuilder {
    /// Every record applied and not deleted since the builder was made:
    /// the small tables first, then each cardholder with its assignments
    /// and credentials. Applying them to an empty builder makes a builder
    /// that decides exactly like this one.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.small_records()
            .chain(self.bundles().flat_map(HolderBundle::into_records))
    }

    /// The records of the small tables: sites, doors, readers, areas, door
    /// groups, schedules, holiday sets, access levels.
    pub fn small_records(&self) -> impl Iterator<Item = Record> + '_ {
        let s = &self.small;
        (s.sites.values().cloned().map(Record::Site))
            .chain(s.doors.values().cloned().map(Record::Door))
            .chain(s.readers.values().cloned().map(Record::Reader))
            .chain(s.areas.values().cloned().map(Record::Area))
            .chain(s.door_groups.values().cloned().map(Record::DoorGroup))
            .chain(s.schedules.values().cloned().map(Record::Schedule))
            .chain(s.holiday_sets.values().cloned().map(Record::HolidaySet))
            .chain(s.levels.values().cloned().map(Record::AccessLevel))
    }

    /// Every cardholder id with its record, assignments and credentials.
    pub fn bundles(&self) -> impl Iterator<Item = HolderBundle> + '_ {
        let mut level_names: Vec<Option<Arc<str>>> = vec![None; self.levels.len()];
        for (name, &n) in &self.levels.numbers {
            if let Some(slot) = level_names.get_mut(n as usize) {
                *slot = Some(Arc::clone(name));
            }
        }
        self.holders.iter().map(move |h| {
            let id = h.id().to_owned();
            let holder = h.core().map(|c| CardholderRecord {
                id: id.clone(),
                status: c.status,
                valid_from: c.validity.start(),
                valid_until: c.validity.end(),
                lockdown_override: c.lockdown_override,
            });
            let assignments = h
                .assignments()
                .filter_map(|a: AssignmentEntry| {
                    let level = level_names.get(a.level as usize)?.as_ref()?;
                    Some(AssignmentRecord {
                        holder: id.clone(),
                        level: level.to_string(),
                        valid_from: a.validity.start(),
                        valid_until: a.validity.end(),
                    })
                })
                .collect();
            let credentials = h
                .creds
                .iter()
                .filter_map(|key| {
                    let entry = Cred::new(self.creds.get(key)?);
                    let validity = entry.extras().map_or(Validity::ALWAYS, |e| e.validity);
                    Some(CredentialRecord {
                        card: *key,
                        holder: id.clone(),
                        status: entry.hot.status,
                        valid_from: validity.start(),
                        valid_until: validity.end(),
                        pin: entry.pin().cloned(),
                    })
                })
                .collect();
            HolderBundle {
                id,
                holder,
                assignments,
                credentials,
            }
        })
    }

    /// Applies a whole bundle, as if each of its records were applied; a
    /// record invalid on its own is left out and returned with its error.
    /// A holder id new to the builder (as when restoring a checkpoint) is
    /// built in one step, which is several times faster than record by
    /// record.
    pub fn apply_bundle(&mut self, bundle: HolderBundle) -> Vec<(Record, ApplyError)> {
        let mut refused = Vec::new();
        let fresh = self.find_holder(&bundle.id).is_none()
            && bundle
                .credentials
                .iter()
                .all(|c| self.creds.get(&c.card).is_none())
            && bundle.holder.as_ref().is_none_or(|h| h.id == bundle.id)
            && bundle.assignments.iter().all(|a| a.holder == bundle.id)
            && bundle.credentials.iter().all(|c| c.holder == bundle.id);
        if !fresh {
            for record in bundle.into_records() {
                if let Err(e) = self.apply(crate::Change::Upsert(record.clone())) {
                    refused.push((record, e));
                }
            }
            return refused;
        }
        let levels = &mut self.levels;
        let Some((entry, credentials)) =
            compile_bundle(bundle, |id| levels.number(id), &mut refused)
        else {
            return refused;
        };
        let hash = self.hasher.hash_one(entry.id());
        let hasher = &self.hasher;
        self.holders
            .insert_unique(hash, Arc::clone(&entry), |e| hasher.hash_one(e.id()));
        for c in credentials {
            let card = c.card;
            let (hot, cold) = cred_entry(c, Arc::clone(&entry));
            self.creds.insert(card, hot, cold);
        }
        refused
    }
}

/// Checks and compiles a bundle: the holder's entry and its credential
/// records (the last record of a key winning, as applying them in turn
/// would). A record invalid on its own goes to `refused`. `None` when
/// nothing is left (an entry that would be forgotten at once). Level ids
/// become numbers through `level`.
pub(super) fn compile_bundle(
    bundle: HolderBundle,
    mut level: impl FnMut(&str) -> u32,
    refused: &mut Vec<(Record, ApplyError)>,
) -> Option<(Arc<HolderEntry>, Vec<CredentialRecord>)> {
    let keep = |record: Record, refused: &mut Vec<(Record, ApplyError)>| match validate(&record) {
        Ok(()) => Some(record),
        Err(e) => {
            refused.push((record, e));
            None
        }
    };
    let core = bundle
        .holder
        .and_then(|h| keep(Record::Cardholder(h), refused))
        .and_then(|r| match r {
            Record::Cardholder(h) => Some(HolderCore {
                status: h.status,
                validity: Validity::new(h.valid_from, h.valid_until),
                lockdown_override: h.lockdown_override,
            }),
            _ => None,
        });
    let mut assignments: Vec<AssignmentEntry> = Vec::with_capacity(bundle.assignments.len());
    for a in bundle.assignments {
        let Some(Record::Assignment(a)) = keep(Record::Assignment(a), refused) else {
            continue;
        };
        let entry = AssignmentEntry {
            level: level(&a.level),
            validity: Validity::new(a.valid_from, a.valid_until),
        };
        // The last record of a level wins, as applying them in turn.
        match assignments.iter_mut().find(|x| x.level == entry.level) {
            Some(slot) => *slot = entry,
            None => assignments.push(entry),
        }
    }
    assignments.sort_by_key(|a| a.level);
    let mut credentials: Vec<CredentialRecord> = Vec::with_capacity(bundle.credentials.len());
    for c in bundle.credentials {
        let Some(Record::Credential(c)) = keep(Record::Credential(c), refused) else {
            continue;
        };
        match credentials.iter_mut().find(|x| x.card == c.card) {
            Some(slot) => *slot = c,
            None => credentials.push(c),
        }
    }
    let entry = Arc::new(HolderEntry::new(
        ShortStr::new(bundle.id.as_str()),
        HolderParts {
            core,
            assignments,
            creds: credentials.iter().map(|c| c.card).collect(),
        },
    ));
    if entry.is_empty() {
        return None;
    }
    Some((entry, credentials))
}

#[cfg(test)]
mod tests {
    use crate::synth::{SynthParams, site};
    use crate::{Change, SiteFile, SnapshotBuilder};

    fn sorted(builder: &SnapshotBuilder) -> Vec<String> {
        let mut all: Vec<_> = builder.records().map(|r| format!("{r:?}")).collect();
        all.sort();
        all
    }

    #[test]
    fn records_of_a_builder_rebuild_the_same_records() {
        let text = include_str!("../../../docs/examples/site.toml");
        let site = SiteFile::parse(text).unwrap();
        let mut builder = SnapshotBuilder::new();
        assert!(
            builder
                .apply_all(site.records.iter().cloned().map(Change::Upsert))
                .is_empty()
        );
        let mut again = SnapshotBuilder::new();
        assert!(
            again
                .apply_all(builder.records().map(Change::Upsert))
                .is_empty()
        );
        assert_eq!(sorted(&builder), sorted(&again));
        // Every record of the file comes back (the example has whole-ms times).
        let mut original: Vec<_> = site.records.iter().map(|r| format!("{r:?}")).collect();
        original.sort();
        assert_eq!(sorted(&builder), original);
    }

    #[test]
    fn bundles_rebuild_what_records_do() {
        let mut builder = SnapshotBuilder::new();
        let records = site(&SynthParams {
            holders: 3000,
            ..SynthParams::default()
        });
        assert!(
            builder
                .apply_all(records.into_iter().map(Change::Upsert))
                .is_empty()
        );
        let mut by_bundle = SnapshotBuilder::new();
        assert!(
            by_bundle
                .apply_all(builder.small_records().map(Change::Upsert))
                .is_empty()
        );
        for bundle in builder.bundles() {
            assert!(by_bundle.apply_bundle(bundle).is_empty());
        }
        assert_eq!(sorted(&builder), sorted(&by_bundle));
        // Applying a bundle again takes the record-by-record path, and
        // changes nothing.
        for bundle in builder.bundles().take(50) {
            assert!(by_bundle.apply_bundle(bundle).is_empty());
        }
        assert_eq!(sorted(&builder), sorted(&by_bundle));
    }
}
