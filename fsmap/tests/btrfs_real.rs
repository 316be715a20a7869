//! The btrfs map against filesystems made by mkfs.btrfs and filled through the kernel, with
//! btrfs-progs as the oracle: the captured ranges must be exactly the extents that
//! `btrfs inspect-internal dump-tree -t extent` lists, placed on the device through the chunk
//! stripes that `dump-tree -t chunk` lists, plus the first MiB and the superblock mirror; their
//! sum must be the superblock's `bytes_used` (`dump-super`); and a copy holding only the
//! captured bytes must pass `btrfs check --readonly` and give back every file with the same
//! SHA-256. Needs root (loop mounts) and btrfs-progs.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{captured_copy, crc32c, loop_mount_hashes, sh, xorshift, FileArea};
use p2v_fsmap::{btrfs, Extents, FsError};
use tempfile::TempDir;

const SIZE: u64 = 256 << 20;

/// A 256 MiB btrfs with files of several sizes, some deleted.
fn build(dir: &Path, mkfs_opts: &str) -> PathBuf {
    let img = dir.join("btrfs.img");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh(&format!(
        "truncate -s {SIZE} {img}; mkfs.btrfs -q -f {mkfs_opts} {img}
         mount -o loop {img} {mnt}
         for i in $(seq 1 40); do head -c $((i * 61000)) /dev/urandom > {mnt}/f$i; done
         mkdir -p {mnt}/d/e; cp -r /usr/share/doc/btrfs-progs {mnt}/d/e/
         head -c 30000000 /dev/urandom > {mnt}/big
         for i in $(seq 1 40 | awk '$1 % 3 == 0'); do rm {mnt}/f$i; done
         umount {mnt}",
        img = img.display(),
        mnt = mnt.display()
    ));
    img
}

/// The device extents of the device tree, as btrfs-progs prints them.
fn dev_extents(img: &Path) -> Extents {
    let out = sh(&format!(
        "btrfs inspect-internal dump-tree -t dev {}",
        img.display()
    ));
    let mut e = Extents::new();
    let mut offset = None;
    for line in out.lines() {
        if let Some(rest) = line.split("DEV_EXTENT ").nth(1) {
            offset = Some(rest.split(')').next().unwrap().parse::<u64>().unwrap());
        }
        if let (Some(o), Some(len)) = (offset, line.split(" length ").nth(1)) {
            e.add(o, len.trim().parse().unwrap());
            offset = None;
        }
    }
    e
}

/// A number after `name ` in `line`.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split(&format!("{name} "))
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// What btrfs-progs says is in use: (device ranges of every extent on every stripe, the sum of
/// the extents' logical lengths, the superblock's `bytes_used`).
fn progs_extents(img: &Path) -> (Extents, u64, u64) {
    let img = img.display();
    let sup = sh(&format!("btrfs inspect-internal dump-super {img}"));
    let value = |name: &str| {
        sup.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in dump-super"))
    };
    let (nodesize, bytes_used) = (value("nodesize"), value("bytes_used"));
    // (logical, length, stripe offsets) of every chunk.
    let mut chunks: Vec<(u64, u64, Vec<u64>)> = Vec::new();
    for line in sh(&format!("btrfs inspect-internal dump-tree -t chunk {img}")).lines() {
        if let Some(rest) = line.split("CHUNK_ITEM ").nth(1) {
            let logical = rest.split(')').next().unwrap().parse().unwrap();
            chunks.push((logical, 0, Vec::new()));
        } else if let Some(c) = chunks.last_mut() {
            if line.trim_start().starts_with("length ") && c.1 == 0 {
                c.1 = field(line, "length").unwrap();
            } else if line.trim_start().starts_with("stripe ") {
                c.2.push(field(line, "offset").unwrap());
            }
        }
    }
    let mut placed = Vec::new();
    let mut logical_total = 0;
    for line in sh(&format!("btrfs inspect-internal dump-tree -t extent {img}")).lines() {
        let Some(key) = line.split("key (").nth(1) else {
            continue;
        };
        let parts: Vec<&str> = key.split(')').next().unwrap().split(' ').collect();
        let len = match parts[1] {
            "EXTENT_ITEM" => parts[2].parse::<u64>().unwrap(),
            "METADATA_ITEM" => nodesize,
            _ => continue,
        };
        let start: u64 = parts[0].parse().unwrap();
        let (logical, _, stripes) = chunks
            .iter()
            .find(|c| start >= c.0 && start + len <= c.0 + c.1)
            .unwrap_or_else(|| panic!("extent {start} in no chunk"));
        for s in stripes {
            placed.push((s + (start - logical), len));
        }
        logical_total += len;
    }
    placed.sort_unstable();
    let mut e = Extents::new();
    for (s, l) in placed {
        e.add(s, l);
    }
    (e, logical_total, bytes_used)
}

fn check(mkfs_opts: &str) {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), mkfs_opts);
    let (capture, in_use) = btrfs::used(&FileArea::open(&img)).unwrap();
    let (extents, logical_total, bytes_used) = progs_extents(&img);
    assert_eq!(
        logical_total, bytes_used,
        "btrfs-progs disagrees with itself"
    );
    assert_eq!(in_use, Some(bytes_used));
    let mut expected = extents.clone();
    expected.add(0, 1 << 20);
    expected.add(64 << 20, 4096);
    assert_eq!(capture, expected, "map differs from the extent tree");
    // Deleted files left free space inside the allocated data chunks, which is not captured.
    let dev = dev_extents(&img);
    assert!(
        capture.total() + (8 << 20) < dev.total(),
        "captured {} of {} allocated",
        capture.total(),
        dev.total()
    );
    assert!(
        capture.total() < SIZE - (16 << 20),
        "little left free: {capture:?}"
    );

    let before = loop_mount_hashes(&img, &dir.path().join("m1"), "loop,ro");
    let copy = dir.path().join("copy.img");
    captured_copy(&img, &copy, &capture);
    sh(&format!("btrfs check --readonly {}", copy.display()));
    // The original is unmounted: the copy has the same fsid.
    let after = loop_mount_hashes(&copy, &dir.path().join("m2"), "loop,ro");
    assert!(before.lines().count() > 30, "{before}");
    assert_eq!(before, after, "files differ after zeroing the free space");
}

#[test]
fn default_profiles_match_extent_tree_and_survive() {
    check("");
}

#[test]
fn single_profiles_16k_nodes_match_extent_tree_and_survive() {
    check("-m single -d single -n 16384");
}

#[test]
fn multi_device_and_damage_fall_back() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    sh(&format!(
        "truncate -s {SIZE} {a} {b}; mkfs.btrfs -q -f -d raid1 -m raid1 {a} {b}",
        a = a.display(),
        b = b.display()
    ));
    match btrfs::used(&FileArea::open(&a)) {
        Err(FsError::Unsupported(m)) => assert!(m.contains("multi-device btrfs"), "{m}"),
        other => panic!("multi-device accepted: {other:?}"),
    }

    let img = build(dir.path(), "");
    let pristine = std::fs::read(&img).unwrap();
    // A flipped superblock byte.
    let file = OpenOptions::new().write(true).open(&img).unwrap();
    file.write_all_at(&[pristine[0x10000 + 0x200] ^ 1], 0x10000 + 0x200)
        .unwrap();
    assert!(matches!(
        btrfs::used(&FileArea::open(&img)),
        Err(FsError::Checksum(_))
    ));
    let an = p2v_fsmap::analyze(&FileArea::open(&img));
    assert_eq!(an.capture, Extents::whole(SIZE));
    assert!(an.fallback.is_some());
    // A flipped byte in the chunk root block.
    std::fs::write(&img, &pristine).unwrap();
    let (sb, sys) = btrfs::parse_superblock(&pristine[0x10000..0x11000], SIZE).unwrap();
    let c = sys
        .iter()
        .find(|c| sb.chunk_root >= c.logical && sb.chunk_root < c.logical + c.length)
        .unwrap();
    let phys = c.stripes[0].1 + (sb.chunk_root - c.logical);
    let file = OpenOptions::new().write(true).open(&img).unwrap();
    file.write_all_at(&[pristine[phys as usize + 300] ^ 1], phys + 300)
        .unwrap();
    assert!(matches!(
        btrfs::used(&FileArea::open(&img)),
        Err(FsError::Checksum(_))
    ));
}

/// The extent tree's root block, as `dump-tree -t root` prints it: (logical address, level).
fn extent_root(img: &Path) -> (u64, u8) {
    let out = sh(&format!(
        "btrfs inspect-internal dump-tree -t root {}",
        img.display()
    ));
    let mut lines = out
        .lines()
        .skip_while(|l| !l.contains("(EXTENT_TREE ROOT_ITEM 0)"))
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("item "));
    let item: Vec<&str> = lines.by_ref().collect();
    let bytenr = item.iter().find_map(|l| field(l, "bytenr"));
    let level = item
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("level "))
        .and_then(|l| l.split(' ').next()?.parse().ok());
    (
        bytenr.expect("the extent tree root's bytenr"),
        level.expect("the extent tree root's level"),
    )
}

/// Superblock fields that disagree with the extent tree make the map an error (and the area
/// is then captured whole).
#[test]
fn bytes_used_that_disagree_with_the_extent_tree_fall_back() {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), "");
    let mut data = std::fs::read(&img).unwrap();
    let used = u64::from_le_bytes(data[0x10078..0x10080].try_into().unwrap());
    data[0x10078..0x10080].copy_from_slice(&(used - 4096).to_le_bytes());
    let crc = crc32c(&data[0x10020..0x11000]);
    data[0x10000..0x10004].copy_from_slice(&crc.to_le_bytes());
    match btrfs::used(&data) {
        Err(FsError::Inconsistent(m)) => assert!(m.contains("in use"), "{m}"),
        other => panic!("a wrong bytes_used was trusted: {other:?}"),
    }
}

/// Random byte changes to the superblock (its CRC fixed up, so they reach the parser) and to
/// the root blocks of the chunk, root and extent trees (their CRCs fixed up one time in three,
/// so they reach the item parsers): never a panic.
#[test]
fn mutations_never_panic() {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), "");
    let base = std::fs::read(&img).unwrap();
    let (sb, sys) = btrfs::parse_superblock(&base[0x10000..0x11000], SIZE).unwrap();
    let chunks = btrfs::read_chunk_tree(&base, &sb, &sys).unwrap();
    let phys = |logical: u64| {
        let c = chunks
            .iter()
            .find(|c| logical >= c.logical && logical < c.logical + c.length)
            .unwrap();
        (c.stripes[0].1 + (logical - c.logical)) as usize
    };
    let (extent_root, _) = extent_root(&img);
    let blocks = [phys(sb.chunk_root), phys(sb.root), phys(extent_root)];
    let ns = sb.nodesize as usize;
    let mut data = base.clone();
    let mut rnd = xorshift(0x0123_4567_89AB_CDEF);
    for i in 0..6000 {
        let block = blocks[i % 3];
        let (start, len) = if i % 2 == 0 {
            (0x10020usize, 0x1000 - 0x20usize)
        } else {
            (block, ns)
        };
        for _ in 0..1 + rnd() % 3 {
            let at = start + (rnd() % len as u64) as usize;
            data[at] = rnd() as u8;
        }
        let crc = crc32c(&data[0x10020..0x11000]);
        data[0x10000..0x10004].copy_from_slice(&crc.to_le_bytes());
        if i % 3 == 0 {
            let crc = crc32c(&data[block + 0x20..block + ns]);
            data[block..block + 4].copy_from_slice(&crc.to_le_bytes());
        }
        let _ = btrfs::used(&data);
        data[start..start + len].copy_from_slice(&base[start..start + len]);
        data[0x10000..0x10004].copy_from_slice(&base[0x10000..0x10004]);
        data[block..block + 4].copy_from_slice(&base[block..block + 4]);
    }
}
