//! Where a document lives: every worker rank scores its path (rendezvous
//! hashing), and the highest scores keep it. All ranks compute the same
//! answer without asking each other, and adding a rank moves only the
//! documents the new rank now wins (about one in `workers + 1`).

use crate::hash::rendezvous_score;

/// Every worker in `workers`, ordered for `path`: the first `replicas` keep
/// it, and the ones after them stand in, in turn, for any that are down
/// (the "next rank in the ring" of that document).
pub fn ranking(path: &[u8], workers: &[usize]) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = workers
        .iter()
        .map(|&rank| (rendezvous_score(path, rank as u64, 1), rank))
        .collect();
    // Highest first; equal scores (never seen in practice) by rank.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, rank)| rank).collect()
}

/// The ranks that keep `path`: its first `replicas` in `ranking`, or every
/// worker when there are fewer.
pub fn replicas(path: &[u8], workers: &[usize], replicas: usize) -> Vec<usize> {
    let mut ranks = ranking(path, workers);
    ranks.truncate(replicas);
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn paths(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("/store/doc-{i}.txt")).collect()
    }

    #[test]
    fn replicas_are_distinct_stable_and_spread() {
        let workers = [1, 2, 3, 4];
        let mut load: HashMap<usize, usize> = HashMap::new();
        for p in paths(4000) {
            let r = replicas(p.as_bytes(), &workers, 2);
            assert_eq!(r.len(), 2);
            assert_ne!(r[0], r[1]);
            assert_eq!(
                r,
                replicas(p.as_bytes(), &[4, 3, 2, 1], 2),
                "order of the list"
            );
            for rank in r {
                *load.entry(rank).or_default() += 1;
            }
        }
        // 8000 copies over 4 ranks: about 2000 each.
        for (rank, n) in &load {
            assert!((1700..2300).contains(n), "rank {rank}: {n}");
        }
        assert_eq!(replicas(b"/x", &[1], 2), [1], "fewer workers than replicas");
        assert!(replicas(b"/x", &[], 2).is_empty());
    }

    #[test]
    fn a_new_rank_moves_few_documents_and_a_lost_one_only_its_own() {
        let before = [1, 2, 3, 4];
        let after = [1, 2, 3, 4, 5];
        let docs = paths(4000);
        let mut moved = 0;
        for p in &docs {
            let (a, b) = (
                replicas(p.as_bytes(), &before, 2),
                replicas(p.as_bytes(), &after, 2),
            );
            moved += a.iter().filter(|r| !b.contains(r)).count();
            // Whatever stays keeps its place: only rank 5 comes in.
            assert!(
                b.iter().all(|r| *r == 5 || a.contains(r)),
                "{p}: {a:?} -> {b:?}"
            );
        }
        // Rank 5 enters the top two of 2/5 of the 4000 documents, taking
        // one copy of each: 1600 of 8000 copies move, the least possible.
        assert!((1400..1800).contains(&moved), "{moved} copies moved");

        // Rank 3 down: the stand-in is the next in its ranking.
        for p in &docs {
            let full = ranking(p.as_bytes(), &before);
            let without: Vec<usize> = before.iter().copied().filter(|&r| r != 3).collect();
            let expected: Vec<usize> = full.iter().copied().filter(|&r| r != 3).take(2).collect();
            assert_eq!(replicas(p.as_bytes(), &without, 2), expected, "{p}");
        }
    }
}
