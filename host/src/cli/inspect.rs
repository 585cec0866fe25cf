//! `molt inspect`: what a module file declares, exports and imports, and
//! whether it satisfies the ABI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use molt_host::{NodeConfig, code};

/// Print what `path` is, and whether a node with `config`'s limits takes it.
pub fn inspect(path: PathBuf, config: &NodeConfig) -> Result<ExitCode> {
    let (bytes, stem) = molt_host::CodeServer::read_file(&path)?;
    let report = code::inspect(&bytes, &stem)?;
    let id = &report.identity;
    out!("module:   {}", id.name);
    out!(
        "version:  {}{}",
        id.version,
        if id.declared {
            ""
        } else {
            " (no molt.module section: content hash)"
        }
    );
    out!("sha256:   {}", id.hash);
    out!("size:     {} bytes", bytes.len());
    out!(
        "kind:     {}",
        report.kind.map_or("none".to_string(), |k| k.to_string())
    );
    out!("exports:");
    for e in &report.exports {
        out!("  {e}");
    }
    out!("imports:");
    for i in &report.imports {
        out!("  {i}");
    }
    // The limits in force (the defaults, or the flags given): a node
    // refuses what passes them, whatever the ABI check says.
    let mut over = Vec::new();
    if bytes.len() > config.module_bytes_max {
        over.push(format!(
            "the file is {} bytes, larger than module_bytes_max ({} bytes)",
            bytes.len(),
            config.module_bytes_max
        ));
    }
    if let Some(min) = report.memory_min_bytes
        && min > config.memory_bytes_max
    {
        over.push(format!(
            "its memory starts at {min} bytes, more than memory_bytes_max ({} bytes)",
            config.memory_bytes_max
        ));
    }
    if over.is_empty() {
        out!("limits:   ok (module_bytes_max, memory_bytes_max)");
    } else {
        out!("limits:   a node with these limits refuses it");
        for o in &over {
            out!("  - {o}");
        }
    }
    if report.problems.is_empty() {
        out!("abi:      ok (molt ABI {})", molt_abi::ABI_VERSION);
    } else {
        out!("abi:      NOT satisfied");
        for p in &report.problems {
            out!("  - {p}");
        }
        bail!("{} does not satisfy the molt ABI", path.display())
    }
    if !over.is_empty() {
        bail!("{} exceeds this node's limits", path.display())
    }
    Ok(ExitCode::SUCCESS)
}
