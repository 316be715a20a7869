//! os-release(5) and other shell-style `KEY=value` files (`/etc/default/grub`,
//! `/etc/initramfs-tools/initramfs.conf`, `conf.d/resume`).
//!
//! [`assignments`] reads the subset of POSIX shell syntax such files use: `KEY=value`
//! (optionally after `export`), values in single quotes (literal), double quotes (where `\"`,
//! `\\`, `\$` and `` \` `` are escapes and a backslash-newline continues the line) or bare
//! with backslash escapes, pieces concatenated (`"a"'b'c`), and `#` comments at the start of a
//! word. An unterminated quote is an error naming the line where the value started. In strict
//! mode (os-release) any other line is an error too; otherwise (the shell scripts that
//! /etc/default/grub and initramfs.conf really are) it is ignored.

use serde::{Deserialize, Serialize};

use crate::Error;

/// One `KEY=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// 1-based line where the assignment starts.
    pub line: usize,
    pub key: String,
    /// The value with quoting removed.
    pub value: String,
}

/// The operating system, from os-release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsInfo {
    /// `ID` (`debian`); `linux` when absent, as os-release(5) says.
    pub id: String,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
    /// `ID_LIKE`, split on spaces.
    pub id_like: Vec<String>,
}

fn is_key(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Reads the assignments of a shell-style file (see the module docs).
pub fn assignments(text: &str, strict: bool) -> Result<Vec<Assignment>, Error> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        // Start of a line: skip blanks.
        while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        let start_line = line;
        let line_start = i;
        if i >= chars.len() {
            break;
        }
        if chars[i] == '\n' {
            i += 1;
            line += 1;
            continue;
        }
        if chars[i] == '#' {
            skip_to_eol(&chars, &mut i);
            continue;
        }
        // The key.
        let mut key_end = i;
        while key_end < chars.len()
            && (chars[key_end].is_ascii_alphanumeric() || chars[key_end] == '_')
        {
            key_end += 1;
        }
        let mut key: String = chars[i..key_end].iter().collect();
        let mut j = key_end;
        if key == "export" && j < chars.len() && (chars[j] == ' ' || chars[j] == '\t') {
            while j < chars.len() && (chars[j] == ' ' || chars[j] == '\t') {
                j += 1;
            }
            let k2 = j;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            key = chars[k2..j].iter().collect();
        }
        if !is_key(&key) || j >= chars.len() || chars[j] != '=' {
            if strict {
                let l: String = chars[line_start..]
                    .iter()
                    .take_while(|c| **c != '\n')
                    .take(40)
                    .collect();
                return Err(Error::Syntax {
                    line: start_line,
                    msg: format!("not a KEY=value assignment: {l:?}"),
                });
            }
            skip_to_eol(&chars, &mut i);
            continue;
        }
        i = j + 1;
        let mut value = String::new();
        while let Some(&c) = chars.get(i) {
            match c {
                '\n' | ' ' | '\t' | ';' => break,
                '\'' => {
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err(unterminated(start_line, '\'')),
                            Some('\'') => {
                                i += 1;
                                break;
                            }
                            Some(&c) => {
                                if c == '\n' {
                                    line += 1;
                                }
                                value.push(c);
                                i += 1;
                            }
                        }
                    }
                }
                '"' => {
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err(unterminated(start_line, '"')),
                            Some('"') => {
                                i += 1;
                                break;
                            }
                            Some('\\') => match chars.get(i + 1) {
                                Some(&e @ ('"' | '\\' | '$' | '`')) => {
                                    value.push(e);
                                    i += 2;
                                }
                                Some('\n') => {
                                    line += 1;
                                    i += 2;
                                }
                                _ => {
                                    value.push('\\');
                                    i += 1;
                                }
                            },
                            Some(&c) => {
                                if c == '\n' {
                                    line += 1;
                                }
                                value.push(c);
                                i += 1;
                            }
                        }
                    }
                }
                '\\' => match chars.get(i + 1) {
                    Some('\n') => {
                        line += 1;
                        i += 2;
                    }
                    Some(&e) => {
                        value.push(e);
                        i += 2;
                    }
                    None => {
                        i += 1;
                    }
                },
                c => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        // The rest of the line: a comment, or (in a script) more shell we do not read.
        let mut k = i;
        while k < chars.len() && (chars[k] == ' ' || chars[k] == '\t') {
            k += 1;
        }
        if strict && k < chars.len() && chars[k] != '\n' && chars[k] != '#' {
            return Err(Error::Syntax {
                line,
                msg: format!("unexpected text after the value of {key}"),
            });
        }
        skip_to_eol(&chars, &mut i);
        out.push(Assignment {
            line: start_line,
            key,
            value,
        });
    }
    Ok(out)
}

fn unterminated(line: usize, q: char) -> Error {
    Error::Syntax {
        line,
        msg: format!("unterminated quote ({q})"),
    }
}

/// Moves `i` past the next newline (or to the end).
fn skip_to_eol(chars: &[char], i: &mut usize) {
    while *i < chars.len() && chars[*i] != '\n' {
        *i += 1;
    }
    // The newline itself is consumed by the main loop, which counts lines.
}

/// The last value of `key` (shell semantics: a later assignment wins).
pub fn last<'a>(a: &'a [Assignment], key: &str) -> Option<&'a Assignment> {
    a.iter().rev().find(|x| x.key == key)
}

/// Parses os-release.
pub fn parse(text: &str) -> Result<OsInfo, Error> {
    let a = assignments(text, true)?;
    let get = |k: &str| last(&a, k).map(|x| x.value.clone());
    Ok(OsInfo {
        id: get("ID").unwrap_or_else(|| "linux".into()),
        version_id: get("VERSION_ID"),
        pretty_name: get("PRETTY_NAME"),
        id_like: get("ID_LIKE")
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_table() {
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
                "debian",
                Some("12"),
                Some("Debian GNU/Linux 12 (bookworm)"),
                &[],
            ),
            (
                "# comment\n\nID=ubuntu\nID_LIKE=debian\nVERSION_ID='22.04'\n",
                "ubuntu",
                Some("22.04"),
                None,
                &["debian"],
            ),
            (
                "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nPRETTY_NAME=\"A \\\"quoted\\\" \\$name\"\n",
                "rocky",
                None,
                Some("A \"quoted\" $name"),
                &["rhel", "centos", "fedora"],
            ),
            ("VERSION_ID=1\n", "linux", Some("1"), None, &[]),
            ("ID=a\\ b   # trailing\nID=final\n", "final", None, None, &[]),
            ("export ID=arch\n", "arch", None, None, &[]),
        ];
        for (text, id, ver, pretty, like) in cases {
            let os = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(os.id, *id, "{text:?}");
            assert_eq!(os.version_id.as_deref(), *ver, "{text:?}");
            assert_eq!(os.pretty_name.as_deref(), *pretty, "{text:?}");
            assert_eq!(os.id_like, *like, "{text:?}");
        }
    }

    #[test]
    fn os_release_errors() {
        for (text, want) in [
            (
                "ID=debian\nPRETTY_NAME=\"Debian\n",
                "line 2: unterminated quote",
            ),
            ("ID=debian\nVERSION='1\n", "line 2: unterminated quote"),
            ("ID=debian\nthis is not\n", "line 2: not a KEY=value"),
            ("ID=a b\n", "line 1: unexpected text"),
            ("1D=x\n", "line 1: not a KEY=value"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn shell_scripts_are_read_leniently() {
        let text = "# If you change this file, run 'update-grub'\nGRUB_DEFAULT=0\nif [ -x /x ]; then\n  GRUB_CMDLINE_LINUX=\"root=/dev/sda1 \\\n quiet\"\nfi\nGRUB_CMDLINE_LINUX_DEFAULT='splash'\n";
        let a = assignments(text, false).unwrap();
        let got: Vec<(usize, &str, &str)> = a
            .iter()
            .map(|a| (a.line, a.key.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "GRUB_DEFAULT", "0"),
                (4, "GRUB_CMDLINE_LINUX", "root=/dev/sda1  quiet"),
                (7, "GRUB_CMDLINE_LINUX_DEFAULT", "splash"),
            ]
        );
        assert!(assignments("A=\"open\n", false).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u64;
        let base = "ID=\"debian\"\nVERSION_ID='12'\nexport X=a\\ b\n# c\n";
        for _ in 0..3000 {
            let s = crate::inspect::testutil::mutate(&mut seed, base.as_bytes(), b"\"'\\\n=#$ ");
            let s = String::from_utf8_lossy(&s);
            let _ = parse(&s);
            let _ = assignments(&s, false);
        }
    }
}
