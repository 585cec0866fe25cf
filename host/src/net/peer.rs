//! A connected peer node: its connection, its lanes, and what local
//! processes have at stake on it (links and monitors), so that losing the
//! connection fires them with `noconnection`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use molt_abi::{Pid, Ref};

use super::lane::Lane;

/// Links and monitors between local processes and processes of one peer.
#[derive(Default)]
pub(crate) struct Stakes {
    /// (local pid, remote pid) pairs that are linked.
    pub links: HashSet<(Pid, Pid)>,
    /// Monitors local processes hold on remote ones: ref → (watcher, target).
    pub monitors: HashMap<Ref, (Pid, Pid)>,
    /// Monitors remote processes hold on local ones: ref → (target, watcher).
    pub monitored_by: HashMap<Ref, (Pid, Pid)>,
}

impl Stakes {
    /// Links and monitors held, both ways.
    pub fn len(&self) -> usize {
        self.links.len() + self.monitors.len() + self.monitored_by.len()
    }
}

/// One connected node.
pub(crate) struct Peer {
    pub name: String,
    pub node_id: u64,
    pub incarnation: u64,
    pub hidden: bool,
    /// Where it listens, as it told us.
    pub listen: Option<String>,
    pub connection: quinn::Connection,
    /// Control frames (requests, replies, peers).
    pub control: Lane,
    /// Signal lanes, chosen by (sender, receiver).
    pub lanes: Vec<Lane>,
    pub stakes: Mutex<Stakes>,
    /// Room for requests to it waiting for replies
    /// (`requests_in_flight_max`).
    pub requests_out: Arc<Semaphore>,
    /// Room for its requests running here (`requests_in_flight_max`).
    pub requests_in: Arc<Semaphore>,
    /// When the connection came up.
    pub connected_at: std::time::Instant,
    /// When a frame last came from it, in ms after `connected_at` plus
    /// one (0: none yet); each stream's reader stores it as it reads.
    pub heard_at_ms: std::sync::atomic::AtomicU64,
    /// This node opened the connection (rather than accepted it).
    pub opened_here: bool,
}

impl Peer {
    /// How long since a frame last came from it.
    pub fn last_heard(&self) -> Option<std::time::Duration> {
        match self.heard_at_ms.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            at => {
                let heard = std::time::Duration::from_millis(at - 1);
                Some(self.connected_at.elapsed().saturating_sub(heard))
            }
        }
    }

    /// A frame came from it now.
    pub fn heard(&self, now: std::time::Instant) {
        let at = now.saturating_duration_since(self.connected_at).as_millis() as u64 + 1;
        self.heard_at_ms
            .store(at, std::sync::atomic::Ordering::Relaxed);
    }

    /// The lane of a (sender, receiver) pair.
    pub fn lane(&self, from: Pid, to: Pid) -> &Lane {
        // A cheap, stable mix of both pids: the same pair always lands on
        // the same lane.
        let h = from
            .serial
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(to.serial.rotate_left(17))
            ^ from.node.rotate_left(7)
            ^ to.node;
        &self.lanes[(h % self.lanes.len() as u64) as usize]
    }

    /// Hand what is queued on this peer's lanes to `to`, a connection to
    /// the same node that replaces this one, lane by lane, in order.
    pub fn hand_queued_to(&self, to: &Peer) {
        to.control.push(self.control.take_queued());
        for (from, to) in self.lanes.iter().zip(&to.lanes) {
            to.push(from.take_queued());
        }
    }

    /// Close every lane (the connection is gone).
    pub fn close_lanes(&self) {
        self.control.close();
        for lane in &self.lanes {
            lane.close();
        }
    }
}
