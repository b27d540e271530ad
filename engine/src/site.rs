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

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::model::{
    AccessLevelRecord, AreaRecord, AssignmentRecord, CardholderRecord, CredentialRecord,
    DoorGroupRecord, DoorRecord, HolidaySetRecord, ReaderRecord, Record, RecordKey, ScheduleRecord,
    SiteRecord,
};
use crate::validate::validate;

/// Hashed with foldhash: a million-holder file hashes millions of ids
/// (SipHash was a fifth of the time to check one).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

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
    /// The line (from 1) the problem is on, from the TOML parser's spans:
    /// the offending value's when the problem is in one field, else the
    /// record's first line (its `[[section]]` header, or its `{` inline).
    pub line: usize,
    /// Where: `line L`, then `section[index] `id`` when the problem is in
    /// a record.
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

/// The line (from 1) of a byte offset into `text`. Offsets come from the
/// TOML parser's spans; this only turns one into a line number.
/// Line numbers of byte offsets in a text: the newlines found once, then a
/// binary search per offset. Counting from the start for each record made
/// checking a file quadratic in its size (a 7 MB file took minutes).
struct Lines<'a> {
    text: &'a str,
    newlines: std::cell::OnceCell<Vec<usize>>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            newlines: std::cell::OnceCell::new(),
        }
    }

    /// The 1-based line of `offset`.
    fn line(&self, offset: usize) -> usize {
        let newlines = self.newlines.get_or_init(|| {
            self.text
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect()
        });
        newlines.partition_point(|&n| n < offset) + 1
    }
}

/// A record of a site file: its section and its index there.
type RecordAt = (&'static str, usize);

struct Checker<'a> {
    /// Where every record starts (a byte offset), by section and index;
    /// made a line number only for a record with a problem.
    record_starts: HashMap<&'static str, Vec<usize>>,
    lines: Lines<'a>,
    /// Each problem, with the record it is about when it is about one.
    problems: Vec<(SiteProblem, Option<RecordAt>)>,
}

impl Checker<'_> {
    fn push(&mut self, line: usize, place: &str, message: String) {
        self.push_about(line, place, message, None);
    }

    fn push_about(&mut self, line: usize, place: &str, message: String, about: Option<RecordAt>) {
        let location = if place.is_empty() {
            format!("line {line}")
        } else {
            format!("line {line}, {place}")
        };
        let problem = SiteProblem {
            line,
            location,
            message,
        };
        self.problems.push((problem, about));
    }

    /// A problem with the `index`-th record of `section`, on `line` or, if
    /// `None`, on the record's first line.
    fn problem_at(
        &mut self,
        section: &'static str,
        index: usize,
        line: Option<usize>,
        id: &str,
        message: String,
    ) {
        let line = line
            .or_else(|| {
                self.record_starts
                    .get(section)
                    .and_then(|starts| starts.get(index))
                    .map(|&start| self.lines.line(start))
            })
            .unwrap_or(1);
        let mut place = format!("{section}[{index}]");
        if !id.is_empty() {
            place.push_str(&format!(" `{id}`"));
        }
        self.push_about(line, &place, message, Some((section, index)));
    }

    fn problem(&mut self, section: &'static str, index: usize, id: &str, message: String) {
        self.problem_at(section, index, None, id, message);
    }

    fn refs<'r>(
        &mut self,
        section: &'static str,
        index: usize,
        id: &str,
        what: &str,
        names: impl IntoIterator<Item = &'r String>,
        known: &HashSet<String>,
    ) {
        for name in names {
            if !known.contains(name.as_str()) {
                self.problem(section, index, id, format!("unknown {what} `{name}`"));
            }
        }
    }
}

/// The records of every section as read, each with its index in its
/// section, and the ids seen so far (for duplicates).
#[derive(Default)]
struct Sections {
    sites: Vec<(usize, SiteRecord)>,
    areas: Vec<(usize, AreaRecord)>,
    doors: Vec<(usize, DoorRecord)>,
    readers: Vec<(usize, ReaderRecord)>,
    groups: Vec<(usize, DoorGroupRecord)>,
    holidays: Vec<(usize, HolidaySetRecord)>,
    schedules: Vec<(usize, ScheduleRecord)>,
    levels: Vec<(usize, AccessLevelRecord)>,
    holders: Vec<(usize, CardholderRecord)>,
    creds: Vec<(usize, CredentialRecord)>,
    assigns: Vec<(usize, AssignmentRecord)>,
    seen: HashMap<&'static str, HashSet<String>>,
    counts: HashMap<&'static str, usize>,
}

impl Sections {
    /// Room for `counts` records by section, so that a large file's
    /// records are not copied as their vectors and id sets grow.
    fn with_capacity(counts: &HashMap<&'static str, usize>) -> Self {
        let n = |section: &str| counts.get(section).copied().unwrap_or(0);
        let mut sections = Self {
            sites: Vec::with_capacity(n("sites")),
            areas: Vec::with_capacity(n("areas")),
            doors: Vec::with_capacity(n("doors")),
            readers: Vec::with_capacity(n("readers")),
            groups: Vec::with_capacity(n("door_groups")),
            holidays: Vec::with_capacity(n("holiday_sets")),
            schedules: Vec::with_capacity(n("schedules")),
            levels: Vec::with_capacity(n("access_levels")),
            holders: Vec::with_capacity(n("cardholders")),
            creds: Vec::with_capacity(n("credentials")),
            assigns: Vec::with_capacity(n("assignments")),
            ..Self::default()
        };
        for (&section, &count) in counts {
            let mut seen = HashSet::default();
            seen.reserve(count);
            sections.seen.insert(section, seen);
        }
        sections
    }

    /// Numbers `item` in its section, checks it for a duplicate and keeps
    /// it, or reports what is wrong with it. Items come in file order.
    fn accept(&mut self, c: &mut Checker<'_>, item: Item) {
        let count = self.counts.entry(item.section).or_insert(0);
        let index = *count;
        *count += 1;
        c.record_starts
            .entry(item.section)
            .or_default()
            .push(item.start);
        let (record, id) = match item.record {
            Ok(read) => read,
            Err(fault) => {
                // The parser's span of the offending value, when it has
                // one, is more precise than the record's first line.
                let line = fault.at.map(|at| c.lines.line(at));
                c.problem_at(item.section, index, line, &fault.raw_id, fault.message);
                return;
            }
        };
        let seen = self.seen.entry(item.section).or_default();
        if seen.contains(&id) {
            c.problem(item.section, index, &id, "duplicate id".to_owned());
            return;
        }
        seen.insert(id);
        match record {
            Record::Site(r) => self.sites.push((index, r)),
            Record::Area(r) => self.areas.push((index, r)),
            Record::Door(r) => self.doors.push((index, r)),
            Record::Reader(r) => self.readers.push((index, r)),
            Record::DoorGroup(r) => self.groups.push((index, r)),
            Record::HolidaySet(r) => self.holidays.push((index, r)),
            Record::Schedule(r) => self.schedules.push((index, r)),
            Record::AccessLevel(r) => self.levels.push((index, r)),
            Record::Cardholder(r) => self.holders.push((index, r)),
            Record::Credential(r) => self.creds.push((index, r)),
            Record::Assignment(r) => self.assigns.push((index, r)),
        }
    }
}

/// One record as read from the file, before it is numbered, checked for a
/// duplicate and kept: reading may run on several threads, keeping runs on
/// one, in file order.
struct Item {
    section: &'static str,
    /// Where the record starts in the file (a byte offset).
    start: usize,
    /// The record and its id (see [`record_id`]), made where it was read.
    record: Result<(Record, String), Fault>,
}

/// Why a record could not be read.
struct Fault {
    /// Its id as written, for the problem's place (empty when it has none).
    raw_id: String,
    /// Where in the file the parser placed the problem, when it did.
    at: Option<usize>,
    message: String,
}

/// Deserialises `item`, a record of `section` whose spans are relative to
/// byte `base` of `text`. `None` for a section that is not one of
/// [`SECTIONS`].
fn read_item(
    text: &str,
    section: &'static str,
    item: Spanned<DeValue<'_>>,
    base: usize,
) -> Option<Item> {
    fn de<T: DeserializeOwned>(item: Spanned<DeValue<'_>>) -> Result<T, toml::de::Error> {
        T::deserialize(ValueDeserializer::from(item))
    }
    let start = base + item.span().start;
    // Where its id is written, kept for a problem's place: the item itself
    // goes to the deserialiser.
    let id_span = item
        .get_ref()
        .get("id")
        .or_else(|| item.get_ref().get("card"))
        .filter(|v| v.get_ref().as_str().is_some())
        .map(Spanned::span);
    let record = match section {
        "sites" => de(item).map(Record::Site),
        "areas" => de(item).map(Record::Area),
        "doors" => de(item).map(Record::Door),
        "readers" => de(item).map(Record::Reader),
        "door_groups" => de(item).map(Record::DoorGroup),
        "holiday_sets" => de(item).map(Record::HolidaySet),
        "schedules" => de(item).map(Record::Schedule),
        "access_levels" => de(item).map(Record::AccessLevel),
        "cardholders" => de(item).map(Record::Cardholder),
        "credentials" => de(item).map(Record::Credential),
        "assignments" => de(item).map(Record::Assignment),
        _ => return None,
    };
    let record = record.map(|r| {
        let id = record_id(&r);
        (r, id)
    });
    let record = record.map_err(|e| Fault {
        raw_id: id_span
            .and_then(|span| text.get(base + span.start..base + span.end))
            .map(|written| written.trim_matches(['"', '\'']).to_owned())
            .unwrap_or_default(),
        at: e.span().map(|span| base + span.start),
        message: e.message().trim().to_owned(),
    });
    Some(Item {
        section,
        start,
        record,
    })
}

/// What a line starting with `[` (after indentation) is to the
/// record-by-record reader.
#[derive(Debug, PartialEq, Eq)]
enum Header {
    /// `[[name]]` of a known section: a record starts.
    Record(&'static str),
    /// `[[name.sub]]` or `[name.sub]` of a known section: a table inside
    /// the last record of `name` (a schedule's intervals).
    Inside(&'static str),
    /// Anything else.
    Other,
}

/// The header a line is, `None` when it does not start with `[`.
fn header(line: &str) -> Option<Header> {
    let line = line.trim_start();
    if !line.starts_with('[') {
        return None;
    }
    let (double, rest) = match line.strip_prefix("[[") {
        Some(rest) => (true, rest),
        None => (false, line.get(1..).unwrap_or_default()),
    };
    let close = if double { "]]" } else { "]" };
    let Some((name, after)) = rest.split_once(close) else {
        return Some(Header::Other);
    };
    let after = after.trim();
    if !(after.is_empty() || after.starts_with('#')) {
        return Some(Header::Other);
    }
    let mut parts = name.split('.').map(str::trim);
    let first = parts.next().unwrap_or_default();
    let Some(section) = SECTIONS.iter().find(|s| **s == first).copied() else {
        return Some(Header::Other);
    };
    let inner: Vec<&str> = parts.collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    Some(match (double, inner.is_empty()) {
        (true, true) => Header::Record(section),
        (_, false) if inner.iter().all(plain) => Header::Inside(section),
        _ => Header::Other,
    })
}

/// Reads a site file as one parsed tree, with spans, so that every
/// problem can name its line; `None` when it does not parse (the problem
/// is in `c`).
fn read_whole(c: &mut Checker<'_>, text: &str) -> Option<Sections> {
    let table: DeTable<'_> = match DeTable::parse(text) {
        Ok(t) => t.into_inner(),
        Err(e) => {
            let line = e.span().map_or(1, |span| c.lines.line(span.start));
            c.push(line, "", e.message().trim().to_owned());
            return None;
        }
    };
    let mut sections = Sections::default();
    for (key, value) in table.iter() {
        let key: &Spanned<_> = key;
        let Some(name) = SECTIONS
            .iter()
            .find(|s| **s == key.get_ref().as_ref())
            .copied()
        else {
            let line = c.lines.line(key.span().start);
            c.push(
                line,
                &format!("`{}`", key.get_ref()),
                format!("unknown section; expected one of {}", SECTIONS.join(", ")),
            );
            continue;
        };
        let DeValue::Array(items) = value.get_ref() else {
            let line = c.lines.line(key.span().start);
            c.push(
                line,
                &format!("`{name}`"),
                format!("must be an array of tables (`[[{name}]]`)"),
            );
            continue;
        };
        for item in items.iter() {
            if let Some(item) = read_item(text, name, item.clone(), 0) {
                sections.accept(c, item);
            }
        }
    }
    Some(sections)
}

/// Reads a site file record by record: each `[[section]]` header starts a
/// small document of its own, parsed and deserialised at once, so the
/// whole file never exists as a parsed tree (at a million cardholders that
/// tree took gigabytes). `None` when the file is not plainly of that shape
/// (a multi-line string, another kind of header, a value before the first
/// header, a chunk that does not parse alone): the caller then reads the
/// file whole, which also words any problem exactly.
///
/// A header is only taken where it starts a line; a line that only looks
/// like one inside a multi-line value leaves the chunk before it unclosed,
/// which fails to parse and sends the file to the whole reading.
fn read_by_record(c: &mut Checker<'_>, text: &str, threads: usize) -> Option<Sections> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    let mut headers: Vec<(usize, &'static str)> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        match header(line) {
            Some(Header::Record(name)) => headers.push((offset, name)),
            // A table inside the record being read stays in its chunk,
            // where it means what it means in the whole file; inside
            // another section's last record, it would not.
            Some(Header::Inside(name)) if headers.last().is_some_and(|h| h.1 == name) => {}
            // A `[` line in a value (an array's row, indented) is not a
            // header; anything else that may be one is read whole.
            Some(Header::Other) if line.starts_with(' ') || line.starts_with('\t') => {}
            Some(_) => return None,
            None => {}
        }
        offset += line.len();
    }
    let preamble = text.get(..headers.first().map_or(text.len(), |h| h.0))?;
    if !DeTable::parse(preamble).ok()?.get_ref().is_empty() {
        return None;
    }
    let chunks: Vec<(usize, usize, &'static str)> = headers
        .iter()
        .enumerate()
        .map(|(i, &(start, name))| {
            let end = headers.get(i + 1).map_or(text.len(), |h| h.0);
            (start, end, name)
        })
        .collect();
    let read = |&(start, end, name): &(usize, usize, &'static str)| -> Option<Item> {
        let chunk = DeTable::parse(text.get(start..end)?).ok()?.into_inner();
        let mut entries = chunk.into_iter();
        let (Some((key, value)), None) = (entries.next(), entries.next()) else {
            return None;
        };
        if key.get_ref() != name {
            return None;
        }
        let DeValue::Array(items) = value.into_inner() else {
            return None;
        };
        let mut items = items.into_iter();
        let (Some(item), None) = (items.next(), items.next()) else {
            return None;
        };
        read_item(text, name, item, start)
    };
    let mut counts: HashMap<&'static str, usize> = HashMap::default();
    for &(_, _, name) in &chunks {
        *counts.entry(name).or_default() += 1;
    }
    for (&section, &count) in &counts {
        c.record_starts.insert(section, Vec::with_capacity(count));
    }
    let mut sections = Sections::with_capacity(&counts);
    let mut keep = |items: Vec<Option<Item>>| -> Option<()> {
        for item in items {
            sections.accept(c, item?);
        }
        Some(())
    };
    if threads < 2 || chunks.len() < 2 * READ_BLOCK {
        keep(chunks.iter().map(read).collect())?;
        return Some(sections);
    }
    // Parsing is most of the time of a large file: blocks of records are
    // read on every core and kept here in file order as they come. The
    // channel's bound and the in-order keeping hold only a few blocks at
    // once beyond the records kept.
    let blocks: Vec<&[(usize, usize, &'static str)]> = chunks.chunks(READ_BLOCK).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let complete = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<Option<Item>>)>(2 * threads);
        for worker in 0..threads {
            let (tx, blocks, stop, read) = (tx.clone(), &blocks, &stop, &read);
            scope.spawn(move || {
                for (i, block) in blocks.iter().enumerate().skip(worker).step_by(threads) {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    if tx.send((i, block.iter().map(read).collect())).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for (i, items) in rx {
            waiting.insert(i, items);
            while let Some(items) = waiting.remove(&next) {
                next += 1;
                if keep(items).is_none() {
                    // Not plainly record by record: the caller reads whole.
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    return false;
                }
            }
        }
        next == blocks.len()
    });
    complete.then_some(sections)
}

/// Records a thread reads at a time when a site file is read on several
/// threads.
const READ_BLOCK: usize = 4096;

/// Threads that read a large site file: every core, up to 8.
fn reading_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
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
        Self::check(text).map_err(|problems| SiteError {
            problems: problems.into_iter().map(|(p, _)| p).collect(),
        })
    }

    /// Splits `records` into a valid site file and the records that cannot
    /// be in one, each with why (its problems, joined by `; `). A record
    /// that refers to a record left out is left out too, since a site file
    /// must not name what it does not hold: a site with a bad time zone
    /// takes its doors along, and their readers. This is how an export
    /// keeps everything that is good in a table.
    pub fn keep_valid(records: Vec<Record>) -> (Self, Vec<(Record, String)>) {
        let mut kept = records;
        let mut left_out = Vec::new();
        // Each round leaves out at least one record, so this ends.
        loop {
            let problems = match Self::to_toml(&kept) {
                Ok(text) => match Self::check(&text) {
                    Ok(site) => return (site, left_out),
                    Err(problems) => problems,
                },
                Err(e) => vec![(
                    SiteProblem {
                        line: 1,
                        location: "line 1".to_owned(),
                        message: format!("cannot be written as TOML: {e}"),
                    },
                    None,
                )],
            };
            let mut why: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for (problem, about) in &problems {
                let Some((section, index)) = *about else {
                    continue;
                };
                // `to_toml` writes each section's records in their order.
                let position = kept
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| section_of(r) == section)
                    .nth(index)
                    .map(|(position, _)| position);
                if let Some(position) = position {
                    why.entry(position)
                        .or_default()
                        .push(problem.message.clone());
                }
            }
            if why.is_empty() {
                // Problems with no record to blame: nothing can be kept.
                let message = problems
                    .iter()
                    .map(|(p, _)| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                left_out.extend(kept.into_iter().map(|r| (r, message.clone())));
                return (Self::default(), left_out);
            }
            let mut still = Vec::with_capacity(kept.len());
            for (position, record) in kept.into_iter().enumerate() {
                match why.remove(&position) {
                    Some(messages) => left_out.push((record, messages.join("; "))),
                    None => still.push(record),
                }
            }
            kept = still;
        }
    }

    /// Parses and checks a site file's text; on failure, every problem in
    /// file order with the record it is about.
    fn check(text: &str) -> Result<Self, Vec<(SiteProblem, Option<RecordAt>)>> {
        Self::check_with(text, Some(reading_threads()))
    }

    /// [`check`](Self::check), reading record by record on `by_record`
    /// threads where the file allows, or always whole when `None` (for
    /// tests: every way agrees).
    fn check_with(
        text: &str,
        by_record: Option<usize>,
    ) -> Result<Self, Vec<(SiteProblem, Option<RecordAt>)>> {
        let checker = || Checker {
            record_starts: HashMap::default(),
            lines: Lines::new(text),
            problems: Vec::new(),
        };
        let mut c = checker();
        let by_record = by_record.and_then(|threads| read_by_record(&mut c, text, threads));
        let sections = match by_record {
            Some(sections) => sections,
            None => {
                // Not plainly record by record: read whole, afresh.
                c = checker();
                match read_whole(&mut c, text) {
                    Some(sections) => sections,
                    None => return Err(c.problems),
                }
            }
        };
        let Sections {
            sites,
            areas,
            doors,
            readers,
            groups,
            holidays,
            schedules,
            levels,
            holders,
            creds,
            assigns,
            seen,
            ..
        } = sections;

        // The ids kept of each section: the sets that found duplicates.
        let none = HashSet::default();
        let ids = |section: &str| seen.get(section).unwrap_or(&none);
        let site_ids = ids("sites");
        let area_ids = ids("areas");
        let door_ids = ids("doors");
        let group_ids = ids("door_groups");
        let holiday_ids = ids("holiday_sets");
        let schedule_ids = ids("schedules");
        let level_ids = ids("access_levels");
        let holder_ids = ids("cardholders");

        for (i, r) in &doors {
            c.refs("doors", *i, &r.id, "site", [&r.site], site_ids);
            c.refs("doors", *i, &r.id, "area", &r.area, area_ids);
        }
        for (i, r) in &readers {
            c.refs("readers", *i, &r.id, "door", [&r.door], door_ids);
        }
        for (i, r) in &groups {
            c.refs("door_groups", *i, &r.id, "door", &r.doors, door_ids);
        }
        for (i, r) in &schedules {
            let sets = &r.holiday_sets;
            c.refs("schedules", *i, &r.id, "holiday set", sets, holiday_ids);
        }
        for (i, r) in &levels {
            c.refs(
                "access_levels",
                *i,
                &r.id,
                "schedule",
                [&r.schedule],
                schedule_ids,
            );
            c.refs("access_levels", *i, &r.id, "door", &r.doors, door_ids);
            let groups = &r.door_groups;
            c.refs("access_levels", *i, &r.id, "door group", groups, group_ids);
        }
        for (i, r) in &creds {
            let id = r.card.to_string();
            c.refs(
                "credentials",
                *i,
                &id,
                "cardholder",
                [&r.holder],
                holder_ids,
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
                holder_ids,
            );
            c.refs(
                "assignments",
                *i,
                &id,
                "access level",
                [&r.level],
                level_ids,
            );
        }

        // The id sets are done with: freed before the records are moved
        // into one vector, when the most memory is in use (3 million ids
        // are a few hundred MiB).
        drop(seen);
        // Sized once: grown by doubling, the vector of 3 million records
        // of a large file was copied whole several times, a peak of its
        // own on top of the records it was being filled from.
        let total = sites.len()
            + areas.len()
            + doors.len()
            + readers.len()
            + groups.len()
            + holidays.len()
            + schedules.len()
            + levels.len()
            + holders.len()
            + creds.len()
            + assigns.len();
        let mut records = Vec::with_capacity(total);
        let mut push =
            |c: &mut Checker<'_>, section: &'static str, index: usize, record: Record| {
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
            // File order (a stable sort keeps the order of several problems
            // on one line).
            c.problems.sort_by_key(|(p, _)| p.line);
            Err(c.problems)
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
            *counts.entry(section_of(record)).or_insert(0) += 1;
        }
        counts
    }
}

/// The section a record is written in.
fn section_of(record: &Record) -> &'static str {
    match record {
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
    }
}

#[cfg(test)]
mod tests {
    use super::{Checker, HashMap, Lines, SiteFile, read_by_record};

    /// Records or problems, as text, read either way.
    fn read(text: &str, by_record: bool) -> Result<Vec<String>, Vec<String>> {
        match SiteFile::check_with(text, by_record.then_some(1)) {
            Ok(site) => Ok(site.records.iter().map(|r| format!("{r:?}")).collect()),
            Err(problems) => Err(problems.iter().map(|(p, _)| p.to_string()).collect()),
        }
    }

    fn takes_the_record_path(text: &str) -> bool {
        let mut c = Checker {
            record_starts: HashMap::default(),
            lines: Lines::new(text),
            problems: Vec::new(),
        };
        read_by_record(&mut c, text, 1).is_some()
    }

    #[test]
    fn reading_record_by_record_agrees_with_reading_whole() {
        let example = include_str!("../../docs/examples/site.toml");
        assert!(takes_the_record_path(example));
        assert!(read(example, true).is_ok());
        let records = crate::synth::site(&crate::synth::SynthParams {
            holders: 300,
            ..crate::synth::SynthParams::default()
        });
        let synthetic = SiteFile::to_toml(&records).unwrap();
        assert!(takes_the_record_path(&synthetic));
        // Problems inside records (a bad value, a duplicate, an unknown
        // reference) are found record by record, with the same lines.
        let broken = example
            .replacen("unlock_ms = 5000", "unlock_ms = \"soon\"", 1)
            .replacen("id = \"lobby-in\"", "id = \"lobby-out\"", 1)
            .replacen("site = \"hq\"", "site = \"hx\"", 1);
        assert!(takes_the_record_path(&broken));
        // What the record reader does not take goes whole: an unknown
        // section, a multi-line string, a table header, a value before the
        // first section, a header that only looks like one inside a value.
        let whole = [
            format!("{example}\n[[doorz]]\nid = \"x\"\n"),
            example.replacen(
                "time_zone = ",
                "notes = \"\"\"a\n[[doors]]\nb\"\"\"\ntime_zone = ",
                1,
            ),
            format!("{example}\n[doors.extra]\nx = 1\n"),
            format!("title = \"x\"\n{example}"),
            example.replacen("doors = [", "doors = [\n[[doors]]\n", 1),
        ];
        for text in [example.to_owned(), synthetic, broken].iter().chain(&whole) {
            assert_eq!(read(text, true), read(text, false), "{text}");
        }
        for text in &whole {
            assert!(!takes_the_record_path(text), "{text}");
            assert!(read(text, true).is_err(), "{text}");
        }
        assert!(read(&whole[1], true).is_err());
    }

    /// A file large enough to be read on several threads reads the same,
    /// problems and their lines included, on one thread, on three, and
    /// whole; one that must be read whole late in the file (a record that
    /// does not parse alone, in the last block) falls back from the
    /// threads too.
    #[test]
    fn reading_on_several_threads_agrees_with_one_and_with_whole() {
        let records = crate::synth::site(&crate::synth::SynthParams {
            holders: 3_000,
            ..crate::synth::SynthParams::default()
        });
        let text = SiteFile::to_toml(&records).unwrap();
        let headers = text.matches("[[").count();
        assert!(
            headers > 2 * super::READ_BLOCK + 1000,
            "{headers} records: too few"
        );
        let first_card = text.split("[[credentials]]").nth(1).unwrap().to_owned();
        // A bad value late in the file, a duplicate of an early record at
        // its end, an unknown reference.
        let replace_last = |text: &str, what: &str, with: &str| {
            let at = text.rfind(what).unwrap();
            format!("{}{with}{}", &text[..at], &text[at + what.len()..])
        };
        let broken = replace_last(
            &replace_last(&text, "card = \"", "card = \"bogus:"),
            "level = \"level-00",
            "level = \"level-x0",
        ) + &format!("\n[[credentials]]{first_card}");
        let whole = format!("{text}\n[[credentials]]\ncard = \n");
        let (broken_one, broken_three) = (read_on(&broken, 1), read_on(&broken, 3));
        assert!(
            broken_one.as_ref().is_err_and(|p| p.len() >= 3),
            "{broken_one:?}"
        );
        for text in [&text, &broken, &whole] {
            let one = read_on(text, 1);
            assert_eq!(one, read_on(text, 3));
            assert_eq!(one, read(text, false));
        }
        assert_eq!(broken_one, broken_three);
        assert!(read_on(&text, 3).is_ok());
        assert!(read_on(&whole, 3).is_err());
        let on_threads = |text: &str| {
            let mut c = Checker {
                record_starts: HashMap::default(),
                lines: Lines::new(text),
                problems: Vec::new(),
            };
            read_by_record(&mut c, text, 3).is_some()
        };
        assert!(on_threads(&text) && on_threads(&broken));
        assert!(!on_threads(&whole));
    }

    fn read_on(text: &str, threads: usize) -> Result<Vec<String>, Vec<String>> {
        match SiteFile::check_with(text, Some(threads)) {
            Ok(site) => Ok(site.records.iter().map(|r| format!("{r:?}")).collect()),
            Err(problems) => Err(problems.iter().map(|(p, _)| p.to_string()).collect()),
        }
    }

    #[test]
    fn lines_number_every_offset_as_counting_newlines_does() {
        let text = "a\n\nbc\nd\n\n";
        let lines = Lines::new(text);
        for offset in 0..=text.len() {
            let counted = text[..offset].matches('\n').count() + 1;
            assert_eq!(lines.line(offset), counted, "offset {offset}");
        }
        assert_eq!(Lines::new("").line(0), 1);
    }
}
