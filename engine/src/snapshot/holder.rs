//! The entries of cardholders and credentials as decisions read them:
//! validity windows, the holder entry all of a holder's credentials share,
//! and a credential's hot and cold halves.

use std::sync::Arc;

use jiff::Timestamp;

use super::builder::HolderParts;
use crate::credential::CredentialKey;
use crate::model::{CredentialRecord, CredentialStatus, HolderStatus};
use crate::pin::PinHash;

/// A validity window in milliseconds since the epoch: `from` inclusive,
/// `until` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(super) from: i64,
    pub(super) until: i64,
}

/// Where an instant lies relative to a validity window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Within {
    Before,
    Inside,
    After,
}

impl Validity {
    pub(super) const ALWAYS: Self = Self {
        from: i64::MIN,
        until: i64::MAX,
    };

    pub(super) fn new(from: Option<Timestamp>, until: Option<Timestamp>) -> Self {
        Self {
            from: from.map_or(i64::MIN, |t| t.as_millisecond()),
            until: until.map_or(i64::MAX, |t| t.as_millisecond()),
        }
    }

    #[inline]
    pub(crate) fn at(&self, now_ms: i64) -> Within {
        if now_ms < self.from {
            Within::Before
        } else if now_ms >= self.until {
            Within::After
        } else {
            Within::Inside
        }
    }
}

/// The longest holder id kept inside its entry (longer ones are boxed).
const INLINE_ID: usize = 22;

/// A cardholder's id, kept inside its entry when it is short (ids are
/// badge or employee numbers, nearly always short). Every access event
/// copies its decision's holder id: boxed, the id was a cache miss of its
/// own after the entry's, for each event (with a hundred thousand holders,
/// the demo recording events spent 7 % of its samples in that copy; inline,
/// 3.4 %). 24 bytes either way.
#[derive(Clone)]
pub(crate) enum HolderId {
    /// The first `len` bytes of `bytes` are the id's UTF-8.
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    /// An id longer than [`INLINE_ID`] bytes.
    Boxed(Box<str>),
}

impl HolderId {
    /// The id `id`; a long owned one is kept rather than copied.
    pub(crate) fn new<I: AsRef<str> + Into<Box<str>>>(id: I) -> Self {
        let text = id.as_ref().as_bytes();
        let mut bytes = [0; INLINE_ID];
        match bytes.get_mut(..text.len()) {
            Some(head) => {
                head.copy_from_slice(text);
                Self::Inline {
                    len: text.len() as u8,
                    bytes,
                }
            }
            None => Self::Boxed(id.into()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Copied from a `str` whole: always valid, never the default.
            Self::Inline { len, bytes } => {
                std::str::from_utf8(bytes.get(..usize::from(*len)).unwrap_or_default())
                    .unwrap_or_default()
            }
            Self::Boxed(id) => id,
        }
    }
}

impl Default for HolderId {
    fn default() -> Self {
        Self::new("")
    }
}

impl std::fmt::Debug for HolderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A cardholder as decisions need it, shared by all its credentials.
///
/// Laid out for memory, since there are about as many holders as
/// credentials: the common parts (status, level numbers) are plain, the
/// rare ones (validity windows) are boxed and absent when unused, and an
/// empty boxed slice allocates nothing.
#[derive(Debug)]
pub(crate) struct HolderEntry {
    pub(super) id: HolderId,
    /// `None` while no cardholder record exists for this id.
    status: Option<HolderStatus>,
    lockdown_override: bool,
    /// Levels assigned without a validity window, sorted.
    levels: Box<[u32]>,
    /// Validity windows, for the few holders that have any.
    rare: Option<Box<Rare>>,
    /// INVARIANT(holder-arc): the keys of every credential whose entry
    /// holds this entry. The builder's reverse index, kept here so that it
    /// costs no second map.
    pub(super) creds: Box<[CredentialKey]>,
}

/// The rare parts of a holder, in one allocation.
#[derive(Debug)]
struct Rare {
    /// The holder's own validity.
    validity: Validity,
    /// Assignments with a validity window, sorted by level.
    timed: Box<[AssignmentEntry]>,
}

impl HolderEntry {
    pub(super) fn new(id: HolderId, parts: HolderParts) -> Self {
        let (core, assignments, creds) = (parts.core, parts.assignments, parts.creds);
        let levels = assignments
            .iter()
            .filter(|a| a.validity == Validity::ALWAYS)
            .map(|a| a.level)
            .collect();
        let timed: Box<[AssignmentEntry]> = assignments
            .iter()
            .filter(|a| a.validity != Validity::ALWAYS)
            .copied()
            .collect();
        let validity = core.map_or(Validity::ALWAYS, |c| c.validity);
        let rare = (validity != Validity::ALWAYS || !timed.is_empty())
            .then(|| Box::new(Rare { validity, timed }));
        Self {
            id,
            status: core.map(|c| c.status),
            lockdown_override: core.is_some_and(|c| c.lockdown_override),
            levels,
            rare,
            creds: creds.into_boxed_slice(),
        }
    }

    /// The parts, for a change; sorted by level.
    pub(super) fn parts(&self) -> HolderParts {
        let mut assignments: Vec<AssignmentEntry> = self.assignments().collect();
        assignments.sort_by_key(|a| a.level);
        HolderParts {
            core: self.core(),
            assignments,
            creds: self.creds.to_vec(),
        }
    }

    #[inline]
    pub(crate) fn id(&self) -> &str {
        self.id.as_str()
    }

    /// Status, validity and override; `None` without a cardholder record.
    #[inline]
    pub(crate) fn core(&self) -> Option<HolderCore> {
        self.status.map(|status| HolderCore {
            status,
            validity: self.rare.as_ref().map_or(Validity::ALWAYS, |r| r.validity),
            lockdown_override: self.lockdown_override,
        })
    }

    /// Every assignment, in no particular order.
    #[inline]
    pub(crate) fn assignments(&self) -> impl Iterator<Item = AssignmentEntry> + '_ {
        self.levels
            .iter()
            .map(|&level| AssignmentEntry {
                level,
                validity: Validity::ALWAYS,
            })
            .chain(self.rare.iter().flat_map(|r| r.timed.iter().copied()))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.levels.is_empty()
            && self.rare.is_none()
            && self.creds.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HolderCore {
    pub(crate) status: HolderStatus,
    pub(crate) validity: Validity,
    pub(crate) lockdown_override: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AssignmentEntry {
    /// The level's number (see `LevelIds`).
    pub(crate) level: u32,
    pub(crate) validity: Validity,
}

/// A credential as decisions need it, in two halves stored side by side in
/// the credential table (see `credmap`): the hot half beside the key, in
/// the cache line every lookup reads, and the cold half in the next line,
/// read only when the hot half says it is needed. There is one of these
/// per credential, millions of them, so together they are 24 bytes.
#[derive(Clone, Copy)]
pub(crate) struct Cred<'a> {
    pub(crate) hot: Hot,
    /// `Some` for every stored credential. A reference, so finding the
    /// entry does not read it.
    cold: &'a Option<Cold>,
}

/// The credential's status and, when the holder is simple enough, an
/// inline copy of it: most holders have a record, no validity window and at
/// most three assignments without validity windows, to levels numbered
/// below 65,536. 8 bytes: four keys and their hot halves fill a cache line.
///
/// INVARIANT(holder-arc): the holder part is derived from the cold half's
/// holder and refreshed with it. INVARIANT(hot-extras): `EXTRAS` is set
/// exactly when the cold half has extras.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hot {
    pub(crate) status: CredentialStatus,
    /// `LEN_MASK`, `OVERRIDE`, `HOLDER_ACTIVE`, `HOLDER_INACTIVE`, `EXTRAS`.
    flags: u8,
    levels: [u16; FAST_LEVELS],
}

const FAST_LEVELS: usize = 3;
/// How many of `levels` are used.
const LEN_MASK: u8 = 0b11;
const OVERRIDE: u8 = 1 << 2;
/// The holder is inline and active; with `HOLDER_INACTIVE`, inline and
/// inactive; with neither, not inline: read the cold half's holder.
const HOLDER_ACTIVE: u8 = 1 << 3;
const HOLDER_INACTIVE: u8 = 1 << 4;
/// The credential has a validity window or a PIN (in the cold half).
const EXTRAS: u8 = 1 << 5;

impl Hot {
    pub(super) fn of(status: CredentialStatus, extras: bool, holder: &HolderEntry) -> Self {
        let not_inline = Self {
            status,
            flags: if extras { EXTRAS } else { 0 },
            levels: [0; FAST_LEVELS],
        };
        let Some(core) = holder.core() else {
            return not_inline;
        };
        if holder.rare.is_some() || holder.levels.len() > FAST_LEVELS {
            return not_inline;
        }
        let mut hot = not_inline;
        for (slot, level) in hot.levels.iter_mut().zip(holder.levels.iter()) {
            let Ok(level) = u16::try_from(*level) else {
                return not_inline;
            };
            *slot = level;
        }
        hot.flags |= holder.levels.len() as u8 & LEN_MASK;
        hot.flags |= match core.status {
            HolderStatus::Active => HOLDER_ACTIVE,
            HolderStatus::Inactive => HOLDER_INACTIVE,
        };
        if core.lockdown_override {
            hot.flags |= OVERRIDE;
        }
        hot
    }

    /// Whether the holder is inline.
    #[inline]
    pub(crate) fn is_inline(&self) -> bool {
        self.flags & (HOLDER_ACTIVE | HOLDER_INACTIVE) != 0
    }

    /// The inline holder's core, if it is inline.
    #[inline]
    pub(crate) fn core(&self) -> Option<HolderCore> {
        let status = if self.flags & HOLDER_ACTIVE != 0 {
            HolderStatus::Active
        } else if self.flags & HOLDER_INACTIVE != 0 {
            HolderStatus::Inactive
        } else {
            return None;
        };
        Some(HolderCore {
            status,
            validity: Validity::ALWAYS,
            lockdown_override: self.flags & OVERRIDE != 0,
        })
    }

    /// The inline holder's assignments (empty when not inline).
    #[inline]
    pub(crate) fn assignments(&self) -> impl Iterator<Item = AssignmentEntry> + '_ {
        let len = if self.is_inline() {
            usize::from(self.flags & LEN_MASK)
        } else {
            0
        };
        self.levels.iter().take(len).map(|&level| AssignmentEntry {
            level: level.into(),
            validity: Validity::ALWAYS,
        })
    }

    #[inline]
    fn has_extras(&self) -> bool {
        self.flags & EXTRAS != 0
    }
}

/// The cold half of a credential: its holder, and its extras if it has
/// any. Read for the rare credentials whose hot half is not enough.
#[derive(Debug, Clone)]
pub(crate) struct Cold {
    /// INVARIANT(holder-arc).
    pub(crate) holder: Arc<HolderEntry>,
    /// INVARIANT(hot-extras).
    pub(crate) extras: Option<Arc<CredExtras>>,
}

/// The rarer parts of a credential.
#[derive(Debug)]
pub(crate) struct CredExtras {
    pub(crate) validity: Validity,
    pub(crate) pin: Option<PinHash>,
}

/// The halves of credential record `r`, whose holder entry is `holder`.
pub(super) fn cred_entry(r: CredentialRecord, holder: Arc<HolderEntry>) -> (Hot, Cold) {
    let validity = Validity::new(r.valid_from, r.valid_until);
    let extras = (validity != Validity::ALWAYS || r.pin.is_some()).then(|| {
        Arc::new(CredExtras {
            validity,
            pin: r.pin,
        })
    });
    let hot = Hot::of(r.status, extras.is_some(), &holder);
    (hot, Cold { holder, extras })
}

impl<'a> Cred<'a> {
    pub(super) fn new((hot, cold): (Hot, &'a Option<Cold>)) -> Self {
        Self { hot, cold }
    }

    /// The holder's entry; `None` only if the table broke its promise
    /// that every stored credential has a cold half.
    #[inline]
    pub(crate) fn holder(&self) -> Option<&'a HolderEntry> {
        self.cold.as_ref().map(|c| &*c.holder)
    }

    /// The extras, read only when the hot half says there are some.
    #[inline]
    pub(crate) fn extras(&self) -> Option<&'a CredExtras> {
        if !self.hot.has_extras() {
            return None;
        }
        self.cold.as_ref()?.extras.as_deref()
    }

    /// Fails closed: extras announced but missing read as expired.
    #[inline]
    pub(crate) fn validity_at(&self, now_ms: i64) -> Within {
        if !self.hot.has_extras() {
            return Within::Inside;
        }
        self.extras()
            .map_or(Within::After, |e| e.validity.at(now_ms))
    }

    #[inline]
    pub(crate) fn pin(&self) -> Option<&'a PinHash> {
        self.extras().and_then(|e| e.pin.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_entries_stay_small() {
        // The credential table's size is the engine's memory footprint.
        assert_eq!(std::mem::size_of::<Hot>(), 8);
        assert_eq!(std::mem::size_of::<Option<Cold>>(), 16);
        // 72: the id inside (24 bytes) instead of a box (16) and an
        // allocation of its own (8 to 16 more, and a cache miss).
        assert_eq!(std::mem::size_of::<HolderId>(), 24);
        assert_eq!(std::mem::size_of::<HolderEntry>(), 72);
    }

    #[test]
    fn holder_ids_read_back_inline_or_boxed() {
        let long = "h".repeat(INLINE_ID + 1);
        for id in [
            "",
            "E1",
            "émilie-Ω",
            &long[1..],
            &long,
            "a much longer id than fits",
        ] {
            let held = HolderId::new(id);
            assert_eq!(held.as_str(), id);
            assert_eq!(
                matches!(held, HolderId::Inline { .. }),
                id.len() <= INLINE_ID,
                "{id}"
            );
            assert_eq!(HolderId::new(Box::<str>::from(id)).as_str(), id);
            assert_eq!(format!("{:?}", held.clone()), format!("{id:?}"));
        }
        assert_eq!(HolderId::default().as_str(), "");
    }
}
