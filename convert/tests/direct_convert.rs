//! Direct mode end to end, as root: a small MBR disk image built here (ext4 root made with
//! `mkfs.ext4 -d` from a fake Debian tree, a swap), converted for the virtio profile through the
//! library and through the binary; the real Debian 12 guest fixture converted once, its new
//! initramfs checked with `lsinitramfs`. The oracles are e2fsprogs and util-linux: `blkid` for
//! the UUIDs the rewritten files must name, `debugfs` to read the converted file system without
//! mounting it, `e2fsck -fn` for its consistency, `losetup -j` for leaked loop devices.

use std::path::{Path, PathBuf};
use std::process::Command;

use p2v_convert::apply::ManifestEntry;
use p2v_convert::job::{ConversionJob, ConversionReport, JobDisk};
use p2v_convert::plan::Change;
use p2v_convert::profile::{self, Overrides};

const SECTOR: u64 = 512;
const ROOT_START: u64 = 2048;
const ROOT_SECTORS: u64 = 40 << 11; // 40 MiB
const SWAP_START: u64 = ROOT_START + ROOT_SECTORS + 2048;
const SWAP_SECTORS: u64 = 8 << 11;
const DISK_BYTES: u64 = 64 << 20;
const KERNEL: &str = "6.1.0-18-amd64";

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(root: &Path, path: &str, content: &[u8]) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

const FSTAB: &str = "# /etc/fstab: static file system information.\n\
/dev/sda1 / ext4 errors=remount-ro 0 1\n\
/dev/sda2 none swap sw 0 0\n\
tmpfs /run/shm tmpfs defaults 0 0\n";
const GRUB_CFG: &str = "set default=0\n\
menuentry 'Debian GNU/Linux' {\n\
\tlinux /boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro quiet\n\
\tinitrd /boot/initrd.img-6.1.0-18-amd64\n\
}\n";
const DEFAULT_GRUB: &str = "GRUB_DEFAULT=0\n\
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n\
GRUB_CMDLINE_LINUX=\"resume=/dev/sda2\"";

/// An initramfs (gzip'd newc cpio) holding the given module files.
fn initrd(dir: &Path, modules: &[&str]) -> Vec<u8> {
    let tree = dir.join("initrd-tree");
    for m in modules {
        write(
            &tree,
            &format!("usr/lib/modules/{KERNEL}/kernel/{m}"),
            b"\x7fELF",
        );
    }
    write(&tree, "init", b"#!/bin/sh\n");
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -n")
        .current_dir(&tree)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The fake guest's tree: a Debian 12 with initramfs-tools, one kernel whose initramfs already
/// holds the virtio drivers (so that the plan edits files and rebuilds nothing), GRUB.
fn guest_tree(dir: &Path) -> PathBuf {
    let t = dir.join("tree");
    write(
        &t,
        "/etc/os-release",
        b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
    );
    write(&t, "/etc/hostname", b"fake-guest\n");
    write(&t, "/etc/fstab", FSTAB.as_bytes());
    write(&t, "/boot/grub/grub.cfg", GRUB_CFG.as_bytes());
    write(&t, "/etc/default/grub", DEFAULT_GRUB.as_bytes());
    write(&t, "/etc/initramfs-tools/initramfs.conf", b"MODULES=most\n");
    write(&t, "/usr/sbin/update-initramfs", b"#!/bin/sh\nexit 1\n");
    write(&t, &format!("/boot/vmlinuz-{KERNEL}"), b"kernel");
    let mods = [
        "drivers/block/virtio_blk.ko",
        "drivers/virtio/virtio_pci.ko",
        "drivers/net/virtio_net.ko",
        "drivers/ata/ahci.ko",
        "drivers/scsi/sd_mod.ko",
    ];
    let dep: String = mods.iter().map(|m| format!("kernel/{m}:\n")).collect();
    write(
        &t,
        &format!("/lib/modules/{KERNEL}/modules.dep"),
        dep.as_bytes(),
    );
    write(&t, &format!("/lib/modules/{KERNEL}/modules.builtin"), b"");
    let image = initrd(dir, &mods);
    write(&t, &format!("/boot/initrd.img-{KERNEL}"), &image);
    for d in ["proc", "sys", "dev", "run", "tmp", "var/lib"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    t
}

/// An MBR disk image: p1 ext4 root from `tree`, p2 swap.
fn disk_image(dir: &Path, tree: &Path) -> PathBuf {
    disk_image_with(dir, tree, "dos")
}

/// The same with a `dos` or `gpt` partition table.
fn disk_image_with(dir: &Path, tree: &Path, label: &str) -> PathBuf {
    let root = dir.join("root.img");
    let swap = dir.join("swap.img");
    let disk = dir.join("disk.img");
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "fakeroot",
            "-d",
            tree.to_str().unwrap(),
            root.to_str().unwrap(),
            &format!("{}k", ROOT_SECTORS / 2),
        ],
    );
    std::fs::File::create(&swap)
        .unwrap()
        .set_len(SWAP_SECTORS * SECTOR)
        .unwrap();
    sh("mkswap", &["-L", "fakeswap", swap.to_str().unwrap()]);
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(DISK_BYTES)
        .unwrap();
    let script = format!(
        "label: dos\nlabel-id: 0x5eed0001\nstart={ROOT_START}, size={ROOT_SECTORS}, type=83, bootable\nstart={SWAP_START}, size={SWAP_SECTORS}, type=82\n"
    );
    let script = if label == "gpt" {
        format!(
            "label: gpt\nstart={ROOT_START}, size={ROOT_SECTORS}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\nstart={SWAP_START}, size={SWAP_SECTORS}, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n"
        )
    } else {
        script
    };
    let mut child = Command::new("sfdisk")
        .args(["--quiet", disk.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    for (img, start) in [(&root, ROOT_START), (&swap, SWAP_START)] {
        sh(
            "dd",
            &[
                &format!("if={}", img.display()),
                &format!("of={}", disk.display()),
                "bs=512",
                &format!("seek={start}"),
                "conv=notrunc,sparse",
                "status=none",
            ],
        );
    }
    disk
}

fn job(disk: &Path, dry_run: bool) -> ConversionJob {
    let p = profile::profile("virtio").unwrap();
    let size = std::fs::metadata(disk).unwrap().len();
    ConversionJob {
        machine_id: "m-direct-test".into(),
        inventory: None,
        disks: vec![JobDisk {
            disk_id: "d-0".into(),
            original_name: "sda".into(),
            device: Some(disk.display().to_string()),
            index: 0,
        }],
        vm: profile::resolve(
            "direct-test",
            &p,
            None,
            &[("d-0".into(), size)],
            None,
            &Overrides::default(),
        ),
        dry_run,
    }
}

/// Copies `len` bytes at `offset` of `from` into a new file.
fn extract(from: &Path, start_sector: u64, sectors: u64, to: &Path) {
    sh(
        "dd",
        &[
            &format!("if={}", from.display()),
            &format!("of={}", to.display()),
            "bs=512",
            &format!("skip={start_sector}"),
            &format!("count={sectors}"),
            "status=none",
        ],
    );
}

fn blkid_uuid(image: &Path) -> String {
    sh(
        "blkid",
        &["-p", "-s", "UUID", "-o", "value", image.to_str().unwrap()],
    )
    .trim()
    .to_string()
}

/// A file of an ext4 image, read with debugfs (no mount).
fn debugfs_cat(image: &Path, path: &str) -> String {
    sh(
        "debugfs",
        &["-R", &format!("cat {path}"), image.to_str().unwrap()],
    )
}

fn debugfs_ls(image: &Path, path: &str) -> Vec<String> {
    sh(
        "debugfs",
        &["-R", &format!("ls -p {path}"), image.to_str().unwrap()],
    )
    .lines()
    .filter_map(|l| l.split('/').nth(5).map(str::to_string))
    .filter(|n| !n.is_empty() && n != "." && n != "..")
    .collect()
}

fn sha256(path: &Path) -> String {
    sh("sha256sum", &[path.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn assert_no_loops(image: &Path) {
    let left = sh("losetup", &["-j", image.to_str().unwrap()]);
    assert!(left.trim().is_empty(), "loop devices left: {left}");
}

fn pretty(r: &ConversionReport) -> String {
    serde_json::to_string_pretty(r).unwrap()
}

/// The edits the plan must make to `path`: (line, text that must be in the new line).
fn edits_of<'a>(report: &'a ConversionReport, path: &str) -> Vec<(usize, &'a str)> {
    report
        .plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::EditLines { path: p, edits, .. } if p == path => Some(edits),
            _ => None,
        })
        .flatten()
        .map(|e| (e.line, e.after.as_str()))
        .collect()
}

/// The converted root partition's checks shared by the library and the binary runs.
fn check_converted(dir: &Path, disk: &Path, report: &ConversionReport) {
    let p1 = dir.join("p1.img");
    let p2 = dir.join("p2.img");
    extract(disk, ROOT_START, ROOT_SECTORS, &p1);
    extract(disk, SWAP_START, SWAP_SECTORS, &p2);
    let (root_uuid, swap_uuid) = (blkid_uuid(&p1), blkid_uuid(&p2));
    assert_eq!(root_uuid.len(), 36, "{root_uuid}");

    // The plan: the device names of fstab (lines 2 and 3), grub.cfg and /etc/default/grub.
    let fstab_edits = edits_of(report, "/etc/fstab");
    assert!(
        fstab_edits
            .iter()
            .any(|(l, a)| *l == 2 && a.contains(&format!("UUID={root_uuid}"))),
        "{}",
        pretty(report)
    );
    assert!(
        fstab_edits
            .iter()
            .any(|(l, a)| *l == 3 && a.contains(&format!("UUID={swap_uuid}"))),
        "{fstab_edits:?}"
    );
    assert!(edits_of(report, "/boot/grub/grub.cfg")
        .iter()
        .any(|(l, a)| *l == 3 && a.contains(&format!("root=UUID={root_uuid}"))));
    assert!(edits_of(report, "/etc/default/grub")
        .iter()
        .any(|(l, a)| *l == 3 && a.contains(&format!("resume=UUID={swap_uuid}"))));
    assert!(
        !report
            .plan
            .changes
            .iter()
            .any(|c| matches!(c, Change::RebuildInitramfs { .. })),
        "the initramfs already holds the virtio drivers: {}",
        pretty(report)
    );

    // The files as the guest will see them: every other byte kept.
    let fstab = debugfs_cat(&p1, "/etc/fstab");
    let want = FSTAB
        .replace("/dev/sda1 /", &format!("UUID={root_uuid} /"))
        .replace("/dev/sda2 none", &format!("UUID={swap_uuid} none"));
    assert_eq!(fstab, want);
    let grub = debugfs_cat(&p1, "/boot/grub/grub.cfg");
    assert_eq!(
        grub,
        GRUB_CFG.replace("root=/dev/sda1", &format!("root=UUID={root_uuid}"))
    );
    let default = debugfs_cat(&p1, "/etc/default/grub");
    assert_eq!(
        default,
        DEFAULT_GRUB.replace("resume=/dev/sda2", &format!("resume=UUID={swap_uuid}")),
        "the missing final newline is kept"
    );

    // Backups and their manifest.
    let stamps = debugfs_ls(&p1, "/var/lib/p2v/backup");
    assert_eq!(stamps.len(), 1, "{stamps:?}");
    let bdir = format!("/var/lib/p2v/backup/{}", stamps[0]);
    let manifest: Vec<ManifestEntry> =
        serde_json::from_str(&debugfs_cat(&p1, &format!("{bdir}/manifest.json"))).unwrap();
    for (path, original) in [
        ("/etc/fstab", FSTAB),
        ("/boot/grub/grub.cfg", GRUB_CFG),
        ("/etc/default/grub", DEFAULT_GRUB),
    ] {
        let e = manifest
            .iter()
            .find(|m| m.path == path)
            .unwrap_or_else(|| panic!("{path} not in {manifest:?}"));
        assert!(e.existed);
        let backup = e.backup.as_deref().unwrap();
        assert_eq!(backup, format!("{bdir}{path}"));
        assert_eq!(debugfs_cat(&p1, backup), original, "{backup}");
        let applied = report
            .applied
            .iter()
            .find(|a| a.change == e.change)
            .unwrap();
        assert_eq!(applied.backup.as_deref(), Some(backup));
    }
    // The report is kept in the guest.
    let kept: Vec<String> = debugfs_ls(&p1, "/var/lib/p2v")
        .into_iter()
        .filter(|n| n.starts_with("conversion-") && n.ends_with(".json"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let inside: ConversionReport =
        serde_json::from_str(&debugfs_cat(&p1, &format!("/var/lib/p2v/{}", kept[0]))).unwrap();
    assert_eq!(inside.plan, report.plan);

    // The file system is consistent.
    sh("e2fsck", &["-fn", p1.to_str().unwrap()]);
    assert_no_loops(disk);
}

#[test]
fn direct_converts_mbr_image() {
    let dir = tempfile::tempdir().unwrap();
    let tree = guest_tree(dir.path());
    let disk = disk_image(dir.path(), &tree);
    let report = p2v_convert::run::run_job(&job(&disk, false));
    assert!(report.ok, "{}", pretty(&report));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(!report.applied.is_empty());
    assert!(report.applied.iter().all(|a| a.ok));
    assert_eq!(report.applied.len(), report.plan.changes.len());
    assert_eq!(
        report.inspection.os.as_ref().map(|o| o.id.as_str()),
        Some("debian")
    );
    check_converted(dir.path(), &disk, &report);
}

#[test]
fn direct_dry_run_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let tree = guest_tree(dir.path());
    let disk = disk_image(dir.path(), &tree);
    let before = sha256(&disk);
    let report = p2v_convert::run::run_job(&job(&disk, true));
    assert!(report.ok, "{}", pretty(&report));
    assert!(report.dry_run);
    assert!(report.applied.is_empty());
    assert!(
        !edits_of(&report, "/etc/fstab").is_empty(),
        "{}",
        pretty(&report)
    );
    assert_eq!(sha256(&disk), before, "a dry run changed the image");
    assert_no_loops(&disk);
}

#[test]
fn direct_binary_converts_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let tree = guest_tree(dir.path());
    let disk = disk_image(dir.path(), &tree);
    let job_path = dir.path().join("job.json");
    let report_path = dir.path().join("report.json");
    std::fs::write(&job_path, serde_json::to_vec(&job(&disk, false)).unwrap()).unwrap();
    // The job names no device: the --disk option gives it.
    let mut j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&job_path).unwrap()).unwrap();
    j["disks"][0]["device"] = serde_json::Value::Null;
    std::fs::write(&job_path, serde_json::to_vec(&j).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_p2v-convert"))
        .args(["direct", "--job"])
        .arg(&job_path)
        .arg("--report")
        .arg(&report_path)
        .arg("--disk")
        .arg(format!("0={}", disk.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: ConversionReport =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert!(
        stdout.contains(&format!(
            "P2V-CONVERT-DONE ok=true changes={}",
            report.applied.len()
        )),
        "{stdout}"
    );
    check_converted(dir.path(), &disk, &report);

    // A wrong --disk is refused before anything is touched.
    let out = Command::new(env!("CARGO_BIN_EXE_p2v-convert"))
        .args(["direct", "--job"])
        .arg(&job_path)
        .arg("--report")
        .arg(&report_path)
        .args(["--disk", "7=/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no disk 7"));
}

#[test]
fn direct_hostile_fstab_is_reported_and_nothing_mounts_outside() {
    let dir = tempfile::tempdir().unwrap();
    let tree = guest_tree(dir.path());
    // Mount points that climb out of the guest, or through a symlink that points at the
    // host's /etc, and a /boot that names a disk the job does not have.
    let hostile = format!(
        "{FSTAB}/dev/sda2 /../../../etc ext4 defaults 0 2\n\
         /dev/sdb1 /boot ext4 defaults 0 2\n"
    );
    write(&tree, "/etc/fstab", hostile.as_bytes());
    let disk = disk_image(dir.path(), &tree);
    let report = p2v_convert::run::run_job(&job(&disk, false));
    assert!(!report.ok, "{}", pretty(&report));
    let all = format!("{:?} {:?}", report.errors, report.warnings);
    assert!(all.contains("refusing the mount point"), "{all}");
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("/boot") && e.contains("/dev/sdb1")),
        "{all}"
    );
    // /boot could not be mounted: no file was changed (the root was mounted read-write, so
    // the superblock's mount time did change).
    assert!(report.applied.is_empty());
    let p1 = dir.path().join("p1.img");
    extract(&disk, ROOT_START, ROOT_SECTORS, &p1);
    assert_eq!(debugfs_cat(&p1, "/etc/fstab"), hostile);
    assert!(debugfs_ls(&p1, "/var/lib/p2v").is_empty());
    sh("e2fsck", &["-fn", p1.to_str().unwrap()]);
    assert_no_loops(&disk);
}

#[test]
fn direct_no_linux_root_is_an_error_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("empty.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let report = p2v_convert::run::run_job(&job(&disk, true));
    assert!(!report.ok);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("no root file system")),
        "{:?}",
        report.errors
    );
}

/// The real Debian 12 guest (scripts/make-guest-fixture.sh): converted in direct mode, its
/// initramfs rebuilt by its own update-initramfs in a chroot must now hold virtio_blk.
#[test]
fn direct_converts_debian12_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fixture = root.join("target/guest-fixtures/debian12-physical.raw");
    if !fixture.exists() {
        if std::env::var_os("P2V_REQUIRE_GUEST_FIXTURE").is_some() {
            panic!(
                "{} is missing and P2V_REQUIRE_GUEST_FIXTURE is set (make it with scripts/make-guest-fixture.sh)",
                fixture.display()
            );
        }
        eprintln!(
            "SKIPPED direct_converts_debian12_fixture: {} is absent (scripts/make-guest-fixture.sh target/guest-fixtures makes it)",
            fixture.display()
        );
        return;
    }
    let dir = tempfile::tempdir_in(root.join("target")).unwrap();
    let disk = dir.path().join("guest.raw");
    sh(
        "cp",
        &[
            "--sparse=always",
            fixture.to_str().unwrap(),
            disk.to_str().unwrap(),
        ],
    );
    let report = p2v_convert::run::run_job(&job(&disk, false));
    assert!(report.ok, "{}", pretty(&report));
    let rebuilds: Vec<(&str, &str)> = report
        .plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::RebuildInitramfs { kernel, image, .. } => {
                Some((kernel.as_str(), image.as_str()))
            }
            _ => None,
        })
        .collect();
    assert!(!rebuilds.is_empty(), "{}", pretty(&report));

    // Read the new image out of the converted root with debugfs and list it.
    let sectors = sh("sfdisk", &["-d", disk.to_str().unwrap()]);
    let p1 = sectors
        .lines()
        .find(|l| l.contains("guest.raw1"))
        .unwrap()
        .to_string();
    let field = |name: &str| -> u64 {
        p1.split(',')
            .find_map(|f| {
                f.trim()
                    .split_once('=')
                    .filter(|(k, _)| k.trim().ends_with(name))
            })
            .map(|(_, v)| v.trim().parse().unwrap())
            .unwrap()
    };
    let part = dir.path().join("p1.img");
    extract(&disk, field("start"), field("size"), &part);
    for (_, image) in rebuilds {
        let local = dir.path().join("initrd.img");
        sh(
            "debugfs",
            &[
                "-R",
                &format!("dump {image} {}", local.display()),
                part.to_str().unwrap(),
            ],
        );
        let listing = sh("lsinitramfs", &[local.to_str().unwrap()]);
        assert!(
            listing.contains("virtio_blk.ko"),
            "{image} lacks virtio_blk"
        );
        // The image was rebuilt after the configuration it embeds was rewritten.
        let unpacked = dir.path().join("unpacked");
        let _ = std::fs::remove_dir_all(&unpacked);
        sh(
            "unmkinitramfs",
            &[local.to_str().unwrap(), unpacked.to_str().unwrap()],
        );
        let resume = sh(
            "sh",
            &[
                "-c",
                &format!(
                    "cat {0}/conf/conf.d/resume {0}/main/conf/conf.d/resume 2>/dev/null; true",
                    unpacked.display()
                ),
            ],
        );
        assert!(
            resume.contains("RESUME=UUID=") && !resume.contains("by-id"),
            "{image}: conf.d/resume inside is {resume:?}"
        );
    }
    sh("e2fsck", &["-fn", part.to_str().unwrap()]);
    assert_no_loops(&disk);
}

/// The partition reader against sfdisk and blkid, on both table types.
#[test]
fn direct_partitions_match_sfdisk_and_blkid() {
    let dir = tempfile::tempdir().unwrap();
    let tree = guest_tree(dir.path());
    for label in ["dos", "gpt"] {
        let sub = dir.path().join(label);
        std::fs::create_dir_all(&sub).unwrap();
        let disk = disk_image_with(&sub, &tree, label);
        let (parts, problems) = p2v_convert::guest::discover(&job(&disk, true).disks);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(parts.len(), 2, "{parts:?}");
        for (p, (start, size)) in parts
            .iter()
            .zip([(ROOT_START, ROOT_SECTORS), (SWAP_START, SWAP_SECTORS)])
        {
            assert_eq!(
                (p.start_bytes, p.size_bytes),
                (start * SECTOR, size * SECTOR)
            );
            let want = if label == "gpt" {
                sh(
                    "sfdisk",
                    &["--part-uuid", disk.to_str().unwrap(), &p.number.to_string()],
                )
                .trim()
                .to_lowercase()
            } else {
                format!("5eed0001-{:02x}", p.number)
            };
            assert_eq!(p.partuuid.as_deref(), Some(want.as_str()), "{label} {p:?}");
            let area = sub.join(format!("p{}.img", p.number));
            extract(&disk, start, size, &area);
            assert_eq!(p.uuid.as_deref(), Some(blkid_uuid(&area).as_str()));
        }
        assert_eq!(parts[0].fs_type.as_deref(), Some("ext4"));
        assert_eq!(parts[0].label.as_deref(), Some("fakeroot"));
        assert_eq!(parts[1].fs_type.as_deref(), Some("swap"));
        assert_eq!(parts[1].label.as_deref(), Some("fakeswap"));
        // And the GPT guest converts (dry run) like the MBR one.
        let report = p2v_convert::run::run_job(&job(&disk, true));
        assert!(report.ok, "{}", pretty(&report));
        assert_no_loops(&disk);
    }
}
