//! The initramfs rebuild step of apply, as root, on a tiny guest tree whose "initramfs tool" is
//! a busybox shell script: the tool runs chrooted with /proc, /dev and /tmp usable and gets the
//! arguments initramfs-tools expects; its failure output reaches the report; a rebuilt image
//! that lacks a driver fails the change (a driver built into the kernel counts as present); the
//! chroot's mounts are gone afterwards.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use p2v_convert::apply::{self, ApplyContext};
use p2v_convert::inspect::GuestRoot;
use p2v_convert::plan::{Change, InitramfsTool, Plan};

const KERNEL: &str = "6.1.0-18-amd64";

fn write(root: &Path, path: &str, content: &[u8], mode: u32) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A gzip'd newc cpio holding module files.
fn initrd(work: &Path, modules: &[&str]) -> Vec<u8> {
    let tree = work.join(format!("initrd-{}", modules.len()));
    for m in modules {
        write(
            &tree,
            &format!("usr/lib/modules/{KERNEL}/kernel/{m}"),
            b"\x7fELF",
            0o644,
        );
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -n")
        .current_dir(&tree)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn rebuild(root: &GuestRoot) -> p2v_convert::apply::AppliedChange {
    let plan = Plan {
        changes: vec![Change::RebuildInitramfs {
            tool: InitramfsTool::InitramfsTools,
            kernel: KERNEL.into(),
            image: format!("/boot/initrd.img-{KERNEL}"),
            drivers: vec!["virtio_pci".into(), "virtio-blk".into()],
            reason: "test".into(),
        }],
        ..Plan::default()
    };
    let cx = ApplyContext {
        root,
        guest_mounts: vec!["/".into()],
        stamp: "20240101T000000Z".into(),
    };
    let mut done = apply::apply(&plan, &cx);
    assert_eq!(done.len(), 1);
    done.remove(0)
}

fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(str::to_string)
        .collect()
}

#[test]
fn direct_rebuild_runs_the_guest_tool_and_checks_the_image() {
    let work = tempfile::tempdir().unwrap();
    let g = work.path().join("guest");
    std::fs::create_dir_all(g.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", g.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", g.join("bin/sh")).unwrap();
    // virtio_pci is built into this kernel; virtio_blk must be in the image.
    write(
        &g,
        &format!("/lib/modules/{KERNEL}/modules.builtin"),
        b"kernel/drivers/virtio/virtio_pci.ko\n",
        0o644,
    );
    let image = format!("/boot/initrd.img-{KERNEL}");
    write(
        &g,
        &image,
        &initrd(work.path(), &["drivers/ata/ahci.ko"]),
        0o644,
    );
    write(
        &g,
        "/opt/good.img",
        &initrd(
            work.path(),
            &["drivers/ata/ahci.ko", "drivers/block/virtio_blk.ko"],
        ),
        0o644,
    );
    let root = GuestRoot::new(&g).unwrap();
    let tool = "/usr/sbin/update-initramfs";

    // 1. The tool fails: its output and status are in the detail.
    write(
        &g,
        tool,
        b"#!/bin/sh\necho 'mkinitramfs: a hook failed' >&2\nexit 7\n",
        0o755,
    );
    let a = rebuild(&root);
    assert!(!a.ok);
    assert!(
        a.detail.contains("a hook failed") && a.detail.contains('7'),
        "{}",
        a.detail
    );
    assert!(mounts_below(&g).is_empty(), "{:?}", mounts_below(&g));

    // 2. The tool "succeeds" but leaves an image without virtio_blk.
    write(&g, tool, b"#!/bin/sh\nexit 0\n", 0o755);
    let a = rebuild(&root);
    assert!(!a.ok);
    assert!(a.detail.contains("lacks virtio_blk"), "{}", a.detail);
    assert!(!a.detail.contains("virtio_pci"), "builtin: {}", a.detail);

    // 3. A tool that checks its chroot and arguments, then writes a good image.
    let script = format!(
        "#!/bin/sh\n\
         [ \"$*\" = \"-u -k {KERNEL}\" ] || {{ echo \"args: $*\" >&2; exit 9; }}\n\
         [ -r /proc/self/stat ] || {{ echo 'no /proc' >&2; exit 8; }}\n\
         [ -d /sys/class ] || {{ echo 'no /sys' >&2; exit 8; }}\n\
         echo x > /dev/null || exit 10\n\
         echo x > /tmp/scratch || exit 11\n\
         busybox cp /opt/good.img {image}\n"
    );
    write(&g, tool, script.as_bytes(), 0o755);
    let a = rebuild(&root);
    assert!(a.ok, "{}", a.detail);
    assert!(
        a.detail.contains("holds virtio_pci, virtio-blk"),
        "{}",
        a.detail
    );
    assert!(mounts_below(&g).is_empty(), "{:?}", mounts_below(&g));
    // The tmpfs on /tmp was the chroot's, not the guest's directory.
    assert!(!g.join("tmp/scratch").exists());
}
