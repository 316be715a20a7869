//! The OVF descriptor of the converted VM, for an import into vSphere ("Deploy OVF Template",
//! `ovftool`) together with the exported streamOptimized VMDKs.
//!
//! Written as OVF 1.0 (DMTF DSP0243 1.0/1.1, envelope namespace `.../ovf/envelope/1`, the
//! version ovftool writes by default and every vSphere release reads), with the CIM
//! `ResourceAllocationSettingData` (`rasd:`) and `VirtualSystemSettingData` (`vssd:`) schemas
//! and VMware's `vmw:` extensions (`vmw:osType`, `vmw:Config`):
//!
//! - `References`: one `File` per disk (`href` = the VMDK's bare file name, `size` when
//!   [`VmDisk::file_bytes`](crate::profile::VmDisk) is known).
//! - `DiskSection`: one `Disk` per disk, capacity in bytes, format streamOptimized.
//! - `NetworkSection`: one network ([`OvfOptions::network_name`], default `VM Network`).
//! - `VirtualSystem`: `OperatingSystemSection` ([`OvfOs`], default CIM 101 "Linux 64-Bit" /
//!   `otherLinux64Guest`), `VirtualHardwareSection` with the `System` (virtual hardware
//!   version, default `vmx-13` = ESXi 6.5+) and the `Item`s: CPUs (ResourceType 3), memory
//!   (4, in `byte * 2^20` = MiB, the DSP0004 programmatic unit ovftool writes), the disk
//!   controllers (6 SCSI: `VirtualSCSI` = pvscsi or `lsilogic`, for both virtio profiles; 20
//!   AHCI `vmware.sata.ahci` for the SATA profile; 15 disks per SCSI and 30 per SATA
//!   controller, at most 4 controllers), the disks (17, `ovf:/disk/vmdiskN`, `Parent` = the
//!   controller's `InstanceID`), the NICs (10, `VmxNet3` for virtio-net, `E1000e` for e1000e,
//!   the MAC in `rasd:Address`), and `vmw:Config firmware=efi` for UEFI.
//!
//! The RASD children of each `Item` are written in the order of the CIM schema's
//! `xs:sequence` (alphabetical), which the DMTF schema enforces and strict importers check.
//!
//! vSphere does not see virtio devices: a guest converted for a virtio profile boots there only
//! if its initramfs also holds the drivers of [`ovf_guest_drivers`].

use p2v_protocol::inventory::FirmwareKind;
use serde::{Deserialize, Serialize};

use super::xml::Xml;
use super::{check_text, check_vm, disk_file, disk_format, parse_mac};
use crate::profile::{DiskBus, DiskFormat, NicModel, VmSpec};
use crate::Error;

const NS_OVF: &str = "http://schemas.dmtf.org/ovf/envelope/1";
const NS_RASD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
const NS_VSSD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";
const NS_VMW: &str = "http://www.vmware.com/schema/ovf";
const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const VMDK_STREAM: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// The SCSI controller the disks of the virtio profiles sit on in vSphere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScsiController {
    /// VMware Paravirtual SCSI (`VirtualSCSI`; Linux driver `vmw_pvscsi`).
    #[default]
    Pvscsi,
    /// LSI Logic Parallel (`lsilogic`; Linux driver `mptspi`).
    Lsilogic,
}

/// The vSphere NIC type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OvfNicType {
    /// Paravirtual (`vmxnet3`): what virtio-net becomes.
    VmxNet3,
    /// Emulated Intel 82574 (`e1000e`).
    E1000e,
}

/// The guest OS as vSphere names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvfOs {
    /// `CIM_OperatingSystem.OsType` (101: "Linux 64-Bit").
    pub cim_id: u16,
    /// vSphere's guest identifier (`VirtualMachineGuestOsIdentifier`).
    pub vmw_os_type: String,
    pub description: String,
}

impl Default for OvfOs {
    fn default() -> Self {
        OvfOs {
            cim_id: 101,
            vmw_os_type: "otherLinux64Guest".into(),
            description: "Other Linux (64-bit)".into(),
        }
    }
}

impl OvfOs {
    /// From the guest's os-release `ID` and `VERSION_ID`: the vSphere guest identifiers that
    /// exist on ESXi 6.5 (vmx-13) for the common server distributions; anything else is
    /// "Other Linux (64-bit)". The CIM id stays 101: vSphere goes by `vmw:osType`.
    pub fn from_os_release(id: &str, version_id: Option<&str>) -> Self {
        let major: Option<u32> = version_id
            .and_then(|v| v.split('.').next())
            .and_then(|v| v.parse().ok());
        let t = match (id, major) {
            ("debian", Some(8)) => Some(("debian8_64Guest", "Debian GNU/Linux 8 (64-bit)")),
            ("debian", Some(9)) => Some(("debian9_64Guest", "Debian GNU/Linux 9 (64-bit)")),
            ("debian", Some(v)) if v >= 10 => {
                Some(("debian10_64Guest", "Debian GNU/Linux 10 or later (64-bit)"))
            }
            ("ubuntu", _) => Some(("ubuntu64Guest", "Ubuntu Linux (64-bit)")),
            ("rhel" | "centos" | "rocky" | "almalinux" | "ol", Some(6)) => {
                Some(("rhel6_64Guest", "Red Hat Enterprise Linux 6 (64-bit)"))
            }
            ("rhel" | "centos" | "rocky" | "almalinux" | "ol", Some(v)) if v >= 7 => Some((
                "rhel7_64Guest",
                "Red Hat Enterprise Linux 7 or later (64-bit)",
            )),
            ("sles" | "sled", Some(12)) => Some(("sles12_64Guest", "SUSE Linux Enterprise 12")),
            ("sles" | "sled", Some(v)) if v >= 15 => {
                Some(("sles15_64Guest", "SUSE Linux Enterprise 15 or later"))
            }
            _ => None,
        };
        match t {
            Some((vmw, desc)) => OvfOs {
                cim_id: 101,
                vmw_os_type: vmw.into(),
                description: desc.into(),
            },
            None => OvfOs::default(),
        }
    }
}

/// Deployment choices for the OVF descriptor; [`Default`]: `VM Network`, other Linux 64-bit,
/// `vmx-13`, pvscsi, the NIC type from the profile, no Secure Boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OvfOptions {
    /// The one network all NICs connect to (mapped to a port group at import).
    pub network_name: String,
    pub os: OvfOs,
    /// `vmx-13` (ESXi 6.5) and later have e1000e, pvscsi, AHCI and UEFI Secure Boot.
    pub virtual_system_type: String,
    pub scsi_controller: ScsiController,
    /// `None`: `VmxNet3` for virtio-net NICs, `E1000e` for e1000e ones.
    pub nic_type: Option<OvfNicType>,
    /// UEFI only: `uefi.secureBoot.enabled`.
    pub secure_boot: bool,
}

impl Default for OvfOptions {
    fn default() -> Self {
        OvfOptions {
            network_name: "VM Network".into(),
            os: OvfOs::default(),
            virtual_system_type: "vmx-13".into(),
            scsi_controller: ScsiController::Pvscsi,
            nic_type: None,
            secure_boot: false,
        }
    }
}

fn nic_type(options: &OvfOptions, model: NicModel) -> OvfNicType {
    options.nic_type.unwrap_or(match model {
        NicModel::VirtioNet => OvfNicType::VmxNet3,
        NicModel::E1000e => OvfNicType::E1000e,
    })
}

/// Kernel modules the guest's initramfs needs to boot from and talk through the hardware
/// [`ovf_descriptor`] describes for `vm` (the plan adds them when an OVF is the target).
pub fn ovf_guest_drivers(vm: &VmSpec, options: &OvfOptions) -> Vec<&'static str> {
    let mut d = match vm.disks.first().map(|d| d.bus) {
        Some(DiskBus::Sata) => vec!["ahci", "sd_mod"],
        _ => match options.scsi_controller {
            ScsiController::Pvscsi => vec!["vmw_pvscsi", "sd_mod"],
            ScsiController::Lsilogic => vec!["mptspi", "sd_mod"],
        },
    };
    for n in &vm.nics {
        let m = match nic_type(options, n.model) {
            OvfNicType::VmxNet3 => "vmxnet3",
            OvfNicType::E1000e => "e1000e",
        };
        if !d.contains(&m) {
            d.push(m);
        }
    }
    d
}

/// The RASD elements an `Item` may carry here, each written in the schema's sequence order.
#[derive(Debug, Default)]
struct Rasd {
    address: Option<String>,
    address_on_parent: Option<String>,
    allocation_units: Option<&'static str>,
    automatic_allocation: Option<bool>,
    connection: Option<String>,
    description: Option<String>,
    element_name: String,
    host_resource: Option<String>,
    instance_id: u32,
    parent: Option<u32>,
    resource_sub_type: Option<&'static str>,
    resource_type: u16,
    virtual_quantity: Option<u64>,
}

impl Rasd {
    fn write(&self, x: &mut Xml) {
        x.el("Item", &[], |x| {
            let opt = |x: &mut Xml, name: &'static str, v: Option<&str>| {
                if let Some(v) = v {
                    x.leaf(name, &[], v);
                }
            };
            opt(x, "rasd:Address", self.address.as_deref());
            opt(x, "rasd:AddressOnParent", self.address_on_parent.as_deref());
            opt(x, "rasd:AllocationUnits", self.allocation_units);
            let auto = self.automatic_allocation.map(|b| b.to_string());
            opt(x, "rasd:AutomaticAllocation", auto.as_deref());
            opt(x, "rasd:Connection", self.connection.as_deref());
            opt(x, "rasd:Description", self.description.as_deref());
            x.leaf("rasd:ElementName", &[], &self.element_name);
            opt(x, "rasd:HostResource", self.host_resource.as_deref());
            x.leaf("rasd:InstanceID", &[], &self.instance_id.to_string());
            let parent = self.parent.map(|p| p.to_string());
            opt(x, "rasd:Parent", parent.as_deref());
            opt(x, "rasd:ResourceSubType", self.resource_sub_type);
            x.leaf("rasd:ResourceType", &[], &self.resource_type.to_string());
            let q = self.virtual_quantity.map(|q| q.to_string());
            opt(x, "rasd:VirtualQuantity", q.as_deref());
        });
    }
}

/// The bare file name of a disk's VMDK, which becomes the `href` (a relative URI: only
/// characters that need no percent-encoding are accepted; the export chooses the names).
fn vmdk_href(d: &crate::profile::VmDisk) -> Result<String, Error> {
    let file = disk_file(d)?;
    if disk_format(d)? != DiskFormat::Vmdk {
        return Err(Error::Descriptor(format!(
            "disk {}: {file:?} is not a VMDK (an OVF for vSphere names streamOptimized VMDKs)",
            d.disk_id
        )));
    }
    let name = file.rsplit('/').next().unwrap_or(file);
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(Error::Descriptor(format!(
            "disk {}: VMDK file name {name:?}: only letters, digits, '.', '_', '-' \
             (it becomes a relative URI in the OVF)",
            d.disk_id
        )));
    }
    Ok(name.to_string())
}

/// The OVF 1.0 descriptor of `vm` (see the module docs for its content).
///
/// Errors: see [`super`]; also a disk image that is not a VMDK or whose file name would need
/// URI escaping, two disks with the same file, a zero capacity, more disks than four
/// controllers hold, Secure Boot without UEFI, an empty network name.
pub fn ovf_descriptor(vm: &VmSpec, options: &OvfOptions) -> Result<String, Error> {
    check_vm(vm)?;
    check_text("network name", &options.network_name, 255)?;
    check_text("OS type", &options.os.vmw_os_type, 64)?;
    check_text("OS description", &options.os.description, 255)?;
    check_text("virtual system type", &options.virtual_system_type, 64)?;
    if options.secure_boot && vm.firmware != FirmwareKind::Uefi {
        return Err(Error::Descriptor(
            "Secure Boot asked for a BIOS VM (it needs UEFI firmware)".into(),
        ));
    }
    let mut hrefs: Vec<String> = Vec::with_capacity(vm.disks.len());
    for d in &vm.disks {
        let h = vmdk_href(d)?;
        if hrefs.contains(&h) {
            return Err(Error::Descriptor(format!("two disks name the file {h:?}")));
        }
        if d.size_bytes == 0 {
            return Err(Error::Descriptor(format!("disk {}: capacity 0", d.disk_id)));
        }
        hrefs.push(h);
    }
    let mut macs = Vec::with_capacity(vm.nics.len());
    for n in &vm.nics {
        let m = parse_mac(&n.mac)?;
        if macs.contains(&m) {
            return Err(Error::Descriptor(format!("MAC address {m} given twice")));
        }
        macs.push(m);
    }
    let sata = vm.disks[0].bus == DiskBus::Sata;
    // Unit numbers per controller: SCSI skips 7 (the controller's own ID).
    let units: Vec<u32> = if sata {
        (0..30).collect()
    } else {
        (0..16).filter(|u| *u != 7).collect()
    };
    let controllers = vm.disks.len().div_ceil(units.len());
    if controllers > 4 {
        return Err(Error::Descriptor(format!(
            "{} disks need {controllers} controllers (vSphere has at most 4 of a kind)",
            vm.disks.len()
        )));
    }

    let mut items = vec![
        Rasd {
            allocation_units: Some("hertz * 10^6"),
            description: Some("Number of virtual CPUs".into()),
            element_name: format!("{} virtual CPU(s)", vm.cpus),
            instance_id: 1,
            resource_type: 3,
            virtual_quantity: Some(vm.cpus.into()),
            ..Default::default()
        },
        Rasd {
            allocation_units: Some("byte * 2^20"),
            description: Some("Memory size".into()),
            element_name: format!("{} MB of memory", vm.memory_mib),
            instance_id: 2,
            resource_type: 4,
            virtual_quantity: Some(vm.memory_mib),
            ..Default::default()
        },
    ];
    let mut next_id = 3;
    let mut controller_ids = Vec::with_capacity(controllers);
    for c in 0..controllers {
        let (desc, sub, rt, label) = if sata {
            ("SATA controller", "vmware.sata.ahci", 20, "SATA controller")
        } else {
            match options.scsi_controller {
                ScsiController::Pvscsi => ("SCSI controller", "VirtualSCSI", 6, "SCSI controller"),
                ScsiController::Lsilogic => ("SCSI controller", "lsilogic", 6, "SCSI controller"),
            }
        };
        items.push(Rasd {
            address: Some(c.to_string()),
            description: Some(desc.into()),
            element_name: format!("{label} {c}"),
            instance_id: next_id,
            resource_sub_type: Some(sub),
            resource_type: rt,
            ..Default::default()
        });
        controller_ids.push(next_id);
        next_id += 1;
    }
    for (i, _) in vm.disks.iter().enumerate() {
        items.push(Rasd {
            address_on_parent: Some(units[i % units.len()].to_string()),
            element_name: format!("Hard disk {}", i + 1),
            host_resource: Some(format!("ovf:/disk/vmdisk{}", i + 1)),
            instance_id: next_id,
            parent: Some(controller_ids[i / units.len()]),
            resource_type: 17,
            ..Default::default()
        });
        next_id += 1;
    }
    for (i, (n, mac)) in vm.nics.iter().zip(&macs).enumerate() {
        let (sub, label) = match nic_type(options, n.model) {
            OvfNicType::VmxNet3 => ("VmxNet3", "VmxNet3"),
            OvfNicType::E1000e => ("E1000e", "E1000e"),
        };
        items.push(Rasd {
            address: Some(mac.clone()),
            address_on_parent: Some((7 + i).to_string()),
            automatic_allocation: Some(true),
            connection: Some(options.network_name.clone()),
            description: Some(format!(
                "{label} ethernet adapter on \"{}\"",
                options.network_name
            )),
            element_name: format!("Network adapter {}", i + 1),
            instance_id: next_id,
            resource_sub_type: Some(sub),
            resource_type: 10,
            ..Default::default()
        });
        next_id += 1;
    }

    let mut x = Xml::new(true);
    x.el(
        "Envelope",
        &[
            ("xmlns", NS_OVF),
            ("xmlns:ovf", NS_OVF),
            ("xmlns:rasd", NS_RASD),
            ("xmlns:vssd", NS_VSSD),
            ("xmlns:vmw", NS_VMW),
            ("xmlns:xsi", NS_XSI),
        ],
        |x| {
            x.el("References", &[], |x| {
                for (i, (d, h)) in vm.disks.iter().zip(&hrefs).enumerate() {
                    let id = format!("file{}", i + 1);
                    let size = d.file_bytes.map(|b| b.to_string());
                    let mut a = vec![("ovf:href", h.as_str()), ("ovf:id", id.as_str())];
                    if let Some(s) = &size {
                        a.push(("ovf:size", s));
                    }
                    x.empty("File", &a);
                }
            });
            x.el("DiskSection", &[], |x| {
                x.leaf("Info", &[], "Virtual disk information");
                for (i, d) in vm.disks.iter().enumerate() {
                    x.empty(
                        "Disk",
                        &[
                            ("ovf:capacity", &d.size_bytes.to_string()),
                            ("ovf:capacityAllocationUnits", "byte"),
                            ("ovf:diskId", &format!("vmdisk{}", i + 1)),
                            ("ovf:fileRef", &format!("file{}", i + 1)),
                            ("ovf:format", VMDK_STREAM),
                        ],
                    );
                }
            });
            x.el("NetworkSection", &[], |x| {
                x.leaf("Info", &[], "The list of logical networks");
                x.el("Network", &[("ovf:name", &options.network_name)], |x| {
                    x.leaf(
                        "Description",
                        &[],
                        &format!("The {} network", options.network_name),
                    )
                });
            });
            x.el("VirtualSystem", &[("ovf:id", &vm.name)], |x| {
                x.leaf(
                    "Info",
                    &[],
                    &format!(
                        "A virtual machine converted by p2v-convert (profile {})",
                        vm.profile
                    ),
                );
                x.leaf("Name", &[], &vm.name);
                x.el(
                    "OperatingSystemSection",
                    &[
                        ("ovf:id", &options.os.cim_id.to_string()),
                        ("vmw:osType", &options.os.vmw_os_type),
                    ],
                    |x| {
                        x.leaf("Info", &[], "The kind of installed guest operating system");
                        x.leaf("Description", &[], &options.os.description);
                    },
                );
                x.el("VirtualHardwareSection", &[], |x| {
                    x.leaf("Info", &[], "Virtual hardware requirements");
                    x.el("System", &[], |x| {
                        x.leaf("vssd:ElementName", &[], "Virtual Hardware Family");
                        x.leaf("vssd:InstanceID", &[], "0");
                        x.leaf("vssd:VirtualSystemIdentifier", &[], &vm.name);
                        x.leaf("vssd:VirtualSystemType", &[], &options.virtual_system_type);
                    });
                    for it in &items {
                        it.write(x);
                    }
                    if vm.firmware == FirmwareKind::Uefi {
                        x.empty(
                            "vmw:Config",
                            &[
                                ("ovf:required", "false"),
                                ("vmw:key", "firmware"),
                                ("vmw:value", "efi"),
                            ],
                        );
                        x.empty(
                            "vmw:Config",
                            &[
                                ("ovf:required", "false"),
                                ("vmw:key", "uefi.secureBoot.enabled"),
                                (
                                    "vmw:value",
                                    if options.secure_boot { "true" } else { "false" },
                                ),
                            ],
                        );
                    }
                });
            });
        },
    );
    x.finish()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{vm, FIRMWARES, PROFILES};
    use super::*;
    use roxmltree::{Document, Node};

    fn parse(s: &str) -> Document<'_> {
        Document::parse(s).unwrap_or_else(|e| panic!("{e}\n{s}"))
    }

    fn ovf<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Vec<Node<'a, 'i>> {
        n.children()
            .filter(|c| c.tag_name().namespace() == Some(NS_OVF) && c.tag_name().name() == name)
            .collect()
    }

    fn one<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Node<'a, 'i> {
        let v = ovf(n, name);
        assert_eq!(v.len(), 1, "<{name}> in <{}>", n.tag_name().name());
        v[0]
    }

    fn rasd<'a>(item: Node<'a, '_>, name: &str) -> Option<&'a str> {
        item.children()
            .find(|c| c.tag_name().namespace() == Some(NS_RASD) && c.tag_name().name() == name)
            .and_then(|c| c.text())
    }

    fn oa<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
        n.attribute((NS_OVF, name))
    }

    fn vmdk_vm(p: &str, fw: FirmwareKind) -> VmSpec {
        let mut v = vm(p, fw);
        for (i, d) in v.disks.iter_mut().enumerate() {
            d.file = Some(format!("/srv/export/web-disk{}.vmdk", i + 1));
        }
        v
    }

    #[test]
    fn every_profile_and_firmware() {
        for p in PROFILES {
            for fw in FIRMWARES {
                let v = vmdk_vm(p, fw);
                let s = ovf_descriptor(&v, &OvfOptions::default()).unwrap();
                let doc = parse(&s);
                let env = doc.root_element();
                let ctx = format!("{p} {fw:?}");
                assert_eq!(env.tag_name().namespace(), Some(NS_OVF));
                assert_eq!(env.tag_name().name(), "Envelope");
                let files = ovf(one(env, "References"), "File");
                assert_eq!(files.len(), 2);
                assert_eq!(oa(files[0], "href"), Some("web-disk1.vmdk"));
                assert_eq!(oa(files[1], "size"), Some("123457"));
                let disks = ovf(one(env, "DiskSection"), "Disk");
                assert_eq!(oa(disks[1], "capacity"), Some("8590983168"));
                assert_eq!(oa(disks[1], "capacityAllocationUnits"), Some("byte"));
                assert_eq!(oa(disks[0], "format"), Some(VMDK_STREAM));
                assert_eq!(oa(disks[0], "fileRef"), oa(files[0], "id"));
                let net = one(one(env, "NetworkSection"), "Network");
                assert_eq!(oa(net, "name"), Some("VM Network"));
                let vs = one(env, "VirtualSystem");
                assert_eq!(oa(vs, "id"), Some(v.name.as_str()));
                let os = one(vs, "OperatingSystemSection");
                assert_eq!(oa(os, "id"), Some("101"));
                assert_eq!(os.attribute((NS_VMW, "osType")), Some("otherLinux64Guest"));
                let hw = one(vs, "VirtualHardwareSection");
                let sys = one(hw, "System");
                let vst = sys
                    .children()
                    .find(|c| c.tag_name().name() == "VirtualSystemType")
                    .unwrap();
                assert_eq!(vst.tag_name().namespace(), Some(NS_VSSD));
                assert_eq!(vst.text(), Some("vmx-13"));
                let items = ovf(hw, "Item");
                let by = |t: &str| -> Vec<Node> {
                    items
                        .iter()
                        .copied()
                        .filter(|i| rasd(*i, "ResourceType") == Some(t))
                        .collect()
                };
                assert_eq!(rasd(by("3")[0], "VirtualQuantity"), Some("3"), "{ctx}");
                assert_eq!(rasd(by("4")[0], "VirtualQuantity"), Some("1536"), "{ctx}");
                assert_eq!(rasd(by("4")[0], "AllocationUnits"), Some("byte * 2^20"));
                let (ctl_type, sub) = if p == "sata" {
                    ("20", "vmware.sata.ahci")
                } else {
                    ("6", "VirtualSCSI")
                };
                let ctl = by(ctl_type);
                assert_eq!(ctl.len(), 1, "{ctx}");
                assert_eq!(rasd(ctl[0], "ResourceSubType"), Some(sub), "{ctx}");
                assert!(by(if p == "sata" { "6" } else { "20" }).is_empty(), "{ctx}");
                let hd = by("17");
                assert_eq!(hd.len(), 2);
                for (i, d) in hd.iter().enumerate() {
                    assert_eq!(
                        rasd(*d, "HostResource"),
                        Some(format!("ovf:/disk/vmdisk{}", i + 1).as_str())
                    );
                    assert_eq!(rasd(*d, "Parent"), rasd(ctl[0], "InstanceID"), "{ctx}");
                    assert_eq!(rasd(*d, "AddressOnParent"), Some(i.to_string().as_str()));
                }
                let nics = by("10");
                let want = if p == "sata" { "E1000e" } else { "VmxNet3" };
                for (n, mac) in nics.iter().zip(["00:1b:21:0a:0b:0c", "00:1b:21:0a:0b:0d"]) {
                    assert_eq!(rasd(*n, "Address"), Some(mac), "{ctx}");
                    assert_eq!(rasd(*n, "ResourceSubType"), Some(want), "{ctx}");
                    assert_eq!(rasd(*n, "AutomaticAllocation"), Some("true"));
                    assert_eq!(rasd(*n, "Connection"), Some("VM Network"));
                }
                assert_eq!(nics.len(), 2);
                let config: Vec<_> = hw
                    .children()
                    .filter(|c| c.tag_name().namespace() == Some(NS_VMW))
                    .map(|c| {
                        (
                            c.attribute((NS_VMW, "key")).unwrap(),
                            c.attribute((NS_VMW, "value")).unwrap(),
                        )
                    })
                    .collect();
                match fw {
                    FirmwareKind::Bios => assert!(config.is_empty(), "{ctx}"),
                    FirmwareKind::Uefi => assert_eq!(
                        config,
                        [("firmware", "efi"), ("uefi.secureBoot.enabled", "false")],
                        "{ctx}"
                    ),
                }
            }
        }
    }

    #[test]
    fn options_and_hostile_names() {
        let mut v = vmdk_vm("virtio-scsi", FirmwareKind::Uefi);
        v.name = "a&b<c>'\"".into();
        let o = OvfOptions {
            network_name: "Prod <DMZ> & \"lab\"".into(),
            os: OvfOs::from_os_release("debian", Some("12")),
            virtual_system_type: "vmx-19".into(),
            scsi_controller: ScsiController::Lsilogic,
            nic_type: Some(OvfNicType::E1000e),
            secure_boot: true,
        };
        let s = ovf_descriptor(&v, &o).unwrap();
        assert!(s.contains("ovf:id=\"a&amp;b&lt;c&gt;&apos;&quot;\""), "{s}");
        let doc = parse(&s);
        let env = doc.root_element();
        let vs = one(env, "VirtualSystem");
        assert_eq!(one(vs, "Name").text(), Some("a&b<c>'\""));
        let net = one(one(env, "NetworkSection"), "Network");
        assert_eq!(oa(net, "name"), Some("Prod <DMZ> & \"lab\""));
        let os = one(vs, "OperatingSystemSection");
        assert_eq!(os.attribute((NS_VMW, "osType")), Some("debian10_64Guest"));
        let hw = one(vs, "VirtualHardwareSection");
        let items = ovf(hw, "Item");
        assert!(items
            .iter()
            .any(|i| rasd(*i, "ResourceSubType") == Some("lsilogic")));
        let nic = items
            .iter()
            .find(|i| rasd(**i, "ResourceType") == Some("10"))
            .unwrap();
        assert_eq!(rasd(*nic, "ResourceSubType"), Some("E1000e"));
        assert_eq!(rasd(*nic, "Connection"), Some("Prod <DMZ> & \"lab\""));
        assert!(s.contains("vmw:key=\"uefi.secureBoot.enabled\" vmw:value=\"true\""));
        assert_eq!(ovf_guest_drivers(&v, &o), ["mptspi", "sd_mod", "e1000e"]);
        assert_eq!(
            ovf_guest_drivers(&v, &OvfOptions::default()),
            ["vmw_pvscsi", "sd_mod", "vmxnet3"]
        );
    }

    #[test]
    fn os_hints() {
        for (id, ver, want) in [
            ("debian", Some("12"), "debian10_64Guest"),
            ("debian", Some("9"), "debian9_64Guest"),
            ("ubuntu", Some("22.04"), "ubuntu64Guest"),
            ("rocky", Some("9.3"), "rhel7_64Guest"),
            ("sles", Some("15.5"), "sles15_64Guest"),
            ("arch", None, "otherLinux64Guest"),
            ("debian", Some("sid"), "otherLinux64Guest"),
        ] {
            let os = OvfOs::from_os_release(id, ver);
            assert_eq!(os.vmw_os_type, want, "{id} {ver:?}");
            assert_eq!(os.cim_id, 101);
        }
    }

    #[test]
    fn many_disks_spread_over_controllers() {
        let mut v = vmdk_vm("virtio", FirmwareKind::Bios);
        let d = v.disks[0].clone();
        v.disks = (0..31)
            .map(|i| {
                let mut d = d.clone();
                d.file = Some(format!("/e/d{i}.vmdk"));
                d
            })
            .collect();
        let s = ovf_descriptor(&v, &OvfOptions::default()).unwrap();
        let doc = parse(&s);
        let items: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name((NS_OVF, "Item")))
            .collect();
        let ctl: Vec<_> = items
            .iter()
            .filter(|i| rasd(**i, "ResourceType") == Some("6"))
            .map(|i| rasd(*i, "InstanceID").unwrap())
            .collect();
        assert_eq!(ctl.len(), 3);
        let hd: Vec<_> = items
            .iter()
            .filter(|i| rasd(**i, "ResourceType") == Some("17"))
            .map(|i| {
                (
                    rasd(*i, "Parent").unwrap(),
                    rasd(*i, "AddressOnParent").unwrap(),
                )
            })
            .collect();
        assert_eq!(hd[6], (ctl[0], "6"));
        assert_eq!(hd[7], (ctl[0], "8"), "unit 7 is the controller's");
        assert_eq!(hd[15], (ctl[1], "0"));
        assert_eq!(hd[30], (ctl[2], "0"));
        v.disks = (0..61)
            .map(|i| {
                let mut d = d.clone();
                d.file = Some(format!("/e/d{i}.vmdk"));
                d
            })
            .collect();
        let e = ovf_descriptor(&v, &OvfOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("controllers"), "{e}");
    }

    #[test]
    fn refusals() {
        let ok = vmdk_vm("sata", FirmwareKind::Bios);
        type Case = (Box<dyn Fn(&mut VmSpec, &mut OvfOptions)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                Box::new(|v, _| v.disks[0].file = Some("/e/d.qcow2".into())),
                "not a VMDK",
            ),
            (
                Box::new(|v, _| v.disks[0].file = Some("/e/my disk.vmdk".into())),
                "file name",
            ),
            (
                Box::new(|v, _| v.disks[0].file = Some("/e/.hidden.vmdk".into())),
                "file name",
            ),
            (
                Box::new(|v, _| v.disks[1].file = v.disks[0].file.clone()),
                "two disks",
            ),
            (Box::new(|v, _| v.disks[0].file = None), "no image file"),
            (Box::new(|v, _| v.disks[0].size_bytes = 0), "capacity 0"),
            (
                Box::new(|v, _| v.nics[0].mac = "ff:ff:ff:ff:ff:ff".into()),
                "multicast",
            ),
            (
                Box::new(|v, _| v.name = "x\u{0}".into()),
                "control character",
            ),
            (Box::new(|_, o| o.network_name = String::new()), "empty"),
            (Box::new(|_, o| o.secure_boot = true), "Secure Boot"),
            (
                Box::new(|_, o| o.os.vmw_os_type = "a\tb".into()),
                "control character",
            ),
        ];
        for (edit, want) in cases {
            let (mut v, mut o) = (ok.clone(), OvfOptions::default());
            edit(&mut v, &mut o);
            let e = ovf_descriptor(&v, &o).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?}: {e}");
        }
    }
}
