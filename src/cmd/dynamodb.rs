//! What the DynamoDB subcommands share: where the table is, and the
//! DynamoDB source that `accessd serve --dynamodb-table` runs.

use std::sync::Arc;
use std::time::Duration;

use accessd_loader::{AwsBackend, AwsSettings, Loader, LoaderConfig, Source};
use anyhow::Context;

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

/// Logs to standard error, filtered by `RUST_LOG` (default `info`). Does
/// nothing if another subcommand installed a subscriber already.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
    /// The DynamoDB source, if a table was given.
    pub(crate) async fn start(&self) -> anyhow::Result<Option<Source>> {
        let Some(table) = &self.dynamodb_table else {
            return Ok(None);
        };
        let table = TableArgs {
            table: table.clone(),
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
        };
        let source = start_source(&table, Duration::from_millis(self.stream_poll_ms)).await?;
        tracing::info!(
            table = %table.table,
            stats = ?source.snapshot().load().stats(),
            "serving from DynamoDB"
        );
        Ok(Some(source))
    }
}
