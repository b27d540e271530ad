//! # accessd-engine
//!
//! The decision engine of accessd: the data model of a building's access
//! control, an immutable in-memory snapshot of it, and the function that
//! answers "may this credential pass this reader, now?".
//!
//! ```text
//!  records (site file, DynamoDB)
//!        │  Change::Upsert / Change::Delete
//!        ▼
//!  SnapshotBuilder ──publish()──▶ Snapshot (versioned, immutable)
//!                                    │  SharedSnapshot (arc-swap)
//!                                    ▼
//!  Request + now ──────────────▶ decide() ──▶ Decision { verdict, reason, .. }
//!                                    ▲
//!                          Presence (anti-passback, survives swaps)
//! ```
//!
//! The engine does no I/O and reads no clock: callers pass `now`. It never
//! fails a decision: unknown or inconsistent data is a deny with a reason.
//!
//! ```
//! use accessd_engine::{decide, Presence, Request, SiteFile, SnapshotBuilder, Verdict};
//!
//! let site = SiteFile::parse(r#"
//!     [[sites]]
//!     id = "hq"
//!     time_zone = "Europe/Paris"
//!     [[doors]]
//!     id = "lobby"
//!     site = "hq"
//!     [[readers]]
//!     id = "lobby-in"
//!     door = "lobby"
//!     [[schedules]]
//!     id = "always"
//!     intervals = [{ days = ["mon","tue","wed","thu","fri","sat","sun"], start = "00:00", end = "00:00" }]
//!     [[access_levels]]
//!     id = "staff"
//!     doors = ["lobby"]
//!     schedule = "always"
//!     [[cardholders]]
//!     id = "E1"
//!     [[credentials]]
//!     card = "h10301:12:345"
//!     holder = "E1"
//!     [[assignments]]
//!     holder = "E1"
//!     level = "staff"
//! "#).unwrap();
//! let now: jiff::Timestamp = "2026-11-30T09:00:00Z".parse().unwrap();
//! let mut builder = SnapshotBuilder::new();
//! assert!(builder.apply_all(site.records.into_iter().map(accessd_engine::Change::Upsert)).is_empty());
//! let snapshot = builder.publish(now);
//! let request = Request { reader: "lobby-in", credential: "h10301:12:345".parse().unwrap(), pin: None };
//! let decision = decide(&snapshot, &Presence::new(), &request, now);
//! assert_eq!(decision.verdict, Verdict::Grant);
//! ```

mod credential;
mod credmap;
mod decide;
mod decision;
mod event;
mod explain;
mod model;
mod pin;
mod presence;
mod schedule;
mod shard;
mod site;
mod snapshot;
#[cfg(feature = "synth")]
pub mod synth;
mod validate;

pub use credential::{CardFormat, CredentialKey, CredentialParseError, MAX_UID_LEN, Uid};
pub use decide::{decide, decide_with_subject};
pub use decision::{Decision, Reason, Request, UnknownReason, Verdict};
pub use event::{
    AccessEvent, BadEventId, EventId, EventRef, MAX_PAYLOAD, RECORD_HEADER, RecordError,
    RecordWriter, fuzz_read_record, read_record,
};
pub use explain::{AssignmentState, Explanation, LevelCheck, Outcome, Rule, Step, explain};
pub use model::{
    AccessLevelRecord, AreaRecord, AssignmentRecord, CardholderRecord, Change, CredentialRecord,
    CredentialStatus, Day, Direction, DoorGroupRecord, DoorMode, DoorRecord, HolderStatus,
    HolidaySetRecord, Interval, PassbackMode, ReaderRecord, Record, RecordKey, ScheduleRecord,
    SiteRecord,
};
pub use pin::{MAX_PIN_DIGITS, MIN_PIN_DIGITS, PinError, PinHash, is_valid_pin};
pub use presence::{Presence, PresenceEntry};
pub use schedule::ScheduleError;
pub use site::{SECTIONS, SiteError, SiteFile, SiteProblem, SiteRecords};
pub use snapshot::{
    ApplyError, CredentialStore, CredentialView, HolderBundle, HolderView, LevelView,
    PREFETCH_FROM, ReaderView, SharedSnapshot, Snapshot, SnapshotBuilder, SnapshotGuard,
    SnapshotStats, Subject,
};
