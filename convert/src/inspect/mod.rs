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
    ins.problems = cx.problems;
    let _ = (partitions, disks);
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
