//! Conflict-free (AP) tables on this node: their replicas
//! ([`ApReplica`]), started and stopped as the definitions say; writes
//! made on a replica at once and pushed to the others; anti-entropy with
//! each other replica every `ap_sync_interval`; the table service's
//! requests for them.

use std::sync::Arc;
use std::time::Duration;

use molt_abi::table::{Batch, Copy, Error, Reply};

use super::{Replication, TableReply, TableRequest, TableServiceError, random_id};
use crate::cluster::TableEntry;
use crate::table::ap::{ApReplica, BUCKETS, Keyed};
use crate::table::state::Schema;

impl Replication {
    /// This node's replica of conflict-free `table`, if it keeps one.
    pub(super) fn ap(&self, table: &str) -> Option<Arc<ApReplica>> {
        self.aps
            .lock()
            .expect("replicas poisoned")
            .get(table)
            .cloned()
    }

    fn ap_with(&self, table: &str, id: u64) -> Result<Arc<ApReplica>, TableServiceError> {
        self.ap(table)
            .filter(|a| a.id == id)
            .ok_or_else(|| TableServiceError::NoGroup(table.to_string()))
    }

    /// The other replicas' nodes of `entry`'s table.
    fn peers_of(&self, entry: &TableEntry) -> Vec<String> {
        entry
            .spec
            .replicas
            .iter()
            .filter(|r| r.node != self.here)
            .map(|r| r.node.clone())
            .collect()
    }

    /// Keep this node's conflict-free replicas in line with `entries`.
    pub(super) fn reconcile_ap(
        self: &Arc<Self>,
        entries: &std::collections::BTreeMap<String, TableEntry>,
    ) {
        let wanted = |name: &str, id: u64| {
            entries
                .get(name)
                .is_some_and(|e| e.id == id && e.spec.kind.conflict_free() && self.replicates(e))
        };
        let gone: Vec<Arc<ApReplica>> = {
            let mut aps = self.aps.lock().expect("replicas poisoned");
            let names: Vec<String> = aps
                .iter()
                .filter(|(name, a)| !wanted(name, a.id))
                .map(|(name, _)| name.clone())
                .collect();
            names.iter().filter_map(|n| aps.remove(n)).collect()
        };
        for ap in gone {
            self.end_ap(&ap, entries.get(&ap.table));
        }
        for entry in entries.values() {
            if entry.spec.kind.conflict_free()
                && self.replicates(entry)
                && self.ap(&entry.spec.name).is_none()
                && let Err(why) = self.begin_ap(entry)
            {
                tracing::error!(table = %entry.spec.name, "cannot start this node's replica: {why}");
            }
        }
    }

    /// Start this node's replica of conflict-free `entry`, empty: the
    /// others fill it.
    fn begin_ap(self: &Arc<Self>, entry: &TableEntry) -> Result<(), String> {
        let node = self.node.upgrade().ok_or("the node stopped")?;
        let spec = &entry.spec;
        let inner = node.inner();
        let local = inner.tables.local();
        let handle = local
            .insert_replica(Schema {
                name: spec.name.clone(),
                kind: spec.kind,
                indexes: spec.indexes.clone(),
            })
            .map_err(|e| e.to_string())?;
        let records_max = inner.tables.limits().table.records_max;
        let ap = Arc::new(ApReplica::new(
            spec.name.clone(),
            entry.id,
            random_id(),
            handle,
            records_max,
        ));
        self.aps
            .lock()
            .expect("replicas poisoned")
            .insert(spec.name.clone(), ap.clone());
        tokio::spawn(self.clone().push(ap.clone()));
        tracing::info!(table = %spec.name, origin = ap.origin, "this node's conflict-free replica started");
        Ok(())
    }

    fn end_ap(&self, ap: &ApReplica, entry: Option<&TableEntry>) {
        if let Some(node) = self.node.upgrade() {
            let inner = node.inner();
            let reason = match entry.is_some_and(|e| e.id == ap.id) {
                true => "moved",
                false => "deleted",
            };
            let last = inner
                .tables
                .local()
                .info(&ap.table)
                .map_or(0, |i| i.applied);
            inner.tables.ended(&inner, &ap.table, last, reason);
            inner.tables.local().remove_replica(&ap.table);
        }
        // Its pusher ends with it.
        ap.pushed.notify_one();
        tracing::info!(table = %ap.table, "this node's conflict-free replica stopped");
    }

    /// Whether `ap` is still this node's replica of its table.
    fn current(&self, ap: &Arc<ApReplica>) -> bool {
        self.ap(&ap.table).is_some_and(|a| Arc::ptr_eq(&a, ap))
    }

    /// Push what is written on `ap` to the other replicas, as it comes.
    async fn push(self: Arc<Self>, ap: Arc<ApReplica>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = ap.pushed.notified() => {}
                _ = stop.changed() => return,
            }
            if !self.current(&ap) {
                return;
            }
            let entries = ap.take_outbox();
            if entries.is_empty() {
                continue;
            }
            let Some(entry) = self.entry(&ap.table) else {
                continue;
            };
            for chunk in self.chunks(entries) {
                let request = TableRequest::ApPush {
                    table: ap.table.clone(),
                    id: ap.id,
                    entries: chunk,
                };
                for peer in self.peers_of(&entry) {
                    let (client, ap, request) = (self.client.clone(), ap.clone(), request.clone());
                    let timeout = self.quorum_timeout;
                    // Each on its own: a peer cut off does not hold up the
                    // others (what it misses, anti-entropy brings).
                    tokio::spawn(async move {
                        if let Ok(TableReply::ApMerged) =
                            client.call_within(&peer, timeout, &request).await
                        {
                            ap.heard(&peer);
                        }
                    });
                }
            }
        }
    }

    /// How many encoded bytes of entries one message carries, at most.
    fn entries_bytes_max(&self) -> usize {
        self.dist
            .upgrade()
            .map_or(16 << 20, |d| d.config().frame_bytes_max as usize)
            / 4
    }

    /// `entries` in messages of at most `entries_bytes_max`.
    fn chunks(&self, entries: Vec<Keyed>) -> Vec<Vec<Keyed>> {
        let max = self.entries_bytes_max();
        let mut chunks = vec![Vec::new()];
        let mut bytes = 0;
        for (key, entry) in entries {
            let size = key.len() + molt_abi::codec::encode(&entry).len() + 16;
            if bytes + size > max && !chunks.last().is_some_and(Vec::is_empty) {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            chunks.last_mut().expect("one").push((key, entry));
        }
        chunks
    }

    /// Anti-entropy: every `sync_every`, each conflict-free replica here
    /// compares digests with each other replica and swaps what differs.
    pub(super) async fn anti_entropy(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.sync_every) => {}
                _ = stop.changed() => return,
            }
            let aps: Vec<Arc<ApReplica>> = self
                .aps
                .lock()
                .expect("replicas poisoned")
                .values()
                .cloned()
                .collect();
            for ap in aps {
                let Some(entry) = self.entry(&ap.table).filter(|e| e.id == ap.id) else {
                    continue;
                };
                for peer in self.peers_of(&entry) {
                    let (me, ap) = (self.clone(), ap.clone());
                    tokio::spawn(async move {
                        // A round that could not send everything goes on
                        // at once (a few times), not a period later.
                        for _ in 0..8 {
                            match me.sync_with(&ap, &peer).await {
                                Ok(true) => return,
                                Ok(false) => continue,
                                Err(e) => {
                                    tracing::debug!(table = %ap.table, %peer, "anti-entropy: {e}");
                                    return;
                                }
                            }
                        }
                    });
                }
            }
        }
    }

    /// One round of anti-entropy with `peer`: whether it swapped
    /// everything that differed.
    async fn sync_with(&self, ap: &ApReplica, peer: &str) -> Result<bool, String> {
        let timeout = self.quorum_timeout;
        let request = TableRequest::ApSync {
            table: ap.table.clone(),
            id: ap.id,
            total: ap.total(),
        };
        let theirs = match self.client.call_within(peer, timeout, &request).await {
            Ok(TableReply::ApSynced) => {
                ap.heard(peer);
                return Ok(true);
            }
            Ok(TableReply::ApBuckets(buckets)) if buckets.len() == BUCKETS => buckets,
            Ok(other) => return Err(format!("a wrong reply to a sync: {other:?}")),
            Err(e) => return Err(e.to_string()),
        };
        ap.heard(peer);
        let differ: Vec<u32> = ap
            .buckets()
            .iter()
            .zip(&theirs)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i as u32)
            .collect();
        if differ.is_empty() {
            return Ok(true);
        }
        let (entries, mine_complete) = ap.entries_in(&differ, self.entries_bytes_max());
        let request = TableRequest::ApExchange {
            table: ap.table.clone(),
            id: ap.id,
            buckets: differ,
            entries,
        };
        match self.client.call_within(peer, timeout, &request).await {
            Ok(TableReply::ApEntries { entries, complete }) => {
                ap.merge(entries, self.key_bytes_max());
                Ok(mine_complete && complete)
            }
            Ok(other) => Err(format!("a wrong reply to an exchange: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn key_bytes_max(&self) -> usize {
        self.node.upgrade().map_or(usize::MAX, |n| {
            n.inner().tables.limits().table.key_bytes_max
        })
    }

    /// Answer the table service's requests for conflict-free tables.
    pub(super) fn serve_ap(&self, request: TableRequest) -> Result<TableReply, TableServiceError> {
        match request {
            TableRequest::ApPush { table, id, entries } => {
                self.ap_with(&table, id)?
                    .merge(entries, self.key_bytes_max());
                Ok(TableReply::ApMerged)
            }
            TableRequest::ApSync { table, id, total } => {
                let ap = self.ap_with(&table, id)?;
                Ok(match ap.total() == total {
                    true => TableReply::ApSynced,
                    false => TableReply::ApBuckets(ap.buckets()),
                })
            }
            TableRequest::ApExchange {
                table,
                id,
                buckets,
                entries,
            } => {
                let ap = self.ap_with(&table, id)?;
                // Ours first, as they were: theirs merged after would
                // only send back what they just sent.
                let (mine, complete) = ap.entries_in(&buckets, self.entries_bytes_max());
                ap.merge(entries, self.key_bytes_max());
                Ok(TableReply::ApEntries {
                    entries: mine,
                    complete,
                })
            }
            TableRequest::ApWrite { table, batch } => {
                Ok(TableReply::Written(match self.ap(&table) {
                    Some(ap) => match ap.write(batch) {
                        Ok(index) => Reply::Committed(vec![index]),
                        Err(e) => Reply::Error(e),
                    },
                    None => Reply::Error(Error::Unavailable {
                        table,
                        why: "this node keeps no replica of it".into(),
                    }),
                }))
            }
            _ => Err(TableServiceError::Raft(
                "not a conflict-free table's request".into(),
            )),
        }
    }

    /// Write `batch` to conflict-free `table`: on this node's replica, or
    /// on the first other replica that takes it.
    pub(super) async fn ap_write(&self, table: String, batch: Batch) -> Reply {
        if let Some(ap) = self.ap(&table) {
            return match ap.write(batch) {
                Ok(index) => Reply::Committed(vec![index]),
                Err(e) => Reply::Error(e),
            };
        }
        let Some(entry) = self.entry(&table) else {
            return Reply::Error(Error::NoTable(table));
        };
        let request = TableRequest::ApWrite {
            table: table.clone(),
            batch,
        };
        let mut last = Reply::Error(Error::Unavailable {
            table: table.clone(),
            why: "no replica answered".into(),
        });
        for replica in &entry.spec.replicas {
            match self
                .client
                .call_within(&replica.node, self.quorum_timeout, &request)
                .await
            {
                Ok(TableReply::Written(reply)) => {
                    if !matches!(reply, Reply::Error(Error::Unavailable { .. })) {
                        return reply;
                    }
                    last = reply;
                }
                Ok(other) => {
                    last = Reply::Error(Error::Unavailable {
                        table: table.clone(),
                        why: format!("{} answered a write with {other:?}", replica.node),
                    })
                }
                Err(e) => {
                    last = Reply::Error(Error::Unavailable {
                        table: table.clone(),
                        why: format!("{}: {e}", replica.node),
                    })
                }
            }
        }
        last
    }

    /// Whether this node's replica of conflict-free `table` may lag.
    pub(super) fn ap_stale(&self, ap: &ApReplica) -> bool {
        let peers = self
            .entry(&ap.table)
            .map(|e| self.peers_of(&e))
            .unwrap_or_default();
        ap.stale(&peers, self.sync_every * 3 + Duration::from_millis(100))
    }

    /// What a conflict-free replica's status says.
    pub(super) fn ap_status(&self, ap: &ApReplica) -> super::ReplicaStatus {
        let entry = self.entry(&ap.table);
        super::ReplicaStatus {
            member: ap.origin,
            role: "conflict_free".into(),
            term: 0,
            leader: None,
            voters: entry
                .map(|e| e.spec.replicas.iter().map(|r| r.node.clone()).collect())
                .unwrap_or_default(),
            learners: Vec::new(),
            applied: self
                .node
                .upgrade()
                .and_then(|n| n.inner().tables.local().info(&ap.table).ok())
                .map_or(0, |i| i.applied),
            stale: self.ap_stale(ap),
            disc: false,
        }
    }

    /// Whether `copy` is one a conflict-free table's replica can be.
    pub(super) fn ap_copy(copy: Copy) -> Result<(), Error> {
        match copy {
            Copy::Ram => Ok(()),
            _ => Err(Error::Unsupported(
                "disc copies of a conflict-free table (its replicas are ram; one that restarts is filled again by the others)".into(),
            )),
        }
    }
}
