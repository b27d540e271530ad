//! The spool: an append-only log of access events in segment files.
//!
//! ```text
//!  DIR/00000000000000000001.seg   sealed (fsynced when the next began)
//!  DIR/00000000000000000002.seg   active: the flusher writes to it
//!  DIR/shipper.pos                a reader's durable position ("segment offset")
//!  DIR/quarantine/…               bytes cut from a torn or corrupt tail
//!  DIR/spool.lock                 held by the one process that has the spool open
//!  RING_DIR/accessd-events-….ring the staging ring (see `ring`)
//! ```
//!
//! A segment is an 8-byte magic followed by records (see
//! [`accessd_engine::read_record`]: length, CRC-32, payload; one record
//! per chunk of frames answered).
//!
//! Promises: an append returns once its bytes are in the staging ring, a
//! file on tmpfs (`/dev/shm` unless told otherwise) mapped into the
//! process: a copy, no system call, no page fault. The ring's pages belong
//! to the file, so a kill -9 after the append loses nothing: the next open
//! writes what the ring still held into its segment. A flusher thread
//! writes the ring to the active segment (`pwrite`) and fdatasyncs it
//! every `fsync_interval`, so a power loss loses at most that much. On
//! open, a tail that does not read as
//! whole records (a write torn by a power loss, a flipped bit) is copied
//! to `quarantine/` and cut, never read as events.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use accessd_engine::{AccessEvent, RecordError, read_record};
use metrics::{Counter, Gauge};
use ring::{Appender, Ring};

use crate::checkpoint::write_atomic;
use crate::metrics as m;

/// The first bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"ACSDEVT1";
const SEGMENT_SUFFIX: &str = ".seg";
/// The smallest segment (so a tiny configured size still holds records).
const MIN_SEGMENT: u64 = 512;

/// How a spool behaves.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    /// The directory of segments and positions (created if missing).
    pub dir: PathBuf,
    /// A segment is sealed and a new one begun past this size.
    pub segment_bytes: u64,
    /// The spool's bound. Past it, the oldest segments are deleted, shipped
    /// ones first; see `docs/access-events.md` for what happens when
    /// nothing is shipped.
    pub max_bytes: u64,
    /// How often the syncer fdatasyncs the active segment: the most a power
    /// loss can lose.
    pub fsync_interval: Duration,
    /// Whether something ships the spool (a reader named
    /// [`SHIPPER`]). Without one the spool is a ring: deleting its oldest
    /// segment is routine, not a loss.
    pub shipping: bool,
    /// Where the staging ring lives: a tmpfs directory that outlives the
    /// process (`/run/accessd` under systemd). `None`: `/dev/shm`, or the
    /// spool's directory where there is none.
    pub ring_dir: Option<PathBuf>,
    /// The staging ring's size: appended events not yet flushed. The
    /// largest record an append takes is half of it.
    pub ring_bytes: u64,
}

impl SpoolConfig {
    /// Defaults for `dir`: 64 MiB segments, 1 GiB in all, fsync every 10 ms,
    /// a 16 MiB ring in `/dev/shm`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            fsync_interval: Duration::from_millis(10),
            shipping: false,
            ring_dir: None,
            ring_bytes: 16 << 20,
        }
    }
}

/// The name of the shipper's reader (and position file).
pub const SHIPPER: &str = "shipper";

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed. Fix: check the directory's permissions and
    /// free space.
    #[error("event spool `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file in the directory is not a segment of this format.
    #[error("event spool `{0}`: not a segment of this format (wrong magic); move it away")]
    Foreign(PathBuf),
    /// Another process has the spool open.
    #[error(
        "event spool `{0}`: another process has it open (it holds spool.lock); two servers must not share an events directory"
    )]
    Busy(PathBuf),
    /// An append larger than the staging ring takes.
    #[error("an append of {0} bytes is larger than the event spool's staging ring takes")]
    TooLarge(u64),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A position in the spool: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpoolPos {
    /// The segment's number.
    pub segment: u64,
    /// Bytes from the segment's start (at least the magic's length).
    pub offset: u64,
}

/// The segment the flusher writes to.
struct Active {
    file: File,
    segment: u64,
    /// Bytes of records in it (its length).
    len: u64,
    /// Bytes written since the flusher last synced it.
    dirty: bool,
    /// Sealed segments not yet fsynced.
    to_sync: Vec<File>,
}

impl Active {
    /// What must be fdatasynced, taken under the lock and synced outside
    /// it: a handle on the active segment when it has new bytes (or
    /// `always`), and the sealed segments not yet synced.
    fn take_unsynced(&mut self, always: bool) -> (Option<std::io::Result<File>>, Vec<File>) {
        let active = if self.dirty || always {
            self.dirty = false;
            Some(self.file.try_clone())
        } else {
            None
        };
        (active, std::mem::take(&mut self.to_sync))
    }
}

struct Inner {
    config: SpoolConfig,
    /// Where appends land (see `ring`).
    ring: Ring,
    /// The append lock: the one right to push into the ring.
    appender: Mutex<Appender>,
    /// The segment lock, taken after the append lock when both are held.
    active: Mutex<Active>,
    /// Woken when events reach a segment (readers that follow wait on it).
    appended: tokio::sync::Notify,
    /// Positions of named readers, so deleting old segments knows what is
    /// still unread.
    readers: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    stop: AtomicBool,
    /// The flusher thread, and whether an appender has woken it early (the
    /// ring a quarter full) since its last flush.
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    flusher_woken: AtomicBool,
    /// Held (locked) while the spool is open; closing it releases the
    /// spool. Declared after `ring`, so it drops (and unlocks) after the
    /// ring has removed its file.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "held for its lock; only the tests' crash takes it early"
        )
    )]
    lock_file: Mutex<Option<File>>,
    written: Counter,
    appends_failed: Counter,
    spool_bytes: Gauge,
    dropped_bytes: Counter,
    oldest_unshipped: AtomicU64,
    /// Bytes in all segments (kept on flush, recounted on deletion).
    total: AtomicU64,
    /// Unix seconds of the last logged flush failure (one line a second).
    last_flush_error: AtomicU64,
}

/// An open spool, shared by every connection that records events.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
    /// Shared by the handles of the spool's users (not the flusher's):
    /// the last one to go stops the flusher, so the spool is closed (and
    /// its lock released) when the last user drops it.
    _open: Option<Arc<Open>>,
}

/// Stops the flusher when the last user's handle goes.
struct Open(Weak<Inner>);

impl Drop for Open {
    fn drop(&mut self) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        inner.stop.store(true, Ordering::Release);
        let handle = inner
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(inner);
        if let Some(handle) = handle {
            handle.thread().unpark();
            // The flusher holds the spool only while it works; once it has
            // returned, the caller's is the last handle and closes it.
            if handle.thread().id() != std::thread::current().id() {
                handle.join().ok();
            }
        }
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.config.dir)
            .finish_non_exhaustive()
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}{SEGMENT_SUFFIX}"))
}

/// The segment numbers in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(num) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(num);
    }
    out.sort_unstable();
    Ok(out)
}

/// What a scan of one segment's bytes found.
struct Scan {
    /// Bytes (from the start of the file) that are whole, good records.
    good_len: u64,
    /// Events read.
    events: u64,
    /// Why the scan stopped early, if it did.
    bad: Option<RecordError>,
}

fn scan(bytes: &[u8]) -> Scan {
    let mut at = SEGMENT_MAGIC.len();
    let mut events = 0;
    let bad = loop {
        let rest = bytes.get(at..).unwrap_or_default();
        if rest.is_empty() {
            break None;
        }
        match read_record(rest) {
            Ok((record, n)) => {
                at += n;
                events += record.len() as u64;
            }
            Err(e) => break Some(e),
        }
    };
    Scan {
        good_len: at as u64,
        events,
        bad,
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, SpoolError> {
    fs::read(path).map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Creates segment `segment`: the magic, `reserve` bytes of blocks
/// allocated past it (the file's length stays that of its records, so a
/// full disk shows at rotation rather than on a flush), fsynced, and the
/// directory entry made durable.
fn create_segment(dir: &Path, segment: u64, reserve: u64) -> Result<File, SpoolError> {
    let path = segment_path(dir, segment);
    let made = (|| {
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all(SEGMENT_MAGIC).map_err(io(&path))?;
        reserve_blocks(&file, reserve).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        sync_dir(dir)?;
        Ok(file)
    })();
    if made.is_err() {
        // A full disk, say: the next rotation tries again from scratch.
        let _ = fs::remove_file(&path);
    }
    made
}

/// Allocates the blocks of `file` up to `len` bytes without changing its
/// length. File systems that cannot (some network ones) are left to
/// allocate as they write.
fn reserve_blocks(file: &File, len: u64) -> std::io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: a plain system call on an open descriptor we own.
    #[expect(unsafe_code, reason = "fallocate has no safe wrapper in std")]
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Ok(()),
        _ => Err(e),
    }
}

/// The spool's id (in its ring's name): a hash of its directory's path.
fn spool_id(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let canonical = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    xxhash_rust::xxh3::xxh3_64(canonical.as_os_str().as_bytes())
}

/// Takes the spool's lock file, or says another process has it.
fn lock_spool(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join("spool.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    // flock(2) rather than `File::try_lock`, which needs Rust 1.89 (the
    // workspace's MSRV is 1.88). Closing the file releases the lock, so a
    // killed process never leaves the spool locked.
    // SAFETY: a valid open descriptor, owned by `file` for the call.
    #[expect(unsafe_code, reason = "flock has no safe wrapper in std before 1.89")]
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(file);
    }
    match std::io::Error::last_os_error() {
        e if e.kind() == std::io::ErrorKind::WouldBlock => Err(SpoolError::Busy(dir.to_owned())),
        e => Err(io(&path)(e)),
    }
}

/// Writes what a ring left by a crashed process had not yet flushed into
/// the segment it was meant for, then removes the ring. A ring that does
/// not belong (another format, spool, or an older segment than the
/// newest) is set aside, not read.
fn recover_ring(dir: &Path, ring_path: &Path, id: u64) -> Result<(), SpoolError> {
    let Some(bytes) = ring::read_left(ring_path).map_err(io(ring_path))? else {
        return Ok(());
    };
    let set_aside = |why: &dyn std::fmt::Display| {
        let aside = ring_path.with_extension("ring.bad");
        tracing::error!(ring = %ring_path.display(), kept_in = %aside.display(), "event spool: a staging ring that cannot be used ({why}); set aside, not read");
        fs::rename(ring_path, &aside).map_err(io(ring_path))
    };
    let left = match ring::leftover(&bytes, id) {
        Ok(left) => left,
        Err(why) => return set_aside(&why),
    };
    if let Some(left) = left {
        // A segment begun after the ring's (a crash between making it and
        // saying so in the ring) holds only its magic: remove it.
        let mut segs = segments(dir)?;
        while let Some(&newest) = segs.last().filter(|&&n| n > left.segment) {
            let path = segment_path(dir, newest);
            let len = fs::metadata(&path).map_err(io(&path))?.len();
            if len > SEGMENT_MAGIC.len() as u64 {
                return set_aside(&format_args!(
                    "its events belong to segment {} but segment {newest} is newer",
                    left.segment
                ));
            }
            fs::remove_file(&path).map_err(io(&path))?;
            segs.pop();
        }
        let path = segment_path(dir, left.segment);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        if len < SEGMENT_MAGIC.len() as u64 {
            file.write_all_at(SEGMENT_MAGIC, 0).map_err(io(&path))?;
        }
        let at = if len < left.offset {
            tracing::error!(
                segment = left.segment,
                len,
                expected = left.offset,
                "event spool: the segment is shorter than the staging ring says (was it cut by hand?); the ring's events go at its end"
            );
            len.max(SEGMENT_MAGIC.len() as u64)
        } else {
            left.offset
        };
        // Past `at`, the segment can only hold a prefix of these bytes (a
        // flush that had written them when the process died).
        file.set_len(at).map_err(io(&path))?;
        file.write_all_at(&left.bytes, at).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        tracing::warn!(
            segment = left.segment,
            bytes = left.bytes.len(),
            "event spool: the last process stopped without closing the spool; wrote the events its staging ring still held"
        );
    }
    fs::remove_file(ring_path).map_err(io(ring_path))
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir`: writes what a ring
    /// left by a crash still held, cuts a torn or corrupt tail of the
    /// newest segment (keeping the cut bytes in `quarantine/`), and begins
    /// a new segment and ring. Starts the flusher thread.
    pub fn open(config: SpoolConfig) -> Result<Self, SpoolError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_file = lock_spool(&dir)?;
        let id = spool_id(&dir);
        let ring_dir = config
            .ring_dir
            .clone()
            .unwrap_or_else(|| ring::default_dir(&dir));
        fs::create_dir_all(&ring_dir).map_err(io(&ring_dir))?;
        let ring_path = ring::ring_path(&ring_dir, id);
        recover_ring(&dir, &ring_path, id)?;
        let existing = segments(&dir)?;
        // The newest segment is sealed as it is (cut to its whole records)
        // and appends go to a new one.
        let next = match existing.last() {
            Some(&last) => {
                let path = segment_path(&dir, last);
                let bytes = read_file(&path)?;
                if bytes.get(..SEGMENT_MAGIC.len()) != Some(&SEGMENT_MAGIC[..]) {
                    if bytes.len() < SEGMENT_MAGIC.len() && SEGMENT_MAGIC.starts_with(&bytes) {
                        // Created but its magic never fully written: empty.
                        fs::remove_file(&path).map_err(io(&path))?;
                        last
                    } else {
                        return Err(SpoolError::Foreign(path));
                    }
                } else {
                    let found = scan(&bytes);
                    let rest = bytes.get(found.good_len as usize..).unwrap_or_default();
                    // After the last record of a mapped segment: zeros
                    // that were never written (a crash before the cut).
                    let unwritten = rest.iter().all(|&b| b == 0);
                    if let Some(why) = found.bad.as_ref().filter(|_| !unwritten) {
                        quarantine(&dir, last, found.good_len, &bytes, why)?;
                    }
                    if found.good_len == SEGMENT_MAGIC.len() as u64 {
                        // No record in it (a start and a stop with no
                        // decision): reuse it rather than keep empties.
                        fs::remove_file(&path).map_err(io(&path))?;
                        last
                    } else {
                        if (bytes.len() as u64) != found.good_len {
                            let file = OpenOptions::new()
                                .write(true)
                                .open(&path)
                                .map_err(io(&path))?;
                            file.set_len(found.good_len).map_err(io(&path))?;
                            file.sync_all().map_err(io(&path))?;
                        }
                        last + 1
                    }
                }
            }
            None => 1,
        };
        let file = create_segment(&dir, next, config.segment_bytes.max(MIN_SEGMENT))?;
        let (ring, appender) = Ring::create(&ring_path, config.ring_bytes, id, next).map_err(|e| {
            SpoolError::Io {
                path: ring_path.clone(),
                source: std::io::Error::new(
                    e.kind(),
                    format!("cannot make the staging ring ({e}); point --events-ring-dir at a writable tmpfs directory"),
                ),
            }
        })?;
        if ring::on_tmpfs(&ring_dir) {
            tracing::debug!(ring = %ring_path.display(), "event spool: staging ring on tmpfs");
        } else {
            tracing::warn!(ring = %ring_path.display(), "event spool: the staging ring is not on tmpfs, so its pages are written back and appends cost more; point --events-ring-dir at a tmpfs directory that outlives the process (/dev/shm, /run/accessd)");
        }
        let active = Active {
            file,
            segment: next,
            len: SEGMENT_MAGIC.len() as u64,
            dirty: false,
            to_sync: Vec::new(),
        };
        let inner = Arc::new(Inner {
            config,
            ring,
            appender: Mutex::new(appender),
            active: Mutex::new(active),
            appended: tokio::sync::Notify::new(),
            readers: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            flusher: Mutex::new(None),
            flusher_woken: AtomicBool::new(false),
            lock_file: Mutex::new(Some(lock_file)),
            written: metrics::counter!(m::EVENTS_WRITTEN),
            appends_failed: metrics::counter!(m::EVENTS_LOST),
            spool_bytes: metrics::gauge!(m::SPOOL_BYTES),
            dropped_bytes: metrics::counter!(m::SPOOL_DROPPED_BYTES),
            oldest_unshipped: AtomicU64::new(0),
            total: AtomicU64::new(0),
            last_flush_error: AtomicU64::new(0),
        });
        let open = Arc::new(Open(Arc::downgrade(&inner)));
        let spool = Self {
            inner,
            _open: Some(open),
        };
        let total = spool.bytes()?;
        spool.inner.total.store(total, Ordering::Relaxed);
        spool.inner.spool_bytes.set(total as f64);
        let weak = Arc::downgrade(&spool.inner);
        let handle = std::thread::Builder::new()
            .name("spool-flush".into())
            .spawn(move || flusher(weak))
            .map_err(io(&dir))?;
        *spool
            .inner
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, Active> {
        // A panic while holding the lock cannot leave `Active` half
        // updated in a way that matters: the file is the truth.
        self.inner
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.config.dir
    }

    /// Appends `records` (whole records, as written with
    /// [`accessd_engine::RecordWriter`], holding `count` events): a copy
    /// into the staging ring, no system call. When it returns `Ok` the
    /// events survive a kill -9 of the process.
    pub fn append(&self, records: &[u8], count: u64) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        let ring = &self.inner.ring;
        let n = records.len() as u64;
        if n > ring.max_append() {
            self.inner.appends_failed.increment(count);
            return Err(SpoolError::TooLarge(n));
        }
        let mut appender = self
            .inner
            .appender
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !ring.push(&mut appender, records) {
            // The flusher is behind (a slow disk, or starved of CPU):
            // flush here, holding the append lock, and try again.
            let flushed = self.flush();
            if !ring.push(&mut appender, records) {
                drop(appender);
                self.inner.appends_failed.increment(count);
                return Err(flushed.err().unwrap_or(SpoolError::TooLarge(n)));
            }
        }
        drop(appender);
        self.inner.written.increment(count);
        // The flusher comes round every fsync interval; a ring filling
        // faster than that wakes it early (once until it has flushed).
        if ring.pending() > ring.max_append() / 2
            && !self.inner.flusher_woken.swap(true, Ordering::AcqRel)
        {
            self.wake_flusher();
        }
        Ok(())
    }

    fn wake_flusher(&self) {
        if let Some(handle) = self
            .inner
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            handle.thread().unpark();
        }
    }

    /// Writes what the ring holds to the active segment (the flusher does
    /// this every fsync interval; readers of an open spool do it before
    /// they read, so they see every append).
    pub fn flush(&self) -> Result<(), SpoolError> {
        let rotated = {
            let mut active = self.lock();
            self.inner.flush_into(&mut active)?
        };
        if rotated {
            self.enforce_bound();
        }
        Ok(())
    }

    /// Bytes in all segments, as last counted (cheap).
    pub fn total_bytes(&self) -> u64 {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// Bytes in all segments, counted on disk.
    /// The active segment counts what was written to it, not its
    /// preallocated size.
    pub fn bytes(&self) -> Result<u64, SpoolError> {
        let dir = &self.inner.config.dir;
        let (active, written) = self.written_end();
        let mut total = 0;
        for s in segments(dir)? {
            if s == active {
                total += written;
                continue;
            }
            let path = segment_path(dir, s);
            total += fs::metadata(&path).map_err(io(&path))?.len();
        }
        Ok(total)
    }

    /// The active segment and how many of its bytes hold records.
    fn written_end(&self) -> (u64, u64) {
        let a = self.lock();
        (a.segment, a.len)
    }

    /// Deletes the oldest segments while the spool is above its bound.
    fn enforce_bound(&self) {
        let dir = &self.inner.config.dir;
        let result = (|| -> Result<(), SpoolError> {
            let mut total = self.bytes()?;
            let all = segments(dir)?;
            let active = self.lock().segment;
            let unread_from = self.slowest_reader();
            for seg in all {
                if total <= self.inner.config.max_bytes || seg >= active {
                    break;
                }
                let path = segment_path(dir, seg);
                let len = fs::metadata(&path).map_err(io(&path))?.len();
                let unread = self.inner.config.shipping && unread_from.is_none_or(|r| seg >= r);
                fs::remove_file(&path).map_err(io(&path))?;
                total = total.saturating_sub(len);
                if unread {
                    self.inner.dropped_bytes.increment(len);
                    tracing::error!(
                        segment = seg,
                        bytes = len,
                        "event spool full ({} bytes max) with events not yet shipped: deleted the oldest segment; those events are lost. Ship faster (is DynamoDB reachable?) or raise --events-max-bytes",
                        self.inner.config.max_bytes
                    );
                } else {
                    tracing::info!(
                        segment = seg,
                        bytes = len,
                        "event spool: deleted the oldest segment (bound reached)"
                    );
                }
            }
            self.inner.total.store(total, Ordering::Relaxed);
            self.inner.spool_bytes.set(total as f64);
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "event spool: cannot enforce its size bound");
        }
    }

    /// The oldest segment a named reader still has to read.
    fn slowest_reader(&self) -> Option<u64> {
        let readers = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner());
        readers.iter().map(|(_, s)| s.load(Ordering::Acquire)).min()
    }

    /// A reader that keeps its position in `DIR/NAME.pos` (written by
    /// [`SpoolReader::commit`]); it starts where it last committed, or at
    /// the oldest event.
    pub fn reader(&self, name: &str) -> Result<SpoolReader, SpoolError> {
        let pos_file = self.inner.config.dir.join(format!("{name}.pos"));
        let pos = match fs::read_to_string(&pos_file) {
            Ok(text) => parse_pos(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&pos_file)(e)),
        };
        if pos.is_none() && pos_file.exists() {
            tracing::warn!(file = %pos_file.display(), "event spool: unreadable position file; reading from the oldest event (duplicates are overwritten by id)");
        }
        let mut reader = SpoolReader::new(self.inner.config.dir.clone(), Some(pos_file));
        if let Some(pos) = pos {
            reader.pos = pos;
        }
        reader.spool = Some(self.clone());
        let shared = Arc::new(AtomicU64::new(reader.pos.segment));
        reader.shared = Some(Arc::clone(&shared));
        self.inner
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_owned(), shared));
        Ok(reader)
    }

    /// A reader from the newest event on, for live views (the console):
    /// it keeps no position and holds no segment back, so a follower
    /// that falls behind a full spool misses what was deleted (and says
    /// so in the log) rather than growing the spool.
    pub fn follower(&self) -> SpoolReader {
        // What is in the ring was appended before the follower began. A
        // failed flush is said by the flusher; the follower then starts
        // at what reached the segment.
        let _ = self.flush();
        let mut reader = SpoolReader::new(self.inner.config.dir.clone(), None);
        let (segment, offset) = self.written_end();
        reader.pos = SpoolPos { segment, offset };
        reader.spool = Some(self.clone());
        reader
    }

    /// Where to start reading to see about the newest `bytes` of the
    /// spool: the start of the oldest segment that lies within them (the
    /// newest segment at least), and how many bytes of segments lie from
    /// there to the end. For lookups of recent events.
    pub fn recent_start(&self, bytes: u64) -> Result<(SpoolPos, u64), SpoolError> {
        let dir = &self.inner.config.dir;
        let (active, written) = self.written_end();
        let mut start = active;
        let mut covered = written;
        for seg in segments(dir)?.into_iter().rev().filter(|&s| s < active) {
            let len = fs::metadata(segment_path(dir, seg)).map_or(0, |m| m.len());
            if covered.saturating_add(len) > bytes {
                break;
            }
            covered += len;
            start = seg;
        }
        let pos = SpoolPos {
            segment: start,
            offset: SEGMENT_MAGIC.len() as u64,
        };
        Ok((pos, covered))
    }

    /// Waits until something is appended (or `timeout` passes).
    pub async fn appended(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.appended.notified()).await;
    }

    /// Milliseconds since the oldest event the shipper has not shipped (0
    /// when it is up to date), as the shipper last noted.
    pub fn oldest_unshipped_ms(&self) -> u64 {
        self.inner.oldest_unshipped.load(Ordering::Relaxed)
    }

    /// Makes everything appended so far durable now (graceful shutdown).
    pub fn sync(&self) -> Result<(), SpoolError> {
        self.flush()?;
        let (active, sealed) = self.lock().take_unsynced(true);
        let dir = &self.inner.config.dir;
        for f in sealed {
            f.sync_data().map_err(io(dir))?;
        }
        match active {
            Some(file) => file.and_then(|f| f.sync_data()).map_err(io(dir)),
            None => Ok(()),
        }
    }
}

impl Inner {
    /// Writes the ring's unflushed bytes to the active segment (beginning
    /// a new one first when it is full). True when it began a new one.
    fn flush_into(&self, active: &mut Active) -> Result<bool, SpoolError> {
        let from = self.ring.flushed();
        let to = self.ring.written();
        if from == to {
            return Ok(false);
        }
        let mut rotated = false;
        if active.len >= self.config.segment_bytes.max(MIN_SEGMENT) {
            match self.rotate(active, from) {
                Ok(()) => rotated = true,
                Err(e) => {
                    // Appends go on into the current segment.
                    self.log_flush_error(
                        &e,
                        "cannot begin a new segment; writing on in the current one",
                    );
                }
            }
        }
        let (a, b) = self.ring.unflushed(from, to);
        let path = || segment_path(&self.config.dir, active.segment);
        active
            .file
            .write_all_at(a, active.len)
            .and_then(|()| active.file.write_all_at(b, active.len + a.len() as u64))
            .map_err(|e| io(&path())(e))?;
        let n = to - from;
        active.len += n;
        active.dirty = true;
        self.ring.set_flushed(to);
        let total = self.total.fetch_add(n, Ordering::Relaxed) + n;
        self.spool_bytes.set(total as f64);
        self.appended.notify_waiters();
        Ok(rotated)
    }

    /// Seals the active segment (cut to its records, handed to the next
    /// sync) and begins the next; ring position `base` is its first byte.
    fn rotate(&self, active: &mut Active, base: u64) -> Result<(), SpoolError> {
        let next = active.segment + 1;
        let file = create_segment(
            &self.config.dir,
            next,
            self.config.segment_bytes.max(MIN_SEGMENT),
        )?;
        let old = std::mem::replace(&mut active.file, file);
        // Frees the blocks reserved past its records.
        let path = segment_path(&self.config.dir, active.segment);
        old.set_len(active.len).map_err(io(&path))?;
        active.to_sync.push(old);
        active.segment = next;
        active.len = SEGMENT_MAGIC.len() as u64;
        // Only once the new segment is durable does the ring point at it.
        self.ring.set_dest(next, base);
        Ok(())
    }

    fn log_flush_error(&self, e: &SpoolError, what: &str) {
        metrics::counter!(m::SPOOL_WRITE_ERRORS).increment(1);
        let now = jiff::Timestamp::now().as_second().max(0) as u64;
        if self.last_flush_error.swap(now, Ordering::Relaxed) != now {
            tracing::error!(error = %e, "event spool: {what}");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // A clean close writes out the ring (which then removes itself)
        // and leaves the active segment cut to its records.
        let mut active = std::mem::replace(
            self.active.get_mut().unwrap_or_else(|p| p.into_inner()),
            Active {
                file: match File::open("/dev/null") {
                    Ok(f) => f,
                    Err(_) => return,
                },
                segment: 0,
                len: 0,
                dirty: false,
                to_sync: Vec::new(),
            },
        );
        if let Err(e) = self.flush_into(&mut active) {
            tracing::error!(error = %e, "event spool: could not write out its staging ring at close; the next open will");
        }
        let _ = active.file.set_len(active.len);
        let _ = active.file.sync_data();
        // The lock is released when `lock_file` drops, after `ring` (which
        // removes the ring file): never before, or a process that opened
        // the spool in between could lose its new ring to that removal.
    }
}

#[cfg(test)]
impl Spool {
    /// Stops the flusher thread: appends stay in the ring until a flush.
    pub(crate) fn stop_flusher(&self) {
        self.inner.stop.store(true, Ordering::Release);
        let handle = self
            .inner
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            handle.thread().unpark();
            handle.join().ok();
        }
    }

    /// Ends as a kill -9 would: nothing more is written, the ring file
    /// stays, and the lock goes (as the kernel releases a dead process's).
    pub(crate) fn crash(self) {
        self.stop_flusher();
        drop(
            self.inner
                .lock_file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        std::mem::forget(self);
    }

    /// The ring's file.
    pub(crate) fn ring_path(&self) -> &Path {
        self.inner.ring.path()
    }
}

/// Every `fsync_interval` (or sooner when an append finds the ring a
/// quarter full), writes the ring to the active segment and fdatasyncs
/// what is new, outside the append lock: a decision never waits for a
/// disk. Writing once per interval keeps the thread's wakeups (and the
/// preemptions of busy workers they cost) to the fsyncs' own.
fn flusher(spool: Weak<Inner>) {
    let mut synced = Instant::now();
    loop {
        let Some(inner) = spool.upgrade() else { return };
        if inner.stop.load(Ordering::Acquire) {
            return;
        }
        let spool = Spool { inner, _open: None };
        spool.inner.flusher_woken.store(false, Ordering::Release);
        if let Err(e) = spool.flush() {
            spool.inner.log_flush_error(&e, "cannot write events to the spool's segment; they wait in the staging ring (appends fail once it is full)");
        }
        let interval = spool.inner.config.fsync_interval;
        if synced.elapsed() >= interval {
            synced = Instant::now();
            let (file, sealed) = spool.lock().take_unsynced(false);
            let file = file.and_then(Result::ok);
            for f in sealed.iter().chain(file.iter()) {
                if let Err(e) = f.sync_data() {
                    metrics::counter!(m::SPOOL_FSYNC_ERRORS).increment(1);
                    tracing::error!(dir = %spool.dir().display(), error = %e, "event spool: fsync failed; a power loss may lose more than the fsync interval");
                }
            }
        }
        drop(spool);
        std::thread::park_timeout(interval.saturating_sub(synced.elapsed()));
    }
}

fn quarantine(
    dir: &Path,
    segment: u64,
    good_len: u64,
    bytes: &[u8],
    why: &RecordError,
) -> Result<(), SpoolError> {
    let cut = bytes.get(good_len as usize..).unwrap_or_default();
    let qdir = dir.join("quarantine");
    fs::create_dir_all(&qdir).map_err(io(&qdir))?;
    let path = qdir.join(format!("{segment:020}-{good_len}.bin"));
    fs::write(&path, cut).map_err(io(&path))?;
    metrics::counter!(m::SPOOL_CUT_BYTES).increment(cut.len() as u64);
    let torn = matches!(why, RecordError::Incomplete { .. });
    tracing::warn!(
        segment,
        offset = good_len,
        bytes = cut.len(),
        kept_in = %path.display(),
        "event spool: cut a {} tail ({why}); no decision of it was answered",
        if torn { "torn" } else { "corrupt" }
    );
    Ok(())
}

fn parse_pos(text: &str) -> Option<SpoolPos> {
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some(SpoolPos { segment, offset })
}

/// Reads events from a spool's segments in order, from a position.
pub struct SpoolReader {
    dir: PathBuf,
    pos: SpoolPos,
    pos_file: Option<PathBuf>,
    spool: Option<Spool>,
    shared: Option<Arc<AtomicU64>>,
    /// Skipped corrupt bytes, reported once per segment.
    warned: Option<u64>,
}

impl std::fmt::Debug for SpoolReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolReader")
            .field("dir", &self.dir)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

/// What one read returned: events and the position after the last one.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// The events, in spool order.
    pub events: Vec<AccessEvent>,
    /// Where the next read starts; commit it once the events are handled.
    pub next: Option<SpoolPos>,
}

impl SpoolReader {
    /// A reader of the spool in `dir` that keeps no position (`accessd
    /// events tail`), from its oldest event. It needs no open [`Spool`]
    /// and never writes.
    pub fn open_dir(dir: impl Into<PathBuf>) -> Self {
        Self::new(dir.into(), None)
    }

    fn new(dir: PathBuf, pos_file: Option<PathBuf>) -> Self {
        Self {
            dir,
            pos: SpoolPos {
                segment: 0,
                offset: 0,
            },
            pos_file,
            spool: None,
            shared: None,
            warned: None,
        }
    }

    /// The position the next read starts at.
    pub fn position(&self) -> SpoolPos {
        self.pos
    }

    /// Reads from `pos` next (to read a round again).
    pub fn seek(&mut self, pos: SpoolPos) {
        self.pos = pos;
    }

    /// Reads about `max` events (whole records: a little more) from the
    /// current position. An incomplete
    /// record at the end of the newest segment is a write in progress:
    /// it is left for the next read. A bad record in an older segment
    /// is logged and counted, and the rest of that segment skipped (its
    /// bytes stay on disk).
    pub fn read(&mut self, max: usize) -> Result<ReadBatch, SpoolError> {
        let mut batch = ReadBatch::default();
        if let Some(spool) = &self.spool {
            // Everything appended so far, not only what the flusher wrote.
            spool.flush()?;
        }
        let segs = segments(&self.dir)?;
        let Some(&newest) = segs.last() else {
            return Ok(batch);
        };
        // Start (or continue) at the first segment not older than the
        // position: one deleted under the reader is skipped.
        let Some(&first) = segs.iter().find(|&&s| s >= self.pos.segment) else {
            return Ok(batch);
        };
        if first != self.pos.segment {
            if self.pos.segment != 0 && self.spool.is_some() {
                tracing::warn!(
                    from = self.pos.segment,
                    to = first,
                    "event spool: a segment this reader had not finished was deleted (spool full)"
                );
            }
            self.pos = SpoolPos {
                segment: first,
                offset: SEGMENT_MAGIC.len() as u64,
            };
        }
        loop {
            let seg = self.pos.segment;
            let path = segment_path(&self.dir, seg);
            let mut file = match File::open(&path) {
                Ok(f) => f,
                // Deleted between listing and opening: go on.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !self.advance(&segs) {
                        break;
                    }
                    continue;
                }
                Err(e) => return Err(io(&path)(e)),
            };
            let offset = self.pos.offset.max(SEGMENT_MAGIC.len() as u64);
            file.seek(SeekFrom::Start(offset)).map_err(io(&path))?;
            let mut bytes = Vec::new();
            // Enough for `max` events of any size, bounded.
            let mut cap = (max as u64).saturating_mul(512).clamp(64 << 10, 8 << 20);
            // In-process readers know where the active segment's records
            // end (a flush may be writing past it).
            if let Some(spool) = &self.spool {
                let (active, written) = spool.written_end();
                if active == seg {
                    cap = cap.min(written.saturating_sub(offset));
                }
            }
            file.take(cap).read_to_end(&mut bytes).map_err(io(&path))?;
            let mut at = 0usize;
            let mut stop_segment = false;
            while batch.events.len() < max {
                let rest = bytes.get(at..).unwrap_or_default();
                if rest.is_empty() {
                    break;
                }
                match read_record(rest) {
                    Ok((record, n)) => {
                        batch.events.extend(record);
                        at += n;
                    }
                    Err(RecordError::Incomplete { .. }) if (bytes.len() as u64) == cap => {
                        // Cut by our read cap, not by the file: next read.
                        break;
                    }
                    Err(e) => {
                        if seg == newest
                            && matches!(
                                e,
                                RecordError::Incomplete { .. } | RecordError::BadLength(0)
                            )
                        {
                            // Being written, or the preallocated zeros
                            // after the last record (segments of older
                            // versions were mapped).
                            break;
                        }
                        if self.warned != Some(seg) {
                            self.warned = Some(seg);
                            metrics::counter!(m::SPOOL_CORRUPT_RECORDS).increment(1);
                            tracing::error!(
                                segment = seg,
                                offset = offset + at as u64,
                                error = %e,
                                "event spool: a bad record in a sealed segment; skipping the rest of the segment (its bytes stay in {})",
                                path.display()
                            );
                        }
                        stop_segment = seg != newest;
                        break;
                    }
                }
            }
            self.pos.offset = offset + at as u64;
            let end_of_segment = stop_segment || (at == bytes.len() && (bytes.len() as u64) < cap);
            if batch.events.len() >= max || seg == newest || !end_of_segment {
                break;
            }
            if !self.advance(&segs) {
                break;
            }
        }
        batch.next = Some(self.pos);
        Ok(batch)
    }

    /// Moves to the next segment after the current one; false at the end.
    fn advance(&mut self, segs: &[u64]) -> bool {
        match segs.iter().find(|&&s| s > self.pos.segment) {
            Some(&next) => {
                self.pos = SpoolPos {
                    segment: next,
                    offset: SEGMENT_MAGIC.len() as u64,
                };
                true
            }
            None => false,
        }
    }

    /// Records `pos` as handled: durably in the position file (if this
    /// reader has one), and for the spool's deletion of old segments.
    pub fn commit(&mut self, pos: SpoolPos) -> Result<(), SpoolError> {
        if let Some(shared) = &self.shared {
            shared.store(pos.segment, Ordering::Release);
        }
        if let Some(file) = &self.pos_file {
            write_atomic(file, format!("{} {}\n", pos.segment, pos.offset).as_bytes()).map_err(
                |e| SpoolError::Io {
                    path: file.clone(),
                    source: std::io::Error::other(e.to_string()),
                },
            )?;
        }
        Ok(())
    }

    /// Notes the age of the oldest event not yet handled, for the spool's
    /// status and metrics (the shipper calls it).
    pub fn note_backlog(&self, oldest_unhandled: Option<&AccessEvent>, now_ms: i64) {
        let age = oldest_unhandled.map_or(0, |e| (now_ms - e.time.as_millisecond()).max(0) as u64);
        if let Some(spool) = &self.spool {
            spool.inner.oldest_unshipped.store(age, Ordering::Relaxed);
        }
        metrics::gauge!(m::EVENTS_OLDEST_UNSHIPPED_SECONDS).set(age as f64 / 1000.0);
    }

    /// Waits for an append to the spool (if this reader has one) or
    /// `timeout`.
    pub async fn wait(&self, timeout: Duration) {
        match &self.spool {
            Some(spool) => spool.appended(timeout).await,
            None => tokio::time::sleep(timeout).await,
        }
    }
}

/// Counts the records of `bytes` (a segment read whole) for tests and
/// `accessd events` tools: whole records, and whether the tail is bad.
pub fn count_records(bytes: &[u8]) -> (u64, bool) {
    let s = scan(bytes);
    (s.events, s.bad.is_some())
}

mod ring;

#[cfg(test)]
mod tests;
