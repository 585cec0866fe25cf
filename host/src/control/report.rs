//! A node's figures as one value (`/api/node`, `molt top`'s header, the
//! `node` events of `/api/events`): its counts, its counters and its
//! peers. The same value answers for this node and, over the network, for
//! any other node of the cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Node;
use crate::net::{Distribution, PeerStats};
use crate::runtime::counters::ExitKind;

/// A node's figures. Counters count since the node started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Its name.
    pub name: String,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Processes alive now.
    pub processes: u32,
    /// Processes spawned since start.
    pub spawned: u64,
    /// Behaviours whose init returned.
    pub initialized: u64,
    /// Processes that ended.
    pub exited: u64,
    /// Linear memory of every process, in bytes.
    pub memory_bytes: u64,
    /// Messages waiting in every mailbox.
    pub mailbox_messages: u64,
    /// Messages sent to processes of this node.
    pub messages_local: u64,
    /// Messages sent to processes of other nodes.
    pub messages_remote_out: u64,
    /// Messages that came from processes of other nodes.
    pub messages_remote_in: u64,
    /// Messages processes took from their mailboxes.
    pub messages_received: u64,
    /// Time guests ran, in µs.
    pub cpu_us: u64,
    /// Exits by kind: normal, shutdown, killed, crash, limit, purged,
    /// noproc, other.
    pub exits: BTreeMap<String, u64>,
    /// Processes that moved to a new version.
    pub upgrades: u64,
    /// Migrations refused or failed (the process stayed on its version).
    pub failed_migrations: u64,
    /// Purges of an old version.
    pub purges: u64,
    /// Its connected peers.
    pub peers: Vec<PeerReport>,
}

impl NodeReport {
    /// `node`'s figures now, with the peers of `dist` if it has one.
    pub fn of(node: &Node, dist: Option<&Distribution>) -> NodeReport {
        let stats = node.stats();
        let counted = node.counted();
        NodeReport {
            name: node.config().name.clone(),
            uptime_ms: node.uptime().as_millis() as u64,
            processes: stats.alive,
            spawned: stats.spawned,
            initialized: stats.initialized,
            exited: stats.exited,
            memory_bytes: counted.memory_bytes,
            mailbox_messages: counted.mailbox_messages,
            messages_local: counted.messages_local,
            messages_remote_out: counted.messages_remote_out,
            messages_remote_in: counted.messages_remote_in,
            messages_received: counted.messages_received,
            cpu_us: counted.cpu_ns / 1_000,
            exits: ExitKind::ALL
                .iter()
                .zip(counted.exits)
                .map(|(kind, n)| (kind.name().to_string(), n))
                .collect(),
            upgrades: counted.upgrades,
            failed_migrations: counted.failed_migrations,
            purges: counted.purges,
            peers: dist
                .map(|d| d.peer_stats().into_iter().map(PeerReport::from).collect())
                .unwrap_or_default(),
        }
    }
}

/// A connected peer's link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// The peer's node name.
    pub name: String,
    /// It is hidden.
    pub hidden: bool,
    /// Smoothed round-trip time, in µs.
    pub rtt_us: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// QUIC stream frames sent.
    pub frames_out: u64,
    /// QUIC stream frames received.
    pub frames_in: u64,
    /// Congestion events.
    pub congestion_events: u64,
    /// Packets lost.
    pub lost_packets: u64,
    /// Bytes queued to it, not yet written.
    pub queued_bytes: u64,
    /// Milliseconds this connection has been up.
    pub connected_ms: u64,
    /// Milliseconds since a frame last came from it; none yet: `None`.
    pub last_heard_ms: Option<u64>,
    /// Connections to it made before this one since this node started.
    pub reconnects: u64,
}

impl From<PeerStats> for PeerReport {
    fn from(p: PeerStats) -> PeerReport {
        PeerReport {
            name: p.name,
            hidden: p.hidden,
            rtt_us: p.rtt.as_micros() as u64,
            bytes_out: p.bytes_out,
            bytes_in: p.bytes_in,
            frames_out: p.stream_frames_out,
            frames_in: p.stream_frames_in,
            congestion_events: p.congestion_events,
            lost_packets: p.lost_packets,
            queued_bytes: p.queued_bytes as u64,
            connected_ms: p.connected_for.as_millis() as u64,
            last_heard_ms: p.last_heard.map(|d| d.as_millis() as u64),
            reconnects: p.reconnects,
        }
    }
}
