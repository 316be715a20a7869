//! The LVM2 PV map against PVs, VGs and LVs made by lvm2's own tools (without device-mapper:
//! `--driverloaded n`, LVs never activated), with ext4 filesystems written at the LVs' extents.
//! Oracles: `lvs --segments` for where each LV lies; e2fsck and the files' SHA-256 for the
//! LVs read back from a copy of the PV that holds only the captured bytes. Needs root (loop
//! devices), lvm2 and e2fsprogs.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{captured_copy, patch, sh, xorshift, FileArea};
use p2v_fsmap::lvm::{self, calc_crc};
use p2v_fsmap::{Content, Extents, FsError};
use tempfile::TempDir;

const PV_SIZE: u64 = 96 << 20;
const EXTENT: u64 = 4 << 20;

/// Loop devices detached on drop.
struct Loops(Vec<String>);

impl Drop for Loops {
    fn drop(&mut self) {
        for l in &self.0 {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

/// Where each LV lies, from `lvs --segments`: (lv, lv start extent, extents, pv index, pe).
type Segments = Vec<(String, u64, u64, usize, u64)>;

struct Vg {
    _dir: TempDir,
    pvs: [PathBuf; 2],
    segs: Segments,
    pe_start: u64,
    /// The source tree of each ext4 LV.
    trees: Vec<(String, PathBuf)>,
}

/// VG `vgt` over two PVs: `lin` (two segments on pv0, ext4), `other` (pv0, ext4), `str`
/// (striped over both), `span` (pv1 and then pv0).
fn build() -> Vg {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let pvs = [d.join("pv0.img"), d.join("pv1.img")];
    sh(&format!(
        "truncate -s {PV_SIZE} {} {}",
        pvs[0].display(),
        pvs[1].display()
    ));
    let loops = Loops(
        pvs.iter()
            .map(|p| {
                sh(&format!("losetup -f --show {}", p.display()))
                    .trim()
                    .to_string()
            })
            .collect(),
    );
    let (l0, l1) = (&loops.0[0], &loops.0[1]);
    let c = format!("--devices {l0},{l1} --driverloaded n -q");
    sh(&format!(
        "exec 2>/dev/null  # lvm's warnings about activation and leaked descriptors
         pvcreate {c} {l0} {l1}
         vgcreate {c} -s 4m vgt {l0} {l1}
         lvcreate {c} -an --zero n -L 16m -n lin vgt {l0}
         lvcreate {c} -an --zero n -L 8m -n other vgt {l0}
         lvextend {c} -L +8m vgt/lin {l0}
         lvcreate {c} -an --zero n -i 2 -I 64k -L 16m -n str vgt
         lvcreate {c} -an --zero n -L 100m -n span vgt {l1} {l0}"
    ));
    let out = sh(&format!(
        "lvs {c} --segments --noheadings --separator : -o lv_name,seg_start_pe,seg_pe_ranges vgt 2>/dev/null"
    ));
    let mut segs = Segments::new();
    for line in out.lines() {
        let f: Vec<&str> = line.trim().split(':').collect();
        let (lv, mut start) = (f[0].to_string(), f[1].parse::<u64>().unwrap());
        // PE ranges: "/dev/loopN:A-B" pairs, one per stripe, separated by spaces.
        for r in f[2..].join(":").split_whitespace() {
            let (dev, range) = r.rsplit_once(':').unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            let pv = loops.0.iter().position(|l| l == dev).unwrap();
            segs.push((lv.clone(), start, b - a + 1, pv, a));
            if f[0] != "str" {
                start += b - a + 1;
            }
        }
    }
    let pe_start: u64 = sh(&format!(
        "pvs {c} --noheadings --units b --nosuffix -o pe_start {l0} 2>/dev/null"
    ))
    .trim()
    .parse()
    .unwrap();
    drop(loops);

    // ext4 filesystems made from directory trees, written at the LVs' extents.
    let mut trees = Vec::new();
    for (lv, extents) in [("lin", 6u64), ("other", 2)] {
        let src = d.join(format!("src-{lv}"));
        std::fs::create_dir_all(src.join("sub")).unwrap();
        for i in 1..12u64 {
            let data: Vec<u8> = (0..i * 50_000).map(|b| (b * i + b / 7) as u8).collect();
            std::fs::write(src.join(format!("f{i}")), data).unwrap();
        }
        std::fs::write(src.join("sub/name"), lv).unwrap();
        let fs = d.join(format!("{lv}.ext4"));
        sh(&format!(
            "truncate -s {} {fs}; mkfs.ext4 -q -F -d {src} {fs}",
            extents * EXTENT,
            fs = fs.display(),
            src = src.display()
        ));
        let fs_bytes = std::fs::read(&fs).unwrap();
        let pv = OpenOptions::new().write(true).open(&pvs[0]).unwrap();
        for &(_, start, n, _, pe) in segs.iter().filter(|s| s.0 == lv) {
            let from = (start * EXTENT) as usize;
            pv.write_all_at(
                &fs_bytes[from..from + (n * EXTENT) as usize],
                pe_start + pe * EXTENT,
            )
            .unwrap();
        }
        trees.push((lv.to_string(), src));
    }
    Vg {
        _dir: dir,
        pvs,
        segs,
        pe_start,
        trees,
    }
}

/// The bytes of LV `lv` read from `pv` at the extents `lvs` reported.
fn extract(vg: &Vg, pv: &Path, lv: &str, to: &Path) {
    let pv = File::open(pv).unwrap();
    let out = File::create(to).unwrap();
    for &(_, start, n, _, pe) in vg.segs.iter().filter(|s| s.0 == lv) {
        let mut buf = vec![0u8; (n * EXTENT) as usize];
        pv.read_exact_at(&mut buf, vg.pe_start + pe * EXTENT)
            .unwrap();
        out.write_all_at(&buf, start * EXTENT).unwrap();
    }
}

#[test]
fn lvs_on_a_pv_are_mapped_and_survive() {
    let vg = build();
    let area = FileArea::open(&vg.pvs[0]);
    let pv = lvm::analyze_pv(&area).unwrap();
    assert_eq!(pv.vg_name, "vgt");

    // Allocation exactly as lvs reports for pv0.
    let mut allocated = Extents::new();
    for &(_, _, n, p, pe) in &vg.segs {
        if p == 0 {
            allocated.add(vg.pe_start + pe * EXTENT, n * EXTENT);
        }
    }
    assert_eq!(pv.allocated, allocated);

    let by_name = |n: &str| &pv.lvs.iter().find(|l| l.name == n).unwrap().analysis;
    for lv in ["lin", "other"] {
        let a = by_name(lv);
        assert!(matches!(a.content, Content::Ext { .. }), "{lv}: {a:?}");
        assert_eq!(a.fallback, None, "{lv}");
        let size = vg
            .segs
            .iter()
            .filter(|s| s.0 == lv)
            .map(|s| s.2)
            .sum::<u64>()
            * EXTENT;
        assert!(
            a.capture.total() < size * 3 / 4,
            "{lv}: {} of {size} captured",
            a.capture.total()
        );
    }
    let str_reason = by_name("str").fallback.clone().unwrap();
    assert!(
        str_reason.contains("striped") || str_reason.contains("another PV"),
        "{str_reason}"
    );
    assert!(by_name("span")
        .fallback
        .as_ref()
        .unwrap()
        .contains("another PV"));

    // Everything before pe_start is captured; unallocated extents are not.
    assert_eq!(pv.capture.ranges()[0].0, 0);
    assert!(pv.capture.ranges()[0].1 >= vg.pe_start);
    let pe_end = vg.pe_start + (PV_SIZE - vg.pe_start) / EXTENT * EXTENT;
    let free = allocated.complement(pe_end);
    for &(s, l) in free.ranges().iter().filter(|r| r.0 >= vg.pe_start) {
        assert!(
            !pv.capture
                .ranges()
                .iter()
                .any(|&(cs, cl)| cs < s + l && s < cs + cl),
            "free extent at {s} captured"
        );
    }
    assert!(pv.capture.total() < allocated.total());

    // Data survival: the LVs read back from a copy holding only the captured bytes.
    let dir = vg._dir.path();
    let copy = dir.join("copy.img");
    captured_copy(&vg.pvs[0], &copy, &pv.capture);
    for (lv, src) in &vg.trees {
        let img = dir.join(format!("{lv}.back"));
        extract(&vg, &copy, lv, &img);
        sh(&format!("e2fsck -fn {}", img.display()));
        let mnt = dir.join(format!("mnt-{lv}"));
        std::fs::create_dir_all(&mnt).unwrap();
        let hashes = |root: &Path| {
            sh(&format!(
                "cd {} && find . -type f ! -path './lost+found*' -print0 | sort -z | xargs -0 sha256sum",
                root.display()
            ))
        };
        sh(&format!(
            "mount -o loop,ro {} {}",
            img.display(),
            mnt.display()
        ));
        let got = hashes(&mnt);
        sh(&format!("umount {}", mnt.display()));
        assert_eq!(got, hashes(src), "{lv}");
    }
    // `used` is the same map, and so is what `analyze` answers for the PV.
    assert_eq!(lvm::used(&area).unwrap().0, pv.capture);
    let whole = p2v_fsmap::analyze(&area);
    assert_eq!(whole.content, Content::Lvm2Pv, "{whole:?}");
    assert_eq!(whole.fallback, None);
    assert_eq!(whole.capture, pv.capture);
}

/// (mda offset, text offset in the mda, text size) from the PV's first metadata area.
fn mda(p: &Path) -> (u64, u64, u64) {
    let mut h = [0u8; 512];
    File::open(p).unwrap().read_exact_at(&mut h, 4096).unwrap();
    assert_eq!(&h[4..20], b" LVM2 x[5A%r0N*>");
    let u = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap());
    (4096, u(40), u(48))
}

#[test]
fn damage_is_refused_and_mutations_never_panic() {
    let vg = build();
    let pv = &vg.pvs[0];
    let pristine = std::fs::read(pv).unwrap();
    let (mda_off, text_off, text_len) = mda(pv);
    let text_at = mda_off + text_off;

    // A flipped byte of the metadata text: its CRC no longer matches.
    patch(pv, text_at, 512, |b| b[10] ^= 1);
    assert!(matches!(
        lvm::analyze_pv(&FileArea::open(pv)),
        Err(FsError::Checksum(_))
    ));
    // The label's CRC.
    std::fs::write(pv, &pristine).unwrap();
    patch(pv, 512, 512, |b| b[40] ^= 1);
    assert!(matches!(
        lvm::analyze_pv(&FileArea::open(pv)),
        Err(FsError::Checksum(_))
    ));
    let a = p2v_fsmap::analyze(&FileArea::open(pv));
    assert_eq!(a.capture, Extents::whole(PV_SIZE));
    assert!(a.fallback.is_some());

    // A raid1 LV whose sub-LV is `other`: `other` is then captured whole, not analyzed.
    let text = pristine[text_at as usize..(text_at + text_len) as usize].to_vec();
    let text_str = String::from_utf8(text.clone()).unwrap();
    let raid = "logical_volumes {\nr1 {\nid = \"x\"\nstatus = [\"READ\", \"VISIBLE\"]\n\
                segment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 2\n\
                type = \"raid1\"\ndevice_count = 1\nraids = [\"other\"]\n}\n}\n";
    let edited = text_str.replacen("logical_volumes {", raid, 1);
    let mut data = pristine.clone();
    write_text(&mut data, mda_off, text_at, edited.as_bytes());
    let pv = lvm::analyze_pv(&data).unwrap();
    let other = &pv.lvs.iter().find(|l| l.name == "other").unwrap().analysis;
    assert!(
        other
            .fallback
            .as_deref()
            .unwrap_or("")
            .contains("part of LV r1"),
        "{other:?}"
    );

    // Random changes to the metadata text with its CRCs fixed up, so that they reach the
    // text parser and the LV mapping: an answer or an error, never a panic; an answer never
    // leaves out what is before pe_start.
    let mut rnd = xorshift(0xD1B5_4A32_D192_ED03);
    let alphabet = b"{}[]=\",#\n 0123456789-abcpv_\\";
    let mut answered = 0;
    for _ in 0..1500 {
        let mut t = text.clone();
        for _ in 0..1 + rnd() % 3 {
            let at = (rnd() % t.len() as u64) as usize;
            match rnd() % 3 {
                0 => t[at] = alphabet[(rnd() % alphabet.len() as u64) as usize],
                1 => t[at] = b'9',
                _ => t[at] = rnd() as u8,
            }
        }
        write_text(&mut data, mda_off, text_at, &t);
        if let Ok(pv) = lvm::analyze_pv(&data) {
            answered += 1;
            assert_eq!(pv.capture.ranges()[0].0, 0);
        }
    }
    assert!(answered > 0, "no mutation reached an answer");
}

/// Puts `text` as the current metadata of the area at `mda_off` (at `text_at`), with its size
/// and both CRCs.
fn write_text(data: &mut [u8], mda_off: u64, text_at: u64, text: &[u8]) {
    let at = text_at as usize;
    data[at..at + text.len()].copy_from_slice(text);
    let h = mda_off as usize;
    data[h + 48..h + 56].copy_from_slice(&(text.len() as u64).to_le_bytes());
    let crc = calc_crc(0xf597_a6cf, text);
    data[h + 56..h + 60].copy_from_slice(&crc.to_le_bytes());
    let hcrc = calc_crc(0xf597_a6cf, &data[h + 4..h + 512]);
    data[h..h + 4].copy_from_slice(&hcrc.to_le_bytes());
}
