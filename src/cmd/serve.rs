//! `accessd serve`: the QUIC decision server on a site file, or on a
//! DynamoDB table followed through its stream (`--dynamodb-table`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use accessd_engine::{Presence, SharedSnapshot};
use accessd_protocol::{Limits, TlsCredentials};
use anyhow::Context;
use jiff::Timestamp;

use accessd_protocol::{SnapshotDecider, age_ms};

/// TLS files of one end: the CA that signs the other end, this end's
/// certificate and key (as written by `accessd certs`).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct TlsArgs {
    /// CA certificate (PEM) that signs the other end's certificates.
    #[arg(long, default_value = "certs/ca.pem")]
    pub(crate) ca: PathBuf,
    /// This end's certificate chain (PEM).
    #[arg(long)]
    pub(crate) cert: PathBuf,
    /// This end's private key (PEM).
    #[arg(long)]
    pub(crate) key: PathBuf,
}

impl TlsArgs {
    pub(crate) fn load(&self) -> anyhow::Result<TlsCredentials> {
        TlsCredentials::from_pem_files(&self.ca, &self.cert, &self.key)
            .context("cannot load the TLS files")
    }
}

/// Where a client connects: the server's address and the name its
/// certificate must carry (`accessd check` and `accessd load`).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ServerArgs {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub(crate) server: SocketAddr,
    /// The name in the server's certificate.
    #[arg(long, default_value = "localhost")]
    pub(crate) server_name: String,
}

/// Arguments of `accessd serve`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Read settings from this TOML file: keys are these flags with `_`
    /// for `-` (deploy/accessd.toml); `ACCESSD_*` variables override it,
    /// flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The site file (TOML, see docs/site-file.md).
    #[arg(
        long,
        required_unless_present = "dynamodb_table",
        conflicts_with = "dynamodb_table"
    )]
    site: Option<PathBuf>,
    #[command(flatten)]
    dynamodb: super::dynamodb::ServeArgs,
    /// UDP address to listen on.
    #[arg(long, default_value = "127.0.0.1:4433")]
    listen: SocketAddr,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    http: crate::http::HttpArgs,
    /// QUIC endpoints serving --listen together (SO_REUSEPORT), so that
    /// packet handling spreads over cores; 0: one per available core (at
    /// most 16). See docs/benchmarks.md ("Fleet").
    #[arg(long, default_value_t = 0)]
    endpoints: usize,
    /// Connections served at once; more are refused.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Streams a client may open at once.
    #[arg(long, default_value_t = 8)]
    max_streams: u32,
    /// Close a connection after this many seconds without traffic.
    #[arg(long, default_value_t = 30)]
    idle_timeout_secs: u64,
    /// Keep a checkpoint here (data, stream position, anti-passback
    /// presence) and start from it: at once, and offline if DynamoDB cannot
    /// be reached. See docs/durability.md.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Write the checkpoint at most this often (and at shutdown), e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    checkpoint_interval: Duration,
    /// Deny every request with `stale_data` (122) once the data has not
    /// been confirmed current by its source for this long, e.g. 15m. Off by
    /// default: the data's age travels with every answer either way.
    #[arg(long, value_parser = parse_duration)]
    max_staleness: Option<Duration>,
    #[command(flatten)]
    events: super::events::ServeEventArgs,
}

/// Parses a duration such as `5s`, `250ms`, `15m` or `2h`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("`{text}` is not a duration like 5s, 250ms, 15m or 2h: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("`{text}` must not be negative"))
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::telemetry::init_logs("info");
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let result = runtime.block_on(serve(args));
    // Everything that must finish (the last checkpoint, the spool's fsync)
    // was awaited in `serve`; what may still run is a checkpoint rebuild
    // begun at start (seconds at a million holders), which a stop need
    // not wait for.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    let metrics = crate::telemetry::init_metrics()?;
    let http = crate::http::HttpListener::bind(&args.http).await?;
    let tls = args.tls.load()?;
    let presence = Arc::new(Presence::new());
    // DynamoDB when a table is given, else the site file.
    let (source, site) = match (&args.dynamodb.dynamodb_table, &args.site) {
        (Some(_), _) => {
            let source = args
                .dynamodb
                .spawn(
                    args.checkpoint.as_deref(),
                    args.checkpoint_interval,
                    &presence,
                )
                .await?;
            (Some(Arc::new(source)), None)
        }
        (None, Some(path)) => {
            let site = super::site::load_served(path, args.checkpoint.as_deref(), &presence)?;
            (None, Some(site))
        }
        (None, None) => anyhow::bail!("give --site FILE or --dynamodb-table NAME"),
    };
    let shared = match (&source, &site) {
        (Some(source), _) => Arc::clone(source.snapshot()),
        (None, Some(site)) => Arc::clone(&site.shared),
        (None, None) => anyhow::bail!("give --site FILE or --dynamodb-table NAME"),
    };
    let limits = Limits {
        max_connections: args.max_connections,
        max_streams_per_connection: args.max_streams,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        ..Limits::default()
    };
    let endpoints = match args.endpoints {
        0 => std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(16),
        n => n,
    };
    // Before the listeners serve: from here a stop signal is a clean stop.
    let shutdown = shutdown_signal();
    let endpoint = accessd_protocol::bind_endpoints(args.listen, &tls, &limits, endpoints)?;
    tracing::info!(
        addr = %endpoint.local_addr()?,
        endpoints,
        version = shared.load().version(),
        max_staleness = ?args.max_staleness,
        "serving"
    );
    let gauges = tokio::spawn(snapshot_gauges(shared.clone()));
    let (stop_site, site_task) = match (&site, &args.checkpoint) {
        (Some(site), Some(path)) => {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(super::site::keep_checkpoint(
                site.clone(),
                path.clone(),
                args.checkpoint_interval,
                Arc::clone(&presence),
                rx,
            ));
            (Some(tx), Some(task))
        }
        _ => (None, None),
    };
    let aws = args.dynamodb.settings();
    let trail = super::events::Trail::start(
        &args.events,
        aws.as_ref()
            .map(|(settings, table)| (settings, table.as_str())),
    )
    .await?;
    let decider = SnapshotDecider::with_policy(shared, presence, args.max_staleness);
    let (decider, trail) = match trail {
        Some((trail, log)) => (decider.with_events(log), Some(trail)),
        None => (decider, None),
    };
    let decider = Arc::new(decider);
    // One shutdown for both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // SIGHUP, POST /v1/reload and changes of the site file: certificates
    // and the site, without dropping a connection.
    let reloader = Arc::new(crate::reload::Reloader::new(
        args.tls.clone(),
        limits.clone(),
        endpoint.clone(),
        args.site.clone().zip(site.clone()),
    ));
    let reloads = tokio::spawn(crate::reload::start(
        Arc::clone(&reloader),
        Duration::from_secs(1),
        stop_rx.clone(),
    ));
    let http_task = match http {
        Some(http) => {
            let view = crate::http::ServerView {
                decider: Arc::clone(&decider),
                metrics,
                started: std::time::Instant::now(),
                source: match (&source, &args.site) {
                    (Some(source), _) => crate::http::SourceView::DynamoDb {
                        table: args.dynamodb.dynamodb_table.clone().unwrap_or_default(),
                        source: Arc::clone(source),
                    },
                    (None, path) => {
                        crate::http::SourceView::SiteFile(path.clone().unwrap_or_default())
                    }
                },
                checkpoint: args.checkpoint.clone(),
                events: trail.as_ref().map(super::events::Trail::view),
                connections: {
                    let endpoint = endpoint.clone();
                    Box::new(move || endpoint.open_connections())
                },
                quic_addr: endpoint.local_addr().ok(),
                reloader,
            };
            tracing::info!(addr = %http.local_addr()?, "HTTP listening");
            Some(tokio::spawn(http.run(view, stopped(stop_rx.clone()))))
        }
        None => None,
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    accessd_protocol::run(endpoint, decider, limits, stopped(stop_rx)).await;
    if let Some(trail) = trail {
        // Durable after the last decision; shipping resumes at next start.
        trail.shutdown().await;
    }
    if let Some(mut task) = http_task
        && tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
    {
        tracing::warn!("HTTP requests still open at shutdown; closed");
        task.abort();
        let _ = task.await;
    }
    gauges.abort();
    let _ = reloads.await;
    if let (Some(stop), Some(task)) = (stop_site, site_task) {
        let _ = stop.send(true);
        let _ = task.await;
    }
    if let Some(source) = source {
        // Writes the last checkpoint, after the last decision. The HTTP
        // listener, the only other holder, has stopped.
        match Arc::try_unwrap(source) {
            Ok(source) => {
                source.shutdown().await;
            }
            Err(_) => tracing::error!("the source is still in use; no last checkpoint"),
        }
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Publishes the snapshot's version and age once a second.
pub(crate) async fn snapshot_gauges(shared: Arc<SharedSnapshot>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let snapshot = shared.load();
        metrics::gauge!(accessd_loader::metrics::SNAPSHOT_VERSION).set(snapshot.version() as f64);
        metrics::gauge!(crate::telemetry::SNAPSHOT_AGE_SECONDS)
            .set(f64::from(age_ms(&shared, &snapshot, Timestamp::now())) / 1000.0);
    }
}

/// Takes over Ctrl-C (SIGINT) and SIGTERM at once, and returns a future
/// that completes when one arrives. At once, not at the future's first
/// poll: a signal in between (a stop right after start, with the listeners
/// already up) would otherwise end the process by the default action,
/// without its clean stop.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let [mut int, mut term] = [
        tokio::signal::unix::SignalKind::interrupt(),
        tokio::signal::unix::SignalKind::terminate(),
    ]
    .map(|kind| {
        take_over_signal(
            kind,
            "cannot take over a stop signal; it will end the process without a clean stop",
        )
    });
    async move {
        #[cfg(unix)]
        tokio::select! {
            _ = next_signal(int.as_mut()) => {}
            _ = next_signal(term.as_mut()) => {}
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown requested");
    }
}

/// Takes over signal `kind` now, so that from here it no longer has its
/// default action (ending the process), or logs `lost` (what goes without
/// it) and returns `None`.
#[cfg(unix)]
pub(crate) fn take_over_signal(
    kind: tokio::signal::unix::SignalKind,
    lost: &str,
) -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => Some(s),
        Err(error) => {
            tracing::warn!(%error, "{lost}");
            None
        }
    }
}

/// The next delivery of a signal taken over; never, without one.
#[cfg(unix)]
pub(crate) async fn next_signal(signal: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
