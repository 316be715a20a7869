//! The raw disk images in `disks/`: one sparse file per disk, written chunk by chunk with
//! positional writes, each chunk synced (`fdatasync`) before it is recorded.
//!
//! Zero chunks are not written: a fresh image is one big hole, so a zero chunk costs nothing
//! unless the region may hold data (an earlier upload of other bytes, recorded or not), in which
//! case the hole is punched again (or zeros written where the filesystem cannot punch holes).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use p2v_protocol::{ChunkGeometry, ChunkHash, DiskId};

use crate::datadir::{sync_dir, DataDir};
use crate::sys;
use crate::Error;

/// The `disks/` directory.
#[derive(Debug, Clone)]
pub(crate) struct Images {
    data: DataDir,
}

impl Images {
    pub fn new(data: &DataDir) -> Self {
        Self { data: data.clone() }
    }

    pub fn path(&self, disk: DiskId) -> PathBuf {
        self.data.disk_image(disk)
    }

    pub fn exists(&self, disk: DiskId) -> bool {
        self.path(disk).exists()
    }

    /// Creates a new sparse image of `size` bytes (fails if the file exists).
    pub fn create(&self, disk: DiskId, size: u64) -> Result<(), Error> {
        let path = self.path(disk);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let sized = file.set_len(size).and_then(|()| file.sync_all());
        if let Err(e) = sized {
            drop(file);
            let _ = fs::remove_file(&path);
            if e.raw_os_error() == Some(libc::EFBIG) {
                return Err(Error::BadRequest(format!(
                    "the server's filesystem cannot hold a file of {size} bytes"
                )));
            }
            return Err(Error::io(
                format!("sizing {} to {size} bytes", path.display()),
                e,
            ));
        }
        sync_dir(&self.data.disks_dir()).map_err(|e| Error::io("syncing the disks directory", e))
    }

    /// Removes an image that was created for a disk whose record could not be committed.
    pub fn remove(&self, disk: DiskId) {
        let path = self.path(disk);
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), "removing an unrecorded image: {e}");
        }
    }

    pub fn open(&self, disk: DiskId, write: bool) -> Result<File, Error> {
        let path = self.path(disk);
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))
    }

    /// Writes one chunk at `offset` and syncs it.
    pub fn write_chunk(&self, disk: DiskId, offset: u64, data: &[u8]) -> Result<(), Error> {
        let file = self.open(disk, true)?;
        let context = || {
            format!(
                "writing {} bytes at offset {offset} of {}",
                data.len(),
                self.path(disk).display()
            )
        };
        file.write_all_at(data, offset)
            .map_err(|e| Error::io(context(), e))?;
        file.sync_data()
            .map_err(|e| Error::io(format!("syncing {}", self.path(disk).display()), e))
    }

    /// Makes `offset..offset + len` read as zeros, durably. Returns false when there was
    /// nothing to do (the region was a hole).
    pub fn zero_chunk(&self, disk: DiskId, offset: u64, len: u64) -> Result<bool, Error> {
        let file = self.open(disk, true)?;
        let path = self.path(disk);
        let has_data = sys::has_data(&file, offset, len)
            .map_err(|e| Error::io(format!("probing {}", path.display()), e))?;
        if !has_data {
            return Ok(false);
        }
        match sys::punch_hole(&file, offset, len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
                ) =>
            {
                write_zeros(&file, offset, len)
                    .map_err(|e| Error::io(format!("zeroing in {}", path.display()), e))?;
            }
            Err(e) => {
                return Err(Error::io(
                    format!("punching a hole in {}", path.display()),
                    e,
                ))
            }
        }
        file.sync_data()
            .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
        Ok(true)
    }

    /// (free bytes, total bytes) of the filesystem of `disks/`.
    pub fn space(&self) -> Result<(u64, u64), Error> {
        let dir = self.data.disks_dir();
        let file =
            File::open(&dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
        sys::space(&file).map_err(|e| Error::io(format!("statvfs of {}", dir.display()), e))
    }
}

fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64);
        file.write_all_at(&zeros[..n as usize], offset + done)?;
        done += n;
    }
    Ok(())
}

/// Re-reads the recorded chunks from the image and returns those whose bytes no longer match
/// their recorded hash. Holes are recognised without reading them. `buf` is reused (one chunk).
pub(crate) fn verify_chunks(
    path: &Path,
    file: &File,
    geometry: &ChunkGeometry,
    records: &[(u64, ChunkHash)],
    buf: &mut Vec<u8>,
) -> Result<Vec<(u64, ChunkHash)>, Error> {
    let mut mismatched = Vec::new();
    let mut zero_hash: Option<(u64, ChunkHash)> = None;
    for &(index, recorded) in records {
        let offset = geometry
            .offset(index)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let len = geometry
            .len(index)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let read_err = |e| {
            Error::io(
                format!(
                    "reading {len} bytes at offset {offset} of {}",
                    path.display()
                ),
                e,
            )
        };
        let actual = if !sys::has_data(file, offset, len).map_err(read_err)? {
            match zero_hash {
                Some((l, h)) if l == len => h,
                _ => {
                    let h = ChunkHash::of_zeros(len as usize);
                    zero_hash = Some((len, h));
                    h
                }
            }
        } else {
            buf.resize(len as usize, 0);
            file.read_exact_at(&mut buf[..len as usize], offset)
                .map_err(read_err)?;
            ChunkHash::of(&buf[..len as usize])
        };
        if actual != recorded {
            mismatched.push((index, recorded));
        }
    }
    Ok(mismatched)
}
