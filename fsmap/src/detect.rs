//! Recognizes the content of an area by its superblock magic.

use serde::{Deserialize, Serialize};

use crate::{FsError, ReadAt};

/// What an area holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// ext2, ext3 or ext4 (`version` 2, 3 or 4 from the feature flags).
    Ext { version: u8 },
    Xfs,
    Ntfs,
    /// FAT12, FAT16 or FAT32.
    Fat { bits: u8 },
    Exfat,
    Btrfs,
    Swap,
    Lvm2Pv,
    /// LUKS version 1 or 2.
    Luks { version: u16 },
    MdRaid,
    Unknown,
}

/// Detects the content of `area`. A too-short area is `Unknown`, not an error.
pub fn detect<R: ReadAt + ?Sized>(area: &R) -> Result<Content, FsError> {
    let _ = area;
    Ok(Content::Unknown)
}
