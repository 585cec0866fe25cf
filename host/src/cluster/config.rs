//! The coordination group's settings and limits, with their defaults.

use std::path::PathBuf;
use std::time::Duration;

/// Where a node keeps its Raft log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogMode {
    /// In redb under the data directory, each batch of appends made
    /// durable (fsync) before it is acknowledged. A restarted node comes
    /// back with its log, its membership and its identity.
    #[default]
    Disc,
    /// In memory only: no fsync on the commit path, so writes are faster,
    /// but a restarted node has lost its log and joins again as a new
    /// member (its old membership is replaced). A cluster whose voters are
    /// all `ram` loses its state if a majority of them restart at once.
    Ram,
}

impl std::str::FromStr for LogMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disc" | "disk" => Ok(LogMode::Disc),
            "ram" => Ok(LogMode::Ram),
            other => Err(format!("unknown log mode {other:?}: disc or ram")),
        }
    }
}

/// How much replicated state the group holds: every limit is checked when
/// a command is applied, and a command past one changes nothing and is
/// answered with the limit's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordLimits {
    /// Cluster names registered at once.
    pub names_max: usize,
    /// Locks with a holder or a waiter at once.
    pub locks_max: usize,
    /// Waiters in one lock's queue.
    pub waiters_per_lock_max: usize,
    /// Waiting requests over all locks.
    pub waiters_max: usize,
    /// Elections with a candidate at once.
    pub elections_max: usize,
    /// Candidates in one election.
    pub candidates_max: usize,
    /// Open node sessions (about one per node).
    pub sessions_max: usize,
    /// Bytes in a name, lock id or election group.
    pub name_bytes_max: usize,
    /// Locks in one request (`trans`).
    pub locks_per_request_max: usize,
    /// Replicated tables in the cluster.
    pub tables_max: usize,
}

impl Default for CoordLimits {
    fn default() -> Self {
        CoordLimits {
            names_max: 100_000,
            locks_max: 100_000,
            waiters_per_lock_max: 10_000,
            waiters_max: 100_000,
            elections_max: 10_000,
            candidates_max: 1_000,
            sessions_max: 1_000,
            name_bytes_max: molt_abi::NAME_BYTES_MAX,
            locks_per_request_max: 64,
            tables_max: 1_000,
        }
    }
}

/// The coordination group's settings.
#[derive(Clone, Debug)]
pub struct CoordConfig {
    /// Where the log lives in `Disc` mode: `<data_dir>/coord.redb`.
    pub data_dir: PathBuf,
    /// Disc or ram.
    pub log_mode: LogMode,
    /// How many voters the group wants (the rest are learners). Always
    /// made odd and at most the number of live members: two voters need
    /// each other for every write, so they are less available than one.
    pub voters: usize,
    /// A node's session lives this long after its last renewal reached
    /// the leader; then everything it held is released.
    pub session_ttl: Duration,
    /// A voter whose session has been gone this long is replaced by a live
    /// learner, if there is one.
    pub voter_replace_after: Duration,
    /// How long a call that needs a quorum tries before it answers
    /// `no_quorum`.
    pub quorum_timeout: Duration,
    /// Raft election timeout, lower bound.
    pub election_timeout_min: Duration,
    /// Raft election timeout, upper bound.
    pub election_timeout_max: Duration,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Take a snapshot (and drop the log before it) every this many
    /// entries.
    pub snapshot_every: u64,
    /// How often each replica of a conflict-free table compares digests
    /// with each other replica (anti-entropy): after a partition heals,
    /// the replicas agree within about this long. A replica that has not
    /// heard from every other for three times this marks its reads stale.
    pub ap_sync_interval: Duration,
    /// How long a conflict-free last-writer-wins table keeps a deleted
    /// key's tombstone (so that an older write arriving late cannot bring
    /// the key back) before forgetting it, freeing its place under
    /// `records_max`. A replica cut off for longer than this may bring a
    /// key deleted meanwhile back when it returns.
    pub ap_tombstone_keep: Duration,
    /// How long a transaction over several replicated tables may hold
    /// keys (prepared, not yet resolved) before the leader of a table it
    /// holds finishes it as its home table decides, rolling it back if
    /// nothing was decided: a coordinator that died or was cut off does
    /// not hold keys for longer.
    pub tx_resolve_after: Duration,
    /// Limits on the replicated state.
    pub limits: CoordLimits,
}

impl CoordConfig {
    /// Defaults, with the log under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> CoordConfig {
        CoordConfig {
            data_dir: data_dir.into(),
            log_mode: LogMode::Disc,
            voters: 3,
            session_ttl: Duration::from_secs(5),
            voter_replace_after: Duration::from_secs(30),
            quorum_timeout: Duration::from_secs(2),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat: Duration::from_millis(50),
            snapshot_every: 10_000,
            ap_sync_interval: Duration::from_millis(500),
            ap_tombstone_keep: Duration::from_secs(3600),
            tx_resolve_after: Duration::from_secs(3),
            limits: CoordLimits::default(),
        }
    }

    /// A node's default data directory: `$MOLT_DATA_DIR/<node>`, else
    /// `$XDG_DATA_HOME/molt/<node>`, else `~/.local/share/molt/<node>`,
    /// else `./molt-data/<node>`.
    pub fn default_data_dir(node: &str) -> PathBuf {
        let base = std::env::var_os("MOLT_DATA_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("molt")))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/molt"))
            })
            .unwrap_or_else(|| PathBuf::from("molt-data"));
        base.join(node.replace(['/', '\\'], "_"))
    }

    /// The number of voters wanted with `members` live members: at most
    /// `voters`, at most `members`, and odd.
    pub fn voters_for(&self, members: usize) -> usize {
        let n = self.voters.max(1).min(members.max(1));
        if n.is_multiple_of(2) { n - 1 } else { n }
    }
}

impl CoordConfig {
    /// openraft's settings for a group named `name` run with these timings
    /// (the coordination group, and each replicated table's group).
    pub(crate) fn raft(&self, name: &str) -> Result<openraft::Config, String> {
        openraft::Config {
            cluster_name: name.into(),
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: 1000,
            // Chunks well inside a frame.
            snapshot_max_chunk_size: 256 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    }
}
