//! XFS: the used blocks of the data device, from the per-AG free-space B+trees.
//!
//! Implements the on-disk format of the "XFS Algorithms & Data Structures" document (3rd
//! edition, kernel.org `Documentation/filesystems/xfs/`): the superblock (chapter "Allocation
//! Groups", section "Superblocks"), the AG free space block (AGF), the AG free list (AGFL), the
//! short-format B+tree blocks of the by-block-number free space tree ("AG Free Space B+trees",
//! magic `ABTB` v4 / `AB3B` v5) and, to decide whether the log is clean, the log record headers
//! ("Journaling Log", "Log Records").
//!
//! Free = every extent in a bnobt leaf + every block listed in the AGFL (those hold no data: they
//! are reserved to grow the btrees and are initialized when taken). Everything else of
//! `[0, dblocks × blocksize)` is used, including the internal log, the AG headers, the inode
//! chunks and every btree. Bytes of the area past the end of the filesystem are captured too
//! (nothing says they are free).
//!
//! Refused (the caller captures the area whole):
//! - v5 superblock, AGF or AGFL with a wrong CRC32C, a wrong magic, or any field out of range;
//! - an unknown incompatible or read-only-compatible feature bit, `NEEDSREPAIR`, or a superblock
//!   left `inprogress` by mkfs;
//! - an external log (`logstart == 0`): its state cannot be checked from this area;
//! - a log that is not clean. XFS has no "clean" flag: as the kernel does (`xlog_find_tail`,
//!   `xlog_check_unmount_rec`), the head of the log is found from the cycle number stamped in
//!   the first word of every 512-byte log block, and the log is clean only if the last record
//!   before the head is a lone unmount record that ends exactly at the head. A dirty log may
//!   hold allocations that the on-disk free-space trees do not show yet, so trusting them could
//!   lose data;
//! - a bnobt whose record lengths do not add up to `agf_freeblks`, records out of order or
//!   outside the AG, a tree deeper than [`MAX_LEVELS`] or with more nodes than the AG has blocks.

use crate::{be_u16, be_u32, be_u64, Extents, FsError, ReadAt};

const SB_MAGIC: u32 = 0x5846_5342; // "XFSB"
const AGF_MAGIC: u32 = 0x5841_4746; // "XAGF"
const AGFL_MAGIC: u32 = 0x5841_464C; // "XAFL"
const ABTB_MAGIC: u32 = 0x4142_5442; // "ABTB", v4 bnobt block
const AB3B_MAGIC: u32 = 0x4142_3342; // "AB3B", v5 bnobt block
const LOG_MAGIC: u32 = 0xFEED_BABE;

/// Deepest free-space btree accepted (the kernel's `XFS_BTREE_MAXLEVELS` is 9).
pub const MAX_LEVELS: u32 = 9;

/// Incompatible features that do not change where free space is recorded: FTYPE, SPINODES,
/// META_UUID, BIGTIME, NREXT64, EXCHRANGE, PARENT. NEEDSREPAIR (0x10), METADIR (0x100),
/// ZONED (0x200) and anything newer are refused.
const INCOMPAT_KNOWN: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x20 | 0x40 | 0x80;
const INCOMPAT_META_UUID: u32 = 0x4;
const INCOMPAT_NEEDSREPAIR: u32 = 0x10;
/// Read-only-compatible features known: FINOBT, RMAPBT, REFLINK, INOBTCNT. Their btrees take
/// their blocks from the AGFL/bnobt, so they are "used" like any other allocated block.
const RO_COMPAT_KNOWN: u32 = 0x1 | 0x2 | 0x4 | 0x8;

/// What this module needs of the primary superblock.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub block_size: u32,
    pub sector_size: u32,
    pub dblocks: u64,
    pub agblocks: u32,
    pub agcount: u32,
    pub agblklog: u8,
    pub logstart: u64,
    pub logblocks: u32,
    pub v5: bool,
    /// The UUID stamped in v5 metadata blocks (`sb_meta_uuid` when META_UUID is set).
    pub meta_uuid: [u8; 16],
}

/// Used bytes of the area and the filesystem's own used-byte count (data + metadata: the
/// filesystem size less the bnobt free extents and the AGFL blocks).
pub fn used<R: ReadAt + ?Sized>(area: &R) -> Result<(Extents, Option<u64>), FsError> {
    let sb = read_superblock(area)?;
    check_log_clean(area, &sb)?;
    let bs = u64::from(sb.block_size);
    let mut free = Extents::new();
    for agno in 0..sb.agcount {
        ag_free(area, &sb, agno, &mut free)?;
    }
    let fs_bytes = sb.dblocks * bs;
    let mut capture = free.complement(fs_bytes);
    let used_bytes = capture.total();
    if area.size() > fs_bytes {
        capture.add(fs_bytes, area.size() - fs_bytes);
    }
    Ok((capture, Some(used_bytes)))
}

fn read_vec<R: ReadAt + ?Sized>(area: &R, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
    let end = offset
        .checked_add(len as u64)
        .ok_or_else(|| FsError::Inconsistent("offset overflow".into()))?;
    if end > area.size() {
        return Err(FsError::Inconsistent(format!(
            "read of {len} bytes at {offset} beyond the area ({} bytes)",
            area.size()
        )));
    }
    let mut buf = vec![0u8; len];
    area.read_at(offset, &mut buf)?;
    Ok(buf)
}

/// Reads and validates the primary superblock (sector 0 of AG 0).
pub fn read_superblock<R: ReadAt + ?Sized>(area: &R) -> Result<Superblock, FsError> {
    let bad = |m: String| FsError::BadSuperblock(format!("XFS: {m}"));
    let head = read_vec(area, 0, 512)?;
    if be_u32(&head, 0) != SB_MAGIC {
        return Err(bad("no XFSB magic".into()));
    }
    let block_size = be_u32(&head, 4);
    let sector_size = u32::from(be_u16(&head, 102));
    let blocklog = head[120];
    let sectlog = head[121];
    let agblklog = head[124];
    if !(512..=65536).contains(&block_size)
        || !block_size.is_power_of_two()
        || 1u32 << blocklog.min(31) != block_size
    {
        return Err(bad(format!("block size {block_size} (log {blocklog})")));
    }
    if !(512..=32768).contains(&sector_size)
        || !sector_size.is_power_of_two()
        || 1u32 << sectlog.min(31) != sector_size
        || sector_size > block_size
    {
        return Err(bad(format!("sector size {sector_size} (log {sectlog})")));
    }
    let sector = read_vec(area, 0, sector_size as usize)?;
    let version = be_u16(&sector, 100) & 0xf;
    let v5 = match version {
        4 => false,
        5 => true,
        v => return Err(FsError::Unsupported(format!("XFS superblock version {v}"))),
    };
    if v5 && !crc_ok(&sector, 224) {
        return Err(FsError::Checksum("XFS superblock".into()));
    }
    if sector[126] != 0 {
        return Err(FsError::Inconsistent(
            "XFS superblock: mkfs in progress".into(),
        ));
    }
    let dblocks = be_u64(&sector, 8);
    let agblocks = be_u32(&sector, 84);
    let agcount = be_u32(&sector, 88);
    let logstart = be_u64(&sector, 48);
    let logblocks = be_u32(&sector, 96);
    if agblocks < 64 || agcount == 0 || dblocks == 0 {
        return Err(bad(format!(
            "agblocks {agblocks}, agcount {agcount}, dblocks {dblocks}"
        )));
    }
    // agblklog is the log2 of agblocks rounded up.
    if u32::from(agblklog) != 32 - (agblocks - 1).leading_zeros() {
        return Err(bad(format!("agblklog {agblklog} for agblocks {agblocks}")));
    }
    let full = u64::from(agcount) * u64::from(agblocks);
    if dblocks > full || dblocks <= full - u64::from(agblocks) {
        return Err(bad(format!(
            "dblocks {dblocks} does not fit {agcount} AGs of {agblocks} blocks"
        )));
    }
    let fs_bytes = dblocks
        .checked_mul(u64::from(block_size))
        .ok_or_else(|| bad("size overflow".into()))?;
    if fs_bytes > area.size() {
        return Err(bad(format!(
            "filesystem of {fs_bytes} bytes larger than the area ({} bytes)",
            area.size()
        )));
    }
    let mut meta_uuid = [0u8; 16];
    meta_uuid.copy_from_slice(&sector[32..48]);
    if v5 {
        let incompat = be_u32(&sector, 216);
        let ro_compat = be_u32(&sector, 212);
        if incompat & INCOMPAT_NEEDSREPAIR != 0 {
            return Err(FsError::Unsupported(
                "XFS needs repair (NEEDSREPAIR set)".into(),
            ));
        }
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(FsError::Unsupported(format!(
                "XFS incompatible features {:#x}",
                incompat & !INCOMPAT_KNOWN
            )));
        }
        if ro_compat & !RO_COMPAT_KNOWN != 0 {
            return Err(FsError::Unsupported(format!(
                "XFS read-only-compatible features {:#x}",
                ro_compat & !RO_COMPAT_KNOWN
            )));
        }
        if incompat & INCOMPAT_META_UUID != 0 {
            meta_uuid.copy_from_slice(&sector[248..264]);
        }
    }
    Ok(Superblock {
        block_size,
        sector_size,
        dblocks,
        agblocks,
        agcount,
        agblklog,
        logstart,
        logblocks,
        v5,
        meta_uuid,
    })
}

/// Byte offset of AG block `agbno` of AG `agno`.
fn ag_byte(sb: &Superblock, agno: u32, agbno: u32) -> u64 {
    (u64::from(agno) * u64::from(sb.agblocks) + u64::from(agbno)) * u64::from(sb.block_size)
}

/// Adds the free extents (bnobt records and AGFL blocks) of one AG to `free`.
fn ag_free<R: ReadAt + ?Sized>(
    area: &R,
    sb: &Superblock,
    agno: u32,
    free: &mut Extents,
) -> Result<(), FsError> {
    let inc = |m: String| FsError::Inconsistent(format!("XFS AG {agno}: {m}"));
    let ss = u64::from(sb.sector_size);
    let ag_start = ag_byte(sb, agno, 0);
    let agf = read_vec(area, ag_start + ss, sb.sector_size as usize)?;
    if be_u32(&agf, 0) != AGF_MAGIC || be_u32(&agf, 4) != 1 {
        return Err(inc("bad AGF magic or version".into()));
    }
    if sb.v5 {
        if !crc_ok(&agf, 216) {
            return Err(FsError::Checksum(format!("XFS AGF of AG {agno}")));
        }
        if agf[64..80] != sb.meta_uuid {
            return Err(inc("AGF UUID differs from the superblock's".into()));
        }
    }
    if be_u32(&agf, 8) != agno {
        return Err(inc(format!("AGF seqno {}", be_u32(&agf, 8))));
    }
    let expected_len =
        (sb.dblocks - u64::from(agno) * u64::from(sb.agblocks)).min(u64::from(sb.agblocks));
    let length = be_u32(&agf, 12);
    if u64::from(length) != expected_len {
        return Err(inc(format!("AGF length {length}, expected {expected_len}")));
    }
    let bno_root = be_u32(&agf, 16);
    let bno_level = be_u32(&agf, 28);
    let flfirst = be_u32(&agf, 40);
    let fllast = be_u32(&agf, 44);
    let flcount = be_u32(&agf, 48);
    let freeblks = be_u32(&agf, 52);
    if bno_level == 0 || bno_level > MAX_LEVELS {
        return Err(inc(format!("bnobt level {bno_level}")));
    }
    if bno_root == 0 || bno_root >= length {
        return Err(inc(format!("bnobt root {bno_root}")));
    }

    // The bnobt, depth first; records must come in increasing, non-overlapping order, which
    // also rules out a block reached twice.
    let mut walk = Walk {
        area,
        sb,
        agno,
        length,
        nodes: 0,
        next_free: 0,
        sum: 0,
        ag_free: Extents::new(),
    };
    walk.visit(bno_root, bno_level - 1)?;
    if walk.sum != u64::from(freeblks) {
        return Err(inc(format!(
            "bnobt records hold {} free blocks, AGF says {freeblks}",
            walk.sum
        )));
    }
    let mut ag_free = walk.ag_free;

    // The AGFL: a circular list of `flcount` entries from `flfirst` to `fllast`.
    let agfl = read_vec(area, ag_start + 3 * ss, sb.sector_size as usize)?;
    let hdr = if sb.v5 {
        if be_u32(&agfl, 0) != AGFL_MAGIC || be_u32(&agfl, 4) != agno {
            return Err(inc("bad AGFL magic or seqno".into()));
        }
        if !crc_ok(&agfl, 32) {
            return Err(FsError::Checksum(format!("XFS AGFL of AG {agno}")));
        }
        if agfl[8..24] != sb.meta_uuid {
            return Err(inc("AGFL UUID differs from the superblock's".into()));
        }
        36
    } else {
        0
    };
    let slots = ((sb.sector_size as usize - hdr) / 4) as u32;
    if flcount > 0 {
        if flfirst >= slots || fllast >= slots || flcount > slots {
            return Err(inc(format!(
                "AGFL first {flfirst} last {fllast} count {flcount} of {slots} slots"
            )));
        }
        let span = (fllast + slots - flfirst) % slots + 1;
        if span != flcount {
            return Err(inc(format!(
                "AGFL first {flfirst} last {fllast} but count {flcount}"
            )));
        }
        let bs = u64::from(sb.block_size);
        for i in 0..flcount {
            let slot = (flfirst + i) % slots;
            let bno = be_u32(&agfl, hdr + 4 * slot as usize);
            if bno == 0 || bno >= length {
                return Err(inc(format!("AGFL block {bno}")));
            }
            let start = ag_byte(sb, agno, bno) - ag_start;
            if ag_free
                .ranges()
                .iter()
                .any(|&(s, l)| start < s + l && s < start + bs)
            {
                return Err(inc(format!("AGFL block {bno} is also in the bnobt")));
            }
            ag_free.add(start, bs);
        }
    } else if flfirst >= slots.max(1) || fllast >= slots.max(1) {
        return Err(inc("AGFL indexes out of range".into()));
    }
    free.add_shifted(&ag_free, ag_start);
    Ok(())
}

struct Walk<'a, R: ReadAt + ?Sized> {
    area: &'a R,
    sb: &'a Superblock,
    agno: u32,
    length: u32,
    nodes: u32,
    /// AG block just past the last free record seen.
    next_free: u64,
    sum: u64,
    ag_free: Extents,
}

impl<R: ReadAt + ?Sized> Walk<'_, R> {
    fn inc(&self, m: String) -> FsError {
        FsError::Inconsistent(format!("XFS AG {} bnobt: {m}", self.agno))
    }

    fn visit(&mut self, agbno: u32, level: u32) -> Result<(), FsError> {
        self.nodes += 1;
        if self.nodes > self.length {
            return Err(self.inc("more nodes than the AG has blocks".into()));
        }
        if agbno == 0 || agbno >= self.length {
            return Err(self.inc(format!("block pointer {agbno}")));
        }
        let bs = self.sb.block_size as usize;
        let offset = ag_byte(self.sb, self.agno, agbno);
        let block = read_vec(self.area, offset, bs)?;
        let (magic, hdr) = if self.sb.v5 {
            (AB3B_MAGIC, 56)
        } else {
            (ABTB_MAGIC, 16)
        };
        if be_u32(&block, 0) != magic {
            return Err(self.inc(format!("block {agbno}: bad magic {:#x}", be_u32(&block, 0))));
        }
        if self.sb.v5 {
            if !crc_ok(&block, 52) {
                return Err(FsError::Checksum(format!(
                    "XFS AG {} bnobt block {agbno}",
                    self.agno
                )));
            }
            if be_u64(&block, 16) != offset / 512
                || block[32..48] != self.sb.meta_uuid
                || be_u32(&block, 48) != self.agno
            {
                return Err(self.inc(format!("block {agbno}: wrong daddr, UUID or owner")));
            }
        }
        if u32::from(be_u16(&block, 4)) != level {
            return Err(self.inc(format!(
                "block {agbno}: level {} where {level} expected",
                be_u16(&block, 4)
            )));
        }
        let numrecs = usize::from(be_u16(&block, 6));
        if level == 0 {
            let max = (bs - hdr) / 8;
            if numrecs > max {
                return Err(self.inc(format!("leaf {agbno}: {numrecs} records")));
            }
            for i in 0..numrecs {
                let start = u64::from(be_u32(&block, hdr + 8 * i));
                let count = u64::from(be_u32(&block, hdr + 8 * i + 4));
                if count == 0 || start < self.next_free || start + count > u64::from(self.length) {
                    return Err(self.inc(format!(
                        "leaf {agbno}: record [{start}, +{count}) out of order or range"
                    )));
                }
                self.next_free = start + count;
                self.sum += count;
                let bsz = u64::from(self.sb.block_size);
                self.ag_free.add(start * bsz, count * bsz);
            }
        } else {
            let max = (bs - hdr) / 12;
            if numrecs == 0 || numrecs > max {
                return Err(self.inc(format!("node {agbno}: {numrecs} records")));
            }
            let ptrs = hdr + max * 8;
            for i in 0..numrecs {
                let child = be_u32(&block, ptrs + 4 * i);
                self.visit(child, level - 1)?;
            }
        }
        Ok(())
    }
}

/// Checks that the internal log ends with a clean unmount record (see the module docs).
fn check_log_clean<R: ReadAt + ?Sized>(area: &R, sb: &Superblock) -> Result<(), FsError> {
    if sb.logstart == 0 {
        return Err(FsError::Unsupported(
            "XFS with an external log: its state cannot be checked from this area".into(),
        ));
    }
    let inc = |m: String| FsError::Inconsistent(format!("XFS log: {m}"));
    let agno = sb.logstart >> sb.agblklog;
    let agbno = sb.logstart & ((1u64 << sb.agblklog) - 1);
    if agno >= u64::from(sb.agcount) || agbno >= u64::from(sb.agblocks) {
        return Err(inc(format!("logstart {} outside the AGs", sb.logstart)));
    }
    let log_start = ag_byte(sb, agno as u32, agbno as u32);
    let log_len = u64::from(sb.logblocks) * u64::from(sb.block_size);
    if sb.logblocks == 0
        || log_start + log_len > u64::from(sb.agblocks) * u64::from(sb.block_size) * (agno + 1)
    {
        return Err(inc(format!(
            "log of {} blocks does not fit its AG",
            sb.logblocks
        )));
    }
    let nbb = log_len / 512;
    let cycle_at = |bb: u64| -> Result<u32, FsError> {
        let mut w = [0u8; 8];
        area.read_at(log_start + bb * 512, &mut w)?;
        Ok(bb_cycle(&w))
    };
    let first = cycle_at(0)?;
    let last = cycle_at(nbb - 1)?;
    // The head: the first block whose cycle differs from block 0's (blocks before it were
    // written in the current pass). When the whole log has one cycle, the head is at the end.
    let head = if first == last {
        nbb
    } else {
        if first == 0 || (last != 0 && last.wrapping_add(1) != first) {
            return Err(inc(format!(
                "cycle {first} at the start, {last} at the end"
            )));
        }
        let (mut lo, mut hi) = (0u64, nbb - 1); // cycle(lo) == first, cycle(hi) == last
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if cycle_at(mid)? == first {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    };
    // Like the kernel, look at a window around the head: out-of-order writes of a crashed
    // log leave blocks of the older cycle before the head, or of the current one after it.
    const WINDOW: u64 = 4096; // 2 MiB: eight of the largest in-core log buffers.
    let lo = head.saturating_sub(WINDOW);
    let hi = (head + WINDOW).min(nbb);
    let window = read_vec(area, log_start + lo * 512, ((hi - lo) * 512) as usize)?;
    for bb in lo..hi {
        let at = ((bb - lo) * 512) as usize;
        let c = bb_cycle(&window[at..at + 8]);
        let expected = if bb < head { first } else { last };
        if c != expected {
            return Err(FsError::Unsupported(format!(
                "XFS log is dirty or torn near its head (block {bb} has cycle {c}); mount it once to replay"
            )));
        }
    }
    // Search backwards from the head for the last record header (its first word is the magic,
    // which a data block never has there: it carries the cycle number instead).
    let mut rhead = None;
    let mut bb = head;
    let search_limit = head.saturating_sub(WINDOW);
    while bb > search_limit {
        bb -= 1;
        let at = ((bb - lo) * 512) as usize;
        if be_u32(&window, at) == LOG_MAGIC {
            rhead = Some(bb);
            break;
        }
    }
    let Some(rbb) = rhead else {
        return Err(FsError::Unsupported(
            "XFS log: no record header before the head".into(),
        ));
    };
    let at = ((rbb - lo) * 512) as usize;
    let h = &window[at..at + 512];
    let version = be_u32(h, 8);
    let len = u64::from(be_u32(h, 12));
    let num_logops = be_u32(h, 40);
    let h_size = u64::from(be_u32(h, 320));
    if be_u32(h, 4) != first || !(1..=2).contains(&version) {
        return Err(inc(format!(
            "record header at block {rbb}: cycle or version"
        )));
    }
    let hblks = if version == 2 && h_size > 32768 {
        h_size.div_ceil(32768)
    } else {
        1
    };
    let after = rbb + hblks + len.div_ceil(512);
    let dirty = || {
        FsError::Unsupported(
            "XFS log is not clean (no unmount record at its head): mount and unmount the filesystem to replay it"
                .into(),
        )
    };
    if after % nbb != head % nbb || num_logops != 1 {
        return Err(dirty());
    }
    // The op header at the start of the record's data: oh_flags at byte 9.
    let op_at = log_start + ((rbb + hblks) % nbb) * 512;
    let op = read_vec(area, op_at, 16)?;
    if op[9] & 0x20 == 0 {
        return Err(dirty());
    }
    Ok(())
}

/// The cycle number of a 512-byte log block: the second word of a record header (whose first
/// word is the magic), else the first word, which log writes stamp on every block
/// (the kernel's `xlog_get_cycle`).
fn bb_cycle(w: &[u8]) -> u32 {
    if be_u32(w, 0) == LOG_MAGIC {
        be_u32(w, 4)
    } else {
        be_u32(w, 0)
    }
}

/// Whether the CRC32C of `buf`, with its 4-byte CRC field at `crc_at` taken as zero, matches
/// that field (stored little-endian, as XFS does).
fn crc_ok(buf: &[u8], crc_at: usize) -> bool {
    let Some(stored) = buf.get(crc_at..crc_at + 4) else {
        return false;
    };
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let mut c = crc32c_update(!0, &buf[..crc_at]);
    c = crc32c_update(c, &[0; 4]);
    c = crc32c_update(c, &buf[crc_at + 4..]);
    !c == stored
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by XFS v5 and btrfs.
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

/// One step of CRC-32C on the raw (not inverted) register.
pub fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[[u32; 256]; 8]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [[0u32; 256]; 8];
        for i in 0..256u32 {
            let mut c = i;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            t[0][i as usize] = c;
        }
        for i in 0..256 {
            for k in 1..8 {
                t[k][i] = (t[k - 1][i] >> 8) ^ t[0][(t[k - 1][i] & 0xff) as usize];
            }
        }
        t
    });
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][c[4] as usize]
            ^ t[2][c[5] as usize]
            ^ t[1][c[6] as usize]
            ^ t[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xff) as usize];
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let bytewise = long.iter().fold(!0u32, |c, &b| crc32c_update(c, &[b]));
        assert_eq!(!bytewise, crc32c(&long));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(used(&vec![0u8; 4096]).is_err());
        assert!(used(&vec![0u8; 10]).is_err());
        let mut sb = vec![0u8; 4096];
        sb[..4].copy_from_slice(b"XFSB");
        assert!(matches!(used(&sb), Err(FsError::BadSuperblock(_))));
    }
}
