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
    libvirt_domain_xml, stable_uuid, DomainType, Graphics, LibvirtOptions, NetworkAttachment,
    SerialConsole,
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
            },
            VmNic {
                mac: "00:1B:21:AA:BB:CC".into(),
                model: p.nic_model,
                original_name: Some("enp2s0".into()),
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
    let out = run(Command::new("libvirtd").arg("-d"));
    if !out.status.success() {
        return Err(format!(
            "libvirtd -d: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match probe() {
            Ok((true, _)) => return Ok(()),
            Ok((false, err)) if Instant::now() > deadline => {
                return Err(format!("libvirtd started but virsh cannot connect: {err}"))
            }
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
        }
    }
}
