//! Target virtual hardware: named profiles (what the operator chooses) and the resolved
//! [`VmSpec`] (profile + capture inventory + overrides), which the plan, the appliance and the
//! descriptor writers (libvirt XML, OVF) all work from.
//!
//! | profile       | disk bus    | NIC        | machine | drivers the guest's initramfs needs |
//! |---------------|-------------|------------|---------|-------------------------------------|
//! | `virtio`      | virtio-blk  | virtio-net | q35     | virtio_pci, virtio_blk              |
//! | `virtio-scsi` | virtio-scsi | virtio-net | q35     | virtio_pci, virtio_scsi, sd_mod     |
//! | `sata`        | SATA (AHCI) | e1000e     | q35     | ahci, sd_mod                        |
//!
//! Firmware defaults to what the source machine booted with (inventory, else the guest's
//! partition table and ESP); CPUs and memory default to the inventory (threads, MemTotal rounded
//! up to 256 MiB), else 2 vCPUs and 2 GiB.

use p2v_protocol::inventory::{FirmwareKind, Inventory};
use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBus {
    VirtioBlk,
    VirtioScsi,
    Sata,
}

impl DiskBus {
    /// Kernel modules the guest's initramfs must carry to find its root disk on this bus.
    pub fn guest_drivers(self) -> &'static [&'static str] {
        match self {
            DiskBus::VirtioBlk => &["virtio_pci", "virtio_blk"],
            DiskBus::VirtioScsi => &["virtio_pci", "virtio_scsi", "sd_mod"],
            DiskBus::Sata => &["ahci", "sd_mod"],
        }
    }
    /// The kernel name prefix the guest will give disks on this bus (`vd`, `sd`).
    pub fn guest_disk_prefix(self) -> &'static str {
        match self {
            DiskBus::VirtioBlk => "vd",
            DiskBus::VirtioScsi | DiskBus::Sata => "sd",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicModel {
    VirtioNet,
    E1000e,
}

impl NicModel {
    pub fn guest_driver(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio_net",
            NicModel::E1000e => "e1000e",
        }
    }
}

/// A named target profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetProfile {
    pub name: String,
    pub disk_bus: DiskBus,
    pub nic_model: NicModel,
    /// `None`: what the source used.
    pub firmware: Option<FirmwareKind>,
    /// QEMU/libvirt machine type.
    pub machine: String,
    pub description: String,
}

/// The built-in profiles.
pub fn builtin_profiles() -> Vec<TargetProfile> {
    let p = |name: &str, disk_bus, nic_model, description: &str| TargetProfile {
        name: name.into(),
        disk_bus,
        nic_model,
        firmware: None,
        machine: "q35".into(),
        description: description.into(),
    };
    vec![
        p(
            "virtio",
            DiskBus::VirtioBlk,
            NicModel::VirtioNet,
            "KVM/QEMU/libvirt, paravirtual disk and NIC (fastest; the default)",
        ),
        p(
            "virtio-scsi",
            DiskBus::VirtioScsi,
            NicModel::VirtioNet,
            "KVM/QEMU/libvirt with virtio-scsi (many disks, discard, sdX names)",
        ),
        p(
            "sata",
            DiskBus::Sata,
            NicModel::E1000e,
            "emulated AHCI + e1000e: for guests whose kernel has no virtio drivers",
        ),
    ]
}

/// A built-in profile by name.
pub fn profile(name: &str) -> Result<TargetProfile, Error> {
    builtin_profiles()
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            Error::Profile(format!(
                "unknown profile {name:?} (known: {})",
                builtin_profiles()
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// One disk of the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDisk {
    pub disk_id: String,
    pub size_bytes: u64,
    pub bus: DiskBus,
    /// The image file the descriptor names (filled by the export; a bare name in OVF).
    #[serde(default)]
    pub file: Option<String>,
    /// The image format of `file`; `None`: from its extension (`.qcow2`, `.raw`/`.img`, `.vmdk`).
    #[serde(default)]
    pub format: Option<DiskFormat>,
    /// Size of `file` in bytes once written (the OVF `References` size; omitted when unknown).
    #[serde(default)]
    pub file_bytes: Option<u64>,
}

/// Image formats a descriptor can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Qcow2,
    Raw,
    Vmdk,
}

/// One NIC of the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmNic {
    /// MAC address (by default the physical NIC's, so DHCP reservations and licences follow).
    pub mac: String,
    pub model: NicModel,
    /// The interface name on the physical machine, which the guest keeps: systemd's
    /// predictable name there (`ens5`), else the kernel's.
    pub original_name: Option<String>,
    /// The kernel's name for it on the physical machine (`eth0`), for guests booted with
    /// `net.ifnames=0`.
    #[serde(default)]
    pub kernel_name: Option<String>,
}

/// The resolved virtual machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub name: String,
    pub profile: String,
    pub machine: String,
    pub firmware: FirmwareKind,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<VmDisk>,
    pub nics: Vec<VmNic>,
}

/// Operator overrides of the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub firmware: Option<FirmwareKind>,
    /// Keep the physical MACs (default true); false gives locally administered new ones.
    pub keep_macs: Option<bool>,
}

/// Physical NICs worth carrying over: not loopback, not virtual (bridges, bonds, tun).
fn physical_nics(inv: &Inventory) -> impl Iterator<Item = &p2v_protocol::inventory::Nic> {
    inv.nics
        .iter()
        .filter(|n| n.name != "lo" && n.mac != "00:00:00:00:00:00" && n.driver.is_some())
}

/// A locally administered MAC derived from the machine id and the NIC's position.
fn generated_mac(seed: &str, index: usize) -> String {
    let h = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let b = h.to_le_bytes();
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        b[0],
        b[1],
        b[2].wrapping_add(index as u8)
    )
}

/// Resolves a profile against what is known of the source machine.
///
/// `disks` are `(disk_id, size_bytes)` in VM order; `source_firmware` is the guest's own mode
/// when the inventory does not tell (a disk captured from an image file).
pub fn resolve(
    name: &str,
    profile: &TargetProfile,
    inventory: Option<&Inventory>,
    disks: &[(String, u64)],
    source_firmware: Option<FirmwareKind>,
    overrides: &Overrides,
) -> VmSpec {
    let firmware = overrides
        .firmware
        .or(profile.firmware)
        .or(inventory.map(|i| i.firmware.kind))
        .or(source_firmware)
        .unwrap_or(FirmwareKind::Bios);
    let cpus = overrides
        .cpus
        .or(inventory.map(|i| i.cpu.threads.max(1)))
        .unwrap_or(2);
    let memory_mib = overrides.memory_mib.unwrap_or_else(|| match inventory {
        Some(i) if i.memory_bytes > 0 => (i.memory_bytes >> 20).div_ceil(256) * 256,
        _ => 2048,
    });
    let keep = overrides.keep_macs.unwrap_or(true);
    let nics = inventory
        .map(|inv| {
            physical_nics(inv)
                .enumerate()
                .map(|(i, n)| VmNic {
                    mac: if keep {
                        n.mac.to_ascii_lowercase()
                    } else {
                        generated_mac(name, i)
                    },
                    model: profile.nic_model,
                    // The name the installed guest knew it by (systemd's predictable name),
                    // not the live image's kernel name.
                    original_name: Some(
                        n.predictable_name.clone().unwrap_or_else(|| n.name.clone()),
                    ),
                    kernel_name: Some(n.name.clone()),
                })
                .collect()
        })
        .unwrap_or_default();
    VmSpec {
        name: name.to_string(),
        profile: profile.name.clone(),
        machine: profile.machine.clone(),
        firmware,
        cpus,
        memory_mib,
        disks: disks
            .iter()
            .map(|(id, size)| VmDisk {
                disk_id: id.clone(),
                size_bytes: *size,
                bus: profile.disk_bus,
                file: None,
                format: None,
                file_bytes: None,
            })
            .collect(),
        nics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_known_and_unknown_is_explained() {
        assert_eq!(profile("virtio").unwrap().disk_bus, DiskBus::VirtioBlk);
        let e = profile("vmware").unwrap_err().to_string();
        assert!(e.contains("virtio-scsi"), "{e}");
    }

    #[test]
    fn defaults_without_inventory() {
        let p = profile("sata").unwrap();
        let vm = resolve(
            "m",
            &p,
            None,
            &[("d-1".into(), 1 << 30)],
            Some(FirmwareKind::Uefi),
            &Overrides::default(),
        );
        assert_eq!(
            (vm.cpus, vm.memory_mib, vm.firmware),
            (2, 2048, FirmwareKind::Uefi)
        );
        assert_eq!(vm.disks[0].bus, DiskBus::Sata);
        assert!(vm.nics.is_empty());
        let a = generated_mac("m", 0);
        assert!(a.starts_with("52:54:00:") && a.len() == 17, "{a}");
    }
}
