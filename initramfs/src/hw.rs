//! What the operator sees first: the machine's identity and hardware, from sysfs and procfs,
//! and which block devices are disks worth capturing.

use std::fs;
use std::path::Path;

fn read(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A block device that is a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    pub model: String,
    pub removable: bool,
}

/// Block devices that are not disks: loop, RAM, compressed swap, optical, floppy, device mapper,
/// software RAID, network block devices.
pub fn is_disk_name(name: &str) -> bool {
    const SKIP: &[&str] = &["loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd"];
    !SKIP.iter().any(|p| name.starts_with(p))
}

/// The disks in `/sys/block`, sorted by name.
pub fn disks() -> Vec<Disk> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_disk_name(&name) {
            continue;
        }
        let dir = e.path();
        let sectors: u64 = read(dir.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        let model = [
            read(dir.join("device/vendor")),
            read(dir.join("device/model")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        out.push(Disk {
            name,
            size_bytes: sectors * 512,
            model,
            removable: read(dir.join("removable")).as_deref() == Some("1"),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Network interfaces other than loopback, sorted.
pub fn nics() -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lo" && !n.starts_with("sit") && !n.starts_with("tunl"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Whether the interface reports carrier.
pub fn carrier(nic: &str) -> bool {
    read(format!("/sys/class/net/{nic}/carrier")).as_deref() == Some("1")
}

pub fn human(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Memory from `/proc/meminfo` text, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// The CPU model and count from `/proc/cpuinfo` text.
pub fn cpus(cpuinfo: &str) -> (String, usize) {
    let count = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|v| v.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    (model, count)
}

/// The machine summary, as console lines.
pub fn summary() -> Vec<String> {
    let dmi = |f: &str| read(format!("/sys/class/dmi/id/{f}")).unwrap_or_else(|| "?".into());
    let (cpu, n) = cpus(&fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    let mem = mem_total(&fs::read_to_string("/proc/meminfo").unwrap_or_default()).unwrap_or(0);
    let firmware = if Path::new("/sys/firmware/efi").exists() {
        "UEFI"
    } else {
        "BIOS"
    };
    let mut lines = vec![
        format!(
            "machine: {} {} (serial {}, uuid {}), {firmware}",
            dmi("sys_vendor"),
            dmi("product_name"),
            dmi("product_serial"),
            dmi("product_uuid")
        ),
        format!("cpus: {n} x {cpu}; memory: {}", human(mem)),
    ];
    for d in disks() {
        lines.push(format!(
            "disk: /dev/{} {} {}{}",
            d.name,
            human(d.size_bytes),
            d.model,
            if d.removable { " (removable)" } else { "" }
        ));
    }
    for nic in nics() {
        let mac = read(format!("/sys/class/net/{nic}/address")).unwrap_or_default();
        let driver = fs::read_link(format!("/sys/class/net/{nic}/device/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default();
        lines.push(format!(
            "nic: {nic} {mac} {driver} carrier={}",
            if carrier(&nic) { "yes" } else { "no" }
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsers() {
        assert_eq!(
            mem_total("MemTotal:       2030000 kB\nMemFree: 1 kB\n"),
            Some(2030000 * 1024)
        );
        let (m, n) =
            cpus("processor\t: 0\nmodel name\t: QEMU Virtual CPU version 2.5+\nprocessor\t: 1\n");
        assert_eq!((m.as_str(), n), ("QEMU Virtual CPU version 2.5+", 2));
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    #[test]
    fn disk_names() {
        for (n, want) in [
            ("sda", true),
            ("nvme0n1", true),
            ("vda", true),
            ("loop0", false),
            ("sr0", false),
            ("dm-1", false),
            ("zram0", false),
        ] {
            assert_eq!(is_disk_name(n), want, "{n}");
        }
    }
}
