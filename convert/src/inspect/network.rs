//! Network configuration parsers (filled in below).

use serde::{Deserialize, Serialize};

/// Which configuration system names an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetSource {
    Ifupdown,
    Netplan,
    NetworkManager,
    Networkd,
    SystemdLink,
    UdevRule,
}

/// A MAC address in a configuration, with the line that holds it (for an edit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacRef {
    /// Lower case, colon-separated.
    pub mac: String,
    /// 1-based line.
    pub line: usize,
    /// The line as written.
    pub text: String,
}

/// One interface named by one configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetInterface {
    pub source: NetSource,
    /// Guest path of the file.
    pub file: String,
    /// 1-based line where the interface's configuration starts.
    pub line: usize,
    /// The interface name it configures or gives (`eth0`, `enp3s0`); `None` when it matches by
    /// MAC only.
    pub name: Option<String>,
    /// The MAC it matches on or sets.
    pub mac: Option<MacRef>,
    /// Static addresses (`192.0.2.10/24`).
    pub addresses: Vec<String>,
    /// Configured statically (not DHCP).
    pub static_config: bool,
}
