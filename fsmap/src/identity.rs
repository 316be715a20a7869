//! The identity of a file system: its UUID and label as `blkid` prints them, which is what
//! `UUID=` and `LABEL=` in fstab, crypttab and `root=` mean.
//!
//! | format | UUID | label |
//! |--------|------|-------|
//! | ext2/3/4 | `s_uuid` (superblock at 1024, offset 0x68) | `s_volume_name` (0x78, 16 bytes) |
//! | XFS | `sb_uuid` (offset 32) | `sb_fname` (offset 108, 12 bytes) |
//! | btrfs | `fsid` (superblock at 64 KiB, offset 0x20) | `label` (0x12b, 256 bytes) |
//! | FAT12/16/32 | volume serial as `XXXX-XXXX` (0x27, or 0x43 on FAT32) | boot sector label (0x2b / 0x47), `NO NAME` is none |
//! | exFAT | volume serial as `XXXX-XXXX` (offset 100) | volume label entry (type 0x83) of the root directory |
//! | NTFS | volume serial as 16 hex digits (0x48) | `$VOLUME_NAME` of MFT record 3 (`$Volume`) |
//! | swap | `uuid` of the version-1 header (1024 + 12) | `volume_name` (1024 + 28, 16 bytes) |
//! | LVM2 PV | the PV UUID of the label's PV header, dashed 6-4-4-4-4-4-6 | none |
//!
//! UUIDs print as lower-case `8-4-4-4-12` hex. Pure: reads go through [`ReadAt`], so the
//! functions work on a partition, an image or bytes in memory; hostile input gives an error
//! or `None`, never a panic.

use crate::detect::{detect, swap_page_size, Content};
use crate::{le_u16, le_u32, le_u64, FsError, ReadAt};

/// What `blkid` would say of a file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `blkid`'s TYPE: `ext4`, `xfs`, `btrfs`, `vfat`, `exfat`, `ntfs`, `swap`, `LVM2_member`.
    pub fs_type: &'static str,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

fn read<R: ReadAt + ?Sized>(area: &R, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
    let mut b = vec![0u8; len];
    area.read_at(offset, &mut b)?;
    Ok(b)
}

/// `8-4-4-4-12` of 16 bytes; `None` when all zero (no UUID set).
pub fn format_uuid(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|&x| x == 0) {
        return None;
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// A NUL-padded label; `None` when empty.
fn label(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    (!s.is_empty()).then_some(s)
}

/// A space-padded FAT label; `None` for none or `NO NAME`.
fn fat_label(b: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .to_string();
    (!s.is_empty() && s != "NO NAME").then_some(s)
}

fn serial32(v: u32) -> String {
    format!("{:04X}-{:04X}", v >> 16, v & 0xffff)
}

fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// The identity of the file system (or swap, or LVM PV) in `area`; `None` when none is
/// recognized (or it has no identity: LUKS and MD RAID members are left to their tools).
pub fn identity<R: ReadAt + ?Sized>(area: &R) -> Result<Option<Identity>, FsError> {
    let id = |fs_type, uuid, label| {
        Ok(Some(Identity {
            fs_type,
            uuid,
            label,
        }))
    };
    match detect(area)? {
        Content::Ext { version } => {
            let sb = read(area, 1024, 1024)?;
            let t = match version {
                2 => "ext2",
                3 => "ext3",
                _ => "ext4",
            };
            id(t, format_uuid(&sb[0x68..0x78]), label(&sb[0x78..0x88]))
        }
        Content::Xfs => {
            let sb = read(area, 0, 512)?;
            id("xfs", format_uuid(&sb[32..48]), label(&sb[108..120]))
        }
        Content::Btrfs => {
            let sb = read(area, 0x10000, 4096)?;
            id(
                "btrfs",
                format_uuid(&sb[0x20..0x30]),
                label(&sb[0x12b..0x22b]),
            )
        }
        Content::Fat { bits } => {
            let b = read(area, 0, 512)?;
            let (serial, lab) = if bits == 32 {
                (0x43, 0x47)
            } else {
                (0x27, 0x2b)
            };
            // The extended boot signature (0x29) says the serial and label fields are there.
            let ext_sig = b[if bits == 32 { 0x42 } else { 0x26 }];
            if ext_sig != 0x29 && ext_sig != 0x28 {
                return id("vfat", None, None);
            }
            let label = if ext_sig == 0x29 {
                fat_label(&b[lab..lab + 11])
            } else {
                None
            };
            id("vfat", Some(serial32(le_u32(&b, serial))), label)
        }
        Content::Exfat => {
            let b = read(area, 0, 512)?;
            id(
                "exfat",
                Some(serial32(le_u32(&b, 100))),
                exfat_label(area, &b)?,
            )
        }
        Content::Ntfs => {
            let b = read(area, 0, 512)?;
            let serial = format!("{:016X}", le_u64(&b, 0x48));
            // A label that cannot be read leaves the UUID, which is what matters.
            id("ntfs", Some(serial), ntfs_label(area, &b).unwrap_or(None))
        }
        Content::Swap => {
            let page = swap_page_size(area)?
                .ok_or_else(|| FsError::BadSuperblock("swap: no signature".into()))?;
            let _ = page;
            let h = read(area, 1024, 64)?;
            id("swap", format_uuid(&h[12..28]), label(&h[28..44]))
        }
        Content::Lvm2Pv => id("LVM2_member", lvm_uuid(area)?, None),
        Content::Luks { .. } | Content::MdRaid | Content::Unknown => Ok(None),
    }
}

/// Label of an exFAT volume: the volume label entry of the root directory's first cluster.
fn exfat_label<R: ReadAt + ?Sized>(area: &R, b: &[u8]) -> Result<Option<String>, FsError> {
    let bps_shift = u32::from(b[108]);
    let spc_shift = u32::from(b[109]);
    if !(9..=12).contains(&bps_shift) || bps_shift + spc_shift > 25 {
        return Err(FsError::BadSuperblock(
            "exFAT: bad sector/cluster shift".into(),
        ));
    }
    let heap = u64::from(le_u32(b, 88)) << bps_shift;
    let root = u64::from(le_u32(b, 96));
    if root < 2 {
        return Err(FsError::BadSuperblock("exFAT: bad root cluster".into()));
    }
    let cluster = 1u64 << (bps_shift + spc_shift);
    let offset = heap + (root - 2) * cluster;
    // Only the first 64 KiB of the cluster: the label entry comes first in practice.
    let len = cluster.min(64 << 10);
    if offset.checked_add(len).is_none_or(|e| e > area.size()) {
        return Err(FsError::BadSuperblock(
            "exFAT: root directory past the end".into(),
        ));
    }
    let dir = read(area, offset, len as usize)?;
    for e in dir.chunks_exact(32) {
        match e[0] {
            0x00 => break,
            0x83 => {
                let n = usize::from(e[1]).min(11);
                let s = utf16(&e[2..2 + 2 * n]);
                return Ok((!s.is_empty()).then_some(s));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Label of an NTFS volume: `$VOLUME_NAME` (0x60, resident) of MFT record 3.
fn ntfs_label<R: ReadAt + ?Sized>(area: &R, b: &[u8]) -> Result<Option<String>, FsError> {
    let bs = crate::ntfs::parse_boot_sector(b, area.size())?;
    let off = bs
        .mft_lcn
        .checked_mul(bs.cluster_size)
        .and_then(|o| o.checked_add(3 * u64::from(bs.record_size)))
        .ok_or_else(|| FsError::BadSuperblock("NTFS: MFT offset overflows".into()))?;
    let mut rec = read(area, off, bs.record_size as usize)?;
    crate::ntfs::apply_fixups(&mut rec, 3)?;
    let used = (le_u32(&rec, 24) as usize).min(rec.len());
    let mut at = usize::from(le_u16(&rec, 20));
    while at + 24 <= used {
        let ty = le_u32(&rec, at);
        let len = le_u32(&rec, at + 4) as usize;
        if ty == 0xFFFF_FFFF || len < 24 || at + len > used {
            break;
        }
        if ty == 0x60 && rec[at + 8] == 0 {
            let clen = le_u32(&rec, at + 16) as usize;
            let coff = usize::from(le_u16(&rec, at + 20));
            if coff + clen <= len {
                let s = utf16(&rec[at + coff..at + coff + clen]);
                return Ok((!s.is_empty()).then_some(s));
            }
            break;
        }
        at += len;
    }
    Ok(None)
}

/// The PV UUID as LVM prints it (`xxxxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxxxx`).
fn lvm_uuid<R: ReadAt + ?Sized>(area: &R) -> Result<Option<String>, FsError> {
    let len = (area.size().min(2048) / 512 * 512) as usize;
    let head = read(area, 0, len)?;
    for s in head.chunks_exact(512) {
        if &s[..8] != b"LABELONE" || &s[24..32] != b"LVM2 001" {
            continue;
        }
        let off = le_u32(s, 20) as usize;
        let Some(u) = s.get(off..off + 32) else {
            return Ok(None);
        };
        if !u.iter().all(u8::is_ascii_alphanumeric) {
            return Ok(None);
        }
        let u = String::from_utf8_lossy(u);
        let mut out = String::new();
        let mut at = 0;
        for (i, n) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
            if i > 0 {
                out.push('-');
            }
            out.push_str(&u[at..at + n]);
            at += n;
        }
        return Ok(Some(out));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn have(tool: &str) -> bool {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn blkid(path: &std::path::Path, tag: &str) -> Option<String> {
        let o = Command::new("blkid")
            .args(["-p", "-o", "value", "-s", tag])
            .arg(path)
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    /// Makes an image of `size` bytes with `cmd ARGS... IMAGE`, then compares with blkid.
    fn check(
        size: u64,
        tool: &str,
        args: &[&str],
        want_type: &str,
        want_uuid: Option<&str>,
        want_label: Option<&str>,
    ) {
        if !have(tool) || !have("blkid") {
            eprintln!("skipping {tool}: not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        std::fs::File::create(&img).unwrap().set_len(size).unwrap();
        let out = Command::new(tool).args(args).arg(&img).output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&img).unwrap();
        let got = identity(bytes.as_slice())
            .unwrap()
            .unwrap_or_else(|| panic!("{tool}: nothing"));
        assert_eq!(got.fs_type, want_type, "{tool}");
        assert_eq!(got.uuid, blkid(&img, "UUID"), "{tool} UUID vs blkid");
        assert_eq!(got.label, blkid(&img, "LABEL"), "{tool} LABEL vs blkid");
        if let Some(u) = want_uuid {
            assert_eq!(got.uuid.as_deref(), Some(u), "{tool}");
        }
        assert_eq!(got.label.as_deref(), want_label, "{tool}");
    }

    const U: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    #[test]
    fn ext_xfs_btrfs_against_blkid() {
        check(
            64 << 20,
            "mkfs.ext4",
            &["-q", "-F", "-U", U, "-L", "rootfs"],
            "ext4",
            Some(U),
            Some("rootfs"),
        );
        check(
            64 << 20,
            "mkfs.ext2",
            &["-q", "-F", "-U", U, "-L", "boot"],
            "ext2",
            Some(U),
            Some("boot"),
        );
        check(
            320 << 20,
            "mkfs.xfs",
            &["-q", "-f", "-m", &format!("uuid={U}"), "-L", "data"],
            "xfs",
            Some(U),
            Some("data"),
        );
        check(
            128 << 20,
            "mkfs.btrfs",
            &["-q", "-f", "-U", U, "-L", "pool"],
            "btrfs",
            Some(U),
            Some("pool"),
        );
    }

    #[test]
    fn fat_exfat_ntfs_against_blkid() {
        check(
            64 << 20,
            "mkfs.vfat",
            &["-F", "32", "-i", "a1b2c3d4", "-n", "ESP"],
            "vfat",
            Some("A1B2-C3D4"),
            Some("ESP"),
        );
        check(
            16 << 20,
            "mkfs.vfat",
            &["-F", "16", "-i", "0badcafe"],
            "vfat",
            Some("0BAD-CAFE"),
            None,
        );
        check(
            64 << 20,
            "mkfs.exfat",
            &["-L", "usbdata"],
            "exfat",
            None,
            Some("usbdata"),
        );
        check(
            64 << 20,
            "mkntfs",
            &["-q", "-F", "-f", "-L", "Windows"],
            "ntfs",
            None,
            Some("Windows"),
        );
    }

    #[test]
    fn swap_and_lvm_against_blkid() {
        check(
            16 << 20,
            "mkswap",
            &["-U", U, "-L", "swap0"],
            "swap",
            Some(U),
            Some("swap0"),
        );
        if !have("pvcreate") {
            return;
        }
        // pvcreate wants a block device or a file it may open; an image file works with
        // devices/allow... not everywhere, so build the label by hand instead.
        let mut v = vec![0u8; 1 << 20];
        v[512..520].copy_from_slice(b"LABELONE");
        v[512 + 8..512 + 16].copy_from_slice(&1u64.to_le_bytes());
        v[512 + 20..512 + 24].copy_from_slice(&32u32.to_le_bytes());
        v[512 + 24..512 + 32].copy_from_slice(b"LVM2 001");
        v[512 + 32..512 + 64].copy_from_slice(b"AbCdEf0123456789ghijKLMNopqrST01");
        let crc = crate::lvm::calc_crc(0xf597a6cf, &v[512 + 20..1024]);
        v[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
        let got = identity(v.as_slice()).unwrap().unwrap();
        assert_eq!(got.fs_type, "LVM2_member");
        assert_eq!(
            got.uuid.as_deref(),
            Some("AbCdEf-0123-4567-89gh-ijKL-MNop-qrST01")
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let magics: [(usize, &[u8]); 6] = [
            (1024 + 0x38, &[0x53, 0xef]),
            (0, b"XFSB"),
            (3, b"NTFS    "),
            (3, b"EXFAT   "),
            (0x10040, b"_BHRfS_M"),
            (4096 - 10, b"SWAPSPACE2"),
        ];
        for i in 0..600 {
            let mut v = vec![0u8; 0x11000];
            for _ in 0..64 {
                let r = next();
                let at = (r as usize >> 8) % v.len();
                v[at] = r as u8;
            }
            let (at, m) = magics[i % magics.len()];
            v[at..at + m.len()].copy_from_slice(m);
            let _ = identity(v.as_slice());
        }
    }
}
