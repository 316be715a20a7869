//! Which bytes of a partition (or logical volume) a filesystem uses.
//!
//! The capture agent reads only the used bytes of each filesystem and sends zeros for the rest,
//! so a disk full of old data in free space costs only what the filesystems hold. Each module
//! reads one format's own allocation structures:
//!
//! | module | format | structure read |
//! |--------|--------|----------------|
//! | [`ext`] | ext2/3/4 | group descriptors, block bitmaps (flex_bg, BLOCK_UNINIT, meta_bg, 64bit, bigalloc) |
//! | [`xfs`] | XFS | per-AG free-space B+trees (by block number) and the AGFL |
//! | [`ntfs`] | NTFS | the `$Bitmap` file, found through the MFT |
//! | [`fat`] | FAT12/16/32 | reserved area, FATs, root directory, clusters marked used |
//! | [`exfat`] | exFAT | the allocation bitmap |
//! | [`btrfs`] | btrfs | the extent tree's extents, placed through the chunk tree |
//! | [`swap`] | Linux swap | only the header page |
//! | [`lvm`] | LVM2 PV | the text metadata: each LV's segments on the PV |
//! | [`detect`] | all of the above, LUKS, MD RAID | superblock magics |
//!
//! Everything here is pure: a parser gets a [`ReadAt`] over the area (a file, a block device, or
//! bytes in memory for tests and fuzzing) and returns [`Extents`] or an [`FsError`]. The input is
//! hostile: every count read from disk is checked against the area's size before it sizes a loop
//! or an allocation, and no parser panics. When anything is inconsistent or not understood the
//! answer is an error, and [`analyze`] then falls back to the whole area with the reason: a block
//! the filesystem may use is never skipped.

use std::io;

pub mod btrfs;
pub mod detect;
pub mod exfat;
pub mod ext;
pub mod extents;
pub mod fat;
pub mod identity;
pub mod lvm;
pub mod ntfs;
pub mod swap;
pub mod xfs;

pub use detect::{detect, Content};
pub use extents::Extents;

/// Random access to the bytes of one area (a partition, a logical volume, a whole disk).
pub trait ReadAt {
    /// Fills `buf` from `offset`; reading past the end is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Size of the area in bytes.
    fn size(&self) -> u64;
}

impl ReadAt for [u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        let src = self.get(start..end).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

/// A window `[start, start + len)` of another [`ReadAt`] (a partition of a disk, a linear LV
/// segment of a PV).
#[derive(Debug, Clone, Copy)]
pub struct Window<'a, R: ReadAt + ?Sized> {
    pub inner: &'a R,
    pub start: u64,
    pub len: u64,
}

impl<R: ReadAt + ?Sized> ReadAt for Window<'_, R> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(eof)?;
        if end > self.len {
            return Err(eof());
        }
        self.inner.read_at(self.start + offset, buf)
    }
    fn size(&self) -> u64 {
        self.len
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read beyond the end of the area",
    )
}

/// Why a parser could not map an area.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("reading the area")]
    Io(#[from] io::Error),
    #[error("bad superblock: {0}")]
    BadSuperblock(String),
    #[error("checksum mismatch in {0}")]
    Checksum(String),
    #[error("inconsistent metadata: {0}")]
    Inconsistent(String),
    #[error("unsupported feature: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Other(String),
}

/// Reads a little-endian integer field from a byte buffer. Callers slice buffers they sized, so
/// an out-of-range offset is a bug in this crate; it still returns 0 rather than panic.
pub fn le_u16(buf: &[u8], at: usize) -> u16 {
    buf.get(at..at + 2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}
/// See [`le_u16`].
pub fn le_u32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}
/// See [`le_u16`].
pub fn le_u64(buf: &[u8], at: usize) -> u64 {
    buf.get(at..at + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}
/// Big-endian (XFS is big-endian on disk).
pub fn be_u16(buf: &[u8], at: usize) -> u16 {
    buf.get(at..at + 2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}
/// See [`be_u16`].
pub fn be_u32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
/// See [`be_u16`].
pub fn be_u64(buf: &[u8], at: usize) -> u64 {
    buf.get(at..at + 8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// The result of analyzing one area, for the capture report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Analysis {
    pub content: Content,
    /// Byte ranges of the area to capture (everything else is free and sent as zeros).
    pub capture: Extents,
    /// Bytes the filesystem itself reports in use (data + metadata), when it says.
    pub fs_used_bytes: Option<u64>,
    /// Set when the whole area is captured because the map could not be trusted or the
    /// content is not understood (LUKS, MD RAID, unknown), with the reason.
    pub fallback: Option<String>,
}

/// Detects the content of an area and maps its used bytes; never fails: anything that cannot
/// be mapped is captured whole, with the reason in [`Analysis::fallback`].
pub fn analyze<R: ReadAt + ?Sized>(area: &R) -> Analysis {
    let whole = || Extents::whole(area.size());
    let content = match detect(area) {
        Ok(c) => c,
        Err(e) => {
            return Analysis {
                content: Content::Unknown,
                capture: whole(),
                fs_used_bytes: None,
                fallback: Some(format!("detecting the content failed: {e}")),
            }
        }
    };
    let mapped: Result<(Extents, Option<u64>), FsError> = match &content {
        Content::Ext { .. } => ext::used(area),
        Content::Xfs => xfs::used(area),
        Content::Ntfs => ntfs::used(area),
        Content::Fat { .. } => fat::used(area),
        Content::Exfat => exfat::used(area),
        Content::Btrfs => btrfs::used(area),
        Content::Swap => swap::used(area),
        Content::Lvm2Pv => lvm::used(area),
        Content::Luks { .. } => Err(FsError::Unsupported(
            "LUKS: encrypted, captured whole".into(),
        )),
        Content::MdRaid => Err(FsError::Unsupported(
            "MD RAID member: captured whole".into(),
        )),
        Content::Unknown => Err(FsError::Unsupported("no filesystem recognized".into())),
    };
    match mapped {
        Ok((capture, fs_used_bytes)) => Analysis {
            content,
            capture: capture.clamp_to(area.size()),
            fs_used_bytes,
            fallback: None,
        },
        Err(e) => Analysis {
            content,
            capture: whole(),
            fs_used_bytes: None,
            fallback: Some(e.to_string()),
        },
    }
}
