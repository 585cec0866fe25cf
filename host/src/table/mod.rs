//! Replicated tables (mnesia-like), in progress: so far the state
//! machine of one table ([`state`]): set, ordered set and bag tables,
//! secondary indexes whose values the writer supplies, and conditional
//! batches (key absent, key version, a lock's fencing token) applied at
//! one log index, all or nothing. The Raft groups that will replicate it,
//! the guest imports and the CLI come next.

pub mod state;

#[cfg(test)]
mod tests;

pub use state::{
    Abort, Batch, Change, Condition, Op, Record, Schema, Table, TableKind, TableLimits,
};
