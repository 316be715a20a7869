//! exFAT used maps on images built by mkfs.exfat and filled through exfat-fuse on a loop
//! device (no tool writes files into an exFAT image without mounting it), checked against
//! independent readers of the same images:
//!
//! - `dump.exfat`: its count of free clusters equals ours, and so do its bitmap's location;
//! - `partclone.exfat -D` (a ddrescue domain log of what it would copy): the same bytes;
//! - data survival: a copy with every byte we call free zeroed passes `fsck.exfat -n`, and every
//!   file read back through a read-only exfat-fuse mount equals the original;
//! - a damaged boot sector, boot checksum, bitmap entry or a dirty volume gives the matching
//!   error and a whole-area fallback.
//!
//! Needs root (losetup, FUSE).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    assert_same_tree, expect_fallback, field_value, make_tree, partclone_used, run, xorshift,
    zero_free,
};
use p2v_fsmap::{analyze, exfat, Content, Extents, FsError};

/// A loop device with an exfat-fuse mount on it; unmounted and detached on drop.
struct Mounted {
    dev: String,
    dir: PathBuf,
}

impl Mounted {
    fn new(img: &Path, dir: &Path, ro: bool) -> Self {
        let dev = run("losetup", &["-f", "--show", img.to_str().unwrap()])
            .trim()
            .to_string();
        fs::create_dir_all(dir).unwrap();
        let m = Mounted {
            dev,
            dir: dir.to_path_buf(),
        };
        let mut args = vec![m.dev.as_str(), dir.to_str().unwrap()];
        if ro {
            args.extend_from_slice(&["-o", "ro"]);
        }
        run("mount.exfat-fuse", &args);
        m
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // The FUSE daemon may still hold the mount for a moment after the last read.
        let unmounted = (0..50).any(|_| {
            let ok = Command::new("umount")
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            ok
        });
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let t = to.join(entry.file_name());
        if entry.path().is_dir() {
            fs::create_dir(&t).unwrap();
            copy_tree(&entry.path(), &t);
        } else {
            fs::copy(entry.path(), &t).unwrap();
        }
    }
}

struct Built {
    tmp: tempfile::TempDir,
    img: PathBuf,
    tree: PathBuf,
}

fn build(opts: &[&str], mib: u64) -> Built {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree, 1);
    let img = tmp.path().join("img");
    fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
    // mkfs.exfat takes the sector size from the device: "4k" formats through a loop device
    // with 4096-byte logical sectors.
    let sector4k = opts.first() == Some(&"4k");
    let opts = if sector4k { &opts[1..] } else { opts };
    let dev = if sector4k {
        run(
            "losetup",
            &["-f", "--show", "-b", "4096", img.to_str().unwrap()],
        )
        .trim()
        .to_string()
    } else {
        img.to_str().unwrap().to_string()
    };
    let mut args = opts.to_vec();
    args.push(&dev);
    let made = std::panic::catch_unwind(|| run("mkfs.exfat", &args));
    if sector4k {
        run("losetup", &["-d", &dev]);
    }
    made.unwrap();
    {
        let m = Mounted::new(&img, &tmp.path().join("mnt"), false);
        copy_tree(&tree, &m.dir);
        fs::remove_file(m.dir.join("doomed")).unwrap();
    }
    fs::remove_file(tree.join("doomed")).unwrap();
    Built { tmp, img, tree }
}

/// A number from dump.exfat's output.
fn dump_field(out: &str, name: &str) -> u64 {
    field_value(out, name, out)
}

fn check(opts: &[&str], mib: u64) {
    let b = build(opts, mib);
    let bytes = fs::read(&b.img).unwrap();
    let a = analyze(bytes.as_slice());
    assert_eq!(a.fallback, None, "{opts:?}");
    assert_eq!(a.content, Content::Exfat);

    // dump.exfat: geometry and the free-cluster count.
    let d = run("dump.exfat", &[b.img.to_str().unwrap()]);
    let sector = 1u64 << dump_field(&d, "Sector Size Bits:");
    if opts.first() == Some(&"4k") {
        assert_eq!(sector, 4096);
    }
    let cluster = dump_field(&d, "Cluster size:");
    let heap = dump_field(&d, "Cluster Heap Offset (sector offset):") * sector;
    let count = dump_field(&d, "Total Clusters:");
    let free = dump_field(&d, "Free Clusters:");
    // (One FAT: mkfs.exfat writes no TexFAT volumes.)
    let fats = dump_field(&d, "FAT Length(sectors):") * sector;
    let heap_end = heap + count * cluster;
    assert_eq!(
        a.fs_used_bytes,
        Some(24 * sector + fats + (count - free) * cluster),
        "{opts:?}"
    );
    let in_heap =
        a.capture.clone().clamp_to(heap_end).total() - a.capture.clone().clamp_to(heap).total();
    assert_eq!(in_heap, (count - free) * cluster, "{opts:?}");
    assert!(free > count / 4);

    // Before the heap: the two boot regions and the FATs, not the alignment gaps.
    let fat_at = dump_field(&d, "FAT Offset(sector offset):") * sector;
    let mut meta = Extents::new();
    meta.add(0, 24 * sector);
    meta.add(fat_at, fats);
    assert_eq!(a.capture.clone().clamp_to(heap), meta, "{opts:?}");

    // partclone: the same clusters (it copies everything before the heap, gaps included).
    let pc = partclone_used("partclone.exfat", &b.img, b.tmp.path());
    let heap_part = |e: &Extents| {
        let mut out = Extents::new();
        for &(s, l) in e.clone().clamp_to(heap_end).ranges() {
            if s + l > heap {
                out.add(s.max(heap), s + l - s.max(heap));
            }
        }
        out
    };
    assert_eq!(
        heap_part(&pc),
        heap_part(&a.capture),
        "{opts:?}: differs from partclone"
    );

    // Data survival.
    let zeroed = b.tmp.path().join("zeroed");
    fs::write(&zeroed, zero_free(&bytes, &a.capture)).unwrap();
    run("fsck.exfat", &["-n", zeroed.to_str().unwrap()]);
    let m = Mounted::new(&zeroed, &b.tmp.path().join("ro"), true);
    assert_same_tree(&b.tree, &m.dir);
}

#[test]
fn exfat_default() {
    check(&[], 32);
}

#[test]
fn exfat_4k_sectors_big_clusters() {
    check(&["4k", "-c", "64K"], 64);
}

#[test]
fn exfat_packed_bitmap() {
    check(&["--pack-bitmap"], 32);
}

#[test]
fn exfat_small_clusters() {
    check(&["-c", "512"], 24);
}

/// Rewrites the main boot region's checksum sector after an edit.
fn fix_checksum(v: &mut [u8], bps: usize) {
    let sum = exfat::boot_checksum(&v[..11 * bps]);
    for w in v[11 * bps..12 * bps].chunks_exact_mut(4) {
        w.copy_from_slice(&sum.to_le_bytes());
    }
}

#[test]
fn damaged_boot_sector_and_dirty_volume_fall_back() {
    let b = build(&[], 16);
    let clean = fs::read(&b.img).unwrap();
    assert!(exfat::used(clean.as_slice()).is_ok());

    // A boot sector byte changed: the boot checksum catches it.
    let mut v = clean.clone();
    v[100] ^= 1; // serial number
    assert!(matches!(
        expect_fallback(exfat::used, &v, "boot region"),
        FsError::Checksum(_)
    ));

    // VolumeDirty, checksum (which skips VolumeFlags) still right.
    let mut v = clean.clone();
    v[106] |= 2;
    assert!(matches!(
        expect_fallback(exfat::used, &v, "dirty"),
        FsError::Inconsistent(_)
    ));

    // Out-of-range geometry, checksum fixed.
    let mut v = clean.clone();
    v[108] = 13; // BytesPerSectorShift
    fix_checksum(&mut v, 512);
    assert!(matches!(
        expect_fallback(exfat::used, &v, "sector shift"),
        FsError::BadSuperblock(_)
    ));
    let mut v = clean.clone();
    v[72..80].copy_from_slice(&(1u64 << 40).to_le_bytes()); // VolumeLength
    fix_checksum(&mut v, 512);
    assert!(matches!(
        expect_fallback(exfat::used, &v, "in an area of"),
        FsError::BadSuperblock(_)
    ));

    // The root directory without its bitmap entry.
    let heap = u32::from_le_bytes(clean[88..92].try_into().unwrap()) as usize * 512;
    let spc = 1usize << clean[109];
    let root = u32::from_le_bytes(clean[96..100].try_into().unwrap()) as usize;
    let dir = heap + (root - 2) * spc * 512;
    let mut v = clean.clone();
    let at = (0..spc * 512 / 32)
        .map(|i| dir + 32 * i)
        .find(|&at| v[at] == 0x81)
        .expect("a bitmap entry");
    v[at] = 0x01; // an unused entry type
    assert!(matches!(
        expect_fallback(exfat::used, &v, "allocation bitmaps"),
        FsError::Inconsistent(_)
    ));
    // A bitmap too short for the clusters.
    let mut v = clean.clone();
    v[at + 24..at + 32].copy_from_slice(&1u64.to_le_bytes());
    assert!(matches!(
        expect_fallback(exfat::used, &v, "allocation bitmap at"),
        FsError::Inconsistent(_)
    ));
}

/// Thousands of deterministic mutations of the boot region, FAT and root directory: never a
/// panic (the boot checksum is fixed after each, so the parser looks further).
#[test]
fn mutated_metadata_never_panics() {
    let b = build(&[], 8);
    let mut v = fs::read(&b.img).unwrap();
    let len = v.len() as u64;
    let heap = u32::from_le_bytes(v[88..92].try_into().unwrap()) as usize * 512;
    let fat = u32::from_le_bytes(v[80..84].try_into().unwrap()) as usize * 512;
    let mut next = xorshift(0xfeed_face_cafe_beef);
    let orig_check = v[11 * 512..12 * 512].to_vec();
    let mut ok = 0;
    for _ in 0..3000 {
        let n = 1 + next() % 6;
        let mut saved = Vec::new();
        for _ in 0..n {
            let at = match next() % 3 {
                0 => 64 + (next() % 48) as usize,
                1 => fat + (next() % 256) as usize,
                _ => heap + (next() % 65536) as usize,
            };
            saved.push((at, v[at]));
            v[at] = next() as u8;
        }
        fix_checksum(&mut v, 512);
        let a = analyze(v.as_slice());
        ok += usize::from(a.fallback.is_none());
        assert!(a.capture.ranges().last().is_none_or(|r| r.0 + r.1 <= len));
        for (at, old) in saved.into_iter().rev() {
            v[at] = old;
        }
        v[11 * 512..12 * 512].copy_from_slice(&orig_check);
    }
    assert!(ok > 0, "no mutation was harmless: the loop tests nothing");
}
