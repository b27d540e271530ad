//! Checkpoint files: a round trip keeps every record, the position and
//! presence; a torn, corrupt, foreign or other-version file is refused.

use accessd_engine::{SiteFile, synth};

use super::*;
use crate::follower::{ShardPosition, StreamCursor};
use crate::test_dir::TestDir;

fn example_builder() -> SnapshotBuilder {
    let text = include_str!("../../../docs/examples/site.toml");
    let site = SiteFile::parse(text).unwrap();
    let mut builder = SnapshotBuilder::new();
    assert!(
        builder
            .apply_all(site.records.into_iter().map(Change::Upsert))
            .is_empty()
    );
    builder.publish(Timestamp::UNIX_EPOCH);
    builder
}

fn cursor() -> StreamCursor {
    StreamCursor::restored(
        "arn:test:stream/1".into(),
        vec![
            ShardPosition {
                id: "shard-1".into(),
                parent: None,
                last_sequence: Some("000000000000000000042".into()),
                finished: true,
            },
            ShardPosition {
                id: "shard-2".into(),
                parent: Some("shard-1".into()),
                last_sequence: None,
                finished: false,
            },
        ],
    )
}

fn table() -> CheckpointSource {
    CheckpointSource::Table {
        table: "accessd".into(),
    }
}

fn presence() -> Vec<PresenceEntry> {
    vec![PresenceEntry {
        holder: "E1".into(),
        area: "hq-floor".into(),
        inside: true,
        at_ms: 1_764_511_200_000,
    }]
}

fn sorted_records(builder: &SnapshotBuilder) -> Vec<String> {
    let mut all: Vec<String> = builder.records().map(|r| format!("{r:?}")).collect();
    all.sort();
    all
}

fn write_example(dir: &Path) -> PathBuf {
    let builder = example_builder();
    let path = dir.join("state.ckpt");
    let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
    write(
        &path,
        &CheckpointData {
            source: table(),
            builder: &builder,
            fresh_as_of: now,
            cursor: Some(&cursor()),
            presence: presence(),
            now,
        },
    )
    .unwrap();
    path
}

fn temp_dir(name: &str) -> TestDir {
    TestDir::new("ckpt", name)
}

#[test]
fn a_round_trip_keeps_records_position_and_presence() {
    let dir = temp_dir("roundtrip");
    let path = write_example(&dir);
    let checkpoint = Checkpoint::open(&path).unwrap();
    checkpoint.check_source(&table()).unwrap();
    let info = checkpoint.info();
    assert_eq!(info.snapshot_version, 1);
    assert_eq!(info.stream_arn.as_deref(), Some("arn:test:stream/1"));
    assert_eq!(info.shards, cursor().shard_positions());
    assert_eq!(info.presence, 1);
    let restored = checkpoint.restore().unwrap();
    assert_eq!(restored.refused, 0);
    assert_eq!(restored.version, 1);
    assert_eq!(restored.presence, presence());
    assert_eq!(
        restored.cursor.as_ref().map(|c| c.shard_positions()),
        Some(cursor().shard_positions())
    );
    // Nothing published yet: the next publish is the stored version.
    assert_eq!(restored.builder.version(), 0);
    assert_eq!(
        sorted_records(&restored.builder),
        sorted_records(&example_builder())
    );
    // No temporary file is left beside it.
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("state.ckpt")]);
}

#[test]
fn synthetic_site_round_trips_exactly() {
    let records = synth::site(&synth::SynthParams {
        holders: 2_000,
        ..synth::SynthParams::default()
    });
    let mut builder = SnapshotBuilder::new();
    assert!(
        builder
            .apply_all(records.into_iter().map(Change::Upsert))
            .is_empty()
    );
    builder.publish(Timestamp::UNIX_EPOCH);
    let bytes = encode(&CheckpointData {
        source: table(),
        builder: &builder,
        fresh_as_of: Timestamp::UNIX_EPOCH,
        cursor: None,
        presence: Vec::new(),
        now: Timestamp::UNIX_EPOCH,
    })
    .unwrap();
    let dir = temp_dir("synth");
    let path = dir.join("c");
    write_atomic(&path, &bytes).unwrap();
    let restored = Checkpoint::open(&path).unwrap().restore().unwrap();
    assert!(restored.cursor.is_none());
    assert_eq!(sorted_records(&restored.builder), sorted_records(&builder));
}

fn refused(bytes: &[u8], name: &str) -> CheckpointError {
    let dir = temp_dir(name);
    let path = dir.join("bad.ckpt");
    fs::write(&path, bytes).unwrap();
    Checkpoint::open(&path).unwrap_err()
}

#[test]
fn torn_corrupt_and_foreign_files_are_refused() {
    let dir = temp_dir("bad");
    let good = fs::read(write_example(&dir)).unwrap();

    // Torn: the tail of the payload missing, or the header alone.
    let torn = good.get(..good.len() - 100).unwrap();
    assert!(matches!(
        refused(torn, "torn"),
        CheckpointError::Length { .. }
    ));
    let header = good.get(..40).unwrap();
    assert!(matches!(
        refused(header, "short"),
        CheckpointError::Length { .. }
    ));
    assert!(matches!(
        refused(&[], "empty"),
        CheckpointError::Length { .. }
    ));

    // Corrupt: one bit flipped anywhere in the payload.
    for at in [HEADER_LEN, HEADER_LEN + 1000, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        assert!(
            matches!(refused(&bad, "flip"), CheckpointError::Checksum),
            "flip at {at}"
        );
    }
    // A corrupt length is caught as a length mismatch.
    let mut bad = good.clone();
    bad[16] ^= 1;
    assert!(matches!(
        refused(&bad, "len"),
        CheckpointError::Length { .. }
    ));

    // Not a checkpoint, another version.
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(
        refused(&bad, "magic"),
        CheckpointError::NotACheckpoint
    ));
    let mut bad = good.clone();
    bad[8] = 99;
    assert!(matches!(
        refused(&bad, "version"),
        CheckpointError::Version { found: 99, .. }
    ));

    // Another table's checkpoint opens but is refused for this table.
    let path = dir.join("state.ckpt");
    let other = CheckpointSource::Table {
        table: "other".into(),
    };
    let err = Checkpoint::open(&path)
        .unwrap()
        .check_source(&other)
        .unwrap_err();
    assert!(matches!(err, CheckpointError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("`accessd`"), "{err}");
}

#[test]
fn a_failed_write_keeps_the_old_checkpoint() {
    let dir = temp_dir("failed");
    let path = write_example(&dir);
    let before = fs::read(&path).unwrap();
    // A target whose directory does not exist: the write fails, nothing
    // is left behind, the old file is untouched.
    let err = write_atomic(&dir.join("missing/x.ckpt"), b"new").unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }));
    assert_eq!(fs::read(&path).unwrap(), before);
}

/// A synthetic site's builder (PINs, validity windows, several sites) and
/// its checkpoint.
fn synthetic_checkpoint(
    name: &str,
    holders: usize,
) -> (SnapshotBuilder, TestDir, PathBuf, synth::SynthParams) {
    let params = synth::SynthParams {
        holders,
        doors: 60,
        levels: 12,
        pin_every: 7,
        now: "2026-11-30T15:00:00Z".parse().unwrap(),
        ..synth::SynthParams::default()
    };
    let mut builder = SnapshotBuilder::new();
    assert!(
        builder
            .apply_all(synth::site(&params).into_iter().map(Change::Upsert))
            .is_empty()
    );
    builder.publish(params.now);
    let dir = temp_dir(name);
    let path = dir.join("state.ckpt");
    write(
        &path,
        &CheckpointData {
            source: table(),
            builder: &builder,
            fresh_as_of: params.now,
            cursor: Some(&cursor()),
            presence: Vec::new(),
            now: params.now,
        },
    )
    .unwrap();
    (builder, dir, path, params)
}

#[test]
fn a_warm_snapshot_decides_exactly_as_the_restored_builder() {
    use accessd_engine::{Presence, Request, decide_with_subject};
    let (_, _dir, path, params) = synthetic_checkpoint("warm", 1_500);
    let (checkpoint, warm) = Checkpoint::open_warm(&path, &table(), None)
        .unwrap()
        .unwrap();
    let mut restored = checkpoint.restore().unwrap().builder;
    let built = restored.publish(params.now);
    assert!(warm.is_warm() && !built.is_warm());
    assert_eq!(warm.version(), built.version());
    assert_eq!(warm.stats(), built.stats());

    // Every card (and some unknown ones) at a spread of doors and hours,
    // with the right PIN, a wrong one and none: the same answer, the same
    // subject, anti-passback included (each side its own presence).
    let (warm_presence, built_presence) = (Presence::new(), Presence::new());
    let mut grants = 0;
    for i in 0..(params.holders as u64 + params.holders as u64 / 20 + 20) {
        let card = synth::card(i);
        let pin = synth::pin_of(i, &params);
        for (k, pin) in [pin.as_deref(), Some("0000"), None].into_iter().enumerate() {
            let door = (i as usize * 7 + k * 13) % params.doors;
            let reader = if k == 1 {
                synth::reader_in(door).replace("-in", "-out")
            } else {
                synth::reader_in(door)
            };
            let request = Request {
                reader: &reader,
                credential: card,
                pin: pin.map(str::as_bytes),
            };
            let now = params.now + jiff::SignedDuration::from_hours((i % 24) as i64);
            let (a, subject_a) = decide_with_subject(&warm, &warm_presence, &request, now);
            let (b, subject_b) = decide_with_subject(&built, &built_presence, &request, now);
            assert_eq!(a, b, "card {i} at {reader}");
            assert_eq!(subject_a, subject_b, "card {i} at {reader}");
            grants += usize::from(a.verdict == accessd_engine::Verdict::Grant);
        }
    }
    // The comparison means something only if both kinds of answer occur.
    assert!(grants > 100, "{grants} grants");
    // Lookups by card read the store too.
    let card = synth::card(3);
    assert_eq!(warm.holder_of_card(&card), built.holder_of_card(&card));
    assert!(warm.holder_of_card(&card).is_some());
}

#[test]
fn a_row_that_passes_the_checksum_but_not_its_layout_fails_closed() {
    let (builder, _dir, path, _) = synthetic_checkpoint("badrow", 50);
    // Rows are written in the builder's order.
    let mut bundles = builder.bundles();
    let (first, second) = (bundles.next().unwrap(), bundles.next().unwrap());
    let mut bytes = fs::read(&path).unwrap();
    // Row 0 overwritten with bytes no archive has (bools of 0xff, pointers
    // out of range), the checksum made to match: a writer's bug, not a
    // torn file.
    let first_row_end = {
        let c = Checkpoint::open(&path).unwrap();
        c.body().row_ends.first().unwrap().to_native() as usize
    };
    for b in bytes
        .get_mut(HEADER_LEN..HEADER_LEN + first_row_end)
        .unwrap()
    {
        *b = 0xff;
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    let rows_len = u64::from_le_bytes(header[40..48].try_into().unwrap()) as usize;
    let digest = checksum(header, &[&payload[..rows_len], &payload[rows_len..]]);
    bytes.get_mut(24..40).unwrap().copy_from_slice(&digest);
    fs::write(&path, &bytes).unwrap();

    let (checkpoint, warm) = Checkpoint::open_warm(&path, &table(), None)
        .unwrap()
        .unwrap();
    // The restore refuses the file (the caller bootstraps)...
    let err = checkpoint.restore().unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Malformed(m) if m.contains("row 0")),
        "{err}"
    );
    // ...and until then the warm snapshot denies that row's cards as
    // unknown, and still answers the others.
    assert!(!warm.has_credential(&first.credentials[0].card));
    assert!(warm.has_credential(&second.credentials[0].card));
}
