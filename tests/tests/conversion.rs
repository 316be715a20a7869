//! Issue 5 end to end. The Debian 12 guest (`scripts/make-guest-fixture.sh`) is captured through
//! the live image on its "physical" machine (q35, AHCI, e1000), converted by the server in the
//! conversion appliance for the `virtio` profile, and the converted disk boots on virtio-blk +
//! virtio-net with its static address on its old interface name, under QEMU and through
//! libvirt from the generated domain XML. A second test feeds the converter a hostile guest.
//!
//! Every check reads the result independently of the converter: the converted disk is exported,
//! its root file system mounted read-only on the host (the test trusts its own fixture), and the
//! files, backups and the new initramfs (`lsinitramfs`) are read there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use p2v_protocol::api::{ConversionState, ConversionStatus};
use p2v_tests::guest::*;
use p2v_tests::*;
use serde_json::Value;
use tempfile::TempDir;

const CAPTURE_TIMEOUT: Duration = Duration::from_secs(1200);
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// The root partition of the guest fixture starts at sector 2048.
const ROOT_OFFSET: u64 = 2048 * 512;

fn server_with_appliance(data: &Path) -> Server {
    let image = boot_image();
    Server::start_with(
        data,
        &["--appliance-dir", image.to_str().expect("UTF-8 path")],
    )
    .unwrap()
}

/// Boots the live image on the physical machine with the guest's disk on AHCI and captures it;
/// returns the machine id.
fn capture_on_physical_machine(server: &Server, work: &Path) -> String {
    let token = server.create_token().unwrap();
    let disk = overlay(&guest_fixture(), work, "physical.qcow2").unwrap();
    let listener = GuestListener::start().unwrap();
    let image = boot_image();
    let mut args = physical_machine(&disk, listener.port).unwrap();
    // The live agent must reach the server at 10.0.2.2, which `restrict=on` forbids.
    for a in args.iter_mut() {
        if a.starts_with("user,") {
            *a = "user,id=net0".into();
        }
    }
    args.extend([
        "-kernel".into(),
        image.join("vmlinuz").display().to_string(),
        "-initrd".into(),
        image.join("initrd.img").display().to_string(),
        "-append".into(),
        format!(
            "console=ttyS0,115200 p2v.server=https://10.0.2.2:{} p2v.fingerprint={} p2v.token={token} p2v.post=poweroff",
            url_port(&server.url),
            server.fingerprint
        ),
    ]);
    let started = Instant::now();
    let mut qemu = Qemu::start(&args).unwrap();
    let line = qemu
        .wait_for(
            "p2v: capture complete",
            &["p2v: capture FAILED"],
            CAPTURE_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e:#}\nserver log:\n{}", server.log()));
    eprintln!(
        "capture of the physical machine took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    qemu.wait_exit(Duration::from_secs(60)).unwrap();
    line.split("machine=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("machine= in the completion line")
        .to_string()
}

fn convert(server: &Server, machine: &str, extra: &[&str]) -> ConversionStatus {
    let mut args = vec!["convert", machine, "--json"];
    args.extend_from_slice(extra);
    let out = server.operator(&args).unwrap_or_else(|e| {
        let status = server
            .operator(&["conversion", machine])
            .unwrap_or_default();
        panic!("convert {extra:?} failed: {e:#}\nthe conversion:\n{status}")
    });
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn changes(status: &ConversionStatus) -> Vec<Value> {
    status.report.as_ref().expect("a report")["plan"]["changes"]
        .as_array()
        .expect("changes")
        .clone()
}

fn find<'a>(changes: &'a [Value], kind: &str, key: &str, value: &str) -> &'a Value {
    changes
        .iter()
        .find(|c| c["kind"] == kind && c[key].as_str().is_some_and(|v| v.contains(value)))
        .unwrap_or_else(|| panic!("no {kind} change with {key}~{value} in {changes:#?}"))
}

/// The UUID of the ext4 file system at `offset` of a raw image (`s_uuid`, 0x68 into the
/// superblock at 1024), as blkid prints it.
fn ext4_uuid(image: &Path, offset: u64) -> String {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(image).unwrap();
    let mut b = [0u8; 16];
    f.read_exact_at(&mut b, offset + 1024 + 0x68).unwrap();
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mount_root(image: &Path, dir: &Path) -> Mounted {
    std::fs::create_dir_all(dir).unwrap();
    Mounted::kernel(image, dir, &format!("ro,offset={ROOT_OFFSET},noload")).unwrap()
}

/// Checks the converted disk's files against the original guest.
fn check_converted_files(converted_raw: &Path, work: &Path, status: &ConversionStatus) {
    let original = mount_root(&guest_fixture(), &work.join("orig"));
    let converted = mount_root(converted_raw, &work.join("conv"));
    let o = original.dir.clone();
    let c = converted.dir.clone();
    let root_uuid = ext4_uuid(converted_raw, ROOT_OFFSET);

    let fstab = std::fs::read_to_string(c.join("etc/fstab")).unwrap();
    assert!(
        !fstab.contains("/dev/sda"),
        "fstab still names sda:\n{fstab}"
    );
    assert!(
        !fstab.contains("/dev/disk/by-id"),
        "fstab still names by-id:\n{fstab}"
    );
    assert!(
        fstab.contains(&format!("UUID={root_uuid}")),
        "root not by UUID {root_uuid}:\n{fstab}"
    );
    let grub = std::fs::read_to_string(c.join("boot/grub/grub.cfg")).unwrap();
    assert!(
        grub.contains(&format!("root=UUID={root_uuid}")) && !grub.contains("/dev/sda"),
        "grub.cfg:\n{grub}"
    );

    // Backups: the original of every changed file, byte for byte, and a manifest.
    let backup_root = c.join("var/lib/p2v/backup");
    let runs: Vec<PathBuf> = std::fs::read_dir(&backup_root)
        .unwrap_or_else(|e| panic!("{}: {e}", backup_root.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1, "one backup run: {runs:?}");
    for file in ["etc/fstab", "boot/grub/grub.cfg"] {
        assert_eq!(
            std::fs::read(runs[0].join(file)).unwrap(),
            std::fs::read(o.join(file)).unwrap(),
            "backup of /{file}"
        );
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(runs[0].join("manifest.json")).unwrap()).unwrap();
    let listed = manifest.to_string();
    assert!(listed.contains("/etc/fstab"), "manifest: {listed}");

    // The platform agent is masked.
    let mask = std::fs::read_link(c.join("etc/systemd/system/ipmievd.service")).unwrap();
    assert_eq!(mask, Path::new("/dev/null"));

    // The NIC keeps its name: a .link file pins it to the MAC.
    let link = std::fs::read_to_string(
        c.join(format!("etc/systemd/network/10-p2v-{PHYSICAL_IFNAME}.link")),
    )
    .unwrap();
    assert!(
        link.contains(&format!("MACAddress={PHYSICAL_MAC}"))
            && link.contains(&format!("Name={PHYSICAL_IFNAME}")),
        "{link}"
    );

    // Every kernel's initramfs now carries virtio, the original did not.
    let rebuilt = changes(status)
        .into_iter()
        .filter(|c| c["kind"] == "rebuild_initramfs")
        .collect::<Vec<_>>();
    assert!(!rebuilt.is_empty());
    for r in rebuilt {
        let image = r["image"].as_str().unwrap().trim_start_matches('/');
        let list = |root: &Path| run("lsinitramfs", &[root.join(image).to_str().unwrap()]).unwrap();
        let before = list(&o);
        let after = list(&c);
        assert!(
            !before.contains("virtio_blk") && before.contains("ahci"),
            "original initrd"
        );
        assert!(
            after.contains("virtio_blk") && after.contains("virtio_pci"),
            "converted initrd lacks virtio:\n{after}"
        );
    }
    drop(converted);
    drop(original);
}

#[test]
fn debian_guest_is_converted_and_boots_on_virtio() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let server = server_with_appliance(&w.join("data"));
    let machine = capture_on_physical_machine(&server, w);

    // The inventory knows the physical hardware, including the name the guest gave the NIC.
    let machines = server.machines().unwrap();
    let inv = &machines[0].inventory;
    let nic = inv
        .nics
        .iter()
        .find(|n| n.mac == PHYSICAL_MAC)
        .expect("the physical NIC");
    assert_eq!(nic.predictable_name.as_deref(), Some(PHYSICAL_IFNAME));
    assert_eq!(inv.disks[0].controller_driver.as_deref(), Some("ahci"));

    // Dry run: the plan, and nothing changed.
    let dry = convert(&server, &machine, &["--dry-run"]);
    assert_eq!(dry.state, ConversionState::Succeeded, "{dry:#?}");
    let plan = changes(&dry);
    let fstab = find(&plan, "edit_lines", "path", "/etc/fstab");
    assert!(fstab.to_string().contains("/dev/sda1"), "{fstab}");
    find(&plan, "edit_lines", "path", "/boot/grub/grub.cfg");
    find(&plan, "rebuild_initramfs", "image", "/boot/initrd.img-");
    find(&plan, "mask_unit", "unit", "ipmievd");
    find(&plan, "write_file", "path", PHYSICAL_IFNAME);
    assert!(
        dry.report.as_ref().unwrap()["applied"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a dry run applies nothing"
    );
    let refused = server.operator(&[
        "export",
        &server.disks().unwrap()[0].disk_id.to_string(),
        "--converted",
        "--format",
        "raw",
        "--output",
        w.join("none.raw").to_str().unwrap(),
    ]);
    assert!(
        refused.is_err_and(|e| format!("{e:#}").contains("no successful conversion")),
        "a dry run leaves nothing to export"
    );

    // The conversion itself.
    let done = convert(&server, &machine, &[]);
    assert_eq!(done.state, ConversionState::Succeeded, "{done:#?}");
    let report = done.report.as_ref().unwrap();
    let applied = report["applied"].as_array().unwrap();
    assert_eq!(applied.len(), changes(&done).len(), "{report:#}");
    assert!(applied.iter().all(|a| a["ok"] == true), "{report:#}");
    let start_ms = done.appliance_start_ms.expect("appliance start time");
    eprintln!(
        "conversion: appliance start {:.1} s, whole conversion {:.1} s (inspect {} ms, apply {} ms)",
        start_ms as f64 / 1000.0,
        done.wall_ms.unwrap() as f64 / 1000.0,
        report["timings"]["inspect_ms"],
        report["timings"]["apply_ms"]
    );
    // The human report says the same.
    let human = server.operator(&["conversion", &machine]).unwrap();
    assert!(
        human.contains("succeeded") && human.contains("why:"),
        "{human}"
    );

    // The VM: disks, libvirt XML and OVF.
    let vm_dir = w.join("vm");
    server
        .operator(&[
            "export-vm",
            &machine,
            "--format",
            "qcow2",
            "--output",
            vm_dir.to_str().unwrap(),
            "--domain-type",
            "qemu",
            "--graphics",
            "none",
            "--serial-file",
            w.join("libvirt-console.log").to_str().unwrap(),
        ])
        .unwrap();
    // For vSphere: streamOptimized VMDK and an OVF that names it, with the VM's hardware.
    let ovf_dir = w.join("vm-ovf");
    let listing = server
        .operator(&[
            "export-vm",
            &machine,
            "--format",
            "vmdk",
            "--output",
            ovf_dir.to_str().unwrap(),
        ])
        .unwrap();
    let ovf_path = std::fs::read_dir(&ovf_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "ovf"))
        .unwrap_or_else(|| panic!("no OVF written: {listing}"));
    let ovf = std::fs::read_to_string(&ovf_path).unwrap();
    let vmdk = std::fs::read_dir(&ovf_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "vmdk"))
        .expect("a VMDK");
    let vmdk_name = vmdk.file_name().unwrap().to_str().unwrap();
    assert!(ovf.contains(&format!("ovf:href=\"{vmdk_name}\"")), "{ovf}");
    assert!(ovf.contains(PHYSICAL_MAC), "{ovf}");
    assert!(ovf.contains("debian"), "OS type from the inspection: {ovf}");
    let info = run("qemu-img", &["info", vmdk.to_str().unwrap()]).unwrap();
    assert!(info.contains("streamOptimized"), "{info}");
    std::fs::remove_dir_all(&ovf_dir).unwrap();

    let disk = std::fs::read_dir(&vm_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "qcow2"))
        .expect("a qcow2 disk in the export");
    let raw = w.join("converted.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            disk.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    )
    .unwrap();
    check_converted_files(&raw, w, &done);
    std::fs::remove_file(&raw).unwrap();

    // Boot it on virtio: multi-user, the old name, the static address, a working network.
    let listener = GuestListener::start().unwrap();
    // An overlay of the exported qcow2, so the export itself stays as converted.
    let boot_disk = overlay(&disk, w, "boot.qcow2").unwrap();
    let booted = boot_to_ready(
        &virtio_machine(&boot_disk, listener.port).unwrap(),
        BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("the converted guest did not come up on virtio: {e:#}"));
    eprintln!(
        "converted guest on virtio: power-on to ready {:.1} s",
        booted.boot_time.as_secs_f64()
    );
    let nic = booted
        .ready
        .iter()
        .find(|r| r.interface == PHYSICAL_IFNAME)
        .unwrap_or_else(|| panic!("no {PHYSICAL_IFNAME} in {:?}", booted.ready));
    assert_eq!(
        (nic.address.as_str(), nic.state.as_str()),
        (STATIC_ADDRESS, "UP")
    );
    assert!(booted.qemu.console().contains(NET_OK_MARKER));
    listener
        .wait_for(READY_MARKER, Duration::from_secs(30))
        .unwrap();
    drop(booted);

    // Through libvirt, from the generated XML. libvirt runs QEMU as its own user, which must
    // reach the disk through the test's directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(w, std::fs::Permissions::from_mode(0o755)).unwrap();
    libvirt_boot(&vm_dir, &w.join("libvirt-console.log"));

    // Direct mode (the guest mounted on the server's host) plans exactly the same changes from
    // the same capture, and succeeds too.
    let direct = convert(&server, &machine, &["--direct"]);
    assert_eq!(direct.state, ConversionState::Succeeded, "{direct:#?}");
    assert_eq!(
        changes(&direct),
        changes(&done),
        "direct and appliance plans differ"
    );
    assert!(direct.appliance_start_ms.is_none());
}

/// `virsh define` + `start` of the exported domain, waits for the guest's ready line on the
/// serial file, then destroys and undefines it.
fn libvirt_boot(vm_dir: &Path, console: &Path) {
    ensure_libvirtd();
    let xml = std::fs::read_dir(vm_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "xml"))
        .expect("a domain XML");
    let text = std::fs::read_to_string(&xml).unwrap();
    let name = text
        .split("<name>")
        .nth(1)
        .and_then(|r| r.split("</name>").next())
        .expect("a name")
        .to_string();
    let virsh = |args: &[&str]| run("virsh", &[&["-c", "qemu:///system"], args].concat());
    let _ = virsh(&["destroy", &name]);
    let _ = virsh(&["undefine", &name, "--nvram"]);
    virsh(&["define", xml.to_str().unwrap()]).unwrap();
    struct Undefine<'a>(&'a str);
    impl Drop for Undefine<'_> {
        fn drop(&mut self) {
            let _ = run("virsh", &["-c", "qemu:///system", "destroy", self.0]);
            let _ = run("virsh", &["-c", "qemu:///system", "undefine", self.0]);
        }
    }
    let _guard = Undefine(&name);
    virsh(&["start", &name]).unwrap();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        if let Some(r) = ReadyLine::all(&text)
            .into_iter()
            .find(|r| r.interface == PHYSICAL_IFNAME)
        {
            assert_eq!(r.address, STATIC_ADDRESS, "{text}");
            eprintln!("libvirt domain {name} is up: {r:?}");
            break;
        }
        if let Some(f) = BOOT_FAILURES.iter().find(|f| text.contains(*f)) {
            panic!("libvirt guest failed ({f}):\n{text}");
        }
        if Instant::now() > deadline {
            panic!("the libvirt guest did not come up; console:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Starts libvirtd (and virtlogd, which starting a domain needs) when they are not running:
/// CI machines have no init system starting them, and may carry a socket file from a daemon
/// that no longer runs (a restored machine's `/run`), so liveness is a connection, not a path.
fn ensure_libvirtd() {
    const VIRTLOGD_SOCKET: &str = "/run/libvirt/virtlogd-sock";
    let virtlogd_listens = || std::os::unix::net::UnixStream::connect(VIRTLOGD_SOCKET).is_ok();
    if !virtlogd_listens() {
        // A stale socket file with nobody behind it: virtlogd replaces it when it binds, but
        // remove it so the wait below only succeeds on the new daemon.
        let _ = std::fs::remove_file(VIRTLOGD_SOCKET);
        run("virtlogd", &["-d"]).expect("starting virtlogd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !virtlogd_listens() {
            assert!(Instant::now() < deadline, "virtlogd did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if run("virsh", &["-c", "qemu:///system", "version"]).is_ok() {
        return;
    }
    run("libvirtd", &["-d"]).expect("starting libvirtd");
    let deadline = Instant::now() + Duration::from_secs(30);
    while run("virsh", &["-c", "qemu:///system", "version"]).is_err() {
        assert!(Instant::now() < deadline, "libvirtd did not come up");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A guest disk with hostile files: an os-release of random bytes over the size limit, an fstab
/// of garbage and one huge line, a hostname that is a symlink out of the guest root. Made with
/// `mkfs.ext4 -d` into the partition of a small MBR disk.
fn hostile_disk(work: &Path) -> PathBuf {
    let tree = work.join("tree");
    let etc = tree.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let mut noise = vec![0u8; 3 << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(etc.join("os-release"), &noise).unwrap();
    let mut fstab =
        String::from("# hostile\n/dev/sda1 / ext4 defaults 0 1\nUUID=\"\" \\ \\\\ \x01\x02 zz\n");
    fstab.push_str(&"x".repeat(2 << 20));
    std::fs::write(etc.join("fstab"), fstab).unwrap();
    std::os::unix::fs::symlink("/../../../../../etc/shadow", etc.join("hostname")).unwrap();
    std::fs::create_dir_all(tree.join("boot/grub")).unwrap();
    std::fs::write(
        tree.join("boot/grub/grub.cfg"),
        "menuentry x {\n linux /vmlinuz root=/dev/sda1 ro \"unterminated\n}\n",
    )
    .unwrap();
    let part = work.join("part.ext4");
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            tree.to_str().unwrap(),
            part.to_str().unwrap(),
            "48M",
        ],
    )
    .unwrap();
    let disk = work.join("hostile.raw");
    run("truncate", &["-s", "64M", disk.to_str().unwrap()]).unwrap();
    let script = "label: dos\nstart=2048, type=83\n";
    let mut child = std::process::Command::new("sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    run(
        "dd",
        &[
            &format!("if={}", part.display()),
            &format!("of={}", disk.display()),
            "bs=1M",
            "seek=1",
            "conv=notrunc",
            "status=none",
        ],
    )
    .unwrap();
    disk
}

#[test]
fn hostile_guest_files_are_reported_not_trusted() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let server = server_with_appliance(&w.join("data"));
    let token = server.create_token().unwrap();

    // Bad requests first: an unknown machine and an unknown profile are explained.
    let unknown = server.operator(&["convert", "m-0123456789abcdef", "--dry-run"]);
    assert!(
        unknown.is_err_and(|e| format!("{e:#}").contains("unknown machine")),
        "unknown machine"
    );

    let disk = hostile_disk(w);
    let report = capture_json(&server, &token, &disk, &[]);
    let machine = report["machine_id"].as_str().unwrap().to_string();
    let bad_profile = server.operator(&["convert", &machine, "--profile", "vmware"]);
    assert!(
        bad_profile.is_err_and(|e| format!("{e:#}").contains("virtio-scsi")),
        "an unknown profile lists the known ones"
    );

    let status = convert_allowing_failure(&server, &machine);
    let report = status
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("no report: {status:#?}"));
    let inspection = &report["inspection"];
    let problems = inspection["problems"].to_string();
    assert!(problems.contains("/etc/os-release"), "{problems}");
    assert!(problems.contains("/etc/fstab"), "{problems}");
    assert!(inspection["os"].is_null(), "{inspection:#}");
    // The symlink resolved inside the guest (where /etc/shadow does not exist), never to the
    // server's or the appliance's own file.
    let host_shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let hostname = inspection["hostname"].as_str().unwrap_or("");
    assert!(
        hostname.is_empty() || !host_shadow.contains(hostname),
        "hostname {hostname:?} came from outside the guest"
    );
    // The capture itself is untouched by a dry run and by a failed conversion.
    let exported = w.join("captured.raw");
    server
        .export(
            &server.disks().unwrap()[0].disk_id.to_string(),
            "raw",
            &exported,
        )
        .unwrap();
    assert!(run("cmp", &[disk.to_str().unwrap(), exported.to_str().unwrap()]).is_ok());
}

/// `convert --dry-run --json`, returning the status whether it succeeded or not.
fn convert_allowing_failure(server: &Server, machine: &str) -> ConversionStatus {
    let _ = server.operator(&["convert", machine, "--dry-run"]);
    let out = server.operator(&["conversion", machine, "--json"]).unwrap();
    serde_json::from_str(&out).unwrap()
}

/// Benchmark (run by `make bench`, ignored in the test suite): the conversion of the Debian
/// guest by the server's appliance against `virt-v2v -i disk ... -o local` on the same image,
/// in the same run, both under TCG. Prints figures; asserts only that both conversions worked.
#[test]
#[ignore = "benchmark: make bench"]
fn bench_conversion_against_virt_v2v() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let server = server_with_appliance(&w.join("data"));
    let machine = capture_on_physical_machine(&server, w);
    let t = Instant::now();
    let done = convert(&server, &machine, &[]);
    let p2v_wall = t.elapsed();
    assert_eq!(done.state, ConversionState::Succeeded, "{done:#?}");
    let timings = &done.report.as_ref().unwrap()["timings"];
    eprintln!(
        "bench-convert p2v: {:.1} s in all (appliance start {:.1} s, inspection {:.1} s, substitution {:.1} s)",
        p2v_wall.as_secs_f64(),
        done.appliance_start_ms.unwrap_or(0) as f64 / 1000.0,
        timings["inspect_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
        timings["apply_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
    );
    if std::process::Command::new("virt-v2v")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("bench-convert virt-v2v: not installed (scripts/bench.sh installs it); no ratio");
        return;
    }
    let copy = w.join("v2v-source.raw");
    run(
        "cp",
        &[
            "--sparse=always",
            guest_fixture().to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    )
    .unwrap();
    let out = w.join("v2v-out");
    std::fs::create_dir_all(&out).unwrap();
    let v2v = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .env("LIBGUESTFS_BACKEND", "direct")
            .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // Build libguestfs' appliance once first (supermin caches it), as p2v's image is prebuilt.
    let warm = Instant::now();
    let _ = v2v(&["libguestfs-test-tool"]);
    eprintln!(
        "bench-convert virt-v2v: appliance build (not counted) {:.1} s",
        warm.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let result = v2v(&[
        "virt-v2v",
        "-i",
        "disk",
        copy.to_str().unwrap(),
        "-o",
        "local",
        "-os",
        out.to_str().unwrap(),
        "-of",
        "qcow2",
    ]);
    let v2v_wall = t.elapsed();
    assert!(
        result.status.success(),
        "virt-v2v failed:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    eprintln!(
        "bench-convert virt-v2v: {:.1} s in all",
        v2v_wall.as_secs_f64()
    );
    eprintln!(
        "bench-convert ratio: p2v/virt-v2v wall time {:.2} ({})",
        p2v_wall.as_secs_f64() / v2v_wall.as_secs_f64(),
        if p2v_wall < v2v_wall {
            "p2v faster"
        } else {
            "virt-v2v faster"
        }
    );
}
