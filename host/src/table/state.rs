//! One table's replicated state and its one transition, [`Table::apply`]:
//! a conditional batch (a transaction, or a single dirty write) applied at
//! one log index, all of it or none. Pure: no clock, no randomness, so
//! every replica that applies the same log holds the same table, and the
//! rules are tested here without a cluster. The rows are in memory, or,
//! for a `disc_only` copy, in its file ([`DiscRows`]: reads go there,
//! commits are staged for it); the rules are the same.
//!
//! Keys, values and index values are bytes: the SDK types them.
//!
//! Invariants:
//! - every record's version is the log index of the batch that wrote it,
//!   so versions only grow and a condition on a version is a
//!   compare-and-set;
//! - a batch whose conditions do not all hold, or which would cross a
//!   limit, changes nothing;
//! - each secondary index counts, per (index value, key), the key's
//!   records with that value: never zero, never missing;
//! - a key's version is the log index of the last batch that changed it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;

use super::disc::DiscRows;

use serde::{Deserialize, Serialize};

pub use molt_abi::table::{Abort, Batch, Change, Condition, Kind as TableKind, Op, Record};

/// What a table is: its name, its kind and its secondary indexes (by
/// name; the writer supplies each record's index values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// The table's name.
    pub name: String,
    /// Its kind.
    pub kind: TableKind,
    /// Its secondary indexes, by name.
    pub indexes: Vec<String>,
}

/// A table's limits (each refused with its name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableLimits {
    /// Most records in the table (a bag's records all count).
    pub records_max: u64,
    /// Longest key, in bytes.
    pub key_bytes_max: usize,
    /// Longest value, in bytes.
    pub value_bytes_max: usize,
    /// Most conditions plus operations in one batch.
    pub batch_ops_max: usize,
    /// Most bytes (keys, values, index values) in one batch.
    pub batch_bytes_max: usize,
    /// A replicated table: most transactions over several tables kept at
    /// once (prepared and holding keys, or decided and waiting for the
    /// other tables); a prepare past it is refused.
    pub prepared_max: usize,
}

impl Default for TableLimits {
    fn default() -> TableLimits {
        TableLimits {
            records_max: 10_000_000,
            key_bytes_max: 1024,
            value_bytes_max: 1 << 20,
            batch_ops_max: 1_000,
            batch_bytes_max: 4 << 20,
            prepared_max: 10_000,
        }
    }
}

/// One secondary index: how many records of each key have each index
/// value, by (index value, key).
type Index = BTreeMap<(Vec<u8>, Vec<u8>), u32>;

/// A key's records and version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Row {
    /// The log index of the last batch that changed the key (a bag's key
    /// changes when a value is removed too, so this is not the newest
    /// record's version).
    version: u64,
    /// One record in a set; in a bag, in write order.
    records: Vec<Record>,
}

/// Where a table's rows are. Encoded as the map of rows, wherever they
/// are (a `disc_only` table's are read whole for it).
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "BTreeMap<Vec<u8>, Row>")]
enum Rows {
    /// In memory, by key.
    Memory(BTreeMap<Vec<u8>, Row>),
    /// In a `disc_only` file (an encoding reads them all).
    Disc(DiscRows),
}

impl From<BTreeMap<Vec<u8>, Row>> for Rows {
    fn from(rows: BTreeMap<Vec<u8>, Row>) -> Rows {
        Rows::Memory(rows)
    }
}

impl Serialize for Rows {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Rows::Memory(rows) => rows.serialize(serializer),
            Rows::Disc(disc) => disc
                .range(Bound::Unbounded, None, usize::MAX)
                .into_iter()
                .map(|(key, version, records)| (key, Row { version, records }))
                .collect::<BTreeMap<_, _>>()
                .serialize(serializer),
        }
    }
}

impl PartialEq for Rows {
    fn eq(&self, other: &Rows) -> bool {
        match (self, other) {
            (Rows::Memory(a), Rows::Memory(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Rows {}

/// A row a range read found: its key, version and records (borrowed
/// from memory, or read from a `disc_only` file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found<'a> {
    /// The key.
    pub key: Cow<'a, [u8]>,
    /// Its version.
    pub version: u64,
    /// Its records.
    pub records: Cow<'a, [Record]>,
}

impl<'a> Found<'a> {
    fn borrowed(key: &'a [u8], row: &'a Row) -> Found<'a> {
        Found {
            key: Cow::Borrowed(key),
            version: row.version,
            records: Cow::Borrowed(&row.records[..]),
        }
    }
}

/// A record an index read found, with its key.
pub type IndexHit<'a> = (Cow<'a, [u8]>, Cow<'a, Record>);

/// A key a batch touches, and the values it would hold after the batch.
type Touched<'a> = (&'a [u8], Vec<Cow<'a, [u8]>>);

/// One table's replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    schema: Schema,
    /// Rows by key.
    rows: Rows,
    /// Per index: how many records of each key have each index value
    /// (in memory only: a `disc_only` file keeps its own).
    indexes: Vec<Index>,
    /// The newest fencing token applied per lock.
    fences: BTreeMap<String, u64>,
    /// Records in the table.
    records: u64,
    /// The log index of the last batch applied (committed or aborted).
    applied: u64,
}

impl Table {
    /// An empty table.
    pub fn new(schema: Schema) -> Table {
        let indexes = vec![BTreeMap::new(); schema.indexes.len()];
        Table {
            schema,
            rows: Rows::Memory(BTreeMap::new()),
            indexes,
            fences: BTreeMap::new(),
            records: 0,
            applied: 0,
        }
    }

    /// A table as it was stored: its rows (key, version, records), the
    /// newest token per fenced lock, and its log index. Indexes and the
    /// record count are rebuilt from the rows.
    pub fn from_stored(
        schema: Schema,
        rows: impl IntoIterator<Item = (Vec<u8>, u64, Vec<Record>)>,
        fences: BTreeMap<String, u64>,
        applied: u64,
    ) -> Table {
        let mut table = Table::new(schema);
        for (key, version, records) in rows {
            for record in &records {
                table.index(&key, record);
            }
            table.records += records.len() as u64;
            table.memory().insert(key, Row { version, records });
        }
        table.fences = fences;
        table.applied = applied;
        table
    }

    /// A `disc_only` table, read from `rows`: its record count, fences
    /// and log index as its file keeps them.
    pub fn on_disc(
        schema: Schema,
        rows: DiscRows,
        fences: BTreeMap<String, u64>,
        records: u64,
        applied: u64,
    ) -> Table {
        Table {
            schema,
            rows: Rows::Disc(rows),
            indexes: Vec::new(),
            fences,
            records,
            applied,
        }
    }

    /// The same table in memory (a `disc_only` table read whole, its
    /// indexes rebuilt; a memory table as it is).
    pub fn in_memory(&self) -> Table {
        match &self.rows {
            Rows::Memory(_) => self.clone(),
            Rows::Disc(disc) => Table::from_stored(
                self.schema.clone(),
                disc.range(Bound::Unbounded, None, usize::MAX),
                self.fences.clone(),
                self.applied,
            ),
        }
    }

    /// Why the table cannot be read, if its `disc_only` file failed
    /// (whatever a read answered since then is not to be trusted).
    pub fn unreadable(&self) -> Option<String> {
        match &self.rows {
            Rows::Memory(_) => None,
            Rows::Disc(disc) => disc.failed(),
        }
    }

    /// The rows of a `disc_only` table.
    pub fn disc_rows(&self) -> Option<&DiscRows> {
        match &self.rows {
            Rows::Memory(_) => None,
            Rows::Disc(disc) => Some(disc),
        }
    }

    /// The in-memory rows (a memory table's; a new table is in memory).
    fn memory(&mut self) -> &mut BTreeMap<Vec<u8>, Row> {
        match &mut self.rows {
            Rows::Memory(rows) => rows,
            Rows::Disc(_) => unreachable!("a disc_only table's rows are in its file"),
        }
    }

    /// A key's row, wherever the rows are.
    fn get_row(&self, key: &[u8]) -> Option<Cow<'_, Row>> {
        match &self.rows {
            Rows::Memory(rows) => rows.get(key).map(Cow::Borrowed),
            Rows::Disc(disc) => disc
                .get(key)
                .map(|(version, records)| Cow::Owned(Row { version, records })),
        }
    }

    /// Up to `limit` rows from `from`, below `to`, in key order.
    fn rows_from(&self, from: Bound<&[u8]>, to: Option<&[u8]>, limit: usize) -> Vec<Found<'_>> {
        match &self.rows {
            Rows::Memory(rows) => {
                let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
                rows.range::<[u8], _>((from, upper))
                    .take(limit)
                    .map(|(k, row)| Found::borrowed(k, row))
                    .collect()
            }
            Rows::Disc(disc) => disc
                .range(from, to, limit)
                .into_iter()
                .map(|(key, version, records)| Found {
                    key: Cow::Owned(key),
                    version,
                    records: Cow::Owned(records),
                })
                .collect(),
        }
    }

    /// A key's version and records, if it has any (what a disc copy
    /// stores for it).
    pub fn row(&self, key: &[u8]) -> Option<(u64, Cow<'_, [Record]>)> {
        self.get_row(key).map(|row| match row {
            Cow::Borrowed(row) => (row.version, Cow::Borrowed(&row.records[..])),
            Cow::Owned(row) => (row.version, Cow::Owned(row.records)),
        })
    }

    /// Every fenced lock's newest token.
    pub fn fences(&self) -> Vec<(String, u64)> {
        self.fences.iter().map(|(l, t)| (l.clone(), *t)).collect()
    }

    /// The newest fencing token applied for `lock`.
    pub fn fence(&self, lock: &str) -> Option<u64> {
        self.fences.get(lock).copied()
    }

    /// The same table under another name (a restore under a new name).
    pub fn renamed(mut self, name: String) -> Table {
        self.schema.name = name;
        self
    }

    /// What the table is.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Records in the table.
    pub fn len(&self) -> u64 {
        self.records
    }

    /// Whether the table holds no record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The log index of the last batch applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The records of `key` (at most one unless a bag).
    pub fn read(&self, key: &[u8]) -> Cow<'_, [Record]> {
        match self.get_row(key) {
            None => Cow::Borrowed(&[]),
            Some(Cow::Borrowed(row)) => Cow::Borrowed(&row.records[..]),
            Some(Cow::Owned(row)) => Cow::Owned(row.records),
        }
    }

    /// The version of `key` (the log index of the last batch that changed
    /// it), if it has a record: what a transaction that read the key puts
    /// in its `Version` condition.
    pub fn version(&self, key: &[u8]) -> Option<u64> {
        self.get_row(key).map(|row| row.version)
    }

    /// The keys and records whose value for index `index` (by name) is
    /// `value`, in key order; `None` if the table has no such index.
    pub fn index_read(&self, index: &str, value: &[u8]) -> Option<Vec<IndexHit<'_>>> {
        let i = self.schema.indexes.iter().position(|n| n == index)?;
        let mut found: Vec<IndexHit<'_>> = Vec::new();
        match &self.rows {
            Rows::Memory(rows) => {
                let from = (value.to_vec(), Vec::new());
                let keys = self.indexes[i]
                    .range(from..)
                    .take_while(|((v, _), _)| v == value)
                    .map(|((_, key), _)| key);
                for key in keys {
                    let Some(row) = rows.get(key) else { continue };
                    found.extend(
                        row.records
                            .iter()
                            .filter(|r| r.index_values[i] == value)
                            .map(|r| (Cow::Borrowed(key.as_slice()), Cow::Borrowed(r))),
                    );
                }
            }
            Rows::Disc(disc) => {
                for key in disc.index_keys(i, value) {
                    let Some((_, records)) = disc.get(&key) else {
                        continue;
                    };
                    found.extend(
                        records
                            .into_iter()
                            .filter(|r| r.index_values[i] == value)
                            .map(|r| (Cow::Owned(key.clone()), Cow::Owned(r))),
                    );
                }
            }
        }
        Some(found)
    }

    /// Up to `limit` keys with their records, in key order, from `from`
    /// (inclusive) up to `to` (exclusive; `None`: to the end).
    pub fn range(&self, from: &[u8], to: Option<&[u8]>, limit: usize) -> Vec<Found<'_>> {
        self.rows_from(Bound::Included(from), to, limit)
    }

    /// The first key, in key order.
    pub fn first(&self) -> Option<Cow<'_, [u8]>> {
        self.rows_from(Bound::Unbounded, None, 1)
            .pop()
            .map(|f| f.key)
    }

    /// Up to `limit` rows after `key` (exclusive), in key order.
    pub fn range_after(&self, key: &[u8], limit: usize) -> Vec<Found<'_>> {
        self.rows_from(Bound::Excluded(key), None, limit)
    }

    /// The key after `key`, in key order.
    pub fn next(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        self.range_after(key, 1).pop().map(|f| f.key)
    }

    /// Up to `limit` keys starting with `prefix`, with their records, in
    /// key order.
    pub fn match_prefix(&self, prefix: &[u8], limit: usize) -> Vec<Found<'_>> {
        let end = prefix_end(prefix);
        self.rows_from(Bound::Included(prefix), end.as_deref(), limit)
    }

    /// Apply `batch` at log `index`: every change it made, or why it made
    /// none.
    pub fn apply(
        &mut self,
        index: u64,
        batch: &Batch,
        limits: &TableLimits,
    ) -> Result<Vec<Change>, Abort> {
        self.applied = self.applied.max(index);
        self.check(batch, limits)?;
        Ok(self.commit(index, batch.clone(), true))
    }

    /// The table as restored at log `index` of a replicated table's
    /// group: every row's version becomes `index` (its versions from the
    /// backup belong to another log, and a later write must never find
    /// the version it had read), and so does its log index.
    pub fn restamped(mut self, index: u64) -> Table {
        for row in self.memory().values_mut() {
            row.version = index;
        }
        self.applied = index;
        self
    }

    /// Note that the batch at log `index` was applied and changed
    /// nothing (it was aborted).
    pub fn note_applied(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    /// Why `batch` would change nothing, if it would not apply now.
    pub fn check(&self, batch: &Batch, limits: &TableLimits) -> Result<(), Abort> {
        self.admissible(batch, limits)?;
        for condition in &batch.conditions {
            self.holds(condition)?;
        }
        // Count what the batch would leave before changing anything;
        // only needed if its puts could reach the limit.
        let puts = batch
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Put { .. }))
            .count() as u64;
        if self.records.saturating_add(puts) <= limits.records_max {
            return Ok(());
        }
        let mut after = self.records as i128;
        // The values each key touched would have; a batch touches few keys
        // (a search is cheaper than a map for them), a big one many.
        let mut scratch: Vec<Touched<'_>> = Vec::new();
        let mut many: BTreeMap<&[u8], usize> = BTreeMap::new();
        for op in &batch.ops {
            let key = op_key(op);
            let found = match scratch.len() {
                0..16 => scratch.iter().position(|(k, _)| *k == key),
                _ => {
                    if many.is_empty() {
                        many.extend(scratch.iter().enumerate().map(|(i, (k, _))| (*k, i)));
                    }
                    many.get(key).copied()
                }
            };
            let at = found.unwrap_or_else(|| {
                let values = match self.read(key) {
                    Cow::Borrowed(records) => records
                        .iter()
                        .map(|r| Cow::Borrowed(r.value.as_slice()))
                        .collect(),
                    Cow::Owned(records) => {
                        records.into_iter().map(|r| Cow::Owned(r.value)).collect()
                    }
                };
                scratch.push((key, values));
                if !many.is_empty() {
                    many.insert(key, scratch.len() - 1);
                }
                scratch.len() - 1
            });
            let values = &mut scratch[at].1;
            let before = values.len() as i128;
            match op {
                Op::Put { value, .. } => match self.schema.kind.one_per_key() {
                    false => {
                        if !values.iter().any(|v| **v == **value) {
                            values.push(Cow::Borrowed(value));
                        }
                    }
                    true => *values = vec![Cow::Borrowed(value)],
                },
                Op::Delete { .. } => values.clear(),
                Op::DeleteValue { value, .. } => values.retain(|v| **v != **value),
                // Refused by `admissible`.
                Op::Add { .. } => {}
            }
            after += values.len() as i128 - before;
        }
        if after > limits.records_max as i128 {
            return Err(Abort::Limit {
                limit: "records_max".into(),
                max: limits.records_max,
            });
        }
        Ok(())
    }

    /// Make `batch`'s changes at log `index`; it must have passed
    /// [`check`](Self::check) on the table as it is. The changes are
    /// returned if `told` (someone is to be told of them), else none.
    pub fn commit(&mut self, index: u64, batch: Batch, told: bool) -> Vec<Change> {
        self.applied = self.applied.max(index);
        for condition in batch.conditions {
            if let Condition::Fence { lock, token } = condition {
                self.fences.insert(lock, token);
            }
        }
        let mut changes = Vec::with_capacity(if told { batch.ops.len() } else { 0 });
        for op in batch.ops {
            if let Some(change) = self.change(index, op, told) {
                changes.push(change);
            }
        }
        changes
    }

    /// Limits and shapes, checked before anything else.
    fn admissible(&self, batch: &Batch, limits: &TableLimits) -> Result<(), Abort> {
        let count = batch.conditions.len() + batch.ops.len();
        if count > limits.batch_ops_max {
            return Err(Abort::Limit {
                limit: "batch_ops_max".into(),
                max: limits.batch_ops_max as u64,
            });
        }
        let mut bytes = 0usize;
        for op in &batch.ops {
            let key = op_key(op);
            if key.len() > limits.key_bytes_max {
                return Err(Abort::Limit {
                    limit: "key_bytes_max".into(),
                    max: limits.key_bytes_max as u64,
                });
            }
            bytes += key.len();
            match op {
                Op::Put {
                    value,
                    index_values,
                    ..
                } => {
                    if value.len() > limits.value_bytes_max {
                        return Err(Abort::Limit {
                            limit: "value_bytes_max".into(),
                            max: limits.value_bytes_max as u64,
                        });
                    }
                    if index_values.len() != self.schema.indexes.len() {
                        return Err(Abort::IndexValues {
                            given: index_values.len(),
                            wanted: self.schema.indexes.len(),
                        });
                    }
                    bytes += value.len() + index_values.iter().map(Vec::len).sum::<usize>();
                }
                Op::DeleteValue { value, .. } => bytes += value.len(),
                Op::Delete { .. } => {}
                // A counter's adds reach its replica's merge, never a
                // table's batch.
                Op::Add { key, .. } => {
                    return Err(Abort::BadOp {
                        key: key.clone(),
                        why: format!(
                            "add is for counter tables; table {} is not one",
                            self.schema.name
                        ),
                    });
                }
            }
        }
        if bytes > limits.batch_bytes_max {
            return Err(Abort::Limit {
                limit: "batch_bytes_max".into(),
                max: limits.batch_bytes_max as u64,
            });
        }
        Ok(())
    }

    fn holds(&self, condition: &Condition) -> Result<(), Abort> {
        match condition {
            Condition::Absent { key } => match self.get_row(key).is_some() {
                true => Err(Abort::Exists { key: key.clone() }),
                false => Ok(()),
            },
            Condition::Version { key, version } => match self.version(key) {
                Some(now) if now == *version => Ok(()),
                now => Err(Abort::Changed {
                    key: key.clone(),
                    now,
                }),
            },
            Condition::Fence { lock, token } => match self.fences.get(lock) {
                Some(&newest) if newest > *token => Err(Abort::StaleFence {
                    lock: lock.clone(),
                    token: *token,
                    newest,
                }),
                _ => Ok(()),
            },
        }
    }

    /// Make one change (its batch was checked whole); the change as
    /// subscribers see it, if `told`.
    fn change(&mut self, index: u64, op: Op, told: bool) -> Option<Change> {
        if let Rows::Disc(disc) = &self.rows {
            let disc = disc.clone();
            return self.change_on_disc(&disc, index, op, told);
        }
        match op {
            Op::Put {
                key,
                value,
                index_values,
            } => {
                let change = told.then(|| Change::Put {
                    key: key.clone(),
                    value: value.clone(),
                });
                let record = Record {
                    value,
                    version: index,
                    index_values,
                };
                // Indexed before an old record is unindexed: the counts
                // are sums, so the order does not matter, and the record
                // is moved into its row after.
                self.index(&key, &record);
                // One walk of the rows: the entry serves both cases (the
                // fields are borrowed apart, so the row's key serves the
                // unindexing).
                let kind = self.schema.kind;
                let Rows::Memory(rows) = &mut self.rows else {
                    unreachable!("a disc_only table changes on disc")
                };
                match rows.entry(key) {
                    std::collections::btree_map::Entry::Occupied(mut entry) => {
                        let row = entry.get_mut();
                        row.version = index;
                        let records = &mut row.records;
                        let replaced = match kind.one_per_key() {
                            false => records
                                .iter()
                                .position(|r| r.value == record.value)
                                .map(|at| records.remove(at)),
                            true => records.pop(),
                        };
                        records.push(record);
                        match replaced {
                            Some(old) => unindex(&mut self.indexes, entry.key(), &old),
                            None => self.records += 1,
                        }
                    }
                    std::collections::btree_map::Entry::Vacant(entry) => {
                        entry.insert(Row {
                            version: index,
                            records: vec![record],
                        });
                        self.records += 1;
                    }
                }
                change
            }
            Op::Delete { key } => {
                for old in self.memory().remove(&key).unwrap_or_default().records {
                    self.records -= 1;
                    self.unindex(&key, &old);
                }
                told.then_some(Change::Delete { key })
            }
            Op::DeleteValue { key, value } => {
                let removed = self.memory().get_mut(&key).and_then(|row| {
                    let at = row.records.iter().position(|r| r.value == value)?;
                    row.version = index;
                    Some(row.records.remove(at))
                });
                if let Some(old) = removed {
                    self.records -= 1;
                    self.unindex(&key, &old);
                }
                let rows = self.memory();
                if rows.get(&key).is_some_and(|row| row.records.is_empty()) {
                    rows.remove(&key);
                }
                told.then_some(Change::DeleteValue { key, value })
            }
            // Refused by `admissible`.
            Op::Add { .. } => None,
        }
    }

    /// [`change`](Self::change) for a `disc_only` table: the key's row is
    /// read, changed, and staged for the file (which keeps the indexes).
    fn change_on_disc(
        &mut self,
        disc: &DiscRows,
        index: u64,
        op: Op,
        told: bool,
    ) -> Option<Change> {
        let mut row = disc
            .get(op_key(&op))
            .map(|(version, records)| Row { version, records });
        let (key, change) = match op {
            Op::Put {
                key,
                value,
                index_values,
            } => {
                let change = told.then(|| Change::Put {
                    key: key.clone(),
                    value: value.clone(),
                });
                let row = row.get_or_insert_with(Row::default);
                row.version = index;
                let replaced = match self.schema.kind.one_per_key() {
                    true => row.records.pop(),
                    false => row
                        .records
                        .iter()
                        .position(|r| r.value == value)
                        .map(|at| row.records.remove(at)),
                };
                if replaced.is_none() {
                    self.records += 1;
                }
                row.records.push(Record {
                    value,
                    version: index,
                    index_values,
                });
                (key, change)
            }
            Op::Delete { key } => {
                if let Some(old) = row.take() {
                    self.records -= old.records.len() as u64;
                }
                let change = told.then(|| Change::Delete { key: key.clone() });
                (key, change)
            }
            Op::DeleteValue { key, value } => {
                if let Some(old) = &mut row
                    && let Some(at) = old.records.iter().position(|r| r.value == value)
                {
                    old.records.remove(at);
                    old.version = index;
                    self.records -= 1;
                }
                if row.as_ref().is_some_and(|r| r.records.is_empty()) {
                    row = None;
                }
                let change = told.then(|| Change::DeleteValue {
                    key: key.clone(),
                    value,
                });
                (key, change)
            }
            // Refused by `admissible`.
            Op::Add { .. } => return None,
        };
        disc.stage(index, key, row.map(|r| (r.version, r.records)));
        change
    }

    fn index(&mut self, key: &[u8], record: &Record) {
        for (i, v) in record.index_values.iter().enumerate() {
            *self.indexes[i]
                .entry((v.clone(), key.to_vec()))
                .or_default() += 1;
        }
    }

    fn unindex(&mut self, key: &[u8], record: &Record) {
        unindex(&mut self.indexes, key, record);
    }
}

/// Take one record's index values out of `indexes`.
fn unindex(indexes: &mut [Index], key: &[u8], record: &Record) {
    for (i, v) in record.index_values.iter().enumerate() {
        let entry = (v.clone(), key.to_vec());
        if let Some(count) = indexes[i].get_mut(&entry) {
            *count -= 1;
            if *count == 0 {
                indexes[i].remove(&entry);
            }
        }
    }
}

/// The first key past every key that starts with `prefix` (`None`: no
/// such key, the prefix being empty or all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while end.last() == Some(&0xff) {
        end.pop();
    }
    let last = end.last_mut()?;
    *last += 1;
    Some(end)
}

/// The key an operation changes.
pub(crate) fn op_key(op: &Op) -> &[u8] {
    match op {
        Op::Put { key, .. }
        | Op::Delete { key }
        | Op::DeleteValue { key, .. }
        | Op::Add { key, .. } => key,
    }
}
