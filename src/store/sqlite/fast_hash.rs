//! A cheap hasher for the store's hot maps: the writer's maps keyed by run id
//! and the kind dictionary. Std's SipHash was a visible share of the writer
//! thread's instructions (several look-ups per append; BENCHMARKS.md, "Fx
//! hasher for the writer's maps"); a multiply-rotate fold of the key's words
//! (the Fx hash) with a final avalanche (murmur3's `fmix64`) spreads them as
//! well. The avalanche matters: time-ordered ids made in one millisecond
//! share their timestamp and counter bytes, and Fx alone then leaves the low
//! bits, which pick the bucket, nearly constant. The hash is unseeded, so
//! keys can be crafted to collide: run ids are made by troupe (time-ordered
//! v7), but kind names come from `EventKind::custom`; a program that lets
//! untrusted input choose event kind names (rather than a fixed set of its
//! own) lets that input slow the kind dictionary's look-ups down.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use uuid::Uuid;

/// The Fx hash (per 8-byte word: rotate, xor, multiply), then `fmix64`.
#[derive(Default)]
pub(crate) struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(SEED);
        }
    }

    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

type BuildFastHasher = BuildHasherDefault<FastHasher>;

/// A map with the fast hasher.
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildFastHasher>;
/// A map keyed by run id.
pub(crate) type IdMap<V> = FastMap<Uuid, V>;
/// A set of run ids.
pub(crate) type IdSet = HashSet<Uuid, BuildFastHasher>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn time_ordered_ids_spread_over_buckets_and_tags() {
        let build = BuildFastHasher::default();
        let hashes: Vec<u64> = (0..1024).map(|_| build.hash_one(Uuid::now_v7())).collect();
        // hashbrown picks buckets from the low bits and tags from the top 7.
        let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h % 1024).collect();
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        // Uniform hashing fills ~63% of 1024 buckets with 1024 keys.
        assert!(buckets.len() > 550, "only {} buckets used", buckets.len());
        assert!(tags.len() > 110, "only {} tags used", tags.len());
    }
}
