use std::fs;
use std::path::PathBuf;

use crate::test_dir::TestDir;

use accessd_engine::{CredentialKey, Decision, EventId, EventRef, Reason, Subject};

use super::*;

fn temp_dir(name: &str) -> TestDir {
    TestDir::new("spool", name)
}

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        fsync_interval: Duration::from_millis(1),
        // Beside the segments, so each test's ring goes with its
        // directory (the server's default is /dev/shm).
        ring_dir: Some(dir.join("ring")),
        ..SpoolConfig::new(dir)
    }
}

/// `n` records of one event each, request ids `first..first + n`.
fn records(first: u32, n: u32) -> Vec<u8> {
    let mut w = accessd_engine::RecordWriter::default();
    for i in first..first + n {
        let event = EventRef {
            id: EventId::v7(1_764_500_000_000 + i64::from(i), u128::from(i)),
            time_ms: 1_764_500_000_000 + i64::from(i),
            request_id: i,
            reader: "lobby-in",
            credential: CredentialKey::card(accessd_engine::CardFormat(1), 12, u64::from(i)),
            subject: Subject {
                door: Some("lobby"),
                site: Some("hq"),
                holder: None,
            },
            decision: Decision::deny(Reason::UnknownCredential, 3),
            snapshot_age_ms: 0,
            reader_time_ms: None,
        };
        // One record each: every event has its own instant, and the
        // writer begins a record for each.
        w.push("gw", "s1", &event);
    }
    w.finish();
    w.bytes().to_vec()
}

fn read_all(reader: &mut SpoolReader) -> Vec<u32> {
    let mut ids = Vec::new();
    loop {
        let batch = reader.read(37).unwrap();
        if batch.events.is_empty() {
            return ids;
        }
        ids.extend(batch.events.iter().map(|e| e.request_id));
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_path(dir, *segments(dir).unwrap().last().unwrap())
}

#[test]
fn events_read_back_in_order_across_segments_and_positions_survive_a_reopen() {
    let dir = temp_dir("order");
    let spool = Spool::open(SpoolConfig {
        segment_bytes: 2_000,
        ..config(&dir)
    })
    .unwrap();
    for chunk in 0..20 {
        spool.append(&records(chunk * 10, 10), 10).unwrap();
        spool.flush().unwrap();
    }
    assert!(
        segments(&dir).unwrap().len() > 5,
        "rotated into several segments"
    );
    let mut reader = spool.reader(SHIPPER).unwrap();
    let first = reader.read(55).unwrap();
    assert_eq!(first.events.len(), 55);
    reader.commit(first.next.unwrap()).unwrap();
    drop(reader);
    drop(spool);

    // A reopened spool and reader continue after the committed position.
    let spool = Spool::open(config(&dir)).unwrap();
    spool.append(&records(200, 5), 5).unwrap();
    let mut reader = spool.reader(SHIPPER).unwrap();
    assert_eq!(read_all(&mut reader), (55..205).collect::<Vec<_>>());
    // A reader without a position reads everything.
    let mut tail = SpoolReader::open_dir(&dir);
    assert_eq!(read_all(&mut tail), (0..205).collect::<Vec<_>>());
}

#[test]
fn a_torn_tail_is_cut_and_quarantined_and_never_read_as_events() {
    let dir = temp_dir("torn");
    let spool = Spool::open(config(&dir)).unwrap();
    spool.append(&records(0, 3), 3).unwrap();
    drop(spool);
    // A crash in the middle of writing the fourth record.
    let whole = records(3, 1);
    let path = last_segment(&dir);
    let mut bytes = fs::read(&path).unwrap();
    let good_len = bytes.len();
    bytes.extend_from_slice(&whole[..whole.len() - 7]);
    fs::write(&path, &bytes).unwrap();

    let spool = Spool::open(config(&dir)).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len as u64);
    let kept: Vec<_> = fs::read_dir(dir.join("quarantine")).unwrap().collect();
    assert_eq!(kept.len(), 1, "the cut bytes are kept");
    spool.append(&records(10, 2), 2).unwrap();
    spool.flush().unwrap();
    assert_eq!(
        read_all(&mut SpoolReader::open_dir(&dir)),
        [0, 1, 2, 10, 11]
    );
}

#[test]
fn a_corrupt_tail_is_cut_too_and_a_bad_sealed_segment_is_skipped() {
    let dir = temp_dir("corrupt");
    let spool = Spool::open(config(&dir)).unwrap();
    spool.append(&records(0, 4), 4).unwrap();
    drop(spool);
    // A flipped bit inside the last record's payload.
    let path = last_segment(&dir);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let spool = Spool::open(config(&dir)).unwrap();
    assert_eq!(read_all(&mut SpoolReader::open_dir(&dir)), [0, 1, 2]);
    drop(spool);

    // A bad record in the middle of a sealed segment: what follows it in
    // that segment is skipped, later segments are read.
    let dir = temp_dir("sealed");
    let spool = Spool::open(SpoolConfig {
        segment_bytes: 1_000,
        ..config(&dir)
    })
    .unwrap();
    let mut n = 0;
    while segments(&dir).unwrap().len() < 3 {
        spool.append(&records(n, 1), 1).unwrap();
        spool.flush().unwrap();
        n += 1;
    }
    let first = segment_path(&dir, segments(&dir).unwrap()[0]);
    let mut bytes = fs::read(&first).unwrap();
    let (whole, _) = count_records(&bytes);
    assert!(whole >= 3);
    let second_record = SEGMENT_MAGIC.len() + records(0, 1).len();
    bytes[second_record + 12] ^= 0xff;
    fs::write(&first, &bytes).unwrap();
    let ids = read_all(&mut SpoolReader::open_dir(&dir));
    assert_eq!(ids[0], 0);
    assert_eq!(
        ids[1] as u64, whole,
        "resumes at the next segment's first event"
    );
    assert_eq!(*ids.last().unwrap(), n - 1);
}

#[test]
fn a_full_spool_deletes_its_oldest_segments_and_readers_move_on() {
    let dir = temp_dir("full");
    let spool = Spool::open(SpoolConfig {
        segment_bytes: 1_000,
        max_bytes: 3_000,
        shipping: true,
        ..config(&dir)
    })
    .unwrap();
    let mut shipper = spool.reader(SHIPPER).unwrap();
    for i in 0..100 {
        spool.append(&records(i, 1), 1).unwrap();
        spool.flush().unwrap();
    }
    assert!(spool.bytes().unwrap() <= 3_000 + 1_000, "bounded");
    let ids = read_all(&mut shipper);
    assert_eq!(*ids.last().unwrap(), 99, "the newest events are kept");
    assert!(ids[0] > 0, "the oldest were deleted");
    assert!(ids.windows(2).all(|w| w[0] + 1 == w[1]), "in order, no gap");
}

#[test]
fn an_empty_or_foreign_directory_is_handled() {
    let dir = temp_dir("foreign");
    fs::create_dir_all(&dir).unwrap();
    fs::write(segment_path(&dir, 1), b"not a spool segment").unwrap();
    let err = Spool::open(config(&dir)).unwrap_err();
    assert!(matches!(err, SpoolError::Foreign(_)), "{err}");
    assert!(err.to_string().contains("move it away"));

    // A segment whose magic was being written when the process died.
    let dir = temp_dir("half-magic");
    fs::create_dir_all(&dir).unwrap();
    fs::write(segment_path(&dir, 7), &SEGMENT_MAGIC[..3]).unwrap();
    let spool = Spool::open(config(&dir)).unwrap();
    spool.append(&records(0, 1), 1).unwrap();
    spool.flush().unwrap();
    assert_eq!(read_all(&mut SpoolReader::open_dir(&dir)), [0]);
}

#[test]
fn a_crashed_spool_keeps_every_appended_event_from_its_ring() {
    let dir = temp_dir("crash");
    let spool = Spool::open(config(&dir)).unwrap();
    spool.stop_flusher();
    spool.append(&records(0, 5), 5).unwrap();
    spool.flush().unwrap();
    spool.append(&records(5, 3), 3).unwrap();
    // Killed with three events in the ring only.
    let ring = spool.ring_path().to_owned();
    let segment = last_segment(&dir);
    spool.crash();
    assert!(ring.exists(), "the ring outlives the process");
    assert_eq!(
        read_all(&mut SpoolReader::open_dir(&dir)),
        [0, 1, 2, 3, 4],
        "the segment has what was flushed"
    );
    let spool = Spool::open(config(&dir)).unwrap();
    assert!(!dir.join("quarantine").exists(), "nothing was torn");
    assert_eq!(
        read_all(&mut SpoolReader::open_dir(&dir)),
        [0, 1, 2, 3, 4, 5, 6, 7],
        "the ring's events are written where they belonged"
    );
    assert_eq!(count_records(&fs::read(&segment).unwrap()), (8, false));
    spool.append(&records(8, 1), 1).unwrap();
    drop(spool);
    assert!(!ring.exists(), "a clean close removes the ring");
    assert_eq!(
        read_all(&mut SpoolReader::open_dir(&dir)),
        (0..9).collect::<Vec<_>>()
    );
}

#[test]
fn a_crash_in_the_middle_of_a_flush_writes_the_events_once() {
    let dir = temp_dir("crash-flush");
    let spool = Spool::open(config(&dir)).unwrap();
    spool.stop_flusher();
    spool.append(&records(0, 2), 2).unwrap();
    spool.flush().unwrap();
    let pending = records(2, 3);
    spool.append(&pending, 3).unwrap();
    // The flush wrote part of the ring's bytes to the segment, and the
    // process died before it could mark them flushed.
    let segment = last_segment(&dir);
    let mut bytes = fs::read(&segment).unwrap();
    bytes.extend_from_slice(&pending[..pending.len() / 2 + 3]);
    fs::write(&segment, &bytes).unwrap();
    spool.crash();
    let spool = Spool::open(config(&dir)).unwrap();
    assert!(
        !dir.join("quarantine").exists(),
        "the half-written bytes are rewritten, not cut as torn"
    );
    assert_eq!(
        read_all(&mut SpoolReader::open_dir(&dir)),
        [0, 1, 2, 3, 4],
        "each event once"
    );
    drop(spool);
}

#[test]
fn a_ring_that_is_not_this_spools_is_set_aside_unread() {
    let dir = temp_dir("bad-ring");
    let spool = Spool::open(config(&dir)).unwrap();
    spool.append(&records(0, 2), 2).unwrap();
    let ring = spool.ring_path().to_owned();
    drop(spool);
    fs::write(&ring, b"something else entirely").unwrap();
    let spool = Spool::open(config(&dir)).unwrap();
    assert!(ring.with_extension("ring.bad").exists(), "set aside");
    spool.append(&records(2, 1), 1).unwrap();
    spool.flush().unwrap();
    assert_eq!(read_all(&mut SpoolReader::open_dir(&dir)), [0, 1, 2]);
}

#[test]
fn a_full_ring_is_flushed_by_the_appender_and_one_process_holds_the_spool() {
    let dir = temp_dir("small-ring");
    let spool = Spool::open(SpoolConfig {
        ring_bytes: ring::MIN_RING,
        segment_bytes: 16 << 10,
        ..config(&dir)
    })
    .unwrap();
    spool.stop_flusher();
    // Many times the ring's size, with no flusher: appends flush it.
    let mut n = 0;
    while spool.bytes().unwrap() < 8 * ring::MIN_RING {
        spool.append(&records(n, 10), 10).unwrap();
        n += 10;
    }
    assert!(segments(&dir).unwrap().len() > 4, "and rotate as it goes");
    let err = spool
        .append(&vec![0; ring::MIN_RING as usize], 1)
        .unwrap_err();
    assert!(matches!(err, SpoolError::TooLarge(_)), "{err}");
    let busy = Spool::open(config(&dir)).unwrap_err();
    assert!(matches!(busy, SpoolError::Busy(_)), "{busy}");
    assert!(busy.to_string().contains("another process"), "{busy}");
    drop(spool);
    assert_eq!(
        read_all(&mut SpoolReader::open_dir(&dir)),
        (0..n).collect::<Vec<_>>()
    );
}

#[test]
fn starts_and_stops_without_decisions_leave_no_empty_segments() {
    let dir = temp_dir("restarts");
    for _ in 0..5 {
        drop(Spool::open(config(&dir)).unwrap());
    }
    assert_eq!(segments(&dir).unwrap().len(), 1);
    let spool = Spool::open(config(&dir)).unwrap();
    spool.append(&records(0, 1), 1).unwrap();
    drop(spool);
    drop(Spool::open(config(&dir)).unwrap());
    assert_eq!(
        segments(&dir).unwrap().len(),
        2,
        "the one with an event is kept"
    );
    assert_eq!(read_all(&mut SpoolReader::open_dir(&dir)), [0]);
}

#[test]
fn a_follower_reads_only_what_is_appended_after_it_and_holds_nothing_back() {
    let dir = temp_dir("follower");
    let spool = Spool::open(SpoolConfig {
        segment_bytes: 2_000,
        max_bytes: 8_000,
        ..config(&dir)
    })
    .unwrap();
    spool.append(&records(0, 10), 10).unwrap();
    let mut follower = spool.follower();
    assert_eq!(read_all(&mut follower), Vec::<u32>::new());
    spool.append(&records(10, 3), 3).unwrap();
    assert_eq!(read_all(&mut follower), vec![10, 11, 12]);
    // A follower that stops reading does not keep segments: the bound
    // still holds, and it moves on past what was deleted.
    for chunk in 0..20 {
        spool.append(&records(100 + chunk * 10, 10), 10).unwrap();
        spool.flush().unwrap();
    }
    assert!(spool.bytes().unwrap() <= 8_000 + 2_000, "the bound held");
    // The newest few segments are where recent lookups start.
    let mut recent = SpoolReader::open_dir(&dir);
    let (start, covered) = spool.recent_start(3_000).unwrap();
    assert!(covered <= 3_000 && covered > 0, "{covered}");
    recent.seek(start);
    let recent = read_all(&mut recent);
    assert_eq!(recent.last(), Some(&299));
    assert!(recent.len() < 200 && recent.len() >= 10, "{}", recent.len());
    let after = read_all(&mut follower);
    assert_eq!(after.last(), Some(&299));
    assert!(
        !after.contains(&100),
        "deleted events are skipped: {after:?}"
    );
}

#[test]
fn a_failing_disk_keeps_answered_events_in_the_ring_until_it_is_back() {
    let dir = temp_dir("failing-disk");
    let spool = Spool::open(SpoolConfig {
        ring_bytes: ring::MIN_RING,
        ..config(&dir)
    })
    .unwrap();
    spool.stop_flusher();
    spool.append(&records(0, 5), 5).unwrap();
    spool.flush().unwrap();
    // The disk fails: every write to /dev/full is refused with ENOSPC.
    let full = File::options().write(true).open("/dev/full").unwrap();
    let disk = std::mem::replace(&mut spool.lock().file, full);
    spool.append(&records(5, 5), 5).unwrap();
    let err = spool.flush().unwrap_err();
    assert!(
        matches!(&err, SpoolError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC)),
        "{err}"
    );
    assert!(err.to_string().contains("event spool `"), "{err}");
    // Appends go on into the ring until it is full; then they fail (the
    // decision is still answered, its event counted as lost).
    let mut n = 10;
    let refused = loop {
        match spool.append(&records(n, 10), 10) {
            Ok(()) => n += 10,
            Err(e) => break e,
        }
    };
    assert!(n > 100, "the ring held only {n} events");
    assert!(matches!(refused, SpoolError::Io { .. }), "{refused}");
    // The disk is back: the next flush writes every event the ring held.
    spool.lock().file = disk;
    spool.flush().unwrap();
    spool.append(&records(n + 10, 1), 1).unwrap();
    drop(spool);
    let mut kept: Vec<u32> = (0..n).collect();
    kept.push(n + 10);
    assert_eq!(read_all(&mut SpoolReader::open_dir(&dir)), kept);
}
