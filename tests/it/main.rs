//! End-to-end tests across crates: real QUIC on loopback, real DynamoDB API
//! (moto's server, started by the harness). One test binary, a module per
//! area.

// clippy.toml exempts `#[test]` functions, not the helpers of an
// integration-test crate; here a panic is a test failure, as intended.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod cli;
mod config;
mod console;
mod durable;
mod dynamodb;
mod events;
mod http;
mod quic;
mod reload;
mod support;
mod telemetry;
