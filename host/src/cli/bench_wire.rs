//! What `molt bench` sends `examples/bench-guest`: mirrors of the guest's
//! init arguments and of its ping and pong, so the binary need not link a
//! guest crate. The end-to-end tests include this file and check that both
//! encode alike.

use molt_abi::Pid;
use serde::{Deserialize, Serialize};

/// The init arguments of `examples/bench-guest`, mirrored here so the host
/// need not link a guest crate. A test in `tests/` checks both encode alike.
#[derive(Serialize, Debug, Clone)]
pub enum BenchArgs {
    /// Wait for ever.
    Idle,
    /// Answer each `Ping` with a `Pong`.
    Ponger,
    /// Play `rounds` round trips with `ponger`, then exit normally.
    Pinger {
        /// The ponger.
        ponger: Pid,
        /// Round trips.
        rounds: u64,
    },
    /// Take `expect` blobs, acknowledging every `ack_every`, then exit.
    Sink {
        /// Blobs to take.
        expect: u64,
        /// Acknowledge every this many.
        ack_every: u64,
    },
    /// Send `count` blobs of about `payload_bytes` to `sink`, at most
    /// `window` unacknowledged.
    Sender {
        /// The sink.
        sink: Pid,
        /// Blobs to send.
        count: u64,
        /// Most unacknowledged blobs.
        window: u64,
        /// Approximate encoded size of each blob.
        payload_bytes: u32,
    },
    /// Look the cluster name `name` up `reads` times, then stop.
    WhereisGlobal {
        /// The name.
        name: String,
        /// Lookups.
        reads: u64,
    },
    /// One `op` per key of `from..to` on table `kv`, then stop.
    Table {
        /// What to do per key.
        op: TableOp,
        /// The first key.
        from: i64,
        /// The key after the last.
        to: i64,
    },
    /// A ring link passing the token on to `next`.
    RingLink {
        /// The next link, if known yet.
        next: Option<Pid>,
    },
    /// Make `warmup` round trips with `ponger`, then time `rounds`, then
    /// send [`BenchMsg::Latency`] to `report` and exit normally.
    TimedPinger {
        /// The ponger.
        ponger: Pid,
        /// Round trips timed.
        rounds: u64,
        /// Round trips first, untimed.
        warmup: u64,
        /// Who is told the percentiles.
        report: Pid,
    },
    /// Spawn `count` `Hello` children on `node` one at a time, each
    /// awaited, then send [`BenchMsg::Spawned`] to `report` and exit.
    RemoteSpawner {
        /// Where the children run.
        node: String,
        /// Children.
        count: u64,
        /// Who is told how long it took.
        report: Pid,
    },
}

/// bench-guest's `TableOp`.
#[derive(Serialize, Debug, Clone, Copy)]
pub enum TableOp {
    /// A write transaction.
    Transaction,
    /// A dirty write.
    DirtyWrite,
    /// A dirty read.
    DirtyRead,
}

/// `examples/bench-guest`'s `BenchMsg`, mirrored as far as the ring and
/// the two-node latency and spawn figures need it: the other variants
/// only hold the places of the guest's. Checked against the guest's type in `tests/`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum BenchMsg {
    /// `BenchMsg::Ping` (not used by the host).
    Ping {
        /// Who to answer.
        from: Pid,
    },
    /// `BenchMsg::Pong` (not used by the host).
    Pong,
    /// `BenchMsg::Blob` (not used by the host).
    Blob {
        /// The sender.
        from: Pid,
        /// Filler.
        #[serde(with = "molt_abi::codec::bytes")]
        bytes: Vec<u8>,
    },
    /// `BenchMsg::Ack` (not used by the host).
    Ack(u64),
    /// `BenchMsg::Next`: a ring link's next link.
    Next(Pid),
    /// `BenchMsg::Token`.
    Token {
        /// Hops left.
        hops: u64,
        /// Who is told when none are left.
        report: Pid,
    },
    /// `BenchMsg::Done`.
    Done,
    /// `BenchMsg::Latency`: a timed pinger's round trips, in nanoseconds.
    Latency {
        /// The median.
        p50_ns: u64,
        /// The 99th percentile.
        p99_ns: u64,
    },
    /// `BenchMsg::Hello`: a remote spawner's child greeting it.
    Hello(Pid),
    /// `BenchMsg::Spawned`: a remote spawner's children and its time.
    Spawned {
        /// Children spawned.
        count: u64,
        /// From the first spawn to the last hello, in nanoseconds.
        ns: u64,
    },
}
