//! The P2V server: receives the disks of physical machines from capture agents (`p2v-capture`)
//! over HTTPS, keeps them durably as sparse raw images, and exports them as VM images.
//!
//! The wire contract is `p2v-protocol` (see `docs/protocol.md`); TLS comes from
//! `p2v-transport`. In outline:
//!
//! - [`server`]: [`start`] a server in-process (tests do this) or [`serve`] until a signal (the
//!   `p2v-server serve` command), with the [`Limits`] that keep slow agents from stalling others.
//! - `api`: routing, authentication and the endpoint handlers.
//! - `store`: metadata in redb; `commit`: the group commit of chunk records; `image`: the raw
//!   images; `export`: qemu-img conversions.
//! - [`conversion`]: conversions of captured machines in the appliance VM (or `--direct`).
//! - [`operator`]: the operator commands' client and tables.
//! - [`datadir`]: the layout of the data directory.
//!
//! Durability rule: a chunk is acknowledged only after its bytes are written and synced
//! (`fdatasync`) and its hash is committed to the metadata database. A `SIGKILL` or power loss
//! therefore loses nothing that was acknowledged; anything not acknowledged the agent re-sends.

mod api;
mod auth;
pub mod boot;
mod cert;
mod commit;
pub mod conversion;
pub mod datadir;
mod error;
mod export;
mod http;
mod image;
pub mod operator;
pub mod server;
mod store;
mod sys;
mod util;

pub use boot::BootConfig;
pub use conversion::ConversionConfig;
pub use datadir::{DataDir, ServerInfo};
pub use error::Error;
pub use server::{serve, start, Limits, RunningServer, ServeConfig};
