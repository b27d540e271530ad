//! `accessd load`: the load generator, against a running server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use accessd_protocol::TlsCredentials;
use accessd_protocol::load::{LoadReport, LoadSpec, MixRequest, Progress};
use anyhow::Context;
use jiff::Timestamp;
use serde::Serialize;

use super::serve::{ServerArgs, TlsArgs};
use crate::mix::{self, MixParams};

/// The shape of a load run, shared with `accessd demo`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Shape {
    /// Connections (each its own UDP socket, like separate readers).
    #[arg(long, default_value_t = 4)]
    pub(crate) connections: usize,
    /// Frames in flight per connection (closed loop), or the cap on them
    /// (open loop).
    #[arg(long, default_value_t = 32)]
    pub(crate) in_flight: usize,
    /// Requests per frame; above 1, batch frames are sent.
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    /// Open loop: frames per second in total, each connection sending at
    /// random (Poisson) times at its share. Without it: closed loop.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// UDP sockets the connections share (round robin). Default: one per
    /// connection, like separate readers; thousands of connections need
    /// fewer (file descriptors).
    #[arg(long)]
    pub(crate) sockets: Option<usize>,
    /// Handshakes started per second while connecting (before the
    /// measured window). Default: as fast as the server completes them,
    /// 64 at a time.
    #[arg(long)]
    pub(crate) handshake_rate: Option<f64>,
    /// Share of unknown cards in the mix.
    #[arg(long, default_value_t = 0.05)]
    pub(crate) unknown_share: f64,
    /// Share of real cards at doors they do not open.
    #[arg(long, default_value_t = 0.10)]
    pub(crate) wrong_door_share: f64,
    /// Print the summary as one JSON object on one line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Arguments of `accessd load`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    target: ServerArgs,
    /// The site file the server serves: the mix is drawn from it.
    #[arg(long)]
    site: PathBuf,
    #[command(flatten)]
    tls: TlsArgs,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[command(flatten)]
    shape: Shape,
}

/// The summary, as printed with `--json`.
#[derive(Serialize, Debug)]
pub(crate) struct Summary {
    mode: &'static str,
    connections: usize,
    in_flight: usize,
    batch: usize,
    duration_s: f64,
    /// Frames answered (equal to decisions when batch = 1).
    requests: u64,
    decisions: u64,
    grants: u64,
    denies: u64,
    errors: u64,
    /// Frames per second.
    rps: f64,
    decisions_per_s: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// Round trips, from each frame's actual send (open loop: without the
    /// generator's own lag).
    rtt_p50_us: f64,
    rtt_p99_us: f64,
    /// Open loop: frames offered, sent, and held back by the in-flight cap.
    offered: u64,
    sent: u64,
    held_back: u64,
    /// Open loop: the generator's own schedule lag.
    lag_p99_us: f64,
    /// Connecting, before the measured window.
    connect_s: f64,
    handshake_p50_us: f64,
    handshake_p99_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_rss_per_connection: Option<u64>,
    /// Set when the generator, not the server, limited the figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    generator_behind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

impl Summary {
    pub(crate) fn new(spec: &LoadSpec, r: &LoadReport) -> Self {
        let round = |x: f64| (x * 10.0).round() / 10.0;
        Self {
            mode: if spec.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            connections: spec.connections,
            in_flight: spec.in_flight,
            batch: spec.batch,
            duration_s: round(r.elapsed.as_secs_f64() * 100.0) / 100.0,
            requests: r.frames,
            decisions: r.decisions,
            grants: r.grants,
            denies: r.denies,
            errors: r.errors,
            rps: r.frames_per_sec().round(),
            decisions_per_s: r.decisions_per_sec().round(),
            p50_us: round(r.quantile_us(0.50)),
            p90_us: round(r.quantile_us(0.90)),
            p99_us: round(r.quantile_us(0.99)),
            p999_us: round(r.quantile_us(0.999)),
            max_us: round(r.max_us()),
            rtt_p50_us: round(r.round_trip_ns.value_at_quantile(0.5) as f64 / 1000.0),
            rtt_p99_us: round(r.round_trip_ns.value_at_quantile(0.99) as f64 / 1000.0),
            offered: r.offered,
            sent: r.sent,
            held_back: r.held_back,
            lag_p99_us: round(r.lag_ns.value_at_quantile(0.99) as f64 / 1000.0),
            connect_s: round(r.connect_elapsed.as_secs_f64() * 100.0) / 100.0,
            handshake_p50_us: round(r.handshake_ns.value_at_quantile(0.5) as f64 / 1000.0),
            handshake_p99_us: round(r.handshake_ns.value_at_quantile(0.99) as f64 / 1000.0),
            client_rss_per_connection: r.client_rss_per_connection,
            generator_behind: if spec.rate.is_some() {
                r.generator_behind()
            } else {
                None
            },
            first_error: r.first_error.clone(),
        }
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors
    }

    pub(crate) fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        println!(
            "load: {} loop, {} connection(s) × {} in flight, batch {}, {:.1} s",
            self.mode, self.connections, self.in_flight, self.batch, self.duration_s
        );
        println!(
            "  {} requests ({} decisions: {} grant, {} deny), {} error(s)",
            self.requests, self.decisions, self.grants, self.denies, self.errors
        );
        println!(
            "  {:.0} requests/s, {:.0} decisions/s",
            self.rps, self.decisions_per_s
        );
        println!(
            "  latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        );
        if self.mode == "open" {
            println!(
                "  round trip µs (from the actual send): p50 {}  p99 {}; schedule lag p99 {} µs",
                self.rtt_p50_us, self.rtt_p99_us, self.lag_p99_us
            );
            println!(
                "  offered {} frames, sent {}, {} held back by the in-flight cap",
                self.offered, self.sent, self.held_back
            );
        }
        println!(
            "  connected in {:.2} s (handshake p50 {} µs, p99 {} µs){}",
            self.connect_s,
            self.handshake_p50_us,
            self.handshake_p99_us,
            self.client_rss_per_connection
                .map(|b| format!(
                    ", client memory {:.1} KiB per connection",
                    b as f64 / 1024.0
                ))
                .unwrap_or_default()
        );
        if let Some(why) = &self.generator_behind {
            println!("  WARNING: {why}");
        }
        if let Some(e) = &self.first_error {
            println!("  first error: {e}");
        }
        Ok(())
    }
}

/// Runs a load with a progress line on stderr (when it is a terminal and
/// not `quiet`).
pub(crate) async fn run_load(
    spec: &LoadSpec,
    tls: &TlsCredentials,
    mix: Arc<Vec<MixRequest>>,
    quiet: bool,
) -> anyhow::Result<LoadReport> {
    let progress = Arc::new(Progress::default());
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    };
    let ticker = {
        let progress = progress.clone();
        let bar = bar.clone();
        let start = std::time::Instant::now();
        let total = spec.duration.as_secs_f64();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last = (0u64, std::time::Instant::now());
            loop {
                tick.tick().await;
                let done = progress.decisions.load(Ordering::Relaxed);
                let now = std::time::Instant::now();
                let rate =
                    (done - last.0) as f64 / now.duration_since(last.1).as_secs_f64().max(1e-3);
                last = (done, now);
                bar.set_message(format!(
                    "{:>5.1}/{total:.0} s  {done} decisions  {rate:>9.0}/s  {} error(s)",
                    start.elapsed().as_secs_f64().min(total),
                    progress.errors.load(Ordering::Relaxed)
                ));
            }
        })
    };
    let report = accessd_protocol::load::run(spec, tls, mix, progress).await;
    ticker.abort();
    bar.finish_and_clear();
    Ok(report?)
}

pub(crate) fn spec(
    addr: SocketAddr,
    server_name: &str,
    duration: f64,
    shape: &Shape,
) -> anyhow::Result<LoadSpec> {
    anyhow::ensure!(
        duration.is_finite() && duration > 0.0 && duration <= 86_400.0,
        "--duration must be between 0 and 86400 seconds"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&shape.unknown_share)
            && (0.0..=1.0).contains(&shape.wrong_door_share)
            && shape.unknown_share + shape.wrong_door_share <= 1.0,
        "the unknown and wrong-door shares must be between 0 and 1 and add up to at most 1"
    );
    Ok(LoadSpec {
        addr,
        server_name: server_name.to_owned(),
        connections: shape.connections,
        in_flight: shape.in_flight,
        batch: shape.batch,
        duration: Duration::from_secs_f64(duration),
        rate: shape.rate,
        sockets: shape.sockets,
        handshake_rate: shape.handshake_rate,
    })
}

pub(crate) fn mix_params(shape: &Shape) -> MixParams {
    MixParams {
        size: 20_000,
        unknown: shape.unknown_share,
        wrong_door: shape.wrong_door_share,
        seed: 7,
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = spec(
        args.target.server,
        &args.target.server_name,
        args.duration,
        &args.shape,
    )?;
    let tls = args.tls.load()?;
    let now = Timestamp::now();
    let snapshot = super::site::load_snapshot(&args.site, now)?;
    let mix = mix::build(&snapshot, mix_params(&args.shape), now);
    anyhow::ensure!(!mix.is_empty(), "the site has no reader to ask for");
    drop(snapshot);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let report = runtime.block_on(run_load(&spec, &tls, Arc::new(mix), args.shape.json))?;
    let summary = Summary::new(&spec, &report);
    summary.print(args.shape.json)?;
    Ok(if summary.errors() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
