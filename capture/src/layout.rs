//! Reads a disk's partition table: GPT (UEFI specification, chapter 5 "GUID Partition Table
//! Disk Layout") through the `gpt` crate, MBR with extended and logical partitions through
//! `mbrman`, and the protective or hybrid MBR of GPT disks.
//!
//! The parser is pure over any `Read + Seek` (a disk, an image file or bytes in memory for tests
//! and the fuzz target). A disk's contents are hostile input: before the `gpt` crate sees a header
//! we check the fields it would otherwise assert on, and a table we cannot read is an error the
//! caller reports, never a panic.

use std::io::{self, Read, Seek, SeekFrom};

use p2v_protocol::layout::{Partition, PartitionKind, PartitionTable, ProtectiveMbr};

/// Errors reading a partition table.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("reading the partition table")]
    Io(#[from] io::Error),
    #[error("unsupported logical sector size {0} (expected 512 or 4096)")]
    SectorSize(u32),
    #[error("invalid GPT: {0}")]
    Gpt(String),
    #[error("invalid MBR: {0}")]
    Mbr(String),
}

const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// Largest partition entry array we accept. The UEFI spec requires room for at least 128 entries;
/// tools never write more than a few hundred. A bigger count is a corrupted or hostile header.
const MAX_GPT_ENTRIES: u32 = 4096;
const MBR_TYPE_PROTECTIVE: u8 = 0xee;

/// Reads the partition table of a disk whose logical sectors are `sector_size` bytes.
pub fn read_partition_table<R: Read + Seek>(
    disk: &mut R,
    sector_size: u32,
) -> Result<PartitionTable, LayoutError> {
    let lb_size = match sector_size {
        512 => gpt::disk::LogicalBlockSize::Lb512,
        4096 => gpt::disk::LogicalBlockSize::Lb4096,
        other => return Err(LayoutError::SectorSize(other)),
    };
    let disk_size = disk.seek(SeekFrom::End(0))?;
    let mut sector0 = [0u8; 512];
    if !read_at(disk, 0, &mut sector0)? {
        return Ok(PartitionTable::None);
    }
    let mbr_signature = sector0[510] == 0x55 && sector0[511] == 0xaa;
    let mbr_types: Vec<u8> = (0..4).map(|i| sector0[446 + i * 16 + 4]).collect();

    let primary_ok = check_gpt_header(disk, u64::from(sector_size), sector_size)?;
    let last_lba = (disk_size / u64::from(sector_size)).saturating_sub(1);
    let backup_ok =
        last_lba > 1 && check_gpt_header(disk, last_lba * u64::from(sector_size), sector_size)?;
    if primary_ok || backup_ok {
        let mbr = if !mbr_signature || !mbr_types.contains(&MBR_TYPE_PROTECTIVE) {
            ProtectiveMbr::Missing
        } else if mbr_types
            .iter()
            .all(|t| *t == 0 || *t == MBR_TYPE_PROTECTIVE)
        {
            ProtectiveMbr::Protective
        } else {
            ProtectiveMbr::Hybrid
        };
        return read_gpt(disk, lb_size, sector_size, mbr, backup_ok);
    }
    if mbr_signature && mbr_types.iter().any(|t| *t != 0) && looks_like_partition_table(&sector0) {
        return read_mbr(disk, sector_size, &sector0);
    }
    Ok(PartitionTable::None)
}

/// Reads `buf.len()` bytes at `offset`; false when the disk is too short.
fn read_at<R: Read + Seek>(disk: &mut R, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
    disk.seek(SeekFrom::Start(offset))?;
    match disk.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Checks the fields of a GPT header at `offset` that must be sane before a full parse: the
/// signature, the header size and CRC32, and an entry array of 128-byte entries of bounded count.
fn check_gpt_header<R: Read + Seek>(
    disk: &mut R,
    offset: u64,
    sector_size: u32,
) -> Result<bool, LayoutError> {
    let mut header = [0u8; 512];
    if !read_at(disk, offset, &mut header)? || &header[..8] != GPT_SIGNATURE {
        return Ok(false);
    }
    let le32 = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let header_size = le32(12);
    if !(92..=sector_size.min(512)).contains(&header_size) {
        return Err(LayoutError::Gpt(format!(
            "header size {header_size} out of range"
        )));
    }
    let stored_crc = le32(16);
    let mut copy = header[..header_size as usize].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != stored_crc {
        return Ok(false);
    }
    let entries = le32(80);
    let entry_size = le32(84);
    if entry_size != 128 {
        return Err(LayoutError::Gpt(format!(
            "partition entry size {entry_size} (only 128 is supported)"
        )));
    }
    if entries > MAX_GPT_ENTRIES {
        return Err(LayoutError::Gpt(format!(
            "{entries} partition entries (more than {MAX_GPT_ENTRIES})"
        )));
    }
    Ok(true)
}

/// CRC-32 (IEEE 802.3, reflected), as GPT headers use.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

/// An adapter that lets the `gpt` crate (which wants `Write` even for read-only use) read from a
/// plain `Read + Seek`; every write fails.
struct ReadOnly<'a, R>(&'a mut R);

impl<R> std::fmt::Debug for ReadOnly<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadOnly")
    }
}
impl<R: Read> Read for ReadOnly<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl<R: Seek> Seek for ReadOnly<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}
impl<R> io::Write for ReadOnly<'_, R> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "partition tables are read only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn read_gpt<R: Read + Seek>(
    disk: &mut R,
    lb_size: gpt::disk::LogicalBlockSize,
    sector_size: u32,
    mbr: ProtectiveMbr,
    backup_header_ok: bool,
) -> Result<PartitionTable, LayoutError> {
    let gpt = guarded("GPT", || {
        gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(lb_size)
            .open_from_device(ReadOnly(disk))
            .map_err(|e| e.to_string())
    })
    .map_err(LayoutError::Gpt)?;
    let ss = u64::from(sector_size);
    let mut partitions = Vec::new();
    for (number, p) in gpt.partitions() {
        if !p.is_used() {
            continue;
        }
        if p.last_lba < p.first_lba {
            return Err(LayoutError::Gpt(format!(
                "partition {number} ends before it starts"
            )));
        }
        let start_bytes = p.first_lba.checked_mul(ss);
        let size_bytes = (p.last_lba - p.first_lba + 1).checked_mul(ss);
        let (Some(start_bytes), Some(size_bytes)) = (start_bytes, size_bytes) else {
            return Err(LayoutError::Gpt(format!(
                "partition {number} lies beyond any disk"
            )));
        };
        let type_guid = p.part_type_guid.guid.to_string().to_uppercase();
        partitions.push(Partition {
            number: *number,
            start_bytes,
            size_bytes,
            type_name: gpt_type_name(&type_guid).map(str::to_string),
            type_id: type_guid,
            name: Some(p.name.clone()).filter(|n| !n.is_empty()),
            guid: Some(p.part_guid.to_string().to_uppercase()),
            bootable: p.flags & 0b100 != 0,
            kind: PartitionKind::Primary,
        });
    }
    Ok(PartitionTable::Gpt {
        disk_guid: gpt.guid().to_string().to_uppercase(),
        mbr,
        backup_header_ok,
        partitions,
    })
}

/// A few well-known GPT partition types, for people reading reports.
fn gpt_type_name(guid: &str) -> Option<&'static str> {
    Some(match guid {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux extended boot",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "Linux home",
        "CA7D7CCB-63ED-4C53-861C-1742536059CC" => "LUKS",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => "Windows recovery",
        _ => return None,
    })
}

/// A FAT or NTFS boot sector also ends in 55 AA; a partition table's entries have boot flags of
/// 0x00 or 0x80 only.
fn looks_like_partition_table(sector0: &[u8; 512]) -> bool {
    (0..4).all(|i| matches!(sector0[446 + i * 16], 0x00 | 0x80))
}

/// Runs a third-party parser, turning a panic (a bug it has on some hostile input) into an error.
fn guarded<T>(what: &str, parse: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse))
        .unwrap_or_else(|_| Err(format!("the {what} parser failed on this input")))
}

fn read_mbr<R: Read + Seek>(
    disk: &mut R,
    sector_size: u32,
    sector0: &[u8; 512],
) -> Result<PartitionTable, LayoutError> {
    // mbrman panics when every used entry starts at LBA 0; no real entry does (LBA 0 is the MBR).
    for i in 0..4 {
        let entry = &sector0[446 + i * 16..462 + i * 16];
        let start = u32::from_le_bytes(entry[8..12].try_into().expect("4 bytes"));
        let sectors = u32::from_le_bytes(entry[12..16].try_into().expect("4 bytes"));
        if entry[4] != 0 && (start == 0 || sectors == 0) {
            return Err(LayoutError::Mbr(format!(
                "entry {} starts at sector {start} with {sectors} sectors",
                i + 1
            )));
        }
    }
    let mbr = guarded("MBR", || {
        mbrman::MBR::read_from(disk, sector_size).map_err(|e| e.to_string())
    })
    .map_err(LayoutError::Mbr)?;
    let ss = u64::from(sector_size);
    let disk_signature = u32::from_le_bytes(sector0[440..444].try_into().expect("4 bytes"));
    let mut partitions = Vec::new();
    for (number, entry) in mbr.iter() {
        if entry.is_unused() {
            continue;
        }
        let kind = if number > 4 {
            PartitionKind::Logical
        } else if entry.is_extended() {
            PartitionKind::Extended
        } else {
            PartitionKind::Primary
        };
        partitions.push(Partition {
            number: u32::try_from(number).unwrap_or(u32::MAX),
            start_bytes: u64::from(entry.starting_lba) * ss,
            size_bytes: u64::from(entry.sectors) * ss,
            type_id: format!("0x{:02x}", entry.sys),
            type_name: mbr_type_name(entry.sys).map(str::to_string),
            name: None,
            guid: None,
            bootable: entry.is_active(),
            kind,
        });
    }
    Ok(PartitionTable::Mbr {
        disk_signature,
        partitions,
    })
}

fn mbr_type_name(sys: u8) -> Option<&'static str> {
    Some(match sys {
        0x01 => "FAT12",
        0x04 | 0x06 | 0x0e => "FAT16",
        0x05 | 0x0f | 0x85 => "Extended",
        0x07 => "NTFS/exFAT",
        0x0b | 0x0c => "FAT32",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8e => "Linux LVM",
        0xef => "EFI System",
        0xee => "GPT protective",
        0xfd => "Linux RAID",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn crc32_matches_known_vector() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn empty_disk_has_no_table() {
        let mut disk = Cursor::new(vec![0u8; 1 << 20]);
        assert_eq!(
            read_partition_table(&mut disk, 512).unwrap(),
            PartitionTable::None
        );
        let mut tiny = Cursor::new(vec![0u8; 100]);
        assert_eq!(
            read_partition_table(&mut tiny, 512).unwrap(),
            PartitionTable::None
        );
    }

    #[test]
    fn mbr_primary_entries() {
        let mut disk = vec![0u8; 4 << 20];
        disk[440..444].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        // Entry 1: bootable Linux at LBA 2048, 4096 sectors.
        let e = &mut disk[446..462];
        e[0] = 0x80;
        e[4] = 0x83;
        e[8..12].copy_from_slice(&2048u32.to_le_bytes());
        e[12..16].copy_from_slice(&4096u32.to_le_bytes());
        disk[510] = 0x55;
        disk[511] = 0xaa;
        let table = read_partition_table(&mut Cursor::new(disk), 512).unwrap();
        let PartitionTable::Mbr {
            disk_signature,
            partitions,
        } = table
        else {
            panic!("{table:?}")
        };
        assert_eq!(disk_signature, 0xdead_beef);
        assert_eq!(partitions.len(), 1);
        assert_eq!(partitions[0].start_bytes, 2048 * 512);
        assert_eq!(partitions[0].size_bytes, 4096 * 512);
        assert!(partitions[0].bootable);
        assert_eq!(partitions[0].type_id, "0x83");
    }

    #[test]
    fn hostile_gpt_entry_size_is_an_error_not_a_panic() {
        let mut disk = vec![0u8; 1 << 20];
        let h = &mut disk[512..1024];
        h[..8].copy_from_slice(GPT_SIGNATURE);
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&4096u32.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        let err = read_partition_table(&mut Cursor::new(disk), 512).unwrap_err();
        assert!(err.to_string().contains("entry size"), "{err}");
    }

    /// Deterministic corruption of a valid-looking MBR/GPT: whatever the bytes, the parser answers
    /// with a table or an error. (The fuzz target in fuzz/ explores this far more widely.)
    #[test]
    fn corrupted_tables_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..300 {
            let mut disk = vec![0u8; 64 * 1024];
            disk[510] = 0x55;
            disk[511] = 0xaa;
            if round % 2 == 0 {
                disk[512..520].copy_from_slice(GPT_SIGNATURE);
            }
            for _ in 0..64 {
                let at = (next() % 2048) as usize;
                disk[at] = next() as u8;
            }
            let _ = read_partition_table(&mut Cursor::new(disk), 512);
        }
    }
}
