//! `/etc/fstab` (fstab(5)) and `/etc/crypttab` (crypttab(5)) parsers.
//!
//! Both are whitespace-separated fields, one entry per line; `#` starts a comment line; blank
//! lines are ignored. Spaces inside a field are written as octal escapes (`\040`; also `\011`
//! tab, `\012` newline, `\134` backslash), which are decoded here. Each entry keeps its 1-based
//! line number and the raw line, so that the plan can replace exactly that line and keep the
//! rest of it byte-identical.
//!
//! fstab fields: `spec file vfstype mntops freq passno`; the last three may be absent (defaults
//! `defaults`, 0, 0, as in util-linux), the first three are required. crypttab fields:
//! `name device [keyfile [options]]`.

use serde::{Deserialize, Serialize};

use crate::Error;

/// One fstab entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FstabEntry {
    /// 1-based line number.
    pub line: usize,
    /// The line as written (without the newline).
    pub raw: String,
    /// What is mounted: `UUID=...`, `LABEL=...`, `/dev/sda1`, `server:/export`, `tmpfs`...
    pub spec: String,
    pub mount_point: String,
    pub fs_type: String,
    pub options: String,
    pub freq: u32,
    pub passno: u32,
}

/// One crypttab entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrypttabEntry {
    pub line: usize,
    pub raw: String,
    /// The mapped name (`/dev/mapper/NAME`).
    pub name: String,
    /// The encrypted device: `UUID=...`, `/dev/sda2`, ...
    pub device: String,
    pub keyfile: Option<String>,
    pub options: Option<String>,
}

/// What a device specification names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec<'a> {
    Uuid(&'a str),
    Label(&'a str),
    PartUuid(&'a str),
    PartLabel(&'a str),
    /// A path under `/dev` (the caller decides whether it is hardware-specific).
    Device(&'a str),
    /// Anything else (`tmpfs`, `proc`, `server:/export`, `none`).
    Other(&'a str),
}

/// Classifies a device specification as written in fstab, crypttab or `root=`.
pub fn classify(spec: &str) -> Spec<'_> {
    let value = |prefix: &str| spec.strip_prefix(prefix).map(|v| v.trim_matches('"'));
    if let Some(v) = value("UUID=") {
        return Spec::Uuid(v);
    }
    if let Some(v) = value("LABEL=") {
        return Spec::Label(v);
    }
    if let Some(v) = value("PARTUUID=") {
        return Spec::PartUuid(v);
    }
    if let Some(v) = value("PARTLABEL=") {
        return Spec::PartLabel(v);
    }
    if spec.starts_with("/dev/") {
        Spec::Device(spec)
    } else {
        Spec::Other(spec)
    }
}

/// Decodes the octal escapes of one field (`\040` -> space); a backslash not followed by three
/// octal digits is kept as it is.
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let d = &b[i + 1..i + 4];
            if d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (d[0] - b'0') as u32 * 64 + (d[1] - b'0') as u32 * 8 + (d[2] - b'0') as u32;
                if v <= 255 {
                    out.push(v as u8);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fields of a line that is not blank or a comment.
fn fields(line: &str) -> Option<Vec<&str>> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    Some(t.split_ascii_whitespace().collect())
}

fn number(lineno: usize, what: &str, v: Option<&&str>) -> Result<u32, Error> {
    match v {
        None => Ok(0),
        Some(s) => s.parse().map_err(|_| Error::Syntax {
            line: lineno,
            msg: format!("{what} {s:?} is not a number"),
        }),
    }
}

/// Parses an fstab; the first malformed line is an error.
pub fn parse_fstab(text: &str) -> Result<Vec<FstabEntry>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let Some(f) = fields(line) else { continue };
        if f.len() < 3 {
            return Err(Error::Syntax {
                line: lineno,
                msg: format!("{} field(s), fstab entries need at least 3", f.len()),
            });
        }
        if f.len() > 6 {
            return Err(Error::Syntax {
                line: lineno,
                msg: format!("{} fields, fstab entries have at most 6", f.len()),
            });
        }
        out.push(FstabEntry {
            line: lineno,
            raw: line.to_string(),
            spec: unescape(f[0]),
            mount_point: unescape(f[1]),
            fs_type: unescape(f[2]),
            options: f
                .get(3)
                .map_or_else(|| "defaults".to_string(), |s| unescape(s)),
            freq: number(lineno, "dump frequency", f.get(4))?,
            passno: number(lineno, "pass number", f.get(5))?,
        });
    }
    Ok(out)
}

/// Parses a crypttab; the first malformed line is an error.
pub fn parse_crypttab(text: &str) -> Result<Vec<CrypttabEntry>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let Some(f) = fields(line) else { continue };
        if !(2..=4).contains(&f.len()) {
            return Err(Error::Syntax {
                line: lineno,
                msg: format!("{} field(s), crypttab entries have 2 to 4", f.len()),
            });
        }
        out.push(CrypttabEntry {
            line: lineno,
            raw: line.to_string(),
            name: unescape(f[0]),
            device: unescape(f[1]),
            keyfile: f.get(2).map(|s| unescape(s)),
            options: f.get(3).map(|s| unescape(s)),
        });
    }
    Ok(out)
}

/// Replaces field `index` (0-based) of a whitespace-separated line with `new`, keeping every
/// other byte of the line (indentation, separators, comments) as it was. `None` when the line
/// has fewer fields.
pub fn replace_field(line: &str, index: usize, new: &str) -> Option<String> {
    let mut pos = 0;
    let bytes = line.as_bytes();
    let mut n = 0;
    loop {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos >= bytes.len() {
            return None;
        }
        let start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if n == index {
            return Some(format!("{}{}{}", &line[..start], new, &line[pos..]));
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_table() {
        let text = "# /etc/fstab\n\
                    UUID=1234-abcd / ext4 errors=remount-ro 0 1\n\
                    \n\
                    /dev/sda2\tnone swap sw 0 0\n\
                    LABEL=my\\040data /srv/my\\040data xfs defaults\n\
                    \x20 PARTUUID=0a-02 /boot ext2\n\
                    tmpfs /tmp tmpfs\n";
        let e = parse_fstab(text).unwrap();
        let got: Vec<(usize, &str, &str, &str, &str, u32, u32)> = e
            .iter()
            .map(|e| {
                (
                    e.line,
                    e.spec.as_str(),
                    e.mount_point.as_str(),
                    e.fs_type.as_str(),
                    e.options.as_str(),
                    e.freq,
                    e.passno,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "UUID=1234-abcd", "/", "ext4", "errors=remount-ro", 0, 1),
                (4, "/dev/sda2", "none", "swap", "sw", 0, 0),
                (5, "LABEL=my data", "/srv/my data", "xfs", "defaults", 0, 0),
                (6, "PARTUUID=0a-02", "/boot", "ext2", "defaults", 0, 0),
                (7, "tmpfs", "/tmp", "tmpfs", "defaults", 0, 0),
            ]
        );
        assert_eq!(e[1].raw, "/dev/sda2\tnone swap sw 0 0");
    }

    #[test]
    fn fstab_errors() {
        for (text, want) in [
            ("/dev/sda1 /\n", "line 1: 2 field(s)"),
            (
                "# c\n/dev/sda1 / ext4 defaults x 1\n",
                "line 2: dump frequency \"x\"",
            ),
            ("a b c d 0 0 extra\n", "line 1: 7 fields"),
            ("a b c d 0 -1\n", "line 1: pass number"),
        ] {
            let e = parse_fstab(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn crypttab_table() {
        let e = parse_crypttab("# x\ncr_root UUID=aa none luks,discard\nswap /dev/sda3 /dev/urandom swap\nhome /dev/disk/by-id/ata-X-part4\n").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].line, e[0].name.as_str(), e[0].device.as_str()),
            (2, "cr_root", "UUID=aa")
        );
        assert_eq!(e[0].options.as_deref(), Some("luks,discard"));
        assert_eq!(e[1].keyfile.as_deref(), Some("/dev/urandom"));
        assert_eq!((e[2].keyfile.clone(), e[2].line), (None, 4));
        assert!(parse_crypttab("lonely\n").is_err());
        assert!(parse_crypttab("a b c d e\n").is_err());
    }

    #[test]
    fn escapes_and_classes() {
        assert_eq!(unescape(r"a\040b\011c\134d"), "a b\tc\\d");
        assert_eq!(unescape(r"a\09b\"), r"a\09b\");
        assert_eq!(unescape(r"\777"), r"\777");
        assert_eq!(unescape(r"x\04"), r"x\04");
        assert_eq!(classify("UUID=\"ab\""), Spec::Uuid("ab"));
        assert_eq!(classify("LABEL=root"), Spec::Label("root"));
        assert_eq!(classify("PARTUUID=x"), Spec::PartUuid("x"));
        assert_eq!(classify("PARTLABEL=x"), Spec::PartLabel("x"));
        assert_eq!(classify("/dev/sda1"), Spec::Device("/dev/sda1"));
        assert_eq!(classify("tmpfs"), Spec::Other("tmpfs"));
    }

    #[test]
    fn field_replacement_keeps_the_rest() {
        assert_eq!(
            replace_field("  /dev/sda1\t/  ext4 defaults 0 1 # root", 0, "UUID=x").unwrap(),
            "  UUID=x\t/  ext4 defaults 0 1 # root"
        );
        assert_eq!(
            replace_field("root /dev/sda2 none luks", 1, "UUID=y").unwrap(),
            "root UUID=y none luks"
        );
        assert_eq!(replace_field("a b", 2, "c"), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let len = (crate::inspect::testutil::next(&mut seed) % 300) as usize;
            let bytes = crate::inspect::testutil::garbage(&mut seed, len, b"\\0 1 7\t\n#=UUID/dev");
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse_fstab(&s);
            let _ = parse_crypttab(&s);
            let _ = unescape(&s);
            let _ = replace_field(&s, 1, "x");
        }
    }
}
