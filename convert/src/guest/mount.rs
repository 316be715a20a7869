//! Guards for what the converter sets up on the system it runs on: loop devices over
//! partitions (direct mode on a host, where loop devices get no partition nodes) and a stack
//! of mounts, each undone in reverse order when the guard goes away, also on error paths.
//!
//! Every mount is made private right after it is made, so that nothing mounted below it (the
//! chroot's `/dev/pts`, say) propagates back into the host's own trees; a bind of the host's
//! shared `/dev` would otherwise be a peer of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::sys;
use crate::Error;

/// Loop devices this process attached; all detached on drop.
#[derive(Debug, Default)]
pub struct Loops {
    devices: Vec<String>,
}

impl Loops {
    /// `losetup --find --show --offset O --sizelimit S [--read-only] BACKING`.
    pub fn attach(
        &mut self,
        backing: &Path,
        offset: u64,
        size: u64,
        read_only: bool,
    ) -> Result<String, Error> {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show", "--offset", &offset.to_string()])
            .args(["--sizelimit", &size.to_string()]);
        if read_only {
            cmd.arg("--read-only");
        }
        cmd.arg(backing);
        let out = run(&mut cmd)?;
        let device = out.trim().to_string();
        if !device.starts_with("/dev/") {
            return Err(Error::Command(format!(
                "losetup printed {device:?} instead of a device"
            )));
        }
        tracing::debug!(%device, backing = %backing.display(), offset, size, "loop device attached");
        self.devices.push(device.clone());
        Ok(device)
    }

    /// Detaches every device (latest first); returns what could not be detached.
    pub fn detach_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(device) = self.devices.pop() {
            if let Err(e) = run(Command::new("losetup").args(["--detach", &device])) {
                errors.push(format!("detaching {device}: {e}"));
            }
        }
        errors
    }

    pub fn devices(&self) -> &[String] {
        &self.devices
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        for e in self.detach_all() {
            tracing::warn!("{e}");
        }
    }
}

/// A stack of mounts; unmounted in reverse order on drop (lazily when a plain unmount fails).
#[derive(Debug, Default)]
pub struct Mounts {
    stack: Vec<PathBuf>,
}

impl Mounts {
    /// Mounts `source` (a device, or a pseudo file system name) on `target` and makes the new
    /// mount private.
    pub fn mount(
        &mut self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> Result<(), Error> {
        sys::mount(Some(source), target, Some(fstype), flags, data).map_err(|e| {
            Error::Mount(format!(
                "mounting {} ({fstype}, {}) on {}: {e}",
                source.display(),
                data.unwrap_or("-"),
                target.display()
            ))
        })?;
        self.stack.push(target.to_path_buf());
        self.make_private(target)
    }

    /// Binds `source` (a host directory) on `target`, private.
    pub fn bind(&mut self, source: &Path, target: &Path) -> Result<(), Error> {
        sys::mount(Some(source), target, None, sys::MS_BIND, None).map_err(|e| {
            Error::Mount(format!(
                "binding {} on {}: {e}",
                source.display(),
                target.display()
            ))
        })?;
        self.stack.push(target.to_path_buf());
        self.make_private(target)
    }

    fn make_private(&mut self, target: &Path) -> Result<(), Error> {
        sys::mount(None, target, None, sys::MS_PRIVATE, None)
            .map_err(|e| Error::Mount(format!("making {} private: {e}", target.display())))
    }

    /// Whether `target` is one of ours.
    pub fn contains(&self, target: &Path) -> bool {
        self.stack.iter().any(|t| t == target)
    }

    /// Unmounts the most recent mount, which must be `target`.
    pub fn unmount_last(&mut self, target: &Path) -> Result<(), Error> {
        if self.stack.last().map(PathBuf::as_path) != Some(target) {
            return Err(Error::Mount(format!(
                "{} is not the last mount made",
                target.display()
            )));
        }
        let t = self.stack.pop().expect("checked above");
        unmount(&t)
    }

    /// Unmounts everything, latest first; returns what failed (after a lazy unmount attempt).
    pub fn unmount_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(t) = self.stack.pop() {
            if let Err(e) = unmount(&t) {
                errors.push(e.to_string());
            }
        }
        errors
    }

    pub fn is_empty(&self) -> bool {
        self.stack.is_empty()
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for e in self.unmount_all() {
            tracing::warn!("{e}");
        }
    }
}

/// Unmounts `target`; when it is busy, detaches it lazily (it goes away when no longer used)
/// and reports that.
fn unmount(target: &Path) -> Result<(), Error> {
    match sys::umount(target, 0) {
        Ok(()) => Ok(()),
        Err(first) => match sys::umount(target, sys::MNT_DETACH) {
            Ok(()) => {
                tracing::warn!(target = %target.display(), "unmount failed ({first}); detached lazily");
                Ok(())
            }
            Err(e) => Err(Error::Mount(format!(
                "unmounting {}: {first}; lazily: {e}",
                target.display()
            ))),
        },
    }
}

/// Runs a host command, returning its stdout; a failure carries the command line and stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String, Error> {
    let line = format!("{cmd:?}");
    tracing::debug!(command = %line, "running");
    let out = cmd
        .output()
        .map_err(|e| Error::Command(format!("{line}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Command(format!(
            "{line}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
