//! Frames and their codec. The layout is specified in `PROTOCOL.md`; this
//! module is the reference implementation and the test vectors there are
//! checked against it.
//!
//! Every integer is big-endian. A frame is a 4-byte header (version, type,
//! body length as `u16`) and a body. [`decode`] tells "need more bytes"
//! ([`DecodeError::Incomplete`]) apart from "these bytes are wrong"
//! ([`DecodeError::Invalid`]); it never panics and never allocates.

mod err;
// Only the QUIC server and client read streams.
#[cfg(any(feature = "net", test))]
mod reader;

pub use err::{DecodeError, EncodeError, ErrorCode, InvalidFrame, Problem};
#[cfg(feature = "net")]
pub(crate) use reader::{FrameReader, ReadBuf};

use accessd_engine::{CardFormat, CredentialKey, Uid, Verdict};

/// The only frame version this crate speaks.
pub const VERSION: u8 = 1;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;
/// The largest body a frame may declare; a larger one closes the
/// connection (framing cannot be trusted after it).
pub const MAX_BODY_LEN: usize = 32 * 1024;
/// The most requests in one batch frame.
pub const MAX_BATCH: usize = 256;
/// The longest reader id, in bytes.
pub const MAX_READER_ID_LEN: usize = 64;
/// The longest PIN on the wire, in digits (the engine accepts 4 to 12; a
/// PIN of another length is a deny, not a protocol error).
pub const MAX_PIN_LEN: usize = 16;
/// The longest text of an error frame, in bytes.
pub const MAX_ERROR_TEXT: usize = 512;
/// Bytes in a response body (and in each item of a batch response).
pub const RESPONSE_BODY_LEN: usize = 23;

const FLAG_PIN: u8 = 0x01;
const FLAG_READER_TIME: u8 = 0x02;
const CRED_CARD: u8 = 1;
const CRED_UID: u8 = 2;

/// The type byte of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// One decision request (client to server).
    Request = 1,
    /// One decision (server to client).
    Response = 2,
    /// Many decision requests (client to server).
    BatchRequest = 3,
    /// Many decisions, in request order (server to client).
    BatchResponse = 4,
    /// An error (either way; in practice server to client).
    Error = 5,
    /// A liveness probe (either way).
    Ping = 6,
    /// The answer to a ping.
    Pong = 7,
}

impl FrameType {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::BatchRequest,
            4 => Self::BatchResponse,
            5 => Self::Error,
            6 => Self::Ping,
            7 => Self::Pong,
            _ => return None,
        })
    }
}

/// A decision request as it travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestFrame<'a> {
    /// Chosen by the client, echoed in the response; 0 is reserved.
    pub request_id: u32,
    /// The reader the credential was presented at.
    pub reader: &'a str,
    /// What the reader read.
    pub credential: CredentialKey,
    /// PIN digits as ASCII, if the reader has a keypad and one was typed.
    pub pin: Option<&'a [u8]>,
    /// The reader's clock, Unix milliseconds. Informational only: the
    /// server decides on its own clock so a replayed or skewed frame cannot
    /// move a decision in time.
    pub reader_time_ms: Option<i64>,
}

impl<'a> RequestFrame<'a> {
    /// The engine's view of this request.
    pub fn to_engine(&self) -> accessd_engine::Request<'a> {
        accessd_engine::Request {
            reader: self.reader,
            credential: self.credential,
            pin: self.pin,
        }
    }
}

/// A decision as it travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseFrame {
    /// The request id this answers.
    pub request_id: u32,
    /// Grant or deny.
    pub verdict: Verdict,
    /// The stable reason code (see `Reason::code`); a client that does not
    /// know a code still has the verdict.
    pub reason: u16,
    /// Milliseconds to release the lock; 0 on a deny.
    pub unlock_ms: u32,
    /// The snapshot version the decision was made on.
    pub snapshot_version: u64,
    /// How old that snapshot's data was, in milliseconds (saturating).
    pub snapshot_age_ms: u32,
}

impl ResponseFrame {
    /// The reason, if this build knows the code.
    pub fn reason(&self) -> Option<accessd_engine::Reason> {
        accessd_engine::Reason::from_code(self.reason)
    }
}

/// A batch of requests, validated, kept as its encoded items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRequestFrame<'a> {
    count: u16,
    items: &'a [u8],
}

impl<'a> BatchRequestFrame<'a> {
    /// How many requests the batch holds (1 to [`MAX_BATCH`]).
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Never true: a batch holds at least one request.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The requests, in order.
    pub fn iter(&self) -> impl Iterator<Item = RequestFrame<'a>> + 'a {
        let mut cur = Cursor::new(self.items);
        // INVARIANT: `items` was fully validated by `decode`, so parsing
        // cannot fail here; if it ever did the iterator ends early and the
        // server answers fewer items, which the client sees as an error.
        (0..self.count).map_while(move |_| parse_request(&mut cur).ok())
    }
}

/// A batch of responses, validated, kept as its encoded items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchResponseFrame<'a> {
    count: u16,
    items: &'a [u8],
}

impl BatchResponseFrame<'_> {
    /// How many responses the batch holds.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Never true: a batch holds at least one response.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The responses, in request order.
    pub fn iter(&self) -> impl Iterator<Item = ResponseFrame> + '_ {
        let mut cur = Cursor::new(self.items);
        // INVARIANT: validated by `decode` (see BatchRequestFrame::iter).
        (0..self.count).map_while(move |_| parse_response(&mut cur).ok())
    }
}

/// An error frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorFrame<'a> {
    /// What went wrong.
    pub code: ErrorCode,
    /// The request the error is about, or 0 when it is about the stream.
    pub request_id: u32,
    /// A human-readable explanation (UTF-8, at most [`MAX_ERROR_TEXT`]).
    pub text: &'a str,
}

/// A decoded frame, borrowing from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One decision request.
    Request(RequestFrame<'a>),
    /// One decision.
    Response(ResponseFrame),
    /// Many decision requests.
    BatchRequest(BatchRequestFrame<'a>),
    /// Many decisions.
    BatchResponse(BatchResponseFrame<'a>),
    /// An error.
    Error(ErrorFrame<'a>),
    /// A ping with its nonce.
    Ping(u64),
    /// A pong with the nonce of its ping.
    Pong(u64),
}

impl Frame<'_> {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Request(_) => FrameType::Request,
            Frame::Response(_) => FrameType::Response,
            Frame::BatchRequest(_) => FrameType::BatchRequest,
            Frame::BatchResponse(_) => FrameType::BatchResponse,
            Frame::Error(_) => FrameType::Error,
            Frame::Ping(_) => FrameType::Ping,
            Frame::Pong(_) => FrameType::Pong,
        }
    }

    /// Appends the encoded frame to `out`. On error nothing is appended.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Frame::Request(r) => encode_request(out, r),
            Frame::Response(r) => {
                encode_response(out, r);
                Ok(())
            }
            Frame::BatchRequest(b) => {
                encode_raw_batch(out, FrameType::BatchRequest, b.count, b.items)
            }
            Frame::BatchResponse(b) => {
                encode_raw_batch(out, FrameType::BatchResponse, b.count, b.items)
            }
            Frame::Error(e) => {
                encode_error(out, e.code, e.request_id, e.text);
                Ok(())
            }
            Frame::Ping(n) => {
                encode_ping(out, FrameType::Ping, *n);
                Ok(())
            }
            Frame::Pong(n) => {
                encode_ping(out, FrameType::Pong, *n);
                Ok(())
            }
        }
    }
}

/// Decodes one frame from the start of `buf`, returning it and the number
/// of bytes it took.
///
/// Check order, which fixes which error a bad frame gets: version, body
/// length limit, completeness, type, body.
pub fn decode(buf: &[u8]) -> Result<(Frame<'_>, usize), DecodeError> {
    // The version is checked on the very first byte so that garbage is
    // refused at once rather than waited on.
    let Some(&version) = buf.first() else {
        return Err(DecodeError::Incomplete { needed: HEADER_LEN });
    };
    if version != VERSION {
        return Err(invalid(Problem::UnsupportedVersion(version), 0, None));
    }
    let (Some(&type_byte), Some(&hi), Some(&lo)) = (buf.get(1), buf.get(2), buf.get(3)) else {
        return Err(DecodeError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    let body_len = usize::from(u16::from_be_bytes([hi, lo]));
    if body_len > MAX_BODY_LEN {
        return Err(invalid(Problem::TooLarge(body_len), 0, None));
    }
    let total = HEADER_LEN + body_len;
    let Some(body) = buf.get(HEADER_LEN..total) else {
        return Err(DecodeError::Incomplete {
            needed: total - buf.len(),
        });
    };
    // Best effort: the request id, for error frames about this frame. It
    // opens the body of a REQUEST and a RESPONSE, but follows the 2-byte
    // code in an ERROR.
    let id_at = |offset: usize| {
        body.get(offset..)
            .and_then(<[u8]>::first_chunk::<4>)
            .map_or(0, |id| u32::from_be_bytes(*id))
    };
    let request_id = match type_byte {
        1 | 2 => id_at(0),
        5 => id_at(2),
        _ => 0,
    };
    let Some(frame_type) = FrameType::from_u8(type_byte) else {
        return Err(invalid(Problem::UnknownType(type_byte), 0, Some(total)));
    };
    let mut cur = Cursor::new(body);
    let parsed = match frame_type {
        FrameType::Request => parse_request(&mut cur).map(Frame::Request),
        FrameType::Response => parse_response(&mut cur).map(Frame::Response),
        FrameType::BatchRequest => parse_batch(&mut cur, parse_request)
            .map(|(count, items)| Frame::BatchRequest(BatchRequestFrame { count, items })),
        FrameType::BatchResponse => parse_batch(&mut cur, parse_response)
            .map(|(count, items)| Frame::BatchResponse(BatchResponseFrame { count, items })),
        FrameType::Error => parse_error(&mut cur).map(Frame::Error),
        FrameType::Ping => cur.u64("nonce").map(Frame::Ping),
        FrameType::Pong => cur.u64("nonce").map(Frame::Pong),
    };
    let frame = parsed.map_err(|p| invalid(p, request_id, Some(total)))?;
    if !cur.rest.is_empty() {
        return Err(invalid(
            Problem::TrailingBytes(cur.rest.len()),
            request_id,
            Some(total),
        ));
    }
    Ok((frame, total))
}

fn invalid(problem: Problem, request_id: u32, skip: Option<usize>) -> DecodeError {
    DecodeError::Invalid(InvalidFrame {
        problem,
        request_id,
        skip,
    })
}

/// A read cursor over a body; every read is bounds-checked.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Problem> {
        let Some((head, tail)) = self.rest.split_at_checked(n) else {
            return Err(Problem::ShortBody(field));
        };
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Problem> {
        let Some((head, tail)) = self.rest.split_first_chunk::<N>() else {
            return Err(Problem::ShortBody(field));
        };
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, Problem> {
        self.array::<1>(field).map(|[b]| b)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, Problem> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, Problem> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, Problem> {
        self.array(field).map(u64::from_be_bytes)
    }
}

/// A reader id's bytes as text. Reader ids are ASCII in practice, which
/// one word-wise check proves to be UTF-8; `from_utf8` walks a short
/// input byte by byte, and that was 3 % of a busy server's vCPU (one call
/// per request). Anything else gets the full validation.
fn reader_text(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        #[expect(unsafe_code, reason = "skipping a second validation of ASCII")]
        let text = unsafe { std::str::from_utf8_unchecked(bytes) };
        return Some(text);
    }
    std::str::from_utf8(bytes).ok()
}

fn parse_request<'a>(cur: &mut Cursor<'a>) -> Result<RequestFrame<'a>, Problem> {
    let request_id = cur.u32("request_id")?;
    // 0 is reserved for errors about a stream rather than a request, so a
    // request may not carry it (else an ERROR about it would be ambiguous).
    if request_id == 0 {
        return Err(Problem::ZeroRequestId);
    }
    let flags = cur.u8("flags")?;
    if flags & !(FLAG_PIN | FLAG_READER_TIME) != 0 {
        return Err(Problem::ReservedFlags(flags));
    }
    let reader_len = usize::from(cur.u8("reader_len")?);
    let reader = cur.take(reader_len, "reader")?;
    if reader.is_empty() || reader.len() > MAX_READER_ID_LEN {
        return Err(Problem::BadReaderId);
    }
    let reader = reader_text(reader).ok_or(Problem::BadReaderId)?;
    let credential = match cur.u8("credential_kind")? {
        CRED_CARD => {
            let format = CardFormat(cur.u16("card_format")?);
            let facility = cur.u32("facility")?;
            let number = cur.u64("card_number")?;
            CredentialKey::card(format, facility, number)
        }
        CRED_UID => {
            let len = cur.u8("uid_len")?;
            let bytes = cur.take(usize::from(len), "uid")?;
            CredentialKey::Uid(Uid::new(bytes).ok_or(Problem::BadUidLength(len))?)
        }
        other => return Err(Problem::UnknownCredentialKind(other)),
    };
    let pin = if flags & FLAG_PIN != 0 {
        let len = usize::from(cur.u8("pin_len")?);
        let pin = cur.take(len, "pin")?;
        if !valid_wire_pin(pin) {
            return Err(Problem::BadPin);
        }
        Some(pin)
    } else {
        None
    };
    let reader_time_ms = if flags & FLAG_READER_TIME != 0 {
        Some(cur.u64("reader_time_ms")?.cast_signed())
    } else {
        None
    };
    Ok(RequestFrame {
        request_id,
        reader,
        credential,
        pin,
        reader_time_ms,
    })
}

fn valid_wire_pin(pin: &[u8]) -> bool {
    !pin.is_empty() && pin.len() <= MAX_PIN_LEN && pin.iter().all(u8::is_ascii_digit)
}

fn parse_response(cur: &mut Cursor<'_>) -> Result<ResponseFrame, Problem> {
    let request_id = cur.u32("request_id")?;
    let verdict = match cur.u8("verdict")? {
        0 => Verdict::Deny,
        1 => Verdict::Grant,
        other => return Err(Problem::BadVerdict(other)),
    };
    Ok(ResponseFrame {
        request_id,
        verdict,
        reason: cur.u16("reason")?,
        unlock_ms: cur.u32("unlock_ms")?,
        snapshot_version: cur.u64("snapshot_version")?,
        snapshot_age_ms: cur.u32("snapshot_age_ms")?,
    })
}

fn parse_batch<'a, T>(
    cur: &mut Cursor<'a>,
    item: impl Fn(&mut Cursor<'a>) -> Result<T, Problem>,
) -> Result<(u16, &'a [u8]), Problem> {
    let count = cur.u16("count")?;
    if count == 0 || usize::from(count) > MAX_BATCH {
        return Err(Problem::BadBatchCount(count));
    }
    let start = cur.rest;
    for _ in 0..count {
        item(cur)?;
    }
    let used = start.len() - cur.rest.len();
    Ok((count, start.get(..used).unwrap_or_default()))
}

fn parse_error<'a>(cur: &mut Cursor<'a>) -> Result<ErrorFrame<'a>, Problem> {
    let code = ErrorCode(cur.u16("code")?);
    let request_id = cur.u32("request_id")?;
    let len = usize::from(cur.u16("text_len")?);
    if len > MAX_ERROR_TEXT {
        return Err(Problem::BadErrorText);
    }
    let text = cur.take(len, "text")?;
    let text = std::str::from_utf8(text).map_err(|_| Problem::BadErrorText)?;
    Ok(ErrorFrame {
        code,
        request_id,
        text,
    })
}

/// Writes a header with a zero length and returns where the body starts;
/// [`finish_frame`] patches the length in.
fn begin_frame(out: &mut Vec<u8>, frame_type: FrameType) -> usize {
    out.extend_from_slice(&[VERSION, frame_type as u8, 0, 0]);
    out.len()
}

fn finish_frame(out: &mut Vec<u8>, body_start: usize) -> Result<(), EncodeError> {
    let len = out.len() - body_start;
    let Ok(len16) = u16::try_from(len) else {
        out.truncate(body_start - HEADER_LEN);
        return Err(EncodeError::TooLarge(len));
    };
    if len > MAX_BODY_LEN {
        out.truncate(body_start - HEADER_LEN);
        return Err(EncodeError::TooLarge(len));
    }
    if let Some(slot) = out.get_mut(body_start - 2..body_start) {
        slot.copy_from_slice(&len16.to_be_bytes());
    }
    Ok(())
}

fn check_request(r: &RequestFrame<'_>) -> Result<(), EncodeError> {
    if r.request_id == 0 {
        return Err(EncodeError::ZeroRequestId);
    }
    if r.reader.is_empty() || r.reader.len() > MAX_READER_ID_LEN {
        return Err(EncodeError::BadReaderId(r.reader.to_owned()));
    }
    if let Some(pin) = r.pin
        && !valid_wire_pin(pin)
    {
        return Err(EncodeError::BadPin);
    }
    Ok(())
}

fn put_request_body(out: &mut Vec<u8>, r: &RequestFrame<'_>) {
    out.extend_from_slice(&r.request_id.to_be_bytes());
    let mut flags = 0;
    if r.pin.is_some() {
        flags |= FLAG_PIN;
    }
    if r.reader_time_ms.is_some() {
        flags |= FLAG_READER_TIME;
    }
    out.push(flags);
    // Lengths were checked by `check_request` (at most 64 and 16).
    out.push(r.reader.len() as u8);
    out.extend_from_slice(r.reader.as_bytes());
    match r.credential {
        CredentialKey::Card {
            format,
            facility,
            number,
        } => {
            out.push(CRED_CARD);
            out.extend_from_slice(&format.0.to_be_bytes());
            out.extend_from_slice(&facility.to_be_bytes());
            out.extend_from_slice(&number.to_be_bytes());
        }
        CredentialKey::Uid(uid) => {
            out.push(CRED_UID);
            out.push(uid.as_bytes().len() as u8);
            out.extend_from_slice(uid.as_bytes());
        }
    }
    if let Some(pin) = r.pin {
        out.push(pin.len() as u8);
        out.extend_from_slice(pin);
    }
    if let Some(t) = r.reader_time_ms {
        out.extend_from_slice(&t.to_be_bytes());
    }
}

fn put_response_body(out: &mut Vec<u8>, r: &ResponseFrame) {
    out.extend_from_slice(&r.request_id.to_be_bytes());
    out.push(r.verdict as u8);
    out.extend_from_slice(&r.reason.to_be_bytes());
    out.extend_from_slice(&r.unlock_ms.to_be_bytes());
    out.extend_from_slice(&r.snapshot_version.to_be_bytes());
    out.extend_from_slice(&r.snapshot_age_ms.to_be_bytes());
}

/// Appends a request frame.
pub fn encode_request(out: &mut Vec<u8>, r: &RequestFrame<'_>) -> Result<(), EncodeError> {
    check_request(r)?;
    let start = begin_frame(out, FrameType::Request);
    put_request_body(out, r);
    finish_frame(out, start)
}

/// Appends a response frame.
pub fn encode_response(out: &mut Vec<u8>, r: &ResponseFrame) {
    out.extend_from_slice(&[
        VERSION,
        FrameType::Response as u8,
        0,
        RESPONSE_BODY_LEN as u8,
    ]);
    put_response_body(out, r);
}

/// Appends a batch request frame of 1 to [`MAX_BATCH`] requests.
pub fn encode_batch_request(
    out: &mut Vec<u8>,
    items: &[RequestFrame<'_>],
) -> Result<(), EncodeError> {
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(EncodeError::BadBatchCount(items.len()));
    }
    items.iter().try_for_each(check_request)?;
    let start = begin_frame(out, FrameType::BatchRequest);
    out.extend_from_slice(&(items.len() as u16).to_be_bytes());
    for r in items {
        put_request_body(out, r);
    }
    finish_frame(out, start)
}

/// Appends a batch response frame of 1 to [`MAX_BATCH`] responses.
pub fn encode_batch_response(
    out: &mut Vec<u8>,
    items: &[ResponseFrame],
) -> Result<(), EncodeError> {
    let mut w = BatchResponseWriter::begin(out);
    for r in items {
        w.push(r);
    }
    w.finish()
}

/// Writes a batch response item by item, without collecting the items
/// first (the server's batch path).
pub struct BatchResponseWriter<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
    count: usize,
}

impl<'o> BatchResponseWriter<'o> {
    /// Starts a batch response at the end of `out`.
    pub fn begin(out: &'o mut Vec<u8>) -> Self {
        let start = begin_frame(out, FrameType::BatchResponse);
        out.extend_from_slice(&[0, 0]);
        Self {
            out,
            start,
            count: 0,
        }
    }

    /// Appends one response.
    pub fn push(&mut self, r: &ResponseFrame) {
        put_response_body(self.out, r);
        self.count += 1;
    }

    /// Patches the count and length in. On error the partial frame is
    /// removed from the buffer.
    pub fn finish(self) -> Result<(), EncodeError> {
        if self.count == 0 || self.count > MAX_BATCH {
            self.out.truncate(self.start - HEADER_LEN);
            return Err(EncodeError::BadBatchCount(self.count));
        }
        if let Some(slot) = self.out.get_mut(self.start..self.start + 2) {
            slot.copy_from_slice(&(self.count as u16).to_be_bytes());
        }
        finish_frame(self.out, self.start)
    }
}

fn encode_raw_batch(
    out: &mut Vec<u8>,
    frame_type: FrameType,
    count: u16,
    items: &[u8],
) -> Result<(), EncodeError> {
    let start = begin_frame(out, frame_type);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(items);
    finish_frame(out, start)
}

/// Appends an error frame; a text longer than [`MAX_ERROR_TEXT`] is cut at
/// a character boundary.
pub fn encode_error(out: &mut Vec<u8>, code: ErrorCode, request_id: u32, text: &str) {
    let mut end = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = text.get(..end).unwrap_or_default();
    out.extend_from_slice(&[VERSION, FrameType::Error as u8]);
    out.extend_from_slice(&((8 + text.len()) as u16).to_be_bytes());
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(&request_id.to_be_bytes());
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn encode_ping(out: &mut Vec<u8>, frame_type: FrameType, nonce: u64) {
    out.extend_from_slice(&[VERSION, frame_type as u8, 0, 8]);
    out.extend_from_slice(&nonce.to_be_bytes());
}

/// Appends a ping frame.
pub fn encode_ping_frame(out: &mut Vec<u8>, nonce: u64) {
    encode_ping(out, FrameType::Ping, nonce);
}

/// Appends a pong frame.
pub fn encode_pong_frame(out: &mut Vec<u8>, nonce: u64) {
    encode_ping(out, FrameType::Pong, nonce);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(id: u32) -> RequestFrame<'static> {
        RequestFrame {
            request_id: id,
            reader: "lobby-in",
            credential: CredentialKey::card(CardFormat::H10301, 12, 345),
            pin: Some(b"1234"),
            reader_time_ms: Some(1_700_000_000_000),
        }
    }

    #[test]
    fn request_round_trips_and_every_prefix_is_incomplete() {
        let mut out = Vec::new();
        encode_request(&mut out, &req(7)).unwrap();
        let (frame, n) = decode(&out).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(frame, Frame::Request(req(7)));
        for cut in 0..out.len() {
            assert!(
                matches!(decode(&out[..cut]), Err(DecodeError::Incomplete { .. })),
                "prefix {cut}"
            );
        }
    }

    #[test]
    fn reader_ids_are_ascii_or_checked_utf8_and_anything_else_is_refused() {
        assert_eq!(reader_text(b"lobby-in"), Some("lobby-in"));
        assert_eq!(reader_text("tür-süd".as_bytes()), Some("tür-süd"));
        for bad in [&b"lobby\xff"[..], b"\xc3", b"a\xed\xa0\x80b"] {
            assert_eq!(reader_text(bad), None, "{bad:?}");
        }
        // On the wire: a request naming a reader with invalid UTF-8 is a
        // BAD_READER_ID, never decided.
        let mut out = Vec::new();
        encode_request(&mut out, &req(7)).unwrap();
        let at = out
            .windows(b"lobby-in".len())
            .position(|w| w == b"lobby-in")
            .unwrap();
        out[at] = 0xff;
        let err = decode(&out).unwrap_err();
        let DecodeError::Invalid(inv) = err else {
            panic!("{err:?}")
        };
        assert_eq!(inv.request_id, 7);
        assert!(inv.to_string().contains("reader"), "{inv}");
    }

    #[test]
    fn batch_round_trips() {
        let items: Vec<_> = (1..=3).map(req).collect();
        let mut out = Vec::new();
        encode_batch_request(&mut out, &items).unwrap();
        let (Frame::BatchRequest(b), _) = decode(&out).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(b.iter().collect::<Vec<_>>(), items);
        let mut re = Vec::new();
        Frame::BatchRequest(b).encode(&mut re).unwrap();
        assert_eq!(re, out);
    }

    #[test]
    fn garbage_first_byte_is_invalid_at_once() {
        let err = decode(b"G").unwrap_err();
        let DecodeError::Invalid(inv) = err else {
            panic!("{err:?}")
        };
        assert_eq!(inv.code(), ErrorCode::UNSUPPORTED_VERSION);
        assert_eq!(inv.skip, None);
    }

    #[test]
    fn oversized_length_is_invalid_before_the_body_arrives() {
        let err = decode(&[1, 1, 0xff, 0xff]).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Invalid(InvalidFrame {
                problem: Problem::TooLarge(65535),
                skip: None,
                ..
            })
        ));
    }

    #[test]
    fn bad_body_keeps_framing_and_request_id() {
        let mut out = Vec::new();
        encode_request(&mut out, &req(9)).unwrap();
        out[8] = 0x80; // reserved flag
        let DecodeError::Invalid(inv) = decode(&out).unwrap_err() else {
            panic!()
        };
        assert_eq!(inv.request_id, 9);
        assert_eq!(inv.skip, Some(out.len()));
        assert_eq!(inv.code(), ErrorCode::MALFORMED);
    }

    #[test]
    fn a_bad_error_frame_is_refused_with_its_own_request_id() {
        // Regression (issue 12): the id follows the 2-byte code, so it was
        // read from the wrong offset.
        let mut out = Vec::new();
        encode_error(&mut out, ErrorCode::MALFORMED, 0x0102_0304, "x");
        out.push(0); // one byte past the text
        let len = u16::try_from(out.len() - HEADER_LEN).unwrap();
        out[2..4].copy_from_slice(&len.to_be_bytes());
        let DecodeError::Invalid(inv) = decode(&out).unwrap_err() else {
            panic!()
        };
        assert_eq!(inv.problem, Problem::TrailingBytes(1));
        assert_eq!(inv.request_id, 0x0102_0304);
        // A body too short to hold the id yields 0, not a panic.
        let DecodeError::Invalid(inv) = decode(&[VERSION, 5, 0, 3, 0, 1, 9]).unwrap_err() else {
            panic!()
        };
        assert_eq!(inv.request_id, 0);
    }

    #[test]
    fn request_id_0_is_malformed_alone_and_in_a_batch() {
        // Regression (issue 12): the spec reserves id 0, the decoder took it.
        let mut one = Vec::new();
        encode_request(&mut one, &req(5)).unwrap();
        one[4..8].copy_from_slice(&[0; 4]);
        let DecodeError::Invalid(inv) = decode(&one).unwrap_err() else {
            panic!()
        };
        assert_eq!(
            (inv.problem.clone(), inv.request_id, inv.skip),
            (Problem::ZeroRequestId, 0, Some(one.len()))
        );
        assert_eq!(inv.code(), ErrorCode::MALFORMED);
        let mut batch = Vec::new();
        encode_batch_request(&mut batch, &[req(5), req(6)]).unwrap();
        // The second item's id starts after the header, the count and the
        // first item.
        let second = HEADER_LEN + 2 + (one.len() - HEADER_LEN);
        batch[second..second + 4].copy_from_slice(&[0; 4]);
        let DecodeError::Invalid(inv) = decode(&batch).unwrap_err() else {
            panic!()
        };
        assert_eq!(
            (inv.problem, inv.request_id, inv.skip),
            (Problem::ZeroRequestId, 0, Some(batch.len()))
        );
    }

    #[test]
    fn an_empty_pin_is_malformed() {
        // docs/decisions.md: on the wire an entered PIN has 1 to 16 digits;
        // "no PIN" is the flag cleared, not a PIN of length 0.
        let mut r = req(3);
        r.reader_time_ms = None;
        let mut out = Vec::new();
        encode_request(&mut out, &r).unwrap();
        // The PIN is the last field: cut its digits, set its length to 0.
        out.truncate(out.len() - 4);
        *out.last_mut().unwrap() = 0;
        let len = u16::try_from(out.len() - HEADER_LEN).unwrap();
        out[2..4].copy_from_slice(&len.to_be_bytes());
        let DecodeError::Invalid(inv) = decode(&out).unwrap_err() else {
            panic!()
        };
        assert_eq!((inv.problem, inv.request_id), (Problem::BadPin, 3));
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would() {
        let mut out = Vec::new();
        let long = "r".repeat(65);
        let mut r = req(1);
        r.reader = &long;
        assert!(encode_request(&mut out, &r).is_err());
        r.reader = "x";
        r.pin = Some(b"12a4");
        assert!(encode_request(&mut out, &r).is_err());
        assert!(encode_batch_request(&mut out, &[]).is_err());
        assert_eq!(
            encode_request(&mut out, &req(0)),
            Err(EncodeError::ZeroRequestId)
        );
        assert_eq!(
            encode_batch_request(&mut out, &[req(1), req(0)]),
            Err(EncodeError::ZeroRequestId)
        );
        assert!(out.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Random bytes never panic the decoder, and what it accepts it
        /// accounts for exactly.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut rest = &bytes[..];
            loop {
                match decode(rest) {
                    Ok((_, n)) => { prop_assert!(n >= HEADER_LEN && n <= rest.len()); rest = &rest[n..]; }
                    Err(DecodeError::Incomplete { needed }) => { prop_assert!(needed > 0); break; }
                    Err(DecodeError::Invalid(inv)) => match inv.skip {
                        Some(n) => { prop_assert!(n <= rest.len()); rest = &rest[n..]; }
                        None => break,
                    },
                }
            }
        }

        /// Random frames with a valid header (so the body parsers get
        /// exercised, not just the version check) never panic either.
        #[test]
        fn random_bodies_never_panic(t in 0u8..9, body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = vec![VERSION, t];
            buf.extend_from_slice(&(body.len() as u16).to_be_bytes());
            buf.extend_from_slice(&body);
            match decode(&buf) {
                Ok((f, n)) => {
                    prop_assert_eq!(n, buf.len());
                    let mut re = Vec::new();
                    f.encode(&mut re).unwrap();
                    prop_assert_eq!(decode(&re).unwrap().0, f);
                }
                Err(DecodeError::Incomplete { .. }) => prop_assert!(false, "complete frame reported incomplete"),
                Err(DecodeError::Invalid(inv)) => prop_assert_eq!(inv.skip, Some(buf.len())),
            }
        }
    }
}
