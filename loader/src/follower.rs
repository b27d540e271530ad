//! Bootstrap and stream following: keeps a [`SharedSnapshot`] current.
//!
//! ```text
//!  bootstrap:  note stream position ─▶ parallel scan ─▶ build ─▶ catch up
//!              (LATEST iterator per       (segments)              from the
//!               open shard)                                       noted position
//!                                                         │ publish v1
//!  follow:     ┌─ poll every readable shard (parents drained first) ─┐
//!              │  apply the round's records to the builder           │
//!              └─ publish a new version if anything changed ◀────────┘
//!              trimmed / stream gone / ARN changed ─▶ bootstrap again,
//!              while the current snapshot keeps serving
//! ```
//!
//! INVARIANT(no-intermediate-publish): a bootstrap publishes nothing until
//! it has read every shard to its end. Records between the noted position
//! and the scan may be older than the scanned items; applying them rolls an
//! item back for a moment, and such a moment must never be served (it could
//! un-revoke a card). Once caught up, every record applied is newer than
//! the state it replaces, so each published version is a state the table
//! really had, item by item.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use accessd_engine::{Change, Presence, SharedSnapshot, Snapshot, SnapshotBuilder};
use jiff::Timestamp;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::backend::{Backend, EventKind, Position, ScanPage, SourceError, StreamRecord};
use crate::checkpoint::{self, CheckpointData, CheckpointSource};
use crate::item::{Decoded, decode_stream, record_of};
use crate::metrics as m;

/// How the loader reads the table and stream.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Parallel scan segments at bootstrap.
    pub scan_segments: u32,
    /// Wait between polls when every shard was idle. DynamoDB allows about
    /// five GetRecords calls a second per shard, shared by at most two
    /// readers, so do not go much below 250 ms against AWS.
    pub poll_interval: Duration,
    /// How often to look for new shards and check the stream is still the
    /// table's (also done at once whenever a shard closes).
    pub rediscover_interval: Duration,
    /// First backoff delay after a failed call.
    pub backoff_base: Duration,
    /// Longest backoff delay.
    pub backoff_cap: Duration,
    /// Attempts of the first bootstrap before [`Source::start`] gives up on
    /// transient errors ([`Source::spawn`] retries forever).
    pub startup_attempts: u32,
    /// Consecutive failed stream reads after which the follower asks the
    /// table again for its stream: a re-created table has a new stream, and
    /// reading the old one would fail forever.
    pub redescribe_after_failures: u32,
    /// The wall clock: the freshness of snapshots, stream lag and the age
    /// of checkpoints are read from it. Tests set their own.
    pub clock: Clock,
}

/// A source of wall-clock time, injectable for tests.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(Timestamp::now))
    }
    /// A clock that reads `f`.
    pub fn new(f: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
    /// The current instant.
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            scan_segments: 4,
            poll_interval: Duration::from_millis(250),
            rediscover_interval: Duration::from_secs(30),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
            startup_attempts: 5,
            redescribe_after_failures: 3,
            clock: Clock::system(),
        }
    }
}

/// Why the loader could not produce a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The table has no stream: enable one with view type
    /// `NEW_AND_OLD_IMAGES` (see docs/dynamodb-schema.md).
    #[error("the table has no stream enabled (enable one with NEW_AND_OLD_IMAGES)")]
    NoStream,
    /// A call to DynamoDB failed.
    #[error("dynamodb: {0}")]
    Source(#[from] SourceError),
    /// The stream changed under the bootstrap (trimmed, replaced, disabled)
    /// too many times in a row.
    #[error("stream changed during bootstrap: {0}")]
    Unstable(String),
    /// The table's stream does not carry new images (`KEYS_ONLY` or
    /// `OLD_IMAGE`): every change would look like a removal.
    #[error(
        "the table's stream has view type {0}; accessd needs NEW_AND_OLD_IMAGES (or NEW_IMAGE): \
         disable the stream and enable it again with NEW_AND_OLD_IMAGES"
    )]
    ViewType(String),
    /// Shutdown was asked for before the first snapshot was ready.
    #[error("shut down before the first snapshot was ready")]
    ShutDown,
}

/// Counts of what the loader did, readable without a metrics recorder.
#[derive(Debug, Default)]
pub struct LoaderStats {
    applied: AtomicU64,
    rejected: AtomicU64,
    bootstraps: AtomicU64,
    scanned: AtomicU64,
    last_sequence_seen: std::sync::Mutex<Option<String>>,
    /// Every shard's position after the last stream read, and the lag of
    /// that read (for status pages; the metrics carry the lag too).
    stream: std::sync::Mutex<StreamView>,
}

/// Where the loader is in the stream, as of its last read.
#[derive(Debug, Default, Clone)]
struct StreamView {
    shards: Vec<ShardPosition>,
    lag_seconds: Option<f64>,
    /// Per shard read without error in the last round: seconds between
    /// the read and the creation of its newest record (0 when it had
    /// none: caught up).
    shard_lag_seconds: std::collections::BTreeMap<String, f64>,
}

impl LoaderStats {
    /// Stream records applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }
    /// Items and records refused as malformed (scan and stream).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
    /// Items read by the last bootstrap's scan.
    pub fn scanned(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed)
    }
    /// Bootstraps started (the first one included).
    pub fn bootstraps(&self) -> u64 {
        self.bootstraps.load(Ordering::Relaxed)
    }
    /// Every shard's position (with its lineage) after the last stream
    /// read; empty before the first.
    pub fn shard_positions(&self) -> Vec<ShardPosition> {
        self.stream
            .lock()
            .map(|v| v.shards.clone())
            .unwrap_or_default()
    }
    /// Seconds between the last read and the creation of the last record
    /// it applied (`Some(0.0)` when it applied none); `None` before the
    /// first read.
    pub fn stream_lag_seconds(&self) -> Option<f64> {
        self.stream.lock().ok().and_then(|v| v.lag_seconds)
    }
    /// The same, shard by shard, for the shards the last round read
    /// without error (a shard whose read failed is absent).
    pub fn shard_lag_seconds(&self) -> std::collections::BTreeMap<String, f64> {
        self.stream
            .lock()
            .map(|v| v.shard_lag_seconds.clone())
            .unwrap_or_default()
    }
    fn reject(&self, source: &'static str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::ITEMS_REJECTED, "source" => source).increment(1);
    }
}

/// Capped exponential backoff with jitter: each delay is drawn between
/// half and all of `min(cap, base * 2^attempt)`.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[derive(Debug, Clone)]
struct ShardState {
    parent: Option<String>,
    iterator: Option<String>,
    last_sequence: Option<String>,
    /// Where to start when there is neither an iterator nor a last
    /// sequence number.
    start: Position,
    /// Closed and read to its end.
    finished: bool,
}

/// One shard's position, as checkpoints store it and `accessd checkpoint
/// inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShardPosition {
    /// The shard id.
    pub id: String,
    /// Its parent shard, drained before it.
    pub parent: Option<String>,
    /// The last sequence number applied; `None`: nothing read from it yet.
    pub last_sequence: Option<String>,
    /// Closed and read to its end.
    pub finished: bool,
}

/// Where the loader is in the stream: per shard, the last sequence number
/// applied. Part of a [`Resume`].
#[derive(Debug, Clone)]
pub struct StreamCursor {
    arn: String,
    shards: BTreeMap<String, ShardState>,
}

impl StreamCursor {
    /// The stream's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Per shard, the last sequence number applied (`None`: nothing read
    /// from it yet).
    pub fn positions(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.shards
            .iter()
            .map(|(id, s)| (id.as_str(), s.last_sequence.as_deref()))
    }

    /// Every shard's position, with its lineage.
    pub fn shard_positions(&self) -> Vec<ShardPosition> {
        self.shards
            .iter()
            .map(|(id, s)| ShardPosition {
                id: id.clone(),
                parent: s.parent.clone(),
                last_sequence: s.last_sequence.clone(),
                finished: s.finished,
            })
            .collect()
    }

    /// A cursor read back from a checkpoint. Iterators do not survive a
    /// restart: a shard resumes after its last sequence number, and a shard
    /// nothing was read from yet is replayed from its oldest record (the
    /// catch-up publishes nothing until it reached the end, so a replay of
    /// older images is never served).
    pub fn restored(arn: String, positions: Vec<ShardPosition>) -> Self {
        let shards = positions
            .into_iter()
            .map(|p| {
                (
                    p.id,
                    ShardState {
                        parent: p.parent,
                        iterator: None,
                        last_sequence: p.last_sequence,
                        start: Position::TrimHorizon,
                        finished: p.finished,
                    },
                )
            })
            .collect();
        Self { arn, shards }
    }

    fn readable(&self) -> Vec<String> {
        self.shards
            .iter()
            .filter(|(_, s)| !s.finished)
            .filter(|(_, s)| {
                // A parent no longer listed has aged out: nothing to wait for.
                s.parent
                    .as_ref()
                    .and_then(|p| self.shards.get(p))
                    .is_none_or(|p| p.finished)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// What a stopped loader hands back so a new one can carry on from the same
/// place without a scan: the builder and the stream position.
pub struct Resume {
    builder: SnapshotBuilder,
    cursor: StreamCursor,
}

impl std::fmt::Debug for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resume")
            .field("version", &self.builder.version())
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl Resume {
    /// A resume point made of a builder (whose last published version is
    /// the one being served) and a stream position, as read from a
    /// checkpoint.
    pub fn new(builder: SnapshotBuilder, cursor: StreamCursor) -> Self {
        Self { builder, cursor }
    }
    /// The last published version.
    pub fn version(&self) -> u64 {
        self.builder.version()
    }
    /// The stream position.
    pub fn cursor(&self) -> &StreamCursor {
        &self.cursor
    }
    /// The builder.
    pub fn builder(&self) -> &SnapshotBuilder {
        &self.builder
    }
}

/// What the source is doing, for logs, metrics and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    /// No data yet: the first bootstrap is running or retrying.
    Starting,
    /// Serving a checkpoint (or the last snapshot) while reading the
    /// stream up to its end before publishing.
    CatchingUp,
    /// Following the stream; the last read succeeded.
    Live,
    /// Reads are failing; the current snapshot keeps serving and ages.
    Retrying,
}

impl SourceStatus {
    const ALL: [Self; 4] = [Self::Starting, Self::CatchingUp, Self::Live, Self::Retrying];

    fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::CatchingUp => "catching_up",
            Self::Live => "live",
            Self::Retrying => "retrying",
        }
    }
}

/// How old a resumed stream position may be: DynamoDB keeps stream
/// records 24 hours; an hour of margin.
pub const RESUME_MAX_AGE: jiff::SignedDuration = jiff::SignedDuration::from_hours(23);

/// Shard reads a round makes at once. DynamoDB allows about five
/// GetRecords a second per shard, so this bounds the requests in flight,
/// not the rate per shard.
const SHARD_READS: usize = 16;

/// Why a poll round stopped.
enum RoundError {
    /// Retry after a backoff.
    Retry(SourceError),
    /// The position is lost: bootstrap again.
    Rebootstrap(String),
}

#[derive(Default, Debug)]
struct Round {
    records: usize,
    closed_shard: bool,
    /// A shard could not be read this round (its iterator expired): the
    /// round does not prove the snapshot is current.
    incomplete: bool,
}

/// Where and how often the loader writes checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The checkpoint file.
    pub path: PathBuf,
    /// At most one write per this interval (and one at shutdown).
    pub interval: Duration,
    /// What the checkpoint is of (the table).
    pub source: CheckpointSource,
    /// Anti-passback presence, stored with the data.
    pub presence: Arc<Presence>,
}

/// The checkpoint writer's memory: what it wrote last and when, and the
/// write in progress.
struct Checkpointer {
    config: CheckpointConfig,
    last_write: Option<Instant>,
    /// How long the last write took. Writes run on a thread of their own
    /// (the follower goes on applying changes meanwhile), but they cost a
    /// core while they run: writes are spaced at least ten times that far
    /// apart, so at most a tenth of a core goes to checkpoints, whatever
    /// the site's size.
    last_duration: Duration,
    written_version: u64,
    written_presence: u64,
    /// A write running in the background.
    in_flight: Option<std::thread::JoinHandle<Written>>,
}

/// What a write wrote, and how it went.
struct Written {
    version: u64,
    presence: u64,
    started: Instant,
    result: Result<usize, checkpoint::CheckpointError>,
}

impl Checkpointer {
    fn new(config: CheckpointConfig) -> Self {
        Self {
            config,
            last_write: None,
            last_duration: Duration::ZERO,
            written_version: 0,
            written_presence: u64::MAX,
            in_flight: None,
        }
    }

    /// Writes a checkpoint if the data or presence changed since the last
    /// one and the interval has passed, in the background: the builder is
    /// cloned (it shares every entry: milliseconds) and written from a
    /// thread while the follower goes on. With `force` (shutdown, a new
    /// bootstrap), waits for a write in progress, then writes now,
    /// whenever anything changed. Errors are logged and counted; serving
    /// goes on.
    fn maybe_write(
        &mut self,
        builder: &SnapshotBuilder,
        cursor: &StreamCursor,
        shared: &SharedSnapshot,
        clock: &Clock,
        force: bool,
    ) {
        match self.in_flight.take() {
            Some(write) if force || write.is_finished() => {
                let written = blocking(|| write.join());
                match written {
                    Ok(written) => self.finished(written),
                    Err(_) => tracing::error!("checkpoint writer panicked"),
                }
            }
            Some(write) => {
                // One write at a time; the next one starts after it.
                self.in_flight = Some(write);
                return;
            }
            None => {}
        }
        let presence = self.config.presence.generation();
        let changed =
            builder.version() != self.written_version || presence != self.written_presence;
        let gap = self.config.interval.max(self.last_duration * 10);
        let due = self.last_write.is_none_or(|at| at.elapsed() >= gap);
        if !changed || !(due || force) {
            return;
        }
        self.last_write = Some(Instant::now());
        let started = Instant::now();
        let version = builder.version();
        let frozen = blocking(|| builder.clone());
        let (path, source) = (self.config.path.clone(), self.config.source.clone());
        let (cursor, entries) = (cursor.clone(), self.config.presence.entries());
        let (fresh_as_of, now) = (shared.fresh_as_of(&shared.load()), clock.now());
        let write = move || Written {
            version,
            presence,
            started,
            result: checkpoint::write(
                &path,
                &CheckpointData {
                    source,
                    builder: &frozen,
                    fresh_as_of,
                    cursor: Some(&cursor),
                    presence: entries,
                    now,
                },
            ),
        };
        if force {
            let written = blocking(write);
            self.finished(written);
            return;
        }
        match std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(write)
        {
            Ok(handle) => self.in_flight = Some(handle),
            Err(error) => tracing::error!(%error, "cannot start the checkpoint writer"),
        }
    }

    /// Records a finished write.
    fn finished(&mut self, written: Written) {
        let elapsed = written.started.elapsed();
        self.last_duration = elapsed;
        match written.result {
            Ok(bytes) => {
                self.written_version = written.version;
                self.written_presence = written.presence;
                metrics::counter!(m::CHECKPOINTS_WRITTEN, "result" => "ok").increment(1);
                metrics::gauge!(m::CHECKPOINT_BYTES).set(bytes as f64);
                metrics::histogram!(m::CHECKPOINT_SECONDS).record(elapsed.as_secs_f64());
                tracing::debug!(
                    version = written.version,
                    bytes,
                    ms = elapsed.as_millis() as u64,
                    "checkpoint written"
                );
            }
            Err(error) => {
                metrics::counter!(m::CHECKPOINTS_WRITTEN, "result" => "error").increment(1);
                tracing::error!(%error, path = %self.config.path.display(), "checkpoint not written");
            }
        }
    }
}

/// Runs `f`, telling a multi-threaded runtime to move its other tasks away
/// from this worker meanwhile.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Reads a table and its stream into snapshots.
pub struct Loader<B> {
    backend: Arc<B>,
    config: LoaderConfig,
    stats: Arc<LoaderStats>,
    status: Arc<std::sync::Mutex<SourceStatus>>,
    checkpointer: Option<Checkpointer>,
}

impl<B: Backend> Loader<B> {
    /// A loader over `backend`.
    pub fn new(backend: Arc<B>, config: LoaderConfig) -> Self {
        Self {
            backend,
            config,
            stats: Arc::default(),
            status: Arc::new(std::sync::Mutex::new(SourceStatus::Starting)),
            checkpointer: None,
        }
    }

    /// Writes checkpoints as configured while following.
    pub fn with_checkpoints(mut self, config: CheckpointConfig) -> Self {
        self.checkpointer = Some(Checkpointer::new(config));
        self
    }

    fn set_status(&self, status: SourceStatus) {
        if let Ok(mut s) = self.status.lock() {
            if *s == status {
                return;
            }
            *s = status;
        }
        for state in SourceStatus::ALL {
            metrics::gauge!(m::SOURCE_STATE, "state" => state.name()).set(if state == status {
                1.0
            } else {
                0.0
            });
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.config.backoff_base, self.config.backoff_cap)
    }

    /// Lists every shard (all pages) and adds the new ones to the cursor.
    /// With `note`, this is the bootstrap's "note the position": open
    /// shards get a LATEST iterator now, closed ones are in the scan.
    async fn discover(&self, cursor: &mut StreamCursor, note: bool) -> Result<(), RoundError> {
        let mut listed = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .backend
                .describe_stream(&cursor.arn, start.take())
                .await
                .map_err(classify)?;
            if !page.enabled {
                return Err(RoundError::Rebootstrap("stream disabled".into()));
            }
            listed.extend(page.shards);
            match page.last_shard {
                Some(last) => start = Some(last),
                None => break,
            }
        }
        for shard in &listed {
            if cursor.shards.contains_key(&shard.id) {
                continue;
            }
            let mut state = ShardState {
                parent: shard.parent.clone(),
                iterator: None,
                last_sequence: None,
                start: Position::TrimHorizon,
                finished: false,
            };
            if note {
                if shard.closed {
                    state.finished = true;
                } else {
                    state.iterator = Some(
                        self.backend
                            .shard_iterator(&cursor.arn, &shard.id, &Position::Latest)
                            .await
                            .map_err(classify)?,
                    );
                    state.start = Position::Latest;
                }
            }
            tracing::debug!(shard = %shard.id, parent = ?shard.parent, "new shard");
            cursor.shards.insert(shard.id.clone(), state);
        }
        // Shards no longer listed were trimmed away. One we had not read to
        // its end held records we will never see.
        let mut lost = None;
        cursor.shards.retain(|id, s| {
            let kept = listed.iter().any(|l| l.id == *id);
            if !kept && !s.finished {
                lost = Some(id.clone());
            }
            kept
        });
        if let Some(id) = lost {
            return Err(RoundError::Rebootstrap(format!(
                "shard `{id}` aged out before it was read"
            )));
        }
        Ok(())
    }

    /// Reads every readable shard once and applies what it finds.
    /// `catching_up` is true during a bootstrap or a resume, before
    /// anything is published.
    ///
    /// Shards are read concurrently (at most [`SHARD_READS`] at once), so a
    /// round takes as long as its slowest read, not the sum of them; a
    /// shard whose read fails keeps its iterator for the next round while
    /// what the others read is applied (the round is then incomplete and
    /// confirms nothing). Only when every read failed does the round fail.
    async fn round(
        &self,
        cursor: &mut StreamCursor,
        builder: &mut SnapshotBuilder,
        catching_up: bool,
    ) -> Result<Round, RoundError> {
        let mut round = Round::default();
        let mut lag = None;
        let readable = cursor.readable();
        let mut reads = JoinSet::new();
        let mut results = Vec::with_capacity(readable.len());
        for id in readable {
            let Some(shard) = cursor.shards.get_mut(&id) else {
                continue;
            };
            let held = shard.iterator.take();
            let position = shard
                .last_sequence
                .clone()
                .map_or_else(|| shard.start.clone(), Position::After);
            let backend = Arc::clone(&self.backend);
            let arn = cursor.arn.clone();
            if reads.len() >= SHARD_READS
                && let Some(done) = reads.join_next().await
            {
                results.push(done);
            }
            reads.spawn(async move {
                let iterator = match held {
                    Some(it) => it,
                    None => match backend.shard_iterator(&arn, &id, &position).await {
                        Ok(it) => it,
                        Err(e) => return (id, None, Err(e)),
                    },
                };
                let page = backend.get_records(&iterator).await;
                (id, Some(iterator), page)
            });
        }
        while let Some(done) = reads.join_next().await {
            results.push(done);
        }
        // Applied in shard order, so a round's outcome does not depend on
        // which read finished first.
        let mut results: Vec<_> = results
            .into_iter()
            .filter_map(|r| match r {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(error = %e, "shard read task failed");
                    None
                }
            })
            .collect();
        results.sort_by(|a, b| a.0.cmp(&b.0));
        let mut failure: Option<RoundError> = None;
        let mut succeeded = 0usize;
        let mut shard_lags = Vec::new();
        for (id, iterator, page) in results {
            let Some(shard) = cursor.shards.get_mut(&id) else {
                continue;
            };
            let page = match page {
                Ok(page) => page,
                Err(SourceError::ExpiredIterator) => {
                    round.incomplete = true;
                    if shard.last_sequence.is_some() {
                        // Renewed from the last sequence number next round.
                        tracing::info!(shard = %id, "shard iterator expired; renewing");
                    } else if catching_up {
                        // Nothing read yet and nothing published: replaying
                        // from the oldest record converges before publishing
                        // (INVARIANT(no-intermediate-publish)).
                        tracing::info!(shard = %id, "noted iterator expired; replaying shard");
                        shard.start = Position::TrimHorizon;
                    } else {
                        return Err(RoundError::Rebootstrap(format!(
                            "iterator of shard `{id}` expired before any record was read"
                        )));
                    }
                    continue;
                }
                Err(e) => {
                    // Keep the iterator: a retry reads the same records.
                    shard.iterator = iterator;
                    round.incomplete = true;
                    match classify(e) {
                        lost @ RoundError::Rebootstrap(_) => return Err(lost),
                        retry => failure = Some(retry),
                    }
                    continue;
                }
            };
            succeeded += 1;
            let mut shard_created = None;
            for record in &page.records {
                if let Some(why) = &record.unreadable {
                    if !self.apply_unreadable(builder, record, why, &id) {
                        return Err(RoundError::Rebootstrap(format!(
                            "unreadable stream record without a key in shard `{id}` ({why})"
                        )));
                    }
                } else {
                    let decoded = decode_stream(
                        &record.keys,
                        record.kind == EventKind::Remove,
                        record.new_image.as_ref(),
                    );
                    self.apply_stream(builder, decoded);
                }
                if let Some(created) = record.created {
                    lag = Some(created);
                    shard_created = Some(created);
                }
            }
            shard_lags.push((id.clone(), shard_created));
            round.records += page.records.len();
            if let Some(last) = page.records.iter().rev().find(|r| !r.sequence.is_empty()) {
                shard.last_sequence = Some(last.sequence.clone());
                if let Ok(mut seen) = self.stats.last_sequence_seen.lock() {
                    *seen = Some(last.sequence.clone());
                }
            }
            match page.next {
                Some(next) => shard.iterator = Some(next),
                None => {
                    tracing::debug!(shard = %id, "shard closed and drained");
                    shard.finished = true;
                    round.closed_shard = true;
                }
            }
        }
        if let Some(failure) = failure {
            // Catching up, the caller retries the whole drain (what was
            // read stays applied, positions advanced); following, what the
            // other shards read is published now.
            if catching_up || (succeeded == 0 && round.records == 0) {
                return Err(failure);
            }
            if let RoundError::Retry(error) = &failure {
                metrics::counter!(m::SOURCE_ERRORS, "kind" => kind_of(error)).increment(1);
                tracing::warn!(%error, "a shard read failed; the others were applied");
            }
        }
        let now = self.config.clock.now();
        let lag_of = |created: Option<Timestamp>| {
            created.map_or(0.0, |c| now.duration_since(c).as_secs_f64().max(0.0))
        };
        let lag_s = lag_of(lag);
        metrics::gauge!(m::STREAM_LAG_SECONDS).set(lag_s);
        if let Ok(mut view) = self.stats.stream.lock() {
            *view = StreamView {
                shards: cursor.shard_positions(),
                lag_seconds: Some(lag_s),
                shard_lag_seconds: shard_lags
                    .into_iter()
                    .map(|(id, created)| (id, lag_of(created)))
                    .collect(),
            };
        }
        Ok(round)
    }

    /// A record that cannot be read says its key changed, but not to what:
    /// the key's record is removed (fail closed: a revocation inside such a
    /// record never leaves the card granting). `false` when it has no
    /// readable key either.
    fn apply_unreadable(
        &self,
        builder: &mut SnapshotBuilder,
        record: &StreamRecord,
        why: &str,
        shard: &str,
    ) -> bool {
        metrics::counter!(m::RECORDS_UNREADABLE).increment(1);
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        match decode_stream(&record.keys, true, None) {
            Decoded::Change(Change::Delete(key)) => {
                tracing::warn!(
                    ?key,
                    sequence = %record.sequence,
                    shard,
                    reason = why,
                    "unreadable stream record; its key's record removed"
                );
                let _ = builder.apply(Change::Delete(key));
                true
            }
            _ => {
                tracing::error!(
                    sequence = %record.sequence,
                    shard,
                    reason = why,
                    "unreadable stream record without a key; bootstrapping again"
                );
                false
            }
        }
    }

    fn apply_stream(&self, builder: &mut SnapshotBuilder, decoded: Decoded) {
        match decoded {
            Decoded::Change(change) => {
                let key = match &change {
                    Change::Upsert(r) => Some(r.key()),
                    Change::Delete(_) => None,
                };
                match builder.apply(change) {
                    Ok(()) => {
                        self.stats.applied.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(m::RECORDS_APPLIED).increment(1);
                    }
                    Err(error) => {
                        tracing::warn!(%error, ?key, "stream record refused; record removed");
                        self.stats.reject("stream");
                        // The previous version of this item is outdated:
                        // never keep serving it (it could grant).
                        if let Some(key) = key {
                            let _ = builder.apply(Change::Delete(key));
                        }
                    }
                }
            }
            Decoded::Rejected { error, remove } => {
                tracing::warn!(%error, "stream record refused; record removed");
                self.stats.reject("stream");
                if let Some(key) = remove {
                    let _ = builder.apply(Change::Delete(key));
                }
            }
        }
    }

    /// Scans every segment in parallel straight into `builder`: pages are
    /// applied as they arrive, so a bootstrap never holds the whole table
    /// as attribute maps (peak memory O(snapshot), not O(table)).
    async fn scan_into(&self, builder: &mut SnapshotBuilder) -> Result<usize, SourceError> {
        let segments = self.config.scan_segments.max(1);
        // A few pages in flight per segment keep the segments busy while
        // the builder applies; more would only hold memory.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ScanPage>(segments as usize * 2);
        let mut tasks = JoinSet::new();
        for segment in 0..segments {
            let backend = Arc::clone(&self.backend);
            let mut backoff = self.backoff();
            let tx = tx.clone();
            tasks.spawn(async move {
                let mut start = None;
                let mut failures = 0u32;
                loop {
                    match backend.scan(segment, segments, start.clone()).await {
                        Ok(mut page) => {
                            backoff.reset();
                            let next = page.last_key.take();
                            if tx.send(page).await.is_err() {
                                return Ok(());
                            }
                            match next {
                                Some(last) => start = Some(last),
                                None => return Ok(()),
                            }
                        }
                        Err(e @ SourceError::Transient(_)) if failures < 8 => {
                            failures += 1;
                            metrics::counter!(m::SOURCE_ERRORS, "kind" => "transient").increment(1);
                            tracing::warn!(error = %e, segment, "scan page failed; retrying");
                            tokio::time::sleep(backoff.next_delay()).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            });
        }
        drop(tx);
        let mut scanned = 0;
        while let Some(page) = rx.recv().await {
            for why in &page.unreadable {
                tracing::warn!(item = %why, "item skipped");
                self.stats.reject("scan");
            }
            scanned += page.items.len() + page.unreadable.len();
            for item in page.items {
                let record = match record_of(&item) {
                    Ok(record) => record,
                    Err(error) => {
                        tracing::warn!(%error, "item skipped");
                        self.stats.reject("scan");
                        continue;
                    }
                };
                // The engine's refusal names the record and the attribute;
                // the key says which item to fix.
                let key = record.key();
                if let Err(error) = builder.apply(Change::Upsert(record)) {
                    tracing::warn!(%error, ?key, "item skipped");
                    self.stats.reject("scan");
                }
            }
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(SourceError::Other(format!("scan task failed: {e}"))),
            }
        }
        Ok(scanned)
    }

    /// The table's stream, refused unless its records carry new images.
    async fn table_stream(&self) -> Result<String, BootstrapError> {
        usable_stream(self.backend.as_ref())
            .await
            .map_err(BootstrapError::Load)
    }

    /// One bootstrap: note, scan, build, catch up. Publishes nothing
    /// (INVARIANT(no-intermediate-publish)); the caller publishes.
    async fn bootstrap_once(
        &self,
        floor: u64,
    ) -> Result<(SnapshotBuilder, StreamCursor), BootstrapError> {
        let started = Instant::now();
        let arn = self.table_stream().await?;
        let mut cursor = StreamCursor {
            arn,
            shards: BTreeMap::new(),
        };
        self.discover(&mut cursor, true).await?;
        let mut builder = SnapshotBuilder::starting_at(floor);
        let scanned = self.scan_into(&mut builder).await?;
        self.stats.scanned.store(scanned as u64, Ordering::Relaxed);
        let caught_up = self.drain(&mut cursor, &mut builder).await?;
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram!(m::BOOTSTRAP_SECONDS).record(seconds);
        tracing::info!(scanned, caught_up, seconds, "bootstrap done");
        Ok((builder, cursor))
    }

    /// Reads every shard to its end without publishing; returns the
    /// records read.
    async fn drain(
        &self,
        cursor: &mut StreamCursor,
        builder: &mut SnapshotBuilder,
    ) -> Result<usize, RoundError> {
        let mut read = 0;
        loop {
            let round = self.round(cursor, builder, true).await?;
            read += round.records;
            if round.closed_shard {
                self.discover(cursor, false).await?;
                continue;
            }
            if round.records == 0 && !round.incomplete {
                return Ok(read);
            }
        }
    }

    /// Bootstraps, retrying with backoff; `attempts: None` retries until
    /// shutdown, whatever the error (the table may be created, or its
    /// stream enabled, later).
    async fn bootstrap(
        &self,
        floor: u64,
        attempts: Option<u32>,
        reason: &'static str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(SnapshotBuilder, StreamCursor), LoadError> {
        let mut backoff = self.backoff();
        let mut tries = 0u32;
        loop {
            self.stats.bootstraps.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::BOOTSTRAPS, "reason" => reason).increment(1);
            let error = match self.bootstrap_once(floor).await {
                Ok(done) => return Ok(done),
                Err(BootstrapError::Load(e)) => e,
                Err(BootstrapError::Rebootstrap(why)) => LoadError::Unstable(why),
            };
            tries += 1;
            let fatal = matches!(
                error,
                LoadError::NoStream
                    | LoadError::ViewType(_)
                    | LoadError::Source(SourceError::NotFound(_))
            );
            if attempts.is_some_and(|max| tries >= max || fatal) {
                return Err(error);
            }
            let delay = backoff.next_delay();
            if fatal {
                tracing::error!(%error, ?delay, "cannot load the table; retrying");
            } else {
                tracing::warn!(%error, ?delay, "bootstrap failed; retrying");
            }
            if wait_or_shutdown(delay, shutdown).await {
                return Err(LoadError::ShutDown);
            }
        }
    }

    /// Brings a resumed state (a checkpoint's, or a stopped loader's) up to
    /// the end of the stream, publishing nothing until then, retrying
    /// failed reads forever while the resumed snapshot keeps serving.
    /// `Ok(true)`: caught up; `Ok(false)`: shut down; `Err`: the position
    /// is lost, bootstrap again.
    async fn catch_up(
        &self,
        state: &mut Resume,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, String> {
        let mut backoff = self.backoff();
        loop {
            if *shutdown.borrow() {
                return Ok(false);
            }
            let result = match self.check_stream(&mut state.cursor).await {
                Ok(()) => self
                    .drain(&mut state.cursor, &mut state.builder)
                    .await
                    .map(|read| {
                        tracing::info!(records = read, "caught up with the stream");
                    }),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(true),
                Err(RoundError::Rebootstrap(why)) => return Err(why),
                Err(RoundError::Retry(error)) => {
                    self.set_status(SourceStatus::CatchingUp);
                    metrics::counter!(m::SOURCE_ERRORS, "kind" => kind_of(&error)).increment(1);
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, ?delay, "cannot reach the stream; serving the checkpoint meanwhile");
                    if wait_or_shutdown(delay, shutdown).await {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Follows the stream until shutdown (returns `true`) or until the
    /// position is lost (returns `false`: bootstrap again).
    async fn follow(
        &mut self,
        builder: &mut SnapshotBuilder,
        cursor: &mut StreamCursor,
        shared: &SharedSnapshot,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut backoff = self.backoff();
        let mut last_discover = Instant::now();
        let mut confirmed = Instant::now();
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                return true;
            }
            let as_of = self.config.clock.now();
            let applied_before = self.stats.applied() + self.stats.rejected();
            let result = self.round(cursor, builder, false).await;
            if self.stats.applied() + self.stats.rejected() != applied_before {
                publish(builder, shared, as_of);
            }
            let result = match result {
                Ok(round)
                    if round.closed_shard
                        || last_discover.elapsed() >= self.config.rediscover_interval =>
                {
                    last_discover = Instant::now();
                    self.check_stream(cursor).await.map(|()| round)
                }
                other => other,
            };
            match result {
                Ok(round) => {
                    failures = 0;
                    if !round.incomplete {
                        backoff.reset();
                        confirmed = Instant::now();
                        // The stream was read to its end as of `as_of`
                        // (taken before the read): the snapshot is that
                        // fresh.
                        shared.confirm(as_of);
                        metrics::gauge!(m::SOURCE_STALENESS_SECONDS).set(0.0);
                        self.set_status(SourceStatus::Live);
                    }
                    self.checkpoint(builder, cursor, shared, false);
                    // A shard that could not be read is retried after a
                    // backoff, not at once; an idle stream after a poll
                    // interval; a busy one at once.
                    let pause = if round.incomplete {
                        Some(backoff.next_delay())
                    } else if round.records == 0 {
                        Some(self.config.poll_interval)
                    } else {
                        None
                    };
                    if let Some(pause) = pause
                        && wait_or_shutdown(pause, shutdown).await
                    {
                        return true;
                    }
                }
                Err(RoundError::Rebootstrap(why)) => {
                    tracing::warn!(reason = %why, "stream position lost; bootstrapping again");
                    return false;
                }
                Err(RoundError::Retry(error)) => {
                    self.set_status(SourceStatus::Retrying);
                    failures += 1;
                    metrics::counter!(m::SOURCE_ERRORS, "kind" => kind_of(&error)).increment(1);
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, ?delay, "stream read failed; backing off");
                    metrics::gauge!(m::SOURCE_STALENESS_SECONDS)
                        .set(confirmed.elapsed().as_secs_f64());
                    self.checkpoint(builder, cursor, shared, false);
                    if wait_or_shutdown(delay, shutdown).await {
                        return true;
                    }
                    // Reads that keep failing may mean the table was
                    // re-created with a new stream: ask the table.
                    if failures >= self.config.redescribe_after_failures.max(1) {
                        failures = 0;
                        if let Err(RoundError::Rebootstrap(why)) = self.check_stream(cursor).await {
                            tracing::warn!(reason = %why, "stream replaced; bootstrapping again");
                            return false;
                        }
                    }
                }
            }
        }
    }

    fn checkpoint(
        &mut self,
        builder: &SnapshotBuilder,
        cursor: &StreamCursor,
        shared: &SharedSnapshot,
        force: bool,
    ) {
        let clock = self.config.clock.clone();
        if let Some(c) = &mut self.checkpointer {
            c.maybe_write(builder, cursor, shared, &clock, force);
        }
    }

    /// Checks the table still has this stream, and finds new shards.
    async fn check_stream(&self, cursor: &mut StreamCursor) -> Result<(), RoundError> {
        match self.backend.stream().await.map_err(classify)? {
            None => return Err(RoundError::Rebootstrap("stream disabled".into())),
            Some(stream) if stream.arn != cursor.arn => {
                return Err(RoundError::Rebootstrap(format!(
                    "stream ARN changed to `{}`",
                    stream.arn
                )));
            }
            Some(_) => {}
        }
        self.discover(cursor, false).await
    }

    /// The loop of the background task. With `resume`, catches up first
    /// (the resumed snapshot is being served) unless it is `caught_up`
    /// already (a fresh bootstrap, or a live loader's hand-over); without,
    /// bootstraps until it succeeds (an empty snapshot is being served).
    async fn run(
        mut self,
        shared: Arc<SharedSnapshot>,
        resume: Option<Resume>,
        caught_up: bool,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<Resume> {
        let mut state = match resume {
            Some(state) if caught_up => Some(state),
            Some(mut state) => {
                self.set_status(SourceStatus::CatchingUp);
                match self.catch_up(&mut state, &mut shutdown).await {
                    Ok(true) => {
                        let as_of = self.config.clock.now();
                        publish(&mut state.builder, &shared, as_of);
                        Some(state)
                    }
                    Ok(false) => return Some(state),
                    Err(why) => {
                        tracing::warn!(reason = %why, "resumed position lost; bootstrapping again");
                        None
                    }
                }
            }
            None => None,
        };
        loop {
            let mut current = match state.take() {
                Some(current) => current,
                None => {
                    // The current snapshot keeps serving while this runs.
                    let floor = shared.load().version();
                    let reason = if floor == 0 {
                        "startup"
                    } else {
                        "position_lost"
                    };
                    if floor != 0 {
                        self.set_status(SourceStatus::CatchingUp);
                    }
                    match self.bootstrap(floor, None, reason, &mut shutdown).await {
                        Ok((builder, cursor)) => {
                            let mut current = Resume { builder, cursor };
                            publish(&mut current.builder, &shared, self.config.clock.now());
                            current
                        }
                        Err(_) => return None,
                    }
                }
            };
            self.set_status(SourceStatus::Live);
            self.checkpoint(&current.builder, &current.cursor, &shared, true);
            let stopped = self
                .follow(
                    &mut current.builder,
                    &mut current.cursor,
                    &shared,
                    &mut shutdown,
                )
                .await;
            if stopped {
                self.checkpoint(&current.builder, &current.cursor, &shared, true);
                return Some(current);
            }
        }
    }
}

/// The ARN of `backend`'s stream; [`LoadError::NoStream`] or
/// [`LoadError::ViewType`] when the table has none, or one whose records
/// carry no new image; [`LoadError::Source`] when the table cannot be asked.
pub async fn usable_stream<B: Backend>(backend: &B) -> Result<String, LoadError> {
    let stream = backend.stream().await?.ok_or(LoadError::NoStream)?;
    if !stream.has_new_images() {
        return Err(LoadError::ViewType(stream.view_type));
    }
    Ok(stream.arn)
}

enum BootstrapError {
    Load(LoadError),
    Rebootstrap(String),
}

impl From<SourceError> for BootstrapError {
    fn from(e: SourceError) -> Self {
        Self::Load(LoadError::Source(e))
    }
}

impl From<RoundError> for BootstrapError {
    fn from(e: RoundError) -> Self {
        match e {
            RoundError::Retry(e) => Self::Load(LoadError::Source(e)),
            RoundError::Rebootstrap(why) => Self::Rebootstrap(why),
        }
    }
}

fn classify(e: SourceError) -> RoundError {
    match e {
        SourceError::Trimmed(why) => RoundError::Rebootstrap(format!("trimmed: {why}")),
        SourceError::NotFound(why) => RoundError::Rebootstrap(format!("not found: {why}")),
        other => RoundError::Retry(other),
    }
}

fn kind_of(e: &SourceError) -> &'static str {
    match e {
        SourceError::ExpiredIterator => "expired_iterator",
        SourceError::Trimmed(_) => "trimmed",
        SourceError::NotFound(_) => "not_found",
        SourceError::Transient(_) => "transient",
        SourceError::Other(_) => "other",
    }
}

fn publish(builder: &mut SnapshotBuilder, shared: &SharedSnapshot, as_of: Timestamp) {
    let snapshot = builder.publish(as_of);
    metrics::gauge!(m::SNAPSHOT_VERSION).set(snapshot.version() as f64);
    metrics::gauge!(m::SOURCE_STALENESS_SECONDS).set(0.0);
    tracing::debug!(version = snapshot.version(), "snapshot published");
    shared.store(Arc::new(snapshot));
}

/// Sleeps for `delay`; `true` if shutdown was asked for meanwhile.
async fn wait_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => *shutdown.borrow(),
        changed = shutdown.changed() => changed.is_err() || *shutdown.borrow(),
    }
}

/// A running DynamoDB source: the snapshot it keeps current and the handle
/// to stop it.
pub struct Source {
    shared: Arc<SharedSnapshot>,
    stats: Arc<LoaderStats>,
    status: Arc<std::sync::Mutex<SourceStatus>>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Option<Resume>>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("version", &self.shared.load().version())
            .field("status", &self.status())
            .finish()
    }
}

impl Source {
    /// Bootstraps (or resumes from `resume` without a scan), publishes the
    /// first snapshot, then follows the stream in a background task.
    /// Returns once the first snapshot is served; gives up after
    /// [`LoaderConfig::startup_attempts`] failed bootstraps.
    pub async fn start<B: Backend>(
        loader: Loader<B>,
        resume: Option<Resume>,
    ) -> Result<Self, LoadError> {
        let (tx, mut rx) = watch::channel(false);
        let state = match resume {
            Some(resume) => resume,
            None => {
                let attempts = loader.config.startup_attempts.max(1);
                let (builder, cursor) = loader
                    .bootstrap(0, Some(attempts), "startup", &mut rx)
                    .await?;
                Resume { builder, cursor }
            }
        };
        let mut state = state;
        let snapshot = state.builder.publish(loader.config.clock.now());
        metrics::gauge!(m::SNAPSHOT_VERSION).set(snapshot.version() as f64);
        let shared = Arc::new(SharedSnapshot::new(snapshot));
        Ok(Self::run(loader, shared, Some(state), tx, rx, true))
    }

    /// Starts at once and never fails: serves `resumed` (a checkpoint's
    /// records in a builder not yet published, as fresh as `fresh_as_of`;
    /// see [`checkpoint::Restored`]) or, without one,
    /// an empty snapshot (version 0, every decision `not_ready`), while a
    /// background task catches up from the resumed position or bootstraps,
    /// retrying with capped, jittered backoff until it succeeds or is shut
    /// down. A resumed position that is lost (trimmed, another stream)
    /// ends in a bootstrap while the resumed snapshot keeps serving.
    ///
    /// `resumed` is `(state, fresh_as_of, written_at)`: a position written
    /// longer than [`RESUME_MAX_AGE`] ago is not trusted (the stream keeps
    /// records 24 hours, and a shard nothing was read from is replayed from
    /// its oldest record), so the state serves while a bootstrap runs.
    pub fn spawn<B: Backend>(
        loader: Loader<B>,
        resumed: Option<(Resume, Timestamp, Timestamp)>,
    ) -> Self {
        let (tx, rx) = watch::channel(false);
        match resumed {
            Some((mut state, fresh_as_of, written_at)) => {
                let age = loader.config.clock.now().duration_since(written_at);
                if age >= RESUME_MAX_AGE {
                    tracing::warn!(
                        ?age,
                        "checkpoint older than the stream's retention; serving it while bootstrapping"
                    );
                    // A cursor of no stream: the loader sees "another
                    // stream" and bootstraps.
                    state.cursor = StreamCursor::restored(String::new(), Vec::new());
                }
                let snapshot = state.builder.publish(fresh_as_of);
                metrics::gauge!(m::SNAPSHOT_VERSION).set(snapshot.version() as f64);
                let shared = Arc::new(SharedSnapshot::new(snapshot));
                Self::run(loader, shared, Some(state), tx, rx, false)
            }
            None => {
                let shared = Arc::new(SharedSnapshot::new(Snapshot::empty(Timestamp::UNIX_EPOCH)));
                Self::run(loader, shared, None, tx, rx, false)
            }
        }
    }

    /// [`spawn`](Self::spawn) from a checkpoint served in place: `warm`
    /// (see [`Checkpoint::open_warm`](checkpoint::Checkpoint::open_warm))
    /// serves at once while `restore` rebuilds the builder on a blocking
    /// thread; the builder's version of the same data then replaces it,
    /// and the loader catches up from the stored position as `spawn`
    /// does. A restore that fails (`None`, its reason logged by `restore`)
    /// ends in a bootstrap while `warm` keeps serving.
    pub fn spawn_warm<B: Backend>(
        loader: Loader<B>,
        warm: Snapshot,
        written_at: Timestamp,
        restore: impl FnOnce() -> Option<Resume> + Send + 'static,
    ) -> Self {
        let (tx, mut rx) = watch::channel(false);
        let too_old = loader.config.clock.now().duration_since(written_at) >= RESUME_MAX_AGE;
        if too_old {
            tracing::warn!(
                "checkpoint older than the stream's retention; serving it while bootstrapping"
            );
        }
        metrics::gauge!(m::SNAPSHOT_VERSION).set(warm.version() as f64);
        let shared = Arc::new(SharedSnapshot::new(warm));
        loader.set_status(SourceStatus::CatchingUp);
        Self::with_task(loader, shared, tx, move |loader, shared| {
            async move {
                let started = Instant::now();
                let restoring = tokio::task::spawn_blocking(restore);
                let restored = tokio::select! {
                    r = restoring => r.ok().flatten(),
                    // Shutdown while rebuilding: the file on disk is
                    // still the newest state, nothing to hand back.
                    _ = rx.changed() => return None,
                };
                let state = restored.map(|mut state| {
                    if too_old {
                        // A cursor of no stream: the loader bootstraps.
                        state.cursor = StreamCursor::restored(String::new(), Vec::new());
                    }
                    let as_of = shared.load().as_of();
                    shared.store(Arc::new(state.builder.publish(as_of)));
                    tracing::info!(
                        ms = started.elapsed().as_millis() as u64,
                        "checkpoint rebuilt in memory; the memory map is released"
                    );
                    state
                });
                loader.run(shared, state, false, rx).await
            }
        })
    }

    fn run<B: Backend>(
        loader: Loader<B>,
        shared: Arc<SharedSnapshot>,
        state: Option<Resume>,
        tx: watch::Sender<bool>,
        rx: watch::Receiver<bool>,
        caught_up: bool,
    ) -> Self {
        Self::with_task(loader, shared, tx, move |loader, shared| {
            loader.run(shared, state, caught_up, rx)
        })
    }

    /// A source whose background task is `work(loader, shared)`, stopped
    /// through `tx`.
    fn with_task<B: Backend, F>(
        loader: Loader<B>,
        shared: Arc<SharedSnapshot>,
        tx: watch::Sender<bool>,
        work: impl FnOnce(Loader<B>, Arc<SharedSnapshot>) -> F,
    ) -> Self
    where
        F: std::future::Future<Output = Option<Resume>> + Send + 'static,
    {
        let stats = Arc::clone(&loader.stats);
        let status = Arc::clone(&loader.status);
        let task = tokio::spawn(work(loader, Arc::clone(&shared)));
        Self {
            shared,
            stats,
            status,
            shutdown: tx,
            task,
        }
    }

    /// The snapshot kept current; decisions load it.
    pub fn snapshot(&self) -> &Arc<SharedSnapshot> {
        &self.shared
    }

    /// What the loader did so far.
    pub fn stats(&self) -> &LoaderStats {
        &self.stats
    }

    /// What the source is doing now.
    pub fn status(&self) -> SourceStatus {
        self.status.lock().map_or(SourceStatus::Retrying, |s| *s)
    }

    /// The last stream sequence number applied, if any.
    pub fn last_sequence(&self) -> Option<String> {
        self.stats
            .last_sequence_seen
            .lock()
            .ok()
            .and_then(|s| s.clone())
    }

    /// Stops following (a poll in flight finishes first), writes a last
    /// checkpoint if checkpoints are on, and hands back the position, so a
    /// new [`Source`] can resume without a scan. `None` if the loader
    /// stopped before it had a position (in the middle of a bootstrap).
    pub async fn shutdown(self) -> Option<Resume> {
        let _ = self.shutdown.send(true);
        self.task.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests;
