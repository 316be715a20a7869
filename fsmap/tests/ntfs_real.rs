//! The NTFS map against volumes made by mkntfs and filled through ntfs-3g (FUSE), with
//! ntfs-3g's tools as the oracle: the used clusters must be exactly the bits `ntfscat` reads
//! from `$Bitmap`, and a copy holding only the captured bytes must pass `ntfsfix -n` and give
//! back every file with the same SHA-256. Needs root, /dev/fuse and ntfs-3g.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{captured_copy, patch, sh, xorshift, FileArea};
use p2v_fsmap::{ntfs, Extents, FsError};
use tempfile::TempDir;

const SIZE: u64 = 64 << 20;

/// Runs `body` (shell, `$M` is the mount point) on an ntfs-3g mount of `img`, and waits for
/// ntfs-3g to exit so that everything is on the image.
fn with_mount(img: &Path, mnt: &Path, opts: &str, body: &str) -> String {
    std::fs::create_dir_all(mnt).unwrap();
    sh(&format!(
        "ntfs-3g -o no_detach{opts} {img} {mnt} >/dev/null 2>&1 & pid=$!
         for i in $(seq 100); do mountpoint -q {mnt} && break; sleep 0.05; done
         mountpoint -q {mnt}
         M={mnt}
         out=$( {body} ) || {{ umount {mnt}; wait $pid; exit 1; }}
         umount {mnt}; wait $pid
         echo \"$out\"",
        img = img.display(),
        mnt = mnt.display()
    ))
}

/// A 64 MiB NTFS volume with files of several sizes, some deleted.
fn build(dir: &Path, mkntfs_opts: &str) -> PathBuf {
    let img = dir.join("ntfs.img");
    sh(&format!(
        "truncate -s {SIZE} {img}; mkntfs -F -f -q {mkntfs_opts} {img} >/dev/null 2>&1",
        img = img.display()
    ));
    with_mount(
        &img,
        &dir.join("mnt"),
        "",
        "for i in $(seq 1 30); do head -c $((i * 41000)) /dev/urandom > $M/f$i; done
         mkdir -p $M/d/e; cp -r /usr/share/doc/xfsprogs $M/d/e/
         head -c 3000000 /dev/urandom > $M/big; echo small > $M/tiny
         for i in $(seq 1 30 | awk '$1 % 4 == 0'); do rm $M/f$i; done",
    );
    img
}

fn hashes(img: &Path, mnt: &Path) -> String {
    with_mount(
        img,
        mnt,
        ",ro",
        "cd $M && find . -type f -print0 | sort -z | xargs -0 sha256sum",
    )
}

/// `$Bitmap` as libntfs-3g reads it (`ntfscat -i 6`), as byte ranges; plus what the parser
/// always adds: the boot sector and the tail past the last whole cluster.
fn oracle(img: &Path, cluster: u64) -> (Extents, u64) {
    let out = Command::new("ntfscat")
        .args(["-i", "6"])
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success());
    let size = std::fs::metadata(img).unwrap().len();
    let info = sh(&format!(
        "ntfsinfo -m {} 2>/dev/null | grep 'Volume Size in Clusters'",
        img.display()
    ));
    let clusters: u64 = info.split(':').nth(1).unwrap().trim().parse().unwrap();
    let mut e = Extents::new();
    let mut set = 0;
    for c in 0..clusters {
        if out.stdout[(c / 8) as usize] & (1 << (c % 8)) != 0 {
            e.add(c * cluster, cluster);
            set += 1;
        }
    }
    e.add(clusters * cluster, size - clusters * cluster);
    (e, set * cluster)
}

fn check(mkntfs_opts: &str, cluster: u64) {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), mkntfs_opts);
    let (capture, used) = ntfs::used(&FileArea::open(&img)).unwrap();
    let (expected, set_bytes) = oracle(&img, cluster);
    assert_eq!(capture, expected, "map differs from $Bitmap");
    assert_eq!(used, Some(set_bytes));
    assert!(set_bytes > 4_000_000 && set_bytes < SIZE / 2, "{set_bytes}");

    let copy = dir.path().join("copy.img");
    captured_copy(&img, &copy, &capture);
    sh(&format!("ntfsfix -n {}", copy.display()));
    let before = hashes(&img, &dir.path().join("m1"));
    let after = hashes(&copy, &dir.path().join("m2"));
    assert!(before.lines().count() > 25, "{before}");
    assert_eq!(before, after, "files differ after zeroing the free space");
}

#[test]
fn default_clusters_match_bitmap_and_survive() {
    check("", 4096);
}

#[test]
fn small_clusters_match_bitmap_and_survive() {
    check("-c 512", 512);
}

#[test]
fn large_clusters_4k_sectors_match_bitmap_and_survive() {
    check("-c 65536 -s 4096", 65536);
}

/// Byte offset of MFT record `n` (mkntfs lays the first records out contiguously), or of its
/// copy in `$MFTMirr`.
fn record_offset(img: &Path, n: u64) -> u64 {
    record_at(img, n, 0x30)
}

fn mirror_offset(img: &Path, n: u64) -> u64 {
    record_at(img, n, 0x38)
}

fn record_at(img: &Path, n: u64, lcn_field: usize) -> u64 {
    let mut b = [0u8; 512];
    File::open(img).unwrap().read_exact_at(&mut b, 0).unwrap();
    let bps = u64::from(u16::from_le_bytes([b[11], b[12]]));
    let cs = bps * u64::from(b[13]);
    u64::from_le_bytes(b[lcn_field..lcn_field + 8].try_into().unwrap()) * cs + n * 1024
}

#[test]
fn dirty_volume_and_bad_fixups_fall_back() {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), "");
    let pristine = dir.path().join("pristine.img");
    sh(&format!(
        "cp --sparse=always {} {}",
        img.display(),
        pristine.display()
    ));

    // Set VOLUME_IS_DIRTY in $Volume's $VOLUME_INFORMATION (and its $MFTMirr copy), as
    // Windows does while mounted.
    let set_dirty = |r: &mut [u8]| {
        let at = find_attr(r, 0x70);
        let voff = usize::from(u16::from_le_bytes([r[at + 20], r[at + 21]]));
        let flags = at + voff + 10;
        assert!(flags % 512 < 510, "flags under a fixup");
        r[flags] |= 1;
    };
    patch(&img, record_offset(&img, 3), 1024, set_dirty);
    patch(&img, mirror_offset(&img, 3), 1024, set_dirty);
    let flags = sh(&format!(
        "ntfsinfo -f -m {} 2>/dev/null | grep 'Volume Flags'",
        img.display()
    ));
    assert!(flags.contains("0x0001 DIRTY"), "ntfsinfo: {flags}");
    let area = FileArea::open(&img);
    match ntfs::used(&area) {
        Err(FsError::Unsupported(m)) => assert_eq!(
            m,
            "NTFS volume is dirty (not cleanly unmounted / hibernated)"
        ),
        other => panic!("dirty volume accepted: {other:?}"),
    }
    let a = p2v_fsmap::analyze(&area);
    assert_eq!(a.capture, Extents::whole(SIZE));
    assert!(a.fallback.is_some());

    // A torn write of $Bitmap's record: the second sector's fixup no longer matches.
    sh(&format!(
        "cp --sparse=always {} {}",
        pristine.display(),
        img.display()
    ));
    patch(&img, record_offset(&img, 6), 1024, |r| r[1022] ^= 0xFF);
    assert!(matches!(
        ntfs::used(&FileArea::open(&img)),
        Err(FsError::Checksum(_))
    ));

    // $Bitmap's first data run moved past the end of the volume.
    sh(&format!(
        "cp --sparse=always {} {}",
        pristine.display(),
        img.display()
    ));
    patch(&img, record_offset(&img, 6), 1024, |r| {
        let at = find_attr(r, 0x80);
        let mp = at + usize::from(u16::from_le_bytes([r[at + 32], r[at + 33]]));
        let (ln, on) = (usize::from(r[mp] & 0xF), usize::from(r[mp] >> 4));
        assert!(on >= 2 && (mp + ln + on) % 512 < 510);
        r[mp + ln + on] = 0x7F; // the top byte of the LCN
    });
    match ntfs::used(&FileArea::open(&img)) {
        Err(FsError::Inconsistent(m)) => assert!(m.contains("outside"), "{m}"),
        other => panic!("run past the volume accepted: {other:?}"),
    }
    assert!(matches!(
        ntfs::parse_boot_sector(&[0u8; 512], SIZE),
        Err(FsError::BadSuperblock(_))
    ));
}

/// Offset of the first attribute of type `ty` in an MFT record.
fn find_attr(r: &[u8], ty: u32) -> usize {
    let mut at = usize::from(u16::from_le_bytes([r[20], r[21]]));
    loop {
        let t = u32::from_le_bytes(r[at..at + 4].try_into().unwrap());
        assert_ne!(t, 0xFFFF_FFFF, "no attribute {ty:#x}");
        if t == ty {
            return at;
        }
        at += u32::from_le_bytes(r[at + 4..at + 8].try_into().unwrap()) as usize;
    }
}

/// Deterministic random byte flips in the boot sector and the first MFT records: never a
/// panic.
#[test]
fn mutations_never_panic() {
    let dir = TempDir::new().unwrap();
    let img = build(dir.path(), "");
    let base = std::fs::read(&img).unwrap();
    ntfs::used(&base).unwrap();
    let mft = record_offset(&img, 0) as usize;
    let regions = [(0usize, 512usize), (mft, 8 * 1024)];
    let mut data = base.clone();
    let mut rnd = xorshift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..5000 {
        let (start, len) = regions[(rnd() % 2) as usize];
        let mut touched = Vec::new();
        for _ in 0..1 + rnd() % 4 {
            let at = start + (rnd() % len as u64) as usize;
            touched.push(at);
            data[at] = rnd() as u8;
        }
        let _ = ntfs::used(&data);
        for at in touched {
            data[at] = base[at];
        }
    }
}
