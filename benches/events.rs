//! The event spool's append path on one core: encoding a chunk of 64
//! access events, and appending it to a spool (one `write` per chunk),
//! beside its floors measured in the same run: copying the same bytes
//! into a buffer, and a plain `write` of them to a file.
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

use accessd_engine::{CredentialKey, Decision, EventId, EventRef, Reason, Subject};
use accessd_loader::events::{Spool, SpoolConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

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
        client: "gateway-b12",
        server: "accessd-1",
    }
}

fn encode(out: &mut Vec<u8>, base: u64) {
    out.clear();
    for i in 0..CHUNK {
        event(base + i).write_record(out);
    }
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("accessd-bench-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spool = Spool::open(SpoolConfig::new(&dir)).unwrap();
    let mut buf = Vec::with_capacity(16 << 10);
    encode(&mut buf, 0);
    let record_bytes = buf.len() / CHUNK as usize;
    eprintln!("one event record: {record_bytes} bytes");

    let mut group = c.benchmark_group("spool_64_events");
    group.throughput(Throughput::Elements(CHUNK));
    let mut n = 0u64;
    group.bench_function("encode", |b| {
        b.iter(|| {
            n += CHUNK;
            encode(&mut buf, n);
            black_box(buf.len())
        })
    });
    group.bench_function("encode_and_append", |b| {
        b.iter(|| {
            n += CHUNK;
            encode(&mut buf, n);
            spool.append(&buf, CHUNK).unwrap();
        })
    });
    // Floors: a memcpy of the same bytes, and one write(2) of them.
    let bytes = buf.clone();
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
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
