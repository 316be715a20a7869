//! Network configuration parsers: which interfaces (by name and/or MAC) each configuration
//! names, on which line, with which static addresses.
//!
//! | system | files | read here |
//! |--------|-------|-----------|
//! | ifupdown | `/etc/network/interfaces` (+ `source`, `source-directory`) | `auto`, `allow-*`, `iface NAME FAMILY METHOD`, `address`, `netmask`, `hwaddress`; continuation lines (`\`) |
//! | netplan | `/etc/netplan/*.yaml` | `network: ethernets: ID:` with `match: macaddress:`, `match: name:`, `set-name:`, `addresses:`, `dhcp4:` |
//! | NetworkManager | `/etc/NetworkManager/system-connections/*` | `[connection] interface-name=`, `[ethernet] mac-address=`, `[ipv4] method=`, `address1=`... |
//! | systemd-networkd | `/etc/systemd/network/*.network` | `[Match] Name=`, `MACAddress=`, `[Network] Address=`, `DHCP=`, `[Address] Address=` |
//! | systemd/udev | `/etc/systemd/network/*.link` | `[Match] MACAddress=`, `OriginalName=`, `[Link] Name=` |
//! | udev | `/etc/udev/rules.d/70-persistent-net.rules` | rules with `ATTR{address}=="MAC"` and `NAME="..."` |
//!
//! netplan is YAML; the subset netplan files use (block mappings by indentation, block and
//! flow sequences, flow mappings on one line, quoted scalars, comments) is read by a small
//! indentation-based reader instead of a YAML crate: nothing else in the project needs YAML,
//! and a reader that only looks for a few keys is easier to keep panic-free on hostile input.
//! Anchors, multi-line scalars and documents are not understood; such a file is reported.
//!
//! The parsers leave [`NetInterface::file`] empty; the caller fills it.

use serde::{Deserialize, Serialize};

use crate::Error;

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
    /// The MAC exactly as written in the line (`00:1A:2b:...`), to replace.
    pub written: String,
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

impl NetInterface {
    fn new(source: NetSource, line: usize) -> Self {
        NetInterface {
            source,
            file: String::new(),
            line,
            name: None,
            mac: None,
            addresses: Vec::new(),
            static_config: false,
        }
    }
}

/// `aa:bb:cc:dd:ee:ff` from `AA:BB:CC:DD:EE:FF` or `aa-bb-...`; `None` when not a MAC.
pub fn normalize_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

fn mac_ref(written: &str, line: usize, text: &str) -> Option<MacRef> {
    normalize_mac(written).map(|mac| MacRef {
        mac,
        written: written.to_string(),
        line,
        text: text.to_string(),
    })
}

/// Prefix length of a dotted netmask (`255.255.255.0` -> 24) or a bare number.
fn prefix_len(mask: &str) -> Option<u32> {
    if let Ok(n) = mask.parse::<u32>() {
        return (n <= 128).then_some(n);
    }
    let ip: std::net::Ipv4Addr = mask.parse().ok()?;
    let v = u32::from(ip);
    (v.leading_ones() + v.trailing_zeros() == 32).then_some(v.leading_ones())
}

// ---------------------------------------------------------------------------------------------
// ifupdown

/// What `/etc/network/interfaces` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ifupdown {
    pub interfaces: Vec<NetInterface>,
    /// `auto` and `allow-*` names.
    pub auto: Vec<String>,
    /// `source PATTERN` (files, a glob) and `source-directory DIR`: `(line, pattern, is_dir)`.
    pub sources: Vec<(usize, String, bool)>,
}

const IFUPDOWN_STANZAS: &[&str] = &["iface", "mapping", "auto", "source", "source-directory"];

/// Parses an ifupdown interfaces(5) file.
pub fn parse_interfaces(text: &str) -> Result<Ifupdown, Error> {
    let mut out = Ifupdown::default();
    // Logical lines: (first physical line, joined text, last physical line text).
    let mut logical: Vec<(usize, String, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(stripped) = line.strip_suffix('\\') {
            acc.push_str(stripped);
            acc.push(' ');
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(line);
        logical.push((start, acc, line.to_string()));
    }
    if let Some((start, acc)) = pending {
        logical.push((start, acc.clone(), acc));
    }
    let mut current: Option<NetInterface> = None;
    let mut netmask: Option<String> = None;
    let finish = |cur: &mut Option<NetInterface>, mask: &mut Option<String>, out: &mut Ifupdown| {
        if let Some(mut i) = cur.take() {
            if let (Some(m), Some(a)) = (mask.take(), i.addresses.first_mut()) {
                if !a.contains('/') {
                    if let Some(p) = prefix_len(&m) {
                        *a = format!("{a}/{p}");
                    }
                }
            }
            out.interfaces.push(i);
        }
        *mask = None;
    };
    for (lineno, line, last_text) in logical {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        let w0 = words[0];
        if IFUPDOWN_STANZAS.contains(&w0) || w0.starts_with("allow-") {
            finish(&mut current, &mut netmask, &mut out);
        }
        match w0 {
            "iface" => {
                if words.len() < 4 {
                    return Err(Error::Syntax {
                        line: lineno,
                        msg: "iface needs NAME FAMILY METHOD".into(),
                    });
                }
                let mut i = NetInterface::new(NetSource::Ifupdown, lineno);
                i.name = Some(words[1].to_string());
                i.static_config = words[3] == "static";
                current = Some(i);
            }
            "auto" => out.auto.extend(words[1..].iter().map(|s| s.to_string())),
            w if w.starts_with("allow-") => {
                out.auto.extend(words[1..].iter().map(|s| s.to_string()))
            }
            "source" | "source-directory" => {
                if words.len() != 2 {
                    return Err(Error::Syntax {
                        line: lineno,
                        msg: format!("{w0} needs one path"),
                    });
                }
                out.sources
                    .push((lineno, words[1].to_string(), w0 == "source-directory"));
            }
            "mapping" => {}
            _ => {
                let Some(cur) = current.as_mut() else {
                    // Options outside a stanza (after `mapping`, `auto`): ifupdown ignores
                    // mapping scripts' options; anything else is an error to it.
                    continue;
                };
                match (w0, words.get(1)) {
                    ("address", Some(a)) => cur.addresses.push(a.to_string()),
                    ("netmask", Some(m)) => netmask = Some(m.to_string()),
                    ("hwaddress", Some(m)) => {
                        let m = if *m == "ether" {
                            words.get(2).copied()
                        } else {
                            Some(*m)
                        };
                        if let Some(r) = m.and_then(|m| mac_ref(m, lineno, &last_text)) {
                            cur.mac = Some(r);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    finish(&mut current, &mut netmask, &mut out);
    Ok(out)
}

/// True when `name` matches a shell glob of `*`, `?` (no classes): for `source` patterns.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[u8], n: &[u8]) -> bool {
        // Iterative with backtracking on the last `*`: linear-ish, no recursion blow-up.
        let (mut pi, mut ni) = (0, 0);
        let (mut star, mut mark) = (None, 0);
        while ni < n.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
                pi += 1;
                ni += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some(pi);
                mark = ni;
                pi += 1;
            } else if let Some(s) = star {
                pi = s + 1;
                mark += 1;
                ni = mark;
            } else {
                return false;
            }
        }
        while pi < p.len() && p[pi] == b'*' {
            pi += 1;
        }
        pi == p.len()
    }
    m(pattern.as_bytes(), name.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// netplan

/// Removes a `#` comment that is not inside quotes.
fn strip_yaml_comment(line: &str, lineno: usize) -> Result<&str, Error> {
    let mut quote: Option<char> = None;
    let mut prev_blank = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_blank => return Ok(&line[..i]),
            None => {}
        }
        prev_blank = c == ' ' || c == '\t';
    }
    if quote.is_some() {
        return Err(Error::Syntax {
            line: lineno,
            msg: "unterminated quote".into(),
        });
    }
    Ok(line)
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// Items of a flow sequence `[a, "b"]`.
fn flow_items(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('[')?.strip_suffix(']')?;
    Some(
        inner
            .split(',')
            .map(unquote)
            .filter(|x| !x.is_empty())
            .collect(),
    )
}

/// Pairs of a flow mapping `{k: v, k2: "v2"}`.
fn flow_map(s: &str) -> Option<Vec<(String, String)>> {
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    Some(
        inner
            .split(',')
            .filter_map(|kv| kv.split_once(':'))
            .map(|(k, v)| (unquote(k), unquote(v)))
            .collect(),
    )
}

/// `key: value` of a YAML line (value may be empty); `None` when there is no `: `.
fn yaml_key(s: &str) -> Option<(String, &str)> {
    let (k, v) = if let Some(k) = s.strip_suffix(':') {
        (k, "")
    } else {
        let p = s.find(": ")?;
        (&s[..p], &s[p + 2..])
    };
    Some((unquote(k), v.trim()))
}

/// Parses a netplan file (see the module docs for the subset).
pub fn parse_netplan(text: &str) -> Result<Vec<NetInterface>, Error> {
    struct Pending {
        iface: NetInterface,
        id: String,
        match_name: Option<String>,
        set_name: Option<String>,
        has_match: bool,
    }
    let mut out: Vec<NetInterface> = Vec::new();
    let mut cur: Option<Pending> = None;
    let flush = |cur: &mut Option<Pending>, out: &mut Vec<NetInterface>| {
        if let Some(mut p) = cur.take() {
            p.iface.name = p
                .set_name
                .or(p.match_name)
                .or((!p.has_match).then_some(p.id));
            out.push(p.iface);
        }
    };
    // (indent, key) of the open mappings.
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let body = strip_yaml_comment(raw, lineno)?.trim_end();
        let content = body.trim_start_matches(' ');
        if content.is_empty() {
            continue;
        }
        if content.starts_with('\t') {
            return Err(Error::Syntax {
                line: lineno,
                msg: "tab in indentation (not allowed in YAML)".into(),
            });
        }
        if content == "---" || content == "..." {
            continue;
        }
        let indent = body.len() - content.len();
        let (is_item, content, indent) =
            match content
                .strip_prefix("- ")
                .or(if content == "-" { Some("") } else { None })
            {
                Some(rest) => (true, rest.trim_start(), indent),
                None => (false, content, indent),
            };
        if is_item {
            while stack.last().is_some_and(|(ind, _)| *ind > indent) {
                stack.pop();
            }
        } else {
            while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
                stack.pop();
            }
        }
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        if is_item {
            // A sequence item: only `addresses` items matter.
            if path.len() == 4 && path[..2] == ["network", "ethernets"] && path[3] == "addresses" {
                if let Some(p) = cur.as_mut() {
                    let v = unquote(content);
                    if !v.is_empty() && !v.ends_with(':') {
                        p.iface.addresses.push(v);
                        p.iface.static_config = true;
                    }
                }
            }
            continue;
        }
        let Some((key, value)) = yaml_key(content) else {
            return Err(Error::Syntax {
                line: lineno,
                msg: format!("expected `key: value`, found {:?}", truncate(content)),
            });
        };
        if value.starts_with('&') || value.starts_with('*') || value == "|" || value == ">" {
            return Err(Error::Syntax {
                line: lineno,
                msg: "YAML anchors, aliases and block scalars are not understood".into(),
            });
        }
        let depth = path.len();
        let in_eth = depth >= 2 && path[..2] == ["network", "ethernets"];
        if in_eth && depth == 2 {
            flush(&mut cur, &mut out);
            cur = Some(Pending {
                iface: NetInterface::new(NetSource::Netplan, lineno),
                id: key.clone(),
                match_name: None,
                set_name: None,
                has_match: false,
            });
        } else if in_eth && depth >= 3 {
            if let Some(p) = cur.as_mut() {
                let sub = &path[3..];
                match (sub, key.as_str()) {
                    ([], "match") => {
                        p.has_match = true;
                        if let Some(pairs) = flow_map(value) {
                            for (k, v) in pairs {
                                match k.as_str() {
                                    "macaddress" => {
                                        p.iface.mac = mac_ref(&v, lineno, raw);
                                    }
                                    "name" => p.match_name = Some(v),
                                    _ => {}
                                }
                            }
                        }
                    }
                    (["match"], "macaddress") => {
                        p.iface.mac = mac_ref(&unquote(value), lineno, raw)
                    }
                    (["match"], "name") => p.match_name = Some(unquote(value)),
                    ([], "set-name") => p.set_name = Some(unquote(value)),
                    ([], "addresses") => {
                        if let Some(items) = flow_items(value) {
                            p.iface.static_config |= !items.is_empty();
                            p.iface.addresses.extend(items);
                        }
                    }
                    _ => {}
                }
            }
        }
        if value.is_empty() {
            stack.push((indent, key));
        }
    }
    flush(&mut cur, &mut out);
    Ok(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

// ---------------------------------------------------------------------------------------------
// INI-style files: NetworkManager keyfiles, systemd .network / .link

/// One `key=value` of an INI-style file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    pub line: usize,
    pub section: String,
    pub key: String,
    pub value: String,
}

/// Parses an INI-style file (`[Section]`, `key=value`, `#`/`;` comments).
pub fn parse_ini(text: &str) -> Result<Vec<IniEntry>, Error> {
    let mut out = Vec::new();
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(Error::Syntax {
                    line: lineno,
                    msg: "unterminated section header".into(),
                });
            };
            section = name.trim().to_string();
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return Err(Error::Syntax {
                line: lineno,
                msg: format!("expected key=value, found {:?}", truncate(t)),
            });
        };
        out.push(IniEntry {
            line: lineno,
            section: section.clone(),
            key: k.trim().to_string(),
            value: v.trim().to_string(),
        });
    }
    Ok(out)
}

fn line_of(text: &str, line: usize) -> String {
    text.lines()
        .nth(line.wrapping_sub(1))
        .unwrap_or("")
        .to_string()
}

/// A NetworkManager keyfile: `None` when it names neither an interface nor a MAC (a VPN, a
/// Wi-Fi profile without binding).
pub fn parse_nm_keyfile(text: &str) -> Result<Option<NetInterface>, Error> {
    let ini = parse_ini(text)?;
    let mut i = NetInterface::new(NetSource::NetworkManager, 1);
    for e in &ini {
        match (e.section.as_str(), e.key.as_str()) {
            ("connection", "interface-name") if !e.value.is_empty() => {
                i.name = Some(e.value.clone());
                i.line = e.line;
            }
            ("ethernet" | "802-3-ethernet", "mac-address") => {
                i.mac = mac_ref(&e.value, e.line, &line_of(text, e.line));
            }
            ("ipv4" | "ipv6", "method") if e.value == "manual" => i.static_config = true,
            ("ipv4" | "ipv6", k) if k.starts_with("address") => {
                let a = e.value.split([',', ';']).next().unwrap_or("").trim();
                if !a.is_empty() {
                    i.addresses.push(a.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((i.name.is_some() || i.mac.is_some()).then_some(i))
}

/// A systemd-networkd `.network` file: `None` when its `[Match]` names no interface or MAC.
pub fn parse_networkd(text: &str) -> Result<Option<NetInterface>, Error> {
    let ini = parse_ini(text)?;
    let mut i = NetInterface::new(NetSource::Networkd, 1);
    for e in &ini {
        match (e.section.as_str(), e.key.as_str()) {
            ("Match", "Name") => {
                if let Some(n) = e.value.split_whitespace().next() {
                    i.name = Some(n.to_string());
                    i.line = e.line;
                }
            }
            ("Match", "MACAddress" | "PermanentMACAddress") => {
                if let Some(m) = e.value.split_whitespace().next() {
                    i.mac = mac_ref(m, e.line, &line_of(text, e.line));
                }
            }
            ("Network" | "Address", "Address") => {
                i.addresses.push(e.value.clone());
                i.static_config = true;
            }
            _ => {}
        }
    }
    Ok((i.name.is_some() || i.mac.is_some()).then_some(i))
}

/// A systemd `.link` file: the name it gives (`[Link] Name=`) and the MAC it matches.
pub fn parse_link(text: &str) -> Result<Option<NetInterface>, Error> {
    let ini = parse_ini(text)?;
    let mut i = NetInterface::new(NetSource::SystemdLink, 1);
    for e in &ini {
        match (e.section.as_str(), e.key.as_str()) {
            ("Match", "MACAddress" | "PermanentMACAddress") => {
                if let Some(m) = e.value.split_whitespace().next() {
                    i.mac = mac_ref(m, e.line, &line_of(text, e.line));
                }
            }
            ("Link", "Name") => {
                i.name = Some(e.value.clone());
                i.line = e.line;
            }
            _ => {}
        }
    }
    Ok((i.name.is_some() || i.mac.is_some()).then_some(i))
}

// ---------------------------------------------------------------------------------------------
// udev rules

/// `(key, operator, value)` of one udev rule line.
fn udev_tokens(line: &str, lineno: usize) -> Result<Vec<(String, String, String)>, Error> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t' || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            return Ok(out);
        }
        let ks = i;
        while i < b.len() && !matches!(b[i], b'=' | b'!' | b'+' | b'-' | b':' | b' ' | b'"') {
            i += 1;
        }
        let key = &line[ks..i];
        let os = i;
        while i < b.len() && matches!(b[i], b'=' | b'!' | b'+' | b'-' | b':') {
            i += 1;
        }
        let op = &line[os..i];
        if key.is_empty() || !matches!(op, "==" | "!=" | "=" | "+=" | "-=" | ":=") {
            return Err(Error::Syntax {
                line: lineno,
                msg: format!("bad rule near {:?}", truncate(&line[ks..])),
            });
        }
        if i >= b.len() || b[i] != b'"' {
            return Err(Error::Syntax {
                line: lineno,
                msg: format!("value of {key} is not quoted"),
            });
        }
        i += 1;
        let vs = i;
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' {
                i += 1;
            }
            i += 1;
        }
        if i >= b.len() {
            return Err(Error::Syntax {
                line: lineno,
                msg: "unterminated quote".into(),
            });
        }
        out.push((key.to_string(), op.to_string(), line[vs..i].to_string()));
        i += 1;
    }
}

/// Rules of a udev rules file that name a network interface (`NAME=`) after a MAC
/// (`ATTR{address}==`).
pub fn parse_udev_rules(text: &str) -> Result<Vec<NetInterface>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let toks = udev_tokens(t, lineno)?;
        let mut iface = NetInterface::new(NetSource::UdevRule, lineno);
        for (k, op, v) in &toks {
            match (k.as_str(), op.as_str()) {
                ("ATTR{address}" | "ATTRS{address}", "==") => {
                    iface.mac = mac_ref(v, lineno, line);
                }
                ("NAME", "=" | ":=") => iface.name = Some(v.clone()),
                _ => {}
            }
        }
        if iface.name.is_some() && iface.mac.is_some() {
            out.push(iface);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Summary<'a> = (usize, Option<&'a str>, Option<&'a str>, Vec<&'a str>, bool);

    fn summary(v: &[NetInterface]) -> Vec<Summary<'_>> {
        v.iter()
            .map(|i| {
                (
                    i.line,
                    i.name.as_deref(),
                    i.mac.as_ref().map(|m| m.mac.as_str()),
                    i.addresses.iter().map(String::as_str).collect(),
                    i.static_config,
                )
            })
            .collect()
    }

    #[test]
    fn ifupdown() {
        let text = "# x\nsource /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n\nallow-hotplug enp1s0\niface enp1s0 inet static\n    address 192.0.2.10\n    netmask 255.255.255.0\n    gateway 192.0.2.1\n    hwaddress ether 52:54:00:AA:bb:01\niface enp1s0 inet6 \\\n  static\n  address 2001:db8::1/64\nsource-directory /etc/net.d\n";
        let r = parse_interfaces(text).unwrap();
        assert_eq!(r.auto, vec!["lo", "enp1s0"]);
        assert_eq!(
            r.sources,
            vec![
                (2, "/etc/network/interfaces.d/*".into(), false),
                (15, "/etc/net.d".into(), true)
            ]
        );
        assert_eq!(
            summary(&r.interfaces),
            vec![
                (4, Some("lo"), None, vec![], false),
                (
                    7,
                    Some("enp1s0"),
                    Some("52:54:00:aa:bb:01"),
                    vec!["192.0.2.10/24"],
                    true
                ),
                (12, Some("enp1s0"), None, vec!["2001:db8::1/64"], true),
            ]
        );
        let m = r.interfaces[1].mac.as_ref().unwrap();
        assert_eq!((m.line, m.written.as_str()), (11, "52:54:00:AA:bb:01"));
        assert!(parse_interfaces("iface eth0 inet\n").is_err());
        assert!(parse_interfaces("source\n").is_err());
    }

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("*", "a", true),
            ("*.cfg", "eth0.cfg", true),
            ("*.cfg", "eth0.cf", false),
            ("e?h*", "eth0", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn netplan() {
        let text = "# netplan\nnetwork:\n  version: 2\n  renderer: networkd\n  ethernets:\n    enp1s0:\n      dhcp4: false\n      addresses:\n        - 192.0.2.10/24\n        - \"2001:db8::5/64\"\n      routes:\n        - to: default\n          via: 192.0.2.1\n    lan:\n      match:\n        macaddress: \"52:54:00:12:34:56\"  # the NIC\n      set-name: lan0\n      addresses: [10.0.0.2/8]\n    byid:\n      match: {macaddress: 52:54:00:00:00:01}\n      dhcp4: true\n  bridges:\n    br0:\n      addresses: [1.2.3.4/5]\n";
        let r = parse_netplan(text).unwrap();
        assert_eq!(
            summary(&r),
            vec![
                (
                    6,
                    Some("enp1s0"),
                    None,
                    vec!["192.0.2.10/24", "2001:db8::5/64"],
                    true
                ),
                (
                    14,
                    Some("lan0"),
                    Some("52:54:00:12:34:56"),
                    vec!["10.0.0.2/8"],
                    true
                ),
                (19, None, Some("52:54:00:00:00:01"), vec![], false),
            ]
        );
        assert_eq!(r[1].mac.as_ref().unwrap().line, 16);
        for bad in [
            "network:\n\tethernets:\n",
            "network:\n  ethernets\n",
            "network:\n  x: \"open\n",
            "network:\n  ethernets: &a\n",
        ] {
            assert!(parse_netplan(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keyfiles_networkd_links() {
        let nm = "[connection]\nid=Wired\ntype=ethernet\ninterface-name=eno1\n\n[ethernet]\nmac-address=00:1B:21:AA:BB:CC\n\n[ipv4]\nmethod=manual\naddress1=192.0.2.7/24,192.0.2.1\n";
        let i = parse_nm_keyfile(nm).unwrap().unwrap();
        assert_eq!(
            summary(std::slice::from_ref(&i)),
            vec![(
                4,
                Some("eno1"),
                Some("00:1b:21:aa:bb:cc"),
                vec!["192.0.2.7/24"],
                true
            )]
        );
        assert_eq!(i.mac.unwrap().line, 7);
        assert_eq!(parse_nm_keyfile("[vpn]\nx=y\n").unwrap(), None);
        let nd = "[Match]\nName=enp3s0\nMACAddress=aa:bb:cc:dd:ee:ff\n\n[Network]\nAddress=192.0.2.3/24\nGateway=192.0.2.1\n";
        let i = parse_networkd(nd).unwrap().unwrap();
        assert_eq!(
            summary(&[i]),
            vec![(
                2,
                Some("enp3s0"),
                Some("aa:bb:cc:dd:ee:ff"),
                vec!["192.0.2.3/24"],
                true
            )]
        );
        let l = parse_link("[Match]\nMACAddress=AA:BB:CC:DD:EE:01\n\n[Link]\nName=wan\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            summary(&[l]),
            vec![(5, Some("wan"), Some("aa:bb:cc:dd:ee:01"), vec![], false)]
        );
        assert!(parse_ini("[Match\n").is_err());
        assert!(parse_ini("[Match]\nName\n").is_err());
    }

    #[test]
    fn udev_rules() {
        let text = "# generated\nSUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:25:90:AB:CD:EF\", ATTR{dev_id}==\"0x0\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\n\nSUBSYSTEM==\"block\", RUN+=\"/bin/true\"\n";
        let r = parse_udev_rules(text).unwrap();
        assert_eq!(
            summary(&r),
            vec![(2, Some("eth0"), Some("00:25:90:ab:cd:ef"), vec![], false)]
        );
        assert_eq!(r[0].mac.as_ref().unwrap().written, "00:25:90:AB:CD:EF");
        assert!(parse_udev_rules("NAME=\"x\n").is_err());
        assert!(parse_udev_rules("NAME=x\n").is_err());
        assert!(parse_udev_rules("=\"x\"\n").is_err());
    }

    #[test]
    fn macs_and_masks() {
        assert_eq!(
            normalize_mac("AA-bb-CC-dd-EE-ff").as_deref(),
            Some("aa:bb:cc:dd:ee:ff")
        );
        assert_eq!(normalize_mac("aa:bb:cc:dd:ee"), None);
        assert_eq!(normalize_mac("?*"), None);
        assert_eq!(prefix_len("255.255.255.0"), Some(24));
        assert_eq!(prefix_len("255.0.255.0"), None);
        assert_eq!(prefix_len("16"), Some(16));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 5u64;
        let bases: [&[u8]; 4] = [
            b"auto e\niface e inet static\n address 1.2.3.4\n netmask 255.0.0.0\n hwaddress ether aa:bb:cc:dd:ee:ff\nsource x\n",
            b"network:\n  ethernets:\n    e:\n      match: {macaddress: aa:bb:cc:dd:ee:ff}\n      addresses:\n        - 1.2.3.4/8\n",
            b"[Match]\nName=e\nMACAddress=aa:bb:cc:dd:ee:ff\n[Network]\nAddress=1/2\n",
            b"ATTR{address}==\"aa:bb:cc:dd:ee:ff\", NAME=\"e\"\n",
        ];
        for _ in 0..2000 {
            for base in bases {
                let s = crate::inspect::testutil::mutate(&mut seed, base, b"\"'\\\n=:#[]{}- \t,");
                let s = String::from_utf8_lossy(&s);
                let _ = parse_interfaces(&s);
                let _ = parse_netplan(&s);
                let _ = parse_nm_keyfile(&s);
                let _ = parse_networkd(&s);
                let _ = parse_link(&s);
                let _ = parse_udev_rules(&s);
                let _ = glob_match(&s, "interfaces.d");
            }
        }
    }
}
