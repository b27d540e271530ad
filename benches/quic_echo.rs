//! The floor under the QUIC service: a bare quinn echo server with the same
//! TLS, transport limits and framing as accessd, driven by the same load
//! engine as `accessd load`, next to the real accessd server on the demo
//! site, without and with access events recorded into a spool
//! (`serve --events-dir`) — measured in one run so the ratios are fair.
//!
//! ```text
//! cargo bench --bench quic_echo                  # unpinned, 3 s per case
//! taskset -c 0 cargo bench --bench quic_echo     # client and server on one vCPU
//! cargo bench --bench quic_echo -- --secs 5 --only 1x64 --rounds 5
//! ```
//!
//! Each case runs the echo once, then accessd without and with events
//! alternately (`--rounds`, default 3), and compares their medians.
//!
//! Without `--bench` (as under `cargo test --benches`) it runs one short
//! case as a smoke test.
//!
//! `--serve-echo ADDR --certs DIR [--endpoints N] [--secs S]` serves only
//! the echo floor, with the certificates `accessd certs --out DIR` wrote,
//! for `S` seconds (default 600): a separate process that `accessd load`
//! drives exactly as it drives `accessd serve` (`scripts/fleet-bench`
//! pins each to its own vCPU).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use accessd_engine::synth::{self, SynthParams};
use accessd_engine::{Change, SharedSnapshot, SnapshotBuilder};
use accessd_loader::events::{Spool, SpoolConfig};
use accessd_protocol::load::{LoadReport, LoadSpec, MixRequest, Progress};
use accessd_protocol::{
    DevCa, EventLog, EventSink, Limits, SAN_ALL_READERS, SnapshotDecider, TlsCredentials,
};
use jiff::Timestamp;

/// Echoes every byte of every stream back: the server does no work, so
/// what remains is QUIC, TLS, the socket and the client.
async fn echo_server(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(connecting) = incoming.accept() else {
                return;
            };
            let Ok(conn) = connecting.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    // Quinn's own buffers, handed back as they came: no
                    // copy and no buffer per stream, the least a server
                    // can do with a stream's bytes.
                    while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024, true).await {
                        if send.write_chunk(chunk.bytes).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                });
            }
        });
    }
}

struct Case {
    name: &'static str,
    connections: usize,
    in_flight: usize,
    batch: usize,
}

const CASES: [Case; 5] = [
    Case {
        name: "1x1",
        connections: 1,
        in_flight: 1,
        batch: 1,
    },
    Case {
        name: "1x64",
        connections: 1,
        in_flight: 64,
        batch: 1,
    },
    Case {
        name: "64x1",
        connections: 64,
        in_flight: 1,
        batch: 1,
    },
    // The demo's load (`accessd demo`): 4 connections × 32 in flight.
    Case {
        name: "4x32",
        connections: 4,
        in_flight: 32,
        batch: 1,
    },
    Case {
        name: "1x4-batch64",
        connections: 1,
        in_flight: 4,
        batch: 64,
    },
];

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn row(r: &LoadReport) -> String {
    format!(
        "{:>9.0} fr/s {:>10.0} dec/s  p50 {:>7.1}  p99 {:>7.1}  p99.9 {:>7.1} µs  err {}",
        r.frames_per_sec(),
        r.decisions_per_sec(),
        r.quantile_us(0.5),
        r.quantile_us(0.99),
        r.quantile_us(0.999),
        r.errors
    )
}

/// `--serve-echo ADDR`: the echo floor alone, as its own process.
#[expect(clippy::print_stdout, reason = "a bench reports on stdout")]
fn serve_echo(
    addr: &str,
    certs: &str,
    endpoints: usize,
    secs: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(certs);
    let tls = TlsCredentials::from_pem_files(
        &dir.join("ca.pem"),
        &dir.join("server.pem"),
        &dir.join("server.key"),
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let bound =
            accessd_protocol::bind_endpoints(addr.parse()?, &tls, &Limits::default(), endpoints)?;
        println!(
            "echo serving {} on {} endpoint(s) for {secs} s",
            bound.local_addr()?,
            bound.len()
        );
        for endpoint in bound.iter() {
            tokio::spawn(echo_server(endpoint.clone()));
        }
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

#[expect(clippy::print_stdout, reason = "a bench reports on stdout")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(addr) = arg("--serve-echo") {
        let certs = arg("--certs").ok_or("--serve-echo needs --certs DIR")?;
        let endpoints = arg("--endpoints").map_or(Ok(1), |s| s.parse())?;
        let secs = arg("--secs").map_or(Ok(600.0), |s| s.parse())?;
        return serve_echo(&addr, &certs, endpoints, secs);
    }
    let secs: f64 = arg("--secs").map_or(Ok(if full { 3.0 } else { 0.2 }), |s| s.parse())?;
    let only = arg("--only");
    let rounds: usize = arg("--rounds").map_or(Ok(if full { 3 } else { 1 }), |s| s.parse())?;

    let server_rt = tokio::runtime::Runtime::new()?;
    let client_rt = tokio::runtime::Runtime::new()?;

    let ca = DevCa::new("bench CA")?;
    let server_tls = ca.credentials(&ca.server(&["localhost"])?)?;
    let client_tls: TlsCredentials =
        ca.credentials(&ca.client("bench", &[SAN_ALL_READERS.to_owned()])?)?;

    // The demo site: 100k cardholders, 2,000 doors.
    let now = Timestamp::now();
    let (holders, doors) = if full { (100_000, 2_000) } else { (2_000, 100) };
    let params = SynthParams {
        holders,
        doors,
        levels: doors / 5,
        seed: 42,
        now,
        pin_every: 0,
    };
    let mut builder = SnapshotBuilder::new();
    let _refused = builder.apply_all(synth::site(&params).into_iter().map(Change::Upsert));
    // The server's own decider, twice on one snapshot: without events,
    // and recording every decision into a spool (`serve --events-dir`).
    let shared = Arc::new(SharedSnapshot::new(builder.publish(now)));
    let decider = Arc::new(SnapshotDecider::new(Arc::clone(&shared)));
    let spool_dir =
        std::env::temp_dir().join(format!("accessd-bench-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool_dir);
    // ACCESSD_BENCH_FSYNC_MS changes the spool's fsync interval (default
    // 10 ms, as `serve`); ACCESSD_BENCH_SINK=discard encodes events but
    // writes nothing (to split encoding from writing);
    // ACCESSD_BENCH_RING_KIB sets the staging ring's size.
    let fsync_ms = std::env::var("ACCESSD_BENCH_FSYNC_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let defaults = SpoolConfig::new(&spool_dir);
    let ring_bytes = std::env::var("ACCESSD_BENCH_RING_KIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(defaults.ring_bytes, |kib| kib << 10);
    let spool = Spool::open(SpoolConfig {
        fsync_interval: Duration::from_millis(fsync_ms),
        ring_bytes,
        ..defaults
    })?;
    let sink: Arc<dyn EventSink> =
        if std::env::var("ACCESSD_BENCH_SINK").as_deref() == Ok("discard") {
            Arc::new(common::Discard)
        } else {
            Arc::new(common::SpoolSink(spool))
        };
    let recording =
        Arc::new(SnapshotDecider::new(shared).with_events(EventLog::new(sink, "bench")));
    let mut rng = fastrand::Rng::with_seed(1);
    let mix: Arc<Vec<MixRequest>> = Arc::new(
        (0..20_000)
            .map(|_| MixRequest {
                reader: synth::reader_in(rng.usize(..doors)),
                credential: synth::card(rng.u64(..holders as u64)),
                pin: None,
            })
            .collect(),
    );

    let local: SocketAddr = ([127, 0, 0, 1], 0).into();
    let limits = Limits::default();
    let (echo_addr, accessd_addr, events_addr) = server_rt.block_on(async {
        let echo = accessd_protocol::bind(local, &server_tls, &limits)?;
        let real = accessd_protocol::bind(local, &server_tls, &limits)?;
        let with_events = accessd_protocol::bind(local, &server_tls, &limits)?;
        let addrs = (
            echo.local_addr()?,
            real.local_addr()?,
            with_events.local_addr()?,
        );
        tokio::spawn(echo_server(echo));
        tokio::spawn(accessd_protocol::run(
            real,
            decider,
            limits.clone(),
            std::future::pending(),
        ));
        tokio::spawn(accessd_protocol::run(
            with_events,
            recording,
            limits.clone(),
            std::future::pending(),
        ));
        Ok::<_, Box<dyn std::error::Error>>(addrs)
    })?;

    println!(
        "quic_echo: {secs} s per case, {} available vCPU(s), site {holders} holders / {doors} doors",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    for case in CASES
        .iter()
        .filter(|c| only.as_deref().is_none_or(|o| o == c.name))
    {
        if !full && case.name != "1x64" && only.is_none() {
            continue;
        }
        let run = |label: &str, addr| -> Result<LoadReport, Box<dyn std::error::Error>> {
            let spec = LoadSpec {
                addr,
                server_name: "localhost".into(),
                connections: case.connections,
                in_flight: case.in_flight,
                batch: case.batch,
                duration: Duration::from_secs_f64(secs),
                rate: None,
                sockets: None,
                handshake_rate: None,
            };
            let report = client_rt.block_on(accessd_protocol::load::run(
                &spec,
                &client_tls,
                mix.clone(),
                Arc::new(Progress::default()),
            ))?;
            println!("{:<12} {label:<8} {}", case.name, row(&report));
            if report.errors > 0 {
                return Err(format!("{} {label}: errors during the run", case.name).into());
            }
            Ok(report)
        };
        let echo = run("echo", echo_addr)?;
        // Without and with events alternate, `rounds` times each: the
        // machine's drift hits both alike; medians are compared.
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            without.push(run("accessd", accessd_addr)?.decisions_per_sec());
            with.push(run("+events", events_addr)?.decisions_per_sec());
        }
        let real = run("accessd", accessd_addr)?;
        without.push(real.decisions_per_sec());
        println!(
            "{:<12} ratio    throughput {:.2} × echo, p50 {:.2} × echo; with events {:.3} × without (medians of {} and {} runs)",
            case.name,
            real.decisions_per_sec() / echo.decisions_per_sec().max(1e-9),
            real.quantile_us(0.5) / echo.quantile_us(0.5).max(1e-9),
            median(&mut with) / median(&mut without).max(1e-9),
            with.len(),
            without.len(),
        );
    }
    let _ = std::fs::remove_dir_all(&spool_dir);
    Ok(())
}
