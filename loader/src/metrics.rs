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

/// Counter: stream records that could not be read (unknown event name, no
/// image, unknown attribute type); each removed its key's record or caused
/// a new bootstrap.
pub const RECORDS_UNREADABLE: &str = "accessd_stream_records_unreadable_total";
/// Gauge: the source's state (label `state`: `starting`, `catching_up`,
/// `live`, `retrying`); the current state is 1, the others 0.
pub const SOURCE_STATE: &str = "accessd_source_state";
/// Counter: checkpoints written (label `result`: `ok` or `error`).
pub const CHECKPOINTS_WRITTEN: &str = "accessd_checkpoints_written_total";
/// Gauge: size in bytes of the last checkpoint written.
pub const CHECKPOINT_BYTES: &str = "accessd_checkpoint_bytes";
/// Histogram: seconds to encode and write a checkpoint.
pub const CHECKPOINT_SECONDS: &str = "accessd_checkpoint_write_seconds";

/// Counter: access events appended to the spool.
pub const EVENTS_WRITTEN: &str = "accessd_events_written_total";
/// Counter: access events that could not be appended (the disk refused
/// the write); their decisions were still answered.
pub const EVENTS_LOST: &str = "accessd_events_lost_total";
/// Gauge: bytes in the spool's segments.
pub const SPOOL_BYTES: &str = "accessd_events_spool_bytes";
/// Counter: bytes of unshipped events deleted because the spool was full.
pub const SPOOL_DROPPED_BYTES: &str = "accessd_events_spool_dropped_bytes_total";
/// Counter: bytes cut from a torn or corrupt spool tail at open (kept in
/// `quarantine/`).
pub const SPOOL_CUT_BYTES: &str = "accessd_events_spool_cut_bytes_total";
/// Counter: bad records found in sealed segments (the rest of each such
/// segment is skipped).
pub const SPOOL_CORRUPT_RECORDS: &str = "accessd_events_spool_corrupt_records_total";
/// Counter: failed fsyncs of the spool.
pub const SPOOL_FSYNC_ERRORS: &str = "accessd_events_spool_fsync_errors_total";
/// Counter: failed writes of the staging ring to a segment, and failed
/// rotations to a new segment (the events wait in the ring).
pub const SPOOL_WRITE_ERRORS: &str = "accessd_events_spool_write_errors_total";
/// Counter: access events written to the events table.
pub const EVENTS_SHIPPED: &str = "accessd_events_shipped_total";
/// Gauge: seconds since the oldest event not yet shipped was decided (0
/// when the shipper is up to date).
pub const EVENTS_OLDEST_UNSHIPPED_SECONDS: &str = "accessd_events_oldest_unshipped_seconds";
/// Counter: failed calls of the shipper or alarm sender that were retried
/// (label `target`: `dynamodb` or `eventbridge`).
pub const EVENTS_SHIP_ERRORS: &str = "accessd_events_ship_errors_total";
/// Counter: alarms put on the EventBridge bus (label `kind`).
pub const ALARMS_SENT: &str = "accessd_alarms_sent_total";

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
    describe_counter!(
        RECORDS_UNREADABLE,
        "stream records that could not be read; their key's record was removed"
    );
    describe_gauge!(SOURCE_STATE, "1 for the source's current state, by state");
    describe_counter!(CHECKPOINTS_WRITTEN, "checkpoints written, by result");
    describe_gauge!(CHECKPOINT_BYTES, "size of the last checkpoint written");
    describe_histogram!(CHECKPOINT_SECONDS, "time to encode and write a checkpoint");
    describe_counter!(EVENTS_WRITTEN, "access events appended to the spool");
    describe_counter!(
        EVENTS_LOST,
        "access events the spool could not append (decisions still answered)"
    );
    describe_gauge!(SPOOL_BYTES, "bytes in the event spool");
    describe_counter!(
        SPOOL_DROPPED_BYTES,
        "bytes of unshipped events deleted because the spool was full"
    );
    describe_counter!(
        SPOOL_CUT_BYTES,
        "bytes cut from a torn or corrupt spool tail at open"
    );
    describe_counter!(
        SPOOL_CORRUPT_RECORDS,
        "bad records found in sealed spool segments"
    );
    describe_counter!(SPOOL_FSYNC_ERRORS, "failed fsyncs of the event spool");
    describe_counter!(
        SPOOL_WRITE_ERRORS,
        "failed writes of the event spool's staging ring to its segments"
    );
    describe_counter!(EVENTS_SHIPPED, "access events written to the events table");
    describe_gauge!(
        EVENTS_OLDEST_UNSHIPPED_SECONDS,
        "age of the oldest access event not yet shipped"
    );
    describe_counter!(
        EVENTS_SHIP_ERRORS,
        "retried failures shipping events or alarms, by target"
    );
    describe_counter!(ALARMS_SENT, "alarms put on the EventBridge bus, by kind");
}
