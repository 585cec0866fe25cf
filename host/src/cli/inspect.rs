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
    println!("module:   {}", id.name);
    println!(
        "version:  {}{}",
        id.version,
        if id.declared {
            ""
        } else {
            " (no molt.module section: content hash)"
        }
    );
    println!("sha256:   {}", id.hash);
    println!("size:     {} bytes", bytes.len());
    println!(
        "kind:     {}",
        report.kind.map_or("none".to_string(), |k| k.to_string())
    );
    println!("exports:");
    for e in &report.exports {
        println!("  {e}");
    }
    println!("imports:");
    for i in &report.imports {
        println!("  {i}");
    }
    if report.problems.is_empty() {
        println!("abi:      ok (molt ABI {})", molt_abi::ABI_VERSION);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("abi:      NOT satisfied");
        for p in &report.problems {
            println!("  - {p}");
        }
        bail!("{} does not satisfy the molt ABI", path.display())
    }
}
