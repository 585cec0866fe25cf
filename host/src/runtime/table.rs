//! The process table: live processes by pid serial, sharded so that
//! lookups on different processes rarely contend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::cell::ProcessCell;

const SHARDS: usize = 64;

/// One shard: live processes by pid serial.
type Shard = Mutex<HashMap<u64, Arc<ProcessCell>>>;

pub(crate) struct ProcessTable {
    shards: Box<[Shard]>,
}

impl ProcessTable {
    pub fn new() -> Self {
        ProcessTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
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
