//! Transactions over several replicated tables: two-phase commit across
//! the tables' groups, with the decision kept by one of them. Pure: what
//! one table's group holds for the transactions in flight, and its
//! transitions, applied in log order by [`super::group`].
//!
//! How a transaction commits (the coordinator is the node that was
//! asked, `super::replication`):
//! 1. **Prepare** in every table's group at once: the batch's conditions
//!    are checked, and if they hold, the batch is kept as an *intent*
//!    that holds its keys (those it writes and those its conditions name)
//!    and its fenced locks. A commit or another prepare that touches a
//!    held key is refused with [`Abort::Locked`] until the intent goes.
//! 2. **Decide** in the *home* group (the first table by name): commit if
//!    every table prepared, else roll back. The first decision recorded
//!    is the one: a later one learns it. Deciding to commit applies the
//!    home table's intent at that entry's index.
//! 3. **Resolve** in every other group: apply the intent (commit) or drop
//!    it. Then **Forget**: the home group drops the decision once every
//!    other table has resolved.
//!
//! A coordinator that dies or is cut off leaves intents behind. Each
//! group's leader resolves an intent older than `tx_resolve_after` itself:
//! it asks the home group to decide *roll back*, which records that if no
//! decision was made (so a commit can no longer be decided), or answers
//! the decision that was; then it resolves the intent that way.
//!
//! Invariants:
//! - a key or fenced lock is held by at most one intent;
//! - a transaction has at most one decision, and the home table's intent
//!   is applied only by a decision to commit;
//! - a decision is kept until every table named in it has resolved, so a
//!   table that asks learns it (with none kept, the answer is roll back,
//!   and that is right: a commit is forgotten only once all took it);
//! - an intent applies as it was prepared: its keys were held, so its
//!   conditions still hold.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::state::{Abort, Batch, Condition, op_key};

/// A transaction over several tables: the node that coordinates it and a
/// random number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxId {
    /// The coordinator's node.
    pub node: String,
    /// Random, per transaction.
    pub n: u64,
}

impl std::fmt::Display for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{:016x}", self.node, self.n)
    }
}

/// A prepared transaction's part in one table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The table that keeps the transaction's decision.
    pub home: String,
    /// Every table of the transaction.
    pub tables: Vec<String>,
    /// This table's batch.
    pub batch: Batch,
}

/// A transaction's decision, kept by its home table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Decision {
    commit: bool,
    /// The log index of the entry that decided.
    index: u64,
    /// The other tables that have not yet resolved.
    outstanding: BTreeSet<String>,
}

/// What one table's group holds for transactions over several tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    intents: BTreeMap<TxId, Intent>,
    /// Held keys, and by which transaction.
    keys: BTreeMap<Vec<u8>, TxId>,
    /// Held fenced locks, and by which transaction.
    fences: BTreeMap<String, TxId>,
    /// Decisions of transactions whose home this table is.
    decisions: BTreeMap<TxId, Decision>,
}

/// What a prepare did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// The intent is kept (now, or by an earlier prepare of the same
    /// transaction).
    Kept,
    /// Nothing kept: why.
    Refused(Abort),
}

/// A decision, as the home table answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// Commit (or roll back).
    pub commit: bool,
    /// The log index of the entry that decided.
    pub index: u64,
    /// The home table's batch to apply now, if this entry decided to
    /// commit.
    pub apply: Option<Batch>,
}

/// The keys and fenced locks a batch holds while prepared.
fn held_by(batch: &Batch) -> (Vec<&[u8]>, Vec<&str>) {
    let mut keys: Vec<&[u8]> = batch.ops.iter().map(op_key).collect();
    let mut fences = Vec::new();
    for condition in &batch.conditions {
        match condition {
            Condition::Absent { key } | Condition::Version { key, .. } => keys.push(key),
            Condition::Fence { lock, .. } => fences.push(lock.as_str()),
        }
    }
    (keys, fences)
}

impl Pending {
    /// Why `batch` may not apply now: a key or fenced lock it touches is
    /// held by a transaction other than `by`.
    pub fn held(&self, batch: &Batch, by: Option<&TxId>) -> Option<Abort> {
        if self.keys.is_empty() && self.fences.is_empty() {
            return None;
        }
        let (keys, fences) = held_by(batch);
        let other = |holder: &TxId| by != Some(holder);
        if let Some(key) = keys
            .into_iter()
            .find(|k| self.keys.get(*k).is_some_and(other))
        {
            return Some(Abort::Locked { key: key.to_vec() });
        }
        fences
            .into_iter()
            .find(|l| self.fences.get(*l).is_some_and(other))
            .map(|_| Abort::Locked { key: Vec::new() })
    }

    /// Prepare `tx`'s part in the table whose name is `here`: kept if
    /// `check` (the table's conditions and limits) passes, no other
    /// transaction holds its keys, it was not decided already, and fewer
    /// than `max` transactions are kept.
    pub fn prepare(
        &mut self,
        here: &str,
        tx: TxId,
        intent: Intent,
        max: usize,
        check: impl FnOnce(&Batch) -> Result<(), Abort>,
    ) -> Prepared {
        if self.intents.contains_key(&tx) {
            return Prepared::Kept;
        }
        if intent.home == here && self.decisions.contains_key(&tx) {
            // Rolled back by a leader that found it late: its coordinator
            // learns that when it decides.
            return Prepared::Refused(Abort::Expired);
        }
        if self.intents.len() + self.decisions.len() >= max {
            return Prepared::Refused(Abort::Limit {
                limit: "prepared_max".into(),
                max: max as u64,
            });
        }
        if let Some(abort) = self.held(&intent.batch, None) {
            return Prepared::Refused(abort);
        }
        if let Err(abort) = check(&intent.batch) {
            return Prepared::Refused(abort);
        }
        let (keys, fences) = held_by(&intent.batch);
        for key in keys {
            self.keys.insert(key.to_vec(), tx.clone());
        }
        for lock in fences {
            self.fences.insert(lock.to_string(), tx.clone());
        }
        self.intents.insert(tx, intent);
        Prepared::Kept
    }

    /// Take `tx`'s intent out, freeing what it held.
    fn take(&mut self, tx: &TxId) -> Option<Intent> {
        let intent = self.intents.remove(tx)?;
        let (keys, fences) = held_by(&intent.batch);
        for key in keys {
            if self.keys.get(key) == Some(tx) {
                self.keys.remove(key);
            }
        }
        for lock in fences {
            if self.fences.get(lock) == Some(tx) {
                self.fences.remove(lock);
            }
        }
        Some(intent)
    }

    /// Decide `tx` in its home table (`here`), at log `index`: `commit`
    /// if asked and this table prepared, else roll back; or the decision
    /// made before.
    pub fn decide(
        &mut self,
        here: &str,
        tx: TxId,
        commit: bool,
        tables: &[String],
        index: u64,
    ) -> Decided {
        if let Some(d) = self.decisions.get(&tx) {
            return Decided {
                commit: d.commit,
                index: d.index,
                apply: None,
            };
        }
        let intent = self.take(&tx);
        let commit = commit && intent.is_some();
        let outstanding: BTreeSet<String> = tables.iter().filter(|t| *t != here).cloned().collect();
        if !outstanding.is_empty() {
            self.decisions.insert(
                tx,
                Decision {
                    commit,
                    index,
                    outstanding,
                },
            );
        }
        Decided {
            commit,
            index,
            apply: intent.filter(|_| commit).map(|i| i.batch),
        }
    }

    /// Resolve `tx`'s intent in this (not its home) table: the batch to
    /// apply if `commit` and it was prepared here; nothing otherwise.
    pub fn resolve(&mut self, tx: &TxId, commit: bool) -> Option<Batch> {
        let intent = self.take(tx)?;
        commit.then_some(intent.batch)
    }

    /// In `tx`'s home table: `tables` have resolved; the decision goes
    /// once every table has.
    pub fn forget(&mut self, tx: &TxId, tables: &[String]) {
        if let Some(d) = self.decisions.get_mut(tx) {
            for table in tables {
                d.outstanding.remove(table);
            }
            if d.outstanding.is_empty() {
                self.decisions.remove(tx);
            }
        }
    }

    /// The intents kept, by transaction.
    pub fn intents(&self) -> impl Iterator<Item = (&TxId, &Intent)> {
        self.intents.iter()
    }

    /// The decisions kept (this is their home table): each transaction,
    /// whether it commits, and the tables that have not resolved.
    pub fn decisions(&self) -> impl Iterator<Item = (&TxId, bool, Vec<String>)> {
        self.decisions
            .iter()
            .map(|(tx, d)| (tx, d.commit, d.outstanding.iter().cloned().collect()))
    }

    /// How many intents and decisions are kept.
    pub fn len(&self) -> (usize, usize) {
        (self.intents.len(), self.decisions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::state::Op;

    fn tx(n: u64) -> TxId {
        TxId {
            node: "a@h".into(),
            n,
        }
    }

    fn put(key: &str) -> Batch {
        Batch {
            conditions: vec![Condition::Absent {
                key: format!("{key}-read").into_bytes(),
            }],
            ops: vec![Op::Put {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                index_values: vec![],
            }],
        }
    }

    fn intent(home: &str, batch: Batch) -> Intent {
        Intent {
            home: home.into(),
            tables: vec!["a".into(), "b".into()],
            batch,
        }
    }

    fn tables() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn a_prepared_intent_holds_the_keys_it_writes_and_reads_until_resolved() {
        let mut p = Pending::default();
        let kept = p.prepare("b", tx(1), intent("a", put("k")), 10, |_| Ok(()));
        assert_eq!(kept, Prepared::Kept);
        assert_eq!(
            p.held(&put("k"), None),
            Some(Abort::Locked { key: b"k".to_vec() })
        );
        let reads = Batch {
            conditions: vec![],
            ops: vec![Op::Delete {
                key: b"k-read".to_vec(),
            }],
        };
        assert!(p.held(&reads, None).is_some(), "a read key is held too");
        assert_eq!(p.held(&put("k"), Some(&tx(1))), None, "not from itself");
        let other = p.prepare("b", tx(2), intent("a", put("k")), 10, |_| Ok(()));
        assert_eq!(
            other,
            Prepared::Refused(Abort::Locked { key: b"k".to_vec() })
        );
        assert_eq!(p.resolve(&tx(1), true), Some(put("k")));
        assert_eq!(p.held(&put("k"), None), None);
        assert_eq!(p.resolve(&tx(1), true), None, "once");
    }

    #[test]
    fn the_first_decision_is_the_one_and_a_late_prepare_at_home_is_refused() {
        let mut p = Pending::default();
        // A leader found an intent elsewhere and rolled it back first.
        let first = p.decide("a", tx(1), false, &tables(), 7);
        assert!(!first.commit && first.apply.is_none());
        let late = p.prepare("a", tx(1), intent("a", put("k")), 10, |_| Ok(()));
        assert_eq!(late, Prepared::Refused(Abort::Expired));
        let again = p.decide("a", tx(1), true, &tables(), 9);
        assert_eq!((again.commit, again.index), (false, 7));
        p.forget(&tx(1), &["b".to_string()]);
        assert_eq!(p.len(), (0, 0));
    }

    #[test]
    fn commit_is_decided_only_for_a_prepared_home_and_applies_its_batch() {
        let mut p = Pending::default();
        let unprepared = p.decide("a", tx(1), true, &tables(), 3);
        assert!(!unprepared.commit, "nothing prepared: roll back");
        p.prepare("a", tx(2), intent("a", put("k")), 10, |_| Ok(()));
        let d = p.decide("a", tx(2), true, &tables(), 5);
        assert_eq!((d.commit, d.index, d.apply), (true, 5, Some(put("k"))));
        assert_eq!(p.held(&put("k"), None), None);
        // Asked again (a leader resolving late): the same answer, nothing
        // applied twice.
        let asked = p.decide("a", tx(2), false, &tables(), 8);
        assert_eq!((asked.commit, asked.index, asked.apply), (true, 5, None));
    }

    #[test]
    fn a_failed_check_or_the_limit_keeps_nothing() {
        let mut p = Pending::default();
        let refused = p.prepare("b", tx(1), intent("a", put("k")), 10, |_| {
            Err(Abort::Exists { key: b"x".to_vec() })
        });
        assert_eq!(
            refused,
            Prepared::Refused(Abort::Exists { key: b"x".to_vec() })
        );
        assert_eq!(p.held(&put("k"), None), None);
        p.prepare("b", tx(2), intent("a", put("k")), 1, |_| Ok(()));
        let full = p.prepare("b", tx(3), intent("a", put("j")), 1, |_| Ok(()));
        assert!(matches!(full, Prepared::Refused(Abort::Limit { .. })));
    }
}
