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

/// What [`run_bounded`] saw of a program.
#[derive(Debug)]
pub struct Finished {
    /// `None` when the program was killed for running past its time.
    pub status: Option<std::process::ExitStatus>,
    /// The last [`OUTPUT_KEPT`] bytes of stdout and of stderr.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Output kept per stream by [`run_bounded`].
pub const OUTPUT_KEPT: usize = 64 << 10;

/// Runs `command` in a process group of its own with stdout/stderr captured (the last
/// [`OUTPUT_KEPT`] bytes of each); past `limit` the whole group is killed. The guest's tools run
/// this way: a hung hook must not hang the conversion.
pub fn run_bounded(command: &mut Command, limit: std::time::Duration) -> io::Result<Finished> {
    use std::io::Read;
    use std::process::Stdio;
    command
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut r) = r {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * OUTPUT_KEPT {
                        kept.drain(..kept.len() - OUTPUT_KEPT);
                    }
                }
            }
            if kept.len() > OUTPUT_KEPT {
                kept.drain(..kept.len() - OUTPUT_KEPT);
            }
            kept
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if std::time::Instant::now() >= deadline {
            let pgid = child.id() as libc::pid_t;
            // SAFETY: kill(2) on the process group we created for the child (its pid); no
            // pointers.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Grandchildren that outlived the child may still hold the pipes: kill the group too.
    // SAFETY: as above.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn bounded_runs_capture_and_kill() {
        let done = run_bounded(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(done.status.and_then(|s| s.code()), Some(3));
        assert_eq!(
            (&done.stdout[..], &done.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );

        // A hung program (and the grandchild holding its pipes) is killed at the limit.
        let t = Instant::now();
        let done = run_bounded(
            Command::new("sh").args(["-c", "echo started; sleep 60; echo never"]),
            Duration::from_millis(500),
        )
        .unwrap();
        assert!(done.status.is_none());
        assert_eq!(done.stdout, b"started\n");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

        // Output beyond the bound keeps its end.
        let done = run_bounded(
            Command::new("sh").args(["-c", "head -c 300000 /dev/zero; echo END"]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(done.stdout.len(), OUTPUT_KEPT);
        assert!(done.stdout.ends_with(b"END\n"));
    }
}
