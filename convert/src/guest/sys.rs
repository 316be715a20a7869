//! Thin wrappers over the system calls the converter needs to see a guest: mount(2),
//! umount2(2), chroot(2) in a child process, sync(2). Each takes Rust paths and returns
//! [`std::io::Error`] with errno; the callers add what was being done.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

pub use libc::{
    MNT_DETACH, MS_BIND, MS_NODEV, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT,
};

fn cstr(p: &[u8]) -> io::Result<CString> {
    CString::new(p).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// mount(2). `source`/`fstype`/`data` may be absent (bind mounts, propagation changes).
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(|s| cstr(s.as_os_str().as_bytes())).transpose()?;
    let target = cstr(target.as_os_str().as_bytes())?;
    let fstype = fstype.map(|s| cstr(s.as_bytes())).transpose()?;
    let data = data.map(|s| cstr(s.as_bytes())).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null (allowed by mount(2) for these arguments) or points
    // to a NUL-terminated CString that lives until the call returns.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// umount2(2).
pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstr(target.as_os_str().as_bytes())?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// sync(2): flush every file system (the guest's before it is unmounted, the job disk).
pub fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// Makes `command` run chrooted in `root` (with `/` as its working directory).
pub fn chroot_command(command: &mut Command, root: &Path) -> io::Result<()> {
    let root = cstr(root.as_os_str().as_bytes())?;
    let slash = cstr(b"/")?;
    // SAFETY: the closure runs in the forked child before exec and only calls chroot(2) and
    // chdir(2), which are async-signal-safe, on CStrings allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(slash.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Moves the calling process into a mount namespace of its own whose mounts do not propagate
/// back to the host's (direct mode: whatever happens, the guest's mounts vanish with the
/// process). Works only while the process is single-threaded.
pub fn private_mount_namespace() -> io::Result<()> {
    // SAFETY: unshare(2) with a flag constant; no pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    mount(None, Path::new("/"), None, MS_REC | MS_PRIVATE, None)
}
