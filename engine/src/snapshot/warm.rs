//! Serving before the credential table exists: a snapshot whose
//! credentials are read in place from a [`CredentialStore`] (a
//! memory-mapped checkpoint) while the builder is rebuilt behind it.
//!
//! Rebuilding a million holders' entries takes seconds (allocations and
//! hash-table inserts, see `docs/benchmarks.md`); opening a checkpoint
//! takes milliseconds. A warm snapshot has the topology (thousands of rows,
//! built at once) and an empty credential table; a credential it does not
//! find there is looked up in the store, compiled exactly as the builder
//! would compile it (the same validation, the same entry), and kept, so
//! the second decision on a card costs what it does on a built snapshot.
//! Once the builder is rebuilt, its own snapshot of the same data replaces
//! the warm one.

use std::sync::{Arc, OnceLock};

use hashbrown::HashMap;

use super::export::compile_bundle;
use super::holder::{Cold, Cred, Hot, cred_entry};
use super::topology::Topology;
use super::{FixedState, HolderBundle};
use crate::credential::CredentialKey;

/// Credentials stored outside the engine, found by key without building
/// anything: what a warm snapshot reads (see [`Snapshot::warm`]).
///
/// Credentials are numbered `0..len()`; the engine keeps what it compiled
/// for a number, so `bundle` is asked once per credential.
///
/// [`Snapshot::warm`]: super::Snapshot::warm
pub trait CredentialStore: Send + Sync {
    /// How many credentials the store holds.
    fn len(&self) -> usize;

    /// Whether the store holds no credential.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `candidate` with the number of every credential that may be
    /// stored under `key` (a hash match: the engine checks the key), until
    /// it returns `true`.
    fn candidates(&self, key: &CredentialKey, candidate: &mut dyn FnMut(usize) -> bool);

    /// The bundle of the holder of credential `number`, and the position
    /// of that credential in the bundle's credentials. `None` when the
    /// stored data cannot be read (the credential is then unknown: a deny).
    fn bundle(&self, number: usize) -> Option<(HolderBundle, usize)>;
}

/// A compiled credential of the store.
struct Entry {
    key: CredentialKey,
    hot: Hot,
    cold: Option<Cold>,
}

/// The store of a warm snapshot and what was compiled from it so far.
pub(crate) struct Warm {
    store: Arc<dyn CredentialStore>,
    /// Level numbers of the snapshot's topology, by level id.
    levels: HashMap<Arc<str>, u32, FixedState>,
    /// By credential number, in chunks of `CHUNK` made on first use (a
    /// start does not wait for a million empty slots to be written):
    /// `Some(None)` for a number whose data could not be read or was
    /// refused (a deny).
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
}

type Slot = OnceLock<Option<Box<Entry>>>;

/// Credential numbers per chunk of compiled entries.
const CHUNK: usize = 1024;

impl Warm {
    pub(super) fn new(store: Arc<dyn CredentialStore>, topology: &Topology) -> Self {
        let levels = topology
            .names
            .levels()
            .enumerate()
            .filter_map(|(n, id)| Some((Arc::clone(id?), u32::try_from(n).ok()?)))
            .collect();
        let chunks = std::iter::repeat_with(OnceLock::new)
            .take(store.len().div_ceil(CHUNK))
            .collect();
        Self {
            store,
            levels,
            chunks,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.store.len()
    }

    /// The credential under `key`, compiled on first use.
    pub(super) fn cred(&self, key: &CredentialKey) -> Option<Cred<'_>> {
        let mut found = None;
        self.store.candidates(key, &mut |number| {
            let Some(slot) = self.slot(number) else {
                return false;
            };
            let entry = slot.get_or_init(|| self.compile(number));
            match entry.as_deref() {
                Some(e) if e.key == *key => {
                    found = Some(Cred::new((e.hot, &e.cold)));
                    true
                }
                _ => false,
            }
        });
        found
    }

    fn slot(&self, number: usize) -> Option<&Slot> {
        let chunk = self
            .chunks
            .get(number / CHUNK)?
            .get_or_init(|| std::iter::repeat_with(OnceLock::new).take(CHUNK).collect());
        chunk.get(number % CHUNK)
    }

    fn compile(&self, number: usize) -> Option<Box<Entry>> {
        let (bundle, position) = self.store.bundle(number)?;
        let key = bundle.credentials.get(position)?.card;
        // A level this topology does not know gets a number no level has:
        // it never grants, as on a built snapshot.
        let level = |id: &str| self.levels.get(id).copied().unwrap_or(u32::MAX);
        let (holder, credentials) = compile_bundle(bundle, level, &mut Vec::new())?;
        let record = credentials.into_iter().find(|c| c.card == key)?;
        let (hot, cold) = cred_entry(record, holder);
        Some(Box::new(Entry {
            key,
            hot,
            cold: Some(cold),
        }))
    }
}
