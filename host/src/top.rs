//! The screen of `molt top`, apart from any terminal: a [`Top`] takes a
//! node's figures and process list at each refresh, keeps the counters of
//! the refresh before to turn them into rates, sorts the processes by the
//! key the user pressed, and draws itself into a ratatui [`Frame`], a real
//! terminal's (the `molt top` command) or a test backend's.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Instant;

use molt_abi::Pid;
/// The ratatui [`Top`] draws with, for callers that drive a terminal of
/// their own (or a `TestBackend`) with the same version.
pub use ratatui;
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use crate::ProcessInfo;
use crate::control::NodeReport;

/// Lines of the header above the process table.
const HEADER_LINES: u16 = 4;

/// The order of the process table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// Most linear memory first.
    Memory,
    /// Most messages waiting first.
    Mailbox,
    /// Most messages taken per second first: the busiest processes, as
    /// etop's reductions show them.
    #[default]
    Rate,
    /// Most guest time first.
    Cpu,
    /// Oldest process first.
    Pid,
}

impl Sort {
    /// Its name, as the footer shows it.
    pub fn name(self) -> &'static str {
        match self {
            Sort::Memory => "memory",
            Sort::Mailbox => "mailbox",
            Sort::Rate => "msgs in/s",
            Sort::Cpu => "cpu",
            Sort::Pid => "pid",
        }
    }

    /// The sort a key selects, if it selects one.
    fn of_key(code: KeyCode) -> Option<Sort> {
        match code {
            KeyCode::Char('m') => Some(Sort::Memory),
            KeyCode::Char('b') => Some(Sort::Mailbox),
            KeyCode::Char('r') => Some(Sort::Rate),
            KeyCode::Char('c') => Some(Sort::Cpu),
            KeyCode::Char('p') => Some(Sort::Pid),
            _ => None,
        }
    }

    /// The table column it sorts on.
    fn column(self) -> usize {
        match self {
            Sort::Pid => 0,
            Sort::Mailbox => 4,
            Sort::Memory => 5,
            Sort::Cpu => 8,
            Sort::Rate => 9,
        }
    }

    /// `a` before `b` in this order; equal rows go by pid.
    fn order(self, a: &ProcessRow, b: &ProcessRow) -> std::cmp::Ordering {
        let by_key = match self {
            Sort::Memory => b.memory_bytes.cmp(&a.memory_bytes),
            Sort::Mailbox => b.mailbox_len.cmp(&a.mailbox_len),
            // A process seen for the first time has no rate yet: last.
            Sort::Rate => b.rate.unwrap_or(-1.0).total_cmp(&a.rate.unwrap_or(-1.0)),
            Sort::Cpu => b.cpu_ns.cmp(&a.cpu_ns),
            Sort::Pid => std::cmp::Ordering::Equal,
        };
        by_key.then(a.pid.cmp(&b.pid))
    }
}

/// The keys the footer lists.
const KEYS: &str = "m memory  b mailbox  r msgs in/s  c cpu  p pid  q quit";

/// The table's columns: title, width, right-aligned.
const COLUMNS: [(&str, Constraint, bool); 10] = [
    ("pid", Constraint::Length(18), false),
    ("name", Constraint::Fill(1), false),
    ("module@version", Constraint::Fill(1), false),
    ("status", Constraint::Length(9), false),
    ("mailbox", Constraint::Length(7), true),
    ("memory", Constraint::Length(9), true),
    ("msgs in", Constraint::Length(9), true),
    ("msgs out", Constraint::Length(9), true),
    ("cpu ms", Constraint::Length(8), true),
    ("in/s", Constraint::Length(8), true),
];

/// One process as the table shows it.
#[derive(Clone, Debug)]
struct ProcessRow {
    pid: Pid,
    name: String,
    module: String,
    status: &'static str,
    mailbox_len: usize,
    memory_bytes: usize,
    messages_in: u64,
    messages_out: u64,
    cpu_ns: u64,
    /// Messages taken per second since the refresh before; `None` for a
    /// process that refresh did not see.
    rate: Option<f64>,
}

impl ProcessRow {
    fn new(p: ProcessInfo, rate: Option<f64>) -> ProcessRow {
        let status = p.status();
        ProcessRow {
            pid: p.pid,
            name: p.name.unwrap_or_default(),
            module: p
                .module
                .map_or_else(|| "(host)".to_string(), |(m, v)| format!("{m}@{v}")),
            status,
            mailbox_len: p.mailbox_len,
            memory_bytes: p.memory_bytes,
            messages_in: p.messages_in,
            messages_out: p.messages_out,
            cpu_ns: p.cpu_ns,
            rate,
        }
    }

    fn cells(&self) -> [String; 10] {
        [
            self.pid.to_string(),
            self.name.clone(),
            self.module.clone(),
            self.status.to_string(),
            self.mailbox_len.to_string(),
            bytes(self.memory_bytes as u64),
            self.messages_in.to_string(),
            self.messages_out.to_string(),
            (self.cpu_ns / 1_000_000).to_string(),
            rate(self.rate),
        ]
    }
}

/// The node's message rates between two refreshes, per second.
#[derive(Clone, Copy, Debug)]
struct NodeRates {
    local: f64,
    remote_out: f64,
    remote_in: f64,
}

impl NodeRates {
    /// From the counters of `before` to those of `now`, `seconds` apart. A
    /// counter that went down (the node restarted) counts as no change.
    fn between(before: &NodeReport, now: &NodeReport, seconds: f64) -> NodeRates {
        let per_second = |then: u64, now: u64| now.saturating_sub(then) as f64 / seconds;
        NodeRates {
            local: per_second(before.messages_local, now.messages_local),
            remote_out: per_second(before.messages_remote_out, now.messages_remote_out),
            remote_in: per_second(before.messages_remote_in, now.messages_remote_in),
        }
    }
}

/// `molt top`'s view of one node: the last figures it got, the counters
/// they turn into rates at the next refresh, the order the user chose and
/// the last error. It never touches a terminal: [`Top::update`] and
/// [`Top::failed`] feed it, [`Top::key`] steers it, [`Top::draw`] shows it.
#[derive(Debug)]
pub struct Top {
    node: String,
    sort: Sort,
    report: Option<NodeReport>,
    rates: Option<NodeRates>,
    rows: Vec<ProcessRow>,
    /// Each process's messages taken at the last refresh, for its rate;
    /// only the processes alive then.
    messages_in: HashMap<Pid, u64>,
    sampled_at: Option<Instant>,
    error: Option<String>,
}

impl Top {
    /// A view of `node`, empty until the first [`update`](Self::update),
    /// sorted by message rate.
    pub fn new(node: impl Into<String>) -> Top {
        Top {
            node: node.into(),
            sort: Sort::default(),
            report: None,
            rates: None,
            rows: Vec::new(),
            messages_in: HashMap::new(),
            sampled_at: None,
            error: None,
        }
    }

    /// The order of the process table.
    pub fn sort(&self) -> Sort {
        self.sort
    }

    /// Take the node's figures and processes as they were at `now`; rates
    /// are the counters' changes since the last update over the time
    /// between the two. Clears the last error.
    pub fn update(&mut self, report: NodeReport, processes: Vec<ProcessInfo>, now: Instant) {
        let seconds = self
            .sampled_at
            .map(|then| now.saturating_duration_since(then).as_secs_f64())
            .filter(|s| *s > 0.0);
        self.rates = seconds
            .zip(self.report.as_ref())
            .map(|(s, before)| NodeRates::between(before, &report, s));
        let mut messages_in = HashMap::with_capacity(processes.len());
        self.rows = processes
            .into_iter()
            .map(|p| {
                let before = self.messages_in.get(&p.pid);
                let rate = seconds
                    .zip(before)
                    .map(|(s, before)| p.messages_in.saturating_sub(*before) as f64 / s);
                messages_in.insert(p.pid, p.messages_in);
                ProcessRow::new(p, rate)
            })
            .collect();
        self.messages_in = messages_in;
        self.report = Some(report);
        self.sampled_at = Some(now);
        self.error = None;
        self.sort_rows();
    }

    /// The node did not answer: the footer says `why` until the next
    /// update; the last figures stay on screen.
    pub fn failed(&mut self, why: impl Display) {
        self.error = Some(why.to_string());
    }

    /// Act on a key: a sort key re-sorts the table; returns whether the
    /// key asks to quit (`q`, Esc, Ctrl-C).
    pub fn key(&mut self, key: KeyEvent) -> bool {
        // Some terminals report releases too; act once per press.
        if key.kind != KeyEventKind::Press {
            return false;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => true,
            KeyCode::Char('c') if ctrl => true,
            _ if ctrl => false,
            code => {
                if let Some(sort) = Sort::of_key(code) {
                    self.sort = sort;
                    self.sort_rows();
                }
                false
            }
        }
    }

    /// Draw the header, as many processes as fit, and the footer.
    pub fn draw(&self, frame: &mut Frame) {
        let footer_lines = 1 + u16::from(self.error.is_some());
        let [header, table, footer] = Layout::vertical([
            Constraint::Length(HEADER_LINES),
            Constraint::Fill(1),
            Constraint::Length(footer_lines),
        ])
        .areas(frame.area());
        frame.render_widget(Paragraph::new(self.header()), header);
        self.draw_table(frame, table);
        frame.render_widget(Paragraph::new(self.footer()), footer);
    }

    fn sort_rows(&mut self) {
        let sort = self.sort;
        self.rows.sort_by(|a, b| sort.order(a, b));
    }

    fn header(&self) -> Vec<Line<'static>> {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let mut title = vec![
            Span::raw("molt top  "),
            Span::styled(self.node.clone(), bold),
        ];
        let Some(r) = &self.report else {
            return vec![
                Line::from(title),
                Line::from("waiting for the node's first figures..."),
            ];
        };
        let hidden = r.peers.iter().filter(|p| p.hidden).count();
        title.push(Span::raw(format!(
            "  up {}  peers {}",
            uptime(r.uptime_ms),
            r.peers.len() - hidden
        )));
        if hidden > 0 {
            title.push(Span::raw(format!(" (+{hidden} hidden)")));
        }
        let rates = self.rates;
        let per_second = |pick: fn(&NodeRates) -> f64| rate(rates.as_ref().map(pick));
        vec![
            Line::from(title),
            Line::from(format!(
                "processes {}  spawned {}  memory {}  mailboxes {} messages  cpu {} ms",
                r.processes,
                r.spawned,
                bytes(r.memory_bytes),
                r.mailbox_messages,
                r.cpu_us / 1_000
            )),
            Line::from(format!(
                "messages/s  local {}  remote out {}  remote in {}",
                per_second(|r| r.local),
                per_second(|r| r.remote_out),
                per_second(|r| r.remote_in)
            )),
            Line::from(format!(
                "exits {}  upgrades {}  failed migrations {}  purges {}",
                exits(r),
                r.upgrades,
                r.failed_migrations,
                r.purges
            )),
        ]
    }

    fn draw_table(&self, frame: &mut Frame, area: Rect) {
        let sorted = self.sort.column();
        let title = Row::new(COLUMNS.iter().enumerate().map(|(i, (name, _, right))| {
            let style = if i == sorted {
                Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
            } else {
                Style::new().add_modifier(Modifier::BOLD)
            };
            Cell::from(aligned(name.to_string(), *right)).style(style)
        }))
        .style(Style::new().bg(Color::DarkGray));
        // The title takes one line; the rest is for processes.
        let fit = usize::from(area.height.saturating_sub(1));
        let rows = self.rows.iter().take(fit).map(|p| {
            let style = if p.status == "suspended" {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new()
            };
            Row::new(
                p.cells()
                    .into_iter()
                    .zip(COLUMNS)
                    .map(|(text, (_, _, right))| Cell::from(aligned(text, right))),
            )
            .style(style)
        });
        let table = Table::new(rows, COLUMNS.map(|(_, width, _)| width)).header(title);
        frame.render_widget(table, area);
    }

    fn footer(&self) -> Vec<Line<'static>> {
        let mut lines = vec![Line::from(vec![
            Span::styled(
                format!("sort: {}", self.sort.name()),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!("   {KEYS}")),
        ])];
        if let Some(why) = &self.error {
            lines.push(Line::styled(
                format!("not updated: {why} (trying again every second)"),
                Style::new().fg(Color::Red),
            ));
        }
        lines
    }
}

fn aligned(text: String, right: bool) -> Line<'static> {
    let line = Line::from(text);
    if right { line.right_aligned() } else { line }
}

/// The exit kinds that happened, with their counts: `normal 3 crash 1`.
fn exits(r: &NodeReport) -> String {
    let counts: Vec<String> = r
        .exits
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    if counts.is_empty() {
        "none".to_string()
    } else {
        counts.join(" ")
    }
}

/// A rate with one decimal, `-` before there are two refreshes to compare.
fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.1}"))
}

/// Bytes in KiB, MiB or GiB.
fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    const MIB: f64 = KIB * 1024.0;
    const GIB: f64 = MIB * 1024.0;
    let n = n as f64;
    if n >= GIB {
        format!("{:.1} GiB", n / GIB)
    } else if n >= MIB {
        format!("{:.1} MiB", n / MIB)
    } else {
        format!("{:.0} KiB", n / KIB)
    }
}

/// `H:MM:SS`, with days in front past one.
fn uptime(ms: u64) -> String {
    let s = ms / 1_000;
    let (days, h, m, s) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h}:{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(bytes(64 * 1024), "64 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(bytes(2 * 1024 * 1024 * 1024), "2.0 GiB");
        assert_eq!(uptime(61_000), "0:01:01");
        assert_eq!(uptime(90_061_000), "1d 01:01:01");
        assert_eq!(rate(None), "-");
        assert_eq!(rate(Some(12.34)), "12.3");
    }
}
