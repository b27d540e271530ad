//! Short ids kept inside the entry that owns them, and compared there.
//!
//! Cardholder ids and reader ids are badge numbers, employee numbers and
//! names like `hq-l3-east-in`: nearly always a couple of dozen bytes or
//! fewer. Boxed, each was a pointer to follow, a cache miss of its own, on
//! the decision path (the reader's id is compared on every lookup, the
//! holder's copied into every access event). Inline, they are read with the
//! entry.

/// The longest id kept inside (longer ones are boxed).
pub(super) const INLINE: usize = 22;

/// An id, inside when at most [`INLINE`] bytes long. 24 bytes either way.
#[derive(Clone)]
pub(crate) enum ShortStr {
    /// The first `len` bytes of `bytes` are the id's UTF-8; the rest are 0.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// An id longer than [`INLINE`] bytes.
    Boxed(Box<str>),
}

impl ShortStr {
    /// The id `id`; a long owned one is kept rather than copied.
    pub(crate) fn new<I: AsRef<str> + Into<Box<str>>>(id: I) -> Self {
        let text = id.as_ref().as_bytes();
        let mut bytes = [0; INLINE];
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

    /// Whether this is `other`, byte for byte. For an inline id, in a few
    /// word compares and no call: `==` on slices calls `memcmp`, which at
    /// a million credentials was a tenth of a decision's time.
    #[inline]
    pub(crate) fn is(&self, other: &str) -> bool {
        match self {
            Self::Inline { len, bytes } => {
                usize::from(*len) == other.len()
                    && bytes
                        .get(..other.len())
                        .is_some_and(|mine| same_bytes(mine, other.as_bytes()))
            }
            Self::Boxed(id) => **id == *other,
        }
    }
}

/// `a == b` for slices of equal length up to 32 bytes, by two overlapping
/// word loads from each end; longer ones by `==`. Unequal lengths are
/// never equal.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    /// The `N` bytes at `at`, if there are that many.
    #[inline]
    fn word<const N: usize>(s: &[u8], at: usize) -> Option<[u8; N]> {
        s.get(at..at.checked_add(N)?)?.try_into().ok()
    }
    /// Compares the first and the last `N` bytes (which overlap when the
    /// length is under 2 × N): together they cover every byte.
    #[inline]
    fn ends<const N: usize>(a: &[u8], b: &[u8]) -> bool {
        let last = a.len().saturating_sub(N);
        matches!((word::<N>(a, 0), word::<N>(b, 0)), (Some(x), Some(y)) if x == y)
            && matches!((word::<N>(a, last), word::<N>(b, last)), (Some(x), Some(y)) if x == y)
    }
    if a.len() != b.len() {
        return false;
    }
    match a.len() {
        16..=32 => ends::<16>(a, b),
        8..=15 => ends::<8>(a, b),
        4..=7 => ends::<4>(a, b),
        _ => a == b,
    }
}

impl Default for ShortStr {
    fn default() -> Self {
        Self::new("")
    }
}

impl std::fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_inline_or_boxed() {
        assert_eq!(std::mem::size_of::<ShortStr>(), 24);
        let long = "h".repeat(INLINE + 1);
        for id in [
            "",
            "E1",
            "émilie-Ω",
            &long[1..],
            &long,
            "a much longer id than fits",
        ] {
            let held = ShortStr::new(id);
            assert_eq!(held.as_str(), id);
            assert_eq!(
                matches!(held, ShortStr::Inline { .. }),
                id.len() <= INLINE,
                "{id}"
            );
            assert_eq!(ShortStr::new(Box::<str>::from(id)).as_str(), id);
            assert_eq!(format!("{:?}", held.clone()), format!("{id:?}"));
        }
        assert_eq!(ShortStr::default().as_str(), "");
    }

    #[test]
    fn is_matches_exactly_the_same_bytes() {
        // Every length from 0 to 40 (inline and boxed, each word size and
        // the overlaps between them), against itself, a different length,
        // and each single byte changed.
        for n in 0..=40usize {
            let id: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let held = ShortStr::new(id.as_str());
            assert!(held.is(&id), "{n}: itself");
            assert!(!held.is(&format!("{id}x")), "{n}: longer");
            if let Some(shorter) = id.get(..n.saturating_sub(1))
                && n > 0
            {
                assert!(!held.is(shorter), "{n}: shorter");
            }
            for at in 0..n {
                let mut other = id.clone().into_bytes();
                other[at] = b'Z';
                let other = String::from_utf8(other).unwrap();
                assert!(!held.is(&other), "{n}: byte {at} differs");
            }
        }
    }
}
