//! Logs (tracing to stderr, filtered by `RUST_LOG`) and metrics (a
//! Prometheus scrape endpoint when `--metrics-addr` is given).

use std::net::SocketAddr;

use anyhow::Context;

/// Gauge: seconds since the served data was last confirmed current (the
/// age every answer carries), published once a second by `serve`.
pub(crate) const SNAPSHOT_AGE_SECONDS: &str = "accessd_snapshot_age_seconds";

/// Sets up logging; `default` is the filter when `RUST_LOG` is unset.
pub(crate) fn init_logs(default: &str) {
    // The AWS SDK logs every refused connection at INFO while DynamoDB is
    // down; accessd's own lines already say so once per retry.
    let quiet_sdk = "aws_smithy_runtime_api=warn,aws_smithy_runtime=warn,aws_config=warn";
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},{quiet_sdk}")));
    // A second init (tests, demo after serve) is harmless: ignore it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in journald or files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Serves metrics for Prometheus at `http://ADDR/metrics`. Must run inside
/// the tokio runtime.
pub(crate) fn init_metrics(addr: Option<SocketAddr>) -> anyhow::Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("cannot serve metrics on `{addr}`"))?;
    accessd_protocol::metrics::describe();
    accessd_loader::metrics::describe();
    metrics::describe_gauge!(
        SNAPSHOT_AGE_SECONDS,
        "seconds since the served data was last confirmed current"
    );
    tracing::info!(%addr, "metrics at /metrics");
    Ok(())
}
