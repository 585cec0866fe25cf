//! What a module is and whether it satisfies the ABI: its declared name and
//! version, its kind (behaviour or raw), and every way its imports and
//! exports differ from `molt-abi`. Used by `load` and by `molt inspect`.

use std::fmt;

use molt_abi::imports::{Import, ValType};
use molt_abi::{IMPORT_MODULE, exports, imports, section};
use sha2::{Digest, Sha256};
use wasmparser::{Parser, Payload};
use wasmtime::{ExternType, FuncType, Module};

/// How the host drives a module's processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// Exports `molt_init` and `molt_handle`: called once per message.
    Behaviour,
    /// Exports `molt_main`: an entry function with a blocking receive.
    Raw,
}

impl fmt::Display for ModuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModuleKind::Behaviour => "behaviour",
            ModuleKind::Raw => "raw",
        })
    }
}

/// Name and version of a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Module name: declared, else from the file name.
    pub name: String,
    /// Version: declared, else `sha256:` and the first 16 hex digits of the
    /// content hash.
    pub version: String,
    /// Whether name and version come from a `molt.module` section.
    pub declared: bool,
    /// Full SHA-256 of the module bytes, hex.
    pub hash: String,
}

/// One way a module fails the ABI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// An import from a module other than `molt`.
    ForeignImport {
        /// Import module.
        module: String,
        /// Field name.
        name: String,
    },
    /// An import the ABI does not have.
    UnknownImport(String),
    /// An import or export with the wrong kind or signature.
    WrongSignature {
        /// Name of the function.
        name: String,
        /// Signature the ABI expects.
        expected: String,
        /// Signature found.
        found: String,
    },
    /// Neither `molt_handle` nor `molt_main` is exported.
    NoEntry,
    /// A behaviour without `molt_init`.
    MissingInit,
    /// No exported memory named `memory`.
    NoMemory,
    /// The `molt.module` section is malformed.
    BadSection(String),
    /// Built against another ABI version.
    AbiVersion(u32),
    /// A problem another node found, in its words (problems travel between
    /// nodes as text).
    Reported(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::ForeignImport { module, name } => write!(
                f,
                "imports `{module}`.`{name}`, but only module `{IMPORT_MODULE}` is provided"
            ),
            Problem::UnknownImport(name) => {
                write!(
                    f,
                    "imports `{IMPORT_MODULE}`.`{name}`, which the ABI does not have"
                )
            }
            Problem::WrongSignature {
                name,
                expected,
                found,
            } => write!(f, "`{name}` has type {found}, the ABI says {expected}"),
            Problem::NoEntry => write!(
                f,
                "exports neither `{}` (behaviour) nor `{}` (raw process)",
                exports::HANDLE.name,
                exports::MAIN.name
            ),
            Problem::MissingInit => write!(
                f,
                "exports `{}` but not `{}`",
                exports::HANDLE.name,
                exports::INIT.name
            ),
            Problem::NoMemory => write!(f, "does not export its memory as `{}`", exports::MEMORY),
            Problem::BadSection(why) => write!(f, "`{}` section: {why}", section::NAME),
            Problem::AbiVersion(v) => write!(
                f,
                "built for ABI version {v}, this host speaks {}",
                molt_abi::ABI_VERSION
            ),
            Problem::Reported(text) => f.write_str(text),
        }
    }
}

/// The wasm binary of a module file: the bytes themselves if they are one
/// (they start with `\0asm`), else WAT text assembled, with its
/// annotations (a `(@custom "molt.module" ...)` becomes that section, as in
/// a binary built by the SDK). Anything else is refused with what it is
/// not.
pub fn to_binary(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    if bytes.starts_with(b"\0asm") {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let not_wasm = "not a wasm module (no \\0asm header)";
    let text = match std::str::from_utf8(bytes) {
        Ok(text) if !text.trim().is_empty() => text,
        Ok(_) => return Err(format!("{not_wasm} and not WAT text: the file is empty")),
        Err(_) => return Err(format!("{not_wasm} and not WAT text (not UTF-8)")),
    };
    wat::parse_str(text)
        .map(std::borrow::Cow::Owned)
        .map_err(|e| {
            // The parser's message spans lines (a caret under the text):
            // keep its first line, which says what and where.
            let first = e.to_string();
            let first = first.lines().next().unwrap_or("").trim().to_string();
            format!("{not_wasm}, and as WAT text: {first}")
        })
}

/// A data segment that cannot fit the memory every instance starts with:
/// instantiation would always trap, so the module is refused at load.
/// Only segments at constant offsets are checked (those from globals are
/// known only at instantiation). `None` when they all fit, or the bytes do
/// not parse (compiling says why).
pub fn data_out_of_bounds(bytes: &[u8]) -> Option<String> {
    let mut memory_bytes: Option<u64> = None;
    let mut page_bytes = 65_536u64;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            Payload::MemorySection(memories) => {
                let memory = memories.into_iter().next()?.ok()?;
                if let Some(log2) = memory.page_size_log2 {
                    page_bytes = 1u64 << log2;
                }
                memory_bytes = Some(memory.initial.saturating_mul(page_bytes));
            }
            Payload::DataSection(data) => {
                let Some(memory_bytes) = memory_bytes else {
                    // An imported memory (or none): nothing known here.
                    return None;
                };
                for (index, segment) in data.into_iter().enumerate() {
                    let segment = segment.ok()?;
                    let wasmparser::DataKind::Active {
                        memory_index: 0,
                        offset_expr,
                    } = segment.kind
                    else {
                        continue;
                    };
                    let Some(offset) = constant_offset(&offset_expr)? else {
                        continue;
                    };
                    let len = segment.data.len() as u64;
                    if offset.saturating_add(len) > memory_bytes {
                        return Some(format!(
                            "data segment {index} ({len} bytes at offset {offset}) does not fit \
                             the initial memory ({memory_bytes} bytes): every instance would trap"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// A data segment's offset if it is a constant (`Some(None)` if it is
/// not, as one read from a global); `None` if the expression does not
/// parse.
fn constant_offset(expr: &wasmparser::ConstExpr<'_>) -> Option<Option<u64>> {
    Some(match expr.get_operators_reader().read().ok()? {
        wasmparser::Operator::I32Const { value } => Some(value as u32 as u64),
        wasmparser::Operator::I64Const { value } => Some(value as u64),
        _ => None,
    })
}

/// Most pages of zero-initialised statics [`statics_pages`] names: a
/// guest with more (a large static buffer) may never touch most of them,
/// and naming them would make every instance take them.
pub const STATICS_PAGES_MAX: u32 = 2;

/// The size of the pages [`statics_pages`] counts in: the kernel's.
pub const STATICS_PAGE_BYTES: u64 = 4096;

/// The 4 KiB pages of a module's zero-initialised statics (between the end
/// of its data and `__heap_base`, the start of its heap) that no data
/// segment writes, as a range of page numbers, when there are at most
/// [`STATICS_PAGES_MAX`] of them.
///
/// A fresh instance reads such a page before it writes it (a flag, a
/// lock's state): the kernel maps its shared zero page for the read, and
/// the first write then costs a second fault, which replaces that mapping
/// and so has to flush every core's TLB that runs the node. Written first
/// instead (one zero byte, see `guest::instantiate`), each takes one
/// fault. Only modules whose statics are known zero when instantiation
/// ends qualify: `__data_end` and `__heap_base` exported as constants (as
/// Rust's and C's toolchains do), no start function (no guest code runs
/// before the host's first call) and every data segment at a constant
/// offset. `None` otherwise, or when the bytes do not parse.
pub fn statics_pages(bytes: &[u8]) -> Option<std::ops::Range<u32>> {
    const PAGE: u64 = STATICS_PAGE_BYTES;
    let mut global_inits: Vec<Option<u64>> = Vec::new();
    let mut named: [Option<u32>; 2] = [None, None];
    let mut data_end = 0u64;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    if matches!(import.ok()?.ty, wasmparser::TypeRef::Global(_)) {
                        global_inits.push(None);
                    }
                }
            }
            Payload::GlobalSection(globals) => {
                for global in globals {
                    let global = global.ok()?;
                    let mut ops = global.init_expr.get_operators_reader();
                    global_inits.push(match ops.read().ok()? {
                        wasmparser::Operator::I32Const { value } => Some(value as u32 as u64),
                        _ => None,
                    });
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.ok()?;
                    let slot = match export.name {
                        "__data_end" => 0,
                        "__heap_base" => 1,
                        _ => continue,
                    };
                    if export.kind == wasmparser::ExternalKind::Global {
                        named[slot] = Some(export.index);
                    }
                }
            }
            Payload::StartSection { .. } => return None,
            Payload::DataSection(data) => {
                for segment in data {
                    let segment = segment.ok()?;
                    let wasmparser::DataKind::Active { offset_expr, .. } = segment.kind else {
                        continue;
                    };
                    let offset = constant_offset(&offset_expr)??;
                    data_end = data_end.max(offset.saturating_add(segment.data.len() as u64));
                }
            }
            _ => {}
        }
    }
    let value = |index: Option<u32>| *global_inits.get(index? as usize)?;
    let (statics_start, heap_base) = (value(named[0])?, value(named[1])?);
    // From the page of the first static (or, if a data segment writes
    // part of that one, the next) to the one holding the byte before the
    // heap.
    let first = data_end.div_ceil(PAGE).max(statics_start / PAGE);
    let end = heap_base.div_ceil(PAGE);
    if first >= end || end - first > u64::from(STATICS_PAGES_MAX) {
        return None;
    }
    Some(u32::try_from(first).ok()?..u32::try_from(end).ok()?)
}

/// Everything `inspect` prints and `load` checks.
#[derive(Clone, Debug)]
pub struct Report {
    /// Name and version.
    pub identity: Identity,
    /// Kind, if the entry exports are there.
    pub kind: Option<ModuleKind>,
    /// Imports as `module.name: signature`.
    pub imports: Vec<String>,
    /// Exports as `name: type`.
    pub exports: Vec<String>,
    /// Every way it fails the ABI; empty when it satisfies it.
    pub problems: Vec<Problem>,
    /// The minimum size of its exported memory, in bytes (what every
    /// instance starts with).
    pub memory_min_bytes: Option<u64>,
}

/// Read the `molt.module` section and hash the bytes. `fallback_name` names
/// a module without the section (usually the file stem).
pub fn identify(bytes: &[u8], fallback_name: &str) -> (Identity, Option<Problem>) {
    let hash = hex(&Sha256::digest(bytes));
    let undeclared = |problem| {
        let name = if section::valid_module_name(fallback_name) {
            fallback_name.to_string()
        } else {
            "module".to_string()
        };
        (
            Identity {
                name,
                version: format!("sha256:{}", &hash[..16]),
                declared: false,
                hash: hash.clone(),
            },
            problem,
        )
    };
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::CustomSection(custom)) = payload else {
            continue;
        };
        if custom.name() != section::NAME {
            continue;
        }
        return match section::parse(custom.data()) {
            Ok(d) if d.abi != molt_abi::ABI_VERSION => undeclared(Some(Problem::AbiVersion(d.abi))),
            Ok(d) => (
                Identity {
                    name: d.name.to_string(),
                    version: d.version.to_string(),
                    declared: true,
                    hash,
                },
                None,
            ),
            Err(e) => undeclared(Some(Problem::BadSection(format!("{e:?}")))),
        };
    }
    undeclared(None)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn abi_type(ty: ValType) -> wasmtime::ValType {
    match ty {
        ValType::I32 => wasmtime::ValType::I32,
        ValType::I64 => wasmtime::ValType::I64,
    }
}

fn matches(spec: &Import, ty: &FuncType) -> bool {
    let same = |a: &[ValType], b: &mut dyn ExactSizeIterator<Item = wasmtime::ValType>| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| abi_type(*x).matches(&y))
    };
    same(spec.params, &mut ty.params()) && same(spec.results, &mut ty.results())
}

fn spec_sig(spec: &Import) -> String {
    let list = |v: &[ValType]| {
        v.iter()
            .map(|t| format!("{t:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(spec.params), list(spec.results))
}

fn extern_sig(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => {
            let list = |v: &mut dyn Iterator<Item = wasmtime::ValType>| {
                v.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
            };
            format!(
                "({}) -> ({})",
                list(&mut f.params()),
                list(&mut f.results())
            )
        }
        ExternType::Memory(m) => format!("memory {} pages min", m.minimum()),
        ExternType::Table(t) => format!("table {} min", t.minimum()),
        ExternType::Global(_) => "global".to_string(),
        ExternType::Tag(_) => "tag".to_string(),
    }
}

/// `module` with its `molt.module` section replaced by one declaring `name`
/// and `version` (and this ABI): the same code as another version. Every
/// other section stays as it is. For tests, benchmarks and tools that need
/// several versions of one build. `None` if `module` is not a well-formed
/// sequence of wasm sections.
pub fn restamp(module: &[u8], name: &str, version: &str) -> Option<Vec<u8>> {
    fn leb(bytes: &[u8], at: &mut usize) -> Option<usize> {
        let (mut value, mut shift) = (0usize, 0u32);
        loop {
            let b = *bytes.get(*at)?;
            *at += 1;
            value |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(value);
            }
            shift += 7;
            if shift > 28 {
                return None;
            }
        }
    }
    fn put_leb(out: &mut Vec<u8>, mut value: usize) {
        loop {
            let b = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    if module.get(..4)? != b"\0asm" {
        return None;
    }
    let mut out = module.get(..8)?.to_vec();
    let mut at = 8;
    while at < module.len() {
        let start = at;
        let id = module[at];
        at += 1;
        let size = leb(module, &mut at)?;
        let body = at;
        at = at.checked_add(size).filter(|end| *end <= module.len())?;
        if id == 0 {
            let mut p = body;
            let len = leb(module, &mut p)?;
            if module.get(p..p.checked_add(len)?)? == section::NAME.as_bytes() {
                continue;
            }
        }
        out.extend_from_slice(&module[start..at]);
    }
    let text = format!(
        "name={name}\nversion={version}\nabi={}\n",
        molt_abi::ABI_VERSION
    );
    let mut body = Vec::new();
    put_leb(&mut body, section::NAME.len());
    body.extend_from_slice(section::NAME.as_bytes());
    body.extend_from_slice(text.as_bytes());
    out.push(0);
    put_leb(&mut out, body.len());
    out.extend_from_slice(&body);
    Some(out)
}

/// Check a compiled module against the ABI.
pub fn check(module: &Module, identity: Identity, section_problem: Option<Problem>) -> Report {
    let mut problems: Vec<Problem> = section_problem.into_iter().collect();
    let mut import_lines = Vec::new();
    for import in module.imports() {
        let ty = import.ty();
        import_lines.push(format!(
            "{}.{}: {}",
            import.module(),
            import.name(),
            extern_sig(&ty)
        ));
        if import.module() != IMPORT_MODULE {
            problems.push(Problem::ForeignImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
            continue;
        }
        let Some(spec) = imports::find(import.name()) else {
            problems.push(Problem::UnknownImport(import.name().to_string()));
            continue;
        };
        if !matches!(&ty, ExternType::Func(f) if matches(spec, f)) {
            problems.push(Problem::WrongSignature {
                name: spec.name.to_string(),
                expected: spec_sig(spec),
                found: extern_sig(&ty),
            });
        }
    }

    let mut export_lines = Vec::new();
    let mut has = |spec: &Import| -> bool {
        let Some(ty) = module.get_export(spec.name) else {
            return false;
        };
        if matches!(&ty, ExternType::Func(f) if matches(spec, f)) {
            true
        } else {
            problems.push(Problem::WrongSignature {
                name: spec.name.to_string(),
                expected: spec_sig(spec),
                found: extern_sig(&ty),
            });
            false
        }
    };
    let (handle, init, main) = (
        has(&exports::HANDLE),
        has(&exports::INIT),
        has(&exports::MAIN),
    );
    for spec in [
        exports::STATE_SAVE,
        exports::CODE_CHANGE,
        exports::STATE_RESTORE,
    ] {
        has(&spec);
    }
    let kind = if handle {
        if !init {
            problems.push(Problem::MissingInit);
        }
        Some(ModuleKind::Behaviour)
    } else if main {
        Some(ModuleKind::Raw)
    } else {
        problems.push(Problem::NoEntry);
        None
    };
    let memory_min_bytes = match module.get_export(exports::MEMORY) {
        Some(ExternType::Memory(memory)) => {
            Some(memory.minimum().saturating_mul(memory.page_size()))
        }
        _ => {
            problems.push(Problem::NoMemory);
            None
        }
    };
    for export in module.exports() {
        export_lines.push(format!("{}: {}", export.name(), extern_sig(&export.ty())));
    }
    Report {
        identity,
        memory_min_bytes,
        kind,
        imports: import_lines,
        exports: export_lines,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty module with a `molt.module` section declaring `name 1.0.0`.
    fn declared(name: &str) -> Vec<u8> {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        let text = format!(
            "name={name}\nversion=1.0.0\nabi={}\n",
            molt_abi::ABI_VERSION
        );
        let mut body = vec![section::NAME.len() as u8];
        body.extend_from_slice(section::NAME.as_bytes());
        body.extend_from_slice(text.as_bytes());
        module.push(0);
        module.push(body.len() as u8);
        module.extend_from_slice(&body);
        module
    }

    #[test]
    fn restamp_replaces_the_declared_version_only() {
        let original = declared("counter");
        let (before, _) = identify(&original, "x");
        assert_eq!(
            (before.name.as_str(), before.version.as_str()),
            ("counter", "1.0.0")
        );
        let again = restamp(&original, "counter", "2.0.0-test").unwrap();
        let (after, problem) = identify(&again, "x");
        assert_eq!(problem, None);
        assert_eq!(
            (after.name.as_str(), after.version.as_str()),
            ("counter", "2.0.0-test")
        );
        assert_ne!(after.hash, before.hash);
        // One section, not two.
        let sections = Parser::new(0)
            .parse_all(&again)
            .filter(|p| matches!(p, Ok(Payload::CustomSection(c)) if c.name() == section::NAME))
            .count();
        assert_eq!(sections, 1);
    }

    #[test]
    fn restamp_refuses_what_is_not_a_module() {
        assert_eq!(restamp(b"not wasm", "a", "1"), None);
        let mut cut = declared("counter");
        cut.truncate(cut.len() - 3);
        assert_eq!(restamp(&cut, "a", "1"), None);
    }

    /// A module whose data ends at `data_end` (one segment from 0x10000)
    /// and whose statics run to `heap_base`, with `extra` first in it.
    fn laid_out(data_end: u32, heap_base: u32, extra: &str) -> Vec<u8> {
        let len = data_end - 0x10000;
        wat::parse_str(format!(
            r#"(module
                {extra}
                (memory (export "memory") 2)
                (global (export "__data_end") i32 (i32.const {data_end}))
                (global (export "__heap_base") i32 (i32.const {heap_base}))
                (data (i32.const 0x10000) "{}"))"#,
            "\\01".repeat(len as usize)
        ))
        .unwrap()
    }

    #[test]
    fn statics_pages_are_those_no_data_segment_writes() {
        // Data to 77,520 (page 18), statics to 78,080: page 19 only.
        assert_eq!(statics_pages(&laid_out(77_520, 78_080, "")), Some(19..20));
        // Statics that end inside the data's last page: none.
        assert_eq!(statics_pages(&laid_out(77_520, 77_824, "")), None);
        // Data ending exactly on a page: the statics start the next one.
        assert_eq!(statics_pages(&laid_out(77_824, 86_016, "")), Some(19..21));
        // More pages than the bound: none named.
        assert_eq!(statics_pages(&laid_out(77_824, 90_112, "")), None);
        // A start function runs guest code before the host's first call.
        assert_eq!(
            statics_pages(&laid_out(77_520, 78_080, "(func $s) (start $s)")),
            None
        );
        // A segment at an offset known only at instantiation.
        assert_eq!(
            statics_pages(&laid_out(
                77_520,
                78_080,
                r#"(import "env" "g" (global $g i32)) (data (global.get $g) "x")"#
            )),
            None
        );
        // Bytes that do not parse: nothing named.
        assert_eq!(statics_pages(b"not wasm"), None);
        let cut = laid_out(77_520, 78_080, "");
        assert_eq!(statics_pages(&cut[..cut.len() - 5]), None);
        // Without the two exports nothing is known.
        let bare = wat::parse_str(r#"(module (memory 2) (data (i32.const 0x10000) "x"))"#).unwrap();
        assert_eq!(statics_pages(&bare), None);
    }
}
