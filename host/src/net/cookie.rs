//! The cluster cookie: the shared secret nodes prove to each other in the
//! handshake. Read from `MOLT_COOKIE` or a file that is created on first
//! use, as Erlang does with `~/.erlang.cookie`.
//!
//! What it protects: only holders of the cookie can join the cluster (and
//! run code on its nodes). What it does not: it is not an encryption key
//! (TLS is), and anyone who can read the file or the environment of a node
//! holds it.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The environment variable that overrides the cookie file.
pub const COOKIE_ENV: &str = "MOLT_COOKIE";

/// The cookie file's name in `$HOME` when no path is given.
pub const COOKIE_FILE_NAME: &str = ".molt.cookie";

/// Random bytes in a new cookie (written as twice as many hex digits).
const NEW_COOKIE_BYTES: usize = 32;

/// The cluster secret. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie(Vec<u8>);

impl Cookie {
    /// A cookie from text given some other way (a command-line flag, a
    /// test); surrounding whitespace is trimmed. `None` if nothing is left.
    pub fn from_secret(secret: &str) -> Option<Cookie> {
        let secret = secret.trim();
        (!secret.is_empty()).then(|| Cookie(secret.as_bytes().to_vec()))
    }

    /// The secret, as the HMAC key of the handshake.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<secret>)")
    }
}

/// Why no cookie could be had.
#[derive(Debug, thiserror::Error)]
pub enum CookieError {
    /// Reading or creating the cookie file failed.
    #[error("cookie file {}: {source}", path.display())]
    Io {
        /// The cookie file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The cookie file holds nothing but whitespace.
    #[error("cookie file {} is empty", path.display())]
    Empty {
        /// The cookie file.
        path: PathBuf,
    },
    /// The cookie file can be read or written by group or others; like
    /// Erlang, molt refuses it rather than use a secret others may know.
    #[error(
        "cookie file {} is accessible by others (mode {mode:o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    TooPermissive {
        /// The cookie file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// `MOLT_COOKIE` is set but empty (or only whitespace), or not UTF-8.
    #[error("{COOKIE_ENV} is set but {0}")]
    BadEnv(&'static str),
    /// No path was given and `$HOME` is not set.
    #[error("no cookie file path given and HOME is not set")]
    NoHome,
}

/// Where the cookie comes from: `MOLT_COOKIE` in the environment wins;
/// else the file (default `$HOME/.molt.cookie`, or `path`), created with
/// mode 0600 holding 32 random bytes hex-encoded (64 characters) if absent,
/// like Erlang's `~/.erlang.cookie`. Surrounding whitespace is trimmed.
pub fn load_or_create(path: Option<&Path>) -> Result<Cookie, CookieError> {
    let env = match std::env::var(COOKIE_ENV) {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => return Err(CookieError::BadEnv("not UTF-8")),
    };
    load_or_create_from(env, path)
}

/// `$HOME/.molt.cookie`, if `HOME` is set.
pub fn default_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|home| !home.is_empty())?;
    Some(PathBuf::from(home).join(COOKIE_FILE_NAME))
}

/// [`load_or_create`] with the environment value passed in.
fn load_or_create_from(env: Option<String>, path: Option<&Path>) -> Result<Cookie, CookieError> {
    if let Some(value) = env {
        return Cookie::from_secret(&value).ok_or(CookieError::BadEnv("empty"));
    }
    match path {
        Some(path) => load_file(path),
        None => load_file(&default_path().ok_or(CookieError::NoHome)?),
    }
}

/// Read the cookie file, creating it first if absent.
fn load_file(path: &Path) -> Result<Cookie, CookieError> {
    let io = |source| CookieError::Io {
        path: path.to_path_buf(),
        source,
    };
    match fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path).map_err(io)?,
        Err(e) => return Err(io(e)),
    }
    check_mode(path)?;
    let bytes = fs::read(path).map_err(io)?;
    let secret = bytes.trim_ascii();
    if secret.is_empty() {
        return Err(CookieError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Cookie(secret.to_vec()))
}

/// Write a fresh cookie to `path` unless another process does first: the
/// secret goes to a private temporary file, which is then hard-linked into
/// place, so no reader ever sees a half-written cookie and an existing file
/// is never replaced.
fn create(path: &Path) -> io::Result<()> {
    let mut secret = [0u8; NEW_COOKIE_BYTES];
    getrandom::fill(&mut secret).map_err(|e| io::Error::other(e.to_string()))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    debug_assert_eq!(hex.len(), 2 * NEW_COOKIE_BYTES);

    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let written = (|| {
        let mut file = private_options().open(&tmp)?;
        file.write_all(hex.as_bytes())?;
        file.sync_all()?;
        match fs::hard_link(&tmp, path) {
            // Someone else made one meanwhile: theirs is the cookie.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    })();
    let removed = fs::remove_file(&tmp);
    written?;
    removed
}

#[cfg(unix)]
fn private_options() -> fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    options
}

#[cfg(not(unix))]
fn private_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    options
}

#[cfg(unix)]
fn check_mode(path: &Path) -> Result<(), CookieError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map_err(|source| CookieError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(CookieError::TooPermissive {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path) -> Result<(), CookieError> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(case: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "molt-cookie-{}-{case}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            // A leftover from an earlier run with the same pid.
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("cookie")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write(path: &Path, contents: &str, mode: u32) {
        fs::write(path, contents).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_a_private_random_cookie_and_reuses_it() {
        let dir = TempDir::new("create");
        let path = dir.file();
        let first = load_or_create_from(None, Some(&path)).unwrap();
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 64);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
        assert_eq!(first.as_bytes(), text.as_bytes());
        assert_eq!(load_or_create_from(None, Some(&path)).unwrap(), first);
        assert_eq!(
            fs::read_dir(&dir.0).unwrap().count(),
            1,
            "no temp file left"
        );

        let other = TempDir::new("create-other");
        assert_ne!(
            load_or_create_from(None, Some(&other.file())).unwrap(),
            first
        );
    }

    /// One cookie-file case: the file to write (contents and mode), the
    /// `MOLT_COOKIE` value, and the secret or a piece of the error text.
    struct Case {
        name: &'static str,
        file: Option<(&'static str, u32)>,
        env: Option<&'static str>,
        expected: Result<&'static [u8], &'static str>,
    }

    fn check(case: Case) {
        let dir = TempDir::new("files");
        let path = dir.file();
        if let Some((contents, file_mode)) = case.file {
            write(&path, contents, file_mode);
        }
        let got = load_or_create_from(case.env.map(String::from), Some(&path));
        let name = case.name;
        match (got, case.expected) {
            (Ok(cookie), Ok(secret)) => assert_eq!(cookie.as_bytes(), secret, "{name}"),
            (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{name}: {e}"),
            (got, expected) => panic!("{name}: got {got:?}, expected {expected:?}"),
        }
        if case.file.is_none() {
            assert!(
                !path.exists(),
                "{name}: the env value does not create a file"
            );
        }
    }

    #[test]
    fn cookie_files() {
        let case = |name, file, env, expected| Case {
            name,
            file,
            env,
            expected,
        };
        for c in [
            case(
                "trimmed",
                Some((" s3cret\n", 0o600)),
                None,
                Ok(&b"s3cret"[..]),
            ),
            case(
                "owner read-only",
                Some(("s3cret", 0o400)),
                None,
                Ok(b"s3cret"),
            ),
            case("empty file", Some(("  \n", 0o600)), None, Err("is empty")),
            case(
                "group readable",
                Some(("s3cret", 0o640)),
                None,
                Err("chmod 600"),
            ),
            case(
                "world readable",
                Some(("s3cret", 0o604)),
                None,
                Err("mode 604"),
            ),
            case(
                "env wins",
                Some(("file", 0o600)),
                Some(" env\n"),
                Ok(b"env"),
            ),
            case("env, no file", None, Some("env"), Ok(b"env")),
            case(
                "empty env",
                None,
                Some(" "),
                Err("MOLT_COOKIE is set but empty"),
            ),
        ] {
            check(c);
        }
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let dir = TempDir::new("missing");
        let path = dir.0.join("no-such-dir").join("cookie");
        let e = load_or_create_from(None, Some(&path)).unwrap_err();
        assert!(
            matches!(&e, CookieError::Io { path: p, .. } if *p == path),
            "{e:?}"
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let cookie = Cookie::from_secret("hunter2").unwrap();
        assert_eq!(format!("{cookie:?}"), "Cookie(<secret>)");
        assert_eq!(Cookie::from_secret(" \t"), None);
    }
}
