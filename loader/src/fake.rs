//! An in-memory table with a stream, for tests of the follower's logic.
//!
//! It does what moto cannot: split and close shards, trim records, expire
//! iterators, disable a stream or replace it with a new ARN, and fail calls
//! on demand. Sequence numbers have gaps on purpose, like AWS's.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;

use crate::backend::{
    Backend, EventKind, Position, RecordsPage, ScanPage, ShardInfo, SourceError, StreamPage,
    StreamRecord, TableStream,
};
use crate::item::{Attr, Item, PK, SK};

#[derive(Debug)]
struct FakeShard {
    id: String,
    parent: Option<String>,
    closed: bool,
    records: Vec<(u64, StreamRecord)>,
    /// Records before this index are trimmed away.
    trimmed: usize,
}

#[derive(Debug, Default)]
struct State {
    table: BTreeMap<(String, String), Item>,
    arn: Option<String>,
    arn_serial: u32,
    shards: Vec<FakeShard>,
    shard_serial: u32,
    next_seq: u64,
    generation: u64,
    failures: VecDeque<SourceError>,
    get_records_calls: usize,
    iterator_requests: Vec<(String, Position)>,
    view_type: Option<String>,
    /// Per shard id, GetRecords calls still to fail.
    failing_shards: BTreeMap<String, usize>,
}

/// The fake table and stream. All methods take `&self`; tests drive it
/// while a follower reads it.
#[derive(Debug)]
pub struct FakeBackend {
    state: Mutex<State>,
    /// Records per GetRecords page.
    page: usize,
    /// Items per scan page.
    scan_page: usize,
}

impl Default for FakeBackend {
    fn default() -> Self {
        Self::new()
    }
}

fn key_of(item: &Item) -> (String, String) {
    let s = |name| match item.get(name) {
        Some(Attr::S(s)) => s.clone(),
        _ => String::new(),
    };
    (s(PK), s(SK))
}

fn hash(s: &str) -> u32 {
    s.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    })
}

impl FakeBackend {
    /// An empty table with a stream of one open shard; pages of 3 records
    /// and 4 items so that paging is exercised.
    pub fn new() -> Self {
        let fake = Self {
            state: Mutex::new(State::default()),
            page: 3,
            scan_page: 4,
        };
        fake.new_stream();
        fake
    }

    /// An empty table whose GetRecords pages hold `records` records and
    /// whose scan pages hold `items` items (for benchmarks: the defaults
    /// are tiny to exercise paging).
    pub fn with_pages(records: usize, items: usize) -> Self {
        Self {
            page: records.max(1),
            scan_page: items.max(1),
            ..Self::new()
        }
    }

    /// Fills the table without writing stream records, as if the items
    /// had been written before the stream was enabled.
    pub fn load(&self, items: impl IntoIterator<Item = Item>) {
        let mut s = self.lock();
        for item in items {
            s.table.insert(key_of(&item), item);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add_shard(state: &mut State, parent: Option<String>) -> String {
        state.shard_serial += 1;
        let id = format!("shardId-{:08}", state.shard_serial);
        state.shards.push(FakeShard {
            id: id.clone(),
            parent,
            closed: false,
            records: Vec::new(),
            trimmed: 0,
        });
        id
    }

    /// Replaces the stream by a new one with a new ARN (as when streams
    /// are turned off and on again), with one open shard.
    pub fn new_stream(&self) -> String {
        let mut s = self.lock();
        s.arn_serial += 1;
        let arn = format!("arn:fake:stream/{}", s.arn_serial);
        s.arn = Some(arn.clone());
        s.shards.clear();
        Self::add_shard(&mut s, None);
        arn
    }

    /// Turns the stream off.
    pub fn disable_stream(&self) {
        self.lock().arn = None;
    }

    fn record(&self, kind: EventKind, key: (String, String), new_image: Option<Item>) {
        self.push_record(kind, Some(key), new_image, None);
    }

    /// Appends a stream record that cannot be read (`why`), as AWS could
    /// send one this build does not understand: with its key, or with no
    /// key at all. The table itself is not changed.
    pub fn push_unreadable(&self, key: Option<(&str, &str)>, why: &str) {
        let key = key.map(|(pk, sk)| (pk.to_owned(), sk.to_owned()));
        self.push_record(EventKind::Modify, key, None, Some(why.to_owned()));
    }

    /// Sets the stream's view type (default `NEW_AND_OLD_IMAGES`).
    pub fn set_view_type(&self, view_type: &str) {
        self.lock().view_type = Some(view_type.to_owned());
    }

    fn push_record(
        &self,
        kind: EventKind,
        key: Option<(String, String)>,
        new_image: Option<Item>,
        unreadable: Option<String>,
    ) {
        let mut s = self.lock();
        if s.arn.is_none() {
            return;
        }
        // Gaps between sequence numbers, as on AWS.
        s.next_seq += 1 + (s.next_seq % 7) * 1000;
        let seq = s.next_seq;
        let open: Vec<usize> = (0..s.shards.len())
            .filter(|&i| s.shards.get(i).is_some_and(|sh| !sh.closed))
            .collect();
        let pk = key.as_ref().map_or("", |k| k.0.as_str());
        let pick = open
            .get(hash(pk) as usize % open.len().max(1))
            .copied()
            .unwrap_or(0);
        let keys = key.map_or_else(Item::new, |key| {
            Item::from([
                (PK.to_owned(), Attr::S(key.0)),
                (SK.to_owned(), Attr::S(key.1)),
            ])
        });
        if let Some(shard) = s.shards.get_mut(pick) {
            shard.records.push((
                seq,
                StreamRecord {
                    kind,
                    keys,
                    new_image,
                    sequence: format!("{seq:021}"),
                    created: Some(Timestamp::now()),
                    unreadable,
                },
            ));
        }
    }

    /// Writes an item (and its stream record).
    pub fn put(&self, item: Item) {
        let key = key_of(&item);
        let existed = self
            .lock()
            .table
            .insert(key.clone(), item.clone())
            .is_some();
        let kind = if existed {
            EventKind::Modify
        } else {
            EventKind::Insert
        };
        self.record(kind, key, Some(item));
    }

    /// Deletes an item by key (and records it if it existed).
    pub fn delete(&self, pk: &str, sk: &str) {
        let key = (pk.to_owned(), sk.to_owned());
        if self.lock().table.remove(&key).is_some() {
            self.record(EventKind::Remove, key, None);
        }
    }

    /// Closes every open shard and gives each two children.
    pub fn split(&self) {
        let mut s = self.lock();
        let open: Vec<String> = s
            .shards
            .iter_mut()
            .filter(|sh| !sh.closed)
            .map(|sh| {
                sh.closed = true;
                sh.id.clone()
            })
            .collect();
        for parent in open {
            Self::add_shard(&mut s, Some(parent.clone()));
            Self::add_shard(&mut s, Some(parent));
        }
    }

    /// Trims every record written so far, as 24 hours of retention would.
    pub fn trim_all(&self) {
        for shard in &mut self.lock().shards {
            shard.trimmed = shard.records.len();
        }
    }

    /// Expires every iterator handed out so far.
    pub fn expire_iterators(&self) {
        self.lock().generation += 1;
    }

    /// Makes the next calls fail with these errors, in order.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = SourceError>) {
        self.lock().failures.extend(errors);
    }

    /// Makes the next `times` GetRecords calls on shard `id` fail as
    /// throttled, while the other shards answer.
    pub fn fail_shard(&self, id: &str, times: usize) {
        self.lock().failing_shards.insert(id.to_owned(), times);
    }

    /// GetRecords calls still to fail on shard `id`.
    pub fn shard_failures_left(&self, id: &str) -> usize {
        self.lock().failing_shards.get(id).copied().unwrap_or(0)
    }

    /// The open shard a write of partition key `pk` goes to now.
    pub fn shard_for(&self, pk: &str) -> Option<String> {
        let s = self.lock();
        let open: Vec<&FakeShard> = s.shards.iter().filter(|sh| !sh.closed).collect();
        open.get(hash(pk) as usize % open.len().max(1))
            .map(|sh| sh.id.clone())
    }

    /// Failures queued by [`fail_next`](Self::fail_next) not yet returned.
    pub fn pending_failures(&self) -> usize {
        self.lock().failures.len()
    }

    /// How many GetRecords calls were made.
    pub fn get_records_calls(&self) -> usize {
        self.lock().get_records_calls
    }

    /// Every GetShardIterator request, in order.
    pub fn iterator_requests(&self) -> Vec<(String, Position)> {
        self.lock().iterator_requests.clone()
    }

    fn fail(&self) -> Result<(), SourceError> {
        match self.lock().failures.pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn check_arn(s: &State, arn: &str) -> Result<(), SourceError> {
        if s.arn.as_deref() == Some(arn) {
            Ok(())
        } else {
            Err(SourceError::NotFound(format!("stream `{arn}`")))
        }
    }
}

impl Backend for FakeBackend {
    async fn stream(&self) -> Result<Option<TableStream>, SourceError> {
        self.fail()?;
        let s = self.lock();
        Ok(s.arn.clone().map(|arn| TableStream {
            arn,
            view_type: s
                .view_type
                .clone()
                .unwrap_or_else(|| "NEW_AND_OLD_IMAGES".to_owned()),
        }))
    }

    async fn scan(
        &self,
        segment: u32,
        segments: u32,
        start: Option<Item>,
    ) -> Result<ScanPage, SourceError> {
        self.fail()?;
        let s = self.lock();
        let after = start.as_ref().map(key_of);
        // A range, not a filter from the start: pages stay O(page).
        let range = match after {
            Some(a) => s.table.range((Bound::Excluded(a), Bound::Unbounded)),
            None => s.table.range::<(String, String), _>(..),
        };
        let items: Vec<(&(String, String), &Item)> = range
            .filter(|(k, _)| hash(&format!("{}|{}", k.0, k.1)) % segments.max(1) == segment)
            .take(self.scan_page)
            .collect();
        let last_key = (items.len() == self.scan_page)
            .then(|| items.last().map(|(_, item)| (*item).clone()))
            .flatten();
        Ok(ScanPage {
            items: items.into_iter().map(|(_, i)| i.clone()).collect(),
            unreadable: Vec::new(),
            last_key,
        })
    }

    async fn describe_stream(
        &self,
        arn: &str,
        start: Option<String>,
    ) -> Result<StreamPage, SourceError> {
        self.fail()?;
        let s = self.lock();
        Self::check_arn(&s, arn)?;
        // Two shards a page, so that pagination is exercised.
        let shards: Vec<ShardInfo> = s
            .shards
            .iter()
            .filter(|sh| start.as_ref().is_none_or(|st| sh.id > *st))
            .take(2)
            .map(|sh| ShardInfo {
                id: sh.id.clone(),
                parent: sh.parent.clone(),
                closed: sh.closed,
            })
            .collect();
        let more = s
            .shards
            .iter()
            .any(|sh| shards.last().is_some_and(|l| sh.id > l.id));
        Ok(StreamPage {
            enabled: true,
            last_shard: more.then(|| shards.last().map(|l| l.id.clone())).flatten(),
            shards,
        })
    }

    async fn shard_iterator(
        &self,
        arn: &str,
        shard: &str,
        position: &Position,
    ) -> Result<String, SourceError> {
        self.fail()?;
        let mut s = self.lock();
        Self::check_arn(&s, arn)?;
        s.iterator_requests
            .push((shard.to_owned(), position.clone()));
        let generation = s.generation;
        let sh = s
            .shards
            .iter()
            .find(|sh| sh.id == shard)
            .ok_or_else(|| SourceError::NotFound(format!("shard `{shard}`")))?;
        let index = match position {
            Position::TrimHorizon => sh.trimmed,
            Position::Latest => sh.records.len(),
            Position::After(seq) => {
                let seq: u64 = seq
                    .parse()
                    .map_err(|_| SourceError::Other(format!("bad sequence number `{seq}`")))?;
                let index = sh.records.iter().take_while(|(n, _)| *n <= seq).count();
                if index < sh.trimmed {
                    return Err(SourceError::Trimmed(format!("{shard} after {seq}")));
                }
                index
            }
        };
        Ok(format!("{generation}|{shard}|{index}"))
    }

    async fn get_records(&self, iterator: &str) -> Result<RecordsPage, SourceError> {
        self.fail()?;
        let mut s = self.lock();
        s.get_records_calls += 1;
        let mut parts = iterator.split('|');
        let (Some(generation), Some(shard), Some(index), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SourceError::Other(format!("bad iterator `{iterator}`")));
        };
        let (Ok(generation), Ok(index)) = (generation.parse::<u64>(), index.parse::<usize>())
        else {
            return Err(SourceError::Other(format!("bad iterator `{iterator}`")));
        };
        if generation < s.generation {
            return Err(SourceError::ExpiredIterator);
        }
        if let Some(left) = s.failing_shards.get_mut(shard)
            && *left > 0
        {
            *left -= 1;
            return Err(SourceError::Transient(format!("shard `{shard}` throttled")));
        }
        let sh = s
            .shards
            .iter()
            .find(|sh| sh.id == shard)
            .ok_or_else(|| SourceError::NotFound(format!("shard `{shard}`")))?;
        if index < sh.trimmed {
            return Err(SourceError::Trimmed(format!("{shard} at {index}")));
        }
        let records: Vec<StreamRecord> = sh
            .records
            .iter()
            .skip(index)
            .take(self.page)
            .map(|(_, r)| r.clone())
            .collect();
        let end = index + records.len();
        let next = (!(sh.closed && end >= sh.records.len()))
            .then(|| format!("{generation}|{shard}|{end}"));
        Ok(RecordsPage { records, next })
    }
}
