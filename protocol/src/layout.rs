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
