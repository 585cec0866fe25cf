//! `molt inspect`: what a module file declares, exports and imports, and
//! whether it satisfies the ABI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use molt_host::code;

pub fn inspect(path: PathBuf) -> Result<ExitCode> {
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("module")
        .replace('_', "-");
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
    if report.problems.is_empty() {
        out!("abi:      ok (molt ABI {})", molt_abi::ABI_VERSION);
        Ok(ExitCode::SUCCESS)
    } else {
        out!("abi:      NOT satisfied");
        for p in &report.problems {
            out!("  - {p}");
        }
        bail!("{} does not satisfy the molt ABI", path.display())
    }
}
