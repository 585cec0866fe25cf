//! Fragmented tables on the replication layer: their creation (one
//! replicated table per fragment, placed over the pool) and deletion,
//! and every request that names one, split over its fragments and
//! answered from theirs. Pure parts (names, hash, placement, splitting,
//! merging) are in [`crate::table::fragments`].

use std::sync::Arc;

use molt_abi::table::{Error, Fragments, Info, Replica, Reply, Request, Rows, Spec};

use super::Replication;
use crate::table::fragments::{self, FRAGMENTS_MAX};

/// A fragmented table as the definitions hold it now.
pub(super) struct Fragmented {
    /// Its name.
    pub table: String,
    /// Its fragments' names, by fragment: `None` while one is missing (a
    /// create or delete under way).
    pub names: Vec<Option<String>>,
}

impl Fragmented {
    fn count(&self) -> u32 {
        self.names.len() as u32
    }

    /// Fragment `i`'s name, or why it cannot be reached.
    fn name(&self, i: u32) -> Result<String, Error> {
        self.names[i as usize]
            .clone()
            .ok_or_else(|| Error::Unavailable {
                table: self.table.clone(),
                why: format!(
                    "its fragment {} is not defined (the table is being created or deleted)",
                    fragments::name(&self.table, i, self.count())
                ),
            })
    }

    fn all(&self) -> Result<Vec<String>, Error> {
        (0..self.count()).map(|i| self.name(i)).collect()
    }
}

/// The table a request names, if one (commits name several).
fn named(request: &Request) -> Option<&str> {
    match request {
        Request::Create(spec) => Some(&spec.name),
        Request::Delete { table }
        | Request::Info { table }
        | Request::Get { table, .. }
        | Request::IndexGet { table, .. }
        | Request::Range { table, .. }
        | Request::Next { table, .. }
        | Request::Prefix { table, .. }
        | Request::Subscribe { table }
        | Request::Unsubscribe { table }
        | Request::AddReplica { table, .. }
        | Request::RemoveReplica { table, .. } => Some(table),
        Request::List | Request::Commit(_) | Request::CreateFragmented { .. } => None,
    }
}

/// `request` with its table renamed `to`.
fn renamed(mut request: Request, to: String) -> Request {
    match &mut request {
        Request::Get { table, .. }
        | Request::IndexGet { table, .. }
        | Request::Range { table, .. }
        | Request::Next { table, .. }
        | Request::Prefix { table, .. }
        | Request::Info { table } => *table = to,
        _ => {}
    }
    request
}

impl Replication {
    /// Table `table`'s fragments, if it is a fragmented table.
    pub(super) fn fragmented(&self, table: &str) -> Option<Fragmented> {
        let coord = self.coordination()?;
        let prefix = format!("{table}{}", fragments::MARK);
        let found = coord.tables_starting(&prefix);
        let mut count = None;
        let mut parsed = Vec::new();
        for name in &found {
            if let Some((base, i, n)) = fragments::parse(name)
                && base == table
            {
                count.get_or_insert(n);
                if Some(n) == count {
                    parsed.push((i, name.clone()));
                }
            }
        }
        let count = count?;
        let mut names = vec![None; count as usize];
        for (i, name) in parsed {
            names[i as usize] = Some(name);
        }
        Some(Fragmented {
            table: table.to_string(),
            names,
        })
    }

    /// Whether `request` names a fragmented table (or creates one).
    pub(super) fn names_fragmented(&self, request: &Request) -> bool {
        match request {
            Request::CreateFragmented { .. } => true,
            Request::Commit(batches) => batches.iter().any(|(t, _)| self.fragmented(t).is_some()),
            other => named(other).is_some_and(|t| self.fragmented(t).is_some()),
        }
    }

    /// Answer `request` if it is about a fragmented table; otherwise hand
    /// it back.
    pub(super) async fn answer_fragmented(
        self: Arc<Self>,
        request: Request,
    ) -> Result<Reply, Request> {
        if let Request::CreateFragmented { spec, fragments } = request {
            return Ok(match self.create_fragmented(spec, fragments).await {
                Ok(()) => Reply::Done,
                Err(e) => Reply::Error(e),
            });
        }
        if let Request::Commit(batches) = request {
            if !batches.iter().any(|(t, _)| self.fragmented(t).is_some()) {
                return Err(Request::Commit(batches));
            }
            return Ok(self.commit_fragmented(batches).await);
        }
        let Some(table) = named(&request).and_then(|t| self.fragmented(t)) else {
            return Err(request);
        };
        Ok(match self.answer_on(&table, request).await {
            Ok(reply) => reply,
            Err(e) => Reply::Error(e),
        })
    }

    /// Create table `spec.name` in `fragments.count` fragments over the
    /// pool `spec.replicas`; a fragment that cannot be created takes the
    /// ones made before it away again.
    async fn create_fragmented(&self, spec: Spec, split: Fragments) -> Result<(), Error> {
        if spec.kind.conflict_free() {
            return Err(Error::Unsupported(format!(
                "a fragmented {:?} table (conflict-free tables are not split)",
                spec.kind
            )));
        }
        let most = self
            .node
            .upgrade()
            .map_or(FRAGMENTS_MAX, |n| n.inner().tables.limits().fragments_max);
        if split.count == 0 || split.count > most {
            return Err(Error::BadSpec(format!(
                "a table has 1 to {most} fragments (fragments_max), not {}",
                split.count
            )));
        }
        let pool = self.checked(spec)?;
        if self.coordination().is_some_and(|c| c.has_table(&pool.name)) {
            return Err(Error::Exists(pool.name));
        }
        let size = pool.replicas.len() as u32;
        if split.copies == 0 || split.copies > size {
            return Err(Error::BadSpec(format!(
                "each fragment has 1 to {size} copies (the pool's nodes), not {}",
                split.copies
            )));
        }
        let placed = fragments::placement(&pool.replicas, split.count, split.copies);
        let mut made = Vec::new();
        for (i, replicas) in placed.into_iter().enumerate() {
            let name = fragments::name(&pool.name, i as u32, split.count);
            let part = Spec {
                name: name.clone(),
                kind: pool.kind,
                indexes: pool.indexes.clone(),
                replicas,
            };
            if let Err(e) = self.propose_create(part).await {
                for made in made {
                    let _ = self.delete(made).await;
                }
                return Err(e);
            }
            made.push(name);
        }
        tracing::info!(table = %pool.name, fragments = split.count, copies = split.copies, "created a fragmented table");
        Ok(())
    }

    /// Ask this node's table layer `request` (a fragment's): answered
    /// here or by a node that keeps the fragment.
    async fn ask_here(&self, request: Request) -> Reply {
        match self.node.upgrade() {
            Some(node) => node.table(request).await,
            None => stopping(),
        }
    }

    /// The same request asked of every fragment at once, answered in
    /// fragment order.
    async fn ask_all(&self, requests: Vec<Request>) -> Vec<Reply> {
        let Some(node) = self.node.upgrade() else {
            return vec![stopping(); requests.len()];
        };
        let asked: Vec<_> = requests
            .into_iter()
            .map(|request| {
                let node = node.clone();
                tokio::spawn(async move { node.table(request).await })
            })
            .collect();
        let mut replies = Vec::with_capacity(asked.len());
        for task in asked {
            replies.push(task.await.unwrap_or_else(|e| {
                Reply::Error(Error::Unavailable {
                    table: String::new(),
                    why: format!("a fragment's request failed: {e}"),
                })
            }));
        }
        replies
    }

    /// Answer a request on fragmented table `table`.
    async fn answer_on(&self, table: &Fragmented, request: Request) -> Result<Reply, Error> {
        let name = table.table.clone();
        match request {
            Request::Create(_) => Err(Error::Exists(name)),
            Request::Delete { .. } => {
                for fragment in table.names.iter().flatten() {
                    match self.delete(fragment.clone()).await {
                        Ok(()) | Err(Error::NoTable(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                tracing::info!(table = %name, "deleted a fragmented table");
                Ok(Reply::Done)
            }
            Request::Get { ref key, .. } => {
                let i = fragments::of_key(key, table.count());
                let fragment = table.name(i)?;
                Ok(self.ask_here(renamed(request, fragment)).await)
            }
            Request::Info { .. } => self.info_of(table).await,
            Request::Next {
                key, consistency, ..
            } => {
                let requests = table
                    .all()?
                    .into_iter()
                    .map(|fragment| Request::Next {
                        table: fragment,
                        key: key.clone(),
                        consistency,
                    })
                    .collect();
                // The smallest of each fragment's next key (the others
                // are not "more": each fragment gave its one next key).
                let mut merged = fragments::merge(rows_of(self.ask_all(requests).await)?, 1);
                merged.more = false;
                Ok(Reply::Rows(merged))
            }
            Request::IndexGet { limit, .. }
            | Request::Range { limit, .. }
            | Request::Prefix { limit, .. } => {
                let requests = table
                    .all()?
                    .into_iter()
                    .map(|fragment| renamed(request.clone(), fragment))
                    .collect();
                let parts = rows_of(self.ask_all(requests).await)?;
                let limit = match limit {
                    0 => usize::MAX,
                    n => n as usize,
                };
                Ok(Reply::Rows(fragments::merge(parts, limit)))
            }
            Request::Subscribe { .. } | Request::Unsubscribe { .. } => {
                Err(Error::Unsupported(format!(
                    "subscribing to fragmented table {name} (subscribe to its fragments on the nodes that keep them: {})",
                    table
                        .names
                        .iter()
                        .flatten()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            Request::AddReplica { replica, .. } => {
                self.rebalance(table, Move::Add(replica)).await?;
                Ok(Reply::Done)
            }
            Request::RemoveReplica { node, .. } => {
                self.rebalance(table, Move::Remove(node)).await?;
                Ok(Reply::Done)
            }
            Request::List | Request::Commit(_) | Request::CreateFragmented { .. } => {
                Err(Error::BadRequest("not a request on one table".into()))
            }
        }
    }

    /// What fragmented `table` is: its pool (every node that keeps a
    /// fragment), its records (all fragments'), and the highest index of
    /// its fragments.
    async fn info_of(&self, table: &Fragmented) -> Result<Reply, Error> {
        let requests = table
            .all()?
            .into_iter()
            .map(|fragment| Request::Info { table: fragment })
            .collect();
        let mut spec: Option<Spec> = None;
        let (mut records, mut index) = (0, 0);
        for reply in self.ask_all(requests).await {
            let info = match reply {
                Reply::Info(info) => info,
                Reply::Error(e) => return Err(e),
                other => {
                    return Err(Error::Unavailable {
                        table: table.table.clone(),
                        why: format!("a fragment answered {other:?}"),
                    });
                }
            };
            records += info.records;
            index = index.max(info.index);
            let spec = spec.get_or_insert_with(|| Spec {
                name: table.table.clone(),
                kind: info.spec.kind,
                indexes: info.spec.indexes.clone(),
                replicas: Vec::new(),
            });
            for replica in info.spec.replicas {
                if !spec
                    .replicas
                    .iter()
                    .any(|r: &Replica| r.node == replica.node)
                {
                    spec.replicas.push(replica);
                }
            }
        }
        let mut spec = spec.ok_or_else(|| Error::NoTable(table.table.clone()))?;
        spec.replicas.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(Reply::Info(Info {
            spec,
            records,
            index,
            subscribers: 0,
        }))
    }

    /// A commit that names fragmented tables: each one's batch split over
    /// its fragments, all committed together (in several groups: in two
    /// phases), and each table's index the highest of its fragments'.
    async fn commit_fragmented(&self, batches: Vec<(String, molt_abi::table::Batch)>) -> Reply {
        let mut split = Vec::new();
        // Per batch asked for: the positions of its parts in `split`.
        let mut parts_of: Vec<Vec<usize>> = Vec::new();
        for (table, batch) in batches {
            match self.fragmented(&table) {
                None => {
                    parts_of.push(vec![split.len()]);
                    split.push((table, batch));
                }
                Some(fragmented) => {
                    let mut at = Vec::new();
                    for (i, part) in fragments::split(batch, fragmented.count()) {
                        match fragmented.name(i) {
                            Ok(name) => {
                                at.push(split.len());
                                split.push((name, part));
                            }
                            Err(e) => return Reply::Error(e),
                        }
                    }
                    parts_of.push(at);
                }
            }
        }
        match self.ask_here(Request::Commit(split)).await {
            Reply::Committed(indexes) => Reply::Committed(
                parts_of
                    .iter()
                    .map(|at| {
                        at.iter()
                            .map(|&i| indexes.get(i).copied().unwrap_or(0))
                            .max()
                            .unwrap_or(0)
                    })
                    .collect(),
            ),
            other => other,
        }
    }
}

/// A change of a fragmented table's pool.
enum Move {
    /// A node joins the pool (or changes its copy type).
    Add(Replica),
    /// A node leaves it.
    Remove(String),
}

impl Replication {
    /// Change fragmented `table`'s pool, and move its fragments to the
    /// placement over the new pool: for each fragment, its new replicas
    /// are added first, and its old ones removed only once every new one
    /// is a voter of the fragment's group (so a fragment never rests on
    /// replicas that have not caught up). The pool is every node that
    /// keeps a fragment, in name order.
    async fn rebalance(&self, table: &Fragmented, change: Move) -> Result<(), Error> {
        let names = table.all()?;
        let specs: Vec<Spec> = names
            .iter()
            .map(|n| {
                self.entry(n)
                    .map(|e| e.spec)
                    .ok_or_else(|| Error::NoTable(n.clone()))
            })
            .collect::<Result<_, _>>()?;
        let copies = specs.iter().map(|s| s.replicas.len()).max().unwrap_or(1) as u32;
        if copies < 2 {
            return Err(Error::Unsupported(format!(
                "moving the fragments of table {} (one copy each: a fragment would rest on a replica that is leaving while it moves; create it with two copies or more)",
                table.table
            )));
        }
        let mut pool: Vec<Replica> = Vec::new();
        for spec in &specs {
            for r in &spec.replicas {
                if !pool.iter().any(|p| p.node == r.node) {
                    pool.push(r.clone());
                }
            }
        }
        let name = &table.table;
        match change {
            Move::Add(mut replica) => {
                if replica.node.is_empty() {
                    replica.node = self.here.clone();
                }
                let members = self.coordination().map(|c| c.members()).unwrap_or_default();
                if !members.iter().any(|m| m.name == replica.node) {
                    return Err(Error::BadSpec(format!(
                        "{} is not a node of this cluster (molt cluster lists them)",
                        replica.node
                    )));
                }
                match pool.iter_mut().find(|p| p.node == replica.node) {
                    Some(p) => p.copy = replica.copy,
                    None => pool.push(replica),
                }
            }
            Move::Remove(node) => {
                let node = if node.is_empty() {
                    self.here.clone()
                } else {
                    node
                };
                if !pool.iter().any(|p| p.node == node) {
                    return Err(Error::BadSpec(format!(
                        "{node} keeps no fragment of table {name}"
                    )));
                }
                pool.retain(|p| p.node != node);
                if (pool.len() as u32) < copies {
                    return Err(Error::BadSpec(format!(
                        "without {node}, {} nodes would be left for {copies} copies of each fragment of table {name}",
                        pool.len()
                    )));
                }
            }
        }
        pool.sort_by(|a, b| a.node.cmp(&b.node));
        let placed = fragments::placement(&pool, table.count(), copies);
        let mut moved = 0;
        for ((fragment, spec), wanted) in names.iter().zip(&specs).zip(placed) {
            // Copy types changed in place first.
            for r in &wanted {
                if spec
                    .replicas
                    .iter()
                    .any(|x| x.node == r.node && x.copy != r.copy)
                {
                    self.change_replicas(fragment, super::Change::Add(r.clone()))
                        .await?;
                }
            }
            // Then one replica in for one out, each in once it is a voter
            // and each out once the group no longer counts it: the group
            // never needs a replica that is leaving to reach a quorum.
            let ins: Vec<&Replica> = wanted
                .iter()
                .filter(|r| !spec.replicas.iter().any(|x| x.node == r.node))
                .collect();
            let outs: Vec<&Replica> = spec
                .replicas
                .iter()
                .filter(|r| !wanted.iter().any(|w| w.node == r.node))
                .collect();
            for (add, remove) in ins.iter().zip(&outs) {
                self.change_replicas(fragment, super::Change::Add((*add).clone()))
                    .await?;
                self.voter_on(fragment, &add.node, true).await?;
                self.change_replicas(fragment, super::Change::Remove(remove.node.clone()))
                    .await?;
                self.voter_on(fragment, &add.node, false)
                    .await
                    .map_err(|e| match e {
                        Error::Unavailable { table, .. } => Error::Unavailable {
                            table,
                            why: format!("{} did not leave the group in time", remove.node),
                        },
                        e => e,
                    })?;
                moved += 1;
            }
        }
        tracing::info!(table = %name, moved, pool = pool.len(), "moved a fragmented table's fragments");
        Ok(())
    }

    /// Wait until `node`'s replica of `fragment` is a voter of its group,
    /// as `node` sees it, and, unless `with_leaving`, the group's voters
    /// are just those of its definition (at most ten quorum timeouts).
    async fn voter_on(&self, fragment: &str, node: &str, with_leaving: bool) -> Result<(), Error> {
        let (Some(here), Some(dist)) = (self.node.upgrade(), self.dist.upgrade()) else {
            return Err(Error::Unavailable {
                table: fragment.to_string(),
                why: "the node is stopping".into(),
            });
        };
        let control = crate::control::Control::new(here, dist).map_err(|e| Error::Unavailable {
            table: fragment.to_string(),
            why: e.to_string(),
        })?;
        let deadline = tokio::time::Instant::now() + self.quorum_timeout * 10;
        loop {
            let defined: Vec<String> = self
                .entry(fragment)
                .map(|e| e.spec.replicas.into_iter().map(|r| r.node).collect())
                .unwrap_or_default();
            if let Ok(Some(status)) = control.table_replica(node, fragment).await
                && status.voters.iter().any(|v| v == node)
                && (status.role == "leader" || status.role == "follower")
                && (with_leaving || status.voters.iter().all(|v| defined.contains(v)))
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    table: fragment.to_string(),
                    why: format!(
                        "{node}'s new replica did not become a voter in time; its old replicas are kept"
                    ),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The answer of a node that is stopping.
fn stopping() -> Reply {
    Reply::Error(Error::Unavailable {
        table: String::new(),
        why: "the node is stopping".into(),
    })
}

/// Fragments' answers as rows, or the first error.
fn rows_of(replies: Vec<Reply>) -> Result<Vec<Rows>, Error> {
    replies
        .into_iter()
        .map(|reply| match reply {
            Reply::Rows(rows) => Ok(rows),
            Reply::Error(e) => Err(e),
            other => Err(Error::Unavailable {
                table: String::new(),
                why: format!("a fragment answered {other:?}"),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_consistency_is_kept_when_a_read_is_renamed() {
        use molt_abi::table::Request;
        let read = Request::Range {
            table: "t".into(),
            from: vec![1],
            to: None,
            limit: 3,
            consistency: molt_abi::table::Consistency::Linearizable,
        };
        let Request::Range {
            table, consistency, ..
        } = super::renamed(read, "t#0/2".into())
        else {
            panic!("a range");
        };
        assert_eq!(
            (table.as_str(), consistency),
            ("t#0/2", molt_abi::table::Consistency::Linearizable)
        );
    }
}
