//! The wire protocol between the P2V capture agent (`p2v-capture`) and the server (`p2v-server`).
//!
//! Both sides depend on this crate, so the types here *are* the contract. The prose description of
//! the protocol (endpoints, chunk encoding, resume semantics, errors) lives in `docs/protocol.md` at
//! the root of the repository; every constant and type below is referenced from there.
//!
//! The crate is pure: no I/O, no async, only data types, constants and validation.

pub mod api;
pub mod chunk;
pub mod ids;
pub mod inventory;
pub mod layout;

pub use chunk::{ChunkEncoding, ChunkGeometry, ChunkHash, GeometryError, CHUNK_SIZE};
pub use ids::{DiskId, IdError, MachineId, SessionId};

/// Version of the protocol described by this crate. The agent sends it when it starts a session and
/// the server refuses versions it does not speak.
pub const PROTOCOL_VERSION: u32 = 1;
