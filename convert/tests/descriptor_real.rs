//! The descriptors against real consumers: libvirt's own schema (`virt-xml-validate`) and a
//! running libvirtd (`virsh define` / `dumpxml` / `undefine`; no VM is started here), and the
//! OVF envelope against the structural rules of the DMTF schemas that can be checked without
//! ovftool (see `ovf_structure_follows_the_dmtf_schemas`).
//!
//! A missing tool skips its test with a printed reason, unless `P2V_REQUIRE_TOOLS` is set.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use p2v_convert::descriptor::{
    libvirt_domain_xml, ovf_descriptor, stable_uuid, DomainType, Graphics, LibvirtOptions,
    NetworkAttachment, OvfOptions, SerialConsole,
};
use p2v_convert::profile::{profile, DiskFormat, VmDisk, VmNic, VmSpec};
use p2v_protocol::inventory::FirmwareKind;

const PROFILES: [&str; 3] = ["virtio", "virtio-scsi", "sata"];
const FIRMWARES: [FirmwareKind; 2] = [FirmwareKind::Bios, FirmwareKind::Uefi];

fn have(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new(tool).is_file();
    if !found {
        if std::env::var_os("P2V_REQUIRE_TOOLS").is_some() {
            panic!("{tool} not found and P2V_REQUIRE_TOOLS is set");
        }
        eprintln!("SKIP: {tool} not found (libvirt-clients / libvirt-daemon-system, see scripts/setup-host.sh)");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A VM of `profile_name` whose disks are `files`.
fn vm(name: &str, profile_name: &str, firmware: FirmwareKind, files: &[String]) -> VmSpec {
    let p = profile(profile_name).unwrap();
    VmSpec {
        name: name.into(),
        profile: p.name.clone(),
        machine: p.machine.clone(),
        firmware,
        cpus: 2,
        memory_mib: 256,
        disks: files
            .iter()
            .enumerate()
            .map(|(i, f)| VmDisk {
                disk_id: format!("disk-{i}"),
                size_bytes: 1 << 20,
                bus: p.disk_bus,
                file: Some(f.clone()),
                format: None,
                file_bytes: None,
            })
            .collect(),
        nics: vec![
            VmNic {
                mac: "52:54:00:12:34:56".into(),
                model: p.nic_model,
                original_name: Some("enp1s0".into()),
                kernel_name: None,
            },
            VmNic {
                mac: "00:1B:21:AA:BB:CC".into(),
                model: p.nic_model,
                original_name: Some("enp2s0".into()),
                kernel_name: None,
            },
        ],
    }
}

/// Option sets that together write every branch of the generator.
fn option_sets(dir: &Path) -> Vec<(&'static str, LibvirtOptions)> {
    vec![
        ("default", LibvirtOptions::default()),
        (
            "tcg-file-console",
            LibvirtOptions {
                domain_type: DomainType::Qemu,
                serial: SerialConsole::File(dir.join("console.log").display().to_string()),
                graphics: Graphics::None,
                network: NetworkAttachment::Bridge("br0".into()),
                emulator: Some("/usr/bin/qemu-system-x86_64".into()),
                ..Default::default()
            },
        ),
        (
            "network",
            LibvirtOptions {
                network: NetworkAttachment::Network("default".into()),
                cpu: Some(p2v_convert::descriptor::CpuMode::Model("qemu64".into())),
                ..Default::default()
            },
        ),
        (
            "host-model",
            LibvirtOptions {
                cpu: Some(p2v_convert::descriptor::CpuMode::HostModel),
                ..Default::default()
            },
        ),
    ]
}

#[test]
fn virt_xml_validate_accepts_every_domain() {
    if !have("virt-xml-validate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        "/var/lib/p2v/export/m/disk0.qcow2".to_string(),
        "/var/lib/p2v/export/m/disk1.img".to_string(),
        "/var/lib/p2v/export/m/disk2.vmdk".to_string(),
    ];
    let mut n = 0;
    for p in PROFILES {
        for fw in FIRMWARES {
            for (label, opts) in option_sets(dir.path()) {
                let mut cases = vec![(vm("web01", p, fw, &files), opts.clone())];
                let mut hostile = vm("a&b<c>'\" ü", p, fw, &files);
                hostile.disks[0].file = Some("/srv/a&b<c>'\"/d".into());
                hostile.disks[0].format = Some(DiskFormat::Raw);
                cases.push((hostile, opts.clone()));
                if fw == FirmwareKind::Uefi {
                    let sb = LibvirtOptions {
                        secure_boot: true,
                        ..opts.clone()
                    };
                    cases.push((vm("web01", p, fw, &files), sb));
                }
                for (v, o) in cases {
                    let xml = libvirt_domain_xml(&v, &o).unwrap();
                    let f = dir.path().join(format!("d{n}.xml"));
                    n += 1;
                    std::fs::write(&f, &xml).unwrap();
                    let out = run(Command::new("virt-xml-validate").arg(&f).arg("domain"));
                    assert!(
                        out.status.success(),
                        "{p} {fw:?} {label}: virt-xml-validate refused:\n{}{}\n{xml}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
    }
    eprintln!("virt-xml-validate accepted {n} domain documents");
    assert!(n >= 50);
    // The oracle can say no: a bus libvirt does not know.
    let xml = libvirt_domain_xml(
        &vm("web01", "virtio", FirmwareKind::Bios, &files),
        &Default::default(),
    )
    .unwrap()
    .replace("bus=\"virtio\"", "bus=\"bogus\"");
    let f = dir.path().join("broken.xml");
    std::fs::write(&f, xml).unwrap();
    let out = run(Command::new("virt-xml-validate").arg(&f).arg("domain"));
    assert!(
        !out.status.success(),
        "virt-xml-validate accepted an unknown disk bus"
    );
}

/// Connects to the system libvirtd, starting it (`libvirtd -d`, as root) when it is not
/// running. `Err` says why there is no daemon.
fn libvirtd() -> Result<(), String> {
    let probe = || {
        Command::new("virsh")
            .args(["-c", "qemu:///system", "version"])
            .output()
            .map(|o| {
                (
                    o.status.success(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                )
            })
    };
    match probe() {
        Ok((true, _)) => return Ok(()),
        Ok((false, _)) => {}
        Err(e) => return Err(format!("virsh: {e}")),
    }
    if !have("libvirtd") {
        return Err("libvirtd not installed".into());
    }
    // Only root can start the system daemon (qemu:///system).
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        })
        .unwrap_or(false);
    if !root {
        return Err("libvirtd is not running and this test is not root".into());
    }
    // Another test may start the daemon at the same moment: then this `libvirtd -d` fails on
    // the pid file, and the other one comes up; so wait for a connection either way.
    let out = run(Command::new("libvirtd").arg("-d"));
    let started = format!(
        "libvirtd -d: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match probe() {
            Ok((true, _)) => return Ok(()),
            Ok((false, err)) if Instant::now() > deadline => {
                return Err(format!("{started}; virsh cannot connect: {}", err.trim()))
            }
            Err(e) => return Err(format!("virsh: {e}")),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Undefines the domain (by UUID, so a hostile name needs no quoting) when dropped.
struct Defined {
    uuid: String,
}

impl Drop for Defined {
    fn drop(&mut self) {
        let out = Command::new("virsh")
            .args(["-c", "qemu:///system", "undefine", "--nvram", &self.uuid])
            .output();
        if let Ok(o) = &out {
            if !o.status.success() {
                eprintln!(
                    "virsh undefine {}: {}",
                    self.uuid,
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

fn virsh(args: &[&str]) -> String {
    let mut c = Command::new("virsh");
    c.args(["-c", "qemu:///system"]).args(args);
    ok(&mut c)
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> roxmltree::Node<'a, 'i> {
    n.children()
        .find(|c| c.has_tag_name(name))
        .unwrap_or_else(|| panic!("no <{name}> in <{}>", n.tag_name().name()))
}

#[test]
fn virsh_defines_the_domain_and_reads_it_back() {
    if !have("virsh") || !have("qemu-img") {
        return;
    }
    if let Err(why) = libvirtd() {
        if std::env::var_os("P2V_REQUIRE_TOOLS").is_some() {
            panic!("no libvirtd: {why}");
        }
        eprintln!("SKIP: no libvirtd: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk0.qcow2");
    ok(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("1M"));
    let raw = dir.path().join("disk1.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let files = [disk.display().to_string(), raw.display().to_string()];
    let pid = std::process::id();
    for p in PROFILES {
        for fw in FIRMWARES {
            let name = format!("p2v-desc-{pid}-{p}-{fw:?}-a&b<c>'\"");
            let v = vm(&name, p, fw, &files);
            let uuid = stable_uuid(&format!("{name}-{}", Instant::now().elapsed().as_nanos()));
            let opts = LibvirtOptions {
                domain_type: DomainType::for_this_host(),
                uuid: Some(uuid.clone()),
                serial: SerialConsole::File(dir.path().join("console.log").display().to_string()),
                graphics: Graphics::None,
                ..Default::default()
            };
            let xml = libvirt_domain_xml(&v, &opts).unwrap();
            let f = dir.path().join(format!("{p}-{fw:?}.xml"));
            std::fs::write(&f, &xml).unwrap();
            let out = virsh(&["define", &f.display().to_string()]);
            let _guard = Defined { uuid: uuid.clone() };
            assert!(out.contains("defined"), "{out}");

            let dumped = virsh(&["dumpxml", &uuid]);
            let doc = roxmltree::Document::parse(&dumped).unwrap();
            let d = doc.root_element();
            let ctx = format!("{p} {fw:?}:\n{dumped}");
            assert_eq!(child(d, "name").text(), Some(name.as_str()), "{ctx}");
            assert_eq!(child(d, "uuid").text(), Some(uuid.as_str()), "{ctx}");
            let mem = child(d, "memory");
            assert_eq!(mem.attribute("unit"), Some("KiB"), "{ctx}");
            assert_eq!(mem.text(), Some("262144"), "{ctx}");
            assert_eq!(child(d, "vcpu").text(), Some("2"), "{ctx}");
            let os = child(d, "os");
            let machine = child(os, "type").attribute("machine").unwrap_or("");
            assert!(machine.contains("q35"), "{ctx}");
            match fw {
                FirmwareKind::Bios => {
                    assert_eq!(os.attribute("firmware"), None, "{ctx}");
                    assert!(!os.children().any(|c| c.has_tag_name("loader")), "{ctx}");
                }
                FirmwareKind::Uefi => {
                    // libvirt keeps firmware='efi' or resolves it to an OVMF loader.
                    let efi = os.attribute("firmware") == Some("efi")
                        || os
                            .children()
                            .find(|c| c.has_tag_name("loader"))
                            .and_then(|l| l.text())
                            .is_some_and(|t| t.contains("OVMF"));
                    assert!(efi, "{ctx}");
                }
            }
            let dev = child(d, "devices");
            let disks: Vec<_> = dev.children().filter(|c| c.has_tag_name("disk")).collect();
            assert_eq!(disks.len(), 2, "{ctx}");
            let (bus, devs) = match p {
                "virtio" => ("virtio", ["vda", "vdb"]),
                "virtio-scsi" => ("scsi", ["sda", "sdb"]),
                _ => ("sata", ["sda", "sdb"]),
            };
            for (i, disk) in disks.iter().enumerate() {
                let t = child(*disk, "target");
                assert_eq!(t.attribute("bus"), Some(bus), "{ctx}");
                assert_eq!(t.attribute("dev"), Some(devs[i]), "{ctx}");
                assert_eq!(
                    child(*disk, "source").attribute("file"),
                    Some(files[i].as_str()),
                    "{ctx}"
                );
                let want = if i == 0 { "qcow2" } else { "raw" };
                assert_eq!(
                    child(*disk, "driver").attribute("type"),
                    Some(want),
                    "{ctx}"
                );
            }
            if p == "virtio-scsi" {
                assert!(
                    dev.children().any(|c| c.has_tag_name("controller")
                        && c.attribute("model") == Some("virtio-scsi")),
                    "{ctx}"
                );
            }
            let nics: Vec<_> = dev
                .children()
                .filter(|c| c.has_tag_name("interface"))
                .collect();
            let model = if p == "sata" { "e1000e" } else { "virtio" };
            assert_eq!(nics.len(), 2, "{ctx}");
            for (n, mac) in nics.iter().zip(["52:54:00:12:34:56", "00:1b:21:aa:bb:cc"]) {
                assert_eq!(n.attribute("type"), Some("user"), "{ctx}");
                assert_eq!(child(*n, "mac").attribute("address"), Some(mac), "{ctx}");
                assert_eq!(child(*n, "model").attribute("type"), Some(model), "{ctx}");
            }
            check_qemu_argv(&f, p, fw, false);
            if fw == FirmwareKind::Uefi {
                // Secure Boot: libvirt must find an OVMF build with the keys enrolled.
                let sb = LibvirtOptions {
                    secure_boot: true,
                    ..opts.clone()
                };
                let f = dir.path().join(format!("{p}-sb.xml"));
                std::fs::write(&f, libvirt_domain_xml(&v, &sb).unwrap()).unwrap();
                check_qemu_argv(&f, p, fw, true);
            }
        }
    }
}
/// What libvirt would run for the domain file (`virsh domxml-to-native`: libvirt resolves
/// the firmware, the controllers and the devices as at start, without starting anything).
fn check_qemu_argv(file: &Path, p: &str, fw: FirmwareKind, secure_boot: bool) {
    let argv = virsh(&["domxml-to-native", "qemu-argv", &file.display().to_string()]);
    let ctx = format!("{p} {fw:?} secure_boot={secure_boot}:\n{argv}");
    let has = |s: &str| argv.contains(s);
    match fw {
        FirmwareKind::Bios => assert!(!has("pflash"), "{ctx}"),
        FirmwareKind::Uefi => {
            assert!(has("/OVMF_CODE"), "{ctx}");
            // Debian: OVMF_CODE_4M.fd without, OVMF_CODE_4M.ms.fd/.secboot.fd with Secure Boot.
            let secure = has("OVMF_CODE_4M.ms.fd") || has("secboot");
            assert_eq!(secure, secure_boot, "{ctx}");
            assert_eq!(has("smm=on"), secure_boot, "{ctx}");
        }
    }
    let disk_driver = match p {
        "virtio" => "\"driver\":\"virtio-blk-pci\"",
        "virtio-scsi" => "\"driver\":\"scsi-hd\"",
        _ => "\"driver\":\"ide-hd\"",
    };
    assert_eq!(argv.matches(disk_driver).count(), 2, "{ctx}");
    if p == "virtio-scsi" {
        assert!(has("\"driver\":\"virtio-scsi-pci\""), "{ctx}");
    }
    assert_eq!(argv.matches("\"bootindex\":1").count(), 1, "{ctx}");
    let nic = if p == "sata" {
        "e1000e"
    } else {
        "virtio-net-pci"
    };
    assert_eq!(
        argv.matches(&format!("\"driver\":\"{nic}\"")).count(),
        2,
        "{ctx}"
    );
    for mac in ["52:54:00:12:34:56", "00:1b:21:aa:bb:cc"] {
        assert!(has(&format!("\"mac\":\"{mac}\"")), "{ctx}");
    }
    assert!(has("virtio-rng-pci"), "{ctx}");
}

#[test]
fn ovf_for_every_profile_parses() {
    // The OVF structure checks live in the unit tests of the ovf module; here the public API
    // from outside the crate, with the files the export writes.
    for p in PROFILES {
        for fw in FIRMWARES {
            let files = ["/x/m-disk1.vmdk".to_string(), "/x/m-disk2.vmdk".to_string()];
            let v = vm("m", p, fw, &files);
            let ovf = ovf_descriptor(&v, &OvfOptions::default()).unwrap();
            let doc = roxmltree::Document::parse(&ovf).unwrap();
            let hrefs: Vec<_> = doc
                .descendants()
                .filter(|n| n.has_tag_name("File"))
                .filter_map(|n| n.attribute(("http://schemas.dmtf.org/ovf/envelope/1", "href")))
                .collect();
            assert_eq!(hrefs, ["m-disk1.vmdk", "m-disk2.vmdk"], "{p} {fw:?}");
        }
    }
}

const NS_OVF: &str = "http://schemas.dmtf.org/ovf/envelope/1";
const NS_RASD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
const NS_VSSD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";

/// The `xs:sequence` of CIM_ResourceAllocationSettingData as the OVF 1.x schemas use it
/// (CIM 2.x, elements in alphabetical order).
const RASD_SEQUENCE: [&str; 22] = [
    "Address",
    "AddressOnParent",
    "AllocationUnits",
    "AutomaticAllocation",
    "AutomaticDeallocation",
    "Caption",
    "Connection",
    "ConsumerVisibility",
    "Description",
    "ElementName",
    "HostResource",
    "InstanceID",
    "Limit",
    "MappingBehavior",
    "OtherResourceType",
    "Parent",
    "PoolID",
    "Reservation",
    "ResourceSubType",
    "ResourceType",
    "VirtualQuantity",
    "Weight",
];

/// The part of the CIM_VirtualSystemSettingData sequence that the descriptor may use.
const VSSD_SEQUENCE: [&str; 6] = [
    "Caption",
    "Description",
    "ElementName",
    "InstanceID",
    "VirtualSystemIdentifier",
    "VirtualSystemType",
];

fn elements<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> Vec<roxmltree::Node<'a, 'i>> {
    n.children().filter(|c| c.is_element()).collect()
}

fn is_ovf(n: roxmltree::Node, name: &str) -> bool {
    n.tag_name().namespace() == Some(NS_OVF) && n.tag_name().name() == name
}

fn in_sequence(children: &[roxmltree::Node], ns: &str, seq: &[&str], what: &str) {
    let mut last = None;
    for c in children {
        assert_eq!(
            c.tag_name().namespace(),
            Some(ns),
            "{what}: {:?}",
            c.tag_name()
        );
        let pos = seq
            .iter()
            .position(|s| *s == c.tag_name().name())
            .unwrap_or_else(|| panic!("{what}: {} is not in the schema", c.tag_name().name()));
        assert!(
            last.is_none_or(|l| pos > l),
            "{what}: {} out of schema order (or repeated)",
            c.tag_name().name()
        );
        last = Some(pos);
    }
}

/// Checks an envelope against the rules of DSP0243 1.x / DSP8023 that can be checked by
/// hand. Not checked, for want of the tools here: validation against the XSD files
/// themselves (not shipped by any Debian package), what vSphere does with it (no ovftool or
/// ESXi: whether it keeps the physical MACs, which vCenter may refuse outside VMware's
/// range, and whether the vmx version is supported by the target host), the VMDK contents
/// (the exporter's), and a manifest (.mf) or signature (not written).
fn check_ovf_structure(ovf: &str) {
    let doc = roxmltree::Document::parse(ovf).unwrap();
    let env = doc.root_element();
    assert!(is_ovf(env, "Envelope"));
    let top = elements(env);
    // Envelope: References, Section*, Content (VirtualSystem), Strings*.
    assert!(is_ovf(top[0], "References"), "References first");
    let vs_pos = top
        .iter()
        .position(|n| is_ovf(*n, "VirtualSystem"))
        .expect("a VirtualSystem");
    assert_eq!(vs_pos, top.len() - 1, "VirtualSystem is the content, last");
    for s in &top[1..vs_pos] {
        assert!(
            s.tag_name().name().ends_with("Section"),
            "{:?}",
            s.tag_name()
        );
    }
    // Every Section (and the VirtualSystem) starts with Info.
    for n in doc.descendants().filter(|n| {
        n.tag_name().namespace() == Some(NS_OVF)
            && (n.tag_name().name().ends_with("Section") || n.tag_name().name() == "VirtualSystem")
    }) {
        let first = elements(n)[0];
        assert!(
            is_ovf(first, "Info"),
            "{} starts with Info",
            n.tag_name().name()
        );
        assert!(!first.text().unwrap_or("").is_empty());
    }
    let attr = |n: roxmltree::Node, a: &str| -> String {
        n.attribute((NS_OVF, a))
            .unwrap_or_else(|| panic!("<{}> lacks the required ovf:{a}", n.tag_name().name()))
            .to_string()
    };
    let files: Vec<String> = elements(top[0])
        .into_iter()
        .map(|f| {
            assert!(is_ovf(f, "File"));
            let href = attr(f, "href");
            assert!(
                !href.contains('/') && !href.contains(':'),
                "relative href {href}"
            );
            if let Some(s) = f.attribute((NS_OVF, "size")) {
                s.parse::<u64>().unwrap();
            }
            attr(f, "id")
        })
        .collect();
    let mut sorted = files.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), files.len(), "File ids unique");
    let disk_section = top.iter().find(|n| is_ovf(**n, "DiskSection")).unwrap();
    let mut disk_ids = Vec::new();
    for d in elements(*disk_section).into_iter().skip(1) {
        assert!(is_ovf(d, "Disk"));
        attr(d, "capacity").parse::<u64>().unwrap();
        assert!(attr(d, "format").starts_with("http://"));
        assert!(files.contains(&attr(d, "fileRef")), "fileRef names a File");
        disk_ids.push(attr(d, "diskId"));
    }
    let net_section = top.iter().find(|n| is_ovf(**n, "NetworkSection")).unwrap();
    let networks: Vec<String> = elements(*net_section)
        .into_iter()
        .skip(1)
        .map(|n| attr(n, "name"))
        .collect();
    let vs = top[vs_pos];
    attr(vs, "id");
    let vs_children = elements(vs);
    let os = vs_children
        .iter()
        .find(|n| is_ovf(**n, "OperatingSystemSection"))
        .unwrap();
    attr(*os, "id")
        .parse::<u16>()
        .expect("OsType is an unsignedShort");
    let hw = vs_children
        .iter()
        .find(|n| is_ovf(**n, "VirtualHardwareSection"))
        .unwrap();
    // VirtualHardwareSection: Info, System?, Item*, then extension elements only.
    let hw_children = elements(*hw);
    assert!(is_ovf(hw_children[1], "System"));
    in_sequence(&elements(hw_children[1]), NS_VSSD, &VSSD_SEQUENCE, "System");
    let mut seen_ext = false;
    let mut items = Vec::new();
    for c in &hw_children[2..] {
        if is_ovf(*c, "Item") {
            assert!(!seen_ext, "Item after an extension element");
            items.push(*c);
        } else {
            assert_ne!(c.tag_name().namespace(), Some(NS_OVF), "{:?}", c.tag_name());
            assert_eq!(
                c.attribute((NS_OVF, "required")),
                Some("false"),
                "extension elements are optional for importers"
            );
            seen_ext = true;
        }
    }
    let mut ids: Vec<(String, String)> = Vec::new();
    for it in &items {
        let ch = elements(*it);
        in_sequence(&ch, NS_RASD, &RASD_SEQUENCE, "Item");
        let get = |name: &str| {
            ch.iter()
                .find(|c| c.tag_name().name() == name)
                .and_then(|c| c.text())
                .map(str::to_string)
        };
        let id = get("InstanceID").expect("InstanceID");
        get("ElementName").expect("ElementName");
        let rt = get("ResourceType").expect("ResourceType");
        rt.parse::<u16>().unwrap();
        if let Some(q) = get("VirtualQuantity") {
            q.parse::<u64>().unwrap();
        }
        assert!(ids.iter().all(|(i, _)| *i != id), "InstanceID {id} unique");
        ids.push((id, rt));
    }
    let mut referenced = Vec::new();
    for it in &items {
        let get = |name: &str| {
            elements(*it)
                .into_iter()
                .find(|c| c.tag_name().name() == name)
                .and_then(|c| c.text())
                .map(str::to_string)
        };
        if let Some(p) = get("Parent") {
            let rt = &ids.iter().find(|(i, _)| *i == p).expect("Parent exists").1;
            assert!(
                ["5", "6", "20"].contains(&rt.as_str()),
                "Parent is a controller"
            );
        }
        if let Some(h) = get("HostResource") {
            let d = h.strip_prefix("ovf:/disk/").expect("ovf:/disk/ reference");
            assert!(disk_ids.iter().any(|x| x == d), "HostResource names a Disk");
            referenced.push(d.to_string());
        }
        if let Some(c) = get("Connection") {
            assert!(networks.contains(&c), "Connection names a Network");
        }
    }
    referenced.sort();
    let mut all = disk_ids.clone();
    all.sort();
    assert_eq!(referenced, all, "every Disk is used by exactly one Item");
}

#[test]
fn ovf_structure_follows_the_dmtf_schemas() {
    let dir = tempfile::tempdir().unwrap();
    // A streamOptimized VMDK as the export writes it, so the References size is a real one.
    let vmdk = dir.path().join("m-disk1.vmdk");
    let have_img = have("qemu-img");
    if have_img {
        ok(Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
            ])
            .arg(&vmdk)
            .arg("1M"));
    }
    for p in PROFILES {
        for fw in FIRMWARES {
            for secure_boot in [false, fw == FirmwareKind::Uefi] {
                let files = [vmdk.display().to_string(), "/x/m-disk2.vmdk".to_string()];
                let mut v = vm("m & <co>", p, fw, &files);
                if have_img {
                    v.disks[0].file_bytes = Some(std::fs::metadata(&vmdk).unwrap().len());
                }
                let o = OvfOptions {
                    secure_boot,
                    ..Default::default()
                };
                let ovf = ovf_descriptor(&v, &o).unwrap();
                check_ovf_structure(&ovf);
                if have_img {
                    let size = std::fs::metadata(&vmdk).unwrap().len().to_string();
                    assert!(ovf.contains(&format!("ovf:size=\"{size}\"")), "{ovf}");
                }
            }
        }
    }
    // The checker can fail: an Item with its elements out of schema order.
    let v = vm(
        "m",
        "virtio",
        FirmwareKind::Bios,
        &["/x/a.vmdk".to_string()],
    );
    let ovf = ovf_descriptor(&v, &OvfOptions::default()).unwrap();
    let broken = ovf.replacen(
        "<rasd:ElementName>Hard disk 1</rasd:ElementName>",
        "",
        1,
    )
    .replacen(
        "<rasd:ResourceType>17</rasd:ResourceType>",
        "<rasd:ResourceType>17</rasd:ResourceType><rasd:ElementName>Hard disk 1</rasd:ElementName>",
        1,
    );
    assert_ne!(broken, ovf);
    assert!(std::panic::catch_unwind(|| check_ovf_structure(&broken)).is_err());
}
