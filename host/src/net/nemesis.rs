//! Faults injected on purpose, per link, for fault tests: a frame that
//! arrives from a peer can be dropped, delayed or held until the link is
//! resumed. Distributed behaviour is tested under faults with real nodes,
//! so the hook sits in the transport itself: it acts on whole frames after
//! QUIC delivered them, where the layers above (services, Raft, signals)
//! see exactly what a lossy, slow or stalled network would give them.
//!
//! Faults act on what *this* node receives from a peer; a symmetric fault
//! (a partition) is set on both ends. A link whose frames are all dropped
//! keeps its QUIC connection (a partition shorter than the tick: no node
//! goes down, every request times out); closing connections is the
//! distribution layer's own `shutdown`. Random drops come from a seeded
//! generator, so a schedule of faults replays from its seed (frame arrival
//! order still varies between runs, as threads do).
//!
//! With no fault set, the cost on the receive path is one relaxed atomic
//! load per frame.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The faults on one incoming link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Frames dropped, per thousand (1000: every frame, a cut link).
    pub drop_per_mille: u16,
    /// Added to every frame's delivery; order is kept.
    pub delay: Duration,
    /// Frames are held (in order, backing up to the sender's flow
    /// control) until the link is resumed.
    pub paused: bool,
}

impl LinkFaults {
    /// Every frame dropped.
    pub const CUT: LinkFaults = LinkFaults {
        drop_per_mille: 1000,
        delay: Duration::ZERO,
        paused: false,
    };

    /// Whether this is no fault at all.
    pub fn is_clear(&self) -> bool {
        *self == LinkFaults::default()
    }
}

/// What becomes of one arriving frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fate {
    /// Hand it on.
    Deliver,
    /// Forget it.
    Drop,
}

/// The faults of one node's incoming links, by peer name.
pub struct Nemesis {
    /// Whether any link has a fault: the fast path's only check.
    active: AtomicBool,
    links: Mutex<Links>,
    /// Bumped at every change, to wake held frames.
    changed: watch::Sender<u64>,
}

struct Links {
    faults: HashMap<String, LinkFaults>,
    /// splitmix64 state.
    rng: u64,
}

impl Default for Nemesis {
    fn default() -> Self {
        Nemesis {
            active: AtomicBool::new(false),
            links: Mutex::new(Links {
                faults: HashMap::new(),
                rng: 0x6d6f_6c74,
            }),
            changed: watch::channel(0).0,
        }
    }
}

impl Nemesis {
    /// Seed the generator behind random drops.
    pub fn seed(&self, seed: u64) {
        self.links().rng = seed;
    }

    /// Set the faults on frames arriving from `peer` (a node name),
    /// replacing any set before; a clear set heals the link.
    pub fn set(&self, peer: &str, faults: LinkFaults) {
        let mut links = self.links();
        if faults.is_clear() {
            links.faults.remove(peer);
        } else {
            links.faults.insert(peer.to_string(), faults);
        }
        self.active
            .store(!links.faults.is_empty(), Ordering::Release);
        drop(links);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Drop every frame from `peer`.
    pub fn cut(&self, peer: &str) {
        self.set(peer, LinkFaults::CUT);
    }

    /// Clear the faults on the link from `peer`; held frames go on.
    pub fn heal(&self, peer: &str) {
        self.set(peer, LinkFaults::default());
    }

    /// Clear every fault.
    pub fn heal_all(&self) {
        self.links().faults.clear();
        self.active.store(false, Ordering::Release);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The faults on the link from `peer`.
    pub fn faults(&self, peer: &str) -> LinkFaults {
        self.links().faults.get(peer).copied().unwrap_or_default()
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Links> {
        self.links.lock().expect("nemesis poisoned")
    }

    /// Whether any fault is set (if not, frames need not visit [`Self::fate`]).
    pub(super) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Decide a frame from `peer` that arrived now: wait out a delay or a
    /// pause, then deliver it or drop it.
    #[cfg(test)]
    pub(super) async fn fate(&self, peer: &str) -> Fate {
        self.fate_of(peer, Instant::now()).await
    }

    /// Decide a frame from `peer` that arrived at `arrived`: wait out a
    /// delay (due at `arrived` + delay) or a pause, then deliver it or
    /// drop it.
    pub(super) async fn fate_of(&self, peer: &str, arrived: Instant) -> Fate {
        let mut changes = self.changed.subscribe();
        loop {
            let (faults, roll) = {
                let mut links = self.links();
                let faults = links.faults.get(peer).copied().unwrap_or_default();
                (faults, splitmix64(&mut links.rng) % 1000)
            };
            if faults.paused {
                // Held until the link changes; a dropped sender (the
                // distribution layer gone) ends the wait.
                if changes.changed().await.is_err() {
                    return Fate::Drop;
                }
                continue;
            }
            if roll < u64::from(faults.drop_per_mille) {
                return Fate::Drop;
            }
            if !faults.delay.is_zero() {
                // Delivered at arrival + delay: frames behind it, which
                // arrived later, are due later, so order is kept without
                // adding their delays up.
                tokio::select! {
                    () = tokio::time::sleep_until(arrived + faults.delay) => {}
                    changed = changes.changed() => {
                        if changed.is_ok() {
                            continue;
                        }
                    }
                }
            }
            return Fate::Deliver;
        }
    }
}

/// One step of splitmix64: small, seedable, good enough to pick frames.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_pass_a_clear_link_and_a_cut_link_drops_them() {
        let n = Nemesis::default();
        assert!(!n.is_active());
        assert_eq!(n.fate("b@h").await, Fate::Deliver);
        n.cut("b@h");
        assert!(n.is_active());
        assert_eq!(n.fate("b@h").await, Fate::Drop);
        assert_eq!(n.fate("c@h").await, Fate::Deliver);
        n.heal("b@h");
        assert!(!n.is_active());
        assert_eq!(n.fate("b@h").await, Fate::Deliver);
    }

    #[tokio::test]
    async fn random_drops_follow_the_rate_and_replay_from_the_seed() {
        let n = Nemesis::default();
        let faults = LinkFaults {
            drop_per_mille: 250,
            ..LinkFaults::default()
        };
        n.set("b@h", faults);
        let mut runs = Vec::new();
        for _ in 0..2 {
            n.seed(42);
            let mut fates = Vec::new();
            for _ in 0..4000 {
                fates.push(n.fate("b@h").await == Fate::Drop);
            }
            runs.push(fates);
        }
        assert_eq!(runs[0], runs[1], "the same seed drops the same frames");
        let dropped = runs[0].iter().filter(|d| **d).count();
        assert!((800..1200).contains(&dropped), "{dropped} of 4000 dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_frame_waits_and_a_paused_one_waits_for_resume() {
        let n = std::sync::Arc::new(Nemesis::default());
        n.set(
            "b@h",
            LinkFaults {
                delay: Duration::from_millis(300),
                ..LinkFaults::default()
            },
        );
        let start = Instant::now();
        assert_eq!(n.fate("b@h").await, Fate::Deliver);
        assert_eq!(start.elapsed(), Duration::from_millis(300));

        n.set(
            "b@h",
            LinkFaults {
                paused: true,
                ..LinkFaults::default()
            },
        );
        let held = tokio::spawn({
            let n = n.clone();
            async move { n.fate("b@h").await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!held.is_finished(), "a paused link holds its frames");
        n.heal("b@h");
        assert_eq!(held.await.unwrap(), Fate::Deliver);
    }
}
