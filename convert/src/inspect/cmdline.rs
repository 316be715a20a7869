//! Device arguments (`root=`, `resume=`) of the kernel command lines a guest's bootloaders pass,
//! and initramfs-tools' `RESUME=`, with the line they are on so that the plan can edit it.
//!
//! | file | where the command line is |
//! |------|---------------------------|
//! | `/boot/grub/grub.cfg` | `linux`, `linuxefi`, `linux16` lines (after the kernel path) |
//! | `/etc/default/grub` | `GRUB_CMDLINE_LINUX`, `GRUB_CMDLINE_LINUX_DEFAULT` (shell quoting) |
//! | `extlinux.conf` | `APPEND` lines (keyword case-insensitive) |
//! | systemd-boot `loader/entries/*.conf` | `options` lines |
//! | `/etc/initramfs-tools/conf.d/resume` | `RESUME=` (shell assignment) |
//!
//! Kernel command line words are split on blanks; double quotes group words
//! (`root="LABEL=my root"`), as the kernel's own parser does.

use serde::{Deserialize, Serialize};

use crate::inspect::osrelease;
use crate::Error;

/// Keys the conversion cares about.
pub const KEYS: &[&str] = &["root", "resume"];

/// One device named on a command line or in a resume configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceArg {
    /// Guest path of the file (set by the caller of the parsers).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The whole line as written.
    pub text: String,
    /// `root`, `resume` or `RESUME`.
    pub key: String,
    /// The device as written, quotes removed (`/dev/sda1`, `UUID=...`).
    pub value: String,
}

/// `KEY=VALUE` words of a kernel command line.
pub fn kernel_args(line: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quote = !in_quote;
                any = true;
            }
            c if c.is_whitespace() && !in_quote => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
        .into_iter()
        .filter_map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn hits(lineno: usize, text: &str, args: &str) -> Vec<DeviceArg> {
    kernel_args(args)
        .into_iter()
        .filter(|(k, _)| KEYS.contains(&k.as_str()))
        .map(|(key, value)| DeviceArg {
            file: String::new(),
            line: lineno,
            text: text.to_string(),
            key,
            value,
        })
        .collect()
}

/// `(first word, rest)` of a line, blanks trimmed.
fn first_word(line: &str) -> Option<(&str, &str)> {
    let t = line.trim_start();
    let end = t.find(|c: char| c.is_whitespace()).unwrap_or(t.len());
    if end == 0 {
        return None;
    }
    Some((&t[..end], &t[end..]))
}

/// grub.cfg: `linux`/`linuxefi`/`linux16 /vmlinuz-... ARGS`.
pub fn parse_grub_cfg(text: &str) -> Result<Vec<DeviceArg>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some((w, rest)) = first_word(line) else {
            continue;
        };
        if matches!(w, "linux" | "linuxefi" | "linux16") {
            // Skip the kernel path itself.
            let rest = rest.trim_start();
            let args = rest.find(char::is_whitespace).map_or("", |p| &rest[p..]);
            out.extend(hits(i + 1, line, args));
        }
    }
    Ok(out)
}

/// extlinux.conf / syslinux.cfg: `APPEND ARGS`.
pub fn parse_extlinux(text: &str) -> Result<Vec<DeviceArg>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some((w, rest)) = first_word(line) {
            if w.eq_ignore_ascii_case("append") {
                out.extend(hits(i + 1, line, rest));
            }
        }
    }
    Ok(out)
}

/// systemd-boot (Boot Loader Specification) entry: `options ARGS`.
pub fn parse_loader_entry(text: &str) -> Result<Vec<DeviceArg>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(("options", rest)) = first_word(line) {
            out.extend(hits(i + 1, line, rest));
        }
    }
    Ok(out)
}

/// The first line at or after `from` (1-based) that holds `needle`, with its number.
fn line_with<'a>(text: &'a str, from: usize, needle: &str) -> Option<(usize, &'a str)> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| l.contains(needle))
        .map(|(i, l)| (i + 1, l))
}

/// /etc/default/grub: `GRUB_CMDLINE_LINUX` and `GRUB_CMDLINE_LINUX_DEFAULT`.
pub fn parse_default_grub(text: &str) -> Result<Vec<DeviceArg>, Error> {
    let mut out = Vec::new();
    for a in osrelease::assignments(text, false)? {
        if a.key != "GRUB_CMDLINE_LINUX" && a.key != "GRUB_CMDLINE_LINUX_DEFAULT" {
            continue;
        }
        for (key, value) in kernel_args(&a.value) {
            if !KEYS.contains(&key.as_str()) {
                continue;
            }
            // A value continued over lines: the line that holds this very word.
            let (line, t) = line_with(text, a.line, &format!("{key}={value}"))
                .unwrap_or((a.line, text.lines().nth(a.line - 1).unwrap_or("")));
            out.push(DeviceArg {
                file: String::new(),
                line,
                text: t.to_string(),
                key,
                value,
            });
        }
    }
    Ok(out)
}

/// initramfs-tools' `RESUME=` (conf.d/resume, initramfs.conf).
pub fn parse_resume_conf(text: &str) -> Result<Vec<DeviceArg>, Error> {
    let lines: Vec<&str> = text.lines().collect();
    Ok(osrelease::assignments(text, false)?
        .into_iter()
        .filter(|a| a.key == "RESUME" && !a.value.is_empty())
        .map(|a| DeviceArg {
            file: String::new(),
            line: a.line,
            text: lines.get(a.line - 1).copied().unwrap_or("").to_string(),
            key: a.key,
            value: a.value,
        })
        .collect())
}

/// Replaces the value `old` of `key` in a line (`root=/dev/sda1` -> `root=UUID=...`,
/// `RESUME="/dev/sda2"` -> `RESUME="UUID=..."`), keeping every other byte. The key must start
/// a word (`noresume=` is not `resume=`). `None` when the line has no such word.
pub fn replace_arg(line: &str, key: &str, old: &str, new: &str) -> Option<String> {
    let pat = format!("{key}=");
    let mut from = 0;
    while let Some(p) = line[from..].find(&pat) {
        let at = from + p;
        let boundary = at == 0
            || line[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_whitespace() || c == '"' || c == '\'');
        let vstart = at + pat.len();
        let rest = &line[vstart..];
        let (q, body) = match rest.chars().next() {
            Some(c @ ('"' | '\'')) => (c.len_utf8(), &rest[1..]),
            _ => (0, rest),
        };
        if boundary && body.starts_with(old) {
            let after = &body[old.len()..];
            let ends = after.is_empty()
                || after
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_whitespace() || c == '"' || c == '\'');
            if ends {
                return Some(format!("{}{}{}", &line[..vstart + q], new, after));
            }
        }
        from = vstart;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(v: &[DeviceArg]) -> Vec<(usize, &str, &str)> {
        v.iter()
            .map(|a| (a.line, a.key.as_str(), a.value.as_str()))
            .collect()
    }

    #[test]
    fn grub_cfg() {
        let text = "set root='hd0,msdos1'\nmenuentry 'Debian' {\n\tlinux\t/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro quiet resume=/dev/disk/by-id/ata-X-part2 noresume=1\n\tinitrd /boot/initrd.img\n}\n  linuxefi /vmlinuz root=\"UUID=ab cd\"\nlinux16 /root=/dev/sdz\n";
        let got = parse_grub_cfg(text).unwrap();
        assert_eq!(
            kv(&got),
            vec![
                (3, "root", "/dev/sda1"),
                (3, "resume", "/dev/disk/by-id/ata-X-part2"),
                (6, "root", "UUID=ab cd"),
            ]
        );
        assert!(got[0].text.starts_with("\tlinux\t/boot"));
    }

    #[test]
    fn default_grub() {
        let text = "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet resume=/dev/sda2\"\nGRUB_CMDLINE_LINUX=\"console=ttyS0 \\\nroot=/dev/nvme0n1p2\"\n";
        let got = parse_default_grub(text).unwrap();
        assert_eq!(
            kv(&got),
            vec![(2, "resume", "/dev/sda2"), (4, "root", "/dev/nvme0n1p2")]
        );
        assert_eq!(got[1].text, "root=/dev/nvme0n1p2\"");
        assert!(parse_default_grub("GRUB_CMDLINE_LINUX=\"x\n").is_err());
    }

    #[test]
    fn extlinux_entries_resume() {
        let e = parse_extlinux(
            "LABEL l\n  KERNEL /vmlinuz\n  APPEND root=/dev/sda3 ro\n  append resume=/dev/sda4\n",
        )
        .unwrap();
        assert_eq!(
            kv(&e),
            vec![(3, "root", "/dev/sda3"), (4, "resume", "/dev/sda4")]
        );
        let e = parse_loader_entry("title Debian\nlinux /vmlinuz\noptions root=PARTUUID=x rw\n")
            .unwrap();
        assert_eq!(kv(&e), vec![(3, "root", "PARTUUID=x")]);
        let e = parse_resume_conf("# x\nRESUME=/dev/sda2\nRESUME=\n").unwrap();
        assert_eq!(kv(&e), vec![(2, "RESUME", "/dev/sda2")]);
        assert_eq!(e[0].text, "RESUME=/dev/sda2");
    }

    #[test]
    fn replacing_args() {
        let cases = [
            (
                "linux /v root=/dev/sda1 ro",
                "root",
                "/dev/sda1",
                Some("linux /v root=UUID=u ro"),
            ),
            (
                "a noroot=/dev/sda1 root=/dev/sda1",
                "root",
                "/dev/sda1",
                Some("a noroot=/dev/sda1 root=UUID=u"),
            ),
            (
                "GRUB_CMDLINE_LINUX=\"root=/dev/sda1\"",
                "root",
                "/dev/sda1",
                Some("GRUB_CMDLINE_LINUX=\"root=UUID=u\""),
            ),
            (
                "RESUME=\"/dev/sda1\"",
                "RESUME",
                "/dev/sda1",
                Some("RESUME=\"UUID=u\""),
            ),
            ("root=/dev/sda10", "root", "/dev/sda1", None),
            ("x", "root", "/dev/sda1", None),
        ];
        for (line, key, old, want) in cases {
            assert_eq!(
                replace_arg(line, key, old, "UUID=u").as_deref(),
                want,
                "{line}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 11u64;
        let base = "\tlinux /v root=\"/dev/sda1\" resume=x\nAPPEND root=y\noptions root=z\nGRUB_CMDLINE_LINUX=\"root=/dev/x\"\nRESUME=a\n";
        for _ in 0..3000 {
            let s = crate::inspect::testutil::mutate(&mut seed, base.as_bytes(), b"\"'\\\n= root");
            let s = String::from_utf8_lossy(&s);
            let _ = parse_grub_cfg(&s);
            let _ = parse_extlinux(&s);
            let _ = parse_loader_entry(&s);
            let _ = parse_default_grub(&s);
            let _ = parse_resume_conf(&s);
            let _ = replace_arg(&s, "root", "/dev/x", "UUID=1");
        }
    }
}
