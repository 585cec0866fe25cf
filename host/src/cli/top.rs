//! `molt top`: a running node's figures and busiest processes, refreshed
//! every second on the terminal. The screen is `molt_host::top::Top`; this
//! is the terminal around it: connect, fetch, draw, read keys.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use molt_host::control::NodeReport;
use molt_host::top::Top;
use molt_host::top::ratatui::{self, DefaultTerminal, crossterm::event};
use molt_host::{Control, ProcessInfo};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::remote::Remote;

/// How often the figures are fetched.
const REFRESH: Duration = Duration::from_secs(1);

/// How long one fetch may take before the footer says the node does not
/// answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// How often a running fetch is checked for its answer.
const FETCH_CHECK: Duration = Duration::from_millis(20);

/// Show `remote`'s node until a quit key, a signal, or `iterations`
/// refreshes.
pub fn top(runtime: &Runtime, remote: Remote, iterations: Option<u64>) -> Result<ExitCode> {
    anyhow::ensure!(
        std::io::stdout().is_terminal(),
        "molt top draws on a terminal, and stdout is not one (molt ps prints a list)"
    );
    let (control, target) = runtime.block_on(remote.connect())?;
    let stop = stop_on_signals(runtime)?;
    let terminal = ratatui::try_init().context("setting up the terminal");
    let shown = terminal.and_then(|mut terminal| {
        show(&mut terminal, runtime, &control, &target, iterations, &stop)
    });
    // Also after a failed setup: it may have left raw mode on.
    ratatui::restore();
    runtime.block_on(control.disconnect());
    shown?;
    Ok(ExitCode::SUCCESS)
}

/// What one fetch brings: the node's figures and processes, or why not.
type Answer = Result<(NodeReport, Vec<ProcessInfo>)>;

/// The loop: fetch when due, draw, read keys. Fetches run on the runtime
/// while the keys are read, so a silent node does not hold up `q`; a key
/// redraws at once (a new sort shows without waiting for the next fetch).
fn show(
    terminal: &mut DefaultTerminal,
    runtime: &Runtime,
    control: &Control,
    target: &str,
    iterations: Option<u64>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut top = Top::new(target);
    let mut refreshes = 0;
    let mut next = Instant::now();
    let mut fetching: Option<JoinHandle<Answer>> = None;
    while !stop.load(Ordering::Relaxed) {
        if fetching.is_none() && Instant::now() >= next {
            // The last refresh stays on screen a full period too.
            if iterations.is_some_and(|n| refreshes >= n) {
                break;
            }
            next = Instant::now() + REFRESH;
            fetching = Some(runtime.spawn(fetch(control.clone(), target.to_string())));
        }
        if let Some(task) = fetching.take_if(|task| task.is_finished()) {
            show_answer(&mut top, runtime.block_on(task)?);
            refreshes += 1;
        }
        terminal.draw(|frame| top.draw(frame))?;
        let wait = match fetching {
            Some(_) => FETCH_CHECK,
            None => next.saturating_duration_since(Instant::now()),
        };
        if event::poll(wait)?
            && let event::Event::Key(key) = event::read()?
            && top.key(key)
        {
            break;
        }
    }
    Ok(())
}

/// Ask the node for its figures and processes, within [`ANSWER_WITHIN`].
async fn fetch(control: Control, target: String) -> Answer {
    let ask = async {
        let (report, processes) =
            tokio::join!(control.node_report(&target), control.processes(&target));
        anyhow::Ok((report?, processes?))
    };
    tokio::time::timeout(ANSWER_WITHIN, ask)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no reply within {ANSWER_WITHIN:?}")))
}

/// A node that did not answer leaves its last figures on screen and the
/// error in the footer.
fn show_answer(top: &mut Top, answer: Answer) {
    match answer {
        Ok((report, processes)) => top.update(report, processes, Instant::now()),
        Err(e) => top.failed(format_args!("{e:#}")),
    }
}

/// A flag that SIGINT or SIGTERM raises. Handling them keeps them from
/// ending the process at once, so the loop ends and restores the terminal
/// (in raw mode Ctrl-C is a key, not a signal; these come from elsewhere).
fn stop_on_signals(runtime: &Runtime) -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = {
            let _inside = runtime.enter();
            signal(SignalKind::terminate()).context("handling SIGTERM")?
        };
        let flag = stop.clone();
        runtime.spawn(async move {
            terminate.recv().await;
            flag.store(true, Ordering::Relaxed);
        });
    }
    Ok(stop)
}
