//! The code server: loads, validates and keeps modules; hands the runtime
//! the current version of a module to spawn.
//!
//! Invariant: the code server never touches a running instance. A process
//! holds the [`ModuleVersion`] it was spawned with for as long as it runs.

pub mod analyze;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use wasmtime::{Engine, InstancePre, Linker, Module};

pub use analyze::{Identity, ModuleKind, Problem, Report};

use crate::runtime::ProcState;

/// One compiled, linked version of a module.
pub struct ModuleVersion {
    /// Name and version.
    pub identity: Identity,
    /// Behaviour or raw.
    pub kind: ModuleKind,
    /// Size of the module file.
    pub size_bytes: usize,
    pub(crate) pre: InstancePre<ProcState>,
}

impl std::fmt::Debug for ModuleVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleVersion")
            .field("identity", &self.identity)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Why a module was refused. The node keeps running what it ran.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Larger than `module_bytes_max`.
    #[error("module is {size} bytes, larger than module_bytes_max ({max} bytes)")]
    TooLarge {
        /// Size of the module.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid WebAssembly, or beyond what this node's pool allows.
    #[error("invalid module: {0}")]
    Invalid(String),
    /// Valid WebAssembly that does not satisfy the ABI.
    #[error("module `{name}` does not satisfy the molt ABI: {}", join(.problems))]
    Abi {
        /// Module name.
        name: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// The node holds `modules_max` modules already.
    #[error("node holds modules_max ({max}) modules already")]
    TooManyModules {
        /// The limit.
        max: usize,
    },
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Modules loaded on a node, by name.
pub struct CodeServer {
    engine: Engine,
    linker: Arc<Linker<ProcState>>,
    module_bytes_max: usize,
    modules_max: usize,
    modules: RwLock<HashMap<String, Arc<ModuleVersion>>>,
    /// Directories searched for `<name>.wasm` when a module that is not
    /// loaded is spawned (Erlang's code path, interactive mode).
    code_path: RwLock<Vec<PathBuf>>,
}

impl CodeServer {
    pub(crate) fn new(
        engine: Engine,
        linker: Arc<Linker<ProcState>>,
        module_bytes_max: usize,
        modules_max: usize,
    ) -> Self {
        CodeServer {
            engine,
            linker,
            module_bytes_max,
            modules_max,
            modules: RwLock::new(HashMap::new()),
            code_path: RwLock::new(Vec::new()),
        }
    }

    /// Load a module file; a module without a `molt.module` section is
    /// named after the file.
    pub fn load_file(&self, path: &Path) -> Result<Arc<ModuleVersion>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("module");
        self.load(&bytes, &stem.replace('_', "-"))
    }

    /// Validate, compile and link `bytes`, and make the result the current
    /// version of its name. Loading the same bytes again is a no-op.
    pub fn load(&self, bytes: &[u8], fallback_name: &str) -> Result<Arc<ModuleVersion>, LoadError> {
        let version = self.prepare(bytes, fallback_name)?;
        let mut modules = self.modules.write().expect("module table poisoned");
        if let Some(existing) = modules.get(&version.identity.name)
            && existing.identity.hash == version.identity.hash
        {
            return Ok(existing.clone());
        }
        if !modules.contains_key(&version.identity.name) && modules.len() >= self.modules_max {
            return Err(LoadError::TooManyModules {
                max: self.modules_max,
            });
        }
        let version = Arc::new(version);
        tracing::info!(
            module = %version.identity.name,
            version = %version.identity.version,
            kind = %version.kind,
            "module loaded"
        );
        modules.insert(version.identity.name.clone(), version.clone());
        Ok(version)
    }

    fn prepare(&self, bytes: &[u8], fallback_name: &str) -> Result<ModuleVersion, LoadError> {
        if bytes.len() > self.module_bytes_max {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                max: self.module_bytes_max,
            });
        }
        let (identity, section_problem) = analyze::identify(bytes, fallback_name);
        let module =
            Module::new(&self.engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let report = analyze::check(&module, identity, section_problem);
        let kind = match (report.kind, report.problems.is_empty()) {
            (Some(kind), true) => kind,
            _ => {
                return Err(LoadError::Abi {
                    name: report.identity.name,
                    problems: report.problems,
                });
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        Ok(ModuleVersion {
            identity: report.identity,
            kind,
            size_bytes: bytes.len(),
            pre,
        })
    }

    /// The current version of a module.
    pub fn current(&self, name: &str) -> Option<Arc<ModuleVersion>> {
        self.modules
            .read()
            .expect("module table poisoned")
            .get(name)
            .cloned()
    }

    /// Add a directory to the code path.
    pub fn add_path(&self, dir: impl Into<PathBuf>) {
        let dir = dir.into();
        let mut path = self.code_path.write().expect("code path poisoned");
        if !path.contains(&dir) {
            path.push(dir);
        }
    }

    /// The current version of a module, loading `<name>.wasm` (or with
    /// `-` spelled `_`, as cargo names files) from the code path if it is
    /// not loaded yet. A file that fails to load is logged and skipped.
    pub fn current_or_load(&self, name: &str) -> Option<Arc<ModuleVersion>> {
        if let Some(v) = self.current(name) {
            return Some(v);
        }
        if !molt_abi::section::valid_module_name(name) {
            return None;
        }
        let dirs = self.code_path.read().expect("code path poisoned").clone();
        let files = [
            format!("{name}.wasm"),
            format!("{}.wasm", name.replace('-', "_")),
        ];
        for dir in dirs {
            for file in &files {
                let path = dir.join(file);
                if !path.is_file() {
                    continue;
                }
                match self.load_file(&path) {
                    Ok(v) if v.identity.name == name => return Some(v),
                    Ok(v) => tracing::warn!(
                        file = %path.display(),
                        declared = %v.identity.name,
                        "module file declares another name; not used for `{name}`"
                    ),
                    Err(e) => tracing::warn!(file = %path.display(), "cannot load module: {e}"),
                }
            }
        }
        None
    }

    /// Every loaded module, sorted by name.
    pub fn list(&self) -> Vec<Arc<ModuleVersion>> {
        let mut all: Vec<_> = self
            .modules
            .read()
            .expect("module table poisoned")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.identity.name.cmp(&b.identity.name));
        all
    }
}

/// Inspect a module without loading it into a node: identity, kind,
/// imports, exports and ABI problems. Errors only if the bytes are not
/// valid WebAssembly.
pub fn inspect(bytes: &[u8], fallback_name: &str) -> Result<Report, LoadError> {
    let (identity, section_problem) = analyze::identify(bytes, fallback_name);
    let module =
        Module::new(&Engine::default(), bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
    Ok(analyze::check(&module, identity, section_problem))
}
