//! `decide` at 1k, 100k and 1M credentials (2,000 doors, 500 levels, real
//! schedules, random requests). Target: median ≤ 100 ns at 1M on one core.
//!
//! Run: `cargo bench --bench decide`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::hint::black_box;

use accessd_engine::{Presence, Request, decide};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    for credentials in [1_000usize, 100_000, 1_000_000] {
        let params = common::params(credentials);
        let (_builder, snapshot) = common::build(&params);
        let real = snapshot.stats().credentials;
        let requests = common::requests(&params, real, 1 << 16);
        let presence = Presence::new();
        let now = common::now();
        let mut i = 0usize;
        group.bench_function(format!("{credentials}_credentials"), |b| {
            b.iter(|| {
                let r = &requests[i & ((1 << 16) - 1)];
                i = i.wrapping_add(1);
                let request = Request {
                    reader: &r.reader,
                    credential: r.credential,
                    pin: r.pin.as_deref().map(str::as_bytes),
                };
                black_box(decide(&snapshot, &presence, black_box(&request), now))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
