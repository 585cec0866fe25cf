//! The process table: live processes by pid serial, sharded so that
//! lookups on different processes rarely contend.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use super::cell::ProcessCell;

const SHARDS: usize = 64;

/// One shard: live processes by pid serial.
type Shard = Mutex<HashMap<u64, Arc<ProcessCell>, BuildHasherDefault<SerialHasher>>>;

/// Hashes a pid serial within its shard. Every local send looks its
/// receiver up here, and the default SipHash cost more than the rest of
/// the lookup. Serials are the node's own, unique and mostly consecutive
/// (nobody outside chooses them), and a shard's all end in the same bits:
/// those are dropped and the rest spread by one multiplication (Fibonacci
/// hashing), which keeps consecutive serials in distinct buckets and fills
/// the top bits the map's probe tags come from.
#[derive(Default)]
pub(crate) struct SerialHasher(u64);

/// 2^64 / φ, odd.
const FIBONACCI: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for SerialHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, serial: u64) {
        self.0 = (serial >> SHARDS.trailing_zeros()).wrapping_mul(FIBONACCI);
    }

    /// Only serials are hashed (`write_u64`); any other key still hashes
    /// every byte.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(FIBONACCI);
        }
    }
}

pub(crate) struct ProcessTable {
    shards: Box<[Shard]>,
}

impl ProcessTable {
    pub fn new() -> Self {
        ProcessTable {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, serial: u64) -> &Shard {
        &self.shards[serial as usize % SHARDS]
    }

    pub fn insert(&self, cell: Arc<ProcessCell>) {
        let serial = cell.pid.serial;
        self.shard(serial)
            .lock()
            .expect("process table poisoned")
            .insert(serial, cell);
    }

    pub fn get(&self, serial: u64) -> Option<Arc<ProcessCell>> {
        self.shard(serial)
            .lock()
            .expect("process table poisoned")
            .get(&serial)
            .cloned()
    }

    pub fn remove(&self, serial: u64) {
        self.shard(serial)
            .lock()
            .expect("process table poisoned")
            .remove(&serial);
    }

    /// Call `f` on every live process, in no particular order, holding
    /// each shard's lock in turn (no clone of each cell).
    pub fn for_each(&self, mut f: impl FnMut(&ProcessCell)) {
        for shard in self.shards.iter() {
            for cell in shard.lock().expect("process table poisoned").values() {
                f(cell);
            }
        }
    }

    /// Every live process, in no particular order.
    pub fn all(&self) -> Vec<Arc<ProcessCell>> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .expect("process table poisoned")
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::{SHARDS, SerialHasher};

    /// One shard's consecutive serials fill a map's buckets one each, and
    /// their probe tags (the top 7 bits) vary.
    #[test]
    fn one_shards_serials_spread_over_buckets_and_tags() {
        let hasher = BuildHasherDefault::<SerialHasher>::default();
        let n = 4096u64;
        let hashes: Vec<u64> = (0..n)
            .map(|k| hasher.hash_one(k * SHARDS as u64 + 5))
            .collect();
        let buckets: HashSet<u64> = hashes.iter().map(|h| h & (n - 1)).collect();
        assert_eq!(buckets.len() as u64, n);
        let tags: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(tags.len(), 128);
    }
}
