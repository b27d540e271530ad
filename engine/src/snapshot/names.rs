//! The ids behind a topology's indices, for explanations: decisions work on
//! numbers (door, site and schedule indices, level numbers), people read
//! ids. Built with the topology, never read on the decision path.

use std::sync::Arc;

use jiff::Timestamp;

use super::builder::LevelIds;
use super::holder::Validity;

/// Ids by index. INVARIANT(topology-indices): built together with the
/// [`Topology`](super::Topology) that holds it, so its indices are that
/// topology's.
#[derive(Debug, Default)]
pub(crate) struct Names {
    sites: Vec<Arc<str>>,
    doors: Vec<Arc<str>>,
    schedules: Vec<Arc<str>>,
    /// By level number (see `LevelIds`).
    levels: Vec<Option<Arc<str>>>,
}

fn by_index<'a>(pairs: impl Iterator<Item = (&'a str, usize)>) -> Vec<Arc<str>> {
    let mut out: Vec<(usize, Arc<str>)> = pairs.map(|(id, i)| (i, Arc::from(id))).collect();
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, id)| id).collect()
}

impl Names {
    /// The ids of the indices `build_topology` handed out.
    pub(super) fn of<'a>(
        sites: impl Iterator<Item = (&'a str, usize)>,
        doors: impl Iterator<Item = (&'a str, usize)>,
        schedules: impl Iterator<Item = (&'a str, usize)>,
        levels: &LevelIds,
    ) -> Self {
        let mut level_names = vec![None; levels.len()];
        for (name, &n) in &levels.numbers {
            if let Some(slot) = level_names.get_mut(n as usize) {
                *slot = Some(Arc::clone(name));
            }
        }
        Self {
            sites: by_index(sites),
            doors: by_index(doors),
            schedules: by_index(schedules),
            levels: level_names,
        }
    }

    /// The id of site `i`.
    pub(crate) fn site(&self, i: usize) -> &str {
        self.sites.get(i).map_or("?", |s| s)
    }

    /// The id of door `i`.
    pub(crate) fn door(&self, i: usize) -> &str {
        self.doors.get(i).map_or("?", |s| s)
    }

    /// The id of schedule `i`.
    pub(crate) fn schedule(&self, i: usize) -> &str {
        self.schedules.get(i).map_or("?", |s| s)
    }

    /// Level ids by level number; `None` for a number without a level.
    pub(crate) fn levels(&self) -> impl Iterator<Item = Option<&Arc<str>>> {
        self.levels.iter().map(Option::as_ref)
    }

    /// The id of level number `n`.
    pub(crate) fn level(&self, n: u32) -> &str {
        self.levels
            .get(n as usize)
            .and_then(Option::as_deref)
            .unwrap_or("?")
    }
}

impl Validity {
    /// The window's bounds, `None` where it is open.
    pub(crate) fn bounds(self) -> (Option<Timestamp>, Option<Timestamp>) {
        let bound = |ms: i64, open: i64| {
            (ms != open)
                .then(|| Timestamp::from_millisecond(ms).ok())
                .flatten()
        };
        (bound(self.from, i64::MIN), bound(self.until, i64::MAX))
    }
}
