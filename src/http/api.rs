//! `POST /v1/decide` and `POST /v1/explain`: JSON in, the QUIC protocol's
//! answers out (same reason codes and names), through the server's own
//! [`SnapshotDecider`](accessd_protocol::SnapshotDecider).
//!
//! A body is one request object, or an array of 1 to [`MAX_BATCH`] of
//! them, answered in order. Every request of a batch is checked before
//! any is decided: a bad one fails the whole batch with 400, naming the
//! field (`[2].card`), so nothing is decided twice on a retry.

use std::sync::Arc;

use accessd_engine::{CredentialKey, Decision, Explanation, Reason, Request, Verdict};
use accessd_protocol::{
    Answer, Asked, ChunkState, Decider, Journal, MAX_BATCH, MAX_PIN_LEN, MAX_READER_ID_LEN,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

use super::HttpState;

/// A request as read from JSON, owning its strings.
#[derive(Debug)]
pub(crate) struct OwnedRequest {
    reader: String,
    card: CredentialKey,
    pin: Option<String>,
    /// Explain only: when to explain at.
    at: Option<At>,
}

/// When `/v1/explain` explains: an instant, or a wall-clock time at the
/// reader's site (what a person asking about "9:00 on Monday" means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    /// An RFC 3339 instant, with its offset.
    Instant(Timestamp),
    /// A civil date and time without an offset, in the site's time zone.
    SiteTime(jiff::civil::DateTime),
}

impl OwnedRequest {
    fn as_request(&self) -> Request<'_> {
        Request {
            reader: &self.reader,
            credential: self.card,
            pin: self.pin.as_deref().map(str::as_bytes),
        }
    }
}

/// A 400 naming the field at fault.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadRequest {
    pub(crate) field: String,
    pub(crate) error: String,
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "field": self.field });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// A [`BadRequest`] for `field`.
pub(crate) fn bad(field: impl Into<String>, error: impl Into<String>) -> BadRequest {
    BadRequest {
        field: field.into(),
        error: error.into(),
    }
}

/// Reads one request object; `prefix` names it in errors (`[3]` in a
/// batch, empty alone). `at` is accepted only where `allow_at`.
fn parse_one(value: &Value, prefix: &str, allow_at: bool) -> Result<OwnedRequest, BadRequest> {
    let field = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    };
    let Some(object) = value.as_object() else {
        let what = if prefix.is_empty() { "body" } else { prefix };
        return Err(bad(what, "a request must be a JSON object"));
    };
    let allowed: &[&str] = if allow_at {
        &["reader", "card", "pin", "at"]
    } else {
        &["reader", "card", "pin"]
    };
    if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        let hint = if unknown == "at" {
            ": /v1/decide decides now; ask /v1/explain about another instant"
        } else {
            ""
        };
        return Err(bad(
            field(unknown),
            format!("unknown field `{unknown}`{hint}"),
        ));
    }
    let text = |object: &Map<String, Value>, name: &str| -> Result<Option<String>, BadRequest> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(field(name), format!("`{name}` must be a string"))),
        }
    };
    let reader = text(object, "reader")?.ok_or_else(|| bad(field("reader"), "missing `reader`"))?;
    if reader.is_empty() || reader.len() > MAX_READER_ID_LEN {
        return Err(bad(
            field("reader"),
            format!("`reader` must be 1 to {MAX_READER_ID_LEN} bytes"),
        ));
    }
    let card = text(object, "card")?.ok_or_else(|| bad(field("card"), "missing `card`"))?;
    let card: CredentialKey = card.parse().map_err(|e| {
        bad(
            field("card"),
            format!("`card` is not FORMAT:FACILITY:NUMBER or uid:HEX: {e}"),
        )
    })?;
    let pin = text(object, "pin")?;
    if let Some(pin) = &pin
        && (pin.is_empty() || pin.len() > MAX_PIN_LEN || !pin.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad(
            field("pin"),
            format!("`pin` must be 1 to {MAX_PIN_LEN} digits"),
        ));
    }
    let at = match text(object, "at")? {
        None => None,
        Some(s) => Some(match s.parse::<Timestamp>() {
            Ok(t) => At::Instant(t),
            Err(e) => At::SiteTime(s.parse::<jiff::civil::DateTime>().map_err(|_| {
                bad(
                    field("at"),
                    format!(
                        "`at` is neither an RFC 3339 instant such as 2026-11-30T09:00:00-05:00 \
                         nor a time at the reader's site such as 2026-11-30T09:00: {e}"
                    ),
                )
            })?),
        }),
    };
    Ok(OwnedRequest {
        reader,
        card,
        pin,
        at,
    })
}

/// One request, or a batch of them.
#[derive(Debug)]
pub(crate) enum Body {
    One(OwnedRequest),
    Batch(Vec<OwnedRequest>),
}

/// Reads a request body: one object, or an array of 1 to [`MAX_BATCH`].
pub(crate) fn parse_body(bytes: &[u8], allow_at: bool) -> Result<Body, BadRequest> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| bad("body", format!("the body is not JSON: {e}")))?;
    match &value {
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_BATCH {
                return Err(bad(
                    "body",
                    format!(
                        "a batch holds 1 to {MAX_BATCH} requests, not {}",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_one(item, &format!("[{i}]"), allow_at))
                .collect::<Result<Vec<_>, _>>()
                .map(Body::Batch)
        }
        Value::Object(_) => parse_one(&value, "", allow_at).map(Body::One),
        _ => Err(bad(
            "body",
            "the body must be a request object or an array of them",
        )),
    }
}

/// The answer to one request, as the QUIC protocol's response frame
/// carries it, with the reason's name beside its code.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct DecideAnswer {
    verdict: Verdict,
    reason: Reason,
    code: u16,
    unlock_ms: u32,
    snapshot_version: u64,
    snapshot_age_ms: u32,
}

impl DecideAnswer {
    fn of(decision: Decision, snapshot_age_ms: u32) -> Self {
        // Fail closed as the QUIC server does: only a grant reason grants.
        let grant =
            decision.verdict == Verdict::Grant && decision.reason.verdict() == Verdict::Grant;
        Self {
            verdict: if grant { Verdict::Grant } else { Verdict::Deny },
            reason: decision.reason,
            code: decision.reason.code(),
            unlock_ms: if grant { decision.unlock_ms } else { 0 },
            snapshot_version: decision.snapshot_version,
            snapshot_age_ms,
        }
    }

    fn counted(self) -> Self {
        let verdict = match self.verdict {
            Verdict::Grant => "grant",
            Verdict::Deny => "deny",
        };
        // The same counter as QUIC's: decisions answered, by verdict.
        metrics::counter!(accessd_protocol::metrics::DECISIONS, "verdict" => verdict).increment(1);
        let grant = u64::from(self.verdict == Verdict::Grant);
        accessd_protocol::stats::STATS.count(grant, 1 - grant);
        self
    }
}

/// The client identity HTTP decisions record in their access events.
pub(crate) const HTTP_CLIENT: &str = "http";

fn decide_one(
    state: &HttpState,
    chunk: &ChunkState,
    request: &OwnedRequest,
    index: usize,
    journal: &mut Journal,
) -> DecideAnswer {
    let asked = Asked {
        request: request.as_request(),
        // The position in the body (0 for a single request).
        request_id: u32::try_from(index).unwrap_or(u32::MAX),
        reader_time_ms: None,
        client: HTTP_CLIENT,
    };
    let Answer {
        decision,
        snapshot_age_ms,
    } = state.view.decider.decide(chunk, &asked, journal);
    DecideAnswer::of(decision, snapshot_age_ms).counted()
}

/// A body that could not be read (too large, cut off), as JSON.
fn unreadable(rejection: BytesRejection) -> Response {
    let body = serde_json::json!({
        "error": format!("cannot read the body: {}", rejection.body_text()),
        "field": "body",
    });
    (rejection.status(), Json(body)).into_response()
}

/// `POST /v1/decide`. Every decision is an access event, as over QUIC,
/// made durable before the answer is sent.
pub(crate) async fn decide(
    State(state): State<Arc<HttpState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => return unreadable(rejection),
    };
    let mut journal = Journal::default();
    // A body is decided like a chunk of frames: one snapshot, one instant.
    let chunk = state.view.decider.begin();
    let response = match parse_body(&body, false) {
        Err(e) => return e.into_response(),
        Ok(Body::One(r)) => Json(decide_one(&state, &chunk, &r, 0, &mut journal)).into_response(),
        Ok(Body::Batch(rs)) => {
            let answers: Vec<DecideAnswer> = rs
                .iter()
                .enumerate()
                .map(|(i, r)| decide_one(&state, &chunk, r, i, &mut journal))
                .collect();
            Json(answers).into_response()
        }
    };
    drop(chunk);
    if journal.events.count() > 0 {
        state.view.decider.commit(&mut journal);
    }
    response
}

/// An explanation as `/v1/explain` answers it: the decision in the shape
/// of `/v1/decide`'s answer, then the trace.
#[derive(Debug, Serialize)]
struct ExplainAnswer {
    #[serde(flatten)]
    answer: DecideAnswer,
    #[serde(flatten)]
    trace: Trace,
}

/// The explanation without its decision (which `answer` carries).
#[derive(Debug, Serialize)]
struct Trace {
    at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    door: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_time: Option<String>,
    steps: Vec<accessd_engine::Step>,
    levels: Vec<accessd_engine::LevelCheck>,
}

/// The instant `at` means for `reader`: a site time is read in the time
/// zone of the reader's site (a time that a clock change skips or repeats
/// is taken as jiff's `compatible` rule does: the later of a gap, the
/// earlier of a fold).
fn instant_of(
    state: &HttpState,
    reader: &str,
    at: Option<At>,
) -> Result<Option<Timestamp>, BadRequest> {
    match at {
        None => Ok(None),
        Some(At::Instant(t)) => Ok(Some(t)),
        Some(At::SiteTime(civil)) => {
            let snapshot = state.view.decider.snapshot().load_full();
            let zone = snapshot.reader_time_zone(reader).ok_or_else(|| {
                bad(
                    "at",
                    format!(
                        "reader `{reader}` is not known, so a time without an offset has no \
                         site time zone: give an instant such as {civil}Z"
                    ),
                )
            })?;
            zone.to_timestamp(civil)
                .map(Some)
                .map_err(|e| bad("at", format!("`{civil}` at the reader's site: {e}")))
        }
    }
}

fn explain_one(state: &HttpState, request: &OwnedRequest) -> Result<ExplainAnswer, BadRequest> {
    let at = instant_of(state, &request.reader, request.at)?;
    let (e, age) = state.view.decider.explain(&request.as_request(), at);
    let Explanation {
        decision,
        at,
        door,
        site,
        holder,
        local_time,
        steps,
        levels,
    } = e;
    Ok(ExplainAnswer {
        answer: DecideAnswer::of(decision, age),
        trace: Trace {
            at,
            door,
            site,
            holder,
            local_time,
            steps,
            levels,
        },
    })
}

/// `POST /v1/explain`.
pub(crate) async fn explain(
    State(state): State<Arc<HttpState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => return unreadable(rejection),
    };
    match parse_body(&body, true) {
        Err(e) => e.into_response(),
        Ok(Body::One(r)) => match explain_one(&state, &r) {
            Ok(answer) => Json(answer).into_response(),
            Err(e) => e.into_response(),
        },
        Ok(Body::Batch(rs)) => {
            let answers: Result<Vec<ExplainAnswer>, BadRequest> = rs
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    explain_one(&state, r).map_err(|e| BadRequest {
                        field: format!("[{i}].{}", e.field),
                        ..e
                    })
                })
                .collect();
            match answers {
                Ok(answers) => Json(answers).into_response(),
                Err(e) => e.into_response(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str, allow_at: bool) -> String {
        match parse_body(body.as_bytes(), allow_at) {
            Err(e) => e.field,
            Ok(b) => panic!("accepted {body}: {b:?}"),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            ("not json", "body"),
            ("42", "body"),
            ("[]", "body"),
            (r#"{"card":"h10301:1:1"}"#, "reader"),
            (r#"{"reader":"r1"}"#, "card"),
            (r#"{"reader":"","card":"h10301:1:1"}"#, "reader"),
            (r#"{"reader":7,"card":"h10301:1:1"}"#, "reader"),
            (r#"{"reader":"r1","card":"h10301:x:1"}"#, "card"),
            (r#"{"reader":"r1","card":"h10301:1:1","pin":"12a4"}"#, "pin"),
            (r#"{"reader":"r1","card":"h10301:1:1","pin":""}"#, "pin"),
            (r#"{"reader":"r1","card":"h10301:1:1","pin":1234}"#, "pin"),
            (
                r#"{"reader":"r1","card":"h10301:1:1","colour":"red"}"#,
                "colour",
            ),
            (
                r#"{"reader":"r1","card":"h10301:1:1","at":"2026-11-30T09:00:00Z"}"#,
                "at",
            ),
            (
                r#"[{"reader":"r1","card":"h10301:1:1"},{"reader":"r1","card":"nope"}]"#,
                "[1].card",
            ),
            (r#"[{"reader":"r1","card":"h10301:1:1"}, 3]"#, "[1]"),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(body, false), field, "{body}");
        }
        assert_eq!(
            field_of(r#"{"reader":"r1","card":"h10301:1:1","at":"monday"}"#, true),
            "at"
        );
        assert_eq!(
            field_of(
                r#"{"reader":"r1","card":"h10301:1:1","at":"2026-11-30T25:00"}"#,
                true
            ),
            "at"
        );
        let big = format!(
            "[{}]",
            vec![r#"{"reader":"r1","card":"h10301:1:1"}"#; MAX_BATCH + 1].join(",")
        );
        assert_eq!(field_of(&big, false), "body");
    }

    #[test]
    fn good_requests_are_read() {
        let Ok(Body::One(r)) = parse_body(
            br#"{"reader":"lobby-in","card":"h10301:12:1001","pin":"2468"}"#,
            false,
        ) else {
            panic!("refused")
        };
        assert_eq!(r.reader, "lobby-in");
        assert_eq!(r.card.to_string(), "h10301:12:1001");
        assert_eq!(r.as_request().pin, Some(&b"2468"[..]));
        let Ok(Body::Batch(rs)) = parse_body(
            br#"[{"reader":"a","card":"uid:04a1b2"},{"reader":"b","card":"h10301:1:2","at":"2026-11-30T09:00:00-05:00"}]"#,
            true,
        ) else {
            panic!("refused")
        };
        assert_eq!(rs.len(), 2);
        assert!(matches!(rs[1].at, Some(At::Instant(_))));
        let Ok(Body::One(r)) = parse_body(
            br#"{"reader":"a","card":"uid:04a1b2","at":"2026-11-30T09:00"}"#,
            true,
        ) else {
            panic!("refused")
        };
        assert_eq!(
            r.at,
            Some(At::SiteTime(jiff::civil::date(2026, 11, 30).at(9, 0, 0, 0)))
        );
    }

    #[test]
    fn only_a_grant_reason_grants() {
        let odd = Decision {
            verdict: Verdict::Grant,
            reason: Reason::NoAccess,
            unlock_ms: 5000,
            snapshot_version: 3,
        };
        let a = DecideAnswer::of(odd, 0);
        assert_eq!((a.verdict, a.unlock_ms), (Verdict::Deny, 0));
    }
}
