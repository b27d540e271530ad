//! The immutable snapshot and the builder that makes new versions of it.
//!
//! A [`Snapshot`] has two parts with different update strategies:
//!
//! ```text
//!   Snapshot ─┬─ Arc<Topology>   sites, doors, readers, areas, schedules,
//!             │                  holidays, door groups, access levels:
//!             │                  thousands of rows, rebuilt whole on change
//!             └─ CredMap         credential key → credential entry (a hot
//!                                half inline in the table, a cold half with
//!                                an Arc of its holder: status, validity,
//!                                level assignments): millions of rows,
//!                                changed one entry at a time by path copying
//! ```
//!
//! INVARIANT(holder-arc): every credential entry's holder `Arc` is the
//! current entry of that holder in the builder. The builder keeps a reverse
//! index (holder → credential keys) and replaces the `Arc` in every
//! credential of a holder whenever the holder or one of its assignments
//! changes.
//!
//! INVARIANT(topology-indices): door, site, area and schedule indices inside
//! a [`Topology`] refer to that same topology; they are never kept across
//! rebuilds.
//!
//! Here are the [`Snapshot`] and what it answers; the topology's entries
//! and their build are in `topology`, the holder and credential entries in
//! `holder`, the [`SnapshotBuilder`] in `builder`.

use std::sync::Arc;

use jiff::Timestamp;

use crate::credential::CredentialKey;
use crate::credmap::CredMap;
use crate::decision::Request;
pub use crate::validate::ApplyError;

mod builder;
mod export;
mod holder;
mod lookup;
mod names;
mod shared;
mod short;
mod topology;
mod warm;

pub use builder::SnapshotBuilder;
pub use export::HolderBundle;
pub(crate) use holder::{AssignmentEntry, HolderEntry, Within};
use holder::{Cold, Cred, Hot};
pub use lookup::{CredentialView, HolderView, LevelView, ReaderView};
pub use shared::{SharedSnapshot, SnapshotGuard};
use topology::Topology;
pub use warm::CredentialStore;
use warm::Warm;

type FixedState = foldhash::fast::FixedState;

/// The credential count from which [`Snapshot::prefetch`] does anything:
/// below it the table fits in the processor's caches (measured: at 100,000
/// credentials a batch decided the same with or without it; at 1,000 the
/// second hash cost 15 %; at 1,000,000 it saved 8–10 %).
pub const PREFETCH_FROM: usize = 250_000;

/// An immutable, versioned view of all the data, made by a
/// [`SnapshotBuilder`] and read by [`decide`](crate::decide).
///
/// Cloning is cheap (a few `Arc`s); snapshots share unchanged data.
#[derive(Clone)]
pub struct Snapshot {
    version: u64,
    as_of: Timestamp,
    pub(crate) topology: Arc<Topology>,
    pub(crate) creds: CredMap<Hot, Cold>,
    /// Credentials read in place while the builder is rebuilt (see
    /// [`Snapshot::warm`]); `None` on every snapshot a builder publishes.
    warm: Option<Arc<Warm>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("as_of", &self.as_of)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counts of what a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotStats {
    /// Credentials.
    pub credentials: usize,
    /// Readers that resolve to a door.
    pub readers: usize,
    /// Doors that resolve to a site.
    pub doors: usize,
    /// Access levels that resolve to a schedule.
    pub access_levels: usize,
    /// References that did not resolve (see [`Snapshot::problems`]).
    pub problems: usize,
}

impl Snapshot {
    /// A snapshot with no data, version 0: every decision is a deny.
    pub fn empty(as_of: Timestamp) -> Self {
        Self {
            version: 0,
            as_of,
            topology: Arc::default(),
            creds: CredMap::new(),
            warm: None,
        }
    }

    /// This snapshot, also serving every credential of `store` that its
    /// own table lacks: what a process serves from a memory-mapped
    /// checkpoint while its builder is rebuilt. Meant for a snapshot
    /// published from the small tables only; a store's credential is
    /// compiled on first use exactly as the builder compiles it, against
    /// this snapshot's topology.
    pub fn warm(mut self, store: Arc<dyn CredentialStore>) -> Self {
        self.warm = Some(Arc::new(Warm::new(store, &self.topology)));
        self
    }

    /// Whether this snapshot reads its credentials from a store (see
    /// [`warm`](Self::warm)). Such a snapshot answers decisions and
    /// lookups by card, not lookups by cardholder id.
    pub fn is_warm(&self) -> bool {
        self.warm.is_some()
    }

    /// The version; a builder's versions only go up.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The instant the data was known to be current, as given by the
    /// publisher; `now - as_of` is the snapshot's age.
    pub fn as_of(&self) -> Timestamp {
        self.as_of
    }

    /// What the snapshot holds.
    pub fn stats(&self) -> SnapshotStats {
        let t = &self.topology;
        SnapshotStats {
            credentials: self.creds.len() + self.warm.as_ref().map_or(0, |w| w.len()),
            readers: t.readers.len(),
            doors: t.doors.len(),
            access_levels: t.levels.iter().flatten().count(),
            problems: t.problems.len(),
        }
    }

    /// References between sites, doors, readers, areas, schedules, holiday
    /// sets, door groups and levels that did not resolve. Each one can only
    /// make something deny, never grant.
    pub fn problems(&self) -> &[String] {
        &self.topology.problems
    }

    /// Whether a credential with this key exists.
    pub fn has_credential(&self, key: &CredentialKey) -> bool {
        self.cred(key).is_some()
    }

    /// Starts the cache misses of the credential lookups of `requests`
    /// together, before they are decided one by one. At a million
    /// credentials each lookup misses the cache once (the credential's
    /// bucket); a batch (a `BATCH_REQUEST`) would pay those misses one
    /// after the other, where this loop of independent loads overlaps
    /// them. Changes nothing: the decisions are the same without it. Below
    /// [`PREFETCH_FROM`] credentials the table sits in the cache and this
    /// does nothing, since it would only cost a second hash per request.
    ///
    /// Only the buckets: also touching the readers' entries and the
    /// holders' entries was measured slower (it repeats the lookups'
    /// work, branches and all, for misses that are rarer).
    pub fn prefetch(&self, requests: &[Request<'_>]) {
        if self.creds.len() < PREFETCH_FROM {
            return;
        }
        let mut seen = 0u64;
        for request in requests {
            seen ^= self.creds.touch(&request.credential);
        }
        std::hint::black_box(seen);
    }

    /// The credential under `key`.
    #[inline]
    pub(crate) fn cred(&self, key: &CredentialKey) -> Option<Cred<'_>> {
        match self.creds.get(key) {
            Some(entry) => Some(Cred::new(entry)),
            None => self.warm.as_deref()?.cred(key),
        }
    }

    /// Every credential, in no particular order.
    pub(crate) fn creds(&self) -> impl Iterator<Item = (CredentialKey, Cred<'_>)> {
        self.creds.iter().map(|(k, h, c)| (k, Cred::new((h, c))))
    }

    /// Every credential key, in no particular order (for load generators
    /// and exports).
    pub fn credential_keys(&self) -> impl Iterator<Item = CredentialKey> + '_ {
        self.creds.iter().map(|(k, _, _)| k)
    }

    /// Every reader id, in no particular order.
    pub fn reader_ids(&self) -> impl Iterator<Item = &str> {
        self.topology.readers.iter().map(|(id, _)| id)
    }

    /// Who and where a request is about, for its access event: the
    /// reader's door and site, the credential's cardholder. Each is `None`
    /// when this snapshot does not know it (an unknown reader or card).
    pub fn subject(&self, reader: &str, credential: &CredentialKey) -> Subject<'_> {
        let t = &*self.topology;
        let door = t.readers.get(reader).and_then(|r| t.doors.get(r.door));
        Subject {
            door: door.map(|d| &*d.id),
            site: door.and_then(|d| t.sites.get(d.site)).map(|s| &*s.id),
            holder: self
                .cred(credential)
                .and_then(|c| c.holder())
                .map(HolderEntry::id),
        }
    }
}

/// Where and who a request is about (see [`Snapshot::subject`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The door of the reader.
    pub door: Option<&'a str>,
    /// The site of that door.
    pub site: Option<&'a str>,
    /// The cardholder of the credential.
    pub holder: Option<&'a str>,
}
