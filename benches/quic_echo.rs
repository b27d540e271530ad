//! The floor under the QUIC service: a bare quinn echo server with the same
//! TLS, transport limits and framing as accessd, driven by the same load
//! engine as `accessd load`, next to the real accessd server on the demo
//! site — measured in one run so the ratios are fair.
//!
//! ```text
//! cargo bench --bench quic_echo                  # unpinned, 3 s per case
//! taskset -c 0 cargo bench --bench quic_echo     # client and server on one vCPU
//! cargo bench --bench quic_echo -- --secs 5 --only 1x64
//! ```
//!
//! Without `--bench` (as under `cargo test --benches`) it runs one short
//! case as a smoke test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use accessd_engine::synth::{self, SynthParams};
use accessd_engine::{Change, Decision, Presence, Reason, SharedSnapshot, SnapshotBuilder, decide};
use accessd_protocol::load::{LoadReport, LoadSpec, MixRequest, Progress};
use accessd_protocol::{
    Answer, Asked, Decider, DevCa, Journal, Limits, SAN_ALL_READERS, TlsCredentials,
};
use jiff::Timestamp;

/// The binary's decider, minus `NotReady` (the bench site is loaded).
struct BenchDecider {
    snapshot: SharedSnapshot,
    presence: Presence,
}

impl Decider for BenchDecider {
    fn decide(&self, asked: &Asked<'_>, _journal: &mut Journal) -> Answer {
        let snapshot = self.snapshot.load();
        let now = Timestamp::now();
        Answer {
            decision: decide(&snapshot, &self.presence, &asked.request, now),
            snapshot_age_ms: 0,
        }
    }

    fn refuse(&self, _asked: &Asked<'_>, reason: Reason, _journal: &mut Journal) -> Answer {
        Answer {
            decision: Decision::deny(reason, self.snapshot.load().version()),
            snapshot_age_ms: 0,
        }
    }
}

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
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(Some(n)) = recv.read(&mut buf).await {
                        let Some(chunk) = buf.get(..n) else { return };
                        if send.write_all(chunk).await.is_err() {
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

const CASES: [Case; 4] = [
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
    Case {
        name: "1x4-batch64",
        connections: 1,
        in_flight: 4,
        batch: 64,
    },
];

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
    let secs: f64 = arg("--secs").map_or(Ok(if full { 3.0 } else { 0.2 }), |s| s.parse())?;
    let only = arg("--only");

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
    let decider = Arc::new(BenchDecider {
        snapshot: SharedSnapshot::new(builder.publish(now)),
        presence: Presence::new(),
    });
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
    let (echo_addr, accessd_addr) = server_rt.block_on(async {
        let echo = accessd_protocol::bind(local, &server_tls, &limits)?;
        let real = accessd_protocol::bind(local, &server_tls, &limits)?;
        let addrs = (echo.local_addr()?, real.local_addr()?);
        tokio::spawn(echo_server(echo));
        tokio::spawn(accessd_protocol::run(
            real,
            decider,
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
        let mut results = Vec::new();
        for (label, addr) in [("echo", echo_addr), ("accessd", accessd_addr)] {
            let spec = LoadSpec {
                addr,
                server_name: "localhost".into(),
                connections: case.connections,
                in_flight: case.in_flight,
                batch: case.batch,
                duration: Duration::from_secs_f64(secs),
                rate: None,
            };
            let report = client_rt.block_on(accessd_protocol::load::run(
                &spec,
                &client_tls,
                mix.clone(),
                Arc::new(Progress::default()),
            ))?;
            println!("{:<12} {label:<8} {}", case.name, row(&report));
            results.push(report);
        }
        if let [echo, real] = results.as_slice() {
            println!(
                "{:<12} ratio    throughput {:.2} × echo, p50 {:.2} × echo",
                case.name,
                real.decisions_per_sec() / echo.decisions_per_sec().max(1e-9),
                real.quantile_us(0.5) / echo.quantile_us(0.5).max(1e-9),
            );
            if real.errors > 0 || echo.errors > 0 {
                return Err(format!("{}: errors during the run", case.name).into());
            }
        }
    }
    Ok(())
}
