//! The outside world of the loader: a table to scan and its stream to read,
//! behind one narrow trait. [`AwsBackend`](crate::AwsBackend) talks to
//! DynamoDB (or moto); `fake::FakeBackend` (feature `fake`) is an
//! in-memory stand-in that can split, close, trim and expire on demand.

use std::future::Future;

use jiff::Timestamp;

use crate::item::Item;

/// One page of a parallel scan segment.
#[derive(Debug, Clone, Default)]
pub struct ScanPage {
    /// The items of the page.
    pub items: Vec<Item>,
    /// Items that could not be read at all (an attribute type this build
    /// does not know), described with their key: skipped and counted.
    pub unreadable: Vec<String>,
    /// Where the next page starts; `None` when the segment is done.
    pub last_key: Option<Item>,
}

/// A shard as DescribeStream lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard id.
    pub id: String,
    /// The parent shard, which must be drained before this one is read.
    pub parent: Option<String>,
    /// The shard has an ending sequence number: it takes no new records.
    pub closed: bool,
}

/// One page of DescribeStream.
#[derive(Debug, Clone)]
pub struct StreamPage {
    /// `ENABLED` (or `ENABLING`): the stream takes records.
    pub enabled: bool,
    /// The shards of this page.
    pub shards: Vec<ShardInfo>,
    /// The last shard id of this page, to ask for the next one; `None` on
    /// the last page.
    pub last_shard: Option<String>,
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The oldest record still kept.
    TrimHorizon,
    /// Only records written from now on.
    Latest,
    /// Right after the record with this sequence number.
    After(String),
}

/// The kind of change a stream record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A new item.
    Insert,
    /// An item replaced.
    Modify,
    /// An item deleted.
    Remove,
}

/// The table's stream as DescribeTable reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStream {
    /// The stream's ARN.
    pub arn: String,
    /// `NEW_AND_OLD_IMAGES`, `NEW_IMAGE`, `OLD_IMAGE` or `KEYS_ONLY`; only
    /// the first two carry the new item that the loader needs.
    pub view_type: String,
}

impl TableStream {
    /// Whether records of this stream carry the item after the change.
    pub fn has_new_images(&self) -> bool {
        matches!(self.view_type.as_str(), "NEW_AND_OLD_IMAGES" | "NEW_IMAGE")
    }
}

/// One stream record.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// Insert, modify or remove.
    pub kind: EventKind,
    /// The key attributes.
    pub keys: Item,
    /// The whole item after the change (absent on remove).
    pub new_image: Option<Item>,
    /// The record's sequence number: ordered within a shard, not
    /// contiguous.
    pub sequence: String,
    /// When the change was made, as DynamoDB approximates it.
    pub created: Option<Timestamp>,
    /// Why the record cannot be read (unknown event name, no image, an
    /// attribute type this build does not know); `None` for a good record.
    /// An unreadable record is never applied as it is: the loader removes
    /// its key's record, or rebuilds from a scan when it has no key.
    pub unreadable: Option<String>,
}

/// One GetRecords answer.
#[derive(Debug, Clone, Default)]
pub struct RecordsPage {
    /// The records, in order.
    pub records: Vec<StreamRecord>,
    /// The iterator for the next call; `None` when the shard is closed and
    /// fully read.
    pub next: Option<String>,
}

/// Why a call to the table or stream failed, sorted by what the loader does
/// about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The shard iterator is older than 15 minutes: get a new one from the
    /// last sequence number read.
    #[error("shard iterator expired")]
    ExpiredIterator,
    /// The position is older than the stream keeps (24 hours): records were
    /// lost to this reader, so the snapshot must be rebuilt from a scan.
    #[error("stream position trimmed: {0}")]
    Trimmed(String),
    /// The table, stream or shard does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// Throttling, a server error, a timeout or a network failure: retry
    /// after a backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// Anything else (bad credentials, validation): retried after a backoff
    /// too, since the serving snapshot stays valid, but logged as an error.
    #[error("{0}")]
    Other(String),
}

/// A DynamoDB table with a stream, as the loader needs it.
///
/// Futures are `Send` so the loader can run on a multi-threaded runtime.
pub trait Backend: Send + Sync + 'static {
    /// The table's current stream, `None` if streams are off.
    fn stream(&self) -> impl Future<Output = Result<Option<TableStream>, SourceError>> + Send;

    /// One page of segment `segment` of a parallel scan in `segments`
    /// segments, starting after `start`; pages have the service's default
    /// size (a small page limit makes moto's scan quadratic).
    fn scan(
        &self,
        segment: u32,
        segments: u32,
        start: Option<Item>,
    ) -> impl Future<Output = Result<ScanPage, SourceError>> + Send;

    /// One page of DescribeStream, starting after shard `start`.
    fn describe_stream(
        &self,
        arn: &str,
        start: Option<String>,
    ) -> impl Future<Output = Result<StreamPage, SourceError>> + Send;

    /// A shard iterator at `position`.
    fn shard_iterator(
        &self,
        arn: &str,
        shard: &str,
        position: &Position,
    ) -> impl Future<Output = Result<String, SourceError>> + Send;

    /// The records at `iterator` (up to 1000).
    fn get_records(
        &self,
        iterator: &str,
    ) -> impl Future<Output = Result<RecordsPage, SourceError>> + Send;
}
