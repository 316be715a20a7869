//! File-system-aware capture, end to end: for each filesystem type a fixture disk whose free
//! space holds old data is captured through the server and rebuilt, then the filesystem's own
//! checker must be clean on the rebuilt partition, every file must have the SHA-256 it had when
//! the fixture was made, and the bytes captured must stay within what partclone (an independent
//! reader of the same allocation structures) says is in use, plus 2%.

use std::path::{Path, PathBuf};

use p2v_protocol::layout::{AreaReport, CaptureMap};
use p2v_tests::*;
use tempfile::TempDir;

const PART_START: u64 = 1 << 20;

/// How the test reads the files of a rebuilt partition (ext4 is also bounded by partclone, and
/// ext4 with bigalloc by dumpe2fs).
enum Files {
    /// A kernel loop mount with these options.
    Kernel(&'static str),
    /// A FUSE driver over a loop device.
    Fuse(&'static str),
    /// mtools (FAT): copy everything out.
    Mtools,
}

struct Case {
    fixture: &'static str,
    content: &'static str,
    /// The filesystem's checker, run with the partition image appended.
    checker: &'static [&'static str],
    files: Files,
    /// partclone tool for the captured-bytes bound (None: bound checked otherwise).
    partclone: Option<&'static str>,
}

struct Captured {
    _work: TempDir,
    work: PathBuf,
    map: CaptureMap,
    rebuilt: PathBuf,
    source: PathBuf,
}

fn capture_fixture(fixture: &str, extra: &[&str]) -> Captured {
    let work = TempDir::new().unwrap();
    let server = Server::start(&work.path().join("data")).unwrap();
    let token = server.create_token().unwrap();
    let source = fs_fixtures().join(format!("fs-{fixture}.img"));
    let report = capture_json(&server, &token, &source, extra);
    let disk = &report["disks"][0];
    let map: CaptureMap = serde_json::from_value(disk["capture_map"].clone()).unwrap();
    // The server keeps the same report.
    let stored = server
        .disks()
        .unwrap()
        .remove(0)
        .capture_map
        .expect("the server stores the capture report");
    assert_eq!(stored, map);
    let rebuilt = work.path().join("rebuilt.raw");
    server
        .export(disk["disk_id"].as_str().unwrap(), "raw", &rebuilt)
        .unwrap();
    let work_path = work.path().to_path_buf();
    Captured {
        _work: work,
        work: work_path,
        map,
        rebuilt,
        source,
    }
}

fn partition_area(map: &CaptureMap) -> &AreaReport {
    map.areas
        .iter()
        .find(|a| a.partition == Some(1))
        .unwrap_or_else(|| panic!("no partition 1 in {map:?}"))
}

/// Outside the partition (protective MBR, GPT headers and tables at both ends) the rebuilt disk
/// is byte-identical to the source.
fn assert_outside_identical(c: &Captured, part_len: u64) {
    let size = std::fs::metadata(&c.source).unwrap().len();
    for (offset, len) in [
        (0, PART_START),
        (PART_START + part_len, size - PART_START - part_len),
    ] {
        let a = c.work.join("a.bin");
        let b = c.work.join("b.bin");
        extract(&c.source, offset, len, &a).unwrap();
        extract(&c.rebuilt, offset, len, &b).unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "bytes at {offset}+{len} differ"
        );
    }
}

fn check_files(files: &Files, partition: &Path, manifest: &Path, work: &Path) {
    let root = work.join("files");
    let _mounted = match files {
        Files::Kernel(options) => Some(Mounted::kernel(partition, &root, options).unwrap()),
        Files::Fuse(program) => Some(Mounted::fuse(program, partition, &root).unwrap()),
        Files::Mtools => {
            std::fs::create_dir_all(&root).unwrap();
            let out = std::process::Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args([
                    "-s",
                    "-n",
                    "-i",
                    partition.to_str().unwrap(),
                    "::/*",
                    root.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "mcopy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
    };
    let manifest_text = std::fs::read_to_string(manifest).unwrap();
    assert!(
        manifest_text.lines().count() >= 20,
        "the fixture has files: {manifest_text}"
    );
    let out = std::process::Command::new("sha256sum")
        .args(["--check", "--strict", "--quiet", manifest.to_str().unwrap()])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "files differ after the round trip:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_case(case: &Case) {
    let c = capture_fixture(case.fixture, &[]);
    let area = partition_area(&c.map).clone();
    assert_eq!(area.content, case.content, "{:?}", c.map);
    assert_eq!(
        area.fallback, None,
        "the map must be trusted for a clean {}",
        case.content
    );
    let source_part = c.work.join("source.part");
    let rebuilt_part = c.work.join("rebuilt.part");
    extract(&c.source, PART_START, area.size_bytes, &source_part).unwrap();
    extract(&c.rebuilt, PART_START, area.size_bytes, &rebuilt_part).unwrap();
    assert_outside_identical(&c, area.size_bytes);

    if !case.checker.is_empty() {
        let mut args: Vec<&str> = case.checker[1..].to_vec();
        args.push(rebuilt_part.to_str().unwrap());
        run(case.checker[0], &args)
            .unwrap_or_else(|e| panic!("checker on the rebuilt {}: {e:#}", case.content));
    }
    check_files(
        &case.files,
        &rebuilt_part,
        &fs_fixtures().join(format!("fs-{}.sha256", case.fixture)),
        &c.work,
    );

    if let Some(tool) = case.partclone {
        // partclone 0.3.23 cannot read bigalloc and misreads FAT12, so ext and FAT use their own
        // tools' counts (dumpe2fs, fsck.fat), which are independent of our parsers all the same.
        let used = match tool {
            "dumpe2fs" => dumpe2fs_used_bytes(&source_part),
            "fsck.fat" => fsck_fat_used_bytes(&source_part),
            _ => partclone_used_bytes(tool, &source_part),
        }
        .unwrap();
        let bound = used + used / 50 + (64 << 10);
        assert!(
            area.captured_bytes <= bound,
            "{}: captured {} bytes, partclone says {used} in use (bound {bound})",
            case.content,
            area.captured_bytes
        );
        assert!(
            area.captured_bytes < area.size_bytes * 9 / 10,
            "free space was skipped: {area:?}"
        );
    }
}

macro_rules! fs_case {
    ($test:ident, $fixture:literal, $content:literal, [$($checker:literal),*], $files:expr, $partclone:expr) => {
        #[test]
        fn $test() {
            run_case(&Case {
                fixture: $fixture,
                content: $content,
                checker: &[$($checker),*],
                files: $files,
                partclone: $partclone,
            });
        }
    };
}

fs_case!(
    ext2_round_trips,
    "ext2",
    "ext2",
    ["e2fsck", "-fn"],
    Files::Kernel("ro"),
    Some("dumpe2fs")
);
fs_case!(
    ext3_round_trips,
    "ext3",
    "ext3",
    ["e2fsck", "-fn"],
    Files::Kernel("ro,noload"),
    Some("dumpe2fs")
);
fs_case!(
    ext4_round_trips,
    "ext4",
    "ext4",
    ["e2fsck", "-fn"],
    Files::Kernel("ro,noload"),
    Some("partclone.ext4")
);
fs_case!(
    ext4_bigalloc_round_trips,
    "ext4-bigalloc",
    "ext4",
    ["e2fsck", "-fn"],
    Files::Kernel("ro,noload"),
    Some("dumpe2fs")
);
fs_case!(
    xfs_round_trips,
    "xfs",
    "xfs",
    ["xfs_repair", "-n", "-f"],
    Files::Kernel("ro,norecovery"),
    Some("partclone.xfs")
);
fs_case!(
    ntfs_round_trips,
    "ntfs",
    "ntfs",
    ["ntfsfix", "-n"],
    Files::Fuse("ntfs-3g"),
    Some("partclone.ntfs")
);
fs_case!(
    fat12_round_trips,
    "fat12",
    "fat12",
    ["fsck.vfat", "-n"],
    Files::Mtools,
    Some("fsck.fat")
);
fs_case!(
    fat16_round_trips,
    "fat16",
    "fat16",
    ["fsck.vfat", "-n"],
    Files::Mtools,
    Some("fsck.fat")
);
fs_case!(
    fat32_round_trips,
    "fat32",
    "fat32",
    ["fsck.vfat", "-n"],
    Files::Mtools,
    Some("fsck.fat")
);
fs_case!(
    exfat_round_trips,
    "exfat",
    "exfat",
    ["fsck.exfat", "-n"],
    Files::Fuse("mount.exfat-fuse"),
    Some("partclone.exfat")
);

/// btrfs is mapped by its extent tree, so its bound comes from btrfs-progs: the superblock's
/// `bytes_used` (data and metadata, each once) plus a second copy of every tree block (DUP
/// metadata), the first MiB and 2%; and it must stay well under what the chunks allocate.
#[test]
fn btrfs_with_a_subvolume_round_trips() {
    let c = capture_fixture("btrfs", &[]);
    let area = partition_area(&c.map).clone();
    assert_eq!(
        (area.content.as_str(), area.fallback.as_deref()),
        ("btrfs", None)
    );
    let part = c.work.join("rebuilt.part");
    extract(&c.rebuilt, PART_START, area.size_bytes, &part).unwrap();
    assert_outside_identical(&c, area.size_bytes);
    run("btrfs", &["check", "--readonly", part.to_str().unwrap()]).unwrap();
    check_files(
        &Files::Kernel("ro"),
        &part,
        &fs_fixtures().join("fs-btrfs.sha256"),
        &c.work,
    );
    let part = part.to_str().unwrap();
    let super_dump = run("btrfs", &["inspect-internal", "dump-super", part]).unwrap();
    let value = |name: &str| -> u64 {
        super_dump
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in dump-super"))
    };
    let (allocated, used, nodesize) = (
        value("dev_item.bytes_used"),
        value("bytes_used"),
        value("nodesize"),
    );
    let tree_blocks = run(
        "btrfs",
        &["inspect-internal", "dump-tree", "-t", "extent", part],
    )
    .unwrap()
    .matches("flags TREE_BLOCK")
    .count() as u64;
    let bound = used + tree_blocks * nodesize + (1 << 20) + (64 << 10) + used / 50;
    assert!(
        area.captured_bytes <= bound,
        "captured {} > bound {bound} (bytes_used {used}, {tree_blocks} tree blocks)",
        area.captured_bytes
    );
    assert_eq!(area.fs_used_bytes, Some(used));
    assert!(
        area.captured_bytes < allocated / 2,
        "captured {} of the {allocated} bytes the chunks allocate",
        area.captured_bytes
    );
}

#[test]
fn swap_header_only() {
    let c = capture_fixture("swap", &[]);
    let area = partition_area(&c.map);
    assert!(area.captured_bytes <= 64 << 10, "{area:?}");
    let part = c.work.join("rebuilt.part");
    extract(&c.rebuilt, PART_START, area.size_bytes, &part).unwrap();
    assert_eq!(
        run(
            "blkid",
            &["-o", "value", "-s", "TYPE", part.to_str().unwrap()]
        )
        .unwrap()
        .trim(),
        "swap"
    );
}

#[test]
fn luks_is_captured_whole_with_a_note() {
    let c = capture_fixture("luks", &[]);
    let area = partition_area(&c.map);
    assert_eq!(area.content, "luks2");
    assert!(
        area.fallback
            .as_deref()
            .unwrap_or_default()
            .contains("LUKS"),
        "{area:?}"
    );
    assert_eq!(area.captured_bytes, area.size_bytes);
    qemu_img_compare(&c.source, "raw", &c.rebuilt, "raw").unwrap();
}

/// Two LVs (ext4 and XFS) in a volume group: each is mapped by its own filesystem, unallocated
/// PV space is free, and both filesystems check clean with all files intact.
#[test]
fn lvm_volume_group_with_ext4_and_xfs_round_trips() {
    let c = capture_fixture("lvm", &[]);
    let pv = partition_area(&c.map).clone();
    assert!(pv.content.starts_with("lvm2_pv"), "{:?}", c.map);
    assert_eq!(pv.fallback, None);
    let lvs: Vec<_> = c.map.areas.iter().filter(|a| a.volume.is_some()).collect();
    let mut names: Vec<_> = lvs
        .iter()
        .map(|a| (a.volume.clone().unwrap(), a.content.clone()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("p2vtest/data".to_string(), "xfs".to_string()),
            ("p2vtest/root".to_string(), "ext4".to_string())
        ]
    );
    let pe_start: u64 = std::fs::read_to_string(fs_fixtures().join("fs-lvm.pe_start"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for (name, offset, size, checker, options) in [
        (
            "root",
            0u64,
            64u64 << 20,
            vec!["e2fsck", "-fn"],
            "ro,noload",
        ),
        (
            "data",
            64 << 20,
            320 << 20,
            vec!["xfs_repair", "-n", "-f"],
            "ro,norecovery",
        ),
    ] {
        let part = c.work.join(format!("lv-{name}.part"));
        extract(&c.rebuilt, PART_START + pe_start + offset, size, &part).unwrap();
        let mut args = checker[1..].to_vec();
        args.push(part.to_str().unwrap());
        run(checker[0], &args).unwrap_or_else(|e| panic!("LV {name}: {e:#}"));
        check_files(
            &Files::Kernel(options),
            &part,
            &fs_fixtures().join(format!("fs-lvm-{name}.sha256")),
            &c.work.join(name),
        );
    }
    assert!(
        pv.captured_bytes * 2 < pv.size_bytes,
        "free PV space and free LV space were skipped: {pv:?}"
    );
}

/// A damaged superblock (or a metadata checksum that does not match) makes the parser give up:
/// the whole partition is captured with the reason, and the rebuilt disk is byte-identical.
fn corrupted_case(fixture: &str, offset_in_partition: u64, byte: u8) {
    let work = TempDir::new().unwrap();
    let copy = work.path().join(format!("fs-{fixture}-corrupt.img"));
    std::fs::copy(fs_fixtures().join(format!("fs-{fixture}.img")), &copy).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        f.write_all_at(&[byte], PART_START + offset_in_partition)
            .unwrap();
    }
    let server = Server::start(&work.path().join("data")).unwrap();
    let token = server.create_token().unwrap();
    let mut args = server.agent_args(&token);
    args.extend([
        "--json".into(),
        "--no-progress".into(),
        copy.display().to_string(),
    ]);
    let report = agent_report(&run_agent(&args).unwrap()).unwrap();
    let map: CaptureMap =
        serde_json::from_value(report["disks"][0]["capture_map"].clone()).unwrap();
    let area = partition_area(&map);
    assert!(
        area.fallback.is_some(),
        "{fixture}: corruption not noticed: {area:?}"
    );
    assert_eq!(area.captured_bytes, area.size_bytes);
    let rebuilt = work.path().join("rebuilt.raw");
    server
        .export(
            report["disks"][0]["disk_id"].as_str().unwrap(),
            "raw",
            &rebuilt,
        )
        .unwrap();
    qemu_img_compare(&copy, "raw", &rebuilt, "raw").unwrap();
}

#[test]
fn corrupted_ext4_superblock_falls_back() {
    // s_volume_name: covered by the superblock's metadata_csum.
    corrupted_case("ext4", 1024 + 120, b'X');
}

#[test]
fn corrupted_xfs_superblock_falls_back() {
    // sb_fname: covered by the v5 superblock CRC.
    corrupted_case("xfs", 108, b'X');
}

#[test]
fn corrupted_btrfs_superblock_falls_back() {
    // The label, covered by the superblock checksum.
    corrupted_case("btrfs", 0x10000 + 0x12b, b'X');
}

#[test]
fn corrupted_ntfs_boot_sector_falls_back() {
    // Sectors per cluster 3: not a power of two.
    corrupted_case("ntfs", 13, 3);
}

#[test]
fn corrupted_fat32_boot_sector_falls_back() {
    // Sectors per cluster 3.
    corrupted_case("fat32", 13, 3);
}

#[test]
fn corrupted_exfat_boot_sector_falls_back() {
    // BytesPerSectorShift 20: beyond the 4 KiB the specification allows.
    corrupted_case("exfat", 108, 20);
}

/// `--whole-disk` reads everything: identical bytes, free space included.
#[test]
fn whole_disk_mode_copies_free_space_too() {
    let c = capture_fixture("ext4", &["--whole-disk"]);
    assert_eq!(c.map.mode, p2v_protocol::layout::CaptureMode::WholeDisk);
    qemu_img_compare(&c.source, "raw", &c.rebuilt, "raw").unwrap();
}

#[test]
fn corrupted_ext2_superblock_falls_back() {
    // s_blocks_per_group 8193: the group count no longer matches the block count (ext2 has no
    // checksums, so the geometry check is what notices).
    corrupted_case("ext2", 1024 + 32, 0x01);
}

#[test]
fn corrupted_lvm_label_falls_back() {
    // Inside the PV header, covered by the label's CRC.
    corrupted_case("lvm", 512 + 40, b'X');
}

#[test]
fn corrupted_fat16_boot_sector_falls_back() {
    corrupted_case("fat16", 13, 3);
}
