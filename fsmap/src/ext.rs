//! ext2/3/4: the used blocks, from the group descriptors and the block bitmaps.
//!
//! Follows the kernel's "ext4 Data Structures and Algorithms" document
//! (`Documentation/filesystems/ext4/`: "Layout", "Super Block", "Block Group Descriptors",
//! "Block and inode Bitmaps", "Flexible Block Groups", "Meta Block Groups", "Lazy Block Group
//! Initialization", "Bigalloc", "Checksums") and, where the document is terse, the kernel code it
//! describes: `descriptor_loc()` (fs/ext4/super.c) for meta_bg, `ext4_bg_has_super()`,
//! `ext4_num_base_meta_clusters()` and `ext4_init_block_bitmap()` (fs/ext4/balloc.c) for groups
//! whose bitmap was never initialized (`BLOCK_UNINIT`), `ext4_group_desc_csum()` and
//! `ext4_block_bitmap_csum_set()` for the checksums.
//!
//! Used = block 0 up to and including the superblock, every block before `s_first_data_block`,
//! every cluster whose bit is set in its group's block bitmap (that includes the superblock
//! backups, descriptors, reserved GDT blocks, bitmaps, inode tables, the internal journal, the
//! MMP block, the resize inode, every file and directory), every group's bitmaps and inode table
//! wherever they lie, and the bytes of the area past the end of the filesystem (nothing says
//! they are free). With bigalloc each bit is a cluster of `2^s_log_cluster_size` blocks.
//!
//! A group flagged `BLOCK_UNINIT` has no bitmap on disk: its used clusters are computed as the
//! kernel does (superblock backup, descriptor blocks and reserved GDT blocks if the group holds
//! a backup, its own bitmaps and inode table if they lie inside it). If that computation does
//! not give the group's recorded free count, the whole group is taken as used.
//!
//! Refused (the caller captures the area whole):
//! - a bad magic, geometry that does not fit the area, a group count that does not match the
//!   block and inode counts, descriptors pointing outside the filesystem;
//! - an unknown incompatible or read-only-compatible feature, a journal device, compression;
//! - with `metadata_csum`: a wrong superblock, group-descriptor or block-bitmap CRC32C; with
//!   `gdt_csum`: a wrong descriptor CRC16;
//! - a filesystem not cleanly unmounted (`s_state` without `VALID_FS`, with `ERROR_FS`) or whose
//!   journal needs recovery (`INCOMPAT_RECOVER`): the journal may hold allocations that the
//!   bitmaps do not show yet;
//! - a bitmap whose count of free clusters differs from its descriptor's `bg_free_blocks_count`.
//!   Those must match on a clean filesystem (e2fsck pass 5 enforces it). The superblock's
//!   `s_free_blocks_count` is *not* compared: the kernel keeps the free count in per-CPU counters
//!   and writes it to the superblock only now and then, so a stale value there is normal.

use crate::{le_u16, le_u32, Extents, FsError, ReadAt};

/// Byte offset of the primary superblock.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
const SB_SIZE: usize = 1024;
/// `s_magic`, at byte 0x38 of the superblock.
pub const MAGIC: u16 = 0xEF53;

/// `s_feature_compat` bits.
pub mod compat {
    pub const HAS_JOURNAL: u32 = 0x4;
    pub const SPARSE_SUPER2: u32 = 0x200;
}

/// `s_feature_incompat` bits.
pub mod incompat {
    pub const COMPRESSION: u32 = 0x1;
    pub const FILETYPE: u32 = 0x2;
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const FLEX_BG: u32 = 0x200;
    pub const EA_INODE: u32 = 0x400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
    /// Features that do not change where allocation is recorded. RECOVER is handled apart
    /// (a clean-state question); COMPRESSION, JOURNAL_DEV and DIRDATA are refused.
    pub const UNDERSTOOD: u32 = FILETYPE
        | RECOVER
        | META_BG
        | EXTENTS
        | BIT64
        | MMP
        | FLEX_BG
        | EA_INODE
        | CSUM_SEED
        | LARGEDIR
        | INLINE_DATA
        | ENCRYPT
        | CASEFOLD;
}

/// `s_feature_ro_compat` bits.
pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const LARGE_FILE: u32 = 0x2;
    pub const BTREE_DIR: u32 = 0x4;
    pub const HUGE_FILE: u32 = 0x8;
    pub const GDT_CSUM: u32 = 0x10;
    pub const DIR_NLINK: u32 = 0x20;
    pub const EXTRA_ISIZE: u32 = 0x40;
    pub const QUOTA: u32 = 0x100;
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
    pub const READONLY: u32 = 0x1000;
    pub const PROJECT: u32 = 0x2000;
    pub const SHARED_BLOCKS: u32 = 0x4000;
    pub const VERITY: u32 = 0x8000;
    pub const ORPHAN_PRESENT: u32 = 0x10000;
    /// Known to the kernel and recorded in the bitmaps like any allocation. HAS_SNAPSHOT (0x80)
    /// and REPLICA (0x800) are not kernel features and are refused.
    pub const UNDERSTOOD: u32 = SPARSE_SUPER
        | LARGE_FILE
        | BTREE_DIR
        | HUGE_FILE
        | GDT_CSUM
        | DIR_NLINK
        | EXTRA_ISIZE
        | QUOTA
        | BIGALLOC
        | METADATA_CSUM
        | READONLY
        | PROJECT
        | SHARED_BLOCKS
        | VERITY
        | ORPHAN_PRESENT;
}

const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;
const BG_BLOCK_UNINIT: u16 = 0x2;
/// End of `bg_block_bitmap_csum_hi` in a descriptor: the high half exists only if the
/// descriptor is at least this long.
const BG_BLOCK_BITMAP_CSUM_HI_END: usize = 0x3C;

/// ext2, 3 or 4 from the feature flags: 4 if any feature only ext4 has, 3 if it has a journal.
pub fn version(compat_f: u32, incompat_f: u32, ro_compat_f: u32) -> u8 {
    let ext4_incompat = incompat::EXTENTS
        | incompat::FLEX_BG
        | incompat::BIT64
        | incompat::EA_INODE
        | incompat::CSUM_SEED
        | incompat::LARGEDIR
        | incompat::INLINE_DATA
        | incompat::ENCRYPT
        | incompat::CASEFOLD;
    let ext4_ro = ro_compat::HUGE_FILE
        | ro_compat::GDT_CSUM
        | ro_compat::DIR_NLINK
        | ro_compat::EXTRA_ISIZE
        | ro_compat::BIGALLOC
        | ro_compat::METADATA_CSUM;
    if incompat_f & ext4_incompat != 0 || ro_compat_f & ext4_ro != 0 {
        4
    } else if compat_f & compat::HAS_JOURNAL != 0 {
        3
    } else {
        2
    }
}

/// The superblock fields this module uses, checked against each other and the area.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub blocks: u64,
    pub first_data_block: u64,
    pub block_size: u64,
    /// Blocks per cluster (1 without bigalloc).
    pub cluster_ratio: u64,
    pub blocks_per_group: u64,
    pub clusters_per_group: u64,
    pub inodes_per_group: u64,
    pub inode_size: u64,
    pub groups: u64,
    pub state: u16,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub reserved_gdt_blocks: u64,
    pub desc_size: usize,
    pub first_meta_bg: u64,
    pub backup_bgs: [u32; 2],
    pub uuid: [u8; 16],
    /// Seed of the metadata checksums (`metadata_csum`).
    pub csum_seed: u32,
}

impl Superblock {
    /// Parses and validates the 1024 bytes at [`SUPERBLOCK_OFFSET`] of an area of `area_size`
    /// bytes. Checks the superblock checksum with `metadata_csum`, but not the features or the
    /// state (see [`used`]).
    pub fn parse(sb: &[u8], area_size: u64) -> Result<Self, FsError> {
        let bad = |m: String| FsError::BadSuperblock(format!("ext: {m}"));
        if sb.len() < SB_SIZE {
            return Err(bad("superblock truncated".into()));
        }
        if le_u16(sb, 0x38) != MAGIC {
            return Err(bad("no ext magic".into()));
        }
        let compat_f = le_u32(sb, 0x5C);
        let incompat_f = le_u32(sb, 0x60);
        let ro_compat_f = le_u32(sb, 0x64);
        let has_csum = ro_compat_f & ro_compat::METADATA_CSUM != 0;
        if has_csum {
            if sb[0x175] != 1 {
                return Err(bad(format!("unknown checksum type {}", sb[0x175])));
            }
            let want = le_u32(sb, 0x3FC);
            let got = crc32c_raw(!0, &sb[..0x3FC]);
            if want != got {
                return Err(FsError::Checksum(format!(
                    "ext superblock (stored {want:#010x}, computed {got:#010x})"
                )));
            }
        }
        let log_block = le_u32(sb, 0x18);
        if log_block > 6 {
            return Err(bad(format!("block size 2^{} KiB", log_block)));
        }
        let block_size = 1024u64 << log_block;
        let bigalloc = ro_compat_f & ro_compat::BIGALLOC != 0;
        let log_cluster = le_u32(sb, 0x1C);
        let cluster_ratio = if bigalloc {
            if log_cluster < log_block || log_cluster - log_block > 16 {
                return Err(bad(format!("cluster size 2^{log_cluster} KiB")));
            }
            1u64 << (log_cluster - log_block)
        } else {
            1
        };
        let bit64 = incompat_f & incompat::BIT64 != 0;
        let hi = |at: usize| {
            if bit64 {
                u64::from(le_u32(sb, at)) << 32
            } else {
                0
            }
        };
        let blocks = u64::from(le_u32(sb, 0x4)) | hi(0x150);
        let first_data_block = u64::from(le_u32(sb, 0x14));
        let expected_first = if block_size == 1024 && !bigalloc {
            1
        } else {
            0
        };
        if first_data_block != expected_first {
            return Err(bad(format!("first data block {first_data_block}")));
        }
        if blocks <= first_data_block {
            return Err(bad(format!("{blocks} blocks")));
        }
        let fs_bytes = blocks
            .checked_mul(block_size)
            .ok_or_else(|| bad("size overflows".into()))?;
        if fs_bytes > area_size.saturating_add(block_size) {
            return Err(bad(format!(
                "filesystem of {fs_bytes} bytes in an area of {area_size}"
            )));
        }
        let blocks_per_group = u64::from(le_u32(sb, 0x20));
        let clusters_per_group = if bigalloc {
            u64::from(le_u32(sb, 0x24))
        } else {
            blocks_per_group
        };
        if clusters_per_group < 8
            || clusters_per_group & 7 != 0
            || clusters_per_group > 8 * block_size
            || blocks_per_group != clusters_per_group * cluster_ratio
        {
            return Err(bad(format!(
                "{blocks_per_group} blocks / {clusters_per_group} clusters per group"
            )));
        }
        let groups = (blocks - first_data_block).div_ceil(blocks_per_group);
        let inodes_per_group = u64::from(le_u32(sb, 0x28));
        let inodes_count = u64::from(le_u32(sb, 0x0));
        if inodes_per_group == 0
            || inodes_per_group > 8 * block_size
            || groups.checked_mul(inodes_per_group) != Some(inodes_count)
        {
            return Err(bad(format!(
                "{inodes_count} inodes, {inodes_per_group} per group, {groups} groups"
            )));
        }
        let rev = le_u32(sb, 0x4C);
        let inode_size = if rev == 0 {
            128
        } else {
            u64::from(le_u16(sb, 0x58))
        };
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
            return Err(bad(format!("inode size {inode_size}")));
        }
        let desc_size = if bit64 {
            let d = usize::from(le_u16(sb, 0xFE));
            if !(64..=1024).contains(&d) || !d.is_power_of_two() {
                return Err(bad(format!("descriptor size {d}")));
            }
            d
        } else {
            32
        };
        let reserved_gdt_blocks = u64::from(le_u16(sb, 0xCE));
        if reserved_gdt_blocks > block_size / 4 {
            return Err(bad(format!("{reserved_gdt_blocks} reserved GDT blocks")));
        }
        let first_meta_bg = u64::from(le_u32(sb, 0x104));
        let desc_per_block = block_size / desc_size as u64;
        if incompat_f & incompat::META_BG != 0 && first_meta_bg > groups.div_ceil(desc_per_block) {
            return Err(bad(format!("first meta_bg {first_meta_bg}")));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[0x68..0x78]);
        let csum_seed = if incompat_f & incompat::CSUM_SEED != 0 {
            le_u32(sb, 0x270)
        } else {
            crc32c_raw(!0, &uuid)
        };
        Ok(Self {
            blocks,
            first_data_block,
            block_size,
            cluster_ratio,
            blocks_per_group,
            clusters_per_group,
            inodes_per_group,
            inode_size,
            groups,
            state: le_u16(sb, 0x3A),
            compat: compat_f,
            incompat: incompat_f,
            ro_compat: ro_compat_f,
            reserved_gdt_blocks,
            desc_size,
            first_meta_bg,
            backup_bgs: [le_u32(sb, 0x24C), le_u32(sb, 0x250)],
            uuid,
            csum_seed,
        })
    }

    fn has(&self, ro: u32) -> bool {
        self.ro_compat & ro != 0
    }
    fn meta_bg(&self) -> bool {
        self.incompat & incompat::META_BG != 0
    }
    fn desc_per_block(&self) -> u64 {
        self.block_size / self.desc_size as u64
    }
    /// Descriptor blocks of the classic (non-meta_bg) layout.
    fn gdb_count(&self) -> u64 {
        self.groups.div_ceil(self.desc_per_block())
    }
    fn group_first_block(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }
    /// Blocks of group `g`: `[first, end)`.
    fn group_range(&self, g: u64) -> (u64, u64) {
        let first = self.group_first_block(g);
        (first, (first + self.blocks_per_group).min(self.blocks))
    }

    /// `ext4_bg_has_super`: whether group `g` holds a superblock backup.
    pub fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & compat::SPARSE_SUPER2 != 0 {
            return g == u64::from(self.backup_bgs[0]) || g == u64::from(self.backup_bgs[1]);
        }
        if g <= 1 || !self.has(ro_compat::SPARSE_SUPER) {
            return true;
        }
        if g & 1 == 0 {
            return false;
        }
        is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7)
    }

    /// Block holding descriptor block `nr` (`descriptor_loc`).
    fn descriptor_block(&self, nr: u64) -> u64 {
        if !self.meta_bg() || nr < self.first_meta_bg {
            // After the block holding the superblock (block 1 with 1 KiB blocks, else 0).
            return SUPERBLOCK_OFFSET / self.block_size + nr + 1;
        }
        let bg = self.desc_per_block() * nr;
        let mut has_super = u64::from(self.has_super(bg));
        if self.block_size == 1024 && nr == 0 && self.first_data_block == 0 {
            has_super += 1;
        }
        self.group_first_block(bg) + has_super
    }

    /// Blocks at the start of group `g` that hold the superblock backup, descriptors and
    /// reserved GDT blocks (`ext4_num_base_meta_clusters`, in blocks).
    fn base_meta_blocks(&self, g: u64) -> u64 {
        let sup = u64::from(self.has_super(g));
        let dpb = self.desc_per_block();
        if !self.meta_bg() || g < self.first_meta_bg.saturating_mul(dpb) {
            if sup == 0 {
                return 0;
            }
            let gdb = if self.meta_bg() {
                self.first_meta_bg
            } else {
                self.gdb_count()
            };
            sup + gdb + self.reserved_gdt_blocks
        } else {
            let first = g / dpb * dpb;
            let meta = g == first || g == first + 1 || g == first + dpb - 1;
            sup + u64::from(meta)
        }
    }

    fn inode_table_blocks(&self) -> u64 {
        (self.inodes_per_group * self.inode_size).div_ceil(self.block_size)
    }
}

fn is_power_of(n: u64, base: u64) -> bool {
    let mut p = 1u64;
    while p < n {
        p = p.saturating_mul(base);
    }
    p == n
}

/// One group descriptor's fields.
#[derive(Debug, Clone, Copy)]
struct Desc {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    free_clusters: u64,
    flags: u16,
    bitmap_csum: u32,
}

fn parse_desc(sb: &Superblock, d: &[u8], g: u64) -> Result<Desc, FsError> {
    let long = sb.desc_size >= 64;
    let hi32 = |at: usize| {
        if long {
            u64::from(le_u32(d, at)) << 32
        } else {
            0
        }
    };
    let hi16 = |at: usize| {
        if long {
            u64::from(le_u16(d, at)) << 16
        } else {
            0
        }
    };
    let csum_lo = u32::from(le_u16(d, 0x18));
    let csum_hi = if sb.desc_size >= BG_BLOCK_BITMAP_CSUM_HI_END {
        u32::from(le_u16(d, 0x38)) << 16
    } else {
        0
    };
    // Descriptor checksum.
    let stored = le_u16(d, 0x1E);
    if sb.has(ro_compat::METADATA_CSUM) {
        let mut c = crc32c_raw(sb.csum_seed, &(g as u32).to_le_bytes());
        c = crc32c_raw(c, &d[..0x1E]);
        c = crc32c_raw(c, &[0, 0]);
        c = crc32c_raw(c, &d[0x20..sb.desc_size]);
        if (c & 0xFFFF) as u16 != stored {
            return Err(FsError::Checksum(format!(
                "ext group descriptor {g} (stored {stored:#06x}, computed {:#06x})",
                c & 0xFFFF
            )));
        }
    } else if sb.has(ro_compat::GDT_CSUM) {
        let mut c = crc16(!0, &sb.uuid);
        c = crc16(c, &(g as u32).to_le_bytes());
        c = crc16(c, &d[..0x1E]);
        if sb.incompat & incompat::BIT64 != 0 {
            c = crc16(c, &d[0x20..sb.desc_size]);
        }
        if c != stored {
            return Err(FsError::Checksum(format!(
                "ext group descriptor {g} (stored {stored:#06x}, computed {c:#06x})"
            )));
        }
    }
    Ok(Desc {
        block_bitmap: u64::from(le_u32(d, 0x0)) | hi32(0x20),
        inode_bitmap: u64::from(le_u32(d, 0x4)) | hi32(0x24),
        inode_table: u64::from(le_u32(d, 0x8)) | hi32(0x28),
        free_clusters: u64::from(le_u16(d, 0xC)) | hi16(0x2C),
        flags: le_u16(d, 0x12),
        bitmap_csum: csum_lo | csum_hi,
    })
}

/// Used bytes of the area and the filesystem's own used-byte count (allocated clusters per the
/// bitmaps, plus the blocks before the first group).
pub fn used<R: ReadAt + ?Sized>(area: &R) -> Result<(Extents, Option<u64>), FsError> {
    let size = area.size();
    if size < SUPERBLOCK_OFFSET + SB_SIZE as u64 {
        return Err(FsError::BadSuperblock("ext: area too small".into()));
    }
    let mut raw = vec![0u8; SB_SIZE];
    area.read_at(SUPERBLOCK_OFFSET, &mut raw)?;
    let sb = Superblock::parse(&raw, size)?;

    let unknown_incompat = sb.incompat & !incompat::UNDERSTOOD;
    if unknown_incompat != 0 {
        return Err(FsError::Unsupported(format!(
            "ext: incompatible features {unknown_incompat:#x} not understood"
        )));
    }
    let unknown_ro = sb.ro_compat & !ro_compat::UNDERSTOOD;
    if unknown_ro != 0 {
        return Err(FsError::Unsupported(format!(
            "ext: read-only-compatible features {unknown_ro:#x} not understood"
        )));
    }
    if sb.incompat & incompat::RECOVER != 0 {
        return Err(FsError::Inconsistent(
            "ext: the journal needs recovery (not cleanly unmounted, or mounted)".into(),
        ));
    }
    if sb.state & STATE_VALID == 0 || sb.state & STATE_ERROR != 0 {
        return Err(FsError::Inconsistent(format!(
            "ext: state {:#x} is not clean (not cleanly unmounted, mounted, or with errors)",
            sb.state
        )));
    }

    let bs = sb.block_size;
    let ratio = sb.cluster_ratio;
    let cluster_bytes = bs * ratio;
    let csum_groups = sb.has(ro_compat::METADATA_CSUM) || sb.has(ro_compat::GDT_CSUM);
    let itable_blocks = sb.inode_table_blocks();
    let dpb = sb.desc_per_block();

    let mut ext = Extents::new();
    // Boot block(s) and the primary superblock.
    ext.add(
        0,
        (sb.first_data_block * bs).max(SUPERBLOCK_OFFSET + SB_SIZE as u64),
    );
    // Tables of all groups, wherever they lie (only added to, never relied upon).
    let mut tables = Extents::new();

    let mut desc_buf = vec![0u8; bs as usize];
    let mut desc_nr = u64::MAX;
    let mut bitmap = vec![0u8; bs as usize];
    let mut used_clusters = 0u64;
    for g in 0..sb.groups {
        let nr = g / dpb;
        if nr != desc_nr {
            let blk = sb.descriptor_block(nr);
            if blk >= sb.blocks {
                return Err(FsError::Inconsistent(format!(
                    "ext: descriptor block {nr} at block {blk}, past the end"
                )));
            }
            area.read_at(blk * bs, &mut desc_buf)?;
            ext.add(blk * bs, bs);
            desc_nr = nr;
        }
        let at = ((g % dpb) as usize) * sb.desc_size;
        let d = desc_buf
            .get(at..at + sb.desc_size)
            .ok_or_else(|| FsError::Other("ext: descriptor offset".into()))?;
        let desc = parse_desc(&sb, d, g)?;

        let (gfirst, gend) = sb.group_range(g);
        let nclusters = (gend - gfirst).div_ceil(ratio);
        for (what, start, len) in [
            ("block bitmap", desc.block_bitmap, 1),
            ("inode bitmap", desc.inode_bitmap, 1),
            ("inode table", desc.inode_table, itable_blocks),
        ] {
            if start < sb.first_data_block || start.saturating_add(len) > sb.blocks {
                return Err(FsError::Inconsistent(format!(
                    "ext: group {g}: {what} at block {start} outside the filesystem"
                )));
            }
            tables.add(start * bs, len * bs);
        }
        if desc.free_clusters > nclusters {
            return Err(FsError::Inconsistent(format!(
                "ext: group {g}: {} free clusters of {nclusters}",
                desc.free_clusters
            )));
        }

        let bits_len = nclusters.div_ceil(8) as usize;
        if csum_groups && desc.flags & BG_BLOCK_UNINIT != 0 {
            // Compute the bitmap as ext4_init_block_bitmap does.
            bitmap.fill(0);
            let base = sb.base_meta_blocks(g).div_ceil(ratio).min(nclusters);
            for c in 0..base {
                set_bit(&mut bitmap, c);
            }
            for (start, len) in [
                (desc.block_bitmap, 1),
                (desc.inode_bitmap, 1),
                (desc.inode_table, itable_blocks),
            ] {
                let (lo, hi) = (start.max(gfirst), (start + len).min(gend));
                for b in (lo..hi).step_by(ratio as usize) {
                    set_bit(&mut bitmap, (b - gfirst) / ratio);
                }
                if lo < hi {
                    set_bit(&mut bitmap, (hi - 1 - gfirst) / ratio);
                }
            }
            let free = nclusters - count_set(&bitmap[..bits_len], nclusters);
            if free == desc.free_clusters {
                used_clusters += nclusters - free;
            } else {
                // Not what the kernel would compute: trust nothing in this group.
                for c in 0..nclusters {
                    set_bit(&mut bitmap, c);
                }
                used_clusters += nclusters;
            }
        } else {
            area.read_at(desc.block_bitmap * bs, &mut bitmap)?;
            if sb.has(ro_compat::METADATA_CSUM) {
                let n = (sb.clusters_per_group / 8) as usize;
                let c = crc32c_raw(sb.csum_seed, &bitmap[..n]);
                let c = if sb.desc_size >= BG_BLOCK_BITMAP_CSUM_HI_END {
                    c
                } else {
                    c & 0xFFFF
                };
                if c != desc.bitmap_csum {
                    return Err(FsError::Checksum(format!(
                        "ext block bitmap of group {g} (stored {:#x}, computed {c:#x})",
                        desc.bitmap_csum
                    )));
                }
            }
            let free = nclusters - count_set(&bitmap[..bits_len], nclusters);
            if free != desc.free_clusters {
                return Err(FsError::Inconsistent(format!(
                    "ext: group {g}: bitmap has {free} free clusters, descriptor says {}",
                    desc.free_clusters
                )));
            }
            used_clusters += nclusters - free;
        }
        add_runs(&mut ext, &bitmap, nclusters, gfirst * bs, cluster_bytes);
    }
    for &(s, l) in tables.ranges() {
        ext.add(s, l);
    }
    let fs_end = sb.blocks * bs;
    if size > fs_end {
        ext.add(fs_end, size - fs_end);
    }
    let fs_used = (used_clusters * cluster_bytes + sb.first_data_block * bs).min(fs_end.min(size));
    // A last bigalloc cluster, or the one block of margin allowed above, may pass the area.
    Ok((ext.clamp_to(size), Some(fs_used)))
}

fn set_bit(bm: &mut [u8], bit: u64) {
    if let Some(b) = bm.get_mut((bit / 8) as usize) {
        *b |= 1 << (bit % 8);
    }
}

/// Set bits among the first `n` of `bm`.
fn count_set(bm: &[u8], n: u64) -> u64 {
    let full = (n / 8) as usize;
    let mut c: u64 = bm
        .iter()
        .take(full)
        .map(|b| u64::from(b.count_ones()))
        .sum();
    if n & 7 != 0 {
        if let Some(&last) = bm.get(full) {
            c += u64::from((last & ((1u8 << (n % 8)) - 1)).count_ones());
        }
    }
    c
}

/// Adds the runs of set bits among the first `n` bits of `bm`, bit `i` being the `unit` bytes at
/// `base + i * unit`.
fn add_runs(ext: &mut Extents, bm: &[u8], n: u64, base: u64, unit: u64) {
    let mut i = 0u64;
    let mut run: Option<u64> = None;
    while i < n {
        let byte = bm.get((i / 8) as usize).copied().unwrap_or(0);
        if i & 7 == 0 && i + 8 <= n && (byte == 0 || byte == 0xFF) {
            match (byte, run) {
                (0, Some(s)) => {
                    ext.add(base + s * unit, (i - s) * unit);
                    run = None;
                }
                (0xFF, None) => run = Some(i),
                _ => {}
            }
            i += 8;
            continue;
        }
        let set = byte & (1 << (i % 8)) != 0;
        match (set, run) {
            (true, None) => run = Some(i),
            (false, Some(s)) => {
                ext.add(base + s * unit, (i - s) * unit);
                run = None;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(s) = run {
        ext.add(base + s * unit, (n - s) * unit);
    }
}

/// CRC32C (Castagnoli), reflected, without the final inversion: `crc32c_raw(!0, data)` is what
/// ext4 and jbd2 call `ext4_chksum` / `crc32c_le`; the standard CRC32C is its complement.
pub fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The kernel's `crc16` (polynomial 0x8005 reflected, no inversion), used by `gdt_csum`.
fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc16_matches_the_arc_check_value() {
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }

    #[test]
    fn sparse_super_backups() {
        let mut sb = Superblock {
            blocks: 1 << 20,
            first_data_block: 0,
            block_size: 4096,
            cluster_ratio: 1,
            blocks_per_group: 32768,
            clusters_per_group: 32768,
            inodes_per_group: 8192,
            inode_size: 256,
            groups: 32,
            state: 1,
            compat: 0,
            incompat: 0,
            ro_compat: ro_compat::SPARSE_SUPER,
            reserved_gdt_blocks: 0,
            desc_size: 32,
            first_meta_bg: 0,
            backup_bgs: [0, 0],
            uuid: [0; 16],
            csum_seed: 0,
        };
        let with: Vec<u64> = (0..32).filter(|&g| sb.has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27]);
        sb.compat = compat::SPARSE_SUPER2;
        sb.backup_bgs = [1, 31];
        let with: Vec<u64> = (0..32).filter(|&g| sb.has_super(g)).collect();
        assert_eq!(with, [0, 1, 31]);
    }

    #[test]
    fn runs_of_bits() {
        let mut e = Extents::new();
        add_runs(&mut e, &[0b1000_0111, 0xFF, 0x00, 0x01], 28, 100, 10);
        assert_eq!(e.ranges(), &[(100, 30), (170, 90), (340, 10)]);
        assert_eq!(count_set(&[0xFF, 0x0F], 12), 12);
        assert_eq!(count_set(&[0xFF, 0xFF], 12), 12);
    }

    #[test]
    fn versions() {
        assert_eq!(version(0, incompat::FILETYPE, ro_compat::SPARSE_SUPER), 2);
        assert_eq!(version(compat::HAS_JOURNAL, incompat::FILETYPE, 0), 3);
        assert_eq!(version(compat::HAS_JOURNAL, incompat::EXTENTS, 0), 4);
        assert_eq!(version(0, 0, ro_compat::METADATA_CSUM), 4);
    }
}
