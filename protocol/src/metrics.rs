//! The QUIC server's metrics, named in one place (`metrics` crate facade;
//! the binary installs the exporter).

/// Counter: connections accepted.
pub const CONNECTIONS: &str = "accessd_connections_total";
/// Gauge: connections open now.
pub const CONNECTIONS_ACTIVE: &str = "accessd_connections_active";
/// Counter: connections refused (label `reason`: `limit` or `identity`).
pub const CONNECTIONS_REFUSED: &str = "accessd_connections_refused_total";
/// Counter: TLS handshakes that failed.
pub const HANDSHAKE_FAILURES: &str = "accessd_handshake_failures_total";
/// Counter: malformed frames (label `code`: the error code's name).
pub const FRAMES_MALFORMED: &str = "accessd_frames_malformed_total";
/// Counter: decisions answered (label `verdict`: `grant` or `deny`).
pub const DECISIONS: &str = "accessd_decisions_total";
/// Counter: requests for a reader the client's certificate does not name.
pub const READER_NOT_PERMITTED: &str = "accessd_reader_not_permitted_total";
/// Counter: ERROR frames received from clients.
pub const CLIENT_ERRORS: &str = "accessd_client_errors_total";

/// Registers descriptions of the metrics above with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(CONNECTIONS, "QUIC connections accepted");
    describe_gauge!(CONNECTIONS_ACTIVE, "QUIC connections open now");
    describe_counter!(CONNECTIONS_REFUSED, "connections refused, by reason");
    describe_counter!(HANDSHAKE_FAILURES, "TLS handshakes that failed");
    describe_counter!(FRAMES_MALFORMED, "malformed frames, by error code");
    describe_counter!(DECISIONS, "decisions answered, by verdict");
    describe_counter!(
        READER_NOT_PERMITTED,
        "requests for a reader the client certificate does not name"
    );
    describe_counter!(CLIENT_ERRORS, "ERROR frames received from clients");
}
