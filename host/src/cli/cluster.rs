//! `molt cluster`, `molt names`, `molt locks`, `molt elections`: the
//! coordination group as a running node sees it.

use std::process::ExitCode;

use anyhow::Result;
use molt_host::http::{ElectionView, LockView, NameView};

use crate::remote::{Format, Remote, print_json};

/// What `molt cluster` does.
#[derive(clap::Subcommand)]
pub enum ClusterAction {
    /// Take a node out of the coordination group (a voter is replaced by
    /// a live learner when there is one).
    Remove {
        /// The node's name, `name@host`.
        member: String,
    },
    /// Make a learner that is up a voter now, beyond the `--voters` the
    /// group keeps by itself (an added voter stays until removed).
    AddVoter {
        /// The node's name, `name@host`.
        member: String,
    },
}

/// The coordination commands.
#[derive(clap::Subcommand)]
pub enum CoordCommand {
    /// Show the coordination group: leader, term, voters, learners, log
    /// and applied index, replication per member, sessions.
    Cluster {
        #[command(flatten)]
        remote: Remote,
        /// `text` or `json`.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        #[command(subcommand)]
        action: Option<ClusterAction>,
    },
    /// List the cluster names: name, holder, token.
    Names {
        #[command(flatten)]
        remote: Remote,
        /// `text` or `json`.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List the cluster locks: holders with their tokens, then waiters.
    Locks {
        #[command(flatten)]
        remote: Remote,
        /// `text` or `json`.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List the elections: leader, term, candidates.
    Elections {
        #[command(flatten)]
        remote: Remote,
        /// `text` or `json`.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// Print `items` as the HTTP API's views of them (`--format json`).
fn print_views<S, V: From<S> + serde::Serialize>(items: Vec<S>) -> Result<()> {
    let views: Vec<V> = items.into_iter().map(V::from).collect();
    print_json(&views)
}

pub async fn run(command: CoordCommand) -> Result<ExitCode> {
    match command {
        CoordCommand::Cluster {
            remote,
            action,
            format,
        } => {
            let (control, target) = remote.connect().await?;
            match action {
                Some(ClusterAction::Remove { member }) => {
                    let ids = control.remove_member(&target, &member).await?;
                    let ids: Vec<String> = ids.iter().map(|i| format!("{i:016x}")).collect();
                    out!("removed {member} (member {})", ids.join(", "));
                }
                Some(ClusterAction::AddVoter { member }) => {
                    let voters = control.add_voter(&target, &member).await?;
                    out!("{member} is a voter; voters now: {}", voters.join(", "));
                    if voters.len().is_multiple_of(2) {
                        out!(
                            "note: {} voters survive no more failures than {} do: a majority of {} is needed",
                            voters.len(),
                            voters.len() - 1,
                            voters.len() / 2 + 1
                        );
                    }
                }
                None if format == Format::Json => {
                    print_json(&control.cluster_status(&target).await?)?;
                }
                None => {
                    let s = control.cluster_status(&target).await?;
                    match &s.cluster {
                        Some(c) => out!("cluster   {c}"),
                        None => out!("cluster   (not bootstrapped yet)"),
                    }
                    out!(
                        "node      {} ({}, member {:016x}, log {})",
                        s.node,
                        s.role,
                        s.member,
                        s.log_mode
                    );
                    let alone = match s.quorum_ack_ms {
                        Some(ms) if s.role == "leader" && ms >= 1_000 => {
                            format!(" (no quorum has answered it for {:.1} s)", ms as f64 / 1e3)
                        }
                        _ => String::new(),
                    };
                    out!(
                        "leader    {}{alone}",
                        s.leader.as_deref().unwrap_or("(none)")
                    );
                    match s.session {
                        Some(id) => out!("session   {id}"),
                        None => out!("session   none (this node cannot renew one now)"),
                    }
                    out!("term      {}", s.term);
                    let index = |i: Option<u64>| i.map_or("-".to_string(), |i| i.to_string());
                    out!(
                        "log       last {}, applied {}",
                        index(s.last_log_index),
                        index(s.applied_index)
                    );
                    if s.changing {
                        out!(
                            "voters    changing (old and new voters must both agree until the change commits)"
                        );
                    }
                    let last = s.last_log_index.unwrap_or(0);
                    for (kind, members) in [("voter", &s.voters), ("learner", &s.learners)] {
                        for m in members {
                            let lag = match m.matched {
                                Some(matched) => format!("lag {}", last.saturating_sub(matched)),
                                None if s.role == "leader" => "lag ?".to_string(),
                                None => String::new(),
                            };
                            let session = s
                                .sessions
                                .iter()
                                .find(|x| x.node == m.name)
                                .map_or("no session".to_string(), |x| format!("session {}", x.id));
                            out!(
                                "{kind:<9} {:<24} {:<22} {lag:<10} {session}",
                                m.name,
                                m.addr
                            );
                        }
                    }
                }
            }
            control.disconnect().await;
        }
        CoordCommand::Names { remote, format } => {
            let (control, target) = remote.connect().await?;
            if format == Format::Json {
                print_views::<_, NameView>(control.global_names(&target).await?)?;
                control.disconnect().await;
                return Ok(ExitCode::SUCCESS);
            }
            out!("{:<32} {:<28} token", "name", "pid");
            for n in control.global_names(&target).await? {
                out!("{:<32} {:<28} {}", n.name, n.pid.to_string(), n.token);
            }
            control.disconnect().await;
        }
        CoordCommand::Locks { remote, format } => {
            let (control, target) = remote.connect().await?;
            if format == Format::Json {
                print_views::<_, LockView>(control.global_locks(&target).await?)?;
                control.disconnect().await;
                return Ok(ExitCode::SUCCESS);
            }
            for l in control.global_locks(&target).await? {
                out!("{}", l.lock);
                for (pid, mode, token) in &l.holders {
                    out!("  held    {:<28} {mode:<9} token {token}", pid.to_string());
                }
                for (i, (pid, mode)) in l.queue.iter().enumerate() {
                    out!("  wait {:>2} {:<28} {mode}", i + 1, pid.to_string());
                }
            }
            control.disconnect().await;
        }
        CoordCommand::Elections { remote, format } => {
            let (control, target) = remote.connect().await?;
            if format == Format::Json {
                print_views::<_, ElectionView>(control.elections(&target).await?)?;
                control.disconnect().await;
                return Ok(ExitCode::SUCCESS);
            }
            for e in control.elections(&target).await? {
                match e.leader {
                    Some((pid, term)) => out!("{}  leader {pid} term {term}", e.group),
                    None => out!("{}  no leader", e.group),
                }
                for c in &e.candidates {
                    out!("  candidate {c}");
                }
            }
            control.disconnect().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
