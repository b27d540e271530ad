//! What a snapshot holds, as people read it: a cardholder with their
//! credentials and levels, the readers with their doors and sites. For the
//! console and other operator tools; never on the decision path.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use super::Snapshot;
use super::holder::{Cred, HolderEntry, Validity};
use crate::credential::CredentialKey;
use crate::model::{CredentialStatus, Direction, HolderStatus};

/// A cardholder as the snapshot has them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HolderView {
    /// The cardholder id.
    pub id: String,
    /// Active or inactive; `None` when no cardholder record exists for
    /// this id (only credentials or assignments name it: every decision
    /// for them is a deny).
    pub status: Option<HolderStatus>,
    /// The holder's own validity window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<Timestamp>,
    /// End of the holder's validity window (exclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Timestamp>,
    /// May pass doors in lockdown.
    pub lockdown_override: bool,
    /// Assigned access levels, sorted by level id.
    pub levels: Vec<LevelView>,
    /// Credentials, sorted by their text form.
    pub credentials: Vec<CredentialView>,
}

/// One access level assigned to a holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LevelView {
    /// The level id.
    pub level: String,
    /// The level's schedule; `None` when the level does not exist or does
    /// not resolve (the assignment then grants nothing).
    pub schedule: Option<String>,
    /// Start of the assignment's validity window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<Timestamp>,
    /// End of the assignment's validity window (exclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Timestamp>,
}

/// One credential of a holder. The PIN's hash is never shown, only
/// whether there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CredentialView {
    /// The card in text form (`h10301:12:1001`, `uid:04a1b2`).
    pub card: String,
    /// Active, suspended, lost, stolen or revoked.
    pub status: CredentialStatus,
    /// Start of the credential's validity window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<Timestamp>,
    /// End of the credential's validity window (exclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Timestamp>,
    /// Whether the credential needs a PIN.
    pub pin: bool,
}

/// A reader that resolves to a door and a site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReaderView {
    /// The reader id devices send.
    pub id: String,
    /// Its door.
    pub door: String,
    /// The door's site.
    pub site: String,
    /// The site's time zone (IANA name, or `UTC`/an offset when the site
    /// names no zone).
    pub time_zone: String,
    /// Entry or exit.
    pub direction: Direction,
}

impl Snapshot {
    /// The cardholder of credential `card`, with all their credentials and
    /// levels; `None` when the snapshot does not know the card.
    pub fn holder_of_card(&self, card: &CredentialKey) -> Option<HolderView> {
        let holder = self.cred(card)?.holder()?;
        Some(self.holder_view(holder))
    }

    /// Cardholder `id`, with all their credentials and levels; `None` when
    /// no credential of the snapshot belongs to that id. Reads every
    /// credential (tens of milliseconds at a million): for people, not for
    /// decisions.
    pub fn holder(&self, id: &str) -> Option<HolderView> {
        let holder = self
            .creds()
            .filter_map(|(_, c)| c.holder())
            .find(|h| h.id() == id)?;
        Some(self.holder_view(holder))
    }

    fn holder_view(&self, h: &HolderEntry) -> HolderView {
        let names = &self.topology.names;
        let core = h.core();
        let (valid_from, valid_until) = core.map_or(Validity::ALWAYS, |c| c.validity).bounds();
        let mut levels: Vec<LevelView> = h
            .assignments()
            .map(|a| {
                let (valid_from, valid_until) = a.validity.bounds();
                let schedule = self
                    .topology
                    .levels
                    .get(a.level as usize)
                    .and_then(Option::as_ref)
                    .map(|l| names.schedule(l.schedule).to_owned());
                LevelView {
                    level: names.level(a.level).to_owned(),
                    schedule,
                    valid_from,
                    valid_until,
                }
            })
            .collect();
        levels.sort_by(|a, b| a.level.cmp(&b.level));
        let mut credentials: Vec<CredentialView> = h
            .creds
            .iter()
            .filter_map(|key| Some(credential_view(key, self.cred(key)?)))
            .collect();
        credentials.sort_by(|a, b| a.card.cmp(&b.card));
        HolderView {
            id: h.id().to_owned(),
            status: core.map(|c| c.status),
            valid_from,
            valid_until,
            lockdown_override: core.is_some_and(|c| c.lockdown_override),
            levels,
            credentials,
        }
    }

    /// Every reader that resolves to a door and a site, sorted by id.
    pub fn readers(&self) -> Vec<ReaderView> {
        let t = &*self.topology;
        let mut out: Vec<ReaderView> = t
            .readers
            .iter()
            .filter_map(|(id, r)| {
                let door = t.doors.get(r.door)?;
                let site = t.sites.get(door.site)?;
                Some(ReaderView {
                    id: id.to_string(),
                    door: door.id.to_string(),
                    site: site.id.to_string(),
                    time_zone: zone_name(&site.tz),
                    direction: r.direction,
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The time zone of the site of `reader`, if the reader resolves.
    pub fn reader_time_zone(&self, reader: &str) -> Option<TimeZone> {
        let t = &*self.topology;
        let door = t.doors.get(t.readers.get(reader)?.door)?;
        Some(t.sites.get(door.site)?.tz.clone())
    }
}

fn credential_view(key: &CredentialKey, entry: Cred<'_>) -> CredentialView {
    let validity = entry.extras().map_or(Validity::ALWAYS, |e| e.validity);
    let (valid_from, valid_until) = validity.bounds();
    CredentialView {
        card: key.to_string(),
        status: entry.hot.status,
        valid_from,
        valid_until,
        pin: entry.pin().is_some(),
    }
}

fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().map_or_else(
        || {
            let offset = tz.to_offset(Timestamp::now());
            if offset.seconds() == 0 {
                "UTC".to_owned()
            } else {
                offset.to_string()
            }
        },
        str::to_owned,
    )
}

#[cfg(test)]
mod tests {
    use crate::model::{AssignmentRecord, Change, Record};
    use crate::pin::PinHash;
    use crate::site::SiteFile;
    use crate::snapshot::{Snapshot, SnapshotBuilder};

    fn snapshot() -> Snapshot {
        let mut records = SiteFile::parse(SITE).expect("site").records;
        for r in &mut records {
            if let Record::Credential(c) = r
                && c.card.to_string() == "h10301:12:1001"
            {
                c.pin = Some(PinHash::new("2468", [7; 16]).expect("pin"));
            }
        }
        // Data from DynamoDB may name a level that does not exist.
        records.push(Record::Assignment(AssignmentRecord {
            holder: "alice".into(),
            level: "gone".into(),
            valid_from: None,
            valid_until: None,
        }));
        let mut builder = SnapshotBuilder::new();
        let refused = builder.apply_all(records.into_iter().map(Change::Upsert));
        assert!(refused.is_empty(), "{refused:?}");
        builder.publish("2026-11-30T09:00:00Z".parse().expect("time"))
    }

    const SITE: &str = r#"
[[sites]]
id = "hq"
time_zone = "Europe/Paris"

[[doors]]
id = "lobby"
site = "hq"

[[readers]]
id = "lobby-in"
door = "lobby"

[[schedules]]
id = "always"
intervals = [{ days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start = "00:00", end = "00:00" }]

[[access_levels]]
id = "staff"
doors = ["lobby"]
schedule = "always"

[[cardholders]]
id = "alice"
valid_until = "2030-01-01T00:00:00Z"

[[assignments]]
holder = "alice"
level = "staff"

[[credentials]]
card = "h10301:12:1001"
holder = "alice"

[[credentials]]
card = "uid:04a1b2"
holder = "alice"
status = "lost"
"#;

    #[test]
    fn a_holder_is_found_by_card_and_by_id_alike() {
        let snapshot = snapshot();
        let by_card = snapshot
            .holder_of_card(&"uid:04a1b2".parse().expect("card"))
            .expect("known card");
        assert_eq!(snapshot.holder("alice"), Some(by_card.clone()));
        assert_eq!(snapshot.holder("bob"), None);
        assert_eq!(
            by_card.valid_until.map(|t| t.to_string()).as_deref(),
            Some("2030-01-01T00:00:00Z")
        );
        let cards: Vec<_> = by_card
            .credentials
            .iter()
            .map(|c| (c.card.as_str(), c.pin))
            .collect();
        assert_eq!(cards, [("h10301:12:1001", true), ("uid:04a1b2", false)]);
        let levels: Vec<_> = by_card
            .levels
            .iter()
            .map(|l| (l.level.as_str(), l.schedule.as_deref()))
            .collect();
        // A level that does not exist is shown, and shown to grant nothing.
        assert_eq!(levels, [("gone", None), ("staff", Some("always"))]);
        let json = serde_json::to_string(&by_card).expect("json");
        assert!(
            !json.contains("sha256"),
            "a PIN hash must never be shown: {json}"
        );
    }

    #[test]
    fn readers_carry_their_door_site_and_zone() {
        let snapshot = snapshot();
        let readers = snapshot.readers();
        assert_eq!(readers.len(), 1);
        assert_eq!(
            (
                readers[0].door.as_str(),
                readers[0].site.as_str(),
                readers[0].time_zone.as_str()
            ),
            ("lobby", "hq", "Europe/Paris")
        );
        assert_eq!(
            snapshot
                .reader_time_zone("lobby-in")
                .and_then(|z| z.iana_name().map(str::to_owned)),
            Some("Europe/Paris".to_owned())
        );
        assert!(snapshot.reader_time_zone("nope").is_none());
    }
}
