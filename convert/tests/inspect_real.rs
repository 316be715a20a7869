//! inspect() and plan() on real file systems: a fake Debian guest tree packed into an ext4
//! image with `mkfs.ext4 -d`, loop-mounted read-only by the host kernel (needs root), and the
//! host's own initramfs compared with `lsinitramfs`.

use std::path::Path;
use std::process::Command;

use p2v_convert::guest::PartitionInfo;
use p2v_convert::inspect::{self, Availability, BootloaderKind, GuestRoot, NetSource};
use p2v_convert::job::JobDisk;
use p2v_convert::plan::{self, Change, InitramfsTool};

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A read-only loop mount, unmounted on drop.
struct Mount(tempfile::TempDir);

impl Mount {
    fn new(image: &Path) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "ro,loop,nodev,nosuid,noexec"])
            .arg(image)
            .arg(dir.path()));
        Mount(dir)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn symlink(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

const KVER: &str = "6.1.0-99-amd64";

/// A gzip-compressed newc initramfs holding ahci and sd_mod only (built with cpio and gzip).
fn initrd(dir: &Path) -> Vec<u8> {
    let tree = dir.join("initrd-tree");
    for m in [
        "kernel/drivers/ata/ahci.ko",
        "kernel/drivers/scsi/sd_mod.ko",
    ] {
        write(&tree, &format!("usr/lib/modules/{KVER}/{m}"), b"\x7fELF");
    }
    write(&tree, "init", b"#!/bin/sh\n");
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1")
        .current_dir(&tree)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn guest_tree(root: &Path, work: &Path) {
    write(root, "etc/os-release", b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n");
    write(root, "etc/fstab", b"# <file system> <mount point> <type> <options> <dump> <pass>\n/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001-part2 none swap sw 0 0\nproc /proc proc defaults 0 0\n");
    write(root, "etc/shadow", b"guest-shadow-line\n");
    // Escape attempt: must read the guest's /etc/shadow, never the host's.
    symlink(root, "etc/hostname", "/../../../../etc/shadow");
    write(root, "boot/grub/grub.cfg", format!("menuentry 'Debian' {{\n\tlinux\t/boot/vmlinuz-{KVER} root=/dev/sda1 ro quiet\n\tinitrd\t/boot/initrd.img-{KVER}\n}}\n").as_bytes());
    std::fs::create_dir_all(root.join("boot/grub/i386-pc")).unwrap();
    write(root, "etc/default/grub", b"GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"console=ttyS0\"\n");
    write(root, &format!("boot/vmlinuz-{KVER}"), b"kernel");
    write(root, &format!("boot/initrd.img-{KVER}"), &initrd(work));
    write(root, &format!("lib/modules/{KVER}/modules.dep"), b"kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko\nkernel/drivers/ata/libahci.ko:\nkernel/drivers/scsi/sd_mod.ko:\nkernel/drivers/block/virtio_blk.ko:\nkernel/drivers/virtio/virtio_pci.ko:\nkernel/drivers/net/virtio_net.ko:\n");
    write(
        root,
        &format!("lib/modules/{KVER}/modules.builtin"),
        b"kernel/drivers/virtio/virtio.ko\n",
    );
    write(root, "usr/sbin/update-initramfs", b"#!/bin/sh\n");
    write(
        root,
        "etc/initramfs-tools/initramfs.conf",
        b"MODULES=dep\nBUSYBOX=auto\n",
    );
    write(root, "etc/initramfs-tools/modules", b"# List of modules\n");
    write(root, "lib/systemd/systemd", b"\x7fELF");
    write(
        root,
        "etc/network/interfaces",
        b"source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n",
    );
    write(root, "etc/network/interfaces.d/eth0", b"auto eth0\niface eth0 inet static\n    address 192.0.2.10\n    netmask 255.255.255.0\n    gateway 192.0.2.1\n");
    symlink(
        root,
        "etc/systemd/system/multi-user.target.wants/ipmievd.service",
        "/lib/systemd/system/ipmievd.service",
    );
    symlink(
        root,
        "etc/systemd/system/multi-user.target.wants/ssh.service",
        "/lib/systemd/system/ssh.service",
    );
}

fn mkfs(tree: &Path, image: &Path) {
    std::fs::File::create(image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(tree)
        .arg(image));
}

fn part(number: u32, uuid: &str, fs: &str) -> PartitionInfo {
    PartitionInfo {
        disk_index: 0,
        number,
        start_bytes: u64::from(number) << 20,
        size_bytes: 1 << 20,
        part_type: Some("0x83".into()),
        partuuid: None,
        fs_type: Some(fs.into()),
        uuid: Some(uuid.into()),
        label: None,
        device: None,
    }
}

#[test]
fn fake_debian_guest_on_ext4() {
    if !is_root() {
        eprintln!("skipping: loop mounts need root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    guest_tree(&tree, work.path());
    let image = work.path().join("root.ext4");
    mkfs(&tree, &image);
    let m = Mount::new(&image);
    let root = GuestRoot::new(m.0.path()).unwrap();
    let disks = vec![JobDisk {
        disk_id: "d-1".into(),
        original_name: "sda".into(),
        device: None,
        index: 0,
    }];
    let parts = vec![
        part(1, "11111111-2222-3333-4444-555555555555", "ext4"),
        part(2, "66666666-7777-8888-9999-000000000000", "swap"),
    ];
    let ins = inspect::inspect(&root, &parts, &disks);
    let report = inspect::render(&ins);
    eprintln!("{report}");

    let os = ins.os.as_ref().expect("os");
    assert_eq!(
        (os.id.as_str(), os.version_id.as_deref()),
        ("debian", Some("12"))
    );
    assert_eq!(ins.hostname.as_deref(), Some("guest-shadow-line"));
    assert_eq!(ins.fstab.len(), 3);
    assert_eq!(ins.root_device.as_deref(), Some("/dev/sda1"));
    assert_eq!(ins.initramfs_tool, Some(InitramfsTool::InitramfsTools));
    assert_eq!(ins.initramfs_modules_policy.as_deref(), Some("dep"));
    assert!(ins
        .bootloaders
        .iter()
        .any(|b| b.kind == BootloaderKind::Grub2Bios));
    assert_eq!(
        ins.firmware,
        Some(p2v_protocol::inventory::FirmwareKind::Bios)
    );
    assert!(ins.uses_systemd);
    assert_eq!(ins.kernels.len(), 1);
    let k = &ins.kernels[0];
    assert_eq!(k.version, KVER);
    assert_eq!(k.initrd_modules, Some(2), "{k:?}");
    let vb = k.driver("virtio_blk").unwrap();
    assert_eq!(
        (vb.in_initrd, vb.available),
        (Some(false), Availability::Module)
    );
    let ahci = k.driver("ahci").unwrap();
    assert_eq!(ahci.in_initrd, Some(true));
    assert_eq!(
        k.driver("virtio_scsi").unwrap().available,
        Availability::Missing
    );
    let eth0 = ins
        .network
        .iter()
        .find(|n| n.name.as_deref() == Some("eth0"))
        .expect("eth0 from the sourced file");
    assert_eq!(eth0.source, NetSource::Ifupdown);
    assert_eq!(eth0.file, "/etc/network/interfaces.d/eth0");
    assert_eq!(eth0.addresses, vec!["192.0.2.10/24"]);
    assert_eq!(ins.agents.len(), 1);
    assert_eq!(ins.agents[0].unit, "ipmievd.service");
    assert!(ins.problems.is_empty(), "{:?}", ins.problems);
    assert!(
        report.contains("virtio_blk [module, not in initramfs]"),
        "{report}"
    );

    // The plan for the virtio profile.
    let vm: p2v_convert::profile::VmSpec = serde_json::from_value(serde_json::json!({
        "name": "m", "profile": "virtio", "machine": "q35", "firmware": "bios",
        "cpus": 1, "memory_mib": 1024,
        "disks": [{"disk_id": "d-1", "size_bytes": 1u64 << 30, "bus": "virtio-blk"}],
        "nics": [{"mac": "52:54:00:12:34:56", "model": "virtio-net", "original_name": "eth0"}],
    }))
    .unwrap();
    let p = plan::plan(&ins, &vm, &disks, &parts, None);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    let fstab = p
        .changes
        .iter()
        .find_map(|c| match c {
            Change::EditLines { path, edits, .. } if path == "/etc/fstab" => Some(edits),
            _ => None,
        })
        .expect("fstab edits");
    let after: Vec<(usize, &str)> = fstab.iter().map(|e| (e.line, e.after.as_str())).collect();
    assert_eq!(
        after,
        vec![
            (
                2,
                "UUID=11111111-2222-3333-4444-555555555555 / ext4 errors=remount-ro 0 1"
            ),
            (
                3,
                "UUID=66666666-7777-8888-9999-000000000000 none swap sw 0 0"
            ),
        ]
    );
    assert!(p.changes.iter().any(|c| matches!(c,
        Change::EditLines { path, edits, .. } if path == "/boot/grub/grub.cfg"
            && edits[0].after.contains("root=UUID=11111111-2222-3333-4444-555555555555 ro"))));
    assert!(p.changes.iter().any(|c| matches!(c,
        Change::AppendLines { path, lines, .. } if path == "/etc/initramfs-tools/modules"
            && *lines == vec!["virtio_pci".to_string(), "virtio_blk".to_string()])));
    assert!(p.changes.iter().any(|c| matches!(c,
        Change::RebuildInitramfs { kernel, .. } if kernel == KVER)));
    assert!(p.changes.iter().any(|c| matches!(c,
        Change::WriteFile { path, .. } if path == "/etc/systemd/network/10-p2v-eth0.link")));
    assert!(p.changes.iter().any(|c| matches!(c,
        Change::MaskUnit { unit, .. } if unit == "ipmievd.service")));
}

#[test]
fn hostile_guest_gets_problems_not_panics() {
    if !is_root() {
        eprintln!("skipping: loop mounts need root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    write(
        &tree,
        "etc/os-release",
        b"ID=debian\nPRETTY_NAME=\"Debian\n",
    );
    let mut big = Vec::new();
    while big.len() < 2 << 20 {
        big.extend_from_slice(b"/dev/sda1 / ext4 defaults 0 1\n");
    }
    write(&tree, "etc/fstab", &big);
    symlink(&tree, "etc/hostname", "hostname");
    write(
        &tree,
        "etc/network/interfaces",
        b"source /etc/network/interfaces\niface eth0 inet static\n",
    );
    write(&tree, "boot/vmlinuz-1.0", b"k");
    write(&tree, "boot/initrd.img-1.0", b"\xfd7zXZ\0 not really");
    write(&tree, "etc/netplan/01.yaml", b"network:\n\tethernets: {}\n");
    let image = work.path().join("root.ext4");
    mkfs(&tree, &image);
    let m = Mount::new(&image);
    let root = GuestRoot::new(m.0.path()).unwrap();
    let ins = inspect::inspect(&root, &[], &[]);
    eprintln!("{}", inspect::render(&ins));
    let has = |s: &str| ins.problems.iter().any(|p| p.contains(s));
    assert!(
        has("/etc/os-release: line 2: unterminated quote"),
        "{:?}",
        ins.problems
    );
    assert!(
        has("/etc/fstab: 2 MiB, over the 1 MiB limit"),
        "{:?}",
        ins.problems
    );
    assert!(
        has("/etc/hostname: more than 40 symlinks"),
        "{:?}",
        ins.problems
    );
    assert!(has("xz compression not understood"), "{:?}", ins.problems);
    assert!(
        has("/etc/netplan/01.yaml: line 2: tab"),
        "{:?}",
        ins.problems
    );
    assert!(
        has("/etc/network/interfaces: sourced again"),
        "{:?}",
        ins.problems
    );
    assert_eq!(ins.network.len(), 1, "{:?}", ins.network);
    assert!(ins.os.is_none() && ins.os_error.as_deref().unwrap().contains("unterminated"));
    assert!(ins.fstab.is_empty());
    let k = &ins.kernels[0];
    assert_eq!(k.driver("virtio_blk").unwrap().in_initrd, None);
}

/// The host's own initramfs (Debian: zstd) lists the same modules as `lsinitramfs`.
#[test]
fn host_initrd_matches_lsinitramfs() {
    let Ok(names) = std::fs::read_dir("/boot") else {
        return;
    };
    let mut images: Vec<_> = names
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("initrd.img-"))
        })
        .collect();
    images.sort();
    let Some(image) = images.last() else {
        eprintln!("skipping: no /boot/initrd.img-*");
        return;
    };
    let out = match Command::new("lsinitramfs").arg(image).output() {
        Ok(o) if o.status.success() => o.stdout,
        _ => {
            eprintln!("skipping: lsinitramfs not available");
            return;
        }
    };
    let want: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| l.contains("lib/modules/"))
        .filter_map(p2v_convert::inspect::modules::module_from_path)
        .collect();
    let bytes = std::fs::read(image).unwrap();
    let got = p2v_convert::inspect::initrd::parse(&bytes).unwrap();
    assert!(!want.is_empty());
    assert_eq!(got.modules, want, "{}", image.display());
}
