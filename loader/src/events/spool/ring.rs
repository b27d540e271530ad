//! The spool's staging ring: where an append lands, in memory that
//! outlives the process.
//!
//! ```text
//!  RING_DIR/accessd-events-<id>.ring   (tmpfs: /dev/shm, /run/accessd)
//!  ┌ header (4 KiB) ──────────────────────────────────────────────┐
//!  │ magic · size · spool id · written · flushed · dest slot · 2 × │
//!  │ (segment, base)                                               │
//!  ├ data (size bytes, circular) ─────────────────────────────────┤
//!  │ … flushed ▸ records not yet in a segment ◂ written …          │
//!  └───────────────────────────────────────────────────────────────┘
//! ```
//!
//! Why: stores into a mapped segment file cost a page fault for every new
//! page and, after every fdatasync, a write-protect fault and a TLB
//! shootdown (an inter-processor interrupt, dear in a VM) on the decision
//! path; on a busy server that was most of what recording cost. A ring in
//! a tmpfs file is touched once at open and never written back, so an
//! append is a copy and two atomic stores. The pages belong to the file,
//! not the process: a kill -9 leaves them, and the next open writes what
//! was not yet flushed into the segment it was meant for. A power loss
//! takes the ring with it; what it held was at most an fsync interval old,
//! which is what the spool promises a power loss may take.
//!
//! The positions are logical byte counts since the ring was made; data at
//! position `p` lies at `p % size`. One appender (holding the spool's
//! append lock) writes at `written` and publishes it; one flusher (holding
//! the segment lock) writes `flushed..written` to the segment and then
//! publishes `flushed`. Each is one aligned 8-byte store, so a kill -9
//! leaves either the old or the new value. Where the data goes is
//! `(segment, base)`: position `p` lies at byte `MAGIC + p - base` of
//! `segment`. A rotation writes the new pair into the spare slot, then
//! flips the slot index (one store).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

/// The header's size: the data starts on the next page.
const HEADER: usize = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"ACSDRNG1");
/// The smallest ring (a record may take at most half of it).
pub(super) const MIN_RING: u64 = 64 << 10;

/// The header's words, by index.
#[derive(Clone, Copy)]
enum Word {
    Magic = 0,
    Size = 1,
    Spool = 2,
    Written = 3,
    Flushed = 4,
    Slot = 5,
    /// Slot 0: segment, then base; slot 1 follows.
    Dest = 6,
}

/// The ring's name for the spool in `dir`: one ring per spool directory.
pub(super) fn ring_path(ring_dir: &Path, spool_id: u64) -> PathBuf {
    ring_dir.join(format!("accessd-events-{spool_id:016x}.ring"))
}

/// An open ring, shared by the appender and the flusher.
pub(super) struct Ring {
    map: MmapRaw,
    size: u64,
    path: PathBuf,
}

/// The right to append: exactly one exists per ring, kept under the
/// spool's append lock.
pub(super) struct Appender(());

/// What a ring left by a crash held for the spool.
#[derive(Debug)]
pub(super) struct Leftover {
    /// The segment the bytes belong to.
    pub(super) segment: u64,
    /// Where in it they start.
    pub(super) offset: u64,
    /// Whole records, appended but not yet written to the segment.
    pub(super) bytes: Vec<u8>,
}

/// Why a ring file could not be used (it is then set aside, not read).
#[derive(Debug, thiserror::Error)]
pub(super) enum BadRing {
    #[error("not a ring of this format (magic)")]
    Magic,
    #[error("it belongs to another spool directory")]
    OtherSpool,
    #[error("its positions do not add up (written {written}, flushed {flushed}, size {size})")]
    Positions {
        written: u64,
        flushed: u64,
        size: u64,
    },
    #[error("{0} bytes, shorter than its header says")]
    Short(usize),
}

fn word_of(bytes: &[u8], w: usize) -> u64 {
    let at = w * 8;
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Reads a ring file left behind: the bytes it had not yet flushed and
/// where they belong. `Ok(None)` when it had flushed everything.
pub(super) fn leftover(bytes: &[u8], spool_id: u64) -> Result<Option<Leftover>, BadRing> {
    if word_of(bytes, Word::Magic as usize) != MAGIC {
        return Err(BadRing::Magic);
    }
    if word_of(bytes, Word::Spool as usize) != spool_id {
        return Err(BadRing::OtherSpool);
    }
    let size = word_of(bytes, Word::Size as usize);
    let written = word_of(bytes, Word::Written as usize);
    let flushed = word_of(bytes, Word::Flushed as usize);
    let slot = word_of(bytes, Word::Slot as usize) % 2;
    let segment = word_of(bytes, Word::Dest as usize + 2 * slot as usize);
    let base = word_of(bytes, Word::Dest as usize + 2 * slot as usize + 1);
    if size < MIN_RING || flushed > written || written - flushed > size || base > flushed {
        return Err(BadRing::Positions {
            written,
            flushed,
            size,
        });
    }
    if bytes.len() < HEADER + size as usize {
        return Err(BadRing::Short(bytes.len()));
    }
    if written == flushed {
        return Ok(None);
    }
    let data = bytes
        .get(HEADER..HEADER + size as usize)
        .unwrap_or_default();
    let mut out = Vec::with_capacity((written - flushed) as usize);
    let (a, b) = split(data, size, flushed, written);
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    Ok(Some(Leftover {
        segment,
        offset: super::SEGMENT_MAGIC.len() as u64 + flushed - base,
        bytes: out,
    }))
}

/// The bytes of positions `from..to` in `data` (a ring of `size`), as the
/// part up to the ring's end and the part after it wraps.
fn split(data: &[u8], size: u64, from: u64, to: u64) -> (&[u8], &[u8]) {
    let start = (from % size) as usize;
    let len = (to - from) as usize;
    let first = len.min(size as usize - start);
    let a = data.get(start..start + first).unwrap_or_default();
    let b = data.get(..len - first).unwrap_or_default();
    (a, b)
}

impl Ring {
    /// Makes a new, empty ring of `size` data bytes at `path` (replacing
    /// whatever is there), every page touched, its data bound for
    /// `segment` from its first byte.
    pub(super) fn create(
        path: &Path,
        size: u64,
        spool_id: u64,
        segment: u64,
    ) -> std::io::Result<(Self, Appender)> {
        let size = size.max(MIN_RING).next_multiple_of(HEADER as u64);
        let tmp = path.with_extension("ring.new");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&tmp)?;
        file.set_len(HEADER as u64 + size)?;
        let map = MmapOptions::new().map_raw(&file)?;
        let ring = Self {
            map,
            size,
            path: path.to_owned(),
        };
        // Touch every page now, so no append ever takes a fault for it
        // (on tmpfs this allocates the pages; nothing writes them back).
        for page in (0..HEADER + size as usize).step_by(HEADER) {
            // SAFETY: in bounds of the mapping, which nothing else uses
            // yet; the file is at least this long (set_len above).
            #[expect(unsafe_code, reason = "touching the pages of a fresh mapping")]
            unsafe {
                ring.map.as_mut_ptr().add(page).write_volatile(0);
            };
        }
        ring.word(Word::Size).store(size, Ordering::Relaxed);
        ring.word(Word::Spool).store(spool_id, Ordering::Relaxed);
        ring.word(Word::Dest).store(segment, Ordering::Relaxed);
        ring.word(Word::Magic).store(MAGIC, Ordering::Release);
        // Only a complete header is ever found under the ring's name.
        fs::rename(&tmp, path)?;
        drop(file);
        Ok((ring, Appender(())))
    }

    fn word(&self, w: Word) -> &AtomicU64 {
        self.word_at(w as usize)
    }

    fn word_at(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i * 8 + 8 <= HEADER);
        // SAFETY: the header lies in the mapping (which is page-aligned,
        // so every word is 8-aligned) and lives as long as `self`; these
        // words are only ever accessed atomically.
        #[expect(unsafe_code, reason = "atomic words of a shared mapping")]
        unsafe {
            &*self.map.as_ptr().add(i * 8).cast::<AtomicU64>()
        }
    }

    /// The ring's file.
    #[cfg(test)]
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The end of what appenders published.
    pub(super) fn written(&self) -> u64 {
        self.word(Word::Written).load(Ordering::Acquire)
    }

    /// The end of what the flusher wrote to a segment.
    pub(super) fn flushed(&self) -> u64 {
        self.word(Word::Flushed).load(Ordering::Acquire)
    }

    /// Bytes appended and not yet flushed.
    pub(super) fn pending(&self) -> u64 {
        self.written() - self.flushed()
    }

    /// The largest append the ring takes.
    pub(super) fn max_append(&self) -> u64 {
        self.size / 2
    }

    /// Copies `bytes` in after what was written, if there is room, and
    /// publishes it. False when the flusher is too far behind.
    pub(super) fn push(&self, _: &mut Appender, bytes: &[u8]) -> bool {
        let written = self.word(Word::Written).load(Ordering::Relaxed);
        let n = bytes.len() as u64;
        if written + n - self.flushed() > self.size {
            return false;
        }
        let start = (written % self.size) as usize;
        let first = bytes.len().min(self.size as usize - start);
        let (a, b) = bytes.split_at(first);
        // SAFETY: `start..start + first` and `0..b.len()` lie in the data
        // (start < size, first <= size - start, b.len() < size); no one
        // reads them until `written` is published below, and they are
        // not the unflushed part the flusher may be reading, because
        // `written + n - flushed <= size`. There is one `Appender`.
        #[expect(unsafe_code, reason = "copying into the ring's free part")]
        unsafe {
            let data = self.map.as_mut_ptr().add(HEADER);
            std::ptr::copy_nonoverlapping(a.as_ptr(), data.add(start), a.len());
            std::ptr::copy_nonoverlapping(b.as_ptr(), data, b.len());
        }
        self.word(Word::Written)
            .store(written + n, Ordering::Release);
        true
    }

    /// The bytes of positions `from..to` (the flusher's: `flushed` to a
    /// `written` it loaded), as up to two slices.
    pub(super) fn unflushed(&self, from: u64, to: u64) -> (&[u8], &[u8]) {
        debug_assert!(from <= to && to - from <= self.size);
        // SAFETY: the data part of the mapping, alive as long as `self`.
        // Of it, `from..to` was published by the appender before `to` was
        // loaded, and the appender does not write there again until
        // `flushed` passes it, which only the caller does, after it is
        // done with the slices (they borrow `self`; the caller holds the
        // segment lock, so there is one flusher).
        #[expect(unsafe_code, reason = "reading the ring's published part")]
        let data = unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(HEADER), self.size as usize)
        };
        split(data, self.size, from, to)
    }

    /// Marks everything before `to` as written to its segment.
    pub(super) fn set_flushed(&self, to: u64) {
        self.word(Word::Flushed).store(to, Ordering::Release);
    }

    /// From position `base` on, the data goes to the start of `segment`.
    pub(super) fn set_dest(&self, segment: u64, base: u64) {
        let next = self.word(Word::Slot).load(Ordering::Relaxed) + 1;
        let at = Word::Dest as usize + 2 * (next % 2) as usize;
        self.word_at(at).store(segment, Ordering::Relaxed);
        self.word_at(at + 1).store(base, Ordering::Relaxed);
        self.word(Word::Slot).store(next, Ordering::Release);
    }
}

/// Opens the ring file at `path` if there is one, for what it left.
pub(super) fn read_left(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Where rings go when not told: /dev/shm (tmpfs on Linux, outlives the
/// process) if it exists, else the spool's own directory (correct, but
/// appends then pay for the ring's writeback).
pub(super) fn default_dir(spool_dir: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        spool_dir.to_owned()
    }
}

/// Whether `dir` is on tmpfs (for the log line at open).
#[allow(
    clippy::useless_conversion,
    reason = "f_type and TMPFS_MAGIC are i64 on x86-64 Linux, other types on other targets: both are widened rather than assumed"
)]
pub(super) fn on_tmpfs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a valid C string and a buffer of the right type.
    #[expect(unsafe_code, reason = "statfs has no safe wrapper in std")]
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statfs returned 0, so it filled the buffer.
    #[expect(unsafe_code, reason = "reading what statfs filled")]
    let st = unsafe { st.assume_init() };
    i64::from(st.f_type) == i64::from(libc::TMPFS_MAGIC)
}

impl Drop for Ring {
    fn drop(&mut self) {
        // A clean close has flushed everything: the ring is not needed.
        if self.pending() == 0 {
            let _ = fs::remove_file(&self.path);
        }
    }
}
