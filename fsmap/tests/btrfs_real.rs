//! The btrfs map against filesystems made by mkfs.btrfs and filled through the kernel, with
//! btrfs-progs as the oracle: the allocated ranges must be exactly the device extents
//! `btrfs inspect-internal dump-tree -t dev` lists, and a copy holding only the captured bytes
//! must pass `btrfs check --readonly` and give back every file with the same SHA-256. Needs
//! root (loop mounts) and btrfs-progs.

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

fn check(mkfs_opts: &str) {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), mkfs_opts);
    let (capture, allocated) = btrfs::used(&FileArea::open(&img)).unwrap();
    let dev = dev_extents(&img);
    assert!(dev.total() > 30 << 20, "{dev:?}");
    assert_eq!(allocated, Some(dev.total()));
    let mut expected = dev.clone();
    expected.add(0, 1 << 20);
    expected.add(64 << 20, 4096);
    assert_eq!(capture, expected, "map differs from the device extents");
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
fn default_profiles_match_dev_tree_and_survive() {
    check("");
}

#[test]
fn single_profiles_16k_nodes_match_dev_tree_and_survive() {
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

/// Random byte changes to the superblock (its CRC fixed up, so they reach the parser) and to
/// the chunk root block: never a panic.
#[test]
fn mutations_never_panic() {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), "");
    let base = std::fs::read(&img).unwrap();
    let (sb, sys) = btrfs::parse_superblock(&base[0x10000..0x11000], SIZE).unwrap();
    let c = &sys[0];
    let root = (c.stripes[0].1 + (sb.chunk_root - c.logical)) as usize;
    let mut data = base.clone();
    let mut rnd = xorshift(0x0123_4567_89AB_CDEF);
    for i in 0..4000 {
        let (start, len) = if i % 2 == 0 {
            (0x10020usize, 0x1000 - 0x20usize)
        } else {
            (root, sb.nodesize as usize)
        };
        for _ in 0..1 + rnd() % 3 {
            let at = start + (rnd() % len as u64) as usize;
            data[at] = rnd() as u8;
        }
        let crc = crc32c(&data[0x10020..0x11000]);
        data[0x10000..0x10004].copy_from_slice(&crc.to_le_bytes());
        if i % 3 == 0 {
            // also fix the tree block's checksum, to reach the item parser
            let crc = crc32c(&data[root + 0x20..root + sb.nodesize as usize]);
            data[root..root + 4].copy_from_slice(&crc.to_le_bytes());
        }
        let _ = btrfs::used(&data);
        data[start..start + len].copy_from_slice(&base[start..start + len]);
        data[0x10000..0x10004].copy_from_slice(&base[0x10000..0x10004]);
        data[root..root + 4].copy_from_slice(&base[root..root + 4]);
    }
}
