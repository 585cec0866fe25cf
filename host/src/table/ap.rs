//! This node's replica of a conflict-free (AP) table: each key's state
//! ([`Entry`]), the table as reads see it (a replica in [`LocalTables`],
//! changed only here), a digest for anti-entropy, and the entries written
//! here that the other replicas have yet to be sent.
//!
//! A write is made here at once, with no quorum: each key's new state is
//! stamped by this node's hybrid clock (uhlc) and this replica's origin (a
//! random id per start). The other replicas get it by a push right after,
//! and, whatever a push lost (a partition, a restart), by anti-entropy:
//! replicas compare digests (a hash per bucket of keys) and swap the
//! entries of the buckets that differ. Merging is the entries' join
//! ([`super::crdt`]), so replicas that have swapped everything hold the
//! same table.
//!
//! [`LocalTables`]: super::local::LocalTables

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use molt_abi::table::{Abort, Batch, Change, Error, Kind, Op};

use super::crdt::{Entry, Origin, Value, fnv};
use super::disc::{DiscFile, Persist};
use super::local::ReplicaHandle;
use super::state::{Record, op_key};

/// Told once a write on a `disc` replica is durable, or why it could not
/// be.
pub(crate) type Durable = tokio::sync::oneshot::Receiver<Result<(), String>>;

/// Digest buckets: a key's bucket is its hash modulo this.
pub(crate) const BUCKETS: usize = 1024;

/// A round of work with one peer, at most one of each kind at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Round {
    /// Digests compared, differences swapped.
    Digest,
    /// What pushes missed, sent.
    Missed,
}

/// A key and its state, as replicas swap them.
pub(crate) type Keyed = (Vec<u8>, Entry);

struct State {
    /// Each key's state and its hash, by bucket (a round of anti-entropy
    /// reads whole buckets).
    entries: Vec<std::collections::HashMap<Vec<u8>, (Entry, u64)>>,
    /// Keys held.
    len: usize,
    /// Per bucket, the wrapping sum of its entries' hashes.
    buckets: Vec<u64>,
    /// The wrapping sum of every entry's hash.
    total: u64,
}

/// This node's replica of a conflict-free table.
pub(crate) struct ApReplica {
    /// The table.
    pub table: String,
    /// Its id (its creating entry's index in the coordination log).
    pub id: u64,
    /// This replica's origin.
    pub origin: Origin,
    kind: Kind,
    clock: uhlc::HLC,
    handle: ReplicaHandle,
    records_max: u64,
    /// Entries to push, and per peer entries a push missed, at most
    /// (`conflict_free_pending_max`; beyond, anti-entropy brings them).
    pending_max: usize,
    /// How long a deleted key's tombstone is kept.
    tombstone_keep: Duration,
    /// When tombstones were last looked for.
    forgot: Mutex<Instant>,
    state: Mutex<State>,
    /// Entries to push, by key (the newest state of each).
    outbox: Mutex<BTreeMap<Vec<u8>, Entry>>,
    /// Told when the outbox fills.
    pub pushed: tokio::sync::Notify,
    /// When each other replica's node last answered a push or a sync.
    heard: Mutex<BTreeMap<String, Instant>>,
    /// Per other replica's node, entries a push did not deliver.
    backlog: Mutex<BTreeMap<String, BTreeMap<Vec<u8>, Entry>>>,
    /// A `disc` replica's file: each key's entry as a row.
    disc: Mutex<Option<DiscFile>>,
    /// When the last digest round with each peer started.
    rounds: Mutex<BTreeMap<String, Instant>>,
    /// Rounds with peers running now.
    syncing: Mutex<std::collections::BTreeSet<(Round, String)>>,
}

fn bucket(key: &[u8]) -> usize {
    (fnv(&[key]) % BUCKETS as u64) as usize
}

fn hash(key: &[u8], entry: &Entry) -> u64 {
    fnv(&[key, &molt_abi::codec::encode(entry)])
}

/// The ops that take a key's records from `old` to `new` (each a value
/// and its index values, in value order).
fn diff(
    key: &[u8],
    kind: Kind,
    old: &[(Vec<u8>, Vec<Vec<u8>>)],
    new: &[(Vec<u8>, Vec<Vec<u8>>)],
) -> Vec<Op> {
    let put = |(value, index_values): &(Vec<u8>, Vec<Vec<u8>>)| Op::Put {
        key: key.to_vec(),
        value: value.clone(),
        index_values: index_values.clone(),
    };
    if kind.one_per_key() {
        return match (old.first(), new.first()) {
            (_, Some(n)) if old.first() != Some(n) => vec![put(n)],
            (Some(_), None) => vec![Op::Delete { key: key.to_vec() }],
            _ => Vec::new(),
        };
    }
    let mut ops: Vec<Op> = old
        .iter()
        .filter(|(v, _)| !new.iter().any(|(n, _)| n == v))
        .map(|(v, _)| Op::DeleteValue {
            key: key.to_vec(),
            value: v.clone(),
        })
        .collect();
    ops.extend(new.iter().filter(|n| !old.contains(n)).map(put));
    ops
}

impl State {
    /// Put `entry` as `key`'s state: the ops that change its records.
    fn set(&mut self, kind: Kind, key: Vec<u8>, entry: Entry) -> Vec<Op> {
        let at = bucket(&key);
        let new_hash = hash(&key, &entry);
        let new_records = entry.records();
        let (old_hash, old_records) = match self.entries[at].get(&key) {
            Some((old, hash)) => (*hash, old.records()),
            None => (0, Vec::new()),
        };
        self.buckets[at] = self.buckets[at]
            .wrapping_sub(old_hash)
            .wrapping_add(new_hash);
        self.total = self.total.wrapping_sub(old_hash).wrapping_add(new_hash);
        let ops = diff(&key, kind, &old_records, &new_records);
        if self.entries[at].insert(key, (entry, new_hash)).is_none() {
            self.len += 1;
        }
        ops
    }

    fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.entries[bucket(key)].get(key).map(|(e, _)| e)
    }

    /// Forget the tombstones of keys deleted before `horizon` (hybrid
    /// clock time): their keys.
    fn forget_deleted(&mut self, horizon: u64) -> Vec<Vec<u8>> {
        let mut forgotten = Vec::new();
        for (at, bucket) in self.entries.iter_mut().enumerate() {
            bucket.retain(|key, (entry, hash)| {
                if !entry.deleted_before(horizon) {
                    return true;
                }
                self.buckets[at] = self.buckets[at].wrapping_sub(*hash);
                self.total = self.total.wrapping_sub(*hash);
                forgotten.push(key.clone());
                false
            });
        }
        self.len -= forgotten.len();
        forgotten
    }
}

impl ApReplica {
    /// This node's replica of `table` (id `id`), empty, as a new origin;
    /// reads see it through `handle`.
    pub(crate) fn new(
        table: String,
        id: u64,
        origin: Origin,
        handle: ReplicaHandle,
        records_max: u64,
        pending_max: usize,
        tombstone_keep: Duration,
    ) -> ApReplica {
        let kind = handle.schema().kind;
        let clock = uhlc::HLCBuilder::new()
            .with_id(uhlc::ID::try_from(origin.max(1).to_le_bytes()).expect("a non-zero id"))
            .build();
        ApReplica {
            table,
            id,
            origin,
            kind,
            clock,
            handle,
            records_max,
            pending_max,
            tombstone_keep,
            forgot: Mutex::new(Instant::now()),
            state: Mutex::new(State {
                entries: vec![std::collections::HashMap::new(); BUCKETS],
                len: 0,
                buckets: vec![0; BUCKETS],
                total: 0,
            }),
            outbox: Mutex::default(),
            pushed: tokio::sync::Notify::new(),
            heard: Mutex::default(),
            syncing: Mutex::default(),
            rounds: Mutex::default(),
            disc: Mutex::default(),
            backlog: Mutex::default(),
        }
    }

    /// The hybrid-clock time before which a deleted key's tombstone is
    /// forgotten.
    fn horizon(&self) -> u64 {
        let now = self.clock.new_timestamp().get_time().as_u64();
        now.saturating_sub(uhlc::NTP64::from(self.tombstone_keep).as_u64())
    }

    /// Forget the tombstones of keys deleted longer than `tombstone_keep`
    /// ago, if a tenth of that (at least a second) passed since the last
    /// look: how many. Each frees its place under `records_max`.
    pub(crate) fn forget_deleted(&self) -> usize {
        {
            let mut forgot = self.forgot.lock().expect("forgot poisoned");
            let every = (self.tombstone_keep / 10).max(Duration::from_secs(1));
            if forgot.elapsed() < every {
                return 0;
            }
            *forgot = Instant::now();
        }
        self.forget_deleted_before(self.horizon())
    }

    /// Forget the tombstones of keys deleted before `horizon`: how many.
    fn forget_deleted_before(&self, horizon: u64) -> usize {
        let mut state = self.state.lock().expect("replica state poisoned");
        let forgotten = state.forget_deleted(horizon);
        if forgotten.is_empty() {
            return 0;
        }
        // A disc replica's rows of them go too.
        if let Some(disc) = self.disc.lock().expect("disc poisoned").as_ref() {
            let index = self.handle.applied();
            let (done, _) = tokio::sync::oneshot::channel();
            disc.persist(Persist {
                applied: index,
                rows: forgotten.iter().map(|k| (k.clone(), None)).collect(),
                fences: Vec::new(),
                replace: false,
                records: 0,
                generation: 0,
                done,
            });
        }
        tracing::debug!(table = %self.table, forgotten = forgotten.len(), "forgot deleted keys' tombstones");
        forgotten.len()
    }

    /// Keys held, deleted ones included (what `records_max` bounds).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.state.lock().expect("replica state poisoned").len
    }

    /// A time later than anything `old` holds and than this node's clock.
    fn time_after(&self, old: Option<&Entry>) -> u64 {
        let now = self.clock.new_timestamp().get_time().as_u64();
        now.max(old.map_or(0, |e| e.newest_time().saturating_add(1)))
    }

    fn aborted(&self, abort: Abort) -> Error {
        Error::Aborted {
            table: self.table.clone(),
            abort,
        }
    }

    /// Make `batch`'s writes here: the table's index after them. A
    /// conflict-free table takes no conditions; a counter takes only
    /// `Add`, other kinds all but `Add`.
    pub(crate) fn write(&self, batch: Batch) -> Result<(u64, Option<Durable>), Error> {
        if let Some(why) = self.disc_failed() {
            return Err(Error::Unavailable {
                table: self.table.clone(),
                why,
            });
        }
        if !batch.conditions.is_empty() {
            return Err(Error::BadRequest(format!(
                "table {} is conflict-free: its replicas take writes apart, so a write has no conditions (use a set table for transactions)",
                self.table
            )));
        }
        let counter = self.kind == Kind::Counter;
        for op in &batch.ops {
            let refused = match op {
                Op::Add { .. } => !counter,
                _ => counter,
            };
            if refused {
                let why = match counter {
                    true => format!("table {} is a counter: it takes add only", self.table),
                    false => format!("add is for counter tables; table {} is not one", self.table),
                };
                return Err(self.aborted(Abort::BadOp {
                    key: op_key(op).to_vec(),
                    why,
                }));
            }
        }
        // The limits, checked on the batch as the table would see it.
        let shape = Batch {
            conditions: Vec::new(),
            ops: batch
                .ops
                .iter()
                .map(|op| match op {
                    Op::Add { key, .. } => Op::Put {
                        key: key.clone(),
                        value: vec![0; 8],
                        index_values: Vec::new(),
                    },
                    other => other.clone(),
                })
                .collect(),
        };
        self.handle.check(&shape).map_err(|a| self.aborted(a))?;
        let mut state = self.state.lock().expect("replica state poisoned");
        // Keys, deleted ones included (their state stays), at most
        // records_max.
        let mut new_keys: Vec<&[u8]> = batch
            .ops
            .iter()
            .map(op_key)
            .filter(|k| state.get(k).is_none())
            .collect();
        new_keys.sort();
        new_keys.dedup();
        if state.len as u64 + new_keys.len() as u64 > self.records_max {
            return Err(self.aborted(Abort::Limit {
                limit: "records_max (keys of a conflict-free table, deleted ones included)".into(),
                max: self.records_max,
            }));
        }
        let mut ops = Vec::new();
        let mut written = Vec::new();
        for op in batch.ops {
            let key = op_key(&op).to_vec();
            let old = state.get(&key);
            let new = match op {
                Op::Put {
                    value,
                    index_values,
                    ..
                } => {
                    let value = Value {
                        bytes: value,
                        index_values,
                    };
                    let time = self.time_after(old);
                    Some(match self.kind {
                        Kind::OrSet => Entry::set_add(old, self.origin, time, value),
                        _ => Entry::lww_write(old, self.origin, time, Some(value)),
                    })
                }
                Op::Delete { .. } => match self.kind {
                    Kind::OrSet => Entry::set_remove(old, None),
                    _ => Some(Entry::lww_write(
                        old,
                        self.origin,
                        self.time_after(old),
                        None,
                    )),
                },
                Op::DeleteValue { value, .. } => match self.kind {
                    Kind::OrSet => Entry::set_remove(old, Some(&value)),
                    _ => old
                        .is_some_and(|e| e.records().first().is_some_and(|(v, _)| *v == value))
                        .then(|| Entry::lww_write(old, self.origin, self.time_after(old), None)),
                },
                Op::Add { delta, .. } => Some(Entry::counter_add(old, self.origin, delta)),
            };
            if let Some(new) = new {
                ops.extend(state.set(self.kind, key.clone(), new.clone()));
                written.push((key, new));
            }
        }
        let index = self
            .handle
            .apply_merged(ops, Vec::new())
            .unwrap_or_else(|| self.handle.applied());
        let durable = self.persist(index, &written);
        drop(state);
        if !written.is_empty() {
            let mut outbox = self.outbox.lock().expect("outbox poisoned");
            for (key, entry) in written {
                if outbox.len() >= self.pending_max && !outbox.contains_key(&key) {
                    // Anti-entropy brings it over.
                    continue;
                }
                outbox.insert(key, entry);
            }
            drop(outbox);
            self.pushed.notify_one();
        }
        Ok((index, durable))
    }

    /// Queue `changed` for the file of a `disc` replica, at `index`
    /// (under the state's lock, so the file sees changes in order).
    fn persist(&self, index: u64, changed: &[Keyed]) -> Option<Durable> {
        let disc = self.disc.lock().expect("disc poisoned");
        let disc = disc.as_ref()?;
        if changed.is_empty() {
            return None;
        }
        let rows = changed
            .iter()
            .map(|(key, entry)| {
                let record = Record {
                    value: molt_abi::codec::encode(entry),
                    version: index,
                    index_values: Vec::new(),
                };
                (key.clone(), Some((index, vec![record])))
            })
            .collect();
        let (done, durable) = tokio::sync::oneshot::channel();
        disc.persist(Persist {
            applied: index,
            rows,
            fences: Vec::new(),
            replace: false,
            records: 0,
            generation: 0,
            done,
        });
        Some(durable)
    }

    /// Why a `disc` replica's file can no longer be written, if so.
    pub(crate) fn disc_failed(&self) -> Option<String> {
        self.disc
            .lock()
            .expect("disc poisoned")
            .as_ref()
            .and_then(DiscFile::failed)
    }

    /// Whether this replica keeps a file.
    pub(crate) fn is_disc(&self) -> bool {
        self.disc.lock().expect("disc poisoned").is_some()
    }

    /// Keep this replica in `file` from now on: every entry is written to
    /// it first.
    pub(crate) fn attach(&self, file: DiscFile) {
        let state = self.state.lock().expect("replica state poisoned");
        let all: Vec<Keyed> = state
            .entries
            .iter()
            .flat_map(|m| m.iter().map(|(k, (e, _))| (k.clone(), e.clone())))
            .collect();
        *self.disc.lock().expect("disc poisoned") = Some(file);
        let _ = self.persist(self.handle.applied(), &all);
    }

    /// Stop keeping this replica in a file: the file, to remove or close.
    pub(crate) fn detach(&self) -> Option<DiscFile> {
        let _state = self.state.lock().expect("replica state poisoned");
        self.disc.lock().expect("disc poisoned").take()
    }

    /// Merge entries from another replica: how many keys changed here.
    /// Subscribers are told the changes, and each conflict settled.
    pub(crate) fn merge(&self, entries: Vec<Keyed>, key_bytes_max: usize) -> usize {
        let horizon = self.horizon();
        let mut state = self.state.lock().expect("replica state poisoned");
        let mut ops = Vec::new();
        let mut conflicts = Vec::new();
        let mut changed = Vec::new();
        for (key, theirs) in entries {
            let same_kind = matches!(
                (&theirs, self.kind),
                (Entry::Lww { .. }, Kind::Lww)
                    | (Entry::Counter { .. }, Kind::Counter)
                    | (Entry::OrSet { .. }, Kind::OrSet)
            );
            if !same_kind || key.len() > key_bytes_max {
                tracing::warn!(table = %self.table, "a replica sent an entry this table cannot hold: skipped");
                continue;
            }
            let time = theirs.newest_time();
            if time > 0 {
                let stamp = uhlc::Timestamp::new(uhlc::NTP64(time), *self.clock.get_id());
                // A clock far ahead is not followed; writes here are still
                // stamped after each key's newest.
                let _ = self.clock.update_with_timestamp(&stamp);
            }
            let merged = match state.get(&key) {
                // A tombstone this replica forgot already (or would).
                None if theirs.deleted_before(horizon) => None,
                None => Some(theirs),
                Some(mine) => {
                    let (merged, conflict) = mine.merge(&theirs);
                    if let Some(c) = conflict {
                        conflicts.push(Change::Conflict {
                            key: key.clone(),
                            kept: c.kept,
                            lost: c.lost,
                        });
                    }
                    merged
                }
            };
            if let Some(merged) = merged {
                ops.extend(state.set(self.kind, key.clone(), merged.clone()));
                changed.push((key, merged));
            }
        }
        let index = self
            .handle
            .apply_merged(ops, conflicts)
            .unwrap_or_else(|| self.handle.applied());
        // Not waited for: a merge arrives again by anti-entropy if the
        // file loses it.
        let _ = self.persist(index, &changed);
        changed.len()
    }

    /// The digest's total (equal totals: equal tables, but for a hash
    /// collision).
    pub(crate) fn total(&self) -> u64 {
        self.state.lock().expect("replica state poisoned").total
    }

    /// The digest's buckets.
    pub(crate) fn buckets(&self) -> Vec<u64> {
        self.state
            .lock()
            .expect("replica state poisoned")
            .buckets
            .clone()
    }

    /// The keys and entry hashes of whole buckets among `buckets` (in
    /// that order), about `bytes_max` bytes of them at most (at least one
    /// bucket's): them, and the buckets they cover.
    pub(crate) fn hashes_in(
        &self,
        buckets: &[u32],
        bytes_max: usize,
    ) -> (Vec<(Vec<u8>, u64)>, Vec<u32>) {
        let state = self.state.lock().expect("replica state poisoned");
        let mut out = Vec::new();
        let mut covered = Vec::new();
        let mut bytes = 0usize;
        for b in buckets {
            let Some(map) = state.entries.get(*b as usize) else {
                continue;
            };
            let size: usize = map.keys().map(|k| k.len() + 12).sum();
            if bytes + size > bytes_max && !covered.is_empty() {
                break;
            }
            bytes += size;
            out.extend(map.iter().map(|(k, (_, h))| (k.clone(), *h)));
            covered.push(*b);
        }
        (out, covered)
    }

    /// Against another replica's keys and hashes of whole buckets
    /// `covered`: this replica's entries it lacks or holds otherwise, and
    /// the keys this replica lacks or holds otherwise.
    pub(crate) fn differences(
        &self,
        covered: &[u32],
        theirs: Vec<(Vec<u8>, u64)>,
    ) -> (Vec<Keyed>, Vec<Vec<u8>>) {
        let mut theirs: std::collections::HashMap<Vec<u8>, u64> = theirs.into_iter().collect();
        let state = self.state.lock().expect("replica state poisoned");
        let mut mine = Vec::new();
        for b in covered {
            let Some(map) = state.entries.get(*b as usize) else {
                continue;
            };
            for (key, (entry, hash)) in map {
                match theirs.remove(key) {
                    Some(h) if h == *hash => {}
                    _ => mine.push((key.clone(), entry.clone())),
                }
            }
        }
        // Theirs left: keys this replica lacks; and those it holds
        // otherwise, whose merge may need theirs.
        let mut wanted: Vec<Vec<u8>> = theirs.into_keys().collect();
        wanted.extend(mine.iter().map(|(k, _)| k.clone()));
        (mine, wanted)
    }

    /// The entries of `keys` this replica holds.
    pub(crate) fn entries_of(&self, keys: &[Vec<u8>]) -> Vec<Keyed> {
        let state = self.state.lock().expect("replica state poisoned");
        keys.iter()
            .filter_map(|k| state.get(k).map(|e| (k.clone(), e.clone())))
            .collect()
    }

    /// Keep `entries` for `peer`, which a push did not reach (up to
    /// `pending_max`; the rest anti-entropy finds).
    pub(crate) fn missed(&self, peer: &str, entries: Vec<Keyed>) {
        let mut backlog = self.backlog.lock().expect("backlog poisoned");
        let kept = backlog.entry(peer.to_string()).or_default();
        for (key, entry) in entries {
            if kept.len() < self.pending_max || kept.contains_key(&key) {
                kept.insert(key, entry);
            }
        }
    }

    /// Whether `peer` has missed pushes not yet sent again (then later
    /// pushes join them rather than wait on a peer that does not answer).
    pub(crate) fn has_missed(&self, peer: &str) -> bool {
        self.backlog
            .lock()
            .expect("backlog poisoned")
            .get(peer)
            .is_some_and(|m| !m.is_empty())
    }

    /// What `peer` missed, taken to send it now.
    pub(crate) fn take_missed(&self, peer: &str) -> Vec<Keyed> {
        self.backlog
            .lock()
            .expect("backlog poisoned")
            .remove(peer)
            .map(|m| m.into_iter().collect())
            .unwrap_or_default()
    }

    /// Whether a digest round with `peer` is due (none for `every`); if
    /// so, it counts as started now.
    pub(crate) fn due(&self, peer: &str, every: Duration) -> bool {
        let mut rounds = self.rounds.lock().expect("rounds poisoned");
        match rounds.get(peer) {
            Some(at) if at.elapsed() < every => false,
            _ => {
                rounds.insert(peer.to_string(), Instant::now());
                true
            }
        }
    }

    /// Whether a `round` with `peer` may start (none of that kind is
    /// running); [`synced`](Self::synced) ends it.
    pub(crate) fn syncing(&self, round: Round, peer: &str) -> bool {
        self.syncing
            .lock()
            .expect("syncing poisoned")
            .insert((round, peer.to_string()))
    }

    /// The `round` with `peer` ended.
    pub(crate) fn synced(&self, round: Round, peer: &str) {
        self.syncing
            .lock()
            .expect("syncing poisoned")
            .remove(&(round, peer.to_string()));
    }

    /// The entries written here since the last call, to push.
    pub(crate) fn take_outbox(&self) -> Vec<Keyed> {
        std::mem::take(&mut *self.outbox.lock().expect("outbox poisoned"))
            .into_iter()
            .collect()
    }

    /// `node`'s replica answered just now.
    pub(crate) fn heard(&self, node: &str) {
        self.heard
            .lock()
            .expect("heard poisoned")
            .insert(node.to_string(), Instant::now());
    }

    /// Whether this replica may lag: one of `peers` (the other replicas'
    /// nodes) has not answered within `within`, or not yet.
    pub(crate) fn stale(&self, peers: &[String], within: Duration) -> bool {
        let heard = self.heard.lock().expect("heard poisoned");
        peers.iter().any(|p| match heard.get(p) {
            Some(at) => at.elapsed() > within,
            None => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::local::LocalTables;
    use crate::table::state::Schema;

    fn replica(records_max: u64) -> (LocalTables, ApReplica) {
        let tables = LocalTables::default();
        let schema = Schema {
            name: "presence".into(),
            kind: Kind::Lww,
            indexes: Vec::new(),
        };
        let handle = tables.insert_replica(schema, None).expect("a replica");
        let ap = ApReplica::new(
            "presence".into(),
            1,
            7,
            handle,
            records_max,
            100,
            Duration::from_secs(3600),
        );
        (tables, ap)
    }

    fn batch(ops: Vec<Op>) -> Batch {
        Batch {
            conditions: Vec::new(),
            ops,
        }
    }

    fn put(key: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: b"here".to_vec(),
            index_values: Vec::new(),
        }
    }

    fn delete(key: &str) -> Op {
        Op::Delete { key: key.into() }
    }

    #[test]
    fn forgotten_tombstones_free_their_places_and_old_ones_are_not_taken_back() {
        let (tables, ap) = replica(3);
        ap.write(batch(vec![put("a"), put("b"), put("c")]))
            .expect("three keys");
        let full = ap.write(batch(vec![put("d")]));
        let limit = |r: &Result<_, Error>| matches!(r, Err(Error::Aborted { abort: Abort::Limit { limit, .. }, .. }) if limit.starts_with("records_max"));
        assert!(limit(&full), "{full:?}");
        // Deleted keys keep their tombstones, and their places.
        ap.write(batch(vec![delete("a"), delete("b")]))
            .expect("two deletes");
        assert_eq!(ap.held(), 3);
        assert!(limit(&ap.write(batch(vec![put("d")]))));
        let (a_tombstone, old) = {
            let state = ap.state.lock().unwrap();
            let time = |key: &[u8]| match state.get(key) {
                Some(Entry::Lww { stamp, .. }) => stamp.time,
                other => panic!("{other:?}"),
            };
            let old = time(b"a").min(time(b"b"));
            (state.get(b"a").unwrap().clone(), old)
        };
        // A horizon before the deletes forgets nothing (nor does the
        // replica's own, an hour back) ...
        assert_eq!(ap.forget_deleted_before(old), 0);
        assert_eq!(ap.forget_deleted(), 0);
        assert_eq!(ap.forget_deleted_before(ap.horizon()), 0);
        // ... one after them forgets both, and frees their places.
        assert_eq!(ap.forget_deleted_before(u64::MAX), 2);
        assert_eq!(ap.held(), 1);
        ap.write(batch(vec![put("d"), put("e")]))
            .expect("two new keys in the freed places");
        let read = |key: &[u8]| tables.get("presence", key).expect("the table").0;
        assert!(read(b"a").is_empty() && read(b"b").is_empty());
        assert_eq!(read(b"c").len(), 1);
        // A peer's tombstone older than the horizon is not taken back; a
        // recent one is.
        let mut stale = a_tombstone.clone();
        if let Entry::Lww { stamp, .. } = &mut stale {
            stamp.time = 1;
        }
        assert_eq!(ap.merge(vec![(b"x".to_vec(), stale)], 1024), 0);
        assert_eq!(ap.held(), 3);
        assert_eq!(ap.merge(vec![(b"a".to_vec(), a_tombstone)], 1024), 1);
        assert_eq!(ap.held(), 4);
    }
}
