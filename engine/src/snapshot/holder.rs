//! The entries of cardholders and credentials as decisions read them:
//! validity windows, the holder entry all of a holder's credentials share,
//! and a credential's hot and cold halves.

use std::sync::Arc;

use jiff::Timestamp;

use super::builder::HolderParts;
use super::short::ShortStr;
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

/// A cardholder as decisions need it, shared by all its credentials.
///
/// Laid out for memory, since there are about as many holders as
/// credentials, and for the decisions that read it: those of credentials
/// whose hot half could not hold the holder (a validity window, timed
/// assignments, more than three levels), for which each pointer followed
/// is a cache miss at a million holders. So, in declaration order
/// (`repr(C)`): status, override and up to three level numbers in the
/// first 8 bytes, then the validity, all at the front of the allocation;
/// the level numbers that do not fit and the timed assignments are boxed
/// and absent when unused (an empty boxed slice allocates nothing).
/// Measured at 1M: the box of the validity and timed assignments and the
/// box of the levels were together a third of `decide`'s samples.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct HolderEntry {
    /// `None` while no cardholder record exists for this id.
    status: Option<HolderStatus>,
    /// `FEW_OVERRIDE` and, in `FEW_LEN`, how many of `few` are used.
    bits: u8,
    /// The levels assigned without a validity window, when there are at
    /// most three, all numbered below 65,536 (nearly every holder);
    /// otherwise none, and `levels` holds them.
    few: [u16; FAST_LEVELS],
    /// The holder's own validity.
    validity: Validity,
    /// Levels assigned without a validity window that `few` cannot hold,
    /// sorted; empty when `few` holds them.
    levels: Box<[u32]>,
    /// Assignments with a validity window, for the few holders that have
    /// any.
    rare: Option<Box<Rare>>,
    pub(super) id: ShortStr,
    /// INVARIANT(holder-arc): the keys of every credential whose entry
    /// holds this entry. The builder's reverse index, kept here so that it
    /// costs no second map.
    pub(super) creds: Box<[CredentialKey]>,
}

const FEW_OVERRIDE: u8 = 1;
const FEW_LEN: u8 = 0b110;
const FEW_LEN_SHIFT: u32 = 1;

/// Timed assignments kept inside [`Rare`]; more go to its box.
const TIMED_FEW: usize = 2;

/// The timed assignments of a holder, in one allocation when there are at
/// most [`TIMED_FEW`] (a box of the slice behind the box was one more
/// dependent miss).
///
/// In declaration order (`repr(C)`): the count and the first assignments
/// in the allocation's first cache line, the box of the rest (read only
/// when `few` is full) after them.
#[derive(Debug)]
#[repr(C)]
struct Rare {
    /// How many of `few` are used.
    len: u8,
    few: [AssignmentEntry; TIMED_FEW],
    /// The rest, when there are more than [`TIMED_FEW`].
    more: Box<[AssignmentEntry]>,
}

impl Rare {
    fn new(timed: &[AssignmentEntry]) -> Option<Box<Self>> {
        let (head, more) = timed.split_at(timed.len().min(TIMED_FEW));
        let first = *head.first()?;
        let mut few = [first; TIMED_FEW];
        for (slot, a) in few.iter_mut().zip(head) {
            *slot = *a;
        }
        Some(Box::new(Self {
            len: head.len() as u8,
            few,
            more: more.into(),
        }))
    }

    fn iter(&self) -> impl Iterator<Item = AssignmentEntry> + '_ {
        let len = usize::from(self.len);
        // Only a full `few` has more; not reading `more` otherwise keeps
        // the lookup in the first line.
        let more: &[AssignmentEntry] = if len == TIMED_FEW { &self.more } else { &[] };
        self.few.iter().take(len).chain(more).copied()
    }
}

/// `levels` as the `few` of a holder entry, if there are at most
/// [`FAST_LEVELS`] and each is below 65,536.
fn as_few(levels: &[u32]) -> Option<[u16; FAST_LEVELS]> {
    if levels.len() > FAST_LEVELS {
        return None;
    }
    let mut few = [0; FAST_LEVELS];
    for (slot, &level) in few.iter_mut().zip(levels) {
        *slot = u16::try_from(level).ok()?;
    }
    Some(few)
}

impl HolderEntry {
    pub(super) fn new(id: ShortStr, parts: HolderParts) -> Self {
        let (core, assignments, creds) = (parts.core, parts.assignments, parts.creds);
        let untimed: Vec<u32> = assignments
            .iter()
            .filter(|a| a.validity == Validity::ALWAYS)
            .map(|a| a.level)
            .collect();
        let timed: Vec<AssignmentEntry> = assignments
            .iter()
            .filter(|a| a.validity != Validity::ALWAYS)
            .copied()
            .collect();
        let (few, few_len, levels) = match as_few(&untimed) {
            Some(few) => (few, untimed.len() as u8, Box::default()),
            None => ([0; FAST_LEVELS], 0, untimed.into_boxed_slice()),
        };
        let mut bits = few_len << FEW_LEN_SHIFT;
        if core.is_some_and(|c| c.lockdown_override) {
            bits |= FEW_OVERRIDE;
        }
        Self {
            status: core.map(|c| c.status),
            bits,
            few,
            validity: core.map_or(Validity::ALWAYS, |c| c.validity),
            levels,
            rare: Rare::new(&timed),
            id,
            creds: creds.into_boxed_slice(),
        }
    }

    /// How many of `few` are used.
    #[inline]
    fn few_len(&self) -> u8 {
        (self.bits & FEW_LEN) >> FEW_LEN_SHIFT
    }

    /// The levels assigned without a validity window.
    #[inline]
    fn untimed(&self) -> impl Iterator<Item = u32> + '_ {
        self.few
            .iter()
            .take(usize::from(self.few_len()))
            .map(|&l| u32::from(l))
            .chain(self.levels.iter().copied())
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
            validity: self.validity,
            lockdown_override: self.bits & FEW_OVERRIDE != 0,
        })
    }

    /// Every assignment, in no particular order.
    #[inline]
    pub(crate) fn assignments(&self) -> impl Iterator<Item = AssignmentEntry> + '_ {
        self.untimed()
            .map(|level| AssignmentEntry {
                level,
                validity: Validity::ALWAYS,
            })
            .chain(self.rare.iter().flat_map(|r| r.iter()))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.untimed().next().is_none()
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
/// exactly when the cold half has extras, `WINDOW` exactly when those
/// extras have a validity window other than always.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hot {
    pub(crate) status: CredentialStatus,
    /// `LEN_MASK`, `OVERRIDE`, `HOLDER_ACTIVE`, `HOLDER_INACTIVE`, `EXTRAS`,
    /// `WINDOW`.
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
/// The extras have a validity window. Most credentials with extras have
/// a PIN and no window; without this flag, rule 2 read the extras (a cache
/// miss at a million credentials) to find the window always open.
const WINDOW: u8 = 1 << 6;

impl Hot {
    pub(super) fn of(
        status: CredentialStatus,
        extras: Option<&CredExtras>,
        holder: &HolderEntry,
    ) -> Self {
        let not_inline = Self {
            status,
            flags: match extras {
                None => 0,
                Some(e) if e.validity == Validity::ALWAYS => EXTRAS,
                Some(_) => EXTRAS | WINDOW,
            },
            levels: [0; FAST_LEVELS],
        };
        let Some(core) = holder.core() else {
            return not_inline;
        };
        // The holder entry's `few` is already the inline form (at most
        // three levels below 65,536); `levels` is empty exactly when it
        // holds them all.
        if holder.validity != Validity::ALWAYS || holder.rare.is_some() || !holder.levels.is_empty()
        {
            return not_inline;
        }
        let mut hot = not_inline;
        hot.levels = holder.few;
        hot.flags |= holder.few_len() & LEN_MASK;
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

    #[inline]
    fn has_window(&self) -> bool {
        self.flags & WINDOW != 0
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
    let hot = Hot::of(r.status, extras.as_deref(), &holder);
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
        if !self.hot.has_window() {
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
        // 88: the id inside (24 bytes) instead of a box (16) and an
        // allocation of its own (8 to 16 more, and a cache miss); the
        // validity inside (16) instead of in the box of timed assignments.
        assert_eq!(std::mem::size_of::<ShortStr>(), 24);
        assert_eq!(std::mem::size_of::<HolderEntry>(), 88);
    }

    #[test]
    fn holder_entries_give_back_their_parts_whatever_fits_inside() {
        let window = Validity {
            from: 10,
            until: 20,
        };
        let mut cases = 0;
        for untimed in [
            vec![],
            vec![3],
            vec![1, 2, 3],
            vec![1, 2, 3, 4],
            vec![7, 70_000],
            vec![65_535],
        ] {
            for timed in 0..5u32 {
                for core in [
                    None,
                    Some(HolderCore {
                        status: HolderStatus::Active,
                        validity: Validity::ALWAYS,
                        lockdown_override: true,
                    }),
                    Some(HolderCore {
                        status: HolderStatus::Inactive,
                        validity: window,
                        lockdown_override: false,
                    }),
                ] {
                    let mut assignments: Vec<AssignmentEntry> = untimed
                        .iter()
                        .map(|&level| AssignmentEntry {
                            level,
                            validity: Validity::ALWAYS,
                        })
                        .chain((0..timed).map(|i| AssignmentEntry {
                            level: 100 + i,
                            validity: window,
                        }))
                        .collect();
                    assignments.sort_by_key(|a| a.level);
                    let parts = HolderParts {
                        core,
                        assignments: assignments.clone(),
                        creds: vec![],
                    };
                    let entry = HolderEntry::new(ShortStr::new("H"), parts);
                    let back = entry.parts();
                    assert_eq!(back.core, core);
                    assert_eq!(back.assignments, assignments);
                    assert_eq!(entry.is_empty(), core.is_none() && assignments.is_empty());
                    // The hot half holds the holder exactly when it is
                    // simple enough, and then says the same.
                    let hot = Hot::of(CredentialStatus::Active, None, &entry);
                    let simple = core.is_some_and(|c| c.validity == Validity::ALWAYS)
                        && timed == 0
                        && untimed.len() <= FAST_LEVELS
                        && untimed.iter().all(|&l| l < 65_536);
                    assert_eq!(hot.core().is_some(), simple);
                    if simple {
                        assert_eq!(hot.core(), core);
                        let inline: Vec<_> = hot.assignments().collect();
                        assert_eq!(inline, assignments);
                    }
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 6 * 5 * 3);
    }

    #[test]
    fn only_a_window_makes_rule_two_read_the_extras() {
        let holder = Arc::new(HolderEntry::new(
            ShortStr::new("H1"),
            HolderParts {
                core: None,
                assignments: vec![],
                creds: vec![],
            },
        ));
        let pin = PinHash::new("1234", [7; 16]).unwrap();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let later = Timestamp::from_second(1_900_000_000).unwrap();
        for (pin, until, extras, window, at_now) in [
            (None, None, false, false, Within::Inside),
            (Some(pin.clone()), None, true, false, Within::Inside),
            (None, Some(now), true, true, Within::After),
            (Some(pin), Some(later), true, true, Within::Inside),
        ] {
            let record = CredentialRecord {
                card: "uid:0102".parse().unwrap(),
                holder: "H1".into(),
                status: CredentialStatus::Active,
                valid_from: None,
                valid_until: until,
                pin,
            };
            let (hot, cold) = cred_entry(record, Arc::clone(&holder));
            assert_eq!(hot.has_extras(), extras);
            assert_eq!(cold.extras.is_some(), extras);
            assert_eq!(hot.has_window(), window);
            let cold = Some(cold);
            assert_eq!(
                Cred::new((hot, &cold)).validity_at(now.as_millisecond()),
                at_now
            );
        }
    }
}
