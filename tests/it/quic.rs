//! The QUIC decision service end to end (real quinn endpoints on loopback).

use std::sync::Arc;
use std::time::Duration;

use accessd_engine::{
    Change, CredentialKey, CredentialRecord, CredentialStatus, Reason, Record, Request,
    SharedSnapshot, SiteFile, Snapshot, SnapshotBuilder, Verdict,
};
use accessd_protocol::{
    ClientError, ErrorCode, Frame, Limits, RequestFrame, TlsCredentials, VERSION, close,
    encode_response,
};
use jiff::Timestamp;

use crate::support::quic::{TestServer, start_server, start_server_with};

const EXAMPLE: &str = include_str!("../../docs/examples/site.toml");
// Monday 2026-11-30, 09:00 in New York.
const MON_9: &str = "2026-11-30T09:00:00-05:00";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn example_builder() -> SnapshotBuilder {
    let site = SiteFile::parse(EXAMPLE).unwrap();
    let mut builder = SnapshotBuilder::new();
    assert!(
        builder
            .apply_all(site.records.into_iter().map(Change::Upsert))
            .is_empty()
    );
    builder
}

fn example() -> Snapshot {
    example_builder().publish(ts("2026-11-30T00:00:00Z"))
}

pub(crate) async fn example_server() -> (TestServer, Arc<SharedSnapshot>) {
    let shared = Arc::new(SharedSnapshot::new(example()));
    let server = start_server(shared.clone()).await;
    server.set_now(ts(MON_9));
    (server, shared)
}

fn card(s: &str) -> CredentialKey {
    s.parse().unwrap()
}

fn req<'a>(reader: &'a str, c: &str, pin: Option<&'a str>) -> Request<'a> {
    Request {
        reader,
        credential: card(c),
        pin: pin.map(str::as_bytes),
    }
}

#[tokio::test]
async fn grant_and_every_deny_path_over_the_wire() {
    use Reason::*;
    let shared = Arc::new(SharedSnapshot::new({
        // One credential whose holder does not exist, for HolderUnknown.
        let mut b = example_builder();
        b.apply(Change::Upsert(Record::Credential(CredentialRecord {
            card: card("h10301:12:7777"),
            holder: "ghost".into(),
            status: CredentialStatus::Active,
            valid_from: None,
            valid_until: None,
            pin: None,
        })))
        .unwrap();
        b.publish(ts("2026-11-30T00:00:00Z"))
    }));
    let server = start_server(shared.clone()).await;
    let client = server.gateway().await;
    #[rustfmt::skip]
    let cases: &[(&str, &str, Option<&str>, &str, Reason)] = &[
        ("lobby-in", "h10301:12:1001", None, MON_9, Granted),
        ("lobby-in", "uid:04a1b2c3d4e5f6", None, MON_9, Granted),
        ("no-such-reader", "h10301:12:1001", None, MON_9, UnknownReader),
        ("lobby-in", "h10301:12:5555", None, MON_9, UnknownCredential),
        ("lobby-in", "uid:0badcafe", None, MON_9, UnknownCredential),
        ("lobby-in", "h10301:12:993", None, MON_9, CredentialSuspended),
        ("lobby-in", "h10301:12:990", None, MON_9, CredentialLost),
        ("lobby-in", "h10301:12:991", None, MON_9, CredentialStolen),
        ("lobby-in", "h10301:12:992", None, MON_9, CredentialRevoked),
        ("lobby-in", "h10301:12:2001", None, MON_9, CredentialNotYetValid),
        ("lobby-in", "h10301:12:2001", None, "2026-12-02T09:00:00-05:00", CredentialExpired),
        ("lobby-in", "h10301:12:7777", None, MON_9, HolderUnknown),
        ("lobby-in", "h10301:12:1002", None, MON_9, HolderInactive),
        ("lobby-in", "h10301:12:1004", None, MON_9, HolderNotYetValid),
        ("lobby-in", "h10301:12:1003", None, MON_9, HolderExpired),
        ("loading-dock-in", "h10301:12:1001", None, MON_9, DoorLocked),
        ("vault-in", "h10301:12:1001", None, MON_9, DoorLockdown),
        ("server-room-in", "h10301:12:1006", None, MON_9, NoAccess),
        ("lab-in", "h10301:12:1006", None, MON_9, AccessNotValidNow),
        ("lobby-in", "h10301:12:1001", None, "2026-11-28T10:00:00-05:00", OutsideSchedule),
        ("server-room-in", "h10301:12:1001", None, MON_9, PinRequired),
        ("server-room-in", "h10301:12:1001", Some("1111"), MON_9, PinWrong),
        ("server-room-in", "h10301:12:1001", Some("2468"), MON_9, Granted),
        // Anti-passback: hard in the garage, soft on the lab floor.
        ("garage-in", "h10301:12:1005", None, "2026-11-30T10:00:00-05:00", Granted),
        ("garage-in", "h10301:12:1005", None, "2026-11-30T10:00:00-05:00", AntiPassback),
        ("lab-in", "h10301:12:1001", None, "2026-11-30T08:00:00-05:00", Granted),
        ("lab-in", "h10301:12:1001", None, "2026-11-30T08:05:00-05:00", GrantedPassbackWarning),
    ];
    let version = shared.load().version();
    for (i, &(reader, c, pin, at, expected)) in cases.iter().enumerate() {
        server.set_now(ts(at));
        let r = client.decide(&req(reader, c, pin)).await.unwrap();
        assert_eq!(
            r.reason(),
            Some(expected),
            "case {i}: {reader} {c} {pin:?} {at}"
        );
        assert_eq!(r.verdict, expected.verdict(), "case {i}");
        assert_eq!(r.snapshot_version, version, "case {i}");
        if r.verdict == Verdict::Grant {
            assert!(r.unlock_ms > 0, "case {i}: a grant unlocks");
        } else {
            assert_eq!(r.unlock_ms, 0, "case {i}: a deny never unlocks");
        }
    }
    client.close().await;
    server.shutdown().await;
}

/// `Client::close` with requests in flight (sent, their callers gone)
/// returns once their answers are in, woken by the last one: a lost
/// wake-up would show as the 2 s limit.
#[tokio::test]
async fn close_waits_for_answers_in_flight_then_returns() {
    let shared = Arc::new(SharedSnapshot::new(example()));
    let server = start_server(shared).await;
    let client = server.gateway().await;
    let request = req("lobby-in", "h10301:12:1001", None);
    for _ in 0..50 {
        // Polled once (the request is sent), then dropped unanswered.
        let mut decide = std::pin::pin!(client.decide(&request));
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(decide.as_mut().poll(cx).is_pending())
        })
        .await;
        assert!(first, "answered within its first poll");
    }
    let started = std::time::Instant::now();
    client.close().await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "close took {took:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_empty_server_answers_not_ready() {
    let shared = Arc::new(SharedSnapshot::new(Snapshot::empty(Timestamp::now())));
    let server = start_server(shared).await;
    let client = server.gateway().await;
    let r = client
        .decide(&req("lobby-in", "h10301:12:1001", None))
        .await
        .unwrap();
    assert_eq!(
        (r.verdict, r.reason()),
        (Verdict::Deny, Some(Reason::NotReady))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_reader_may_only_ask_for_the_readers_its_certificate_names() {
    let (server, _) = example_server().await;
    let lobby = server
        .connect(&server.certs.client(&["urn:accessd:reader:lobby-in"]))
        .await
        .unwrap();
    let ok = lobby
        .decide(&req("lobby-in", "h10301:12:1001", None))
        .await
        .unwrap();
    assert_eq!(ok.reason(), Some(Reason::Granted));
    // Alice may open the server room, but not through the lobby's reader.
    let other = lobby
        .decide(&req("server-room-in", "h10301:12:1001", Some("2468")))
        .await
        .unwrap();
    assert_eq!(
        (other.verdict, other.reason(), other.unlock_ms),
        (Verdict::Deny, Some(Reason::ReaderNotPermitted), 0)
    );
    // In a batch, only the foreign reader's item is refused.
    let batch = lobby
        .decide_batch(&[
            req("lobby-in", "h10301:12:1001", None),
            req("garage-in", "h10301:12:1005", None),
        ])
        .await
        .unwrap();
    assert_eq!(batch[0].reason(), Some(Reason::Granted));
    assert_eq!(batch[1].reason(), Some(Reason::ReaderNotPermitted));
    // The gateway's prefix form.
    let lab_gw = server
        .connect(&server.certs.client(&["urn:accessd:reader-prefix:lab-"]))
        .await
        .unwrap();
    let lab = lab_gw
        .decide(&req("lab-in", "h10301:12:1001", None))
        .await
        .unwrap();
    assert_eq!(lab.verdict, Verdict::Grant);
    let lobby_via_lab = lab_gw
        .decide(&req("lobby-in", "h10301:12:1001", None))
        .await
        .unwrap();
    assert_eq!(lobby_via_lab.reason(), Some(Reason::ReaderNotPermitted));
    server.shutdown().await;
}

/// Checks that the server refuses `tls` with the TLS alert `alert`, carried
/// as the QUIC crypto error `0x100 + alert` (RFC 9001), as PROTOCOL.md
/// promises firmware authors.
async fn assert_refused(server: &TestServer, tls: &TlsCredentials, alert: u8) {
    // TLS 1.3: the client may finish its side of the handshake before the
    // server has checked its certificate, so the refusal shows at the
    // latest on the first request.
    let outcome = match server.connect(tls).await {
        Err(e) => Err(e),
        Ok(client) => client
            .decide(&req("lobby-in", "h10301:12:1001", None))
            .await
            .map(|_| ()),
    };
    let err = outcome.expect_err("a refused client got an answer");
    // quinn's wording for a CONNECTION_CLOSE with a crypto error code.
    let want = format!("the cryptographic handshake failed: error {alert}");
    assert!(err.to_string().contains(&want), "{err}");
}

#[tokio::test]
async fn handshake_is_refused_without_or_with_a_foreign_client_certificate() {
    let (server, _) = example_server().await;
    let anonymous =
        TlsCredentials::without_client_certificate(&server.certs.ca.cert_pem()).unwrap();
    // certificate_required (116)
    assert_refused(&server, &anonymous, 116).await;
    let other_ca = accessd_protocol::DevCa::new("someone else").unwrap();
    let issued = other_ca
        .client("intruder", &["urn:accessd:all-readers".to_owned()])
        .unwrap();
    let foreign = TlsCredentials::from_pem(
        &server.certs.ca.cert_pem(),
        &issued.cert_pem,
        &issued.key_pem,
    )
    .unwrap();
    // unknown_ca (48)
    assert_refused(&server, &foreign, 48).await;
    // The server still serves everyone else.
    let gw = server.gateway().await;
    assert_eq!(
        gw.decide(&req("lobby-in", "h10301:12:1001", None))
            .await
            .unwrap()
            .verdict,
        Verdict::Grant
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_certificate_naming_no_reader_is_closed_with_not_authorized() {
    let (server, _) = example_server().await;
    let client = server
        .connect(&server.certs.client(&["https://example.invalid/door"]))
        .await
        .unwrap();
    let err = client
        .decide(&req("lobby-in", "h10301:12:1001", None))
        .await
        .unwrap_err();
    match client.closed().await {
        ClientError::Closed { code, .. } => assert_eq!(code, Some(close::NOT_AUTHORIZED), "{err}"),
        other => panic!("unexpected {other:?}"),
    }
    server.shutdown().await;
}

pub(crate) fn good_request(id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    accessd_protocol::encode_request(
        &mut out,
        &RequestFrame {
            request_id: id,
            reader: "lobby-in",
            credential: card("h10301:12:1001"),
            pin: None,
            reader_time_ms: Some(1_764_511_200_000),
        },
    )
    .unwrap();
    out
}

/// What came back on a raw pipeline: error codes with their request ids,
/// and the ids of responses.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Seen {
    pub(crate) errors: Vec<(ErrorCode, u32)>,
    pub(crate) responses: Vec<u32>,
}

/// Sends `bytes` then `then` on a fresh stream, finishes it, and collects
/// every frame until the server ends the stream (or the connection).
pub(crate) async fn exchange(
    client: &accessd_protocol::Client,
    bytes: &[u8],
) -> (Seen, Option<ClientError>) {
    let mut pipe = client.pipeline().await.unwrap();
    pipe.queue_raw(bytes);
    pipe.flush().await.unwrap();
    pipe.finish();
    let mut seen = Seen::default();
    let end = loop {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            pipe.read(|f| match f {
                Frame::Error(e) => seen.errors.push((e.code, e.request_id)),
                Frame::Response(r) => seen.responses.push(r.request_id),
                other => panic!("unexpected {other:?}"),
            }),
        )
        .await
        .expect("the server answers within 5 s");
        match r {
            Ok(true) => {}
            Ok(false) => break None,
            Err(e) => break Some(e),
        }
    };
    (seen, end)
}

#[tokio::test]
async fn malformed_frames_get_error_frames_and_the_stream_goes_on() {
    let (server, _) = example_server().await;
    let client = server.gateway().await;
    // Unknown type with sound framing: skipped, the next request answered.
    let mut bytes = vec![VERSION, 0x42, 0, 3, 1, 2, 3];
    bytes.extend(good_request(11));
    // Bad body (reserved flag bit): error names the request id.
    let mut bad = good_request(12);
    bad[8] = 0x80;
    bytes.extend(bad);
    // A short body: the card number runs past the end of the frame.
    let mut short = good_request(13);
    short.truncate(short.len() - 4);
    let body_len = (short.len() - 4) as u16;
    short[2..4].copy_from_slice(&body_len.to_be_bytes());
    bytes.extend(short);
    // A frame only a server may send.
    let mut response = Vec::new();
    encode_response(
        &mut response,
        &accessd_protocol::ResponseFrame {
            request_id: 14,
            verdict: Verdict::Grant,
            reason: 0,
            unlock_ms: 5000,
            snapshot_version: 1,
            snapshot_age_ms: 0,
        },
    );
    bytes.extend(response);
    bytes.extend(good_request(15));
    // And the stream ends inside a frame.
    bytes.extend(&good_request(16)[..10]);
    let (seen, end) = exchange(&client, &bytes).await;
    assert!(end.is_none(), "stream ended cleanly: {end:?}");
    assert_eq!(
        seen,
        Seen {
            errors: vec![
                (ErrorCode::UNKNOWN_TYPE, 0),
                (ErrorCode::MALFORMED, 12),
                (ErrorCode::MALFORMED, 13),
                (ErrorCode::UNEXPECTED_FRAME, 14),
                (ErrorCode::TRUNCATED, 0),
            ],
            responses: vec![11, 15],
        }
    );
    // The connection is still good for its other stream.
    let r = client
        .decide(&req("lobby-in", "h10301:12:1001", None))
        .await
        .unwrap();
    assert_eq!(r.verdict, Verdict::Grant);
    server.shutdown().await;
}

/// Regression (issue 12): PROTOCOL.md reserves request id 0, and the
/// server answered such a request like any other.
#[tokio::test]
async fn issue_12_request_id_0_is_refused_as_malformed_alone_and_in_a_batch() {
    let (server, _) = example_server().await;
    let client = server.gateway().await;
    // The encoder refuses id 0, so patch it into good frames.
    let mut zero = good_request(1);
    zero[4..8].copy_from_slice(&[0; 4]);
    let mut batch = Vec::new();
    let item = |id| RequestFrame {
        request_id: id,
        reader: "lobby-in",
        credential: card("h10301:12:1001"),
        pin: None,
        reader_time_ms: None,
    };
    accessd_protocol::encode_batch_request(&mut batch, &[item(21), item(22)]).unwrap();
    // The second item's id: after the header, the count and the first item
    // (a 29-byte card request body).
    batch[4 + 2 + 29..4 + 2 + 29 + 4].copy_from_slice(&[0; 4]);
    let mut bytes = zero;
    bytes.extend(good_request(2));
    bytes.extend(batch);
    bytes.extend(good_request(3));
    let (seen, end) = exchange(&client, &bytes).await;
    assert!(end.is_none(), "stream ended cleanly: {end:?}");
    assert_eq!(
        seen,
        Seen {
            errors: vec![(ErrorCode::MALFORMED, 0), (ErrorCode::MALFORMED, 0)],
            responses: vec![2, 3],
        }
    );
    assert_eq!(
        server.decider.calls(),
        2,
        "no item of the refused batch was decided"
    );
    server.shutdown().await;
}

const PROTOCOL_MD: &str = include_str!("../../protocol/PROTOCOL.md");

/// The bytes of the ```hex vector=NAME block of `PROTOCOL.md`.
fn vector(name: &str) -> Vec<u8> {
    let start = format!("```hex vector={name}\n");
    let at = PROTOCOL_MD.find(&start).expect("the vector exists") + start.len();
    let end = PROTOCOL_MD[at..].find("```").unwrap() + at;
    let hex: String = PROTOCOL_MD[at..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn answers_of(bytes: &[u8]) -> Vec<accessd_protocol::ResponseFrame> {
    match accessd_protocol::decode(bytes).unwrap().0 {
        Frame::Response(r) => vec![r],
        Frame::BatchResponse(b) => b.iter().collect(),
        other => panic!("not a response: {other:?}"),
    }
}

/// Regression (issue 12): the vectors' prose must describe what the
/// example site really answers, so a firmware author can replay them
/// against `accessd serve --site docs/examples/site.toml`.
#[tokio::test]
async fn issue_12_protocol_vectors_are_what_the_example_site_answers() {
    let (server, _) = example_server().await;
    let client = server.gateway().await;
    let mut pipe = client.pipeline().await.unwrap();
    pipe.queue_raw(&vector("request-card"));
    pipe.queue_raw(&vector("batch-request"));
    pipe.flush().await.unwrap();
    pipe.finish();
    let mut got = Vec::new();
    while pipe
        .read(|f| match f {
            Frame::Response(r) => got.push(vec![r]),
            Frame::BatchResponse(b) => got.push(b.iter().collect()),
            other => panic!("unexpected {other:?}"),
        })
        .await
        .unwrap()
    {}
    let want = [
        answers_of(&vector("response-grant")),
        answers_of(&vector("batch-response")),
    ];
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(&want) {
        // Version and age are the server's own; the rest is the decision.
        let key =
            |r: &accessd_protocol::ResponseFrame| (r.request_id, r.verdict, r.reason, r.unlock_ms);
        assert_eq!(
            got.iter().map(key).collect::<Vec<_>>(),
            want.iter().map(key).collect::<Vec<_>>()
        );
    }
    // The reader time of `request-uid-pin-time` and the date its prose gives.
    let bytes = vector("request-uid-pin-time");
    let Frame::Request(r) = accessd_protocol::decode(&bytes).unwrap().0 else {
        panic!("not a request")
    };
    let t = Timestamp::from_millisecond(r.reader_time_ms.unwrap()).unwrap();
    let prose = format!("({})", t.strftime("%Y-%m-%dT%H:%M:%SZ"));
    assert!(PROTOCOL_MD.contains(&prose), "PROTOCOL.md says {prose}");
    server.shutdown().await;
}

#[tokio::test]
async fn lost_framing_closes_only_that_connection_with_protocol_error() {
    let (server, _) = example_server().await;
    let bystander = server.gateway().await;
    for (what, bytes) in [
        ("oversized", vec![VERSION, 1, 0xff, 0xff, 0, 0]),
        ("unsupported version", vec![9, 1, 0, 1, 0]),
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
    ] {
        let client = server.gateway().await;
        let mut framed = good_request(1);
        framed.extend(bytes);
        let (seen, _) = exchange(&client, &framed).await;
        assert_eq!(
            seen.responses,
            vec![1],
            "{what}: frames before it are answered"
        );
        let code = match client.closed().await {
            ClientError::Closed { code, .. } => code,
            other => panic!("{what}: unexpected {other:?}"),
        };
        assert_eq!(code, Some(close::PROTOCOL_ERROR), "{what}");
        // Everyone else is still served.
        let r = bystander
            .decide(&req("lobby-in", "h10301:12:1001", None))
            .await
            .unwrap();
        assert_eq!(r.verdict, Verdict::Grant, "{what}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn many_requests_in_flight_and_batches() {
    let (server, shared) = example_server().await;
    let client = Arc::new(server.gateway().await);
    let cards = [
        "h10301:12:1001",
        "h10301:12:5555",
        "h10301:12:992",
        "h10301:12:1006",
    ];
    let expected = [
        Reason::Granted,
        Reason::UnknownCredential,
        Reason::CredentialRevoked,
        Reason::OutsideSchedule,
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000usize {
        let client = client.clone();
        tasks.spawn(async move {
            let r = client
                .decide(&req("lobby-in", cards[i % 4], None))
                .await
                .unwrap();
            (i, r.reason())
        });
    }
    let mut answered = 0;
    while let Some(r) = tasks.join_next().await {
        let (i, reason) = r.unwrap();
        assert_eq!(reason, Some(expected[i % 4]), "request {i}");
        answered += 1;
    }
    assert_eq!(answered, 2000);
    assert!(server.decider.calls() >= 2000);
    // A full batch, answered in order.
    let batch: Vec<Request<'_>> = (0..accessd_protocol::MAX_BATCH)
        .map(|i| req("lobby-in", cards[i % 4], None))
        .collect();
    let answers = client.decide_batch(&batch).await.unwrap();
    assert_eq!(answers.len(), batch.len());
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.reason(), Some(expected[i % 4]), "batch item {i}");
        assert_eq!(a.snapshot_version, shared.load().version());
    }
    // One more than the limit is refused before it leaves.
    let too_many: Vec<Request<'_>> = (0..=accessd_protocol::MAX_BATCH)
        .map(|_| req("lobby-in", "h10301:12:1001", None))
        .collect();
    assert!(matches!(
        client.decide_batch(&too_many).await,
        Err(ClientError::Encode(_))
    ));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_share_one_port_and_serve_every_client() {
    let shared = Arc::new(SharedSnapshot::new(example()));
    let server =
        crate::support::quic::start_server_on(shared, accessd_protocol::Limits::default(), 3).await;
    // Monday 09:00 in New York: inside alice's business hours.
    server.set_now(ts("2026-11-30T14:00:00Z"));
    assert_eq!(server.endpoints.len(), 3);
    for e in server.endpoints.iter() {
        assert_eq!(e.local_addr().unwrap(), server.addr, "one port for all");
    }
    // Each client on its own socket: the kernel spreads them by port.
    let mut clients = Vec::new();
    for _ in 0..24 {
        let client = server.gateway().await;
        let answer = client
            .decide(&req("lobby-in", "h10301:12:1001", None))
            .await
            .unwrap();
        assert_eq!(answer.reason(), Some(Reason::Granted));
        clients.push(client);
    }
    assert_eq!(server.endpoints.open_connections(), 24);
    let busy = server
        .endpoints
        .iter()
        .filter(|e| e.open_connections() > 0)
        .count();
    assert!(busy >= 2, "24 clients all on one of 3 endpoints");
    // A second server on the same address is refused, not let in to
    // share the port.
    let second = accessd_protocol::bind_endpoints(
        server.addr,
        &server.certs.server,
        &accessd_protocol::Limits::default(),
        2,
    );
    assert!(
        matches!(second, Err(accessd_protocol::ServerError::Bind(..))),
        "{second:?}"
    );
    // No server configuration: no endpoint accepts a new client, and the
    // clients already connected go on.
    server.endpoints.set_server_config(None);
    for _ in 0..4 {
        // Ignored, not refused: the client would wait for its idle
        // timeout. A loopback handshake takes milliseconds.
        let attempt = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            server.connect(&server.certs.gateway),
        )
        .await;
        assert!(!matches!(attempt, Ok(Ok(_))), "a handshake was accepted");
    }
    let answer = clients[0]
        .decide(&req("lobby-in", "h10301:12:1001", None))
        .await
        .unwrap();
    assert_eq!(answer.reason(), Some(Reason::Granted));
    drop(clients);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_keeps_its_open_loop_schedule_and_accounts_for_it() {
    use accessd_protocol::load::{LoadSpec, MixRequest, Progress};

    let (server, _shared) = example_server().await;
    let mix = Arc::new(vec![MixRequest {
        reader: "lobby-in".into(),
        credential: card("h10301:12:1001"),
        pin: None,
    }]);
    let spec = LoadSpec {
        addr: server.addr,
        server_name: "localhost".into(),
        connections: 40,
        in_flight: 1,
        batch: 1,
        duration: std::time::Duration::from_secs(2),
        rate: Some(400.0),
        sockets: Some(4),
        handshake_rate: Some(400.0),
    };
    let report = accessd_protocol::load::run(
        &spec,
        &server.certs.gateway,
        mix.clone(),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert_eq!(report.handshake_ns.len(), 40, "every handshake measured");
    // Paced at 400/s, 40 handshakes take at least 97.5 ms.
    assert!(report.connect_elapsed >= std::time::Duration::from_millis(97));
    // About 800 frames offered (Poisson: ±15 % is beyond 4 σ), all sent
    // and answered: a loopback server keeps up with 400/s.
    assert!(
        (680..=920).contains(&report.offered),
        "offered {}",
        report.offered
    );
    // Poisson arrivals sometimes come faster than the previous answer:
    // such a frame waits (held back, its latency counting the wait), and
    // only such frames can be left unsent at the end.
    assert!(report.offered - report.sent <= report.held_back);
    assert!(
        report.held_back * 3 < report.sent,
        "{} held back",
        report.held_back
    );
    assert_eq!(report.frames, report.sent);
    assert_eq!(report.latency_ns.len(), report.frames);
    assert_eq!(report.round_trip_ns.len(), report.frames);
    // The round trip never exceeds the latency from the intended time.
    assert!(report.round_trip_ns.min() <= report.latency_ns.min());
    // Every frame sent was either late by the generator's own lag or held
    // back by its connection's cap (whether the lag stayed small depends on
    // what else this machine runs: `generator_behind` is tested apart).
    assert_eq!(report.lag_ns.len() + report.held_back, report.sent);

    // Offered far more than one frame in flight per connection can carry
    // (each connection would need 500 answers a second at most 1 ms
    // apart): frames are held back, and that is the server's share, not
    // the generator's.
    let flood = LoadSpec {
        rate: Some(200_000.0),
        connections: 4,
        sockets: None,
        handshake_rate: None,
        duration: std::time::Duration::from_millis(500),
        ..spec
    };
    let report = accessd_protocol::load::run(
        &flood,
        &server.certs.gateway,
        mix,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    assert!(report.held_back > 0);
    assert!(report.sent < report.offered);
    assert!(
        report.latency_ns.value_at_quantile(0.99) > report.round_trip_ns.value_at_quantile(0.99),
        "waiting counts in the latency"
    );
    server.shutdown().await;
}

#[test]
fn a_generator_that_fell_behind_says_so() {
    use accessd_protocol::load::LoadReport;
    let h = || hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let mut report = LoadReport {
        frames: 500,
        decisions: 500,
        grants: 500,
        denies: 0,
        errors: 0,
        elapsed: std::time::Duration::from_secs(1),
        latency_ns: h(),
        round_trip_ns: h(),
        lag_ns: h(),
        offered: 1000,
        sent: 500,
        held_back: 0,
        connect_elapsed: std::time::Duration::ZERO,
        handshake_ns: h(),
        client_rss_per_connection: None,
        first_error: None,
    };
    let why = report
        .generator_behind()
        .expect("sent half of what was offered");
    assert!(why.contains("sent 500 of 1000"), "{why}");
    // Held back by the server's answers, and on time otherwise: that is
    // the measurement.
    report.held_back = 400;
    assert!(report.generator_behind().is_none());
    // On schedule, but late by 5 ms: behind.
    report.held_back = 0;
    report.sent = 1000;
    for _ in 0..100 {
        report.lag_ns.record(5_000_000).unwrap();
    }
    assert!(report.generator_behind().is_some());
}

#[tokio::test]
async fn a_snapshot_swap_during_load_changes_answers_without_errors() {
    let mut builder = example_builder();
    let shared = Arc::new(SharedSnapshot::new(
        builder.publish(ts("2026-11-30T00:00:00Z")),
    ));
    let server = start_server(shared.clone()).await;
    server.set_now(ts(MON_9));
    let client = Arc::new(server.gateway().await);
    let old_version = shared.load().version();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut saw_new = false;
            let mut n = 0u32;
            // Bounded: stops once the new version has been seen a few times.
            let mut after = 0;
            while after < 20 && n < 200_000 {
                let r = client
                    .decide(&req("lobby-in", "h10301:12:1001", None))
                    .await
                    .expect("no request fails across a swap");
                n += 1;
                if r.snapshot_version == old_version {
                    assert!(!saw_new, "an old version after the new one");
                    assert_eq!(r.reason(), Some(Reason::Granted));
                } else {
                    saw_new = true;
                    after += 1;
                    assert_eq!(r.reason(), Some(Reason::CredentialRevoked));
                }
            }
            saw_new
        });
    }
    server.decider.wait_for_calls(200).await;
    let site = SiteFile::parse(EXAMPLE).unwrap();
    let mut alice = site
        .records
        .into_iter()
        .find_map(|r| match r {
            Record::Credential(c) if c.card == card("h10301:12:1001") => Some(c),
            _ => None,
        })
        .unwrap();
    alice.status = CredentialStatus::Revoked;
    builder
        .apply(Change::Upsert(Record::Credential(alice)))
        .unwrap();
    let newer = builder.publish(ts("2026-11-30T00:00:01Z"));
    assert!(newer.version() > old_version);
    shared.store(Arc::new(newer));
    while let Some(saw_new) = tasks.join_next().await {
        assert!(saw_new.unwrap(), "every client saw the new snapshot");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_answers_requests_in_flight() {
    let (mut server, _) = example_server().await;
    let client = Arc::new(server.gateway().await);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..500 {
        let client = client.clone();
        tasks.spawn(async move {
            client
                .decide(&req("lobby-in", "h10301:12:1001", None))
                .await
        });
    }
    // Shut down as soon as the server is busy with them.
    server.decider.wait_for_calls(1).await;
    server.begin_shutdown();
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        let r = r
            .unwrap()
            .expect("a request sent before shutdown is answered");
        assert_eq!(r.verdict, Verdict::Grant);
        ok += 1;
    }
    assert_eq!(ok, 500);
    server.shutdown().await;
    match client.closed().await {
        ClientError::Closed { code, .. } => assert_eq!(code, Some(close::SHUTDOWN)),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        client
            .decide(&req("lobby-in", "h10301:12:1001", None))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn connections_above_the_limit_are_refused_and_the_others_served() {
    let shared = Arc::new(SharedSnapshot::new(example()));
    let server = start_server_with(
        shared,
        Limits {
            max_connections: 1,
            ..Limits::default()
        },
    )
    .await;
    server.set_now(ts(MON_9));
    let first = server.gateway().await;
    first.ping().await.unwrap();
    let refused = match server.connect(&server.certs.gateway).await {
        Err(_) => true,
        Ok(second) => second.ping().await.is_err(),
    };
    assert!(refused, "a second connection is refused");
    let r = first
        .decide(&req("lobby-in", "h10301:12:1001", None))
        .await
        .unwrap();
    assert_eq!(r.verdict, Verdict::Grant);
    server.shutdown().await;
}

/// Verifies the server's certificate as usual and counts how often it was
/// asked to: a resumed handshake carries no certificate, so the count tells
/// a full handshake from a resumed one.
#[derive(Debug)]
struct CountingVerifier {
    inner: Arc<quinn::rustls::client::WebPkiServerVerifier>,
    calls: std::sync::atomic::AtomicUsize,
}

impl quinn::rustls::client::danger::ServerCertVerifier for CountingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &quinn::rustls::pki_types::CertificateDer<'_>,
        intermediates: &[quinn::rustls::pki_types::CertificateDer<'_>],
        server_name: &quinn::rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: quinn::rustls::pki_types::UnixTime,
    ) -> Result<quinn::rustls::client::danger::ServerCertVerified, quinn::rustls::Error> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &quinn::rustls::pki_types::CertificateDer<'_>,
        dss: &quinn::rustls::DigitallySignedStruct,
    ) -> Result<quinn::rustls::client::danger::HandshakeSignatureValid, quinn::rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &quinn::rustls::pki_types::CertificateDer<'_>,
        dss: &quinn::rustls::DigitallySignedStruct,
    ) -> Result<quinn::rustls::client::danger::HandshakeSignatureValid, quinn::rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<quinn::rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A quinn client configuration built by hand (not through
/// `accessd_protocol`), as another QUIC stack would: one session cache
/// shared by every connection made with it, early data asked for, and the
/// given ALPN. Also returns the verifier, to count full handshakes.
fn raw_client_config(
    server: &TestServer,
    alpn: &[u8],
) -> (quinn::ClientConfig, Arc<CountingVerifier>) {
    use quinn::rustls::{
        self, RootCertStore,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server.certs.ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let verifier = Arc::new(CountingVerifier {
        inner: rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap(),
        calls: 0.into(),
    });
    let issued = server
        .certs
        .ca
        .client("raw", &["urn:accessd:all-readers".to_owned()])
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_auth_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![alpn.to_vec()];
    // Ask for 0-RTT, so that the test sees the server never offer it.
    tls.enable_early_data = true;
    let config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    (config, verifier)
}

/// Connects and asks for one decision on a raw stream (so the session
/// tickets the server sends after the handshake have arrived).
async fn one_decision(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    server: &TestServer,
) {
    let connecting = endpoint
        .connect_with(config.clone(), server.addr, "localhost")
        .unwrap();
    // A client holding a ticket gets a 0-RTT connection here only if the
    // server's tickets allow early data; they never do.
    let conn = match connecting.into_0rtt() {
        Ok(_) => panic!("the server offered 0-RTT"),
        Err(connecting) => connecting.await.unwrap(),
    };
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut pipe = accessd_protocol::Pipeline::new(send, recv);
    pipe.queue_raw(&good_request(1));
    pipe.flush().await.unwrap();
    pipe.finish();
    let mut answers = Vec::new();
    while pipe
        .read(|f| match f {
            Frame::Response(r) => answers.push(r.reason()),
            other => panic!("unexpected {other:?}"),
        })
        .await
        .unwrap()
    {}
    // Granted: a resumed session still knows which readers it may ask for.
    assert_eq!(answers, vec![Some(Reason::Granted)]);
    conn.close(quinn::VarInt::from_u32(close::NO_ERROR), b"done");
}

/// PROTOCOL.md promises firmware authors that TLS session resumption works
/// (a resumed session keeps its client certificate, hence its readers) and
/// that 0-RTT never does.
#[tokio::test]
async fn issue_12_resumption_works_and_0rtt_is_never_offered() {
    let (server, _) = example_server().await;
    let (config, verifier) = raw_client_config(&server, accessd_protocol::ALPN);
    let endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
    let full_handshakes = || verifier.calls.load(std::sync::atomic::Ordering::SeqCst);
    one_decision(&endpoint, &config, &server).await;
    assert_eq!(full_handshakes(), 1);
    one_decision(&endpoint, &config, &server).await;
    assert_eq!(full_handshakes(), 1, "the second connection was resumed");
    server.shutdown().await;
}

#[tokio::test]
async fn issue_12_a_foreign_alpn_is_refused_with_no_application_protocol() {
    let (server, _) = example_server().await;
    let (config, _) = raw_client_config(&server, b"accessd/0");
    let endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
    let err = endpoint
        .connect_with(config, server.addr, "localhost")
        .unwrap()
        .await
        .unwrap_err();
    // no_application_protocol (120), as QUIC crypto error 0x178.
    match err {
        quinn::ConnectionError::ConnectionClosed(c) => {
            assert_eq!(c.error_code, quinn::TransportErrorCode::crypto(120), "{c}");
        }
        other => panic!("unexpected {other:?}"),
    }
    server.shutdown().await;
}

/// Sends one good request on `pipe` and returns the request ids answered:
/// the first answer, or with `finish` every answer until the server ends
/// the stream.
async fn ask(pipe: &mut accessd_protocol::Pipeline, id: u32, finish: bool) -> Vec<u32> {
    pipe.queue_raw(&good_request(id));
    pipe.flush().await.unwrap();
    if finish {
        pipe.finish();
    }
    let mut ids = Vec::new();
    while ids.is_empty() || finish {
        let more = pipe
            .read(|f| match f {
                Frame::Response(r) => ids.push(r.request_id),
                other => panic!("unexpected {other:?}"),
            })
            .await
            .unwrap();
        if !more {
            break;
        }
    }
    ids
}

/// Regression (issue 12): with quinn's defaults the credit of a closed
/// stream came back only once a second stream closed, so with seven
/// long-lived streams open a client could not open a short-lived one.
#[tokio::test]
async fn issue_12_a_ninth_stream_opens_once_one_of_eight_closes() {
    let (server, _) = example_server().await;
    assert_eq!(Limits::default().max_streams_per_connection, 8);
    let client = server.gateway().await;
    // The client's own request stream is the first of eight.
    client.ping().await.unwrap();
    let mut open = Vec::new();
    for id in 1..=7 {
        let mut pipe = client.pipeline().await.unwrap();
        assert_eq!(ask(&mut pipe, id, false).await, vec![id]);
        open.push(pipe);
    }
    // Eight are open: a ninth must wait.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client.pipeline())
            .await
            .is_err(),
        "the server allows more than 8 streams"
    );
    // Close one of them; the other seven stay open.
    let mut closing = open.pop().unwrap();
    assert_eq!(ask(&mut closing, 100, true).await, vec![100]);
    drop(closing);
    let mut ninth = tokio::time::timeout(Duration::from_secs(5), client.pipeline())
        .await
        .expect("a ninth stream opens once one of eight has closed")
        .unwrap();
    assert_eq!(ask(&mut ninth, 9, false).await, vec![9]);
    // The seven long-lived streams (the client's own and six pipelines)
    // still work.
    client.ping().await.unwrap();
    for (i, pipe) in open.iter_mut().enumerate() {
        let id = 200 + i as u32;
        assert_eq!(ask(pipe, id, false).await, vec![id]);
    }
    server.shutdown().await;
}
