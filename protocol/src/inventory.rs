//! The machine inventory the agent sends when a capture starts.
//!
//! The server keeps it with the machine; later stages use it to size the virtual machine (CPUs,
//! memory, NICs and their MACs) and to know what hardware the guest was installed on (the
//! controller drivers of the disks, the firmware mode).

use serde::{Deserialize, Serialize};

/// Everything the agent learned about the machine it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub system: SystemInfo,
    pub firmware: Firmware,
    pub cpu: CpuInfo,
    /// Memory visible to the kernel (`MemTotal`), in bytes.
    pub memory_bytes: u64,
    pub nics: Vec<Nic>,
    pub disks: Vec<DiskInfo>,
}

/// Identity of the machine from DMI/SMBIOS (`/sys/class/dmi/id`). Fields the firmware does not
/// fill (or fills with "To Be Filled By O.E.M.") are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemInfo {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub hostname: Option<String>,
}

/// Firmware the machine booted with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    pub kind: FirmwareKind,
    pub vendor: Option<String>,
    pub version: Option<String>,
    pub date: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareKind {
    Uefi,
    Bios,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuInfo {
    pub model: Option<String>,
    pub sockets: u32,
    /// Physical cores over all sockets.
    pub cores: u32,
    /// Logical processors (hardware threads) over all sockets.
    pub threads: u32,
}

/// A physical network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    pub driver: Option<String>,
    /// Link speed in Mbit/s, when the link is up and the driver reports it.
    pub speed_mbps: Option<u32>,
    /// Carrier present.
    pub link: bool,
    /// PCI address of the NIC (`0000:00:05.0`), when it is a PCI device.
    #[serde(default)]
    pub pci_address: Option<String>,
    /// The name systemd-udevd's default naming policy gives this NIC on this machine
    /// (`eno1`, `ens5`, `enp3s0f1`): what an installed guest calls it, while the live image's
    /// kernel calls it `eth0`. The conversion keeps this name on the VM's NIC.
    #[serde(default)]
    pub predictable_name: Option<String>,
}

/// Where a captured disk's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskSource {
    /// A block device of the machine.
    BlockDevice,
    /// A disk image file named on the agent's command line.
    ImageFile,
}

/// A disk as the agent found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskInfo {
    /// Kernel name (`sda`, `nvme0n1`) or the image file's name.
    pub name: String,
    /// Path the agent reads from.
    pub path: String,
    pub source: DiskSource,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub rotational: Option<bool>,
    pub removable: Option<bool>,
    /// Driver of the controller the disk hangs on (`ahci`, `nvme`, `megaraid_sas`, `virtio_blk`).
    pub controller_driver: Option<String>,
}

impl DiskInfo {
    /// A stable key that names this disk across runs of the agent, so a re-run resumes the same
    /// disk on the server: the WWN, else model and serial, else the path.
    pub fn stable_key(&self) -> String {
        if let Some(wwn) = &self.wwn {
            return format!("wwn:{wwn}");
        }
        if let Some(serial) = &self.serial {
            return format!("serial:{}:{serial}", self.model.as_deref().unwrap_or(""));
        }
        format!("path:{}", self.path)
    }
}
