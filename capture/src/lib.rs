//! The P2V capture agent, `p2v-capture`.
//!
//! It runs on the physical machine (from the live image, or any Linux), and:
//! 1. finds the disks ([`disks`]) and inventories the machine ([`inventory`]);
//! 2. reads each disk's partition table ([`layout`]) and maps what its filesystems use
//!    ([`usedmap`], over the parsers of `p2v-fsmap`);
//! 3. streams each disk to the server in 4 MiB chunks through a read → hash → compress pipeline
//!    ([`pipeline`]) and parallel HTTPS uploads ([`api`]), resuming from what the server holds
//!    and letting the server verify every chunk ([`capture`]).
//!
//! The binary is a thin wrapper over [`cli::run`]. The agent builds as a static musl binary: its
//! only native code is zstd and ring, both plain C compiled by `cc`.

pub mod api;
pub mod capture;
pub mod cli;
pub mod disks;
pub mod inventory;
pub mod layout;
pub mod pipeline;
pub mod progress;
mod sysfs;
pub mod usedmap;
