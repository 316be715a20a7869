//! Collects the machine inventory sent when a capture starts: DMI identity, firmware, CPUs,
//! memory, NICs and disks. Parsers of `/proc` text are pure functions with table tests; the
//! collectors read from a configurable root so that tests can point them at a fake tree.

use std::collections::BTreeSet;
use std::path::Path;

use p2v_protocol::inventory::{
    CpuInfo, DiskInfo, Firmware, FirmwareKind, Inventory, Nic, SystemInfo,
};

use crate::sysfs::{link_name, list_dir, meaningful, read_attr, read_number};

/// Where the collectors read from; `/sys` and `/proc` on a real machine.
#[derive(Debug, Clone)]
pub struct Roots<'a> {
    pub sys: &'a Path,
    pub proc: &'a Path,
}

impl Default for Roots<'static> {
    fn default() -> Self {
        Self {
            sys: Path::new("/sys"),
            proc: Path::new("/proc"),
        }
    }
}

/// Gathers the inventory; `disks` are the disks that will be captured.
pub fn collect(roots: &Roots<'_>, disks: Vec<DiskInfo>) -> Inventory {
    let cpuinfo = std::fs::read_to_string(roots.proc.join("cpuinfo")).unwrap_or_default();
    let meminfo = std::fs::read_to_string(roots.proc.join("meminfo")).unwrap_or_default();
    Inventory {
        system: system_info(roots),
        firmware: firmware(roots.sys),
        cpu: parse_cpuinfo(&cpuinfo),
        memory_bytes: parse_meminfo_total(&meminfo).unwrap_or(0),
        nics: nics(roots.sys),
        disks,
    }
}

fn system_info(roots: &Roots<'_>) -> SystemInfo {
    let dmi = roots.sys.join("class/dmi/id");
    SystemInfo {
        vendor: meaningful(read_attr(dmi.join("sys_vendor"))),
        product: meaningful(read_attr(dmi.join("product_name"))),
        serial: meaningful(read_attr(dmi.join("product_serial"))),
        uuid: meaningful(read_attr(dmi.join("product_uuid")).map(|u| u.to_ascii_lowercase())),
        hostname: read_attr(roots.proc.join("sys/kernel/hostname")),
    }
}

fn firmware(sys: &Path) -> Firmware {
    let dmi = sys.join("class/dmi/id");
    Firmware {
        kind: if sys.join("firmware/efi").is_dir() {
            FirmwareKind::Uefi
        } else {
            FirmwareKind::Bios
        },
        vendor: meaningful(read_attr(dmi.join("bios_vendor"))),
        version: meaningful(read_attr(dmi.join("bios_version"))),
        date: meaningful(read_attr(dmi.join("bios_date"))),
    }
}

/// Parses `/proc/cpuinfo`: the model name, and sockets/cores/threads from the `physical id`,
/// `core id` and `processor` lines. Without topology lines (some virtual machines), every
/// processor counts as one core of one socket.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut model = None;
    let mut threads = 0u32;
    let mut sockets = BTreeSet::new();
    let mut cores = BTreeSet::new();
    let mut physical_id = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => {
                threads += 1;
                physical_id = None;
            }
            "model name" if model.is_none() => model = Some(value.to_string()),
            "physical id" => {
                physical_id = Some(value.to_string());
                sockets.insert(value.to_string());
            }
            "core id" => {
                cores.insert((physical_id.clone().unwrap_or_default(), value.to_string()));
            }
            _ => {}
        }
    }
    let sockets = (sockets.len() as u32).max(u32::from(threads > 0));
    let cores = if cores.is_empty() {
        threads
    } else {
        cores.len() as u32
    };
    CpuInfo {
        model,
        sockets,
        cores,
        threads,
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// Physical NICs: interfaces under `/sys/class/net` backed by a device (virtual ones such as
/// `lo`, bridges and veths have no `device` link).
fn nics(sys: &Path) -> Vec<Nic> {
    list_dir(sys.join("class/net"))
        .into_iter()
        .filter(|(_, dir)| dir.join("device").exists())
        .filter_map(|(name, dir)| {
            let mac = read_attr(dir.join("address"))?;
            let speed = read_number::<i64>(dir.join("speed")).filter(|s| *s > 0);
            Some(Nic {
                name,
                mac,
                driver: link_name(dir.join("device/driver")),
                speed_mbps: speed.and_then(|s| u32::try_from(s).ok()),
                link: read_number::<u8>(dir.join("carrier")) == Some(1),
            })
        })
        .collect()
}

/// A key that names this machine across runs of the agent: the DMI UUID and serial when the
/// firmware provides them, else the sorted MAC addresses, else the hostname.
pub fn machine_key(inventory: &Inventory) -> String {
    let s = &inventory.system;
    if let Some(uuid) = &s.uuid {
        return format!("dmi:{uuid}:{}", s.serial.as_deref().unwrap_or(""));
    }
    let mut macs: Vec<&str> = inventory.nics.iter().map(|n| n.mac.as_str()).collect();
    macs.sort_unstable();
    if !macs.is_empty() {
        return format!("mac:{}", macs.join(","));
    }
    format!("host:{}", s.hostname.as_deref().unwrap_or("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_two_sockets_hyperthreaded() {
        let mut text = String::new();
        let mut n = 0;
        for socket in 0..2 {
            for core in 0..4 {
                for _thread in 0..2 {
                    text += &format!(
                        "processor\t: {n}\nmodel name\t: Intel(R) Xeon(R) Gold 6130\nphysical id\t: {socket}\ncore id\t\t: {core}\n\n"
                    );
                    n += 1;
                }
            }
        }
        let cpu = parse_cpuinfo(&text);
        assert_eq!(cpu.model.as_deref(), Some("Intel(R) Xeon(R) Gold 6130"));
        assert_eq!((cpu.sockets, cpu.cores, cpu.threads), (2, 8, 16));
    }

    #[test]
    fn cpuinfo_without_topology() {
        let cpu = parse_cpuinfo("processor : 0\nprocessor : 1\n");
        assert_eq!((cpu.sockets, cpu.cores, cpu.threads), (1, 2, 2));
        assert_eq!(parse_cpuinfo(""), CpuInfo::default());
    }

    #[test]
    fn meminfo_table() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       16318440 kB\nMemFree: 1 kB\n"),
            Some(16_318_440 * 1024)
        );
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
        assert_eq!(
            parse_meminfo_total("MemTotal: 18446744073709551615 kB\n"),
            None
        );
    }

    #[test]
    fn this_machine_inventory_is_plausible() {
        let inv = collect(&Roots::default(), vec![]);
        assert!(inv.cpu.threads >= 1);
        assert!(inv.memory_bytes > 64 << 20);
        assert!(!machine_key(&inv).is_empty());
    }
}
