//! `accessd check-site` and `accessd pin-hash`, plus loading a site file
//! into a snapshot for the other subcommands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use accessd_engine::{
    PinHash, Presence, SharedSnapshot, SiteFile, SiteRecords, Snapshot, SnapshotBuilder,
};
use accessd_loader::checkpoint::{
    self, Checkpoint, CheckpointData, CheckpointError, CheckpointSource,
};
use anyhow::{Context, bail};
use jiff::Timestamp;

/// Arguments of `accessd check-site`.
#[derive(clap::Args, Debug)]
pub(crate) struct CheckArgs {
    /// The site file (TOML, see docs/site-file.md).
    #[arg(long)]
    site: PathBuf,
}

/// Arguments of `accessd pin-hash`.
#[derive(clap::Args, Debug)]
pub(crate) struct PinHashArgs {
    /// The PIN: 4 to 12 digits. Prefer `--pin-stdin` on shared machines.
    #[arg(long, conflicts_with = "pin_stdin")]
    pin: Option<String>,
    /// Read the PIN from the first line of standard input.
    #[arg(long)]
    pin_stdin: bool,
}

/// The text of the site file at `path`.
fn site_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read site file `{}`", path.display()))
}

/// Reads and checks a site file; every problem is in the error. The text
/// is freed before the records are returned.
pub(crate) fn read_site(path: &Path) -> anyhow::Result<SiteRecords> {
    SiteFile::read(&site_text(path)?)
        .with_context(|| format!("site file `{}` is not valid", path.display()))
}

/// Reads and checks a site file into a builder, as `serve` does (see
/// `SiteFile::build`), with the count of records by section.
fn build_site(path: &Path) -> anyhow::Result<(SnapshotBuilder, BTreeMap<&'static str, usize>)> {
    SiteFile::build(&site_text(path)?, 0)
        .with_context(|| format!("site file `{}` is not valid", path.display()))
}

/// Reads a site file and builds its snapshot, as of `now`.
pub(crate) fn load_snapshot(path: &Path, now: Timestamp) -> anyhow::Result<Snapshot> {
    let (mut builder, _) = build_site(path)?;
    Ok(builder.publish(now))
}

/// A site file being served: its snapshot, and the builder kept for
/// checkpoints.
#[derive(Clone)]
pub(crate) struct ServedSite {
    pub(crate) shared: Arc<SharedSnapshot>,
    /// The builder of the snapshot served and the bytes it was read from
    /// (as a checkpoint names them); replaced together by a reload.
    data: Arc<std::sync::Mutex<SiteData>>,
    /// Whether the checkpoint on disk already holds this site's data.
    checkpointed: bool,
}

#[derive(Clone)]
struct SiteData {
    /// `None` while the data is served in place from the checkpoint and
    /// the builder is being rebuilt (no checkpoint is written meanwhile:
    /// the one on disk already holds this data).
    builder: Option<Arc<SnapshotBuilder>>,
    source: CheckpointSource,
}

/// What a reload of the site file did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SiteReload {
    /// The file holds the bytes already served.
    Unchanged,
    /// A new snapshot of the file is served, this version.
    Reloaded(u64),
    /// The file was refused (every problem in the message); the old site
    /// keeps serving.
    Refused(String),
}

impl ServedSite {
    fn data(&self) -> SiteData {
        match self.data.lock() {
            Ok(d) => d.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the site file at `path` again and, if its bytes changed and
    /// it is valid as a whole, serves a new snapshot of it (the next
    /// version). A file that does not read or check keeps the old site.
    /// Presence is kept. Blocking: parses the file.
    pub(crate) fn reload(&self, path: &Path) -> SiteReload {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                return SiteReload::Refused(format!(
                    "cannot read site file `{}`: {e}",
                    path.display()
                ));
            }
        };
        let source = CheckpointSource::site_file(&bytes);
        if source == self.data().source {
            return SiteReload::Unchanged;
        }
        let after = self.shared.load().version();
        let built = String::from_utf8(bytes)
            .map_err(|e| anyhow::anyhow!(e))
            .and_then(|text| SiteFile::build(&text, after).map_err(|e| anyhow::anyhow!(e)));
        let (mut builder, _) = match built {
            Ok(built) => built,
            Err(e) => {
                return SiteReload::Refused(format!(
                    "site file `{}` is not valid: {e:#}",
                    path.display()
                ));
            }
        };
        let snapshot = builder.publish(Timestamp::now());
        let version = snapshot.version();
        let stats = snapshot.stats();
        // One lock for the swap, so a checkpoint sees the builder and the
        // source of the same file.
        let mut data = match self.data.lock() {
            Ok(d) => d,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.shared.store(Arc::new(snapshot));
        *data = SiteData {
            builder: Some(Arc::new(builder)),
            source,
        };
        drop(data);
        give_back_freed_memory();
        tracing::info!(?stats, version, path = %path.display(), "site reloaded");
        SiteReload::Reloaded(version)
    }
}

/// Loads the site file to serve. With a checkpoint of the same file
/// (same bytes), the data is served from the checkpoint in place at once
/// and rebuilt in memory behind it (see `Checkpoint::open_warm`), which is
/// far faster than parsing a large file; a changed file always wins.
/// Presence comes from any site-file checkpoint.
pub(crate) fn load_served(
    path: &Path,
    checkpoint: Option<&Path>,
    presence: &Presence,
) -> anyhow::Result<ServedSite> {
    let started = std::time::Instant::now();
    let source = {
        // Mapped, not read, to compare it with the checkpoint's: a start
        // from a checkpoint of a large file never copies the file.
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read site file `{}`", path.display()))?;
        // SAFETY: read-only, and dropped before the file is read again; a
        // site file edited in place while this runs makes a digest of
        // neither version, which matches no checkpoint (the file is then
        // read and parsed, and a later change is reloaded).
        #[expect(
            unsafe_code,
            reason = "mapping the site file to hash it without a copy"
        )]
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }
            .with_context(|| format!("cannot read site file `{}`", path.display()))?;
        CheckpointSource::site_file(&map)
    };
    if let Some(file) = checkpoint {
        match Checkpoint::open_warm(file, &source, Some(Timestamp::now())) {
            Ok(Some((checkpoint, snapshot))) => {
                presence.restore(checkpoint.presence());
                tracing::info!(
                    stats = ?snapshot.stats(),
                    version = snapshot.version(),
                    ms = started.elapsed().as_millis() as u64,
                    "site served from the checkpoint in place; rebuilding it in memory"
                );
                let site = ServedSite {
                    shared: Arc::new(SharedSnapshot::new(snapshot)),
                    data: Arc::new(std::sync::Mutex::new(SiteData {
                        builder: None,
                        source,
                    })),
                    checkpointed: true,
                };
                rebuild_in_background(site.clone(), checkpoint);
                return Ok(site);
            }
            Ok(None) => {}
            Err(CheckpointError::Foreign { .. }) => match Checkpoint::open(file) {
                Ok(c) if matches!(c.source(), CheckpointSource::SiteFile { .. }) => {
                    presence.restore(c.presence());
                    tracing::info!("site file changed since the checkpoint; reading the file");
                }
                Ok(c) => tracing::warn!(
                    source = %c.source(),
                    "checkpoint is not of a site file; reading the site file (it will be replaced)"
                ),
                Err(e) => tracing::warn!(error = %e, "checkpoint refused; reading the site file"),
            },
            Err(e) => tracing::warn!(error = %e, "checkpoint refused; reading the site file"),
        }
    }
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read site file `{}`", path.display()))?;
    // The bytes parsed are the ones served (the file may have changed
    // since it was mapped).
    let source = CheckpointSource::site_file(&bytes);
    let text = String::from_utf8(bytes)
        .with_context(|| format!("site file `{}` is not UTF-8", path.display()))?;
    let read_started = std::time::Instant::now();
    let (mut builder, _) = SiteFile::build(&text, 0)
        .with_context(|| format!("site file `{}` is not valid", path.display()))?;
    drop(text);
    let read_ms = read_started.elapsed().as_millis() as u64;
    let publish_started = std::time::Instant::now();
    let snapshot = builder.publish(Timestamp::now());
    let publish_ms = publish_started.elapsed().as_millis() as u64;
    give_back_freed_memory();
    tracing::info!(
        stats = ?snapshot.stats(),
        version = snapshot.version(),
        from_checkpoint = false,
        read_ms,
        publish_ms,
        ms = started.elapsed().as_millis() as u64,
        "site loaded"
    );
    Ok(ServedSite {
        shared: Arc::new(SharedSnapshot::new(snapshot)),
        data: Arc::new(std::sync::Mutex::new(SiteData {
            builder: Some(Arc::new(builder)),
            source,
        })),
        checkpointed: false,
    })
}

/// Returns the memory a large parse freed to the system: the allocator
/// keeps freed pages for a while, and the reading threads' pages (they
/// have ended) until another thread takes them over, so a server that
/// parsed a million-holder file would stay resident at the parse's size.
fn give_back_freed_memory() {
    // SAFETY: mi_collect only frees what the allocator holds unused.
    #[expect(unsafe_code, reason = "mimalloc's collect has no safe wrapper")]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// Rebuilds a site served in place from `checkpoint` on a thread of its
/// own, then serves the builder's snapshot of the same data and version
/// instead (unless a reload replaced the data meanwhile). A checkpoint that
/// cannot be rebuilt keeps being served in place, loudly: the site file is
/// read again by the next reload (SIGHUP or a change of the file).
fn rebuild_in_background(site: ServedSite, checkpoint: Arc<Checkpoint>) {
    let spawned = std::thread::Builder::new()
        .name("site-rebuild".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let source = checkpoint.source();
            let mut restored = match checkpoint.restore() {
                Ok(r) => r,
                Err(error) => {
                    tracing::error!(%error, "checkpoint cannot be rebuilt; serving it in place until the site file is reloaded");
                    return;
                }
            };
            drop(checkpoint);
            let mut data = match site.data.lock() {
                Ok(d) => d,
                Err(poisoned) => poisoned.into_inner(),
            };
            if data.builder.is_some() || data.source != source {
                // A reload served the file meanwhile: it wins.
                return;
            }
            let as_of = site.shared.load().as_of();
            site.shared
                .store(Arc::new(restored.builder.publish(as_of)));
            data.builder = Some(Arc::new(restored.builder));
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "checkpoint rebuilt in memory; the memory map is released"
            );
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the checkpoint rebuild; serving it in place");
    }
}

/// Keeps the checkpoint of a served site file current: written when
/// presence or the data changed (at most once per `interval`), and once
/// more at shutdown.
pub(crate) async fn keep_checkpoint(
    site: ServedSite,
    path: PathBuf,
    interval: Duration,
    presence: Arc<Presence>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // What the checkpoint on disk holds: presence's generation and the
    // data's version (a reload changes it).
    let state = |site: &ServedSite, presence: &Presence| {
        (presence.generation(), site.shared.load().version())
    };
    let mut written = site.checkpointed.then(|| state(&site, &presence));
    let mut tick = tokio::time::interval(interval);
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        let generation = state(&site, &presence);
        // While the data is served in place there is no builder to write
        // from (and the file on disk holds that data).
        if written != Some(generation) && site.data().builder.is_some() {
            let (site, path, presence) = (site.clone(), path.clone(), Arc::clone(&presence));
            let result = tokio::task::spawn_blocking(move || {
                let data = site.data();
                let Some(builder) = &data.builder else {
                    // Checked above, and a builder is never taken away.
                    return Err(CheckpointError::Encode("no builder yet".into()));
                };
                checkpoint::write(
                    &path,
                    &CheckpointData {
                        source: data.source.clone(),
                        builder,
                        fresh_as_of: site.shared.load().as_of(),
                        cursor: None,
                        presence: presence.entries(),
                        now: Timestamp::now(),
                    },
                )
            })
            .await;
            match result {
                Ok(Ok(bytes)) => {
                    written = Some(generation);
                    tracing::debug!(bytes, "checkpoint written");
                }
                Ok(Err(e)) => tracing::error!(error = %e, "checkpoint not written"),
                Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
            }
        }
        if stop {
            return;
        }
    }
}

pub(crate) fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    // Checked as `serve` reads it: the same problems, in less time and
    // memory than keeping every record.
    let (_, counts) = build_site(&args.site)?;
    println!("{}: ok", args.site.display());
    for (section, count) in counts {
        println!("  {section:<14} {count}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn pin_hash(args: PinHashArgs) -> anyhow::Result<ExitCode> {
    let pin = match (args.pin, args.pin_stdin) {
        (Some(pin), _) => pin,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the PIN from standard input")?;
            line.trim().to_owned()
        }
        (None, false) => bail!("give the PIN with --pin DIGITS or --pin-stdin"),
    };
    // The salt only has to differ between credentials, not be secret.
    let mut salt = [0u8; 16];
    fastrand::fill(&mut salt);
    let hash = PinHash::new(&pin, salt)?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}
