//! Bad input is counted: the metrics the server and the loader emit, read
//! through a Prometheus recorder installed once for this test binary.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::quic::{example_server, exchange, good_request};

/// The process-wide recorder (one per test binary: metrics are global).
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("no other recorder in the test binary");
        handle
    })
}

/// The sum of every sample of `name` whose labels contain `label`.
fn value(name: &str, label: &str) -> f64 {
    recorder()
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_and_decisions_are_counted() {
    recorder();
    let malformed_before = value("accessd_frames_malformed_total", "code=\"malformed\"");
    let decisions_before = value("accessd_decisions_total", "");
    let (server, _) = example_server().await;
    let client = server.gateway().await;
    let mut bytes = good_request(1);
    let mut bad = good_request(2);
    bad[8] = 0x80; // a reserved flag bit: malformed
    bytes.extend(bad);
    bytes.extend(good_request(3));
    let (seen, _) = exchange(&client, &bytes).await;
    assert_eq!(seen.responses, vec![1, 3]);
    // Other tests run at the same time and may add to the counters, so
    // check for at least our own.
    let malformed = value("accessd_frames_malformed_total", "code=\"malformed\"");
    assert!(
        malformed >= malformed_before + 1.0,
        "{malformed_before} -> {malformed}"
    );
    let decisions = value("accessd_decisions_total", "");
    assert!(
        decisions >= decisions_before + 2.0,
        "{decisions_before} -> {decisions}"
    );
}
