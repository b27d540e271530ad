//! Logs (tracing to stderr, filtered by `RUST_LOG`) and metrics (a
//! Prometheus recorder, rendered by the HTTP listener at `/metrics`). The
//! binary's own metric names are here; the libraries' are in
//! `accessd_protocol::metrics` and `accessd_loader::metrics`.

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;

/// Gauge: seconds since the served data was last confirmed current (the
/// age every answer carries), published once a second by `serve`.
pub(crate) const SNAPSHOT_AGE_SECONDS: &str = "accessd_snapshot_age_seconds";

/// Counter: HTTP requests answered, by `route` and `status`.
pub(crate) const HTTP_REQUESTS: &str = "accessd_http_requests_total";

/// Counter: reloads by `what` (`tls`, `site`) and `result` (`reloaded`,
/// `unchanged`, `refused`).
pub(crate) const RELOADS: &str = "accessd_reloads_total";

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines; colours only at a terminal.
    Text,
    /// One JSON object a line.
    Json,
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Chooses the log format for [`init_logs`] (from `--log-format`).
pub(crate) fn set_log_format(format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
}

/// Sets up logging, the one setup of every command; `default` is the
/// filter when `RUST_LOG` is unset.
pub(crate) fn init_logs(default: &str) {
    // The AWS SDK logs every refused connection at INFO while DynamoDB is
    // down; accessd's own lines already say so once per retry.
    let quiet_sdk = "aws_smithy_runtime_api=warn,aws_smithy_runtime=warn,aws_config=warn";
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},{quiet_sdk}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, demo after serve) is harmless: ignore it.
    let _ = match LOG_FORMAT.get().copied().unwrap_or(LogFormat::Text) {
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
        // Colours only for a person at a terminal, not in journald or files.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Whether `error` is a write to a closed pipe (the reader went away).
pub(crate) fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Whether a panic is `println!`'s on a closed pipe.
pub(crate) fn is_closed_pipe_panic(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    text.starts_with("failed printing to stdout") && text.contains("Broken pipe")
}

/// Keeps the panic message of `println!` on a closed pipe off standard
/// error (`main` then exits quietly); every other panic is reported as
/// usual.
pub(crate) fn quiet_on_closed_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_closed_pipe_panic(info.payload()) {
            report(info);
        }
    }));
}

/// Installs the Prometheus recorder (once per process) and describes
/// every metric; the HTTP listener renders it at `/metrics`.
pub(crate) fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    accessd_protocol::metrics::describe();
    accessd_loader::metrics::describe();
    metrics::describe_gauge!(
        SNAPSHOT_AGE_SECONDS,
        "seconds since the served data was last confirmed current"
    );
    metrics::describe_counter!(
        RELOADS,
        "reloads of the TLS files and the site file, by what and result"
    );
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route and status");
    Ok(handle)
}
