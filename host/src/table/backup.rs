//! Table backups: one table's whole state at one log index, in one file
//! that says what it is and carries its own checksum, so a damaged file
//! or a file of another table is refused with a clear error instead of
//! being loaded.
//!
//! Layout: the magic `MOLTTBL1`, the body's length (`u64`, little-endian),
//! the body (the table, encoded with the codec: its definition, rows,
//! indexes, fences and log index), then the SHA-256 of the body.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::state::Table;

const MAGIC: &[u8; 8] = b"MOLTTBL1";

/// Why a backup or a restore failed. Nothing is changed when it does.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a table backup (another kind of file).
    #[error("{path} is not a molt table backup")]
    NotABackup {
        /// The file.
        path: PathBuf,
    },
    /// The file is a backup, but damaged (cut short, or changed since it
    /// was written).
    #[error("{path} is a damaged table backup: {why}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The backup is of another table.
    #[error(
        "{path} is a backup of table {found}, not {wanted} (restore it under its own name, or ask for a rename)"
    )]
    OtherTable {
        /// The file.
        path: PathBuf,
        /// The table asked for.
        wanted: String,
        /// The table in the file.
        found: String,
    },
    /// The table exists with another kind or other indexes.
    #[error("table {0} exists with another kind or other indexes: delete it first")]
    Incompatible(String),
    /// A table error (no such table, a limit).
    #[error("{0}")]
    Table(String),
}

/// What a backup or restore covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Covered {
    /// The table's log index the backup holds.
    pub index: u64,
    /// Its records.
    pub records: u64,
}

impl Covered {
    /// A backup's or restore's outcome as the control layer carries it:
    /// (log index, records), or the error's message.
    pub fn summary(done: Result<Covered, BackupError>) -> Result<(u64, u64), String> {
        done.map(|c| (c.index, c.records))
            .map_err(|e| e.to_string())
    }
}

/// One table's part in a backup or restore of every table, as the
/// control layer carries it: its name, and (log index, records) or why it
/// failed.
pub type TableSummary = (String, Result<(u64, u64), String>);

impl Covered {
    /// [`summary`](Self::summary) of each table's outcome.
    pub fn summaries(done: Vec<(String, Result<Covered, BackupError>)>) -> Vec<TableSummary> {
        done.into_iter()
            .map(|(table, done)| (table, Covered::summary(done)))
            .collect()
    }
}

/// The extension of the files a backup of every table writes.
pub const EXTENSION: &str = "moltbak";

/// The file table `name`'s backup gets in a backup of every table: the
/// name itself where it is plain (letters, digits, `-`, `_`), each other
/// byte as `%XX`; a name too long for a file name by its hash.
pub fn file_name(name: &str) -> String {
    let mut plain = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => plain.push(b as char),
            _ => plain.push_str(&format!("%{b:02X}")),
        }
    }
    if plain.len() > 200 {
        let digest = Sha256::digest(name.as_bytes());
        plain = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    }
    format!("{plain}.{EXTENSION}")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `table` to `path`, durably: to a temporary file first, synced,
/// then renamed over `path`, so a crash leaves the old file or the new.
pub fn write(table: &Table, path: &Path) -> Result<Covered, BackupError> {
    let body = molt_abi::codec::encode(table);
    let digest = Sha256::digest(&body);
    let tmp = path.with_extension("molt-backup-tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(MAGIC)
        .and_then(|()| file.write_all(&(body.len() as u64).to_le_bytes()))
        .and_then(|()| file.write_all(&body))
        .and_then(|()| file.write_all(&digest))
        .and_then(|()| file.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(Covered {
        index: table.applied(),
        records: table.len(),
    })
}

/// Read the table a backup at `path` holds.
pub fn read(path: &Path) -> Result<Table, BackupError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let damaged = |why: &str| BackupError::Damaged {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup {
            path: path.to_path_buf(),
        });
    }
    let len = bytes
        .get(8..16)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| damaged("cut short in its header"))?;
    let body_end = usize::try_from(len)
        .ok()
        .and_then(|len| 16usize.checked_add(len))
        .filter(|end| end.checked_add(32) == Some(bytes.len()))
        .ok_or_else(|| damaged("its length does not match its header (cut short, or extended)"))?;
    let body = &bytes[16..body_end];
    if Sha256::digest(body).as_slice() != &bytes[body_end..] {
        return Err(damaged("its checksum does not match its contents"));
    }
    molt_abi::codec::decode(body).map_err(|e| damaged(&e.to_string()))
}
