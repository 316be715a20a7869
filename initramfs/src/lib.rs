//! `p2v-init`: PID 1 of the P2V live image (PXE/iPXE or USB stick).
//!
//! No udev, no shell scripts in the boot path: [`coldplug`] matches devices to drivers from the
//! kernel's own index files ([`modules`], [`uevent`]); [`cmdline`] reads `p2v.*` kernel
//! arguments; [`net`] runs busybox's `udhcpc`; [`hw`] describes the machine; [`medium`]
//! recognizes the USB stick so it is never captured; [`run`] ties them together and runs the
//! agent (`/bin/p2v-capture`); [`appliance`] is the conversion mode (`p2v.mode=convert`) that
//! runs `/bin/p2v-convert` on a guest's disks in a VM. Parsers are pure and unit-tested; [`sys`] holds the unsafe
//! system calls.

pub mod appliance;
pub mod cmdline;
pub mod coldplug;
pub mod console;
pub mod hw;
pub mod medium;
pub mod modules;
pub mod net;
pub mod run;
pub mod sys;
pub mod uevent;
