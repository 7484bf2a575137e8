//! Rank 0's catalog of the store: for every document, its newest version
//! and which ranks hold which version; and the repair plan that brings a
//! document back to its place. Pure: no I/O, no MPI.

use crate::stream::wire::DocMeta;
use std::collections::BTreeMap;

/// What rank 0 knows of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The newest version written (a tombstone if it was deleted).
    pub meta: DocMeta,
    /// Every copy known: the rank and the version it holds.
    pub copies: Vec<(usize, u64)>,
}

impl Entry {
    /// The ranks that hold the newest version.
    pub fn holders(&self) -> impl Iterator<Item = usize> + '_ {
        self.copies
            .iter()
            .filter(|c| c.1 == self.meta.version)
            .map(|c| c.0)
    }
}

/// Every document by path, in path order (for listings).
#[derive(Debug, Default)]
pub struct Catalog {
    docs: BTreeMap<Vec<u8>, Entry>,
}

impl Catalog {
    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.docs.get(path)
    }

    /// Documents (not tombstones) whose path starts with `prefix`.
    pub fn under<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a Entry)> {
        self.docs
            .range(prefix.to_vec()..)
            .take_while(move |(p, _)| p.starts_with(prefix))
            .filter(|(_, e)| !e.meta.deleted)
            .map(|(p, e)| (p.as_slice(), e))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Entry)> {
        self.docs.iter()
    }

    /// Documents that are not tombstones.
    pub fn live_count(&self) -> usize {
        self.docs.values().filter(|e| !e.meta.deleted).count()
    }

    /// The largest version anywhere.
    pub fn max_version(&self) -> u64 {
        self.docs
            .values()
            .map(|e| e.meta.version)
            .max()
            .unwrap_or(0)
    }

    /// `rank` holds `meta.version` of `path` (from its inventory, or it
    /// acknowledged a write). Returns the newest version before, if it was
    /// a document rather than a tombstone or nothing.
    pub fn note_copy(&mut self, rank: usize, path: &[u8], meta: &DocMeta) -> Option<DocMeta> {
        let entry = self.docs.entry(path.to_vec()).or_insert_with(|| Entry {
            meta: DocMeta {
                deleted: true,
                ..meta.clone()
            },
            copies: Vec::new(),
        });
        let before = (!entry.meta.deleted).then(|| entry.meta.clone());
        if meta.version > entry.meta.version || entry.copies.is_empty() {
            entry.meta = meta.clone();
        }
        match entry.copies.iter_mut().find(|c| c.0 == rank) {
            Some(c) => c.1 = c.1.max(meta.version),
            None => entry.copies.push((rank, meta.version)),
        }
        before
    }

    /// A write of `meta` is on `ranks`. Returns the document it replaced.
    pub fn commit(&mut self, path: &[u8], meta: &DocMeta, ranks: &[usize]) -> Option<DocMeta> {
        let mut before = None;
        for (i, &rank) in ranks.iter().enumerate() {
            let b = self.note_copy(rank, path, meta);
            if i == 0 {
                before = b;
            }
        }
        before
    }

    /// `rank` no longer holds `version` of `path`.
    pub fn drop_copy(&mut self, rank: usize, path: &[u8], version: u64) {
        if let Some(e) = self.docs.get_mut(path) {
            e.copies.retain(|c| *c != (rank, version));
        }
    }

    /// Forget every copy on `rank`, before its inventory is read again (its
    /// directory may have been wiped).
    pub fn forget_rank(&mut self, rank: usize) {
        for e in self.docs.values_mut() {
            e.copies.retain(|c| c.0 != rank);
        }
    }
}

/// One step of a repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Copy the newest version from rank `from` to rank `to`.
    Copy { from: usize, to: usize },
    /// Remove the copy of `version` on rank `at`.
    Drop { at: usize, version: u64 },
}

/// What brings one document to its place: the first `n` ranks of its
/// `ranking` that are `placeable` should hold its newest version; only
/// once they all do are the copies elsewhere (stand-ins, stale versions)
/// dropped. Copies come from, and drops go to, `live` ranks only.
pub fn plan(
    entry: &Entry,
    ranking: &[usize],
    placeable: &[usize],
    live: &[usize],
    n: usize,
) -> Vec<Action> {
    let desired: Vec<usize> = ranking
        .iter()
        .copied()
        .filter(|r| placeable.contains(r))
        .take(n)
        .collect();
    let sources: Vec<usize> = entry.holders().filter(|r| live.contains(r)).collect();
    if sources.is_empty() {
        return Vec::new();
    }
    let missing: Vec<usize> = desired
        .iter()
        .copied()
        .filter(|r| !entry.holders().any(|h| h == *r))
        .collect();
    if !missing.is_empty() {
        return missing
            .iter()
            .enumerate()
            .filter(|(_, to)| live.contains(to))
            .map(|(i, &to)| Action::Copy {
                from: sources[i % sources.len()],
                to,
            })
            .collect();
    }
    entry
        .copies
        .iter()
        .filter(|(r, _)| !desired.contains(r) && live.contains(r))
        .map(|&(at, version)| Action::Drop { at, version })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: u64, deleted: bool) -> DocMeta {
        DocMeta {
            version,
            time_ms: 0,
            content_type: String::new(),
            length: 0,
            deleted,
        }
    }

    #[test]
    fn the_newest_version_wins_whatever_the_order() {
        let mut c = Catalog::default();
        assert_eq!(c.commit(b"/a", &meta(5, false), &[1, 2]), None);
        assert_eq!(c.commit(b"/a", &meta(3, false), &[3]), Some(meta(5, false)));
        let e = c.get(b"/a").unwrap();
        assert_eq!(e.meta.version, 5);
        assert_eq!(e.holders().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(e.copies, [(1, 5), (2, 5), (3, 3)]);
        // A tombstone: the next write creates again.
        c.commit(b"/a", &meta(9, true), &[1, 2]);
        assert_eq!(c.commit(b"/a", &meta(11, false), &[1, 2]), None);
        assert_eq!(c.live_count(), 1);
        assert_eq!(c.max_version(), 11);
        c.drop_copy(3, b"/a", 3);
        c.forget_rank(1);
        assert_eq!(c.get(b"/a").unwrap().copies, [(2, 11)]);
    }

    #[test]
    fn an_inventory_alone_builds_the_entry() {
        let mut c = Catalog::default();
        c.note_copy(2, b"/old", &meta(4, false));
        c.note_copy(1, b"/old", &meta(7, true));
        let e = c.get(b"/old").unwrap();
        assert_eq!((e.meta.version, e.meta.deleted), (7, true));
        assert_eq!(c.live_count(), 0);
        c.note_copy(1, b"/s/x", &meta(1, false));
        c.note_copy(1, b"/s/y", &meta(1, false));
        c.note_copy(1, b"/t", &meta(1, false));
        let under: Vec<&[u8]> = c.under(b"/s/").map(|(p, _)| p).collect();
        assert_eq!(under, [&b"/s/x"[..], b"/s/y"]);
    }

    #[test]
    fn repair_plans() {
        let entry = |copies: &[(usize, u64)]| Entry {
            meta: meta(9, false),
            copies: copies.to_vec(),
        };
        let ranking = [2, 3, 1];
        let all = [1, 2, 3];
        use Action::*;
        // What, the entry, placeable ranks, live ranks, the plan.
        type Case<'a> = (&'a str, Entry, &'a [usize], &'a [usize], Vec<Action>);
        let cases: Vec<Case> = vec![
            ("settled", entry(&[(2, 9), (3, 9)]), &all, &all, vec![]),
            (
                "wiped rank 3",
                entry(&[(2, 9)]),
                &all,
                &all,
                vec![Copy { from: 2, to: 3 }],
            ),
            (
                "stale copy on a home rank is overwritten",
                entry(&[(2, 9), (3, 4)]),
                &all,
                &all,
                vec![Copy { from: 2, to: 3 }],
            ),
            (
                "home rank back: copy to it, stand-in kept for now",
                entry(&[(2, 9), (1, 9)]),
                &all,
                &all,
                vec![Copy { from: 2, to: 3 }],
            ),
            (
                "handed back: stand-in dropped",
                entry(&[(2, 9), (3, 9), (1, 9)]),
                &all,
                &all,
                vec![Drop { at: 1, version: 9 }],
            ),
            (
                "a stale copy elsewhere is dropped",
                entry(&[(2, 9), (3, 9), (1, 2)]),
                &all,
                &all,
                vec![Drop { at: 1, version: 2 }],
            ),
            (
                "home rank stalled but placeable: wait for it",
                entry(&[(2, 9), (1, 9)]),
                &all,
                &[1, 2],
                vec![],
            ),
            (
                "home rank gone for good: the stand-in is home",
                entry(&[(2, 9), (1, 9)]),
                &[1, 2],
                &[1, 2],
                vec![],
            ),
            ("no live source", entry(&[(3, 9)]), &all, &[1, 2], vec![]),
        ];
        for (what, e, placeable, live, want) in cases {
            assert_eq!(plan(&e, &ranking, placeable, live, 2), want, "{what}");
        }
    }
}
