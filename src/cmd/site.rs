//! `accessd check-site` and `accessd pin-hash`, plus loading a site file
//! into a snapshot for the other subcommands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use accessd_engine::{
    Change, PinHash, Presence, SharedSnapshot, SiteFile, Snapshot, SnapshotBuilder,
};
use accessd_loader::checkpoint::{self, Checkpoint, CheckpointData, CheckpointSource};
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

/// Reads and checks a site file; every problem is in the error.
pub(crate) fn read_site(path: &Path) -> anyhow::Result<SiteFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read site file `{}`", path.display()))?;
    SiteFile::parse(&text).with_context(|| format!("site file `{}` is not valid", path.display()))
}

/// Reads a site file and builds its snapshot, as of `now`.
pub(crate) fn load_snapshot(path: &Path, now: Timestamp) -> anyhow::Result<Snapshot> {
    let site = read_site(path)?;
    let mut builder = SnapshotBuilder::new();
    let refused = builder.apply_all(site.records.into_iter().map(Change::Upsert));
    if let Some((_, e)) = refused.first() {
        // SiteFile::parse already validated every record; this is a bug.
        bail!("site file record refused by the builder: {e}");
    }
    Ok(builder.publish(now))
}

/// A site file being served: its snapshot, and the builder kept for
/// checkpoints.
#[derive(Clone)]
pub(crate) struct ServedSite {
    pub(crate) shared: Arc<SharedSnapshot>,
    builder: Arc<SnapshotBuilder>,
    source: CheckpointSource,
    /// Whether the checkpoint on disk already holds this site's data.
    checkpointed: bool,
}

/// Loads the site file to serve. With a checkpoint of the same file
/// (same bytes), the data comes from the checkpoint, which is faster than
/// parsing a large file; a changed file always wins. Presence comes from
/// any site-file checkpoint.
pub(crate) fn load_served(
    path: &Path,
    checkpoint: Option<&Path>,
    presence: &Presence,
) -> anyhow::Result<ServedSite> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read site file `{}`", path.display()))?;
    let source = CheckpointSource::site_file(&bytes);
    let started = std::time::Instant::now();
    let mut from_checkpoint = None;
    if let Some(file) = checkpoint {
        match Checkpoint::open_existing(file) {
            Ok(Some(c)) if matches!(c.source(), CheckpointSource::SiteFile { .. }) => {
                match c.restore() {
                    Ok(restored) => {
                        presence.restore(restored.presence);
                        if c.source() == source {
                            from_checkpoint = Some(restored.builder);
                        } else {
                            tracing::info!(
                                "site file changed since the checkpoint; reading the file"
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "checkpoint refused; reading the site file")
                    }
                }
            }
            Ok(Some(c)) => tracing::warn!(
                source = %c.source(),
                "checkpoint is not of a site file; reading the site file (it will be replaced)"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "checkpoint refused; reading the site file"),
        }
    }
    let checkpointed = from_checkpoint.is_some();
    let mut builder = match from_checkpoint {
        Some(builder) => builder,
        None => {
            let text = String::from_utf8(bytes)
                .with_context(|| format!("site file `{}` is not UTF-8", path.display()))?;
            let site = SiteFile::parse(&text)
                .with_context(|| format!("site file `{}` is not valid", path.display()))?;
            drop(text);
            let mut builder = SnapshotBuilder::new();
            let refused = builder.apply_all(site.records.into_iter().map(Change::Upsert));
            if let Some((_, e)) = refused.first() {
                bail!("site file record refused by the builder: {e}");
            }
            builder
        }
    };
    let snapshot = builder.publish(Timestamp::now());
    tracing::info!(
        stats = ?snapshot.stats(),
        version = snapshot.version(),
        from_checkpoint = checkpointed,
        ms = started.elapsed().as_millis() as u64,
        "site loaded"
    );
    Ok(ServedSite {
        shared: Arc::new(SharedSnapshot::new(snapshot)),
        builder: Arc::new(builder),
        source,
        checkpointed,
    })
}

/// Keeps the checkpoint of a served site file current: written when
/// presence changed (at most once per `interval`), and once more at
/// shutdown.
pub(crate) async fn keep_checkpoint(
    site: ServedSite,
    path: PathBuf,
    interval: Duration,
    presence: Arc<Presence>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut written = site.checkpointed.then(|| presence.generation());
    let mut tick = tokio::time::interval(interval);
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        let generation = presence.generation();
        if written != Some(generation) {
            let (site, path, presence) = (site.clone(), path.clone(), Arc::clone(&presence));
            let result = tokio::task::spawn_blocking(move || {
                checkpoint::write(
                    &path,
                    &CheckpointData {
                        source: site.source.clone(),
                        builder: &site.builder,
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
    let site = read_site(&args.site)?;
    println!("{}: ok", args.site.display());
    for (section, count) in site.counts() {
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
