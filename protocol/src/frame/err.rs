//! Errors of the frame codec, and the error codes that travel in error
//! frames.

use std::fmt;

/// A code carried by an error frame (see `PROTOCOL.md`, "Error frame").
///
/// A newtype rather than an enum so that a client can carry a code added by
/// a newer server without failing to decode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The frame body does not follow the layout of its type.
    pub const MALFORMED: Self = Self(1);
    /// The frame type is not one this server knows.
    pub const UNKNOWN_TYPE: Self = Self(2);
    /// The frame's version byte is not one this server speaks.
    pub const UNSUPPORTED_VERSION: Self = Self(3);
    /// The frame's length is above the limit.
    pub const FRAME_TOO_LARGE: Self = Self(4);
    /// The stream ended in the middle of a frame.
    pub const TRUNCATED: Self = Self(5);
    /// The frame type is valid but only travels the other way (a client
    /// sent a response, for example).
    pub const UNEXPECTED_FRAME: Self = Self(6);
    /// The server is shutting down: send no new requests on this
    /// connection; frames already sent are still answered.
    pub const GOING_AWAY: Self = Self(7);

    /// The code's name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::MALFORMED => "malformed",
            Self::UNKNOWN_TYPE => "unknown_type",
            Self::UNSUPPORTED_VERSION => "unsupported_version",
            Self::FRAME_TOO_LARGE => "frame_too_large",
            Self::TRUNCATED => "truncated",
            Self::UNEXPECTED_FRAME => "unexpected_frame",
            Self::GOING_AWAY => "going_away",
            _ => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Why [`decode`](crate::decode) could not return a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes so far are a valid beginning of a frame, but not all of
    /// it. Read more bytes and call `decode` again with the same start.
    #[error("incomplete frame: at least {needed} more byte(s) needed")]
    Incomplete {
        /// How many more bytes are needed at least.
        needed: usize,
    },
    /// These bytes are wrong and no amount of further input can fix them.
    #[error(transparent)]
    Invalid(#[from] InvalidFrame),
}

/// A frame that can never decode, with what the receiver should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct InvalidFrame {
    /// What is wrong.
    pub problem: Problem,
    /// The request id of the frame, when the frame got far enough to have
    /// one (0 otherwise; clients never use 0).
    pub request_id: u32,
    /// The whole frame's length in bytes when the header was sound, so the
    /// receiver can skip it and go on with the next frame; `None` when the
    /// framing itself is lost (bad version or length) and the stream cannot
    /// be read any further.
    pub skip: Option<usize>,
}

impl InvalidFrame {
    /// The error code to answer with.
    pub fn code(&self) -> ErrorCode {
        self.problem.code()
    }
}

/// What is wrong with an invalid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The version byte is not [`VERSION`](crate::VERSION). Fix: speak
    /// version 1, or upgrade the server.
    #[error("unsupported frame version `{0}`")]
    UnsupportedVersion(u8),
    /// The declared body length is above
    /// [`MAX_BODY_LEN`](crate::MAX_BODY_LEN). Fix: split the batch.
    #[error("frame body of `{0}` bytes is above the limit")]
    TooLarge(usize),
    /// The frame type byte is not known.
    #[error("unknown frame type `{0}`")]
    UnknownType(u8),
    /// A field runs past the end of the body.
    #[error("frame body ends inside field `{0}`")]
    ShortBody(&'static str),
    /// The body has bytes after its last field.
    #[error("`{0}` byte(s) after the last field of the frame body")]
    TrailingBytes(usize),
    /// A request (alone or in a batch) carries request id 0, which is
    /// reserved for errors about the stream. Fix: number requests from 1.
    #[error("request id `0` is reserved")]
    ZeroRequestId,
    /// Reserved flag bits are set.
    #[error("reserved flag bits set in `{0:#04x}`")]
    ReservedFlags(u8),
    /// The reader id is empty, too long or not UTF-8.
    #[error("reader id must be 1 to 64 bytes of UTF-8")]
    BadReaderId,
    /// The credential kind byte is unknown.
    #[error("unknown credential kind `{0}`")]
    UnknownCredentialKind(u8),
    /// A UID of 0 bytes or more than 16.
    #[error("uid length `{0}` is not 1 to 16")]
    BadUidLength(u8),
    /// The PIN is empty, too long, or not ASCII digits.
    #[error("pin must be 1 to 16 ASCII digits")]
    BadPin,
    /// A verdict byte other than 0 or 1.
    #[error("verdict `{0}` is not 0 (deny) or 1 (grant)")]
    BadVerdict(u8),
    /// A batch of 0 items or more than [`MAX_BATCH`](crate::MAX_BATCH).
    #[error("batch count `{0}` is not 1 to 256")]
    BadBatchCount(u16),
    /// An error frame's text is too long or not UTF-8.
    #[error("error text must be at most 512 bytes of UTF-8")]
    BadErrorText,
}

impl Problem {
    /// The error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Problem::UnsupportedVersion(_) => ErrorCode::UNSUPPORTED_VERSION,
            Problem::TooLarge(_) => ErrorCode::FRAME_TOO_LARGE,
            Problem::UnknownType(_) => ErrorCode::UNKNOWN_TYPE,
            _ => ErrorCode::MALFORMED,
        }
    }
}

/// Why a frame could not be encoded. Nothing is written on error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A request with id 0, which is reserved for errors about the stream
    /// (the server would refuse it as malformed).
    #[error("request id `0` is reserved")]
    ZeroRequestId,
    /// The reader id is empty, longer than 64 bytes.
    #[error("reader id `{0}` must be 1 to 64 bytes")]
    BadReaderId(String),
    /// The PIN is empty, longer than 16 bytes, or not ASCII digits.
    #[error("pin must be 1 to 16 ASCII digits")]
    BadPin,
    /// A batch of 0 items or more than [`MAX_BATCH`](crate::MAX_BATCH).
    #[error("batch of `{0}` items is not 1 to 256")]
    BadBatchCount(usize),
    /// The frame would be longer than [`MAX_BODY_LEN`](crate::MAX_BODY_LEN).
    #[error("frame body of `{0}` bytes is above the limit")]
    TooLarge(usize),
}
