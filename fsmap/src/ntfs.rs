//! NTFS: the used clusters, from the `$Bitmap` file.
//!
//! Follows the on-disk format as documented by the Linux-NTFS project ("NTFS Documentation",
//! Richard Russon and Yuval Fledel: "Boot Sector", "File Record", "Attribute - $DATA",
//! "Data Runs", "Fixup") and as implemented by ntfs-3g (`layout.h`, `bootsect.c`, `runlist.c`,
//! `mst.c`):
//!
//! 1. the boot sector (BPB): bytes per sector, sectors per cluster (values above 128 encode
//!    `2^(256 - v)`), total sectors, the `$MFT` and `$MFTMirr` LCNs, and the MFT record size
//!    (clusters per record, or `2^-v` bytes when negative);
//! 2. MFT record 0 (`$MFT`), to map later records through its unnamed `$DATA` runs;
//! 3. MFT record 3 (`$Volume`): a set `VOLUME_IS_DIRTY` flag in `$VOLUME_INFORMATION` (0x70)
//!    means the volume was not cleanly unmounted (or Windows hibernated / "fast startup"): the
//!    bitmap may be stale, so the area is captured whole;
//! 4. MFT record 6 (`$Bitmap`): its unnamed `$DATA` (0x80) runs, then the bitmap itself; every
//!    cluster whose bit is set is used.
//!
//! Every MFT record has its update sequence (fixups) checked and applied: a mismatch is a
//! [`FsError::Checksum`]. Data runs are bounded (count, lengths, LCNs inside the volume).
//! Always captured besides the set bits: the boot sector, `$MFT`'s and `$MFTMirr`'s first
//! records, and every byte of the area past the last whole cluster (where the backup boot
//! sector lives, outside the cluster map).

use crate::{le_u16, le_u32, le_u64, Extents, FsError, ReadAt};

/// Most data runs accepted in one attribute.
const MAX_RUNS: usize = 1 << 20;
/// Largest `$Bitmap` accepted: 2^32 clusters.
const MAX_BITMAP: u64 = 1 << 29;

const ATTR_VOLUME_INFORMATION: u32 = 0x70;
const ATTR_DATA: u32 = 0x80;
const ATTR_END: u32 = 0xFFFF_FFFF;
const VOLUME_IS_DIRTY: u16 = 0x0001;

/// The boot sector fields this module needs.
#[derive(Debug, Clone)]
pub struct BootSector {
    pub bytes_per_sector: u32,
    pub cluster_size: u64,
    pub total_sectors: u64,
    pub mft_lcn: u64,
    pub mftmirr_lcn: u64,
    pub record_size: u32,
}

impl BootSector {
    /// Clusters the bitmap describes.
    pub fn clusters(&self) -> u64 {
        self.total_sectors * u64::from(self.bytes_per_sector) / self.cluster_size
    }
}

/// A run of an attribute's data: `len` clusters at `lcn` (`None` = sparse) from `vcn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub vcn: u64,
    pub lcn: Option<u64>,
    pub len: u64,
}

/// Used bytes of the area and the filesystem's own used-byte count (set bits × cluster size).
pub fn used<R: ReadAt + ?Sized>(area: &R) -> Result<(Extents, Option<u64>), FsError> {
    let bs = parse_boot_sector(&read_vec(area, 0, 512)?, area.size())?;
    let cs = bs.cluster_size;
    let clusters = bs.clusters();

    let mft0 = read_record_at(area, &bs, bs.mft_lcn * cs, 0)?;
    let (mft_runs, _) = data_runs(&mft0, &bs, "$MFT")?;
    let mft = Attr { runs: mft_runs, cs };

    let volume = read_record(area, &bs, &mft, 3)?;
    if let Some(flags) = volume_flags(&volume)? {
        if flags & VOLUME_IS_DIRTY != 0 {
            return Err(FsError::Unsupported(
                "NTFS volume is dirty (not cleanly unmounted / hibernated)".into(),
            ));
        }
    } else {
        return Err(FsError::Inconsistent(
            "NTFS $Volume has no $VOLUME_INFORMATION".into(),
        ));
    }

    let bitmap_rec = read_record(area, &bs, &mft, 6)?;
    let (runs, sizes) = data_runs(&bitmap_rec, &bs, "$Bitmap")?;
    let need = clusters.div_ceil(8);
    if sizes.data < need || sizes.initialized < need || need > MAX_BITMAP {
        return Err(FsError::Inconsistent(format!(
            "NTFS $Bitmap holds {} bytes ({} initialized), {need} needed for {clusters} clusters",
            sizes.data, sizes.initialized
        )));
    }
    let bitmap = Attr { runs, cs };

    let mut capture = Extents::new();
    let mut set = 0u64;
    let mut chunk = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < need {
        let n = (need - done).min(chunk.len() as u64) as usize;
        bitmap.read(area, done, &mut chunk[..n])?;
        for (i, &byte) in chunk[..n].iter().enumerate() {
            if byte == 0 {
                continue;
            }
            let first = (done + i as u64) * 8;
            if byte == 0xFF && first + 8 <= clusters {
                capture.add(first * cs, 8 * cs);
                set += 8;
                continue;
            }
            for bit in 0..8 {
                let c = first + bit;
                if byte & (1 << bit) != 0 && c < clusters {
                    capture.add(c * cs, cs);
                    set += 1;
                }
            }
        }
        done += n as u64;
    }
    if set == 0 || capture.ranges().first().map(|r| r.0) != Some(0) {
        return Err(FsError::Inconsistent(
            "NTFS $Bitmap does not mark the boot cluster used".into(),
        ));
    }
    // The boot sector, the first records of $MFT and $MFTMirr (in the bitmap anyway), and the
    // tail past the last whole cluster with the backup boot sector.
    capture.add(0, u64::from(bs.bytes_per_sector));
    let mirr = u64::from(bs.record_size) * 4;
    capture.add(bs.mft_lcn * cs, mirr.max(cs));
    capture.add(bs.mftmirr_lcn * cs, mirr.max(cs));
    let mapped = clusters * cs;
    if area.size() > mapped {
        capture.add(mapped, area.size() - mapped);
    }
    Ok((capture, Some(set * cs)))
}

fn read_vec<R: ReadAt + ?Sized>(area: &R, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
    let end = offset
        .checked_add(len as u64)
        .ok_or_else(|| FsError::Inconsistent("offset overflow".into()))?;
    if end > area.size() {
        return Err(FsError::Inconsistent(format!(
            "NTFS: read of {len} bytes at {offset} beyond the area ({} bytes)",
            area.size()
        )));
    }
    let mut buf = vec![0u8; len];
    area.read_at(offset, &mut buf)?;
    Ok(buf)
}

/// Parses and checks the boot sector against the area's size.
pub fn parse_boot_sector(b: &[u8], area_size: u64) -> Result<BootSector, FsError> {
    let bad = |m: String| FsError::BadSuperblock(format!("NTFS: {m}"));
    if b.get(3..11) != Some(b"NTFS    ") {
        return Err(bad("no NTFS OEM id".into()));
    }
    if le_u16(b, 510) != 0xAA55 {
        return Err(bad("no 0x55AA signature".into()));
    }
    let bps = u32::from(le_u16(b, 0x0B));
    if !(256..=4096).contains(&bps) || !bps.is_power_of_two() {
        return Err(bad(format!("{bps} bytes per sector")));
    }
    let spc_raw = b[0x0D];
    let spc: u64 = match spc_raw {
        0 => return Err(bad("0 sectors per cluster".into())),
        1..=128 if spc_raw.is_power_of_two() => u64::from(spc_raw),
        // 2^(256 - v): 0xF4 = 4096 sectors (2 MiB clusters of 512-byte sectors).
        0xE0..=0xFF => 1u64 << (256 - u32::from(spc_raw)),
        _ => return Err(bad(format!("sectors per cluster byte {spc_raw:#x}"))),
    };
    let cluster_size = spc * u64::from(bps);
    if cluster_size > 2 << 20 {
        return Err(bad(format!("cluster size {cluster_size}")));
    }
    let total_sectors = le_u64(b, 0x28);
    let mft_lcn = le_u64(b, 0x30);
    let mftmirr_lcn = le_u64(b, 0x38);
    let total = total_sectors
        .checked_mul(u64::from(bps))
        .ok_or_else(|| bad("size overflow".into()))?;
    if total == 0 || total > area_size {
        return Err(bad(format!(
            "volume of {total} bytes, area of {area_size} bytes"
        )));
    }
    let clusters = total / cluster_size;
    let rec = b[0x40] as i8;
    let record_size: u64 = if rec > 0 {
        u64::from(rec as u8) * cluster_size
    } else if (-31..=-9).contains(&rec) {
        1u64 << (-i32::from(rec))
    } else {
        return Err(bad(format!("clusters per MFT record byte {rec}")));
    };
    if !(512..=65536).contains(&record_size) || !record_size.is_power_of_two() {
        return Err(bad(format!("MFT record size {record_size}")));
    }
    if mft_lcn == 0 || mft_lcn >= clusters || mftmirr_lcn == 0 || mftmirr_lcn >= clusters {
        return Err(bad(format!(
            "$MFT at {mft_lcn}, $MFTMirr at {mftmirr_lcn}, {clusters} clusters"
        )));
    }
    Ok(BootSector {
        bytes_per_sector: bps,
        cluster_size,
        total_sectors,
        mft_lcn,
        mftmirr_lcn,
        record_size: record_size as u32,
    })
}

/// Non-resident data: its runs and the cluster size.
struct Attr {
    runs: Vec<Run>,
    cs: u64,
}

impl Attr {
    /// Reads `buf.len()` bytes of the data from byte `offset` (sparse runs read as zeros).
    fn read<R: ReadAt + ?Sized>(
        &self,
        area: &R,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), FsError> {
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let vcn = at / self.cs;
            // Runs are contiguous in VCN order: the last one starting at or before `vcn`.
            let i = self.runs.partition_point(|r| r.vcn <= vcn);
            let run = i
                .checked_sub(1)
                .map(|i| self.runs[i])
                .filter(|r| vcn < r.vcn + r.len)
                .ok_or_else(|| FsError::Inconsistent(format!("NTFS: VCN {vcn} not mapped")))?;
            let run_end = (run.vcn + run.len) * self.cs;
            let n = ((run_end - at) as usize).min(buf.len() - pos);
            match run.lcn {
                None => buf[pos..pos + n].fill(0),
                Some(lcn) => {
                    let byte = lcn * self.cs + (at - run.vcn * self.cs);
                    let end = byte + n as u64;
                    if end > area.size() {
                        return Err(FsError::Inconsistent(format!(
                            "NTFS: run at LCN {lcn} beyond the area"
                        )));
                    }
                    area.read_at(byte, &mut buf[pos..pos + n])?;
                }
            }
            pos += n;
        }
        Ok(())
    }
}

/// Reads MFT record `n` through the `$MFT` runs.
fn read_record<R: ReadAt + ?Sized>(
    area: &R,
    bs: &BootSector,
    mft: &Attr,
    n: u64,
) -> Result<Vec<u8>, FsError> {
    let mut rec = vec![0u8; bs.record_size as usize];
    mft.read(area, n * u64::from(bs.record_size), &mut rec)?;
    apply_fixups(&mut rec, n)?;
    Ok(rec)
}

/// Reads the MFT record at byte `offset` of the area (record 0, before `$MFT` is mapped).
fn read_record_at<R: ReadAt + ?Sized>(
    area: &R,
    bs: &BootSector,
    offset: u64,
    n: u64,
) -> Result<Vec<u8>, FsError> {
    let mut rec = read_vec(area, offset, bs.record_size as usize)?;
    apply_fixups(&mut rec, n)?;
    Ok(rec)
}

/// Checks and applies the update sequence array of an MFT record ("FILE"): the last two bytes
/// of every 512-byte stride must equal the update sequence number and are replaced by the
/// saved values.
pub fn apply_fixups(rec: &mut [u8], n: u64) -> Result<(), FsError> {
    let inc = |m: String| FsError::Inconsistent(format!("NTFS MFT record {n}: {m}"));
    if rec.get(0..4) != Some(b"FILE") {
        return Err(inc("no FILE magic".into()));
    }
    let usa_ofs = usize::from(le_u16(rec, 4));
    let usa_count = usize::from(le_u16(rec, 6));
    let strides = rec.len() / 512;
    if usa_count != strides + 1 || usa_ofs & 1 != 0 || usa_ofs + 2 * usa_count > 512.min(rec.len())
    {
        return Err(inc(format!(
            "update sequence at {usa_ofs}, {usa_count} entries"
        )));
    }
    let usn = [rec[usa_ofs], rec[usa_ofs + 1]];
    for i in 0..strides {
        let end = (i + 1) * 512 - 2;
        if rec[end..end + 2] != usn {
            return Err(FsError::Checksum(format!(
                "NTFS MFT record {n}: fixup of sector {i} does not match"
            )));
        }
        let saved = usa_ofs + 2 * (i + 1);
        rec[end] = rec[saved];
        rec[end + 1] = rec[saved + 1];
    }
    if le_u16(rec, 22) & 1 == 0 {
        return Err(inc("not in use".into()));
    }
    Ok(())
}

/// Sizes of non-resident data.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    data: u64,
    initialized: u64,
}

/// Walks the attributes of a record: (type, header bytes) of each.
fn attributes(rec: &[u8]) -> Result<Vec<(u32, &[u8])>, FsError> {
    let inc = |m: String| FsError::Inconsistent(format!("NTFS attribute list: {m}"));
    let used = (le_u32(rec, 24) as usize).min(rec.len());
    let mut at = usize::from(le_u16(rec, 20));
    let mut out = Vec::new();
    loop {
        if at + 8 > used {
            return Err(inc(format!(
                "attribute at {at} past the record's used size {used}"
            )));
        }
        let ty = le_u32(rec, at);
        if ty == ATTR_END {
            return Ok(out);
        }
        let len = le_u32(rec, at + 4) as usize;
        if len < 24 || len & 7 != 0 || at + len > used {
            return Err(inc(format!("attribute {ty:#x} of length {len} at {at}")));
        }
        out.push((ty, &rec[at..at + len]));
        at += len;
    }
}

/// Flags of `$VOLUME_INFORMATION` (resident) in the `$Volume` record.
fn volume_flags(rec: &[u8]) -> Result<Option<u16>, FsError> {
    for (ty, a) in attributes(rec)? {
        if ty != ATTR_VOLUME_INFORMATION {
            continue;
        }
        if a[8] != 0 {
            return Err(FsError::Inconsistent(
                "NTFS $VOLUME_INFORMATION is non-resident".into(),
            ));
        }
        let vlen = le_u32(a, 16) as usize;
        let voff = usize::from(le_u16(a, 20));
        if vlen < 12 || voff + vlen > a.len() {
            return Err(FsError::Inconsistent(
                "NTFS $VOLUME_INFORMATION too short".into(),
            ));
        }
        return Ok(Some(le_u16(a, voff + 10)));
    }
    Ok(None)
}

/// The runs of the unnamed, non-resident `$DATA` attribute of a record; it must start at VCN
/// 0 and cover its whole allocated size (no attribute-list extension records).
fn data_runs(rec: &[u8], bs: &BootSector, what: &str) -> Result<(Vec<Run>, Sizes), FsError> {
    let inc = |m: String| FsError::Inconsistent(format!("NTFS {what}: {m}"));
    for (ty, a) in attributes(rec)? {
        if ty != ATTR_DATA || a[9] != 0 {
            continue;
        }
        if a[8] == 0 {
            return Err(inc("resident $DATA".into()));
        }
        let flags = le_u16(a, 12);
        if flags & 0x00FF != 0 || flags & 0x4000 != 0 {
            return Err(FsError::Unsupported(format!(
                "NTFS {what}: compressed or encrypted $DATA"
            )));
        }
        if a.len() < 64 {
            return Err(inc("short non-resident header".into()));
        }
        let lowest = le_u64(a, 16);
        let highest = le_u64(a, 24);
        let mp = usize::from(le_u16(a, 32));
        let allocated = le_u64(a, 40);
        let sizes = Sizes {
            data: le_u64(a, 48),
            initialized: le_u64(a, 56),
        };
        if lowest != 0 || mp >= a.len() {
            return Err(inc(format!(
                "$DATA from VCN {lowest}, mapping pairs at {mp}"
            )));
        }
        let runs = decode_runs(&a[mp..], bs.clusters())?;
        let mapped = runs.last().map_or(0, |r| r.vcn + r.len);
        if highest.checked_add(1) != Some(mapped)
            || mapped * bs.cluster_size < sizes.data.min(allocated)
        {
            return Err(FsError::Unsupported(format!(
                "NTFS {what}: $DATA continues in an attribute list (runs map {mapped} clusters, highest VCN {highest})"
            )));
        }
        return Ok((runs, sizes));
    }
    Err(inc("no unnamed $DATA".into()))
}

/// Decodes mapping pairs ("data runs"): a header byte with the sizes of the length (low
/// nibble) and the signed LCN delta (high nibble; 0 = sparse), until a 0 byte. Every run must
/// lie inside the volume's `clusters`.
pub fn decode_runs(mp: &[u8], clusters: u64) -> Result<Vec<Run>, FsError> {
    let inc = |m: String| FsError::Inconsistent(format!("NTFS data runs: {m}"));
    let mut runs = Vec::new();
    let mut at = 0usize;
    let mut vcn = 0u64;
    let mut lcn = 0i64;
    loop {
        let Some(&h) = mp.get(at) else {
            return Err(inc("no terminator".into()));
        };
        if h == 0 {
            return Ok(runs);
        }
        let (ln, on) = (usize::from(h & 0xF), usize::from(h >> 4));
        if ln == 0 || ln > 8 || on > 8 || at + 1 + ln + on > mp.len() {
            return Err(inc(format!("header {h:#x} at {at}")));
        }
        if runs.len() >= MAX_RUNS {
            return Err(inc("too many runs".into()));
        }
        let len = le_var(&mp[at + 1..at + 1 + ln], false) as u64;
        if len == 0 || len > clusters {
            return Err(inc(format!("run of {len} clusters")));
        }
        let run_lcn = if on == 0 {
            None
        } else {
            let delta = le_var(&mp[at + 1 + ln..at + 1 + ln + on], true);
            lcn = lcn
                .checked_add(delta)
                .ok_or_else(|| inc("LCN overflow".into()))?;
            if lcn < 0 || lcn as u64 + len > clusters {
                return Err(inc(format!(
                    "run [{lcn}, +{len}) outside {clusters} clusters"
                )));
            }
            Some(lcn as u64)
        };
        runs.push(Run {
            vcn,
            lcn: run_lcn,
            len,
        });
        vcn = vcn
            .checked_add(len)
            .ok_or_else(|| inc("VCN overflow".into()))?;
        at += 1 + ln + on;
    }
}

/// A little-endian integer of 1..=8 bytes, sign-extended when `signed`.
fn le_var(b: &[u8], signed: bool) -> i64 {
    let mut v: u64 = 0;
    for (i, &x) in b.iter().enumerate() {
        v |= u64::from(x) << (8 * i);
    }
    let bits = 8 * b.len() as u32;
    if signed && bits < 64 && b.last().is_some_and(|&x| x & 0x80 != 0) {
        v |= !0u64 << bits;
    }
    v as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_decode_with_negative_deltas_and_sparse() {
        // 0x21: 1-byte length 0x18, 2-byte LCN 0x5634; 0x11: length 0x10, delta -0x10 (0xF0);
        // 0x01: sparse run of 5; end.
        let mp = [0x21, 0x18, 0x34, 0x56, 0x11, 0x10, 0xF0, 0x01, 0x05, 0x00];
        let runs = decode_runs(&mp, 0x10000).unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    vcn: 0,
                    lcn: Some(0x5634),
                    len: 0x18
                },
                Run {
                    vcn: 0x18,
                    lcn: Some(0x5624),
                    len: 0x10
                },
                Run {
                    vcn: 0x28,
                    lcn: None,
                    len: 5
                },
            ]
        );
        assert!(decode_runs(&mp, 0x5000).is_err(), "LCN beyond the volume");
        assert!(decode_runs(&mp[..4], 0x10000).is_err(), "no terminator");
        assert!(
            decode_runs(&[0x11, 0x01, 0xFF, 0], 100).is_err(),
            "negative LCN"
        );
    }

    #[test]
    fn cluster_size_encodings() {
        let mut b = vec![0u8; 512];
        b[3..11].copy_from_slice(b"NTFS    ");
        b[510] = 0x55;
        b[511] = 0xAA;
        b[0x0B..0x0D].copy_from_slice(&512u16.to_le_bytes());
        b[0x28..0x30].copy_from_slice(&(1u64 << 24).to_le_bytes());
        b[0x30..0x38].copy_from_slice(&4u64.to_le_bytes());
        b[0x38..0x40].copy_from_slice(&8u64.to_le_bytes());
        b[0x40] = 0xF6; // -10: 1024-byte records
        for (spc, cs) in [
            (8u8, 4096u64),
            (128, 65536),
            (0xF8, 131072),
            (0xF4, 2 << 20),
        ] {
            b[0x0D] = spc;
            let bs = parse_boot_sector(&b, 1 << 33).unwrap();
            assert_eq!(bs.cluster_size, cs);
            assert_eq!(bs.record_size, 1024);
        }
        b[0x0D] = 3;
        assert!(parse_boot_sector(&b, 1 << 33).is_err());
        b[0x0D] = 8;
        assert!(
            parse_boot_sector(&b, 1 << 20).is_err(),
            "volume larger than the area"
        );
    }

    #[test]
    fn fixups_are_checked() {
        let mut rec = vec![0u8; 1024];
        rec[..4].copy_from_slice(b"FILE");
        rec[4..6].copy_from_slice(&48u16.to_le_bytes());
        rec[6..8].copy_from_slice(&3u16.to_le_bytes());
        rec[22] = 1;
        rec[48..50].copy_from_slice(&[0x12, 0x34]);
        rec[50..52].copy_from_slice(&[0xAA, 0xBB]);
        rec[52..54].copy_from_slice(&[0xCC, 0xDD]);
        rec[510..512].copy_from_slice(&[0x12, 0x34]);
        rec[1022..1024].copy_from_slice(&[0x12, 0x34]);
        let mut ok = rec.clone();
        apply_fixups(&mut ok, 0).unwrap();
        assert_eq!(&ok[510..512], &[0xAA, 0xBB]);
        assert_eq!(&ok[1022..1024], &[0xCC, 0xDD]);
        rec[1023] ^= 1;
        assert!(matches!(
            apply_fixups(&mut rec, 0),
            Err(FsError::Checksum(_))
        ));
    }
}
