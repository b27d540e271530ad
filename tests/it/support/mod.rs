//! Shared test support: external servers the tests talk to.

pub(crate) mod http;
pub(crate) mod moto;
pub(crate) mod quic;
