//! The XFS map against images made by mkfs.xfs and filled through the kernel, with xfsprogs as
//! the oracle: the free extents must be exactly those `xfs_db freesp -d` lists, and an image
//! holding only the captured bytes (zeros elsewhere) must pass `xfs_repair -n` and give back
//! every file with the same SHA-256. Needs root (loop mounts) and xfsprogs.

mod common;

use std::io;
use std::path::{Path, PathBuf};

use common::{captured_copy, crc32c, loop_mount_hashes, patch, sh, xorshift, FileArea};
use p2v_fsmap::{xfs, Extents, FsError, ReadAt};
use tempfile::TempDir;

const SIZE: u64 = 320 << 20; // the smallest mkfs.xfs accepts is 300 MB

/// A 320 MiB sparse XFS image with files of several sizes, some deleted (fragmented free space).
fn build(dir: &Path, mkfs_opts: &str) -> PathBuf {
    build_with(dir, mkfs_opts, 0)
}

/// [`build`] plus `holes` 1 KiB holes punched in a 2 MB file, 3 KiB apart (a fragmented free
/// space).
fn build_with(dir: &Path, mkfs_opts: &str, holes: u32) -> PathBuf {
    let img = dir.join("xfs.img");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh(&format!(
        "truncate -s {SIZE} {img}; mkfs.xfs -q -f {mkfs_opts} {img}
         mount -o loop {img} {mnt}
         for i in $(seq 1 40); do head -c $((i * 37000)) /dev/urandom > {mnt}/f$i; done
         mkdir -p {mnt}/d/e; cp -r /usr/share/doc/xfsprogs {mnt}/d/e/ 2>/dev/null || true
         head -c 5000000 /dev/urandom > {mnt}/big
         head -c 2000000 /dev/urandom > {mnt}/holes; sync {mnt}/holes
         args=(); for i in $(seq 1 {holes}); do args+=(-c \"fpunch $((i * 3072)) 1024\"); done
         xfs_io \"${{args[@]}}\" -c fsync {mnt}/holes
         for i in $(seq 1 40 | awk '$1 % 3 == 0'); do rm {mnt}/f$i; done
         umount {mnt}",
        img = img.display(),
        mnt = mnt.display()
    ));
    img
}

/// `xfs_db freesp -d`: every free extent (bnobt records and AGFL blocks) as bytes.
fn oracle_free(img: &Path) -> (Extents, u64, u64) {
    let sb = sh(&format!(
        "xfs_db -r -c 'sb 0' -c 'p blocksize agblocks dblocks' {}",
        img.display()
    ));
    let field = |name: &str| -> u64 {
        sb.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (bs, agblocks, dblocks) = (field("blocksize"), field("agblocks"), field("dblocks"));
    let out = sh(&format!("xfs_db -r -c 'freesp -d' {}", img.display()));
    let mut free = Extents::new();
    for line in out.lines() {
        let v: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if let [agno, agbno, len] = v[..] {
            if line.trim_start().starts_with(char::is_numeric)
                && line.split_whitespace().count() == 3
            {
                free.add((agno * agblocks + agbno) * bs, len * bs);
            }
        }
    }
    (free, bs, dblocks)
}

fn check_against_oracle(img: &Path, dir: &Path) {
    let area = FileArea::open(img);
    let (capture, used) = xfs::used(&area).unwrap();
    let (free, bs, dblocks) = oracle_free(img);
    assert!(free.total() > 0);
    assert_eq!(
        capture,
        free.complement(dblocks * bs),
        "map is not the complement of freesp -d"
    );
    assert_eq!(used, Some(dblocks * bs - free.total()));

    let copy = dir.join("copy.img");
    captured_copy(img, &copy, &capture);
    sh(&format!("xfs_repair -n {}", copy.display()));
    let before = loop_mount_hashes(img, &dir.join("m1"), "loop,ro,norecovery");
    let after = loop_mount_hashes(&copy, &dir.join("m2"), "loop,ro,norecovery");
    assert!(before.lines().count() > 30, "{before}");
    assert_eq!(before, after, "files differ after zeroing the free space");
}

#[test]
fn v5_matches_xfs_db_and_survives() {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), "");
    check_against_oracle(&img, dir.path());
}

#[test]
fn v5_rmapbt_4k_sectors() {
    let dir = TempDir::new().unwrap();
    let img = build(
        dir.path(),
        "-m rmapbt=1 -s size=4096 -d agcount=3 -b size=4096",
    );
    check_against_oracle(&img, dir.path());
}

/// 1 KiB blocks and a fragmented free space: the bnobt has interior nodes.
#[test]
fn v5_two_level_bnobt() {
    let dir = TempDir::new().unwrap();
    let img = build_with(dir.path(), "-b size=1024 -d agcount=2", 600);
    let levels = sh(&format!(
        "xfs_db -r -c 'agf 0' -c 'p bnolevel' -c 'agf 1' -c 'p bnolevel' {}",
        img.display()
    ));
    assert!(levels.contains("bnolevel = 2"), "{levels}");
    check_against_oracle(&img, dir.path());
}

/// v4 (no CRCs): this kernel no longer mounts it, so the files go in through a mkfs.xfs
/// protofile and the oracles are xfs_db and xfs_repair.
#[test]
fn v4_matches_xfs_db_and_repair() {
    let dir = TempDir::new().unwrap();
    let img = dir.path().join("xfs.img");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut proto = String::from("/dev/null\n0 0\nd--755 0 0\n");
    for i in 1..30u64 {
        let f = src.join(format!("f{i}"));
        std::fs::write(
            &f,
            (0..i * 23_456).map(|b| (b * i) as u8).collect::<Vec<u8>>(),
        )
        .unwrap();
        proto += &format!("f{i} ---644 0 0 {}\n", f.display());
    }
    proto += "$\n";
    std::fs::write(dir.path().join("proto"), proto).unwrap();
    sh(&format!(
        "truncate -s {SIZE} {img}; mkfs.xfs -q -f -m crc=0 -b size=1024 -p {proto} {img} 2>/dev/null",
        img = img.display(),
        proto = dir.path().join("proto").display()
    ));
    let area = FileArea::open(&img);
    let (capture, used) = xfs::used(&area).unwrap();
    let (free, bs, dblocks) = oracle_free(&img);
    assert_eq!(capture, free.complement(dblocks * bs));
    assert!(used.unwrap() > 29 * 15 * 23_456, "{used:?}");
    let copy = dir.path().join("copy.img");
    captured_copy(&img, &copy, &capture);
    sh(&format!("xfs_repair -n {}", copy.display()));
}

/// Recomputes the CRC32C of a v5 metadata block (stored little-endian at `crc_at`).
fn fix_crc(buf: &mut [u8], crc_at: usize) {
    buf[crc_at..crc_at + 4].fill(0);
    let c = crc32c(buf);
    buf[crc_at..crc_at + 4].copy_from_slice(&c.to_le_bytes());
}

/// Writes damage into an image.
type Damage = Box<dyn Fn(&Path)>;
/// Whether an error is the one expected.
type Expect = fn(&FsError) -> bool;

#[test]
fn corruption_is_refused() {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), "");
    let agblocks: u64 = 20480; // mkfs.xfs's default for 320 MiB: 4 AGs
    let ag1 = agblocks * 4096;
    let cases: Vec<(&str, Damage, Expect)> = vec![
        (
            "superblock byte flipped",
            Box::new(|p: &Path| patch(p, 0, 512, |b| b[110] ^= 1)),
            |e| matches!(e, FsError::Checksum(_)),
        ),
        (
            "AGF of AG 1 byte flipped",
            Box::new(move |p: &Path| patch(p, ag1 + 512, 512, |b| b[60] ^= 1)),
            |e| matches!(e, FsError::Checksum(_)),
        ),
        (
            "unknown incompat feature",
            Box::new(|p: &Path| {
                patch(p, 0, 512, |b| {
                    b[216] |= 0x80;
                    fix_crc(b, 224)
                })
            }),
            |e| matches!(e, FsError::Unsupported(_)),
        ),
        (
            "AGF freeblks off by one",
            Box::new(move |p: &Path| {
                patch(p, ag1 + 512, 512, |b| {
                    b[55] ^= 1;
                    fix_crc(b, 216)
                })
            }),
            |e| matches!(e, FsError::Inconsistent(_)),
        ),
        (
            "bnobt root block flipped",
            Box::new(|p: &Path| patch(p, 4096, 4096, |b| b[100] ^= 1)),
            |e| matches!(e, FsError::Checksum(_)),
        ),
        (
            "AGFL of AG 0 flipped",
            Box::new(|p: &Path| patch(p, 3 * 512, 512, |b| b[40] ^= 1)),
            |e| matches!(e, FsError::Checksum(_)),
        ),
    ];
    let pristine = dir.path().join("pristine.img");
    sh(&format!(
        "cp --sparse=always {} {}",
        img.display(),
        pristine.display()
    ));
    xfs::used(&FileArea::open(&img)).expect("the pristine image maps");
    for (name, damage, expected) in cases {
        sh(&format!(
            "cp --sparse=always {} {}",
            pristine.display(),
            img.display()
        ));
        damage(&img);
        let area = FileArea::open(&img);
        match xfs::used(&area) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => assert!(expected(&e), "{name}: wrong error {e:?}"),
        }
        let a = p2v_fsmap::analyze(&area);
        assert_eq!(a.capture, Extents::whole(SIZE), "{name}");
        assert!(a.fallback.is_some());
    }
}

#[test]
fn dirty_log_is_refused() {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), "");
    xfs::used(&FileArea::open(&img)).expect("clean after umount");
    let mnt = dir.path().join("mnt");
    // A shutdown without flushing leaves the last transactions only in the log.
    sh(&format!(
        "mount -o loop {img} {mnt}
         head -c 3000000 /dev/urandom > {mnt}/late; sync {mnt}/late; rm {mnt}/f1; touch {mnt}/x
         xfs_io -x -c 'shutdown' {mnt}
         umount {mnt}",
        img = img.display(),
        mnt = mnt.display()
    ));
    let state = sh(&format!(
        "xfs_logprint -t {} 2>&1 | grep 'state:' || true",
        img.display()
    ));
    assert!(state.contains("DIRTY"), "xfs_logprint: {state}");
    match xfs::used(&FileArea::open(&img)) {
        Err(FsError::Unsupported(m)) => assert!(m.contains("log"), "{m}"),
        other => panic!("a dirty log was accepted: {other:?}"),
    }
}

/// Thousands of deterministic random byte flips in the metadata the parser reads (AG headers,
/// btree roots, the log around its head): never a panic.
#[test]
fn mutations_never_panic() {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), "-d agcount=2");
    let base = FileArea::open(&img);
    let sb = xfs::read_superblock(&base).unwrap();
    let bs = u64::from(sb.block_size);
    let ag = u64::from(sb.agblocks) * bs;
    let mut regions: Vec<(u64, u64)> = vec![(0, 4 * 512), (ag, 4 * 512), (bs, bs), (ag + bs, bs)];
    let log = (sb.logstart >> sb.agblklog) * ag + (sb.logstart & ((1 << sb.agblklog) - 1)) * bs;
    regions.push((log, 64 * 512));
    let mut rnd = xorshift(0x2545_F491_4F6C_DD1D);
    let mut accepted = 0;
    for _ in 0..3000 {
        let (start, len) = regions[(rnd() % regions.len() as u64) as usize];
        let flips = (0..1 + rnd() % 4)
            .map(|_| (start + rnd() % len, 1u8 << (rnd() % 8)))
            .collect();
        if xfs::used(&Mutated { base: &base, flips }).is_ok() {
            accepted += 1;
        }
    }
    // Most flips hit checksummed bytes; the few accepted ones are in unchecked padding.
    assert!(accepted < 1500, "{accepted} of 3000 mutations accepted");
}

/// A file with a few bits flipped.
struct Mutated<'a> {
    base: &'a FileArea,
    flips: Vec<(u64, u8)>,
}

impl ReadAt for Mutated<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.base.read_at(offset, buf)?;
        for &(at, bit) in &self.flips {
            if at >= offset && at < offset + buf.len() as u64 {
                buf[(at - offset) as usize] ^= bit;
            }
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.base.size()
    }
}
