//! A persistent hash map: cheap to clone, cheap to change one entry of.
//!
//! The credential table (`credmap`) keeps its own buckets in the same tree
//! of groups and shards, and this map for the few keys that do not pack
//! into an integer.
//!
//! The map is a two-level tree of 64 groups × 78 shards, each a hash table
//! behind an `Arc`. Cloning the map copies one pointer. Changing one entry
//! copies the path to it: the root (64 pointers), one group (78 pointers)
//! and one shard (about n / 4992 entries), so a change at a million entries
//! copies a couple of hundred entries instead of the world, while a lookup
//! stays one hash and three pointer hops.
//!
//! Why 78 and not a power of two: hash tables grow by doubling once 7/8
//! full, and at a million entries every power-of-two shard count leaves
//! each table just past that point, half empty. 4,992 shards put a million
//! entries at ~200 a shard, 78 % of a 256-bucket table.
//!
//! The shard is chosen from hash bits 32..57, which hashbrown uses for
//! neither the bucket index (low bits) nor the control tag (top 7 bits), so
//! every shard's table still sees well-spread hashes.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use hashbrown::HashTable;

const GROUP_BITS: u32 = 6;
pub(crate) const GROUPS: usize = 1 << GROUP_BITS;
pub(crate) const SHARDS_PER_GROUP: usize = 78;
const SHARD_SHIFT: u32 = 32;
/// Hash bits 32..57: below hashbrown's 7-bit tag.
const SLOT_BITS: u32 = 25;

type Shard<K, V> = Arc<HashTable<(K, V)>>;
// Slices inside the `Arc` allocation, not `Arc<Vec<_>>`: one pointer hop
// less on every lookup.
type Group<K, V> = Arc<[Shard<K, V>]>;

/// See the module docs.
pub(crate) struct ShardedMap<K, V, S> {
    root: Arc<[Group<K, V>]>,
    len: usize,
    hasher: S,
}

impl<K, V, S: Clone> Clone for ShardedMap<K, V, S> {
    fn clone(&self) -> Self {
        Self {
            root: Arc::clone(&self.root),
            len: self.len,
            hasher: self.hasher.clone(),
        }
    }
}

/// The (group, shard) of `hash`; shared with the credential table.
#[inline]
pub(crate) fn slot(hash: u64) -> (usize, usize) {
    let bits = (hash >> SHARD_SHIFT) & ((1 << SLOT_BITS) - 1);
    let group = (bits as usize) & (GROUPS - 1);
    // Multiply-shift maps the remaining 19 bits evenly onto 0..78.
    let rest = bits >> GROUP_BITS;
    let shard = (rest * SHARDS_PER_GROUP as u64) >> (SLOT_BITS - GROUP_BITS);
    (group, shard as usize)
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher> ShardedMap<K, V, S> {
    pub(crate) fn with_hasher(hasher: S) -> Self {
        let group: Group<K, V> = (0..SHARDS_PER_GROUP).map(|_| Arc::default()).collect();
        Self {
            root: (0..GROUPS).map(|_| Arc::clone(&group)).collect(),
            len: 0,
            hasher,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        let hash = self.hasher.hash_one(key);
        let (g, s) = slot(hash);
        let shard = self.root.get(g)?.get(s)?;
        shard.find(hash, |(k, _)| k == key).map(|(_, v)| v)
    }

    /// The table that holds `hash`, copied first if it is shared with a
    /// published snapshot.
    fn shard_mut(&mut self, hash: u64) -> Option<&mut HashTable<(K, V)>> {
        shard_mut(&mut self.root, hash)
    }

    /// Inserts or replaces; returns the old value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = self.hasher.hash_one(&key);
        let hasher = &self.hasher;
        let shard = shard_mut(&mut self.root, hash)?;
        match shard.find_mut(hash, |(k, _)| *k == key) {
            Some(entry) => Some(std::mem::replace(&mut entry.1, value)),
            None => {
                shard.insert_unique(hash, (key, value), |(k, _)| hasher.hash_one(k));
                self.len += 1;
                None
            }
        }
    }

    /// Changes the value under `key` in place, if there is one.
    pub(crate) fn update(&mut self, key: &K, f: impl FnOnce(&mut V)) -> bool {
        let hash = self.hasher.hash_one(key);
        if self.get(key).is_none() {
            return false;
        }
        let Some(shard) = self.shard_mut(hash) else {
            return false;
        };
        match shard.find_mut(hash, |(k, _)| k == key) {
            Some(entry) => {
                f(&mut entry.1);
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        // Look before copying, so removing a missing key copies nothing.
        self.get(key)?;
        let shard = self.shard_mut(hash)?;
        let (_, value) = shard.find_entry(hash, |(k, _)| k == key).ok()?.remove().0;
        self.len -= 1;
        Some(value)
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.root
            .iter()
            .flat_map(|g| g.iter())
            .flat_map(|s| s.iter())
            .map(|(k, v)| (k, v))
    }
}

fn shard_mut<K: Clone, V: Clone>(
    root: &mut Arc<[Group<K, V>]>,
    hash: u64,
) -> Option<&mut HashTable<(K, V)>> {
    let (g, s) = slot(hash);
    let group = Arc::make_mut(root).get_mut(g)?;
    let shard = Arc::make_mut(group).get_mut(s)?;
    Some(Arc::make_mut(shard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn every_hash_lands_in_a_shard() {
        for hash in [0, u64::MAX, 1 << 32, (1 << 57) - 1, 0xdead_beef_cafe_f00d] {
            let (g, s) = slot(hash);
            assert!(g < GROUPS && s < SHARDS_PER_GROUP, "{hash:x} -> {g} {s}");
        }
        assert_eq!(slot(u64::MAX), (GROUPS - 1, SHARDS_PER_GROUP - 1));
    }

    type Map = ShardedMap<u64, u64, foldhash::fast::FixedState>;

    #[test]
    fn behaves_like_a_map_and_clones_are_independent() {
        let mut map = Map::with_hasher(Default::default());
        let mut model = HashMap::new();
        for i in 0..5000u64 {
            assert_eq!(map.insert(i, i * 2), model.insert(i, i * 2));
        }
        let frozen = map.clone();
        for i in (0..5000u64).step_by(3) {
            assert_eq!(map.remove(&i), model.remove(&i));
        }
        assert!(map.update(&1, |v| *v = 7));
        model.insert(1, 7);
        assert!(!map.update(&3, |v| *v = 7));
        assert_eq!(map.remove(&3), None);
        assert_eq!(map.len(), model.len());
        for i in 0..5000u64 {
            assert_eq!(map.get(&i), model.get(&i));
            assert_eq!(frozen.get(&i), Some(&(i * 2)), "clone changed at {i}");
        }
        assert_eq!(frozen.len(), 5000);
        assert_eq!(map.iter().count(), model.len());
    }
}
