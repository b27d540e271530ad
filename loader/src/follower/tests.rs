//! The follower's logic against the in-memory fake: splits, closed shards,
//! expired iterators, trims, gaps in sequence numbers, throttling, a
//! replaced or disabled stream, bad items and resuming.

use std::time::Duration;

use accessd_engine::{
    AccessLevelRecord, AssignmentRecord, CardholderRecord, CredentialKey, CredentialRecord,
    CredentialStatus, Day, DoorRecord, Interval, Presence, ReaderRecord, Record, Request,
    ScheduleRecord, SiteRecord, Verdict, decide,
};
use jiff::civil::Time;

use super::*;
use crate::fake::FakeBackend;
use crate::item::{Attr, item_of, key_strings};
use crate::test_dir::TestDir;

fn config() -> LoaderConfig {
    LoaderConfig {
        scan_segments: 3,
        poll_interval: Duration::from_millis(5),
        rediscover_interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(10),
        startup_attempts: 3,
        ..LoaderConfig::default()
    }
}

fn card(n: u64) -> CredentialKey {
    format!("h10301:1:{n}").parse().unwrap()
}

/// A site where holder `E1` with card 1 may pass reader `r1` at any time.
fn site() -> Vec<Record> {
    let all = Day::ALL.to_vec();
    vec![
        Record::Site(SiteRecord {
            id: "hq".into(),
            time_zone: "UTC".into(),
            lockdown: false,
        }),
        Record::Door(DoorRecord {
            id: "d1".into(),
            site: "hq".into(),
            mode: Default::default(),
            unlock_ms: 5000,
            area: None,
        }),
        Record::Reader(ReaderRecord {
            id: "r1".into(),
            door: "d1".into(),
            direction: Default::default(),
        }),
        Record::Schedule(ScheduleRecord {
            id: "always".into(),
            intervals: vec![Interval {
                days: all,
                start: Time::midnight(),
                end: Time::midnight(),
            }],
            holiday_sets: vec![],
            holiday_intervals: vec![],
        }),
        Record::AccessLevel(AccessLevelRecord {
            id: "staff".into(),
            doors: vec!["d1".into()],
            door_groups: vec![],
            schedule: "always".into(),
        }),
        holder("E1"),
        Record::Assignment(AssignmentRecord {
            holder: "E1".into(),
            level: "staff".into(),
            valid_from: None,
            valid_until: None,
        }),
        credential(1, "E1", CredentialStatus::Active),
    ]
}

fn holder(id: &str) -> Record {
    Record::Cardholder(CardholderRecord {
        id: id.into(),
        status: Default::default(),
        valid_from: None,
        valid_until: None,
        lockdown_override: false,
    })
}

fn credential(n: u64, holder: &str, status: CredentialStatus) -> Record {
    Record::Credential(CredentialRecord {
        card: card(n),
        holder: holder.into(),
        status,
        valid_from: None,
        valid_until: None,
        pin: None,
    })
}

fn put(fake: &FakeBackend, record: &Record) {
    fake.put(item_of(record).unwrap());
}

fn delete(fake: &FakeBackend, record: &Record) {
    let (pk, sk) = key_strings(&record.key());
    fake.delete(&pk, &sk);
}

fn verdict(source: &Source, n: u64) -> Verdict {
    let snapshot = source.snapshot().load();
    let request = Request {
        reader: "r1",
        credential: card(n),
        pin: None,
    };
    decide(&snapshot, &Presence::new(), &request, Timestamp::now()).verdict
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn start(fake: &Arc<FakeBackend>) -> Source {
    Source::start(Loader::new(Arc::clone(fake), config()), None)
        .await
        .unwrap()
}

fn loaded_site() -> Arc<FakeBackend> {
    let fake = Arc::new(FakeBackend::new());
    for r in site() {
        put(&fake, &r);
    }
    fake
}

#[tokio::test]
async fn bootstrap_then_live_insert_modify_remove() {
    let fake = loaded_site();
    let source = start(&fake).await;
    assert_eq!(source.snapshot().load().version(), 1);
    assert_eq!(verdict(&source, 1), Verdict::Grant);
    assert_eq!(verdict(&source, 2), Verdict::Deny);

    put(&fake, &credential(2, "E1", CredentialStatus::Active));
    eventually("insert", || verdict(&source, 2) == Verdict::Grant).await;
    put(&fake, &credential(2, "E1", CredentialStatus::Suspended));
    eventually("modify", || verdict(&source, 2) == Verdict::Deny).await;
    delete(&fake, &credential(1, "E1", CredentialStatus::Active));
    eventually("remove", || verdict(&source, 1) == Verdict::Deny).await;
    assert!(source.snapshot().load().version() >= 4);
    assert_eq!(source.stats().bootstraps(), 1);
    assert_eq!(source.stats().rejected(), 0);
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn bootstrap_does_not_replay_the_history_it_scanned() {
    let fake = loaded_site();
    // Closed shards at bootstrap are in the scan; open ones start at LATEST.
    fake.split();
    put(&fake, &credential(2, "E1", CredentialStatus::Active));
    let source = start(&fake).await;
    assert_eq!(verdict(&source, 2), Verdict::Grant);
    let requests = fake.iterator_requests();
    assert!(
        requests.iter().all(|(_, p)| *p == Position::Latest),
        "{requests:?}"
    );
    assert!(!requests.iter().any(|(s, _)| s == "shardId-00000001"));
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn splits_drain_parents_before_children_and_lose_nothing() {
    let fake = loaded_site();
    let source = start(&fake).await;
    // Many writes before and after two rounds of splits, with the same item
    // changed in a parent and then in a child: the child's write must win.
    for n in 10..20 {
        put(&fake, &credential(n, "E1", CredentialStatus::Active));
    }
    fake.split();
    for n in 10..20 {
        put(&fake, &credential(n, "E1", CredentialStatus::Revoked));
    }
    fake.split();
    for n in 20..30 {
        put(&fake, &credential(n, "E1", CredentialStatus::Active));
    }
    eventually("all writes", || {
        (20..30).all(|n| verdict(&source, n) == Verdict::Grant)
    })
    .await;
    for n in 10..20 {
        assert_eq!(verdict(&source, n), Verdict::Deny, "card {n}");
    }
    // Seven shards over four DescribeStream pages of two: all were found.
    let read: std::collections::BTreeSet<String> = fake
        .iterator_requests()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert!(read.len() >= 6, "{read:?}");
    assert_eq!(source.stats().bootstraps(), 1);
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn expired_iterators_are_renewed_after_the_last_sequence_number() {
    let fake = loaded_site();
    let source = start(&fake).await;
    put(&fake, &credential(2, "E1", CredentialStatus::Active));
    eventually("first write", || verdict(&source, 2) == Verdict::Grant).await;
    let last = source.last_sequence().unwrap();
    fake.expire_iterators();
    put(&fake, &credential(3, "E1", CredentialStatus::Active));
    eventually("write after expiry", || {
        verdict(&source, 3) == Verdict::Grant
    })
    .await;
    // Renewed from the sequence number, not by a new bootstrap; the fake's
    // sequence numbers have gaps, so "last + 1" would have been wrong.
    assert!(
        fake.iterator_requests()
            .contains(&("shardId-00000001".to_owned(), Position::After(last))),
        "{:?}",
        fake.iterator_requests()
    );
    assert_eq!(source.stats().bootstraps(), 1);
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_iterator_with_nothing_read_bootstraps_again() {
    let fake = loaded_site();
    let source = start(&fake).await;
    fake.expire_iterators();
    put(&fake, &credential(2, "E1", CredentialStatus::Active));
    eventually("write", || verdict(&source, 2) == Verdict::Grant).await;
    assert_eq!(source.stats().bootstraps(), 2);
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn trimmed_positions_bootstrap_again_while_serving() {
    let fake = loaded_site();
    let source = start(&fake).await;
    put(&fake, &credential(2, "E1", CredentialStatus::Active));
    eventually("write", || verdict(&source, 2) == Verdict::Grant).await;
    let before = source.snapshot().load().version();
    // The follower falls behind a trim: the next iterator is refused.
    fake.expire_iterators();
    put(&fake, &credential(3, "E1", CredentialStatus::Active));
    fake.trim_all();
    eventually("re-bootstrap", || source.stats().bootstraps() == 2).await;
    eventually("write after trim", || verdict(&source, 3) == Verdict::Grant).await;
    assert_eq!(verdict(&source, 1), Verdict::Grant);
    assert!(source.snapshot().load().version() > before);
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn throttling_backs_off_and_loses_nothing() {
    let fake = loaded_site();
    let source = start(&fake).await;
    fake.fail_next((0..4).map(|i| SourceError::Transient(format!("throttled {i}"))));
    put(&fake, &credential(2, "E1", CredentialStatus::Active));
    eventually("write", || verdict(&source, 2) == Verdict::Grant).await;
    assert_eq!(source.stats().bootstraps(), 1);
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_new_stream_arn_bootstraps_again() {
    let fake = loaded_site();
    let source = start(&fake).await;
    fake.new_stream();
    put(&fake, &credential(2, "E1", CredentialStatus::Active));
    eventually("write on the new stream", || {
        verdict(&source, 2) == Verdict::Grant
    })
    .await;
    assert_eq!(source.stats().bootstraps(), 2);
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_disabled_stream_keeps_the_snapshot_serving() {
    let fake = loaded_site();
    let source = start(&fake).await;
    fake.disable_stream();
    eventually("bootstrap attempts", || source.stats().bootstraps() >= 3).await;
    assert_eq!(verdict(&source, 1), Verdict::Grant);
    // Streams back on (a new ARN): the loader recovers by itself.
    fake.new_stream();
    put(&fake, &credential(2, "E1", CredentialStatus::Active));
    eventually("write after re-enable", || {
        verdict(&source, 2) == Verdict::Grant
    })
    .await;
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_stream_at_startup_is_an_error() {
    let fake = loaded_site();
    fake.disable_stream();
    let err = Source::start(Loader::new(fake, config()), None)
        .await
        .unwrap_err();
    assert_eq!(err, LoadError::NoStream);
}

#[tokio::test]
async fn bad_items_are_skipped_counted_and_never_grant() {
    let fake = loaded_site();
    // A scanned item with a typo: skipped, counted.
    let mut bad = item_of(&credential(5, "E1", CredentialStatus::Active)).unwrap();
    bad.insert("statsu".into(), Attr::S("active".into()));
    fake.put(bad);
    let source = start(&fake).await;
    assert_eq!(source.stats().rejected(), 1);
    assert_eq!(verdict(&source, 5), Verdict::Deny);
    assert_eq!(verdict(&source, 1), Verdict::Grant);

    // A revocation written with a bad status word: the old, active version
    // must not keep granting.
    let mut revoke = item_of(&credential(1, "E1", CredentialStatus::Active)).unwrap();
    revoke.insert("status".into(), Attr::S("REVOKED".into()));
    fake.put(revoke);
    eventually("bad update", || source.stats().rejected() == 2).await;
    assert_eq!(verdict(&source, 1), Verdict::Deny);
    // An unknown entity type on the stream: skipped, counted.
    fake.put(
        [("pk", "gate#g1"), ("sk", "gate"), ("type", "gate")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Attr::S(v.to_owned())))
            .collect(),
    );
    eventually("unknown entity", || source.stats().rejected() == 3).await;
    put(&fake, &credential(1, "E1", CredentialStatus::Active));
    eventually("fixed item", || verdict(&source, 1) == Verdict::Grant).await;
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restart_resumes_where_it_stopped_without_a_scan() {
    let fake = loaded_site();
    let source = start(&fake).await;
    put(&fake, &credential(2, "E1", CredentialStatus::Active));
    eventually("write", || verdict(&source, 2) == Verdict::Grant).await;
    let resume = source.shutdown().await.unwrap();
    let version = resume.version();
    assert!(resume.cursor().positions().any(|(_, seq)| seq.is_some()));

    // Written while nobody follows.
    put(&fake, &credential(2, "E1", CredentialStatus::Revoked));
    put(&fake, &credential(3, "E1", CredentialStatus::Active));
    let source = Source::start(Loader::new(Arc::clone(&fake), config()), Some(resume))
        .await
        .unwrap();
    assert!(source.snapshot().load().version() > version);
    eventually("writes made while stopped", || {
        verdict(&source, 2) == Verdict::Deny && verdict(&source, 3) == Verdict::Grant
    })
    .await;
    assert_eq!(source.stats().bootstraps(), 0);
    source.shutdown().await.unwrap();
}

#[test]
fn backoff_is_capped_and_jittered() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
    assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
    assert!(delays[9] >= Duration::from_millis(500));
    b.reset();
    assert!(b.next_delay() <= Duration::from_millis(100));
}

#[tokio::test]
async fn an_unreadable_record_removes_its_key_and_never_leaves_a_card_granting() {
    let fake = loaded_site();
    let source = start(&fake).await;
    assert_eq!(verdict(&source, 1), Verdict::Grant);
    // A revocation this build cannot read (say, a new attribute type): the
    // card's old, active record must not keep granting.
    let (pk, sk) = key_strings(&credential(1, "E1", CredentialStatus::Revoked).key());
    fake.push_unreadable(
        Some((&pk, &sk)),
        "attribute `status` has a type this build cannot read",
    );
    eventually("unreadable record applied", || {
        verdict(&source, 1) == Verdict::Deny
    })
    .await;
    assert_eq!(source.stats().rejected(), 1);
    assert_eq!(source.stats().bootstraps(), 1);
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreadable_record_without_a_key_rebuilds_from_a_scan() {
    let fake = loaded_site();
    let source = start(&fake).await;
    // The table says revoked; the stream record saying so has no key.
    fake.put(item_of(&credential(1, "E1", CredentialStatus::Revoked)).unwrap());
    fake.push_unreadable(None, "no keys");
    eventually("bootstrap after a keyless record", || {
        source.stats().bootstraps() == 2 && verdict(&source, 1) == Verdict::Deny
    })
    .await;
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stream_without_new_images_is_refused_at_start() {
    for view in ["KEYS_ONLY", "OLD_IMAGE"] {
        let fake = loaded_site();
        fake.set_view_type(view);
        let err = Source::start(Loader::new(Arc::clone(&fake), config()), None)
            .await
            .unwrap_err();
        assert_eq!(err, LoadError::ViewType(view.into()));
        assert!(err.to_string().contains("NEW_AND_OLD_IMAGES"), "{err}");
    }
    let fake = loaded_site();
    fake.set_view_type("NEW_IMAGE");
    start(&fake).await.shutdown().await.unwrap();
}

/// A clock the test moves by hand.
fn manual_clock(start: Timestamp) -> (Clock, Arc<std::sync::Mutex<Timestamp>>) {
    let now = Arc::new(std::sync::Mutex::new(start));
    let read = Arc::clone(&now);
    (Clock::new(move || *read.lock().unwrap()), now)
}

#[tokio::test]
async fn rounds_that_could_not_read_a_shard_do_not_mark_the_data_fresh() {
    let fake = loaded_site();
    let t0: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
    let (clock, now) = manual_clock(t0);
    let source = Source::start(
        Loader::new(Arc::clone(&fake), LoaderConfig { clock, ..config() }),
        None,
    )
    .await
    .unwrap();
    let shared = Arc::clone(source.snapshot());
    eventually("first confirmation", || {
        shared.fresh_as_of(&shared.load()) == t0
    })
    .await;
    // Every read fails from here on: expired iterators (a round that
    // reads nothing) and throttling.
    let failures = 40;
    fake.fail_next((0..failures).map(|i| {
        if i % 2 == 0 {
            SourceError::ExpiredIterator
        } else {
            SourceError::Transient("throttled".into())
        }
    }));
    let t1 = t0 + jiff::SignedDuration::from_secs(60);
    *now.lock().unwrap() = t1;
    let mut checked = 0;
    // While failures are queued, every call since the clock moved failed,
    // so the data must not have been confirmed at t1. (Freshness is read
    // before the queue: a queue still non-empty afterwards proves no round
    // had succeeded when freshness was read.)
    loop {
        let fresh = shared.fresh_as_of(&shared.load());
        if fake.pending_failures() == 0 {
            break;
        }
        assert_eq!(fresh, t0, "confirmed by a round that could not read");
        checked += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(checked > 0, "the failures were gone before the first check");
    eventually("recovery confirms again", || {
        shared.fresh_as_of(&shared.load()) == t1
    })
    .await;
    assert_eq!(verdict(&source, 1), Verdict::Grant);
    source.shutdown().await.unwrap();
}

#[tokio::test]
async fn spawn_without_data_serves_not_ready_until_the_table_answers() {
    let fake = loaded_site();
    fake.fail_next((0..20).map(|_| SourceError::Transient("connection refused".into())));
    let source = Source::spawn(Loader::new(Arc::clone(&fake), config()), None);
    // Serving at once: version 0 is the empty snapshot (every decision is
    // `not_ready` in the server).
    assert_eq!(source.snapshot().load().version(), 0);
    assert_eq!(source.status(), SourceStatus::Starting);
    assert_eq!(source.stats().stream_lag_seconds(), None);
    eventually("first bootstrap", || {
        source.snapshot().load().version() >= 1
    })
    .await;
    assert_eq!(verdict(&source, 1), Verdict::Grant);
    eventually("live", || source.status() == SourceStatus::Live).await;
    assert!(
        source.stats().bootstraps() >= 2,
        "the failed attempts count too"
    );
    // The stream's view for status pages: every shard, and the lag.
    assert!(!source.stats().shard_positions().is_empty());
    assert!(source.stats().stream_lag_seconds().is_some());
    source.shutdown().await.unwrap();
}

/// Stops a source and writes a checkpoint of where it stopped; reads it
/// back as a resume point, as `serve` does at start.
async fn checkpoint_of(source: Source, path: &std::path::Path) -> (Resume, Timestamp, Timestamp) {
    let shared = Arc::clone(source.snapshot());
    let resume = source.shutdown().await.unwrap();
    let fresh = shared.fresh_as_of(&shared.load());
    crate::checkpoint::write(
        path,
        &CheckpointData {
            source: CheckpointSource::Table { table: "t".into() },
            builder: resume.builder(),
            fresh_as_of: fresh,
            cursor: Some(resume.cursor()),
            presence: Vec::new(),
            now: Timestamp::now(),
        },
    )
    .unwrap();
    let restored = crate::checkpoint::Checkpoint::open(path)
        .unwrap()
        .restore()
        .unwrap();
    assert_eq!(restored.fresh_as_of, fresh);
    let cursor = restored.cursor.unwrap();
    (
        Resume::new(restored.builder, cursor),
        restored.fresh_as_of,
        restored.written_at,
    )
}

/// A checkpoint path in a fresh directory, kept while the guard lives.
fn temp_file(name: &str) -> (TestDir, std::path::PathBuf) {
    let dir = TestDir::new("follow", name);
    let path = dir.join("state.ckpt");
    (dir, path)
}

#[tokio::test]
async fn a_checkpoint_serves_at_once_offline_and_catches_up_without_a_scan() {
    for warm in [false, true] {
        let fake = loaded_site();
        let source = start(&fake).await;
        put(&fake, &credential(2, "E1", CredentialStatus::Active));
        eventually("write", || verdict(&source, 2) == Verdict::Grant).await;
        let version = source.snapshot().load().version();
        let (_dir, path) = temp_file(if warm { "resume-warm" } else { "resume" });
        let (resume, fresh, written) = checkpoint_of(source, &path).await;

        // Written while accessd is down: a revocation and a new card.
        put(&fake, &credential(2, "E1", CredentialStatus::Revoked));
        put(&fake, &credential(3, "E1", CredentialStatus::Active));
        // DynamoDB is unreachable at start.
        fake.fail_next((0..15).map(|_| SourceError::Transient("unreachable".into())));
        let loader = Loader::new(Arc::clone(&fake), config());
        let source = if warm {
            // Served in place from the file while the builder is rebuilt
            // on a blocking thread (here: held until the warm snapshot
            // has answered).
            let table = CheckpointSource::Table { table: "t".into() };
            let (checkpoint, snapshot) =
                crate::checkpoint::Checkpoint::open_warm(&path, &table, None)
                    .unwrap()
                    .unwrap();
            assert!(snapshot.is_warm());
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let source = Source::spawn_warm(loader, snapshot, written, move || {
                wait.recv().ok()?;
                let restored = checkpoint.restore().ok()?;
                Some(Resume::new(restored.builder, restored.cursor?))
            });
            assert!(source.snapshot().load().is_warm());
            assert_eq!(verdict(&source, 2), Verdict::Grant);
            go.send(()).unwrap();
            drop(resume);
            source
        } else {
            Source::spawn(loader, Some((resume, fresh, written)))
        };
        // The checkpoint serves at once, with its own version and freshness.
        let shared = Arc::clone(source.snapshot());
        assert_eq!(shared.load().version(), version);
        assert_eq!(shared.fresh_as_of(&shared.load()), fresh);
        assert_eq!(verdict(&source, 2), Verdict::Grant);
        eventually("caught up", || {
            verdict(&source, 2) == Verdict::Deny && verdict(&source, 3) == Verdict::Grant
        })
        .await;
        assert!(shared.load().version() > version);
        assert!(!shared.load().is_warm());
        assert_eq!(source.stats().bootstraps(), 0, "resumed without a scan");
        source.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_checkpoint_whose_position_is_lost_bootstraps_while_serving() {
    // Trimmed past the stored position, the table re-created with a new
    // stream, or a checkpoint older than the stream keeps records: card 1
    // was revoked meanwhile, and only a scan can tell.
    let trim = |fake: &FakeBackend, _: &mut Timestamp| fake.trim_all();
    let new_stream = |fake: &FakeBackend, _: &mut Timestamp| {
        fake.new_stream();
    };
    let a_day_later = |_: &FakeBackend, now: &mut Timestamp| {
        *now = *now + RESUME_MAX_AGE + jiff::SignedDuration::from_secs(1);
    };
    type Lose<'a> = &'a dyn Fn(&FakeBackend, &mut Timestamp);
    let cases: [(&str, Lose<'_>); 3] = [
        ("trimmed", &trim),
        ("new-stream", &new_stream),
        ("too-old", &a_day_later),
    ];
    for (name, lose) in cases {
        let fake = loaded_site();
        let (clock, now) = manual_clock(Timestamp::now());
        let config = || LoaderConfig {
            clock: clock.clone(),
            ..config()
        };
        let source = Source::start(Loader::new(Arc::clone(&fake), config()), None)
            .await
            .unwrap();
        // A record read, so the stored position is after a sequence number.
        put(&fake, &credential(2, "E1", CredentialStatus::Active));
        eventually("write", || verdict(&source, 2) == Verdict::Grant).await;
        let (_dir, path) = temp_file(name);
        let (resume, fresh, written) = checkpoint_of(source, &path).await;
        put(&fake, &credential(1, "E1", CredentialStatus::Revoked));
        lose(&fake, &mut now.lock().unwrap());
        // The new card's record is in the stream; with the position lost,
        // only the scan finds both.
        let source = Source::spawn(
            Loader::new(Arc::clone(&fake), config()),
            Some((resume, fresh, written)),
        );
        // The checkpoint serves at once ...
        assert_eq!(verdict(&source, 1), Verdict::Grant, "{name}");
        // ... until the bootstrap has read the revocation.
        eventually(name, || {
            source.stats().bootstraps() == 1 && verdict(&source, 1) == Verdict::Deny
        })
        .await;
        source.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn the_follower_writes_checkpoints_and_one_at_shutdown() {
    let fake = loaded_site();
    let (_dir, path) = temp_file("writes");
    let presence = Arc::new(Presence::new());
    let loader = Loader::new(Arc::clone(&fake), config()).with_checkpoints(CheckpointConfig {
        path: path.clone(),
        interval: Duration::from_millis(1),
        source: CheckpointSource::Table { table: "t".into() },
        presence: Arc::clone(&presence),
    });
    let source = Source::spawn(loader, None);
    eventually("first checkpoint", || path.exists()).await;
    put(&fake, &credential(2, "E1", CredentialStatus::Active));
    eventually("write", || verdict(&source, 2) == Verdict::Grant).await;
    let version = source.snapshot().load().version();
    source.shutdown().await.unwrap();
    let checkpoint = crate::checkpoint::Checkpoint::open(&path).unwrap();
    let info = checkpoint.info();
    assert_eq!(info.snapshot_version, version);
    assert_eq!(info.credentials, 2);
    assert!(info.shards.iter().any(|s| s.last_sequence.is_some()));
}

#[tokio::test]
async fn a_round_with_an_expired_iterator_is_incomplete() {
    let fake = loaded_site();
    let loader = Loader::new(Arc::clone(&fake), config());
    let Ok((mut builder, mut cursor)) = loader.bootstrap_once(0).await else {
        panic!("bootstrap failed");
    };
    // A whole round: complete.
    put(&fake, &credential(2, "E1", CredentialStatus::Active));
    let round = loader.round(&mut cursor, &mut builder, false).await;
    assert!(matches!(
        round,
        Ok(Round {
            incomplete: false,
            records: 1,
            ..
        })
    ));
    put(&fake, &credential(3, "E1", CredentialStatus::Active));
    // Its held iterator expired: the shard was not read, so the round does
    // not prove the data current.
    fake.expire_iterators();
    let round = loader.round(&mut cursor, &mut builder, false).await;
    assert!(
        matches!(
            round,
            Ok(Round {
                incomplete: true,
                records: 0,
                ..
            })
        ),
        "{:?}",
        round.as_ref().ok()
    );
    // Renewed after the last sequence number, the next round reads it.
    let round = loader.round(&mut cursor, &mut builder, false).await;
    assert!(matches!(
        round,
        Ok(Round {
            incomplete: false,
            records: 1,
            ..
        })
    ));
}

#[tokio::test]
async fn a_failing_shard_does_not_hold_up_the_others() {
    let fake = loaded_site();
    let source = start(&fake).await;
    fake.split();
    // Find cards whose writes land on each of the two new shards.
    eventually("children discovered", || fake.shard_for("x").is_some()).await;
    let pk = |n: u64| {
        let (pk, _) = key_strings(&credential(n, "E1", CredentialStatus::Active).key());
        pk
    };
    let mut by_shard: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for n in 10..60 {
        by_shard
            .entry(fake.shard_for(&pk(n)).unwrap())
            .or_default()
            .push(n);
    }
    assert_eq!(by_shard.len(), 2, "{by_shard:?}");
    let (slow, slow_cards) = by_shard.pop_first().unwrap();
    let (_, fast_cards) = by_shard.pop_first().unwrap();
    // The closed parent is drained first; then one child keeps failing.
    put(
        &fake,
        &credential(fast_cards[0], "E1", CredentialStatus::Active),
    );
    eventually("parent drained", || {
        verdict(&source, fast_cards[0]) == Verdict::Grant
    })
    .await;
    fake.fail_shard(&slow, 1_000_000);
    for &n in fast_cards.iter().chain(&slow_cards) {
        put(&fake, &credential(n, "E1", CredentialStatus::Active));
    }
    eventually("the healthy shard's writes", || {
        fast_cards
            .iter()
            .all(|&n| verdict(&source, n) == Verdict::Grant)
    })
    .await;
    assert!(fake.shard_failures_left(&slow) > 0);
    assert!(
        slow_cards
            .iter()
            .all(|&n| verdict(&source, n) == Verdict::Deny)
    );
    fake.fail_shard(&slow, 0);
    eventually("the recovered shard's writes", || {
        slow_cards
            .iter()
            .all(|&n| verdict(&source, n) == Verdict::Grant)
    })
    .await;
    source.shutdown().await.unwrap();
}
