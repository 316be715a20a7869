//! FAT12/16/32 used maps on images built by mkfs.fat and filled with mtools (no mount),
//! checked against independent readers of the same images:
//!
//! - `fsck.fat -v -n`: its count of used clusters equals ours;
//! - `partclone.fat -D` (a ddrescue domain log of what it would copy): the same bytes;
//! - data survival: a copy with every byte we call free zeroed passes `fsck.fat -n`, and every
//!   file copied back out with `mcopy` equals the original;
//! - a damaged BPB or a dirty volume gives the matching error and a whole-area fallback.

mod common;

use std::fs;
use std::path::Path;

use common::{
    assert_same_tree, expect_fallback, make_tree, partclone_used, run, xorshift, zero_free,
};
use p2v_fsmap::{analyze, fat, Content, Extents, FsError};

/// `::/a/b`-style paths of every file and directory under `dir`.
fn list_tree(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let p = format!("{prefix}/{}", entry.file_name().to_str().unwrap());
        out.push(p.clone());
        if entry.path().is_dir() {
            list_tree(&entry.path(), &p, out);
        }
    }
}

fn mtools(cmd: &str, args: &[&str]) -> String {
    // mtools checks the geometry of the BPB against the image; mkfs.fat's is fine for it, but
    // the check is not what is tested here.
    std::env::set_var("MTOOLS_SKIP_CHECK", "1");
    run(cmd, args)
}

struct Built {
    _tmp: tempfile::TempDir,
    img: std::path::PathBuf,
    tree: std::path::PathBuf,
}

/// mkfs.fat with `opts` on a new image of `kib` KiB, the tree copied in with mcopy, then one
/// big file deleted (its clusters hold stale data and must be called free).
fn build(opts: &[&str], kib: u64) -> Built {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree, 1);
    let img = tmp.path().join("img");
    let i = img.to_str().unwrap();
    let mut args = vec!["-C"];
    args.extend_from_slice(opts);
    let kib = kib.to_string();
    args.extend_from_slice(&[i, &kib]);
    run("mkfs.fat", &args);
    for entry in fs::read_dir(&tree).unwrap() {
        let p = entry.unwrap().path();
        mtools("mcopy", &["-s", "-i", i, p.to_str().unwrap(), "::/"]);
    }
    mtools("mdel", &["-i", i, "::/doomed"]);
    fs::remove_file(tree.join("doomed")).unwrap();
    Built {
        _tmp: tmp,
        img,
        tree,
    }
}

fn check(opts: &[&str], kib: u64, bits: u8) {
    let b = build(opts, kib);
    let bytes = fs::read(&b.img).unwrap();
    let a = analyze(bytes.as_slice());
    assert_eq!(a.fallback, None, "{opts:?}");
    assert_eq!(a.content, Content::Fat { bits }, "{opts:?}");
    // The layout straight from the BPB (not through the parser under test).
    let u16_at = |at: usize| u64::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()));
    let bps = u16_at(0x0B);
    let cluster = u64::from(bytes[0x0D]) * bps;
    let fat_sectors = if u16_at(0x16) != 0 {
        u16_at(0x16)
    } else {
        u32_at(0x24)
    };
    let total = if u16_at(0x13) != 0 {
        u16_at(0x13)
    } else {
        u32_at(0x20)
    };
    let root = (u16_at(0x11) * 32).div_ceil(bps);
    let data_sectors = u16_at(0x0E) + u64::from(bytes[0x10]) * fat_sectors + root;
    let data = data_sectors * bps;
    let clusters = (total - data_sectors) * bps / cluster;
    let heap_end = data + clusters * cluster;

    // fsck.fat: "N files, USED/TOTAL clusters".
    let out = run("fsck.fat", &["-n", "-v", b.img.to_str().unwrap()]);
    let counts = out
        .lines()
        .find_map(|l| l.split(", ").nth(1)?.strip_suffix(" clusters"))
        .unwrap_or_else(|| panic!("no cluster count in {out}"));
    let (used, total) = counts.split_once('/').unwrap();
    let (used, total): (u64, u64) = (used.parse().unwrap(), total.parse().unwrap());
    assert_eq!(total, clusters, "{opts:?}");
    assert_eq!(a.fs_used_bytes, Some(data + used * cluster), "{opts:?}");
    assert!(used < total / 2, "the deleted file did not free anything?");

    // mshowfat: the clusters of every file and directory (and the FAT32 root) are exactly the
    // clusters we capture in the data region.
    let mut paths = vec!["::/".to_string()];
    list_tree(&b.tree, "::", &mut paths);
    let mut args = vec!["-i", b.img.to_str().unwrap()];
    args.extend(paths.iter().map(String::as_str));
    let out = mtools("mshowfat", &args);
    let mut want = Extents::new();
    for group in out.split('<').skip(1) {
        let g = group.split('>').next().unwrap();
        let (x, y) = g.split_once('-').unwrap_or((g, g));
        let (x, y): (u64, u64) = (x.parse().unwrap(), y.parse().unwrap());
        want.add(data + (x - 2) * cluster, (y - x + 1) * cluster);
    }
    let mut ours = Extents::new();
    for &(s, l) in a.capture.clone().clamp_to(heap_end).ranges() {
        let e = s + l;
        if e > data {
            ours.add(s.max(data), e - s.max(data));
        }
    }
    assert_eq!(ours, want, "{opts:?}: differs from mshowfat");

    // partclone: the same bytes up to the end of the last cluster.
    let pc = partclone_used("partclone.fat", &b.img, b._tmp.path());
    if bits != 12 {
        assert_eq!(
            pc.clamp_to(heap_end),
            a.capture.clone().clamp_to(heap_end),
            "{opts:?}: differs from partclone"
        );
    }
    // (partclone 0.3.23 misreads FAT12: for a file that `mshowfat` puts in clusters 2-343 it
    // maps bytes 0-0x87800 and 0x13E800-0x17C000, so it is no oracle there; fsck.fat's count
    // and the survival check below are.)

    // Data survival.
    let zeroed = b._tmp.path().join("zeroed");
    fs::write(&zeroed, zero_free(&bytes, &a.capture)).unwrap();
    run("fsck.fat", &["-n", zeroed.to_str().unwrap()]);
    let out = b._tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    mtools(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            zeroed.to_str().unwrap(),
            "::/*",
            out.to_str().unwrap(),
        ],
    );
    assert_same_tree(&b.tree, &out);
}

#[test]
fn fat12() {
    check(&["-F", "12"], 8 * 1024, 12);
}

#[test]
fn fat16() {
    check(&["-F", "16"], 32 * 1024, 16);
}

#[test]
fn fat16_4k_sectors_one_fat() {
    check(
        &["-F", "16", "-S", "4096", "-s", "1", "-f", "1"],
        48 * 1024,
        16,
    );
}

#[test]
fn fat32() {
    check(&["-F", "32", "-s", "1"], 64 * 1024, 32);
}

#[test]
fn fat32_bigger_clusters() {
    check(&["-F", "32", "-s", "1", "-S", "1024"], 96 * 1024, 32);
}

#[test]
fn damaged_bpb_and_dirty_volume_fall_back() {
    let b = build(&["-F", "16"], 16 * 1024);
    let clean = fs::read(&b.img).unwrap();
    assert!(fat::used(clean.as_slice()).is_ok());

    let mut v = clean.clone();
    v[0x25] |= 1; // Linux's dirty flag (FAT12/16)
    assert!(matches!(
        expect_fallback(fat::used, &v, "dirty"),
        FsError::Inconsistent(_)
    ));

    let mut v = clean.clone();
    v[0x0B..0x0D].copy_from_slice(&1000u16.to_le_bytes());
    let _ = fat::used(v.as_slice()).unwrap_err();
    assert!(analyze(v.as_slice()).fallback.is_some());

    // More sectors than the area holds.
    let mut v = clean.clone();
    v.truncate(v.len() - 4096);
    assert!(matches!(
        expect_fallback(fat::used, &v, "in an area of"),
        FsError::BadSuperblock(_)
    ));

    // A FAT size that leaves too few entries for the clusters.
    let mut v = clean.clone();
    let fsz = u16::from_le_bytes([v[0x16], v[0x17]]);
    v[0x16..0x18].copy_from_slice(&(fsz / 4).to_le_bytes());
    assert!(analyze(v.as_slice()).fallback.is_some());
}

/// Thousands of deterministic mutations of the boot sector and FATs: never a panic.
#[test]
fn mutated_metadata_never_panics() {
    let cases = [
        (&["-F", "12"][..], 4096u64, 3000),
        (&["-F", "16"][..], 16 * 1024, 1000),
        // The smallest FAT32 has 65525 clusters: each analysis reads 0.5 MiB of FATs.
        (&["-F", "32", "-s", "1"][..], 34 * 1024, 200),
    ];
    for (opts, kib, rounds) in cases {
        let b = build(opts, kib);
        let mut v = fs::read(&b.img).unwrap();
        let len = v.len() as u64;
        let mut next = xorshift(0x0123_4567_89ab_cdef);
        let mut ok = 0;
        for _ in 0..rounds {
            let n = 1 + next() % 6;
            let mut saved = Vec::new();
            for _ in 0..n {
                let at = if next().is_multiple_of(2) {
                    (next() % 96) as usize
                } else {
                    (next() % 65536) as usize
                };
                saved.push((at, v[at]));
                v[at] = next() as u8;
            }
            let a = analyze(v.as_slice());
            ok += usize::from(a.fallback.is_none());
            assert!(a.capture.ranges().last().is_none_or(|r| r.0 + r.1 <= len));
            for (at, old) in saved.into_iter().rev() {
                v[at] = old;
            }
        }
        assert!(ok > 0, "no mutation was harmless: the loop tests nothing");
    }
}
