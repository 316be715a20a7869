//! The agent's partition-table reader on real tables written by sfdisk, fdisk and sgdisk
//! (independent tools), including the protective/hybrid MBR cases and damaged GPT copies.

use std::fs::File;
use std::path::{Path, PathBuf};

use p2v_capture::layout::read_partition_table;
use p2v_protocol::layout::{PartitionTable, ProtectiveMbr};
use p2v_tests::{fixture_copy, fixtures, run};
use tempfile::TempDir;

fn read(path: &Path, sector_size: u32) -> PartitionTable {
    read_partition_table(&mut File::open(path).unwrap(), sector_size).unwrap()
}

/// sfdisk's own dump of the table: (start sector, size in sectors) per partition.
fn sfdisk_extents(path: &Path) -> Vec<(u64, u64)> {
    let json: serde_json::Value =
        serde_json::from_str(&run("sfdisk", &["--json", path.to_str().unwrap()]).unwrap()).unwrap();
    json["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap()))
        .collect()
}

#[test]
fn gpt_matches_sfdisk() {
    let path = fixtures().join("gpt.img");
    let PartitionTable::Gpt {
        partitions,
        mbr,
        backup_header_ok,
        disk_guid,
    } = read(&path, 512)
    else {
        panic!("not GPT")
    };
    assert_eq!(mbr, ProtectiveMbr::Protective);
    assert!(backup_header_ok);
    let dump = run("sfdisk", &["--dump", path.to_str().unwrap()]).unwrap();
    assert!(dump.contains(&format!("label-id: {disk_guid}")), "{dump}");
    let ours: Vec<_> = partitions
        .iter()
        .map(|p| (p.start_bytes / 512, p.size_bytes / 512))
        .collect();
    assert_eq!(ours, sfdisk_extents(&path));
}

#[test]
fn mbr_matches_sfdisk() {
    let path = fixtures().join("mbr.img");
    let PartitionTable::Mbr { partitions, .. } = read(&path, 512) else {
        panic!("not MBR")
    };
    let ours: Vec<_> = partitions
        .iter()
        .map(|p| (p.start_bytes / 512, p.size_bytes / 512))
        .collect();
    assert_eq!(ours, sfdisk_extents(&path));
}

#[test]
fn gpt_with_4096_byte_sectors() {
    let path = fixtures().join("gpt-4k.img");
    let PartitionTable::Gpt { partitions, .. } = read(&path, 4096) else {
        panic!("not GPT")
    };
    assert_eq!(partitions.len(), 1);
    assert_eq!(partitions[0].start_bytes, 256 * 4096);
    // Read with the wrong sector size, the disk shows only its protective MBR.
    assert!(matches!(
        read(&path, 512),
        PartitionTable::Mbr { .. } | PartitionTable::None
    ));
}

/// A copy of gpt.img with one 512-byte sector zeroed; `sector` gets the disk's sector count.
fn gpt_copy_with_zeroed_sector(work: &Path, name: &str, sector: impl Fn(u64) -> u64) -> PathBuf {
    let path = work.join(name);
    std::fs::copy(fixtures().join("gpt.img"), &path).unwrap();
    let sectors = std::fs::metadata(&path).unwrap().len() / 512;
    run(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", path.display()),
            "bs=512",
            &format!("seek={}", sector(sectors)),
            "count=1",
            "conv=notrunc",
        ],
    )
    .unwrap();
    path
}

#[test]
fn hybrid_missing_and_damaged_mbr_and_backup() {
    let work = TempDir::new().unwrap();
    let hybrid = fixture_copy("gpt.img", work.path());
    run("sgdisk", &["--hybrid=1", hybrid.to_str().unwrap()]).unwrap();
    let PartitionTable::Gpt {
        mbr, partitions, ..
    } = read(&hybrid, 512)
    else {
        panic!("not GPT")
    };
    assert_eq!(mbr, ProtectiveMbr::Hybrid);
    assert_eq!(partitions.len(), 3);

    // No MBR at all: still GPT.
    let nombr_path = gpt_copy_with_zeroed_sector(work.path(), "nombr.img", |_| 0);
    let PartitionTable::Gpt {
        mbr, partitions, ..
    } = read(&nombr_path, 512)
    else {
        panic!("not GPT")
    };
    assert_eq!(mbr, ProtectiveMbr::Missing);
    assert_eq!(partitions.len(), 3);

    // Primary header destroyed: the backup header at the end still gives the table.
    let primary_gone = gpt_copy_with_zeroed_sector(work.path(), "primary-gone.img", |_| 1);
    let PartitionTable::Gpt {
        partitions,
        backup_header_ok,
        ..
    } = read(&primary_gone, 512)
    else {
        panic!("not GPT")
    };
    assert!(backup_header_ok);
    assert_eq!(partitions.len(), 3);

    // Backup header destroyed: reported, table still read from the primary.
    let backup_gone = gpt_copy_with_zeroed_sector(work.path(), "backup-gone.img", |n| n - 1);
    let PartitionTable::Gpt {
        backup_header_ok,
        partitions,
        ..
    } = read(&backup_gone, 512)
    else {
        panic!("not GPT")
    };
    assert!(!backup_header_ok);
    assert_eq!(partitions.len(), 3);
}

#[test]
fn blank_disk_has_no_table() {
    assert_eq!(
        read(&fixtures().join("blank.img"), 512),
        PartitionTable::None
    );
}
