//! The event spool's append path on one core: encoding a chunk of 64
//! access events, and appending it to a spool (a copy into its staging
//! ring; the flusher thread writes the ring to the segment),
//! beside its floors measured in the same run: copying the same bytes
//! into a buffer, and a plain `write` of them to a file. Then the server's
//! decider without and with events, per chunk of 64 requests.
//!
//! Run: `cargo bench --bench events`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::io::Write;

mod common;

use std::sync::Arc;

use accessd_engine::{
    CredentialKey, Decision, EventId, EventRef, Reason, RecordWriter, Request, SharedSnapshot,
    Subject,
};
use accessd_loader::events::{Spool, SpoolConfig};
use accessd_protocol::{Asked, Decider, EventLog, Journal, SnapshotDecider};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The server's decider on a 100k-credential site, without events, with
/// events encoded but dropped, and with events appended to a spool; 64
/// requests a chunk, as a pipelining client's reads deliver them.
fn bench_decider(c: &mut Criterion, dir: &std::path::Path) {
    let params = common::params(100_000);
    let (_, snapshot) = common::build(&params);
    let requests = common::requests(&params, 100_000, 4096);
    let shared = Arc::new(SharedSnapshot::new(snapshot));
    let now = common::now();
    let spool = Spool::open(SpoolConfig::new(dir.join("decider"))).unwrap();
    let deciders = [
        ("without_events", SnapshotDecider::new(Arc::clone(&shared))),
        (
            "events_discarded",
            SnapshotDecider::new(Arc::clone(&shared))
                .with_events(EventLog::new(Arc::new(common::Discard), "bench")),
        ),
        (
            "events_spooled",
            SnapshotDecider::new(Arc::clone(&shared))
                .with_events(EventLog::new(Arc::new(common::SpoolSink(spool)), "bench")),
        ),
    ];
    let mut group = c.benchmark_group("decider_100k_chunk_of_64");
    group.throughput(Throughput::Elements(CHUNK));
    for (name, decider) in deciders {
        let decider = decider.with_clock(move || now);
        let mut journal = Journal::default();
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                let chunk = decider.begin();
                for _ in 0..CHUNK {
                    let r = &requests[i % requests.len()];
                    i += 1;
                    let asked = Asked {
                        request: Request {
                            reader: &r.reader,
                            credential: r.credential,
                            pin: r.pin.as_deref().map(str::as_bytes),
                        },
                        request_id: i as u32,
                        reader_time_ms: None,
                        client: "bench",
                    };
                    black_box(decider.decide(&chunk, &asked, &mut journal));
                }
                decider.commit(&mut journal);
            })
        });
    }
    group.finish();
}

const CHUNK: u64 = 64;

fn event(i: u64) -> EventRef<'static> {
    EventRef {
        id: EventId::v7(1_764_500_000_000, u128::from(i)),
        time_ms: 1_764_500_000_000,
        request_id: i as u32,
        reader: "R000123-in",
        credential: CredentialKey::card(accessd_engine::CardFormat::H10301, 12, i % 65_536),
        subject: Subject {
            door: Some("D000123"),
            site: Some("hq"),
            holder: Some("H0012345"),
        },
        decision: Decision::new(Reason::Granted, 5000, 7),
        snapshot_age_ms: 120,
        reader_time_ms: Some(1_764_500_000_000),
    }
}

/// One record of a chunk of 64 events, as the server writes it.
fn encode(out: &mut RecordWriter, base: u64) {
    out.clear();
    for i in 0..CHUNK {
        out.push("gateway-b12", "accessd-1", &event(base + i));
    }
    out.finish();
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("accessd-bench-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spool = Spool::open(SpoolConfig::new(&dir)).unwrap();
    let mut buf = RecordWriter::default();
    encode(&mut buf, 0);
    eprintln!("a record of {CHUNK} events: {} bytes", buf.bytes().len());

    let mut group = c.benchmark_group("spool_64_events");
    group.throughput(Throughput::Elements(CHUNK));
    let mut n = 0u64;
    group.bench_function("encode", |b| {
        b.iter(|| {
            n += CHUNK;
            encode(&mut buf, n);
            black_box(buf.bytes().len())
        })
    });
    group.bench_function("encode_and_append", |b| {
        b.iter(|| {
            n += CHUNK;
            encode(&mut buf, n);
            spool.append(buf.bytes(), CHUNK).unwrap();
        })
    });
    // Floors: a memcpy of the same bytes, and one write(2) of them.
    let bytes = buf.bytes().to_vec();
    let mut copy = Vec::with_capacity(bytes.len());
    group.bench_function("floor_memcpy", |b| {
        b.iter(|| {
            copy.clear();
            copy.extend_from_slice(black_box(&bytes));
            black_box(copy.len())
        })
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("floor.bin"))
        .unwrap();
    group.bench_function("floor_write", |b| {
        b.iter(|| file.write_all(black_box(&bytes)).unwrap())
    });
    group.finish();
    drop(spool);
    bench_decider(c, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
