//! The guest's disks, partitions and file systems, mounted for inspection and conversion.
//!
//! ```text
//! JobDisk.device ──table::read_table──▶ partitions ──fsmap detect + identity──▶ PartitionInfo
//!      │                                     │
//!      │      appliance: /dev/vdb1 (sysfs)   │ direct mode: losetup --offset --sizelimit
//!      ▼                                     ▼
//! Guest::mount: probe each Linux file system read-only until one holds /etc/os-release (the
//! root), then mount the other local file systems its /etc/fstab lists, below it, at mount
//! points resolved inside the guest (GuestRoot). Dropping the Guest unmounts everything in
//! reverse order and detaches the loop devices.
//! ```
//!
//! Dry runs mount read-only without journal or log replay (`noload` for ext3/4, `norecovery`
//! for XFS, `rescue=nologreplay` for btrfs) over read-only loop devices, so that not one byte
//! of the guest changes. Real runs mount read-write.

pub mod mount;
pub mod sys;
pub mod table;

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use p2v_fsmap::{Content, ReadAt};
use serde::{Deserialize, Serialize};

use crate::inspect::fstab::{self, Spec};
use crate::inspect::{FstabEntry, GuestRoot};
use crate::job::JobDisk;
use crate::Error;
use mount::{Loops, Mounts};

/// One partition (or a whole disk without a partition table) of the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionInfo {
    /// Index of the disk in the job (`JobDisk::index`).
    pub disk_index: usize,
    /// Partition number (1-based, as in `/dev/sda1`); 0 for a whole disk.
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// GPT partition type GUID or MBR type byte (`0x83`), as text.
    pub part_type: Option<String>,
    /// GPT partition GUID or MBR `DISKID-NN` (what `PARTUUID=` names).
    pub partuuid: Option<String>,
    /// File system detected (`ext4`, `xfs`, `vfat`, `swap`, ...).
    pub fs_type: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// Where it is visible now (`/dev/vda1`, a loop device).
    pub device: Option<String>,
}

/// The note the report carries when a guest uses LVM.
pub const LVM_NOTE: &str = "LVM root not supported in this version";

/// A disk (image file or block device) read through `pread`.
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    size: u64,
}

impl DiskFile {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // The end of a block device is where seeking to the end lands (its metadata says 0).
        let size = {
            use std::io::{Seek, SeekFrom};
            let mut f = &file;
            f.seek(SeekFrom::End(0)).map_err(|e| Error::io(path, e))?
        };
        Ok(DiskFile { file, size })
    }
}

impl ReadAt for DiskFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read beyond the end of the disk",
            ));
        }
        self.file.read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.size
    }
}

/// The kernel name of a block device path (`/dev/vdb` -> `vdb`) when sysfs knows it.
fn sysfs_block_name(device: &Path) -> Option<String> {
    let meta = std::fs::metadata(device).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let name = std::fs::canonicalize(device).ok()?;
    let name = name.file_name()?.to_str()?.to_string();
    Path::new("/sys/class/block")
        .join(&name)
        .exists()
        .then_some(name)
}

/// The device node the kernel made for partition `number` of disk `name`, if any
/// (`/sys/class/block/vdb/vdb1/partition` holds `1`).
fn partition_node(name: &str, number: u32) -> Option<PathBuf> {
    let dir = Path::new("/sys/class/block").join(name);
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let Ok(n) = std::fs::read_to_string(entry.path().join("partition")) else {
            continue;
        };
        if n.trim().parse::<u32>().ok() == Some(number) {
            let node = Path::new("/dev").join(entry.file_name());
            return node.exists().then_some(node);
        }
    }
    None
}

/// Logical sector size of a block device (sysfs), 512 for an image file.
fn sector_size(device: &Path) -> u64 {
    sysfs_block_name(device)
        .and_then(|n| {
            std::fs::read_to_string(format!("/sys/class/block/{n}/queue/logical_block_size")).ok()
        })
        .and_then(|s| s.trim().parse().ok())
        .filter(|s| [512, 4096].contains(s))
        .unwrap_or(512)
}

/// The blkid name of a detected content.
pub fn fs_name(content: &Content) -> Option<&'static str> {
    Some(match content {
        Content::Ext { version: 2 } => "ext2",
        Content::Ext { version: 3 } => "ext3",
        Content::Ext { .. } => "ext4",
        Content::Xfs => "xfs",
        Content::Ntfs => "ntfs",
        Content::Fat { .. } => "vfat",
        Content::Exfat => "exfat",
        Content::Btrfs => "btrfs",
        Content::Swap => "swap",
        Content::Lvm2Pv => "LVM2_member",
        Content::Luks { .. } => "crypto_LUKS",
        Content::MdRaid => "linux_raid_member",
        Content::Unknown => return None,
    })
}

/// Reads the partitions of every disk that has a `device`. Problems with one disk (an
/// unreadable device, a corrupted table) are returned as messages; the other disks go on.
pub fn discover(disks: &[JobDisk]) -> (Vec<PartitionInfo>, Vec<String>) {
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    for disk in disks {
        let Some(device) = &disk.device else {
            problems.push(format!(
                "disk {} ({}): no device given, not inspected",
                disk.index, disk.disk_id
            ));
            continue;
        };
        match discover_disk(disk, Path::new(device)) {
            Ok(mut p) => parts.append(&mut p),
            Err(e) => problems.push(format!("disk {} ({device}): {e}", disk.index)),
        }
    }
    (parts, problems)
}

fn discover_disk(disk: &JobDisk, device: &Path) -> Result<Vec<PartitionInfo>, Error> {
    let file = DiskFile::open(device)?;
    let table = table::read_table(&file, sector_size(device))?;
    let sysfs = sysfs_block_name(device);
    let mut out = Vec::new();
    let mut areas = table.entries().to_vec();
    if matches!(table, table::Table::None) {
        areas.push(table::TableEntry {
            number: 0,
            start_bytes: 0,
            size_bytes: file.size(),
            part_type: String::new(),
            partuuid: String::new(),
            extended: false,
        });
    }
    for e in areas {
        let (number, start, size) = (e.number, e.start_bytes, e.size_bytes);
        let mut info = PartitionInfo {
            disk_index: disk.index,
            number,
            start_bytes: start,
            size_bytes: size,
            part_type: Some(e.part_type).filter(|t| !t.is_empty()),
            partuuid: Some(e.partuuid).filter(|t| !t.is_empty()),
            fs_type: None,
            uuid: None,
            label: None,
            device: None,
        };
        if !e.extended {
            let area = p2v_fsmap::Window {
                inner: &file,
                start,
                len: size,
            };
            match p2v_fsmap::detect(&area) {
                Ok(content) => info.fs_type = fs_name(&content).map(str::to_string),
                Err(e) => {
                    tracing::warn!(disk = disk.index, number, "file system not recognized: {e}")
                }
            }
            match p2v_fsmap::identity::identity(&area) {
                Ok(Some(id)) => {
                    info.fs_type = Some(id.fs_type.to_string());
                    (info.uuid, info.label) = (id.uuid, id.label);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(disk = disk.index, number, "no UUID/label: {e}"),
            }
        }
        info.device = if number == 0 {
            Some(device.display().to_string())
        } else {
            sysfs
                .as_deref()
                .and_then(|n| partition_node(n, number))
                .map(|p| p.display().to_string())
        };
        out.push(info);
    }
    Ok(out)
}

/// File systems the converter mounts (the host kernel or the appliance's).
fn mountable(fs: Option<&str>) -> bool {
    matches!(
        fs,
        Some("ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "vfat")
    )
}

/// Candidates for the root file system.
fn linux_fs(fs: Option<&str>) -> bool {
    matches!(fs, Some("ext2" | "ext3" | "ext4" | "xfs" | "btrfs"))
}

/// The kernel's name for a detected file system, and the options of a mount that must not
/// write (no journal or log replay).
fn mount_type(fs: &str, read_only: bool) -> (&'static str, Option<&'static str>) {
    match fs {
        "ext2" | "ext3" | "ext4" => ("ext4", read_only.then_some("noload")),
        "xfs" => ("xfs", read_only.then_some("norecovery")),
        "btrfs" => ("btrfs", read_only.then_some("rescue=nologreplay")),
        _ => ("vfat", None),
    }
}

/// Mount points whose file system the conversion needs: if one of them cannot be mounted,
/// the conversion must not write (it would change the wrong files).
fn essential(mount_point: &str) -> bool {
    ["/boot", "/usr", "/var", "/etc", "/lib", "/lib64", "/opt"].contains(&mount_point)
        || mount_point.starts_with("/etc/")
        || mount_point.starts_with("/usr/")
}

/// fstab types that are not local block file systems.
fn skipped_type(fs_type: &str, options: &str) -> Option<&'static str> {
    let opts: Vec<&str> = options.split(',').collect();
    if fs_type == "swap" {
        return Some("swap");
    }
    if opts.iter().any(|o| *o == "bind" || *o == "rbind") || fs_type == "none" {
        return Some("a bind mount");
    }
    if opts.contains(&"_netdev")
        || fs_type.starts_with("nfs")
        || fs_type.starts_with("fuse")
        || matches!(
            fs_type,
            "cifs" | "smb3" | "smbfs" | "ncpfs" | "glusterfs" | "ceph" | "9p" | "sshfs" | "davfs"
        )
    {
        return Some("a network file system");
    }
    if matches!(
        fs_type,
        "proc"
            | "sysfs"
            | "tmpfs"
            | "devpts"
            | "devtmpfs"
            | "securityfs"
            | "debugfs"
            | "efivarfs"
            | "hugetlbfs"
            | "mqueue"
            | "ramfs"
            | "cgroup"
            | "cgroup2"
            | "overlay"
            | "squashfs"
            | "iso9660"
            | "udf"
            | "auto"
            | "binfmt_misc"
    ) {
        return Some("not a local disk file system");
    }
    None
}

/// Finds the partition an fstab spec (or `root=`) names: `UUID=`, `LABEL=`, `PARTUUID=`,
/// `/dev/disk/by-{uuid,label,partuuid}/...`, or a kernel device name of the physical machine
/// (`/dev/sda2`, `/dev/nvme0n1p2`, `/dev/cciss/c0d0p2`), mapped through
/// `JobDisk::original_name`.
pub fn find_partition(
    spec: &str,
    partitions: &[PartitionInfo],
    disks: &[JobDisk],
) -> Option<usize> {
    let eq = |a: &Option<String>, b: &str| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b));
    let by = |f: &dyn Fn(&PartitionInfo) -> bool| partitions.iter().position(f);
    match fstab::classify(spec) {
        Spec::Uuid(u) => by(&|p| eq(&p.uuid, u)),
        Spec::Label(l) => by(&|p| p.label.as_deref() == Some(l)),
        Spec::PartUuid(u) => by(&|p| eq(&p.partuuid, u)),
        Spec::PartLabel(_) | Spec::Other(_) => None,
        Spec::Device(dev) => {
            if let Some(u) = dev.strip_prefix("/dev/disk/by-uuid/") {
                return by(&|p| eq(&p.uuid, u));
            }
            if let Some(u) = dev.strip_prefix("/dev/disk/by-partuuid/") {
                return by(&|p| eq(&p.partuuid, u));
            }
            if let Some(l) = dev.strip_prefix("/dev/disk/by-label/") {
                let l = fstab::unescape(&l.replace("\\x20", "\\040"));
                return by(&|p| p.label.as_deref() == Some(l.as_str()));
            }
            let name = dev.strip_prefix("/dev/")?;
            for disk in disks {
                let orig = disk.original_name.replace('!', "/");
                if orig.is_empty() {
                    continue;
                }
                let Some(rest) = name.strip_prefix(orig.as_str()) else {
                    continue;
                };
                let digits = if orig.ends_with(|c: char| c.is_ascii_digit()) {
                    rest.strip_prefix('p')
                } else {
                    Some(rest)
                };
                let number = match digits {
                    _ if rest.is_empty() => 0,
                    Some(d) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => {
                        d.parse().ok()?
                    }
                    _ => continue,
                };
                if let Some(i) = by(&|p| p.disk_index == disk.index && p.number == number) {
                    return Some(i);
                }
            }
            None
        }
    }
}

/// A guest file system mounted below the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedFs {
    /// Where the guest mounts it (`/boot`).
    pub mount_point: String,
    /// Index into [`Guest::partitions`].
    pub partition: usize,
    pub host_path: PathBuf,
}

/// The guest, mounted. Dropping it unmounts and detaches everything.
#[derive(Debug)]
pub struct Guest {
    // Unmounted before the loop devices are detached (see `Drop`).
    mounts: Mounts,
    loops: Loops,
    dir: PathBuf,
    pub root: GuestRoot,
    pub partitions: Vec<PartitionInfo>,
    pub read_only: bool,
    /// Everything mounted, `/` first.
    pub mounted: Vec<MountedFs>,
    /// What the operator should know (an fstab entry skipped, LVM present).
    pub warnings: Vec<String>,
    /// Problems that make writing to the guest unsafe (an essential file system not mounted,
    /// an unreadable fstab).
    pub errors: Vec<String>,
}

/// A fresh, empty directory for the guest's root.
fn make_dir() -> Result<PathBuf, Error> {
    use std::os::unix::fs::DirBuilderExt;
    let base = if Path::new("/run").is_dir() {
        PathBuf::from("/run")
    } else {
        std::env::temp_dir()
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "p2v-convert-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    Err(Error::Mount(format!(
        "no free directory name under {}",
        base.display()
    )))
}

impl Guest {
    /// Finds the root among `partitions` and mounts the guest (see the module docs).
    /// `read_only` is a dry run.
    pub fn mount(
        disks: &[JobDisk],
        mut partitions: Vec<PartitionInfo>,
        read_only: bool,
    ) -> Result<Guest, Error> {
        let dir = make_dir()?;
        let root = match GuestRoot::new(&dir) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        let mut warnings = Vec::new();
        if partitions
            .iter()
            .any(|p| p.fs_type.as_deref() == Some("LVM2_member"))
        {
            warnings.push(format!(
                "{LVM_NOTE}: a partition is an LVM physical volume; its logical volumes are not mounted"
            ));
        }
        let mut loops = Loops::default();
        // Direct mode: partitions without a device node get a loop device.
        for p in partitions.iter_mut() {
            if p.device.is_some() || !mountable(p.fs_type.as_deref()) {
                continue;
            }
            let Some(disk) = disks.iter().find(|d| d.index == p.disk_index) else {
                continue;
            };
            let Some(backing) = &disk.device else {
                continue;
            };
            match loops.attach(Path::new(backing), p.start_bytes, p.size_bytes, read_only) {
                Ok(dev) => p.device = Some(dev),
                Err(e) => warnings.push(format!(
                    "disk {} partition {}: no loop device: {e}",
                    p.disk_index, p.number
                )),
            }
        }
        let mut guest = Guest {
            mounts: Mounts::default(),
            loops,
            dir,
            root,
            partitions,
            read_only,
            mounted: Vec::new(),
            warnings,
            errors: Vec::new(),
        };
        guest.mount_root()?;
        guest.mount_fstab(disks);
        Ok(guest)
    }

    /// The host directory where the guest's `/` is.
    pub fn host_dir(&self) -> &Path {
        &self.dir
    }

    fn mount_part(&mut self, index: usize, target: &Path, read_only: bool) -> Result<(), Error> {
        let p = &self.partitions[index];
        let fs = p.fs_type.clone().unwrap_or_default();
        let device = p.device.clone().ok_or_else(|| {
            Error::Mount(format!(
                "disk {} partition {}: no device to mount",
                p.disk_index, p.number
            ))
        })?;
        let (fstype, data) = mount_type(&fs, read_only);
        let mut flags = sys::MS_NOSUID | sys::MS_NODEV;
        if read_only {
            flags |= sys::MS_RDONLY;
        }
        self.mounts
            .mount(Path::new(&device), target, fstype, flags, data)
    }

    fn mount_root(&mut self) -> Result<(), Error> {
        let candidates: Vec<usize> = (0..self.partitions.len())
            .filter(|&i| linux_fs(self.partitions[i].fs_type.as_deref()))
            .collect();
        let mut tried = Vec::new();
        for i in candidates {
            let dir = self.dir.clone();
            if let Err(e) = self.mount_part(i, &dir, true) {
                tried.push(e.to_string());
                continue;
            }
            let is_root = ["/etc/os-release", "/usr/lib/os-release", "/etc/fstab"]
                .iter()
                .any(|p| self.root.exists(p));
            if !is_root || !self.read_only {
                self.mounts.unmount_last(&dir)?;
            }
            if !is_root {
                let p = &self.partitions[i];
                tried.push(format!(
                    "disk {} partition {}: no /etc/os-release or /etc/fstab",
                    p.disk_index, p.number
                ));
                continue;
            }
            if !self.read_only {
                self.mount_part(i, &dir, false)?;
            }
            tracing::info!(
                disk = self.partitions[i].disk_index,
                partition = self.partitions[i].number,
                "guest root mounted"
            );
            self.mounted.push(MountedFs {
                mount_point: "/".into(),
                partition: i,
                host_path: dir,
            });
            return Ok(());
        }
        let lvm = self
            .warnings
            .iter()
            .any(|w| w.starts_with(LVM_NOTE))
            .then_some(format!(" ({LVM_NOTE})"))
            .unwrap_or_default();
        Err(Error::Mount(format!(
            "no root file system found{lvm}: {}",
            if tried.is_empty() {
                "no Linux file system on any disk".to_string()
            } else {
                tried.join("; ")
            }
        )))
    }

    /// Mounts the local file systems the guest's fstab lists below the root.
    fn mount_fstab(&mut self, disks: &[JobDisk]) {
        if !self.root.exists("/etc/fstab") {
            self.warnings
                .push("/etc/fstab: absent; only the root file system is mounted".into());
            return;
        }
        let entries = match self
            .root
            .read_config("/etc/fstab")
            .and_then(|t| fstab::parse_fstab(&t))
        {
            Ok(e) => e,
            Err(e) => {
                self.errors.push(format!(
                    "/etc/fstab: {e}; the guest's other file systems are not mounted"
                ));
                return;
            }
        };
        let mut entries: Vec<FstabEntry> = entries;
        entries.sort_by_key(|e| e.mount_point.split('/').filter(|c| !c.is_empty()).count());
        for e in entries {
            if let Err(msg) = self.mount_entry(&e, disks) {
                let opts: Vec<&str> = e.options.split(',').collect();
                let optional = opts.contains(&"nofail") || opts.contains(&"noauto");
                let msg = format!(
                    "/etc/fstab line {}: {} not mounted: {msg}",
                    e.line, e.mount_point
                );
                if essential(&e.mount_point) && !optional {
                    self.errors.push(msg);
                } else {
                    self.warnings.push(msg);
                }
            }
        }
    }

    /// Mounts one fstab entry; `Ok` also when the entry is one that is not mounted here.
    fn mount_entry(&mut self, e: &FstabEntry, disks: &[JobDisk]) -> Result<(), String> {
        if e.mount_point == "/" {
            if let Some(i) = find_partition(&e.spec, &self.partitions, disks) {
                if i != self.mounted[0].partition {
                    self.warnings.push(format!(
                        "/etc/fstab line {}: / is {} but the root found is another partition",
                        e.line, e.spec
                    ));
                }
            }
            return Ok(());
        }
        if let Some(why) = skipped_type(&e.fs_type, &e.options) {
            tracing::debug!(line = e.line, mount_point = %e.mount_point, "skipped: {why}");
            return Ok(());
        }
        if matches!(fstab::classify(&e.spec), Spec::Other(_)) {
            return Ok(());
        }
        if !e.mount_point.starts_with('/') || e.mount_point.split('/').any(|c| c == "..") {
            return Err(format!(
                "refusing the mount point {:?} (not a plain absolute path)",
                e.mount_point
            ));
        }
        let index = find_partition(&e.spec, &self.partitions, disks).ok_or_else(|| {
            let lvm = if e.spec.starts_with("/dev/mapper/") {
                format!(" ({LVM_NOTE} or device-mapper)")
            } else {
                String::new()
            };
            format!("{} is not a partition of the job's disks{lvm}", e.spec)
        })?;
        if self.mounted.iter().any(|m| m.partition == index) {
            return Err(format!("{} is already mounted", e.spec));
        }
        if self.mounted.iter().any(|m| m.mount_point == e.mount_point) {
            return Err("a file system is already mounted there".into());
        }
        let p = &self.partitions[index];
        if !mountable(p.fs_type.as_deref()) {
            return Err(format!(
                "{} holds {}, which the converter does not mount",
                e.spec,
                p.fs_type.as_deref().unwrap_or("no known file system")
            ));
        }
        let target = self
            .root
            .resolve(&e.mount_point)
            .map_err(|e| e.to_string())?;
        if self.root.kind(&e.mount_point) != Some(crate::inspect::root::Kind::Dir) {
            return Err("the mount point is not a directory in the guest".into());
        }
        // GuestRoot resolved every symlink inside the guest; check once more that the result
        // is below our directory before the kernel sees it.
        if !target.starts_with(self.root.host_dir()) {
            return Err("the mount point resolves outside the guest".into());
        }
        let read_only = self.read_only;
        self.mount_part(index, &target, read_only)
            .map_err(|e| e.to_string())?;
        self.mounted.push(MountedFs {
            mount_point: e.mount_point.clone(),
            partition: index,
            host_path: target,
        });
        Ok(())
    }

    /// Whether the guest has a file system of its own mounted at `mount_point`.
    pub fn has_mount(&self, mount_point: &str) -> bool {
        self.mounted.iter().any(|m| m.mount_point == mount_point)
    }

    /// Flushes, unmounts everything (reverse order) and detaches the loop devices; returns
    /// what went wrong.
    pub fn close(mut self) -> Vec<String> {
        self.teardown()
    }

    fn teardown(&mut self) -> Vec<String> {
        sys::sync();
        let mut errors = self.mounts.unmount_all();
        errors.extend(self.loops.detach_all());
        self.mounted.clear();
        if self.mounts.is_empty() && self.dir.exists() {
            // remove_dir, never remove_dir_all: if anything were still mounted here, the
            // guest's files would be below.
            if let Err(e) = std::fs::remove_dir(&self.dir) {
                errors.push(format!("removing {}: {e}", self.dir.display()));
            }
        }
        errors
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        for e in self.teardown() {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(disk: usize, number: u32, uuid: &str) -> PartitionInfo {
        PartitionInfo {
            disk_index: disk,
            number,
            start_bytes: 0,
            size_bytes: 0,
            part_type: None,
            partuuid: Some(format!("abcd0001-{number:02x}")),
            fs_type: Some("ext4".into()),
            uuid: Some(uuid.into()),
            label: Some(format!("L{number}")),
            device: None,
        }
    }

    fn disk(index: usize, name: &str) -> JobDisk {
        JobDisk {
            disk_id: format!("d-{index}"),
            original_name: name.into(),
            device: None,
            index,
        }
    }

    #[test]
    fn specs_map_to_partitions() {
        let parts = vec![
            part(0, 1, "1111"),
            part(0, 2, "2222"),
            part(1, 1, "3333"),
            part(2, 3, "4444"),
        ];
        let disks = vec![disk(0, "sda"), disk(1, "nvme0n1"), disk(2, "cciss!c0d0")];
        let cases = [
            ("UUID=2222", Some(1)),
            ("UUID=\"3333\"", Some(2)),
            ("LABEL=L2", Some(1)),
            ("PARTUUID=ABCD0001-02", Some(1)),
            ("/dev/sda1", Some(0)),
            ("/dev/sda2", Some(1)),
            ("/dev/sda3", None),
            ("/dev/sdb1", None),
            ("/dev/nvme0n1p1", Some(2)),
            ("/dev/nvme0n11", None),
            ("/dev/cciss/c0d0p3", Some(3)),
            ("/dev/disk/by-uuid/4444", Some(3)),
            ("/dev/disk/by-partuuid/abcd0001-01", Some(0)),
            ("/dev/disk/by-label/L1", Some(0)),
            ("/dev/mapper/vg-root", None),
            ("tmpfs", None),
        ];
        for (spec, want) in cases {
            assert_eq!(find_partition(spec, &parts, &disks), want, "{spec}");
        }
    }

    #[test]
    fn detected_contents_have_blkid_names() {
        let mut area = vec![0u8; 128 << 10];
        area[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        let content = p2v_fsmap::detect(&area).unwrap();
        assert_eq!(fs_name(&content), Some("ext2"));
        assert_eq!(fs_name(&Content::Luks { version: 2 }), Some("crypto_LUKS"));
        assert_eq!(fs_name(&Content::Unknown), None);
    }

    #[test]
    fn lvm_only_guest_is_explained_not_a_crash() {
        let mut pv = part(0, 1, "5555");
        pv.fs_type = Some("LVM2_member".into());
        let err = Guest::mount(&[disk(0, "sda")], vec![pv], true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no root file system") && err.contains(LVM_NOTE),
            "{err}"
        );
    }

    #[test]
    fn fstab_types_that_are_not_mounted() {
        assert!(skipped_type("swap", "sw").is_some());
        assert!(skipped_type("nfs4", "defaults").is_some());
        assert!(skipped_type("ext4", "defaults,_netdev").is_some());
        assert!(skipped_type("none", "bind").is_some());
        assert!(skipped_type("ext4", "bind").is_some());
        assert!(skipped_type("tmpfs", "size=1G").is_some());
        assert_eq!(skipped_type("ext4", "defaults"), None);
        assert_eq!(skipped_type("vfat", "umask=0077"), None);
        assert!(essential("/boot") && essential("/usr/local") && !essential("/boot/efi"));
    }
}
