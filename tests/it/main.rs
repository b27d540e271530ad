//! End-to-end tests across crates: real QUIC on loopback, real DynamoDB API
//! (moto's server, started by the harness). One test binary, a module per
//! area.

mod dynamodb;
mod quic;
mod support;
