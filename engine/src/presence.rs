//! Anti-passback presence: who is inside which area.
//!
//! Presence is runtime state, not data: it lives outside the snapshot so it
//! survives every snapshot swap, and it is changed by decisions themselves.
//! It is keyed by cardholder, so all credentials of one person share it, and
//! each check-and-update happens under that holder's map entry lock, so two
//! readers deciding for the same holder at once cannot both pass an entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

/// The state of one holder in one area.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AreaPresence {
    area: Arc<str>,
    inside: bool,
    at_ms: i64,
}

/// What [`Presence::pass`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Passage {
    /// Nothing known, or the passage is consistent: recorded.
    Ok,
    /// A violation that was recorded anyway (soft anti-passback).
    Violation,
    /// A violation that was refused and not recorded (hard anti-passback).
    Refused,
}

/// Whether a passage into (`entering`) or out of an area breaks the last
/// known state `p` there: that state is not older than `reset_after_ms`
/// and already the one the passage leads to. The rule of
/// [`Presence::pass`], which keeps its own inline copy on the decision
/// path; the explain tests hold the two equal.
fn violates(p: &AreaPresence, entering: bool, now_ms: i64, reset_after_ms: Option<i64>) -> bool {
    let fresh = reset_after_ms.is_none_or(|reset| now_ms - p.at_ms < reset);
    fresh && p.inside == entering
}

/// Where every holder is, per anti-passback area. Share one `Presence`
/// between all decisions of a process.
#[derive(Debug, Default)]
pub struct Presence {
    map: DashMap<Arc<str>, Vec<AreaPresence>, foldhash::fast::RandomState>,
    /// Bumped on every recorded passage, so a checkpoint writer can tell
    /// whether anything changed since it last looked.
    generation: AtomicU64,
}

/// One holder's last known state in one area, as checkpoints store it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The cardholder id.
    pub holder: String,
    /// The anti-passback area id.
    pub area: String,
    /// Inside (`true`) or out.
    pub inside: bool,
    /// When the passage was recorded, in milliseconds since the epoch.
    pub at_ms: i64,
}

impl Presence {
    /// No one is anywhere.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks a passage of `holder` into (`entering`) or out of `area` at
    /// `now_ms`, and records it unless it is a refused hard violation.
    ///
    /// A passage is a violation when the last known state in that area,
    /// not older than `reset_after_ms`, is already the one the passage
    /// leads to (entering while inside, leaving while outside). With no
    /// known state, any passage is allowed: the first read teaches the
    /// system where the holder is.
    pub(crate) fn pass(
        &self,
        holder: &str,
        area: &Arc<str>,
        entering: bool,
        now_ms: i64,
        reset_after_ms: Option<i64>,
        hard: bool,
    ) -> Passage {
        let passage = |areas: &mut Vec<AreaPresence>| {
            let slot = areas.iter_mut().find(|p| p.area == *area);
            let violation = slot.as_ref().is_some_and(|p| {
                let fresh = reset_after_ms.is_none_or(|reset| now_ms - p.at_ms < reset);
                fresh && p.inside == entering
            });
            if violation && hard {
                return Passage::Refused;
            }
            self.generation.fetch_add(1, Ordering::Relaxed);
            match slot {
                Some(p) => {
                    p.inside = entering;
                    p.at_ms = now_ms;
                }
                None => areas.push(AreaPresence {
                    area: Arc::clone(area),
                    inside: entering,
                    at_ms: now_ms,
                }),
            }
            if violation {
                Passage::Violation
            } else {
                Passage::Ok
            }
        };
        // The entry's lock makes the check and the update one step. A holder
        // seen before needs no allocation; `entry` covers a first passage
        // racing another one.
        if let Some(mut areas) = self.map.get_mut(holder) {
            return passage(&mut areas);
        }
        let mut areas = self.map.entry(Arc::from(holder)).or_default();
        passage(&mut areas)
    }

    /// What [`pass`](Self::pass) would find for this passage, without
    /// recording anything (for explanations).
    pub(crate) fn peek(
        &self,
        holder: &str,
        area: &str,
        entering: bool,
        now_ms: i64,
        reset_after_ms: Option<i64>,
        hard: bool,
    ) -> Passage {
        let violation = self.map.get(holder).is_some_and(|areas| {
            areas
                .iter()
                .find(|p| &*p.area == area)
                .is_some_and(|p| violates(p, entering, now_ms, reset_after_ms))
        });
        match (violation, hard) {
            (false, _) => Passage::Ok,
            (true, false) => Passage::Violation,
            (true, true) => Passage::Refused,
        }
    }

    /// Whether `holder` is known to be inside `area` (for tests and
    /// operators; ignores timed resets).
    pub fn is_inside(&self, holder: &str, area: &str) -> bool {
        self.map
            .get(holder)
            .is_some_and(|a| a.iter().any(|p| &*p.area == area && p.inside))
    }

    /// Forgets everything about `holder` (an operator's "reset
    /// anti-passback" for one person).
    pub fn forget(&self, holder: &str) {
        self.map.remove(holder);
    }

    /// Every holder's known state in every area, in no particular order
    /// (for checkpoints).
    pub fn entries(&self) -> Vec<PresenceEntry> {
        let mut out = Vec::with_capacity(self.map.len());
        for item in &self.map {
            for p in item.value() {
                out.push(PresenceEntry {
                    holder: item.key().to_string(),
                    area: p.area.to_string(),
                    inside: p.inside,
                    at_ms: p.at_ms,
                });
            }
        }
        out
    }

    /// Adds `entries` (from a checkpoint). A holder and area known already
    /// keeps the later of the two states.
    pub fn restore(&self, entries: impl IntoIterator<Item = PresenceEntry>) {
        for e in entries {
            let mut areas = self.map.entry(Arc::from(e.holder.as_str())).or_default();
            match areas.iter_mut().find(|p| *p.area == *e.area) {
                Some(p) if p.at_ms >= e.at_ms => {}
                Some(p) => {
                    p.inside = e.inside;
                    p.at_ms = e.at_ms;
                }
                None => areas.push(AreaPresence {
                    area: Arc::from(e.area.as_str()),
                    inside: e.inside,
                    at_ms: e.at_ms,
                }),
            }
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// A number that changes whenever a passage is recorded or entries are
    /// restored.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Number of holders with known presence.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no presence is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
