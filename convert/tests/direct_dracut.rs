//! Direct mode on a real dracut guest, as root: the Debian 12 guest of
//! scripts/make-dracut-guest-fixture.sh (initramfs made by Debian's dracut, with ahci and without
//! virtio) converted for the virtio profile. The plan must use dracut's drop-in and rebuild the
//! image with the guest's own dracut in a chroot; the oracles are the host's `lsinitrd` (dracut's
//! own lister, from dracut-core; `unmkinitramfs` when it is absent), `debugfs` to read the
//! converted file system without mounting it and `e2fsck -fn` for its consistency.
//! A second test switches the guest's dracut to host-only mode (the RHEL and Fedora default) and
//! checks the root mount options dracut stores in the image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use p2v_convert::apply::ManifestEntry;
use p2v_convert::job::{ConversionJob, ConversionReport, JobDisk};
use p2v_convert::plan::{Change, InitramfsTool};
use p2v_convert::profile::{self, Overrides};

const DROP_IN: &str = "/etc/dracut.conf.d/50-p2v.conf";

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

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn job(disk: &Path) -> ConversionJob {
    let p = profile::profile("virtio").unwrap();
    let size = std::fs::metadata(disk).unwrap().len();
    ConversionJob {
        machine_id: "m-direct-dracut".into(),
        inventory: None,
        disks: vec![JobDisk {
            disk_id: "d-0".into(),
            original_name: "sda".into(),
            device: Some(disk.display().to_string()),
            index: 0,
        }],
        vm: profile::resolve(
            "direct-dracut",
            &p,
            None,
            &[("d-0".into(), size)],
            None,
            &Overrides::default(),
        ),
        dry_run: false,
    }
}

fn pretty(r: &ConversionReport) -> String {
    serde_json::to_string_pretty(r).unwrap()
}

/// Partition 1 of `disk` (start and size in sectors, from sfdisk) copied into `to`.
fn extract_p1(disk: &Path, to: &Path) {
    let dump = sh("sfdisk", &["-d", disk.to_str().unwrap()]);
    let name = format!("{}1", disk.file_name().unwrap().to_str().unwrap());
    let line = dump
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("no partition 1 in {dump}"));
    let field = |key: &str| -> u64 {
        line.split(',')
            .find_map(|f| {
                f.trim()
                    .split_once('=')
                    .filter(|(k, _)| k.trim().ends_with(key))
            })
            .map(|(_, v)| v.trim().parse().unwrap())
            .unwrap()
    };
    sh(
        "dd",
        &[
            &format!("if={}", disk.display()),
            &format!("of={}", to.display()),
            "bs=512",
            &format!("skip={}", field("start")),
            &format!("count={}", field("size")),
            "conv=sparse",
            "status=none",
        ],
    );
}

/// Writes `part` back over partition 1 of `disk` (the inverse of [`extract_p1`]).
fn write_back_p1(disk: &Path, part: &Path) {
    let dump = sh("sfdisk", &["-d", disk.to_str().unwrap()]);
    let name = format!("{}1", disk.file_name().unwrap().to_str().unwrap());
    let line = dump.lines().find(|l| l.contains(&name)).unwrap();
    let start: u64 = line
        .split(',')
        .find_map(|f| {
            f.trim()
                .split_once('=')
                .filter(|(k, _)| k.trim().ends_with("start"))
        })
        .map(|(_, v)| v.trim().parse().unwrap())
        .unwrap();
    sh(
        "dd",
        &[
            &format!("if={}", part.display()),
            &format!("of={}", disk.display()),
            "bs=512",
            &format!("seek={start}"),
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
}

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

/// Every path inside an initramfs image, by dracut's `lsinitrd` when the host has it, else by
/// initramfs-tools' `unmkinitramfs` (which also understands dracut's images) and a walk.
fn initrd_paths(image: &Path, scratch: &Path) -> (String, Vec<String>) {
    if on_path("lsinitrd") {
        let out = sh("lsinitrd", &[image.to_str().unwrap()]);
        return ("lsinitrd".into(), out.lines().map(str::to_string).collect());
    }
    let unpacked = scratch.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    sh(
        "unmkinitramfs",
        &[image.to_str().unwrap(), unpacked.to_str().unwrap()],
    );
    let out = sh("find", &[unpacked.to_str().unwrap()]);
    (
        "unmkinitramfs".into(),
        out.lines().map(str::to_string).collect(),
    )
}

fn holds_module(paths: &[String], module: &str) -> bool {
    let file = format!("/{module}.ko");
    paths.iter().any(|p| {
        let p = p.trim_end_matches(".zst").trim_end_matches(".xz");
        p.ends_with(&file)
    })
}

fn fixture() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fixture = root.join("target/guest-fixtures/debian12-dracut.raw");
    if fixture.exists() {
        return Some(fixture);
    }
    if std::env::var_os("P2V_REQUIRE_GUEST_FIXTURE").is_some() {
        panic!(
            "{} is missing and P2V_REQUIRE_GUEST_FIXTURE is set (make it with scripts/make-dracut-guest-fixture.sh)",
            fixture.display()
        );
    }
    eprintln!(
        "SKIPPED direct_converts_debian12_dracut_fixture: {} is absent (scripts/make-dracut-guest-fixture.sh target/guest-fixtures makes it)",
        fixture.display()
    );
    None
}

/// The real dracut guest converted in direct mode: dracut's drop-in written (and recorded as a
/// new file), the image rebuilt by the guest's dracut now holding virtio_blk and virtio_pci
/// next to the physical machine's ahci, the file system clean.
#[test]
fn direct_converts_debian12_dracut_fixture() {
    let Some(fixture) = fixture() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
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

    // The guest before: its initramfs has ahci and no virtio_blk (the fixture's premise).
    let before = dir.path().join("p1-before.img");
    extract_p1(&disk, &before);

    let started = Instant::now();
    let report = p2v_convert::run::run_job(&job(&disk));
    eprintln!(
        "direct_converts_debian12_dracut_fixture: run_job took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(report.ok, "{}", pretty(&report));
    assert_eq!(
        report.inspection.initramfs_tool,
        Some(InitramfsTool::Dracut),
        "{}",
        pretty(&report)
    );

    // The plan: the drop-in naming the missing virtio drivers, and a dracut rebuild per kernel.
    let drop_in = report
        .plan
        .changes
        .iter()
        .enumerate()
        .find_map(|(i, c)| match c {
            Change::WriteFile { path, content, .. } if path == DROP_IN => Some((i, content)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {DROP_IN} in the plan: {}", pretty(&report)));
    let add_drivers = drop_in
        .1
        .lines()
        .find(|l| l.starts_with("add_drivers+="))
        .unwrap_or_else(|| panic!("{DROP_IN} has no add_drivers+=: {:?}", drop_in.1));
    for d in ["virtio_blk", "virtio_pci"] {
        assert!(
            add_drivers.split(['"', ' ']).any(|w| w == d),
            "{add_drivers}"
        );
    }
    let rebuilds: Vec<(&str, &str)> = report
        .plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::RebuildInitramfs {
                tool,
                kernel,
                image,
                ..
            } => {
                assert_eq!(*tool, InitramfsTool::Dracut);
                Some((kernel.as_str(), image.as_str()))
            }
            _ => None,
        })
        .collect();
    assert!(!rebuilds.is_empty(), "{}", pretty(&report));
    for (kernel, image) in &rebuilds {
        assert_eq!(
            *image,
            format!("/boot/initrd.img-{kernel}"),
            "Debian's dracut image name"
        );
    }
    // Every change applied.
    assert_eq!(report.applied.len(), report.plan.changes.len());
    assert!(report.applied.iter().all(|a| a.ok), "{}", pretty(&report));

    // The converted root, read without mounting it.
    let part = dir.path().join("p1.img");
    extract_p1(&disk, &part);
    assert_eq!(debugfs_cat(&part, DROP_IN), *drop_in.1);
    assert_eq!(
        debugfs_cat(&part, "/etc/dracut.conf.d/10-physical.conf"),
        debugfs_cat(&before, "/etc/dracut.conf.d/10-physical.conf"),
        "the guest's own dracut configuration is kept"
    );
    for (_, image) in &rebuilds {
        let old = dir.path().join("initrd-before.img");
        let new = dir.path().join("initrd-after.img");
        for (from, to) in [(&before, &old), (&part, &new)] {
            let _ = std::fs::remove_file(to);
            sh(
                "debugfs",
                &[
                    "-R",
                    &format!("dump {image} {}", to.display()),
                    from.to_str().unwrap(),
                ],
            );
        }
        let (lister, was) = initrd_paths(&old, dir.path());
        assert!(holds_module(&was, "ahci"), "{image} before: no ahci");
        assert!(
            !holds_module(&was, "virtio_blk"),
            "{image} before: virtio_blk already in it"
        );
        let (_, now) = initrd_paths(&new, dir.path());
        for m in ["virtio_blk", "virtio_pci", "ahci", "sd_mod", "ext4"] {
            assert!(
                holds_module(&now, m),
                "{image} after the conversion: {lister} lists no {m}.ko"
            );
        }
        // The project's own lister agrees.
        let listing = p2v_convert::inspect::initrd::parse(&std::fs::read(&new).unwrap()).unwrap();
        assert!(listing.modules.contains("virtio_blk"), "{listing:?}");
        assert!(listing.modules.contains("ahci"), "{listing:?}");
        eprintln!(
            "{image}: {} -> {} entries by {lister}, segments {:?}",
            was.len(),
            now.len(),
            listing.segments
        );
    }

    // The drop-in did not exist before: recorded so in the manifest, with no backup.
    let stamps = debugfs_ls(&part, "/var/lib/p2v/backup");
    assert_eq!(stamps.len(), 1, "{stamps:?}");
    let bdir = format!("/var/lib/p2v/backup/{}", stamps[0]);
    let manifest: Vec<ManifestEntry> =
        serde_json::from_str(&debugfs_cat(&part, &format!("{bdir}/manifest.json"))).unwrap();
    let entry = manifest
        .iter()
        .find(|m| m.path == DROP_IN)
        .unwrap_or_else(|| panic!("{DROP_IN} not in {manifest:?}"));
    assert!(!entry.existed, "{entry:?}");
    assert_eq!(entry.backup, None, "{entry:?}");
    assert_eq!(entry.change, drop_in.0, "{entry:?}");
    let applied = report
        .applied
        .iter()
        .find(|a| a.change == drop_in.0)
        .unwrap();
    assert_eq!(applied.backup, None);
    // fstab now names the root by UUID.
    let fstab = debugfs_cat(&part, "/etc/fstab");
    assert!(!fstab.contains("/dev/sda1"), "{fstab}");

    sh("e2fsck", &["-fn", part.to_str().unwrap()]);
    let left = sh("losetup", &["-j", disk.to_str().unwrap()]);
    assert!(left.trim().is_empty(), "loop devices left: {left}");
}

/// The same guest configured the way dracut is by default on RHEL and Fedora, host-only: dracut
/// then stores the root file system's options in the image (`etc/cmdline.d/95root-dev.conf`).
/// They must be those of the guest's fstab, not those of the converter's own mount of the guest
/// (`nosuid,nodev`), or the converted machine would mount its root nosuid.
#[test]
fn direct_dracut_hostonly_keeps_the_guests_root_options() {
    let Some(fixture) = fixture() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
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
    // hostonly="yes" in the guest's dracut configuration (edited with debugfs, no mount).
    let part = dir.path().join("p1.img");
    extract_p1(&disk, &part);
    let conf = "/etc/dracut.conf.d/10-physical.conf";
    let text = debugfs_cat(&part, conf);
    assert!(text.contains("hostonly=\"no\""), "{text}");
    let edited = dir.path().join("10-physical.conf");
    std::fs::write(&edited, text.replace("hostonly=\"no\"", "hostonly=\"yes\"")).unwrap();
    for cmd in [
        format!("rm {conf}"),
        format!("write {} {conf}", edited.display()),
    ] {
        sh("debugfs", &["-w", "-R", &cmd, part.to_str().unwrap()]);
    }
    write_back_p1(&disk, &part);

    let started = Instant::now();
    let report = p2v_convert::run::run_job(&job(&disk));
    eprintln!(
        "direct_dracut_hostonly_keeps_the_guests_root_options: run_job took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(report.ok, "{}", pretty(&report));
    let image = report
        .plan
        .changes
        .iter()
        .find_map(|c| match c {
            Change::RebuildInitramfs { image, .. } => Some(image.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no rebuild: {}", pretty(&report)));

    extract_p1(&disk, &part);
    assert!(debugfs_cat(&part, conf).contains("hostonly=\"yes\""));
    let new = dir.path().join("initrd-after.img");
    sh(
        "debugfs",
        &[
            "-R",
            &format!("dump {image} {}", new.display()),
            part.to_str().unwrap(),
        ],
    );
    let listing = p2v_convert::inspect::initrd::parse(&std::fs::read(&new).unwrap()).unwrap();
    for m in ["virtio_blk", "virtio_pci"] {
        assert!(
            listing.modules.contains(m),
            "{image} lacks {m}: {listing:?}"
        );
    }
    let unpacked = dir.path().join("unpacked");
    sh(
        "unmkinitramfs",
        &[new.to_str().unwrap(), unpacked.to_str().unwrap()],
    );
    let stored = sh(
        "sh",
        &[
            "-c",
            &format!(
                "cat {0}/etc/cmdline.d/95root-dev.conf {0}/main/etc/cmdline.d/95root-dev.conf 2>/dev/null; true",
                unpacked.display()
            ),
        ],
    );
    // The fixture's fstab mounts / with errors=remount-ro.
    assert!(
        stored.contains("rootflags=errors=remount-ro"),
        "{image}: 95root-dev.conf is {stored:?}"
    );
    assert!(
        !stored.contains("nosuid") && !stored.contains("nodev"),
        "{image}: the converter's mount options leaked into the image: {stored:?}"
    );
    sh("e2fsck", &["-fn", part.to_str().unwrap()]);
}
