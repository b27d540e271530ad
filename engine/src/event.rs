//! Access events: what every decision leaves behind, and the record format
//! of the event log (the spool).
//!
//! A record holds the events of one chunk of frames (what one read of a
//! stream delivered): `length (u32 LE) | CRC-32 of the payload (u32 LE) |
//! payload`, the payload being a version byte, what the chunk's events
//! share (the client and the server) and the events, each a small binary
//! layout written on the decision path without allocating. Readers turn
//! them into [`AccessEvent`]s (JSON, DynamoDB items) off that path. One
//! checksum per chunk instead of per event keeps the cost per decision
//! low; a torn record is a chunk whose answers were never sent. The byte
//! layout is documented in `docs/access-events.md`.
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

/// The payload layout this build writes.
const PAYLOAD_VERSION: u8 = 2;

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

/// Begins a record in `out` for events of client `client` decided by
/// server `server`; [`EventRef::write`] appends events, [`finish_record`]
/// closes it. Returns where the record starts.
pub fn begin_record(out: &mut Vec<u8>, client: &str, server: &str) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    out.push(PAYLOAD_VERSION);
    put_str(out, Some(client));
    put_str(out, Some(server));
    start
}

/// Closes the record begun at `start`: its length and checksum.
pub fn finish_record(out: &mut [u8], start: usize) {
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
    /// Appends this event to the record being written in `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        // One capacity check for the whole event, not one per field.
        let strings = [
            Some(self.reader),
            self.subject.door,
            self.subject.site,
            self.subject.holder,
        ];
        let uid = match self.credential {
            CredentialKey::Uid(uid) => uid.as_bytes().len(),
            CredentialKey::Card { .. } => 0,
        };
        out.reserve(FIXED_MAX + uid + strings.iter().flatten().map(|s| 2 + s.len()).sum::<usize>());
        debug_assert_eq!(self.id.unix_ms(), self.time_ms, "the id carries the time");
        out.extend_from_slice(&self.id.0.to_be_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.push(self.decision.verdict as u8);
        out.extend_from_slice(&self.decision.reason.code().to_le_bytes());
        out.extend_from_slice(&self.decision.unlock_ms.to_le_bytes());
        out.extend_from_slice(&self.decision.snapshot_version.to_le_bytes());
        out.extend_from_slice(&self.snapshot_age_ms.to_le_bytes());
        match self.reader_time_ms {
            Some(ms) => {
                out.push(1);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            None => out.push(0),
        }
        match self.credential {
            CredentialKey::Card {
                format,
                facility,
                number,
            } => {
                out.push(0);
                out.extend_from_slice(&format.0.to_le_bytes());
                out.extend_from_slice(&facility.to_le_bytes());
                out.extend_from_slice(&number.to_le_bytes());
            }
            CredentialKey::Uid(uid) => {
                out.push(1);
                let bytes = uid.as_bytes();
                out.push(bytes.len() as u8);
                out.extend_from_slice(bytes);
            }
        }
        put_str(out, Some(self.reader));
        put_str(out, self.subject.door);
        put_str(out, self.subject.site);
        put_str(out, self.subject.holder);
    }
}

fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        // Ids are far below this; cut rather than write a bad length.
        Some(s) => {
            let s = s.get(..s.len().min(4096)).unwrap_or(s);
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
    }
}

/// An event's bytes besides its strings and a uid, at most: the fixed
/// fields (48), the credential's kind and card fields (1 + 14), a uid's
/// length, and the absent strings' markers.
const FIXED_MAX: usize = 96;

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
    let client = c.str("client")?.unwrap_or_default();
    let server = c.str("server")?.unwrap_or_default();
    let mut events = Vec::new();
    while !c.0.is_empty() {
        events.push(decode_event(&mut c, version, &client, &server)?);
    }
    if events.is_empty() {
        return Err("a record without events".into());
    }
    Ok(events)
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
        let mut buf = Vec::new();
        let start = begin_record(&mut buf, "gateway-1", "srv-a");
        for e in events {
            e.write(&mut buf);
        }
        finish_record(&mut buf, start);
        buf
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
    fn records_a_version_1_build_wrote_still_read() {
        // Version 1 wrote the time after the id, and the reader's time
        // even when absent (as zero). A spool written before an upgrade
        // must still ship: turn this build's record into that layout.
        let fixed = 16 + 4 + 1 + 2 + 4 + 8 + 4; // id .. snapshot age
        let event_start = RECORD_HEADER + 1 + (2 + "gateway-1".len()) + (2 + "srv-a".len());
        let mut with = record(&[sample()]);
        let mut without = sample();
        without.reader_time_ms = None;
        let mut absent = record(&[without]);
        for buf in [&mut with, &mut absent] {
            assert_eq!(buf[RECORD_HEADER], PAYLOAD_VERSION);
            buf[RECORD_HEADER] = 1;
            let flag = event_start + fixed;
            if buf[flag] == 0 {
                buf.splice(flag + 1..flag + 1, 0i64.to_le_bytes());
            }
            let after_id = event_start + 16;
            buf.splice(after_id..after_id, sample().time_ms.to_le_bytes());
            finish_record(buf, 0);
        }

        let (events, n) = read_record(&with).unwrap();
        assert_eq!(n, with.len());
        assert_eq!(events[0].time.as_millisecond(), sample().time_ms);
        assert_eq!(
            events[0].reader_time.map(|t| t.as_millisecond()),
            sample().reader_time_ms
        );
        assert_eq!(events[0].holder.as_deref(), Some("alice"));
        let (events, _) = read_record(&absent).unwrap();
        assert_eq!(events[0].reader_time, None);
        assert_eq!(events[0].door.as_deref(), Some("lobby"));
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
