//! Checks of one record on its own, before it reaches a builder: ids,
//! time zones, schedules, validity windows. References between records
//! are resolved later, when a snapshot is published (a dangling one can
//! only deny). The admin path checks records here without a builder.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::model::Record;
use crate::schedule::{CompiledSchedule, ScheduleError};

/// Why a record was refused by [`Record::validate`] (and so by
/// [`SnapshotBuilder::apply`](crate::SnapshotBuilder::apply), which leaves
/// the builder unchanged when it returns this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A site names a time zone that is not in the IANA database.
    #[error(
        "site `{site}`: attribute `time_zone`: unknown time zone `{zone}` (use an IANA name like `Europe/Paris`)"
    )]
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
    #[error("{what}: attribute `{attr}` is empty")]
    EmptyId {
        /// Which kind of record.
        what: &'static str,
        /// The attribute (`id`, or `holder` for credentials and
        /// assignments).
        attr: &'static str,
    },
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

impl Record {
    /// Checks the record on its own, as every builder does before applying
    /// it: a record refused here would be refused by every server.
    pub fn validate(&self) -> Result<(), ApplyError> {
        validate(self)
    }
}

pub(crate) fn validate(record: &Record) -> Result<(), ApplyError> {
    let (kind, attr, id) = match record {
        Record::Site(r) => ("site", "id", &r.id),
        Record::Door(r) => ("door", "id", &r.id),
        Record::Reader(r) => ("reader", "id", &r.id),
        Record::Area(r) => ("area", "id", &r.id),
        Record::DoorGroup(r) => ("door group", "id", &r.id),
        Record::Schedule(r) => ("schedule", "id", &r.id),
        Record::HolidaySet(r) => ("holiday set", "id", &r.id),
        Record::AccessLevel(r) => ("access level", "id", &r.id),
        Record::Cardholder(r) => ("cardholder", "id", &r.id),
        Record::Credential(r) => ("credential", "holder", &r.holder),
        Record::Assignment(r) => ("assignment", "holder", &r.holder),
    };
    if id.is_empty() {
        return Err(ApplyError::EmptyId { what: kind, attr });
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
