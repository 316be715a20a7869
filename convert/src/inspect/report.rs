//! Human-readable rendering of an [`Inspection`].

use super::Inspection;

/// A human-readable report of the inspection.
pub fn render(ins: &Inspection) -> String {
    format!("{ins:#?}")
}
