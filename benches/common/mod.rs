//! Shared set-up for the engine benchmarks: synthetic sites of a given
//! size and a random request mix over them.

#![allow(dead_code, reason = "each bench binary uses a different part")]

use accessd_engine::{Change, CredentialKey, Snapshot, SnapshotBuilder, synth};
use jiff::Timestamp;

/// Monday 2026-11-30 15:00 UTC: office hours in New York and London.
pub(crate) fn now() -> Timestamp {
    "2026-11-30T15:00:00Z"
        .parse()
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Parameters for a site with about `credentials` credentials, 2,000 doors
/// and 500 access levels (1 credential per holder, 2 for every 20th).
pub(crate) fn params(credentials: usize) -> synth::SynthParams {
    synth::SynthParams {
        holders: credentials * 20 / 21,
        doors: 2_000,
        levels: 500,
        seed: 7,
        now: now(),
        pin_every: 50,
    }
}

/// Builds the snapshot of a synthetic site in one go.
pub(crate) fn build(params: &synth::SynthParams) -> (SnapshotBuilder, Snapshot) {
    let mut builder = SnapshotBuilder::new();
    let refused = builder.apply_all(synth::site(params).into_iter().map(Change::Upsert));
    assert!(
        refused.is_empty(),
        "synthetic records refused: {}",
        refused.len()
    );
    let snapshot = builder.publish(now());
    (builder, snapshot)
}

/// An owned request: reader, credential, PIN.
pub(crate) struct OwnedRequest {
    pub(crate) reader: String,
    pub(crate) credential: CredentialKey,
    pub(crate) pin: Option<String>,
}

/// `n` random requests: 90% real credentials at a random entry reader, 5%
/// unknown cards, 5% unknown readers; PINs where the credential has one.
pub(crate) fn requests(
    params: &synth::SynthParams,
    credentials: usize,
    n: usize,
) -> Vec<OwnedRequest> {
    let mut rng = fastrand::Rng::with_seed(99);
    (0..n)
        .map(|_| {
            let i = rng.u64(0..credentials as u64);
            let door = rng.usize(0..params.doors);
            match rng.u32(0..100) {
                0..5 => OwnedRequest {
                    reader: synth::reader_in(door),
                    credential: synth::card(credentials as u64 + i),
                    pin: None,
                },
                5..10 => OwnedRequest {
                    reader: format!("unknown-{door}"),
                    credential: synth::card(i),
                    pin: None,
                },
                _ => OwnedRequest {
                    reader: synth::reader_in(door),
                    credential: synth::card(i),
                    pin: synth::pin_of(i, params),
                },
            }
        })
        .collect()
}

/// The event spool as a decider's sink, as `serve --events-dir` wires it.
pub(crate) struct SpoolSink(pub(crate) accessd_loader::events::Spool);

impl accessd_protocol::EventSink for SpoolSink {
    fn append(&self, records: &[u8], count: u64) -> Result<(), String> {
        self.0.append(records, count).map_err(|e| e.to_string())
    }
}

/// Drops what it is given: what recording costs before the write.
pub(crate) struct Discard;

impl accessd_protocol::EventSink for Discard {
    fn append(&self, _records: &[u8], _count: u64) -> Result<(), String> {
        Ok(())
    }
}
