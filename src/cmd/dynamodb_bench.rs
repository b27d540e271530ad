//! `accessd bench-dynamodb`: the DynamoDB source's benchmarks (figures in
//! docs/benchmarks.md): propagation delay from a write to a decision,
//! bootstrap speed, and the snapshot builder alone.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use accessd_engine::synth::{SynthParams, site};
use accessd_engine::{
    AssignmentRecord, CardholderRecord, Change, CredentialKey, CredentialRecord, Presence, Record,
    Request, SnapshotBuilder, Verdict, decide,
};
use accessd_loader::Admin;
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use jiff::Timestamp;

use super::dynamodb::{TableArgs, init_logging, runtime, start_source};

/// Arguments of `accessd bench-dynamodb`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(clap::Subcommand, Debug)]
enum Bench {
    /// Build a snapshot from already-parsed records (no I/O).
    Build {
        /// About how many records (synthetic site).
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
    },
    /// Bootstrap from a table (seed it first with `accessd seed`).
    Bootstrap {
        #[command(flatten)]
        table: TableArgs,
    },
    /// Time from a write acknowledged by DynamoDB to the first decision
    /// that reflects it. Seeds a small site into the table first.
    Propagation {
        #[command(flatten)]
        table: TableArgs,
        /// Writes to time.
        #[arg(long, default_value_t = 200)]
        writes: usize,
        /// The follower's poll interval on an idle shard, in milliseconds.
        #[arg(long, default_value_t = 100)]
        poll_ms: u64,
    },
    /// The event shipper's rate: spools synthetic access events, then
    /// ships them all to TABLE-events (created if missing) and times it.
    Ship {
        #[command(flatten)]
        table: TableArgs,
        /// Events to ship.
        #[arg(long, default_value_t = 20_000)]
        events: u64,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.bench {
        Bench::Build { records } => build(records),
        Bench::Bootstrap { table } => {
            init_logging();
            runtime()?.block_on(bootstrap(table))
        }
        Bench::Propagation {
            table,
            writes,
            poll_ms,
        } => {
            init_logging();
            runtime()?.block_on(propagation(table, writes, Duration::from_millis(poll_ms)))
        }
        Bench::Ship { table, events } => {
            init_logging();
            runtime()?.block_on(ship(table, events))
        }
    }
}

async fn ship(table: TableArgs, events: u64) -> anyhow::Result<ExitCode> {
    use accessd_engine::{Decision, EventId, EventRef, Reason, Subject};
    use accessd_loader::events::ship::{self, ShipConfig};
    use accessd_loader::events::{SHIPPER, Spool, SpoolConfig, SpoolReader};

    let events_table = format!("{}-events", table.table);
    Admin::new(table.backend().await)
        .create_tables(Some(&events_table))
        .await
        .context("cannot create the tables")?;
    let dir = std::env::temp_dir().join(format!("accessd-bench-ship-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spool = Spool::open(SpoolConfig {
        shipping: true,
        ..SpoolConfig::new(&dir)
    })?;
    let now = Timestamp::now().as_millisecond();
    let mut buf = accessd_engine::RecordWriter::default();
    for i in 0..events {
        let reader = accessd_engine::synth::reader_in((i % 2000) as usize);
        let door = accessd_engine::synth::door_id((i % 2000) as usize);
        let holder = format!("H{:07}", i % 100_000);
        let event = EventRef {
            id: EventId::v7(now, u128::from(i)),
            time_ms: now,
            request_id: i as u32,
            reader: &reader,
            credential: accessd_engine::synth::card(i % 100_000),
            subject: Subject {
                door: Some(&door),
                site: Some("hq"),
                holder: Some(&holder),
            },
            decision: Decision::new(Reason::Granted, 5000, 1),
            snapshot_age_ms: 0,
            reader_time_ms: None,
        };
        buf.push("bench", "bench", &event);
        // Records of 64 events, as a busy server's chunks.
        if buf.count() == 64 {
            buf.finish();
            spool.append(buf.bytes(), buf.count())?;
            buf.clear();
        }
    }
    if buf.count() > 0 {
        buf.finish();
        spool.append(buf.bytes(), buf.count())?;
    }
    // Where the shipper will be once it has everything.
    let mut probe = SpoolReader::open_dir(&dir);
    while !probe.read(10_000)?.events.is_empty() {}
    let end = probe.position();
    let reader = spool.reader(SHIPPER)?;
    let client =
        aws_sdk_dynamodb::Client::new(&accessd_loader::sdk_config(&table.settings()).await);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(ship::run(
        client,
        reader,
        ShipConfig::new(events_table.clone()),
        stop_rx,
    ));
    let pos_file = dir.join(format!("{SHIPPER}.pos"));
    let want = format!("{} {}\n", end.segment, end.offset);
    loop {
        if std::fs::read_to_string(&pos_file).is_ok_and(|p| p == want) {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("not shipped within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = task.await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "shipped {events} events to `{events_table}` in {seconds:.2} s: {:.0} events/s",
        events as f64 / seconds
    );
    Ok(ExitCode::SUCCESS)
}

fn build(records: usize) -> anyhow::Result<ExitCode> {
    // synth::site makes about 4.1 records per holder (holder, 1.05
    // credentials, ~2 assignments) plus the topology.
    let params = SynthParams {
        holders: records * 10 / 41,
        doors: 2000,
        levels: 300,
        pin_every: 0,
        now: Timestamp::now(),
        ..SynthParams::default()
    };
    let records = site(&params);
    let count = records.len();
    let changes: Vec<Change> = records.into_iter().map(Change::Upsert).collect();
    let started = Instant::now();
    let mut builder = SnapshotBuilder::new();
    let mut refused = 0usize;
    for change in changes {
        refused += usize::from(builder.apply(change).is_err());
    }
    let snapshot = builder.publish(Timestamp::now());
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "built {count} records ({} credentials, {refused} refused) in {seconds:.2} s: {:.0} records/s",
        snapshot.stats().credentials,
        count as f64 / seconds
    );
    Ok(ExitCode::SUCCESS)
}

async fn bootstrap(table: TableArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let source = start_source(&table, Duration::from_millis(250)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let items = source.stats().scanned();
    let stats = source.snapshot().load().stats();
    println!(
        "bootstrapped {items} items ({} credentials) in {seconds:.2} s: {:.0} items/s",
        stats.credentials,
        items as f64 / seconds
    );
    source.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The `i`-th credential the propagation bench writes.
fn bench_card(i: usize) -> CredentialKey {
    CredentialKey::card(accessd_engine::CardFormat::H10301, 7, 10_000 + i as u64)
}

async fn propagation(table: TableArgs, writes: usize, poll: Duration) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(table.backend().await);
    admin
        .create_tables(None)
        .await
        .context("cannot create the table")?;
    // A small site with one holder who may pass every door at any time.
    let mut records = site(&SynthParams {
        holders: 20,
        doors: 8,
        levels: 4,
        now: Timestamp::now(),
        ..SynthParams::default()
    });
    let reader = accessd_engine::synth::reader_in(0);
    records.push(Record::Cardholder(CardholderRecord {
        id: "bench".into(),
        status: Default::default(),
        valid_from: None,
        valid_until: None,
        lockdown_override: false,
    }));
    records.push(Record::AccessLevel(accessd_engine::AccessLevelRecord {
        id: "bench-all".into(),
        doors: vec![accessd_engine::synth::door_id(0)],
        door_groups: vec![],
        schedule: "always".into(),
    }));
    records.push(Record::Assignment(AssignmentRecord {
        holder: "bench".into(),
        level: "bench-all".into(),
        valid_from: None,
        valid_until: None,
    }));
    admin.put_all(&records, |_| {}).await?;
    let source = start_source(&table, poll).await?;
    let shared = std::sync::Arc::clone(source.snapshot());
    let presence = Presence::new();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..writes {
        // Land writes at random points of the poll cycle.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(
            0..poll.as_millis() as u64 + 1,
        )))
        .await;
        let card = bench_card(i);
        let record = Record::Credential(CredentialRecord {
            card,
            holder: "bench".into(),
            status: Default::default(),
            valid_from: None,
            valid_until: None,
            pin: None,
        });
        admin.put(&record).await?;
        let acked = Instant::now();
        let deadline = acked + Duration::from_secs(10);
        loop {
            let request = Request {
                reader: &reader,
                credential: card,
                pin: None,
            };
            let decision = decide(&shared.load(), &presence, &request, Timestamp::now());
            if decision.verdict == Verdict::Grant {
                break;
            }
            if Instant::now() > deadline {
                bail!("write {i} ({card}) not reflected within 10 s (last: {decision:?})");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        histogram.record(acked.elapsed().as_micros() as u64)?;
    }
    source.shutdown().await;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "propagation over {writes} writes, poll {} ms: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        poll.as_millis(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        histogram.max() as f64 / 1000.0
    );
    Ok(ExitCode::SUCCESS)
}
