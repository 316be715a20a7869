//! `modules.dep` and `modules.builtin` of `/lib/modules/VER` (written by depmod(8)): which
//! drivers a kernel can load as modules and which are built into its image.
//!
//! `modules.dep`: one line per module, `kernel/drivers/block/virtio_blk.ko.xz: dep.ko ...`
//! (paths relative to the version directory; compressed modules keep their suffix).
//! `modules.builtin`: one path per line, `kernel/drivers/block/loop.ko`. Module names are
//! canonical: `-` becomes `_`, as modprobe treats them the same.

use std::collections::BTreeSet;

use crate::inspect::module_name;
use crate::Error;

/// Suffixes of kernel module files, compressed or not.
const SUFFIXES: &[&str] = &[".ko", ".ko.zst", ".ko.xz", ".ko.gz"];

/// The canonical module name of a module file path (`.../virtio-blk.ko.zst` -> `virtio_blk`).
pub fn module_from_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    SUFFIXES
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .filter(|n| !n.is_empty())
        .map(module_name)
}

/// Module names of a `modules.dep`; a line without `:` is an error.
pub fn parse_modules_dep(text: &str) -> Result<BTreeSet<String>, Error> {
    let mut out = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((path, _deps)) = line.split_once(':') else {
            return Err(Error::Syntax {
                line: i + 1,
                msg: "expected `module.ko: dependencies`".into(),
            });
        };
        match module_from_path(path.trim()) {
            Some(m) => {
                out.insert(m);
            }
            None => {
                return Err(Error::Syntax {
                    line: i + 1,
                    msg: "not a kernel module path".into(),
                })
            }
        }
    }
    Ok(out)
}

/// Module names of a `modules.builtin` (lines that are not module paths are ignored: the file
/// has no other syntax to get wrong).
pub fn parse_modules_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| module_from_path(l.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_dep_builtin() {
        for (p, want) in [
            ("kernel/drivers/block/virtio_blk.ko", Some("virtio_blk")),
            ("kernel/drivers/block/virtio-blk.ko.zst", Some("virtio_blk")),
            (
                "usr/lib/modules/6.1/kernel/fs/ext4/ext4.ko.xz",
                Some("ext4"),
            ),
            ("x.ko.gz", Some("x")),
            ("modules.dep", None),
            (".ko", None),
            ("kernel/drivers/", None),
        ] {
            assert_eq!(module_from_path(p).as_deref(), want, "{p}");
        }
        let dep = "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz\nkernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko\n\nkernel/x/sd-mod.ko:\n";
        let m = parse_modules_dep(dep).unwrap();
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            vec!["ahci", "sd_mod", "virtio_blk"]
        );
        let e = parse_modules_dep("a.ko: b\nrubbish\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(parse_modules_dep("notamodule: x\n").is_err());
        let b = parse_modules_builtin(
            "kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/ext4/ext4.ko\n\njunk\n",
        );
        assert_eq!(
            b.into_iter().collect::<Vec<_>>(),
            vec!["ext4", "virtio_pci"]
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 3u64;
        for _ in 0..3000 {
            let s = crate::inspect::testutil::mutate(
                &mut seed,
                b"kernel/a/b-c.ko.zst: kernel/d.ko\nkernel/e.ko:\n",
                b":/.ko- \n",
            );
            let s = String::from_utf8_lossy(&s);
            let _ = parse_modules_dep(&s);
            let _ = parse_modules_builtin(&s);
        }
    }
}
