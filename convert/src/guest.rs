//! Placeholder: the guest's disks, partitions and mounts (filled in by the mount work).
use serde::{Deserialize, Serialize};

/// One partition (or a whole disk without a partition table) of the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionInfo {
    /// Index of the disk in the job (`JobDisk::index`).
    pub disk_index: usize,
    /// Partition number (1-based, as in `/dev/sda1`); 0 for a whole disk.
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// GPT partition type GUID or MBR type byte (`0x83`), as text.
    pub part_type: Option<String>,
    /// GPT partition GUID or MBR `DISKID-NN` (what `PARTUUID=` names).
    pub partuuid: Option<String>,
    /// File system detected (`ext4`, `xfs`, `vfat`, `swap`, ...).
    pub fs_type: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// Where it is visible now (`/dev/vda1`, a loop device).
    pub device: Option<String>,
}
