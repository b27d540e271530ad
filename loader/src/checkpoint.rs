//! Checkpoints: the published data, the stream position and anti-passback
//! presence in one file, so a restart serves at once (offline if need be)
//! and then catches up from where it stopped.
//!
//! ```text
//!  offset  size  field
//!       0     8  magic "ACSDCKPT"
//!       8     4  format version, u32 little-endian (FORMAT_VERSION)
//!      12     4  reserved, 0
//!      16     8  payload length in bytes, u64 little-endian
//!      24    16  checksum over bytes 0..24, 40..64 and the payload (below)
//!      40     8  length of the rows section, u64 little-endian
//!      48    16  reserved, 0
//!      64     …  payload: the rows section, then an rkyv archive of `Body`
//! ```
//!
//! A file is written whole to a temporary file beside the target, fsynced,
//! renamed over the target and the directory fsynced: a crash leaves the
//! old checkpoint or the new one, never a mix. A file is read through a
//! memory map and trusted only after its length, checksum and the layout
//! of its `Body` are verified; anything else is refused with the reason,
//! and the caller falls back to a full load.
//!
//! Cardholders (millions of rows) are each an rkyv archive of their own in
//! the rows section (starting at multiples of 16 bytes), with the holder's
//! assignments and credentials inside: a row is validated when it is read,
//! so opening a file costs its checksum and the small `Body`, not a walk of
//! every row. `Body` holds where each row ends and a hash index of every
//! credential key, so a process can serve decisions from the memory map at
//! once ([`Checkpoint::open_warm`], a [`CredentialStore`]) while it
//! rebuilds its builder row by row behind them ([`Checkpoint::restore`]).
//! The small tables (sites, doors, readers, schedules, …: thousands of
//! rows) are one JSON document inside `Body`, since their records already
//! have a serde form.
//!
//! The checksum is XXH3-128 over the header and the XXH3-128 of each
//! 16 MiB piece of the payload, not a cryptographic hash: it guards
//! against torn and corrupted files (the threat for a file only accessd
//! writes), and its pieces are hashed on every core at once, so a quarter
//! of a gigabyte is checked in tens of milliseconds, which a start in
//! under 100 ms needs.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use accessd_engine::{
    AccessLevelRecord, AreaRecord, AssignmentRecord, CardFormat, CardholderRecord, Change,
    CredentialKey, CredentialRecord, CredentialStatus, CredentialStore, DoorGroupRecord,
    DoorRecord, HolderBundle, HolderStatus, HolidaySetRecord, PresenceEntry, ReaderRecord, Record,
    ScheduleRecord, SiteRecord, Snapshot, SnapshotBuilder, Uid,
};
use jiff::Timestamp;
use memmap2::{Mmap, MmapOptions};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use xxhash_rust::xxh3::{Xxh3, xxh3_64, xxh3_128};

use crate::follower::{ShardPosition, StreamCursor};

/// The first eight bytes of every checkpoint.
pub const MAGIC: [u8; 8] = *b"ACSDCKPT";
/// The layout version this build writes and reads. A file of another
/// version is refused (and replaced by the next write).
pub const FORMAT_VERSION: u32 = 2;
const HEADER_LEN: usize = 64;
/// Rows start at multiples of this (the largest alignment of an archived
/// row), so each is an archive that can be validated on its own.
const ROW_ALIGN: usize = 16;

/// Why a checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file does not start with the checkpoint magic.
    #[error("not an accessd checkpoint (bad magic)")]
    NotACheckpoint,
    /// The file was written by another format version.
    #[error("checkpoint format version {found}, this build reads version {expected}")]
    Version {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The file is shorter or longer than its header says (a torn write).
    #[error("checkpoint is {actual} bytes, its header says {expected} (torn or truncated)")]
    Length {
        /// Bytes the header announces.
        expected: u64,
        /// Bytes in the file.
        actual: u64,
    },
    /// The checksum does not match (corruption).
    #[error("checkpoint checksum mismatch (corrupt file)")]
    Checksum,
    /// The checksum matched but the content does not make sense.
    #[error("checkpoint content is malformed: {0}")]
    Malformed(String),
    /// The checkpoint belongs to another source (another table, or a
    /// site file that changed).
    #[error("checkpoint is of {found}, not of {expected}")]
    Foreign {
        /// What the caller serves.
        expected: String,
        /// What the checkpoint holds.
        found: String,
    },
    /// The data could not be encoded.
    #[error("cannot encode the checkpoint: {0}")]
    Encode(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a checkpoint's data came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointSource {
    /// A DynamoDB table followed through its stream.
    Table {
        /// The table name.
        table: String,
    },
    /// A site file, identified by the XXH3-128 of its bytes.
    SiteFile {
        /// The XXH3-128 of the file's bytes (a change detector, not a
        /// signature).
        digest: [u8; 16],
    },
}

impl std::fmt::Display for CheckpointSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Table { table } => write!(f, "DynamoDB table `{table}`"),
            Self::SiteFile { digest } => {
                let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
                write!(f, "a site file with XXH3-128 {short}…")
            }
        }
    }
}

impl CheckpointSource {
    /// The source of a site file with these bytes (their digest computed
    /// on every core, as a checkpoint's checksum is).
    pub fn site_file(bytes: &[u8]) -> Self {
        Self::SiteFile {
            digest: tree_digest(&[], &[bytes]),
        }
    }
}

/// [`CheckpointSource`] as archived (kept private so the archived form
/// is not part of the API).
#[derive(rkyv::Archive, rkyv::Serialize)]
enum SourceRow {
    Table { table: String },
    SiteFile { digest: [u8; 16] },
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Body {
    source: SourceRow,
    written_at_ms: i64,
    snapshot_version: u64,
    fresh_as_of_ms: i64,
    stream: Option<StreamRow>,
    /// The small tables as a JSON array of [`SmallRecord`].
    small: String,
    /// Where each row of the rows section ends (it starts at the end of
    /// the one before, rounded up to `ROW_ALIGN`).
    row_ends: Vec<u64>,
    /// By credential number (in row order): `row << 32 | position` of the
    /// credential in its row.
    credentials: Vec<u64>,
    /// Open addressing over credential keys, a power of two long, at most
    /// half full: `tag << 32 | (number + 1)`, 0 for a free slot (see
    /// [`key_hash`]).
    index: Vec<u64>,
    cardholders: u64,
    assignments: u64,
    presence: Vec<PresenceRow>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct StreamRow {
    arn: String,
    shards: Vec<ShardRow>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct ShardRow {
    id: String,
    parent: Option<String>,
    last_sequence: Option<String>,
    finished: bool,
}

/// A cardholder id with its record, assignments and credentials, stored
/// together (an archive of its own in the rows section) so a restore builds
/// each holder once, in cache, and a warm snapshot reads one row per card.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct HolderRow {
    id: String,
    record: Option<CoreRow>,
    assignments: Vec<AssignmentRow>,
    credentials: Vec<CredentialRow>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct CoreRow {
    active: bool,
    lockdown_override: bool,
    /// Milliseconds since the epoch; `OPEN_FROM` / `OPEN_UNTIL` for none
    /// (8 bytes where an archived `Option<i64>` takes 16, times millions).
    from_ms: i64,
    until_ms: i64,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct AssignmentRow {
    level: String,
    /// Milliseconds since the epoch; `OPEN_FROM` / `OPEN_UNTIL` for none
    /// (8 bytes where an archived `Option<i64>` takes 16, times millions).
    from_ms: i64,
    until_ms: i64,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
enum CardRow {
    Card {
        format: u16,
        facility: u32,
        number: u64,
    },
    Uid(Vec<u8>),
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct CredentialRow {
    card: CardRow,
    status: u8,
    /// Milliseconds since the epoch; `OPEN_FROM` / `OPEN_UNTIL` for none
    /// (8 bytes where an archived `Option<i64>` takes 16, times millions).
    from_ms: i64,
    until_ms: i64,
    pin: Option<String>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct PresenceRow {
    holder: String,
    area: String,
    inside: bool,
    at_ms: i64,
}

/// The small tables' records, tagged, for their JSON form.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum SmallRecord {
    Site(SiteRecord),
    Door(DoorRecord),
    Reader(ReaderRecord),
    Area(AreaRecord),
    DoorGroup(DoorGroupRecord),
    Schedule(ScheduleRecord),
    HolidaySet(HolidaySetRecord),
    AccessLevel(AccessLevelRecord),
}

const STATUSES: [CredentialStatus; 5] = [
    CredentialStatus::Active,
    CredentialStatus::Suspended,
    CredentialStatus::Lost,
    CredentialStatus::Stolen,
    CredentialStatus::Revoked,
];

/// A validity bound with no start, as stored.
const OPEN_FROM: i64 = i64::MIN;
/// A validity bound with no end, as stored.
const OPEN_UNTIL: i64 = i64::MAX;

fn ms(t: Option<Timestamp>, open: i64) -> i64 {
    t.map_or(open, |t| t.as_millisecond())
}

/// A stored bound back; `open` is none.
fn bound(ms: &rkyv::rend::i64_le, open: i64) -> Result<Option<Timestamp>, CheckpointError> {
    let ms = ms.to_native();
    ts((ms != open).then_some(ms))
}

fn ts(ms: Option<i64>) -> Result<Option<Timestamp>, CheckpointError> {
    ms.map(|ms| {
        Timestamp::from_millisecond(ms)
            .map_err(|e| CheckpointError::Malformed(format!("instant {ms} ms: {e}")))
    })
    .transpose()
}

/// What a checkpoint holds, to be written by [`write()`].
pub struct CheckpointData<'a> {
    /// Where the data came from.
    pub source: CheckpointSource,
    /// The builder whose last published version is the one to store.
    pub builder: &'a SnapshotBuilder,
    /// The instant the data was last confirmed current by its source.
    pub fresh_as_of: Timestamp,
    /// The stream position (DynamoDB only).
    pub cursor: Option<&'a StreamCursor>,
    /// Anti-passback presence.
    pub presence: Vec<PresenceEntry>,
    /// The instant of writing.
    pub now: Timestamp,
}

/// The hash of a credential key in a checkpoint's index: XXH3-64 of a
/// fixed byte form of the key, so it is the same in every build.
fn key_hash(key: &CredentialKey) -> u64 {
    let mut bytes = [0u8; 1 + 2 + 4 + 8];
    let len = match key {
        CredentialKey::Card {
            format,
            facility,
            number,
        } => {
            for (slot, b) in bytes.iter_mut().skip(1).zip(
                (format.0.to_le_bytes().iter())
                    .chain(facility.to_le_bytes().iter())
                    .chain(number.to_le_bytes().iter()),
            ) {
                *slot = *b;
            }
            bytes.len()
        }
        CredentialKey::Uid(uid) => {
            let mut bytes = [0u8; 1 + accessd_engine::MAX_UID_LEN];
            bytes[0] = 1;
            let uid = uid.as_bytes();
            for (slot, b) in bytes.iter_mut().skip(1).zip(uid) {
                *slot = *b;
            }
            return xxh3_64(bytes.get(..1 + uid.len()).unwrap_or_default());
        }
    };
    xxh3_64(bytes.get(..len).unwrap_or_default())
}

/// The home slot and the tag of `hash` in an index of `mask + 1` slots.
fn slot_of(hash: u64, mask: usize) -> (usize, u64) {
    ((hash as usize) & mask, hash >> 32)
}

/// Encodes `data` into the bytes of a checkpoint file.
pub fn encode(data: &CheckpointData<'_>) -> Result<Vec<u8>, CheckpointError> {
    let (header, rows, body) = encode_parts(data)?;
    let mut out = Vec::with_capacity(header.len() + rows.len() + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&rows);
    out.extend_from_slice(&body);
    Ok(out)
}

fn holder_row(b: HolderBundle) -> HolderRow {
    HolderRow {
        id: b.id,
        record: b.holder.map(|r| CoreRow {
            active: r.status == HolderStatus::Active,
            lockdown_override: r.lockdown_override,
            from_ms: ms(r.valid_from, OPEN_FROM),
            until_ms: ms(r.valid_until, OPEN_UNTIL),
        }),
        assignments: b
            .assignments
            .into_iter()
            .map(|r| AssignmentRow {
                level: r.level,
                from_ms: ms(r.valid_from, OPEN_FROM),
                until_ms: ms(r.valid_until, OPEN_UNTIL),
            })
            .collect(),
        credentials: b
            .credentials
            .into_iter()
            .map(|r| CredentialRow {
                card: match r.card {
                    CredentialKey::Card {
                        format,
                        facility,
                        number,
                    } => CardRow::Card {
                        format: format.0,
                        facility,
                        number,
                    },
                    CredentialKey::Uid(uid) => CardRow::Uid(uid.as_bytes().to_vec()),
                },
                status: STATUSES.iter().position(|s| *s == r.status).unwrap_or(0) as u8,
                from_ms: ms(r.valid_from, OPEN_FROM),
                until_ms: ms(r.valid_until, OPEN_UNTIL),
                pin: r.pin.map(|p| p.to_string()),
            })
            .collect(),
    }
}

/// The header, the rows section and the `Body` archive, apart, so a large
/// file is written without being copied into one buffer first.
fn encode_parts(
    data: &CheckpointData<'_>,
) -> Result<([u8; HEADER_LEN], AlignedVec, AlignedVec), CheckpointError> {
    let encode_error = |e: rancor::Error| CheckpointError::Encode(e.to_string());
    let mut small = Vec::new();
    for record in data.builder.small_records() {
        small.push(match record {
            Record::Site(r) => SmallRecord::Site(r),
            Record::Door(r) => SmallRecord::Door(r),
            Record::Reader(r) => SmallRecord::Reader(r),
            Record::Area(r) => SmallRecord::Area(r),
            Record::DoorGroup(r) => SmallRecord::DoorGroup(r),
            Record::Schedule(r) => SmallRecord::Schedule(r),
            Record::HolidaySet(r) => SmallRecord::HolidaySet(r),
            Record::AccessLevel(r) => SmallRecord::AccessLevel(r),
            // The small tables hold no holder data.
            Record::Cardholder(_) | Record::Assignment(_) | Record::Credential(_) => continue,
        });
    }
    let small =
        serde_json::to_string(&small).map_err(|e| CheckpointError::Encode(e.to_string()))?;

    // Each row an archive of its own, at a multiple of ROW_ALIGN: rkyv's
    // positions are the writer's, and the section starts aligned in the
    // file, so each row validates alone.
    let mut rows = AlignedVec::<ROW_ALIGN>::new();
    let mut row_ends = Vec::new();
    let mut credentials = Vec::new();
    let mut hashes = Vec::new();
    let (mut cardholders, mut assignments) = (0u64, 0u64);
    for bundle in data.builder.bundles() {
        let row = row_ends.len() as u64;
        cardholders += u64::from(bundle.holder.is_some());
        assignments += bundle.assignments.len() as u64;
        for (position, c) in bundle.credentials.iter().enumerate() {
            credentials.push(row << 32 | position as u64);
            hashes.push(key_hash(&c.card));
        }
        while rows.len() % ROW_ALIGN != 0 {
            rows.push(0);
        }
        rows = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&holder_row(bundle), rows)
            .map_err(encode_error)?;
        row_ends.push(rows.len() as u64);
    }
    while rows.len() % ROW_ALIGN != 0 {
        rows.push(0);
    }
    if u32::try_from(row_ends.len()).is_err() || u32::try_from(credentials.len()).is_err() {
        return Err(CheckpointError::Encode(
            "more than 2^32 cardholders or credentials".into(),
        ));
    }
    let slots = (hashes.len() * 2).next_power_of_two().max(16);
    let mut index = vec![0u64; slots];
    for (number, hash) in hashes.into_iter().enumerate() {
        let (mut at, tag) = slot_of(hash, slots - 1);
        while index.get(at).is_some_and(|&s| s != 0) {
            at = (at + 1) & (slots - 1);
        }
        if let Some(slot) = index.get_mut(at) {
            *slot = tag << 32 | (number as u64 + 1);
        }
    }

    let body = Body {
        source: match &data.source {
            CheckpointSource::Table { table } => SourceRow::Table {
                table: table.clone(),
            },
            CheckpointSource::SiteFile { digest } => SourceRow::SiteFile { digest: *digest },
        },
        written_at_ms: data.now.as_millisecond(),
        snapshot_version: data.builder.version(),
        fresh_as_of_ms: data.fresh_as_of.as_millisecond(),
        stream: data.cursor.map(|c| StreamRow {
            arn: c.arn().to_owned(),
            shards: c
                .shard_positions()
                .into_iter()
                .map(|s| ShardRow {
                    id: s.id,
                    parent: s.parent,
                    last_sequence: s.last_sequence,
                    finished: s.finished,
                })
                .collect(),
        }),
        small,
        row_ends,
        credentials,
        index,
        cardholders,
        assignments,
        presence: data
            .presence
            .iter()
            .map(|p| PresenceRow {
                holder: p.holder.clone(),
                area: p.area.clone(),
                inside: p.inside,
                at_ms: p.at_ms,
            })
            .collect(),
    };
    let body_bytes =
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(&body, AlignedVec::<ROW_ALIGN>::new())
            .map_err(encode_error)?;
    drop(body);
    let mut header = [0u8; HEADER_LEN];
    put(&mut header, 0, &MAGIC);
    put(&mut header, 8, &FORMAT_VERSION.to_le_bytes());
    put(
        &mut header,
        16,
        &((rows.len() + body_bytes.len()) as u64).to_le_bytes(),
    );
    put(&mut header, 40, &(rows.len() as u64).to_le_bytes());
    let digest = checksum(&header, &[&rows, &body_bytes]);
    put(&mut header, 24, &digest);
    Ok((header, rows, body_bytes))
}

/// Copies `bytes` into `header` at `at`.
fn put(header: &mut [u8; HEADER_LEN], at: usize, bytes: &[u8]) {
    if let Some(slot) = header.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

/// Bytes per hashed piece of the checksum.
const HASH_CHUNK: usize = 16 << 20;

/// A file's checksum: the XXH3-128 of its header without the checksum
/// field followed by the XXH3-128 of each `HASH_CHUNK` piece of each
/// section (rows, then `Body`). A tree rather than one pass, so the
/// pieces are hashed on every core at once (a start from a large file
/// waits for this).
fn checksum(header: &[u8], sections: &[&[u8]]) -> [u8; 16] {
    let fields = [
        header.get(..24).unwrap_or_default(),
        header.get(40..HEADER_LEN).unwrap_or_default(),
    ];
    tree_digest(&fields, sections)
}

/// XXH3-128 over `fields` followed by the XXH3-128 of each `HASH_CHUNK`
/// piece of each section, the pieces hashed on every core.
fn tree_digest(fields: &[&[u8]], sections: &[&[u8]]) -> [u8; 16] {
    let pieces: Vec<&[u8]> = sections.iter().flat_map(|s| s.chunks(HASH_CHUNK)).collect();
    let mut digests = vec![0u128; pieces.len()];
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, pieces.len().max(1));
    let per = pieces.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (out, pieces) in digests.chunks_mut(per).zip(pieces.chunks(per)) {
            scope.spawn(move || {
                for (digest, piece) in out.iter_mut().zip(pieces) {
                    *digest = xxh3_128(piece);
                }
            });
        }
    });
    let mut hash = Xxh3::new();
    for field in fields {
        hash.update(field);
    }
    for digest in digests {
        hash.update(&digest.to_le_bytes());
    }
    hash.digest128().to_le_bytes()
}

/// Writes `bytes` to `path` atomically: a temporary file beside it,
/// fsync, rename over `path`, fsync of the directory. A crash at any point
/// leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    write_parts(path, &[bytes])
}

fn write_parts(path: &Path, parts: &[&[u8]]) -> Result<(), CheckpointError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(name);
    let result = (|| {
        let file = File::create(&tmp).map_err(io_error(&tmp))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        for part in parts {
            out.write_all(part).map_err(io_error(&tmp))?;
        }
        let file = out.into_inner().map_err(|e| CheckpointError::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_error(&tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io_error(path))?;
        // The rename is durable only once the directory is.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Encodes and writes a checkpoint; returns its size in bytes.
pub fn write(path: &Path, data: &CheckpointData<'_>) -> Result<usize, CheckpointError> {
    let (header, rows, body) = encode_parts(data)?;
    write_parts(path, &[&header, &rows, &body])?;
    Ok(header.len() + rows.len() + body.len())
}

/// A verified checkpoint file, memory-mapped.
pub struct Checkpoint {
    map: Mmap,
    /// Bytes of the payload.
    len: u64,
    /// Bytes of the rows section, at the start of the payload.
    rows_len: usize,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("len", &self.len)
            .finish()
    }
}

/// A summary of a checkpoint, for `accessd checkpoint inspect` and logs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointInfo {
    /// The format version.
    pub format_version: u32,
    /// The file size in bytes.
    pub bytes: u64,
    /// Where the data came from, in words.
    pub source: String,
    /// When it was written.
    pub written_at: Timestamp,
    /// The snapshot version stored.
    pub snapshot_version: u64,
    /// When the data was last confirmed current by its source.
    pub fresh_as_of: Timestamp,
    /// Rows of the small tables (sites, doors, readers, …).
    pub small_records: usize,
    /// Cardholders.
    pub cardholders: usize,
    /// Level assignments.
    pub assignments: usize,
    /// Credentials.
    pub credentials: usize,
    /// Anti-passback presence entries.
    pub presence: usize,
    /// The stream's ARN (DynamoDB only).
    pub stream_arn: Option<String>,
    /// Per shard: id, parent, last sequence number applied, drained.
    pub shards: Vec<ShardPosition>,
}

/// What a checkpoint restores.
pub struct Restored {
    /// A builder holding every record, whose next publish is the stored
    /// version.
    pub builder: SnapshotBuilder,
    /// The stored snapshot version.
    pub version: u64,
    /// When the data was last confirmed current by its source.
    pub fresh_as_of: Timestamp,
    /// When the checkpoint was written.
    pub written_at: Timestamp,
    /// The stream position (DynamoDB only).
    pub cursor: Option<StreamCursor>,
    /// Anti-passback presence.
    pub presence: Vec<PresenceEntry>,
    /// Records refused on the way in (none unless the engine's rules grew
    /// stricter since the file was written).
    pub refused: usize,
}

impl std::fmt::Debug for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restored")
            .field("version", &self.version)
            .field("fresh_as_of", &self.fresh_as_of)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// The bytes of a mapped file's `Body` archive: all after the rows.
fn body_bytes(map: &Mmap, rows_len: usize) -> &[u8] {
    map.get(HEADER_LEN + rows_len..).unwrap_or_default()
}

/// A mapped file whose header was checked, not yet its checksum.
struct Unverified {
    map: Mmap,
    len: u64,
    rows_len: usize,
    checksum: [u8; 16],
}

impl Unverified {
    /// Maps `path` and checks its header: magic, version, length.
    fn map(path: &Path) -> Result<Self, CheckpointError> {
        let file = File::open(path).map_err(io_error(path))?;
        // SAFETY: the map is read-only and accessd never writes a
        // checkpoint in place (it renames a new file over it, which leaves
        // this mapping's inode unchanged). Another process truncating the
        // file under us could fault the read; checkpoints live in
        // accessd's own state directory. `populate` maps every page now,
        // in one call, instead of one fault per page while hashing.
        #[expect(unsafe_code, reason = "memory-mapping the checkpoint for a fast start")]
        let map = unsafe { MmapOptions::new().populate().map(&file) }.map_err(io_error(path))?;
        let header = map.get(..HEADER_LEN).ok_or(CheckpointError::Length {
            expected: HEADER_LEN as u64,
            actual: map.len() as u64,
        })?;
        if header.get(..8) != Some(&MAGIC[..]) {
            return Err(CheckpointError::NotACheckpoint);
        }
        let word = |at: usize| -> u64 {
            let mut b = [0u8; 8];
            if let Some(s) = header.get(at..at + 8) {
                b.copy_from_slice(s);
            }
            u64::from_le_bytes(b)
        };
        let version = (word(8) & 0xffff_ffff) as u32;
        if version != FORMAT_VERSION {
            return Err(CheckpointError::Version {
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let len = word(16);
        let actual = (map.len() - HEADER_LEN) as u64;
        if len != actual {
            return Err(CheckpointError::Length {
                expected: len.saturating_add(HEADER_LEN as u64),
                actual: map.len() as u64,
            });
        }
        let rows_len = usize::try_from(word(40))
            .ok()
            .filter(|&n| n as u64 <= len && n % ROW_ALIGN == 0)
            .ok_or_else(|| {
                CheckpointError::Malformed(format!("rows section of {} bytes", word(40)))
            })?;
        let mut checksum = [0u8; 16];
        if let Some(stored) = header.get(24..40) {
            checksum.copy_from_slice(stored);
        }
        Ok(Self {
            map,
            len,
            rows_len,
            checksum,
        })
    }

    /// Whether the checksum matches: reads the whole file.
    fn verify(&self) -> Result<(), CheckpointError> {
        let header = self.map.get(..HEADER_LEN).unwrap_or_default();
        let payload = self.map.get(HEADER_LEN..).unwrap_or_default();
        let (rows, body) = payload.split_at(self.rows_len.min(payload.len()));
        if checksum(header, &[rows, body]) == self.checksum {
            Ok(())
        } else {
            Err(CheckpointError::Checksum)
        }
    }

    /// The `Body`, its layout validated (a safe read of any bytes).
    fn body(&self) -> Result<&ArchivedBody, CheckpointError> {
        let bytes = body_bytes(&self.map, self.rows_len);
        let body = rkyv::access::<ArchivedBody, rancor::Error>(bytes)
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        // The index is probed by masking: its length must be a power of two.
        if !body.index.len().is_power_of_two() {
            return Err(CheckpointError::Malformed(format!(
                "credential index of {} slots",
                body.index.len()
            )));
        }
        Ok(body)
    }

    fn verified(self) -> Checkpoint {
        Checkpoint {
            map: self.map,
            len: self.len,
            rows_len: self.rows_len,
        }
    }
}

impl Checkpoint {
    /// Opens and verifies `path`: magic, format version, length, checksum
    /// and the layout of its `Body` (each row's layout is verified when the
    /// row is read). Nothing of a file that fails is used.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let file = Unverified::map(path)?;
        file.verify()?;
        file.body()?;
        Ok(file.verified())
    }

    /// Opens and verifies `path` as [`open`](Self::open) does (a missing
    /// file, a first start, is `Ok(None)`) and refuses it unless it holds
    /// `expected`'s data; returns it with the stored version served at
    /// once from the memory map, as of `as_of` (or of the stored freshness
    /// when `None`). Only the small tables are built (milliseconds); every
    /// credential is read from its row when a decision first asks for it
    /// (see [`Snapshot::warm`]). Serve it while [`restore`](Self::restore)
    /// rebuilds the builder, then publish the builder's version (the same
    /// data) in its place; the snapshot keeps the file mapped until then.
    ///
    /// The fast start: the checksum (the whole file) is computed on one
    /// thread while the small tables are read and compiled on another, and
    /// nothing of the second is used unless the first matches.
    pub fn open_warm(
        path: &Path,
        expected: &CheckpointSource,
        as_of: Option<Timestamp>,
    ) -> Result<Option<(Arc<Self>, Snapshot)>, CheckpointError> {
        let file = match Unverified::map(path) {
            Ok(file) => file,
            Err(CheckpointError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::info!(path = %path.display(), "no checkpoint yet");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let (verified, compiled) = std::thread::scope(|scope| {
            let compiled = scope.spawn(|| -> Result<_, CheckpointError> {
                let body = file.body()?;
                let found = source_of(body);
                if &found != expected {
                    return Err(CheckpointError::Foreign {
                        expected: expected.to_string(),
                        found: found.to_string(),
                    });
                }
                let (mut builder, _) = small_builder(body)?;
                let as_of = match as_of {
                    Some(at) => at,
                    None => instant(body.fresh_as_of_ms.to_native())?,
                };
                Ok(builder.publish(as_of))
            });
            let verified = file.verify();
            let compiled = compiled
                .join()
                .unwrap_or_else(|_| Err(CheckpointError::Malformed("reader panicked".into())));
            (verified, compiled)
        });
        // A file that fails its checksum is refused for that, whatever
        // else was read from it.
        verified?;
        let snapshot = compiled?;
        let checkpoint = Arc::new(file.verified());
        let store = Arc::new(Store(Arc::clone(&checkpoint)));
        Ok(Some((checkpoint, snapshot.warm(store))))
    }

    fn body(&self) -> &ArchivedBody {
        let body = body_bytes(&self.map, self.rows_len);
        // SAFETY: `open` validated exactly these bytes with
        // `rkyv::access`, and a read-only map does not change.
        #[expect(unsafe_code, reason = "the archive was validated in `open`")]
        unsafe {
            rkyv::access_unchecked::<ArchivedBody>(body)
        }
    }

    /// How many cardholder rows the file has.
    fn row_count(&self) -> usize {
        self.body().row_ends.len()
    }

    /// Row `i`, its layout validated (rows are validated when read, not
    /// when the file is opened).
    fn row(&self, i: usize) -> Result<&ArchivedHolderRow, CheckpointError> {
        let ends = &self.body().row_ends;
        let end = ends
            .get(i)
            .map(|e| e.to_native())
            .ok_or_else(|| CheckpointError::Malformed(format!("no row {i}")))?;
        let start = match i.checked_sub(1) {
            Some(before) => ends.get(before).map_or(0, |e| e.to_native()),
            None => 0,
        };
        let start = start.div_ceil(ROW_ALIGN as u64) * ROW_ALIGN as u64;
        let bytes = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .filter(|(s, e)| s <= e && *e <= self.rows_len)
            .and_then(|(s, e)| self.map.get(HEADER_LEN + s..HEADER_LEN + e))
            .ok_or_else(|| CheckpointError::Malformed(format!("row {i} spans {start}..{end}")))?;
        rkyv::access::<ArchivedHolderRow, rancor::Error>(bytes)
            .map_err(|e| CheckpointError::Malformed(format!("row {i}: {e}")))
    }

    /// The data's source.
    pub fn source(&self) -> CheckpointSource {
        source_of(self.body())
    }

    /// Refuses the checkpoint unless it holds `expected`'s data.
    pub fn check_source(&self, expected: &CheckpointSource) -> Result<(), CheckpointError> {
        let found = self.source();
        if &found == expected {
            Ok(())
        } else {
            Err(CheckpointError::Foreign {
                expected: expected.to_string(),
                found: found.to_string(),
            })
        }
    }

    /// A summary of the checkpoint.
    pub fn info(&self) -> CheckpointInfo {
        let b = self.body();
        let at = |ms: i64| Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
        let small = serde_json::from_str::<Vec<serde::de::IgnoredAny>>(b.small.as_str())
            .map_or(0, |v| v.len());
        CheckpointInfo {
            format_version: FORMAT_VERSION,
            bytes: self.len + HEADER_LEN as u64,
            source: self.source().to_string(),
            written_at: at(b.written_at_ms.to_native()),
            snapshot_version: b.snapshot_version.to_native(),
            fresh_as_of: at(b.fresh_as_of_ms.to_native()),
            small_records: small,
            cardholders: b.cardholders.to_native() as usize,
            assignments: b.assignments.to_native() as usize,
            credentials: b.credentials.len(),
            presence: b.presence.len(),
            stream_arn: b.stream.as_ref().map(|s| s.arn.as_str().to_owned()),
            shards: b
                .stream
                .as_ref()
                .map(|s| s.shards.iter().map(shard_position).collect())
                .unwrap_or_default(),
        }
    }

    /// When the data was last confirmed current by its source.
    pub fn fresh_as_of(&self) -> Result<Timestamp, CheckpointError> {
        instant(self.body().fresh_as_of_ms.to_native())
    }

    /// When the file was written.
    pub fn written_at(&self) -> Result<Timestamp, CheckpointError> {
        instant(self.body().written_at_ms.to_native())
    }

    /// The stored anti-passback presence.
    pub fn presence(&self) -> Vec<PresenceEntry> {
        self.body()
            .presence
            .iter()
            .map(|p| PresenceEntry {
                holder: p.holder.as_str().to_owned(),
                area: p.area.as_str().to_owned(),
                inside: p.inside,
                at_ms: p.at_ms.to_native(),
            })
            .collect()
    }

    /// Rebuilds the stored state.
    pub fn restore(&self) -> Result<Restored, CheckpointError> {
        let b = self.body();
        let version = b.snapshot_version.to_native();
        let (mut builder, mut refused) = small_builder(b)?;
        for i in 0..self.row_count() {
            refused += builder.apply_bundle(bundle_of(self.row(i)?)?).len();
        }
        let presence = self.presence();
        let cursor = b.stream.as_ref().map(|s| {
            StreamCursor::restored(
                s.arn.as_str().to_owned(),
                s.shards.iter().map(shard_position).collect(),
            )
        });
        Ok(Restored {
            builder,
            version,
            fresh_as_of: self.fresh_as_of()?,
            written_at: self.written_at()?,
            cursor,
            presence,
            refused,
        })
    }
}

fn source_of(body: &ArchivedBody) -> CheckpointSource {
    match &body.source {
        ArchivedSourceRow::Table { table } => CheckpointSource::Table {
            table: table.as_str().to_owned(),
        },
        ArchivedSourceRow::SiteFile { digest } => CheckpointSource::SiteFile { digest: *digest },
    }
}

/// A builder of the small tables alone (sites, doors, readers, …), whose
/// next publish is the stored version, and how many of their records it
/// refused.
fn small_builder(body: &ArchivedBody) -> Result<(SnapshotBuilder, usize), CheckpointError> {
    let version = body.snapshot_version.to_native();
    let mut builder = SnapshotBuilder::starting_at(version.saturating_sub(1));
    let small: Vec<SmallRecord> = serde_json::from_str(body.small.as_str())
        .map_err(|e| CheckpointError::Malformed(format!("small tables: {e}")))?;
    let small = small.into_iter().map(|r| match r {
        SmallRecord::Site(r) => Record::Site(r),
        SmallRecord::Door(r) => Record::Door(r),
        SmallRecord::Reader(r) => Record::Reader(r),
        SmallRecord::Area(r) => Record::Area(r),
        SmallRecord::DoorGroup(r) => Record::DoorGroup(r),
        SmallRecord::Schedule(r) => Record::Schedule(r),
        SmallRecord::HolidaySet(r) => Record::HolidaySet(r),
        SmallRecord::AccessLevel(r) => Record::AccessLevel(r),
    });
    let refused = builder.apply_all(small.map(Change::Upsert)).len();
    Ok((builder, refused))
}

fn instant(ms: i64) -> Result<Timestamp, CheckpointError> {
    Timestamp::from_millisecond(ms)
        .map_err(|e| CheckpointError::Malformed(format!("instant {ms} ms: {e}")))
}

/// The records of an archived row.
fn bundle_of(h: &ArchivedHolderRow) -> Result<HolderBundle, CheckpointError> {
    let id = h.id.as_str();
    let holder = match h.record.as_ref() {
        Some(r) => Some(CardholderRecord {
            id: id.to_owned(),
            status: if r.active {
                HolderStatus::Active
            } else {
                HolderStatus::Inactive
            },
            valid_from: bound(&r.from_ms, OPEN_FROM)?,
            valid_until: bound(&r.until_ms, OPEN_UNTIL)?,
            lockdown_override: r.lockdown_override,
        }),
        None => None,
    };
    let mut assignments = Vec::with_capacity(h.assignments.len());
    for a in h.assignments.iter() {
        assignments.push(AssignmentRecord {
            holder: id.to_owned(),
            level: a.level.as_str().to_owned(),
            valid_from: bound(&a.from_ms, OPEN_FROM)?,
            valid_until: bound(&a.until_ms, OPEN_UNTIL)?,
        });
    }
    let mut credentials = Vec::with_capacity(h.credentials.len());
    for c in h.credentials.iter() {
        credentials.push(CredentialRecord {
            card: card_of(&c.card)?,
            holder: id.to_owned(),
            status: *STATUSES
                .get(usize::from(c.status))
                .ok_or_else(|| CheckpointError::Malformed(format!("status {}", c.status)))?,
            valid_from: bound(&c.from_ms, OPEN_FROM)?,
            valid_until: bound(&c.until_ms, OPEN_UNTIL)?,
            pin: c
                .pin
                .as_ref()
                .map(|p| p.as_str().parse())
                .transpose()
                .map_err(|e| CheckpointError::Malformed(format!("PIN hash: {e}")))?,
        });
    }
    Ok(HolderBundle {
        id: id.to_owned(),
        holder,
        assignments,
        credentials,
    })
}

fn card_of(card: &ArchivedCardRow) -> Result<CredentialKey, CheckpointError> {
    Ok(match card {
        ArchivedCardRow::Card {
            format,
            facility,
            number,
        } => CredentialKey::card(
            CardFormat(format.to_native()),
            facility.to_native(),
            number.to_native(),
        ),
        ArchivedCardRow::Uid(bytes) => CredentialKey::Uid(
            Uid::new(bytes.as_slice())
                .ok_or_else(|| CheckpointError::Malformed("a UID is too long".into()))?,
        ),
    })
}

/// A checkpoint's credentials read in place, for a warm snapshot (see
/// [`Checkpoint::open_warm`]).
struct Store(Arc<Checkpoint>);

impl CredentialStore for Store {
    fn len(&self) -> usize {
        self.0.body().credentials.len()
    }

    fn candidates(&self, key: &CredentialKey, candidate: &mut dyn FnMut(usize) -> bool) {
        let index = &self.0.body().index;
        let mask = index.len().wrapping_sub(1);
        let (mut at, tag) = slot_of(key_hash(key), mask);
        // At most half full, so a free slot ends every probe; the bound
        // is for a file whose index is not (it passed the checksum, but a
        // reader does not trust a writer with its termination).
        for _ in 0..index.len() {
            let Some(slot) = index.get(at).map(|s| s.to_native()) else {
                return;
            };
            if slot == 0 {
                return;
            }
            if slot >> 32 == tag && candidate((slot & 0xffff_ffff) as usize - 1) {
                return;
            }
            at = (at + 1) & mask;
        }
    }

    fn bundle(&self, number: usize) -> Option<(HolderBundle, usize)> {
        let at = self.0.body().credentials.get(number)?.to_native();
        let (row, position) = ((at >> 32) as usize, (at & 0xffff_ffff) as usize);
        match self.0.row(row).and_then(bundle_of) {
            Ok(bundle) => Some((bundle, position)),
            Err(error) => {
                // Fails closed: the card is unknown until the builder,
                // which reads the same row, refuses the whole checkpoint.
                tracing::error!(%error, row, "checkpoint row unreadable; its cards deny");
                None
            }
        }
    }
}

fn shard_position(s: &ArchivedShardRow) -> ShardPosition {
    ShardPosition {
        id: s.id.as_str().to_owned(),
        parent: s.parent.as_ref().map(|p| p.as_str().to_owned()),
        last_sequence: s.last_sequence.as_ref().map(|p| p.as_str().to_owned()),
        finished: s.finished,
    }
}

#[cfg(test)]
mod tests;
