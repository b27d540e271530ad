//! Access events: what every decision leaves behind, and the record format
//! of the event log (the spool).
//!
//! A record holds the events of one chunk of frames (what one read of a
//! stream delivered): `length (u32 LE) | CRC-32 of the payload (u32 LE) |
//! payload`, the payload being a version byte, what the chunk's events
//! share (the client, the server, the instant, the snapshot and its age,
//! the first event id) and the events, each a few dozen bytes of varints
//! and strings written on the decision path without allocating
//! ([`RecordWriter`]). Readers turn them into [`AccessEvent`]s (JSON,
//! DynamoDB items) off that path. One checksum per chunk instead of per
//! event keeps the cost per decision low; a torn record is a chunk whose
//! answers were never sent. The byte layout is documented in
//! `docs/access-events.md`.
//!
//! Nothing here does I/O: the spool's files and the shipper live in the
//! loader, the encoding on the request path in the protocol's decider.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::credential::{CardFormat, CredentialKey, Uid};
use crate::decision::{Decision, Reason, Verdict};
use crate::snapshot::Subject;

/// Bytes before a record's payload: its length and checksum.
pub const RECORD_HEADER: usize = 8;

/// The largest payload a record may have: a chunk of frames is at most
/// 64 KiB of requests (a few thousand), each event a few hundred bytes.
/// Anything longer is a corrupt length.
pub const MAX_PAYLOAD: usize = 4 << 20;

/// The payload layout this build writes (it reads 1 to this).
const PAYLOAD_VERSION: u8 = 3;

/// The low 74 bits of a UUIDv7 that are not time, version or variant.
const ENTROPY_BITS: u32 = 74;

/// Marks an absent optional string.
const ABSENT: u16 = u16::MAX;

/// An event's id: a UUIDv7, so ids sort by time (first 48 bits are Unix
/// milliseconds) and are unique across servers (the other 74 bits are the
/// generator's random start plus a counter). Its text form is the usual
/// lowercase 8-4-4-4-12, which sorts like the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u128);

impl EventId {
    /// A UUIDv7 for Unix millisecond `ms` with the 74 bits of `entropy`
    /// (the low 74 bits are used).
    pub fn v7(ms: i64, entropy: u128) -> Self {
        let ms = (ms.max(0) as u128) & ((1 << 48) - 1);
        let rand_a = (entropy >> 62) & 0xfff;
        let rand_b = entropy & ((1 << 62) - 1);
        Self(ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)
    }

    /// The Unix milliseconds the id carries.
    pub fn unix_ms(self) -> i64 {
        (self.0 >> 80) as i64
    }

    /// The 74 bits [`EventId::v7`] took from its entropy:
    /// `EventId::v7(id.unix_ms(), id.entropy()) == id` for every v7 id.
    pub fn entropy(self) -> u128 {
        let rand_a = (self.0 >> 64) & 0xfff;
        let rand_b = self.0 & ((1 << 62) - 1);
        rand_a << 62 | rand_b
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_u128(self.0).hyphenated(), f)
    }
}

/// Text that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an event id (a UUID such as 0192f7a0-8c1e-7000-8000-000000000001)")]
pub struct BadEventId(pub String);

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s)
            .map(|u| Self(u.as_u128()))
            .map_err(|_| BadEventId(s.to_owned()))
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One decision as the request path records it: borrowed, encoded straight
/// into the spool's buffer.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    /// The event's id.
    pub id: EventId,
    /// The server's clock when it decided, Unix milliseconds.
    pub time_ms: i64,
    /// The request id the client chose (echoed in its response).
    pub request_id: u32,
    /// The reader asked for.
    pub reader: &'a str,
    /// What the reader read.
    pub credential: CredentialKey,
    /// Door, site and holder, as the deciding snapshot knew them.
    pub subject: Subject<'a>,
    /// The decision as it was answered.
    pub decision: Decision,
    /// The age of the data it was made on.
    pub snapshot_age_ms: u32,
    /// The reader's own clock when it sent the request, if it said.
    pub reader_time_ms: Option<i64>,
}

/// Event flags (v3): what an event holds besides its fixed fields.
mod flag {
    pub(super) const GRANT: u8 = 0x01;
    pub(super) const READER_TIME: u8 = 0x02;
    pub(super) const UNLOCK: u8 = 0x04;
    pub(super) const UID: u8 = 0x08;
    pub(super) const DOOR: u8 = 0x10;
    pub(super) const SITE: u8 = 0x20;
    pub(super) const HOLDER: u8 = 0x40;
    pub(super) const KNOWN: u8 = 0x7f;
}

/// The bytes of a record's payload before its client (v3): version,
/// snapshot version, snapshot age, first event id.
const SHARED: usize = 1 + 8 + 4 + 16;

/// An event's bytes besides its strings and a uid, at most: an id step
/// and a request id (varints), flags, a reason code, an unlock time, a
/// reader time, the credential's card fields (varints), a uid's length,
/// and the four strings' lengths.
const EVENT_MAX: usize = 10 + 5 + 1 + 3 + 5 + 10 + 3 + 5 + 10 + 1 + 4 * 3;

/// What the events of the open record share (v3).
#[derive(Clone, Copy, Debug)]
struct Open {
    start: usize,
    snapshot_version: u64,
    snapshot_age_ms: u32,
    first: EventId,
}

/// The access events of one chunk of frames, encoded as records on the
/// decision path: [`RecordWriter::push`] each event, [`RecordWriter::finish`]
/// once, append [`RecordWriter::bytes`] to the spool, then
/// [`RecordWriter::clear`] (which keeps the buffer).
///
/// Events of a chunk share their instant, their snapshot and their client,
/// so a record states those once and each event is a few dozen bytes: its
/// id as a step from the record's first, its request id and codes as
/// varints, its strings. An event that does not share them (another
/// instant or snapshot, an id too far on) begins a new record in the same
/// buffer.
#[derive(Debug, Default)]
pub struct RecordWriter {
    bytes: Vec<u8>,
    open: Option<Open>,
    count: u64,
}

impl RecordWriter {
    /// Adds `event`, decided for client `client` by server `server` (a
    /// writer's events between two [`RecordWriter::clear`]s come from one
    /// client and one server: the record states them once).
    pub fn push(&mut self, client: &str, server: &str, event: &EventRef<'_>) {
        debug_assert_eq!(event.id.unix_ms(), event.time_ms, "the id carries the time");
        debug_assert!(
            self.open.is_none_or(|open| {
                // The open record's client: after its shared fields, a u16
                // length and the bytes.
                let at = open.start + RECORD_HEADER + SHARED;
                let len = self
                    .bytes
                    .get(at..at + 2)
                    .and_then(|l| l.try_into().ok())
                    .map_or(0, |l: [u8; 2]| usize::from(u16::from_le_bytes(l)));
                self.bytes.get(at + 2..at + 2 + len) == Some(cut(client).as_bytes())
            }),
            "a writer's events come from one client"
        );
        let step = match self.open {
            Some(open)
                if open.snapshot_version == event.decision.snapshot_version
                    && open.snapshot_age_ms == event.snapshot_age_ms
                    && open.first.unix_ms() == event.id.unix_ms() =>
            {
                u64::try_from(
                    event.id.entropy().wrapping_sub(open.first.entropy())
                        & ((1 << ENTROPY_BITS) - 1),
                )
                .ok()
            }
            _ => None,
        };
        let step = match step {
            Some(step) => step,
            None => {
                self.begin(client, server, event);
                0
            }
        };
        event.write_v3(&mut self.bytes, step);
        self.count += 1;
    }

    /// Closes the open record, if any: its length and checksum. Every
    /// byte of [`RecordWriter::bytes`] is then whole records.
    pub fn finish(&mut self) {
        if let Some(open) = self.open.take() {
            finish_record(&mut self.bytes, open.start);
        }
    }

    /// The records written (whole once [`RecordWriter::finish`]ed).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Events pushed since the last clear.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Empties it, keeping its buffer.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.open = None;
        self.count = 0;
    }

    fn begin(&mut self, client: &str, server: &str, event: &EventRef<'_>) {
        self.finish();
        let out = &mut self.bytes;
        let start = out.len();
        out.reserve(RECORD_HEADER + SHARED + 4 + client.len() + server.len());
        out.extend_from_slice(&[0; RECORD_HEADER]);
        out.push(PAYLOAD_VERSION);
        out.extend_from_slice(&event.decision.snapshot_version.to_le_bytes());
        out.extend_from_slice(&event.snapshot_age_ms.to_le_bytes());
        out.extend_from_slice(&event.id.0.to_be_bytes());
        put_str(out, Some(client));
        put_str(out, Some(server));
        self.open = Some(Open {
            start,
            snapshot_version: event.decision.snapshot_version,
            snapshot_age_ms: event.snapshot_age_ms,
            first: event.id,
        });
    }
}

/// Closes the record begun at `start`: its length and checksum.
fn finish_record(out: &mut [u8], start: usize) {
    let payload = out.get(start + RECORD_HEADER..).unwrap_or_default();
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    let mut header = [0u8; RECORD_HEADER];
    let (len_field, crc_field) = header.split_at_mut(4);
    len_field.copy_from_slice(&len.to_le_bytes());
    crc_field.copy_from_slice(&crc.to_le_bytes());
    if let Some(slot) = out.get_mut(start..start + RECORD_HEADER) {
        slot.copy_from_slice(&header);
    }
}

impl EventRef<'_> {
    /// Appends this event (v3) to the record being written in `out`, its
    /// id `step` after the record's first.
    fn write_v3(&self, out: &mut Vec<u8>, step: u64) {
        let uid = match self.credential {
            CredentialKey::Uid(uid) => uid.as_bytes().len(),
            CredentialKey::Card { .. } => 0,
        };
        let strings = [
            Some(self.reader),
            self.subject.door,
            self.subject.site,
            self.subject.holder,
        ];
        // One capacity check for the whole event, not one per field.
        out.reserve(EVENT_MAX + uid + strings.iter().flatten().map(|s| s.len()).sum::<usize>());
        put_varint(out, step);
        put_varint(out, u64::from(self.request_id));
        let d = &self.decision;
        let mut flags = 0;
        let present = [
            (d.verdict == Verdict::Grant, flag::GRANT),
            (self.reader_time_ms.is_some(), flag::READER_TIME),
            (d.unlock_ms != 0, flag::UNLOCK),
            (matches!(self.credential, CredentialKey::Uid(_)), flag::UID),
            (self.subject.door.is_some(), flag::DOOR),
            (self.subject.site.is_some(), flag::SITE),
            (self.subject.holder.is_some(), flag::HOLDER),
        ];
        for (on, bit) in present {
            if on {
                flags |= bit;
            }
        }
        out.push(flags);
        put_varint(out, u64::from(d.reason.code()));
        if d.unlock_ms != 0 {
            put_varint(out, u64::from(d.unlock_ms));
        }
        if let Some(ms) = self.reader_time_ms {
            // Zig-zag of the difference: a reader's clock is near the
            // server's, so a byte or three, either side.
            let diff = ms.wrapping_sub(self.time_ms);
            put_varint(out, ((diff << 1) ^ (diff >> 63)) as u64);
        }
        match self.credential {
            CredentialKey::Card {
                format,
                facility,
                number,
            } => {
                put_varint(out, u64::from(format.0));
                put_varint(out, u64::from(facility));
                put_varint(out, number);
            }
            CredentialKey::Uid(uid) => {
                let bytes = uid.as_bytes();
                out.push(bytes.len() as u8);
                out.extend_from_slice(bytes);
            }
        }
        for s in strings.into_iter().flatten() {
            put_short_str(out, s);
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The longest string an event keeps: ids are far below this; cut
/// rather than write a bad length.
const MAX_STR: usize = 4096;

fn cut(s: &str) -> &str {
    if s.len() <= MAX_STR {
        return s;
    }
    let mut end = MAX_STR;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// A string of an event (v3): a varint length, then UTF-8.
fn put_short_str(out: &mut Vec<u8>, s: &str) {
    let s = cut(s);
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A string of a record's header: a u16 length ([`ABSENT`] for none),
/// then UTF-8.
fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            let s = cut(s);
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
    }
}

/// One access event, owned: what `accessd events tail` prints (as JSON)
/// and what the shipper writes to the events table. Field names are those
/// of the JSON form and of the table's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEvent {
    /// Unique, time-sorted (UUIDv7).
    pub id: EventId,
    /// The server's clock when it decided.
    pub time: Timestamp,
    /// The reader asked for.
    pub reader: String,
    /// The reader's door, if the snapshot knew the reader.
    pub door: Option<String>,
    /// The door's site.
    pub site: Option<String>,
    /// The credential, in its text form (`h10301:12:1001`, `uid:04a2…`).
    pub credential: String,
    /// The credential's cardholder, if the snapshot knew the credential.
    pub holder: Option<String>,
    /// Grant or deny, as answered.
    pub verdict: Verdict,
    /// The reason's stable number.
    pub reason_code: u16,
    /// The reason's stable name.
    pub reason: Reason,
    /// How long the lock was released (0 on a deny).
    pub unlock_ms: u32,
    /// The snapshot the decision was made on.
    pub snapshot_version: u64,
    /// The age of that snapshot's data when deciding.
    pub snapshot_age_ms: u32,
    /// The client certificate's identity (its common name).
    pub client: String,
    /// The reader's own clock when it sent the request, if it said.
    pub reader_time: Option<Timestamp>,
    /// The deciding server's id.
    pub server: String,
    /// The request id the client chose.
    pub request_id: u32,
}

/// Why bytes are not an event record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes end inside the record: a write in progress, or a tail torn
    /// by a crash.
    #[error("the record is incomplete ({have} of {need} bytes)")]
    Incomplete {
        /// Bytes present.
        have: usize,
        /// Bytes the record needs.
        need: usize,
    },
    /// The length field is zero or above [`MAX_PAYLOAD`].
    #[error("bad record length {0}")]
    BadLength(u32),
    /// The payload does not match its checksum.
    #[error("checksum mismatch")]
    Checksum,
    /// The checksum matched but the payload does not parse (a payload
    /// version this build does not know, a reason code it does not know).
    #[error("bad payload: {0}")]
    Payload(String),
}

/// Reads the record at the start of `bytes`: its events and the record's
/// whole length.
pub fn read_record(bytes: &[u8]) -> Result<(Vec<AccessEvent>, usize), RecordError> {
    let header = bytes.get(..RECORD_HEADER).ok_or(RecordError::Incomplete {
        have: bytes.len(),
        need: RECORD_HEADER,
    })?;
    let (len_bytes, crc_bytes) = header.split_at(4);
    let len = u32::from_le_bytes(len_bytes.try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(crc_bytes.try_into().unwrap_or_default());
    if len == 0 || len as usize > MAX_PAYLOAD {
        return Err(RecordError::BadLength(len));
    }
    let total = RECORD_HEADER + len as usize;
    let payload = bytes
        .get(RECORD_HEADER..total)
        .ok_or(RecordError::Incomplete {
            have: bytes.len(),
            need: total,
        })?;
    if crc32fast::hash(payload) != crc {
        return Err(RecordError::Checksum);
    }
    let events = decode_payload(payload).map_err(RecordError::Payload)?;
    Ok((events, total))
}

/// Fuzzing hook: reads `payload` as a record's payload, framed with its
/// true length and checksum (what a corrupt but checksummed segment, or a
/// build with a bug, could hand the reader), and checks that the reader
/// either refuses it as a bad payload or returns whole events, each with
/// its reason matching its code and (version 3, where the record's first
/// id gives every event its time) its time in its id. (A card's text
/// need not parse back: a reader may send numbers outside its format's
/// range, and the event records what was sent.)
/// Panics only on a reader bug.
#[doc(hidden)]
#[expect(
    clippy::panic,
    reason = "a fuzz hook reports a reader bug by panicking"
)]
pub fn fuzz_read_record(payload: &[u8]) {
    if payload.is_empty() || payload.len() > MAX_PAYLOAD {
        return;
    }
    let mut record = vec![0; RECORD_HEADER];
    record.extend_from_slice(payload);
    finish_record(&mut record, 0);
    match read_record(&record) {
        Ok((events, n)) => {
            if n != record.len() || events.is_empty() {
                panic!(
                    "read {} events over {n} of {} bytes",
                    events.len(),
                    record.len()
                );
            }
            // As `decode_payload` tells the layouts apart.
            let v3 = payload.first().is_some_and(|&v| v >= 3);
            for event in events {
                if v3 && event.id.unix_ms() != event.time.as_millisecond() {
                    panic!("the id does not carry the time: {event:?}");
                }
                if event.reason.code() != event.reason_code {
                    panic!("reason and code disagree: {event:?}");
                }
            }
        }
        Err(RecordError::Payload(_)) => {}
        Err(e) => panic!("a framed payload was refused as {e}"),
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("payload ends early (needs {n} more bytes)"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    fn varint(&mut self, what: &str) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8().map_err(|e| format!("{what}: {e}"))?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("{what}: varint longer than 64 bits"))
    }

    /// A string of an event (v3): a varint length, then UTF-8.
    fn short_str(&mut self, what: &str) -> Result<String, String> {
        let len = usize::try_from(self.varint(what)?).unwrap_or(usize::MAX);
        if len > MAX_STR {
            return Err(format!("{what} of {len} bytes"));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn str(&mut self, what: &str) -> Result<Option<String>, String> {
        let len = u16::from_le_bytes(self.array()?);
        if len == ABSENT {
            return Ok(None);
        }
        let bytes = self.take(usize::from(len))?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| format!("{what} is not UTF-8"))
    }
}

fn decode_payload(payload: &[u8]) -> Result<Vec<AccessEvent>, String> {
    let mut c = Cursor(payload);
    let version = c.u8()?;
    if !(1..=PAYLOAD_VERSION).contains(&version) {
        return Err(format!(
            "payload version {version} (this build reads 1 to {PAYLOAD_VERSION})"
        ));
    }
    let shared = if version >= 3 {
        Some(Shared {
            snapshot_version: u64::from_le_bytes(c.array()?),
            snapshot_age_ms: u32::from_le_bytes(c.array()?),
            first: EventId(u128::from_be_bytes(c.array()?)),
        })
    } else {
        None
    };
    let client = c.str("client")?.unwrap_or_default();
    let server = c.str("server")?.unwrap_or_default();
    let mut events = Vec::new();
    while !c.0.is_empty() {
        events.push(match &shared {
            Some(shared) => decode_event_v3(&mut c, shared, &client, &server)?,
            None => decode_event(&mut c, version, &client, &server)?,
        });
    }
    if events.is_empty() {
        return Err("a record without events".into());
    }
    Ok(events)
}

/// What the events of a v3 record share.
struct Shared {
    snapshot_version: u64,
    snapshot_age_ms: u32,
    first: EventId,
}

fn decode_event_v3(
    c: &mut Cursor<'_>,
    shared: &Shared,
    client: &str,
    server: &str,
) -> Result<AccessEvent, String> {
    let step = c.varint("id step")?;
    let time_ms = shared.first.unix_ms();
    let id = EventId::v7(
        time_ms,
        shared.first.entropy().wrapping_add(u128::from(step)),
    );
    let request_id = u32::try_from(c.varint("request id")?).map_err(|_| "request id too large")?;
    let flags = c.u8()?;
    if flags & !flag::KNOWN != 0 {
        return Err(format!("event flags {flags:#04x}"));
    }
    let has = |bit: u8| flags & bit != 0;
    let reason_code =
        u16::try_from(c.varint("reason code")?).map_err(|_| "reason code too large")?;
    let reason = Reason::from_code(reason_code).ok_or(format!("reason code {reason_code}"))?;
    let unlock_ms = if has(flag::UNLOCK) {
        u32::try_from(c.varint("unlock ms")?).map_err(|_| "unlock ms too large")?
    } else {
        0
    };
    let reader_time = if has(flag::READER_TIME) {
        let z = c.varint("reader time")?;
        let diff = (z >> 1) as i64 ^ -((z & 1) as i64);
        let ms = time_ms.wrapping_add(diff);
        Some(
            Timestamp::from_millisecond(ms)
                .map_err(|_| format!("reader time {ms} out of range"))?,
        )
    } else {
        None
    };
    let credential = if has(flag::UID) {
        let len = c.u8()?;
        let uid = Uid::new(c.take(usize::from(len))?).ok_or("bad uid length")?;
        CredentialKey::Uid(uid)
    } else {
        let format =
            u16::try_from(c.varint("card format")?).map_err(|_| "card format too large")?;
        let facility = u32::try_from(c.varint("facility")?).map_err(|_| "facility too large")?;
        let number = c.varint("card number")?;
        CredentialKey::card(CardFormat(format), facility, number)
    };
    let reader = c.short_str("reader")?;
    let mut optional = |bit: u8, what: &str| -> Result<Option<String>, String> {
        if has(bit) {
            c.short_str(what).map(Some)
        } else {
            Ok(None)
        }
    };
    let door = optional(flag::DOOR, "door")?;
    let site = optional(flag::SITE, "site")?;
    let holder = optional(flag::HOLDER, "holder")?;
    Ok(AccessEvent {
        id,
        time: Timestamp::from_millisecond(time_ms)
            .map_err(|_| format!("time {time_ms} out of range"))?,
        reader,
        door,
        site,
        credential: credential.to_string(),
        holder,
        verdict: if has(flag::GRANT) {
            Verdict::Grant
        } else {
            Verdict::Deny
        },
        reason_code,
        reason,
        unlock_ms,
        snapshot_version: shared.snapshot_version,
        snapshot_age_ms: shared.snapshot_age_ms,
        client: client.to_owned(),
        reader_time,
        server: server.to_owned(),
        request_id,
    })
}

fn decode_event(
    c: &mut Cursor<'_>,
    version: u8,
    client: &str,
    server: &str,
) -> Result<AccessEvent, String> {
    let id = EventId(u128::from_be_bytes(c.array()?));
    let time_ms = if version == 1 {
        i64::from_le_bytes(c.array()?)
    } else {
        id.unix_ms()
    };
    let request_id = u32::from_le_bytes(c.array()?);
    let verdict = match c.u8()? {
        0 => Verdict::Deny,
        1 => Verdict::Grant,
        v => return Err(format!("verdict {v}")),
    };
    let reason_code = u16::from_le_bytes(c.array()?);
    let reason = Reason::from_code(reason_code).ok_or(format!("reason code {reason_code}"))?;
    let unlock_ms = u32::from_le_bytes(c.array()?);
    let snapshot_version = u64::from_le_bytes(c.array()?);
    let snapshot_age_ms = u32::from_le_bytes(c.array()?);
    let has_reader_time = c.u8()? != 0;
    // Version 1 wrote the field (zero) even when absent.
    let reader_time_ms = if has_reader_time || version == 1 {
        i64::from_le_bytes(c.array()?)
    } else {
        0
    };
    let credential = match c.u8()? {
        0 => {
            let format = CardFormat(u16::from_le_bytes(c.array()?));
            let facility = u32::from_le_bytes(c.array()?);
            let number = u64::from_le_bytes(c.array()?);
            CredentialKey::card(format, facility, number)
        }
        1 => {
            let len = c.u8()?;
            let uid = Uid::new(c.take(usize::from(len))?).ok_or("bad uid length")?;
            CredentialKey::Uid(uid)
        }
        t => return Err(format!("credential tag {t}")),
    };
    let ms = |ms: i64, what: &str| {
        Timestamp::from_millisecond(ms).map_err(|_| format!("{what} {ms} out of range"))
    };
    let reader = c.str("reader")?.ok_or("no reader")?;
    let door = c.str("door")?;
    let site = c.str("site")?;
    let holder = c.str("holder")?;
    Ok(AccessEvent {
        id,
        time: ms(time_ms, "time")?,
        reader,
        door,
        site,
        credential: credential.to_string(),
        holder,
        verdict,
        reason_code,
        reason,
        unlock_ms,
        snapshot_version,
        snapshot_age_ms,
        client: client.to_owned(),
        reader_time: if has_reader_time {
            Some(ms(reader_time_ms, "reader time")?)
        } else {
            None
        },
        server: server.to_owned(),
        request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>() -> EventRef<'a> {
        EventRef {
            id: EventId::v7(1_764_500_000_123, 0x1234_5678_9abc_def0_1234),
            time_ms: 1_764_500_000_123,
            request_id: 7,
            reader: "lobby-in",
            credential: "h10301:12:1001".parse().unwrap(),
            subject: Subject {
                door: Some("lobby"),
                site: Some("hq"),
                holder: Some("alice"),
            },
            decision: Decision::new(Reason::Granted, 3000, 42),
            snapshot_age_ms: 150,
            reader_time_ms: Some(1_764_500_000_100),
        }
    }

    /// One record holding `events`.
    fn record(events: &[EventRef<'_>]) -> Vec<u8> {
        let mut w = RecordWriter::default();
        for e in events {
            w.push("gateway-1", "srv-a", e);
        }
        w.finish();
        w.bytes().to_vec()
    }

    /// A record as a version 2 build wrote it (an event's every field in
    /// full, the strings with u16 lengths).
    fn record_v2(events: &[EventRef<'_>]) -> Vec<u8> {
        let mut out = vec![0; RECORD_HEADER];
        out.push(2);
        put_str(&mut out, Some("gateway-1"));
        put_str(&mut out, Some("srv-a"));
        for e in events {
            out.extend_from_slice(&e.id.0.to_be_bytes());
            out.extend_from_slice(&e.request_id.to_le_bytes());
            out.push(e.decision.verdict as u8);
            out.extend_from_slice(&e.decision.reason.code().to_le_bytes());
            out.extend_from_slice(&e.decision.unlock_ms.to_le_bytes());
            out.extend_from_slice(&e.decision.snapshot_version.to_le_bytes());
            out.extend_from_slice(&e.snapshot_age_ms.to_le_bytes());
            match e.reader_time_ms {
                Some(ms) => {
                    out.push(1);
                    out.extend_from_slice(&ms.to_le_bytes());
                }
                None => out.push(0),
            }
            let CredentialKey::Card {
                format,
                facility,
                number,
            } = e.credential
            else {
                panic!("cards only")
            };
            out.push(0);
            out.extend_from_slice(&format.0.to_le_bytes());
            out.extend_from_slice(&facility.to_le_bytes());
            out.extend_from_slice(&number.to_le_bytes());
            for s in [
                Some(e.reader),
                e.subject.door,
                e.subject.site,
                e.subject.holder,
            ] {
                put_str(&mut out, s);
            }
        }
        finish_record(&mut out, 0);
        out
    }

    #[test]
    fn a_record_reads_back_as_the_events_it_was_written_from() {
        let mut unknown = sample();
        unknown.credential = CredentialKey::Uid(Uid::new(&[4, 0xa2, 0x19]).unwrap());
        unknown.subject = Subject::default();
        unknown.decision = Decision::deny(Reason::UnknownCredential, 42);
        unknown.reader_time_ms = None;
        let mut buf = record(&[sample(), unknown]);
        buf.extend(record(&[unknown]));

        let (events, n) = read_record(&buf).unwrap();
        let [first, second] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(first.id, sample().id);
        assert_eq!(first.time.as_millisecond(), 1_764_500_000_123);
        assert_eq!(first.credential, "h10301:12:1001");
        assert_eq!(
            (first.door.as_deref(), first.site.as_deref()),
            (Some("lobby"), Some("hq"))
        );
        assert_eq!(first.holder.as_deref(), Some("alice"));
        assert_eq!(
            (first.verdict, first.reason),
            (Verdict::Grant, Reason::Granted)
        );
        assert_eq!((first.unlock_ms, first.snapshot_version), (3000, 42));
        assert_eq!(
            first.reader_time.unwrap().as_millisecond(),
            1_764_500_000_100
        );
        assert_eq!(
            (first.client.as_str(), first.server.as_str()),
            ("gateway-1", "srv-a")
        );

        let (again, m) = read_record(&buf[n..]).unwrap();
        assert_eq!(n + m, buf.len());
        assert_eq!(again, std::slice::from_ref(second));
        assert_eq!(second.credential, "uid:04a219");
        assert_eq!((&second.door, &second.holder), (&None, &None));
        assert_eq!(second.reason, Reason::UnknownCredential);
        assert_eq!(second.reader_time, None);
    }

    #[test]
    fn records_version_1_and_2_builds_wrote_still_read() {
        // Version 2 wrote every field of every event in full; version 1
        // also the time after the id, and the reader's time even when
        // absent (as zero). A spool written before an upgrade must still
        // ship: check both layouts.
        let fixed = 16 + 4 + 1 + 2 + 4 + 8 + 4; // id .. snapshot age
        let event_start = RECORD_HEADER + 1 + (2 + "gateway-1".len()) + (2 + "srv-a".len());
        let mut without = sample();
        without.reader_time_ms = None;
        without.subject.holder = None;
        for version in [2, 1] {
            let mut with = record_v2(&[sample()]);
            let mut absent = record_v2(&[without]);
            if version == 1 {
                for buf in [&mut with, &mut absent] {
                    buf[RECORD_HEADER] = 1;
                    let flag = event_start + fixed;
                    if buf[flag] == 0 {
                        buf.splice(flag + 1..flag + 1, 0i64.to_le_bytes());
                    }
                    let after_id = event_start + 16;
                    buf.splice(after_id..after_id, sample().time_ms.to_le_bytes());
                    finish_record(buf, 0);
                }
            }
            let (events, n) = read_record(&with).unwrap();
            assert_eq!(n, with.len(), "v{version}");
            let (v3, _) = read_record(&record(&[sample()])).unwrap();
            assert_eq!(events, v3, "v{version} reads as the same event as v3");
            let (events, _) = read_record(&absent).unwrap();
            assert_eq!(events[0].reader_time, None, "v{version}");
            assert_eq!(events[0].holder, None, "v{version}");
            assert_eq!(events[0].door.as_deref(), Some("lobby"), "v{version}");
        }
    }

    #[test]
    fn a_record_states_what_its_events_share_once_and_begins_anew_when_they_do_not() {
        let base = sample();
        let mut next = base;
        next.id = EventId(base.id.0 + 3); // the entropy's low bits: 3 on
        next.request_id = 8;
        let mut other_snapshot = base;
        other_snapshot.decision.snapshot_version = 43;
        let mut later = base;
        later.time_ms += 1;
        later.id = EventId::v7(later.time_ms, 5);
        let mut wrapped = base;
        // The 74 bits wrap: the step is still small.
        let top = (1u128 << ENTROPY_BITS) - 1;
        let mut at_top = later;
        at_top.id = EventId::v7(later.time_ms, top);
        wrapped.time_ms = later.time_ms;
        wrapped.id = EventId::v7(later.time_ms, top + 2);

        let mut w = RecordWriter::default();
        for e in [&base, &next, &other_snapshot, &later, &at_top, &wrapped] {
            w.push("gateway-1", "srv-a", e);
        }
        w.finish();
        assert_eq!(w.count(), 6);
        let mut records = Vec::new();
        let mut at = 0;
        while at < w.bytes().len() {
            let (events, n) = read_record(&w.bytes()[at..]).unwrap();
            records.push(events);
            at += n;
        }
        let sizes: Vec<usize> = records.iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            [2, 1, 1, 2],
            "new records for another snapshot, another instant, an id 2^74 - 6 on"
        );
        let all: Vec<&AccessEvent> = records.iter().flatten().collect();
        let ids: Vec<EventId> = all.iter().map(|e| e.id).collect();
        assert_eq!(
            ids,
            [
                base.id,
                next.id,
                other_snapshot.id,
                later.id,
                at_top.id,
                wrapped.id
            ]
        );
        assert_eq!(all[1].request_id, 8);
        assert_eq!(all[2].snapshot_version, 43);
        assert_eq!(all[3].time.as_millisecond(), later.time_ms);
        // The v7 ids of a record grow by their steps; the step of the
        // second event is three, a byte.
        let one = record(&[base]);
        let two = record(&[base, next]);
        let event_len = one.len() - (RECORD_HEADER + SHARED + 2 + 9 + 2 + 5);
        assert_eq!(
            two.len() - one.len(),
            event_len,
            "same size: a one-byte step"
        );
        assert!(event_len < 40, "an event of {event_len} bytes");

        w.clear();
        assert_eq!((w.count(), w.bytes().len()), (0, 0));
    }

    #[test]
    fn every_field_survives_the_compact_layout_at_its_extremes() {
        let long = "é".repeat(3000); // 6,000 bytes: cut at a char boundary
        let mut e = sample();
        e.request_id = u32::MAX;
        e.reader = &long;
        e.credential = CredentialKey::card(CardFormat(u16::MAX), u32::MAX, u64::MAX);
        e.decision = Decision::new(Reason::Granted, u32::MAX, u64::MAX);
        e.snapshot_age_ms = u32::MAX;
        e.reader_time_ms = Some(e.time_ms - 86_400_000);
        let (events, _) = read_record(&record(&[e])).unwrap();
        let got = &events[0];
        assert_eq!(got.request_id, u32::MAX);
        assert_eq!(got.reader.len(), MAX_STR);
        assert!(long.starts_with(&got.reader));
        assert_eq!(got.credential, e.credential.to_string());
        assert_eq!((got.unlock_ms, got.snapshot_version), (u32::MAX, u64::MAX));
        assert_eq!(got.snapshot_age_ms, u32::MAX);
        assert_eq!(
            got.reader_time.unwrap().as_millisecond(),
            e.time_ms - 86_400_000
        );
        e.reader_time_ms = Some(e.time_ms + 5);
        let (events, _) = read_record(&record(&[e])).unwrap();
        assert_eq!(
            events[0].reader_time.unwrap().as_millisecond(),
            e.time_ms + 5
        );
    }

    #[test]
    fn bad_flags_and_overlong_varints_are_refused_not_guessed() {
        let good = record(&[sample()]);
        let event_at = RECORD_HEADER + SHARED + 2 + "gateway-1".len() + 2 + "srv-a".len();
        let mut flags = good.clone();
        flags[event_at + 2] |= 0x80; // step, request id, then flags
        finish_record(&mut flags, 0);
        let err = read_record(&flags).unwrap_err();
        assert!(
            matches!(&err, RecordError::Payload(m) if m.contains("flags")),
            "{err}"
        );
        let mut long = good[..event_at].to_vec();
        long.extend([0xff; 11]);
        finish_record(&mut long, 0);
        let err = read_record(&long).unwrap_err();
        assert!(
            matches!(&err, RecordError::Payload(m) if m.contains("longer than 64 bits")),
            "{err}"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_event_reads_back_as_written(
            steps in proptest::collection::vec(0u64..1 << 40, 1..8),
            request_id: u32,
            grant: bool,
            unlock_ms: u32,
            reader_time in proptest::option::of(-(1i64 << 40)..1i64 << 40),
            card in (0u16.., 0u32.., 0u64..),
            uid in proptest::option::of(proptest::collection::vec(0u8.., 1..=accessd_uid_max())),
            strings in proptest::collection::vec(proptest::option::of("[a-zé-]{0,40}"), 3),
        ) {
            let time_ms = 1_764_500_000_123;
            let mut entropy = 0x3ff_ffff_ffff_ffff_ff00u128;
            let reader = strings[0].clone().unwrap_or_default();
            let mut written = Vec::new();
            let mut w = RecordWriter::default();
            for (i, step) in steps.iter().enumerate() {
                entropy += u128::from(*step);
                let reason = if grant { Reason::Granted } else { Reason::UnknownCredential };
                let e = EventRef {
                    id: EventId::v7(time_ms, entropy),
                    time_ms,
                    request_id: request_id.wrapping_add(i as u32),
                    reader: &reader,
                    credential: match &uid {
                        Some(bytes) => CredentialKey::Uid(Uid::new(bytes).unwrap()),
                        None => CredentialKey::card(CardFormat(card.0), card.1, card.2),
                    },
                    subject: Subject {
                        door: strings[1].as_deref(),
                        site: strings[2].as_deref(),
                        holder: strings[0].as_deref(),
                    },
                    decision: Decision::new(reason, if grant { unlock_ms } else { 0 }, 9),
                    snapshot_age_ms: 17,
                    reader_time_ms: reader_time.map(|d| time_ms + d),
                };
                w.push("gw", "s", &e);
                written.push(e);
            }
            w.finish();
            let (events, n) = read_record(w.bytes()).unwrap();
            proptest::prop_assert_eq!(n, w.bytes().len());
            proptest::prop_assert_eq!(events.len(), written.len());
            for (got, e) in events.iter().zip(&written) {
                proptest::prop_assert_eq!(got.id, e.id);
                proptest::prop_assert_eq!(got.time.as_millisecond(), e.time_ms);
                proptest::prop_assert_eq!(got.request_id, e.request_id);
                proptest::prop_assert_eq!(&got.reader, e.reader);
                proptest::prop_assert_eq!(&got.credential, &e.credential.to_string());
                proptest::prop_assert_eq!(got.door.as_deref(), e.subject.door);
                proptest::prop_assert_eq!(got.site.as_deref(), e.subject.site);
                proptest::prop_assert_eq!(got.holder.as_deref(), e.subject.holder);
                proptest::prop_assert_eq!(got.verdict, e.decision.verdict);
                proptest::prop_assert_eq!(got.reason, e.decision.reason);
                proptest::prop_assert_eq!(got.unlock_ms, e.decision.unlock_ms);
                proptest::prop_assert_eq!(got.snapshot_version, 9);
                proptest::prop_assert_eq!(got.snapshot_age_ms, 17);
                proptest::prop_assert_eq!(got.reader_time.map(|t| t.as_millisecond()), e.reader_time_ms);
            }
        }
    }

    fn accessd_uid_max() -> usize {
        crate::credential::MAX_UID_LEN
    }

    #[test]
    fn the_fuzz_hook_accepts_good_payloads_and_every_cut_of_one() {
        let good = record(&[sample(), sample()]);
        let payload = &good[RECORD_HEADER..];
        fuzz_read_record(payload);
        for cut in 1..payload.len() {
            fuzz_read_record(&payload[..cut]);
        }
    }

    #[test]
    #[should_panic(expected = "one client")]
    fn a_writer_holds_one_clients_events() {
        let mut w = RecordWriter::default();
        w.push("gateway-1", "srv-a", &sample());
        w.push("gateway-2", "srv-a", &sample());
    }

    #[test]
    fn torn_and_corrupt_records_are_told_apart_from_events() {
        let buf = record(&[sample(), sample()]);
        for cut in 0..buf.len() {
            assert!(
                matches!(
                    read_record(&buf[..cut]),
                    Err(RecordError::Incomplete { .. })
                ),
                "cut at {cut}"
            );
        }
        for i in RECORD_HEADER..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert_eq!(
                read_record(&bad).unwrap_err(),
                RecordError::Checksum,
                "byte {i}"
            );
        }
        let mut huge = buf.clone();
        huge[..4].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(matches!(read_record(&huge), Err(RecordError::BadLength(_))));
        assert!(matches!(
            read_record(&[0; 8]),
            Err(RecordError::BadLength(0))
        ));
    }

    #[test]
    fn ids_are_v7_sort_by_time_and_round_trip_as_text() {
        let a = EventId::v7(1_000, u128::MAX);
        let b = EventId::v7(1_001, 0);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(a.unix_ms(), 1_000);
        let text = a.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.as_bytes()[14], b'7', "version nibble in {text}");
        assert!(
            matches!(text.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{text}"
        );
        assert_eq!(text.parse::<EventId>().unwrap(), a);
        assert!("not-a-uuid".parse::<EventId>().is_err());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, format!("\"{text}\""));
    }
}
