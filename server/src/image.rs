//! The raw disk images in `disks/`: one sparse file per disk, written chunk by chunk with
//! positional writes, each chunk synced (`fdatasync`) before it is recorded.
//!
//! Syncs are shared: `fdatasync` flushes every dirty page of the file, whichever descriptor
//! wrote it, so chunks of one disk written while a sync runs all wait for the next one, which
//! covers them together ([`SyncGroup`]). Where syncs are slow enough for a capture's parallel
//! uploads to pile up behind them, that makes one sync per handful of chunks instead of one per
//! chunk (on the development machine they rarely meet: 142 syncs for 145 chunks), without
//! acknowledging anything before its bytes are on stable storage.
//!
//! Zero chunks are not written: a fresh image is one big hole, so a zero chunk costs nothing
//! unless the region may hold data (an earlier upload of other bytes, recorded or not), in which
//! case the hole is punched again (or zeros written where the filesystem cannot punch holes).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use p2v_protocol::{ChunkGeometry, ChunkHash, DiskId};

use crate::datadir::{sync_dir, DataDir};
use crate::sys;
use crate::Error;

/// The `disks/` directory.
#[derive(Debug, Clone)]
pub(crate) struct Images {
    data: DataDir,
    syncs: Arc<Mutex<HashMap<DiskId, Arc<SyncGroup>>>>,
}

/// The shared `fdatasync` of one image: writers take a ticket once their bytes are written, and
/// a sync that starts after a ticket was taken covers it.
#[derive(Debug, Default)]
struct SyncGroup {
    /// Tickets handed out: writes that completed.
    written: AtomicU64,
    /// Held while a sync runs.
    state: Mutex<SyncState>,
    /// `fdatasync` calls made (for the trace log and the tests).
    syncs: AtomicU64,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Every ticket up to this one is durable.
    synced: u64,
    /// A sync of this image failed. After a failed `fdatasync` the kernel may have dropped the
    /// dirty pages, so no later success can vouch for earlier writes: the image takes no more
    /// acknowledged writes until the server restarts and the agent resends what is missing.
    failed: Option<String>,
}

impl SyncGroup {
    /// Returns once every write that completed before this call is on stable storage.
    fn sync_after_write(&self, file: &File, path: &Path) -> Result<(), Error> {
        let ticket = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &state.failed {
            return Err(Error::io(
                format!("syncing {}: {why}", path.display()),
                io::Error::other(why.clone()),
            ));
        }
        if state.synced >= ticket {
            return Ok(());
        }
        // Every ticket up to `upto` belongs to a write that has completed.
        let upto = self.written.load(Ordering::SeqCst);
        let syncs = self.syncs.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::trace!(path = %path.display(), writes = upto, syncs, "fdatasync");
        match file.sync_data() {
            Ok(()) => {
                state.synced = upto;
                Ok(())
            }
            Err(e) => {
                state.failed = Some(format!("an earlier fdatasync failed: {e}"));
                Err(Error::io(format!("syncing {}", path.display()), e))
            }
        }
    }
}

impl Images {
    pub fn new(data: &DataDir) -> Self {
        Self {
            data: data.clone(),
            syncs: Arc::default(),
        }
    }

    fn sync_group(&self, disk: DiskId) -> Arc<SyncGroup> {
        let mut groups = self.syncs.lock().unwrap_or_else(|p| p.into_inner());
        groups.entry(disk).or_default().clone()
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

    /// Writes one chunk at `offset` and returns once it is on stable storage.
    pub fn write_chunk(&self, disk: DiskId, offset: u64, data: &[u8]) -> Result<(), Error> {
        let file = self.open(disk, true)?;
        let path = self.path(disk);
        file.write_all_at(data, offset).map_err(|e| {
            Error::io(
                format!(
                    "writing {} bytes at offset {offset} of {}",
                    data.len(),
                    path.display()
                ),
                e,
            )
        })?;
        self.sync_group(disk).sync_after_write(&file, &path)
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
        self.sync_group(disk).sync_after_write(&file, &path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> (tempfile::TempDir, Images, DiskId) {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::new(tmp.path().join("data"));
        data.create_layout().unwrap();
        let images = Images::new(&data);
        let disk = DiskId::from_raw(7);
        images.create(disk, 64 << 20).unwrap();
        (tmp, images, disk)
    }

    #[test]
    fn writes_that_wait_for_a_running_sync_share_the_next_one() {
        let (_tmp, images, disk) = images();
        let group = images.sync_group(disk);
        // A sync "runs" (the state is held) while four writers finish their writes.
        let running = group.state.lock().unwrap();
        let writers: Vec<_> = (0..4u8)
            .map(|i| {
                let images = images.clone();
                std::thread::spawn(move || {
                    let chunk = vec![i + 1; 1 << 20];
                    images.write_chunk(disk, u64::from(i) << 20, &chunk)
                })
            })
            .collect();
        while group.written.load(Ordering::SeqCst) < 4 {
            std::thread::yield_now();
        }
        drop(running);
        for w in writers {
            w.join().unwrap().unwrap();
        }
        // The first writer to get the state synced for all four; the others found it done.
        assert_eq!(group.state.lock().unwrap().synced, 4);
        assert_eq!(group.syncs.load(Ordering::Relaxed), 1);
        let file = images.open(disk, false).unwrap();
        for i in 0..4u8 {
            let mut buf = vec![0; 1 << 20];
            file.read_exact_at(&mut buf, u64::from(i) << 20).unwrap();
            assert!(buf.iter().all(|&b| b == i + 1), "chunk {i}");
        }
        // A later write is not covered by the earlier sync and gets its own.
        images.write_chunk(disk, 8 << 20, &[9; 4096]).unwrap();
        assert_eq!(group.state.lock().unwrap().synced, 5);
        assert_eq!(group.syncs.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_failed_sync_fails_every_later_write_of_that_image() {
        let (_tmp, images, disk) = images();
        images.sync_group(disk).state.lock().unwrap().failed = Some("simulated EIO".into());
        let err = images.write_chunk(disk, 0, &[1; 4096]).unwrap_err();
        assert!(err.to_string().contains("simulated EIO"), "{err}");
        let other = DiskId::from_raw(8);
        images.create(other, 1 << 20).unwrap();
        images.write_chunk(other, 0, &[1; 4096]).unwrap();
    }
}
