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
            let pci_address =
                link_name(dir.join("device")).filter(|a| parse_pci_address(a).is_some());
            let predictable_name = pci_address.as_deref().and_then(|addr| {
                let dev = sys.join("bus/pci/devices").join(addr);
                let slots = list_dir(sys.join("bus/pci/slots"))
                    .into_iter()
                    .filter_map(|(slot, d)| Some((slot, read_attr(d.join("address"))?)))
                    .collect::<Vec<_>>();
                // Byte 0x0e of the config space: bit 7 = multi-function device.
                let multifunction = std::fs::read(dev.join("config"))
                    .ok()
                    .and_then(|c| c.get(0x0e).copied())
                    .is_some_and(|b| b & 0x80 != 0);
                predictable_name(&PciNaming {
                    address: addr,
                    acpi_index: read_number(dir.join("device/acpi_index")),
                    smbios_index: read_number(dir.join("device/index")),
                    dev_port: read_number(dir.join("dev_port")),
                    multifunction,
                    slots: &slots,
                })
            });
            Some(Nic {
                name,
                mac,
                driver: link_name(dir.join("device/driver")),
                speed_mbps: speed.and_then(|s| u32::try_from(s).ok()),
                link: read_number::<u8>(dir.join("carrier")) == Some(1),
                pci_address,
                predictable_name,
            })
        })
        .collect()
}

/// `DDDD:BB:SS.F` → (domain, bus, slot, function).
fn parse_pci_address(address: &str) -> Option<(u32, u32, u32, u32)> {
    let (domain, rest) = address.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (slot, function) = rest.split_once('.')?;
    Some((
        u32::from_str_radix(domain, 16).ok()?,
        u32::from_str_radix(bus, 16).ok()?,
        u32::from_str_radix(slot, 16).ok()?,
        u32::from_str_radix(function, 16).ok()?,
    ))
}

/// What systemd-udevd's `net_id` looks at for a PCI NIC.
#[derive(Debug)]
pub struct PciNaming<'a> {
    /// `0000:00:05.0`.
    pub address: &'a str,
    /// `device/acpi_index` (ACPI `_DSM`), the firmware's onboard index.
    pub acpi_index: Option<u32>,
    /// `device/index` (SMBIOS type 41), used when there is no ACPI index.
    pub smbios_index: Option<u32>,
    /// `dev_port` of the interface (ports of one PCI function).
    pub dev_port: Option<u32>,
    pub multifunction: bool,
    /// `/sys/bus/pci/slots/<name>/address` pairs (`("5", "0000:00:05")`).
    pub slots: &'a [(String, String)],
}

/// The name systemd's default policy (`NamePolicy=keep kernel database onboard slot path`)
/// gives a PCI NIC: `eno<index>` from the firmware's onboard index, else `ens<slot>` for a
/// hotplug slot the firmware numbers, else `enp<bus>s<slot>` from the PCI path; function
/// (`f<n>`, when non-zero or the device is multi-function) and port (`d<n>`) suffixes as
/// systemd adds them, `P<domain>` prefix for domains other than 0. Pure: the caller reads sysfs.
pub fn predictable_name(n: &PciNaming) -> Option<String> {
    let (domain, bus, slot, function) = parse_pci_address(n.address)?;
    let suffix = {
        let mut s = String::new();
        if function > 0 || n.multifunction {
            s += &format!("f{function}");
        }
        if let Some(port) = n.dev_port.filter(|p| *p > 0) {
            s += &format!("d{port}");
        }
        s
    };
    // Onboard: an index from the firmware (systemd ignores ones above 16383).
    if let Some(index) = n
        .acpi_index
        .or(n.smbios_index)
        .filter(|i| *i > 0 && *i <= 16383)
    {
        let port = n
            .dev_port
            .filter(|p| *p > 0)
            .map(|p| format!("d{p}"))
            .unwrap_or_default();
        return Some(format!("eno{index}{port}"));
    }
    let prefix = if domain > 0 {
        format!("P{domain}")
    } else {
        String::new()
    };
    let slot_address = format!("{domain:04x}:{bus:02x}:{slot:02x}");
    if let Some((name, _)) = n
        .slots
        .iter()
        .find(|(name, addr)| addr == &slot_address && name.parse::<u32>().is_ok())
    {
        return Some(format!("en{prefix}s{name}{suffix}"));
    }
    Some(format!("en{prefix}p{bus}s{slot}{suffix}"))
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
    fn predictable_names_follow_systemd_policy() {
        let slots = vec![("5".to_string(), "0000:00:05".to_string())];
        let base = PciNaming {
            address: "0000:00:05.0",
            acpi_index: None,
            smbios_index: None,
            dev_port: None,
            multifunction: false,
            slots: &slots,
        };
        let cases: Vec<(PciNaming, &str)> = vec![
            (PciNaming { ..base }, "ens5"),
            (PciNaming { slots: &[], ..base }, "enp0s5"),
            (
                PciNaming {
                    acpi_index: Some(1),
                    ..base
                },
                "eno1",
            ),
            (
                PciNaming {
                    smbios_index: Some(2),
                    ..base
                },
                "eno2",
            ),
            (
                PciNaming {
                    acpi_index: Some(20000),
                    slots: &[],
                    ..base
                },
                "enp0s5",
            ),
            (
                PciNaming {
                    address: "0000:03:00.1",
                    slots: &[],
                    ..base
                },
                "enp3s0f1",
            ),
            (
                PciNaming {
                    address: "0000:03:00.0",
                    multifunction: true,
                    slots: &[],
                    ..base
                },
                "enp3s0f0",
            ),
            (
                PciNaming {
                    address: "0000:03:00.0",
                    dev_port: Some(1),
                    slots: &[],
                    ..base
                },
                "enp3s0d1",
            ),
            (
                PciNaming {
                    address: "0001:00:05.0",
                    slots: &[],
                    ..base
                },
                "enP1p0s5",
            ),
            (
                PciNaming {
                    address: "0000:00:1f.6",
                    slots: &[],
                    ..base
                },
                "enp0s31f6",
            ),
        ];
        for (naming, want) in cases {
            assert_eq!(
                predictable_name(&naming).as_deref(),
                Some(want),
                "{naming:?}"
            );
        }
        assert_eq!(
            predictable_name(&PciNaming {
                address: "usb-1",
                ..base
            }),
            None
        );
    }

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
