//! Replicated tables (mnesia-like), in progress. So far: the state
//! machine of one table ([`state`]): set, ordered set and bag tables,
//! secondary indexes whose values the writer supplies, and conditional
//! batches (key absent, key version, a lock's fencing token) applied at
//! one log index, all or nothing; and the node's local tables
//! ([`local`]), whose one replica is this node, in memory, with
//! subscribers. The Raft groups that will replicate tables, the guest
//! imports and the CLI come next.

pub mod backup;
mod disc;
pub mod local;
mod service;
pub mod state;

#[cfg(test)]
mod tests;

pub use backup::{BackupError, Covered};
pub use local::{Committed, LocalTables, Restored, Sink, TableError, TableInfo, TablesLimits};
pub use service::Tables;
pub use state::{
    Abort, Batch, Change, Condition, Op, Record, Schema, Table, TableKind, TableLimits,
};
