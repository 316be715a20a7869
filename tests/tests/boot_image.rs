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

/// A server that also serves the boot files of [`boot_image`]; returns the boot address.
fn boot_server(data: &Path) -> (Server, std::net::SocketAddr) {
    let image = boot_image();
    let server = Server::start_with(
        data,
        &[
            "--boot-listen",
            "127.0.0.1:0",
            "--boot-dir",
            image.to_str().unwrap(),
        ],
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if let Some(addr) = log
            .lines()
            .find_map(|l| l.strip_prefix("boot script http://"))
            .and_then(|r| r.split('/').next())
        {
            return (server, addr.parse().unwrap());
        }
        assert!(Instant::now() < deadline, "no boot script line:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pxe_boot_through_ipxe_chains_to_the_server() {
    let work = TempDir::new().unwrap();
    let (server, boot_addr) = boot_server(&work.path().join("data"));
    let proxy = FirstByteProxy::start(boot_addr).unwrap();
    // What a site's DHCP/TFTP server hands out: a two-line iPXE script chaining to p2v-server.
    let tftp = work.path().join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    std::fs::write(
        tftp.join("p2v.ipxe"),
        format!(
            "#!ipxe\ndhcp\nchain http://10.0.2.2:{}/boot.ipxe\n",
            proxy.port
        ),
    )
    .unwrap();
    let disk = fixture_copy("gpt.img", work.path());
    let mut args: Vec<String> = vec![
        "-boot".into(),
        "order=n".into(),
        "-netdev".into(),
        format!("user,id=n0,tftp={},bootfile=p2v.ipxe", tftp.display()),
        "-device".into(),
        "e1000,netdev=n0,bootindex=0".into(),
    ];
    args.extend(sata_disk(&disk));
    let mut qemu = Qemu::start(&args).unwrap();
    let line = qemu
        .wait_for("p2v: capture complete", &[FAILED], BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\nserver log:\n{}", server.log()));
    report_time("pxe-ipxe", qemu.started, proxy.first_byte(), Instant::now());
    qemu.wait_exit(Duration::from_secs(60)).unwrap();
    check_captured(
        &server,
        &machine_of(&line),
        &fixtures().join("gpt.img"),
        work.path(),
    );
}

fn usb_boot(test: &str, firmware: &[String]) {
    let work = TempDir::new().unwrap();
    let server = Server::start(&work.path().join("data")).unwrap();
    let token = server.create_token().unwrap();
    let proxy = FirstByteProxy::start(([127, 0, 0, 1], url_port(&server.url)).into()).unwrap();
    let stick = work.path().join("p2v-usb.img");
    usb_image(
        &format!(
            "p2v.server=https://10.0.2.2:{} p2v.fingerprint={} p2v.token={token} p2v.post=poweroff",
            proxy.port, server.fingerprint
        ),
        &stick,
    )
    .unwrap();
    let disk = fixture_copy("gpt.img", work.path());
    let mut args: Vec<String> = firmware.to_vec();
    args.extend([
        "-drive".into(),
        format!("file={},format=raw,if=none,id=stick", stick.display()),
        "-device".into(),
        "qemu-xhci,id=xhci".into(),
        "-device".into(),
        "usb-storage,bus=xhci.0,drive=stick,bootindex=0".into(),
        "-netdev".into(),
        "user,id=n0".into(),
        "-device".into(),
        "e1000,netdev=n0,romfile=".into(),
    ]);
    args.extend(sata_disk(&disk));
    let mut qemu = Qemu::start(&args).unwrap();
    let line = qemu
        .wait_for("p2v: capture complete", &[FAILED], BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\nserver log:\n{}", server.log()));
    report_time(test, qemu.started, proxy.first_byte(), Instant::now());
    let console = qemu.console();
    assert!(
        console.contains("is the boot medium: not captured"),
        "the stick was not recognized:\n{console}"
    );
    qemu.wait_exit(Duration::from_secs(60)).unwrap();
    // Only the SATA disk: the stick is not on the server.
    check_captured(
        &server,
        &machine_of(&line),
        &fixtures().join("gpt.img"),
        work.path(),
    );
}

#[test]
fn usb_stick_boots_under_seabios() {
    usb_boot("usb-seabios", &[]);
}

#[test]
fn usb_stick_boots_under_ovmf() {
    let vars = TempDir::new().unwrap();
    let vars_copy = vars.path().join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &vars_copy).unwrap();
    usb_boot(
        "usb-ovmf",
        &[
            "-drive".into(),
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd".into(),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", vars_copy.display()),
        ],
    );
}
