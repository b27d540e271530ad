//! The server's [`Decider`] over the engine's shared snapshot: one load of
//! the current snapshot and one clock reading per chunk of frames (what one
//! read of a stream delivered), anti-passback presence, the staleness
//! policy, and `decide` on a clock (the wall clock unless one is given).
//!
//! It only reads snapshots; how they are built and swapped stays with the
//! loader (DynamoDB) or the site-file reader.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use accessd_engine::{
    Decision, EventId, EventRef, Presence, Reason, Request, SharedSnapshot, Snapshot,
    SnapshotGuard, Subject, decide, decide_with_subject,
};
use jiff::Timestamp;

use crate::server::{Answer, Asked, Decider, Journal};

/// Where a decider's access events go: an append-only log that keeps what
/// it was given across a crash of the process once `append` returns (the
/// binary's event spool).
pub trait EventSink: Send + Sync + 'static {
    /// Appends whole records holding `count` events, durably against a
    /// crash of the process once it returns.
    fn append(&self, records: &[u8], count: u64) -> Result<(), String>;
}

/// Event ids a connection's journal takes from the shared counter at once.
const ID_BLOCK: u64 = 64;

/// The access-event side of a decider: the sink, this server's id and the
/// source of event ids.
pub struct EventLog {
    sink: Arc<dyn EventSink>,
    server: Arc<str>,
    /// The random start of this process's ids (74 bits used).
    id_base: u128,
    id_next: AtomicU64,
    /// Unix seconds of the last logged append failure (one line a second).
    last_failure_log: AtomicU64,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// Events of server `server` into `sink`.
    pub fn new(sink: Arc<dyn EventSink>, server: impl Into<Arc<str>>) -> Self {
        // Randomness from the standard library's per-process hash keys
        // (seeded by the OS): unique starts across servers and restarts.
        let random = || std::hash::RandomState::new().build_hasher().finish();
        Self {
            sink,
            server: server.into(),
            id_base: u128::from(random()) << 64 | u128::from(random()),
            id_next: AtomicU64::new(0),
            last_failure_log: AtomicU64::new(0),
        }
    }

    /// The next id for an event at Unix millisecond `ms`: unique in this
    /// process (a counter over a random start, taken by each connection's
    /// journal [`ID_BLOCK`] at a time) and across servers (the start's 74
    /// random bits). Ids sort by millisecond; within one, not by the
    /// order of decisions on different connections.
    fn next_id(&self, ms: i64, journal: &mut Journal) -> EventId {
        let n = match journal.ids.next() {
            Some(n) => n,
            None => {
                let start = self.id_next.fetch_add(ID_BLOCK, Ordering::Relaxed);
                journal.ids = start + 1..start + ID_BLOCK;
                start
            }
        };
        EventId::v7(ms, self.id_base.wrapping_add(u128::from(n)))
    }

    fn record(
        &self,
        asked: &Asked<'_>,
        subject: Subject<'_>,
        answer: &Answer,
        now: Timestamp,
        journal: &mut Journal,
    ) {
        let time_ms = now.as_millisecond();
        let event = EventRef {
            id: self.next_id(time_ms, journal),
            time_ms,
            request_id: asked.request_id,
            reader: asked.request.reader,
            credential: asked.request.credential,
            subject,
            decision: answer.decision,
            snapshot_age_ms: answer.snapshot_age_ms,
            reader_time_ms: asked.reader_time_ms,
        };
        // A journal is one chunk of one client's frames: its events share
        // a record.
        journal.events.push(asked.client, &self.server, &event);
    }

    fn commit(&self, journal: &mut Journal) {
        let count = journal.events.count();
        if count == 0 {
            return;
        }
        journal.events.finish();
        if let Err(e) = self.sink.append(journal.events.bytes(), count) {
            // The doors keep working; the loss is counted by the sink and
            // said here, once a second at most.
            let now = Timestamp::now().as_second().max(0) as u64;
            if self.last_failure_log.swap(now, Ordering::Relaxed) != now {
                tracing::error!(error = %e, events = count, "access events not recorded: the event spool refused the write (decisions were still answered)");
            }
        }
        journal.clear();
    }
}

mod explain;

pub use explain::Readiness;

/// Where the decider reads the time.
type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Decides on whatever snapshot is current when a request arrives.
pub struct SnapshotDecider {
    snapshot: Arc<SharedSnapshot>,
    presence: Arc<Presence>,
    /// The staleness policy: past this age every decision is a
    /// `stale_data` deny. `None`: serve data of any age (the age still
    /// travels with every answer).
    max_age_ms: Option<u32>,
    clock: Clock,
    events: Option<EventLog>,
}

impl std::fmt::Debug for SnapshotDecider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotDecider")
            .field("version", &self.snapshot.load().version())
            .field("max_age_ms", &self.max_age_ms)
            .finish_non_exhaustive()
    }
}

/// Milliseconds from the instant `snapshot` (a version loaded from
/// `shared`) was last known current to `now`, saturating; a snapshot from
/// the future (a clock step) counts as age 0.
pub fn age_ms(shared: &SharedSnapshot, snapshot: &Snapshot, now: Timestamp) -> u32 {
    let ms = now.as_millisecond() - shared.fresh_as_of(snapshot).as_millisecond();
    u32::try_from(ms.max(0)).unwrap_or(u32::MAX)
}

impl SnapshotDecider {
    /// A decider with its own presence and no staleness policy.
    pub fn new(snapshot: Arc<SharedSnapshot>) -> Self {
        Self::with_policy(snapshot, Arc::default(), None)
    }

    /// A decider sharing `presence` (so checkpoints can store it), denying
    /// with `stale_data` once the data is older than `max_staleness`.
    pub fn with_policy(
        snapshot: Arc<SharedSnapshot>,
        presence: Arc<Presence>,
        max_staleness: Option<Duration>,
    ) -> Self {
        Self {
            snapshot,
            presence,
            max_age_ms: max_staleness.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            clock: Arc::new(Timestamp::now),
            events: None,
        }
    }

    /// Records an access event for every decision into `events`.
    pub fn with_events(mut self, events: EventLog) -> Self {
        self.events = Some(events);
        self
    }

    /// Reads the time from `clock` instead of the wall clock (tests pin
    /// it; schedules and validity need a fixed instant).
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The anti-passback presence decisions update.
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }
}

/// What the decisions of one chunk of frames share (see
/// [`Decider::begin`]): the snapshot, the time and the data's age then.
pub struct ChunkState {
    snapshot: SnapshotGuard,
    now: Timestamp,
    age_ms: u32,
}

impl std::fmt::Debug for ChunkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkState")
            .field("version", &self.snapshot.version())
            .field("now", &self.now)
            .field("age_ms", &self.age_ms)
            .finish()
    }
}

impl SnapshotDecider {
    fn answer(
        &self,
        chunk: &ChunkState,
        asked: &Asked<'_>,
        refusal: Option<Reason>,
        journal: &mut Journal,
    ) -> Answer {
        let (snapshot, now, age) = (&chunk.snapshot, chunk.now, chunk.age_ms);
        let mut subject = None;
        let decision = if let Some(reason) = refusal {
            Decision::deny(reason, snapshot.version())
        } else if snapshot.version() == 0 {
            // Version 0 is the empty snapshot of a server that has loaded
            // nothing yet: say so rather than "unknown reader".
            Decision::deny(Reason::NotReady, 0)
        } else if self.max_age_ms.is_some_and(|max| age > max) {
            // The operator chose to refuse rather than grant on data the
            // source has not confirmed for too long.
            Decision::deny(Reason::StaleData, snapshot.version())
        } else {
            if self.events.is_none() {
                // Nothing records the subject: the plain decision.
                decide(snapshot, &self.presence, &asked.request, now)
            } else {
                let (decision, found) =
                    decide_with_subject(snapshot, &self.presence, &asked.request, now);
                // An unknown reader stops `decide` before the card is
                // looked up; the event still names the card's holder.
                if decision.reason != Reason::UnknownReader {
                    subject = Some(found);
                }
                decision
            }
        };
        let answer = Answer {
            decision,
            snapshot_age_ms: age,
        };
        if let Some(events) = &self.events {
            // Refusals and unknown readers (rare) look the subject up.
            let subject = subject.unwrap_or_else(|| {
                snapshot.subject(asked.request.reader, &asked.request.credential)
            });
            events.record(asked, subject, &answer, now, journal);
        }
        answer
    }
}

impl Decider for SnapshotDecider {
    type Chunk = ChunkState;

    fn begin(&self) -> ChunkState {
        // One load per chunk: its decisions see one consistent version
        // and never wait for the loader.
        let snapshot = self.snapshot.load();
        let now = (self.clock)();
        let age_ms = age_ms(&self.snapshot, &snapshot, now);
        ChunkState {
            snapshot,
            now,
            age_ms,
        }
    }

    fn decide(&self, chunk: &ChunkState, asked: &Asked<'_>, journal: &mut Journal) -> Answer {
        self.answer(chunk, asked, None, journal)
    }

    fn refuse(
        &self,
        chunk: &ChunkState,
        asked: &Asked<'_>,
        reason: Reason,
        journal: &mut Journal,
    ) -> Answer {
        self.answer(chunk, asked, Some(reason), journal)
    }

    fn prepare(&self, chunk: &ChunkState, requests: &[Request<'_>]) {
        chunk.snapshot.prefetch(requests);
    }

    fn commit(&self, journal: &mut Journal) {
        match &self.events {
            Some(events) => events.commit(journal),
            None => journal.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use accessd_engine::{CredentialKey, Request, SiteFile, SnapshotBuilder, Verdict};

    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn example(as_of: Timestamp) -> Arc<SharedSnapshot> {
        let site = SiteFile::parse(include_str!("../../docs/examples/site.toml")).unwrap();
        let mut builder = SnapshotBuilder::new();
        assert!(
            builder
                .apply_all(site.records.into_iter().map(accessd_engine::Change::Upsert))
                .is_empty()
        );
        Arc::new(SharedSnapshot::new(builder.publish(as_of)))
    }

    fn lobby() -> Asked<'static> {
        let card: CredentialKey = "h10301:12:1001".parse().unwrap();
        Asked {
            request: Request {
                reader: "lobby-in",
                credential: card,
                pin: None,
            },
            request_id: 1,
            reader_time_ms: None,
            client: "test",
        }
    }

    fn ask(decider: &SnapshotDecider, asked: &Asked<'_>) -> Answer {
        decider.decide(&decider.begin(), asked, &mut Journal::default())
    }

    #[test]
    fn a_chunk_is_decided_on_one_snapshot_and_one_instant() {
        let loaded = at("2026-11-30T14:00:00Z");
        let shared = example(loaded);
        let clock = Arc::new(std::sync::atomic::AtomicI64::new(loaded.as_millisecond()));
        let reading = Arc::clone(&clock);
        let decider = SnapshotDecider::new(Arc::clone(&shared)).with_clock(move || {
            Timestamp::from_millisecond(reading.load(std::sync::atomic::Ordering::Relaxed)).unwrap()
        });
        let chunk = decider.begin();
        // A new version is published and the clock moves on while the
        // chunk is being decided: its remaining requests do not see either.
        shared.store(Arc::new(Snapshot::empty(loaded)));
        clock.store(
            loaded.as_millisecond() + 60_000,
            std::sync::atomic::Ordering::Relaxed,
        );
        let answer = decider.decide(&chunk, &lobby(), &mut Journal::default());
        assert_eq!(
            (answer.decision.reason, answer.decision.snapshot_version),
            (Reason::Granted, 1)
        );
        assert_eq!(answer.snapshot_age_ms, 0);
        drop(chunk);
        // The next chunk does.
        let answer = ask(&decider, &lobby());
        assert_eq!(answer.decision.reason, Reason::NotReady);
        assert_eq!(answer.snapshot_age_ms, 60_000);
    }

    #[test]
    fn nothing_loaded_is_not_ready() {
        let empty = Arc::new(SharedSnapshot::new(Snapshot::empty(Timestamp::UNIX_EPOCH)));
        let answer = ask(&SnapshotDecider::new(empty), &lobby());
        assert_eq!(answer.decision.reason, Reason::NotReady);
    }

    #[test]
    fn the_staleness_policy_denies_past_its_age_and_the_age_is_the_last_confirmation() {
        let loaded = at("2026-11-30T14:00:00Z");
        let shared = example(loaded);
        let now = at("2026-11-30T14:10:00Z");
        let decider = SnapshotDecider::with_policy(
            Arc::clone(&shared),
            Arc::default(),
            Some(Duration::from_secs(300)),
        )
        .with_clock(move || now);
        let answer = ask(&decider, &lobby());
        assert_eq!(answer.snapshot_age_ms, 600_000);
        assert_eq!(answer.decision.reason, Reason::StaleData);
        assert_eq!(answer.decision.verdict, Verdict::Deny);
        assert_eq!(answer.decision.snapshot_version, 1);
        // Confirmed current a minute ago: fresh enough, decided as usual.
        shared.confirm(at("2026-11-30T14:09:00Z"));
        let answer = ask(&decider, &lobby());
        assert_eq!(answer.snapshot_age_ms, 60_000);
        assert_eq!(answer.decision.reason, Reason::Granted);
        // Without a policy the same old data is decided, its age shown.
        let open = SnapshotDecider::new(example(loaded)).with_clock(move || now);
        let answer = ask(&open, &lobby());
        assert_eq!(
            (answer.decision.reason, answer.snapshot_age_ms),
            (Reason::Granted, 600_000)
        );
    }

    /// Keeps appended records in memory.
    #[derive(Default)]
    struct MemorySink(std::sync::Mutex<Vec<u8>>);

    impl EventSink for MemorySink {
        fn append(&self, records: &[u8], _count: u64) -> Result<(), String> {
            self.0.lock().unwrap().extend_from_slice(records);
            Ok(())
        }
    }

    #[test]
    fn every_decision_and_refusal_becomes_an_event_once_committed() {
        let now = at("2026-11-30T14:00:00Z");
        let sink = Arc::new(MemorySink::default());
        let decider = SnapshotDecider::new(example(now))
            .with_clock(move || now)
            .with_events(EventLog::new(sink.clone(), "srv-1"));
        let mut journal = Journal::default();
        let chunk = decider.begin();
        let granted = lobby();
        let mut unknown = lobby();
        unknown.request.credential = "h10301:12:64999".parse().unwrap();
        unknown.request_id = 2;
        unknown.reader_time_ms = Some(now.as_millisecond() - 5);
        decider.decide(&chunk, &granted, &mut journal);
        decider.decide(&chunk, &unknown, &mut journal);
        decider.refuse(&chunk, &granted, Reason::ReaderNotPermitted, &mut journal);
        let mut nowhere = lobby();
        nowhere.request.reader = "no-such-reader";
        decider.decide(&chunk, &nowhere, &mut journal);
        assert_eq!(journal.events.count(), 4);
        assert!(sink.0.lock().unwrap().is_empty(), "nothing before commit");
        decider.commit(&mut journal);
        assert_eq!(
            (journal.events.count(), journal.events.bytes().len()),
            (0, 0)
        );

        let bytes = sink.0.lock().unwrap().clone();
        // One chunk, one instant, one snapshot: one record.
        let (events, n) = accessd_engine::read_record(&bytes).unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(events.len(), 4);
        let [grant, deny, refused, unknown_reader] = &events[..] else {
            unreachable!()
        };
        // `decide` stops at an unknown reader; the event still names the
        // card's holder.
        assert_eq!(unknown_reader.reason, Reason::UnknownReader);
        assert_eq!(unknown_reader.door, None);
        assert_eq!(unknown_reader.holder, grant.holder);
        assert_eq!(grant.reason, Reason::Granted);
        assert_eq!(grant.door.as_deref(), Some("lobby"));
        assert!(grant.holder.is_some(), "{grant:?}");
        assert_eq!(grant.time, now);
        assert_eq!(
            (grant.client.as_str(), grant.server.as_str()),
            ("test", "srv-1")
        );
        assert_eq!(deny.reason, Reason::UnknownCredential);
        assert_eq!((deny.holder.as_deref(), deny.request_id), (None, 2));
        assert_eq!(
            deny.reader_time.unwrap().as_millisecond(),
            now.as_millisecond() - 5
        );
        assert_eq!(refused.reason, Reason::ReaderNotPermitted);
        let mut ids: Vec<_> = events.iter().map(|e| e.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 4, "ids are unique");
    }

    #[test]
    fn connections_taking_ids_in_blocks_never_share_one() {
        let now = at("2026-11-30T14:00:00Z");
        let sink = Arc::new(MemorySink::default());
        let decider = SnapshotDecider::new(example(now))
            .with_clock(move || now)
            .with_events(EventLog::new(sink.clone(), "srv-1"));
        // Three connections' journals, interleaved, each past a block.
        let mut journals: [Journal; 3] = Default::default();
        let per_journal = 2 * ID_BLOCK as usize + 5;
        for _ in 0..per_journal {
            for journal in &mut journals {
                decider.decide(&decider.begin(), &lobby(), journal);
            }
        }
        for journal in &mut journals {
            decider.commit(journal);
        }
        let bytes = sink.0.lock().unwrap().clone();
        let mut ids = std::collections::HashSet::new();
        let mut at_byte = 0;
        while at_byte < bytes.len() {
            let (record, n) = accessd_engine::read_record(&bytes[at_byte..]).unwrap();
            for event in record {
                assert_eq!(event.id.unix_ms(), now.as_millisecond());
                assert!(ids.insert(event.id), "{} twice", event.id);
            }
            at_byte += n;
        }
        assert_eq!(ids.len(), 3 * per_journal);
    }
}
