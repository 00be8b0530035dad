//! The cluster cookie: the shared secret two nodes must agree on before they talk.
//!
//! As in Erlang, the cookie comes from (in order) an explicit value (`--cookie`), the
//! `TROUPE_COOKIE` environment variable, or a cookie file (`--cookie-file`,
//! `TROUPE_COOKIE_FILE`, else `$HOME/.troupe/cookie`), which is created with a random value
//! and mode 0600 the first time it is needed. The value never appears in logs or `Debug`
//! output.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The environment variable that holds the cookie.
pub const COOKIE_ENV: &str = "TROUPE_COOKIE";
/// The environment variable that names the cookie file.
pub const COOKIE_FILE_ENV: &str = "TROUPE_COOKIE_FILE";

/// A cluster cookie. `Debug` and `Display` never show its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie(String);

/// Why no cookie could be had.
#[derive(Debug, thiserror::Error)]
pub enum CookieError {
    /// The cookie is empty or has characters other than printable ASCII.
    #[error("the cookie must be 1 to 255 printable ASCII characters without spaces")]
    Invalid,
    /// The cookie file could not be read or created.
    #[error("cookie file {path}: {cause}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A cookie file named explicitly does not exist (only the default one is created).
    #[error(
        "cookie file {path} does not exist: write the cluster's cookie there, or leave out --cookie-file to use (and create) the default one"
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// No explicit cookie, and no home directory to keep a cookie file in.
    #[error("no cookie given and $HOME is not set: pass --cookie or set TROUPE_COOKIE")]
    NoHome,
}

impl Cookie {
    /// A cookie from an explicit value.
    pub fn new(value: impl Into<String>) -> Result<Cookie, CookieError> {
        let value = value.into();
        let value = value.trim().to_string();
        if value.is_empty() || value.len() > 255 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CookieError::Invalid);
        }
        Ok(Cookie(value))
    }

    /// Resolves the cookie the way every `troupe` command does: `explicit`, then
    /// `TROUPE_COOKIE`, then the cookie file: `file`, which must exist (a typo must not
    /// make a new cluster secret that no other node has), else `TROUPE_COOKIE_FILE` or
    /// `~/.troupe/cookie`, created on first use.
    pub fn resolve(explicit: Option<&str>, file: Option<&Path>) -> Result<Cookie, CookieError> {
        if let Some(value) = explicit {
            return Cookie::new(value);
        }
        if let Ok(value) = std::env::var(COOKIE_ENV) {
            return Cookie::new(value);
        }
        match file {
            Some(path) if !path.exists() => Err(CookieError::Missing {
                path: path.to_path_buf(),
            }),
            Some(path) => Cookie::from_file(path),
            None => Cookie::from_file(&default_cookie_file()?),
        }
    }

    /// Reads the cookie file, creating it with a random cookie if it does not exist.
    pub fn from_file(path: &Path) -> Result<Cookie, CookieError> {
        let file_err = |cause| CookieError::File {
            path: path.to_path_buf(),
            cause,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Cookie::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(file_err)?;
                }
                let value = random_cookie().map_err(file_err)?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                match options.open(path) {
                    Ok(mut f) => {
                        f.write_all(value.as_bytes()).map_err(file_err)?;
                        tracing::info!(path = %path.display(), "created a new cookie file");
                        Ok(Cookie(value))
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Cookie::new(std::fs::read_to_string(path).map_err(file_err)?)
                    }
                    Err(e) => Err(file_err(e)),
                }
            }
            Err(e) => Err(file_err(e)),
        }
    }

    /// The secret itself, for the handshake only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

fn default_cookie_file() -> Result<PathBuf, CookieError> {
    if let Ok(path) = std::env::var(COOKIE_FILE_ENV) {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").ok_or(CookieError::NoHome)?;
    Ok(Path::new(&home).join(".troupe").join("cookie"))
}

fn random_cookie() -> std::io::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<secret>)")
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Cookie::new("hunter2").unwrap();
        assert!(!format!("{c:?} {c}").contains("hunter2"));
    }

    #[test]
    fn a_cookie_file_is_created_once_and_then_reused() {
        let dir = std::env::temp_dir().join(format!("troupe-cookie-{}", std::process::id()));
        let path = dir.join("cookie");
        let first = Cookie::from_file(&path).unwrap();
        let second = Cookie::from_file(&path).unwrap();
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn blank_or_spaced_cookies_are_refused() {
        assert!(Cookie::new("  ").is_err());
        assert!(Cookie::new("a b").is_err());
    }
}
