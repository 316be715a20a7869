//! [`GuestRoot`]: safe access to the files of a guest whose root file system is mounted on a
//! host directory (with its other file systems mounted below it).
//!
//! The guest's files are hostile input. A symlink inside the guest means what it would mean
//! when the guest runs: `/etc/fstab -> /etc/shadow` names the *guest's* shadow file, and
//! `../../../../etc/shadow` stops at the guest's root like `..` does at `/`. The host kernel
//! knows nothing of that, so every path is resolved here one component at a time:
//!
//! 1. the guest path is split into components; `.` is dropped, `..` pops one component but never
//!    goes above the guest root;
//! 2. each component is looked up with `lstat` (never following a link) under the host directory
//!    of the components resolved so far;
//! 3. a symlink is read and its target spliced in front of the remaining components (an
//!    absolute target restarts from the guest root); at most [`MAX_SYMLINKS`] links are followed
//!    per resolution, as the kernel does (`ELOOP`);
//! 4. the resulting host path is opened with `O_NOFOLLOW`, so that the last component cannot be
//!    a symlink by the time it is opened.
//!
//! Nothing else changes the guest's file systems while the converter works on them (they are
//! mounted for the converter only), so the short window between the lookup and the open of
//! the intermediate directories is not a race an attacker can use.
//!
//! Reads refuse anything that is not a regular file (FIFOs would block, devices would read the
//! *host's* hardware) and anything over a size limit ([`CONFIG_LIMIT`] for configuration files,
//! [`INITRD_LIMIT`] for initramfs images). Errors carry the guest path and say what was wrong,
//! so that they can go into the report as they are.
//!
//! For the apply step, [`GuestRoot::resolve_for_write`] resolves a path whose last component may
//! not exist yet (a file to create) and refuses a last component that is a symlink, so a write
//! never follows a link planted by the guest.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::Error;

/// Configuration files larger than this are refused (no distribution ships such a file).
pub const CONFIG_LIMIT: u64 = 1 << 20;
/// Initramfs images larger than this are refused.
pub const INITRD_LIMIT: u64 = 512 << 20;
/// Symlinks followed in one resolution before giving up (the kernel's limit is 40).
pub const MAX_SYMLINKS: usize = 40;
/// Directory entries returned by [`GuestRoot::read_dir`] at most.
pub const DIR_LIMIT: usize = 4096;

/// The kind of a (resolved) path in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A FIFO, socket, device or anything else that is not read.
    Other,
}

/// A guest root file system mounted on a host directory. See the module docs.
#[derive(Debug, Clone)]
pub struct GuestRoot {
    host: PathBuf,
}

/// `bytes` in the largest binary unit that keeps it at least 1 (for limit messages).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut unit = 0;
    let mut v = bytes;
    while unit + 1 < UNITS.len() && v >= 1024 {
        v /= 1024;
        unit += 1;
    }
    format!("{v} {}", UNITS[unit])
}

impl GuestRoot {
    /// The guest root mounted at `host_dir` (which must be a directory).
    pub fn new(host_dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = host_dir.as_ref();
        let host = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        let meta = std::fs::metadata(&host).map_err(|e| Error::io(&host, e))?;
        if !meta.is_dir() {
            return Err(Error::Guest {
                path: "/".into(),
                reason: format!("{} is not a directory", host.display()),
            });
        }
        Ok(GuestRoot { host })
    }

    /// The host directory of the guest's `/`.
    pub fn host_dir(&self) -> &Path {
        &self.host
    }

    fn err(path: &str, reason: impl Into<String>) -> Error {
        Error::Guest {
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    /// Resolves `guest_path` (absolute, inside the guest) to the host path it names, following
    /// every symlink inside the guest. The path must exist.
    pub fn resolve(&self, guest_path: &str) -> Result<PathBuf, Error> {
        self.resolve_inner(guest_path, false)
            .map(|(p, _)| self.to_host(&p))
    }

    /// Like [`resolve`](Self::resolve), for a file about to be created or replaced: the
    /// directories on the way must exist (symlinks among them are followed inside the guest),
    /// the last component may be missing, and it must not be a symlink or a directory.
    pub fn resolve_for_write(&self, guest_path: &str) -> Result<PathBuf, Error> {
        let (components, meta) = self.resolve_inner(guest_path, true)?;
        if let Some(m) = meta {
            if m.is_dir() {
                return Err(Self::err(guest_path, "is a directory"));
            }
            if !m.is_file() {
                return Err(Self::err(guest_path, "is not a regular file"));
            }
        }
        Ok(self.to_host(&components))
    }

    /// The guest path (`/a/b`) of resolved components.
    fn to_host(&self, components: &[String]) -> PathBuf {
        let mut p = self.host.clone();
        for c in components {
            p.push(c);
        }
        p
    }

    /// Resolved components and the `lstat` of the last one (`None` when missing and allowed).
    fn resolve_inner(
        &self,
        guest_path: &str,
        last_may_be_missing: bool,
    ) -> Result<(Vec<String>, Option<Metadata>), Error> {
        if !guest_path.starts_with('/') {
            return Err(Self::err(guest_path, "not an absolute guest path"));
        }
        if guest_path.contains('\0') {
            return Err(Self::err(guest_path, "contains a NUL byte"));
        }
        let mut todo: Vec<String> = split(guest_path).rev().collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0usize;
        let mut last_meta = None;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    last_meta = None;
                    continue;
                }
                _ => {}
            }
            let host = self.to_host(&done).join(&c);
            let meta = match std::fs::symlink_metadata(&host) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if last_may_be_missing && todo.is_empty() {
                        done.push(c);
                        return Ok((done, None));
                    }
                    return Err(Self::err(guest_path, "not found"));
                }
                Err(e) => return Err(Self::err(guest_path, e.to_string())),
            };
            if meta.file_type().is_symlink() {
                if last_may_be_missing && todo.is_empty() {
                    return Err(Self::err(
                        guest_path,
                        "is a symlink (refusing to write through it)",
                    ));
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Self::err(
                        guest_path,
                        format!("more than {MAX_SYMLINKS} symlinks (a loop?)"),
                    ));
                }
                let target =
                    std::fs::read_link(&host).map_err(|e| Self::err(guest_path, e.to_string()))?;
                let target = target.to_string_lossy().into_owned();
                if target.is_empty() {
                    return Err(Self::err(guest_path, "empty symlink"));
                }
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(split(&target).rev());
                last_meta = None;
                continue;
            }
            if !todo.is_empty() && !meta.is_dir() {
                return Err(Self::err(
                    guest_path,
                    format!("/{} is not a directory", {
                        let mut d = done.clone();
                        d.push(c.clone());
                        d.join("/")
                    }),
                ));
            }
            done.push(c);
            last_meta = Some(meta);
        }
        if last_meta.is_none() {
            // The path resolved to a directory reached through `..` or the root itself.
            last_meta = Some(
                std::fs::symlink_metadata(self.to_host(&done))
                    .map_err(|e| Self::err(guest_path, e.to_string()))?,
            );
        }
        Ok((done, last_meta))
    }

    /// The kind of `guest_path` after resolution, `None` when it does not exist or cannot be
    /// resolved.
    pub fn kind(&self, guest_path: &str) -> Option<Kind> {
        let (_, meta) = self.resolve_inner(guest_path, false).ok()?;
        let ft = meta?.file_type();
        Some(if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else {
            Kind::Other
        })
    }

    /// True when `guest_path` resolves to anything (file, directory, other).
    pub fn exists(&self, guest_path: &str) -> bool {
        self.kind(guest_path).is_some()
    }

    /// Reads a whole regular file, refusing one over `limit` bytes.
    pub fn read(&self, guest_path: &str, limit: u64) -> Result<Vec<u8>, Error> {
        let host = self.resolve(guest_path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&host)
            .map_err(|e| Self::err(guest_path, e.to_string()))?;
        let meta = file
            .metadata()
            .map_err(|e| Self::err(guest_path, e.to_string()))?;
        let ft = meta.file_type();
        if !ft.is_file() {
            let what = if ft.is_dir() {
                "a directory"
            } else if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device node"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            return Err(Self::err(
                guest_path,
                format!("is {what}, not a regular file"),
            ));
        }
        if meta.len() > limit {
            return Err(Self::err(
                guest_path,
                format!("{}, over the {} limit", human(meta.len()), human(limit)),
            ));
        }
        read_limited(file, limit).map_err(|e| Self::err(guest_path, e))
    }

    /// Reads a configuration file ([`CONFIG_LIMIT`]) as text; bytes that are not UTF-8 are
    /// replaced (U+FFFD), so a line holding them never matches a planned edit's `before`.
    pub fn read_config(&self, guest_path: &str) -> Result<String, Error> {
        let bytes = self.read(guest_path, CONFIG_LIMIT)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Names in a directory (sorted, without `.` and `..`), at most [`DIR_LIMIT`].
    pub fn read_dir(&self, guest_path: &str) -> Result<Vec<String>, Error> {
        let host = self.resolve(guest_path)?;
        let meta =
            std::fs::symlink_metadata(&host).map_err(|e| Self::err(guest_path, e.to_string()))?;
        if !meta.is_dir() {
            return Err(Self::err(guest_path, "not a directory"));
        }
        let rd = std::fs::read_dir(&host).map_err(|e| Self::err(guest_path, e.to_string()))?;
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Self::err(guest_path, e.to_string()))?;
            if names.len() >= DIR_LIMIT {
                return Err(Self::err(
                    guest_path,
                    format!("more than {DIR_LIMIT} entries"),
                ));
            }
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// The target of a symlink itself (not followed), for `*.wants` entries; `None` when the
    /// path is not a symlink. The directories before it are resolved safely.
    pub fn read_link(&self, guest_path: &str) -> Result<Option<String>, Error> {
        let (parent, name) = match guest_path.rsplit_once('/') {
            Some((p, n)) if !n.is_empty() && n != "." && n != ".." => {
                (if p.is_empty() { "/" } else { p }, n)
            }
            _ => return Err(Self::err(guest_path, "no file name")),
        };
        let host = self.resolve(parent)?.join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let t =
                    std::fs::read_link(&host).map_err(|e| Self::err(guest_path, e.to_string()))?;
                Ok(Some(t.to_string_lossy().into_owned()))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(Self::err(guest_path, e.to_string())),
        }
    }
}

fn split(path: &str) -> impl DoubleEndedIterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

fn read_limited(file: File, limit: u64) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > limit {
        return Err(format!("grew over the {} limit while read", human(limit)));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, GuestRoot) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc/sub")).unwrap();
        std::fs::write(r.join("etc/shadow"), "guest shadow").unwrap();
        std::fs::write(r.join("etc/sub/file"), "sub").unwrap();
        symlink("/etc/shadow", r.join("etc/abs")).unwrap();
        symlink("../../../../../etc/shadow", r.join("etc/sub/rel")).unwrap();
        symlink("sub", r.join("etc/dirlink")).unwrap();
        symlink("loop2", r.join("etc/loop1")).unwrap();
        symlink("loop1", r.join("etc/loop2")).unwrap();
        symlink("/nonexistent", r.join("etc/dangling")).unwrap();
        std::fs::write(r.join("etc/big"), vec![b'x'; 3 << 20]).unwrap();
        let g = GuestRoot::new(r).unwrap();
        (t, g)
    }

    #[test]
    fn symlinks_stay_in_the_guest() {
        let (_t, g) = tree();
        let read = |p: &str| {
            g.read(p, CONFIG_LIMIT)
                .map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(read("/etc/abs").unwrap(), "guest shadow");
        assert_eq!(read("/etc/sub/rel").unwrap(), "guest shadow");
        assert_eq!(read("/../../etc/shadow").unwrap(), "guest shadow");
        assert_eq!(read("/etc/dirlink/file").unwrap(), "sub");
        assert_eq!(read("/etc/dirlink/../shadow").unwrap(), "guest shadow");
        assert!(g.resolve("/etc/abs").unwrap().starts_with(g.host_dir()));
        let e = read("/etc/loop1").unwrap_err().to_string();
        assert!(e.contains("symlinks"), "{e}");
        let e = read("/etc/dangling").unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
        let e = read("/etc/shadow/x").unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        assert!(read("etc/shadow").is_err());
    }

    #[test]
    fn limits_and_kinds() {
        let (_t, g) = tree();
        let e = g.read("/etc/big", CONFIG_LIMIT).unwrap_err().to_string();
        assert_eq!(e, "/etc/big: 3 MiB, over the 1 MiB limit");
        let e = g.read("/etc", CONFIG_LIMIT).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        let e = g
            .read("/dev/null/../etc", CONFIG_LIMIT)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not found"), "{e}");
        assert_eq!(g.kind("/etc/dirlink"), Some(Kind::Dir));
        assert_eq!(g.kind("/etc/abs"), Some(Kind::File));
        assert_eq!(g.kind("/nope"), None);
        assert_eq!(g.read_dir("/etc/sub").unwrap(), vec!["file", "rel"]);
        assert_eq!(
            g.read_link("/etc/abs").unwrap().as_deref(),
            Some("/etc/shadow")
        );
        assert_eq!(g.read_link("/etc/shadow").unwrap(), None);
    }

    #[test]
    fn fifo_is_refused() {
        let (t, g) = tree();
        let p = t.path().join("etc/fifo");
        let c = std::ffi::CString::new(p.as_os_str().to_string_lossy().as_bytes()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0);
        let e = g.read("/etc/fifo", CONFIG_LIMIT).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
    }

    #[test]
    fn write_resolution() {
        let (t, g) = tree();
        assert_eq!(
            g.resolve_for_write("/etc/dirlink/new").unwrap(),
            g.host_dir().join("etc/sub/new")
        );
        assert!(g.resolve_for_write("/etc/abs").is_err());
        assert!(g.resolve_for_write("/etc/sub").is_err());
        assert!(g.resolve_for_write("/missing/new").is_err());
        assert_eq!(
            g.resolve_for_write("/etc/shadow").unwrap(),
            t.path().canonicalize().unwrap().join("etc/shadow")
        );
    }
}
