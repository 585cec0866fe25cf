//! `bench-guest`: the behaviour `molt bench` spawns. Its role comes from its
//! init arguments ([`BenchArgs`]); the messages are [`BenchMsg`].
//!
//! Handlers send pre-encoded messages, so the steady state allocates only
//! what decoding an incoming message needs.

use std::time::Duration;

use molt_sdk::abi::tag;
use molt_sdk::{Behaviour, Error, Message, Next, Pid, codec};
use serde::{Deserialize, Serialize};

/// A user tag the sender uses to wake itself up when a send hit a full
/// mailbox and no acknowledgement is outstanding to retry on.
const RETRY_TAG: u32 = 3;
/// How long the sender waits before such a retry.
const RETRY_DELAY: Duration = Duration::from_millis(1);

/// Init arguments: which role this process plays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BenchArgs {
    /// Do nothing; wait (for measuring idle process cost and spawn time).
    Idle,
    /// Answer every [`BenchMsg::Ping`] with [`BenchMsg::Pong`].
    Ponger,
    /// Ping `ponger` `rounds` times, one at a time, then stop `normal`.
    Pinger {
        /// The ponger to ping.
        ponger: Pid,
        /// Round trips to make.
        rounds: u64,
    },
    /// Count [`BenchMsg::Blob`]s, acknowledge every `ack_every` (and the
    /// last) with [`BenchMsg::Ack`] to the sender, stop `normal` after `expect`.
    Sink {
        /// Blobs to receive before stopping.
        expect: u64,
        /// Acknowledge after this many blobs. Must not exceed the sender's
        /// `window`, or both wait for ever.
        ack_every: u64,
    },
    /// Send `count` blobs to `sink`, at most `window` unacknowledged, each
    /// about `payload_bytes` long encoded; stop `normal` once all are acknowledged.
    Sender {
        /// The sink.
        sink: Pid,
        /// Blobs to send.
        count: u64,
        /// Most blobs in flight.
        window: u64,
        /// Target encoded size of each blob message.
        payload_bytes: u32,
    },
    /// Look the cluster name `name` up `reads` times in this node's
    /// replica (`global::whereis`), then stop `normal`; stop with an error
    /// if any lookup missed.
    WhereisGlobal {
        /// The name, registered before the spawn.
        name: String,
        /// Lookups to make.
        reads: u64,
    },
    /// On table [`KV`] (created before the spawn), for each key from
    /// `from` to `to` (excluded): one `op` with the 16-byte value
    /// [`KV_VALUE`] (mnesia's bench record); then stop `normal`, or with
    /// an error if a write failed or a read missed.
    Table {
        /// What to do per key.
        op: TableOp,
        /// The first key.
        from: i64,
        /// The key after the last.
        to: i64,
    },
    /// A link of a ring (Armstrong's ring): pass each
    /// [`BenchMsg::Token`] on to `next` (the first link learns its `next`
    /// from a [`BenchMsg::Next`], once the last is spawned).
    RingLink {
        /// The next link, if known yet.
        next: Option<Pid>,
    },
    /// Ping `ponger` `warmup` times, then `rounds` times timing each round
    /// trip on the node's monotonic clock, one at a time; then send
    /// [`BenchMsg::Latency`] to `report` and stop `normal`. The two-node
    /// latency figure: a process on one node and one on the other, as
    /// Erlang's is measured.
    TimedPinger {
        /// The ponger to ping.
        ponger: Pid,
        /// Round trips to make and time.
        rounds: u64,
        /// Round trips to make first, untimed.
        warmup: u64,
        /// Who is told the percentiles.
        report: Pid,
    },
    /// Spawn `count` [`BenchArgs::Hello`] children on `node`, one at a
    /// time, each awaited (its spawn and its hello) before the next; then
    /// send [`BenchMsg::Spawned`] to `report` and stop `normal`. Erlang's
    /// remote spawn figure, as a process on one node.
    RemoteSpawner {
        /// Where the children run.
        node: String,
        /// Children to spawn.
        count: u64,
        /// Who is told how long it took.
        report: Pid,
    },
    /// Send [`BenchMsg::Hello`] to `parent` and stop `normal`.
    Hello {
        /// Who is greeted.
        parent: Pid,
    },
}

/// The operation of a [`BenchArgs::Table`] run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableOp {
    /// A write transaction of the key.
    Transaction,
    /// A dirty write of the key.
    DirtyWrite,
    /// A dirty read of the key, which must be there.
    DirtyRead,
}

/// The table the [`BenchArgs::Table`] runs use: a set of 16-byte values
/// by integer key, as mnesia's bench's `kv`.
pub static KV: molt_sdk::table::Table<i64, [u8; 16]> = molt_sdk::table::Table::new("kv");

/// The value every [`BenchArgs::Table`] write puts.
pub const KV_VALUE: [u8; 16] = *b"0123456789abcdef";

/// Run `op` on `from..to` of [`KV`].
fn table_run(op: TableOp, from: i64, to: i64) -> Result<(), String> {
    for key in from..to {
        match op {
            TableOp::Transaction => {
                molt_sdk::table::transaction(|tx| tx.write(&KV, &key, &KV_VALUE))
                    .map_err(|e| format!("transaction {key}: {e}"))?;
            }
            TableOp::DirtyWrite => {
                KV.write(&key, &KV_VALUE)
                    .map_err(|e| format!("write {key}: {e}"))?;
            }
            TableOp::DirtyRead => match KV.read(&key) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(format!("read {key}: missing")),
                Err(e) => return Err(format!("read {key}: {e}")),
            },
        }
    }
    Ok(())
}

/// Messages between bench processes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BenchMsg {
    /// Asks for a `Pong` to `from`.
    Ping {
        /// Who to answer.
        from: Pid,
    },
    /// The answer to a `Ping`.
    Pong,
    /// A payload for the sink.
    Blob {
        /// The sender, to acknowledge to.
        from: Pid,
        /// Filler, encoded as one block (`codec::bytes`), not byte by byte.
        #[serde(with = "molt_sdk::codec::bytes")]
        bytes: Vec<u8>,
    },
    /// The sink has received this many blobs.
    Ack(u64),
    /// A ring link's next link.
    Next(Pid),
    /// The ring's token: passed on while `hops` are left, then
    /// [`BenchMsg::Done`] goes to `report`.
    Token {
        /// Hops left.
        hops: u64,
        /// Who is told when none are left.
        report: Pid,
    },
    /// The token made its last hop.
    Done,
    /// A [`BenchArgs::TimedPinger`]'s round trips: median and 99th
    /// percentile, in nanoseconds.
    Latency {
        /// The median round trip.
        p50_ns: u64,
        /// The 99th percentile.
        p99_ns: u64,
    },
    /// A [`BenchArgs::Hello`] child's greeting.
    Hello(Pid),
    /// A [`BenchArgs::RemoteSpawner`] is done.
    Spawned {
        /// Children spawned (each said hello).
        count: u64,
        /// From the first spawn to the last hello, in nanoseconds.
        ns: u64,
    },
}

/// The state of one bench process, per role.
#[derive(Debug, Serialize, Deserialize)]
pub enum Bench {
    /// See [`BenchArgs::Idle`].
    Idle,
    /// See [`BenchArgs::Ponger`].
    Ponger {
        /// `Pong`, encoded.
        pong: Vec<u8>,
    },
    /// See [`BenchArgs::Pinger`].
    Pinger {
        /// The ponger.
        ponger: Pid,
        /// Round trips to make.
        rounds: u64,
        /// Pongs received.
        done: u64,
        /// `Ping { from: self }`, encoded.
        ping: Vec<u8>,
    },
    /// See [`BenchArgs::Sink`].
    Sink {
        /// Blobs expected.
        expect: u64,
        /// Acknowledgement interval.
        ack_every: u64,
        /// Blobs received.
        received: u64,
    },
    /// See [`BenchArgs::Sender`].
    Sender {
        /// The sink.
        sink: Pid,
        /// Blobs to send.
        count: u64,
        /// Most blobs in flight.
        window: u64,
        /// Blobs sent.
        sent: u64,
        /// Blobs acknowledged.
        acked: u64,
        /// Whether a retry wake-up is pending.
        retry_pending: bool,
        /// The blob message, encoded once.
        blob: Vec<u8>,
    },
    /// See [`BenchArgs::RingLink`].
    RingLink {
        /// The next link.
        next: Option<Pid>,
    },
    /// See [`BenchArgs::TimedPinger`].
    TimedPinger {
        /// The ponger.
        ponger: Pid,
        /// Round trips to time.
        rounds: u64,
        /// Untimed round trips still to make first.
        warmup: u64,
        /// Who is told the percentiles.
        report: Pid,
        /// `Ping { from: self }`, encoded.
        ping: Vec<u8>,
        /// When the ping in flight went out (monotonic clock, ns).
        sent_ns: i64,
        /// Each round trip so far, in nanoseconds.
        samples: Vec<u64>,
    },
    /// See [`BenchArgs::RemoteSpawner`].
    RemoteSpawner {
        /// Where the children run.
        node: String,
        /// Children to spawn.
        count: u64,
        /// Children that said hello.
        greeted: u64,
        /// Who is told how long it took.
        report: Pid,
        /// When the first spawn began (monotonic clock, ns).
        started_ns: i64,
    },
}

/// This crate's module name, for the children it spawns.
const MODULE: &str = "bench-guest";

/// Spawn a [`BenchArgs::Hello`] child on `node`, greeting this process.
fn spawn_hello(node: &str) -> Result<(), String> {
    let hello = BenchArgs::Hello {
        parent: molt_sdk::self_pid(),
    };
    molt_sdk::spawn_on(node, MODULE, &hello)
        .map(drop)
        .map_err(|e| format!("remote spawner: {e}"))
}

/// Send the ping of a timed round trip: the time it went out.
fn timed_ping(ponger: Pid, ping: &[u8]) -> Result<i64, String> {
    let sent_ns = molt_sdk::sys::monotonic_ns();
    molt_sdk::send_raw(ponger, tag::DATA, None, ping).map_err(|e| format!("pinger: {e}"))?;
    Ok(sent_ns)
}

/// The value at `p` (0 to 1) of sorted `samples`, nearest rank.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let last = sorted.len().saturating_sub(1);
    sorted
        .get((last as f64 * p).round() as usize)
        .copied()
        .unwrap_or(0)
}

/// The encoded `Blob { from, bytes }` whose length is close to `target`
/// (never below the smallest possible blob).
fn encoded_blob(from: Pid, target: u32) -> Vec<u8> {
    let empty = codec::encode(&BenchMsg::Blob {
        from,
        bytes: Vec::new(),
    })
    .len();
    let mut filler = (target as usize).saturating_sub(empty);
    loop {
        let msg = codec::encode(&BenchMsg::Blob {
            from,
            bytes: vec![0xA5; filler],
        });
        // The length prefix grows by up to 4 bytes with the filler; shrink
        // the filler until the whole message fits the target.
        if msg.len() <= target as usize || filler == 0 {
            return msg;
        }
        filler -= 1;
    }
}

impl Bench {
    /// Sender: send blobs until the window is full or all are sent.
    fn pump(&mut self) -> Next {
        let Bench::Sender {
            sink,
            count,
            window,
            sent,
            acked,
            retry_pending,
            blob,
        } = self
        else {
            return Next::Continue;
        };
        while *sent < *count && *sent < *acked + *window {
            match molt_sdk::send_raw(*sink, tag::DATA, None, blob) {
                Ok(()) => *sent += 1,
                Err(Error::MailboxFull) => {
                    // Retry on the next Ack; if none is outstanding, on a timer.
                    if *sent == *acked && !*retry_pending {
                        let me = molt_sdk::self_pid();
                        match molt_sdk::send_after_raw(RETRY_DELAY, me, RETRY_TAG, &[]) {
                            Ok(_) => *retry_pending = true,
                            Err(e) => {
                                return Next::Stop(format!("sender: cannot schedule retry: {e}"));
                            }
                        }
                    }
                    break;
                }
                Err(e) => return Next::Stop(format!("sender: send failed: {e}")),
            }
        }
        if *acked >= *count {
            Next::stop_normal()
        } else {
            Next::Continue
        }
    }
}

impl Behaviour for Bench {
    type Args = BenchArgs;
    type Msg = BenchMsg;

    fn init(args: BenchArgs) -> Result<Self, String> {
        let me = molt_sdk::self_pid();
        Ok(match args {
            BenchArgs::Idle => Bench::Idle,
            BenchArgs::Ponger => Bench::Ponger {
                pong: codec::encode(&BenchMsg::Pong),
            },
            BenchArgs::Pinger { ponger, rounds } => {
                let ping = codec::encode(&BenchMsg::Ping { from: me });
                if rounds == 0 {
                    return Err(molt_sdk::abi::reason::NORMAL.into());
                }
                molt_sdk::send_raw(ponger, tag::DATA, None, &ping)
                    .map_err(|e| format!("pinger: {e}"))?;
                Bench::Pinger {
                    ponger,
                    rounds,
                    done: 0,
                    ping,
                }
            }
            BenchArgs::Sink { expect, ack_every } => Bench::Sink {
                expect,
                ack_every: ack_every.max(1),
                received: 0,
            },
            BenchArgs::Sender {
                sink,
                count,
                window,
                payload_bytes,
            } => {
                let mut sender = Bench::Sender {
                    sink,
                    count,
                    window: window.max(1),
                    sent: 0,
                    acked: 0,
                    retry_pending: false,
                    blob: encoded_blob(me, payload_bytes),
                };
                if let Next::Stop(reason) = sender.pump() {
                    return Err(reason);
                }
                sender
            }
            BenchArgs::WhereisGlobal { name, reads } => {
                let found = (0..reads)
                    .filter(|_| molt_sdk::global::whereis(&name).is_some())
                    .count() as u64;
                if found != reads {
                    return Err(format!(
                        "whereis_global: {name} missed {} times",
                        reads - found
                    ));
                }
                return Err(molt_sdk::abi::reason::NORMAL.into());
            }
            BenchArgs::Table { op, from, to } => {
                table_run(op, from, to)?;
                return Err(molt_sdk::abi::reason::NORMAL.into());
            }
            BenchArgs::RingLink { next } => Bench::RingLink { next },
            BenchArgs::TimedPinger {
                ponger,
                rounds,
                warmup,
                report,
            } => {
                if rounds == 0 {
                    return Err(molt_sdk::abi::reason::NORMAL.into());
                }
                let ping = codec::encode(&BenchMsg::Ping { from: me });
                let sent_ns = timed_ping(ponger, &ping)?;
                Bench::TimedPinger {
                    ponger,
                    rounds,
                    warmup,
                    report,
                    ping,
                    sent_ns,
                    samples: Vec::with_capacity(rounds.min(1 << 20) as usize),
                }
            }
            BenchArgs::RemoteSpawner {
                node,
                count,
                report,
            } => {
                if count == 0 {
                    return Err(molt_sdk::abi::reason::NORMAL.into());
                }
                let started_ns = molt_sdk::sys::monotonic_ns();
                spawn_hello(&node)?;
                Bench::RemoteSpawner {
                    node,
                    count,
                    greeted: 0,
                    report,
                    started_ns,
                }
            }
            BenchArgs::Hello { parent } => {
                molt_sdk::send(parent, &BenchMsg::Hello(me)).map_err(|e| format!("hello: {e}"))?;
                return Err(molt_sdk::abi::reason::NORMAL.into());
            }
        })
    }

    fn handle(&mut self, msg: Message<BenchMsg>) -> Next {
        match (self, msg) {
            (Bench::Ponger { pong }, Message::Data(BenchMsg::Ping { from })) => {
                if let Err(e) = molt_sdk::send_raw(from, tag::DATA, None, pong) {
                    molt_sdk::warn!("ponger: pong to {from} failed: {e}");
                }
                Next::Continue
            }
            (
                Bench::Pinger {
                    ponger,
                    rounds,
                    done,
                    ping,
                },
                Message::Data(BenchMsg::Pong),
            ) => {
                *done += 1;
                if *done >= *rounds {
                    return Next::stop_normal();
                }
                match molt_sdk::send_raw(*ponger, tag::DATA, None, ping) {
                    Ok(()) => Next::Continue,
                    Err(e) => Next::Stop(format!("pinger: {e}")),
                }
            }
            (
                Bench::Sink {
                    expect,
                    ack_every,
                    received,
                },
                Message::Data(BenchMsg::Blob { from, .. }),
            ) => {
                *received += 1;
                let ack_due = received.is_multiple_of(*ack_every) || *received >= *expect;
                if ack_due && let Err(e) = molt_sdk::send(from, &BenchMsg::Ack(*received)) {
                    molt_sdk::warn!("sink: ack to {from} failed: {e}");
                }
                if *received >= *expect {
                    Next::stop_normal()
                } else {
                    Next::Continue
                }
            }
            (sender @ Bench::Sender { .. }, Message::Data(BenchMsg::Ack(n))) => {
                if let Bench::Sender { acked, .. } = sender {
                    *acked = (*acked).max(n);
                }
                sender.pump()
            }
            (
                Bench::TimedPinger {
                    ponger,
                    rounds,
                    warmup,
                    report,
                    ping,
                    sent_ns,
                    samples,
                },
                Message::Data(BenchMsg::Pong),
            ) => {
                let now = molt_sdk::sys::monotonic_ns();
                match warmup.checked_sub(1) {
                    Some(left) => *warmup = left,
                    None => samples.push(now.saturating_sub(*sent_ns).max(0) as u64),
                }
                if samples.len() as u64 >= *rounds {
                    samples.sort_unstable();
                    let latency = BenchMsg::Latency {
                        p50_ns: percentile(samples, 0.5),
                        p99_ns: percentile(samples, 0.99),
                    };
                    return match molt_sdk::send(*report, &latency) {
                        Ok(()) => Next::stop_normal(),
                        Err(e) => Next::Stop(format!("pinger: report failed: {e}")),
                    };
                }
                match timed_ping(*ponger, ping) {
                    Ok(sent) => {
                        *sent_ns = sent;
                        Next::Continue
                    }
                    Err(e) => Next::Stop(e),
                }
            }
            (
                Bench::RemoteSpawner {
                    node,
                    count,
                    greeted,
                    report,
                    started_ns,
                },
                Message::Data(BenchMsg::Hello(_)),
            ) => {
                *greeted += 1;
                if *greeted < *count {
                    return match spawn_hello(node) {
                        Ok(()) => Next::Continue,
                        Err(e) => Next::Stop(e),
                    };
                }
                let ns = molt_sdk::sys::monotonic_ns().saturating_sub(*started_ns);
                let spawned = BenchMsg::Spawned {
                    count: *count,
                    ns: ns.max(0) as u64,
                };
                match molt_sdk::send(*report, &spawned) {
                    Ok(()) => Next::stop_normal(),
                    Err(e) => Next::Stop(format!("remote spawner: report failed: {e}")),
                }
            }
            (Bench::RingLink { next }, Message::Data(BenchMsg::Next(pid))) => {
                *next = Some(pid);
                Next::Continue
            }
            (
                Bench::RingLink { next: Some(next) },
                Message::Data(BenchMsg::Token { hops, report }),
            ) => {
                let sent = match hops {
                    0 => molt_sdk::send(report, &BenchMsg::Done),
                    _ => molt_sdk::send(
                        *next,
                        &BenchMsg::Token {
                            hops: hops - 1,
                            report,
                        },
                    ),
                };
                match sent {
                    Ok(()) => Next::Continue,
                    Err(e) => Next::Stop(format!("ring link: {e}")),
                }
            }
            (sender @ Bench::Sender { .. }, Message::Other(envelope))
                if envelope.tag == RETRY_TAG =>
            {
                if let Bench::Sender { retry_pending, .. } = sender {
                    *retry_pending = false;
                }
                sender.pump()
            }
            (_, other) => {
                molt_sdk::debug!("bench-guest: ignoring {other:?}");
                Next::Continue
            }
        }
    }
}

molt_sdk::behaviour!(Bench);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.5), 51);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn blobs_are_sized_to_the_target() {
        let from = Pid {
            node: u64::MAX,
            incarnation: u64::MAX - 1,
            serial: 12345,
        };
        for target in [64u32, 250, 256, 300, 1024, 70_000] {
            let blob = encoded_blob(from, target);
            assert!(
                blob.len() <= target as usize && blob.len() + 4 >= target as usize,
                "{target}: {}",
                blob.len()
            );
            assert!(matches!(codec::decode(&blob), Ok(BenchMsg::Blob { .. })));
        }
        let tiny = encoded_blob(from, 1);
        assert_eq!(
            codec::decode::<BenchMsg>(&tiny),
            Ok(BenchMsg::Blob {
                from,
                bytes: vec![]
            })
        );
    }
}
