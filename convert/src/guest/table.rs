//! A small, careful reader of the guest's partition tables: GPT (UEFI specification 2.10,
//! chapter 5 "GUID Partition Table (GPT) Disk Layout": header at LBA 1, backup at the last LBA,
//! CRC32 of the header and of the entry array) and MBR with extended/logical partitions (the
//! classic IBM PC layout: four 16-byte entries at offset 446, `0x55AA`; an extended partition
//! holds a chain of EBRs, each with one logical partition relative to itself and a link to the
//! next relative to the start of the extended partition).
//!
//! Pure over [`ReadAt`]: every count read from the disk is bounded before it sizes a loop or an
//! allocation, and a table that cannot be trusted is an error, never a panic. The capture agent
//! has its own reader (`capture/src/layout.rs`, over the `gpt`/`mbrman` crates); this one exists
//! so that the converter (a static binary in the appliance) does not pull in the agent, and it
//! gives what `PARTUUID=` needs (GPT partition GUIDs, MBR `SSSSSSSS-NN`).

use p2v_fsmap::ReadAt;

use crate::Error;

/// Most GPT entries we read; the spec asks for room for 128, tools write at most a few hundred.
const MAX_GPT_ENTRIES: u32 = 4096;
/// Most logical partitions followed in an EBR chain (Linux itself stops far earlier in practice).
const MAX_LOGICAL: usize = 256;

/// One entry of a partition table, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// Linux's number: GPT entry index + 1; MBR primary 1-4, logical from 5.
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// GPT type GUID (upper case) or MBR `0x83`.
    pub part_type: String,
    /// GPT partition GUID (lower case, as blkid prints it) or MBR `ssssssss-nn`.
    pub partuuid: String,
    /// An MBR extended partition (a container, no file system of its own).
    pub extended: bool,
}

/// What a disk's sector 0 and 1 hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    /// No partition table: a whole-disk file system, or nothing.
    None,
    Mbr {
        disk_signature: u32,
        entries: Vec<TableEntry>,
    },
    Gpt {
        disk_guid: String,
        entries: Vec<TableEntry>,
    },
}

impl Table {
    pub fn entries(&self) -> &[TableEntry] {
        match self {
            Table::None => &[],
            Table::Mbr { entries, .. } | Table::Gpt { entries, .. } => entries,
        }
    }
}

fn read(disk: &(impl ReadAt + ?Sized), offset: u64, len: usize) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; len];
    disk.read_at(offset, &mut buf)
        .map_err(|e| Error::Format(format!("reading the partition table at {offset}: {e}")))?;
    Ok(buf)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// CRC-32 (IEEE 802.3, reflected), as GPT uses.
pub(crate) fn crc32(data: &[u8]) -> u32 {
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

/// A GUID in its on-disk mixed-endian form, as text.
fn guid(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// Reads the partition table of `disk`. `sector_size` is the logical sector size the device
/// reports (512 for an image file); a GPT is also looked for at 4096 when none is found at 512.
pub fn read_table(disk: &(impl ReadAt + ?Sized), sector_size: u64) -> Result<Table, Error> {
    if disk.size() < 1024 {
        return Ok(Table::None);
    }
    let sector0 = read(disk, 0, 512)?;
    let signature = sector0[510] == 0x55 && sector0[511] == 0xaa;
    let types: Vec<u8> = (0..4).map(|i| sector0[446 + i * 16 + 4]).collect();
    let mut sizes = vec![sector_size];
    if sector_size == 512 {
        sizes.push(4096);
    }
    let mut gpt_error = None;
    for ss in sizes {
        match read_gpt(disk, ss) {
            Ok(Some(t)) => return Ok(t),
            Ok(None) => {}
            Err(e) => gpt_error = Some(e),
        }
    }
    if let Some(e) = gpt_error {
        return Err(e);
    }
    if !signature || types.iter().all(|t| *t == 0) {
        return Ok(Table::None);
    }
    // A FAT or NTFS boot sector also ends in 55 AA; partition entries have boot flags 0 or 0x80.
    if !(0..4).all(|i| matches!(sector0[446 + i * 16], 0x00 | 0x80)) {
        return Ok(Table::None);
    }
    if types.contains(&0xee) {
        return Err(Error::Format(
            "protective MBR (type 0xEE) but no valid GPT header, primary or backup".into(),
        ));
    }
    read_mbr(disk, &sector0, sector_size)
}

/// The GPT at `ss`-byte sectors: `Ok(None)` when neither header carries the signature.
fn read_gpt(disk: &(impl ReadAt + ?Sized), ss: u64) -> Result<Option<Table>, Error> {
    let sectors = disk.size() / ss;
    if sectors < 3 {
        return Ok(None);
    }
    let mut problems = Vec::new();
    let mut any_signature = false;
    for lba in [1, sectors - 1] {
        let header = read(disk, lba * ss, 512)?;
        if &header[..8] != b"EFI PART" {
            continue;
        }
        any_signature = true;
        match gpt_at(disk, ss, &header) {
            Ok(t) => return Ok(Some(t)),
            Err(e) => problems.push(format!("header at LBA {lba}: {e}")),
        }
    }
    if !any_signature {
        return Ok(None);
    }
    Err(Error::Format(format!(
        "invalid GPT: {}",
        problems.join("; ")
    )))
}

fn gpt_at(disk: &(impl ReadAt + ?Sized), ss: u64, header: &[u8]) -> Result<Table, String> {
    let header_size = le32(header, 12) as usize;
    if !(92..=512).contains(&header_size) {
        return Err(format!("header size {header_size} out of range"));
    }
    let mut copy = header[..header_size].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != le32(header, 16) {
        return Err("header CRC mismatch".into());
    }
    let entries_lba = le64(header, 72);
    let count = le32(header, 80);
    let entry_size = le32(header, 84);
    if !(128..=4096).contains(&entry_size) || entry_size % 8 != 0 {
        return Err(format!("partition entry size {entry_size}"));
    }
    if count > MAX_GPT_ENTRIES {
        return Err(format!(
            "{count} partition entries (more than {MAX_GPT_ENTRIES})"
        ));
    }
    let array_len = count as usize * entry_size as usize;
    let array_at = entries_lba
        .checked_mul(ss)
        .filter(|at| at.saturating_add(array_len as u64) <= disk.size())
        .ok_or_else(|| format!("entry array at LBA {entries_lba} lies beyond the disk"))?;
    let array = read(disk, array_at, array_len).map_err(|e| e.to_string())?;
    if crc32(&array) != le32(header, 88) {
        return Err("partition entry array CRC mismatch".into());
    }
    let sectors = disk.size() / ss;
    let mut entries = Vec::new();
    for (i, e) in array.chunks_exact(entry_size as usize).enumerate() {
        if e[..16].iter().all(|b| *b == 0) {
            continue;
        }
        let number = i as u32 + 1;
        let (first, last) = (le64(e, 32), le64(e, 40));
        if last < first || last >= sectors {
            return Err(format!(
                "partition {number} spans LBA {first}..={last}, outside the disk's {sectors} sectors"
            ));
        }
        entries.push(TableEntry {
            number,
            start_bytes: first * ss,
            size_bytes: (last - first + 1) * ss,
            part_type: guid(&e[..16]).to_uppercase(),
            partuuid: guid(&e[16..32]),
            extended: false,
        });
    }
    Ok(Table::Gpt {
        disk_guid: guid(&header[56..72]),
        entries,
    })
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// One 16-byte MBR/EBR entry: (type, start sector, sector count).
fn mbr_entry(sector: &[u8], i: usize) -> (u8, u64, u64) {
    let e = &sector[446 + i * 16..462 + i * 16];
    (e[4], u64::from(le32(e, 8)), u64::from(le32(e, 12)))
}

fn read_mbr(disk: &(impl ReadAt + ?Sized), sector0: &[u8], ss: u64) -> Result<Table, Error> {
    let disk_signature = le32(sector0, 440);
    let sectors = disk.size() / ss;
    let id = |n: u32| format!("{disk_signature:08x}-{n:02x}");
    let check = |what: &str, start: u64, count: u64| -> Result<(), Error> {
        if start == 0 || count == 0 || start.saturating_add(count) > sectors {
            return Err(Error::Format(format!(
                "MBR {what}: sectors {start}+{count} do not fit the disk's {sectors} sectors"
            )));
        }
        Ok(())
    };
    let mut entries = Vec::new();
    let mut extended = None;
    for i in 0..4 {
        let (t, start, count) = mbr_entry(sector0, i);
        if t == 0 {
            continue;
        }
        let number = i as u32 + 1;
        check(&format!("partition {number}"), start, count)?;
        if is_extended(t) {
            if extended.is_some() {
                return Err(Error::Format(
                    "MBR: more than one extended partition".into(),
                ));
            }
            extended = Some((start, count));
        }
        entries.push(TableEntry {
            number,
            start_bytes: start * ss,
            size_bytes: count * ss,
            part_type: format!("0x{t:02x}"),
            partuuid: id(number),
            extended: is_extended(t),
        });
    }
    if let Some((ext_start, ext_count)) = extended {
        let mut ebr = ext_start;
        let mut seen = std::collections::HashSet::new();
        let mut number = 5u32;
        loop {
            if !seen.insert(ebr) || seen.len() > MAX_LOGICAL {
                return Err(Error::Format(format!(
                    "MBR: the chain of logical partitions loops or exceeds {MAX_LOGICAL}"
                )));
            }
            let sector = read(disk, ebr * ss, 512)?;
            if sector[510] != 0x55 || sector[511] != 0xaa {
                return Err(Error::Format(format!(
                    "MBR: extended boot record at sector {ebr} lacks its signature"
                )));
            }
            let (t, rel, count) = mbr_entry(&sector, 0);
            if t != 0 && count != 0 {
                let start = ebr + rel;
                check(&format!("logical partition {number}"), start, count)?;
                if start + count > ext_start + ext_count {
                    return Err(Error::Format(format!(
                        "MBR: logical partition {number} ends outside its extended partition"
                    )));
                }
                entries.push(TableEntry {
                    number,
                    start_bytes: start * ss,
                    size_bytes: count * ss,
                    part_type: format!("0x{t:02x}"),
                    partuuid: id(number),
                    extended: false,
                });
                number += 1;
            }
            let (next_t, next_rel, _) = mbr_entry(&sector, 1);
            if !is_extended(next_t) || next_rel == 0 {
                break;
            }
            ebr = ext_start + next_rel;
            if ebr >= ext_start + ext_count {
                return Err(Error::Format(format!(
                    "MBR: extended boot record at sector {ebr} lies outside the extended partition"
                )));
            }
        }
    }
    Ok(Table::Mbr {
        disk_signature,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_entry(s: &mut [u8], at: usize, boot: u8, t: u8, start: u32, count: u32) {
        let e = &mut s[at..at + 16];
        e[0] = boot;
        e[4] = t;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&count.to_le_bytes());
    }

    #[test]
    fn crc32_known_vector() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn empty_and_tiny_disks_have_no_table() {
        assert_eq!(read_table(&vec![0u8; 1 << 20], 512).unwrap(), Table::None);
        assert_eq!(read_table(&vec![0u8; 100], 512).unwrap(), Table::None);
    }

    #[test]
    fn mbr_with_logical_partitions() {
        let mut d = vec![0u8; 64 << 20];
        d[440..444].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        set_entry(&mut d, 446, 0x80, 0x83, 2048, 8192);
        set_entry(&mut d, 462, 0, 0x05, 20480, 40960);
        d[510] = 0x55;
        d[511] = 0xaa;
        // EBR 1 at 20480: logical at +2048 for 4096 sectors, next EBR at +10240.
        let e1 = 20480 * 512;
        set_entry(&mut d, e1 + 446, 0, 0x82, 2048, 4096);
        set_entry(&mut d, e1 + 462, 0, 0x05, 10240, 8192);
        d[e1 + 510] = 0x55;
        d[e1 + 511] = 0xaa;
        let e2 = (20480 + 10240) * 512;
        set_entry(&mut d, e2 + 446, 0, 0x83, 2048, 4096);
        d[e2 + 510] = 0x55;
        d[e2 + 511] = 0xaa;
        let t = read_table(&d, 512).unwrap();
        let Table::Mbr {
            disk_signature,
            entries,
        } = &t
        else {
            panic!("{t:?}")
        };
        assert_eq!(*disk_signature, 0x1234_abcd);
        let got: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    e.number,
                    e.start_bytes / 512,
                    e.part_type.as_str(),
                    e.extended,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 2048, "0x83", false),
                (2, 20480, "0x05", true),
                (5, 22528, "0x82", false),
                (6, 32768, "0x83", false),
            ]
        );
        assert_eq!(entries[3].partuuid, "1234abcd-06");

        // A chain that points back to itself is an error, not a hang.
        set_entry(&mut d, e2 + 462, 0, 0x05, 10240, 8192);
        assert!(read_table(&d, 512)
            .unwrap_err()
            .to_string()
            .contains("loops"));
    }

    #[test]
    fn mbr_entry_beyond_disk_is_an_error() {
        let mut d = vec![0u8; 1 << 20];
        set_entry(&mut d, 446, 0, 0x83, 2048, 1 << 30);
        d[510] = 0x55;
        d[511] = 0xaa;
        assert!(read_table(&d, 512).is_err());
    }

    fn gpt_disk() -> Vec<u8> {
        let mut d = vec![0u8; 4 << 20];
        let sectors = d.len() as u64 / 512;
        let mut array = vec![0u8; 128 * 128];
        // Linux filesystem type, partition GUID 01020304-0506-0708-090a-0b0c0d0e0f10.
        let ty = [
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ];
        array[..16].copy_from_slice(&ty);
        let pg: Vec<u8> = (1..=16).collect();
        array[16..32].copy_from_slice(&pg);
        array[32..40].copy_from_slice(&2048u64.to_le_bytes());
        array[40..48].copy_from_slice(&4095u64.to_le_bytes());
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(sectors - 1).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
        let c = crc32(&h);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        d[512..604].copy_from_slice(&h);
        d[1024..1024 + array.len()].copy_from_slice(&array);
        d
    }

    #[test]
    fn gpt_entries_and_guids() {
        let d = gpt_disk();
        let t = read_table(&d, 512).unwrap();
        let e = &t.entries()[0];
        assert_eq!(e.number, 1);
        assert_eq!((e.start_bytes, e.size_bytes), (2048 * 512, 2048 * 512));
        assert_eq!(e.part_type, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        assert_eq!(e.partuuid, "04030201-0605-0807-090a-0b0c0d0e0f10");

        let mut bad = d.clone();
        bad[1024 + 41] = 0x0e; // entry changed: array CRC no longer matches
        let err = read_table(&bad, 512).unwrap_err().to_string();
        assert!(err.contains("CRC"), "{err}");
    }

    #[test]
    fn corrupted_tables_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let base = gpt_disk();
        for round in 0..300 {
            let mut d = if round % 2 == 0 {
                base[..1 << 20].to_vec()
            } else {
                vec![0u8; 1 << 20]
            };
            d[510] = 0x55;
            d[511] = 0xaa;
            for _ in 0..32 {
                let at = (next() % 1536) as usize;
                d[at] = next() as u8;
            }
            let _ = read_table(&d, 512);
        }
    }
}
