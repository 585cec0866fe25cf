//! The coordination group's openraft type configuration and its member
//! record.

use serde::{Deserialize, Serialize};

use super::command::{Outcome, Proposal};

/// A member of the coordination group, as its membership records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name, `name@host`.
    pub name: String,
    /// Where it listens for cluster connections.
    pub addr: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    /// The coordination group's types for openraft.
    pub Coord:
        D = Proposal,
        R = Outcome,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<Coord>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        Responder = openraft::impls::OneshotResponder<Coord>,
        AsyncRuntime = openraft::TokioRuntime,
);
