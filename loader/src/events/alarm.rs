//! Alarms: the events security staff act on, put on an Amazon EventBridge
//! bus (`serve --alarm-bus NAME`).
//!
//! Every alarm is an EventBridge event with `source` = `accessd`,
//! `detail-type` = `accessd alarm` and a JSON `detail`:
//!
//! ```json
//! {"kind": "stolen_credential", "event": { …the access event… }}
//! {"kind": "deny_burst", "reader": "lobby-in", "denies": 5, "window_s": 60, "event": { …the last deny… }}
//! ```
//!
//! A rule matching `{"source": ["accessd"], "detail-type": ["accessd alarm"]}`
//! receives all of them; add `"detail": {"kind": [...]}` to pick some.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use accessd_engine::{AccessEvent, Reason, Verdict};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde::Serialize;
use tokio::sync::watch;

use super::ship::sleep_or_stop;
use super::spool::SpoolReader;
use crate::follower::Backoff;
use crate::metrics as m;

/// The `source` of every alarm.
pub const ALARM_SOURCE: &str = "accessd";
/// The `detail-type` of every alarm.
pub const ALARM_DETAIL_TYPE: &str = "accessd alarm";
/// The name of the alarm sender's spool reader.
pub const ALARMS: &str = "alarms";

/// What an alarm is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// A credential reported stolen was presented.
    StolenCredential,
    /// Hard anti-passback refused a passage.
    AntiPassback,
    /// A door or site in lockdown refused a holder without override.
    LockdownRefusal,
    /// Many denies at one reader in a short time (someone trying cards).
    DenyBurst,
}

impl AlarmKind {
    /// The snake_case name (the `kind` of the detail, a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StolenCredential => "stolen_credential",
            Self::AntiPassback => "anti_passback",
            Self::LockdownRefusal => "lockdown_refusal",
            Self::DenyBurst => "deny_burst",
        }
    }
}

/// One alarm: the `detail` of its EventBridge event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alarm {
    /// What it is about.
    pub kind: AlarmKind,
    /// The reader of a burst.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reader: Option<String>,
    /// Denies counted in a burst.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denies: Option<u32>,
    /// The burst window in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
    /// The access event that raised it (for a burst, the deny that
    /// crossed the threshold).
    pub event: AccessEvent,
}

/// When a run of denies at one reader is an alarm.
#[derive(Clone, Copy, Debug)]
pub struct BurstRule {
    /// Denies at one reader...
    pub denies: u32,
    /// ...within this window. One alarm per window per reader.
    pub window: Duration,
}

impl Default for BurstRule {
    fn default() -> Self {
        Self {
            denies: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// Turns access events, in order, into alarms.
#[derive(Debug, Default)]
pub struct AlarmDetector {
    rule: BurstRule,
    denies: HashMap<String, VecDeque<i64>>,
    last_burst: HashMap<String, i64>,
}

impl AlarmDetector {
    /// A detector with `rule` for bursts.
    pub fn new(rule: BurstRule) -> Self {
        Self {
            rule,
            ..Self::default()
        }
    }

    /// The alarms `event` raises (usually none).
    pub fn observe(&mut self, event: &AccessEvent) -> Vec<Alarm> {
        let mut out = Vec::new();
        let single = |kind| Alarm {
            kind,
            reader: None,
            denies: None,
            window_s: None,
            event: event.clone(),
        };
        match event.reason {
            Reason::CredentialStolen => out.push(single(AlarmKind::StolenCredential)),
            Reason::AntiPassback => out.push(single(AlarmKind::AntiPassback)),
            Reason::DoorLockdown => out.push(single(AlarmKind::LockdownRefusal)),
            _ => {}
        }
        // Server-wide conditions deny at every reader at once; they are
        // not someone trying cards.
        let server_wide = matches!(event.reason, Reason::NotReady | Reason::StaleData);
        if event.verdict == Verdict::Deny && !server_wide && self.rule.denies > 0 {
            let t = event.time.as_millisecond();
            let window = self.rule.window.as_millis() as i64;
            let times = self.denies.entry(event.reader.clone()).or_default();
            times.push_back(t);
            while times.front().is_some_and(|&f| f <= t - window) {
                times.pop_front();
            }
            let recent = times.len() as u32;
            let quiet = self
                .last_burst
                .get(&event.reader)
                .is_none_or(|&last| last <= t - window);
            if recent >= self.rule.denies && quiet {
                self.last_burst.insert(event.reader.clone(), t);
                out.push(Alarm {
                    kind: AlarmKind::DenyBurst,
                    reader: Some(event.reader.clone()),
                    denies: Some(recent),
                    window_s: Some(self.rule.window.as_secs()),
                    event: event.clone(),
                });
            }
        }
        out
    }
}

/// EventBridge takes at most this many entries per PutEvents call.
const PUT_LIMIT: usize = 10;

/// Reads the spool with `reader` and puts its alarms on `bus` until `stop`
/// says so, retrying failed entries with capped, jittered backoff; the
/// reader's position is committed once a round's alarms are all on the
/// bus (at least once).
pub async fn run(
    client: aws_sdk_eventbridge::Client,
    bus: String,
    mut reader: SpoolReader,
    rule: BurstRule,
    mut stop: watch::Receiver<bool>,
) {
    let mut detector = AlarmDetector::new(rule);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        if *stop.borrow() {
            return;
        }
        let batch = match reader.read(500) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "alarm sender: cannot read the spool; retrying");
                if sleep_or_stop(&mut stop, backoff.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        let Some(next) = batch.next.filter(|_| !batch.events.is_empty()) else {
            tokio::select! {
                () = reader.wait(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            continue;
        };
        let alarms: Vec<Alarm> = batch
            .events
            .iter()
            .flat_map(|e| detector.observe(e))
            .collect();
        let mut pending: Vec<(AlarmKind, PutEventsRequestEntry)> = alarms
            .iter()
            .filter_map(|a| {
                let detail = serde_json::to_string(a).ok()?;
                let entry = PutEventsRequestEntry::builder()
                    .source(ALARM_SOURCE)
                    .detail_type(ALARM_DETAIL_TYPE)
                    .detail(detail)
                    .event_bus_name(&bus)
                    .time(aws_sdk_eventbridge::primitives::DateTime::from_millis(
                        a.event.time.as_millisecond(),
                    ))
                    .build();
                Some((a.kind, entry))
            })
            .collect();
        while !pending.is_empty() {
            let chunk: Vec<_> = pending.drain(..pending.len().min(PUT_LIMIT)).collect();
            let entries: Vec<_> = chunk.iter().map(|(_, e)| e.clone()).collect();
            match client.put_events().set_entries(Some(entries)).send().await {
                Ok(out) => {
                    // Entries answer in order; an error code means that
                    // one was not put.
                    let results = out.entries.unwrap_or_default();
                    for (i, (kind, entry)) in chunk.into_iter().enumerate() {
                        let failed = results.get(i).is_none_or(|r| r.error_code.is_some());
                        if failed {
                            pending.push((kind, entry));
                        } else {
                            metrics::counter!(m::ALARMS_SENT, "kind" => kind.as_str()).increment(1);
                        }
                    }
                    if pending.is_empty() {
                        break;
                    }
                    tracing::warn!(
                        failed = pending.len(),
                        "alarm sender: EventBridge refused some entries; retrying"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_eventbridge::error::DisplayErrorContext(&e), "alarm sender: PutEvents failed; retrying");
                    pending.splice(0..0, chunk);
                }
            }
            metrics::counter!(m::EVENTS_SHIP_ERRORS, "target" => "eventbridge").increment(1);
            if sleep_or_stop(&mut stop, backoff.next_delay()).await {
                return;
            }
        }
        backoff.reset();
        if let Err(e) = reader.commit(next) {
            tracing::error!(error = %e, "alarm sender: cannot record its position; alarms may repeat after a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use accessd_engine::EventId;
    use jiff::Timestamp;

    use super::*;

    fn event(ms: i64, reader: &str, reason: Reason) -> AccessEvent {
        AccessEvent {
            id: EventId::v7(ms, 1),
            time: Timestamp::from_millisecond(ms).unwrap(),
            reader: reader.into(),
            door: None,
            site: None,
            credential: "h10301:1:1".into(),
            holder: None,
            verdict: reason.verdict(),
            reason_code: reason.code(),
            reason,
            unlock_ms: 0,
            snapshot_version: 1,
            snapshot_age_ms: 0,
            client: "c".into(),
            reader_time: None,
            server: "s".into(),
            request_id: 1,
        }
    }

    #[test]
    fn single_events_raise_their_alarm_and_grants_raise_none() {
        let mut d = AlarmDetector::new(BurstRule::default());
        let kinds = |alarms: Vec<Alarm>| alarms.into_iter().map(|a| a.kind).collect::<Vec<_>>();
        assert_eq!(
            kinds(d.observe(&event(1, "a", Reason::CredentialStolen))),
            [AlarmKind::StolenCredential]
        );
        assert_eq!(
            kinds(d.observe(&event(2, "b", Reason::AntiPassback))),
            [AlarmKind::AntiPassback]
        );
        assert_eq!(
            kinds(d.observe(&event(3, "c", Reason::DoorLockdown))),
            [AlarmKind::LockdownRefusal]
        );
        assert!(d.observe(&event(4, "d", Reason::Granted)).is_empty());
    }

    #[test]
    fn a_burst_of_denies_at_one_reader_raises_one_alarm_per_window() {
        let rule = BurstRule {
            denies: 3,
            window: Duration::from_secs(10),
        };
        let mut d = AlarmDetector::new(rule);
        let burst = |d: &mut AlarmDetector, ms, reader, reason| {
            d.observe(&event(ms, reader, reason))
                .into_iter()
                .filter(|a| a.kind == AlarmKind::DenyBurst)
                .count()
        };
        // Spread over more than the window: no burst.
        assert_eq!(burst(&mut d, 0, "door", Reason::UnknownCredential), 0);
        assert_eq!(burst(&mut d, 6_000, "door", Reason::UnknownCredential), 0);
        assert_eq!(burst(&mut d, 12_000, "door", Reason::UnknownCredential), 0);
        // Three within ten seconds: one alarm, then quiet for the window.
        assert_eq!(burst(&mut d, 13_000, "door", Reason::PinWrong), 1);
        assert_eq!(burst(&mut d, 14_000, "door", Reason::PinWrong), 0);
        // Another reader counts on its own; server-wide denies never count.
        for ms in 0..5 {
            assert_eq!(burst(&mut d, 14_000 + ms, "other", Reason::NotReady), 0);
        }
        // A new window, a new alarm.
        assert_eq!(burst(&mut d, 23_500, "door", Reason::NoAccess), 0);
        assert_eq!(burst(&mut d, 23_800, "door", Reason::NoAccess), 1);
    }
}
