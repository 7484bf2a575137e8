//! The one hash of placement decisions: FNV-1a over the bytes, then
//! splitmix64's finaliser (FNV alone spreads its low bits poorly). It is
//! the same on every run and every machine, as it must be when ranks on
//! different hosts each work out where something belongs.

/// The 64-bit hash of `parts`, one after the other.
pub fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in parts.iter().flat_map(|p| p.iter()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Weighted rendezvous (highest random weight) hashing: the score of `key`
/// on `member`. Each key goes to the member that scores highest, so when a
/// member comes or goes only its own keys move.
pub fn rendezvous_score(key: &[u8], member: u64, weight: u64) -> f64 {
    let h = hash64(&[key, &member.to_le_bytes()]);
    // u in (0, 1); -w / ln(u) spreads keys in proportion to the weights.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight as f64 / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_split_insensitive() {
        // A fixed value: a change here moves every stored document.
        assert_eq!(hash64(&[b"/store/a"]), 0x46a4_701d_1453_1da9);
        assert_eq!(hash64(&[b"/store/a"]), hash64(&[b"/store/", b"a"]));
        assert_eq!(hash64(&[]), hash64(&[b""]));
        assert_ne!(hash64(&[b"a"]), hash64(&[b"b"]));
        let score = rendezvous_score(b"key", 1, 1);
        assert!(score > 0.0 && score.is_finite());
        assert!(rendezvous_score(b"key", 1, 2) == 2.0 * score);
    }
}
