//! Why a decision came out as it did: [`explain`] walks the combining rule
//! of [`decide`](crate::decide) on the same snapshot and reports what each
//! rule found, down to each access level of the holder (covers the door?
//! assignment valid? schedule active at which local time?).
//!
//! It is a separate function so that `decide` stays as fast as it is: it
//! evaluates every level instead of stopping at the first grant, builds
//! strings and allocates, and it never records an anti-passback passage
//! (it reports what the passage would find). Its verdict and reason are
//! `decide`'s for the same snapshot, presence and instant; a test holds it
//! to that over every request of the example site at every hour of a week.

use jiff::Timestamp;
use serde::Serialize;

use crate::decision::{Decision, Reason, Request};
use crate::model::{CredentialStatus, Direction, DoorMode, HolderStatus, PassbackMode};
use crate::presence::{Passage, Presence};
use crate::schedule::LocalTime;
use crate::snapshot::{Snapshot, Within};

/// A rule of the combining rule, in the order `decide` applies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The server's own checks before the rules: data loaded, fresh enough
    /// for the staleness policy. Set by the server, never by [`explain`].
    Data,
    /// 1. The reader exists and resolves to a door and a site.
    Reader,
    /// 2. The credential exists, is active and inside its validity.
    Credential,
    /// 3. Its cardholder exists, is active and inside its validity.
    Holder,
    /// 4. The door is not locked, nor in lockdown without the override.
    Door,
    /// 5. An assignment valid now, to a level that covers the door, under a
    ///    schedule active at the site's local time.
    Access,
    /// 6. At a card-and-PIN door, the PIN matches.
    Pin,
    /// 7. Anti-passback.
    AntiPassback,
}

/// What a rule found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The rule lets the request through to the next one.
    Pass,
    /// The rule grants with a warning (soft anti-passback).
    Warn,
    /// The rule denies: the decision's reason is its reason.
    Deny,
    /// The rule does not apply here (no PIN needed, no anti-passback area).
    Skip,
}

/// One rule's finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The rule.
    pub rule: Rule,
    /// What it found.
    pub outcome: Outcome,
    /// The reason it denied or warned with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// What it looked at, for people.
    pub detail: String,
}

/// Whether an assignment's validity window holds the instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentState {
    /// Inside its window (or it has none).
    Valid,
    /// Its window has not started.
    NotYetValid,
    /// Its window has ended.
    Expired,
}

/// One access level of the holder, checked against the door.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LevelCheck {
    /// The level's id.
    pub level: String,
    /// Whether the level exists and resolves to a schedule; a level that
    /// does not grants nothing.
    pub resolved: bool,
    /// Whether the level covers the door (directly or through a group).
    pub covers_door: bool,
    /// Whether the assignment is valid at the instant.
    pub assignment: AssignmentState,
    /// The assignment's validity window, where bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<Timestamp>,
    /// The end of the assignment's validity window (exclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Timestamp>,
    /// The level's schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Whether the schedule is active at the site's local time; absent
    /// when it did not matter (the level does not cover the door, or the
    /// assignment is not valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_active: Option<bool>,
    /// Whether this level grants the passage.
    pub grants: bool,
}

/// A decision with its trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The decision: `decide`'s for the same snapshot, presence and instant.
    pub decision: Decision,
    /// The instant decided at.
    pub at: Timestamp,
    /// The door of the reader, if the reader resolves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub door: Option<String>,
    /// The site of the door.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The credential's cardholder, if the credential exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// The instant in the site's time zone, with the weekday, as schedules
    /// see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_time: Option<String>,
    /// The rules, in order, up to the one that decided.
    pub steps: Vec<Step>,
    /// Every access level of the holder, checked against the door (when
    /// the access rule was reached).
    pub levels: Vec<LevelCheck>,
}

impl Explanation {
    /// A deny the server decided before the rules (not ready, stale data):
    /// one [`Rule::Data`] step saying why.
    pub fn refused(decision: Decision, at: Timestamp, detail: String) -> Self {
        Self {
            decision,
            at,
            door: None,
            site: None,
            holder: None,
            local_time: None,
            steps: vec![Step {
                rule: Rule::Data,
                outcome: Outcome::Deny,
                reason: Some(decision.reason),
                detail,
            }],
            levels: Vec::new(),
        }
    }
}

/// The trace being built.
struct Trace {
    version: u64,
    steps: Vec<Step>,
}

impl Trace {
    fn pass(&mut self, rule: Rule, detail: String) {
        self.steps.push(Step {
            rule,
            outcome: Outcome::Pass,
            reason: None,
            detail,
        });
    }

    fn skip(&mut self, rule: Rule, detail: String) {
        self.steps.push(Step {
            rule,
            outcome: Outcome::Skip,
            reason: None,
            detail,
        });
    }

    fn deny(&mut self, rule: Rule, reason: Reason, detail: String) -> Decision {
        self.steps.push(Step {
            rule,
            outcome: Outcome::Deny,
            reason: Some(reason),
            detail,
        });
        Decision::deny(reason, self.version)
    }
}

fn credential_status(status: CredentialStatus) -> &'static str {
    match status {
        CredentialStatus::Active => "active",
        CredentialStatus::Suspended => "suspended",
        CredentialStatus::Lost => "lost",
        CredentialStatus::Stolen => "stolen",
        CredentialStatus::Revoked => "revoked",
    }
}

fn door_mode(mode: DoorMode) -> &'static str {
    match mode {
        DoorMode::Locked => "locked",
        DoorMode::CardOnly => "card_only",
        DoorMode::CardAndPin => "card_and_pin",
        DoorMode::Unlocked => "unlocked",
        DoorMode::Lockdown => "lockdown",
    }
}

fn passback_mode(mode: PassbackMode) -> &'static str {
    match mode {
        PassbackMode::None => "none",
        PassbackMode::Soft => "soft",
        PassbackMode::Hard => "hard",
    }
}

fn window(from: Option<Timestamp>, until: Option<Timestamp>) -> String {
    match (from, until) {
        (None, None) => "no validity window".to_owned(),
        (Some(f), None) => format!("valid from {f}"),
        (None, Some(u)) => format!("valid until {u}"),
        (Some(f), Some(u)) => format!("valid from {f} until {u}"),
    }
}

/// Explains the decision on `request` at `now`: the same verdict and
/// reason as [`decide`](crate::decide) with this snapshot and presence,
/// and what every rule found. Reads `presence`, never changes it.
pub fn explain(
    snapshot: &Snapshot,
    presence: &Presence,
    request: &Request<'_>,
    now: Timestamp,
) -> Explanation {
    let mut out = Explanation {
        decision: Decision::deny(Reason::UnknownReader, snapshot.version()),
        at: now,
        door: None,
        site: None,
        holder: None,
        local_time: None,
        steps: Vec::new(),
        levels: Vec::new(),
    };
    let mut trace = Trace {
        version: snapshot.version(),
        steps: Vec::new(),
    };
    out.decision = walk(snapshot, presence, request, now, &mut trace, &mut out);
    out.steps = trace.steps;
    out
}

/// The combining rule, step for step as in `decide`, recording each
/// finding in `trace` and the facts in `out`.
fn walk(
    snapshot: &Snapshot,
    presence: &Presence,
    request: &Request<'_>,
    now: Timestamp,
    trace: &mut Trace,
    out: &mut Explanation,
) -> Decision {
    let version = snapshot.version();
    let topo = &*snapshot.topology;
    let names = &topo.names;

    // 1. Reader and door.
    let Some(reader) = topo.readers.get(request.reader) else {
        return trace.deny(
            Rule::Reader,
            Reason::UnknownReader,
            format!("no reader `{}`", request.reader),
        );
    };
    let Some(door) = topo.doors.get(reader.door) else {
        return trace.deny(
            Rule::Reader,
            Reason::UnknownReader,
            format!("reader `{}`: its door is missing", request.reader),
        );
    };
    let Some(site) = topo.sites.get(door.site) else {
        return trace.deny(
            Rule::Reader,
            Reason::UnknownReader,
            format!("reader `{}`: its door's site is missing", request.reader),
        );
    };
    let door_id = names.door(reader.door);
    out.door = Some(door_id.to_owned());
    out.site = Some(names.site(door.site).to_owned());
    let direction = match reader.direction {
        Direction::In => "in",
        Direction::Out => "out",
    };
    trace.pass(
        Rule::Reader,
        format!(
            "reader `{}` ({direction}) is on door `{door_id}` of site `{}`",
            request.reader,
            names.site(door.site)
        ),
    );

    // 2. Credential.
    let card = request.credential;
    let Some(cred) = snapshot.cred(&card) else {
        return trace.deny(
            Rule::Credential,
            Reason::UnknownCredential,
            format!("no credential `{card}`"),
        );
    };
    out.holder = cred.holder().map(|h| h.id().to_owned());
    let status = match cred.hot.status {
        CredentialStatus::Active => None,
        CredentialStatus::Suspended => Some(Reason::CredentialSuspended),
        CredentialStatus::Lost => Some(Reason::CredentialLost),
        CredentialStatus::Stolen => Some(Reason::CredentialStolen),
        CredentialStatus::Revoked => Some(Reason::CredentialRevoked),
    };
    if let Some(reason) = status {
        return trace.deny(
            Rule::Credential,
            reason,
            format!(
                "credential `{card}` is {}",
                credential_status(cred.hot.status)
            ),
        );
    }
    let now_ms = now.as_millisecond();
    let (from, until) = cred.extras().map_or((None, None), |e| e.validity.bounds());
    match cred.validity_at(now_ms) {
        Within::Inside => {}
        Within::Before => {
            return trace.deny(
                Rule::Credential,
                Reason::CredentialNotYetValid,
                format!("credential `{card}` is {}", window(from, until)),
            );
        }
        Within::After => {
            return trace.deny(
                Rule::Credential,
                Reason::CredentialExpired,
                format!("credential `{card}` is {}", window(from, until)),
            );
        }
    }
    trace.pass(
        Rule::Credential,
        format!("credential `{card}` is active, {}", window(from, until)),
    );

    // 3. Cardholder, from the same place `decide` reads it.
    let holder = cred.holder();
    let hot = &cred.hot;
    let holder_id = holder.map_or("", |h| h.id());
    let core = match hot.core() {
        Some(core) => Some(core),
        None => holder.and_then(|h| h.core()),
    };
    let Some(core) = core else {
        return trace.deny(
            Rule::Holder,
            Reason::HolderUnknown,
            format!("no cardholder record `{holder_id}`"),
        );
    };
    if core.status == HolderStatus::Inactive {
        return trace.deny(
            Rule::Holder,
            Reason::HolderInactive,
            format!("cardholder `{holder_id}` is inactive"),
        );
    }
    let (from, until) = core.validity.bounds();
    match core.validity.at(now_ms) {
        Within::Inside => {}
        Within::Before => {
            return trace.deny(
                Rule::Holder,
                Reason::HolderNotYetValid,
                format!("cardholder `{holder_id}` is {}", window(from, until)),
            );
        }
        Within::After => {
            return trace.deny(
                Rule::Holder,
                Reason::HolderExpired,
                format!("cardholder `{holder_id}` is {}", window(from, until)),
            );
        }
    }
    trace.pass(
        Rule::Holder,
        format!(
            "cardholder `{holder_id}` is active, {}",
            window(from, until)
        ),
    );

    // 4. Door state.
    let mode = door_mode(door.mode);
    if door.mode == DoorMode::Locked {
        return trace.deny(
            Rule::Door,
            Reason::DoorLocked,
            format!("door `{door_id}` is locked for everyone"),
        );
    }
    let lockdown = door.mode == DoorMode::Lockdown || site.lockdown;
    if lockdown && !core.lockdown_override {
        let what = if site.lockdown {
            format!("site `{}` is in lockdown", names.site(door.site))
        } else {
            format!("door `{door_id}` is in lockdown")
        };
        return trace.deny(
            Rule::Door,
            Reason::DoorLockdown,
            format!("{what} and cardholder `{holder_id}` has no lockdown override"),
        );
    }
    trace.pass(
        Rule::Door,
        if lockdown {
            format!(
                "door `{door_id}` ({mode}) is in lockdown; cardholder `{holder_id}` has the override"
            )
        } else {
            format!("door `{door_id}` is {mode}")
        },
    );

    // 5. Access levels: every one, not only up to the first that grants.
    let zoned = now.to_zoned_datetime(site.tz.clone());
    out.local_time = Some(format!(
        "{} ({})",
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z %A"),
        site.tz.iana_name().unwrap_or("fixed offset")
    ));
    let local = LocalTime::at(&site.tz, now);
    let assignments: Vec<_> = if hot.is_inline() {
        hot.assignments().collect()
    } else {
        holder.into_iter().flat_map(|h| h.assignments()).collect()
    };
    let mut miss = Reason::NoAccess;
    let mut granted = false;
    for assignment in assignments {
        let (valid_from, valid_until) = assignment.validity.bounds();
        let state = match assignment.validity.at(now_ms) {
            Within::Inside => AssignmentState::Valid,
            Within::Before => AssignmentState::NotYetValid,
            Within::After => AssignmentState::Expired,
        };
        let mut check = LevelCheck {
            level: names.level(assignment.level).to_owned(),
            resolved: false,
            covers_door: false,
            assignment: state,
            valid_from,
            valid_until,
            schedule: None,
            schedule_active: None,
            grants: false,
        };
        let level = topo
            .levels
            .get(assignment.level as usize)
            .and_then(Option::as_ref);
        if let Some(level) = level {
            check.resolved = true;
            check.schedule = Some(names.schedule(level.schedule).to_owned());
            check.covers_door = topo.covers(assignment.level, reader.door);
            if check.covers_door {
                if state != AssignmentState::Valid {
                    if miss == Reason::NoAccess {
                        miss = Reason::AccessNotValidNow;
                    }
                } else if let Some(schedule) = topo.schedules.get(level.schedule) {
                    let active = schedule.is_active(local);
                    check.schedule_active = Some(active);
                    if active {
                        check.grants = true;
                        granted = true;
                    } else {
                        miss = Reason::OutsideSchedule;
                    }
                }
            }
        }
        out.levels.push(check);
    }
    let local_time = out.local_time.clone().unwrap_or_default();
    if !granted {
        let detail = match miss {
            Reason::OutsideSchedule => format!(
                "a level covers door `{door_id}`, but its schedule is not active at {local_time}"
            ),
            Reason::AccessNotValidNow => {
                format!("a level covers door `{door_id}`, but its assignment is not valid at {now}")
            }
            _ => format!(
                "no access level of cardholder `{holder_id}` covers door `{door_id}` ({} level(s) checked)",
                out.levels.len()
            ),
        };
        return trace.deny(Rule::Access, miss, detail);
    }
    let granting: Vec<&str> = out
        .levels
        .iter()
        .filter(|l| l.grants)
        .map(|l| l.level.as_str())
        .collect();
    trace.pass(
        Rule::Access,
        format!(
            "level(s) {} cover door `{door_id}` with a schedule active at {local_time}",
            granting
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );

    // 6. PIN.
    if door.mode == DoorMode::CardAndPin {
        let Some(pin) = request.pin else {
            return trace.deny(
                Rule::Pin,
                Reason::PinRequired,
                format!("door `{door_id}` needs a PIN and none was entered"),
            );
        };
        match cred.pin() {
            None => {
                return trace.deny(
                    Rule::Pin,
                    Reason::PinWrong,
                    format!("credential `{card}` has no PIN enrolled"),
                );
            }
            Some(hash) if !hash.verify(pin) => {
                return trace.deny(Rule::Pin, Reason::PinWrong, "the PIN does not match".into());
            }
            Some(_) => trace.pass(Rule::Pin, "the PIN matches".into()),
        }
    } else {
        trace.skip(Rule::Pin, format!("door `{door_id}` needs no PIN"));
    }

    // 7. Anti-passback, read only.
    let mut reason = Reason::Granted;
    match door.area.and_then(|i| topo.areas.get(i)) {
        Some(area) if area.passback != PassbackMode::None => {
            if holder.is_none() {
                // As `decide`: no holder entry to record the passage under.
                return trace.deny(
                    Rule::Holder,
                    Reason::HolderUnknown,
                    format!("credential `{card}` has no cardholder entry"),
                );
            }
            let hard = area.passback == PassbackMode::Hard;
            let passage = presence.peek(
                holder_id,
                &area.id,
                reader.direction == Direction::In,
                now_ms,
                area.reset_after_ms,
                hard,
            );
            let going = if reader.direction == Direction::In {
                "entering"
            } else {
                "leaving"
            };
            let mode = passback_mode(area.passback);
            match passage {
                Passage::Ok => trace.pass(
                    Rule::AntiPassback,
                    format!("{going} area `{}` ({mode}) is consistent", area.id),
                ),
                Passage::Violation => {
                    reason = Reason::GrantedPassbackWarning;
                    trace.steps.push(Step {
                        rule: Rule::AntiPassback,
                        outcome: Outcome::Warn,
                        reason: Some(reason),
                        detail: format!(
                            "{going} area `{}` ({mode}) breaks its last known passage: granted with a warning",
                            area.id
                        ),
                    });
                }
                Passage::Refused => {
                    return trace.deny(
                        Rule::AntiPassback,
                        Reason::AntiPassback,
                        format!(
                            "{going} area `{}` ({mode}) breaks its last known passage",
                            area.id
                        ),
                    );
                }
            }
        }
        _ => trace.skip(
            Rule::AntiPassback,
            format!("door `{door_id}` is in no anti-passback area"),
        ),
    }
    Decision::new(reason, door.unlock_ms, version)
}
