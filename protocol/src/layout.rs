//! The partition layout of a disk, as the agent read it (GPT, MBR or none).

use serde::{Deserialize, Serialize};

/// What partitioning a disk carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "table", rename_all = "snake_case", deny_unknown_fields)]
pub enum PartitionTable {
    /// No partition table was recognized (a whole-disk filesystem, or an empty disk).
    None,
    /// A classic MS-DOS partition table.
    Mbr {
        /// The 32-bit disk signature at offset 440.
        disk_signature: u32,
        partitions: Vec<Partition>,
    },
    /// A GUID partition table.
    Gpt {
        disk_guid: String,
        /// What sector 0 holds: the protective MBR the UEFI spec asks for, a hybrid MBR (a
        /// protective entry plus entries mirroring GPT partitions, used to boot GPT disks on
        /// BIOS), or nothing valid.
        mbr: ProtectiveMbr,
        /// The backup header at the end of the disk was found and valid.
        backup_header_ok: bool,
        partitions: Vec<Partition>,
    },
}

/// The state of sector 0 of a GPT disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtectiveMbr {
    Protective,
    Hybrid,
    Missing,
}

/// One partition. Offsets are in bytes so that readers need not know the sector size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// 1-based partition number as Linux names it (`sda1`); MBR logical partitions start at 5.
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// GPT partition type GUID, or the MBR type byte as `0x83`.
    pub type_id: String,
    /// A human name for the type when known (`EFI System`, `Linux filesystem`, `Extended`).
    pub type_name: Option<String>,
    /// GPT partition name.
    pub name: Option<String>,
    /// GPT unique partition GUID.
    pub guid: Option<String>,
    /// MBR boot flag (0x80).
    pub bootable: bool,
    pub kind: PartitionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionKind {
    /// A GPT partition or an MBR primary partition.
    Primary,
    /// An MBR extended partition (a container of logical partitions).
    Extended,
    /// An MBR logical partition inside the extended one.
    Logical,
}

/// How the agent chose what to read of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Only the bytes the filesystems use, plus everything outside filesystems; free space is
    /// sent as zeros.
    UsedBlocks,
    /// Every byte (`p2v-capture --whole-disk`).
    WholeDisk,
}

/// What the agent found in one area of a disk (a partition, a whole unpartitioned disk, or a
/// logical volume inside an LVM physical volume) and how much of it it captures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaReport {
    /// Partition number; `None` for a whole disk without a table or for a logical volume.
    pub partition: Option<u32>,
    /// Logical volume name (`vg/lv`) for areas inside an LVM physical volume.
    pub volume: Option<String>,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// `ext2`, `ext3`, `ext4`, `xfs`, `ntfs`, `fat12`, `fat16`, `fat32`, `exfat`, `btrfs`,
    /// `swap`, `lvm2_pv`, `luks1`, `luks2`, `md_raid` or `unknown`.
    pub content: String,
    /// Bytes in use according to the filesystem's own structures, when it says.
    pub fs_used_bytes: Option<u64>,
    /// Bytes of the area the agent reads and sends.
    pub captured_bytes: u64,
    /// Why the whole area is captured, when it is (inconsistent metadata, unsupported feature,
    /// encrypted, unknown content).
    pub fallback: Option<String>,
}

/// The capture report of one disk: sent when the disk is announced, stored by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureMap {
    pub mode: CaptureMode,
    pub areas: Vec<AreaReport>,
    /// Bytes outside any analyzed area (partition tables, boot code and gaps), always captured.
    pub outside_bytes: u64,
    /// All bytes captured on the disk.
    pub captured_bytes: u64,
}
