//! The Debian 12 guest fixture before conversion (issue 5): it boots on its "physical" machine
//! (AHCI disk, e1000 NIC) with its static address working, and it does not boot with its disk on
//! virtio-blk, because its initramfs has no virtio driver. Machines: `p2v_tests::guest`.
//!
//! Each test boots a qcow2 overlay, so the fixture itself is never written. QEMU runs under TCG;
//! the boot times are printed.

use std::time::{Duration, Instant};

use p2v_tests::guest::{
    self, boot_to_ready, guest_fixture, overlay, GuestListener, ReadyLine, GUEST_HOSTNAME,
    NET_OK_MARKER, PHYSICAL_IFNAME, READY_MARKER, STATIC_ADDRESS,
};
use p2v_tests::Qemu;

/// Power-on to the ready marker on the physical machine (about 80 s under TCG on 2 cores).
const BOOT_TIMEOUT: Duration = Duration::from_secs(200);
/// Power-on to initramfs-tools giving up (about 20 s of boot plus 2 x rootdelay=20 for the
/// resume and the root device).
const GIVE_UP_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn physical_machine_boots() {
    let fixture = guest_fixture();
    let dir = tempfile::tempdir().unwrap();
    let disk = overlay(&fixture, dir.path(), "physical.qcow2").unwrap();
    let listener = GuestListener::start().unwrap();
    let args = guest::physical_machine(&disk, listener.port).unwrap();

    let booted = boot_to_ready(&args, BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let console = booted.qemu.console();
    eprintln!(
        "physical machine: power-on to {READY_MARKER} in {:.1} s",
        booted.boot_time.as_secs_f64()
    );
    let fail = |what: &str| -> ! { panic!("{what}; console:\n{console}") };

    // The one interface is the e1000 under its physical name, with the static address.
    let expected = ReadyLine {
        host: GUEST_HOSTNAME.into(),
        interface: PHYSICAL_IFNAME.into(),
        address: STATIC_ADDRESS.into(),
        state: "UP".into(),
    };
    if booted.ready != [expected.clone()] {
        fail(&format!(
            "ready lines {:?}, expected [{expected:?}]",
            booted.ready
        ));
    }
    if !console.contains(NET_OK_MARKER) {
        fail("the guest could not reach 10.0.2.100:4444");
    }
    // The guest really used its static address: its line came through QEMU to the listener.
    let received = listener
        .wait_for(READY_MARKER, Duration::from_secs(10))
        .unwrap_or_else(|e| fail(&format!("{e:#}")));
    assert_eq!(
        ReadyLine::parse(&received).as_ref(),
        Some(&expected),
        "listener got {received:?}"
    );
    // What makes it the physical installation: swap through the by-id name of the AHCI disk,
    // and the platform agent that the conversion must disable.
    for wanted in [
        "Activated swap",
        "ata-QEMU_HARDDISK_P2VPHYS0001-part2",
        "ipmievd.service",
    ] {
        if !console.contains(wanted) {
            fail(&format!("the console does not show {wanted:?}"));
        }
    }
}

#[test]
fn unconverted_guest_does_not_boot_on_virtio() {
    let fixture = guest_fixture();
    let dir = tempfile::tempdir().unwrap();
    let disk = overlay(&fixture, dir.path(), "virtio.qcow2").unwrap();
    let listener = GuestListener::start().unwrap();
    let args = guest::virtio_machine(&disk, listener.port).unwrap();

    let mut qemu = Qemu::start(&args).unwrap();
    // initramfs-tools waits rootdelay for /dev/sda1, says "Gave up waiting for root file
    // system device", "ALERT! /dev/sda1 does not exist" and drops to its shell.
    qemu.wait_for(
        "(initramfs)",
        &[READY_MARKER, "Kernel panic"],
        GIVE_UP_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let gave_up = qemu.started.elapsed();
    eprintln!(
        "virtio machine: power-on to the initramfs shell in {:.1} s",
        gave_up.as_secs_f64()
    );
    let console = qemu.console();
    let fail = |what: &str| -> ! { panic!("{what}; console:\n{console}") };
    // It is the guest's own kernel and initramfs that failed, not the firmware or GRUB.
    for wanted in [
        "Loading Linux",
        "Run /init as init process",
        "Gave up waiting for root file system device",
        "ALERT!  /dev/sda1 does not exist",
    ] {
        if !console.contains(wanted) {
            fail(&format!("the console does not show {wanted:?}"));
        }
    }
    // No driver bound the virtio disk: the kernel never saw vda.
    if console.contains("virtio_blk") || console.contains(" vda") {
        fail("the virtio disk was seen by the guest kernel");
    }
    // And the guest stays there: nothing reaches the listener.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(5) {
        if qemu.console().contains(READY_MARKER) || !listener.received().is_empty() {
            panic!("the guest came up after all; console:\n{}", qemu.console());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
