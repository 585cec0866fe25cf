//! Tables (mnesia-like). The state machine of one table ([`state`]): set,
//! ordered set and bag tables, secondary indexes whose values the writer
//! supplies, and conditional batches (key absent, key version, a lock's
//! fencing token) applied at one log index, all or nothing. The node's
//! local tables ([`local`]): one replica, this node, in memory or also on
//! disc, with subscribers. Replicated tables: one Raft group per table
//! ([`group`]) on the nodes that keep a replica, placed through the
//! coordination group ([`replication`]); a transaction over several of
//! them commits in two phases across their groups ([`tx`]). The node's table service
//! ([`Tables`]) routes each request.

mod ap;
pub mod backup;
mod crdt;
pub(crate) mod disc;
pub mod fragments;
mod group;
pub mod local;
pub(crate) mod replication;
mod service;
pub mod state;
mod tx;

#[cfg(test)]
mod tests;

pub use backup::{BackupError, Covered};
pub use local::{Committed, LocalTables, Restored, Sink, TableError, TableInfo, TablesLimits};
pub use replication::ReplicaStatus;
pub use service::Tables;
pub use state::{
    Abort, Batch, Change, Condition, Op, Record, Schema, Table, TableKind, TableLimits,
};
