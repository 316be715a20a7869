//! ext2/3/4 used maps on images built by mke2fs (`-d` populates them without mounting),
//! checked against independent readers of the same images:
//!
//! - `dumpe2fs`: our used blocks are exactly the complement of its per-group "Free blocks";
//! - `partclone.extfs -D` (a ddrescue domain log of the blocks it would copy): same bytes;
//! - data survival: a copy with every byte we call free zeroed passes `e2fsck -fn`, and every
//!   file read back with `debugfs rdump` equals the original;
//! - damaged superblocks/descriptors/bitmaps give the matching error and a whole-area fallback.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{
    assert_same_tree, expect_fallback, field_value, make_tree, partclone_used, run, xorshift,
    zero_free,
};
use p2v_fsmap::{analyze, ext, Content, Extents, FsError};

/// `(block size, block count, free extents in bytes)` from dumpe2fs.
fn dumpe2fs_free(img: &Path) -> (u64, u64, Extents) {
    let out = run("dumpe2fs", &[img.to_str().unwrap()]);
    let field = |name: &str| field_value(&out, name, "dumpe2fs");
    let bs = field("Block size:");
    let blocks = field("Block count:");
    // With bigalloc, a range "a-b" lists the first blocks of free clusters a/r ..= b/r.
    let ratio = out
        .lines()
        .find_map(|l| l.strip_prefix("Cluster size:"))
        .map_or(1, |v| v.trim().parse::<u64>().unwrap() / bs);
    let mut free = Extents::new();
    for line in out.lines().filter(|l| l.starts_with(' ')) {
        let Some(list) = line.trim_start().strip_prefix("Free blocks:") else {
            continue;
        };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            assert!(a % ratio == 0 && b % ratio == 0, "{line}");
            free.add(a * bs, (b - a + ratio) * bs);
        }
    }
    (bs, blocks, free)
}

struct Built {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    img: PathBuf,
    tree: PathBuf,
}

fn build(mkfs: &str, opts: &[&str], size: &str) -> Built {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let tree = dir.join("tree");
    make_tree(&tree, 1);
    let img = dir.join("img");
    let mut args = vec!["-q", "-F"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["-d", tree.to_str().unwrap(), img.to_str().unwrap(), size]);
    run(mkfs, &args);
    // Free a big file: its blocks hold stale data now and must be called free.
    run(
        "debugfs",
        &["-w", "-R", "rm /doomed", img.to_str().unwrap()],
    );
    fs::remove_file(tree.join("doomed")).unwrap();
    Built {
        _tmp: tmp,
        dir,
        img,
        tree,
    }
}

/// Builds an image and checks the parser against every oracle. Returns dumpe2fs's output.
fn check(mkfs: &str, opts: &[&str], size: &str, version: u8) -> String {
    check_with(mkfs, opts, size, version, true)
}

fn check_with(mkfs: &str, opts: &[&str], size: &str, version: u8, partclone: bool) -> String {
    let b = build(mkfs, opts, size);
    let bytes = fs::read(&b.img).unwrap();
    let a = analyze(bytes.as_slice());
    assert_eq!(a.fallback, None, "{opts:?}");
    assert_eq!(a.content, Content::Ext { version });

    // dumpe2fs: used is exactly the complement of the free blocks.
    let (bs, blocks, free) = dumpe2fs_free(&b.img);
    let fs_bytes = bs * blocks;
    let want = free.complement(fs_bytes);
    let ours = a.capture.clone().clamp_to(fs_bytes);
    assert_eq!(ours, want, "{opts:?}: used map differs from dumpe2fs");
    assert!(free.total() > 0);
    assert_eq!(a.fs_used_bytes, Some(fs_bytes - free.total()), "{opts:?}");

    // partclone: the same bytes.
    if partclone {
        let pc = partclone_used("partclone.extfs", &b.img, &b.dir);
        assert_eq!(
            pc.clamp_to(fs_bytes),
            ours,
            "{opts:?}: differs from partclone"
        );
    }

    // Data survival.
    let zeroed = b.dir.join("zeroed");
    fs::write(&zeroed, zero_free(&bytes, &a.capture)).unwrap();
    run("e2fsck", &["-fn", zeroed.to_str().unwrap()]);
    let out = b.dir.join("out");
    fs::create_dir(&out).unwrap();
    run(
        "debugfs",
        &[
            "-R",
            &format!("rdump / {}", out.display()),
            zeroed.to_str().unwrap(),
        ],
    );
    assert_same_tree(&b.tree, &out);
    run("dumpe2fs", &[b.img.to_str().unwrap()])
}

#[test]
fn ext2_1k_blocks() {
    check("mkfs.ext2", &["-b", "1024"], "16M", 2);
}

#[test]
fn ext3_4k_blocks() {
    check("mkfs.ext3", &["-b", "4096"], "32M", 3);
}

#[test]
fn ext4_default() {
    let d = check("mkfs.ext4", &[], "48M", 4);
    assert!(d.contains("metadata_csum") && d.contains("flex_bg"), "{d}");
}

#[test]
fn ext4_1k_blocks_many_groups() {
    check("mkfs.ext4", &["-b", "1024", "-g", "1024"], "24M", 4);
}

#[test]
fn ext4_bigalloc() {
    // partclone 0.3.23 does not read bigalloc bitmaps ("bitmap error at 0 group").
    let d = check_with(
        "mkfs.ext4",
        &["-O", "bigalloc", "-C", "16384"],
        "64M",
        4,
        false,
    );
    assert!(d.contains("bigalloc"), "{d}");
}

#[test]
fn ext4_without_flex_bg() {
    let d = check(
        "mkfs.ext4",
        &["-O", "^flex_bg", "-b", "1024", "-g", "2048"],
        "24M",
        4,
    );
    assert!(!d.contains("flex_bg"), "{d}");
}

#[test]
fn ext4_meta_bg() {
    // 1 KiB blocks, 64-byte descriptors: 16 per block, so 96 groups make 6 meta groups.
    let d = check(
        "mkfs.ext4",
        &["-O", "meta_bg,^resize_inode", "-b", "1024", "-g", "256"],
        "24M",
        4,
    );
    assert!(d.contains("meta_bg"), "{d}");
}

#[test]
fn ext4_lazy_init_block_uninit_groups() {
    let d = check(
        "mkfs.ext4",
        &["-E", "lazy_itable_init=1", "-b", "1024", "-g", "8192"],
        "64M",
        4,
    );
    assert!(d.contains("BLOCK_UNINIT"), "no BLOCK_UNINIT group: {d}");
}

#[test]
fn ext4_uninit_bg_crc16_32bit_descriptors() {
    let d = check(
        "mkfs.ext4",
        &[
            "-O",
            "^metadata_csum,uninit_bg,^64bit",
            "-g",
            "2048",
            "-b",
            "4096",
        ],
        "64M",
        4,
    );
    assert!(d.contains("uninit_bg") && d.contains("BLOCK_UNINIT"), "{d}");
}

#[test]
fn ext4_sparse_super2_no_flex() {
    let d = check(
        "mkfs.ext4",
        &["-O", "sparse_super2,^flex_bg", "-b", "1024", "-g", "1024"],
        "24M",
        4,
    );
    assert!(d.contains("sparse_super2"), "{d}");
}

/// Changes a superblock field with debugfs (which keeps the checksum right).
fn debugfs_w(img: &Path, req: &str) {
    run("debugfs", &["-w", "-R", req, img.to_str().unwrap()]);
}

/// Rewrites the superblock checksum after a manual edit.
fn fix_sb_csum(bytes: &mut [u8]) {
    let c = ext::crc32c_raw(!0, &bytes[1024..1024 + 0x3FC]);
    bytes[1024 + 0x3FC..1024 + 0x400].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn damaged_metadata_falls_back() {
    let b = build("mkfs.ext4", &["-b", "4096", "-g", "2048"], "32M");
    let clean = fs::read(&b.img).unwrap();

    // A byte of the superblock changed without its checksum.
    let mut v = clean.clone();
    v[1024 + 0x30] ^= 1; // s_wtime
    assert!(matches!(
        expect_fallback(ext::used, &v, "checksum"),
        FsError::Checksum(_)
    ));

    // A byte of a group descriptor (the free count of group 1 of 4).
    let mut v = clean.clone();
    v[4096 + 64 + 0xC] ^= 1;
    assert!(matches!(
        expect_fallback(ext::used, &v, "group descriptor 1"),
        FsError::Checksum(_)
    ));

    // A bit of group 0's block bitmap (bitmap checksum).
    let bb = u32::from_le_bytes(clean[4096..4100].try_into().unwrap()) as usize;
    let mut v = clean.clone();
    v[bb * 4096 + 100] ^= 0x10;
    assert!(matches!(
        expect_fallback(ext::used, &v, "block bitmap"),
        FsError::Checksum(_)
    ));

    // An unknown incompatible feature, checksum fixed.
    let mut v = clean.clone();
    v[1024 + 0x63] |= 0x40; // bit 30
    fix_sb_csum(&mut v);
    assert!(matches!(
        expect_fallback(ext::used, &v, "incompatible features 0x40000000"),
        FsError::Unsupported(_)
    ));

    // The group count does not match the block count.
    let mut v = clean.clone();
    v[1024 + 4..1024 + 8].copy_from_slice(&6144u32.to_le_bytes()); // 3 groups, not 4
    fix_sb_csum(&mut v);
    assert!(matches!(
        expect_fallback(ext::used, &v, "inodes"),
        FsError::BadSuperblock(_)
    ));

    // Needs recovery, and not clean, set with debugfs.
    let img = b.dir.join("recover");
    fs::write(&img, &clean).unwrap();
    debugfs_w(&img, "feature needs_recovery");
    expect_fallback(
        ext::used,
        &fs::read(&img).unwrap(),
        "journal needs recovery",
    );
    fs::write(&img, &clean).unwrap();
    debugfs_w(&img, "ssv state 0");
    expect_fallback(ext::used, &fs::read(&img).unwrap(), "not clean");
    fs::write(&img, &clean).unwrap();
    // filetype, extent, 64bit, flex_bg, and the unknown bit 28.
    debugfs_w(&img, "ssv feature_incompat 0x100002c2");
    let err = expect_fallback(ext::used, &fs::read(&img).unwrap(), "features 0x10000000");
    assert!(matches!(err, FsError::Unsupported(_)));
}

#[test]
fn bitmap_count_mismatch_without_checksums() {
    let b = build("mkfs.ext2", &["-b", "1024"], "16M");
    let clean = fs::read(&b.img).unwrap();
    assert!(ext::used(clean.as_slice()).is_ok());
    // ext2 descriptors at block 2; group 0's bitmap.
    let bb = u32::from_le_bytes(clean[2048..2052].try_into().unwrap()) as usize;
    let mut v = clean.clone();
    v[bb * 1024 + 900] ^= 0x01;
    assert!(matches!(
        expect_fallback(ext::used, &v, "free clusters"),
        FsError::Inconsistent(_)
    ));
}

#[test]
fn area_larger_than_the_filesystem_keeps_the_tail() {
    let b = build("mkfs.ext4", &[], "16M");
    let mut v = fs::read(&b.img).unwrap();
    let fs_len = v.len() as u64;
    v.resize(v.len() + (1 << 20), 0xEE);
    let a = analyze(v.as_slice());
    assert_eq!(a.fallback, None);
    let last = *a.capture.ranges().last().unwrap();
    assert_eq!(last.0 + last.1, v.len() as u64);
    assert!(last.0 <= fs_len);
    // Truncated: the filesystem does not fit the area.
    let short = &v[..(fs_len / 2) as usize];
    assert!(matches!(ext::used(short), Err(FsError::BadSuperblock(_))));
}

/// Thousands of deterministic mutations of the metadata of a small image: never a panic, and
/// whatever is returned stays within the area.
#[test]
fn mutated_metadata_never_panics() {
    let b = build(
        "mkfs.ext4",
        &["-b", "1024", "-g", "1024", "-N", "256"],
        "8M",
    );
    let mut v = fs::read(&b.img).unwrap();
    let len = v.len() as u64;
    let mut next = xorshift(0x1234_5678_9abc_def1);
    let mut ok = 0;
    for _ in 0..3000 {
        // Mutate 1..8 bytes in the first 64 KiB (superblock, descriptors, bitmaps), half of
        // them in the superblock itself, then put them back.
        let n = 1 + next() % 8;
        let mut saved = Vec::new();
        for _ in 0..n {
            let at = if next().is_multiple_of(2) {
                1024 + (next() % 1024) as usize
            } else {
                (next() % 65536) as usize
            };
            saved.push((at, v[at]));
            v[at] = next() as u8;
        }
        if next().is_multiple_of(4) {
            fix_sb_csum(&mut v);
        }
        let a = analyze(v.as_slice());
        if a.fallback.is_none() {
            ok += 1;
        }
        assert!(a.capture.ranges().last().is_none_or(|r| r.0 + r.1 <= len));
        for (at, old) in saved.into_iter().rev() {
            v[at] = old;
        }
        fix_sb_csum(&mut v);
    }
    assert!(ok > 0, "no mutation was harmless: the loop tests nothing");
}
