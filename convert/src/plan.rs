//! The plan: every change the conversion will make to the guest, each with the reason, computed
//! from the inspection and the target VM by a pure function, so that `--dry-run` shows exactly
//! what a real run does. [`crate::apply`] carries the changes out in order.
//!
//! Paths are absolute paths *inside the guest* (`/etc/fstab`), never host paths.

use serde::{Deserialize, Serialize};

/// The initramfs generator a guest uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitramfsTool {
    InitramfsTools,
    Dracut,
    Mkinitcpio,
}

/// One line replaced in a file: apply checks that line `line` (1-based) still reads `before`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineEdit {
    pub line: usize,
    pub before: String,
    pub after: String,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Replace whole lines of an existing file (device names to `UUID=`, MACs in udev rules).
    EditLines {
        path: String,
        edits: Vec<LineEdit>,
        reason: String,
    },
    /// Append lines to a file, creating it when absent (drivers for initramfs-tools).
    AppendLines {
        path: String,
        lines: Vec<String>,
        reason: String,
    },
    /// Create or replace a whole file (systemd `.link` files, dracut drop-ins).
    WriteFile {
        path: String,
        content: String,
        mode: u32,
        reason: String,
    },
    /// Mask a systemd unit (`/etc/systemd/system/UNIT -> /dev/null`).
    MaskUnit { unit: String, reason: String },
    /// Regenerate one kernel's initramfs with the guest's own tool, in a chroot, and check that
    /// the result holds `drivers`.
    RebuildInitramfs {
        tool: InitramfsTool,
        kernel: String,
        image: String,
        drivers: Vec<String>,
        reason: String,
    },
}

impl Change {
    pub fn reason(&self) -> &str {
        match self {
            Change::EditLines { reason, .. }
            | Change::AppendLines { reason, .. }
            | Change::WriteFile { reason, .. }
            | Change::MaskUnit { reason, .. }
            | Change::RebuildInitramfs { reason, .. } => reason,
        }
    }
}

/// The whole plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Reasons the conversion cannot succeed (no driver for the target bus in a kernel, a
    /// firmware change asked for that is not supported...). A plan with blockers is not applied.
    pub blockers: Vec<String>,
    /// Things the operator should know that need no change.
    pub notes: Vec<String>,
}

/// Computes the plan (pure). Interim: the planning rules are being written; this returns an
/// empty plan so that callers can be built against the signature.
pub fn plan(
    inspection: &crate::inspect::Inspection,
    vm: &crate::profile::VmSpec,
    disks: &[crate::job::JobDisk],
    partitions: &[crate::guest::PartitionInfo],
    inventory: Option<&p2v_protocol::inventory::Inventory>,
) -> Plan {
    let _ = (inspection, vm, disks, partitions, inventory);
    Plan::default()
}
