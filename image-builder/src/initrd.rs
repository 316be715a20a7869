//! The initramfs: `/init` (p2v-init), `/bin/p2v-capture`, `/bin/p2v-convert` (conversion
//! appliance), busybox (`sh`, `ip`, `udhcpc`, `mount`, `umount`, `chroot`, `sync` only),
//! the drivers of `drivers.txt` with their dependency closure, `modules.dep`/`modules.alias`
//! filtered to what is included, and the firmware those drivers name where `/lib/firmware` has
//! it. Written as a `newc` cpio ([`crate::cpio`]) compressed with zstd (the Debian kernel has
//! `CONFIG_RD_ZSTD=y`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use p2v_init::modules::{module_name, DepIndex};

use crate::cpio::Writer;
use crate::Error;

/// What goes into the initramfs.
#[derive(Debug, Clone)]
pub struct InitrdInputs {
    /// `uname -r` of the kernel.
    pub release: String,
    /// `/lib/modules`.
    pub modules_root: PathBuf,
    /// `/lib/firmware`.
    pub firmware_root: PathBuf,
    pub init: PathBuf,
    pub agent: PathBuf,
    /// The converter (static musl build of p2v-convert) for the conversion-appliance mode.
    pub converter: PathBuf,
    /// A static busybox (Debian's busybox-static: /bin/busybox).
    pub busybox: PathBuf,
    /// Module names to include (their dependencies are added).
    pub drivers: Vec<String>,
    /// zstd level.
    pub level: i32,
    /// Strip symbols from the binaries (with `strip`, when present).
    pub strip: bool,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct InitrdReport {
    pub image: Vec<u8>,
    pub uncompressed_bytes: u64,
    pub modules: Vec<String>,
    /// Drivers asked for but not in this kernel (as modules; built-in ones are fine).
    pub missing: Vec<String>,
    pub firmware: Vec<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Io(format!("reading {}", path.display()), e))
}

fn stripped(path: &Path, strip: bool) -> Result<Vec<u8>, Error> {
    if strip {
        let tmp = std::env::temp_dir().join(format!(
            "p2v-strip-{}-{}",
            std::process::id(),
            path.file_name().and_then(|f| f.to_str()).unwrap_or("bin")
        ));
        let ok = Command::new("strip")
            .arg("-o")
            .arg(&tmp)
            .arg(path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            let data = read(&tmp);
            let _ = std::fs::remove_file(&tmp);
            return data;
        }
    }
    read(path)
}

/// The firmware files a module names (`modinfo -F firmware`).
fn firmware_of(module: &Path) -> Vec<String> {
    Command::new("modinfo")
        .args(["-F", "firmware"])
        .arg(module)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Keeps the lines of `modules.alias` whose module is included.
pub fn filter_aliases(text: &str, included: &BTreeSet<String>) -> String {
    text.lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            matches!((w.next(), w.next(), w.next()), (Some("alias"), Some(_), Some(m)) if included.contains(&m.replace('-', "_")))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Keeps the lines of `modules.dep` whose module is included.
pub fn filter_deps(text: &str, included: &BTreeSet<String>) -> String {
    text.lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(p, _)| included.contains(&module_name(p.trim())))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn parents(path: &str, dirs: &mut BTreeSet<String>, w: &mut Writer<Vec<u8>>) -> Result<(), Error> {
    let mut acc = String::new();
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(c);
        if dirs.insert(acc.clone()) {
            w.dir(&acc)
                .map_err(|e| Error::Io("writing the cpio".into(), e))?;
        }
    }
    Ok(())
}

/// Builds the compressed initramfs.
pub fn build(inputs: &InitrdInputs) -> Result<InitrdReport, Error> {
    let kdir = inputs.modules_root.join(&inputs.release);
    let dep_text = String::from_utf8_lossy(&read(&kdir.join("modules.dep"))?).into_owned();
    let alias_text = String::from_utf8_lossy(&read(&kdir.join("modules.alias"))?).into_owned();
    let deps = DepIndex::parse(&dep_text);
    let builtin = std::fs::read_to_string(kdir.join("modules.builtin")).unwrap_or_default();
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let missing: Vec<String> = inputs
        .drivers
        .iter()
        .filter(|d| !deps.contains(d) && !builtin.contains(*d))
        .cloned()
        .collect();
    let modules = deps.closure(inputs.drivers.iter().map(String::as_str));
    let included: BTreeSet<String> = modules.iter().cloned().collect();

    let w = &mut Writer::new(Vec::new());
    let io = |e| Error::Io("writing the cpio".into(), e);
    let mut dirs = BTreeSet::new();
    for d in [
        "bin",
        "dev",
        "etc",
        "etc/p2v",
        "proc",
        "sys",
        "run",
        "tmp",
        "lib",
        "lib/modules",
        "lib/firmware",
    ] {
        dirs.insert(d.to_string());
        w.dir(d).map_err(io)?;
    }
    // The kernel opens /dev/console for init before anything is mounted.
    w.char_dev("dev/console", 0o600, 5, 1).map_err(io)?;
    w.char_dev("dev/null", 0o666, 1, 3).map_err(io)?;
    w.file("init", 0o755, &stripped(&inputs.init, inputs.strip)?)
        .map_err(io)?;
    w.file(
        "bin/p2v-capture",
        0o755,
        &stripped(&inputs.agent, inputs.strip)?,
    )
    .map_err(io)?;
    w.file(
        "bin/p2v-convert",
        0o755,
        &stripped(&inputs.converter, inputs.strip)?,
    )
    .map_err(io)?;
    w.file("bin/busybox", 0o755, &read(&inputs.busybox)?)
        .map_err(io)?;
    for applet in ["sh", "ip", "udhcpc", "mount", "umount", "chroot", "sync"] {
        w.symlink(&format!("bin/{applet}"), "busybox").map_err(io)?;
    }
    w.file(
        "etc/p2v/udhcpc.script",
        0o755,
        p2v_init::net::UDHCPC_SCRIPT.as_bytes(),
    )
    .map_err(io)?;
    w.file("etc/resolv.conf", 0o644, b"").map_err(io)?;

    let mut firmware = BTreeSet::new();
    let kprefix = format!("lib/modules/{}", inputs.release);
    for name in &modules {
        let rel = deps.path(name).expect("in the closure");
        let src = kdir.join(rel);
        let data = read(&src)?;
        let dest = format!("{kprefix}/{rel}");
        parents(&dest, &mut dirs, w)?;
        w.file(&dest, 0o644, &data).map_err(io)?;
        for fw in firmware_of(&src) {
            firmware.insert(fw);
        }
    }
    let mut fw_found = Vec::new();
    for fw in &firmware {
        for suffix in ["", ".xz", ".zst"] {
            let src = inputs.firmware_root.join(format!("{fw}{suffix}"));
            if src.is_file() {
                let dest = format!("lib/firmware/{fw}{suffix}");
                parents(&dest, &mut dirs, w)?;
                w.file(&dest, 0o644, &read(&src)?).map_err(io)?;
                fw_found.push(format!("{fw}{suffix}"));
                break;
            }
        }
    }
    w.file(
        &format!("{kprefix}/modules.dep"),
        0o644,
        filter_deps(&dep_text, &included).as_bytes(),
    )
    .map_err(io)?;
    w.file(
        &format!("{kprefix}/modules.alias"),
        0o644,
        filter_aliases(&alias_text, &included).as_bytes(),
    )
    .map_err(io)?;

    let cpio = std::mem::replace(w, Writer::new(Vec::new()))
        .finish()
        .map_err(io)?;
    let uncompressed_bytes = cpio.len() as u64;
    let image = zstd::bulk::compress(&cpio, inputs.level)
        .map_err(|e| Error::Io("compressing the initramfs with zstd".into(), e))?;
    Ok(InitrdReport {
        image,
        uncompressed_bytes,
        modules,
        missing,
        firmware: fw_found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let inc: BTreeSet<String> = ["ahci".to_string(), "usb_storage".to_string()].into();
        assert_eq!(
            filter_aliases(
                "alias pci:v*bc01sc06i01* ahci\nalias pci:x e1000\nalias usb:v* usb-storage\n# c\n",
                &inc
            ),
            "alias pci:v*bc01sc06i01* ahci\nalias usb:v* usb-storage\n"
        );
        assert_eq!(
            filter_deps(
                "kernel/a/ahci.ko: kernel/a/libahci.ko\nkernel/e1000.ko:\n",
                &inc
            ),
            "kernel/a/ahci.ko: kernel/a/libahci.ko\n"
        );
    }
}
