//! The shipper: spooled events into the events table, at least once, in
//! spool order, idempotent by key.
//!
//! Key design (`docs/access-events.md`):
//!
//! | attribute | value | serves |
//! | --- | --- | --- |
//! | `pk` | `DOOR#<door>` (`READER#<reader>` when the reader was unknown) | events of a door |
//! | `sk` | the event id (UUIDv7: sorts by time) | by time, ranges by `--since` |
//! | `gsi1pk` | `HOLDER#<holder>` (absent without a holder: a sparse index) | events of a holder (`by_holder`) |
//! | `gsi1sk` | the event id | by time |
//! | `expires_at` | epoch seconds (TTL) | retention |
//!
//! A retry writes the same key, so a duplicate overwrites itself.

use std::collections::HashMap;
use std::time::Duration;

use accessd_engine::{AccessEvent, EventId};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use tokio::sync::watch;

use super::spool::SpoolReader;
use crate::admin::BATCH_LIMIT;
use crate::follower::Backoff;
use crate::metrics as m;

/// The events table's index of a holder's events.
pub const HOLDER_INDEX: &str = "by_holder";
/// The partition key attribute of that index.
pub const HOLDER_INDEX_PK: &str = "gsi1pk";
/// The sort key attribute of that index.
pub const HOLDER_INDEX_SK: &str = "gsi1sk";

/// The partition key of an event: its door, or its reader when the reader
/// was unknown.
pub fn event_pk(event: &AccessEvent) -> String {
    match &event.door {
        Some(door) => format!("DOOR#{door}"),
        None => format!("READER#{}", event.reader),
    }
}

/// The `by_holder` index's partition key of the events of holder `holder`.
pub fn holder_pk(holder: &str) -> String {
    format!("HOLDER#{holder}")
}

/// The newest events of holder `holder` in the events table `table`
/// (through the `by_holder` index), newest first, at most `limit`. Items
/// that do not read as events are skipped with a warning.
pub async fn newest_of_holder(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    holder: &str,
    limit: usize,
) -> Result<Vec<AccessEvent>, String> {
    let mut events = Vec::new();
    let mut start = None;
    while events.len() < limit {
        let page = client
            .query()
            .table_name(table)
            .index_name(HOLDER_INDEX)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", HOLDER_INDEX_PK)
            .expression_attribute_values(":pk", AttributeValue::S(holder_pk(holder)))
            // The index's sort key is the event id, which sorts by time.
            .scan_index_forward(false)
            .limit(i32::try_from(limit - events.len()).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot query events table `{table}`: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
        for item in page.items() {
            match event_of_item(item) {
                Ok(event) => events.push(event),
                Err(e) => {
                    tracing::warn!(table, error = %e, "skipping an item that is not an access event")
                }
            }
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    events.truncate(limit);
    Ok(events)
}

/// The lowest sort key of events at or after Unix millisecond `ms`.
pub fn sk_from(ms: i64) -> String {
    EventId::v7(ms, 0).to_string()
}

/// The DynamoDB item of an event, expiring `retention` after it.
pub fn event_item(event: &AccessEvent, retention: Duration) -> HashMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: i128| AttributeValue::N(v.to_string());
    let id = event.id.to_string();
    let mut item = HashMap::with_capacity(20);
    item.insert("pk".into(), AttributeValue::S(event_pk(event)));
    item.insert("sk".into(), s(&id));
    if let Some(holder) = &event.holder {
        item.insert(HOLDER_INDEX_PK.into(), s(&holder_pk(holder)));
        item.insert(HOLDER_INDEX_SK.into(), s(&id));
        item.insert("holder".into(), s(holder));
    }
    item.insert("id".into(), s(&id));
    item.insert("time".into(), s(&ms_text(event.time)));
    item.insert("reader".into(), s(&event.reader));
    if let Some(door) = &event.door {
        item.insert("door".into(), s(door));
    }
    if let Some(site) = &event.site {
        item.insert("site".into(), s(site));
    }
    item.insert("credential".into(), s(&event.credential));
    item.insert(
        "verdict".into(),
        s(match event.verdict {
            accessd_engine::Verdict::Grant => "grant",
            accessd_engine::Verdict::Deny => "deny",
        }),
    );
    item.insert("reason_code".into(), n(event.reason_code.into()));
    item.insert("reason".into(), s(event.reason.as_str()));
    item.insert("unlock_ms".into(), n(event.unlock_ms.into()));
    item.insert("snapshot_version".into(), n(event.snapshot_version.into()));
    item.insert("snapshot_age_ms".into(), n(event.snapshot_age_ms.into()));
    item.insert("client".into(), s(&event.client));
    if let Some(t) = event.reader_time {
        item.insert("reader_time".into(), s(&ms_text(t)));
    }
    item.insert("server".into(), s(&event.server));
    item.insert("request_id".into(), n(event.request_id.into()));
    let expires = event.time.as_second() as i128 + retention.as_secs() as i128;
    item.insert("expires_at".into(), n(expires));
    item
}

/// RFC 3339 with milliseconds, UTC.
fn ms_text(t: jiff::Timestamp) -> String {
    format!("{t:.3}")
}

/// Reads an event back from its item (`accessd events query`).
pub fn event_of_item(item: &HashMap<String, AttributeValue>) -> Result<AccessEvent, String> {
    let s = |k: &str| -> Option<String> { item.get(k).and_then(|v| v.as_s().ok()).cloned() };
    let need = |k: &str| s(k).ok_or_else(|| format!("item has no string `{k}`"));
    let num = |k: &str| -> Result<u64, String> {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .ok_or_else(|| format!("item has no number `{k}`"))?
            .parse()
            .map_err(|_| format!("`{k}` is not a whole number"))
    };
    let time = |k: &str, v: String| {
        v.parse::<jiff::Timestamp>()
            .map_err(|e| format!("`{k}`: {e}"))
    };
    let reason: accessd_engine::Reason = need("reason")?.parse().map_err(|e| format!("{e}"))?;
    Ok(AccessEvent {
        id: need("id")?.parse().map_err(|e| format!("{e}"))?,
        time: time("time", need("time")?)?,
        reader: need("reader")?,
        door: s("door"),
        site: s("site"),
        credential: need("credential")?,
        holder: s("holder"),
        verdict: reason.verdict(),
        reason_code: reason.code(),
        reason,
        unlock_ms: num("unlock_ms")? as u32,
        snapshot_version: num("snapshot_version")?,
        snapshot_age_ms: num("snapshot_age_ms")? as u32,
        client: need("client")?,
        reader_time: s("reader_time")
            .map(|t| time("reader_time", t))
            .transpose()?,
        server: need("server")?,
        request_id: num("request_id")? as u32,
    })
}

/// How the shipper runs.
#[derive(Clone, Debug)]
pub struct ShipConfig {
    /// The events table.
    pub table: String,
    /// How long events stay in the table (`expires_at`).
    pub retention: Duration,
    /// Events read from the spool per round (written 25 at a time, a few
    /// batches in flight).
    pub round: usize,
    /// BatchWriteItem calls in flight at once.
    pub parallel: usize,
}

impl ShipConfig {
    /// Defaults for `table`: a year of retention, rounds of 200 events,
    /// 4 batches in flight.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            retention: Duration::from_secs(365 * 24 * 3600),
            round: 200,
            parallel: 4,
        }
    }
}

/// Ships the spool read by `reader` to the events table until `stop` says
/// so; each round is retried (capped, jittered backoff) until the table
/// takes it, then the reader's position is committed. Returns on stop
/// only; spool read errors are logged and retried too.
pub async fn run(
    client: aws_sdk_dynamodb::Client,
    mut reader: SpoolReader,
    config: ShipConfig,
    mut stop: watch::Receiver<bool>,
) {
    let shipped = metrics::counter!(m::EVENTS_SHIPPED);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        if *stop.borrow() {
            return;
        }
        let start = reader.position();
        let batch = match reader.read(config.round) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "event shipper: cannot read the spool; retrying");
                if sleep_or_stop(&mut stop, backoff.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        let now_ms = jiff::Timestamp::now().as_millisecond();
        reader.note_backlog(batch.events.first(), now_ms);
        let Some(next) = batch.next.filter(|_| !batch.events.is_empty()) else {
            tokio::select! {
                () = reader.wait(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            continue;
        };
        let mut pending: Vec<Vec<WriteRequest>> = batch
            .events
            .chunks(BATCH_LIMIT)
            .map(|chunk| {
                chunk
                    .iter()
                    .filter_map(|e| {
                        PutRequest::builder()
                            .set_item(Some(event_item(e, config.retention)))
                            .build()
                            .ok()
                            .map(|put| WriteRequest::builder().put_request(put).build())
                    })
                    .collect()
            })
            .collect();
        // Until the table has taken the whole round.
        let mut lost_track = false;
        while !pending.is_empty() {
            let mut calls = tokio::task::JoinSet::new();
            let mut retry = Vec::new();
            for requests in std::mem::take(&mut pending) {
                let client = client.clone();
                let table = config.table.clone();
                calls.spawn(async move {
                    let sent = requests.len();
                    match client
                        .batch_write_item()
                        .request_items(&table, requests.clone())
                        .send()
                        .await
                    {
                        Ok(out) => {
                            let left = out
                                .unprocessed_items
                                .and_then(|mut m| m.remove(&table))
                                .unwrap_or_default();
                            (sent - left.len(), left, None)
                        }
                        Err(e) => (
                            0,
                            requests,
                            Some(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()),
                        ),
                    }
                });
                if calls.len() >= config.parallel.max(1) {
                    // Bounded in flight: wait for one before the next.
                    match calls.join_next().await {
                        Some(Ok((n, left, err))) => {
                            shipped.increment(n as u64);
                            collect(&mut retry, left, err);
                        }
                        Some(Err(_)) => lost_track = true,
                        None => {}
                    }
                }
            }
            while let Some(done) = calls.join_next().await {
                match done {
                    Ok((n, left, err)) => {
                        shipped.increment(n as u64);
                        collect(&mut retry, left, err);
                    }
                    Err(_) => lost_track = true,
                }
            }
            pending = retry;
            if !pending.is_empty() {
                metrics::counter!(m::EVENTS_SHIP_ERRORS, "target" => "dynamodb").increment(1);
                if sleep_or_stop(&mut stop, backoff.next_delay()).await {
                    return;
                }
            }
        }
        if lost_track {
            // A call's task died with its requests: send the whole round
            // again (a duplicate overwrites itself).
            tracing::error!("event shipper: lost track of a batch; shipping the round again");
            reader.seek(start);
            continue;
        }
        backoff.reset();
        if let Err(e) = reader.commit(next) {
            tracing::error!(error = %e, "event shipper: cannot record its position; events may be shipped twice after a restart (harmless)");
        }
    }
}

/// Keeps what a call left unwritten for the next try, saying why once.
fn collect(pending: &mut Vec<Vec<WriteRequest>>, left: Vec<WriteRequest>, err: Option<String>) {
    if let Some(err) = err {
        tracing::warn!(error = %err, events = left.len(), "event shipper: the events table refused a batch; retrying");
    }
    if !left.is_empty() {
        pending.push(left);
    }
}

/// Sleeps `delay`; true when `stop` was signalled meanwhile.
pub(crate) async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}
