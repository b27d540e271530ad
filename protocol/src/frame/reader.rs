//! Reassembly of frames from the reads of a stream, shared by the server
//! and the client so that both split and join frames the same way.

use super::{DecodeError, Frame, InvalidFrame, decode};

/// Turns the chunks a QUIC stream delivers into frames.
///
/// Frames are decoded in place from each chunk; only a frame split across
/// two reads is copied, and only that frame (not the rest of the read
/// behind it), so a reader of pipelined requests copies almost nothing.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    /// Bytes of a frame that has not fully arrived yet (rarely more: see
    /// `feed`).
    partial: Vec<u8>,
}

impl FrameReader {
    /// Bytes held of a frame that has not fully arrived: non-zero at the
    /// end of a stream means the stream ended inside a frame.
    pub(crate) fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Feeds the bytes of one read, calling `each` in stream order with
    /// every complete frame, or with every invalid one (whose bytes are then
    /// skipped). Stops at the first error `each` returns. When the framing
    /// is lost (an invalid frame that cannot be skipped), `each` still gets
    /// it, then `feed` returns it as an error: nothing after it can be read.
    pub(crate) fn feed<E: From<InvalidFrame>>(
        &mut self,
        mut fresh: &[u8],
        mut each: impl FnMut(Result<Frame<'_>, InvalidFrame>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.complete_partial(&mut fresh);
        if !self.partial.is_empty() {
            let used = run(&self.partial, &mut each)?;
            self.partial.drain(..used);
            if !self.partial.is_empty() {
                // An incomplete frame is still waiting, so `fresh` is empty,
                // or a tail is left from an earlier fall-back: keep one
                // contiguous buffer.
                self.partial.extend_from_slice(fresh);
                let used = run(&self.partial, &mut each)?;
                self.partial.drain(..used);
                return Ok(());
            }
        }
        let used = run(fresh, &mut each)?;
        self.partial
            .extend_from_slice(fresh.get(used..).unwrap_or_default());
        Ok(())
    }

    /// Moves from `fresh` into `partial` only the bytes the frame started
    /// in `partial` still lacks.
    fn complete_partial(&mut self, fresh: &mut &[u8]) {
        while !self.partial.is_empty() && !fresh.is_empty() {
            let Err(DecodeError::Incomplete { needed }) = decode(&self.partial) else {
                return;
            };
            let (head, tail) = fresh.split_at(needed.min(fresh.len()));
            self.partial.extend_from_slice(head);
            *fresh = tail;
        }
    }
}

/// A stream's read buffer: one page to begin with, doubled up to 64 KiB
/// each time a read fills it.
///
/// Why not 64 KiB at once: a door reader's stream carries one small frame
/// at a time, and a server holding ten thousand of them spent most of its
/// core zeroing 64 KiB per stream (640 MB) while they connected. A
/// pipelining client fills the page and gets the larger buffer after a
/// few reads.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    /// The last read filled `buf`: make it larger before the next.
    grow: bool,
}

impl ReadBuf {
    const START: usize = 4 * 1024;
    /// The largest buffer: a read of it holds at most a few thousand frames.
    pub(crate) const MAX: usize = 64 * 1024;

    /// Where the next read goes.
    pub(crate) fn for_read(&mut self) -> &mut [u8] {
        if self.grow {
            self.grow = false;
            let len = (self.buf.len() * 2).min(Self::MAX);
            self.buf.resize(len, 0);
        }
        &mut self.buf
    }

    /// The `n` bytes a read into [`ReadBuf::for_read`] returned.
    pub(crate) fn got(&mut self, n: usize) -> &[u8] {
        self.grow = n >= self.buf.len() && self.buf.len() < Self::MAX;
        self.buf.get(..n).unwrap_or_default()
    }
}

impl Default for ReadBuf {
    fn default() -> Self {
        Self {
            buf: vec![0; Self::START],
            grow: false,
        }
    }
}

/// Hands every complete frame of `data` to `each`; returns how many bytes
/// were used (the rest begins an incomplete frame).
fn run<E: From<InvalidFrame>>(
    data: &[u8],
    each: &mut impl FnMut(Result<Frame<'_>, InvalidFrame>) -> Result<(), E>,
) -> Result<usize, E> {
    let mut pos = 0;
    loop {
        match decode(data.get(pos..).unwrap_or_default()) {
            Ok((frame, n)) => {
                each(Ok(frame))?;
                pos += n;
            }
            Err(DecodeError::Incomplete { .. }) => return Ok(pos),
            Err(DecodeError::Invalid(inv)) => match inv.skip {
                Some(n) => {
                    each(Err(inv))?;
                    pos += n;
                }
                None => {
                    each(Err(inv.clone()))?;
                    return Err(inv.into());
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{ErrorCode, encode_ping_frame};

    /// What a reader reports, owned: a ping's nonce or an error code.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Ping(u64),
        Invalid(ErrorCode),
    }

    fn feed_all(chunks: &[&[u8]]) -> (Vec<Seen>, Result<(), InvalidFrame>, usize) {
        let mut reader = FrameReader::default();
        let mut seen = Vec::new();
        let mut end = Ok(());
        for chunk in chunks {
            end = reader.feed(chunk, |item| {
                seen.push(match item {
                    Ok(Frame::Ping(n)) => Seen::Ping(n),
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(inv) => Seen::Invalid(inv.code()),
                });
                Ok::<(), InvalidFrame>(())
            });
            if end.is_err() {
                break;
            }
        }
        (seen, end, reader.buffered())
    }

    #[test]
    fn every_split_of_a_stream_reads_the_same() {
        let mut stream = Vec::new();
        encode_ping_frame(&mut stream, 1);
        stream.extend_from_slice(&[1, 0x42, 0, 2, 9, 9]); // unknown type, skipped
        encode_ping_frame(&mut stream, 2);
        encode_ping_frame(&mut stream, 3);
        stream.extend_from_slice(&[1, 6, 0]); // a header cut short
        let want = vec![
            Seen::Ping(1),
            Seen::Invalid(ErrorCode::UNKNOWN_TYPE),
            Seen::Ping(2),
            Seen::Ping(3),
        ];
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let (seen, end, buffered) = feed_all(&[&stream[..a], &stream[a..b], &stream[b..]]);
                assert_eq!(seen, want, "split at {a} and {b}");
                assert!(end.is_ok());
                assert_eq!(buffered, 3, "the cut-short header is held");
            }
        }
    }

    #[test]
    fn lost_framing_is_reported_then_stops_the_reader() {
        let mut stream = Vec::new();
        encode_ping_frame(&mut stream, 1);
        stream.extend_from_slice(&[9, 1, 0, 0]); // unsupported version
        encode_ping_frame(&mut stream, 2);
        for cut in 0..=stream.len() {
            let (seen, end, _) = feed_all(&[&stream[..cut], &stream[cut..]]);
            assert_eq!(
                seen,
                vec![Seen::Ping(1), Seen::Invalid(ErrorCode::UNSUPPORTED_VERSION)],
                "cut at {cut}"
            );
            assert_eq!(end.unwrap_err().skip, None);
        }
    }

    #[test]
    fn a_read_buffer_grows_only_when_reads_fill_it() {
        let mut buf = ReadBuf::default();
        assert_eq!(buf.for_read().len(), ReadBuf::START);
        assert_eq!(buf.got(30).len(), 30);
        assert_eq!(buf.for_read().len(), ReadBuf::START, "a small read");
        let mut len = ReadBuf::START;
        while len < ReadBuf::MAX {
            buf.got(len);
            len = buf.for_read().len();
        }
        assert_eq!(len, ReadBuf::MAX);
        buf.got(ReadBuf::MAX);
        assert_eq!(buf.for_read().len(), ReadBuf::MAX, "never past the largest");
    }
}
