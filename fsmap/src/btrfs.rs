//! btrfs: the extents that the filesystem's extent tree records as allocated.
//!
//! Implements the on-disk format of the btrfs documentation ("On-disk format" in
//! btrfs.readthedocs.io, and the kernel's `include/uapi/linux/btrfs_tree.h`): the superblock
//! at 64 KiB (CRC32C over bytes 0x20..0x1000), the bootstrap chunk map in
//! `sys_chunk_array`, and three trees (tree blocks with a 101-byte header, leaves of
//! `btrfs_item`s, nodes of `btrfs_key_ptr`s, each block's CRC32C, bytenr, fsid and level
//! checked, keys in order): the chunk tree, whose `CHUNK_ITEM`s map logical addresses to device
//! ranges (stripes); the root tree, whose `ROOT_ITEM` of objectid 2 locates the extent tree; and
//! the extent tree, whose `EXTENT_ITEM`s (data extents, and tree blocks without skinny
//! metadata) and `METADATA_ITEM`s (tree blocks) are everything allocated, data and metadata.
//!
//! Used: every allocated extent, on every stripe of its chunk (both copies of DUP), the first
//! 1 MiB (bootloader area and primary superblock), the superblock mirrors at 64 MiB and 256 GiB
//! where they fit, and whatever of the area lies past the device's size. Free space inside
//! allocated chunks and unallocated device space are not read.
//!
//! Refused (captured whole): a bad checksum or magic, a checksum type other than CRC32C,
//! `num_devices != 1` ("multi-device btrfs"), unknown or layout-changing incompat features
//! (zoned, extent tree v2, raid stripe tree), a present log tree (`log_root != 0`: fsync'd
//! data not yet committed), chunk profiles other than single and DUP, tree blocks deeper than
//! [`MAX_LEVEL`] or more of them than fit the device, keys out of order, an extent outside its
//! chunks or overlapping another, and extents that do not add up to the superblock's
//! `bytes_used` (the filesystem's own count: if the tree and the count disagree, neither is
//! trusted).

use crate::xfs::crc32c;
use crate::{le_u16, le_u32, le_u64, Extents, FsError, ReadAt};

/// Deepest chunk tree accepted (level of the root).
pub const MAX_LEVEL: u8 = 8;

const SB_OFFSET: u64 = 0x1_0000;
const SB_MIRRORS: [u64; 3] = [0x1_0000, 64 << 20, 256 << 30];
const MAGIC: &[u8; 8] = b"_BHRfS_M";
const HEADER: usize = 101;
const CHUNK_ITEM: u8 = 228;
const ROOT_ITEM: u8 = 132;
const EXTENT_ITEM: u8 = 168;
const METADATA_ITEM: u8 = 169;
const FIRST_CHUNK_TREE_OBJECTID: u64 = 256;
const EXTENT_TREE_OBJECTID: u64 = 2;
/// Offsets in a `btrfs_root_item`: the root block's logical address and its level.
const ROOT_ITEM_BYTENR: usize = 176;
const ROOT_ITEM_LEVEL: usize = 238;

/// Incompat features that leave chunks and device extents as described above: everything up
/// to RAID1C34 (0x800) and SIMPLE_QUOTA (0x10000); not ZONED, EXTENT_TREE_V2, RAID_STRIPE_TREE.
const INCOMPAT_KNOWN: u64 = 0xfff | 0x1_0000;
const INCOMPAT_METADATA_UUID: u64 = 0x400;
/// Block group profile bits: RAID0, RAID1, DUP, RAID10, RAID5, RAID6, RAID1C3, RAID1C4.
const PROFILE_DUP: u64 = 0x20;
const PROFILE_MASK: u64 = 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400;

/// The superblock fields this module needs.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub sectorsize: u32,
    pub nodesize: u32,
    pub total_bytes: u64,
    /// Bytes allocated to extents, data and metadata (each counted once).
    pub bytes_used: u64,
    pub root: u64,
    pub root_level: u8,
    pub chunk_root: u64,
    pub chunk_root_level: u8,
    pub devid: u64,
    pub dev_total_bytes: u64,
    /// The fsid tree blocks carry (the metadata UUID when METADATA_UUID is set).
    pub meta_fsid: [u8; 16],
}

/// A chunk: logical `[logical, +length)`, its stripes `(devid, physical offset)` each
/// `stripe_len` bytes long on its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub logical: u64,
    pub length: u64,
    pub stripe_len: u64,
    pub stripes: Vec<(u64, u64)>,
}

/// Used bytes of the area and the bytes the filesystem has allocated to extents.
pub fn used<R: ReadAt + ?Sized>(area: &R) -> Result<(Extents, Option<u64>), FsError> {
    if area.size() < SB_OFFSET + 4096 {
        return Err(FsError::BadSuperblock("btrfs: area too small".into()));
    }
    let mut sbuf = vec![0u8; 4096];
    area.read_at(SB_OFFSET, &mut sbuf)?;
    let (sb, sys) = parse_superblock(&sbuf, area.size())?;
    let chunks = read_chunk_tree(area, &sb, &sys)?;
    for c in &chunks {
        for &(devid, phys) in &c.stripes {
            if devid != sb.devid {
                return Err(FsError::Inconsistent(format!(
                    "btrfs chunk at {} has a stripe on device {devid}",
                    c.logical
                )));
            }
            if phys
                .checked_add(c.stripe_len)
                .is_none_or(|e| e > sb.dev_total_bytes)
            {
                return Err(FsError::Inconsistent(format!(
                    "btrfs chunk at {}: stripe [{phys}, +{}) beyond the device",
                    c.logical, c.stripe_len
                )));
            }
        }
    }
    let extents = read_extent_tree(area, &sb, &chunks)?;
    let in_use: u64 = extents.iter().map(|&(_, len)| len).sum();
    if in_use != sb.bytes_used {
        return Err(FsError::Inconsistent(format!(
            "btrfs: the extent tree records {in_use} bytes, the superblock {} bytes in use",
            sb.bytes_used
        )));
    }
    // Device ranges of every extent on every stripe, sorted before merging (DUP's second copy
    // and chunks placed out of logical order would otherwise insert out of order).
    let mut on_device = Vec::with_capacity(extents.len());
    for &(logical, len) in &extents {
        let c = chunk_of(&chunks, logical, len)?;
        for &(_, phys) in &c.stripes {
            on_device.push((phys + (logical - c.logical), len));
        }
    }
    on_device.sort_unstable();
    let mut capture = Extents::new();
    capture.add(0, 1 << 20);
    for m in SB_MIRRORS {
        if m + 4096 <= sb.dev_total_bytes {
            capture.add(m, 4096);
        }
    }
    for (start, len) in on_device {
        capture.add(start, len);
    }
    if area.size() > sb.dev_total_bytes {
        capture.add(sb.dev_total_bytes, area.size() - sb.dev_total_bytes);
    }
    Ok((capture.clamp_to(area.size()), Some(in_use)))
}

/// Parses and checks the primary superblock (4096 bytes); returns it and the bootstrap
/// chunks of `sys_chunk_array`.
pub fn parse_superblock(b: &[u8], area_size: u64) -> Result<(Superblock, Vec<Chunk>), FsError> {
    let bad = |m: String| FsError::BadSuperblock(format!("btrfs: {m}"));
    if b.len() < 4096 || &b[0x40..0x48] != MAGIC {
        return Err(bad("no _BHRfS_M magic".into()));
    }
    let csum_type = le_u16(b, 0xc4);
    if csum_type != 0 {
        return Err(FsError::Unsupported(format!(
            "btrfs checksum type {csum_type} (only crc32c)"
        )));
    }
    if crc32c(&b[0x20..4096]) != le_u32(b, 0) {
        return Err(FsError::Checksum("btrfs superblock".into()));
    }
    if le_u64(b, 0x30) != SB_OFFSET {
        return Err(bad(format!("superblock says it is at {}", le_u64(b, 0x30))));
    }
    let sectorsize = le_u32(b, 0x90);
    let nodesize = le_u32(b, 0x94);
    if !(4096..=65536).contains(&sectorsize) || !sectorsize.is_power_of_two() {
        return Err(bad(format!("sectorsize {sectorsize}")));
    }
    if nodesize < sectorsize || nodesize > 65536 || !nodesize.is_power_of_two() {
        return Err(bad(format!("nodesize {nodesize}")));
    }
    let num_devices = le_u64(b, 0x88);
    if num_devices != 1 {
        return Err(FsError::Unsupported(format!(
            "multi-device btrfs ({num_devices} devices)"
        )));
    }
    let incompat = le_u64(b, 0xbc);
    if incompat & !INCOMPAT_KNOWN != 0 {
        return Err(FsError::Unsupported(format!(
            "btrfs incompat features {:#x}",
            incompat & !INCOMPAT_KNOWN
        )));
    }
    if le_u64(b, 0x60) != 0 {
        return Err(FsError::Unsupported(
            "btrfs log tree present: fsync'd data not yet committed (mount once to replay)".into(),
        ));
    }
    let total_bytes = le_u64(b, 0x70);
    let devid = le_u64(b, 0xc9);
    let dev_total_bytes = le_u64(b, 0xd1);
    if total_bytes == 0
        || dev_total_bytes == 0
        || dev_total_bytes > area_size
        || total_bytes > dev_total_bytes
    {
        return Err(bad(format!(
            "total_bytes {total_bytes}, device {dev_total_bytes} bytes, area {area_size} bytes"
        )));
    }
    let mut meta_fsid = [0u8; 16];
    meta_fsid.copy_from_slice(&b[0x20..0x30]);
    if incompat & INCOMPAT_METADATA_UUID != 0 {
        meta_fsid.copy_from_slice(&b[0x23b..0x24b]);
    }
    let sb = Superblock {
        sectorsize,
        nodesize,
        total_bytes,
        bytes_used: le_u64(b, 0x78),
        root: le_u64(b, 0x50),
        root_level: b[0xc6],
        chunk_root: le_u64(b, 0x58),
        chunk_root_level: b[0xc7],
        devid,
        dev_total_bytes,
        meta_fsid,
    };
    if sb.chunk_root_level > MAX_LEVEL || sb.root_level > MAX_LEVEL {
        return Err(bad(format!(
            "tree root levels {} and {}",
            sb.root_level, sb.chunk_root_level
        )));
    }
    let n = le_u32(b, 0xa0) as usize;
    if n > 2048 {
        return Err(bad(format!("sys_chunk_array of {n} bytes")));
    }
    let arr = &b[0x32b..0x32b + n];
    let mut sys = Vec::new();
    let mut at = 0;
    while at < n {
        if at + 17 > n || arr[at + 8] != CHUNK_ITEM {
            return Err(bad("sys_chunk_array: not a CHUNK_ITEM".into()));
        }
        let logical = le_u64(arr, at + 9);
        let (c, len) = parse_chunk(&arr[at + 17..], logical, &sb)?;
        sys.push(c);
        at += 17 + len;
    }
    if sys.is_empty() {
        return Err(bad("empty sys_chunk_array".into()));
    }
    sys.sort_by_key(|c| c.logical);
    Ok((sb, sys))
}

/// Parses a `btrfs_chunk` (48 bytes + 32 per stripe); returns it and its size.
fn parse_chunk(b: &[u8], logical: u64, sb: &Superblock) -> Result<(Chunk, usize), FsError> {
    let inc = |m: String| FsError::Inconsistent(format!("btrfs chunk at {logical}: {m}"));
    if b.len() < 48 {
        return Err(inc("truncated".into()));
    }
    let length = le_u64(b, 0);
    let ty = le_u64(b, 24);
    let num_stripes = usize::from(le_u16(b, 44));
    let size = 48 + 32 * num_stripes;
    if num_stripes == 0 || b.len() < size {
        return Err(inc(format!("{num_stripes} stripes")));
    }
    if length == 0 || length > sb.dev_total_bytes || length & (u64::from(sb.sectorsize) - 1) != 0 {
        return Err(inc(format!("length {length}")));
    }
    let profile = ty & PROFILE_MASK;
    let expected = if profile == PROFILE_DUP { 2 } else { 1 };
    if (profile != 0 && profile != PROFILE_DUP) || num_stripes != expected {
        return Err(FsError::Unsupported(format!(
            "btrfs chunk profile {profile:#x} with {num_stripes} stripes (only single and DUP)"
        )));
    }
    let stripes = (0..num_stripes)
        .map(|i| (le_u64(b, 48 + 32 * i), le_u64(b, 48 + 32 * i + 8)))
        .collect();
    Ok((
        Chunk {
            logical,
            length,
            stripe_len: length,
            stripes,
        },
        size,
    ))
}

/// The chunk holding logical `[logical, +len)` whole, from `chunks` sorted by logical address.
fn chunk_of(chunks: &[Chunk], logical: u64, len: u64) -> Result<&Chunk, FsError> {
    let after = chunks.partition_point(|c| c.logical <= logical);
    after
        .checked_sub(1)
        .map(|i| &chunks[i])
        .filter(|c| {
            logical
                .checked_add(len)
                .is_some_and(|e| e <= c.logical + c.length)
        })
        .ok_or_else(|| {
            FsError::Inconsistent(format!("btrfs: logical [{logical}, +{len}) is in no chunk"))
        })
}

/// The device offset of logical address `logical` (`len` bytes, within one chunk).
fn map(chunks: &[Chunk], logical: u64, len: u64) -> Result<u64, FsError> {
    chunk_of(chunks, logical, len).map(|c| c.stripes[0].1 + (logical - c.logical))
}

/// Reads the chunk tree; returns every chunk, sorted by logical address.
pub fn read_chunk_tree<R: ReadAt + ?Sized>(
    area: &R,
    sb: &Superblock,
    sys: &[Chunk],
) -> Result<Vec<Chunk>, FsError> {
    let mut chunks = Vec::new();
    let mut walk = TreeWalk::new(area, sb, sys, "chunk");
    walk.visit(sb.chunk_root, sb.chunk_root_level, &mut |key, data| {
        if key.ty == CHUNK_ITEM {
            if key.objectid != FIRST_CHUNK_TREE_OBJECTID {
                return Err(FsError::Inconsistent(format!(
                    "btrfs chunk item at {}: objectid {}",
                    key.offset, key.objectid
                )));
            }
            let (c, len) = parse_chunk(data, key.offset, sb)?;
            if len != data.len() {
                return Err(FsError::Inconsistent(format!(
                    "btrfs chunk item at {} of {} bytes, {len} expected",
                    key.offset,
                    data.len()
                )));
            }
            chunks.push(c);
        }
        Ok(())
    })?;
    for s in sys {
        if !chunks.iter().any(|c| c == s) {
            return Err(FsError::Inconsistent(format!(
                "btrfs: system chunk at {} differs in the chunk tree",
                s.logical
            )));
        }
    }
    // Keys are checked in order, so the chunks are sorted by logical address already.
    for pair in chunks.windows(2) {
        if pair[0].logical + pair[0].length > pair[1].logical {
            return Err(FsError::Inconsistent(format!(
                "btrfs: chunks at {} and {} overlap",
                pair[0].logical, pair[1].logical
            )));
        }
    }
    Ok(chunks)
}

/// Finds the extent tree in the root tree and reads it: every allocated extent as logical
/// `(start, length)`, in order, none overlapping.
pub fn read_extent_tree<R: ReadAt + ?Sized>(
    area: &R,
    sb: &Superblock,
    chunks: &[Chunk],
) -> Result<Vec<(u64, u64)>, FsError> {
    let mut extent_root = None;
    TreeWalk::new(area, sb, chunks, "root").visit(sb.root, sb.root_level, &mut |key, data| {
        if key.objectid == EXTENT_TREE_OBJECTID && key.ty == ROOT_ITEM {
            if data.len() <= ROOT_ITEM_LEVEL {
                return Err(FsError::Inconsistent(format!(
                    "btrfs extent tree root item of {} bytes",
                    data.len()
                )));
            }
            extent_root = Some((le_u64(data, ROOT_ITEM_BYTENR), data[ROOT_ITEM_LEVEL]));
        }
        Ok(())
    })?;
    let (root, level) = extent_root
        .ok_or_else(|| FsError::Inconsistent("btrfs: the root tree has no extent tree".into()))?;
    if level > MAX_LEVEL {
        return Err(FsError::Inconsistent(format!(
            "btrfs extent tree root level {level}"
        )));
    }
    let nodesize = u64::from(sb.nodesize);
    let mut extents: Vec<(u64, u64)> = Vec::new();
    TreeWalk::new(area, sb, chunks, "extent").visit(root, level, &mut |key, _| {
        let len = match key.ty {
            EXTENT_ITEM => key.offset,
            METADATA_ITEM => nodesize,
            _ => return Ok(()),
        };
        if len == 0 {
            return Err(FsError::Inconsistent(format!(
                "btrfs: empty extent at {}",
                key.objectid
            )));
        }
        if let Some(&(start, prev)) = extents.last() {
            if key.objectid < start + prev {
                return Err(FsError::Inconsistent(format!(
                    "btrfs: extents at {start} (+{prev}) and {} overlap",
                    key.objectid
                )));
            }
        }
        chunk_of(chunks, key.objectid, len)?;
        extents.push((key.objectid, len));
        Ok(())
    })?;
    Ok(extents)
}

/// The key of a tree item: `(objectid, type, offset)`, the order of items in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    objectid: u64,
    ty: u8,
    offset: u64,
}

impl Key {
    fn parse(b: &[u8], at: usize) -> Self {
        Self {
            objectid: le_u64(b, at),
            ty: b[at + 8],
            offset: le_u64(b, at + 9),
        }
    }
}

/// What a [`TreeWalk`] hands each leaf item to: its key and its data.
type ItemVisitor<'v> = dyn FnMut(Key, &[u8]) -> Result<(), FsError> + 'v;

/// A depth-first walk of one tree that hands every leaf item, in key order, to a visitor.
struct TreeWalk<'a, R: ReadAt + ?Sized> {
    area: &'a R,
    sb: &'a Superblock,
    /// The chunks that map the tree's logical addresses (the bootstrap ones for the chunk tree).
    chunks: &'a [Chunk],
    name: &'static str,
    nodes: u64,
    max_nodes: u64,
    last_key: Option<Key>,
}

impl<'a, R: ReadAt + ?Sized> TreeWalk<'a, R> {
    fn new(area: &'a R, sb: &'a Superblock, chunks: &'a [Chunk], name: &'static str) -> Self {
        Self {
            area,
            sb,
            chunks,
            name,
            nodes: 0,
            max_nodes: (sb.dev_total_bytes / u64::from(sb.nodesize)).min(1 << 22),
            last_key: None,
        }
    }

    fn visit(
        &mut self,
        logical: u64,
        level: u8,
        item: &mut ItemVisitor<'_>,
    ) -> Result<(), FsError> {
        let name = self.name;
        let inc =
            |m: String| FsError::Inconsistent(format!("btrfs {name} tree block {logical}: {m}"));
        self.nodes += 1;
        if self.nodes > self.max_nodes {
            return Err(inc("more tree blocks than fit the device".into()));
        }
        let ns = self.sb.nodesize as usize;
        let phys = map(self.chunks, logical, ns as u64)?;
        if phys
            .checked_add(ns as u64)
            .is_none_or(|e| e > self.area.size())
        {
            return Err(inc("beyond the area".into()));
        }
        let mut b = vec![0u8; ns];
        self.area.read_at(phys, &mut b)?;
        if crc32c(&b[0x20..]) != le_u32(&b, 0) {
            return Err(FsError::Checksum(format!(
                "btrfs {name} tree block {logical}"
            )));
        }
        if le_u64(&b, 0x30) != logical || b[0x20..0x30] != self.sb.meta_fsid {
            return Err(inc("wrong bytenr or fsid".into()));
        }
        if b[0x64] != level {
            return Err(inc(format!("level {} where {level} expected", b[0x64])));
        }
        let nritems = le_u32(&b, 0x60) as usize;
        if level == 0 {
            if nritems > (ns - HEADER) / 25 {
                return Err(inc(format!("{nritems} items")));
            }
            for i in 0..nritems {
                let it = HEADER + 25 * i;
                let key = Key::parse(&b, it);
                if self.last_key.is_some_and(|last| key <= last) {
                    return Err(inc(format!("item {i} out of key order")));
                }
                self.last_key = Some(key);
                let (off, size) = (le_u32(&b, it + 17) as usize, le_u32(&b, it + 21) as usize);
                if off.checked_add(size).is_none_or(|e| HEADER + e > ns) {
                    return Err(inc(format!("item {i} data out of the block")));
                }
                item(key, &b[HEADER + off..HEADER + off + size])?;
            }
        } else {
            if nritems == 0 || nritems > (ns - HEADER) / 33 {
                return Err(inc(format!("{nritems} pointers")));
            }
            for i in 0..nritems {
                let child = le_u64(&b, HEADER + 33 * i + 17);
                self.visit(child, level - 1, item)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error() {
        assert!(used(&vec![0u8; 100]).is_err());
        let mut img = vec![0u8; 0x20000];
        img[0x10040..0x10048].copy_from_slice(MAGIC);
        assert!(matches!(used(&img), Err(FsError::Checksum(_))));
    }
}
