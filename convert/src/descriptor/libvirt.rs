//! The libvirt domain XML of the converted VM (<https://libvirt.org/formatdomain.html>).
//!
//! What is written, from the [`VmSpec`] and the [`LibvirtOptions`]:
//!
//! | element | value |
//! |---------|-------|
//! | `domain type` | `kvm`, or `qemu` (TCG, no hardware virtualisation) |
//! | `uuid` | given, else [`stable_uuid`](super::stable_uuid) of the VM name |
//! | `memory`, `currentMemory` | `memory_mib` in MiB |
//! | `os` | `hvm` on `vm.machine`; BIOS: no loader (SeaBIOS); UEFI: `firmware='efi'` and the `secure-boot` firmware feature off unless asked (libvirt picks the OVMF build and creates the NVRAM) |
//! | `features` | `acpi`, `apic`; `smm` with secure boot |
//! | `cpu` | see [`CpuMode`]: `host-passthrough` for KVM, `maximum` (QEMU's `max` model: all TCG can emulate, which x86-64-v2 guests such as EL9 need; `qemu64` lacks it) for TCG |
//! | `clock` | UTC (Linux guests keep the RTC in UTC), RTC catch-up, no HPET |
//! | disks | `virtio-blk`: `vda…` on bus `virtio`; `virtio-scsi`: `sda…` on bus `scsi` behind one `virtio-scsi` controller; SATA: `sda…` on bus `sata` (q35's built-in AHCI); driver type from [`VmDisk::format`](crate::profile::VmDisk) or the extension; `boot order='1'` on disk 0 |
//! | NICs | MAC and model (`virtio`, `e1000e`), attached per [`NetworkAttachment`] |
//! | console | serial port 0 with a `console` on it: a pty, or a file (tests read it) |
//! | graphics | none, or VNC on 127.0.0.1 with a virtio video device |
//! | rng | virtio-rng from `/dev/urandom` (guests that wait for entropy at boot) |

use p2v_protocol::inventory::FirmwareKind;
use serde::{Deserialize, Serialize};

use super::xml::Xml;
use super::{check_text, check_vm, disk_file, disk_format, disk_letters, parse_mac, parse_uuid};
use crate::profile::{DiskBus, DiskFormat, NicModel, VmSpec};
use crate::Error;

/// The libvirt domain type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    /// Hardware virtualisation (the usual target host).
    #[default]
    Kvm,
    /// QEMU's TCG emulator: for hosts without `/dev/kvm` (slow).
    Qemu,
}

impl DomainType {
    /// `Kvm` where this host has `/dev/kvm`, else `Qemu`: for a VM defined on this host.
    pub fn for_this_host() -> Self {
        if std::path::Path::new("/dev/kvm").exists() {
            DomainType::Kvm
        } else {
            DomainType::Qemu
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
        }
    }
}

/// How the guest CPU is described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuMode {
    /// The host's CPU as is (KVM only; best performance, no migration to other CPUs).
    HostPassthrough,
    /// A named model close to the host's (KVM; migratable).
    HostModel,
    /// Everything the hypervisor can offer: with TCG, QEMU's `max` model.
    Maximum,
    /// A named QEMU CPU model, e.g. `qemu64`, `Skylake-Server`.
    Model(String),
}

/// Where the NICs attach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkAttachment {
    /// QEMU user-mode networking (`<interface type='user'>`): no host setup; the guest gets
    /// NAT behind the host. The default, since it works on any host.
    #[default]
    User,
    /// A libvirt virtual network by name (`default`, …).
    Network(String),
    /// A host bridge by name (`br0`): the VM appears on the physical LAN, like the machine did.
    Bridge(String),
}

/// The serial console.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SerialConsole {
    /// A pseudo terminal (`virsh console NAME`).
    #[default]
    Pty,
    /// Append the console output to this absolute path (tests read it).
    File(String),
}

/// The display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Graphics {
    /// No display device: serial console only.
    None,
    /// VNC on 127.0.0.1 (reach it with `virsh vncdisplay` through an SSH tunnel).
    #[default]
    Vnc,
}

/// What libvirt does when the guest powers off, reboots or crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LifecycleAction {
    Destroy,
    Restart,
    Preserve,
}

impl LifecycleAction {
    fn as_str(self) -> &'static str {
        match self {
            LifecycleAction::Destroy => "destroy",
            LifecycleAction::Restart => "restart",
            LifecycleAction::Preserve => "preserve",
        }
    }
}

/// Deployment choices for the libvirt domain; [`Default`] is a KVM domain on user networking
/// with a pty console and VNC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LibvirtOptions {
    pub domain_type: DomainType,
    /// `None`: [`stable_uuid`](super::stable_uuid) of the VM name. The server passes
    /// `stable_uuid(machine_id)`, so that names may repeat across machines.
    pub uuid: Option<String>,
    /// Absolute path of the QEMU binary; `None`: libvirt's choice for the machine type.
    pub emulator: Option<String>,
    pub network: NetworkAttachment,
    pub serial: SerialConsole,
    pub graphics: Graphics,
    /// UEFI only: OVMF with Secure Boot and the Microsoft keys enrolled (the guest's shim and
    /// kernel must be signed).
    pub secure_boot: bool,
    /// `None`: `HostPassthrough` for KVM, `Maximum` for TCG.
    pub cpu: Option<CpuMode>,
    pub on_poweroff: LifecycleAction,
    pub on_reboot: LifecycleAction,
    pub on_crash: LifecycleAction,
}

impl Default for LibvirtOptions {
    fn default() -> Self {
        LibvirtOptions {
            domain_type: DomainType::Kvm,
            uuid: None,
            emulator: None,
            network: NetworkAttachment::User,
            serial: SerialConsole::Pty,
            graphics: Graphics::Vnc,
            secure_boot: false,
            cpu: None,
            on_poweroff: LifecycleAction::Destroy,
            on_reboot: LifecycleAction::Restart,
            on_crash: LifecycleAction::Destroy,
        }
    }
}

fn check_abs_path(what: &str, p: &str) -> Result<(), Error> {
    check_text(what, p, 4096)?;
    if !p.starts_with('/') {
        return Err(Error::Descriptor(format!(
            "{what} {p:?} is not an absolute path (libvirt does not resolve relative ones)"
        )));
    }
    Ok(())
}

fn check_machine(m: &str) -> Result<(), Error> {
    check_text("machine type", m, 64)?;
    if !m
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::Descriptor(format!(
            "machine type {m:?}: only letters, digits, '-', '_', '.'"
        )));
    }
    Ok(())
}

/// The libvirt domain XML of `vm` (see the module docs for what each element holds).
///
/// Errors: see [`super`]; also a VM name with `/` (libvirt refuses it), a relative disk,
/// console or emulator path, a machine type with characters QEMU does not use, Secure Boot
/// without UEFI.
pub fn libvirt_domain_xml(vm: &VmSpec, options: &LibvirtOptions) -> Result<String, Error> {
    check_vm(vm)?;
    if vm.name.contains('/') {
        return Err(Error::Descriptor(format!(
            "VM name {:?}: libvirt does not accept '/' in a domain name",
            vm.name
        )));
    }
    check_machine(&vm.machine)?;
    let uuid = match &options.uuid {
        Some(u) => parse_uuid(u)?,
        None => super::stable_uuid(&vm.name),
    };
    if options.secure_boot && vm.firmware != FirmwareKind::Uefi {
        return Err(Error::Descriptor(
            "Secure Boot asked for a BIOS VM (it needs UEFI firmware)".into(),
        ));
    }
    if let Some(e) = &options.emulator {
        check_abs_path("emulator", e)?;
    }
    if let SerialConsole::File(p) = &options.serial {
        check_abs_path("console file", p)?;
    }
    match &options.network {
        NetworkAttachment::User => {}
        NetworkAttachment::Network(n) => check_text("libvirt network name", n, 255)?,
        NetworkAttachment::Bridge(b) => check_text("bridge name", b, 255)?,
    }
    if let Some(CpuMode::Model(m)) = &options.cpu {
        check_text("CPU model", m, 64)?;
    }
    let bus = vm.disks[0].bus;
    let mut disks = Vec::with_capacity(vm.disks.len());
    for (i, d) in vm.disks.iter().enumerate() {
        let file = disk_file(d)?;
        check_abs_path(&format!("disk {} file", d.disk_id), file)?;
        let format = match disk_format(d)? {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
            DiskFormat::Vmdk => "vmdk",
        };
        let (target_bus, dev) = match bus {
            DiskBus::VirtioBlk => ("virtio", format!("vd{}", disk_letters(i))),
            DiskBus::VirtioScsi => ("scsi", format!("sd{}", disk_letters(i))),
            DiskBus::Sata => ("sata", format!("sd{}", disk_letters(i))),
        };
        disks.push((file, format, target_bus, dev));
    }
    let mut macs = Vec::with_capacity(vm.nics.len());
    for n in &vm.nics {
        let mac = parse_mac(&n.mac)?;
        if macs.contains(&mac) {
            return Err(Error::Descriptor(format!("MAC address {mac} given twice")));
        }
        macs.push(mac);
    }
    let cpu = options.cpu.clone().unwrap_or(match options.domain_type {
        DomainType::Kvm => CpuMode::HostPassthrough,
        DomainType::Qemu => CpuMode::Maximum,
    });
    let memory = vm.memory_mib.to_string();
    let mib = [("unit", "MiB")];

    let mut x = Xml::new(false);
    x.el("domain", &[("type", options.domain_type.as_str())], |x| {
        x.leaf("name", &[], &vm.name);
        x.leaf("uuid", &[], &uuid);
        x.leaf(
            "description",
            &[],
            &format!("Converted by p2v-convert (profile {})", vm.profile),
        );
        x.leaf("memory", &mib, &memory);
        x.leaf("currentMemory", &mib, &memory);
        x.leaf("vcpu", &[("placement", "static")], &vm.cpus.to_string());
        let os_attrs: &[(&str, &str)] = match vm.firmware {
            FirmwareKind::Bios => &[],
            FirmwareKind::Uefi => &[("firmware", "efi")],
        };
        x.el("os", os_attrs, |x| {
            x.leaf(
                "type",
                &[("arch", "x86_64"), ("machine", &vm.machine)],
                "hvm",
            );
            if vm.firmware == FirmwareKind::Uefi {
                let on = if options.secure_boot { "yes" } else { "no" };
                x.el("firmware", &[], |x| {
                    x.empty("feature", &[("enabled", on), ("name", "enrolled-keys")]);
                    x.empty("feature", &[("enabled", on), ("name", "secure-boot")]);
                });
            }
        });
        x.el("features", &[], |x| {
            x.empty("acpi", &[]);
            x.empty("apic", &[]);
            if options.secure_boot {
                x.empty("smm", &[("state", "on")]);
            }
        });
        match &cpu {
            CpuMode::HostPassthrough => x.empty(
                "cpu",
                &[
                    ("mode", "host-passthrough"),
                    ("check", "none"),
                    ("migratable", "on"),
                ],
            ),
            CpuMode::HostModel => x.empty("cpu", &[("mode", "host-model"), ("check", "partial")]),
            CpuMode::Maximum => x.empty("cpu", &[("mode", "maximum"), ("check", "none")]),
            CpuMode::Model(m) => x.el("cpu", &[("mode", "custom"), ("match", "exact")], |x| {
                x.leaf("model", &[("fallback", "forbid")], m)
            }),
        }
        x.el("clock", &[("offset", "utc")], |x| {
            x.empty("timer", &[("name", "rtc"), ("tickpolicy", "catchup")]);
            x.empty("timer", &[("name", "pit"), ("tickpolicy", "delay")]);
            x.empty("timer", &[("name", "hpet"), ("present", "no")]);
        });
        x.leaf("on_poweroff", &[], options.on_poweroff.as_str());
        x.leaf("on_reboot", &[], options.on_reboot.as_str());
        x.leaf("on_crash", &[], options.on_crash.as_str());
        x.el("devices", &[], |x| {
            if let Some(e) = &options.emulator {
                x.leaf("emulator", &[], e);
            }
            if bus == DiskBus::VirtioScsi {
                x.empty(
                    "controller",
                    &[("type", "scsi"), ("index", "0"), ("model", "virtio-scsi")],
                );
            }
            for (i, (file, format, target_bus, dev)) in disks.iter().enumerate() {
                x.el("disk", &[("type", "file"), ("device", "disk")], |x| {
                    x.empty("driver", &[("name", "qemu"), ("type", format)]);
                    x.empty("source", &[("file", file)]);
                    x.empty("target", &[("dev", dev), ("bus", target_bus)]);
                    if i == 0 {
                        x.empty("boot", &[("order", "1")]);
                    }
                });
            }
            for (nic, mac) in vm.nics.iter().zip(&macs) {
                let model = match nic.model {
                    NicModel::VirtioNet => "virtio",
                    NicModel::E1000e => "e1000e",
                };
                let (kind, source) = match &options.network {
                    NetworkAttachment::User => ("user", None),
                    NetworkAttachment::Network(n) => ("network", Some(("network", n.as_str()))),
                    NetworkAttachment::Bridge(b) => ("bridge", Some(("bridge", b.as_str()))),
                };
                x.el("interface", &[("type", kind)], |x| {
                    x.empty("mac", &[("address", mac)]);
                    if let Some(s) = source {
                        x.empty("source", &[s]);
                    }
                    x.empty("model", &[("type", model)]);
                });
            }
            match &options.serial {
                SerialConsole::Pty => {
                    x.el("serial", &[("type", "pty")], |x| {
                        x.empty("target", &[("port", "0")])
                    });
                    x.el("console", &[("type", "pty")], |x| {
                        x.empty("target", &[("type", "serial"), ("port", "0")])
                    });
                }
                SerialConsole::File(p) => {
                    x.el("serial", &[("type", "file")], |x| {
                        x.empty("source", &[("path", p), ("append", "on")]);
                        x.empty("target", &[("port", "0")]);
                    });
                    x.el("console", &[("type", "file")], |x| {
                        x.empty("source", &[("path", p), ("append", "on")]);
                        x.empty("target", &[("type", "serial"), ("port", "0")]);
                    });
                }
            }
            match options.graphics {
                Graphics::None => {}
                Graphics::Vnc => {
                    x.el(
                        "graphics",
                        &[("type", "vnc"), ("port", "-1"), ("autoport", "yes")],
                        |x| x.empty("listen", &[("type", "address"), ("address", "127.0.0.1")]),
                    );
                    x.el("video", &[], |x| x.empty("model", &[("type", "virtio")]));
                }
            }
            x.el("rng", &[("model", "virtio")], |x| {
                x.leaf("backend", &[("model", "random")], "/dev/urandom")
            });
        });
    });
    x.finish()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{vm, FIRMWARES, PROFILES};
    use super::*;

    fn parse(xml: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}\n{xml}"))
    }

    fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> roxmltree::Node<'a, 'i> {
        n.children()
            .find(|c| c.has_tag_name(name))
            .unwrap_or_else(|| panic!("no <{name}> in <{}>", n.tag_name().name()))
    }

    fn text<'a>(n: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
        child(n, name).text().unwrap_or("")
    }

    #[test]
    fn every_profile_and_firmware() {
        for p in PROFILES {
            for fw in FIRMWARES {
                let v = vm(p, fw);
                let xml = libvirt_domain_xml(&v, &LibvirtOptions::default()).unwrap();
                let doc = parse(&xml);
                let d = doc.root_element();
                let ctx = format!("{p} {fw:?}");
                assert_eq!(d.attribute("type"), Some("kvm"), "{ctx}");
                assert_eq!(text(d, "name"), v.name);
                assert_eq!(text(d, "memory"), "1536");
                assert_eq!(child(d, "memory").attribute("unit"), Some("MiB"));
                assert_eq!(text(d, "vcpu"), "3");
                let os = child(d, "os");
                assert_eq!(child(os, "type").attribute("machine"), Some("q35"));
                match fw {
                    FirmwareKind::Bios => {
                        assert_eq!(os.attribute("firmware"), None, "{ctx}");
                        assert!(!xml.contains("<loader"), "{ctx}");
                        assert!(!xml.contains("<firmware"), "{ctx}");
                    }
                    FirmwareKind::Uefi => {
                        assert_eq!(os.attribute("firmware"), Some("efi"), "{ctx}");
                        let sb = child(os, "firmware")
                            .children()
                            .find(|f| f.attribute("name") == Some("secure-boot"))
                            .unwrap();
                        assert_eq!(sb.attribute("enabled"), Some("no"), "{ctx}");
                    }
                }
                assert_eq!(child(d, "cpu").attribute("mode"), Some("host-passthrough"));
                let dev = child(d, "devices");
                let disks: Vec<_> = dev.children().filter(|c| c.has_tag_name("disk")).collect();
                assert_eq!(disks.len(), 2);
                let (want_bus, want_devs) = match p {
                    "virtio" => ("virtio", ["vda", "vdb"]),
                    "virtio-scsi" => ("scsi", ["sda", "sdb"]),
                    _ => ("sata", ["sda", "sdb"]),
                };
                for (i, disk) in disks.iter().enumerate() {
                    let t = child(*disk, "target");
                    assert_eq!(t.attribute("bus"), Some(want_bus), "{ctx}");
                    assert_eq!(t.attribute("dev"), Some(want_devs[i]), "{ctx}");
                    assert_eq!(child(*disk, "driver").attribute("type"), Some("qcow2"));
                    assert_eq!(
                        child(*disk, "source").attribute("file"),
                        v.disks[i].file.as_deref()
                    );
                    let boot = disk.children().find(|c| c.has_tag_name("boot"));
                    assert_eq!(
                        boot.and_then(|b| b.attribute("order")),
                        (i == 0).then_some("1"),
                        "{ctx}"
                    );
                }
                let scsi = dev
                    .children()
                    .filter(|c| c.has_tag_name("controller"))
                    .filter(|c| c.attribute("model") == Some("virtio-scsi"))
                    .count();
                assert_eq!(scsi, usize::from(p == "virtio-scsi"), "{ctx}");
                let nics: Vec<_> = dev
                    .children()
                    .filter(|c| c.has_tag_name("interface"))
                    .collect();
                assert_eq!(nics.len(), 2);
                let want_model = if p == "sata" { "e1000e" } else { "virtio" };
                for (n, mac) in nics.iter().zip(["00:1b:21:0a:0b:0c", "00:1b:21:0a:0b:0d"]) {
                    assert_eq!(n.attribute("type"), Some("user"));
                    assert_eq!(child(*n, "mac").attribute("address"), Some(mac));
                    assert_eq!(child(*n, "model").attribute("type"), Some(want_model));
                }
                assert_eq!(child(dev, "serial").attribute("type"), Some("pty"));
                assert_eq!(child(dev, "rng").attribute("model"), Some("virtio"));
                assert_eq!(child(dev, "graphics").attribute("type"), Some("vnc"));
            }
        }
    }

    #[test]
    fn options_shape_the_domain() {
        let v = vm("virtio", FirmwareKind::Uefi);
        let o = LibvirtOptions {
            domain_type: DomainType::Qemu,
            uuid: Some("0123456789ABCDEF0123456789ABCDEF".into()),
            emulator: Some("/usr/bin/qemu-system-x86_64".into()),
            network: NetworkAttachment::Bridge("br0".into()),
            serial: SerialConsole::File("/tmp/t/console.log".into()),
            graphics: Graphics::None,
            secure_boot: true,
            cpu: None,
            on_poweroff: LifecycleAction::Destroy,
            on_reboot: LifecycleAction::Destroy,
            on_crash: LifecycleAction::Preserve,
        };
        let xml = libvirt_domain_xml(&v, &o).unwrap();
        let doc = parse(&xml);
        let d = doc.root_element();
        assert_eq!(d.attribute("type"), Some("qemu"));
        assert_eq!(text(d, "uuid"), "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(child(d, "cpu").attribute("mode"), Some("maximum"));
        assert_eq!(text(d, "on_reboot"), "destroy");
        assert_eq!(text(d, "on_crash"), "preserve");
        assert!(child(d, "features")
            .children()
            .any(|f| f.has_tag_name("smm")));
        let os = child(d, "os");
        assert!(child(os, "firmware")
            .children()
            .filter(|f| f.has_tag_name("feature"))
            .all(|f| f.attribute("enabled") == Some("yes")));
        let dev = child(d, "devices");
        assert_eq!(text(dev, "emulator"), "/usr/bin/qemu-system-x86_64");
        let nic = child(dev, "interface");
        assert_eq!(nic.attribute("type"), Some("bridge"));
        assert_eq!(child(nic, "source").attribute("bridge"), Some("br0"));
        for tag in ["serial", "console"] {
            let s = child(dev, tag);
            assert_eq!(s.attribute("type"), Some("file"));
            assert_eq!(
                child(s, "source").attribute("path"),
                Some("/tmp/t/console.log")
            );
        }
        assert!(!xml.contains("<graphics") && !xml.contains("<video"));

        let o = LibvirtOptions {
            network: NetworkAttachment::Network("default".into()),
            cpu: Some(CpuMode::Model("qemu64".into())),
            ..Default::default()
        };
        let xml = libvirt_domain_xml(&v, &o).unwrap();
        let doc = parse(&xml);
        let d = doc.root_element();
        let nic = child(child(d, "devices"), "interface");
        assert_eq!(nic.attribute("type"), Some("network"));
        assert_eq!(child(nic, "source").attribute("network"), Some("default"));
        assert_eq!(text(child(d, "cpu"), "model"), "qemu64");
        // The UUID defaults to one derived from the name.
        assert_eq!(text(d, "uuid"), crate::descriptor::stable_uuid(&v.name));
    }

    #[test]
    fn hostile_names_are_escaped() {
        let mut v = vm("virtio", FirmwareKind::Bios);
        v.name = "a&b<c>'\"".into();
        v.disks[0].file = Some("/srv/a&b<c>'\"/d.qcow2".into());
        let o = LibvirtOptions {
            network: NetworkAttachment::Network("n&<'\">".into()),
            ..Default::default()
        };
        let xml = libvirt_domain_xml(&v, &o).unwrap();
        assert!(
            xml.contains("<name>a&amp;b&lt;c&gt;&apos;&quot;</name>"),
            "{xml}"
        );
        let doc = parse(&xml);
        let d = doc.root_element();
        assert_eq!(text(d, "name"), "a&b<c>'\"");
        let dev = child(d, "devices");
        assert_eq!(
            child(child(dev, "disk"), "source").attribute("file"),
            Some("/srv/a&b<c>'\"/d.qcow2")
        );
        assert_eq!(
            child(child(dev, "interface"), "source").attribute("network"),
            Some("n&<'\">")
        );
    }

    #[test]
    fn refusals() {
        let ok = vm("virtio-scsi", FirmwareKind::Bios);
        type Case = (Box<dyn Fn(&mut VmSpec, &mut LibvirtOptions)>, &'static str);
        let cases: Vec<Case> = vec![
            (Box::new(|v, _| v.name = "a\nb".into()), "control character"),
            (Box::new(|v, _| v.name = "a/b".into()), "'/'"),
            (Box::new(|v, _| v.machine = "q35'".into()), "machine type"),
            (Box::new(|v, _| v.nics[0].mac = "zz".into()), "MAC"),
            (
                Box::new(|v, _| v.nics[1].mac = v.nics[0].mac.clone()),
                "twice",
            ),
            (Box::new(|v, _| v.disks[1].file = None), "no image file"),
            (
                Box::new(|v, _| v.disks[0].file = Some("d.qcow2".into())),
                "absolute",
            ),
            (
                Box::new(|v, _| v.disks[0].file = Some("/d.iso".into())),
                "format",
            ),
            (Box::new(|_, o| o.uuid = Some("nope".into())), "UUID"),
            (Box::new(|_, o| o.secure_boot = true), "Secure Boot"),
            (
                Box::new(|_, o| o.emulator = Some("qemu".into())),
                "absolute",
            ),
            (
                Box::new(|_, o| o.serial = SerialConsole::File("log".into())),
                "absolute",
            ),
            (
                Box::new(|_, o| o.network = NetworkAttachment::Bridge("br\u{7}".into())),
                "control character",
            ),
            (
                Box::new(|_, o| o.cpu = Some(CpuMode::Model("x\u{0}".into()))),
                "control character",
            ),
        ];
        for (edit, want) in cases {
            let (mut v, mut o) = (ok.clone(), LibvirtOptions::default());
            edit(&mut v, &mut o);
            let e = libvirt_domain_xml(&v, &o).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?}: {e}");
        }
    }

    #[test]
    fn explicit_formats_and_many_disks() {
        let mut v = vm("virtio", FirmwareKind::Bios);
        let d = v.disks[0].clone();
        v.disks = (0..28)
            .map(|i| {
                let mut d = d.clone();
                d.file = Some(format!("/x/{i}"));
                d.format = Some(if i % 2 == 0 {
                    DiskFormat::Raw
                } else {
                    DiskFormat::Vmdk
                });
                d
            })
            .collect();
        let xml = libvirt_domain_xml(&v, &LibvirtOptions::default()).unwrap();
        let doc = parse(&xml);
        let disks: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("disk"))
            .collect();
        assert_eq!(child(disks[27], "target").attribute("dev"), Some("vdab"));
        assert_eq!(child(disks[0], "driver").attribute("type"), Some("raw"));
        assert_eq!(child(disks[1], "driver").attribute("type"), Some("vmdk"));
    }

    #[test]
    fn options_round_trip_through_json() {
        let o = LibvirtOptions {
            network: NetworkAttachment::Bridge("br0".into()),
            serial: SerialConsole::File("/tmp/c".into()),
            ..Default::default()
        };
        let j = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<LibvirtOptions>(&j).unwrap(), o);
        let partial: LibvirtOptions = serde_json::from_str(r#"{"domain_type":"qemu"}"#).unwrap();
        assert_eq!(partial.domain_type, DomainType::Qemu);
        assert!(serde_json::from_str::<LibvirtOptions>(r#"{"bogus":1}"#).is_err());
    }
}
