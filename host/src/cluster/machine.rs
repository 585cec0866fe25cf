//! The state machine openraft drives: applies committed entries to the
//! [`State`], takes and installs snapshots (kept durably by the
//! [`Storage`]), and tells its node what each entry did through an
//! [`ApplyObserver`].

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::command::{Command, Outcome, ReqId};
use super::config::CoordLimits;
use super::state::{Event, State};
use super::store::{Storage, StoredSnapshot, snapshot_error};
use super::types::{Coord, Member};

/// Who hears what each applied entry did: the node's coordinator.
pub trait ApplyObserver: Send + Sync {
    /// Entry `index`, proposed as `req`, was applied.
    fn applied(
        &self,
        index: u64,
        req: ReqId,
        command: &Command,
        outcome: &Outcome,
        events: &[Event],
    );
    /// The state was replaced by a snapshot from the leader.
    fn replaced(&self);
}

/// The applied state, as a snapshot holds it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Applied {
    /// Names, locks, elections, sessions.
    pub state: State,
    /// The last entry applied.
    pub last_applied: Option<LogId<u64>>,
    /// The membership as of that entry.
    pub membership: StoredMembership<u64, Member>,
}

impl Applied {
    /// Decode a snapshot's state: as this build writes it, or as builds
    /// before replicated tables wrote it (no table definitions).
    pub fn decode(data: &[u8]) -> Result<Applied, molt_abi::codec::DecodeError> {
        molt_abi::codec::decode::<Applied>(data).or_else(|e| {
            molt_abi::codec::decode::<legacy::Applied>(data)
                .map(Applied::from)
                .map_err(|_| e)
        })
    }
}

/// The snapshot layout of builds before replicated tables.
mod legacy {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{LogId, StoredMembership};
    use serde::Deserialize;

    use super::super::command::{ReqId, SessionId};
    use super::super::state::{ClusterId, Election, Lock, NameEntry, Session, Waiter};
    use super::super::types::Member;

    #[derive(Deserialize)]
    pub(super) struct State {
        cluster: Option<ClusterId>,
        next_token: u64,
        sessions: BTreeMap<SessionId, Session>,
        names: BTreeMap<String, NameEntry>,
        locks: BTreeMap<String, Lock>,
        waiters: BTreeMap<ReqId, Waiter>,
        elections: BTreeMap<String, Election>,
        recent: BTreeMap<u64, BTreeSet<u64>>,
    }

    #[derive(Deserialize)]
    pub(super) struct Applied {
        state: State,
        last_applied: Option<LogId<u64>>,
        membership: StoredMembership<u64, Member>,
    }

    impl From<Applied> for super::Applied {
        fn from(old: Applied) -> super::Applied {
            let s = old.state;
            super::Applied {
                state: super::State {
                    cluster: s.cluster,
                    next_token: s.next_token,
                    sessions: s.sessions,
                    names: s.names,
                    locks: s.locks,
                    waiters: s.waiters,
                    elections: s.elections,
                    recent: s.recent,
                    tables: BTreeMap::new(),
                },
                last_applied: old.last_applied,
                membership: old.membership,
            }
        }
    }
}

/// The applied state, shared with the node for local reads.
pub type Replica = Arc<RwLock<Applied>>;

/// The state machine of one node.
#[derive(Clone)]
pub struct Machine {
    replica: Replica,
    storage: Storage,
    limits: CoordLimits,
    observer: Arc<std::sync::OnceLock<Arc<dyn ApplyObserver>>>,
}

impl Machine {
    /// A state machine that starts from `storage`'s snapshot, if any.
    pub fn new(storage: Storage, limits: CoordLimits) -> Result<Machine, String> {
        let applied = match storage.snapshot() {
            None => Applied::default(),
            Some(snapshot) => Applied::decode(&snapshot.data)
                .map_err(|e| format!("the stored snapshot does not decode: {e}"))?,
        };
        Ok(Machine {
            replica: Arc::new(RwLock::new(applied)),
            storage,
            limits,
            observer: Arc::default(),
        })
    }

    /// The applied state, for reads.
    pub fn replica(&self) -> Replica {
        self.replica.clone()
    }

    /// Tell `observer` of every entry applied from now on.
    pub fn observe(&self, observer: Arc<dyn ApplyObserver>) {
        let _ = self.observer.set(observer);
    }

    fn observer(&self) -> Option<Arc<dyn ApplyObserver>> {
        self.observer.get().cloned()
    }
}

impl RaftSnapshotBuilder<Coord> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Coord>, StorageError<u64>> {
        let (data, last, membership) = {
            let applied = self.replica.read().expect("replica poisoned");
            (
                molt_abi::codec::encode(&*applied),
                applied.last_applied,
                applied.membership.clone(),
            )
        };
        self.storage.keep_snapshot(data, last, membership).await
    }
}

impl RaftStateMachine<Coord> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Member>), StorageError<u64>> {
        let applied = self.replica.read().expect("replica poisoned");
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<Coord>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<Coord>> = entries.into_iter().collect();
        let mut done = Vec::with_capacity(entries.len());
        {
            let mut applied = self.replica.write().expect("replica poisoned");
            for entry in &entries {
                let mut events = Vec::new();
                applied.last_applied = Some(entry.log_id);
                let outcome = match &entry.payload {
                    EntryPayload::Blank => Outcome::Done,
                    EntryPayload::Normal(p) => applied.state.apply(
                        entry.log_id.index,
                        p.req,
                        &p.command,
                        &self.limits,
                        &mut events,
                    ),
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Outcome::Done
                    }
                };
                done.push((outcome, events));
            }
        }
        if let Some(observer) = self.observer() {
            for (entry, (outcome, events)) in entries.iter().zip(&done) {
                if let EntryPayload::Normal(p) = &entry.payload {
                    observer.applied(entry.log_id.index, p.req, &p.command, outcome, events);
                }
            }
        }
        Ok(done.into_iter().map(|(o, _)| o).collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let mut new = Applied::decode(&data).map_err(snapshot_error)?;
        new.last_applied = meta.last_log_id;
        new.membership = meta.last_membership.clone();
        self.storage
            .save_snapshot(StoredSnapshot {
                meta: meta.clone(),
                data,
            })
            .await?;
        *self.replica.write().expect("replica poisoned") = new;
        if let Some(observer) = self.observer() {
            observer.replaced();
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Coord>>, StorageError<u64>> {
        self.storage.current_snapshot().await
    }
}
