//! Conversion of a captured machine so that it boots on virtual hardware.
//!
//! - [`job`]: the job the server hands over and the report it gets back (and the job disk
//!   that carries them in and out of the appliance VM).
//! - [`profile`]: target virtual hardware profiles and the resolved VM.
//! - [`inspect`]: what the guest is (OS, mounts, kernels, initramfs tool, bootloader,
//!   firmware mode, network configuration), from its files, treated as hostile input.
//! - [`plan`]: every change the target needs, with the reason, from inspection + VM.
//! - [`guest`]: the guest's disks, partitions and file systems, mounted for inspection.
//! - [`apply`]: carries out the plan on the mounted guest, backing up every file it touches.
//! - [`run`]: the job runner (partitions, mount, inspect, plan, apply, report), for the
//!   appliance and for direct mode.
//! - [`descriptor`]: libvirt domain XML and OVF descriptors of the VM.

pub mod apply;
pub mod descriptor;
pub mod error;
pub mod guest;
pub mod inspect;
pub mod job;
pub mod plan;
pub mod profile;
pub mod run;

pub use error::Error;
