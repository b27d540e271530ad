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
//!      24    32  SHA-256 over bytes 0..24 and the whole payload
//!      56     8  reserved, 0
//!      64     …  payload: an rkyv archive of `Body`
//! ```
//!
//! A file is written whole to a temporary file beside the target, fsynced,
//! renamed over the target and the directory fsynced: a crash leaves the
//! old checkpoint or the new one, never a mix. A file is read through a
//! memory map and trusted only after its length, checksum and archive
//! layout are all verified; anything else is refused with the reason, and
//! the caller falls back to a full load.
//!
//! Cardholders (millions of rows) are archived as rkyv rows read in place,
//! each with its assignments and credentials inside it, so a restore builds
//! every holder once ([`SnapshotBuilder::apply_bundle`]); the small tables
//! (sites, doors, readers, schedules, …: thousands of rows) as one JSON
//! document inside the archive, since their records already have a serde
//! form.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use accessd_engine::{
    AccessLevelRecord, AreaRecord, AssignmentRecord, CardFormat, CardholderRecord, Change,
    CredentialKey, CredentialRecord, CredentialStatus, DoorGroupRecord, DoorRecord, HolderBundle,
    HolderStatus, HolidaySetRecord, PresenceEntry, ReaderRecord, Record, ScheduleRecord,
    SiteRecord, SnapshotBuilder, Uid,
};
use jiff::Timestamp;
use memmap2::Mmap;
use rkyv::rancor;
use sha2::{Digest, Sha256};

use crate::follower::{ShardPosition, StreamCursor};

/// The first eight bytes of every checkpoint.
pub const MAGIC: [u8; 8] = *b"ACSDCKPT";
/// The layout version this build writes and reads. A file of another
/// version is refused (and replaced by the next write).
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 64;

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
    /// A site file, identified by the SHA-256 of its bytes.
    SiteFile {
        /// The SHA-256 of the file's bytes.
        sha256: [u8; 32],
    },
}

impl std::fmt::Display for CheckpointSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Table { table } => write!(f, "DynamoDB table `{table}`"),
            Self::SiteFile { sha256 } => {
                let short: String = sha256.iter().take(6).map(|b| format!("{b:02x}")).collect();
                write!(f, "a site file with SHA-256 {short}…")
            }
        }
    }
}

impl CheckpointSource {
    /// The source of a site file with these bytes.
    pub fn site_file(bytes: &[u8]) -> Self {
        Self::SiteFile {
            sha256: Sha256::digest(bytes).into(),
        }
    }
}

/// [`CheckpointSource`] as archived (kept private so the archived form
/// is not part of the API).
#[derive(rkyv::Archive, rkyv::Serialize)]
enum SourceRow {
    Table { table: String },
    SiteFile { sha256: [u8; 32] },
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
    holders: Vec<HolderRow>,
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
/// together so a restore builds each holder once, in cache.
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
    from_ms: Option<i64>,
    until_ms: Option<i64>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct AssignmentRow {
    level: String,
    from_ms: Option<i64>,
    until_ms: Option<i64>,
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
    from_ms: Option<i64>,
    until_ms: Option<i64>,
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

fn ms(t: Option<Timestamp>) -> Option<i64> {
    t.map(|t| t.as_millisecond())
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

/// Encodes `data` into the bytes of a checkpoint file.
pub fn encode(data: &CheckpointData<'_>) -> Result<Vec<u8>, CheckpointError> {
    let (header, payload) = encode_parts(data)?;
    let mut out = Vec::with_capacity(header.len() + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The header and the payload, apart, so a large payload is written
/// without being copied behind its header first.
fn encode_parts(
    data: &CheckpointData<'_>,
) -> Result<([u8; HEADER_LEN], rkyv::util::AlignedVec), CheckpointError> {
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
    let holders = data
        .builder
        .bundles()
        .map(|b| HolderRow {
            id: b.id,
            record: b.holder.map(|r| CoreRow {
                active: r.status == HolderStatus::Active,
                lockdown_override: r.lockdown_override,
                from_ms: ms(r.valid_from),
                until_ms: ms(r.valid_until),
            }),
            assignments: b
                .assignments
                .into_iter()
                .map(|r| AssignmentRow {
                    level: r.level,
                    from_ms: ms(r.valid_from),
                    until_ms: ms(r.valid_until),
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
                    from_ms: ms(r.valid_from),
                    until_ms: ms(r.valid_until),
                    pin: r.pin.map(|p| p.to_string()),
                })
                .collect(),
        })
        .collect();
    let small =
        serde_json::to_string(&small).map_err(|e| CheckpointError::Encode(e.to_string()))?;
    let body = Body {
        source: match &data.source {
            CheckpointSource::Table { table } => SourceRow::Table {
                table: table.clone(),
            },
            CheckpointSource::SiteFile { sha256 } => SourceRow::SiteFile { sha256: *sha256 },
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
        holders,
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
    let payload = rkyv::to_bytes::<rancor::Error>(&body)
        .map_err(|e| CheckpointError::Encode(e.to_string()))?;
    drop(body);
    let mut header = [0u8; HEADER_LEN];
    let mut fields = Vec::with_capacity(24);
    fields.extend_from_slice(&MAGIC);
    fields.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    fields.extend_from_slice(&0u32.to_le_bytes());
    fields.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut hash = Sha256::new();
    hash.update(&fields);
    hash.update(&payload);
    for (slot, byte) in header
        .iter_mut()
        .zip(fields.iter().chain(hash.finalize().iter()))
    {
        *slot = *byte;
    }
    Ok((header, payload))
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
    let (header, payload) = encode_parts(data)?;
    write_parts(path, &[&header, &payload])?;
    Ok(header.len() + payload.len())
}

/// A verified checkpoint file, memory-mapped.
pub struct Checkpoint {
    map: Mmap,
    len: u64,
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

impl Checkpoint {
    /// Opens and verifies `path`: magic, format version, length, checksum
    /// and archive layout. Nothing of a file that fails is used.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let file = File::open(path).map_err(io_error(path))?;
        // SAFETY: the map is read-only and accessd never writes a
        // checkpoint in place (it renames a new file over it, which leaves
        // this mapping's inode unchanged). Another process truncating the
        // file under us could fault the read; checkpoints live in
        // accessd's own state directory.
        #[expect(unsafe_code, reason = "memory-mapping the checkpoint for a fast start")]
        let map = unsafe { Mmap::map(&file) }.map_err(io_error(path))?;
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
                expected: len + HEADER_LEN as u64,
                actual: map.len() as u64,
            });
        }
        let payload = map.get(HEADER_LEN..).unwrap_or_default();
        let mut hash = Sha256::new();
        hash.update(header.get(..24).unwrap_or_default());
        hash.update(payload);
        if header.get(24..56) != Some(&hash.finalize()[..]) {
            return Err(CheckpointError::Checksum);
        }
        rkyv::access::<ArchivedBody, rancor::Error>(payload)
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        Ok(Self { map, len })
    }

    /// [`open`](Self::open), with a missing file (a first start) as
    /// `Ok(None)` rather than an error.
    pub fn open_existing(path: &Path) -> Result<Option<Self>, CheckpointError> {
        match Self::open(path) {
            Ok(c) => Ok(Some(c)),
            Err(CheckpointError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::info!(path = %path.display(), "no checkpoint yet");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn body(&self) -> &ArchivedBody {
        let payload = self.map.get(HEADER_LEN..).unwrap_or_default();
        // SAFETY: `open` validated exactly these bytes with
        // `rkyv::access`, and a read-only map does not change.
        #[expect(unsafe_code, reason = "the archive was validated in `open`")]
        unsafe {
            rkyv::access_unchecked::<ArchivedBody>(payload)
        }
    }

    /// The data's source.
    pub fn source(&self) -> CheckpointSource {
        match &self.body().source {
            ArchivedSourceRow::Table { table } => CheckpointSource::Table {
                table: table.as_str().to_owned(),
            },
            ArchivedSourceRow::SiteFile { sha256 } => {
                CheckpointSource::SiteFile { sha256: *sha256 }
            }
        }
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
            cardholders: b.holders.iter().filter(|h| h.record.is_some()).count(),
            assignments: b.holders.iter().map(|h| h.assignments.len()).sum(),
            credentials: b.holders.iter().map(|h| h.credentials.len()).sum(),
            presence: b.presence.len(),
            stream_arn: b.stream.as_ref().map(|s| s.arn.as_str().to_owned()),
            shards: b
                .stream
                .as_ref()
                .map(|s| s.shards.iter().map(shard_position).collect())
                .unwrap_or_default(),
        }
    }

    /// Rebuilds the stored state.
    pub fn restore(&self) -> Result<Restored, CheckpointError> {
        let b = self.body();
        let version = b.snapshot_version.to_native();
        let mut builder = SnapshotBuilder::starting_at(version.saturating_sub(1));
        let small: Vec<SmallRecord> = serde_json::from_str(b.small.as_str())
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
        let mut refused = builder.apply_all(small.map(Change::Upsert)).len();
        for h in b.holders.iter() {
            let id = h.id.as_str();
            let holder = match h.record.as_ref() {
                Some(r) => Some(CardholderRecord {
                    id: id.to_owned(),
                    status: if r.active {
                        HolderStatus::Active
                    } else {
                        HolderStatus::Inactive
                    },
                    valid_from: ts(r.from_ms.as_ref().map(|v| v.to_native()))?,
                    valid_until: ts(r.until_ms.as_ref().map(|v| v.to_native()))?,
                    lockdown_override: r.lockdown_override,
                }),
                None => None,
            };
            let mut assignments = Vec::with_capacity(h.assignments.len());
            for a in h.assignments.iter() {
                assignments.push(AssignmentRecord {
                    holder: id.to_owned(),
                    level: a.level.as_str().to_owned(),
                    valid_from: ts(a.from_ms.as_ref().map(|v| v.to_native()))?,
                    valid_until: ts(a.until_ms.as_ref().map(|v| v.to_native()))?,
                });
            }
            let mut credentials = Vec::with_capacity(h.credentials.len());
            for c in h.credentials.iter() {
                let card = match &c.card {
                    ArchivedCardRow::Card {
                        format,
                        facility,
                        number,
                    } => CredentialKey::card(
                        CardFormat(format.to_native()),
                        facility.to_native(),
                        number.to_native(),
                    ),
                    ArchivedCardRow::Uid(bytes) => {
                        CredentialKey::Uid(Uid::new(bytes.as_slice()).ok_or_else(|| {
                            CheckpointError::Malformed("a UID is too long".into())
                        })?)
                    }
                };
                let status = *STATUSES
                    .get(usize::from(c.status))
                    .ok_or_else(|| CheckpointError::Malformed(format!("status {}", c.status)))?;
                let pin = c
                    .pin
                    .as_ref()
                    .map(|p| p.as_str().parse())
                    .transpose()
                    .map_err(|e| CheckpointError::Malformed(format!("PIN hash: {e}")))?;
                credentials.push(CredentialRecord {
                    card,
                    holder: id.to_owned(),
                    status,
                    valid_from: ts(c.from_ms.as_ref().map(|v| v.to_native()))?,
                    valid_until: ts(c.until_ms.as_ref().map(|v| v.to_native()))?,
                    pin,
                });
            }
            refused += builder
                .apply_bundle(HolderBundle {
                    id: id.to_owned(),
                    holder,
                    assignments,
                    credentials,
                })
                .len();
        }
        let presence = b
            .presence
            .iter()
            .map(|p| PresenceEntry {
                holder: p.holder.as_str().to_owned(),
                area: p.area.as_str().to_owned(),
                inside: p.inside,
                at_ms: p.at_ms.to_native(),
            })
            .collect();
        let cursor = b.stream.as_ref().map(|s| {
            StreamCursor::restored(
                s.arn.as_str().to_owned(),
                s.shards.iter().map(shard_position).collect(),
            )
        });
        let at = |ms: i64| {
            Timestamp::from_millisecond(ms)
                .map_err(|e| CheckpointError::Malformed(format!("instant {ms} ms: {e}")))
        };
        Ok(Restored {
            builder,
            version,
            fresh_as_of: at(b.fresh_as_of_ms.to_native())?,
            written_at: at(b.written_at_ms.to_native())?,
            cursor,
            presence,
            refused,
        })
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
