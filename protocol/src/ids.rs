//! Server-generated identifiers of machines, sessions and disks.
//!
//! Identifiers arrive from clients inside URL paths and some of them name files in the server's
//! data directory, so they are parsed into these types before anything uses them: a prefix letter,
//! a dash and exactly 16 lowercase hex digits. Nothing else (no `/`, no `..`) can get through.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An identifier string from a client did not have the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {value:?}: expected \"{prefix}-\" followed by 16 lowercase hex digits")]
pub struct IdError {
    kind: &'static str,
    prefix: char,
    value: String,
}

fn parse_id(kind: &'static str, prefix: char, s: &str) -> Result<u64, IdError> {
    let err = || IdError {
        kind,
        prefix,
        // Never echo back an unbounded amount of client input.
        value: s.chars().take(64).collect(),
    };
    let rest = s
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .ok_or_else(err)?;
    if rest.len() != 16 || !rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(err());
    }
    u64::from_str_radix(rest, 16).map_err(|_| err())
}

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw 64-bit value (normally random, chosen by the server).
            pub fn from_raw(raw: u64) -> Self {
                Self(raw)
            }
            /// The raw 64-bit value.
            pub fn raw(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}-{:016x}", $prefix, self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_id($kind, $prefix, s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// A physical machine known to the server (one per inventory identity).
    MachineId, "machine", 'm'
);
define_id!(
    /// One run of the agent against the server.
    SessionId, "session", 's'
);
define_id!(
    /// One disk of one machine; its raw image on the server is named after it.
    DiskId, "disk", 'd'
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = DiskId::from_raw(0x0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "d-0123456789abcdef");
        assert_eq!("d-0123456789abcdef".parse::<DiskId>().unwrap(), id);
    }

    #[test]
    fn rejects_hostile_or_malformed() {
        for bad in [
            "",
            "d-",
            "d-../../etc/passwd",
            "d-0123456789ABCDEF",
            "m-0123456789abcdef",
            "d-0123456789abcdef0",
            "d-0123456789abcde/",
            "d_0123456789abcdef",
            "d-0123456789abcdeg",
        ] {
            assert!(bad.parse::<DiskId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn error_does_not_echo_unbounded_input() {
        let long = "x".repeat(10_000);
        let err = long.parse::<MachineId>().unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }
}
