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

mod flat;

use crate::model::Change;
use crate::model::{
    AccessLevelRecord, AreaRecord, AssignmentRecord, CardholderRecord, CredentialRecord,
    DoorGroupRecord, DoorRecord, HolidaySetRecord, ReaderRecord, Record, RecordKey, ScheduleRecord,
    SiteRecord,
};
use crate::snapshot::SnapshotBuilder;
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
    /// Records kept that [`validate`] refused, with why: reported after the
    /// references, as they always were.
    invalid: Vec<(&'static str, usize, String, String)>,
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
        let Read { record, invalid } = match item.record {
            Ok(read) => read,
            Err(fault) => {
                // The parser's span of the offending value, when it has
                // one, is more precise than the record's first line.
                let line = fault.at.map(|at| c.lines.line(at));
                c.problem_at(item.section, index, line, &fault.raw_id, fault.message);
                return;
            }
        };
        let id = record_id(&record);
        let seen = self.seen.entry(item.section).or_default();
        if seen.contains(&id) {
            c.problem(item.section, index, &id, "duplicate id".to_owned());
            return;
        }
        if let Some(message) = invalid {
            self.invalid
                .push((item.section, index, id.clone(), message));
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
    /// The record, made where it was read.
    record: Result<Read, Fault>,
}

/// A record read, with what the keeping thread needs of it.
struct Read {
    record: Record,
    /// Why [`validate`] refuses it, if it does: checked where it was read,
    /// so on every reading thread.
    invalid: Option<String>,
}

impl Read {
    fn of(record: Record) -> Self {
        Self {
            invalid: validate(&record).err().map(|e| e.to_string()),
            record,
        }
    }
}

/// A record's fields as one of the readers holds them, to be deserialised
/// as the record of its section by [`record_of`].
trait Fields {
    type Error;
    fn to<T: DeserializeOwned>(self) -> Result<T, Self::Error>;
}

/// A record as the TOML parser read it, with spans.
impl Fields for Spanned<DeValue<'_>> {
    type Error = toml::de::Error;

    fn to<T: DeserializeOwned>(self) -> Result<T, toml::de::Error> {
        T::deserialize(ValueDeserializer::from(self))
    }
}

/// The lines of a record after its header, for the reader of plain
/// records ([`flat`]); its error is only that it leaves the record to the
/// TOML parser.
struct PlainLines<'a>(&'a str);

impl Fields for PlainLines<'_> {
    type Error = ();

    fn to<T: DeserializeOwned>(self) -> Result<T, ()> {
        flat::read(self.0).ok_or(())
    }
}

/// The record of `section` that `fields` make; `None` for a section that
/// is not one of [`SECTIONS`].
fn record_of<F: Fields>(section: &str, fields: F) -> Option<Result<Record, F::Error>> {
    Some(match section {
        "sites" => fields.to().map(Record::Site),
        "areas" => fields.to().map(Record::Area),
        "doors" => fields.to().map(Record::Door),
        "readers" => fields.to().map(Record::Reader),
        "door_groups" => fields.to().map(Record::DoorGroup),
        "holiday_sets" => fields.to().map(Record::HolidaySet),
        "schedules" => fields.to().map(Record::Schedule),
        "access_levels" => fields.to().map(Record::AccessLevel),
        "cardholders" => fields.to().map(Record::Cardholder),
        "credentials" => fields.to().map(Record::Credential),
        "assignments" => fields.to().map(Record::Assignment),
        _ => return None,
    })
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
    let start = base + item.span().start;
    // Where its id is written, kept for a problem's place: the item itself
    // goes to the deserialiser.
    let id_span = item
        .get_ref()
        .get("id")
        .or_else(|| item.get_ref().get("card"))
        .filter(|v| v.get_ref().as_str().is_some())
        .map(Spanned::span);
    let record = record_of(section, item)?.map(Read::of).map_err(|e| Fault {
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

/// Reads `chunk`, a record of `section` starting at byte `start` (its
/// header line first), with the fast reader of plain records; `None` when
/// that reader leaves it to the TOML parser.
fn read_plain(chunk: &str, section: &'static str, start: usize) -> Option<Item> {
    let (_header, body) = chunk.split_once('\n')?;
    let record = record_of(section, PlainLines(body))?.ok()?;
    Some(Item {
        section,
        start,
        record: Ok(Read::of(record)),
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
    // The name ends at the first `]` (no section name holds one): found
    // by a search for one byte, a few million times in a large file.
    let Some(end) = rest.find(']') else {
        return Some(Header::Other);
    };
    let (name, after) = rest.split_at(end);
    let close = if double { "]]" } else { "]" };
    let Some(after) = after.strip_prefix(close) else {
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
    let mut inner = parts.peekable();
    let plain = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    Some(match (double, inner.peek().is_none()) {
        (true, true) => Header::Record(section),
        (_, false) if inner.all(plain) => Header::Inside(section),
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
fn read_by_record<K: Keep>(
    c: &mut Checker<'_>,
    text: &str,
    threads: usize,
    make: impl FnOnce(&mut Checker<'_>, &HashMap<&'static str, usize>) -> K,
) -> Option<K> {
    // A small file is scanned at once: threads cost more than they save.
    let pieces = if text.len() < SCAN_PIECE { 1 } else { threads };
    let headers = find_headers(text, pieces)?;
    let preamble = text.get(..headers.first().map_or(text.len(), |h| h.0))?;
    if !DeTable::parse(preamble).ok()?.get_ref().is_empty() {
        return None;
    }
    // Record `i` runs from its header to the next one.
    let read = |i: usize| -> Option<Item> {
        let &(start, name) = headers.get(i)?;
        let end = headers.get(i + 1).map_or(text.len(), |h| h.0);
        let chunk = text.get(start..end)?;
        if let Some(item) = read_plain(chunk, name, start) {
            return Some(item);
        }
        let chunk = DeTable::parse(chunk).ok()?.into_inner();
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
    for &(_, name) in &headers {
        *counts.entry(name).or_default() += 1;
    }
    let mut kept = make(c, &counts);
    let mut keep = |items: Vec<Option<Item>>| -> Option<()> {
        for item in items {
            kept.keep(c, item?)?;
        }
        Some(())
    };
    if threads < 2 || headers.len() < 2 * READ_BLOCK {
        keep((0..headers.len()).map(read).collect())?;
        return Some(kept);
    }
    // Parsing is most of the time of a large file: blocks of records are
    // read on every core and kept here in file order as they come. The
    // channel's bound and the in-order keeping hold only a few blocks at
    // once beyond the records kept.
    let blocks: Vec<std::ops::Range<usize>> = (0..headers.len())
        .step_by(READ_BLOCK)
        .map(|first| first..(first + READ_BLOCK).min(headers.len()))
        .collect();
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
                    if tx.send((i, block.clone().map(read).collect())).is_err() {
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
    complete.then_some(kept)
}

/// The record headers of `text` (offset, section), found in `pieces`
/// pieces on as many threads; `None` when the file is not plainly record
/// by record (see [`read_by_record`]).
fn find_headers(text: &str, pieces: usize) -> Option<Vec<(usize, &'static str)>> {
    /// A line that matters, in one piece of the text.
    enum Mark {
        Record(usize, &'static str),
        Inside(&'static str),
    }
    // Each piece ends after a newline, so no line (and no `"""`) is split.
    // Only a line whose first non-blank character is `[` may be a header:
    // the search jumps from one `[` to the next (a few million in a large
    // file), with SIMD searches (memchr), as it does for the quotes of a
    // multi-line string. Line by line, this took most of a second at a
    // million holders.
    let scan = |base: usize, piece: &str| -> Option<Vec<Mark>> {
        let bytes = piece.as_bytes();
        if memchr::memmem::find(bytes, b"\"\"\"").is_some()
            || memchr::memmem::find(bytes, b"'''").is_some()
        {
            return None;
        }
        let mut marks = Vec::new();
        let mut at = 0;
        while let Some(found) = memchr::memchr(b'[', bytes.get(at..)?) {
            let open = at + found;
            let start = memchr::memrchr(b'\n', bytes.get(..open)?).map_or(0, |n| n + 1);
            let end =
                memchr::memchr(b'\n', bytes.get(open..)?).map_or(bytes.len(), |n| open + n + 1);
            at = end;
            if !piece.get(start..open)?.trim_start().is_empty() {
                // A `[` inside a line: not a header.
                continue;
            }
            let line = piece.get(start..end)?;
            match header(line) {
                Some(Header::Record(name)) => marks.push(Mark::Record(base + start, name)),
                Some(Header::Inside(name)) => marks.push(Mark::Inside(name)),
                // A `[` line in a value (an array's row, indented) is not a
                // header; anything else that may be one is read whole.
                Some(Header::Other) if line.starts_with(' ') || line.starts_with('\t') => {}
                Some(_) => return None,
                None => {}
            }
        }
        Some(marks)
    };
    let n = pieces.max(1);
    let mut pieces = Vec::with_capacity(n);
    let mut start = 0;
    for i in 1..=n {
        let end = if i == n {
            text.len()
        } else {
            let at = (text.len() / n * i).max(start);
            text.as_bytes()
                .get(at..)
                .and_then(|rest| memchr::memchr(b'\n', rest))
                .map_or(text.len(), |n| at + n + 1)
        };
        pieces.push((start, text.get(start..end)?));
        start = end;
    }
    let marks: Vec<Option<Vec<Mark>>> = std::thread::scope(|scope| {
        let scans: Vec<_> = pieces
            .iter()
            .skip(1)
            .map(|&(base, piece)| scope.spawn(move || scan(base, piece)))
            .collect();
        let first = pieces.first().and_then(|&(base, piece)| scan(base, piece));
        std::iter::once(first)
            .chain(scans.into_iter().map(|s| s.join().ok().flatten()))
            .collect()
    });
    let total = marks.iter().flatten().map(Vec::len).sum();
    let mut headers: Vec<(usize, &'static str)> = Vec::with_capacity(total);
    for marks in marks {
        for mark in marks? {
            match mark {
                Mark::Record(offset, name) => headers.push((offset, name)),
                // A table inside the record being read stays in its chunk,
                // where it means what it means in the whole file; inside
                // another section's last record, it would not.
                Mark::Inside(name) if headers.last().is_some_and(|h| h.1 == name) => {}
                Mark::Inside(_) => return None,
            }
        }
    }
    Some(headers)
}

/// Where the record-by-record reader puts each record, in file order.
trait Keep {
    /// Keeps `item` (or notes its problem in `c`); `None` stops the
    /// reading, which then returns `None`.
    fn keep(&mut self, c: &mut Checker<'_>, item: Item) -> Option<()>;
}

impl Keep for Sections {
    fn keep(&mut self, c: &mut Checker<'_>, item: Item) -> Option<()> {
        self.accept(c, item);
        Some(())
    }
}

/// The sections a site file has many records of: the reader that builds
/// at once applies them straight to the builder.
const LARGE_SECTIONS: [&str; 3] = ["cardholders", "credentials", "assignments"];

/// Keeps a site file's records in a builder as they are read (see
/// [`SiteFile::build`]): the large sections' records are applied at once,
/// the others kept to be checked as usual. Stops at the first problem of
/// any kind: the file is then read again by the checking reader, which
/// words every problem.
struct Direct {
    builder: SnapshotBuilder,
    small: Sections,
    /// Records applied, by section.
    applied: HashMap<&'static str, usize>,
}

impl Keep for Direct {
    fn keep(&mut self, c: &mut Checker<'_>, item: Item) -> Option<()> {
        if !LARGE_SECTIONS.contains(&item.section) {
            self.small.accept(c, item);
            return c.problems.is_empty().then_some(());
        }
        let Ok(Read {
            record,
            invalid: None,
            ..
        }) = item.record
        else {
            return None;
        };
        if self.builder.holds_key_of(&record) {
            return None;
        }
        self.builder.apply(Change::Upsert(record)).ok()?;
        *self.applied.entry(item.section).or_default() += 1;
        Some(())
    }
}

/// Reports every reference of `sections` to a record that `seen` (the ids
/// of each section) does not hold.
fn check_references(
    c: &mut Checker<'_>,
    sections: &Sections,
    seen: &HashMap<&'static str, HashSet<String>>,
) {
    let Sections {
        doors,
        readers,
        groups,
        schedules,
        levels,
        creds,
        assigns,
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

    for (i, r) in doors {
        c.refs("doors", *i, &r.id, "site", [&r.site], site_ids);
        c.refs("doors", *i, &r.id, "area", &r.area, area_ids);
    }
    for (i, r) in readers {
        c.refs("readers", *i, &r.id, "door", [&r.door], door_ids);
    }
    for (i, r) in groups {
        c.refs("door_groups", *i, &r.id, "door", &r.doors, door_ids);
    }
    for (i, r) in schedules {
        let sets = &r.holiday_sets;
        c.refs("schedules", *i, &r.id, "holiday set", sets, holiday_ids);
    }
    for (i, r) in levels {
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
    for (i, r) in creds {
        if !holder_ids.contains(r.holder.as_str()) {
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
    }
    for (i, r) in assigns {
        if !(holder_ids.contains(r.holder.as_str()) && level_ids.contains(r.level.as_str())) {
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
    }
}

/// Bytes of a site file below which its headers are found on one thread.
const SCAN_PIECE: usize = 1 << 20;

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

    /// Parses and checks a site file's text, as [`parse`](Self::parse)
    /// does, and keeps its records by section instead of in one vector:
    /// for a large file, whose records are then handed over one by one
    /// (to a builder) after the text is freed. At a million cardholders
    /// the one vector alone was several hundred MiB on top of the records.
    pub fn read(text: &str) -> Result<SiteRecords, SiteError> {
        Self::check_with(text, Some(reading_threads())).map_err(|problems| SiteError {
            problems: problems.into_iter().map(|(p, _)| p).collect(),
        })
    }

    /// Reads and checks a site file's text into a new builder whose first
    /// published version is `after + 1`, with the count of records by
    /// section: what a server serving the file needs, in the least time
    /// and memory. The records of the large sections (cardholders,
    /// credentials, assignments) are applied as they are read, so they are
    /// never all held at once beside the builder; a file with any problem
    /// is then read again the way [`parse`](Self::parse) reads it, for
    /// every problem in the error.
    pub fn build(
        text: &str,
        after: u64,
    ) -> Result<(SnapshotBuilder, BTreeMap<&'static str, usize>), SiteError> {
        if let Some(built) = Self::build_direct(text, after) {
            return Ok(built);
        }
        let records = Self::read(text)?;
        let counts = records.counts();
        let mut builder = SnapshotBuilder::starting_at(after);
        let refused = builder.apply_all(records.into_records().map(Change::Upsert));
        if let Some((change, e)) = refused.first() {
            // `read` validated every record as the builder does.
            return Err(SiteError {
                problems: vec![SiteProblem {
                    line: 1,
                    location: format!("{change:?}"),
                    message: format!("refused by the builder: {e}"),
                }],
            });
        }
        Ok((builder, counts))
    }

    /// [`build`](Self::build) reading record by record, `None` at the first
    /// problem of any kind or if the file is not of that shape.
    fn build_direct(
        text: &str,
        after: u64,
    ) -> Option<(SnapshotBuilder, BTreeMap<&'static str, usize>)> {
        let mut c = Checker {
            record_starts: HashMap::default(),
            lines: Lines::new(text),
            problems: Vec::new(),
        };
        let direct = read_by_record(&mut c, text, reading_threads(), |_, counts| {
            let small = counts
                .iter()
                .filter(|(section, _)| !LARGE_SECTIONS.contains(section))
                .map(|(&section, &count)| (section, count))
                .collect();
            let mut builder = SnapshotBuilder::starting_at(after);
            builder.reserve_holders(counts.get("cardholders").copied().unwrap_or(0));
            Direct {
                builder,
                small: Sections::with_capacity(&small),
                applied: HashMap::default(),
            }
        })?;
        let Direct {
            mut builder,
            mut small,
            applied,
        } = direct;
        let seen = std::mem::take(&mut small.seen);
        check_references(&mut c, &small, &seen);
        if !(c.problems.is_empty() && small.invalid.is_empty()) {
            return None;
        }
        let small = SiteRecords(small);
        let mut counts = small.counts();
        counts.extend(applied);
        let refused = builder.apply_all(small.into_records().map(Change::Upsert));
        (refused.is_empty() && builder.references_resolve()).then_some((builder, counts))
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
        let records = Self::check_with(text, Some(reading_threads()))?;
        Ok(Self {
            records: records.into_records().collect(),
        })
    }

    /// [`check`](Self::check), reading record by record on `by_record`
    /// threads where the file allows, or always whole when `None` (for
    /// tests: every way agrees).
    fn check_with(
        text: &str,
        by_record: Option<usize>,
    ) -> Result<SiteRecords, Vec<(SiteProblem, Option<RecordAt>)>> {
        let checker = || Checker {
            record_starts: HashMap::default(),
            lines: Lines::new(text),
            problems: Vec::new(),
        };
        let mut c = checker();
        let by_record = by_record.and_then(|threads| {
            read_by_record(&mut c, text, threads, |c, counts| {
                for (&section, &count) in counts {
                    c.record_starts.insert(section, Vec::with_capacity(count));
                }
                Sections::with_capacity(counts)
            })
        });
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
        let mut sections = sections;
        let seen = std::mem::take(&mut sections.seen);
        check_references(&mut c, &sections, &seen);
        // The id sets are done with (3 million ids are a few hundred MiB).
        drop(seen);
        for (section, index, id, message) in std::mem::take(&mut sections.invalid) {
            c.problem(section, index, &id, message);
        }

        if c.problems.is_empty() {
            Ok(SiteRecords(sections))
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

/// The records of a checked site file, kept by section (see
/// [`SiteFile::read`]).
pub struct SiteRecords(Sections);

impl SiteRecords {
    /// How many records there are.
    pub fn len(&self) -> usize {
        self.counts().values().sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts of records by section, for summaries (as
    /// [`SiteFile::counts`]).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let s = &self.0;
        [
            ("sites", s.sites.len()),
            ("areas", s.areas.len()),
            ("doors", s.doors.len()),
            ("readers", s.readers.len()),
            ("door_groups", s.groups.len()),
            ("holiday_sets", s.holidays.len()),
            ("schedules", s.schedules.len()),
            ("access_levels", s.levels.len()),
            ("cardholders", s.holders.len()),
            ("credentials", s.creds.len()),
            ("assignments", s.assigns.len()),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }

    /// Every record, sites first and assignments last, in the order of
    /// [`SiteFile::records`]. Each section's memory is freed once it has
    /// been handed over.
    pub fn into_records(self) -> impl Iterator<Item = Record> {
        fn each<R>(records: Vec<(usize, R)>, f: fn(R) -> Record) -> impl Iterator<Item = Record> {
            records.into_iter().map(move |(_, r)| f(r))
        }
        let s = self.0;
        each(s.sites, Record::Site)
            .chain(each(s.areas, Record::Area))
            .chain(each(s.doors, Record::Door))
            .chain(each(s.readers, Record::Reader))
            .chain(each(s.groups, Record::DoorGroup))
            .chain(each(s.holidays, Record::HolidaySet))
            .chain(each(s.schedules, Record::Schedule))
            .chain(each(s.levels, Record::AccessLevel))
            .chain(each(s.holders, Record::Cardholder))
            .chain(each(s.creds, Record::Credential))
            .chain(each(s.assigns, Record::Assignment))
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
    use super::{Checker, HashMap, Lines, Sections, SiteFile, find_headers, read_by_record};

    /// Records or problems, as text, read either way.
    fn read(text: &str, by_record: bool) -> Result<Vec<String>, Vec<String>> {
        match SiteFile::check_with(text, by_record.then_some(1)) {
            Ok(site) => Ok(site.into_records().map(|r| format!("{r:?}")).collect()),
            Err(problems) => Err(problems.iter().map(|(p, _)| p.to_string()).collect()),
        }
    }

    fn takes_the_record_path(text: &str) -> bool {
        let mut c = Checker {
            record_starts: HashMap::default(),
            lines: Lines::new(text),
            problems: Vec::new(),
        };
        read_by_record(&mut c, text, 1, |_, counts| Sections::with_capacity(counts)).is_some()
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
            read_by_record(&mut c, text, 3, |_, counts| Sections::with_capacity(counts)).is_some()
        };
        assert!(on_threads(&text) && on_threads(&broken));
        assert!(!on_threads(&whole));
    }

    fn read_on(text: &str, threads: usize) -> Result<Vec<String>, Vec<String>> {
        match SiteFile::check_with(text, Some(threads)) {
            Ok(site) => Ok(site.into_records().map(|r| format!("{r:?}")).collect()),
            Err(problems) => Err(problems.iter().map(|(p, _)| p.to_string()).collect()),
        }
    }

    #[test]
    fn a_valid_file_is_built_as_it_is_read_and_a_bad_one_read_again() {
        use crate::model::Record;
        let records = crate::synth::site(&crate::synth::SynthParams {
            holders: 50,
            doors: 5,
            levels: 3,
            ..Default::default()
        });
        let text = SiteFile::to_toml(&records).unwrap();
        let (builder, counts) = SiteFile::build_direct(&text, 0).expect("built as read");
        assert_eq!(builder.records().count(), records.len());
        assert_eq!(counts.get("cardholders"), Some(&50));
        let holder = records
            .iter()
            .find(|r| matches!(r, Record::Cardholder(_)))
            .unwrap()
            .clone();
        let mut twice = records.clone();
        twice.push(holder);
        let text = SiteFile::to_toml(&twice).unwrap();
        assert!(SiteFile::build_direct(&text, 0).is_none());
        assert!(SiteFile::build(&text, 0).is_err());
    }

    /// The headers as found line by line, the plain way.
    fn by_lines(text: &str) -> Option<Vec<(usize, &'static str)>> {
        if text.contains("\"\"\"") || text.contains("'''") {
            return None;
        }
        let mut headers: Vec<(usize, &'static str)> = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            match super::header(line) {
                Some(super::Header::Record(name)) => headers.push((offset, name)),
                Some(super::Header::Inside(name))
                    if headers.last().is_some_and(|h| h.1 == name) => {}
                Some(super::Header::Other) if line.starts_with([' ', '\t']) => {}
                Some(_) => return None,
                None => {}
            }
            offset += line.len();
        }
        Some(headers)
    }

    #[test]
    fn headers_found_in_pieces_are_the_headers_found_at_once() {
        let example = include_str!("../../docs/examples/site.toml");
        let synthetic = SiteFile::to_toml(&crate::synth::site(&crate::synth::SynthParams {
            holders: 100,
            doors: 10,
            levels: 4,
            ..Default::default()
        }))
        .unwrap();
        let inside = "[[schedules]]\nid = \"s\"\n[[schedules.intervals]]\nstart = \"08:00\"\n";
        let inside_other =
            "[[schedules]]\nid = \"s\"\n[[sites]]\nid = \"x\"\n[[schedules.intervals]]\n";
        let quoted = format!("{synthetic}[[sites]]\nid = \"\"\"x\"\"\"\n");
        let blanks = "\u{3000}[[sites]]\nid = \"a\"\n\t [[sites]] # b\nid = \"b\"\n\x0c[[doors]]\nx = [\n  [1],\n]\n";
        let odd = "x = 1\n[[sites]]]\n";
        let texts = [
            example,
            &synthetic,
            inside,
            inside_other,
            &quoted,
            blanks,
            odd,
        ];
        for text in texts {
            let at_once = find_headers(text, 1);
            assert_eq!(at_once, by_lines(text), "{text:.80}");
            for pieces in 2..=7 {
                assert_eq!(find_headers(text, pieces), at_once, "{pieces} pieces");
            }
        }
        assert_eq!(find_headers(blanks, 2).map(|h| h.len()), Some(3));
        assert!(find_headers(example, 1).is_some_and(|h| h.len() > 20));
        assert!(find_headers(inside, 1).is_some());
        assert!(find_headers(inside_other, 3).is_none());
        assert!(find_headers(&quoted, 4).is_none());
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
