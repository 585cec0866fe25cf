//! Building guest crates for `wasm32-unknown-unknown` with cargo: `molt
//! build`, and the demo, benchmarks and tests that need the example guests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target guests are built for.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// cargo could not be started.
    #[error("cannot run cargo: {0}")]
    Spawn(std::io::Error),
    /// cargo failed; its output says why.
    #[error("cargo build failed (is the target installed? `rustup target add {TARGET}`):\n{0}")]
    Failed(String),
    /// The build produced no `.wasm` file (not a `cdylib` crate?).
    #[error("the build produced no .wasm file; a guest crate needs `crate-type = [\"cdylib\"]`")]
    NoWasm,
}

/// Root of the molt source tree this binary was built from.
pub fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Flags meant for the outer build (e.g. coverage) must not leak in.
    cmd.env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS");
    cmd
}

fn run(mut cmd: Command) -> Result<String, BuildError> {
    let out = cmd.output().map_err(BuildError::Spawn)?;
    if !out.status.success() {
        return Err(BuildError::Failed(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Build packages of the molt workspace (example and test guests) with the
/// `guest` profile; returns the directory holding their `.wasm` files
/// (named like the packages, `-` spelled `_`). Each package is built by its
/// own cargo run: a guest that uses another guest's message types turns on
/// that crate's `types-only` feature, which must not leak into the other
/// guest's own build.
pub fn build_workspace_guests(packages: &[&str]) -> Result<PathBuf, BuildError> {
    let root = source_root();
    let target_dir = root.join("target").join("guests");
    for p in packages {
        let mut cmd = cargo();
        cmd.current_dir(&root)
            .args([
                "build",
                "--quiet",
                "--profile",
                "guest",
                "--target",
                TARGET,
                "-p",
                p,
            ])
            .arg("--target-dir")
            .arg(&target_dir);
        run(cmd)?;
    }
    Ok(target_dir.join(TARGET).join("guest"))
}

/// Build the guest crate at `dir` in release mode; returns the `.wasm`
/// files it produced.
pub fn build_crate(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut cmd = cargo();
    cmd.current_dir(dir).args([
        "build",
        "--release",
        "--target",
        TARGET,
        "--message-format=json",
    ]);
    let out = run(cmd)?;
    // Each artifact line lists its files; keep the .wasm ones.
    let mut files = Vec::new();
    for line in out.lines().filter(|l| l.contains("\"compiler-artifact\"")) {
        let Some(start) = line.find("\"filenames\":[") else {
            continue;
        };
        let list = &line[start + 13..];
        let list = &list[..list.find(']').unwrap_or(0)];
        for name in list.split(',') {
            let name = name.trim_matches('"');
            if name.ends_with(".wasm") {
                files.push(PathBuf::from(name));
            }
        }
    }
    if files.is_empty() {
        return Err(BuildError::NoWasm);
    }
    Ok(files)
}
