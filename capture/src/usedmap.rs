//! Decides which bytes of a disk to read: everything outside filesystems (partition tables, boot
//! code, gaps, BIOS boot partitions), and inside each partition only what its filesystem uses,
//! as `p2v-fsmap` maps it. Free space is sent as zeros, which the server keeps as holes.

use std::fs::File;
use std::os::unix::fs::FileExt;

use p2v_fsmap::{Analysis, Content, Extents, ReadAt, Window};
use p2v_protocol::layout::{AreaReport, CaptureMap, CaptureMode, PartitionKind, PartitionTable};

/// A disk file as a [`ReadAt`].
#[derive(Debug)]
pub struct DiskReader<'a> {
    pub file: &'a File,
    pub size: u64,
}

impl ReadAt for DiskReader<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.size
    }
}

/// The bytes to capture and the report that explains them.
#[derive(Debug, Clone)]
pub struct DiskMap {
    /// Byte ranges of the disk to read; `None` means all of it.
    pub capture: Option<Extents>,
    pub report: CaptureMap,
}

/// The name of a detected content for reports.
pub fn content_name(content: &Content) -> String {
    match content {
        Content::Ext { version } => format!("ext{version}"),
        Content::Fat { bits } => format!("fat{bits}"),
        Content::Luks { version } => format!("luks{version}"),
        Content::Xfs => "xfs".into(),
        Content::Ntfs => "ntfs".into(),
        Content::Exfat => "exfat".into(),
        Content::Btrfs => "btrfs".into(),
        Content::Swap => "swap".into(),
        Content::Lvm2Pv => "lvm2_pv".into(),
        Content::MdRaid => "md_raid".into(),
        Content::Unknown => "unknown".into(),
    }
}

fn area_report(partition: Option<u32>, start: u64, size: u64, analysis: &Analysis) -> AreaReport {
    AreaReport {
        partition,
        volume: None,
        start_bytes: start,
        size_bytes: size,
        content: content_name(&analysis.content),
        fs_used_bytes: analysis.fs_used_bytes,
        captured_bytes: analysis.capture.total(),
        fallback: analysis.fallback.clone(),
    }
}

/// A map that captures every byte.
pub fn whole_disk(size: u64) -> DiskMap {
    DiskMap {
        capture: None,
        report: CaptureMap {
            mode: CaptureMode::WholeDisk,
            areas: Vec::new(),
            outside_bytes: size,
            captured_bytes: size,
        },
    }
}

/// Maps a disk: analyzes every partition (or the whole disk when it has no partition table)
/// and captures the union of what each filesystem uses and everything outside partitions.
pub fn map_disk(file: &File, size: u64, table: &PartitionTable) -> DiskMap {
    let disk = DiskReader { file, size };
    let areas: Vec<(Option<u32>, u64, u64)> = match table {
        PartitionTable::None => vec![(None, 0, size)],
        PartitionTable::Mbr { partitions, .. } | PartitionTable::Gpt { partitions, .. } => {
            partitions
                .iter()
                .filter(|p| p.kind != PartitionKind::Extended)
                .filter(|p| p.size_bytes > 0 && p.start_bytes < size)
                .map(|p| {
                    (
                        Some(p.number),
                        p.start_bytes,
                        p.size_bytes.min(size - p.start_bytes),
                    )
                })
                .collect()
        }
    };
    // Start from the whole disk and take away each area's free space. Overlapping partitions
    // (a hostile or broken table) can only take away what every overlapping area calls free,
    // because an area's used bytes are added back at the end.
    let mut free_total = Extents::new();
    let mut used_total = Extents::new();
    let mut reports = Vec::new();
    for (partition, start, len) in areas {
        let window = Window {
            inner: &disk,
            start,
            len,
        };
        let analysis = p2v_fsmap::analyze(&window);
        free_total.add_shifted(&analysis.capture.complement(len), start);
        used_total.add_shifted(&analysis.capture, start);
        let report = area_report(partition, start, len, &analysis);
        if analysis.content == Content::Lvm2Pv {
            // One line per logical volume as well (the PV's own map already covers them).
            if let Ok(pv) = p2v_fsmap::lvm::analyze_pv(&window) {
                reports.push(AreaReport {
                    content: format!("lvm2_pv ({})", pv.vg_name),
                    ..report
                });
                for lv in &pv.lvs {
                    let mut lv_report = area_report(None, start, lv.size_bytes, &lv.analysis);
                    lv_report.volume = Some(format!("{}/{}", pv.vg_name, lv.name));
                    reports.push(lv_report);
                }
                continue;
            }
        }
        reports.push(report);
    }
    let mut capture = free_total.complement(size);
    for &(s, l) in used_total.ranges() {
        capture.add(s, l);
    }
    let analyzed: u64 = reports
        .iter()
        .filter(|r| r.volume.is_none())
        .map(|r| r.size_bytes)
        .sum();
    let captured_bytes = capture.total();
    DiskMap {
        report: CaptureMap {
            mode: CaptureMode::UsedBlocks,
            outside_bytes: size.saturating_sub(analyzed),
            captured_bytes,
            areas: reports,
        },
        capture: Some(capture),
    }
}

/// The byte ranges of `map` inside `[start, start + len)`, relative to `start`.
pub fn ranges_in(map: &Extents, start: u64, len: u64) -> Vec<(u64, u64)> {
    let ranges = map.ranges();
    let first = ranges.partition_point(|&(s, l)| s + l <= start);
    let end = start + len;
    ranges[first..]
        .iter()
        .take_while(|&&(s, _)| s < end)
        .map(|&(s, l)| {
            let from = s.max(start);
            let to = (s + l).min(end);
            (from - start, to - from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_inside_a_chunk() {
        let mut map = Extents::new();
        map.add(0, 100);
        map.add(150, 100);
        map.add(1000, 10);
        assert_eq!(ranges_in(&map, 50, 150), vec![(0, 50), (100, 50)]);
        assert_eq!(ranges_in(&map, 300, 500), vec![]);
        assert_eq!(
            ranges_in(&map, 0, 2000),
            vec![(0, 100), (150, 100), (1000, 10)]
        );
        assert_eq!(ranges_in(&map, 1005, 100), vec![(0, 5)]);
    }

    #[test]
    fn unknown_content_is_captured_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.img");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let file = File::open(&path).unwrap();
        let map = map_disk(&file, 1 << 20, &PartitionTable::None);
        assert_eq!(map.capture.unwrap().total(), 1 << 20);
        assert_eq!(map.report.areas.len(), 1);
        assert!(map.report.areas[0].fallback.is_some());
    }
}
