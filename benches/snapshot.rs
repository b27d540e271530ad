//! Snapshot updates at 1M credentials: one change applied and published
//! (target ≤ 50 µs), and a full build (target ≤ 2 s).
//!
//! Run: `cargo bench --bench snapshot`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::hint::black_box;
use std::sync::Arc;

use accessd_engine::{
    AssignmentRecord, Change, CredentialRecord, CredentialStatus, DoorRecord, Record,
    SharedSnapshot, SnapshotBuilder, synth,
};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const CREDENTIALS: usize = 1_000_000;

fn bench_changes(c: &mut Criterion) {
    let params = common::params(CREDENTIALS);
    let (mut builder, snapshot) = common::build(&params);
    // The published snapshot stays shared, as in the server, so every
    // change copies its path instead of mutating in place.
    let shared = SharedSnapshot::new(snapshot);
    let now = common::now();
    let mut group = c.benchmark_group("publish_one_change_1M");

    let mut n = 0u64;
    group.bench_function("credential_upsert", |b| {
        b.iter(|| {
            n += 1;
            let record = CredentialRecord {
                card: synth::card(n % 1000 * 997),
                holder: format!("H{:07}", n % 1000 * 997 * 20 / 21),
                status: if n.is_multiple_of(2) {
                    CredentialStatus::Active
                } else {
                    CredentialStatus::Suspended
                },
                valid_from: None,
                valid_until: None,
                pin: None,
            };
            builder
                .apply(Change::Upsert(Record::Credential(record)))
                .unwrap();
            shared.store(Arc::new(builder.publish(now)));
        })
    });

    group.bench_function("assignment_upsert", |b| {
        b.iter(|| {
            n += 1;
            let record = AssignmentRecord {
                holder: format!("H{:07}", n % 1000 * 907),
                level: format!("level-{:04}", n % 500),
                valid_from: None,
                valid_until: None,
            };
            builder
                .apply(Change::Upsert(Record::Assignment(record)))
                .unwrap();
            shared.store(Arc::new(builder.publish(now)));
        })
    });

    // A door change rebuilds the small tables (2,000 doors, 4,000 readers,
    // 500 levels); credentials are shared untouched.
    group.bench_function("door_upsert", |b| {
        b.iter(|| {
            n += 1;
            let record = DoorRecord {
                id: synth::door_id((n % 2000) as usize),
                site: "nyc".into(),
                mode: Default::default(),
                unlock_ms: 5000 + (n % 2) as u32,
                area: None,
            };
            builder.apply(Change::Upsert(Record::Door(record))).unwrap();
            shared.store(Arc::new(builder.publish(now)));
        })
    });
    group.finish();
}

fn bench_full_build(c: &mut Criterion) {
    let params = common::params(CREDENTIALS);
    let records: Vec<Change> = synth::site(&params)
        .into_iter()
        .map(Change::Upsert)
        .collect();
    let mut group = c.benchmark_group("full_build_1M");
    group.sample_size(10);
    group.bench_function("apply_all_and_publish", |b| {
        b.iter_batched(
            || records.clone(),
            |records| {
                let mut builder = SnapshotBuilder::new();
                let refused = builder.apply_all(records);
                assert!(refused.is_empty());
                let snapshot = builder.publish(common::now());
                // Returned, so criterion drops both outside the timing.
                black_box((builder, snapshot))
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_changes, bench_full_build);
criterion_main!(benches);
