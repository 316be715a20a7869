//! Placeholder: the inspection of a guest (filled in by the inspection work).
use serde::{Deserialize, Serialize};
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inspection {}
