//! Memory of a full snapshot (and the builder that keeps it current) per
//! credential, measured with a counting allocator. Target: ≤ 200 bytes per
//! credential at 1M credentials.
//!
//! Run: `cargo bench --bench memory` (prints figures; not a criterion bench)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use accessd_engine::{Change, SnapshotBuilder, synth};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

#[expect(
    unsafe_code,
    reason = "a global allocator is unsafe by definition; this one only counts and forwards to System"
)]
// SAFETY: every method forwards to `System` with the caller's arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // this is a quick smoke run.
    let sizes: &[usize] = if std::env::args().any(|a| a == "--bench") {
        &[100_000, 1_000_000]
    } else {
        &[10_000]
    };
    for &credentials in sizes {
        let params = common::params(credentials);
        let base = live();
        let records = synth::site(&params);
        let records_bytes = live() - base;

        let before = live();
        let mut builder = SnapshotBuilder::new();
        let refused = builder.apply_all(records.into_iter().map(Change::Upsert));
        assert!(refused.is_empty());
        let snapshot = builder.publish(common::now());
        // The records were consumed (freed or moved into the builder).
        let held = live() - before + records_bytes;
        let n = snapshot.stats().credentials;

        // The snapshot alone: what stays alive if the builder is dropped
        // (a read-only gateway loading a checkpoint would hold only this).
        let with_builder = live();
        drop(builder);
        let snapshot_only = held - (with_builder - live());

        println!(
            "{n} credentials: snapshot + builder {:.0} bytes/credential ({:.1} MiB); snapshot alone {:.0} bytes/credential ({:.1} MiB)",
            held as f64 / n as f64,
            held as f64 / (1 << 20) as f64,
            snapshot_only as f64 / n as f64,
            snapshot_only as f64 / (1 << 20) as f64,
        );
        drop(snapshot);
    }
}
