//! Small helpers to read attribute files under `/sys` and `/proc`.
//!
//! Every function takes the path it reads, so the callers can be pointed at a copy of a sysfs tree
//! in tests; missing or unreadable attributes are `None` (hardware differs, and a missing model
//! string must never stop a capture).

use std::fs;
use std::path::{Path, PathBuf};

/// The trimmed contents of an attribute file, `None` if absent, unreadable or empty.
pub fn read_attr(path: impl AsRef<Path>) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// An attribute parsed as a number.
pub fn read_number<T: std::str::FromStr>(path: impl AsRef<Path>) -> Option<T> {
    read_attr(path)?.parse().ok()
}

/// The final component of the target of a symbolic link (for `driver` links).
pub fn link_name(path: impl AsRef<Path>) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Sorted entries of a directory (empty if it cannot be read).
pub fn list_dir(path: impl AsRef<Path>) -> Vec<(String, PathBuf)> {
    let mut entries: Vec<_> = fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    entries.sort();
    entries
}

/// DMI strings that vendors leave as placeholders carry no information.
pub fn meaningful(value: Option<String>) -> Option<String> {
    const PLACEHOLDERS: [&str; 8] = [
        "to be filled by o.e.m.",
        "default string",
        "not specified",
        "system serial number",
        "system product name",
        "none",
        "0",
        "03000200-0400-0500-0006-000700080009",
    ];
    value.filter(|v| !PLACEHOLDERS.contains(&v.to_ascii_lowercase().as_str()))
}
