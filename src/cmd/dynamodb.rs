//! What the DynamoDB subcommands share: where the table is, and the
//! DynamoDB source that `accessd serve --dynamodb-table` runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use accessd_engine::{Presence, Snapshot};
use accessd_loader::checkpoint::{Checkpoint, CheckpointSource};
use accessd_loader::{
    AwsBackend, AwsSettings, CheckpointConfig, LoadError, Loader, LoaderConfig, Resume, Source,
    StreamCursor, usable_stream,
};
use anyhow::Context;
use jiff::Timestamp;

/// Where the table is. Credentials come from the standard AWS chain
/// (environment, profile, container or instance role).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct TableArgs {
    /// The DynamoDB table (see docs/dynamodb-schema.md).
    #[arg(long)]
    pub(crate) table: String,
    /// Another DynamoDB endpoint (moto, DynamoDB Local), e.g.
    /// http://127.0.0.1:5000. Default: AWS.
    #[arg(long)]
    pub(crate) endpoint_url: Option<String>,
    /// The AWS region. Default: the standard chain (AWS_REGION, profile).
    #[arg(long)]
    pub(crate) region: Option<String>,
}

impl TableArgs {
    pub(crate) fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            static_credentials: None,
        }
    }

    pub(crate) async fn backend(&self) -> AwsBackend {
        AwsBackend::connect(&self.settings(), self.table.clone()).await
    }
}

/// A multi-threaded runtime for the subcommands that talk to DynamoDB.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`): the
/// one telemetry setup, shared with `serve`.
pub(crate) fn init_logging() {
    crate::telemetry::init_logs("info");
}

/// Starts the DynamoDB source: bootstraps (fails if the table or its
/// stream is missing), then follows the stream in the background. Serve
/// decisions from `source.snapshot()`; stop with `source.shutdown()`.
pub(crate) async fn start_source(
    table: &TableArgs,
    poll_interval: Duration,
) -> anyhow::Result<Source> {
    accessd_loader::metrics::describe();
    let backend = Arc::new(table.backend().await);
    let config = LoaderConfig {
        poll_interval,
        ..LoaderConfig::default()
    };
    Source::start(Loader::new(backend, config), None)
        .await
        .with_context(|| format!("cannot load DynamoDB table `{}`", table.table))
}

/// The DynamoDB options of `accessd serve`: without `--dynamodb-table` it
/// serves its site file.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ServeArgs {
    /// Serve from this DynamoDB table, followed through its stream, instead
    /// of a site file.
    #[arg(long)]
    pub(crate) dynamodb_table: Option<String>,
    /// Another DynamoDB endpoint (moto, DynamoDB Local). Default: AWS.
    #[arg(long, requires = "dynamodb_table")]
    pub(crate) endpoint_url: Option<String>,
    /// The AWS region. Default: the standard chain (AWS_REGION, profile).
    #[arg(long, requires = "dynamodb_table")]
    pub(crate) region: Option<String>,
    /// Poll an idle stream shard every this many milliseconds.
    #[arg(long, default_value_t = 250)]
    pub(crate) stream_poll_ms: u64,
}

impl ServeArgs {
    /// Where DynamoDB is and the data table's name, with
    /// `--dynamodb-table`.
    pub(crate) fn settings(&self) -> Option<(AwsSettings, String)> {
        let table = self.table()?;
        Some((table.settings(), table.table))
    }

    fn table(&self) -> Option<TableArgs> {
        Some(TableArgs {
            table: self.dynamodb_table.clone()?,
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
        })
    }

    /// Starts the DynamoDB source without waiting for DynamoDB: from the
    /// checkpoint when there is a usable one (served at once, then caught
    /// up), else from an empty snapshot (`not_ready`) until the first
    /// bootstrap succeeds. Retries forever; never exits for an outage.
    pub(crate) async fn spawn(
        &self,
        checkpoint: Option<&Path>,
        interval: Duration,
        presence: &Arc<Presence>,
    ) -> anyhow::Result<Source> {
        let table = self.table().context("no --dynamodb-table")?;
        accessd_loader::metrics::describe();
        let ckpt_source = CheckpointSource::Table {
            table: table.table.clone(),
        };
        // The checkpoint opens while the SDK reads its configuration: a
        // start from a large checkpoint waits for whichever is longer.
        let resuming = checkpoint.map(|path| {
            let (path, source, presence) =
                (path.to_owned(), ckpt_source.clone(), Arc::clone(presence));
            tokio::task::spawn_blocking(move || resume_from(&path, &source, &presence))
        });
        let backend = Arc::new(table.backend().await);
        let config = LoaderConfig {
            poll_interval: Duration::from_millis(self.stream_poll_ms),
            ..LoaderConfig::default()
        };
        let resumed = match resuming {
            Some(task) => task.await.context("the checkpoint reader failed")?,
            None => None,
        };
        if resumed.is_none() {
            // Nothing to serve yet, so a short look at the table costs
            // nothing: a misconfigured table is refused now, clearly, while
            // an unreachable one is waited for.
            precheck(backend.as_ref(), &table.table).await?;
        }
        let mut loader = Loader::new(backend, config);
        if let Some(path) = checkpoint {
            loader = loader.with_checkpoints(CheckpointConfig {
                path: path.to_owned(),
                interval,
                source: ckpt_source,
                presence: Arc::clone(presence),
            });
        }
        let from_checkpoint = resumed.is_some();
        let source = match resumed {
            Some(warm) => {
                let checkpoint = warm.checkpoint;
                Source::spawn_warm(loader, warm.snapshot, warm.written_at, move || {
                    Warm::restore(&checkpoint)
                })
            }
            None => Source::spawn(loader, None),
        };
        tracing::info!(
            table = %table.table,
            from_checkpoint,
            version = source.snapshot().load().version(),
            "serving from DynamoDB"
        );
        Ok(source)
    }
}

/// A checkpoint of `expected`, opened and verified, served in place at
/// once, with presence restored; `None` (with the reason logged) when
/// there is none or it is refused, and the caller bootstraps.
fn resume_from(path: &Path, expected: &CheckpointSource, presence: &Presence) -> Option<Warm> {
    let started = std::time::Instant::now();
    let (checkpoint, snapshot) = match Checkpoint::open_warm(path, expected, None) {
        Ok(Some(warm)) => warm,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "checkpoint refused; full bootstrap");
            return None;
        }
    };
    let written_at = match checkpoint.written_at() {
        Ok(at) => at,
        Err(error) => {
            tracing::warn!(%error, "checkpoint refused; full bootstrap");
            return None;
        }
    };
    presence.restore(checkpoint.presence());
    tracing::info!(
        version = snapshot.version(),
        fresh_as_of = %snapshot.as_of(),
        credentials = snapshot.stats().credentials,
        ms = started.elapsed().as_millis() as u64,
        "serving from the checkpoint in place; rebuilding it in memory, then catching up with the stream"
    );
    Some(Warm {
        snapshot,
        written_at,
        checkpoint,
    })
}

/// A checkpoint being served in place (see [`resume_from`]).
struct Warm {
    snapshot: Snapshot,
    written_at: Timestamp,
    checkpoint: Arc<Checkpoint>,
}

impl Warm {
    /// Rebuilds the checkpoint into a builder: what the loader resumes
    /// from once it is done.
    fn restore(checkpoint: &Checkpoint) -> Option<Resume> {
        let started = std::time::Instant::now();
        match checkpoint.restore() {
            Ok(restored) => {
                tracing::info!(
                    version = restored.version,
                    ms = started.elapsed().as_millis() as u64,
                    "checkpoint rebuilt"
                );
                // A table checkpoint always has a position; without one, a
                // cursor of no stream makes the loader bootstrap while the
                // data serves. (The loader also refuses positions older
                // than the stream's retention.)
                let cursor = restored
                    .cursor
                    .unwrap_or_else(|| StreamCursor::restored(String::new(), Vec::new()));
                Some(Resume::new(restored.builder, cursor))
            }
            Err(error) => {
                tracing::warn!(%error, "checkpoint cannot be rebuilt; full bootstrap while it serves");
                None
            }
        }
    }
}

/// One DescribeTable, a few seconds at most: refuses a table without a
/// stream or with a stream that carries no new images; lets an unreachable
/// or missing table through (the loader waits for it).
async fn precheck(backend: &AwsBackend, table: &str) -> anyhow::Result<()> {
    match tokio::time::timeout(Duration::from_secs(3), usable_stream(backend)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(LoadError::Source(error))) => {
            tracing::warn!(%error, table, "DynamoDB not answering; not ready until it does");
            Ok(())
        }
        Ok(Err(error)) => Err(anyhow::anyhow!(error))
            .with_context(|| format!("cannot serve DynamoDB table `{table}`")),
        Err(_) => {
            tracing::warn!(table, "DynamoDB not answering; not ready until it does");
            Ok(())
        }
    }
}
