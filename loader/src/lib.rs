//! # accessd-loader
//!
//! The DynamoDB source of accessd: it reads the table that holds the truth
//! (sites, doors, readers, schedules, levels, cardholders, credentials) into
//! the engine's snapshot, then follows the table's stream and publishes a
//! new snapshot version for every batch of changes, without ever pausing a
//! decision.
//!
//! ```text
//!  DynamoDB table ──scan (parallel segments)──┐
//!        │                                    ▼
//!        └─stream (NEW_AND_OLD_IMAGES)──▶ item ↔ record ──▶ SnapshotBuilder
//!                                                              │ publish
//!                                                              ▼
//!                                              SharedSnapshot (arc-swap) ──▶ decide()
//! ```
//!
//! What it does not do: decide access (that is `accessd-engine`), or serve
//! requests (`accessd-protocol`).
//!
//! The schema is documented in `docs/dynamodb-schema.md` and written down
//! in code in [`item`]: reading is strict and every refusal names the
//! item's key; a bad item is skipped, counted and logged, and a bad new
//! version of an item removes the old one, so nothing grants by mistake.
//!
//! The table and stream sit behind the [`Backend`] trait: [`AwsBackend`]
//! talks to DynamoDB (or moto), `fake::FakeBackend` (feature `fake`) is an
//! in-memory one for tests of the follower's logic.
//!
//! ```
//! use std::sync::Arc;
//! use accessd_loader::{fake::FakeBackend, item, Loader, LoaderConfig, Source};
//! use accessd_engine::{Record, SiteRecord};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let table = Arc::new(FakeBackend::new());
//! let site = Record::Site(SiteRecord { id: "hq".into(), time_zone: "UTC".into(), lockdown: false });
//! table.put(item::item_of(&site).unwrap());
//! let source = Source::start(Loader::new(table, LoaderConfig::default()), None).await.unwrap();
//! assert_eq!(source.snapshot().load().version(), 1);
//! source.shutdown().await;
//! # });
//! ```

mod admin;
mod aws;
mod backend;
pub mod checkpoint;
pub mod events;
#[cfg(feature = "fake")]
pub mod fake;
mod follower;
pub mod item;
pub mod metrics;
#[cfg(test)]
mod test_dir;

pub use admin::{Admin, AdminError, BATCH_LIMIT, Export};
pub use aws::{AwsBackend, AwsSettings, sdk_config};
pub use backend::{
    Backend, EventKind, Position, RecordsPage, ScanPage, ShardInfo, SourceError, StreamPage,
    StreamRecord, TableStream,
};
pub use follower::{
    CheckpointConfig, Clock, LoadError, Loader, LoaderConfig, LoaderStats, RESUME_MAX_AGE, Resume,
    ShardPosition, Source, SourceStatus, StreamCursor, usable_stream,
};
