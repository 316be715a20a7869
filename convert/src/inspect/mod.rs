//! Inspection: what the guest is and how it boots, from its files, treated as hostile input.
//!
//! [`inspect`] reads a guest whose root file system is mounted on a host directory (through
//! [`GuestRoot`], which keeps every path and symlink inside the guest and limits sizes) and
//! returns an [`Inspection`]: OS, hostname, fstab and crypttab, the root device, installed
//! kernels and whether their initramfs images carry the drivers of the target buses, the
//! initramfs tool, bootloaders, firmware mode, network configuration and platform agents.
//! Every file that cannot be read or parsed, and every limit hit, becomes an entry of
//! [`Inspection::problems`] naming the file: nothing is skipped silently and nothing panics.
//!
//! The parsers are pure (text or bytes in, structures out) and live in submodules:
//!
//! | module | parses |
//! |--------|--------|
//! | [`osrelease`] | os-release(5) and other shell-style `KEY=value` files |
//! | [`fstab`] | fstab(5), crypttab(5) |
//! | [`cmdline`] | `root=`/`resume=` in grub.cfg, /etc/default/grub, extlinux.conf, systemd-boot entries |
//! | [`network`] | ifupdown, netplan, NetworkManager keyfiles, systemd-networkd, `.link`, udev net rules |
//! | [`initrd`] | initramfs images (cpio "newc", gzip / zstd compressed): the kernel modules inside |
//! | [`modules`] | `modules.dep` / `modules.builtin` of `/lib/modules/VER` |
//!
//! # Platform agents
//!
//! Services tied to the physical platform that misbehave in a VM (they look for hardware that
//! is gone, retry or log forever, or fail the boot's `systemctl is-system-running`). Found as
//! units enabled in `/etc/systemd/system/*.wants/`; the plan masks them. See [`AGENTS`]:
//!
//! | unit | why it is disabled |
//! |------|--------------------|
//! | `ipmievd` | polls the BMC's event log through IPMI; a VM has no BMC, the daemon fails at start |
//! | `hp-health` | HPE ProLiant health driver/daemon: needs the iLO management processor |
//! | `hp-ams` | HPE Agentless Management Service: talks to the iLO over its PCI channel |
//! | `hpsmhd` | HPE System Management Homepage: shows data from the HPE agents above |
//! | `hp-asrd` | HPE automatic server recovery: would reset the machine when the iLO watchdog is absent |
//! | `dsm_sa_datamgrd`, `dataeng` | Dell OpenManage Server Administrator data manager: probes the Dell ESM/iDRAC |
//! | `dsm_sa_eventmgrd`, `dsm_om_connsvc`, `dsm_sa_snmpd` | the other OMSA services (events, web UI, SNMP), useless without the data manager |
//! | `instsvcdrv` | Dell OMSA device driver loader for the ESM hardware |
//! | `megaraidsas-status`, `megaclisas-statusd` | poll a MegaRAID controller the VM does not have |
//! | `smartd` is *not* masked: it finds no SMART devices on virtio and exits cleanly |
//! | `mcelog` is *not* masked: it works on virtual CPUs (or exits when the CPU has no MCE) |
//!
//! # Firmware mode
//!
//! From the partitions of the first disk: a GPT with an EFI System Partition
//! (`c12a7328-f81f-11d2-ba4b-00a0c93ec93b`) means UEFI; a BIOS boot partition
//! (`21686148-6449-6e6f-744e-656564454649`), or an MBR disk whose boot sector holds GRUB's
//! boot code, means BIOS. A disk with both an ESP and a BIOS boot partition (hybrid images)
//! is decided by the GRUB platform installed (`/boot/grub/i386-pc` means BIOS).

pub mod cmdline;
pub mod fstab;
pub mod initrd;
pub mod modules;
pub mod network;
pub mod osrelease;
mod report;
pub mod root;
#[cfg(test)]
pub(crate) mod testutil;

use p2v_protocol::inventory::FirmwareKind;
use serde::{Deserialize, Serialize};

pub use cmdline::DeviceArg;
pub use fstab::{CrypttabEntry, FstabEntry};
pub use network::{MacRef, NetInterface, NetSource};
pub use osrelease::OsInfo;
pub use report::render;
pub use root::GuestRoot;

use crate::guest::PartitionInfo;
use crate::job::JobDisk;
use crate::plan::InitramfsTool;

/// Drivers whose presence is checked in every kernel and initramfs: those any target profile
/// needs ([`crate::profile::DiskBus::guest_drivers`], [`crate::profile::NicModel::guest_driver`]).
pub const TARGET_DRIVERS: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "ahci",
    "virtio_net",
    "e1000e",
];

/// Platform agents masked in a VM, with the reason (see the module docs).
pub const AGENTS: &[(&str, &str)] = &[
    (
        "ipmievd",
        "it polls the BMC through IPMI, and a VM has no BMC",
    ),
    (
        "hp-health",
        "it needs the HPE iLO management processor, which a VM does not have",
    ),
    (
        "hp-ams",
        "HPE Agentless Management talks to the iLO, which a VM does not have",
    ),
    (
        "hpsmhd",
        "the HPE System Management Homepage only shows data of the HPE agents",
    ),
    (
        "hp-asrd",
        "HPE automatic server recovery expects the iLO watchdog and may reset the VM",
    ),
    (
        "dsm_sa_datamgrd",
        "Dell OMSA's data manager probes Dell server hardware (ESM/iDRAC)",
    ),
    (
        "dataeng",
        "Dell OMSA's data engine probes Dell server hardware (ESM/iDRAC)",
    ),
    (
        "dsm_sa_eventmgrd",
        "Dell OMSA's event manager needs the OMSA data manager and Dell hardware",
    ),
    (
        "dsm_om_connsvc",
        "the Dell OMSA web interface only shows Dell hardware data",
    ),
    (
        "dsm_sa_snmpd",
        "Dell OMSA's SNMP agent only serves Dell hardware data",
    ),
    (
        "instsvcdrv",
        "it loads Dell OMSA's drivers for Dell ESM hardware",
    ),
    (
        "megaraidsas-status",
        "it polls a MegaRAID controller that the VM does not have",
    ),
    (
        "megaclisas-statusd",
        "it polls a MegaRAID controller that the VM does not have",
    ),
];

/// Whether a kernel can load a driver at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// Built into the kernel image (`modules.builtin`): always there.
    Builtin,
    /// A module under `/lib/modules/VER` (`modules.dep`).
    Module,
    /// Neither.
    Missing,
    /// `modules.dep` could not be read.
    Unknown,
}

/// One target-relevant driver of one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverStatus {
    pub name: String,
    /// True when the initramfs holds the module (or it is built into the kernel); `None` when
    /// the initramfs could not be read or listed.
    pub in_initrd: Option<bool>,
    pub available: Availability,
}

/// An installed kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// `uname -r` (`6.1.0-18-amd64`).
    pub version: String,
    /// Guest path of the kernel image, when found.
    pub vmlinuz: Option<String>,
    /// Guest path of its initramfs image, when found.
    pub initrd: Option<String>,
    /// Number of kernel modules found in the initramfs, when it could be listed.
    pub initrd_modules: Option<usize>,
    /// Why the initramfs could not be listed.
    pub initrd_error: Option<String>,
    /// One entry per [`TARGET_DRIVERS`] name.
    pub drivers: Vec<DriverStatus>,
}

impl Kernel {
    /// The status of one driver (`None` when it is not a [`TARGET_DRIVERS`] name).
    pub fn driver(&self, name: &str) -> Option<&DriverStatus> {
        self.drivers.iter().find(|d| d.name == name)
    }
}

/// A bootloader and its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootloaderKind {
    Grub2Bios,
    Grub2Efi,
    Extlinux,
    SystemdBoot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootloader {
    pub kind: BootloaderKind,
    /// Guest path of its main configuration file.
    pub config: String,
}

/// A platform agent enabled in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Unit name (`ipmievd.service`).
    pub unit: String,
    /// Where it is enabled (`/etc/systemd/system/multi-user.target.wants/ipmievd.service`).
    pub enabled_in: String,
    pub reason: String,
}

/// Everything found out about one guest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inspection {
    /// From `/etc/os-release` (else `/usr/lib/os-release`).
    pub os: Option<OsInfo>,
    /// Why the OS is not known.
    pub os_error: Option<String>,
    pub hostname: Option<String>,
    pub fstab: Vec<FstabEntry>,
    pub crypttab: Vec<CrypttabEntry>,
    /// What `/` is mounted from: the fstab spec, else the `root=` of a boot entry.
    pub root_device: Option<String>,
    /// `root=`, `resume=` and `RESUME=` values in the bootloader and initramfs configuration.
    pub device_args: Vec<DeviceArg>,
    pub kernels: Vec<Kernel>,
    pub initramfs_tool: Option<InitramfsTool>,
    /// initramfs-tools' `MODULES=` (`most`, `dep`, `netboot`, `list`) from initramfs.conf and
    /// conf.d (the last one wins).
    pub initramfs_modules_policy: Option<String>,
    /// Modules already listed in `/etc/initramfs-tools/modules`.
    pub initramfs_listed_modules: Vec<String>,
    pub bootloaders: Vec<Bootloader>,
    /// Firmware mode the guest was installed for (see the module docs), when it can be told.
    pub firmware: Option<FirmwareKind>,
    /// The guest runs systemd (and so udev reads `.link` files).
    pub uses_systemd: bool,
    /// Interfaces named by network configurations.
    pub network: Vec<NetInterface>,
    pub agents: Vec<Agent>,
    /// Every file that could not be read or parsed, and every limit hit, with the file.
    pub problems: Vec<String>,
}

/// Canonical module name: `virtio-blk` and `virtio_blk` are the same module to modprobe.
pub fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Inspects the guest mounted at `root`. `partitions` and `disks` describe the guest's disks
/// (for the firmware mode); the first disk (`index` 0) is the one the firmware boots.
pub fn inspect(root: &GuestRoot, partitions: &[PartitionInfo], disks: &[JobDisk]) -> Inspection {
    let mut ins = Inspection::default();
    let mut cx = Cx {
        root,
        problems: Vec::new(),
    };
    read_os(&mut cx, &mut ins);
    read_hostname(&mut cx, &mut ins);
    read_mounts(&mut cx, &mut ins);
    read_boot(&mut cx, &mut ins);
    read_initramfs_tool(&mut cx, &mut ins);
    read_kernels(&mut cx, &mut ins);
    ins.firmware = firmware_mode(&mut cx, partitions, disks);
    ins.uses_systemd = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
        .iter()
        .any(|p| cx.root.kind(p) == Some(root::Kind::File));
    read_network(&mut cx, &mut ins);
    read_agents(&mut cx, &mut ins);
    ins.problems = cx.problems;
    ins
}

/// Inspection context: the root and the problems found so far.
struct Cx<'a> {
    root: &'a GuestRoot,
    problems: Vec<String>,
}

impl Cx<'_> {
    fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }

    /// Reads a configuration file; `None` when absent (silently) or unreadable (a problem).
    fn config(&mut self, path: &str) -> Option<String> {
        if !self.root.exists(path) {
            // A dangling symlink or a loop is worth saying; a plain absence is not.
            return match self.root.resolve(path) {
                Err(crate::Error::Guest { reason, .. }) if reason != "not found" => {
                    self.problem(format!("{path}: {reason}"));
                    None
                }
                _ => None,
            };
        }
        match self.root.read_config(path) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(e.to_string());
                None
            }
        }
    }

    /// Records a parse error of `path`.
    fn parse_error(&mut self, path: &str, e: crate::Error) {
        self.problem(format!("{path}: {e}"));
    }
}

fn read_os(cx: &mut Cx, ins: &mut Inspection) {
    let path = if cx.root.exists("/etc/os-release") {
        "/etc/os-release"
    } else {
        "/usr/lib/os-release"
    };
    let Some(text) = cx.config(path) else {
        ins.os_error = Some(format!("{path}: not found or unreadable"));
        if let Some(p) = cx.problems.last() {
            if p.starts_with(path) {
                ins.os_error = Some(p.clone());
            }
        }
        return;
    };
    match osrelease::parse(&text) {
        Ok(os) => ins.os = Some(os),
        Err(e) => {
            let msg = format!("{path}: {e}");
            ins.os_error = Some(msg.clone());
            cx.problem(msg);
        }
    }
}

fn read_hostname(cx: &mut Cx, ins: &mut Inspection) {
    if let Some(text) = cx.config("/etc/hostname") {
        let name = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'));
        match name {
            Some(n) if n.len() <= 253 && n.bytes().all(|b| b.is_ascii_graphic()) => {
                ins.hostname = Some(n.to_string())
            }
            Some(_) => cx.problem("/etc/hostname: not a valid host name"),
            None => {}
        }
    }
}

fn read_mounts(cx: &mut Cx, ins: &mut Inspection) {
    if let Some(text) = cx.config("/etc/fstab") {
        match fstab::parse_fstab(&text) {
            Ok(e) => ins.fstab = e,
            Err(e) => cx.parse_error("/etc/fstab", e),
        }
    }
    if let Some(text) = cx.config("/etc/crypttab") {
        match fstab::parse_crypttab(&text) {
            Ok(e) => ins.crypttab = e,
            Err(e) => cx.parse_error("/etc/crypttab", e),
        }
    }
    ins.root_device = ins
        .fstab
        .iter()
        .find(|e| e.mount_point == "/")
        .map(|e| e.spec.clone());
}

/// Files of a directory that are regular files and whose names pass `keep`; `None` (silently)
/// when the directory does not exist.
fn files_in(cx: &mut Cx, dir: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    if cx.root.kind(dir) != Some(root::Kind::Dir) {
        return Vec::new();
    }
    match cx.root.read_dir(dir) {
        Ok(names) => names
            .into_iter()
            .filter(|n| keep(n))
            .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
            .filter(|p| cx.root.kind(p) == Some(root::Kind::File))
            .collect(),
        Err(e) => {
            cx.problem(e.to_string());
            Vec::new()
        }
    }
}

/// Runs a parser of device arguments over a file and collects the results.
fn collect_args(
    cx: &mut Cx,
    ins: &mut Inspection,
    path: &str,
    parse: fn(&str) -> Result<Vec<DeviceArg>, crate::Error>,
) -> bool {
    let Some(text) = cx.config(path) else {
        return false;
    };
    match parse(&text) {
        Ok(args) => ins.device_args.extend(args.into_iter().map(|mut a| {
            a.file = path.to_string();
            a
        })),
        Err(e) => cx.parse_error(path, e),
    }
    true
}

fn read_boot(cx: &mut Cx, ins: &mut Inspection) {
    for cfg in ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"] {
        if cx.root.kind(cfg) == Some(root::Kind::File) {
            collect_args(cx, ins, cfg, cmdline::parse_grub_cfg);
            let dir = cfg.trim_end_matches("/grub.cfg");
            let bios = cx.root.exists(&format!("{dir}/i386-pc"));
            let efi = cx.root.exists(&format!("{dir}/x86_64-efi"))
                || ["/boot/efi/EFI", "/efi/EFI"].iter().any(|d| {
                    cx.root
                        .read_dir(d)
                        .map(|vendors| {
                            vendors.iter().any(|v| {
                                cx.root.exists(&format!("{d}/{v}/grubx64.efi"))
                                    || cx.root.exists(&format!("{d}/{v}/shimx64.efi"))
                            })
                        })
                        .unwrap_or(false)
                });
            if bios || !efi {
                ins.bootloaders.push(Bootloader {
                    kind: BootloaderKind::Grub2Bios,
                    config: cfg.into(),
                });
            }
            if efi {
                ins.bootloaders.push(Bootloader {
                    kind: BootloaderKind::Grub2Efi,
                    config: cfg.into(),
                });
            }
            break;
        }
    }
    collect_args(cx, ins, "/etc/default/grub", cmdline::parse_default_grub);
    for cfg in [
        "/boot/extlinux/extlinux.conf",
        "/extlinux.conf",
        "/boot/extlinux.conf",
        "/boot/syslinux/syslinux.cfg",
    ] {
        if cx.root.kind(cfg) == Some(root::Kind::File) {
            collect_args(cx, ins, cfg, cmdline::parse_extlinux);
            ins.bootloaders.push(Bootloader {
                kind: BootloaderKind::Extlinux,
                config: cfg.into(),
            });
            break;
        }
    }
    for base in ["/boot", "/boot/efi", "/efi"] {
        let loader = format!("{base}/loader/loader.conf");
        let entries = format!("{base}/loader/entries");
        if !cx.root.exists(&loader) && !cx.root.exists(&entries) {
            continue;
        }
        ins.bootloaders.push(Bootloader {
            kind: BootloaderKind::SystemdBoot,
            config: loader,
        });
        for e in files_in(cx, &entries, |n| n.ends_with(".conf")) {
            collect_args(cx, ins, &e, cmdline::parse_loader_entry);
        }
        break;
    }
    for path in [
        "/etc/initramfs-tools/conf.d/resume",
        "/etc/initramfs-tools/initramfs.conf",
    ] {
        collect_args(cx, ins, path, cmdline::parse_resume_conf);
    }
    if ins.root_device.is_none() {
        ins.root_device = ins
            .device_args
            .iter()
            .find(|a| a.key == "root")
            .map(|a| a.value.clone());
    }
}

fn read_initramfs_tool(cx: &mut Cx, ins: &mut Inspection) {
    let has = |p: &str| cx.root.exists(p);
    ins.initramfs_tool = if has("/usr/sbin/update-initramfs") || has("/etc/initramfs-tools") {
        Some(InitramfsTool::InitramfsTools)
    } else if has("/usr/bin/dracut") || has("/usr/sbin/dracut") || has("/etc/dracut.conf") {
        Some(InitramfsTool::Dracut)
    } else if has("/usr/bin/mkinitcpio") || has("/etc/mkinitcpio.conf") {
        Some(InitramfsTool::Mkinitcpio)
    } else {
        None
    };
    if ins.initramfs_tool != Some(InitramfsTool::InitramfsTools) {
        return;
    }
    let mut confs = vec!["/etc/initramfs-tools/initramfs.conf".to_string()];
    confs.extend(files_in(cx, "/etc/initramfs-tools/conf.d", |n| {
        !n.starts_with('.') && !n.ends_with('~')
    }));
    for path in confs {
        let Some(text) = cx.config(&path) else {
            continue;
        };
        match osrelease::assignments(&text, false) {
            Ok(a) => {
                if let Some(m) = osrelease::last(&a, "MODULES") {
                    ins.initramfs_modules_policy = Some(m.value.clone());
                }
            }
            Err(e) => cx.parse_error(&path, e),
        }
    }
    if let Some(text) = cx.config("/etc/initramfs-tools/modules") {
        ins.initramfs_listed_modules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().next())
            .map(module_name)
            .collect();
    }
}

fn read_kernels(cx: &mut Cx, ins: &mut Inspection) {
    let mut versions: Vec<(String, Option<String>)> =
        files_in(cx, "/boot", |n| n.starts_with("vmlinuz-"))
            .into_iter()
            .map(|p| (p.trim_start_matches("/boot/vmlinuz-").to_string(), Some(p)))
            .collect();
    if versions.is_empty() {
        // Fedora, Arch: the image lives in the modules directory.
        let dirs = if cx.root.kind("/lib/modules") == Some(root::Kind::Dir) {
            cx.root.read_dir("/lib/modules").unwrap_or_default()
        } else {
            Vec::new()
        };
        for v in dirs {
            let img = format!("/lib/modules/{v}/vmlinuz");
            if cx.root.kind(&img) == Some(root::Kind::File) {
                versions.push((v, Some(img)));
            }
        }
    }
    for (version, vmlinuz) in versions {
        let mdir = format!("/lib/modules/{version}");
        let dep = read_module_list(cx, &format!("{mdir}/modules.dep"), true);
        let builtin = read_module_list(cx, &format!("{mdir}/modules.builtin"), false);
        if dep.is_none() {
            cx.problem(format!(
                "kernel {version}: {mdir}/modules.dep missing or unreadable: driver availability unknown"
            ));
        }
        let initrd = [
            format!("/boot/initrd.img-{version}"),
            format!("/boot/initramfs-{version}.img"),
            format!("/boot/initrd-{version}"),
            format!("/boot/initrd-{version}.img"),
        ]
        .into_iter()
        .find(|p| cx.root.exists(p));
        let (listing, initrd_error) = match &initrd {
            None => (None, Some("no initramfs image found".to_string())),
            Some(p) => match cx.root.read(p, root::INITRD_LIMIT) {
                Err(e) => (None, Some(e.to_string())),
                Ok(bytes) => match initrd::parse(&bytes) {
                    Ok(l) => (Some(l), None),
                    Err(e) => (None, Some(format!("{p}: {e}"))),
                },
            },
        };
        if let Some(e) = &initrd_error {
            cx.problem(format!("kernel {version}: {e}"));
        }
        let drivers = TARGET_DRIVERS
            .iter()
            .map(|d| {
                let d = d.to_string();
                let is_builtin = builtin.as_ref().is_some_and(|b| b.contains(&d))
                    || listing.as_ref().is_some_and(|l| l.builtin.contains(&d));
                let available = if is_builtin {
                    Availability::Builtin
                } else {
                    match &dep {
                        Some(m) if m.contains(&d) => Availability::Module,
                        Some(_) => Availability::Missing,
                        None => Availability::Unknown,
                    }
                };
                let in_initrd = if is_builtin {
                    Some(true)
                } else {
                    listing.as_ref().map(|l| l.modules.contains(&d))
                };
                DriverStatus {
                    name: d,
                    in_initrd,
                    available,
                }
            })
            .collect();
        ins.kernels.push(Kernel {
            version,
            vmlinuz,
            initrd,
            initrd_modules: listing.as_ref().map(|l| l.modules.len()),
            initrd_error,
            drivers,
        });
    }
    if ins.kernels.is_empty() {
        cx.problem("no kernel found (/boot/vmlinuz-*, /lib/modules/*/vmlinuz)");
    }
}

/// modules.dep (`dep`) or modules.builtin of a kernel; `None` when absent or unreadable.
fn read_module_list(
    cx: &mut Cx,
    path: &str,
    dep: bool,
) -> Option<std::collections::BTreeSet<String>> {
    // modules.dep of a distribution kernel is ~100 KiB; allow 8 MiB.
    if !cx.root.exists(path) {
        return None;
    }
    let text = match cx.root.read(path, 8 << 20) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            cx.problem(e.to_string());
            return None;
        }
    };
    if dep {
        match modules::parse_modules_dep(&text) {
            Ok(m) => Some(m),
            Err(e) => {
                cx.parse_error(path, e);
                None
            }
        }
    } else {
        Some(modules::parse_modules_builtin(&text))
    }
}

/// GPT type GUIDs that decide the firmware mode.
pub const ESP_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
pub const BIOS_BOOT_GUID: &str = "21686148-6449-6e6f-744e-656564454649";

fn firmware_mode(
    cx: &mut Cx,
    partitions: &[PartitionInfo],
    disks: &[JobDisk],
) -> Option<FirmwareKind> {
    let boot_disk = disks.iter().find(|d| d.index == 0);
    let parts: Vec<&PartitionInfo> = partitions
        .iter()
        .filter(|p| p.disk_index == boot_disk.map_or(0, |d| d.index))
        .collect();
    let ty = |p: &PartitionInfo| p.part_type.as_deref().unwrap_or("").to_ascii_lowercase();
    let esp = parts
        .iter()
        .any(|p| ty(p) == ESP_GUID || ty(p) == "0xef" || ty(p) == "ef");
    let bios_boot = parts.iter().any(|p| ty(p) == BIOS_BOOT_GUID);
    let mbr = parts.iter().any(|p| ty(p).starts_with("0x"));
    match (esp, bios_boot) {
        (true, true) => {
            let bios = cx.root.exists("/boot/grub/i386-pc");
            cx.problem(format!(
                "the boot disk has both an EFI System Partition and a BIOS boot partition; taken as {} because GRUB's i386-pc platform is {}installed",
                if bios { "BIOS" } else { "UEFI" },
                if bios { "" } else { "not " }
            ));
            Some(if bios {
                FirmwareKind::Bios
            } else {
                FirmwareKind::Uefi
            })
        }
        (true, false) => Some(FirmwareKind::Uefi),
        (false, true) => Some(FirmwareKind::Bios),
        (false, false) if mbr => {
            let sector = boot_disk
                .and_then(|d| d.device.as_deref())
                .and_then(|dev| read_sector0(dev).ok());
            match sector {
                Some(s) if s.windows(4).any(|w| w == b"GRUB") => Some(FirmwareKind::Bios),
                Some(_) => {
                    cx.problem("MBR boot disk without GRUB boot code: firmware mode taken as BIOS");
                    Some(FirmwareKind::Bios)
                }
                None => Some(FirmwareKind::Bios),
            }
        }
        _ => None,
    }
}

fn read_sector0(dev: &str) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(dev)?;
    let mut b = vec![0u8; 512];
    std::io::Read::read_exact(&mut f, &mut b)?;
    Ok(b)
}

/// At most this many files are read through ifupdown's `source` directives.
const IFUPDOWN_FILES: usize = 64;
/// Nesting of `source` directives followed.
const IFUPDOWN_DEPTH: usize = 4;

fn read_network(cx: &mut Cx, ins: &mut Inspection) {
    // ifupdown, following `source` and `source-directory`.
    let mut queue: Vec<(String, usize)> = vec![("/etc/network/interfaces".into(), 0)];
    let mut seen = 0usize;
    let mut visited: Vec<String> = Vec::new();
    while let Some((path, depth)) = queue.pop() {
        if !cx.root.exists(&path) {
            continue;
        }
        if visited.contains(&path) {
            cx.problem(format!(
                "{path}: sourced again (a source loop), not read twice"
            ));
            continue;
        }
        visited.push(path.clone());
        seen += 1;
        if seen > IFUPDOWN_FILES {
            cx.problem(format!(
                "{path}: not read, ifupdown configuration over {IFUPDOWN_FILES} files"
            ));
            break;
        }
        let Some(text) = cx.config(&path) else {
            continue;
        };
        let parsed = match network::parse_interfaces(&text) {
            Ok(p) => p,
            Err(e) => {
                cx.parse_error(&path, e);
                continue;
            }
        };
        ins.network
            .extend(parsed.interfaces.into_iter().map(|mut i| {
                i.file = path.clone();
                i
            }));
        for (line, pattern, is_dir) in parsed.sources {
            if depth + 1 > IFUPDOWN_DEPTH {
                cx.problem(format!(
                    "{path}: line {line}: source nested more than {IFUPDOWN_DEPTH} deep, not followed"
                ));
                continue;
            }
            let abs = if pattern.starts_with('/') {
                pattern.clone()
            } else {
                format!("/etc/network/{pattern}")
            };
            let (dir, name) = if is_dir {
                (abs.as_str(), "")
            } else {
                abs.rsplit_once('/').unwrap_or(("/", abs.as_str()))
            };
            if dir.contains(['*', '?', '[']) || name.contains('[') {
                cx.problem(format!(
                    "{path}: line {line}: source pattern {pattern:?} not understood (globs only in the file name)"
                ));
                continue;
            }
            let files = if is_dir {
                // run-parts names only.
                files_in(cx, dir, |n| {
                    n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                })
            } else if name.contains(['*', '?']) {
                files_in(cx, dir, |n| network::glob_match(name, n))
            } else {
                vec![abs.clone()]
            };
            for f in files.into_iter().rev() {
                queue.push((f, depth + 1));
            }
        }
    }
    type Parse = fn(&str) -> Result<Vec<NetInterface>, crate::Error>;
    fn one(
        r: Result<Option<NetInterface>, crate::Error>,
    ) -> Result<Vec<NetInterface>, crate::Error> {
        r.map(|o| o.into_iter().collect())
    }
    let sources: Vec<(String, Parse)> = files_in(cx, "/etc/netplan", |n| {
        n.ends_with(".yaml") || n.ends_with(".yml")
    })
    .into_iter()
    .map(|f| (f, network::parse_netplan as Parse))
    .chain(
        files_in(cx, "/etc/NetworkManager/system-connections", |n| {
            !n.starts_with('.') && !n.ends_with('~')
        })
        .into_iter()
        .map(|f| (f, (|t: &str| one(network::parse_nm_keyfile(t))) as Parse)),
    )
    .chain(
        files_in(cx, "/etc/systemd/network", |n| n.ends_with(".network"))
            .into_iter()
            .map(|f| (f, (|t: &str| one(network::parse_networkd(t))) as Parse)),
    )
    .chain(
        files_in(cx, "/etc/systemd/network", |n| n.ends_with(".link"))
            .into_iter()
            .map(|f| (f, (|t: &str| one(network::parse_link(t))) as Parse)),
    )
    .chain(
        files_in(cx, "/etc/udev/rules.d", |n| {
            n.ends_with(".rules") && n.contains("net")
        })
        .into_iter()
        .map(|f| (f, network::parse_udev_rules as Parse)),
    )
    .collect();
    for (path, parse) in sources {
        let Some(text) = cx.config(&path) else {
            continue;
        };
        match parse(&text) {
            Ok(v) => ins.network.extend(v.into_iter().map(|mut i| {
                i.file = path.clone();
                i
            })),
            Err(e) => cx.parse_error(&path, e),
        }
    }
}

fn read_agents(cx: &mut Cx, ins: &mut Inspection) {
    let base = "/etc/systemd/system";
    if cx.root.kind(base) != Some(root::Kind::Dir) {
        return;
    }
    let wants: Vec<String> = match cx.root.read_dir(base) {
        Ok(n) => n.into_iter().filter(|n| n.ends_with(".wants")).collect(),
        Err(e) => {
            cx.problem(e.to_string());
            return;
        }
    };
    for w in wants {
        let dir = format!("{base}/{w}");
        let names = match cx.root.read_dir(&dir) {
            Ok(n) => n,
            Err(e) => {
                cx.problem(e.to_string());
                continue;
            }
        };
        for unit in names {
            let stem = unit.trim_end_matches(".service");
            if let Some((_, reason)) = AGENTS.iter().find(|(a, _)| *a == stem) {
                if !ins.agents.iter().any(|a| a.unit == unit) {
                    ins.agents.push(Agent {
                        unit: unit.clone(),
                        enabled_in: format!("{dir}/{unit}"),
                        reason: reason.to_string(),
                    });
                }
            }
        }
    }
}
