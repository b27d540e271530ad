//! # accessd-protocol
//!
//! How door readers, controllers and gateways talk to accessd: the wire
//! format (frames and their codec), the QUIC server with mutual TLS, the
//! Rust client and the load generator's engine. The byte layout is
//! specified in `PROTOCOL.md` next to this crate, with test vectors.
//!
//! ```text
//!  reader ──QUIC/TLS 1.3 (client cert)──▶ server::run
//!                                           │ ReaderScope (URI SANs of the cert)
//!                                           │ decode ─▶ Decider::decide ─▶ encode
//!  reader ◀──────── response frames ────────┘
//! ```
//!
//! What it does not do: build or swap snapshots. The server asks a
//! [`Decider`], which the binary implements on the engine's shared
//! snapshot; this crate only moves bytes and enforces who may ask what.
//!
//! Encoding and decoding a frame:
//!
//! ```
//! use accessd_protocol::{decode, encode_request, Frame, RequestFrame};
//! use accessd_engine::{CardFormat, CredentialKey};
//!
//! let request = RequestFrame {
//!     request_id: 1,
//!     reader: "lobby-in",
//!     credential: CredentialKey::card(CardFormat::H10301, 12, 345),
//!     pin: None,
//!     reader_time_ms: None,
//! };
//! let mut bytes = Vec::new();
//! encode_request(&mut bytes, &request)?;
//! let (frame, used) = decode(&bytes)?;
//! assert_eq!(used, bytes.len());
//! assert_eq!(frame, Frame::Request(request));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "net")]
mod client;
#[cfg(feature = "net")]
mod decider;
mod frame;
#[cfg(feature = "net")]
mod identity;
#[cfg(feature = "load")]
pub mod load;
#[cfg(feature = "net")]
pub mod metrics;
#[cfg(feature = "net")]
mod server;
#[cfg(feature = "net")]
pub mod stats;
#[cfg(feature = "net")]
mod tls;

#[cfg(feature = "net")]
pub use client::{
    Client, ClientError, Pipeline, client_config, client_endpoint, connect_on, connect_quic,
};
#[cfg(feature = "net")]
pub use decider::{ChunkState, EventLog, EventSink, Readiness, SnapshotDecider, age_ms};
pub use frame::{
    BatchRequestFrame, BatchResponseFrame, BatchResponseWriter, DecodeError, EncodeError,
    ErrorCode, ErrorFrame, Frame, FrameType, HEADER_LEN, InvalidFrame, MAX_BATCH, MAX_BODY_LEN,
    MAX_ERROR_TEXT, MAX_PIN_LEN, MAX_READER_ID_LEN, Problem, RESPONSE_BODY_LEN, RequestFrame,
    ResponseFrame, VERSION, decode, encode_batch_request, encode_batch_response, encode_error,
    encode_ping_frame, encode_pong_frame, encode_request, encode_response,
};
#[cfg(feature = "net")]
pub use identity::{IdentityError, ReaderScope, SAN_ALL_READERS, SAN_READER, SAN_READER_PREFIX};
#[cfg(feature = "net")]
pub use server::{
    Answer, Asked, Decider, Endpoints, Journal, Limits, ServerError, bind, bind_endpoints, close,
    run, server_config,
};
#[cfg(feature = "net")]
pub use tls::{ALPN, TlsCredentials, TlsError};
#[cfg(feature = "dev-ca")]
pub use tls::{DevCa, IssuedCert};

/// Fuzzing hook: decodes `data` as a stream the way the server does
/// (skipping invalid frames whose framing is intact), and checks that every
/// decoded frame re-encodes to the same bytes. Panics only on a codec bug.
#[doc(hidden)]
#[expect(clippy::panic, reason = "a fuzz hook reports a codec bug by panicking")]
pub fn fuzz_decode_stream(data: &[u8]) {
    let mut rest = data;
    loop {
        match decode(rest) {
            Ok((frame, n)) => {
                let (head, tail) = rest.split_at_checked(n).unwrap_or((rest, &[]));
                let mut again = Vec::new();
                if frame.encode(&mut again).is_err() || again != head {
                    panic!("decoded frame does not re-encode to its bytes: {frame:?}");
                }
                rest = tail;
            }
            Err(DecodeError::Incomplete { .. }) => return,
            Err(DecodeError::Invalid(inv)) => match inv.skip {
                Some(n) if n > 0 && n <= rest.len() => rest = rest.get(n..).unwrap_or_default(),
                Some(_) => panic!("invalid frame with a bad skip: {inv:?}"),
                None => return,
            },
        }
    }
}
