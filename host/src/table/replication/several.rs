//! Transactions over several replicated tables, on this node: the
//! coordinator of the ones asked here (two phases across the tables'
//! groups, see [`crate::table::tx`]), and the resolver that finishes the
//! ones a coordinator left, in the groups this node leads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use molt_abi::table::{Abort, Batch, Error, Reply};

use super::{Replication, random_id};
use crate::table::group::{Group, GroupCommand, GroupError, GroupOutcome};
use crate::table::tx::{Intent, TxId};

/// Run `commands` at once, each `(table, command)` in its table's group;
/// the outcomes in the same order.
async fn all(
    replication: &Arc<Replication>,
    commands: Vec<(String, GroupCommand)>,
    deadline: tokio::time::Instant,
) -> Vec<Result<GroupOutcome, GroupError>> {
    let tasks: Vec<_> = commands
        .into_iter()
        .map(|(table, command)| {
            let replication = replication.clone();
            tokio::spawn(async move { replication.outcome(&table, command, deadline).await })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(
            task.await
                .unwrap_or_else(|e| Err(GroupError::Failed(e.to_string()))),
        );
    }
    outcomes
}

/// A random duration between half of `d` and `d`.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + (random_id() % 1024) as f64 / 2048.0)
}

/// The error a failed prepare or decision stands for.
fn error_of(table: &str, outcome: Result<GroupOutcome, GroupError>) -> Error {
    match outcome {
        Ok(GroupOutcome::Aborted(abort)) => Error::Aborted {
            table: table.to_string(),
            abort,
        },
        Err(GroupError::NoQuorum) => Error::NoQuorum,
        Err(GroupError::Failed(why)) => Error::Unavailable {
            table: table.to_string(),
            why,
        },
        Ok(other) => Error::Unavailable {
            table: table.to_string(),
            why: format!("the group answered {other:?}"),
        },
    }
}

impl Replication {
    /// Commit `command` in `table`'s group, through this node's replica or
    /// another node's, by `deadline`.
    pub(super) async fn outcome(
        &self,
        table: &str,
        command: GroupCommand,
        deadline: tokio::time::Instant,
    ) -> Result<GroupOutcome, GroupError> {
        match self.group(table) {
            Some(group) => group.commit(command, deadline).await,
            None => match self.entry(table) {
                Some(entry) => self.commit_elsewhere(&entry, command, deadline).await,
                None => Err(GroupError::Failed(format!("table {table} does not exist"))),
            },
        }
    }

    /// Commit one batch per table over several replicated tables, all of
    /// them or none; a transaction that meets another in flight is tried
    /// again until the quorum timeout.
    pub(super) async fn commit_across(self: Arc<Self>, batches: Vec<(String, Batch)>) -> Reply {
        let mut tables: Vec<String> = batches.iter().map(|(t, _)| t.clone()).collect();
        tables.sort();
        if let Some(twice) = tables.windows(2).find(|w| w[0] == w[1]) {
            return Reply::Error(Error::BadRequest(format!(
                "table {} has two batches in one commit",
                twice[0]
            )));
        }
        for table in &tables {
            if !self.defined(table) {
                let local = self
                    .node
                    .upgrade()
                    .is_some_and(|n| n.inner().tables.local().info(table).is_ok());
                return Reply::Error(match local {
                    true => Error::Unsupported(format!(
                        "a transaction over replicated tables and {table}, a table of this node only: make {table} replicated (one replica is enough)"
                    )),
                    false => Error::NoTable(table.clone()),
                });
            }
            if self.conflict_free(table) {
                return Reply::Error(Error::Unsupported(format!(
                    "{table} is conflict-free: it takes no part in a transaction over several tables (write it on its own)"
                )));
            }
        }
        let end = tokio::time::Instant::now() + self.quorum_timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            let reply = self.two_phases(&tables, &batches).await;
            match &reply {
                Reply::Error(Error::Aborted { abort, .. })
                    if abort.transient() && tokio::time::Instant::now() + pause < end =>
                {
                    tokio::time::sleep(jitter(pause)).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                _ => return reply,
            }
        }
    }

    /// One attempt: prepare everywhere, decide in the home table, resolve
    /// the others.
    async fn two_phases(self: &Arc<Self>, tables: &[String], batches: &[(String, Batch)]) -> Reply {
        let tx = TxId {
            node: self.here.clone(),
            n: random_id(),
        };
        let home = tables[0].clone();
        let within = || tokio::time::Instant::now() + self.quorum_timeout;
        let prepares = batches
            .iter()
            .map(|(table, batch)| {
                let intent = Intent {
                    home: home.clone(),
                    tables: tables.to_vec(),
                    batch: batch.clone(),
                };
                let command = GroupCommand::Prepare {
                    tx: tx.clone(),
                    intent,
                };
                (table.clone(), command)
            })
            .collect();
        let mut failure: Option<Error> = None;
        for ((table, _), outcome) in batches.iter().zip(all(self, prepares, within()).await) {
            if let Ok(GroupOutcome::Prepared) = outcome {
                continue;
            }
            let error = error_of(table, outcome);
            // A failed condition says more than a missing quorum.
            let better = matches!(&error, Error::Aborted { abort, .. } if !abort.transient());
            if failure.is_none() || better {
                failure = Some(error);
            }
        }
        let decide = GroupCommand::Decide {
            tx: tx.clone(),
            commit: failure.is_none(),
            tables: tables.to_vec(),
        };
        let (commit, home_index) = match self.outcome(&home, decide, within()).await {
            Ok(GroupOutcome::Decided { commit, index }) => (commit, index),
            // Not decided, or not known to be: a commit may still be
            // decided by a leader resolving what is left; a roll back
            // was the outcome anyway.
            outcome => {
                return Reply::Error(failure.unwrap_or_else(|| error_of(&home, outcome)));
            }
        };
        let others: Vec<(String, GroupCommand)> = tables[1..]
            .iter()
            .map(|table| {
                let command = GroupCommand::Resolve {
                    tx: tx.clone(),
                    commit,
                };
                (table.clone(), command)
            })
            .collect();
        let resolved = all(self, others, within()).await;
        let mut done = Vec::new();
        let mut indexes: HashMap<&str, u64> = HashMap::from([(tables[0].as_str(), home_index)]);
        for (table, outcome) in tables[1..].iter().zip(resolved) {
            match outcome {
                Ok(GroupOutcome::Committed(index)) => {
                    indexes.insert(table, index);
                    done.push(table.clone());
                }
                Ok(_) => done.push(table.clone()),
                // Its leader resolves it later, asking the home table.
                Err(e) => tracing::debug!(%tx, table, ?e, "a table did not resolve at once"),
            }
        }
        if !done.is_empty() {
            let replication = self.clone();
            let forget = GroupCommand::Forget {
                tx: tx.clone(),
                tables: done,
            };
            let deadline = within();
            tokio::spawn(async move { replication.outcome(&home, forget, deadline).await });
        }
        if !commit {
            return Reply::Error(failure.unwrap_or(Error::Aborted {
                table: tables[0].clone(),
                abort: Abort::Expired,
            }));
        }
        // Read your writes: this node's replicas have the batches too (or
        // its reads through others wait for them).
        for (table, index) in &indexes {
            match self.group(table) {
                Some(group) => group.caught_up(*index, self.quorum_timeout).await,
                None => self.wrote(table, *index),
            }
        }
        Reply::Committed(
            batches
                .iter()
                .map(|(t, _)| indexes.get(t.as_str()).copied().unwrap_or(home_index))
                .collect(),
        )
    }

    /// While the node runs: in each group this node leads, resolve the
    /// intents older than `tx_resolve_after` (their coordinator died, or
    /// was cut off, or was too slow), and finish the decisions kept as
    /// long (the coordinator did not tell every other table, or did not
    /// tell this one that they had resolved).
    pub(super) async fn resolve_left(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let every = (self.tx_resolve_after / 4).max(Duration::from_millis(20));
        let mut seen: HashMap<(String, TxId, bool), Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
            let groups: Vec<Arc<Group>> = self
                .groups
                .lock()
                .expect("groups poisoned")
                .values()
                .cloned()
                .collect();
            let mut still = HashSet::new();
            for group in groups {
                if group.leader().map(|(id, _)| id) != Some(group.me) {
                    continue;
                }
                for (tx, intent) in group.machine.intents() {
                    let key = (group.table.clone(), tx, false);
                    let first = *seen.entry(key.clone()).or_insert_with(Instant::now);
                    if first.elapsed() >= self.tx_resolve_after {
                        self.resolve_one(&group.table, &key.1, &intent).await;
                    }
                    still.insert(key);
                }
                for (tx, commit, outstanding) in group.machine.decisions() {
                    let key = (group.table.clone(), tx, true);
                    let first = *seen.entry(key.clone()).or_insert_with(Instant::now);
                    if first.elapsed() >= self.tx_resolve_after {
                        self.finish_decision(&group.table, &key.1, commit, outstanding)
                            .await;
                    }
                    still.insert(key);
                }
            }
            seen.retain(|key, _| still.contains(key));
        }
    }

    /// In `home`, `tx`'s home table: tell the `outstanding` tables the
    /// decision (a table that resolved already has nothing left to do),
    /// then forget it for those that took it.
    async fn finish_decision(&self, home: &str, tx: &TxId, commit: bool, outstanding: Vec<String>) {
        let deadline = tokio::time::Instant::now() + self.quorum_timeout;
        let mut done = Vec::new();
        for table in outstanding {
            let resolve = GroupCommand::Resolve {
                tx: tx.clone(),
                commit,
            };
            match self.outcome(&table, resolve, deadline).await {
                Ok(_) => done.push(table),
                // Deleted since: nothing there to resolve.
                Err(_) if self.coordination().is_some() && self.entry(&table).is_none() => {
                    done.push(table)
                }
                Err(e) => tracing::debug!(home, %tx, table, ?e, "a decision is not taken yet"),
            }
        }
        if !done.is_empty() {
            let forget = GroupCommand::Forget {
                tx: tx.clone(),
                tables: done,
            };
            let _ = self.outcome(home, forget, deadline).await;
        }
    }

    /// Resolve `tx`'s intent in `table` as its home table decides (roll
    /// back, if nothing was decided).
    async fn resolve_one(&self, table: &str, tx: &TxId, intent: &Intent) {
        let deadline = tokio::time::Instant::now() + self.quorum_timeout;
        let decide = GroupCommand::Decide {
            tx: tx.clone(),
            commit: false,
            tables: intent.tables.clone(),
        };
        let commit = match self.outcome(&intent.home, decide, deadline).await {
            Ok(GroupOutcome::Decided { commit, .. }) => commit,
            // The home table was deleted, and its decisions with it: the
            // part here is rolled back rather than held for good.
            Err(_) if self.coordination().is_some() && self.entry(&intent.home).is_none() => {
                tracing::warn!(table, %tx, home = intent.home,
                    "a transaction's deciding table was deleted: its part here is rolled back");
                false
            }
            outcome => {
                tracing::debug!(table, %tx, home = intent.home, ?outcome, "no decision yet for a transaction left in flight");
                return;
            }
        };
        if table != intent.home {
            let resolve = GroupCommand::Resolve {
                tx: tx.clone(),
                commit,
            };
            if let Err(e) = self.outcome(table, resolve, deadline).await {
                tracing::debug!(table, %tx, ?e, "a transaction left in flight is not resolved yet");
                return;
            }
            let forget = GroupCommand::Forget {
                tx: tx.clone(),
                tables: vec![table.to_string()],
            };
            let _ = self.outcome(&intent.home, forget, deadline).await;
        }
        tracing::info!(
            table,
            %tx,
            commit,
            "resolved a transaction over several tables that its coordinator left in flight"
        );
    }
}
