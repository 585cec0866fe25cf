//! The state of one key of a conflict-free (AP) table, and how two
//! replicas' states of it merge. Three kinds, each a join semilattice
//! (merge is commutative, associative and idempotent, so replicas that
//! have merged the same writes hold the same state, whatever the order):
//!
//! - [`Entry::Lww`]: a last-writer-wins register. Each write carries a
//!   [`Stamp`] (hybrid-clock time, then the writing replica) and the
//!   version vector of the writes its replica had seen of the key. A
//!   write is always stamped later than every write it has seen, so the
//!   latest stamp is also the causally latest; the vectors tell a
//!   causal overwrite from a concurrent one, and only a concurrent one
//!   is a conflict (the loser is gone).
//! - [`Entry::Counter`]: a PN-counter (per writing replica, the sum of its
//!   increments and of its decrements).
//! - [`Entry::OrSet`]: an observed-remove set without tombstones (an
//!   ORSWOT: each value carries the dots of the adds that put it there,
//!   and the key a version vector of every add seen; a merge drops a dot
//!   the other side has seen and no longer holds, so a remove wins only
//!   over the adds it saw).
//!
//! A writing replica is an *origin*: one incarnation of one node's
//! replica (a restarted replica is a new origin), so its counts and times
//! never have to survive a restart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A replica incarnation's id.
pub(crate) type Origin = u64;

/// A version vector: for each origin, its newest write seen.
pub(crate) type Clock = BTreeMap<Origin, u64>;

/// When and where a write was made: ordered by time, then origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Stamp {
    /// Hybrid-clock time (NTP64).
    pub time: u64,
    /// The writing replica.
    pub origin: Origin,
}

/// A value with its index values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Value {
    #[serde(with = "molt_abi::bytes")]
    pub bytes: Vec<u8>,
    pub index_values: Vec<Vec<u8>>,
}

/// One value of an OR-set key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Element {
    /// The adds that put it there, by origin (its newest add's time).
    pub dots: BTreeMap<Origin, u64>,
    /// Its index values, from its newest add.
    pub index_values: Vec<Vec<u8>>,
}

impl Entry {
    /// Whether this is a last-writer-wins key deleted before `horizon`
    /// (hybrid-clock time).
    pub(crate) fn deleted_before(&self, horizon: u64) -> bool {
        matches!(self, Entry::Lww { stamp, value: None, .. } if stamp.time < horizon)
    }
}

impl Element {
    fn newest(&self) -> Option<(u64, Origin)> {
        self.dots.iter().map(|(o, t)| (*t, *o)).max()
    }
}

/// One key's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Entry {
    /// A last-writer-wins register.
    Lww {
        /// The write that holds.
        stamp: Stamp,
        /// Every write of this key seen, by origin.
        seen: Clock,
        /// Its value; `None` once deleted (kept, so that an older write
        /// arriving late cannot bring the key back).
        value: Option<Value>,
    },
    /// A PN-counter: per origin, the sum of its increments and of its
    /// decrements.
    Counter {
        /// By origin.
        counts: BTreeMap<Origin, (u64, u64)>,
    },
    /// An observed-remove set.
    OrSet {
        /// Every add of this key seen, by origin.
        clock: Clock,
        /// Its values.
        values: BTreeMap<Vec<u8>, Element>,
    },
}

/// What a merge found: two concurrent writes of a `Lww` key, the kept
/// one's value and the discarded one's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub kept: Option<Vec<u8>>,
    pub lost: Option<Vec<u8>>,
}

/// Whether every write `a` has seen, `b` has seen too.
fn within(a: &Clock, b: &Clock) -> bool {
    a.iter().all(|(o, t)| b.get(o).is_some_and(|u| u >= t))
}

fn join(a: &mut Clock, b: &Clock) {
    for (o, t) in b {
        let mine = a.entry(*o).or_insert(0);
        *mine = (*mine).max(*t);
    }
}

fn seen(clock: &Clock, origin: Origin, time: u64) -> bool {
    clock.get(&origin).is_some_and(|t| *t >= time)
}

impl Entry {
    /// The newest time this entry holds (a write to it is stamped later).
    pub(crate) fn newest_time(&self) -> u64 {
        match self {
            Entry::Lww { stamp, .. } => stamp.time,
            Entry::Counter { .. } => 0,
            Entry::OrSet { clock, .. } => clock.values().copied().max().unwrap_or(0),
        }
    }

    /// A write of `value` (`None`: a delete) to a `Lww` key whose state is
    /// `old`, by `origin` at `time` (later than `old`'s stamp).
    pub(crate) fn lww_write(
        old: Option<&Entry>,
        origin: Origin,
        time: u64,
        value: Option<Value>,
    ) -> Entry {
        let mut seen = match old {
            Some(Entry::Lww { seen, .. }) => seen.clone(),
            _ => Clock::new(),
        };
        seen.insert(origin, time);
        Entry::Lww {
            stamp: Stamp { time, origin },
            seen,
            value,
        }
    }

    /// `delta` added to a counter key whose state is `old`, by `origin`.
    pub(crate) fn counter_add(old: Option<&Entry>, origin: Origin, delta: i64) -> Entry {
        let mut counts = match old {
            Some(Entry::Counter { counts }) => counts.clone(),
            _ => BTreeMap::new(),
        };
        let (up, down) = counts.entry(origin).or_insert((0, 0));
        if delta >= 0 {
            *up = up.saturating_add(delta as u64);
        } else {
            *down = down.saturating_add(delta.unsigned_abs());
        }
        Entry::Counter { counts }
    }

    /// `value` added to an OR-set key whose state is `old`, by `origin` at
    /// `time` (this origin's newest).
    pub(crate) fn set_add(old: Option<&Entry>, origin: Origin, time: u64, value: Value) -> Entry {
        let (mut clock, mut values) = match old {
            Some(Entry::OrSet { clock, values }) => (clock.clone(), values.clone()),
            _ => (Clock::new(), BTreeMap::new()),
        };
        clock.insert(origin, time);
        // The add has seen every dot the value had: they are replaced.
        values.insert(
            value.bytes,
            Element {
                dots: BTreeMap::from([(origin, time)]),
                index_values: value.index_values,
            },
        );
        Entry::OrSet { clock, values }
    }

    /// `value` (or, if `None`, every value) removed from an OR-set key
    /// whose state is `old`: the adds seen here stop counting.
    pub(crate) fn set_remove(old: Option<&Entry>, value: Option<&[u8]>) -> Option<Entry> {
        let Some(Entry::OrSet { clock, values }) = old else {
            return None;
        };
        let mut values = values.clone();
        match value {
            Some(value) => {
                values.remove(value)?;
            }
            None if values.is_empty() => return None,
            None => values.clear(),
        }
        Some(Entry::OrSet {
            clock: clock.clone(),
            values,
        })
    }

    /// `self` merged with `other` (another replica's state of the same
    /// key): the merged state, if it differs from `self`, and the
    /// conflict the merge settled, if any.
    pub(crate) fn merge(&self, other: &Entry) -> (Option<Entry>, Option<Conflict>) {
        match (self, other) {
            (
                Entry::Lww {
                    stamp: a,
                    seen: a_seen,
                    value: a_value,
                },
                Entry::Lww {
                    stamp: b,
                    seen: b_seen,
                    value: b_value,
                },
            ) => {
                if within(b_seen, a_seen) {
                    return (None, None);
                }
                if within(a_seen, b_seen) {
                    return (Some(other.clone()), None);
                }
                // Concurrent: the later stamp holds, both histories are
                // seen.
                let mut seen = a_seen.clone();
                join(&mut seen, b_seen);
                let (kept, lost) = match a > b {
                    true => (a_value, b_value),
                    false => (b_value, a_value),
                };
                let bytes = |v: &Option<Value>| v.as_ref().map(|v| v.bytes.clone());
                let conflict = (bytes(kept) != bytes(lost)).then(|| Conflict {
                    kept: bytes(kept),
                    lost: bytes(lost),
                });
                let merged = Entry::Lww {
                    stamp: *a.max(b),
                    seen,
                    value: kept.clone(),
                };
                (Some(merged), conflict)
            }
            (Entry::Counter { counts: a }, Entry::Counter { counts: b }) => {
                let mut counts = a.clone();
                let mut changed = false;
                for (origin, (up, down)) in b {
                    let mine = counts.entry(*origin).or_insert((0, 0));
                    if *up > mine.0 || *down > mine.1 {
                        *mine = (mine.0.max(*up), mine.1.max(*down));
                        changed = true;
                    }
                }
                (changed.then_some(Entry::Counter { counts }), None)
            }
            (
                Entry::OrSet {
                    clock: a_clock,
                    values: a_values,
                },
                Entry::OrSet {
                    clock: b_clock,
                    values: b_values,
                },
            ) => {
                let mut values = BTreeMap::new();
                let keys: std::collections::BTreeSet<&Vec<u8>> =
                    a_values.keys().chain(b_values.keys()).collect();
                for value in keys {
                    let (a, b) = (a_values.get(value), b_values.get(value));
                    let mut dots = BTreeMap::new();
                    // A dot stays if both hold it, or if the side without
                    // it never saw it.
                    if let Some(a) = a {
                        for (o, t) in &a.dots {
                            let in_b = b.is_some_and(|b| b.dots.get(o) == Some(t));
                            if in_b || !seen(b_clock, *o, *t) {
                                dots.insert(*o, *t);
                            }
                        }
                    }
                    if let Some(b) = b {
                        for (o, t) in &b.dots {
                            if !seen(a_clock, *o, *t) {
                                let t = dots.get(o).map_or(*t, |mine: &u64| (*mine).max(*t));
                                dots.insert(*o, t);
                            }
                        }
                    }
                    if dots.is_empty() {
                        continue;
                    }
                    let index_values = match (a, b) {
                        (Some(a), Some(b)) => match a.newest() >= b.newest() {
                            true => a.index_values.clone(),
                            false => b.index_values.clone(),
                        },
                        (Some(a), None) => a.index_values.clone(),
                        (None, Some(b)) => b.index_values.clone(),
                        (None, None) => continue,
                    };
                    values.insert(value.clone(), Element { dots, index_values });
                }
                let mut clock = a_clock.clone();
                join(&mut clock, b_clock);
                let merged = Entry::OrSet { clock, values };
                ((&merged != self).then_some(merged), None)
            }
            // Another kind (a forged or mixed-up message): this side's
            // state stands.
            _ => (None, None),
        }
    }

    /// About how many bytes it encodes to (for sizing messages without
    /// encoding).
    pub(crate) fn approx_bytes(&self) -> usize {
        let values = |v: &[Vec<u8>]| v.iter().map(|b| b.len() + 4).sum::<usize>();
        match self {
            Entry::Lww { seen, value, .. } => {
                24 + seen.len() * 20
                    + value
                        .as_ref()
                        .map_or(0, |v| v.bytes.len() + 4 + values(&v.index_values))
            }
            Entry::Counter { counts } => 4 + counts.len() * 30,
            Entry::OrSet { clock, values: vs } => {
                4 + clock.len() * 20
                    + vs.iter()
                        .map(|(v, e)| v.len() + 8 + e.dots.len() * 20 + values(&e.index_values))
                        .sum::<usize>()
            }
        }
    }

    /// The records the key holds: value and index values, in value order.
    pub(crate) fn records(&self) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        match self {
            Entry::Lww { value, .. } => value
                .iter()
                .map(|v| (v.bytes.clone(), v.index_values.clone()))
                .collect(),
            Entry::Counter { counts } => {
                let total = counts.values().fold(0i64, |sum, (up, down)| {
                    sum.wrapping_add(*up as i64).wrapping_sub(*down as i64)
                });
                vec![(molt_abi::codec::encode(&total), Vec::new())]
            }
            Entry::OrSet { values, .. } => values
                .iter()
                .map(|(v, e)| (v.clone(), e.index_values.clone()))
                .collect(),
        }
    }
}

/// A 64-bit FNV-1a hash: the same on every node and build.
pub(crate) fn fnv(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for b in *part {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // Parts are delimited.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> Value {
        Value {
            bytes: s.as_bytes().to_vec(),
            index_values: Vec::new(),
        }
    }

    fn merged(a: &Entry, b: &Entry) -> Entry {
        a.merge(b).0.unwrap_or_else(|| a.clone())
    }

    #[test]
    fn a_causal_overwrite_is_no_conflict_and_a_concurrent_one_is() {
        let w1 = Entry::lww_write(None, 1, 10, Some(value("a")));
        // Replica 2 saw w1 and overwrote it.
        let w2 = Entry::lww_write(Some(&w1), 2, 11, Some(value("b")));
        assert_eq!(w1.merge(&w2), (Some(w2.clone()), None));
        assert_eq!(w2.merge(&w1), (None, None));
        // Replica 3 wrote without seeing either, later in time.
        let w3 = Entry::lww_write(None, 3, 12, Some(value("c")));
        let (m, conflict) = w2.merge(&w3);
        let m = m.expect("changed");
        assert_eq!(m.records()[0].0, b"c");
        assert_eq!(
            conflict,
            Some(Conflict {
                kept: Some(b"c".to_vec()),
                lost: Some(b"b".to_vec())
            })
        );
        // The other way round: the same state, the same conflict.
        let (m2, conflict2) = w3.merge(&w2);
        assert_eq!(m2, Some(m.clone()));
        assert_eq!(conflict2, conflict);
        // A late w1 changes nothing.
        assert_eq!(m.merge(&w1), (None, None));
    }

    #[test]
    fn a_delete_holds_against_older_writes() {
        let w1 = Entry::lww_write(None, 1, 10, Some(value("a")));
        let d = Entry::lww_write(Some(&w1), 1, 11, None);
        assert!(merged(&d, &w1).records().is_empty());
        assert!(merged(&w1, &d).records().is_empty());
    }

    #[test]
    fn merges_commute_and_associate() {
        let a = Entry::lww_write(None, 1, 10, Some(value("a")));
        let b = Entry::lww_write(Some(&a), 2, 20, Some(value("b")));
        let c = Entry::lww_write(None, 3, 15, Some(value("c")));
        let all = [&a, &b, &c];
        let mut results = Vec::new();
        for order in [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ] {
            let mut s = all[order[0]].clone();
            for i in &order[1..] {
                s = merged(&s, all[*i]);
            }
            results.push(s);
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
        assert_eq!(results[0].records()[0].0, b"b");
    }

    #[test]
    fn counters_count_every_add_once() {
        let a = Entry::counter_add(None, 1, 5);
        let a = Entry::counter_add(Some(&a), 1, -2);
        let b = Entry::counter_add(None, 2, 10);
        let m = merged(&merged(&a, &b), &a);
        assert_eq!(m.records()[0].0, molt_abi::codec::encode(&13i64));
        assert_eq!(m.merge(&b), (None, None));
    }

    #[test]
    fn an_add_wins_over_a_concurrent_remove_and_a_seen_remove_holds() {
        let a = Entry::set_add(None, 1, 10, value("x"));
        // Replica 2 saw the add and removed x.
        let removed = Entry::set_remove(Some(&a), Some(b"x")).expect("there");
        assert!(merged(&a, &removed).records().is_empty());
        assert!(merged(&removed, &a).records().is_empty());
        // Replica 3 saw the add, and added x again concurrently with the
        // remove: the add wins.
        let again = Entry::set_add(Some(&a), 3, 12, value("x"));
        let m = merged(&removed, &again);
        assert_eq!(m.records().len(), 1);
        assert_eq!(merged(&again, &removed), m);
        // Values added apart are both kept.
        let y = Entry::set_add(None, 4, 13, value("y"));
        assert_eq!(merged(&m, &y).records().len(), 2);
    }
}
