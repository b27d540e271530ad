//! Every test vector in `PROTOCOL.md` against the codec: valid vectors
//! decode to the frame the document describes and that frame encodes back
//! to the same bytes; invalid ones fail with the documented code.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use accessd_engine::{CardFormat, CredentialKey, Uid, Verdict};
use accessd_protocol::{
    DecodeError, ErrorCode, ErrorFrame, Frame, RequestFrame, ResponseFrame, decode,
    encode_batch_request, encode_batch_response,
};

const DOC: &str = include_str!("../PROTOCOL.md");

/// (name, bytes) of every ```hex vector=NAME block.
fn vectors() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("```hex vector=") else {
            continue;
        };
        let mut hex = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            hex.extend(l.chars().filter(|c| !c.is_whitespace()));
        }
        out.push((name.trim().to_owned(), hex::decode(&hex).unwrap()));
    }
    out
}

fn alice(id: u32) -> RequestFrame<'static> {
    RequestFrame {
        request_id: id,
        reader: "lobby-in",
        credential: CredentialKey::card(CardFormat::H10301, 12, 1001),
        pin: None,
        reader_time_ms: None,
    }
}

fn uid() -> CredentialKey {
    CredentialKey::Uid(Uid::new(&[0x04, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6]).unwrap())
}

fn response(id: u32, verdict: Verdict, reason: u16, unlock_ms: u32) -> ResponseFrame {
    ResponseFrame {
        request_id: id,
        verdict,
        reason,
        unlock_ms,
        snapshot_version: 3,
        snapshot_age_ms: 1500,
    }
}

enum Expect {
    /// Decodes to this frame, which encodes back to the vector.
    Frame(Vec<u8>),
    /// Invalid with this code; `Some(n)` = skip n bytes.
    Invalid(ErrorCode, u32, Option<usize>),
    Incomplete(usize),
}

fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> Expect {
    let mut out = Vec::new();
    f(&mut out);
    Expect::Frame(out)
}

fn expected(name: &str) -> Expect {
    match name {
        "request-card" => encoded(|o| Frame::Request(alice(1)).encode(o).unwrap()),
        "request-uid-pin-time" => encoded(|o| {
            Frame::Request(RequestFrame {
                request_id: 2,
                reader: "server-room-in",
                credential: uid(),
                pin: Some(b"2468"),
                reader_time_ms: Some(1_764_511_200_000),
            })
            .encode(o)
            .unwrap()
        }),
        "response-grant" => encoded(|o| {
            Frame::Response(response(1, Verdict::Grant, 0, 5000))
                .encode(o)
                .unwrap()
        }),
        "response-deny" => encoded(|o| {
            Frame::Response(response(2, Verdict::Deny, 101, 0))
                .encode(o)
                .unwrap()
        }),
        "batch-request" => encoded(|o| {
            // A UID that `docs/examples/site.toml` does not enroll, so the
            // `batch-response` vector's deny is what that site answers.
            let second = RequestFrame {
                credential: CredentialKey::Uid(Uid::new(&[0x0b, 0xad, 0xca, 0xfe]).unwrap()),
                ..alice(4)
            };
            encode_batch_request(o, &[alice(3), second]).unwrap()
        }),
        "batch-response" => encoded(|o| {
            encode_batch_response(
                o,
                &[
                    response(3, Verdict::Grant, 0, 5000),
                    response(4, Verdict::Deny, 102, 0),
                ],
            )
            .unwrap()
        }),
        "error" => encoded(|o| {
            Frame::Error(ErrorFrame {
                code: ErrorCode::MALFORMED,
                request_id: 12,
                text: "reserved flag bits set in `0x80`",
            })
            .encode(o)
            .unwrap()
        }),
        "ping" => encoded(|o| Frame::Ping(0x0123_4567_89ab_cdef).encode(o).unwrap()),
        "pong" => encoded(|o| Frame::Pong(0x0123_4567_89ab_cdef).encode(o).unwrap()),
        "invalid-reserved-flags" => Expect::Invalid(ErrorCode::MALFORMED, 1, Some(33)),
        "invalid-version" => Expect::Invalid(ErrorCode::UNSUPPORTED_VERSION, 0, None),
        "invalid-too-large" => Expect::Invalid(ErrorCode::FRAME_TOO_LARGE, 0, None),
        "invalid-unknown-type" => Expect::Invalid(ErrorCode::UNKNOWN_TYPE, 0, Some(4)),
        "incomplete-header" => Expect::Incomplete(1),
        "incomplete-body" => Expect::Incomplete(13),
        other => panic!("PROTOCOL.md has a vector `{other}` this test does not know"),
    }
}

#[test]
fn every_vector_in_protocol_md() {
    let vectors = vectors();
    let names: Vec<&str> = vectors.iter().map(|(n, _)| n.as_str()).collect();
    // Every frame type has at least one valid vector.
    for required in [
        "request-card",
        "request-uid-pin-time",
        "response-grant",
        "response-deny",
        "batch-request",
        "batch-response",
        "error",
        "ping",
        "pong",
    ] {
        assert!(
            names.contains(&required),
            "PROTOCOL.md lacks vector `{required}`"
        );
    }
    assert!(vectors.len() >= 15, "vectors found: {names:?}");
    for (name, bytes) in &vectors {
        match (expected(name), decode(bytes)) {
            (Expect::Frame(want), Ok((frame, used))) => {
                assert_eq!(used, bytes.len(), "{name}: length");
                assert_eq!(&want, bytes, "{name}: the encoder writes the vector");
                let mut again = Vec::new();
                frame.encode(&mut again).unwrap();
                assert_eq!(&again, bytes, "{name}: decode then encode");
            }
            (Expect::Invalid(code, id, skip), Err(DecodeError::Invalid(inv))) => {
                assert_eq!(
                    (inv.code(), inv.request_id, inv.skip),
                    (code, id, skip),
                    "{name}"
                );
            }
            (Expect::Incomplete(n), Err(DecodeError::Incomplete { needed })) => {
                assert_eq!(needed, n, "{name}");
            }
            (_, got) => panic!("{name}: unexpected {got:?}"),
        }
    }
}

#[test]
fn decoded_vectors_carry_the_documented_fields() {
    let vectors = vectors();
    let get = |n: &str| &vectors.iter().find(|(name, _)| name == n).unwrap().1;
    let (Frame::Request(r), _) = decode(get("request-uid-pin-time")).unwrap() else {
        panic!()
    };
    assert_eq!(
        (r.request_id, r.reader, r.pin, r.reader_time_ms),
        (
            2,
            "server-room-in",
            Some(&b"2468"[..]),
            Some(1_764_511_200_000)
        )
    );
    let (Frame::BatchResponse(b), _) = decode(get("batch-response")).unwrap() else {
        panic!()
    };
    let items: Vec<_> = b.iter().collect();
    assert_eq!(
        items[1].reason(),
        Some(accessd_engine::Reason::UnknownCredential)
    );
}
