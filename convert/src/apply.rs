//! Placeholder: applying a plan (filled in by the substitution work).
use serde::{Deserialize, Serialize};

/// What happened to one planned change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedChange {
    /// Index into `Plan::changes`.
    pub change: usize,
    pub ok: bool,
    /// What was done, or the error.
    pub detail: String,
    /// Where the original was saved inside the guest (`/var/lib/p2v/backup/...`), if a file
    /// existed before.
    pub backup: Option<String>,
}
