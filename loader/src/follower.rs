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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use accessd_engine::{Change, SharedSnapshot, SnapshotBuilder};
use jiff::Timestamp;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::backend::{Backend, EventKind, Position, SourceError};
use crate::item::{Decoded, Item, decode_stream, record_of};
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
    /// transient errors.
    pub startup_attempts: u32,
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
    /// The last published version.
    pub fn version(&self) -> u64 {
        self.builder.version()
    }
    /// The stream position.
    pub fn cursor(&self) -> &StreamCursor {
        &self.cursor
    }
}

/// Why a poll round stopped.
enum RoundError {
    /// Retry after a backoff.
    Retry(SourceError),
    /// The position is lost: bootstrap again.
    Rebootstrap(String),
}

#[derive(Default)]
struct Round {
    records: usize,
    closed_shard: bool,
}

/// Reads a table and its stream into snapshots.
pub struct Loader<B> {
    backend: Arc<B>,
    config: LoaderConfig,
    stats: Arc<LoaderStats>,
}

impl<B: Backend> Loader<B> {
    /// A loader over `backend`.
    pub fn new(backend: Arc<B>, config: LoaderConfig) -> Self {
        Self {
            backend,
            config,
            stats: Arc::default(),
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
    /// `catching_up` is true during a bootstrap, before anything is
    /// published.
    async fn round(
        &self,
        cursor: &mut StreamCursor,
        builder: &mut SnapshotBuilder,
        catching_up: bool,
    ) -> Result<Round, RoundError> {
        let mut round = Round::default();
        let mut lag = None;
        for id in cursor.readable() {
            let Some(shard) = cursor.shards.get_mut(&id) else {
                continue;
            };
            let iterator = match shard.iterator.take() {
                Some(it) => it,
                None => {
                    let position = shard
                        .last_sequence
                        .clone()
                        .map_or_else(|| shard.start.clone(), Position::After);
                    self.backend
                        .shard_iterator(&cursor.arn, &id, &position)
                        .await
                        .map_err(classify)?
                }
            };
            let page = match self.backend.get_records(&iterator).await {
                Ok(page) => page,
                Err(SourceError::ExpiredIterator) => {
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
                    shard.iterator = Some(iterator);
                    return Err(classify(e));
                }
            };
            for record in &page.records {
                let decoded = decode_stream(
                    &record.keys,
                    record.kind == EventKind::Remove,
                    record.new_image.as_ref(),
                );
                self.apply_stream(builder, decoded);
                if let Some(created) = record.created {
                    lag = Some(created);
                }
            }
            round.records += page.records.len();
            if let Some(last) = page.records.last() {
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
        let lag_s = lag.map_or(0.0, |created| {
            Timestamp::now()
                .duration_since(created)
                .as_secs_f64()
                .max(0.0)
        });
        metrics::gauge!(m::STREAM_LAG_SECONDS).set(lag_s);
        Ok(round)
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

    /// Scans every segment in parallel into records.
    async fn scan_all(&self) -> Result<Vec<Item>, SourceError> {
        let segments = self.config.scan_segments.max(1);
        let mut tasks = JoinSet::new();
        for segment in 0..segments {
            let backend = Arc::clone(&self.backend);
            let mut backoff = self.backoff();
            tasks.spawn(async move {
                let mut items = Vec::new();
                let mut start = None;
                let mut failures = 0u32;
                loop {
                    match backend.scan(segment, segments, start.clone()).await {
                        Ok(page) => {
                            backoff.reset();
                            items.extend(page.items);
                            match page.last_key {
                                Some(last) => start = Some(last),
                                None => return Ok(items),
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
        let mut all = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(items)) => all.extend(items),
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(SourceError::Other(format!("scan task failed: {e}"))),
            }
        }
        Ok(all)
    }

    /// One bootstrap: note, scan, build, catch up. Publishes nothing
    /// (INVARIANT(no-intermediate-publish)); the caller publishes.
    async fn bootstrap_once(
        &self,
        floor: u64,
    ) -> Result<(SnapshotBuilder, StreamCursor), BootstrapError> {
        let started = Instant::now();
        let arn = self
            .backend
            .stream_arn()
            .await?
            .ok_or(BootstrapError::Load(LoadError::NoStream))?;
        let mut cursor = StreamCursor {
            arn,
            shards: BTreeMap::new(),
        };
        self.discover(&mut cursor, true).await?;
        let items = self.scan_all().await?;
        let scanned = items.len();
        self.stats.scanned.store(scanned as u64, Ordering::Relaxed);
        let mut builder = SnapshotBuilder::starting_at(floor);
        for item in &items {
            let change = match record_of(item) {
                Ok(record) => Change::Upsert(record),
                Err(error) => {
                    tracing::warn!(%error, "item skipped");
                    self.stats.reject("scan");
                    continue;
                }
            };
            if let Err(error) = builder.apply(change) {
                tracing::warn!(%error, "item skipped");
                self.stats.reject("scan");
            }
        }
        drop(items);
        let mut caught_up = 0;
        loop {
            let round = self.round(&mut cursor, &mut builder, true).await?;
            caught_up += round.records;
            if round.closed_shard {
                self.discover(&mut cursor, false).await?;
                continue;
            }
            if round.records == 0 {
                break;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram!(m::BOOTSTRAP_SECONDS).record(seconds);
        tracing::info!(scanned, caught_up, seconds, "bootstrap done");
        Ok((builder, cursor))
    }

    /// Bootstraps, retrying with backoff; `attempts: None` retries until
    /// shutdown.
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
                LoadError::NoStream | LoadError::Source(SourceError::NotFound(_))
            );
            if attempts.is_some_and(|max| tries >= max || fatal) {
                return Err(error);
            }
            tracing::warn!(%error, "bootstrap failed; retrying");
            if wait_or_shutdown(backoff.next_delay(), shutdown).await {
                return Err(LoadError::ShutDown);
            }
        }
    }

    /// Follows the stream until shutdown (returns `true`) or until the
    /// position is lost (returns `false`: bootstrap again).
    async fn follow(
        &self,
        builder: &mut SnapshotBuilder,
        cursor: &mut StreamCursor,
        shared: &SharedSnapshot,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut backoff = self.backoff();
        let mut last_discover = Instant::now();
        let mut confirmed = Instant::now();
        loop {
            if *shutdown.borrow() {
                return true;
            }
            let as_of = Timestamp::now();
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
                    backoff.reset();
                    confirmed = Instant::now();
                    // The stream was read to its end as of `as_of` (taken
                    // before the read): the snapshot is that fresh.
                    shared.confirm(as_of);
                    metrics::gauge!(m::SOURCE_STALENESS_SECONDS).set(0.0);
                    if round.records == 0
                        && wait_or_shutdown(self.config.poll_interval, shutdown).await
                    {
                        return true;
                    }
                }
                Err(RoundError::Rebootstrap(why)) => {
                    tracing::warn!(reason = %why, "stream position lost; bootstrapping again");
                    return false;
                }
                Err(RoundError::Retry(error)) => {
                    metrics::counter!(m::SOURCE_ERRORS, "kind" => kind_of(&error)).increment(1);
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, ?delay, "stream read failed; backing off");
                    metrics::gauge!(m::SOURCE_STALENESS_SECONDS)
                        .set(confirmed.elapsed().as_secs_f64());
                    if wait_or_shutdown(delay, shutdown).await {
                        return true;
                    }
                }
            }
        }
    }

    /// Checks the table still has this stream, and finds new shards.
    async fn check_stream(&self, cursor: &mut StreamCursor) -> Result<(), RoundError> {
        match self.backend.stream_arn().await.map_err(classify)? {
            None => return Err(RoundError::Rebootstrap("stream disabled".into())),
            Some(arn) if arn != cursor.arn => {
                return Err(RoundError::Rebootstrap(format!(
                    "stream ARN changed to `{arn}`"
                )));
            }
            Some(_) => {}
        }
        self.discover(cursor, false).await
    }

    /// The loop of the background task.
    async fn run(
        self,
        shared: Arc<SharedSnapshot>,
        mut state: Resume,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<Resume> {
        loop {
            if self
                .follow(
                    &mut state.builder,
                    &mut state.cursor,
                    &shared,
                    &mut shutdown,
                )
                .await
            {
                return Some(state);
            }
            // The current snapshot keeps serving while this runs.
            let floor = shared.load().version();
            match self
                .bootstrap(floor, None, "position_lost", &mut shutdown)
                .await
            {
                Ok((builder, cursor)) => {
                    state = Resume { builder, cursor };
                    publish(&mut state.builder, &shared, Timestamp::now());
                }
                Err(_) => return None,
            }
        }
    }
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
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Option<Resume>>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("version", &self.shared.load().version())
            .finish()
    }
}

impl Source {
    /// Bootstraps (or resumes from `resume` without a scan), publishes the
    /// first snapshot, then follows the stream in a background task.
    /// Returns once the first snapshot is served.
    pub async fn start<B: Backend>(
        loader: Loader<B>,
        resume: Option<Resume>,
    ) -> Result<Self, LoadError> {
        let (tx, mut rx) = watch::channel(false);
        let mut state = match resume {
            Some(resume) => resume,
            None => {
                let attempts = loader.config.startup_attempts.max(1);
                let (builder, cursor) = loader
                    .bootstrap(0, Some(attempts), "startup", &mut rx)
                    .await?;
                Resume { builder, cursor }
            }
        };
        let snapshot = state.builder.publish(Timestamp::now());
        metrics::gauge!(m::SNAPSHOT_VERSION).set(snapshot.version() as f64);
        let shared = Arc::new(SharedSnapshot::new(snapshot));
        let stats = Arc::clone(&loader.stats);
        let task = tokio::spawn(loader.run(Arc::clone(&shared), state, rx));
        Ok(Self {
            shared,
            stats,
            shutdown: tx,
            task,
        })
    }

    /// The snapshot kept current; decisions load it.
    pub fn snapshot(&self) -> &Arc<SharedSnapshot> {
        &self.shared
    }

    /// What the loader did so far.
    pub fn stats(&self) -> &LoaderStats {
        &self.stats
    }

    /// The last stream sequence number applied, if any.
    pub fn last_sequence(&self) -> Option<String> {
        self.stats
            .last_sequence_seen
            .lock()
            .ok()
            .and_then(|s| s.clone())
    }

    /// Stops following (a poll in flight finishes first) and hands back
    /// the position, so a new [`Source`] can resume without a scan. `None`
    /// if the loader stopped in the middle of a bootstrap.
    pub async fn shutdown(self) -> Option<Resume> {
        let _ = self.shutdown.send(true);
        self.task.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests;
