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
use crate::table::ap::{ApReplica, BUCKETS, Durable, Keyed, Round};
use crate::table::disc::DiscFile;
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
            if !entry.spec.kind.conflict_free() || !self.replicates(entry) {
                continue;
            }
            match self.ap(&entry.spec.name) {
                None => {
                    let outcome = self.begin_ap(entry);
                    self.started(&entry.spec.name, outcome);
                }
                Some(ap) => {
                    let disc = self.copy_of(entry) == Some(Copy::Disc);
                    if disc != ap.is_disc()
                        && let Err(why) = self.recopy_ap(&ap, entry, disc)
                    {
                        tracing::error!(table = %entry.spec.name, "cannot change this node's copy type: {why}");
                    }
                }
            }
        }
    }

    /// Where a `disc` replica of conflict-free `entry`'s table keeps its
    /// file: `<coordination data dir>/tables/ap/<table id>/`.
    fn ap_dir(&self, id: u64) -> std::path::PathBuf {
        self.replica_dir(super::AP_DIR, id)
    }

    /// The file of a `disc` replica of `table` (id `id`): made empty.
    fn new_ap_file(&self, table: &str, id: u64) -> Result<DiscFile, String> {
        let schema = Schema {
            name: table.to_string(),
            kind: molt_abi::table::Kind::Set,
            indexes: Vec::new(),
        };
        let dir = self.ap_dir(id);
        let path = crate::table::disc::path_for(&dir, table);
        if path.exists() {
            std::fs::remove_file(&path)
                .map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
        }
        DiscFile::create(&dir, &schema)
    }

    /// Change how this node keeps its replica: to `disc` (every entry
    /// written to a new file), or to `ram` (its file removed).
    fn recopy_ap(&self, ap: &Arc<ApReplica>, entry: &TableEntry, disc: bool) -> Result<(), String> {
        if disc {
            ap.attach(self.new_ap_file(&ap.table, entry.id)?);
        } else if let Some(file) = ap.detach() {
            tokio::spawn(async move { file.remove().await });
        }
        tracing::info!(table = %ap.table, disc, "this node's conflict-free replica changed its copy type");
        Ok(())
    }

    /// The file of this node's `disc` replica `ap` of `entry`'s table:
    /// the one kept before the node restarted, its entries merged into
    /// `ap`, or a new one.
    fn open_ap_file(&self, entry: &TableEntry, ap: &ApReplica) -> Result<DiscFile, String> {
        let path = crate::table::disc::path_for(&self.ap_dir(entry.id), &entry.spec.name);
        if !path.exists() {
            return self.new_ap_file(&entry.spec.name, entry.id);
        }
        let (stored, file) = DiscFile::open(&path)?;
        let entries = stored
            .range(&[], None, usize::MAX)
            .into_iter()
            .filter_map(|f| f.records.first().map(|r| (f.key.clone(), r.clone())))
            .map(|(key, record)| {
                molt_abi::codec::decode(&record.value)
                    .map(|entry| (key.to_vec(), entry))
                    .map_err(|e| {
                        format!(
                            "{}: the entry of key {key:?} does not decode ({e})",
                            path.display()
                        )
                    })
            })
            .collect::<Result<Vec<Keyed>, String>>()?;
        tracing::info!(table = %entry.spec.name, keys = entries.len(), "this node's conflict-free replica loaded its file");
        ap.merge(entries, usize::MAX);
        Ok(file)
    }

    /// Start this node's replica of conflict-free `entry`, empty: the
    /// others fill it.
    fn begin_ap(self: &Arc<Self>, entry: &TableEntry) -> Result<(), String> {
        let node = self.node.upgrade().ok_or("the node stopped")?;
        let spec = &entry.spec;
        let inner = node.inner();
        let local = inner.tables.local();
        let handle = local
            .insert_replica(
                Schema {
                    name: spec.name.clone(),
                    kind: spec.kind,
                    indexes: spec.indexes.clone(),
                },
                None,
            )
            .map_err(|e| e.to_string())?;
        let limits = inner.tables.limits();
        let ap = Arc::new(ApReplica::new(
            spec.name.clone(),
            entry.id,
            random_id(),
            handle,
            limits.table.records_max,
            limits.conflict_free_pending_max,
            self.tombstone_keep,
        ));
        if self.copy_of(entry) == Some(Copy::Disc) {
            match self.open_ap_file(entry, &ap) {
                Ok(file) => ap.attach(file),
                Err(why) => {
                    // A conflict-free replica keeps its rows in memory.
                    let _in_memory = local.remove_replica(&spec.name);
                    return Err(why);
                }
            }
        }
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
            // A conflict-free replica keeps its rows in memory.
            let _in_memory = inner.tables.local().remove_replica(&ap.table);
        }
        if let Some(file) = ap.detach() {
            tokio::spawn(async move { file.remove().await });
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
            // To every peer at once, and the next push after these
            // (writes meanwhile gather in the outbox). What a peer does not
            // take is kept for it, and later pushes join that until it
            // answers again.
            let sends: Vec<_> = self
                .peers_of(&entry)
                .into_iter()
                .filter_map(|peer| {
                    if ap.has_missed(&peer) {
                        ap.missed(&peer, entries.clone());
                        return None;
                    }
                    let (me, ap, entries) = (self.clone(), ap.clone(), entries.clone());
                    Some(tokio::spawn(async move {
                        match me.push_to(&ap, &peer, entries, me.sync_every).await {
                            Ok(()) => ap.heard(&peer),
                            Err((unsent, _)) => ap.missed(&peer, unsent),
                        }
                    }))
                })
                .collect();
            for send in sends {
                let _ = send.await;
            }
        }
    }

    /// Send `entries` to `peer`'s replica of `ap`'s table, in messages of
    /// at most `entries_bytes_max`, each within `timeout`; if one is not
    /// taken, the entries not sent (that one's included) and why.
    async fn push_to(
        &self,
        ap: &ApReplica,
        peer: &str,
        entries: Vec<Keyed>,
        timeout: Duration,
    ) -> Result<(), (Vec<Keyed>, String)> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut chunks = self.chunks(entries).into_iter();
        while let Some(chunk) = chunks.next() {
            let request = TableRequest::ApPush {
                table: ap.table.clone(),
                id: ap.id,
                entries: chunk,
            };
            let why = match self.client.call_within(peer, timeout, &request).await {
                Ok(TableReply::ApMerged) => continue,
                Ok(reply) => format!("a wrong reply to a push: {reply:?}"),
                Err(e) => e.to_string(),
            };
            let TableRequest::ApPush { mut entries, .. } = request else {
                unreachable!("a push")
            };
            entries.extend(chunks.flatten());
            return Err((entries, why));
        }
        Ok(())
    }

    /// How many encoded bytes of entries one message carries, at most:
    /// a quarter of a frame, and 1 MiB (a round of anti-entropy stays
    /// short on a busy node).
    fn entries_bytes_max(&self) -> usize {
        let frame = self
            .dist
            .upgrade()
            .map_or(16 << 20, |d| d.config().frame_bytes_max as usize);
        (frame / 4).min(1 << 20)
    }

    /// `entries` in messages of at most `entries_bytes_max`.
    fn chunks(&self, entries: Vec<Keyed>) -> Vec<Vec<Keyed>> {
        let max = self.entries_bytes_max();
        let mut chunks = vec![Vec::new()];
        let mut bytes = 0;
        for (key, entry) in entries {
            let size = key.len() + entry.approx_bytes() + 8;
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
        // What pushes missed is offered often (a probe is one small
        // request), so a healed peer gets it soon; digests are compared
        // every `sync_every`.
        let tick = self.sync_every.min(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
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
                // Tombstones past `ap_tombstone_keep` go (every replica
                // forgets them by the same clock, and none takes them back).
                ap.forget_deleted();
                for peer in self.peers_of(&entry) {
                    if ap.has_missed(&peer) && ap.syncing(Round::Missed, &peer) {
                        let (me, ap, peer) = (self.clone(), ap.clone(), peer.clone());
                        tokio::spawn(async move {
                            if me.answers(&ap, &peer).await
                                && let Err(e) = me.send_missed(&ap, &peer).await
                            {
                                tracing::debug!(table = %ap.table, %peer, "a push again: {e}");
                            }
                            ap.synced(Round::Missed, &peer);
                        });
                    }
                    if !ap.due(&peer, self.sync_every) || !ap.syncing(Round::Digest, &peer) {
                        continue;
                    }
                    let (me, ap) = (self.clone(), ap.clone());
                    tokio::spawn(async move {
                        // A round that could not swap everything goes on
                        // at once, not a period later.
                        loop {
                            match me.sync_with(&ap, &peer).await {
                                Ok(true) => break,
                                Ok(false) if me.current(&ap) => continue,
                                Ok(false) => break,
                                Err(e) => {
                                    tracing::debug!(table = %ap.table, %peer, "anti-entropy: {e}");
                                    break;
                                }
                            }
                        }
                        ap.synced(Round::Digest, &peer);
                    });
                }
            }
        }
    }

    /// Whether `peer`'s replica of `ap`'s table answers a digest soon.
    async fn answers(&self, ap: &ApReplica, peer: &str) -> bool {
        let timeout = self.sync_every.min(Duration::from_millis(200));
        self.client
            .call_within(peer, timeout, &digest(ap))
            .await
            .is_ok()
    }

    /// Send `peer` what pushes did not deliver (kept again if it does
    /// not answer).
    async fn send_missed(&self, ap: &ApReplica, peer: &str) -> Result<(), String> {
        let missed = ap.take_missed(peer);
        if missed.is_empty() {
            return Ok(());
        }
        // Short: a peer still cut off must not hold up the push after the
        // heal (a failed one is kept and tried again).
        let timeout = self.sync_every.max(Duration::from_millis(100)) * 2;
        match self.push_to(ap, peer, missed, timeout).await {
            Ok(()) => {
                ap.heard(peer);
                Ok(())
            }
            Err((unsent, why)) => {
                ap.missed(peer, unsent);
                Err(why)
            }
        }
    }

    /// One round of anti-entropy with `peer`: whether it swapped
    /// everything that differed.
    async fn sync_with(&self, ap: &ApReplica, peer: &str) -> Result<bool, String> {
        // A peer that answers at all answers a digest at once: a round
        // waiting on one that is cut off must not hold up the round after
        // the heal.
        let timeout = self.sync_every.max(Duration::from_millis(100));
        let theirs = match self.client.call_within(peer, timeout, &digest(ap)).await {
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
        // Whole buckets' keys and hashes, as many as fit: they agree
        // after this round, so the next takes the next ones.
        let (hashes, covered) = ap.hashes_in(&differ, self.entries_bytes_max());
        let complete = covered.len() == differ.len();
        let request = TableRequest::ApKeys {
            table: ap.table.clone(),
            id: ap.id,
            buckets: covered,
            hashes,
        };
        let (theirs, wanted) = match self
            .client
            .call_within(peer, self.quorum_timeout, &request)
            .await
        {
            Ok(TableReply::ApDiff { entries, wanted }) => (entries, wanted),
            Ok(other) => return Err(format!("a wrong reply to a key exchange: {other:?}")),
            Err(e) => return Err(e.to_string()),
        };
        ap.merge(theirs, self.key_bytes_max());
        let mine = ap.entries_of(&wanted);
        self.push_to(ap, peer, mine, self.quorum_timeout)
            .await
            .map_err(|(_, why)| why)?;
        Ok(complete)
    }

    fn key_bytes_max(&self) -> usize {
        self.node.upgrade().map_or(usize::MAX, |n| {
            n.inner().tables.limits().table.key_bytes_max
        })
    }

    /// Answer the table service's requests for conflict-free tables.
    pub(super) async fn serve_ap(
        &self,
        request: TableRequest,
    ) -> Result<TableReply, TableServiceError> {
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
            TableRequest::ApKeys {
                table,
                id,
                buckets,
                hashes,
            } => {
                let ap = self.ap_with(&table, id)?;
                let (entries, wanted) = ap.differences(&buckets, hashes);
                Ok(TableReply::ApDiff { entries, wanted })
            }
            TableRequest::ApWrite { table, batch } => {
                Ok(TableReply::Written(match self.ap(&table) {
                    Some(ap) => {
                        let written = ap.write(batch);
                        answered(&table, written).await
                    }
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
            let written = ap.write(batch);
            return answered(&table, written).await;
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
            disc: ap.is_disc(),
            prepared: 0,
            decisions: 0,
        }
    }

    /// Whether `copy` is one a conflict-free table's replica can be.
    pub(super) fn ap_copy(copy: Copy) -> Result<(), Error> {
        match copy {
            Copy::Ram | Copy::Disc => Ok(()),
            Copy::DiscOnly => Err(Error::Unsupported(
                "disc_only replicas of a conflict-free table (use disc: the table in memory, each entry written to disc)"
                    .into(),
            )),
        }
    }

    /// Restore conflict-free `table` (a backup, renamed as asked) on this
    /// node's replica: the writes that take the replica from what it holds
    /// to what the backup holds (a value put, a key deleted, a counter
    /// moved by the difference, a set's values added and removed), made
    /// as ordinary writes, so every replica converges to them. The
    /// replica's index after them.
    pub(super) async fn ap_restore(&self, table: crate::table::state::Table) -> Result<u64, Error> {
        use molt_abi::table::{Kind, Op};
        let name = table.schema().name.clone();
        let Some(ap) = self.ap(&name) else {
            return Err(Error::Unsupported(format!(
                "restoring conflict-free table {name} on a node that keeps no replica of it (restore on one that does)"
            )));
        };
        let node = self.node.upgrade().ok_or_else(|| Error::Unavailable {
            table: name.clone(),
            why: "the node stopped".into(),
        })?;
        let inner = node.inner();
        let kind = table.schema().kind;
        let now: Vec<(Vec<u8>, Vec<crate::table::state::Record>)> = inner
            .tables
            .local()
            .read(&name, |t| {
                t.range(&[], None, usize::MAX)
                    .into_iter()
                    .map(|f| (f.key.into_owned(), f.records.into_owned()))
                    .collect()
            })
            .map_err(|e| crate::table::service::error(&name, e))?;
        let found = table.range(&[], None, usize::MAX);
        let wanted: std::collections::BTreeMap<&[u8], &[crate::table::state::Record]> =
            found.iter().map(|f| (&*f.key, &*f.records)).collect();
        let count = |records: &[crate::table::state::Record]| -> i64 {
            records
                .first()
                .and_then(|r| molt_abi::codec::decode::<i64>(&r.value).ok())
                .unwrap_or(0)
        };
        let mut ops = Vec::new();
        for (key, records) in &now {
            if !wanted.contains_key(key.as_slice()) {
                ops.push(match kind {
                    Kind::Counter => Op::Add {
                        key: key.clone(),
                        delta: count(records).wrapping_neg(),
                    },
                    _ => Op::Delete { key: key.clone() },
                });
            }
        }
        let mine: std::collections::BTreeMap<&[u8], &Vec<crate::table::state::Record>> =
            now.iter().map(|(k, r)| (k.as_slice(), r)).collect();
        for (key, records) in &wanted {
            let here = mine.get(key).map_or(&[][..], |r| r.as_slice());
            let put = |r: &crate::table::state::Record| Op::Put {
                key: key.to_vec(),
                value: r.value.clone(),
                index_values: r.index_values.clone(),
            };
            match kind {
                Kind::Counter => {
                    let delta = count(records).wrapping_sub(count(here));
                    if delta != 0 {
                        ops.push(Op::Add {
                            key: key.to_vec(),
                            delta,
                        });
                    }
                }
                Kind::OrSet => {
                    for r in here {
                        if !records.iter().any(|w| w.value == r.value) {
                            ops.push(Op::DeleteValue {
                                key: key.to_vec(),
                                value: r.value.clone(),
                            });
                        }
                    }
                    ops.extend(
                        records
                            .iter()
                            .filter(|w| !here.iter().any(|r| r.value == w.value))
                            .map(put),
                    );
                }
                _ => {
                    if here.first().map(|r| &r.value) != records.first().map(|r| &r.value) {
                        ops.extend(records.first().map(put));
                    }
                }
            }
        }
        let per_batch = inner.tables.limits().table.batch_ops_max.max(1);
        let mut index = inner.tables.local().info(&name).map_or(0, |i| i.applied);
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let batch = Batch {
                conditions: Vec::new(),
                ops: ops.by_ref().take(per_batch).collect(),
            };
            match answered(&name, ap.write(batch)).await {
                Reply::Committed(indexes) => index = indexes[0],
                Reply::Error(e) => return Err(e),
                other => {
                    return Err(Error::Unavailable {
                        table: name,
                        why: format!("a restore's write was answered {other:?}"),
                    });
                }
            }
        }
        Ok(index)
    }

    /// Close the files of this node's `disc` replicas (at shutdown).
    pub(super) async fn close_ap(&self) {
        let aps: Vec<Arc<ApReplica>> = self
            .aps
            .lock()
            .expect("replicas poisoned")
            .drain()
            .map(|(_, a)| a)
            .collect();
        for ap in aps {
            if let Some(file) = ap.detach() {
                file.close().await;
            }
            ap.pushed.notify_one();
        }
    }
}

/// Anti-entropy's first step: `ap`'s digest total, for its peer to
/// compare.
fn digest(ap: &ApReplica) -> TableRequest {
    TableRequest::ApSync {
        table: ap.table.clone(),
        id: ap.id,
        total: ap.total(),
    }
}

/// The reply to a write on this node's replica: once durable, for a
/// `disc` one.
async fn answered(table: &str, written: Result<(u64, Option<Durable>), Error>) -> Reply {
    match written {
        Ok((index, None)) => Reply::Committed(vec![index]),
        Ok((index, Some(durable))) => match durable.await {
            Ok(Ok(())) => Reply::Committed(vec![index]),
            Ok(Err(why)) => Reply::Error(Error::Unavailable {
                table: table.to_string(),
                why,
            }),
            Err(_) => Reply::Error(Error::Unavailable {
                table: table.to_string(),
                why: "its disc writer stopped".into(),
            }),
        },
        Err(e) => Reply::Error(e),
    }
}
