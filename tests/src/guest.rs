//! The Debian 12 guest of the conversion tests (issue 5) and the two machines it meets.
//!
//! The guest disk is built by `scripts/make-guest-fixture.sh` (see its header for what makes it
//! hardware-dependent). Both machines are QEMU q35 under TCG, booting the disk's own GRUB through
//! SeaBIOS (no `-kernel`); [`Qemu::start`] adds `-machine q35,accel=tcg -m 1024 -smp 2`:
//!
//! ```text
//!                  "physical" (before conversion)          virtual (conversion target)
//!  disk            ICH9 AHCI (00:1f.2), ide-hd port 0,     virtio-blk-pci at 00:04.0
//!                  serial P2VPHYS0001 -> /dev/sda,
//!                  /dev/disk/by-id/ata-QEMU_HARDDISK_P2VPHYS0001
//!  NIC             e1000 at 00:05.0 -> enp0s5              virtio-net-pci at 00:06.0 -> enp0s6
//!  MAC             52:54:00:50:56:01                       the same
//!  network         QEMU user networking, restrict=on (no way out), and a guestfwd of
//!                  10.0.2.100:4444 to a [`GuestListener`] of the test on 127.0.0.1
//! ```
//!
//! q35 for both (rather than `pc` for the physical one): its AHCI controller is built in, as on a
//! server board, and both machines then differ only in the devices the conversion is about. On
//! q35 devices on the root bus have no ACPI slot number, so systemd names NICs by path
//! (`enp0s<slot>`): the two NIC slots give two names.
//!
//! The guest's `p2v-guest-ready.service` prints [`READY_MARKER`] lines (parsed by
//! [`ReadyLine::parse`]) once multi-user and network-online are reached, sends them to the
//! listener, and prints [`NET_OK_MARKER`] when that worked.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{workspace, Qemu};

/// File name of the guest disk in the fixture directory.
pub const GUEST_IMAGE: &str = "debian12-physical.raw";
/// The MAC of the physical NIC (kept by the conversion).
pub const PHYSICAL_MAC: &str = "52:54:00:50:56:01";
/// The serial number of the physical disk (in its `/dev/disk/by-id` names).
pub const PHYSICAL_DISK_SERIAL: &str = "P2VPHYS0001";
/// The name the guest gives the physical NIC (e1000 at 00:05.0).
pub const PHYSICAL_IFNAME: &str = "enp0s5";
/// The name the guest gives the virtual NIC (virtio-net at 00:06.0).
pub const VIRTIO_IFNAME: &str = "enp0s6";
/// The static address configured on the NIC.
pub const STATIC_ADDRESS: &str = "10.0.2.15/24";
/// The guest's host name.
pub const GUEST_HOSTNAME: &str = "p2v-guest";
/// Start of the guest's line for each interface, once the system is up.
pub const READY_MARKER: &str = "P2V-GUEST-READY";
/// Printed after the guest sent its lines to 10.0.2.100:4444.
pub const NET_OK_MARKER: &str = "P2V-GUEST-NET-OK";
/// Printed when the guest could not reach 10.0.2.100:4444.
pub const NET_FAILED_MARKER: &str = "P2V-GUEST-NET-FAILED";
/// Console output that means the guest will not come up.
pub const BOOT_FAILURES: &[&str] = &[
    "Kernel panic",
    "Gave up waiting for root",
    "ALERT!",
    "(initramfs)",
    "error: no such device",
    "error: file",
    "not a bootable disk",
    "No bootable device",
];

/// The directory of the guest fixture: `$P2V_GUEST_FIXTURES`, else `target/guest-fixtures` of
/// the workspace (where `make fixtures` builds it), whatever the cargo target directory is, so
/// that test runs with their own `CARGO_TARGET_DIR` share one image.
pub fn guest_fixture_dir() -> PathBuf {
    std::env::var_os("P2V_GUEST_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/guest-fixtures"))
}

/// The guest disk (raw), built by `scripts/make-guest-fixture.sh` on first use; the script is
/// cached by its own hash, so this costs nothing when the image is up to date. Never write to
/// it: boot an [`overlay`] of it.
pub fn guest_fixture() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let dir = guest_fixture_dir();
            let started = Instant::now();
            let status = Command::new("bash")
                .arg(workspace().join("scripts/make-guest-fixture.sh"))
                .arg(&dir)
                .stdin(Stdio::null())
                .status()
                .expect("running scripts/make-guest-fixture.sh");
            assert!(status.success(), "scripts/make-guest-fixture.sh failed");
            eprintln!(
                "guest fixture ready in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            dir.join(GUEST_IMAGE)
        })
        .clone()
}

/// A qcow2 overlay `dir/name` backed by `base` (raw or qcow2): the guest writes there, `base`
/// stays as it is.
pub fn overlay(base: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    crate::run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().context("non-UTF-8 path")?,
            "-F",
            disk_format(base)?,
            path.to_str().context("non-UTF-8 path")?,
        ],
    )?;
    Ok(path)
}

/// `qcow2` when the file starts with the qcow2 magic, else `raw`.
pub fn disk_format(disk: &Path) -> Result<&'static str> {
    let mut magic = [0u8; 4];
    let mut file =
        std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let n = file.read(&mut magic)?;
    Ok(if n == 4 && magic == *b"QFI\xfb" {
        "qcow2"
    } else {
        "raw"
    })
}

fn drive(disk: &Path) -> Result<String> {
    let path = disk.to_str().context("non-UTF-8 disk path")?;
    if path.contains(',') {
        bail!("{path}: QEMU option values cannot hold a comma here");
    }
    Ok(format!(
        "file={path},format={},if=none,id=disk0",
        disk_format(disk)?
    ))
}

fn user_net(listener_port: u16) -> String {
    format!("user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:4444-tcp:127.0.0.1:{listener_port}")
}

/// QEMU arguments (after [`Qemu::start`]'s machine basics) of the "physical" machine: `disk` on
/// the q35's AHCI controller as a hard disk with serial [`PHYSICAL_DISK_SERIAL`], an e1000 with
/// [`PHYSICAL_MAC`] at 00:05.0, user networking with the guestfwd to `listener_port`.
pub fn physical_machine(disk: &Path, listener_port: u16) -> Result<Vec<String>> {
    Ok(vec![
        "-drive".into(),
        drive(disk)?,
        "-device".into(),
        format!("ide-hd,drive=disk0,bus=ide.0,serial={PHYSICAL_DISK_SERIAL}"),
        "-netdev".into(),
        user_net(listener_port),
        "-device".into(),
        format!("e1000,netdev=net0,mac={PHYSICAL_MAC},bus=pcie.0,addr=0x5"),
    ])
}

/// QEMU arguments of the virtual machine the conversion targets: `disk` on virtio-blk-pci at
/// 00:04.0 and virtio-net-pci with the same MAC at 00:06.0, the same networking.
pub fn virtio_machine(disk: &Path, listener_port: u16) -> Result<Vec<String>> {
    Ok(vec![
        "-drive".into(),
        drive(disk)?,
        "-device".into(),
        "virtio-blk-pci,drive=disk0,bus=pcie.0,addr=0x4".into(),
        "-netdev".into(),
        user_net(listener_port),
        "-device".into(),
        format!("virtio-net-pci,netdev=net0,mac={PHYSICAL_MAC},bus=pcie.0,addr=0x6"),
    ])
}

/// A TCP listener on 127.0.0.1 that collects what the guest sends to 10.0.2.100:4444. QEMU's
/// guestfwd connects to it once when it starts (so start the listener first) and forwards the
/// guest's connections over that one stream.
#[derive(Debug)]
pub struct GuestListener {
    pub port: u16,
    received: Arc<Mutex<String>>,
}

/// At most this much of what the guest sends is kept.
const LISTENER_LIMIT: usize = 1 << 20;

impl GuestListener {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the guest listener")?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(Mutex::new(String::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let mut text = sink.lock().expect("listener");
                        if text.len() + n <= LISTENER_LIMIT {
                            text.push_str(&String::from_utf8_lossy(&buf[..n]));
                        }
                    }
                });
            }
        });
        Ok(Self { port, received })
    }

    /// Everything received so far.
    pub fn received(&self) -> String {
        self.received.lock().expect("listener").clone()
    }

    /// Waits until a received line holds `marker`; returns that line.
    pub fn wait_for(&self, marker: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.received().lines().find(|l| l.contains(marker)) {
                return Ok(line.trim().to_string());
            }
            if Instant::now() > deadline {
                bail!(
                    "the listener received no {marker:?} in {} s; it received:\n{}",
                    timeout.as_secs(),
                    self.received()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One `P2V-GUEST-READY host=H if=I addr=A state=S` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyLine {
    pub host: String,
    pub interface: String,
    /// `10.0.2.15/24`, or `none` when the interface has no IPv4 address.
    pub address: String,
    /// The link's operational state (`UP`, `DOWN`, `UNKNOWN`).
    pub state: String,
}

impl ReadyLine {
    /// Parses the line (anything before the marker, like a console prefix, is ignored).
    pub fn parse(line: &str) -> Option<Self> {
        let (_, rest) = line.split_once(READY_MARKER)?;
        let mut fields = std::collections::HashMap::new();
        for word in rest.split_whitespace() {
            let (key, value) = word.split_once('=')?;
            fields.insert(key, value.to_string());
        }
        Some(Self {
            host: fields.remove("host")?,
            interface: fields.remove("if")?,
            address: fields.remove("addr")?,
            state: fields.remove("state")?,
        })
    }

    /// All ready lines in `text`.
    pub fn all(text: &str) -> Vec<Self> {
        text.lines().filter_map(Self::parse).collect()
    }
}

/// What a boot up to the ready marker showed.
#[derive(Debug)]
pub struct Booted {
    pub qemu: Qemu,
    /// The guest's ready lines on the console.
    pub ready: Vec<ReadyLine>,
    /// Power-on to the first ready line.
    pub boot_time: Duration,
}

/// Starts QEMU with `args` and waits (at most `timeout`) for the guest's ready lines and its
/// network verdict on the console. Errors carry the whole console.
pub fn boot_to_ready<S: AsRef<std::ffi::OsStr>>(args: &[S], timeout: Duration) -> Result<Booted> {
    let mut qemu = Qemu::start(args)?;
    qemu.wait_for(READY_MARKER, BOOT_FAILURES, timeout)?;
    let boot_time = qemu.started.elapsed();
    // The network verdict follows the ready lines (the guest tries for about 15 s at most).
    let verdict = Instant::now() + Duration::from_secs(90);
    loop {
        let console = qemu.console();
        if console.contains(NET_OK_MARKER) || console.contains(NET_FAILED_MARKER) {
            break;
        }
        if Instant::now() > verdict {
            bail!("no network verdict from the guest; console:\n{console}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let ready = ReadyLine::all(&qemu.console());
    Ok(Booted {
        qemu,
        ready,
        boot_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines() {
        let text = "noise\n\r[  OK  ] x\nP2V-GUEST-READY host=p2v-guest if=enp0s5 addr=10.0.2.15/24 state=UP\n\
                    P2V-GUEST-READY host=p2v-guest if=enp0s6 addr=none state=DOWN\nP2V-GUEST-READY host=h\n";
        let lines = ReadyLine::all(text);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            ReadyLine {
                host: "p2v-guest".into(),
                interface: "enp0s5".into(),
                address: "10.0.2.15/24".into(),
                state: "UP".into(),
            }
        );
        assert_eq!(lines[1].address, "none");
        assert_eq!(ReadyLine::parse("P2V-GUEST-READY host if=x"), None);
    }

    #[test]
    fn machines_differ_only_in_devices() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.raw");
        std::fs::write(&disk, b"not qcow2").unwrap();
        let physical = physical_machine(&disk, 1234).unwrap().join(" ");
        let virtio = virtio_machine(&disk, 1234).unwrap().join(" ");
        assert!(physical.contains("format=raw"));
        assert!(physical.contains("ide-hd,drive=disk0,bus=ide.0,serial=P2VPHYS0001"));
        assert!(physical.contains("e1000,netdev=net0,mac=52:54:00:50:56:01,bus=pcie.0,addr=0x5"));
        assert!(virtio.contains("virtio-blk-pci"));
        assert!(virtio.contains("virtio-net-pci,netdev=net0,mac=52:54:00:50:56:01"));
        for args in [&physical, &virtio] {
            assert!(args.contains("restrict=on"));
            assert!(args.contains("guestfwd=tcp:10.0.2.100:4444-tcp:127.0.0.1:1234"));
        }
        std::fs::write(&disk, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(disk_format(&disk).unwrap(), "qcow2");
        assert!(physical_machine(&dir.path().join("a,b"), 1).is_err());
    }
}
