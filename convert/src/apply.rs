//! Carrying out a [`Plan`] on the mounted guest, change by change, with an [`AppliedChange`]
//! for each.
//!
//! - **Backups.** Before the first write to any guest file, the original is copied (mode,
//!   owner and times kept; a symlink as a symlink) to `/var/lib/p2v/backup/<UTC stamp>/<path>`
//!   inside the guest, and `/var/lib/p2v/backup/<stamp>/manifest.json` lists every file
//!   touched: `{path, backup, change, existed}` (`existed: false` for a file the conversion
//!   created, so that undoing it means deleting it). The manifest is rewritten after every new
//!   entry, so a conversion that stops half-way still says what it touched.
//! - **Writes** go to a temporary file in the same directory, are fsynced, then renamed over the
//!   original (and the directory fsynced), keeping the original's mode and owner: a crash
//!   leaves either the old file or the new one.
//! - **Paths** are resolved inside the guest ([`GuestRoot`]): a symlink planted by the guest
//!   can redirect a write only to another file of the guest, never out of it.
//! - **Initramfs rebuilds** run the guest's own tool chrooted in the guest, with `/proc`, `/sys`,
//!   `/dev` (and `/dev/pts`, and tmpfs on `/run` and `/tmp` when the guest has no file system of
//!   its own there) mounted for it, and unmounted afterwards whatever happened. The new image
//!   is then listed: every driver the change asks for must be in it (or built into the kernel).
//!
//! Changes run in plan order, except that initramfs rebuilds run after every file change (the
//! images embed files that other changes edit). A change that fails does not stop the others (they are independent edits of different
//! files, or the same edit of every kernel); the report then says `ok: false`.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::guest::mount::Mounts;
use crate::guest::sys;
use crate::inspect::root::{Kind, CONFIG_LIMIT, INITRD_LIMIT};
use crate::inspect::GuestRoot;
use crate::plan::{Change, InitramfsTool, LineEdit, Plan};
use crate::Error;

/// What happened to one planned change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedChange {
    /// Index into `Plan::changes`.
    pub change: usize,
    pub ok: bool,
    /// What was done, or the error.
    pub detail: String,
    /// Where the original was saved inside the guest (`/var/lib/p2v/backup/...`), if a file
    /// existed before.
    pub backup: Option<String>,
}

/// How long the guest's initramfs tool may run (a TCG appliance is slow; a hung hook is not).
pub const REBUILD_LIMIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Where backups go inside the guest.
pub const BACKUP_DIR: &str = "/var/lib/p2v/backup";

/// One file the conversion touched, in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// Guest path of the file.
    pub path: String,
    /// Guest path of its saved original (`None` when it did not exist).
    pub backup: Option<String>,
    /// Index of the first change that touched it.
    pub change: usize,
    pub existed: bool,
}

/// What apply needs besides the plan.
#[derive(Debug)]
pub struct ApplyContext<'a> {
    pub root: &'a GuestRoot,
    /// Mount points where the guest has a file system of its own (`/`, `/boot`, `/tmp`...).
    pub guest_mounts: Vec<String>,
    /// UTC stamp naming the backup directory ([`utc_stamp`]).
    pub stamp: String,
}

/// `YYYYMMDDTHHMMSSZ` of a time (UTC), for directory and file names.
pub fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar, in 400-year eras).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Carries out every change of `plan` (which must have no blockers: the caller checks).
pub fn apply(plan: &Plan, cx: &ApplyContext) -> Vec<AppliedChange> {
    let mut backups = Backups::new(cx.root, &cx.stamp);
    let mut out = Vec::new();
    // File changes first, initramfs rebuilds last: the images embed configuration that other
    // changes edit (`/etc/initramfs-tools/modules`, `conf.d/resume`, fstab for dracut).
    let rebuild = |c: &Change| matches!(c, Change::RebuildInitramfs { .. });
    let order = (0..plan.changes.len())
        .filter(|&i| !rebuild(&plan.changes[i]))
        .chain((0..plan.changes.len()).filter(|&i| rebuild(&plan.changes[i])));
    for i in order {
        let change = &plan.changes[i];
        let result = apply_one(i, change, cx, &mut backups);
        let applied = match result {
            Ok((detail, backup)) => AppliedChange {
                change: i,
                ok: true,
                detail,
                backup,
            },
            Err(e) => AppliedChange {
                change: i,
                ok: false,
                detail: e.to_string(),
                backup: backups.backup_of_change(i),
            },
        };
        tracing::info!(change = i, ok = applied.ok, "{}", applied.detail);
        out.push(applied);
    }
    out.sort_by_key(|a| a.change);
    sys::sync();
    out
}

type Done = (String, Option<String>);

fn apply_one(
    i: usize,
    change: &Change,
    cx: &ApplyContext,
    backups: &mut Backups,
) -> Result<Done, Error> {
    let root = cx.root;
    match change {
        Change::EditLines { path, edits, .. } => {
            let host = existing_file(root, path)?;
            let text = root.read(path, CONFIG_LIMIT)?;
            let new = edit_lines(&text, edits).map_err(|e| Error::Apply(format!("{path}: {e}")))?;
            let backup = backups.save(&host, i)?;
            write_like(&host, &new, None)?;
            Ok((format!("{path}: {} line(s) replaced", edits.len()), backup))
        }
        Change::AppendLines { path, lines, .. } => {
            let (host, old) = match root.kind(path) {
                Some(_) => {
                    let host = existing_file(root, path)?;
                    (host, Some(root.read(path, CONFIG_LIMIT)?))
                }
                None => (new_file(root, path)?, None),
            };
            let mut new = old.clone().unwrap_or_default();
            if !new.is_empty() && !new.ends_with(b"\n") {
                new.push(b'\n');
            }
            for l in lines {
                if l.contains('\n') {
                    return Err(Error::Apply(format!(
                        "{path}: a line to append holds a newline"
                    )));
                }
                new.extend_from_slice(l.as_bytes());
                new.push(b'\n');
            }
            let backup = backups.save(&host, i)?;
            write_like(&host, &new, Some(0o644))?;
            let verb = if old.is_some() {
                "appended to"
            } else {
                "created"
            };
            Ok((format!("{path}: {} line(s) {verb}", lines.len()), backup))
        }
        Change::WriteFile {
            path,
            content,
            mode,
            ..
        } => {
            if mode & !0o7777 != 0 || mode & 0o6000 != 0 {
                return Err(Error::Apply(format!("{path}: refusing mode {mode:o}")));
            }
            let host = match root.kind(path) {
                Some(_) => existing_file(root, path)?,
                None => new_file(root, path)?,
            };
            let backup = backups.save(&host, i)?;
            write_new(&host, content.as_bytes(), *mode)?;
            Ok((format!("{path}: written ({} bytes)", content.len()), backup))
        }
        Change::MaskUnit { unit, .. } => mask_unit(root, unit, i, backups),
        Change::RebuildInitramfs {
            tool,
            kernel,
            image,
            drivers,
            ..
        } => rebuild_initramfs(cx, *tool, kernel, image, drivers).map(|d| (d, None)),
    }
}

/// Writes a file of the conversion's own (not a change of the guest's files, so without a
/// backup): created with its directories, or replaced atomically.
pub fn write_guest_file(
    root: &GuestRoot,
    path: &str,
    content: &[u8],
    mode: u32,
) -> Result<(), Error> {
    let host = match root.kind(path) {
        Some(_) => existing_file(root, path)?,
        None => new_file(root, path)?,
    };
    write_new(&host, content, mode)
}

/// The host path of an existing regular file of the guest (symlinks followed inside it).
fn existing_file(root: &GuestRoot, path: &str) -> Result<PathBuf, Error> {
    let host = root.resolve(path)?;
    let meta = std::fs::symlink_metadata(&host).map_err(|e| Error::io(&host, e))?;
    if !meta.is_file() {
        return Err(Error::Apply(format!("{path}: not a regular file")));
    }
    Ok(host)
}

/// The host path for a file to create, its directories created (0755) inside the guest.
fn new_file(root: &GuestRoot, path: &str) -> Result<PathBuf, Error> {
    let parent = match path.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((p, _)) => p,
        None => return Err(Error::Apply(format!("{path}: not an absolute path"))),
    };
    mkdir_p(root, parent)?;
    root.resolve_for_write(path)
}

/// Creates every missing directory of `guest_dir` inside the guest.
fn mkdir_p(root: &GuestRoot, guest_dir: &str) -> Result<(), Error> {
    let mut at = String::new();
    for c in guest_dir.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return Err(Error::Apply(format!("{guest_dir}: not a plain path")));
        }
        at.push('/');
        at.push_str(c);
        match root.kind(&at) {
            Some(Kind::Dir) => {}
            Some(_) => return Err(Error::Apply(format!("{at}: exists and is not a directory"))),
            None => {
                let host = root.resolve_for_write(&at)?;
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&host)
                    .map_err(|e| Error::io(&host, e))?;
            }
        }
    }
    Ok(())
}

use std::os::unix::fs::DirBuilderExt;

/// The guest path of a host path below the root.
fn guest_path(root: &GuestRoot, host: &Path) -> String {
    match host.strip_prefix(root.host_dir()) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => host.display().to_string(),
    }
}

/// Replaces lines, keeping every other byte (line endings, a missing final newline).
pub fn edit_lines(text: &[u8], edits: &[LineEdit]) -> Result<Vec<u8>, String> {
    let mut lines: Vec<Vec<u8>> = text
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let mut seen = HashSet::new();
    for e in edits {
        if e.after.contains('\n') {
            return Err(format!("line {}: the replacement holds a newline", e.line));
        }
        if !seen.insert(e.line) {
            return Err(format!("line {} is edited twice", e.line));
        }
        let Some(line) = e.line.checked_sub(1).and_then(|i| lines.get_mut(i)) else {
            return Err(format!(
                "line {} does not exist (the file has {} lines)",
                e.line,
                lines.len()
            ));
        };
        let mut body_len = line.len();
        let mut ending: Vec<u8> = Vec::new();
        if line.ends_with(b"\n") {
            body_len -= 1;
            ending.insert(0, b'\n');
            if line[..body_len].ends_with(b"\r") && !e.before.ends_with('\r') {
                body_len -= 1;
                ending.insert(0, b'\r');
            }
        }
        if &line[..body_len] != e.before.as_bytes() {
            return Err(format!(
                "line {} changed since the plan was made: expected {:?}, found {:?}",
                e.line,
                e.before,
                String::from_utf8_lossy(&line[..body_len])
            ));
        }
        let mut new = e.after.as_bytes().to_vec();
        new.extend_from_slice(&ending);
        *line = new;
    }
    Ok(lines.concat())
}

/// Replaces an existing file's content atomically, keeping its mode and owner (or creating it
/// with `mode_if_new`, root-owned).
fn write_like(host: &Path, content: &[u8], mode_if_new: Option<u32>) -> Result<(), Error> {
    let (mode, owner) = match std::fs::symlink_metadata(host) {
        Ok(m) => (m.mode() & 0o7777, Some((m.uid(), m.gid()))),
        Err(_) => (mode_if_new.unwrap_or(0o644), None),
    };
    write_atomic(host, content, mode, owner)
}

/// Writes a file with `mode` (the owner kept when it existed).
fn write_new(host: &Path, content: &[u8], mode: u32) -> Result<(), Error> {
    let owner = std::fs::symlink_metadata(host)
        .ok()
        .map(|m| (m.uid(), m.gid()));
    write_atomic(host, content, mode, owner)
}

/// Temporary file in the same directory, fsync, rename, fsync of the directory.
fn write_atomic(
    host: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), Error> {
    let dir = host
        .parent()
        .ok_or_else(|| Error::Apply(format!("{}: no directory", host.display())))?;
    let name = host
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.p2v-tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(content)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, host)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(host, e))
}

/// The backups of one run and their manifest.
struct Backups<'a> {
    root: &'a GuestRoot,
    dir: String,
    entries: Vec<ManifestEntry>,
    saved: HashSet<String>,
}

impl<'a> Backups<'a> {
    fn new(root: &'a GuestRoot, stamp: &str) -> Self {
        Backups {
            root,
            dir: format!("{BACKUP_DIR}/{stamp}"),
            entries: Vec::new(),
            saved: HashSet::new(),
        }
    }

    fn backup_of_change(&self, change: usize) -> Option<String> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.change == change)
            .and_then(|e| e.backup.clone())
    }

    /// Saves the original of `host` (a host path below the root) unless this run already did;
    /// returns the guest path of the backup (the first one, for a file touched twice).
    fn save(&mut self, host: &Path, change: usize) -> Result<Option<String>, Error> {
        let path = guest_path(self.root, host);
        if !self.saved.insert(path.clone()) {
            return Ok(self
                .entries
                .iter()
                .find(|e| e.path == path)
                .and_then(|e| e.backup.clone()));
        }
        let meta = std::fs::symlink_metadata(host);
        let existed = meta.is_ok();
        let backup = match meta {
            Err(_) => None,
            Ok(meta) => {
                let backup = format!("{}{path}", self.dir);
                let (parent, _) = backup.rsplit_once('/').expect("absolute");
                mkdir_p(self.root, parent)?;
                let target = self.root.resolve_for_write(&backup)?;
                copy_preserving(host, &target, &meta).map_err(|e| Error::io(&target, e))?;
                Some(backup)
            }
        };
        self.entries.push(ManifestEntry {
            path,
            backup: backup.clone(),
            change,
            existed,
        });
        self.write_manifest()?;
        Ok(backup)
    }

    fn write_manifest(&self) -> Result<(), Error> {
        mkdir_p(self.root, &self.dir)?;
        let path = format!("{}/manifest.json", self.dir);
        let host = self.root.resolve_for_write(&path)?;
        let json = serde_json::to_vec_pretty(&self.entries)?;
        write_atomic(&host, &json, 0o600, None)
    }
}

/// Copies a file (or a symlink, as a symlink) keeping mode, owner and modification time.
fn copy_preserving(from: &Path, to: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from)?;
        std::os::unix::fs::symlink(target, to)?;
        return std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()));
    }
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file or symlink"));
    }
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    std::io::copy(&mut src, &mut dst)?;
    std::os::unix::fs::fchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
    dst.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    dst.set_modified(meta.modified()?)?;
    dst.sync_all()
}

/// `systemctl mask` done by hand: `/etc/systemd/system/UNIT -> /dev/null`.
fn mask_unit(root: &GuestRoot, unit: &str, i: usize, backups: &mut Backups) -> Result<Done, Error> {
    let valid = !unit.is_empty()
        && unit.len() <= 255
        && !unit.starts_with('.')
        && unit.contains('.')
        && unit
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.@\\".contains(&b));
    if !valid {
        return Err(Error::Apply(format!("{unit:?} is not a unit name")));
    }
    let dir = "/etc/systemd/system";
    mkdir_p(root, dir)?;
    let host_dir = root.resolve(dir)?;
    let link = host_dir.join(unit);
    let path = format!("{dir}/{unit}");
    let backup = match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            if std::fs::read_link(&link).map_err(|e| Error::io(&link, e))? == Path::new("/dev/null")
            {
                return Ok((format!("{unit}: already masked"), None));
            }
            backups.save(&link, i)?
        }
        Ok(m) if m.is_file() => backups.save(&link, i)?,
        Ok(_) => return Err(Error::Apply(format!("{path}: exists and is not a file"))),
        Err(_) => backups.save(&link, i)?,
    };
    let tmp = host_dir.join(format!(".{unit}.p2v-tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink("/dev/null", &tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = std::fs::rename(&tmp, &link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&link, e));
    }
    std::fs::File::open(&host_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(&host_dir, e))?;
    Ok((format!("{unit}: masked ({path} -> /dev/null)"), backup))
}

/// A kernel version as `uname -r` prints it: nothing a shell or a path could misread.
fn valid_kernel(kernel: &str) -> bool {
    !kernel.is_empty()
        && kernel.len() <= 128
        && !kernel.starts_with(['-', '.'])
        && kernel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b))
}

/// The guest path of one of the guest's programs.
fn guest_program(root: &GuestRoot, name: &str) -> Option<String> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| root.kind(p) == Some(Kind::File))
}

/// Keeps the last `max` bytes of a program's output for the report.
fn tail(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// Mounts what a chroot needs below the guest root; unmounted when the guard drops.
fn chroot_mounts(cx: &ApplyContext) -> Result<Mounts, Error> {
    let root = cx.root;
    let mut m = Mounts::default();
    let target = |p: &str| -> Result<PathBuf, Error> {
        if root.kind(p) != Some(Kind::Dir) {
            mkdir_p(root, p)?;
        }
        root.resolve(p)
    };
    let pseudo = sys::MS_NOSUID | sys::MS_NODEV | libc::MS_NOEXEC;
    m.mount(Path::new("proc"), &target("/proc")?, "proc", pseudo, None)?;
    m.mount(Path::new("sysfs"), &target("/sys")?, "sysfs", pseudo, None)?;
    m.bind(Path::new("/dev"), &target("/dev")?)?;
    if Path::new("/dev/pts/ptmx").exists() {
        m.bind(Path::new("/dev/pts"), &target("/dev/pts")?)?;
    }
    for dir in ["/run", "/tmp"] {
        if !cx.guest_mounts.iter().any(|g| g == dir) {
            let mode = if dir == "/tmp" {
                "mode=1777"
            } else {
                "mode=0755"
            };
            m.mount(
                Path::new("tmpfs"),
                &target(dir)?,
                "tmpfs",
                sys::MS_NOSUID | sys::MS_NODEV,
                Some(mode),
            )?;
        }
    }
    Ok(m)
}

/// The guest's initramfs tool and its arguments for rebuilding `image` of `kernel`
/// (`image_exists`: whether the guest has it already).
///
/// dracut gets `--fstab`: in host-only mode it stores the root file system's type and mount
/// options in the image (`etc/cmdline.d/95root-dev.conf`, `rootflags=`), and without the option
/// it takes them from `/proc/self/mountinfo`, that is from the converter's own mount of the
/// guest (`nosuid,nodev`): the converted machine would then mount its root nosuid. The guest's
/// fstab (already rewritten to `UUID=` by then) is the configuration the machine boots with.
fn rebuild_command(
    tool: InitramfsTool,
    kernel: &str,
    image: &str,
    image_exists: bool,
) -> (&'static str, Vec<String>) {
    let args: &[&str] = match tool {
        // -u needs an existing image (and its sha1 record); -c makes a first one.
        InitramfsTool::InitramfsTools if image_exists => &["-u", "-k", kernel],
        InitramfsTool::InitramfsTools => &["-c", "-k", kernel],
        InitramfsTool::Dracut => &["--force", "--fstab", image, kernel],
        InitramfsTool::Mkinitcpio => &["-k", kernel, "-g", image],
    };
    let name = match tool {
        InitramfsTool::InitramfsTools => "update-initramfs",
        InitramfsTool::Dracut => "dracut",
        InitramfsTool::Mkinitcpio => "mkinitcpio",
    };
    (name, args.iter().map(|a| a.to_string()).collect())
}

fn rebuild_initramfs(
    cx: &ApplyContext,
    tool: InitramfsTool,
    kernel: &str,
    image: &str,
    drivers: &[String],
) -> Result<String, Error> {
    let root = cx.root;
    if !valid_kernel(kernel) {
        return Err(Error::Apply(format!("{kernel:?} is not a kernel version")));
    }
    if !image.starts_with('/')
        || image.split('/').any(|c| c == "..")
        || image.chars().any(char::is_whitespace)
    {
        return Err(Error::Apply(format!("{image:?} is not a plain guest path")));
    }
    let (name, args) = rebuild_command(tool, kernel, image, root.exists(image));
    let program = guest_program(root, name).ok_or_else(|| {
        Error::Apply(format!(
            "the guest has no {name} (looked in /usr/sbin, /sbin, /usr/bin, /bin)"
        ))
    })?;
    let mut mounts = chroot_mounts(cx)?;
    let mut cmd = Command::new(&program);
    cmd.args(&args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LANG", "C")
        .env("LC_ALL", "C")
        .env("TERM", "dumb")
        .stdin(Stdio::null());
    sys::chroot_command(&mut cmd, root.host_dir()).map_err(|e| Error::Apply(e.to_string()))?;
    let line = format!("chroot GUEST {program} {}", args.join(" "));
    tracing::info!(command = %line, "rebuilding the initramfs");
    let started = std::time::Instant::now();
    let output = sys::run_bounded(&mut cmd, REBUILD_LIMIT);
    let unmount_errors = mounts.unmount_all();
    let output = output.map_err(|e| Error::Command(format!("{line}: {e}")))?;
    let mut both = output.stdout.clone();
    both.extend_from_slice(&output.stderr);
    match output.status {
        Some(s) if s.success() => {}
        Some(s) => {
            return Err(Error::Command(format!(
                "{line}: {s}: {}",
                tail(&both, 2000)
            )));
        }
        None => {
            return Err(Error::Command(format!(
                "{line}: killed after {} s: {}",
                REBUILD_LIMIT.as_secs(),
                tail(&both, 2000)
            )));
        }
    }
    if !unmount_errors.is_empty() {
        return Err(Error::Mount(unmount_errors.join("; ")));
    }
    sys::sync();
    let missing = missing_drivers(root, kernel, image, drivers)?;
    if !missing.is_empty() {
        return Err(Error::Apply(format!(
            "{image} was rebuilt but lacks {}",
            missing.join(", ")
        )));
    }
    Ok(format!(
        "{image}: rebuilt with {name} in {:.1} s; holds {}",
        started.elapsed().as_secs_f64(),
        drivers.join(", ")
    ))
}

/// Drivers of `drivers` that are neither in the image nor built into the kernel (the
/// kernel's `modules.builtin`, or one inside the image).
fn missing_drivers(
    root: &GuestRoot,
    kernel: &str,
    image: &str,
    drivers: &[String],
) -> Result<Vec<String>, Error> {
    use crate::inspect::{initrd, module_name, modules};
    let bytes = root.read(image, INITRD_LIMIT)?;
    let listing = initrd::parse(&bytes)
        .map_err(|e| Error::Apply(format!("{image}: listing the new image: {e}")))?;
    let builtin = root
        .read_config(&format!("/lib/modules/{kernel}/modules.builtin"))
        .map(|t| modules::parse_modules_builtin(&t))
        .unwrap_or_default();
    Ok(drivers
        .iter()
        .map(|d| module_name(d))
        .filter(|d| {
            !listing.modules.contains(d) && !listing.builtin.contains(d) && !builtin.contains(d)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(line: usize, before: &str, after: &str) -> LineEdit {
        LineEdit {
            line,
            before: before.into(),
            after: after.into(),
        }
    }

    #[test]
    fn edits_keep_every_other_byte() {
        let text = b"a\r\nb\n\nc";
        let out = edit_lines(text, &[edit(2, "b", "B B"), edit(4, "c", "C")]).unwrap();
        assert_eq!(out, b"a\r\nB B\n\nC");
        let out = edit_lines(text, &[edit(1, "a", "x")]).unwrap();
        assert_eq!(out, b"x\r\nb\n\nc");
        assert!(edit_lines(text, &[edit(2, "z", "B")])
            .unwrap_err()
            .contains("changed"));
        assert!(edit_lines(text, &[edit(9, "z", "B")])
            .unwrap_err()
            .contains("does not exist"));
        assert!(edit_lines(text, &[edit(0, "z", "B")]).is_err());
        assert!(edit_lines(text, &[edit(2, "b", "x\ny")]).is_err());
        assert!(edit_lines(text, &[edit(2, "b", "x"), edit(2, "b", "y")]).is_err());
        assert_eq!(edit_lines(b"", &[]).unwrap(), b"");
    }

    #[test]
    fn stamps_are_utc_civil_dates() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        // 2024-02-29 12:34:56 UTC
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "20240229T123456Z"
        );
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229T000000Z"
        );
    }

    #[test]
    fn rebuild_commands() {
        let img = "/boot/initrd.img-6.1.0-50-amd64";
        let k = "6.1.0-50-amd64";
        assert_eq!(
            rebuild_command(InitramfsTool::InitramfsTools, k, img, true),
            ("update-initramfs", vec!["-u".into(), "-k".into(), k.into()])
        );
        assert_eq!(
            rebuild_command(InitramfsTool::InitramfsTools, k, img, false).1[0],
            "-c"
        );
        // dracut: the root's options from the guest's fstab, not from the converter's mount.
        let (name, args) = rebuild_command(InitramfsTool::Dracut, k, img, true);
        assert_eq!(name, "dracut");
        assert_eq!(args, ["--force", "--fstab", img, k]);
        assert_eq!(
            rebuild_command(InitramfsTool::Mkinitcpio, k, img, true).1,
            ["-k", k, "-g", img]
        );
    }

    #[test]
    fn kernel_names_are_checked() {
        assert!(valid_kernel("6.1.0-18-amd64"));
        assert!(valid_kernel("5.14.0-362.8.1.el9_3.x86_64"));
        for bad in ["", "-k", "../../x", "a b", "a;b", "a/b"] {
            assert!(!valid_kernel(bad), "{bad}");
        }
    }

    fn guest() -> (tempfile::TempDir, GuestRoot) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/systemd/system")).unwrap();
        std::fs::write(
            dir.path().join("etc/fstab"),
            "/dev/sda1 / ext4 defaults 0 1\nkeep\n",
        )
        .unwrap();
        std::fs::set_permissions(
            dir.path().join("etc/fstab"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        // A hostile symlink pointing out of the guest: resolved inside it.
        std::os::unix::fs::symlink("/../../../../etc/hostname", dir.path().join("etc/escape"))
            .unwrap();
        let root = GuestRoot::new(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn changes_backups_and_manifest() {
        let (dir, root) = guest();
        let plan = Plan {
            changes: vec![
                Change::EditLines {
                    path: "/etc/fstab".into(),
                    edits: vec![edit(
                        1,
                        "/dev/sda1 / ext4 defaults 0 1",
                        "UUID=x / ext4 defaults 0 1",
                    )],
                    reason: "r".into(),
                },
                Change::AppendLines {
                    path: "/etc/initramfs-tools/modules".into(),
                    lines: vec!["virtio_blk".into()],
                    reason: "r".into(),
                },
                Change::AppendLines {
                    path: "/etc/fstab".into(),
                    lines: vec!["# p2v".into()],
                    reason: "r".into(),
                },
                Change::MaskUnit {
                    unit: "ipmievd.service".into(),
                    reason: "r".into(),
                },
                Change::MaskUnit {
                    unit: "../x".into(),
                    reason: "r".into(),
                },
                Change::WriteFile {
                    path: "/etc/escape".into(),
                    content: "pwned".into(),
                    mode: 0o644,
                    reason: "r".into(),
                },
                Change::EditLines {
                    path: "/etc/fstab".into(),
                    edits: vec![edit(2, "not what is there", "x")],
                    reason: "r".into(),
                },
            ],
            ..Plan::default()
        };
        let cx = ApplyContext {
            root: &root,
            guest_mounts: vec!["/".into()],
            stamp: "20240101T000000Z".into(),
        };
        let applied = apply(&plan, &cx);
        let ok: Vec<bool> = applied.iter().map(|a| a.ok).collect();
        assert_eq!(
            ok,
            [true, true, true, true, false, false, false],
            "{applied:#?}"
        );
        let p = dir.path();
        let fstab = std::fs::read_to_string(p.join("etc/fstab")).unwrap();
        assert_eq!(fstab, "UUID=x / ext4 defaults 0 1\nkeep\n# p2v\n");
        let mode = std::fs::metadata(p.join("etc/fstab")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_to_string(p.join("etc/initramfs-tools/modules")).unwrap(),
            "virtio_blk\n"
        );
        assert_eq!(
            std::fs::read_link(p.join("etc/systemd/system/ipmievd.service")).unwrap(),
            Path::new("/dev/null")
        );
        let bdir = p.join("var/lib/p2v/backup/20240101T000000Z");
        // The backup is the original, taken once, before the first change.
        assert_eq!(
            std::fs::read_to_string(bdir.join("etc/fstab")).unwrap(),
            "/dev/sda1 / ext4 defaults 0 1\nkeep\n"
        );
        assert_eq!(
            std::fs::metadata(bdir.join("etc/fstab")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(
            applied[0].backup.as_deref(),
            Some("/var/lib/p2v/backup/20240101T000000Z/etc/fstab")
        );
        let manifest: Vec<ManifestEntry> =
            serde_json::from_slice(&std::fs::read(bdir.join("manifest.json")).unwrap()).unwrap();
        let paths: Vec<(&str, bool)> = manifest
            .iter()
            .map(|m| (m.path.as_str(), m.existed))
            .collect();
        assert_eq!(
            paths,
            [
                ("/etc/fstab", true),
                ("/etc/initramfs-tools/modules", false),
                ("/etc/systemd/system/ipmievd.service", false)
            ]
        );
        // The escape symlink was refused, not followed to the host.
        assert!(
            applied[5].detail.contains("symlink"),
            "{}",
            applied[5].detail
        );
        assert!(
            applied[6].detail.contains("changed since"),
            "{}",
            applied[6].detail
        );
        // No temporary files are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(p.join("etc"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("p2v-tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
