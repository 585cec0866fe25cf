//! The CLI's code commands: `molt load` (one node, or the whole cluster in
//! two phases), `molt modules`, `molt purge`, `molt delete`, and the system
//! requests `molt suspend|resume|upgrade`. Each runs as a hidden node
//! connected to the contact node `--node`, like the other remote commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use molt_abi::Pid;
use molt_host::Control;
use molt_host::code::{LoadOptions, ModuleInfo, Purge, UpgradeMode, VersionInfo};
use molt_host::control::{RolloutEvent, Switched};
use molt_host::runtime::{SysError, SysOp, SysOutcome};

use crate::remote::Remote;

/// Commands that change or show the code of running nodes.
#[derive(Subcommand)]
pub(crate) enum CodeCommand {
    /// Push a module file to a running node (--node) and make it current;
    /// with --all, to that node and every node it is connected to, all or
    /// none: every node compiles and checks it first, and if one cannot
    /// take it, no node switches.
    Load {
        #[command(flatten)]
        remote: Remote,
        /// The module file.
        file: PathBuf,
        /// Load on the --node node and every visible node it is connected
        /// to.
        #[arg(long)]
        all: bool,
        /// What to do with processes still on the old version: `soft`
        /// refuses the load (not_purged), `hard` kills them.
        #[arg(long, value_enum, default_value_t = PurgeArg::Soft)]
        purge: PurgeArg,
        /// When behaviour processes move to the new version: `eager` now,
        /// `lazy` at their next message.
        #[arg(long, value_enum, default_value_t = ModeArg::Eager)]
        mode: ModeArg,
    },
    /// List the modules of a running node: current and old version, the
    /// processes on each, and recent code events (failures marked).
    Modules {
        #[command(flatten)]
        remote: Remote,
        /// `text` or `json`.
        #[arg(long, value_enum, default_value_t)]
        format: crate::remote::Format,
    },
    /// Drop the old version of a module, killing the processes still on it
    /// (with --soft: only if none is).
    Purge {
        #[command(flatten)]
        remote: Remote,
        /// The module.
        module: String,
        /// Refuse if processes still run the old version.
        #[arg(long)]
        soft: bool,
        /// On the --node node and every visible node it is connected to.
        #[arg(long)]
        all: bool,
    },
    /// Make the current version of a module old, so nothing new spawns on
    /// it; its processes run on until purged.
    Delete {
        #[command(flatten)]
        remote: Remote,
        /// The module.
        module: String,
        /// On the --node node and every visible node it is connected to.
        #[arg(long)]
        all: bool,
    },
    /// Suspend behaviour processes: their messages queue until resumed.
    Suspend(SysArgs),
    /// Resume suspended processes.
    Resume(SysArgs),
    /// Move processes to the current version of their module now, state
    /// migrated (suspended ones too).
    Upgrade(SysArgs),
}

/// Processes of one node for a system request.
#[derive(clap::Args)]
pub(crate) struct SysArgs {
    #[command(flatten)]
    remote: Remote,
    /// Pids as `molt ps` shows them (`<1a2b.0c3d.42>`), or their last
    /// number alone.
    #[arg(required = true)]
    pids: Vec<String>,
    /// How long to wait for each process to answer, in ms.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
}

/// `--purge`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PurgeArg {
    /// Refuse the load if the old version still has processes.
    Soft,
    /// Kill the processes on the old version first.
    Hard,
}

/// `--mode`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ModeArg {
    /// Idle processes move at their next message.
    Lazy,
    /// Idle processes move now.
    Eager,
}

/// Run a code command.
pub(crate) async fn run(command: CodeCommand) -> Result<ExitCode> {
    match command {
        CodeCommand::Load {
            remote,
            file,
            all,
            purge,
            mode,
        } => {
            let options = LoadOptions {
                purge: match purge {
                    PurgeArg::Soft => Purge::Soft,
                    PurgeArg::Hard => Purge::Hard,
                },
                mode: match mode {
                    ModeArg::Lazy => UpgradeMode::Lazy,
                    ModeArg::Eager => UpgradeMode::Eager,
                },
            };
            load(remote, file, all, options).await
        }
        CodeCommand::Modules { remote, format } => {
            let (control, target) = remote.connect().await?;
            let report = control.modules_of(&target).await;
            control.disconnect().await;
            let report = report?;
            if format == crate::remote::Format::Json {
                crate::remote::print_json(&molt_host::http::ModulesView::of(&target, report))?;
                return Ok(ExitCode::SUCCESS);
            }
            out_raw!("{}", modules_table(&report.modules));
            if !report.events.is_empty() {
                out!("\nrecent events on {target}:");
                for e in &report.events {
                    let mark = if e.failure { "FAILED" } else { "ok" };
                    out!("{}  {mark:<6}  {}: {}", utc(e.at_ms), e.module, e.what);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CodeCommand::Purge {
            remote,
            module,
            soft,
            all,
        } => {
            let (control, target) = remote.connect().await?;
            let nodes = targets(&control, &target, all).await;
            let width = width(&nodes);
            let mut failed = false;
            for node in &nodes {
                match control.purge_on(node, &module, soft).await {
                    Ok(p) => match p.old {
                        Some(old) => out!(
                            "{node:<width$}  purged {module} {old} ({} process(es) killed)",
                            p.killed
                        ),
                        None => out!("{node:<width$}  no old version of {module}"),
                    },
                    Err(e) => {
                        failed = true;
                        out!("{node:<width$}  FAILED: {e}");
                    }
                }
            }
            control.disconnect().await;
            Ok(exit(failed))
        }
        CodeCommand::Delete {
            remote,
            module,
            all,
        } => {
            let (control, target) = remote.connect().await?;
            let nodes = targets(&control, &target, all).await;
            let width = width(&nodes);
            let mut failed = false;
            for node in &nodes {
                match control.delete_on(node, &module).await {
                    Ok(Some(version)) => {
                        out!("{node:<width$}  {module} {version} is old now")
                    }
                    Ok(None) => out!("{node:<width$}  {module} has no current version"),
                    Err(e) => {
                        failed = true;
                        out!("{node:<width$}  FAILED: {e}");
                    }
                }
            }
            control.disconnect().await;
            Ok(exit(failed))
        }
        CodeCommand::Suspend(args) => system(args, SysOp::Suspend).await,
        CodeCommand::Resume(args) => system(args, SysOp::Resume).await,
        CodeCommand::Upgrade(args) => system(args, SysOp::ChangeCode).await,
    }
}

/// `molt load`: one node, or all of them in two phases.
async fn load(remote: Remote, file: PathBuf, all: bool, options: LoadOptions) -> Result<ExitCode> {
    // Named after the file if it declares no name: the one rule for names
    // from file names (`_` is `-`).
    let (bytes, stem) = molt_host::CodeServer::read_file(&file)?;
    let (control, target) = remote.connect().await?;
    if !all {
        let loaded = control.load_on_with(&target, &stem, bytes, options).await;
        control.disconnect().await;
        let s = loaded?;
        out!("{} {} loaded on {target}{}", s.module, s.version, after(&s));
        return Ok(ExitCode::SUCCESS);
    }
    let nodes: Vec<String> = match control.nodes(&target).await {
        Ok(others) => std::iter::once(target.clone()).chain(others).collect(),
        Err(e) => {
            control.disconnect().await;
            return Err(e).with_context(|| format!("asking {target} for its nodes"));
        }
    };
    let width = width(&nodes);
    out!(
        "loading {} on {} node(s): {}",
        file.display(),
        nodes.len(),
        nodes.join(", ")
    );
    let progress = |event: RolloutEvent| match event {
        RolloutEvent::Prepared { node, prepared: p } => out!(
            "{node:<width$}  prepared {} {} ({}, {} ms){}",
            p.module,
            p.version,
            if p.compiled { "compiled" } else { "cached" },
            p.compile_ms,
            p.current
                .map(|c| format!("; current: {c}"))
                .unwrap_or_default()
        ),
        RolloutEvent::PrepareFailed { node, error } => {
            out!("{node:<width$}  FAILED: {error}")
        }
        RolloutEvent::Aborted { node } => out!("{node:<width$}  aborted (not switched)"),
        RolloutEvent::Switched { node, switched: s } if s.unchanged => {
            out!("{node:<width$}  {} is current already", s.version)
        }
        RolloutEvent::Switched { node, switched: s } => {
            out!("{node:<width$}  switched to {}{}", s.version, after(&s))
        }
        RolloutEvent::CommitFailed { node, error } => {
            out!("{node:<width$}  FAILED to switch: {error}")
        }
    };
    let result = control
        .load_cluster(&nodes, &stem, bytes, options, progress)
        .await;
    control.disconnect().await;
    let switched = result?;
    if let Some((_, s)) = switched.first() {
        out!(
            "{} {} is current on {} node(s)",
            s.module,
            s.version,
            switched.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `molt suspend|resume|upgrade`.
async fn system(args: SysArgs, op: SysOp) -> Result<ExitCode> {
    let (control, target) = args.remote.connect().await?;
    let processes = match control.processes(&target).await {
        Ok(p) => p,
        Err(e) => {
            control.disconnect().await;
            return Err(e.into());
        }
    };
    // The pids `ps` prints are shortened: find the full ones on the node.
    let resolve = |text: &str| -> Option<Pid> {
        processes
            .iter()
            .map(|p| p.pid)
            .find(|pid| pid.to_string() == text || pid.serial.to_string() == text)
    };
    let found: Vec<(String, Option<Pid>)> =
        args.pids.iter().map(|t| (t.clone(), resolve(t))).collect();
    let pids: Vec<Pid> = found.iter().filter_map(|(_, p)| *p).collect();
    let timeout = Duration::from_millis(args.timeout_ms);
    let results = if pids.is_empty() {
        Ok(Vec::new())
    } else {
        control.sys_on(&target, op, pids, timeout).await
    };
    control.disconnect().await;
    let mut results = results?.into_iter();
    let width = found.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
    let mut failed = false;
    for (text, pid) in found {
        let (shown, result) = match pid {
            Some(pid) => (
                pid.to_string(),
                results.next().context("an answer per pid")?,
            ),
            None => (text, Err(SysError::NoProc)),
        };
        let what = match result {
            Ok(SysOutcome::Done) => match op {
                SysOp::Suspend => "suspended".to_string(),
                SysOp::Resume => "resumed".to_string(),
                SysOp::ChangeCode => "done".to_string(),
            },
            Ok(SysOutcome::Unchanged { version }) => format!("unchanged (runs {version})"),
            Ok(SysOutcome::Upgraded { from, to }) => format!("upgraded {from} -> {to}"),
            Err(e) => {
                failed = true;
                format!("FAILED: {e}")
            }
        };
        out!("{shown:<width$}  {what}");
    }
    Ok(exit(failed))
}

/// The contact node, and with `all` every visible node it is connected to.
async fn targets(control: &Control, target: &str, all: bool) -> Vec<String> {
    let mut nodes = vec![target.to_string()];
    if all {
        match control.nodes(target).await {
            Ok(others) => nodes.extend(others),
            Err(e) => eprintln!("molt: cannot list the nodes of {target}: {e}"),
        }
    }
    nodes
}

/// What a switch left behind, for a line that says what was loaded.
fn after(s: &Switched) -> String {
    let mut text = String::new();
    if s.unchanged {
        text.push_str(" (current already)");
    } else if let Some(old) = &s.previous {
        text.push_str(&format!(" (old: {old})"));
    }
    if s.purged > 0 {
        text.push_str(&format!("; {} process(es) purged", s.purged));
    }
    text
}

fn modules_table(modules: &[ModuleInfo]) -> String {
    let cell = |v: &Option<VersionInfo>| match v {
        Some(v) => format!("{} ({})", v.version, v.processes),
        None => "-".to_string(),
    };
    let rows: Vec<(String, String, String, String)> = modules
        .iter()
        .map(|m| {
            let kind = m
                .current
                .as_ref()
                .or(m.old.as_ref())
                .map_or("-", |v| v.kind.as_str());
            (
                m.name.clone(),
                kind.to_string(),
                cell(&m.current),
                cell(&m.old),
            )
        })
        .collect();
    let w = |f: fn(&(String, String, String, String)) -> usize, title: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let (w0, w1, w2) = (
        w(|r| r.0.len(), "module"),
        w(|r| r.1.len(), "kind"),
        w(|r| r.2.len(), "current (processes)"),
    );
    let mut out = format!(
        "{:<w0$}  {:<w1$}  {:<w2$}  old (processes)\n",
        "module", "kind", "current (processes)"
    );
    for (name, kind, current, old) in rows {
        out.push_str(&format!(
            "{name:<w0$}  {kind:<w1$}  {current:<w2$}  {old}\n"
        ));
    }
    out
}

fn width(nodes: &[String]) -> usize {
    nodes.iter().map(String::len).max().unwrap_or(0)
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `2026-11-24 15:34:27Z` for milliseconds since the Unix epoch.
fn utc(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (days, day_secs) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        day_secs / 3_600,
        day_secs / 60 % 60,
        day_secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        for (ms, text) in [
            (0, "1970-01-01 00:00:00Z"),
            (951_782_400_000, "2000-02-29 00:00:00Z"),
            (1_795_534_467_999, "2026-11-24 15:34:27Z"),
        ] {
            assert_eq!(utc(ms), text, "{ms}");
        }
    }

    #[test]
    fn modules_table_lines_up() {
        let v = |version: &str, processes| VersionInfo {
            version: version.into(),
            kind: "behaviour".into(),
            hash: String::new(),
            processes,
        };
        let table = modules_table(&[
            ModuleInfo {
                name: "counter".into(),
                current: Some(v("0.2.0", 3)),
                old: Some(v("0.1.0", 1)),
            },
            ModuleInfo {
                name: "ping-pong".into(),
                current: None,
                old: Some(v("0.1.0", 0)),
            },
        ]);
        assert_eq!(
            table,
            "module     kind       current (processes)  old (processes)\n\
             counter    behaviour  0.2.0 (3)            0.1.0 (1)\n\
             ping-pong  behaviour  -                    0.1.0 (0)\n"
        );
    }
}
