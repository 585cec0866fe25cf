//! `molt tables` and `molt table ...`: a running node's tables, listed,
//! described, dumped, created and deleted.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use molt_abi::table::{Consistency, Copy, Info, Kind, Replica, Reply, Request, Rows, Spec};
use molt_host::Control;

use crate::remote::Remote;

/// A table kind on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    /// One record per key.
    Set,
    /// One record per key, in key order.
    OrderedSet,
    /// Several records per key.
    Bag,
    /// Conflict-free: one record per key, last writer wins.
    Lww,
    /// Conflict-free: a counter per key.
    Counter,
    /// Conflict-free: an observed-remove set per key.
    OrSet,
}

impl From<KindArg> for Kind {
    fn from(kind: KindArg) -> Kind {
        match kind {
            KindArg::Set => Kind::Set,
            KindArg::OrderedSet => Kind::OrderedSet,
            KindArg::Bag => Kind::Bag,
            KindArg::Lww => Kind::Lww,
            KindArg::Counter => Kind::Counter,
            KindArg::OrSet => Kind::OrSet,
        }
    }
}

/// A copy type on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CopyArg {
    /// In memory.
    Ram,
    /// In memory and on disc.
    Disc,
    /// On disc only, read from there (a table on one node).
    #[value(name = "disc_only")]
    DiscOnly,
}

/// What `molt table` does.
#[derive(clap::Subcommand)]
pub enum TableAction {
    /// Describe a table: kind, indexes, replicas, records, log index,
    /// subscribers.
    Info {
        /// The table.
        name: String,
    },
    /// Print a table's records in key order: key, version, value (text
    /// when 4 bytes or more, all printable; hex otherwise).
    Dump {
        /// The table.
        name: String,
        /// Most records to print (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// Create an empty table, kept in memory on the node.
    Create {
        /// The table.
        name: String,
        /// Its kind.
        #[arg(long, value_enum, default_value = "set")]
        kind: KindArg,
        /// A secondary index (repeat for more); writers supply its values.
        #[arg(long)]
        index: Vec<String>,
        /// How the node keeps it: in memory (`ram`), also on disc (`disc`:
        /// intact after a restart, in the node's data directory), or on
        /// disc only (`disc_only`: read from its file, so it may be larger
        /// than memory; a table on one node); with `--replica`, how each
        /// replica keeps it unless it says.
        #[arg(long, value_enum, default_value = "ram")]
        copy: CopyArg,
        /// Keep it on this node of the cluster too (repeat for more;
        /// `NODE:ram` or `NODE:disc` to choose its copy type, `all` for
        /// every node): a replicated table, one Raft group of its
        /// replicas. Without it, the table is kept on the node alone.
        #[arg(long = "replica", value_name = "NODE[:COPY]")]
        replicas: Vec<String>,
        /// Split it by key into this many fragments, each a replicated
        /// table of its own (`NAME#I/N`) placed over the `--replica`
        /// nodes (the pool; `all` for every node).
        #[arg(long, value_name = "N")]
        fragments: Option<u32>,
        /// With `--fragments`: the nodes of the pool each fragment is
        /// kept on.
        #[arg(long, value_name = "K", default_value_t = 1, requires = "fragments")]
        copies: u32,
    },
    /// Keep a replicated table on one more node too (it catches up while
    /// the table is in use), or change the copy type of a node's replica.
    AddReplica {
        /// The table.
        name: String,
        /// The node.
        node: String,
        /// How that node keeps it.
        #[arg(long, value_enum, default_value = "ram")]
        copy: CopyArg,
    },
    /// Write one record, KEY and VALUE taken as bytes of text (a table
    /// written by the SDK encodes its keys and values: see `dump`): one
    /// batch without conditions, through the table's log.
    Put {
        /// The table.
        name: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Add DELTA (negative: subtract) to KEY's count in a counter table
    /// (KEY as bytes of text), and print the count this node's replica
    /// holds then.
    Add {
        /// The table.
        name: String,
        /// The key.
        key: String,
        /// What to add.
        #[arg(allow_negative_numbers = true)]
        delta: i64,
    },
    /// Read one key (KEY as bytes of text): its version and values, from
    /// the node's replica (said when it may be stale), or with
    /// `--linearizable` as of now.
    Get {
        /// The table.
        name: String,
        /// The key.
        key: String,
        /// Every write committed before the call is seen (needs a quorum
        /// of a replicated table's replicas).
        #[arg(long)]
        linearizable: bool,
    },
    /// Stop keeping a replicated table on a node.
    RemoveReplica {
        /// The table.
        name: String,
        /// The node.
        node: String,
    },
    /// Delete a table and everything in it.
    Delete {
        /// The table.
        name: String,
    },
    /// Write a table, as it is at one log index, to a backup file on the
    /// node's machine (a relative path is taken from here).
    Backup {
        /// The table.
        name: String,
        /// The file.
        file: PathBuf,
    },
    /// Load a backup file on the node's machine into a table: created if
    /// absent, its contents replaced if present (same kind and indexes).
    Restore {
        /// The table.
        name: String,
        /// The file.
        file: PathBuf,
        /// Accept a backup of another table, restored under NAME.
        #[arg(long)]
        rename: bool,
    },
    /// Write every table the node keeps (its local tables and its
    /// replicas), each as it is at one log index, to a backup file each
    /// (NAME.moltbak) in a directory on the node's machine.
    BackupAll {
        /// The directory (made if absent).
        dir: PathBuf,
    },
    /// Load every backup file (*.moltbak) in a directory on the node's
    /// machine into the table it is a backup of.
    RestoreAll {
        /// The directory.
        dir: PathBuf,
    },
}

/// The table commands.
#[derive(clap::Subcommand)]
pub enum TableCommand {
    /// List a running node's tables: kind, records, log index, replicas.
    Tables {
        #[command(flatten)]
        remote: Remote,
        /// `text` or `json`.
        #[arg(long, value_enum, default_value_t)]
        format: crate::remote::Format,
    },
    /// Describe, dump, create, replicate or delete a table of a running
    /// node.
    Table {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: TableAction,
    },
}

/// Ask `target` and unwrap the reply's error into a message.
async fn ask(control: &Control, target: &str, request: Request) -> Result<Reply> {
    match control.table(target, request).await? {
        Reply::Error(e) => bail!("{e}"),
        reply => Ok(reply),
    }
}

async fn info(control: &Control, target: &str, name: &str) -> Result<Info> {
    let table = name.to_string();
    match ask(control, target, Request::Info { table }).await? {
        Reply::Info(info) => Ok(info),
        other => bail!("unexpected reply {other:?}"),
    }
}

fn kind_name(kind: Kind) -> &'static str {
    kind.name()
}

fn copy_of(copy: CopyArg) -> Copy {
    match copy {
        CopyArg::Ram => Copy::Ram,
        CopyArg::Disc => Copy::Disc,
        CopyArg::DiscOnly => Copy::DiscOnly,
    }
}

/// A copy type as the CLI names it.
fn copy_name(copy: Copy) -> &'static str {
    copy.name()
}

/// `NODE` or `NODE:ram` / `NODE:disc` (a node name has one `@`, and may
/// not end in `:ram` or `:disc` itself).
fn replica_arg(arg: &str, copy: Copy) -> Result<Replica> {
    let (node, copy) = match arg.rsplit_once(':') {
        Some((node, "ram")) => (node, Copy::Ram),
        Some((node, "disc")) => (node, Copy::Disc),
        Some((node, "disc_only")) => (node, Copy::DiscOnly),
        _ => (arg, copy),
    };
    if node.is_empty() {
        bail!("--replica {arg:?}: name a node (name@host, or all)");
    }
    Ok(Replica {
        node: node.to_string(),
        copy,
    })
}

fn replicas(info: &Info) -> String {
    let list: Vec<String> = info
        .spec
        .replicas
        .iter()
        .map(|r| format!("{} ({})", r.node, copy_name(r.copy)))
        .collect();
    list.join(", ")
}

/// Bytes as text when there are at least 4 and every one is printable
/// ASCII, else as hex (a short run of printable bytes is more often an
/// encoded number than text).
pub fn show(bytes: &[u8]) -> String {
    if bytes.len() >= 4 && bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}")
    }
}

pub async fn run(command: TableCommand) -> Result<ExitCode> {
    match command {
        TableCommand::Tables { remote, format } => {
            let (control, target) = remote.connect().await?;
            if format == crate::remote::Format::Json {
                let views = molt_host::http::table_views(&control, &target)
                    .await
                    .map_err(anyhow::Error::msg)?;
                crate::remote::print_json(&views)?;
                control.disconnect().await;
                return Ok(ExitCode::SUCCESS);
            }
            let Reply::Tables(names) = ask(&control, &target, Request::List).await? else {
                bail!("unexpected reply to a table list");
            };
            let failed = control.table_failures(&target).await?;
            if names.is_empty() && failed.is_empty() {
                out!("no tables on {target}");
            }
            for name in names {
                // A table deleted since the list is skipped.
                let Ok(i) = info(&control, &target, &name).await else {
                    continue;
                };
                out!(
                    "{name:<24} {:<12} {:>10} records  index {:<10} {}",
                    kind_name(i.spec.kind),
                    i.records,
                    i.index,
                    replicas(&i)
                );
            }
            for (file, why) in failed {
                out!("NOT LOADED {file}: {why}");
            }
        }
        TableCommand::Table { remote, action } => {
            let (control, target) = remote.connect().await?;
            match action {
                TableAction::Info { name } => {
                    let i = info(&control, &target, &name).await?;
                    out!("table       {name}");
                    out!("kind        {}", kind_name(i.spec.kind));
                    if !i.spec.indexes.is_empty() {
                        out!("indexes     {}", i.spec.indexes.join(", "));
                    }
                    out!("replicas    {}", replicas(&i));
                    if let Some(s) = control.table_replica(&target, &name).await?
                        && s.role == "conflict_free"
                    {
                        out!(
                            "merging     conflict-free: writes taken on every replica, anti-entropy{}",
                            if s.stale {
                                " (stale: a replica has not answered lately)"
                            } else {
                                ""
                            }
                        );
                    } else if let Some(s) = control.table_replica(&target, &name).await? {
                        out!(
                            "group       term {}, leader {}, this replica {}{}",
                            s.term,
                            s.leader.as_deref().unwrap_or("none"),
                            s.role,
                            if s.stale { " (stale)" } else { "" }
                        );
                        if !s.learners.is_empty() {
                            out!("catching up {}", s.learners.join(", "));
                        }
                        if s.prepared + s.decisions > 0 {
                            out!(
                                "in flight   {} prepared, {} decided (transactions over several tables)",
                                s.prepared,
                                s.decisions
                            );
                        }
                    }
                    if let Some(why) = control.replica_failure(&target, &name).await? {
                        out!("this replica cannot start (tried again by itself): {why}");
                    }
                    out!("records     {}", i.records);
                    out!("index       {}", i.index);
                    out!("subscribers {}", i.subscribers);
                }
                TableAction::Dump { name, limit } => dump(&control, &target, &name, limit).await?,
                TableAction::Create {
                    name,
                    kind,
                    index,
                    copy,
                    replicas,
                    fragments,
                    copies,
                } => {
                    let copy = copy_of(copy);
                    let replicas = if replicas.is_empty() {
                        vec![Replica {
                            node: String::new(),
                            copy,
                        }]
                    } else {
                        replicas
                            .iter()
                            .map(|r| replica_arg(r, copy))
                            .collect::<Result<Vec<_>>>()?
                    };
                    let spread = replicas.len() > 1 || !replicas[0].node.is_empty();
                    let spec = Spec {
                        name: name.clone(),
                        kind: kind.into(),
                        indexes: index,
                        replicas,
                    };
                    if let Some(count) = fragments {
                        let split = molt_abi::table::Fragments { count, copies };
                        let request = Request::CreateFragmented {
                            spec,
                            fragments: split,
                        };
                        ask(&control, &target, request).await?;
                        let i = info(&control, &target, &name).await?;
                        out!(
                            "created {name} in {count} fragments of {copies} copies each, over {}",
                            self::replicas(&i)
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                    ask(&control, &target, Request::Create(spec)).await?;
                    if spread {
                        let i = info(&control, &target, &name).await?;
                        out!("created {name}, replicated on {}", self::replicas(&i));
                    } else {
                        out!("created {name} on {target}");
                    }
                }
                TableAction::AddReplica { name, node, copy } => {
                    let replica = Replica {
                        node: node.clone(),
                        copy: copy_of(copy),
                    };
                    let table = name.clone();
                    ask(&control, &target, Request::AddReplica { table, replica }).await?;
                    out!("{name} is kept on {node} too");
                }
                TableAction::Put { name, key, value } => {
                    let batch = molt_abi::table::Batch {
                        conditions: Vec::new(),
                        ops: vec![molt_abi::table::Op::Put {
                            key: key.into_bytes(),
                            value: value.into_bytes(),
                            index_values: Vec::new(),
                        }],
                    };
                    let request = Request::Commit(vec![(name.clone(), batch)]);
                    match ask(&control, &target, request).await? {
                        Reply::Committed(indexes) => {
                            out!("written to {name} at index {}", indexes[0]);
                        }
                        other => bail!("unexpected reply {other:?}"),
                    }
                }
                TableAction::Add { name, key, delta } => {
                    let batch = molt_abi::table::Batch {
                        conditions: Vec::new(),
                        ops: vec![molt_abi::table::Op::Add {
                            key: key.clone().into_bytes(),
                            delta,
                        }],
                    };
                    let request = Request::Commit(vec![(name.clone(), batch)]);
                    ask(&control, &target, request).await?;
                    let request = Request::Get {
                        table: name.clone(),
                        key: key.clone().into_bytes(),
                        consistency: Consistency::Dirty,
                    };
                    let Reply::Rows(rows) = ask(&control, &target, request).await? else {
                        bail!("unexpected reply to a read");
                    };
                    let count = rows
                        .rows
                        .first()
                        .and_then(|r| r.records.first())
                        .and_then(|r| molt_abi::codec::decode::<i64>(&r.value).ok())
                        .unwrap_or(0);
                    out!("{name} {key:?}: {count}");
                }
                TableAction::Get {
                    name,
                    key,
                    linearizable,
                } => {
                    let request = Request::Get {
                        table: name,
                        key: key.clone().into_bytes(),
                        consistency: if linearizable {
                            Consistency::Linearizable
                        } else {
                            Consistency::Dirty
                        },
                    };
                    let Reply::Rows(rows) = ask(&control, &target, request).await? else {
                        bail!("unexpected reply to a read");
                    };
                    let stale = if rows.stale {
                        " (this replica may be stale)"
                    } else {
                        ""
                    };
                    match rows.rows.first().filter(|r| !r.records.is_empty()) {
                        None => out!("{key:?}: no record{stale}"),
                        Some(row) => {
                            for record in &row.records {
                                out!(
                                    "{key:?}  version {}  {}{stale}",
                                    row.version,
                                    show(&record.value)
                                );
                            }
                        }
                    }
                }
                TableAction::RemoveReplica { name, node } => {
                    let table = name.clone();
                    let request = Request::RemoveReplica {
                        table,
                        node: node.clone(),
                    };
                    ask(&control, &target, request).await?;
                    out!("{name} is no longer kept on {node}");
                }
                TableAction::Delete { name } => {
                    let table = name.clone();
                    ask(&control, &target, Request::Delete { table }).await?;
                    out!("deleted {name} on {target}");
                }
                TableAction::Backup { name, file } => {
                    let file = std::path::absolute(&file)?;
                    let (index, records) = control
                        .table_backup(&target, &name, &file)
                        .await?
                        .map_err(anyhow::Error::msg)?;
                    out!(
                        "backed up {name} at index {index} ({records} records) to {}",
                        file.display()
                    );
                }
                TableAction::Restore { name, file, rename } => {
                    let file = std::path::absolute(&file)?;
                    let (index, records) = control
                        .table_restore(&target, &name, &file, rename)
                        .await?
                        .map_err(anyhow::Error::msg)?;
                    out!("restored {name} from index {index} ({records} records)");
                }
                TableAction::BackupAll { dir } => {
                    let dir = std::path::absolute(&dir)?;
                    let done = control.table_backup_all(&target, &dir).await?;
                    return Ok(each_table(done, "backed up", &dir));
                }
                TableAction::RestoreAll { dir } => {
                    let dir = std::path::absolute(&dir)?;
                    let done = control.table_restore_all(&target, &dir).await?;
                    return Ok(each_table(done, "restored", &dir));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Print what a backup or restore of every table did, table by table;
/// a failure if any table failed.
fn each_table(
    done: Vec<molt_host::table::backup::TableSummary>,
    did: &str,
    dir: &Path,
) -> ExitCode {
    let mut failed = 0;
    for (name, result) in &done {
        match result {
            Ok((index, records)) => out!("{did} {name} at index {index} ({records} records)"),
            Err(why) => {
                failed += 1;
                eprintln!("{name}: {why}");
            }
        }
    }
    match failed {
        0 => {
            out!("{} tables, {}", done.len(), dir.display());
            ExitCode::SUCCESS
        }
        n => {
            eprintln!("{n} of {} tables failed", done.len());
            ExitCode::FAILURE
        }
    }
}

/// Print every record in pages (ranges from the last key read).
async fn dump(control: &Control, target: &str, name: &str, limit: u64) -> Result<()> {
    let mut from = Vec::new();
    let mut printed = 0u64;
    loop {
        let request = Request::Range {
            table: name.to_string(),
            from: from.clone(),
            to: None,
            limit: 1_000,
            consistency: Consistency::Dirty,
        };
        let Reply::Rows(Rows { rows, more, .. }) = ask(control, target, request).await? else {
            bail!("unexpected reply to a range");
        };
        for row in &rows {
            for record in &row.records {
                if limit > 0 && printed == limit {
                    return Ok(());
                }
                out!(
                    "{}  v{}  {}",
                    show(&row.key),
                    record.version,
                    show(&record.value)
                );
                printed += 1;
            }
        }
        match (more, rows.last()) {
            (true, Some(last)) => {
                // The smallest key after the last one read.
                from = last.key.clone();
                from.push(0);
            }
            _ => return Ok(()),
        }
    }
}
