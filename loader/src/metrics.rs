//! The loader's metrics (`metrics` crate facade; the binary installs the
//! exporter).

/// Gauge: seconds between now and the approximate creation time of the last
/// stream record applied (0 when a poll finds the stream idle).
pub const STREAM_LAG_SECONDS: &str = "accessd_stream_lag_seconds";
/// Gauge: the version of the snapshot being served.
pub const SNAPSHOT_VERSION: &str = "accessd_snapshot_version";
/// Gauge: seconds since the served data was last confirmed current (the
/// last successful poll of the stream, or the bootstrap). Unlike the
/// snapshot's age (now − `as_of`, which grows while the table is idle),
/// this grows only while DynamoDB cannot be read.
pub const SOURCE_STALENESS_SECONDS: &str = "accessd_source_staleness_seconds";
/// Counter: stream records applied to the snapshot.
pub const RECORDS_APPLIED: &str = "accessd_stream_records_applied_total";
/// Counter: items refused (label `source`: `scan` or `stream`).
pub const ITEMS_REJECTED: &str = "accessd_items_rejected_total";
/// Histogram: seconds a bootstrap took (scan, build and catch-up).
pub const BOOTSTRAP_SECONDS: &str = "accessd_bootstrap_duration_seconds";
/// Counter: bootstraps started (label `reason`).
pub const BOOTSTRAPS: &str = "accessd_bootstraps_total";
/// Counter: failed calls to DynamoDB that were retried (label `kind`).
pub const SOURCE_ERRORS: &str = "accessd_source_errors_total";

/// Registers descriptions of the metrics above with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        STREAM_LAG_SECONDS,
        "now minus the approximate creation time of the last applied stream record"
    );
    describe_gauge!(SNAPSHOT_VERSION, "version of the snapshot being served");
    describe_gauge!(
        SOURCE_STALENESS_SECONDS,
        "seconds since the served data was last confirmed current by DynamoDB"
    );
    describe_counter!(RECORDS_APPLIED, "stream records applied to the snapshot");
    describe_counter!(ITEMS_REJECTED, "items refused as malformed, by source");
    describe_histogram!(
        BOOTSTRAP_SECONDS,
        "duration of a bootstrap (scan, build, catch-up)"
    );
    describe_counter!(BOOTSTRAPS, "bootstraps started, by reason");
    describe_counter!(SOURCE_ERRORS, "retried DynamoDB errors, by kind");
}
