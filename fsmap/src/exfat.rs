//! exFAT: the boot regions, the FATs and the clusters marked in the allocation bitmap.
//!
//! Follows the Microsoft "exFAT file system specification" (learn.microsoft.com,
//! `windows/win32/fileio/exfat-specification`): section 3.1 (main boot sector fields and their
//! valid ranges), 3.4 (boot checksum), 4 (FAT region), 6 (directory structure, the root
//! directory's cluster chain), 7.1 (allocation bitmap directory entry, `EntryType` 0x81) and
//! 7.1.5 (the bitmap: bit *n* is cluster *n* + 2).
//!
//! Used = the main and backup boot regions (24 sectors), every FAT, every cluster whose bit is
//! set in an allocation bitmap (both bitmaps of a TexFAT volume with two FATs), and whatever
//! lies past the last cluster (slack and the bytes of the area past the volume). The FAT entries
//! of free clusters are not consulted: exFAT leaves stale entries behind, and files written
//! with `NoFatChain` have none, so the bitmap is the only authority, as in Linux
//! (`fs/exfat/balloc.c`).
//!
//! The bitmap is read as one contiguous run, as Linux and exfatprogs do; its FAT chain must
//! agree (a fragmented bitmap is refused).
//!
//! Refused (captured whole): a boot sector out of the specification's ranges or not fitting
//! the area, a wrong boot checksum, a root directory without an allocation bitmap, a bitmap too
//! short or outside the heap, a broken or looping FAT chain, and a volume marked dirty
//! (`VolumeDirty`: mounted, or not cleanly unmounted).

use crate::{le_u16, le_u32, le_u64, Extents, FsError, ReadAt};

/// The boot sector fields used here, checked against the specification's ranges.
#[derive(Debug, Clone)]
pub struct BootSector {
    pub bytes_per_sector: u64,
    pub cluster_bytes: u64,
    pub volume_sectors: u64,
    pub fat_offset: u64,
    pub fat_length: u64,
    pub heap_offset: u64,
    pub cluster_count: u64,
    pub root_cluster: u32,
    pub volume_flags: u16,
    pub fats: u64,
}

const VOLUME_DIRTY: u16 = 0x2;
const ACTIVE_FAT: u16 = 0x1;
/// The spec's limit on the size of a directory.
const MAX_DIR_BYTES: u64 = 256 << 20;

impl BootSector {
    /// Parses and checks a main boot sector (512 bytes at least) against an area of
    /// `area_size` bytes.
    pub fn parse(b: &[u8], area_size: u64) -> Result<Self, FsError> {
        let bad = |m: String| FsError::BadSuperblock(format!("exFAT: {m}"));
        if b.len() < 512 {
            return Err(bad("boot sector truncated".into()));
        }
        if b[3..11] != *b"EXFAT   " || b[510] != 0x55 || b[511] != 0xAA {
            return Err(bad("no exFAT signature".into()));
        }
        if b[11..64].iter().any(|&x| x != 0) {
            return Err(bad("MustBeZero field is not zero".into()));
        }
        let bpss = u32::from(b[108]);
        let spcs = u32::from(b[109]);
        if !(9..=12).contains(&bpss) || spcs > 25 - bpss {
            return Err(bad(format!("sector shift {bpss}, cluster shift {spcs}")));
        }
        let bps = 1u64 << bpss;
        let fats = u64::from(b[110]);
        if fats != 1 && fats != 2 {
            return Err(bad(format!("{fats} FATs")));
        }
        let volume_sectors = le_u64(b, 72);
        let fat_offset = u64::from(le_u32(b, 80));
        let fat_length = u64::from(le_u32(b, 84));
        let heap_offset = u64::from(le_u32(b, 88));
        let cluster_count = u64::from(le_u32(b, 92));
        let root_cluster = le_u32(b, 96);
        let spc = 1u64 << spcs;
        let vol_bytes = volume_sectors
            .checked_mul(bps)
            .ok_or_else(|| bad("volume length overflows".into()))?;
        if vol_bytes < 1 << 20 || vol_bytes > area_size {
            return Err(bad(format!(
                "volume of {vol_bytes} bytes in an area of {area_size}"
            )));
        }
        let fats_end = fat_offset + fat_length * fats;
        if fat_offset < 24
            || fat_length < ((cluster_count + 2) * 4).div_ceil(bps)
            || heap_offset < fats_end
            || heap_offset > volume_sectors
        {
            return Err(bad(format!(
                "FAT at {fat_offset} length {fat_length}, heap at {heap_offset}"
            )));
        }
        if cluster_count == 0
            || cluster_count > 0xFFFF_FFF5
            || cluster_count > (volume_sectors - heap_offset) / spc
        {
            return Err(bad(format!("{cluster_count} clusters")));
        }
        if root_cluster < 2 || u64::from(root_cluster) > cluster_count + 1 {
            return Err(bad(format!("root directory at cluster {root_cluster}")));
        }
        Ok(Self {
            bytes_per_sector: bps,
            cluster_bytes: bps * spc,
            volume_sectors,
            fat_offset,
            fat_length,
            heap_offset,
            cluster_count,
            root_cluster,
            volume_flags: le_u16(b, 106),
            fats,
        })
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.heap_offset * self.bytes_per_sector + (u64::from(c) - 2) * self.cluster_bytes
    }
    fn valid_cluster(&self, c: u32) -> bool {
        c >= 2 && u64::from(c) <= self.cluster_count + 1
    }
}

/// The boot checksum of section 3.4 over the first 11 sectors of a boot region.
pub fn boot_checksum(region: &[u8]) -> u32 {
    let mut sum = 0u32;
    for (i, &b) in region.iter().enumerate() {
        if i == 106 || i == 107 || i == 112 {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u32::from(b));
    }
    sum
}

/// Follows the FAT chain from `first`, at most `limit` clusters, and returns the clusters.
fn chain<R: ReadAt + ?Sized>(
    area: &R,
    bs: &BootSector,
    first: u32,
    limit: u64,
) -> Result<Vec<u32>, FsError> {
    let active = if bs.fats == 2 && bs.volume_flags & ACTIVE_FAT != 0 {
        1
    } else {
        0
    };
    let fat = (bs.fat_offset + active * bs.fat_length) * bs.bytes_per_sector;
    let mut out = Vec::new();
    let mut c = first;
    loop {
        if !bs.valid_cluster(c) {
            return Err(FsError::Inconsistent(format!(
                "exFAT: cluster chain from {first} reaches invalid cluster {c:#x}"
            )));
        }
        if out.len() as u64 >= limit {
            return Err(FsError::Inconsistent(format!(
                "exFAT: cluster chain from {first} longer than {limit} clusters (a loop?)"
            )));
        }
        out.push(c);
        let mut e = [0u8; 4];
        area.read_at(fat + u64::from(c) * 4, &mut e)?;
        let next = u32::from_le_bytes(e);
        if next == 0xFFFF_FFFF {
            return Ok(out);
        }
        c = next;
    }
}

/// Used bytes of the area and the filesystem's own used-byte count.
pub fn used<R: ReadAt + ?Sized>(area: &R) -> Result<(Extents, Option<u64>), FsError> {
    let size = area.size();
    if size < 512 {
        return Err(FsError::BadSuperblock("exFAT: area too small".into()));
    }
    let mut first = [0u8; 512];
    area.read_at(0, &mut first)?;
    let bs = BootSector::parse(&first, size)?;
    let bps = bs.bytes_per_sector;
    let mut region = vec![0u8; (12 * bps) as usize];
    area.read_at(0, &mut region)?;
    let (sectors, check) = region.split_at((11 * bps) as usize);
    let sum = boot_checksum(sectors);
    if check.chunks_exact(4).any(|w| le_u32(w, 0) != sum) {
        return Err(FsError::Checksum(format!(
            "exFAT main boot region (computed {sum:#010x}, stored {:#010x})",
            le_u32(check, 0)
        )));
    }
    if bs.volume_flags & VOLUME_DIRTY != 0 {
        return Err(FsError::Inconsistent(
            "exFAT: the volume is marked dirty (not cleanly unmounted, or mounted)".into(),
        ));
    }

    // The root directory: find the allocation bitmap entries.
    let dir_limit = (MAX_DIR_BYTES / bs.cluster_bytes).clamp(1, bs.cluster_count);
    let root = chain(area, &bs, bs.root_cluster, dir_limit)?;
    let mut bitmaps: Vec<(u32, u64)> = Vec::new();
    let mut buf = vec![0u8; bs.cluster_bytes as usize];
    'dir: for &c in &root {
        area.read_at(bs.cluster_offset(c), &mut buf)?;
        for e in buf.chunks_exact(32) {
            match e[0] {
                0x00 => break 'dir,
                0x81 => bitmaps.push((le_u32(e, 20), le_u64(e, 24))),
                _ => {}
            }
        }
    }
    if bitmaps.is_empty() || bitmaps.len() > 2 {
        return Err(FsError::Inconsistent(format!(
            "exFAT: {} allocation bitmaps in the root directory",
            bitmaps.len()
        )));
    }

    let need = bs.cluster_count.div_ceil(8);
    let mut used = vec![0u8; need as usize];
    for &(start, len) in &bitmaps {
        if len < need || !bs.valid_cluster(start) {
            return Err(FsError::Inconsistent(format!(
                "exFAT: allocation bitmap at cluster {start}, {len} bytes for {} clusters",
                bs.cluster_count
            )));
        }
        let nclusters = need.div_ceil(bs.cluster_bytes);
        let clusters = chain(area, &bs, start, bs.cluster_count)?;
        let contiguous = clusters.len() as u64 >= nclusters
            && clusters
                .iter()
                .take(nclusters as usize)
                .zip(u64::from(start)..)
                .all(|(&c, want)| u64::from(c) == want);
        if !contiguous {
            return Err(FsError::Inconsistent(format!(
                "exFAT: allocation bitmap at cluster {start} is not contiguous in the FAT"
            )));
        }
        let mut bm = vec![0u8; need as usize];
        if bs.cluster_offset(start) + need > bs.volume_sectors * bps {
            return Err(FsError::Inconsistent(
                "exFAT: bitmap past the volume".into(),
            ));
        }
        area.read_at(bs.cluster_offset(start), &mut bm)?;
        for (u, b) in used.iter_mut().zip(&bm) {
            *u |= *b;
        }
    }

    let mut ext = Extents::new();
    ext.add(0, 24 * bps);
    ext.add(bs.fat_offset * bps, bs.fat_length * bs.fats * bps);
    let heap = bs.heap_offset * bps;
    let mut allocated = 0u64;
    let mut run: Option<u64> = None;
    for i in 0..bs.cluster_count {
        let set = used[(i / 8) as usize] & (1 << (i % 8)) != 0;
        allocated += u64::from(set);
        match (set, run) {
            (true, None) => run = Some(i),
            (false, Some(s)) => {
                ext.add(heap + s * bs.cluster_bytes, (i - s) * bs.cluster_bytes);
                run = None;
            }
            _ => {}
        }
    }
    if let Some(s) = run {
        ext.add(
            heap + s * bs.cluster_bytes,
            (bs.cluster_count - s) * bs.cluster_bytes,
        );
    }
    let heap_end = heap + bs.cluster_count * bs.cluster_bytes;
    if size > heap_end {
        ext.add(heap_end, size - heap_end);
    }
    let meta = 24 * bps + bs.fat_length * bs.fats * bps;
    Ok((ext, Some(meta + allocated * bs.cluster_bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_skips_the_volatile_fields() {
        let mut a = vec![0u8; 11 * 512];
        a[0] = 1;
        let s = boot_checksum(&a);
        a[106] = 0xFF;
        a[107] = 0xFF;
        a[112] = 0x55;
        assert_eq!(boot_checksum(&a), s);
        a[113] = 1;
        assert_ne!(boot_checksum(&a), s);
    }
}
