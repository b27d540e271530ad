//! The site file: a whole site in one TOML file.
//!
//! It is the embedded data source for the demo, offline gateways and tests,
//! and it holds exactly the records DynamoDB holds, so a site exported from
//! a table and loaded again decides the same. The format is documented in
//! `docs/site-file.md`.
//!
//! Loading checks everything at once and reports every problem with its
//! location: syntax, unknown sections and fields, wrong types, duplicate
//! ids, references to records that do not exist, bad time zones, empty or
//! overlapping schedule intervals and inverted validity windows.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{
    AccessLevelRecord, AreaRecord, AssignmentRecord, CardholderRecord, CredentialRecord,
    DoorGroupRecord, DoorRecord, HolidaySetRecord, ReaderRecord, Record, RecordKey, ScheduleRecord,
    SiteRecord,
};
use crate::snapshot::validate;

/// The sections of a site file, in the order they are written.
pub const SECTIONS: [&str; 11] = [
    "sites",
    "areas",
    "doors",
    "readers",
    "door_groups",
    "holiday_sets",
    "schedules",
    "access_levels",
    "cardholders",
    "credentials",
    "assignments",
];

/// One problem in a site file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteProblem {
    /// Where: `line L` and/or `section[index] (id)`.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SiteProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found in a site file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SiteError {
    /// The problems, in file order.
    pub problems: Vec<SiteProblem>,
}

impl fmt::Display for SiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the site file has {} problem(s):", self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// A parsed and checked site file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteFile {
    /// Every record in the file, sites first and assignments last.
    pub records: Vec<Record>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

struct Checker<'a> {
    text: &'a str,
    problems: Vec<SiteProblem>,
}

impl Checker<'_> {
    /// The line of the `index`-th `[[section]]` header, when the file uses
    /// headers for that section.
    fn header_line(&self, section: &str, index: usize) -> Option<usize> {
        let header = format!("[[{section}]]");
        let mut offset = 0;
        let mut n = 0;
        for line in self.text.split_inclusive('\n') {
            if line.trim() == header {
                if n == index {
                    return Some(line_of(self.text, offset));
                }
                n += 1;
            }
            offset += line.len();
        }
        None
    }

    fn problem(&mut self, section: &str, index: usize, id: &str, message: String) {
        let mut location = match self.header_line(section, index) {
            Some(line) => format!("line {line}, {section}[{index}]"),
            None => format!("{section}[{index}]"),
        };
        if !id.is_empty() {
            location.push_str(&format!(" `{id}`"));
        }
        self.problems.push(SiteProblem { location, message });
    }

    fn section<T: DeserializeOwned>(
        &mut self,
        table: &toml::Table,
        name: &str,
        id_of: impl Fn(&T) -> String,
    ) -> Vec<(usize, T)> {
        let Some(value) = table.get(name) else {
            return Vec::new();
        };
        let Some(items) = value.as_array() else {
            self.problems.push(SiteProblem {
                location: format!("`{name}`"),
                message: format!("must be an array of tables (`[[{name}]]`)"),
            });
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (index, item) in items.iter().enumerate() {
            let raw_id = item
                .get("id")
                .or_else(|| item.get("card"))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            match item.clone().try_into::<T>() {
                Ok(record) => {
                    let id = id_of(&record);
                    if !seen.insert(id.clone()) {
                        self.problem(name, index, &id, "duplicate id".to_owned());
                        continue;
                    }
                    out.push((index, record));
                }
                Err(e) => {
                    let message = e.message().trim().to_owned();
                    self.problem(name, index, &raw_id, message);
                }
            }
        }
        out
    }

    fn refs<'r>(
        &mut self,
        section: &str,
        index: usize,
        id: &str,
        what: &str,
        names: impl IntoIterator<Item = &'r String>,
        known: &HashSet<&str>,
    ) {
        for name in names {
            if !known.contains(name.as_str()) {
                self.problem(section, index, id, format!("unknown {what} `{name}`"));
            }
        }
    }
}

fn ids<T>(items: &[(usize, T)], id: impl Fn(&T) -> &str) -> HashSet<&str> {
    items.iter().map(|(_, r)| id(r)).collect()
}

/// The id a problem report shows for a record.
fn record_id(record: &Record) -> String {
    match record.key() {
        RecordKey::Site(id)
        | RecordKey::Door(id)
        | RecordKey::Reader(id)
        | RecordKey::Area(id)
        | RecordKey::DoorGroup(id)
        | RecordKey::Schedule(id)
        | RecordKey::HolidaySet(id)
        | RecordKey::AccessLevel(id)
        | RecordKey::Cardholder(id) => id,
        RecordKey::Credential(key) => key.to_string(),
        RecordKey::Assignment { holder, level } => format!("{holder} / {level}"),
    }
}

impl SiteFile {
    /// Parses and checks a site file's text.
    pub fn parse(text: &str) -> Result<Self, SiteError> {
        let mut c = Checker {
            text,
            problems: Vec::new(),
        };
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                let location = match e.span() {
                    Some(span) => format!("line {}", line_of(text, span.start)),
                    None => "the file".to_owned(),
                };
                return Err(SiteError {
                    problems: vec![SiteProblem {
                        location,
                        message: e.message().trim().to_owned(),
                    }],
                });
            }
        };
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                c.problems.push(SiteProblem {
                    location: format!("`{key}`"),
                    message: format!("unknown section; expected one of {}", SECTIONS.join(", ")),
                });
            }
        }

        let sites = c.section::<SiteRecord>(&table, "sites", |r| r.id.clone());
        let areas = c.section::<AreaRecord>(&table, "areas", |r| r.id.clone());
        let doors = c.section::<DoorRecord>(&table, "doors", |r| r.id.clone());
        let readers = c.section::<ReaderRecord>(&table, "readers", |r| r.id.clone());
        let groups = c.section::<DoorGroupRecord>(&table, "door_groups", |r| r.id.clone());
        let holidays = c.section::<HolidaySetRecord>(&table, "holiday_sets", |r| r.id.clone());
        let schedules = c.section::<ScheduleRecord>(&table, "schedules", |r| r.id.clone());
        let levels = c.section::<AccessLevelRecord>(&table, "access_levels", |r| r.id.clone());
        let holders = c.section::<CardholderRecord>(&table, "cardholders", |r| r.id.clone());
        let creds = c.section::<CredentialRecord>(&table, "credentials", |r| r.card.to_string());
        let assigns = c.section::<AssignmentRecord>(&table, "assignments", |r| {
            format!("{} / {}", r.holder, r.level)
        });

        let site_ids = ids(&sites, |r| &r.id);
        let area_ids = ids(&areas, |r| &r.id);
        let door_ids = ids(&doors, |r| &r.id);
        let group_ids = ids(&groups, |r| &r.id);
        let holiday_ids = ids(&holidays, |r| &r.id);
        let schedule_ids = ids(&schedules, |r| &r.id);
        let level_ids = ids(&levels, |r| &r.id);
        let holder_ids = ids(&holders, |r| &r.id);

        for (i, r) in &doors {
            c.refs("doors", *i, &r.id, "site", [&r.site], &site_ids);
            c.refs("doors", *i, &r.id, "area", &r.area, &area_ids);
        }
        for (i, r) in &readers {
            c.refs("readers", *i, &r.id, "door", [&r.door], &door_ids);
        }
        for (i, r) in &groups {
            c.refs("door_groups", *i, &r.id, "door", &r.doors, &door_ids);
        }
        for (i, r) in &schedules {
            let sets = &r.holiday_sets;
            c.refs("schedules", *i, &r.id, "holiday set", sets, &holiday_ids);
        }
        for (i, r) in &levels {
            c.refs(
                "access_levels",
                *i,
                &r.id,
                "schedule",
                [&r.schedule],
                &schedule_ids,
            );
            c.refs("access_levels", *i, &r.id, "door", &r.doors, &door_ids);
            let groups = &r.door_groups;
            c.refs("access_levels", *i, &r.id, "door group", groups, &group_ids);
        }
        for (i, r) in &creds {
            let id = r.card.to_string();
            c.refs(
                "credentials",
                *i,
                &id,
                "cardholder",
                [&r.holder],
                &holder_ids,
            );
        }
        for (i, r) in &assigns {
            let id = format!("{} / {}", r.holder, r.level);
            c.refs(
                "assignments",
                *i,
                &id,
                "cardholder",
                [&r.holder],
                &holder_ids,
            );
            c.refs(
                "assignments",
                *i,
                &id,
                "access level",
                [&r.level],
                &level_ids,
            );
        }

        let mut records = Vec::new();
        let mut push = |c: &mut Checker<'_>, section: &str, index: usize, record: Record| {
            if let Err(e) = validate(&record) {
                c.problem(section, index, &record_id(&record), e.to_string());
            }
            records.push(record);
        };
        for (i, r) in sites {
            push(&mut c, "sites", i, Record::Site(r));
        }
        for (i, r) in areas {
            push(&mut c, "areas", i, Record::Area(r));
        }
        for (i, r) in doors {
            push(&mut c, "doors", i, Record::Door(r));
        }
        for (i, r) in readers {
            push(&mut c, "readers", i, Record::Reader(r));
        }
        for (i, r) in groups {
            push(&mut c, "door_groups", i, Record::DoorGroup(r));
        }
        for (i, r) in holidays {
            push(&mut c, "holiday_sets", i, Record::HolidaySet(r));
        }
        for (i, r) in schedules {
            push(&mut c, "schedules", i, Record::Schedule(r));
        }
        for (i, r) in levels {
            push(&mut c, "access_levels", i, Record::AccessLevel(r));
        }
        for (i, r) in holders {
            push(&mut c, "cardholders", i, Record::Cardholder(r));
        }
        for (i, r) in creds {
            push(&mut c, "credentials", i, Record::Credential(r));
        }
        for (i, r) in assigns {
            push(&mut c, "assignments", i, Record::Assignment(r));
        }

        if c.problems.is_empty() {
            Ok(Self { records })
        } else {
            // File order: by line where known (a stable sort keeps the order
            // of several problems on one record).
            let line = |p: &SiteProblem| {
                p.location
                    .strip_prefix("line ")
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            c.problems.sort_by_key(line);
            Err(SiteError {
                problems: c.problems,
            })
        }
    }

    /// Writes records as a site file that [`SiteFile::parse`] reads back to
    /// the same records.
    pub fn to_toml(records: &[Record]) -> Result<String, toml::ser::Error> {
        #[derive(Serialize, Default)]
        struct Out<'a> {
            #[serde(skip_serializing_if = "Vec::is_empty")]
            sites: Vec<&'a SiteRecord>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            areas: Vec<&'a AreaRecord>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            doors: Vec<&'a DoorRecord>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            readers: Vec<&'a ReaderRecord>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            door_groups: Vec<&'a DoorGroupRecord>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            holiday_sets: Vec<&'a HolidaySetRecord>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            schedules: Vec<&'a ScheduleRecord>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            access_levels: Vec<&'a AccessLevelRecord>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            cardholders: Vec<&'a CardholderRecord>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            credentials: Vec<&'a CredentialRecord>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            assignments: Vec<&'a AssignmentRecord>,
        }
        let mut out = Out::default();
        for record in records {
            match record {
                Record::Site(r) => out.sites.push(r),
                Record::Area(r) => out.areas.push(r),
                Record::Door(r) => out.doors.push(r),
                Record::Reader(r) => out.readers.push(r),
                Record::DoorGroup(r) => out.door_groups.push(r),
                Record::HolidaySet(r) => out.holiday_sets.push(r),
                Record::Schedule(r) => out.schedules.push(r),
                Record::AccessLevel(r) => out.access_levels.push(r),
                Record::Cardholder(r) => out.cardholders.push(r),
                Record::Credential(r) => out.credentials.push(r),
                Record::Assignment(r) => out.assignments.push(r),
            }
        }
        toml::to_string(&out)
    }

    /// Counts of records by section, for summaries.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for record in &self.records {
            let section = match record {
                Record::Site(_) => "sites",
                Record::Area(_) => "areas",
                Record::Door(_) => "doors",
                Record::Reader(_) => "readers",
                Record::DoorGroup(_) => "door_groups",
                Record::HolidaySet(_) => "holiday_sets",
                Record::Schedule(_) => "schedules",
                Record::AccessLevel(_) => "access_levels",
                Record::Cardholder(_) => "cardholders",
                Record::Credential(_) => "credentials",
                Record::Assignment(_) => "assignments",
            };
            *counts.entry(section).or_insert(0) += 1;
        }
        counts
    }
}
