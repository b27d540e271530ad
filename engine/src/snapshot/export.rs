//! The builder's state as records again, for checkpoints: what was applied
//! and not deleted, in a form [`SnapshotBuilder::apply`] takes back.
//!
//! Holders and credentials are kept as compact entries, not as records, so
//! their records are made anew here; validity windows come back at the
//! millisecond precision decisions use.

use std::sync::Arc;

use jiff::Timestamp;

use super::{AssignmentEntry, SnapshotBuilder, Validity};
use crate::model::{AssignmentRecord, CardholderRecord, CredentialRecord, Record};

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

impl SnapshotBuilder {
    /// Every record applied and not deleted since the builder was made:
    /// the small tables first, then cardholders with their assignments,
    /// then credentials. Applying them to an empty builder makes a builder
    /// that decides exactly like this one.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let mut level_names: Vec<Option<Arc<str>>> = vec![None; self.levels.len()];
        for (name, &n) in &self.levels.numbers {
            if let Some(slot) = level_names.get_mut(n as usize) {
                *slot = Some(Arc::clone(name));
            }
        }
        let s = &self.small;
        let small = (s.sites.values().cloned().map(Record::Site))
            .chain(s.doors.values().cloned().map(Record::Door))
            .chain(s.readers.values().cloned().map(Record::Reader))
            .chain(s.areas.values().cloned().map(Record::Area))
            .chain(s.door_groups.values().cloned().map(Record::DoorGroup))
            .chain(s.schedules.values().cloned().map(Record::Schedule))
            .chain(s.holiday_sets.values().cloned().map(Record::HolidaySet))
            .chain(s.levels.values().cloned().map(Record::AccessLevel));
        let holders = self.holders.iter().flat_map(move |h| {
            let core = h.core().map(|c| {
                Record::Cardholder(CardholderRecord {
                    id: h.id().to_owned(),
                    status: c.status,
                    valid_from: c.validity.start(),
                    valid_until: c.validity.end(),
                    lockdown_override: c.lockdown_override,
                })
            });
            let names = level_names.clone();
            let assignments = h.assignments().filter_map(move |a: AssignmentEntry| {
                let level = names.get(a.level as usize)?.as_ref()?;
                Some(Record::Assignment(AssignmentRecord {
                    holder: h.id().to_owned(),
                    level: level.to_string(),
                    valid_from: a.validity.start(),
                    valid_until: a.validity.end(),
                }))
            });
            core.into_iter().chain(assignments)
        });
        let creds = self.creds.iter().map(|(key, entry)| {
            let validity = entry
                .extras
                .as_ref()
                .map_or(Validity::ALWAYS, |e| e.validity);
            Record::Credential(CredentialRecord {
                card: *key,
                holder: entry.holder.id().to_owned(),
                status: entry.hot.status,
                valid_from: validity.start(),
                valid_until: validity.end(),
                pin: entry.pin().cloned(),
            })
        });
        small.chain(holders).chain(creds)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Change, SiteFile, SnapshotBuilder};

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
        let mut a: Vec<_> = builder.records().map(|r| format!("{r:?}")).collect();
        let mut b: Vec<_> = again.records().map(|r| format!("{r:?}")).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // Every record of the file comes back (the example has whole-ms times).
        let mut original: Vec<_> = site.records.iter().map(|r| format!("{r:?}")).collect();
        original.sort();
        assert_eq!(a, original);
    }
}
