//! The access-event trail: the spool every decision is appended to, the
//! shipper that writes it to the events table, and the alarm sender that
//! puts the events security staff act on onto an EventBridge bus.
//!
//! ```text
//!  decisions ──append (one record per chunk of frames)──▶ Spool (mapped segments, CRC per record)
//!                                                          │            │
//!                                     reader "shipper" ────┘            └──── reader "alarms"
//!                                        │ BatchWriteItem                        │ PutEvents
//!                                        ▼                                       ▼
//!                                   events table                         EventBridge bus
//! ```
//!
//! The decision path only appends; shipping and alarms read the files on
//! their own tasks, each with a durable position, so DynamoDB or
//! EventBridge being down never slows a decision. The formats and promises
//! are documented in `docs/access-events.md`.

pub mod alarm;
pub mod ship;
pub mod spool;

pub use spool::{SHIPPER, Spool, SpoolConfig, SpoolError, SpoolPos, SpoolReader};
