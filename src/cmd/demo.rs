//! `accessd demo`: the whole path on one machine. A deterministic campus
//! (100k cardholders, 2,000 doors) in memory, the QUIC server on loopback
//! with fresh certificates, a handful of real decisions with their reasons,
//! a load run, and a clean shutdown.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use accessd_engine::synth::{self, SynthParams};
use accessd_engine::{
    CardFormat, Change, CredentialKey, Presence, Reason, Request, SharedSnapshot, Snapshot,
    SnapshotBuilder, Verdict, decide,
};
use accessd_loader::events::{Spool, SpoolConfig};
use accessd_protocol::{Client, DevCa, Limits, SAN_ALL_READERS, SAN_READER};
use anyhow::Context;
use jiff::Timestamp;

use super::load::{Shape, Summary, mix_params, run_load, spec};
use accessd_protocol::SnapshotDecider;

/// Arguments of `accessd demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Cardholders in the demo site.
    #[arg(long, default_value_t = 100_000)]
    holders: usize,
    /// Doors in the demo site (two readers each).
    #[arg(long, default_value_t = 2_000)]
    doors: usize,
    /// Record every decision as an access event in a spool in this
    /// directory, as `serve --events-dir` does (read it with `accessd
    /// events tail --dir DIR`).
    #[arg(long)]
    events_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    shape: Shape,
}

/// Prints to stdout, or to stderr when stdout is reserved for `--json`.
macro_rules! say {
    ($json:expr, $($arg:tt)*) => {
        if $json { eprintln!($($arg)*) } else { println!($($arg)*) }
    };
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::telemetry::init_logs("warn");
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(demo(args))
}

fn build_site(args: &Args, now: Timestamp) -> anyhow::Result<Snapshot> {
    let params = SynthParams {
        holders: args.holders,
        doors: args.doors,
        levels: (args.doors / 5).max(1),
        seed: 42,
        now,
        // PIN hashing is the slow part of generation: keep it sparse.
        pin_every: 50,
    };
    let mut builder = SnapshotBuilder::new();
    let refused = builder.apply_all(synth::site(&params).into_iter().map(Change::Upsert));
    if let Some((_, e)) = refused.first() {
        anyhow::bail!("synthetic site refused by the builder: {e}");
    }
    Ok(builder.publish(now))
}

/// A reader id and a card.
type Pair = (String, CredentialKey);

/// A (reader, card) pair that the engine decides with `reason` now, found
/// by a bounded deterministic search.
fn find(
    snapshot: &Snapshot,
    reason: Reason,
    holders: usize,
    doors: usize,
    now: Timestamp,
) -> Option<Pair> {
    let presence = Presence::new();
    let mut rng = fastrand::Rng::with_seed(reason.code().into());
    for _ in 0..200_000 {
        let reader = synth::reader_in(rng.usize(..doors.max(1)));
        let card = synth::card(rng.u64(..holders.max(1) as u64));
        let request = Request {
            reader: &reader,
            credential: card,
            pin: None,
        };
        if decide(snapshot, &presence, &request, now).reason == reason {
            return Some((reader, card));
        }
    }
    None
}

async fn demo(args: Args) -> anyhow::Result<ExitCode> {
    let json = args.shape.json;
    let now = Timestamp::now();
    let t = Instant::now();
    let snapshot = build_site(&args, now)?;
    let stats = snapshot.stats();
    say!(
        json,
        "demo site: {} credentials, {} doors, {} readers, {} access levels (built in {:.1} s)",
        stats.credentials,
        stats.doors,
        stats.readers,
        stats.access_levels,
        t.elapsed().as_secs_f64()
    );

    // Fresh certificates: a server one, a gateway that may ask for every
    // reader, and one reader that may only ask for itself.
    let ca = DevCa::new("accessd demo CA")?;
    let server_tls = ca.credentials(&ca.server(&["localhost"])?)?;
    let gateway_tls = ca.credentials(&ca.client("demo gateway", &[SAN_ALL_READERS.to_owned()])?)?;
    let own_reader = synth::reader_in(0);
    let reader_tls =
        ca.credentials(&ca.client("demo reader", &[format!("{SAN_READER}{own_reader}")])?)?;

    let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let limits = Limits::default();
    let endpoint = accessd_protocol::bind(listen, &server_tls, &limits)?;
    let addr = endpoint.local_addr()?;
    say!(
        json,
        "server listening on {addr} (QUIC, mutual TLS, ALPN accessd/1)"
    );

    // Pick the examples before the snapshot moves into the server.
    let examples: Vec<(&str, Reason, Option<Pair>)> = vec![
        (
            "grant",
            Reason::Granted,
            find(&snapshot, Reason::Granted, args.holders, args.doors, now),
        ),
        (
            "outside schedule",
            Reason::OutsideSchedule,
            find(
                &snapshot,
                Reason::OutsideSchedule,
                args.holders,
                args.doors,
                now,
            ),
        ),
        (
            "revoked card",
            Reason::CredentialRevoked,
            find(
                &snapshot,
                Reason::CredentialRevoked,
                args.holders,
                args.doors,
                now,
            ),
        ),
        (
            "unknown card",
            Reason::UnknownCredential,
            Some((
                synth::reader_in(1),
                CredentialKey::card(CardFormat::H10301, 1, 99_999),
            )),
        ),
        (
            "wrong door",
            Reason::NoAccess,
            find(&snapshot, Reason::NoAccess, args.holders, args.doors, now),
        ),
    ];
    let mix = crate::mix::build(&snapshot, mix_params(&args.shape), now);
    let shared = Arc::new(SharedSnapshot::new(snapshot));
    let mut decider = SnapshotDecider::new(shared);
    let spool = match &args.events_dir {
        Some(dir) => {
            let spool = Spool::open(SpoolConfig::new(dir))
                .with_context(|| format!("cannot open the event spool in `{}`", dir.display()))?;
            decider = decider.with_events(super::events::event_log(&spool, "demo"));
            say!(json, "recording access events in {}", dir.display());
            Some(spool)
        }
        None => None,
    };
    let decider = Arc::new(decider);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(accessd_protocol::run(endpoint, decider, limits, async {
        let _ = stop_rx.await;
    }));

    say!(json, "\na few real decisions, asked over QUIC:");
    let gateway = Client::connect(addr, "localhost", &gateway_tls).await?;
    for (label, expected, pair) in &examples {
        let Some((reader, card)) = pair else {
            say!(
                json,
                "  {label:<17} (no such pair at this hour of the demo site)"
            );
            continue;
        };
        let t = Instant::now();
        let r = gateway
            .decide(&Request {
                reader,
                credential: *card,
                pin: None,
            })
            .await
            .with_context(|| format!("asking for the {label} example"))?;
        let rtt = t.elapsed();
        let verdict = if r.verdict == Verdict::Grant {
            "GRANT"
        } else {
            "DENY "
        };
        let reason = r
            .reason()
            .map_or_else(|| r.reason.to_string(), |x| x.to_string());
        let unlock = if r.verdict == Verdict::Grant {
            format!(", unlock {} ms", r.unlock_ms)
        } else {
            String::new()
        };
        say!(
            json,
            "  {label:<17} {verdict} {reason:<20} reader {reader:<16} card {card}{unlock}  ({} µs)",
            rtt.as_micros()
        );
        if r.reason != expected.code() {
            say!(
                json,
                "    (expected {expected}: the site changed between search and ask)"
            );
        }
    }
    // A reader certificate names its own reader: asking for another is
    // refused by the server, whatever the data says.
    let reader_client = Client::connect(addr, "localhost", &reader_tls).await?;
    let other = synth::reader_in(1);
    let card = synth::card(0);
    let r = reader_client
        .decide(&Request {
            reader: &other,
            credential: card,
            pin: None,
        })
        .await?;
    let reason = r
        .reason()
        .map_or_else(|| r.reason.to_string(), |x| x.to_string());
    say!(
        json,
        "  {:<17} DENY  {reason:<20} reader {other:<16} card {card}  (certificate names {own_reader} only)",
        "other's reader"
    );
    reader_client.close().await;
    gateway.close().await;

    let spec = spec(addr, "localhost", args.duration, &args.shape)?;
    say!(json, "\nload for {:.0} s ...", args.duration);
    let report = run_load(&spec, &gateway_tls, Arc::new(mix), json).await?;
    let summary = Summary::new(&spec, &report);
    summary.print(json)?;

    let _ = stop_tx.send(());
    server.await.context("the server task failed")?;
    say!(json, "\nserver shut down cleanly");
    if let Some(spool) = spool {
        spool.sync()?;
        say!(
            json,
            "access events: {:.1} MiB in {} (read them with `accessd events tail --dir {} --last 5`)",
            spool.total_bytes() as f64 / f64::from(1 << 20),
            spool.dir().display(),
            spool.dir().display()
        );
    }
    Ok(if summary.errors() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
