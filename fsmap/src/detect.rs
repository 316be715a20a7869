//! Recognizes the content of an area by its superblock magic.
//!
//! The signatures and their places are those libblkid probes (util-linux
//! `libblkid/src/superblocks/*.c`), each from its format's own document: the kernel's ext4
//! disk layout (magic `0xEF53` at byte 1080), the XFS Algorithms & Data Structures book
//! (`XFSB` at 0), the Microsoft FAT specification (boot sector, BPB and `0x55AA`; the FAT type
//! from the cluster count), the Microsoft exFAT specification (`EXFAT   ` at 3), NTFS (`NTFS    `
//! at 3), btrfs (`_BHRfS_M` at 64 KiB + 0x40), Linux swap (`SWAPSPACE2`/`SWAP-SPACE` and the
//! hibernation signatures 10 bytes before the end of the first page), LVM2 (`LABELONE` label
//! with type `LVM2 001` in one of the first four sectors), LUKS (`LUKS\xba\xbe` at 0) and the MD
//! RAID superblocks (kernel `md_p.h`: 0.90 in the last 64 KiB-aligned 64 KiB, 1.0 8 KiB before
//! the end aligned to 4 KiB, 1.1 at 0, 1.2 at 4 KiB).
//!
//! Order: containers first (MD RAID, LUKS, LVM2: they own the whole area, and an MD 0.90/1.0
//! member also shows its filesystem at offset 0, which must not win), then every filesystem
//! signature. Exactly one filesystem signature is an answer; several at once (a stale signature
//! left by an earlier mkfs) is an error, so that the caller captures the area whole rather than
//! trust either.

use serde::{Deserialize, Serialize};

use crate::{ext, le_u16, le_u32, FsError, ReadAt};

/// What an area holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// ext2, ext3 or ext4 (`version` 2, 3 or 4 from the feature flags).
    Ext {
        version: u8,
    },
    Xfs,
    Ntfs,
    /// FAT12, FAT16 or FAT32.
    Fat {
        bits: u8,
    },
    Exfat,
    Btrfs,
    Swap,
    Lvm2Pv,
    /// LUKS version 1 or 2.
    Luks {
        version: u16,
    },
    MdRaid,
    Unknown,
}

/// MD superblock magic (`MD_SB_MAGIC`).
pub const MD_MAGIC: u32 = 0xa92b_4efc;
/// Page sizes at which a swap signature is looked for.
pub const SWAP_PAGE_SIZES: [u64; 5] = [4096, 8192, 16384, 32768, 65536];
/// Swap signatures (v1, v2) and the signatures that replace them while a hibernation image
/// is stored in the swap area (swsusp, uswsusp, TuxOnIce).
pub const SWAP_MAGICS: [&[u8]; 2] = [b"SWAPSPACE2", b"SWAP-SPACE"];
pub const HIBERNATION_MAGICS: [&[u8]; 4] = [
    b"S1SUSPEND\0",
    b"S2SUSPEND\0",
    b"ULSUSPEND\0",
    b"LINHIB0001",
];

/// Reads `len` bytes at `offset`, or `None` if the area is too short.
fn bytes<R: ReadAt + ?Sized>(
    area: &R,
    offset: u64,
    len: usize,
) -> Result<Option<Vec<u8>>, FsError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= area.size() => {
            let mut buf = vec![0u8; len];
            area.read_at(offset, &mut buf)?;
            Ok(Some(buf))
        }
        _ => Ok(None),
    }
}

fn has<R: ReadAt + ?Sized>(area: &R, offset: u64, magic: &[u8]) -> Result<bool, FsError> {
    Ok(bytes(area, offset, magic.len())?.is_some_and(|b| b == magic))
}

/// Detects the content of `area`. A too-short area is `Unknown`, not an error; several
/// filesystem signatures at once are an error ([`FsError::Inconsistent`]).
pub fn detect<R: ReadAt + ?Sized>(area: &R) -> Result<Content, FsError> {
    if is_md_member(area)? {
        return Ok(Content::MdRaid);
    }
    if let Some(h) = bytes(area, 0, 8)? {
        if h[..6] == *b"LUKS\xba\xbe" {
            return Ok(Content::Luks {
                version: u16::from_be_bytes([h[6], h[7]]),
            });
        }
    }
    for sector in 0..4u64 {
        if let Some(l) = bytes(area, sector * 512, 32)? {
            if l[..8] == *b"LABELONE" && l[24..32] == *b"LVM2 001" {
                return Ok(Content::Lvm2Pv);
            }
        }
    }

    let mut found: Vec<Content> = Vec::new();
    if let Some(sb) = bytes(area, ext::SUPERBLOCK_OFFSET, 1024)? {
        if le_u16(&sb, 0x38) == ext::MAGIC {
            let v = ext::version(le_u32(&sb, 0x5C), le_u32(&sb, 0x60), le_u32(&sb, 0x64));
            found.push(Content::Ext { version: v });
        }
    }
    if has(area, 0, b"XFSB")? {
        found.push(Content::Xfs);
    }
    if has(area, 0x10040, b"_BHRfS_M")? {
        found.push(Content::Btrfs);
    }
    let boot = bytes(area, 0, 512)?;
    if let Some(b) = &boot {
        if b[3..11] == *b"NTFS    " {
            found.push(Content::Ntfs);
        } else if b[3..11] == *b"EXFAT   " {
            found.push(Content::Exfat);
        } else if let Some(bits) = fat_bits(b) {
            found.push(Content::Fat { bits });
        }
    }
    if swap_page_size(area)?.is_some() {
        found.push(Content::Swap);
    }
    match found.len() {
        0 => Ok(Content::Unknown),
        1 => Ok(found.remove(0)),
        _ => Err(FsError::Inconsistent(format!(
            "several filesystem signatures: {found:?}"
        ))),
    }
}

/// The page size at whose end a swap (or hibernation) signature was found.
pub fn swap_page_size<R: ReadAt + ?Sized>(area: &R) -> Result<Option<u64>, FsError> {
    for ps in SWAP_PAGE_SIZES {
        if let Some(m) = bytes(area, ps - 10, 10)? {
            if SWAP_MAGICS
                .iter()
                .chain(HIBERNATION_MAGICS.iter())
                .any(|s| m == *s)
            {
                return Ok(Some(ps));
            }
        }
    }
    Ok(None)
}

/// An MD superblock at any of the places of metadata 0.90, 1.0, 1.1 and 1.2. The magic is
/// checked together with the major version field that follows it (0 for 0.90, 1 for 1.x).
/// 0.90 is stored in the host's byte order, so both orders are accepted there.
fn is_md_member<R: ReadAt + ?Sized>(area: &R) -> Result<bool, FsError> {
    let size = area.size();
    let at = |off: u64, be_ok: bool, major: u32| -> Result<bool, FsError> {
        Ok(bytes(area, off, 8)?.is_some_and(|b| {
            let le = le_u32(&b, 0) == MD_MAGIC && le_u32(&b, 4) == major;
            let be = be_ok
                && u32::from_be_bytes([b[0], b[1], b[2], b[3]]) == MD_MAGIC
                && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) == major;
            le || be
        }))
    };
    const K64: u64 = 64 * 1024;
    if size >= 2 * K64 && at((size & !(K64 - 1)) - K64, true, 0)? {
        return Ok(true);
    }
    if size >= 3 * 4096 && at((size - 8192) & !4095, false, 1)? {
        return Ok(true);
    }
    Ok(at(0, false, 1)? || at(4096, false, 1)?)
}

/// FAT12/16/32 from a boot sector: the `0x55AA` signature, a jump instruction, a sane BPB, and
/// the type from the count of clusters (Microsoft FAT specification, section 3.5).
pub fn fat_bits(b: &[u8]) -> Option<u8> {
    if b.len() < 512 || b[510] != 0x55 || b[511] != 0xAA {
        return None;
    }
    if !(b[0] == 0xEB && b[2] == 0x90 || b[0] == 0xE9) {
        return None;
    }
    crate::fat::Bpb::parse(b).ok().map(|p| p.bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(size: usize, patches: &[(usize, &[u8])]) -> Vec<u8> {
        let mut v = vec![0u8; size];
        for (at, bytes) in patches {
            v[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        v
    }

    fn fat16_boot() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = 0xEB;
        b[1] = 0x3C;
        b[2] = 0x90;
        b[0x0B..0x0D].copy_from_slice(&512u16.to_le_bytes());
        b[0x0D] = 4; // sectors per cluster
        b[0x0E..0x10].copy_from_slice(&4u16.to_le_bytes()); // reserved
        b[0x10] = 2; // FATs
        b[0x11..0x13].copy_from_slice(&512u16.to_le_bytes()); // root entries
        b[0x13..0x15].copy_from_slice(&40960u16.to_le_bytes()); // total sectors: 20 MiB
        b[0x15] = 0xF8;
        b[0x16..0x18].copy_from_slice(&40u16.to_le_bytes()); // FAT size
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn each_magic() {
        let ext_sb = {
            let mut v = area(4096, &[(1080, &[0x53, 0xEF])]);
            v[1024 + 0x60] = 0x40; // extents
            v
        };
        let mut ext3 = area(4096, &[(1080, &[0x53, 0xEF])]);
        ext3[1024 + 0x5C] = 0x4;
        let cases: Vec<(Vec<u8>, Content)> = vec![
            (ext_sb, Content::Ext { version: 4 }),
            (ext3, Content::Ext { version: 3 }),
            (
                area(4096, &[(1080, &[0x53, 0xEF])]),
                Content::Ext { version: 2 },
            ),
            (area(4096, &[(0, b"XFSB")]), Content::Xfs),
            (area(4096, &[(3, b"NTFS    ")]), Content::Ntfs),
            (area(4096, &[(3, b"EXFAT   ")]), Content::Exfat),
            (area(0x11000, &[(0x10040, b"_BHRfS_M")]), Content::Btrfs),
            (area(8192, &[(4086, b"SWAPSPACE2")]), Content::Swap),
            (area(8192, &[(4086, b"SWAP-SPACE")]), Content::Swap),
            (area(65536, &[(65526, b"SWAPSPACE2")]), Content::Swap),
            (area(8192, &[(4086, b"S1SUSPEND\0")]), Content::Swap),
            (
                area(4096, &[(512, b"LABELONE"), (536, b"LVM2 001")]),
                Content::Lvm2Pv,
            ),
            (
                area(4096, &[(0, b"LUKS\xba\xbe\x00\x02")]),
                Content::Luks { version: 2 },
            ),
            (
                area(4096, &[(0, b"LUKS\xba\xbe\x00\x01")]),
                Content::Luks { version: 1 },
            ),
            (
                area(8192, &[(4096, &[0xfc, 0x4e, 0x2b, 0xa9, 1, 0, 0, 0])]),
                Content::MdRaid,
            ),
            (
                area(8192, &[(0, &[0xfc, 0x4e, 0x2b, 0xa9, 1, 0, 0, 0])]),
                Content::MdRaid,
            ),
            (area(4096, &[]), Content::Unknown),
            (area(10, &[]), Content::Unknown),
            (Vec::new(), Content::Unknown),
            (fat16_boot(), Content::Fat { bits: 16 }),
        ];
        for (i, (bytes, want)) in cases.iter().enumerate() {
            assert_eq!(detect(bytes.as_slice()).unwrap(), *want, "case {i}");
        }
    }

    #[test]
    fn md_at_the_end_wins_over_the_filesystem_inside() {
        // 1 MiB + 12 KiB member: 0.90 at the last 64 KiB boundary minus 64 KiB, 1.0 at
        // (size - 8 KiB) rounded down to 4 KiB.
        let size = (1 << 20) + 12 * 1024;
        let md0 = (size & !0xFFFF) - 0x10000;
        let v = area(
            size,
            &[
                (1080, &[0x53, 0xEF]),
                (md0, &[0xfc, 0x4e, 0x2b, 0xa9, 0, 0, 0, 0]),
            ],
        );
        assert_eq!(detect(v.as_slice()).unwrap(), Content::MdRaid);
        let md1 = (size - 8192) & !4095;
        let v = area(
            size,
            &[
                (1080, &[0x53, 0xEF]),
                (md1, &[0xfc, 0x4e, 0x2b, 0xa9, 1, 0, 0, 0]),
            ],
        );
        assert_eq!(detect(v.as_slice()).unwrap(), Content::MdRaid);
        // Big-endian 0.90.
        let v = area(size, &[(md0, &[0xa9, 0x2b, 0x4e, 0xfc, 0, 0, 0, 0])]);
        assert_eq!(detect(v.as_slice()).unwrap(), Content::MdRaid);
        // The magic alone, with a wrong version, is not enough.
        let v = area(size, &[(md1, &[0xfc, 0x4e, 0x2b, 0xa9, 7, 0, 0, 0])]);
        assert_eq!(detect(v.as_slice()).unwrap(), Content::Unknown);
    }

    #[test]
    fn fat_type_from_the_cluster_count() {
        let mut b = fat16_boot();
        // 4084 clusters of 1 sector → FAT12.
        b[0x0D] = 1;
        let total = 4 + 2 * 12 + 32 + 4084u16;
        b[0x13..0x15].copy_from_slice(&total.to_le_bytes());
        b[0x16..0x18].copy_from_slice(&12u16.to_le_bytes());
        assert_eq!(fat_bits(&b), Some(12));
        // One more cluster: FAT16, whose FAT then needs 16 sectors.
        let total = total + 1;
        b[0x13..0x15].copy_from_slice(&total.to_le_bytes());
        assert_eq!(fat_bits(&b), None, "a FAT too small for its clusters");
        let total = 4 + 2 * 16 + 32 + 4085u16;
        b[0x13..0x15].copy_from_slice(&total.to_le_bytes());
        b[0x16..0x18].copy_from_slice(&16u16.to_le_bytes());
        assert_eq!(fat_bits(&b), Some(16));
        // Insane BPBs.
        for (at, val) in [(0x0B, 500u16), (0x0B, 8192), (0x16, 0)] {
            let mut c = fat16_boot();
            c[at..at + 2].copy_from_slice(&val.to_le_bytes());
            assert_eq!(fat_bits(&c), None, "{at:#x}={val}");
        }
        let mut c = fat16_boot();
        c[0x0D] = 3;
        assert_eq!(fat_bits(&c), None);
        let mut c = fat16_boot();
        c[511] = 0;
        assert_eq!(fat_bits(&c), None);
    }

    #[test]
    fn stale_second_signature_is_an_error() {
        let v = area(8192, &[(1080, &[0x53, 0xEF]), (4086, b"SWAPSPACE2")]);
        assert!(matches!(
            detect(v.as_slice()),
            Err(FsError::Inconsistent(_))
        ));
    }

    #[test]
    fn every_prefix_of_a_signature_is_unknown_or_ok() {
        let v = area(0x11000, &[(0x10040, b"_BHRfS_M")]);
        for len in [0, 1, 7, 511, 512, 1081, 2047, 4095, 8191, 0x10047, 0x10048] {
            let _ = detect(&v[..len]).unwrap();
        }
    }
}
