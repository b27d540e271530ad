//! The web console (`/ui/`) and the read-only API it stands on.
//!
//! ```text
//!  GET /ui/                 open    the console: one page, its script and style,
//!                                   embedded in the binary (no data in them)
//!  GET /v1/live             token   server-sent events: decisions as they are
//!                                   spooled (filters: site, door, reader,
//!                                   verdict, reason, holder) and alarms
//!  GET /v1/readers          token   every reader with its door, site and time zone,
//!                                   and the reason names (for the filters)
//!  GET /v1/holders/{id}     token   a cardholder: credentials, levels, validity,
//!  GET /v1/cards/{card}     token     and their recent events, door by door
//! ```
//!
//! The page's files are served without the token because they hold no
//! data; everything they show comes from the token-guarded API (the page
//! asks for the token when the API says 401 and keeps it for the tab's
//! session only). Nothing here changes data: changes stay with `accessd
//! admin` and DynamoDB, where they are audited.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use accessd_engine::{AccessEvent, CredentialKey, EventId, HolderView, Verdict};
use accessd_loader::events::SpoolReader;
use accessd_loader::events::alarm::AlarmDetector;
use accessd_loader::events::ship;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::HttpState;
use super::api::bad;
use crate::cmd::events::TrailView;

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const STYLE_CSS: &str = include_str!("console/style.css");

/// What the page may load: its own files and its own API, nothing else
/// (no CDN, no inline script: gateways are often offline, and a page
/// about doors should not run someone else's code).
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /` and `GET /ui`: to the console.
pub(crate) async fn to_console() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`.
pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/app.js`.
pub(crate) async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/style.css`.
pub(crate) async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn no_trail() -> Response {
    (
        StatusCode::CONFLICT,
        Json(json!({
            "error": "access events are not recorded by this server: start `accessd serve` \
                      with --events-dir DIR to see live decisions and recent events"
        })),
    )
        .into_response()
}

/// The filters of `/v1/live`; each given one must match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LiveFilter {
    site: Option<String>,
    door: Option<String>,
    reader: Option<String>,
    /// `grant` or `deny`.
    verdict: Option<String>,
    /// A reason's name (`no_access`).
    reason: Option<String>,
    holder: Option<String>,
}

impl LiveFilter {
    fn admits(&self, e: &AccessEvent) -> bool {
        fn same(want: Option<&String>, have: Option<&str>) -> bool {
            want.is_none_or(|w| w.is_empty() || Some(w.as_str()) == have)
        }
        let verdict = match e.verdict {
            Verdict::Grant => "grant",
            Verdict::Deny => "deny",
        };
        same(self.site.as_ref(), e.site.as_deref())
            && same(self.door.as_ref(), e.door.as_deref())
            && same(self.reader.as_ref(), Some(&e.reader))
            && same(self.verdict.as_ref(), Some(verdict))
            && same(self.reason.as_ref(), Some(e.reason.as_str()))
            && same(self.holder.as_ref(), e.holder.as_deref())
    }
}

/// How often the live view sends what was spooled since its last message.
const LIVE_TICK: Duration = Duration::from_millis(250);
/// The newest matching decisions sent per message; the rest are counted.
const LIVE_SHOWN: usize = 40;
/// Events read per message at most; past it the view jumps to the newest
/// (a browser cannot show a million decisions a second, and reading them
/// all would cost the server a core).
const LIVE_READ: usize = 50_000;
/// Alarms sent per message at most.
const LIVE_ALARMS: usize = 20;

/// One `decisions` message of `/v1/live`.
#[derive(Serialize)]
struct LiveBatch<'a> {
    /// Events read since the last message.
    seen: usize,
    /// Of them, those the filters admit.
    matched: usize,
    /// Whether the view fell behind and jumped to the newest events (what
    /// it jumped over is in the spool, not on screen).
    skipped: bool,
    /// The newest admitted events, oldest first.
    events: &'a VecDeque<AccessEvent>,
}

/// `GET /v1/live`: server-sent events. Event `decisions` carries a
/// [`LiveBatch`] every quarter second when something was decided; event
/// `alarm` an alarm as EventBridge would get it (whatever the filters);
/// event `problem` a reason the view stopped.
pub(crate) async fn live(
    State(state): State<Arc<HttpState>>,
    filter: Result<Query<LiveFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(trail) = state.view.events.clone() else {
        return no_trail();
    };
    let Query(filter) = match filter {
        Ok(f) => f,
        Err(e) => {
            return bad(
                "query",
                format!(
                    "{}; the filters are site, door, reader, verdict, reason and holder",
                    e.body_text()
                ),
            )
            .into_response();
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    tokio::spawn(follow(trail, filter, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Follows the spool for one live view until the client goes away.
async fn follow(trail: TrailView, filter: LiveFilter, tx: tokio::sync::mpsc::Sender<Event>) {
    let mut reader = trail.spool.follower();
    let mut detector = AlarmDetector::new(trail.burst);
    let mut tick = tokio::time::interval(LIVE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown: VecDeque<AccessEvent> = VecDeque::with_capacity(LIVE_SHOWN);
    loop {
        tokio::select! {
            () = tx.closed() => return,
            _ = tick.tick() => {}
        }
        let (mut seen, mut matched, mut skipped) = (0, 0, false);
        let mut alarms = Vec::new();
        shown.clear();
        loop {
            let batch = match reader.read(4096) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "console live view: cannot read the event spool");
                    let _ = tx
                        .send(Event::default().event("problem").data(e.to_string()))
                        .await;
                    return;
                }
            };
            if batch.events.is_empty() {
                break;
            }
            for e in batch.events {
                seen += 1;
                for alarm in detector.observe(&e) {
                    if alarms.len() < LIVE_ALARMS {
                        alarms.push(alarm);
                    }
                }
                if filter.admits(&e) {
                    matched += 1;
                    if shown.len() == LIVE_SHOWN {
                        shown.pop_front();
                    }
                    shown.push_back(e);
                }
            }
            if seen >= LIVE_READ {
                reader = trail.spool.follower();
                skipped = true;
                break;
            }
        }
        for alarm in &alarms {
            let Ok(event) = Event::default().event("alarm").json_data(alarm) else {
                continue;
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if seen == 0 {
            continue;
        }
        let batch = LiveBatch {
            seen,
            matched,
            skipped,
            events: &shown,
        };
        match Event::default().event("decisions").json_data(&batch) {
            Ok(event) => {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "console live view: cannot encode a message"),
        }
    }
}

/// `GET /v1/readers`.
pub(crate) async fn readers(State(state): State<Arc<HttpState>>) -> Response {
    let snapshot = state.view.decider.snapshot().load_full();
    Json(json!({
        "snapshot_version": snapshot.version(),
        "readers": snapshot.readers(),
        "reasons": accessd_engine::Reason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// How much of the newest spool a lookup reads for recent events.
const RECENT_SCAN_BYTES: u64 = 64 << 20;
/// Recent events a lookup returns at most.
const RECENT_EVENTS: usize = 50;
/// A holder's newest events a lookup reads from the events table at most
/// (more than it returns: they also fill in the last event at each door).
const TABLE_EVENTS: usize = 500;
/// How long a lookup waits for the events table before it answers with
/// the spool's events alone.
const TABLE_WAIT: Duration = Duration::from_secs(3);

/// A lookup's answer.
#[derive(Serialize)]
struct Lookup {
    snapshot_version: u64,
    /// The cardholder, if the snapshot knows them.
    holder: Option<HolderView>,
    /// Their (or the card's) newest events, newest first.
    recent: Vec<AccessEvent>,
    /// The newest event at each door, by door id.
    doors: BTreeMap<String, AccessEvent>,
    /// How far back `recent` looked: the spool's newest bytes read, or
    /// `None` when no events are recorded.
    scanned_bytes: Option<u64>,
    /// What the events table added, when events are shipped to one and
    /// the lookup has a holder to look for.
    events_table: Option<TableRead>,
}

/// What a lookup read of the events table (the `by_holder` index).
#[derive(Serialize)]
struct TableRead {
    /// The table.
    table: String,
    /// The holder's newest events read from it (at most [`TABLE_EVENTS`]),
    /// merged with the spool's.
    read: usize,
    /// Why it could not be read; the lookup then holds the spool's events
    /// alone.
    error: Option<String>,
}

impl Lookup {
    /// Adds events read from the events table: `recent` stays the newest
    /// [`RECENT_EVENTS`] of both, each event once, and `doors` the newest
    /// event at each door.
    fn merge(&mut self, table: Vec<AccessEvent>) {
        let mut seen: HashSet<EventId> = self.recent.iter().map(|e| e.id).collect();
        for event in table {
            if let Some(door) = &event.door {
                match self.doors.get(door) {
                    Some(newest) if newest.time >= event.time => {}
                    _ => {
                        self.doors.insert(door.clone(), event.clone());
                    }
                }
            }
            if seen.insert(event.id) {
                self.recent.push(event);
            }
        }
        // Stable: events of one millisecond keep the spool's order.
        self.recent.sort_by_key(|e| std::cmp::Reverse(e.time));
        self.recent.truncate(RECENT_EVENTS);
    }
}

/// Who a lookup is about.
enum Who {
    Holder(String),
    Card(CredentialKey),
}

fn lookup(state: &HttpState, who: &Who) -> Result<Lookup, String> {
    let snapshot = state.view.decider.snapshot().load_full();
    let holder = match who {
        Who::Holder(id) => snapshot.holder(id),
        Who::Card(card) => snapshot.holder_of_card(card),
    };
    let card_text = match who {
        Who::Card(card) => Some(card.to_string()),
        Who::Holder(_) => None,
    };
    let holder_id = holder.as_ref().map(|h| h.id.clone()).or(match who {
        Who::Holder(id) => Some(id.clone()),
        Who::Card(_) => None,
    });
    let mut recent: VecDeque<AccessEvent> = VecDeque::with_capacity(RECENT_EVENTS);
    let mut doors = BTreeMap::new();
    let mut scanned_bytes = None;
    if let Some(trail) = &state.view.events {
        let (start, covered) = trail
            .spool
            .recent_start(RECENT_SCAN_BYTES)
            .map_err(|e| e.to_string())?;
        let mut reader = SpoolReader::open_dir(trail.spool.dir());
        reader.seek(start);
        loop {
            let batch = reader.read(4096).map_err(|e| e.to_string())?;
            if batch.events.is_empty() {
                break;
            }
            for e in batch.events {
                let mine = match (&holder_id, &card_text) {
                    (Some(h), _) if e.holder.as_deref() == Some(h) => true,
                    (_, Some(c)) => &e.credential == c,
                    _ => false,
                };
                if !mine {
                    continue;
                }
                if let Some(door) = &e.door {
                    doors.insert(door.clone(), e.clone());
                }
                if recent.len() == RECENT_EVENTS {
                    recent.pop_front();
                }
                recent.push_back(e);
            }
        }
        scanned_bytes = Some(covered);
    }
    Ok(Lookup {
        snapshot_version: snapshot.version(),
        holder,
        recent: recent.into_iter().rev().collect(),
        doors,
        scanned_bytes,
        events_table: None,
    })
}

async fn run_lookup(state: Arc<HttpState>, who: Who) -> Result<Lookup, Response> {
    let failed = |e: String| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e })),
        )
            .into_response()
    };
    let trail = state.view.events.clone();
    let asked_holder = match &who {
        Who::Holder(id) => Some(id.clone()),
        Who::Card(_) => None,
    };
    let mut found = match tokio::task::spawn_blocking(move || lookup(&state, &who)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return Err(failed(format!("cannot read the event spool: {e}"))),
        Err(e) => return Err(failed(format!("lookup failed: {e}"))),
    };
    // The spool holds the newest events; with a table, the holder's
    // older ones are there (a card's are found through its holder).
    let holder = asked_holder.or_else(|| found.holder.as_ref().map(|h| h.id.clone()));
    if let (Some(trail), Some(holder)) = (trail, holder)
        && let (Some(table), Some(client)) = (trail.table, trail.dynamodb)
    {
        let read = tokio::time::timeout(
            TABLE_WAIT,
            ship::newest_of_holder(&client, &table, &holder, TABLE_EVENTS),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "events table `{table}` did not answer within {} s",
                TABLE_WAIT.as_secs()
            ))
        });
        found.events_table = Some(match read {
            Ok(events) => {
                let read = events.len();
                found.merge(events);
                TableRead {
                    table,
                    read,
                    error: None,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "console lookup: the events table could not be read; answering with the spool's events");
                TableRead {
                    table,
                    read: 0,
                    error: Some(error),
                }
            }
        });
    }
    Ok(found)
}

/// `GET /v1/holders/{id}`: 404 when neither the snapshot nor the recent
/// events know the id.
pub(crate) async fn holder(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
) -> Response {
    if state.view.decider.snapshot().load().is_warm() {
        // Served from a checkpoint in place: cards are found by key, a
        // cardholder by id only once the data is rebuilt in memory.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(json!({
                "error": "starting from the checkpoint: cardholder lookups by id answer once it is rebuilt in memory (seconds); lookups by card work now"
            })),
        )
            .into_response();
    }
    match run_lookup(state, Who::Holder(id.clone())).await {
        Ok(found) if found.holder.is_none() && found.recent.is_empty() => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": format!("no cardholder `{id}` in the snapshot, the recent events or the events table")
            })),
        )
            .into_response(),
        Ok(found) => Json(found).into_response(),
        Err(response) => response,
    }
}

/// `GET /v1/cards/{card}`: the card's holder, or (for a card the snapshot
/// does not know) just the card's recent events.
pub(crate) async fn card(
    State(state): State<Arc<HttpState>>,
    Path(card): Path<String>,
) -> Response {
    let key = match card.parse::<CredentialKey>() {
        Ok(key) => key,
        Err(e) => {
            return bad(
                "card",
                format!("`{card}` is not FORMAT:FACILITY:NUMBER or uid:HEX: {e}"),
            )
            .into_response();
        }
    };
    match run_lookup(state, Who::Card(key)).await {
        Ok(found) => Json(found).into_response(),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event at `door` at second `s` of a minute.
    fn event(id: u128, door: &str, s: u32) -> AccessEvent {
        let ms = 1_764_531_060_000 + i64::from(s) * 1000;
        serde_json::from_value(json!({
            "id": EventId::v7(ms, id).to_string(),
            "time": jiff::Timestamp::from_millisecond(ms).unwrap().to_string(),
            "reader": format!("{door}-in"), "door": door, "site": "hq",
            "credential": "h10301:12:1001", "holder": "alice", "verdict": "grant",
            "reason_code": 0, "reason": "granted", "unlock_ms": 5000,
            "snapshot_version": 1, "snapshot_age_ms": 0, "client": "gw",
            "reader_time": null, "server": "s1", "request_id": 1,
        }))
        .unwrap()
    }

    #[test]
    fn the_tables_events_join_the_spools_once_each_and_newest_first() {
        let (newest, spooled, dup_older, oldest) = (
            event(4, "lobby", 40),
            event(3, "lab", 30),
            event(2, "dock", 20),
            event(1, "lobby", 10),
        );
        let mut found = Lookup {
            snapshot_version: 1,
            holder: None,
            recent: vec![newest.clone(), spooled.clone()],
            doors: BTreeMap::from([
                ("lobby".to_owned(), newest.clone()),
                ("lab".to_owned(), spooled.clone()),
            ]),
            scanned_bytes: Some(0),
            events_table: None,
        };
        // The table overlaps the spool (what it shipped) and reaches back.
        found.merge(vec![newest.clone(), dup_older.clone(), oldest.clone()]);
        assert_eq!(
            found.recent,
            vec![newest.clone(), spooled.clone(), dup_older.clone(), oldest]
        );
        // A door keeps its newest event; one only the table knew is added.
        assert_eq!(found.doors["lobby"], newest);
        assert_eq!(found.doors["dock"], dup_older);
        assert_eq!(found.doors.len(), 3);

        // At most RECENT_EVENTS, the newest.
        let many: Vec<AccessEvent> = (0..RECENT_EVENTS as u32 + 5)
            .map(|i| event(100 + u128::from(i), "lab", i % 30))
            .collect();
        found.merge(many);
        assert_eq!(found.recent.len(), RECENT_EVENTS);
        assert_eq!(found.recent[0], newest);
        assert!(found.recent.windows(2).all(|w| w[0].time >= w[1].time));
    }
}
