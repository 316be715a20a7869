//! HTTP endpoints and their JSON bodies. See `docs/protocol.md` for the sequence and semantics.
//!
//! Every request body the server accepts is decoded with unknown fields denied, so a client that
//! sends something the server would silently ignore gets a 400 instead.

use serde::{Deserialize, Serialize};

use crate::ids::{DiskId, MachineId, SessionId};
use crate::inventory::{DiskInfo, Inventory};
use crate::layout::{CaptureMap, PartitionTable};

/// Largest JSON request body the server reads; anything larger is a 400 before it is parsed.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// Header carrying `Bearer <token>` (the standard `Authorization` header).
pub const AUTHORIZATION: &str = "authorization";

/// Paths of the endpoints (all under `/v1`).
pub mod paths {
    use super::*;

    pub const HEALTH: &str = "/v1/health";
    pub const SESSIONS: &str = "/v1/sessions";
    pub const MACHINES: &str = "/v1/machines";
    pub const DISKS: &str = "/v1/disks";
    pub const TOKENS: &str = "/v1/tokens";

    pub fn session_disks(session: SessionId) -> String {
        format!("/v1/sessions/{session}/disks")
    }
    pub fn session_finish(session: SessionId) -> String {
        format!("/v1/sessions/{session}/finish")
    }
    pub fn machine(machine: MachineId) -> String {
        format!("/v1/machines/{machine}")
    }
    pub fn disk(disk: DiskId) -> String {
        format!("/v1/disks/{disk}")
    }
    pub fn disk_chunks(disk: DiskId) -> String {
        format!("/v1/disks/{disk}/chunks")
    }
    /// A chunk is addressed by its byte offset on the disk, which must be a multiple of the
    /// disk's chunk size.
    pub fn disk_chunk(disk: DiskId, offset: u64) -> String {
        format!("/v1/disks/{disk}/chunks/{offset}")
    }
    pub fn disk_complete(disk: DiskId) -> String {
        format!("/v1/disks/{disk}/complete")
    }
    pub fn disk_export(disk: DiskId, format: ExportFormat) -> String {
        format!("/v1/disks/{disk}/export?format={}", format.as_str())
    }
    /// The export of the disk as the last successful conversion left it.
    pub fn disk_export_converted(disk: DiskId, format: ExportFormat) -> String {
        format!(
            "/v1/disks/{disk}/export?format={}&variant=converted",
            format.as_str()
        )
    }
    /// `POST` starts a conversion ([`super::ConvertRequest`]), `GET` its
    /// [`super::ConversionStatus`].
    pub fn machine_conversion(machine: MachineId) -> String {
        format!("/v1/machines/{machine}/conversion")
    }
}

/// `POST /v1/sessions`: the agent starts a capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartSession {
    pub protocol_version: u32,
    pub agent_version: String,
    /// Names the machine across runs (normally derived from DMI UUID and serial); a re-run with
    /// the same key resumes the same machine's disks.
    pub machine_key: String,
    pub inventory: Inventory,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionStarted {
    pub session_id: SessionId,
    pub machine_id: MachineId,
    /// True when the machine was already known (a re-run).
    pub known_machine: bool,
}

/// `POST /v1/sessions/{id}/disks`: the agent announces a disk it is about to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceDisk {
    /// Stable key of the disk ([`DiskInfo::stable_key`]); the same key and size on the same
    /// machine resumes the same server-side disk.
    pub disk_key: String,
    pub info: DiskInfo,
    pub chunk_size: u64,
    pub layout: PartitionTable,
    /// What the agent reads of the disk and why (filesystems found, used bytes, fallbacks).
    #[serde(default)]
    pub capture_map: Option<CaptureMap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskAccepted {
    pub disk_id: DiskId,
    pub chunk_count: u64,
    /// Chunks the server already holds durably (the agent still learns which, with their
    /// hashes, from `GET /v1/disks/{id}/chunks`).
    pub durable_chunks: u64,
    pub state: DiskState,
}

/// Life cycle of a disk on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskState {
    /// Chunks are arriving (or the capture was interrupted and waits for a re-run).
    Receiving,
    /// Every chunk is durable and was verified against its hash by re-reading the image.
    Complete,
}

/// `PUT /v1/disks/{id}/chunks/{offset}` answer: sent only once the chunk is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkAck {
    pub offset: u64,
    pub durable: bool,
}

/// `POST /v1/disks/{id}/complete` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskCompleted {
    pub disk_id: DiskId,
    pub state: DiskState,
    pub verified_chunks: u64,
    pub size_bytes: u64,
}

/// `POST /v1/sessions/{id}/finish` body: the agent's own account of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishSession {
    pub disks_completed: Vec<DiskId>,
    /// Set when the agent gives up; the text is shown to the operator.
    pub error: Option<String>,
}

/// `POST /v1/tokens` body (operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A label for the operator (a rack, a migration wave).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreated {
    pub name: String,
    /// The secret, shown once; the server keeps only its SHA-256.
    pub token: String,
}

/// One disk as the operator sees it (`GET /v1/disks`, `GET /v1/disks/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSummary {
    pub disk_id: DiskId,
    pub machine_id: MachineId,
    pub name: String,
    pub size_bytes: u64,
    pub state: DiskState,
    pub chunk_count: u64,
    pub durable_chunks: u64,
    /// Bytes of the disk covered by durable chunks.
    pub durable_bytes: u64,
    /// Compressed bytes received for this disk over all sessions (what crossed the wire).
    pub received_bytes: u64,
    pub layout: PartitionTable,
    /// The agent's capture report from the latest announcement of the disk.
    #[serde(default)]
    pub capture_map: Option<CaptureMap>,
    pub info: DiskInfo,
    /// Seconds since the Unix epoch of the last chunk received.
    pub last_chunk_at: Option<u64>,
}

/// One machine as the operator sees it (`GET /v1/machines`, `GET /v1/machines/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSummary {
    pub machine_id: MachineId,
    pub machine_key: String,
    pub inventory: Inventory,
    pub disks: Vec<DiskSummary>,
    pub sessions: Vec<SessionSummary>,
    pub first_seen: u64,
    pub last_seen: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSummary {
    pub session_id: SessionId,
    pub machine_id: MachineId,
    pub started_at: u64,
    pub last_seen: u64,
    pub finished: bool,
    pub error: Option<String>,
    /// Chunk bodies received in this session, in bytes as they crossed the wire.
    pub received_bytes: u64,
    pub received_chunks: u64,
}

/// Disk image formats the server exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Sparse raw image.
    Raw,
    /// QEMU/KVM, libvirt, OpenStack.
    Qcow2,
    /// streamOptimized VMDK, what vSphere imports.
    Vmdk,
    /// Hyper-V.
    Vhdx,
    /// Fixed VHD, what Azure imports (size rounded up to a whole MiB).
    Vhd,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 5] = [Self::Raw, Self::Qcow2, Self::Vmdk, Self::Vhdx, Self::Vhd];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vmdk => "vmdk",
            Self::Vhdx => "vhdx",
            Self::Vhd => "vhd",
        }
    }

    /// Name of the format for `qemu-img -f/-O`.
    pub fn qemu_format(self) -> &'static str {
        match self {
            Self::Vhd => "vpc",
            other => other.as_str(),
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown export format {:?} (expected raw, qcow2, vmdk, vhdx or vhd)",
                    s.chars().take(32).collect::<String>()
                )
            })
    }
}

/// Every error response has this body, with a status code that says who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// Machine-readable error kinds. The agent decides from these whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: malformed or absurd request (including oversized bodies and unknown fields). Not
    /// retried.
    BadRequest,
    /// 401: missing or unknown token. Not retried.
    Unauthorized,
    /// 404: unknown machine, session or disk.
    NotFound,
    /// 409: the request conflicts with the state (a disk announced with another size, completing
    /// a disk that still misses chunks).
    Conflict,
    /// 422: the chunk's bytes do not match its hash. The agent sends the chunk again.
    HashMismatch,
    /// 507: the server's storage is full. Nothing acknowledged is lost; the capture resumes once
    /// space is freed.
    StorageFull,
    /// 500: anything else on the server. Retried.
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::HashMismatch => 422,
            Self::StorageFull => 507,
            Self::Internal => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<CreateToken>(r#"{"name":"a","admin":true}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn export_format_names() {
        for f in ExportFormat::ALL {
            assert_eq!(f.as_str().parse::<ExportFormat>().unwrap(), f);
        }
        assert_eq!(ExportFormat::Vhd.qemu_format(), "vpc");
        assert!("iso".parse::<ExportFormat>().is_err());
    }
}

/// `POST /v1/machines/{id}/conversion`: convert a captured machine for a target profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvertRequest {
    /// A target profile (`virtio`, `virtio-scsi`, `sata`; `p2v-server profiles` lists them).
    pub profile: String,
    /// Inspect and plan only; nothing is changed.
    #[serde(default)]
    pub dry_run: bool,
    /// Mount the guest on the server itself instead of in the appliance VM (only for sources
    /// the operator trusts: the guest's file systems are then parsed by the server's kernel).
    #[serde(default)]
    pub direct: bool,
    #[serde(default)]
    pub cpus: Option<u32>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
    #[serde(default)]
    pub firmware: Option<crate::inventory::FirmwareKind>,
    /// Keep the physical MACs (the default).
    #[serde(default)]
    pub keep_macs: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversionState {
    Running,
    Succeeded,
    Failed,
}

/// A converted disk as the server keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvertedDisk {
    pub disk_id: DiskId,
    /// Position in the VM (0 boots).
    pub index: usize,
    /// The disk's completion generation the conversion started from: a capture re-run that
    /// changes the disk makes the conversion stale.
    pub generation: u64,
}

/// `GET /v1/machines/{id}/conversion`: the latest conversion of a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionStatus {
    pub machine_id: MachineId,
    pub state: ConversionState,
    pub profile: String,
    pub dry_run: bool,
    pub direct: bool,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub finished_at: Option<u64>,
    /// Why it failed, for the operator (details in `report`).
    pub error: Option<String>,
    /// From starting the appliance VM to its converter running, in milliseconds.
    pub appliance_start_ms: Option<u64>,
    /// The whole conversion, in milliseconds.
    pub wall_ms: Option<u64>,
    pub disks: Vec<ConvertedDisk>,
    /// The resolved virtual machine (`p2v_convert::profile::VmSpec`).
    pub vm: serde_json::Value,
    /// The converter's report (`p2v_convert::job::ConversionReport`), when it wrote one.
    pub report: Option<serde_json::Value>,
    /// The last lines of the appliance's console, when something went wrong.
    #[serde(default)]
    pub console_tail: Vec<String>,
}
