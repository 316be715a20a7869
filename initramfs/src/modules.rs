//! The kernel's module index files, as `depmod` writes them (`man 5 modules.dep`,
//! `modules.alias`): which module handles a device's modalias, and which modules a module
//! needs first. Pure parsers and a glob matcher (the `fnmatch(3)` subset aliases use: `*`, `?`,
//! `[...]`), so udev's coldplug logic can run without udev.

use std::collections::HashMap;

/// A module's canonical name: the file name without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// `modules.dep`: module name to (path, dependencies in load order: the last one first).
#[derive(Debug, Default, Clone)]
pub struct DepIndex {
    entries: HashMap<String, (String, Vec<String>)>,
}

impl DepIndex {
    /// Parses `path: dep1 dep2 ...` lines.
    pub fn parse(text: &str) -> Self {
        let mut entries = HashMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(str::to_string).collect();
            entries.insert(module_name(path), (path.to_string(), deps));
        }
        Self { entries }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn path(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(|(p, _)| p.as_str())
    }

    /// The relative paths to load for `name`, dependencies first (modprobe's order: the
    /// listed dependencies in reverse, then the module).
    pub fn load_order(&self, name: &str) -> Vec<String> {
        let Some((path, deps)) = self.entries.get(name) else {
            return Vec::new();
        };
        let mut order: Vec<String> = deps.iter().rev().cloned().collect();
        order.push(path.clone());
        order
    }

    /// The dependency closure of `names` (names, sorted), ignoring unknown ones.
    pub fn closure<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack: Vec<String> = names.into_iter().map(str::to_string).collect();
        while let Some(n) = stack.pop() {
            let Some((_, deps)) = self.entries.get(&n) else {
                continue;
            };
            if seen.insert(n.clone()) {
                stack.extend(deps.iter().map(|d| module_name(d)));
            }
        }
        seen.into_iter().collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// `modules.alias`: `alias PATTERN MODULE` lines.
#[derive(Debug, Default, Clone)]
pub struct AliasIndex {
    aliases: Vec<(String, String)>,
}

impl AliasIndex {
    pub fn parse(text: &str) -> Self {
        let aliases = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("alias"), Some(p), Some(m)) => Some((p.to_string(), m.replace('-', "_"))),
                    _ => None,
                }
            })
            .collect();
        Self { aliases }
    }

    /// Module names whose patterns match `modalias`, in file order, without repeats.
    pub fn lookup(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (pattern, module) in &self.aliases {
            if glob_match(pattern.as_bytes(), modalias.as_bytes())
                && !out.contains(&module.as_str())
            {
                out.push(module);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.aliases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty()
    }
}

/// `fnmatch(3)` without flags: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the bracket expression at the start of `pattern`; returns whether it
/// matched and the length of the expression, or None if the bracket is not closed.
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let lo = pattern[i];
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str =
        "kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko\n\
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko\n\
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko\n\
kernel/drivers/scsi/scsi_mod.ko:\n\
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:\n\
kernel/fs/nls/nls-cp437.ko.zst:\n";

    #[test]
    fn deps() {
        let d = DepIndex::parse(DEP);
        assert_eq!(
            d.load_order("ahci"),
            [
                "kernel/drivers/ata/libata.ko",
                "kernel/drivers/ata/libahci.ko",
                "kernel/drivers/ata/ahci.ko"
            ]
        );
        assert_eq!(
            d.closure(["ahci"]),
            ["ahci", "libahci", "libata", "scsi_mod"]
        );
        assert!(d.contains("nls_cp437"));
        assert!(d.load_order("nope").is_empty());
    }

    #[test]
    fn aliases() {
        let a = AliasIndex::parse(
            "# Aliases extracted from modules themselves.\n\
alias pci:v*d*sv*sd*bc01sc06i01* ahci\n\
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage\n\
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb-storage\n\
alias symbol:foo bar\n",
        );
        assert_eq!(a.len(), 5);
        assert_eq!(
            a.lookup("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"),
            ["ahci"]
        );
        assert_eq!(
            a.lookup("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"),
            ["e1000"]
        );
        assert_eq!(
            a.lookup("usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"),
            ["usb_storage"]
        );
        assert!(a
            .lookup("pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00")
            .is_empty());
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("a*c", "abbbc", true),
            ("a*c", "abbb", false),
            ("*", "", true),
            ("a?c", "abc", true),
            ("a[0-9]c", "a5c", true),
            ("a[!0-9]c", "a5c", false),
            ("a[xy]*", "ay123", true),
            ("a[", "a[", true),
            ("*b*b", "abab", true),
            ("abc", "abcd", false),
        ] {
            assert_eq!(glob_match(p.as_bytes(), t.as_bytes()), want, "{p} vs {t}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/x/usb-storage.ko.xz"), "usb_storage");
        assert_eq!(module_name("e1000.ko"), "e1000");
    }
}
