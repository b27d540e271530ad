//! `decide` at 1k, 100k and 1M credentials (2,000 doors, 500 levels, real
//! schedules, random requests), each beside its floor measured in the same
//! run. Target: accessd's median ≤ 2 × the floor's at 1M on one core.
//!
//! The floor (`decide/plain_map_N`) is the least a decision can cost: a
//! plain FxHash map (one `hashbrown` table behind `std::collections::HashMap`)
//! from the same `CredentialKey` to a small entry (up to three level
//! numbers), built from the same synthetic records and queried with the
//! same request stream; one hash, one lookup, a bit test per level in a
//! door bitset. No reader lookup (the reader is resolved to a door index
//! before timing), no status, validity, holder, schedule, PIN or
//! anti-passback, no persistence. What accessd costs beyond it is the
//! price of everything else.
//!
//! Run: `cargo bench --bench decide`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;

use accessd_engine::{Change, CredentialKey, Presence, Record, Request, SnapshotBuilder, decide};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const REQUESTS: usize = 1 << 16;
/// Requests per batch in the batch cases (`REQUESTS` is a multiple).
const BATCH: usize = 16;

/// FxHash as rustc has long used it (rustc-hash 1.x): one multiply and
/// rotate per word. Written out here so the floor needs no dependency.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(n.into());
    }
    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(n.into());
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(n.into());
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The floor's entry: the credential's level numbers, inline.
#[derive(Clone, Copy, Default)]
struct PlainEntry {
    len: u8,
    levels: [u32; 3],
}

/// The floor: card → levels, and a door bitset per level.
struct PlainMap {
    creds: HashMap<CredentialKey, PlainEntry, BuildHasherDefault<FxHasher>>,
    /// `words` u64s per level, level after level.
    bits: Vec<u64>,
    words: usize,
    /// Reader id → door index, used only to turn the request stream into
    /// (card, door) pairs before timing.
    readers: HashMap<String, u32>,
}

impl PlainMap {
    /// Built from the same records the snapshot is built from. Validity
    /// windows, statuses and schedules are ignored: the floor only does the
    /// lookup and the bit test.
    fn new(records: &[Record]) -> Self {
        let mut doors = HashMap::new();
        let mut groups: HashMap<&str, &[String]> = HashMap::new();
        for record in records {
            match record {
                Record::Door(d) => {
                    let n = doors.len() as u32;
                    doors.insert(d.id.as_str(), n);
                }
                Record::DoorGroup(g) => drop(groups.insert(g.id.as_str(), &g.doors[..])),
                _ => {}
            }
        }
        let words = doors.len().div_ceil(64);
        let mut levels = HashMap::new();
        let mut bits = Vec::new();
        let mut readers = HashMap::new();
        let mut holders: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut creds = HashMap::default();
        let set = |bits: &mut Vec<u64>, level: usize, door: &str| {
            if let Some(&d) = doors.get(door) {
                bits[level * words + d as usize / 64] |= 1 << (d % 64);
            }
        };
        for record in records {
            match record {
                Record::Reader(r) => {
                    if let Some(&d) = doors.get(r.door.as_str()) {
                        readers.insert(r.id.clone(), d);
                    }
                }
                Record::AccessLevel(l) => {
                    let n = levels.len();
                    levels.insert(l.id.as_str(), n as u32);
                    bits.resize((n + 1) * words, 0);
                    for door in &l.doors {
                        set(&mut bits, n, door);
                    }
                    for group in &l.door_groups {
                        for door in groups.get(group.as_str()).copied().unwrap_or_default() {
                            set(&mut bits, n, door);
                        }
                    }
                }
                Record::Assignment(a) => {
                    if let Some(&level) = levels.get(a.level.as_str()) {
                        holders.entry(a.holder.as_str()).or_default().push(level);
                    }
                }
                Record::Credential(c) => {
                    let mut entry = PlainEntry::default();
                    for &level in holders.get(c.holder.as_str()).into_iter().flatten().take(3) {
                        entry.levels[usize::from(entry.len)] = level;
                        entry.len += 1;
                    }
                    creds.insert(c.card, entry);
                }
                _ => {}
            }
        }
        Self {
            creds,
            bits,
            words,
            readers,
        }
    }

    #[inline]
    fn decide(&self, card: &CredentialKey, door: u32) -> bool {
        let Some(entry) = self.creds.get(card) else {
            return false;
        };
        let (word, bit) = (door as usize / 64, door % 64);
        entry.levels[..usize::from(entry.len)].iter().any(|&l| {
            self.bits
                .get(l as usize * self.words + word)
                .is_some_and(|w| w & (1 << bit) != 0)
        })
    }
}

/// accessd and its floor in alternating rounds of a few milliseconds each,
/// single requests and batches: on a shared machine whose speed drifts
/// from one second to the next (steal time), the ratio of two rounds run
/// back to back is steadier than that of two criterion benchmarks run
/// seconds apart. Prints the median over the rounds of each figure and of
/// the per-round ratios. `ACCESSD_DECIDE_PAIRED=1 cargo bench --bench decide`.
fn paired(
    credentials: usize,
    snapshot: &accessd_engine::Snapshot,
    presence: &Presence,
    requests: &[Request<'_>],
    plain: &PlainMap,
    plain_requests: &[(CredentialKey, u32)],
) {
    use std::time::Instant;
    const ROUNDS: usize = 101;
    const PER_ROUND: usize = 16_384;
    let now = common::now();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut at = 0usize;
    let mut next = |n: usize| {
        let start = at & (REQUESTS - 1);
        at = at.wrapping_add(n);
        start
    };
    let mut cases: [(&str, Vec<f64>, Vec<f64>); 2] =
        [("single", vec![], vec![]), ("batch", vec![], vec![])];
    for _ in 0..ROUNDS {
        // Single requests.
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            let r = &requests[next(1)];
            black_box(decide(snapshot, presence, black_box(r), now));
        }
        let ours = t.elapsed().as_nanos() as f64 / PER_ROUND as f64;
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            let (card, door) = black_box(&plain_requests[next(1)]);
            black_box(plain.decide(card, *door));
        }
        let floor = t.elapsed().as_nanos() as f64 / PER_ROUND as f64;
        cases[0].1.push(ours);
        cases[0].2.push(floor);
        // Batches.
        let t = Instant::now();
        for _ in 0..PER_ROUND / BATCH {
            let start = next(BATCH);
            let batch = black_box(&requests[start..start + BATCH]);
            snapshot.prefetch(batch);
            for r in batch {
                black_box(decide(snapshot, presence, r, now));
            }
        }
        let ours = t.elapsed().as_nanos() as f64 / PER_ROUND as f64;
        let t = Instant::now();
        for _ in 0..PER_ROUND / BATCH {
            let start = next(BATCH);
            for (card, door) in black_box(&plain_requests[start..start + BATCH]) {
                black_box(plain.decide(card, *door));
            }
        }
        let floor = t.elapsed().as_nanos() as f64 / PER_ROUND as f64;
        cases[1].1.push(ours);
        cases[1].2.push(floor);
    }
    for (name, ours, floor) in &mut cases {
        let mut ratios: Vec<f64> = ours.iter().zip(floor.iter()).map(|(o, f)| o / f).collect();
        println!(
            "paired {credentials} credentials, {name}: accessd {:.1} ns, floor {:.1} ns, \
             ratio {:.2} (median of {ROUNDS} rounds of {PER_ROUND} requests each)",
            median(ours),
            median(floor),
            median(&mut ratios),
        );
    }
}

fn bench_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    for credentials in [1_000usize, 100_000, 1_000_000] {
        let params = common::params(credentials);
        let records = accessd_engine::synth::site(&params);
        let plain = PlainMap::new(&records);
        // Kept alive, as in the server, where the builder follows the stream.
        let mut builder = SnapshotBuilder::new();
        let refused = builder.apply_all(records.into_iter().map(Change::Upsert));
        assert!(refused.is_empty(), "synthetic records refused");
        let snapshot = builder.publish(common::now());
        let real = snapshot.stats().credentials;
        assert_eq!(plain.creds.len(), real);
        let requests = common::requests(&params, real, REQUESTS);
        // The floor's stream: the same requests, reader resolved to a door
        // (u32::MAX for an unknown reader, whose lookup then misses no bit).
        let plain_requests: Vec<(CredentialKey, u32)> = requests
            .iter()
            .map(|r| {
                let door = plain.readers.get(&r.reader).copied().unwrap_or(u32::MAX);
                (r.credential, door)
            })
            .collect();
        // The stream as a server holds it: reader ids and PINs in one
        // buffer read front to back, as in a received frame. Not 65,536
        // `String`s scattered over the heap the build fragmented: reading
        // those missed the cache once a request (half of `decide`'s samples
        // at 1M in a profile), a cost of the bench, not of a decision, and
        // one the floor, whose readers are resolved before timing, never
        // paid.
        let text: String = requests
            .iter()
            .flat_map(|r| [r.reader.as_str(), r.pin.as_deref().unwrap_or_default()])
            .collect();
        let mut at = 0;
        let mut take = |len: usize| {
            let span = at..at + len;
            at += len;
            &text[span]
        };
        let requests: Vec<Request<'_>> = requests
            .iter()
            .map(|r| {
                let reader = take(r.reader.len());
                let pin = take(r.pin.as_ref().map_or(0, String::len));
                Request {
                    reader,
                    credential: r.credential,
                    pin: r.pin.as_ref().map(|_| pin.as_bytes()),
                }
            })
            .collect();
        let presence = Presence::new();
        let now = common::now();
        if std::env::var_os("ACCESSD_DECIDE_PAIRED").is_some() {
            paired(
                credentials,
                &snapshot,
                &presence,
                &requests,
                &plain,
                &plain_requests,
            );
            continue;
        }
        let mut i = 0usize;
        group.bench_function(format!("{credentials}_credentials"), |b| {
            b.iter(|| {
                let request = &requests[i & (REQUESTS - 1)];
                i = i.wrapping_add(1);
                black_box(decide(&snapshot, &presence, black_box(request), now))
            })
        });
        let mut i = 0usize;
        group.bench_function(format!("plain_map_{credentials}"), |b| {
            b.iter(|| {
                let (card, door) = black_box(&plain_requests[i & (REQUESTS - 1)]);
                i = i.wrapping_add(1);
                black_box(plain.decide(card, *door))
            })
        });
        // Batches of BATCH requests, as a BATCH_REQUEST frame or a chunk of
        // frames arrives: accessd starts the batch's credential lookups
        // together (`Snapshot::prefetch`), then decides one by one; the
        // floor decides the same batches one by one (its short loop
        // overlaps their misses by itself).
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut i = 0usize;
        group.bench_function(format!("{credentials}_credentials_batch{BATCH}"), |b| {
            b.iter(|| {
                let start = i & (REQUESTS - 1);
                i = i.wrapping_add(BATCH);
                let batch = black_box(&requests[start..start + BATCH]);
                snapshot.prefetch(batch);
                for request in batch {
                    black_box(decide(&snapshot, &presence, request, now));
                }
            })
        });
        let mut i = 0usize;
        group.bench_function(format!("plain_map_{credentials}_batch{BATCH}"), |b| {
            b.iter(|| {
                let start = i & (REQUESTS - 1);
                i = i.wrapping_add(BATCH);
                for (card, door) in black_box(&plain_requests[start..start + BATCH]) {
                    black_box(plain.decide(card, *door));
                }
            })
        });
        group.throughput(Throughput::Elements(1));
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
