//! The data model: one record type per entity, as they are written in a
//! site file and stored in DynamoDB.
//!
//! Records are plain data with string ids that reference each other. They
//! are validated one at a time when they are applied to a
//! [`SnapshotBuilder`](crate::SnapshotBuilder) (a bad time zone, an empty
//! interval), while references between records are resolved when a snapshot
//! is built, so records may arrive in any order. A reference that does not
//! resolve never grants anything.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use serde::{Deserialize, Serialize};

use crate::credential::CredentialKey;
use crate::pin::PinHash;

/// A site: a building or campus with one local time zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRecord {
    /// Unique site id.
    pub id: String,
    /// IANA time zone name, e.g. `America/New_York`. Schedules of doors on
    /// this site are evaluated in this zone's local wall time.
    pub time_zone: String,
    /// Site-wide lockdown: every door of the site denies unless the holder
    /// has the lockdown override privilege.
    #[serde(default, skip_serializing_if = "is_false")]
    pub lockdown: bool,
}

/// How a door behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DoorMode {
    /// Nobody passes, whatever their access.
    Locked,
    /// A valid card with access passes.
    #[default]
    CardOnly,
    /// A valid card with access and the credential's PIN passes.
    CardAndPin,
    /// The door is held open (free access); cards are still evaluated, so
    /// the event trail shows who would have passed.
    Unlocked,
    /// Locked down: only holders with the lockdown override privilege who
    /// also have access pass.
    Lockdown,
}

/// A door.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorRecord {
    /// Unique door id.
    pub id: String,
    /// The site the door belongs to (gives the time zone).
    pub site: String,
    /// The door's mode.
    #[serde(default)]
    pub mode: DoorMode,
    /// How long the lock is released on a grant, in milliseconds.
    #[serde(default = "default_unlock_ms")]
    pub unlock_ms: u32,
    /// The anti-passback area this door leads into (readers with direction
    /// `in`) and out of (direction `out`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
}

fn default_unlock_ms() -> u32 {
    5000
}

/// Which way a reader lets people go through its door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Into the door's anti-passback area.
    #[default]
    In,
    /// Out of the door's anti-passback area.
    Out,
}

/// A reader, bound to one door.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderRecord {
    /// Unique reader id; this is what devices send in requests.
    pub id: String,
    /// The door the reader controls.
    pub door: String,
    /// Entry or exit reader.
    #[serde(default)]
    pub direction: Direction,
}

/// How an area enforces anti-passback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PassbackMode {
    /// No anti-passback: presence is not tracked.
    #[default]
    None,
    /// A violation is granted with a warning reason (for the event trail).
    Soft,
    /// A violation is denied.
    Hard,
}

/// An anti-passback area: the space behind one or more doors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaRecord {
    /// Unique area id.
    pub id: String,
    /// Hard, soft or none.
    #[serde(default)]
    pub passback: PassbackMode,
    /// Timed anti-passback: a holder's presence is forgotten this many
    /// seconds after their last granted passage, so any direction is allowed
    /// again. Absent: presence never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_after_s: Option<u32>,
}

/// A named set of doors, so access levels need not list doors one by one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorGroupRecord {
    /// Unique door group id.
    pub id: String,
    /// The doors in the group.
    pub doors: Vec<String>,
}

/// A day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Day {
    /// Every day, Monday first.
    pub const ALL: [Day; 7] = [
        Day::Mon,
        Day::Tue,
        Day::Wed,
        Day::Thu,
        Day::Fri,
        Day::Sat,
        Day::Sun,
    ];

    /// Monday to Friday.
    pub const WEEKDAYS: [Day; 5] = [Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri];

    /// Monday is 0, Sunday is 6.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A weekly interval of local wall time: on each listed day, from `start`
/// (inclusive) to `end` (exclusive). An `end` before `start` runs past
/// midnight into the next day, so an interval ending at midnight ends at
/// `"00:00"`. `"00:00"` to `"00:00"` is the whole day; any other interval
/// with `start == end` is refused as empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    /// The days the interval starts on.
    pub days: Vec<Day>,
    /// Local start time, minute precision (`"07:30"`).
    pub start: Time,
    /// Local end time, minute precision, exclusive.
    pub end: Time,
}

/// A schedule: when access levels that use it are active.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRecord {
    /// Unique schedule id.
    pub id: String,
    /// Weekly intervals, used on days that are not holidays.
    #[serde(default)]
    pub intervals: Vec<Interval>,
    /// Holiday sets this schedule observes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holiday_sets: Vec<String>,
    /// Intervals used instead of `intervals` on a holiday (only their times
    /// count, their days are ignored). Empty: no access on holidays.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holiday_intervals: Vec<Interval>,
}

/// A set of holiday dates, in the local calendar of the door's site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolidaySetRecord {
    /// Unique holiday set id.
    pub id: String,
    /// The holiday dates.
    pub dates: Vec<Date>,
}

/// An access level: a set of doors under one schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLevelRecord {
    /// Unique access level id.
    pub id: String,
    /// Doors covered directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub doors: Vec<String>,
    /// Door groups covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub door_groups: Vec<String>,
    /// The schedule under which the level is active.
    pub schedule: String,
}

/// A cardholder's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HolderStatus {
    /// May pass where their access levels allow.
    #[default]
    Active,
    /// Passes nowhere (left, on leave, disabled).
    Inactive,
}

/// A person (or a vehicle, or a robot) who holds credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardholderRecord {
    /// Unique cardholder id (an employee number, say).
    pub id: String,
    /// Active or inactive.
    #[serde(default)]
    pub status: HolderStatus,
    /// First instant the holder is valid (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<Timestamp>,
    /// First instant the holder is no longer valid (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Timestamp>,
    /// May pass doors in lockdown (where their levels give access).
    #[serde(default, skip_serializing_if = "is_false")]
    pub lockdown_override: bool,
}

/// A credential's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CredentialStatus {
    /// In use.
    #[default]
    Active,
    /// Temporarily disabled.
    Suspended,
    /// Reported lost.
    Lost,
    /// Reported stolen: a read is worth an alarm.
    Stolen,
    /// Permanently withdrawn.
    Revoked,
}

/// A credential (a card, a fob, a phone's UID) belonging to a cardholder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRecord {
    /// What the reader reads: `FORMAT:FACILITY:NUMBER` or `uid:HEX`.
    pub card: CredentialKey,
    /// The cardholder it belongs to.
    pub holder: String,
    /// Active, suspended, lost, stolen or revoked.
    #[serde(default)]
    pub status: CredentialStatus,
    /// First instant the credential is valid (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<Timestamp>,
    /// First instant the credential is no longer valid (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Timestamp>,
    /// The PIN as a salted hash (see `accessd pin-hash`), needed at
    /// card-and-PIN doors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinHash>,
}

/// An access level given to a cardholder, with its own validity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentRecord {
    /// The cardholder.
    pub holder: String,
    /// The access level.
    pub level: String,
    /// First instant the assignment is valid (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<Timestamp>,
    /// First instant the assignment is no longer valid (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Timestamp>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Any entity record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A site.
    Site(SiteRecord),
    /// A door.
    Door(DoorRecord),
    /// A reader.
    Reader(ReaderRecord),
    /// An anti-passback area.
    Area(AreaRecord),
    /// A door group.
    DoorGroup(DoorGroupRecord),
    /// A schedule.
    Schedule(ScheduleRecord),
    /// A holiday set.
    HolidaySet(HolidaySetRecord),
    /// An access level.
    AccessLevel(AccessLevelRecord),
    /// A cardholder.
    Cardholder(CardholderRecord),
    /// A credential.
    Credential(CredentialRecord),
    /// A level assignment.
    Assignment(AssignmentRecord),
}

impl Record {
    /// The key that identifies this record, for replacement and deletion.
    pub fn key(&self) -> RecordKey {
        match self {
            Self::Site(r) => RecordKey::Site(r.id.clone()),
            Self::Door(r) => RecordKey::Door(r.id.clone()),
            Self::Reader(r) => RecordKey::Reader(r.id.clone()),
            Self::Area(r) => RecordKey::Area(r.id.clone()),
            Self::DoorGroup(r) => RecordKey::DoorGroup(r.id.clone()),
            Self::Schedule(r) => RecordKey::Schedule(r.id.clone()),
            Self::HolidaySet(r) => RecordKey::HolidaySet(r.id.clone()),
            Self::AccessLevel(r) => RecordKey::AccessLevel(r.id.clone()),
            Self::Cardholder(r) => RecordKey::Cardholder(r.id.clone()),
            Self::Credential(r) => RecordKey::Credential(r.card),
            Self::Assignment(r) => RecordKey::Assignment {
                holder: r.holder.clone(),
                level: r.level.clone(),
            },
        }
    }
}

/// What identifies a record of each entity type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    /// A site by id.
    Site(String),
    /// A door by id.
    Door(String),
    /// A reader by id.
    Reader(String),
    /// An area by id.
    Area(String),
    /// A door group by id.
    DoorGroup(String),
    /// A schedule by id.
    Schedule(String),
    /// A holiday set by id.
    HolidaySet(String),
    /// An access level by id.
    AccessLevel(String),
    /// A cardholder by id.
    Cardholder(String),
    /// A credential by what the reader reads.
    Credential(CredentialKey),
    /// An assignment by cardholder and level.
    Assignment {
        /// The cardholder id.
        holder: String,
        /// The access level id.
        level: String,
    },
}

/// One change to the data: what the loader reads from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Insert or replace a whole record.
    Upsert(Record),
    /// Remove a record; removing one that does not exist is not an error.
    Delete(RecordKey),
}
