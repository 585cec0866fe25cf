//! `molt bench --only ring`: Armstrong's ring. N bench-guest links in a
//! ring pass a token a million hops; the figure is the time per hop, with
//! the minor page faults per hop beside it (each hop touches another
//! process: its instance, its memory, its stack). Run at a small ring and
//! a large one, the two show what spreading messages over many processes
//! costs. With `--erlang`, the same ring in Erlang (`ring.erl`, compiled
//! with `erlc`) runs right after, in the same session, and each figure is
//! printed beside Erlang's, with the ratio.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use molt_abi::{Pid, codec, tag};
use molt_host::Node;

use super::bench::{Figure, MODULE};
use super::bench_wire::{BenchArgs, BenchMsg};

/// The Erlang ring, compiled and run by `--erlang`.
const RING_ERL: &str = include_str!("ring.erl");

/// The ring sizes measured.
pub const SIZES: [u32; 2] = [1_000, 100_000];

/// This process's minor page faults so far.
pub fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let (_, after) = s.rsplit_once(") ")?;
            after.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

/// One ring of `n` links, a token passed `hops` times: (ns per hop,
/// minor faults per hop). The links are spawned and initialised first,
/// outside the timing, and killed after.
pub async fn ring_run(node: &Node, n: u32, hops: u64) -> Result<(f64, f64)> {
    let mut ring = Ring::spawn(node, n).await?;
    let faults = minor_faults();
    let profiled = super::bench::Profiled::start();
    let elapsed = ring.pass(hops).await?;
    drop(profiled);
    let faults = minor_faults().saturating_sub(faults);
    ring.kill(node).await?;
    Ok((
        elapsed.as_secs_f64() * 1e9 / hops as f64,
        faults as f64 / hops as f64,
    ))
}

/// A ring of bench-guest links, spawned and initialised.
pub struct Ring {
    mailbox: molt_host::HostMailbox,
    first: Pid,
    pids: Vec<Pid>,
}

impl Ring {
    /// Spawn `n` links and wait until each has initialised.
    pub async fn spawn(node: &Node, n: u32) -> Result<Ring> {
        Ring::spawn_paced(node, n, None).await
    }

    /// As [`Ring::spawn`], with at most `window` spawned links not yet
    /// through `init` (so that links woken meanwhile, to hibernate, do
    /// not wait behind every spawn still queued).
    pub async fn spawn_paced(node: &Node, n: u32, window: Option<u32>) -> Result<Ring> {
        let mut mailbox = node.mailbox()?;
        let base = node.stats().initialized;
        let target = base + n as u64;
        let first = node.spawn(MODULE, codec::encode(&BenchArgs::RingLink { next: None }))?;
        let mut pids = Vec::with_capacity(n as usize);
        pids.push(first);
        let mut last = first;
        for spawned in 1..n {
            if let Some(window) = window
                && spawned % 256 == 0
            {
                let behind = base + u64::from(spawned.saturating_sub(window));
                super::bench::initialized(node, behind).await?;
            }
            let args = BenchArgs::RingLink { next: Some(last) };
            last = node.spawn(MODULE, codec::encode(&args))?;
            pids.push(last);
        }
        super::bench::initialized(node, target).await?;
        // The first link learns its next before the token (one sender, one
        // receiver: in order).
        let next = codec::encode(&BenchMsg::Next(last));
        mailbox.send(first, tag::DATA, molt_abi::Ref::NONE, next)?;
        Ok(Ring {
            mailbox,
            first,
            pids,
        })
    }

    /// Pass the token `hops` times; how long until it came back.
    pub async fn pass(&mut self, hops: u64) -> Result<Duration> {
        let report = self.mailbox.pid();
        let token = codec::encode(&BenchMsg::Token { hops, report });
        let start = Instant::now();
        self.mailbox
            .send(self.first, tag::DATA, molt_abi::Ref::NONE, token)?;
        let done = self
            .mailbox
            .recv(Duration::from_secs(600))
            .await
            .context("the token did not come back within 600 s")?;
        let elapsed = start.elapsed();
        if codec::decode::<BenchMsg>(&done.payload) != Ok(BenchMsg::Done) {
            bail!("the ring answered something else than done");
        }
        Ok(elapsed)
    }

    /// Kill every link and wait until they have ended.
    pub async fn kill(self, node: &Node) -> Result<()> {
        super::bench::kill_all(node, &self.pids).await
    }
}

/// The ring figures: per size, ns per hop and faults per hop.
pub async fn figures(node: &Node, runs: usize, hops: u64) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for n in SIZES {
        let (mut times, mut faults) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (t, f) = ring_run(node, n, hops).await?;
            times.push(t);
            faults.push(f);
        }
        figures.push(Figure {
            name: name(n),
            unit: "ns/hop",
            runs: times,
        });
        figures.push(Figure {
            name: faults_name(n),
            unit: "faults/hop",
            runs: faults,
        });
    }
    Ok(figures)
}

fn name(n: u32) -> &'static str {
    match n {
        1_000 => "ring of 1,000 behaviours, one hop",
        _ => "ring of 100,000 behaviours, one hop",
    }
}

fn faults_name(n: u32) -> &'static str {
    match n {
        1_000 => "ring of 1,000, minor page faults per hop",
        _ => "ring of 100,000, minor page faults per hop",
    }
}

/// The Erlang ring's runs at one size: the size, then each run's ns per
/// hop and faults per hop.
pub struct ErlangRing {
    /// Links in the ring.
    pub size: u32,
    /// Each run's nanoseconds per hop.
    pub times: Vec<f64>,
    /// Each run's minor page faults per hop.
    pub faults: Vec<f64>,
}

/// The Erlang ring at each size, `runs` times.
pub fn erlang(runs: usize, hops: u64, dir: &Path) -> Result<Vec<ErlangRing>> {
    std::fs::create_dir_all(dir)?;
    let source = dir.join("molt_ring.erl");
    std::fs::write(&source, RING_ERL)?;
    let out = std::process::Command::new("erlc")
        .arg("-o")
        .arg(dir)
        .arg(&source)
        .output()
        .context("running erlc (apt-get install -y erlang-nox)")?;
    if !out.status.success() {
        bail!("erlc failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut all = Vec::new();
    for n in SIZES {
        let out = std::process::Command::new("erl")
            .args(["-noshell", "+P", "2000000", "-pa"])
            .arg(dir)
            .args(["-run", "molt_ring", "main"])
            .args([n.to_string(), hops.to_string(), runs.to_string()])
            .output()
            .context("running erl")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "the Erlang ring failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (times, faults) = parse_erlang(&text);
        if times.len() != runs {
            bail!(
                "the Erlang ring printed {} runs, not {runs}: {text}",
                times.len()
            );
        }
        all.push(ErlangRing {
            size: n,
            times,
            faults,
        });
    }
    Ok(all)
}

/// The runs an Erlang ring printed: (ns per hop, faults per hop) each.
fn parse_erlang(text: &str) -> (Vec<f64>, Vec<f64>) {
    text.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(": ")?;
            let mut words = rest.split_whitespace();
            let ns = words.next()?.parse::<f64>().ok()?;
            let _unit = words.next()?;
            let faults = words.next()?.parse::<f64>().ok()?;
            Some((ns, faults))
        })
        .unzip()
}

/// Print molt's ring figures beside Erlang's (medians; ratio above 1:
/// molt is faster).
pub fn print_beside(figures: &[Figure], erlang: &[ErlangRing]) {
    out!(
        "molt beside Erlang/OTP, the same session (median of each; ratio above 1: molt is faster)"
    );
    for ErlangRing {
        size: n,
        times,
        faults,
    } in erlang
    {
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let Some(ours) = figures.iter().find(|f| f.name == name(*n)) else {
            continue;
        };
        let ours_faults = figures
            .iter()
            .find(|f| f.name == faults_name(*n))
            .map_or(f64::NAN, Figure::median);
        let theirs = median(times);
        out!(
            "{:<44} {:>9.1} ns/hop  Erlang {:>9.1} ns/hop  ratio {:.2}   faults/hop {:.4} (Erlang {:.4})",
            ours.name,
            ours.median(),
            theirs,
            theirs / ours.median(),
            ours_faults,
            median(faults)
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_erlang_rings_lines_are_read_and_others_skipped() {
        let text = "ring 1000: 123.4 ns/hop 0.0012 faults/hop\n\
                    some other line\n\
                    ring 1000: 130.0 ns/hop 0.0000 faults/hop\n";
        let (times, faults) = super::parse_erlang(text);
        assert_eq!(times, [123.4, 130.0]);
        assert_eq!(faults, [0.0012, 0.0]);
    }
}
