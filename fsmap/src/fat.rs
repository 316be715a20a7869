//! FAT12/16/32: the reserved sectors, the FATs, the root directory region and every cluster
//! whose FAT entry is not free.
//!
//! Follows the Microsoft "FAT: General Overview of On-Disk Format" specification (version 1.03,
//! the "Microsoft Extensible Firmware Initiative FAT32 File System Specification"): section 3
//! (boot sector and BPB), 3.5 (determination of the FAT type from the count of clusters: fewer
//! than 4085 is FAT12, fewer than 65525 FAT16, else FAT32), 4 (the FAT: entry 0 free, entries 0
//! of every width mean free) and 6 (the root directory region of FAT12/16).
//!
//! Used = reserved sectors + every FAT copy + the FAT12/16 root directory, the clusters whose
//! entry is non-zero in *any* FAT copy (a bad-cluster mark or a reserved value counts as used:
//! conservative), and whatever lies past the last whole cluster (the slack sectors and the
//! bytes of the area past the volume). The volume's own used count is the metadata plus the
//! allocated clusters.
//!
//! Refused (captured whole): a BPB that is not sane or does not fit the area, a FAT too small
//! for the count of clusters, a BPB whose layout (FAT32 fields present or not) contradicts the
//! type given by the count of clusters (drivers would disagree on how to read it), and a volume
//! whose boot sector says it was not cleanly unmounted (the dirty bit Linux and Windows set
//! while mounted).

use crate::{le_u16, le_u32, Extents, FsError, ReadAt};

/// The BIOS parameter block fields used here.
#[derive(Debug, Clone)]
pub struct Bpb {
    pub bytes_per_sector: u64,
    pub sectors_per_cluster: u64,
    pub reserved_sectors: u64,
    pub fats: u64,
    pub root_entries: u64,
    pub total_sectors: u64,
    pub fat_sectors: u64,
    /// 12, 16 or 32, from the count of clusters.
    pub bits: u8,
    pub clusters: u64,
    /// FAT12/16 `BS_Reserved1`/FAT32 `BS_Reserved1` byte that Linux uses as the dirty flag.
    pub state: u8,
}

impl Bpb {
    /// Parses a boot sector (at least 512 bytes) and checks its BPB for sanity. Does not check
    /// the `0x55AA` signature or the size of the area.
    pub fn parse(b: &[u8]) -> Result<Self, FsError> {
        let bad = |m: String| FsError::BadSuperblock(format!("FAT: {m}"));
        if b.len() < 512 {
            return Err(bad("boot sector truncated".into()));
        }
        let bytes_per_sector = u64::from(le_u16(b, 0x0B));
        if !(512..=4096).contains(&bytes_per_sector) || !bytes_per_sector.is_power_of_two() {
            return Err(bad(format!("{bytes_per_sector} bytes per sector")));
        }
        let sectors_per_cluster = u64::from(b[0x0D]);
        if sectors_per_cluster == 0 || !sectors_per_cluster.is_power_of_two() {
            return Err(bad(format!("{sectors_per_cluster} sectors per cluster")));
        }
        let reserved_sectors = u64::from(le_u16(b, 0x0E));
        if reserved_sectors == 0 {
            return Err(bad("no reserved sectors".into()));
        }
        let fats = u64::from(b[0x10]);
        if fats == 0 || fats > 4 {
            return Err(bad(format!("{fats} FATs")));
        }
        let media = b[0x15];
        if media != 0xF0 && media < 0xF8 {
            return Err(bad(format!("media byte {media:#x}")));
        }
        let root_entries = u64::from(le_u16(b, 0x11));
        let fat16_size = u64::from(le_u16(b, 0x16));
        let fat_sectors = if fat16_size != 0 {
            fat16_size
        } else {
            u64::from(le_u32(b, 0x24))
        };
        if fat_sectors == 0 {
            return Err(bad("FAT size 0".into()));
        }
        let tot16 = u64::from(le_u16(b, 0x13));
        let total_sectors = if tot16 != 0 {
            tot16
        } else {
            u64::from(le_u32(b, 0x20))
        };
        let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
        let meta = reserved_sectors + fats * fat_sectors + root_sectors;
        if total_sectors <= meta {
            return Err(bad(format!(
                "{total_sectors} sectors, {meta} of them metadata"
            )));
        }
        let clusters = (total_sectors - meta) / sectors_per_cluster;
        let bits = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        // The FAT32 layout (32-bit FAT size, root directory in clusters) is what Linux reads
        // when BPB_FATSz16 is 0; the specification decides by the count of clusters.
        let fat32_layout = fat16_size == 0;
        if fat32_layout != (bits == 32) || (bits == 32 && root_entries != 0) {
            return Err(bad(format!(
                "{clusters} clusters (FAT{bits}) but a FAT{} layout",
                if fat32_layout { "32" } else { "12/16" }
            )));
        }
        let entries = fat_sectors * bytes_per_sector * 8 / u64::from(bits);
        if entries < clusters + 2 {
            return Err(bad(format!(
                "a FAT of {entries} entries for {clusters} clusters"
            )));
        }
        let state = if bits == 32 { b[0x41] } else { b[0x25] };
        Ok(Self {
            bytes_per_sector,
            sectors_per_cluster,
            reserved_sectors,
            fats,
            root_entries,
            total_sectors,
            fat_sectors,
            bits,
            clusters,
            state,
        })
    }

    fn root_sectors(&self) -> u64 {
        (self.root_entries * 32).div_ceil(self.bytes_per_sector)
    }
    /// First sector of the data region (cluster 2).
    pub fn data_start_sector(&self) -> u64 {
        self.reserved_sectors + self.fats * self.fat_sectors + self.root_sectors()
    }
}

/// Bytes of FAT read at once (a multiple of 12).
const CHUNK: u64 = 3 << 18;

/// Used bytes of the area and the filesystem's own used-byte count.
pub fn used<R: ReadAt + ?Sized>(area: &R) -> Result<(Extents, Option<u64>), FsError> {
    let size = area.size();
    if size < 512 {
        return Err(FsError::BadSuperblock("FAT: area too small".into()));
    }
    let mut boot = [0u8; 512];
    area.read_at(0, &mut boot)?;
    if boot[510] != 0x55 || boot[511] != 0xAA {
        return Err(FsError::BadSuperblock("FAT: no 0x55AA signature".into()));
    }
    let bpb = Bpb::parse(&boot)?;
    let bps = bpb.bytes_per_sector;
    let vol_bytes = bpb.total_sectors * bps;
    if vol_bytes > size {
        return Err(FsError::BadSuperblock(format!(
            "FAT: volume of {vol_bytes} bytes in an area of {size}"
        )));
    }
    if bpb.state & 1 != 0 {
        return Err(FsError::Inconsistent(
            "FAT: the volume is marked dirty (not cleanly unmounted, or mounted)".into(),
        ));
    }

    let data_start = bpb.data_start_sector() * bps;
    let cluster_bytes = bpb.sectors_per_cluster * bps;
    let mut used = vec![0u8; (bpb.clusters + 2).div_ceil(8) as usize];
    // Bytes of FAT that hold the entries of clusters 0..clusters+2.
    let fat_bytes = ((bpb.clusters + 2) * u64::from(bpb.bits)).div_ceil(8);
    for copy in 0..bpb.fats {
        let fat_start = (bpb.reserved_sectors + copy * bpb.fat_sectors) * bps;
        let mut off = 0u64;
        // Chunks of a multiple of 12 bytes: no FAT12 pair or wider entry straddles two.
        let chunk = CHUNK;
        let mut buf = Vec::new();
        while off < fat_bytes {
            let n = chunk.min(fat_bytes - off);
            buf.resize(n as usize, 0);
            area.read_at(fat_start + off, &mut buf)?;
            mark_entries(&buf, off, bpb.bits, bpb.clusters + 2, &mut used);
            off += n;
        }
    }

    let mut ext = Extents::new();
    ext.add(0, data_start);
    let mut allocated = 0u64;
    let mut run: Option<u64> = None;
    let clusters = bpb.clusters;
    let byte_of = |c: u64| data_start + (c - 2) * cluster_bytes;
    for c in 2..clusters + 2 {
        let set = used
            .get((c / 8) as usize)
            .is_some_and(|b| b & (1 << (c % 8)) != 0);
        if set {
            allocated += 1;
        }
        match (set, run) {
            (true, None) => run = Some(c),
            (false, Some(s)) => {
                ext.add(byte_of(s), (c - s) * cluster_bytes);
                run = None;
            }
            _ => {}
        }
    }
    if let Some(s) = run {
        ext.add(byte_of(s), (clusters + 2 - s) * cluster_bytes);
    }
    let heap_end = byte_of(clusters + 2);
    if size > heap_end {
        ext.add(heap_end, size - heap_end);
    }
    Ok((ext, Some(data_start + allocated * cluster_bytes)))
}

/// Marks in `used` the clusters whose entry is non-zero in `buf`, which holds FAT bytes from
/// byte `off` on (`off` a multiple of 3 for FAT12). Entries 0 and 1 are reserved and skipped.
fn mark_entries(buf: &[u8], off: u64, bits: u8, n: u64, used: &mut [u8]) {
    let mut mark = |c: u64| {
        if (2..n).contains(&c) {
            if let Some(b) = used.get_mut((c / 8) as usize) {
                *b |= 1 << (c % 8);
            }
        }
    };
    match bits {
        12 => {
            let first = off / 3 * 2;
            for (i, g) in buf.chunks(3).enumerate() {
                let b = |k: usize| u16::from(g.get(k).copied().unwrap_or(0));
                let e0 = b(0) | (b(1) & 0x0F) << 8;
                let e1 = b(1) >> 4 | b(2) << 4;
                let c = first + 2 * i as u64;
                if e0 != 0 {
                    mark(c);
                }
                if e1 != 0 && g.len() >= 2 {
                    mark(c + 1);
                }
            }
        }
        16 => {
            let first = off / 2;
            for (i, e) in buf.chunks_exact(2).enumerate() {
                if e != [0, 0] {
                    mark(first + i as u64);
                }
            }
        }
        _ => {
            let first = off / 4;
            for (i, e) in buf.chunks_exact(4).enumerate() {
                // The top 4 bits are reserved.
                if le_u32(e, 0) & 0x0FFF_FFFF != 0 {
                    mark(first + i as u64);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat12_entries_are_unpacked() {
        // Entries 0..4: 0xFF8, 0xFFF, 0x000, 0x003 (cluster 3 used), then 0x000, 0xFF7 (bad).
        let fat = [0xF8, 0xFF, 0xFF, 0x00, 0x30, 0x00, 0x00, 0x70, 0xFF];
        let mut used = [0u8; 1];
        mark_entries(&fat, 0, 12, 5, &mut used);
        assert_eq!(used[0], 0b0000_1000);
        let mut used = [0u8; 1];
        mark_entries(&fat, 0, 12, 6, &mut used);
        assert_eq!(used[0], 0b0010_1000);
    }

    #[test]
    fn fat32_ignores_the_reserved_top_bits() {
        let mut fat = vec![0u8; 16];
        fat[8..12].copy_from_slice(&0xF000_0000u32.to_le_bytes());
        fat[12..16].copy_from_slice(&0x0FFF_FFF7u32.to_le_bytes());
        let mut used = [0u8; 1];
        mark_entries(&fat, 0, 32, 4, &mut used);
        assert_eq!(used[0], 0b1000);
    }
}
