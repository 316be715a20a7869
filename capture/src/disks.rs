//! Finds the machine's disks in sysfs (`/sys/class/block`) and describes them, and opens explicit
//! paths (block devices or image files) given on the command line.
//!
//! A disk is a whole block device backed by hardware: partitions, loop, ram, zram, device-mapper,
//! MD RAID, network block devices and optical drives are not disks. For each disk we report size,
//! logical and physical sector size, model, serial, WWN, rotational, removable, and the driver of
//! the controller it hangs on, found by walking up the device's ancestors in sysfs to the first
//! one bound to a driver that is not a SCSI upper-level driver (`sd`, `sr`, `st`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use p2v_protocol::inventory::{DiskInfo, DiskSource};

use crate::sysfs::{link_name, list_dir, read_attr, read_number};

/// Errors describing or opening a disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("opening {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is neither a block device nor a regular file")]
    NotADisk { path: String },
    #[error("{path} is empty")]
    Empty { path: String },
    #[error("{path} has {size} bytes, not a whole number of 512-byte sectors")]
    PartialSector { path: String, size: u64 },
    #[error("unsupported logical sector size {size} for {path} (expected 512 or 4096)")]
    SectorSize { path: String, size: u32 },
}

/// Names of block devices that are never physical disks.
fn is_virtual_name(name: &str) -> bool {
    const PREFIXES: [&str; 9] = ["loop", "ram", "zram", "dm-", "md", "nbd", "sr", "fd", "zd"];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Lists the disks of the machine from a sysfs root (normally `/sys`).
pub fn discover(sys_root: &Path) -> Vec<DiskInfo> {
    list_dir(sys_root.join("class/block"))
        .into_iter()
        .filter(|(name, dir)| {
            !is_virtual_name(name)
                && !dir.join("partition").exists()
                && read_number::<u64>(dir.join("size")).unwrap_or(0) > 0
        })
        .map(|(name, dir)| describe_sysfs(&name, &dir, &format!("/dev/{name}")))
        .collect()
}

/// Describes the block device whose sysfs directory is `dir`.
fn describe_sysfs(name: &str, dir: &Path, dev_path: &str) -> DiskInfo {
    let sectors: u64 = read_number(dir.join("size")).unwrap_or(0);
    let device = dir.join("device");
    let serial = read_attr(device.join("serial"))
        .or_else(|| read_attr(dir.join("serial")))
        .or_else(|| vpd_serial(&device));
    DiskInfo {
        name: name.to_string(),
        path: dev_path.to_string(),
        source: DiskSource::BlockDevice,
        // sysfs `size` is always in 512-byte units, whatever the logical sector size.
        size_bytes: sectors * 512,
        logical_sector_size: read_number(dir.join("queue/logical_block_size")).unwrap_or(512),
        physical_sector_size: read_number(dir.join("queue/physical_block_size")).unwrap_or(512),
        model: read_attr(device.join("model")),
        serial,
        wwn: read_attr(dir.join("wwid"))
            .or_else(|| read_attr(device.join("wwid")))
            .or_else(|| read_attr(device.join("wwn"))),
        rotational: read_number::<u8>(dir.join("queue/rotational")).map(|v| v != 0),
        removable: read_number::<u8>(dir.join("removable")).map(|v| v != 0),
        controller_driver: controller_driver(&device),
    }
}

/// The unit serial number from SCSI VPD page 0x80, when the kernel exposes it.
fn vpd_serial(device: &Path) -> Option<String> {
    let raw = std::fs::read(device.join("vpd_pg80")).ok()?;
    let text: String = raw
        .get(4..)?
        .iter()
        .filter(|b| b.is_ascii_graphic())
        .map(|&b| b as char)
        .collect();
    (!text.is_empty()).then_some(text)
}

/// Walks from a disk's `device` link up the sysfs hierarchy to the first driver that is not a
/// SCSI upper-level driver: `ahci` for SATA, `nvme` for NVMe, `megaraid_sas` for a RAID
/// controller, `usb-storage`/`uas` for USB, `virtio_blk` for a virtio disk.
fn controller_driver(device: &Path) -> Option<String> {
    const UPPER_LEVEL: [&str; 3] = ["sd", "sr", "st"];
    let mut current: PathBuf = std::fs::canonicalize(device).ok()?;
    for _ in 0..32 {
        if let Some(driver) = link_name(current.join("driver")) {
            if !UPPER_LEVEL.contains(&driver.as_str()) {
                return Some(driver);
            }
        }
        if !current.pop() || current.as_os_str() == "/sys/devices" || current.parent().is_none() {
            return None;
        }
    }
    None
}

/// An opened source of disk bytes with its description.
#[derive(Debug)]
pub struct OpenDisk {
    pub file: File,
    pub info: DiskInfo,
}

/// Opens a path given on the command line: a block device (described from sysfs through its
/// device number) or an image file (whose logical sector size is `sector_size` if given, else
/// 4096 when a GPT header sits at byte 4096 and not at 512, else 512).
pub fn open_path(
    path: &Path,
    sys_root: &Path,
    sector_size: Option<u32>,
) -> Result<OpenDisk, DiskError> {
    let display = path.display().to_string();
    let open_err = |source| DiskError::Open {
        path: display.clone(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
    let mut info = if meta.file_type().is_block_device() {
        let rdev = meta.rdev();
        let (major, minor) = (libc_major(rdev), libc_minor(rdev));
        let dir = sys_root.join(format!("dev/block/{major}:{minor}"));
        let name = std::fs::canonicalize(&dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| display.clone());
        describe_sysfs(&name, &dir, &display)
    } else if meta.file_type().is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| display.clone());
        let canonical = std::fs::canonicalize(path)
            .map(|p| p.display().to_string())
            .unwrap_or(display.clone());
        let logical = match sector_size {
            Some(s) => s,
            None => guess_image_sector_size(&mut file).map_err(open_err)?,
        };
        DiskInfo {
            name,
            path: canonical,
            source: DiskSource::ImageFile,
            size_bytes: size,
            logical_sector_size: logical,
            physical_sector_size: logical,
            model: None,
            serial: None,
            wwn: None,
            rotational: None,
            removable: None,
            controller_driver: None,
        }
    } else {
        return Err(DiskError::NotADisk { path: display });
    };
    if let (Some(s), DiskSource::BlockDevice) = (sector_size, info.source) {
        info.logical_sector_size = s;
    }
    info.size_bytes = size;
    if size == 0 {
        return Err(DiskError::Empty { path: display });
    }
    if size % 512 != 0 {
        return Err(DiskError::PartialSector {
            path: display,
            size,
        });
    }
    if !matches!(info.logical_sector_size, 512 | 4096) {
        return Err(DiskError::SectorSize {
            path: display,
            size: info.logical_sector_size,
        });
    }
    Ok(OpenDisk { file, info })
}

/// Opens a disk found by [`discover`].
pub fn open_discovered(info: DiskInfo) -> Result<OpenDisk, DiskError> {
    let file = File::open(&info.path).map_err(|source| DiskError::Open {
        path: info.path.clone(),
        source,
    })?;
    Ok(OpenDisk { file, info })
}

fn guess_image_sector_size(file: &mut File) -> io::Result<u32> {
    let mut probe = |offset: u64| -> io::Result<bool> {
        let mut sig = [0u8; 8];
        file.seek(SeekFrom::Start(offset))?;
        match file.read_exact(&mut sig) {
            Ok(()) => Ok(&sig == b"EFI PART"),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    };
    Ok(if !probe(512)? && probe(4096)? {
        4096
    } else {
        512
    })
}

/// `major()` of a Linux `dev_t` (glibc and musl encoding).
fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

/// `minor()` of a Linux `dev_t`.
fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_t_decoding() {
        // makedev(259, 1) and makedev(8, 16) as glibc encodes them.
        assert_eq!((libc_major(0x10301), libc_minor(0x10301)), (259, 1));
        assert_eq!((libc_major(0x810), libc_minor(0x810)), (8, 16));
        let big = (0x1234u64 & 0xfff) << 8
            | (0x1234u64 & !0xfff) << 32
            | (0x56789 & 0xff)
            | (0x56789u64 & !0xff) << 12;
        assert_eq!((libc_major(big), libc_minor(big)), (0x1234, 0x56789));
    }

    #[test]
    fn virtual_devices_are_not_disks() {
        for name in ["loop0", "ram1", "zram0", "dm-3", "md127", "nbd0", "sr0"] {
            assert!(is_virtual_name(name), "{name}");
        }
        for name in ["sda", "nvme0n1", "vda", "xvda", "mmcblk0"] {
            assert!(!is_virtual_name(name), "{name}");
        }
    }

    /// A fake sysfs tree shaped like a SATA disk behind AHCI.
    #[test]
    fn discovers_disks_from_a_sysfs_tree() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path();
        let pci = sys.join("devices/pci0000:00/0000:00:1f.2");
        let lun = pci.join("ata1/host0/target0:0:0/0:0:0:0");
        let block = lun.join("block/sda");
        std::fs::create_dir_all(block.join("queue")).unwrap();
        std::fs::create_dir_all(block.join("sda1")).unwrap();
        std::fs::create_dir_all(sys.join("bus/pci/drivers/ahci")).unwrap();
        std::fs::create_dir_all(sys.join("bus/scsi/drivers/sd")).unwrap();
        std::os::unix::fs::symlink(sys.join("bus/pci/drivers/ahci"), pci.join("driver")).unwrap();
        std::os::unix::fs::symlink(sys.join("bus/scsi/drivers/sd"), lun.join("driver")).unwrap();
        std::os::unix::fs::symlink(&lun, block.join("device")).unwrap();
        std::fs::write(block.join("size"), "2097152\n").unwrap();
        std::fs::write(block.join("removable"), "0\n").unwrap();
        std::fs::write(block.join("queue/logical_block_size"), "512\n").unwrap();
        std::fs::write(block.join("queue/physical_block_size"), "4096\n").unwrap();
        std::fs::write(block.join("queue/rotational"), "1\n").unwrap();
        std::fs::write(lun.join("model"), "WDC WD10EZEX    \n").unwrap();
        std::fs::write(block.join("sda1/partition"), "1\n").unwrap();
        std::fs::write(block.join("sda1/size"), "2048\n").unwrap();
        let class = sys.join("class/block");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(&block, class.join("sda")).unwrap();
        std::os::unix::fs::symlink(block.join("sda1"), class.join("sda1")).unwrap();
        let loop0 = sys.join("devices/virtual/block/loop0");
        std::fs::create_dir_all(&loop0).unwrap();
        std::fs::write(loop0.join("size"), "100\n").unwrap();
        std::os::unix::fs::symlink(&loop0, class.join("loop0")).unwrap();

        let disks = discover(sys);
        assert_eq!(disks.len(), 1, "{disks:?}");
        let d = &disks[0];
        assert_eq!(d.name, "sda");
        assert_eq!(d.path, "/dev/sda");
        assert_eq!(d.size_bytes, 1 << 30);
        assert_eq!((d.logical_sector_size, d.physical_sector_size), (512, 4096));
        assert_eq!(d.model.as_deref(), Some("WDC WD10EZEX"));
        assert_eq!(d.rotational, Some(true));
        assert_eq!(d.removable, Some(false));
        assert_eq!(d.controller_driver.as_deref(), Some("ahci"));
    }

    #[test]
    fn image_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("odd.img");
        std::fs::write(&odd, vec![0u8; 1000]).unwrap();
        let err = open_path(&odd, Path::new("/sys"), None).unwrap_err();
        assert!(err.to_string().contains("512-byte sectors"), "{err}");
        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            open_path(&empty, Path::new("/sys"), None),
            Err(DiskError::Empty { .. })
        ));
        let missing = open_path(&dir.path().join("nope"), Path::new("/sys"), None).unwrap_err();
        assert!(missing.to_string().contains("nope"));

        let mut gpt4k = vec![0u8; 16384];
        gpt4k[4096..4104].copy_from_slice(b"EFI PART");
        let img = dir.path().join("4k.img");
        std::fs::write(&img, gpt4k).unwrap();
        let disk = open_path(&img, Path::new("/sys"), None).unwrap();
        assert_eq!(disk.info.logical_sector_size, 4096);
        assert_eq!(disk.info.source, DiskSource::ImageFile);
    }
}
