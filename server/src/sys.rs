//! The few Linux calls std does not offer: finding data in a sparse file (`lseek(SEEK_DATA)`,
//! see lseek(2)), punching a hole (`fallocate(FALLOC_FL_PUNCH_HOLE)`, see fallocate(2)) and free
//! space of a filesystem (`fstatvfs`, see statvfs(3)).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

/// True when any byte of `offset..offset + len` may hold data (is not a hole). Filesystems
/// without `SEEK_DATA` support report everything as data, which is the safe answer.
pub(crate) fn has_data(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    let start =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: lseek takes a file descriptor that `file` keeps open for the duration of the call
    // and plain integers; it reads or writes no memory of ours. Moving the file offset does not
    // matter: all I/O on image files is positional (pread/pwrite).
    let found = unsafe { libc::lseek(file.as_raw_fd(), start, libc::SEEK_DATA) };
    if found < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            // No data at or after `offset`.
            Some(libc::ENXIO) => Ok(false),
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(true),
            _ => Err(err),
        };
    }
    Ok((found as u64) < offset.saturating_add(len))
}

/// Deallocates `offset..offset + len` (it then reads as zeros) without changing the file size.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let overflow = || io::Error::from_raw_os_error(libc::EOVERFLOW);
    let start = libc::off_t::try_from(offset).map_err(|_| overflow())?;
    let len = libc::off_t::try_from(len).map_err(|_| overflow())?;
    // SAFETY: fallocate takes a file descriptor that `file` keeps open for the duration of the
    // call and plain integers; it reads or writes no memory of ours.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            start,
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// (bytes an unprivileged writer can still allocate, total size) of the filesystem holding
/// `file`.
pub(crate) fn space(file: &File) -> io::Result<(u64, u64)> {
    let mut stat = MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `stat` points to writable, properly aligned memory of the size of a `statvfs`,
    // which fstatvfs fills in; the descriptor is kept open by `file` during the call.
    let rc = unsafe { libc::fstatvfs(file.as_raw_fd(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero is a valid value for every (integer) field, and fstatvfs succeeded.
    let stat = unsafe { stat.assume_init() };
    // The field types differ between targets (32-bit ones use narrower integers).
    #[allow(clippy::unnecessary_cast)]
    let (available, total, block_size) = (
        stat.f_bavail as u64,
        stat.f_blocks as u64,
        stat.f_frsize as u64,
    );
    Ok((
        available.saturating_mul(block_size),
        total.saturating_mul(block_size),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_and_data() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sparse");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        file.set_len(8 << 20).unwrap();
        file.write_all_at(&[1u8; 4096], 4 << 20).unwrap();
        file.sync_all().unwrap();
        assert!(has_data(&file, 4 << 20, 1 << 20).unwrap());
        // Filesystems without SEEK_DATA say "data" everywhere; only check holes where supported.
        let supports_holes = !has_data(&file, 0, 1 << 20).unwrap();
        punch_hole(&file, 4 << 20, 1 << 20).unwrap();
        let mut buf = [9u8; 4096];
        file.read_exact_at(&mut buf, 4 << 20).unwrap();
        assert_eq!(buf, [0u8; 4096]);
        if supports_holes {
            assert!(!has_data(&file, 4 << 20, 1 << 20).unwrap());
        }
        assert_eq!(file.metadata().unwrap().len(), 8 << 20);
        let (available, total) = space(&file).unwrap();
        assert!(available > 0 && total >= available);
    }
}
