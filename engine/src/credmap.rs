//! The credential table: a persistent map from packed credential keys to
//! credential entries, laid out so that a lookup reads one cache line.
//!
//! ```text
//!   root (64 groups) ─▶ group (78 shards) ─▶ shard: [Bucket] ─▶ 128-byte bucket
//!                                                        ┌───────────────────────┐
//!                                          line 1 (read) │ 4 keys (u64) │ 4 hot  │
//!                                          line 2 (rare) │ 4 cold (holder, extras)│
//!                                                        └───────────────────────┘
//! ```
//!
//! Why not a `hashbrown` table per shard (the first layout): its control
//! bytes and its entries live in different cache lines, so a lookup at a
//! million credentials paid two dependent cache misses, then a third for
//! the shard's header. Here the key itself is the tag: a card packs into
//! one `u64` (see [`CredentialKey::pack`]), four keys and the four hot
//! halves of their entries (status and the inline copy of the holder, 8
//! bytes each) fill one 64-byte line, and the shard's buckets are reached
//! from the group by a fat pointer without a header in between. The cold
//! halves (the holder and the credential's extras, `Arc`s) sit in the
//! bucket's second line and are read only when the hot half says so.
//!
//! Persistence is the same as [`ShardedMap`]'s: a clone copies one
//! pointer, a change copies the root, one group and one shard. Keys that do
//! not pack (UIDs longer than 7 bytes, cards of unknown formats with very
//! large numbers) go to a [`ShardedMap`] beside it, which is empty at most
//! sites.
//!
//! Probing: a key lives in the first bucket, from its home bucket on, that
//! had a free slot when it was inserted, so a lookup stops at the first
//! bucket with a free slot. INVARIANT(no-holes): slots are never emptied in
//! place; a removal rebuilds the shard (it is copied for the new version
//! anyway), so the buckets before a key's stay full.

use std::hash::BuildHasher;
use std::sync::Arc;

use crate::credential::CredentialKey;
use crate::shard::{GROUPS, SHARDS_PER_GROUP, ShardedMap, slot};

type RandomState = foldhash::fast::RandomState;

/// Slots per bucket: four 8-byte keys and four 8-byte hot halves make one
/// cache line.
const SLOTS: usize = 4;
/// A shard grows when it would be fuller than this (out of 16)...
const GROW_AT: usize = 13;
/// ...to a size where it is this full (out of 16): between 62 % and 81 %
/// full, ~72 % on average, so most keys sit in their home bucket and a
/// missing key is found missing after one or two buckets.
const GROW_TO: usize = 10;

/// Four slots: the keys and hot halves in the first cache line, the cold
/// halves in the second.
#[derive(Clone)]
#[repr(C, align(64))]
struct Bucket<H, C> {
    /// 0 for a free slot (no packed key is 0).
    keys: [u64; SLOTS],
    hot: [H; SLOTS],
    cold: [Option<C>; SLOTS],
}

impl<H: Copy + Default, C> Bucket<H, C> {
    fn empty() -> Self {
        Self {
            keys: [0; SLOTS],
            hot: [H::default(); SLOTS],
            cold: [None, None, None, None],
        }
    }
}

impl<H, C> Bucket<H, C> {
    #[inline]
    fn position(&self, key: u64) -> Option<usize> {
        self.keys.iter().position(|&k| k == key)
    }

    #[inline]
    fn has_free_slot(&self) -> bool {
        self.keys.contains(&0)
    }
}

/// Shards inside the `Arc` allocation, reached by a fat pointer: no
/// header to read between the group and the buckets.
type Group<H, C> = Arc<[Shard<H, C>]>;

#[derive(Clone)]
struct Shard<H, C> {
    buckets: Arc<[Bucket<H, C>]>,
    len: usize,
}

impl<H, C> Default for Shard<H, C> {
    fn default() -> Self {
        Self {
            buckets: Arc::new([]),
            len: 0,
        }
    }
}

/// The home bucket of `hash` among `n`: multiply-shift on the low 32 bits
/// (the shard is chosen from bits 32..57), so any `n` works, not only
/// powers of two.
#[inline]
fn home(hash: u64, n: usize) -> usize {
    (((hash & 0xffff_ffff) * n as u64) >> 32) as usize
}

/// Where `key` is in `buckets`: (bucket, slot).
#[inline]
fn find<H, C>(buckets: &[Bucket<H, C>], hash: u64, key: u64) -> Option<(usize, usize)> {
    let n = buckets.len();
    let mut i = home(hash, n);
    for _ in 0..n {
        let bucket = buckets.get(i)?;
        if let Some(j) = bucket.position(key) {
            return Some((i, j));
        }
        // INVARIANT(no-holes): the key would be here or before.
        if bucket.has_free_slot() {
            return None;
        }
        i += 1;
        if i == n {
            i = 0;
        }
    }
    None
}

/// Puts a key known to be absent into the first free slot from its home
/// bucket on. The caller makes sure there is a free slot.
fn place<H, C>(buckets: &mut [Bucket<H, C>], hash: u64, key: u64, hot: H, cold: Option<C>) {
    let n = buckets.len();
    let mut i = home(hash, n);
    for _ in 0..n {
        let Some(bucket) = buckets.get_mut(i) else {
            return;
        };
        if let Some(j) = bucket.position(0)
            && let (Some(k), Some(h), Some(c)) = (
                bucket.keys.get_mut(j),
                bucket.hot.get_mut(j),
                bucket.cold.get_mut(j),
            )
        {
            *k = key;
            *h = hot;
            *c = cold;
            return;
        }
        i += 1;
        if i == n {
            i = 0;
        }
    }
}

/// A persistent map from packed keys (never 0) to a hot half `H`, read on
/// every lookup, and a cold half `C`, read on demand. See the module docs.
pub(crate) struct FlatMap<H, C> {
    root: Arc<[Group<H, C>]>,
    len: usize,
    hasher: RandomState,
}

impl<H, C> Clone for FlatMap<H, C> {
    fn clone(&self) -> Self {
        Self {
            root: Arc::clone(&self.root),
            len: self.len,
            hasher: self.hasher.clone(),
        }
    }
}

impl<H: Copy + Default, C: Clone> FlatMap<H, C> {
    pub(crate) fn new() -> Self {
        let group: Group<H, C> = (0..SHARDS_PER_GROUP).map(|_| Shard::default()).collect();
        Self {
            root: (0..GROUPS).map(|_| Arc::clone(&group)).collect(),
            len: 0,
            hasher: RandomState::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The hot half of `key`'s entry and a reference to its cold half (not
    /// read here: taking the reference loads nothing).
    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<(H, &Option<C>)> {
        if key == 0 {
            return None;
        }
        let hash = self.hasher.hash_one(key);
        let (g, s) = slot(hash);
        let buckets = &*self.root.get(g)?.get(s)?.buckets;
        let (i, j) = find(buckets, hash, key)?;
        let bucket = buckets.get(i)?;
        Some((*bucket.hot.get(j)?, bucket.cold.get(j)?))
    }

    /// The shard of `hash`, copied first if it is shared with a published
    /// version (the root and its group too).
    fn shard_mut(&mut self, hash: u64) -> Option<&mut Shard<H, C>> {
        let (g, s) = slot(hash);
        let group = Arc::make_mut(&mut self.root).get_mut(g)?;
        Arc::make_mut(group).get_mut(s)
    }

    /// Inserts or replaces; returns the old entry.
    pub(crate) fn insert(&mut self, key: u64, hot: H, cold: C) -> Option<(H, Option<C>)> {
        if key == 0 {
            return None;
        }
        let hash = self.hasher.hash_one(key);
        let hasher = self.hasher.clone();
        let shard = self.shard_mut(hash)?;
        if let Some((i, j)) = find(&shard.buckets, hash, key) {
            let bucket = Arc::make_mut(&mut shard.buckets).get_mut(i)?;
            let old_hot = std::mem::replace(bucket.hot.get_mut(j)?, hot);
            let old_cold = bucket.cold.get_mut(j)?.replace(cold);
            return Some((old_hot, old_cold));
        }
        if (shard.len + 1) * 16 > shard.buckets.len() * SLOTS * GROW_AT {
            let buckets = (shard.len + 1) * 16 / (SLOTS * GROW_TO) + 1;
            rebuild(shard, buckets, None, &hasher);
        }
        place(
            Arc::make_mut(&mut shard.buckets),
            hash,
            key,
            hot,
            Some(cold),
        );
        shard.len += 1;
        self.len += 1;
        None
    }

    /// Reads the first word of `key`'s home bucket and nothing else: no
    /// compare, no branch on what was read. A loop of these over a batch
    /// has independent loads only, so the processor overlaps their cache
    /// misses; the lookups that follow find their lines in cache.
    #[inline]
    pub(crate) fn touch(&self, key: u64) -> u64 {
        let hash = self.hasher.hash_one(key);
        let (g, s) = slot(hash);
        let Some(shard) = self.root.get(g).and_then(|group| group.get(s)) else {
            return 0;
        };
        let buckets = &*shard.buckets;
        buckets
            .get(home(hash, buckets.len()))
            .map_or(0, |bucket| bucket.keys[0])
    }

    /// Changes the entry under `key` in place, if there is one.
    pub(crate) fn update(&mut self, key: u64, f: impl FnOnce(&mut H, &mut Option<C>)) -> bool {
        if self.get(key).is_none() {
            return false;
        }
        let hash = self.hasher.hash_one(key);
        let Some(shard) = self.shard_mut(hash) else {
            return false;
        };
        let Some((i, j)) = find(&shard.buckets, hash, key) else {
            return false;
        };
        let Some(bucket) = Arc::make_mut(&mut shard.buckets).get_mut(i) else {
            return false;
        };
        match (bucket.hot.get_mut(j), bucket.cold.get_mut(j)) {
            (Some(hot), Some(cold)) => {
                f(hot, cold);
                true
            }
            _ => false,
        }
    }

    /// Removes `key`; returns its entry.
    pub(crate) fn remove(&mut self, key: u64) -> Option<(H, Option<C>)> {
        // Look before copying, so removing a missing key copies nothing.
        let (hot, cold) = self.get(key)?;
        let (hot, cold) = (hot, cold.clone());
        let hash = self.hasher.hash_one(key);
        let hasher = self.hasher.clone();
        let shard = self.shard_mut(hash)?;
        // INVARIANT(no-holes): rebuilt without the key rather than emptied
        // in place; shrunk when it has become mostly empty.
        let len = shard.len - 1;
        let fit = len * 16 / (SLOTS * GROW_TO) + 1;
        let buckets = if fit * 2 < shard.buckets.len() {
            fit
        } else {
            shard.buckets.len()
        };
        rebuild(shard, buckets, Some(key), &hasher);
        self.len -= 1;
        Some((hot, cold))
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, H, &Option<C>)> {
        self.root
            .iter()
            .flat_map(|g| g.iter())
            .flat_map(|s| s.buckets.iter())
            .flat_map(|b| {
                b.keys
                    .iter()
                    .zip(b.hot.iter().zip(b.cold.iter()))
                    .filter(|(k, _)| **k != 0)
                    .map(|(k, (h, c))| (*k, *h, c))
            })
    }
}

/// Makes `shard` a table of `buckets` buckets with the same entries but
/// `without`. Moves the cold halves when no published version shares the
/// shard, clones them (an `Arc` count each) when one does.
fn rebuild<H: Copy + Default, C: Clone>(
    shard: &mut Shard<H, C>,
    buckets: usize,
    without: Option<u64>,
    hasher: &RandomState,
) {
    let mut fresh: Vec<Bucket<H, C>> = (0..buckets).map(|_| Bucket::empty()).collect();
    let mut len = 0;
    let mut put = |key: u64, hot: H, cold: Option<C>| {
        if key != 0 && Some(key) != without {
            place(&mut fresh, hasher.hash_one(key), key, hot, cold);
            len += 1;
        }
    };
    match Arc::get_mut(&mut shard.buckets) {
        Some(owned) => {
            for bucket in owned.iter_mut() {
                for ((&key, &hot), cold) in
                    bucket.keys.iter().zip(&bucket.hot).zip(&mut bucket.cold)
                {
                    put(key, hot, cold.take());
                }
            }
        }
        None => {
            for bucket in shard.buckets.iter() {
                for ((&key, &hot), cold) in bucket.keys.iter().zip(&bucket.hot).zip(&bucket.cold) {
                    put(key, hot, cold.clone());
                }
            }
        }
    }
    shard.buckets = fresh.into();
    shard.len = len;
}

/// Credential key → entry: packed keys in a [`FlatMap`], the rest in a
/// [`ShardedMap`].
pub(crate) struct CredMap<H, C> {
    packed: FlatMap<H, C>,
    other: ShardedMap<CredentialKey, (H, Option<C>), RandomState>,
}

impl<H, C> Clone for CredMap<H, C> {
    fn clone(&self) -> Self {
        Self {
            packed: self.packed.clone(),
            other: self.other.clone(),
        }
    }
}

impl<H: Copy + Default, C: Clone> CredMap<H, C> {
    pub(crate) fn new() -> Self {
        Self {
            packed: FlatMap::new(),
            other: ShardedMap::with_hasher(RandomState::default()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.packed.len() + self.other.len()
    }

    #[inline]
    pub(crate) fn get(&self, key: &CredentialKey) -> Option<(H, &Option<C>)> {
        match key.pack() {
            Some(packed) => self.packed.get(packed),
            None if self.other.len() == 0 => None,
            None => self.other.get(key).map(|(h, c)| (*h, c)),
        }
    }

    /// [`FlatMap::touch`] for a credential key (0 for a key that does not
    /// pack: those are rare and looked up in the other map).
    #[inline]
    pub(crate) fn touch(&self, key: &CredentialKey) -> u64 {
        key.pack().map_or(0, |packed| self.packed.touch(packed))
    }

    pub(crate) fn insert(&mut self, key: CredentialKey, hot: H, cold: C) -> Option<(H, Option<C>)> {
        match key.pack() {
            Some(packed) => self.packed.insert(packed, hot, cold),
            None => self.other.insert(key, (hot, Some(cold))),
        }
    }

    pub(crate) fn update(
        &mut self,
        key: &CredentialKey,
        f: impl FnOnce(&mut H, &mut Option<C>),
    ) -> bool {
        match key.pack() {
            Some(packed) => self.packed.update(packed, f),
            None => self.other.update(key, |(h, c)| f(h, c)),
        }
    }

    pub(crate) fn remove(&mut self, key: &CredentialKey) -> Option<(H, Option<C>)> {
        match key.pack() {
            Some(packed) => self.packed.remove(packed),
            None => self.other.remove(key),
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (CredentialKey, H, &Option<C>)> {
        let packed = self
            .packed
            .iter()
            .filter_map(|(k, h, c)| Some((CredentialKey::unpack(k)?, h, c)));
        let other = self.other.iter().map(|(k, (h, c))| (*k, *h, c));
        packed.chain(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{CardFormat, Uid};
    use std::collections::HashMap;

    type Map = CredMap<u64, Arc<u64>>;

    fn key(i: u64) -> CredentialKey {
        match i % 3 {
            0 => CredentialKey::card(CardFormat::CORP1000_48, 7, i),
            // Does not pack: a number too large for an unknown format.
            1 => CredentialKey::card(CardFormat(900), 1, u64::MAX - i),
            _ => CredentialKey::Uid(Uid::new(&i.to_le_bytes()[..7]).unwrap()),
        }
    }

    fn get(map: &Map, k: &CredentialKey) -> Option<(u64, u64)> {
        map.get(k).map(|(h, c)| (h, **c.as_ref().unwrap()))
    }

    /// A touch reads the bucket a lookup of the key starts at: for a key
    /// in the map that bucket is never empty (the key is there, or the
    /// bucket was full when the key went further), so the word read is a
    /// key; in an empty map, or for a key that does not pack, it is 0.
    #[test]
    fn a_touch_reads_the_bucket_a_lookup_starts_at() {
        let mut map = Map::new();
        assert_eq!(map.touch(&key(0)), 0);
        for i in 0..20_000u64 {
            map.insert(key(i), i, Arc::new(i));
        }
        let packed = (0..20_000u64).map(key).filter(|k| k.pack().is_some());
        let mut checked = 0;
        for k in packed {
            let first = map.touch(&k);
            assert_ne!(first, 0, "{k:?}");
            assert!(CredentialKey::unpack(first).is_some(), "{first:#x}");
            checked += 1;
        }
        assert!(checked > 10_000, "{checked}");
        assert_eq!(map.touch(&key(1)), 0, "does not pack");
    }

    #[test]
    fn behaves_like_a_map_and_clones_are_independent() {
        let mut map = Map::new();
        let mut model = HashMap::new();
        for i in 0..20_000u64 {
            let old = map.insert(key(i), i, Arc::new(i * 2));
            assert!(old.is_none());
            model.insert(key(i), (i, i * 2));
        }
        let frozen = map.clone();
        for i in (0..20_000u64).step_by(3) {
            let old = map.remove(&key(i)).map(|(h, c)| (h, *c.unwrap()));
            assert_eq!(old, model.remove(&key(i)));
        }
        for i in (1..20_000u64).step_by(7) {
            let changed = map.update(&key(i), |h, c| {
                *h += 1;
                *c = Some(Arc::new(5));
            });
            if let Some(v) = model.get_mut(&key(i)) {
                assert!(changed);
                *v = (v.0 + 1, 5);
            } else {
                assert!(!changed);
            }
        }
        assert_eq!(map.insert(key(1), 9, Arc::new(9)).map(|(h, _)| h), Some(2));
        model.insert(key(1), (9, 9));
        assert_eq!(map.remove(&key(0)).map(|(h, _)| h), None);
        assert_eq!(map.len(), model.len());
        for i in 0..25_000u64 {
            assert_eq!(get(&map, &key(i)), model.get(&key(i)).copied(), "{i}");
            let expected = (i < 20_000).then_some((i, i * 2));
            assert_eq!(get(&frozen, &key(i)), expected, "clone changed at {i}");
        }
        assert_eq!(frozen.len(), 20_000);
        let mut seen: Vec<_> = map.iter().map(|(k, h, _)| (k, h)).collect();
        seen.sort();
        let mut expected: Vec<_> = model.iter().map(|(k, v)| (*k, v.0)).collect();
        expected.sort();
        assert_eq!(seen, expected);
        // Removing everything empties every shard.
        for i in 0..20_000u64 {
            map.remove(&key(i));
        }
        assert_eq!(map.len(), 0);
        assert_eq!(map.iter().count(), 0);
        assert_eq!(frozen.iter().count(), 20_000);
    }

    #[test]
    fn a_bucket_is_two_cache_lines() {
        assert_eq!(std::mem::size_of::<Bucket<u64, Arc<u64>>>(), 128);
        assert_eq!(std::mem::align_of::<Bucket<u64, Arc<u64>>>(), 64);
    }
}
