//! The plan: every change the conversion will make to the guest, each with the reason, computed
//! from the inspection and the target VM by a pure function, so that `--dry-run` shows exactly
//! what a real run does. [`crate::apply`] carries the changes out in order.
//!
//! Paths are absolute paths *inside the guest* (`/etc/fstab`), never host paths.
//!
//! # Rules of [`plan`]
//!
//! - **Initramfs.** For every kernel whose initramfs lacks a driver of the first disk's bus
//!   ([`crate::profile::DiskBus::guest_drivers`]; built-in drivers need nothing): for
//!   initramfs-tools, the missing drivers are appended once to `/etc/initramfs-tools/modules`;
//!   for dracut, a drop-in `/etc/dracut.conf.d/50-p2v.conf` adds them (`add_drivers+=`); then
//!   the image of each such kernel (only those) is rebuilt. A kernel that has the driver
//!   neither as a module nor built in is a blocker. mkinitcpio guests are a blocker (their
//!   rebuild is not implemented).
//! - **Device names.** `/dev/sdX`, `/dev/hdX`, `/dev/vdX`, `/dev/xvdX`, `/dev/nvmeXnY`,
//!   `/dev/mmcblkX`, `/dev/cciss/cXdY` (with partition numbers), `/dev/disk/by-id/*` and
//!   `/dev/disk/by-path/*` in fstab, crypttab, the bootloader command lines (`root=`, `resume=`),
//!   `/etc/default/grub` and initramfs-tools' `RESUME=` are rewritten to `UUID=` of the
//!   partition they named on the physical machine (found through the disk's original kernel
//!   name; by-id names through the inventory's serial, WWN or model, else by `-partN` when the
//!   machine has a single disk; by-path names by `-partN` with a single disk). The rest of each
//!   line stays byte-identical. A reference that cannot be resolved is kept with a note, or is
//!   a blocker when it is the root file system.
//! - **Network.** The VM's NICs carry the physical MACs by default, but the guest's kernel
//!   names them after the new hardware (`enp1s0` on virtio where the server had `eno1`).
//!   Rather than rewriting every configuration for a name predicted from the VM's PCI layout
//!   (ifupdown, netplan, NetworkManager, networkd, firewall rules, monitoring agents, scripts...,
//!   and the prediction depends on the systemd version and the slot), the plan pins the old
//!   name to the NIC's MAC with a systemd `.link` file (`10-p2v-NAME.link`, read by udev before
//!   any naming policy), so every configuration that names the interface stays valid. Where a
//!   configuration matches by a MAC that the VM's NIC does not have (new MACs asked for), that
//!   MAC is rewritten to the VM's. A guest without systemd gets a note instead.
//! - **Platform agents** ([`crate::inspect::AGENTS`]) enabled in the guest are masked.
//! - **Firmware.** A VM firmware different from the guest's mode is a blocker (no BIOS↔UEFI
//!   conversion).

use serde::{Deserialize, Serialize};

/// The initramfs generator a guest uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitramfsTool {
    InitramfsTools,
    Dracut,
    Mkinitcpio,
}

/// One line replaced in a file: apply checks that line `line` (1-based) still reads `before`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineEdit {
    pub line: usize,
    pub before: String,
    pub after: String,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Replace whole lines of an existing file (device names to `UUID=`, MACs in udev rules).
    EditLines {
        path: String,
        edits: Vec<LineEdit>,
        reason: String,
    },
    /// Append lines to a file, creating it when absent (drivers for initramfs-tools).
    AppendLines {
        path: String,
        lines: Vec<String>,
        reason: String,
    },
    /// Create or replace a whole file (systemd `.link` files, dracut drop-ins).
    WriteFile {
        path: String,
        content: String,
        mode: u32,
        reason: String,
    },
    /// Mask a systemd unit (`/etc/systemd/system/UNIT -> /dev/null`).
    MaskUnit { unit: String, reason: String },
    /// Regenerate one kernel's initramfs with the guest's own tool, in a chroot, and check that
    /// the result holds `drivers`.
    RebuildInitramfs {
        tool: InitramfsTool,
        kernel: String,
        image: String,
        drivers: Vec<String>,
        reason: String,
    },
}

impl Change {
    pub fn reason(&self) -> &str {
        match self {
            Change::EditLines { reason, .. }
            | Change::AppendLines { reason, .. }
            | Change::WriteFile { reason, .. }
            | Change::MaskUnit { reason, .. }
            | Change::RebuildInitramfs { reason, .. } => reason,
        }
    }
}

/// The whole plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Reasons the conversion cannot succeed (no driver for the target bus in a kernel, a
    /// firmware change asked for that is not supported...). A plan with blockers is not applied.
    pub blockers: Vec<String>,
    /// Things the operator should know that need no change.
    pub notes: Vec<String>,
}

use std::collections::BTreeMap;

use p2v_protocol::inventory::{FirmwareKind, Inventory};

use crate::guest::PartitionInfo;
use crate::inspect::fstab::{classify, replace_field, Spec};
use crate::inspect::{cmdline, Availability, Inspection};
use crate::job::JobDisk;
use crate::profile::VmSpec;

/// Computes the plan from the inspection and the target VM (pure; see the module docs).
pub fn plan(
    inspection: &Inspection,
    vm: &VmSpec,
    disks: &[JobDisk],
    partitions: &[PartitionInfo],
    inventory: Option<&Inventory>,
) -> Plan {
    let mut p = Plan::default();
    plan_firmware(&mut p, inspection, vm);
    plan_initramfs(&mut p, inspection, vm);
    let cx = Devices {
        disks,
        partitions,
        inventory,
    };
    plan_device_names(&mut p, inspection, &cx);
    plan_network(&mut p, inspection, vm, inventory);
    for a in &inspection.agents {
        p.changes.push(Change::MaskUnit {
            unit: a.unit.clone(),
            reason: format!("{} is tied to the physical platform: {}", a.unit, a.reason),
        });
    }
    if inspection.os.is_none() {
        p.notes.push(format!(
            "the guest's OS is not known ({})",
            inspection.os_error.as_deref().unwrap_or("no os-release")
        ));
    }
    if !inspection.problems.is_empty() {
        p.notes.push(format!(
            "the inspection reported {} problem(s); see the inspection report",
            inspection.problems.len()
        ));
    }
    p
}

fn firmware_name(f: FirmwareKind) -> &'static str {
    match f {
        FirmwareKind::Bios => "BIOS",
        FirmwareKind::Uefi => "UEFI",
    }
}

fn plan_firmware(p: &mut Plan, ins: &Inspection, vm: &VmSpec) {
    match ins.firmware {
        Some(g) if g != vm.firmware => p.blockers.push(format!(
            "the guest boots with {} but the VM is set to {}: {}→{} conversion is not supported; choose --firmware {}",
            firmware_name(g),
            firmware_name(vm.firmware),
            firmware_name(g),
            firmware_name(vm.firmware),
            firmware_name(g).to_ascii_lowercase()
        )),
        Some(_) => {}
        None => p.notes.push(format!(
            "the guest's firmware mode could not be told from its partitions; the VM uses {}",
            firmware_name(vm.firmware)
        )),
    }
}

fn plan_initramfs(p: &mut Plan, ins: &Inspection, vm: &VmSpec) {
    let Some(disk) = vm.disks.first() else {
        p.notes
            .push("the VM has no disk: no initramfs change".into());
        return;
    };
    let bus = disk.bus;
    let bus_name = serde_json::to_value(bus)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let wanted = bus.guest_drivers();
    // (kernel, image, drivers to check in the rebuilt image, missing ones)
    let mut rebuild: Vec<(&crate::inspect::Kernel, Vec<String>, Vec<String>)> = Vec::new();
    for k in &ins.kernels {
        let mut check = Vec::new();
        let mut missing = Vec::new();
        for d in wanted {
            let st = k.driver(d);
            let available = st.map_or(Availability::Unknown, |s| s.available);
            if available == Availability::Builtin {
                continue;
            }
            if available == Availability::Missing {
                p.blockers.push(format!(
                    "kernel {} has no {d} driver (neither a module nor built in): it cannot find its disk on {bus_name}; install a kernel that has it or choose another profile",
                    k.version
                ));
                continue;
            }
            if available == Availability::Unknown {
                p.notes.push(format!(
                    "kernel {}: whether it has the {d} driver is unknown (modules.dep unreadable); the rebuild will tell",
                    k.version
                ));
            }
            check.push(d.to_string());
            if st.and_then(|s| s.in_initrd) != Some(true) {
                missing.push(d.to_string());
            }
        }
        if !missing.is_empty() {
            rebuild.push((k, check, missing));
        }
    }
    if rebuild.is_empty() {
        return;
    }
    let all_missing: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for (_, _, m) in &rebuild {
            for d in m {
                if !v.contains(d) {
                    v.push(d.clone());
                }
            }
        }
        v
    };
    let tool = match ins.initramfs_tool {
        Some(InitramfsTool::InitramfsTools) => {
            let lines: Vec<String> = all_missing
                .iter()
                .filter(|d| !ins.initramfs_listed_modules.contains(d))
                .cloned()
                .collect();
            if !lines.is_empty() {
                p.changes.push(Change::AppendLines {
                    path: "/etc/initramfs-tools/modules".into(),
                    lines: lines.clone(),
                    reason: format!(
                        "initramfs-tools includes the modules listed here in every image it builds, so the kernel finds its disk on {bus_name} ({})",
                        lines.join(", ")
                    ),
                });
            }
            InitramfsTool::InitramfsTools
        }
        Some(InitramfsTool::Dracut) => {
            p.changes.push(Change::WriteFile {
                path: "/etc/dracut.conf.d/50-p2v.conf".into(),
                content: format!(
                    "# Written by p2v: drivers of the virtual disk bus ({bus_name}).\nadd_drivers+=\" {} \"\n",
                    all_missing.join(" ")
                ),
                mode: 0o644,
                reason: format!(
                    "dracut adds the drivers named in this drop-in to every image it builds, so the kernel finds its disk on {bus_name}"
                ),
            });
            InitramfsTool::Dracut
        }
        Some(InitramfsTool::Mkinitcpio) => {
            p.blockers.push(format!(
                "the guest uses mkinitcpio, whose rebuild is not supported: add {} to MODULES in /etc/mkinitcpio.conf and run `mkinitcpio -P` on the source, then capture again",
                all_missing.join(" ")
            ));
            return;
        }
        None => {
            p.blockers.push(format!(
                "no initramfs tool found in the guest (initramfs-tools, dracut), and its initramfs lacks {} for {bus_name}",
                all_missing.join(", ")
            ));
            return;
        }
    };
    for (k, check, missing) in rebuild {
        let image = k.initrd.clone().unwrap_or_else(|| match tool {
            InitramfsTool::Dracut => format!("/boot/initramfs-{}.img", k.version),
            _ => format!("/boot/initrd.img-{}", k.version),
        });
        p.changes.push(Change::RebuildInitramfs {
            tool,
            kernel: k.version.clone(),
            image,
            drivers: check,
            reason: format!(
                "the initramfs of kernel {} lacks {}, without which it cannot find its root disk on {bus_name}",
                k.version,
                missing.join(", ")
            ),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Device names

/// A hardware-specific device reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HwRef {
    /// A kernel name: the disk's kernel name (`sda`, `nvme0n1`, `cciss!c0d0`) and partition.
    Kernel {
        disk: String,
        part: u32,
    },
    ById {
        name: String,
        part: u32,
    },
    ByPath {
        part: u32,
    },
}

fn digits(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `NAME-partN` -> (`NAME`, N); no suffix -> (`NAME`, 0).
fn part_suffix(name: &str) -> (&str, u32) {
    if let Some((base, n)) = name.rsplit_once("-part") {
        if let Some(n) = digits(n) {
            return (base, n);
        }
    }
    (name, 0)
}

/// `X` + `pN` (nvme, mmcblk, cciss style) -> (X, N).
fn p_suffix(s: &str) -> (&str, Option<&str>) {
    match s.rsplit_once('p') {
        Some((d, n)) if digits(n).is_some() && d.ends_with(|c: char| c.is_ascii_digit()) => {
            (d, Some(n))
        }
        _ => (s, None),
    }
}

fn hw_ref(dev: &str) -> Option<HwRef> {
    if let Some(n) = dev.strip_prefix("/dev/disk/by-id/") {
        let (name, part) = part_suffix(n);
        return (!name.is_empty()).then(|| HwRef::ById {
            name: name.to_string(),
            part,
        });
    }
    if let Some(n) = dev.strip_prefix("/dev/disk/by-path/") {
        return (!n.is_empty()).then(|| HwRef::ByPath {
            part: part_suffix(n).1,
        });
    }
    if let Some(n) = dev.strip_prefix("/dev/cciss/") {
        let (d, part) = p_suffix(n);
        let (c, dd) = d.strip_prefix('c')?.split_once('d')?;
        digits(c)?;
        digits(dd)?;
        return Some(HwRef::Kernel {
            disk: format!("cciss!{d}"),
            part: part.and_then(digits).unwrap_or(0),
        });
    }
    let n = dev.strip_prefix("/dev/")?;
    for prefix in ["nvme", "mmcblk"] {
        if let Some(rest) = n.strip_prefix(prefix) {
            let (d, part) = p_suffix(rest);
            let ok = if prefix == "nvme" {
                d.split_once('n')
                    .is_some_and(|(a, b)| digits(a).is_some() && digits(b).is_some())
            } else {
                digits(d).is_some()
            };
            if !ok {
                return None;
            }
            return Some(HwRef::Kernel {
                disk: format!("{prefix}{d}"),
                part: part.and_then(digits).unwrap_or(0),
            });
        }
    }
    for prefix in ["xvd", "sd", "hd", "vd"] {
        if let Some(rest) = n.strip_prefix(prefix) {
            let letters = rest.bytes().take_while(|b| b.is_ascii_lowercase()).count();
            if letters == 0 || letters > 3 {
                return None;
            }
            let num = &rest[letters..];
            let part = if num.is_empty() { 0 } else { digits(num)? };
            return Some(HwRef::Kernel {
                disk: format!("{prefix}{}", &rest[..letters]),
                part,
            });
        }
    }
    None
}

struct Devices<'a> {
    disks: &'a [JobDisk],
    partitions: &'a [PartitionInfo],
    inventory: Option<&'a Inventory>,
}

fn hex_only(s: &str) -> String {
    let s = s.to_ascii_lowercase();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("naa."))
        .or_else(|| s.strip_prefix("eui."))
        .unwrap_or(&s)
        .to_string();
    s
}

impl Devices<'_> {
    fn partition(&self, disk: &JobDisk, part: u32) -> Result<&PartitionInfo, String> {
        self.partitions
            .iter()
            .find(|p| p.disk_index == disk.index && p.number == part)
            .ok_or_else(|| {
                format!(
                    "disk {} has no {}",
                    disk.original_name,
                    if part == 0 {
                        "whole-disk file system".to_string()
                    } else {
                        format!("partition {part}")
                    }
                )
            })
    }

    fn only_disk(&self, what: &str) -> Result<&JobDisk, String> {
        match self.disks {
            [d] => Ok(d),
            _ => Err(format!(
                "{what} cannot be matched to one of the machine's {} disks",
                self.disks.len()
            )),
        }
    }

    /// The disk a by-id name means, through the inventory.
    fn by_id(&self, name: &str) -> Result<&JobDisk, String> {
        let lname = name.to_ascii_lowercase();
        let mut found: Vec<&str> = Vec::new();
        if let Some(inv) = self.inventory {
            for d in &inv.disks {
                let serial = d
                    .serial
                    .as_deref()
                    .map(|s| s.trim().replace(' ', "_").to_ascii_lowercase())
                    .filter(|s| s.len() >= 3);
                let wwn = d.wwn.as_deref().map(hex_only).filter(|s| s.len() >= 8);
                if serial.is_some_and(|s| lname.contains(&s))
                    || wwn.is_some_and(|w| lname.contains(&w))
                {
                    found.push(&d.name);
                }
            }
            if found.is_empty() {
                let by_model: Vec<&str> = inv
                    .disks
                    .iter()
                    .filter(|d| {
                        d.model
                            .as_deref()
                            .map(|m| m.trim().replace(' ', "_").to_ascii_lowercase())
                            .is_some_and(|m| m.len() >= 3 && lname.contains(&m))
                    })
                    .map(|d| d.name.as_str())
                    .collect();
                if by_model.len() == 1 {
                    found = by_model;
                }
            }
        }
        found.dedup();
        match found.as_slice() {
            [one] => self
                .disks
                .iter()
                .find(|d| d.original_name == *one)
                .ok_or_else(|| format!("disk {one} of the inventory is not part of the job")),
            [] => self.only_disk(&format!("/dev/disk/by-id/{name}")),
            _ => Err(format!(
                "/dev/disk/by-id/{name} matches several disks of the inventory ({})",
                found.join(", ")
            )),
        }
    }

    /// `Ok(None)` when `dev` is not hardware-specific; else the UUID it should become.
    fn resolve(&self, dev: &str) -> Result<Option<String>, String> {
        let Some(r) = hw_ref(dev) else {
            return Ok(None);
        };
        let (disk, part) = match &r {
            HwRef::Kernel { disk, part } => (
                self.disks
                    .iter()
                    .find(|d| d.original_name == *disk)
                    .ok_or_else(|| format!("no disk of the machine was called {disk}"))?,
                *part,
            ),
            HwRef::ById { name, part } => (self.by_id(name)?, *part),
            HwRef::ByPath { part } => (self.only_disk(dev)?, *part),
        };
        let p = self.partition(disk, part)?;
        match &p.uuid {
            Some(u) if !u.is_empty() => Ok(Some(u.clone())),
            _ => Err(format!(
                "{}{} has no file-system UUID",
                disk.original_name,
                if part == 0 {
                    String::new()
                } else {
                    format!(" partition {part}")
                }
            )),
        }
    }
}

/// Edits of one file, by line.
#[derive(Default)]
struct FileEdits {
    /// line -> (before, after, devices changed)
    lines: BTreeMap<usize, (String, String, Vec<String>)>,
}

fn plan_device_names(p: &mut Plan, ins: &Inspection, cx: &Devices) {
    let mut files: BTreeMap<String, FileEdits> = BTreeMap::new();
    let mut edit = |file: &str,
                    line: usize,
                    before: &str,
                    f: &dyn Fn(&str) -> Option<String>,
                    dev: &str|
     -> bool {
        let fe = files.entry(file.to_string()).or_default();
        let entry = fe
            .lines
            .entry(line)
            .or_insert_with(|| (before.to_string(), before.to_string(), Vec::new()));
        match f(&entry.1) {
            Some(after) => {
                entry.1 = after;
                if !entry.2.iter().any(|d| d == dev) {
                    entry.2.push(dev.to_string());
                }
                true
            }
            None => false,
        }
    };
    let unresolved = |p: &mut Plan, is_root: bool, what: String, why: String| {
        if is_root {
            p.blockers.push(format!(
                "the root file system is named {what}, which cannot be rewritten: {why}"
            ));
        } else {
            p.notes.push(format!("{what} is kept as it is: {why}"));
        }
    };
    if ins.fstab.is_empty() && ins.problems.iter().any(|x| x.starts_with("/etc/fstab")) {
        p.blockers.push(
            "/etc/fstab could not be read, so its device names cannot be checked (see the inspection problems)"
                .into(),
        );
    }
    // fstab's first field and crypttab's second name devices; both are rewritten alike.
    let root_spec = ins.root_device.as_deref();
    let tables = ins
        .fstab
        .iter()
        .map(|e| {
            (
                "/etc/fstab",
                e.line,
                &e.raw,
                &e.spec,
                0,
                e.mount_point == "/",
            )
        })
        .chain(ins.crypttab.iter().map(|e| {
            let is_root = root_spec == Some(&format!("/dev/mapper/{}", e.name));
            ("/etc/crypttab", e.line, &e.raw, &e.device, 1, is_root)
        }));
    for (file, line, raw, spec, field, is_root) in tables {
        let Spec::Device(dev) = classify(spec) else {
            continue;
        };
        let why = match cx.resolve(dev) {
            Ok(None) => continue,
            Ok(Some(uuid)) => {
                let new = format!("UUID={uuid}");
                if edit(file, line, raw, &|l| replace_field(l, field, &new), dev) {
                    continue;
                }
                "the line could not be edited".to_string()
            }
            Err(why) => why,
        };
        unresolved(p, is_root, format!("{file} line {line}: {dev}"), why);
    }
    for a in &ins.device_args {
        let Spec::Device(dev) = classify(&a.value) else {
            continue;
        };
        let is_root = a.key == "root";
        let what = format!("{} line {}: {}={dev}", a.file, a.line, a.key);
        match cx.resolve(dev) {
            Ok(None) => {}
            Ok(Some(uuid)) => {
                let new = format!("UUID={uuid}");
                let key = a.key.clone();
                let old = a.value.clone();
                if !edit(
                    &a.file,
                    a.line,
                    &a.text,
                    &|l| cmdline::replace_arg(l, &key, &old, &new),
                    dev,
                ) {
                    unresolved(
                        p,
                        is_root,
                        what,
                        "the value is not on one line as written".into(),
                    );
                }
            }
            Err(why) => unresolved(p, is_root, what, why),
        }
    }
    for (path, fe) in files {
        let mut devs: Vec<String> = Vec::new();
        let edits: Vec<LineEdit> = fe
            .lines
            .into_iter()
            .filter(|(_, (b, a, _))| b != a)
            .map(|(line, (before, after, d))| {
                for x in d {
                    if !devs.contains(&x) {
                        devs.push(x);
                    }
                }
                LineEdit {
                    line,
                    before,
                    after,
                }
            })
            .collect();
        if edits.is_empty() {
            continue;
        }
        p.changes.push(Change::EditLines {
            path,
            edits,
            reason: format!(
                "{} name{} the physical machine's disk layout, which the VM does not have; UUID= names the same file system anywhere",
                devs.join(", "),
                if devs.len() == 1 { "s" } else { "" }
            ),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Network

fn valid_ifname(n: &str) -> bool {
    (1..=15).contains(&n.len())
        && n != "."
        && n != ".."
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn plan_network(p: &mut Plan, ins: &Inspection, vm: &VmSpec, inventory: Option<&Inventory>) {
    if vm.nics.is_empty() {
        if !ins.network.is_empty() {
            p.notes.push(
                "the VM has no NIC (no inventory); the guest's network configuration is kept as it is".into(),
            );
        }
        return;
    }
    let configured = |name: &str| ins.network.iter().any(|n| n.name.as_deref() == Some(name));
    for nic in &vm.nics {
        // The predictable name the guest gave the NIC; but a guest booted with
        // `net.ifnames=0` configures the kernel's name (`eth0`), and that is the one to keep.
        let name = match (&nic.original_name, &nic.kernel_name) {
            (Some(o), Some(k)) if !configured(o) && configured(k) => k,
            (Some(o), _) => o,
            (None, Some(k)) => k,
            (None, None) => continue,
        };
        if !valid_ifname(name) {
            p.notes.push(format!(
                "NIC name {name:?} is not a valid interface name; not pinned"
            ));
            continue;
        }
        if ins.uses_systemd {
            p.changes.push(Change::WriteFile {
                path: format!("/etc/systemd/network/10-p2v-{name}.link"),
                content: format!("[Match]\nMACAddress={}\n\n[Link]\nName={name}\n", nic.mac),
                mode: 0o644,
                reason: format!(
                    "keeps the name {name} for the virtual NIC with MAC {}, so every configuration that names {name} stays valid",
                    nic.mac
                ),
            });
        } else {
            p.notes.push(format!(
                "the guest does not run systemd: the virtual NIC with MAC {} may not be named {name} as before",
                nic.mac
            ));
        }
    }
    // Configurations that match by a MAC the VM does not have.
    let mut files: BTreeMap<String, (Vec<LineEdit>, Vec<String>)> = BTreeMap::new();
    for n in &ins.network {
        let Some(m) = &n.mac else { continue };
        let by_inventory = inventory.and_then(|inv| {
            inv.nics
                .iter()
                .find(|x| x.mac.eq_ignore_ascii_case(&m.mac))
                .map(|x| x.name.clone())
        });
        let old_name = by_inventory.or_else(|| n.name.clone());
        let vm_nic = vm
            .nics
            .iter()
            .find(|v| v.original_name.is_some() && v.original_name == old_name)
            .or_else(|| vm.nics.iter().find(|v| v.mac.eq_ignore_ascii_case(&m.mac)));
        let Some(v) = vm_nic else {
            p.notes.push(format!(
                "{} line {}: matches MAC {}, which no NIC of the VM has; kept as it is",
                n.file, m.line, m.mac
            ));
            continue;
        };
        if v.mac.eq_ignore_ascii_case(&m.mac) {
            continue;
        }
        let entry = files.entry(n.file.clone()).or_default();
        let base = entry
            .0
            .iter()
            .find(|e| e.line == m.line)
            .map(|e| e.after.clone())
            .unwrap_or_else(|| m.text.clone());
        let after = base.replacen(&m.written, &v.mac, 1);
        if after == base {
            continue;
        }
        match entry.0.iter_mut().find(|e| e.line == m.line) {
            Some(e) => e.after = after,
            None => entry.0.push(LineEdit {
                line: m.line,
                before: m.text.clone(),
                after,
            }),
        }
        entry.1.push(format!("{} → {}", m.mac, v.mac));
    }
    for (path, (mut edits, what)) in files {
        edits.sort_by_key(|e| e.line);
        p.changes.push(Change::EditLines {
            path,
            edits,
            reason: format!(
                "it matches the physical NIC's MAC, and the VM's NIC has another ({})",
                what.join(", ")
            ),
        });
    }
    // Names configured that no NIC of the VM will have.
    let names: Vec<&str> = vm
        .nics
        .iter()
        .filter_map(|n| n.original_name.as_deref())
        .collect();
    let mut told: Vec<&str> = Vec::new();
    for n in &ins.network {
        let Some(name) = n.name.as_deref() else {
            continue;
        };
        if name == "lo" || names.contains(&name) || told.contains(&name) || n.mac.is_some() {
            continue;
        }
        told.push(name);
        p.notes.push(format!(
            "{} line {}: configures {name}, which is not a NIC of the VM ({})",
            n.file,
            n.line,
            names.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{
        Agent, DeviceArg, DriverStatus, FstabEntry, Kernel, MacRef, NetInterface, NetSource,
        TARGET_DRIVERS,
    };
    use crate::profile::{DiskBus, NicModel, VmDisk, VmNic};
    use p2v_protocol::inventory::{CpuInfo, DiskInfo, DiskSource, Firmware, Nic, SystemInfo};

    fn kernel(version: &str, in_initrd: &[&str], missing: &[&str]) -> Kernel {
        Kernel {
            version: version.into(),
            vmlinuz: Some(format!("/boot/vmlinuz-{version}")),
            initrd: Some(format!("/boot/initrd.img-{version}")),
            initrd_modules: Some(10),
            initrd_error: None,
            drivers: TARGET_DRIVERS
                .iter()
                .map(|d| DriverStatus {
                    name: d.to_string(),
                    in_initrd: Some(in_initrd.contains(d)),
                    available: if missing.contains(d) {
                        Availability::Missing
                    } else {
                        Availability::Module
                    },
                })
                .collect(),
        }
    }

    fn fstab(line: usize, raw: &str) -> FstabEntry {
        crate::inspect::fstab::parse_fstab(raw)
            .unwrap()
            .into_iter()
            .map(|mut e| {
                e.line = line;
                e
            })
            .next()
            .unwrap()
    }

    fn base() -> Inspection {
        Inspection {
            os: Some(crate::inspect::OsInfo {
                id: "debian".into(),
                ..Default::default()
            }),
            kernels: vec![kernel(
                "6.1.0-1-amd64",
                &["virtio_pci", "virtio_blk", "ahci", "sd_mod"],
                &[],
            )],
            initramfs_tool: Some(InitramfsTool::InitramfsTools),
            firmware: Some(FirmwareKind::Bios),
            uses_systemd: true,
            ..Default::default()
        }
    }

    fn vm(nics: &[(&str, &str)]) -> VmSpec {
        VmSpec {
            name: "m".into(),
            profile: "virtio".into(),
            machine: "q35".into(),
            firmware: FirmwareKind::Bios,
            cpus: 2,
            memory_mib: 2048,
            // Through serde so that fields added to VmDisk (all optional) need no change here.
            disks: vec![serde_json::from_value::<VmDisk>(serde_json::json!({
                "disk_id": "d-1",
                "size_bytes": 1u64 << 30,
                "bus": DiskBus::VirtioBlk,
            }))
            .unwrap()],
            nics: nics
                .iter()
                .map(|(name, mac)| VmNic {
                    mac: mac.to_string(),
                    model: NicModel::VirtioNet,
                    original_name: Some(name.to_string()),
                    kernel_name: None,
                })
                .collect(),
        }
    }

    fn disks(names: &[&str]) -> Vec<JobDisk> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| JobDisk {
                disk_id: format!("d-{i}"),
                original_name: n.to_string(),
                device: None,
                index: i,
            })
            .collect()
    }

    fn part(disk: usize, number: u32, uuid: &str) -> PartitionInfo {
        PartitionInfo {
            disk_index: disk,
            number,
            start_bytes: 1 << 20,
            size_bytes: 1 << 30,
            part_type: Some("0x83".into()),
            partuuid: None,
            fs_type: Some("ext4".into()),
            uuid: Some(uuid.into()),
            label: None,
            device: None,
        }
    }

    type InvDisk<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

    fn inventory(disks: &[InvDisk], nics: &[(&str, &str)]) -> Inventory {
        Inventory {
            system: SystemInfo::default(),
            firmware: Firmware {
                kind: FirmwareKind::Bios,
                vendor: None,
                version: None,
                date: None,
            },
            cpu: CpuInfo::default(),
            memory_bytes: 1 << 30,
            nics: nics
                .iter()
                .map(|(n, m)| Nic {
                    name: n.to_string(),
                    mac: m.to_string(),
                    driver: Some("e1000e".into()),
                    speed_mbps: None,
                    link: true,
                    pci_address: None,
                    predictable_name: None,
                })
                .collect(),
            disks: disks
                .iter()
                .map(|(name, model, serial, wwn)| DiskInfo {
                    name: name.to_string(),
                    path: format!("/dev/{name}"),
                    source: DiskSource::BlockDevice,
                    size_bytes: 1 << 30,
                    logical_sector_size: 512,
                    physical_sector_size: 512,
                    model: model.map(str::to_string),
                    serial: serial.map(str::to_string),
                    wwn: wwn.map(str::to_string),
                    rotational: None,
                    removable: None,
                    controller_driver: Some("ahci".into()),
                })
                .collect(),
        }
    }

    fn edits_of<'a>(p: &'a Plan, path: &str) -> Vec<&'a LineEdit> {
        p.changes
            .iter()
            .filter_map(|c| match c {
                Change::EditLines { path: x, edits, .. } if x == path => Some(edits.iter()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn device_names_become_uuids() {
        // (fstab line, disks, partitions, inventory disks, expected line after)
        type Inv<'a> = &'a [InvDisk<'a>];
        let cases: &[(&str, &[&str], Inv, &str)] = &[
            (
                "/dev/sda1 / ext4 errors=remount-ro 0 1",
                &["sda"],
                &[],
                "UUID=U1 / ext4 errors=remount-ro 0 1",
            ),
            (
                "/dev/nvme0n1p1\t/  xfs defaults",
                &["nvme0n1"],
                &[],
                "UUID=U1\t/  xfs defaults",
            ),
            (
                "/dev/cciss/c0d0p1 / ext4 defaults",
                &["cciss!c0d0"],
                &[],
                "UUID=U1 / ext4 defaults",
            ),
            (
                "/dev/hda1 / ext3 defaults",
                &["hda"],
                &[],
                "UUID=U1 / ext3 defaults",
            ),
            (
                "/dev/disk/by-id/ata-Samsung_SSD_860_S3Z1NB0K-part1 / ext4 defaults",
                &["sda", "sdb"],
                &[
                    ("sdb", Some("Samsung SSD 860"), Some("S3Z9"), None),
                    ("sda", Some("Samsung SSD 860"), Some("S3Z1NB0K"), None),
                ],
                "UUID=U1 / ext4 defaults",
            ),
            (
                "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4-part1 / ext4 defaults",
                &["sdb", "sda"],
                &[
                    ("sda", None, None, Some("0x5000c500a1b2c3d4")),
                    ("sdb", None, None, Some("0x5000c500ffffffff")),
                ],
                "UUID=U1 / ext4 defaults",
            ),
            (
                "/dev/disk/by-id/ata-Whatever-part1 / ext4 defaults",
                &["sda"],
                &[],
                "UUID=U1 / ext4 defaults",
            ),
            (
                "/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part1 / ext4 defaults",
                &["sda"],
                &[],
                "UUID=U1 / ext4 defaults",
            ),
        ];
        for (line, dnames, inv, want) in cases {
            let mut ins = base();
            ins.fstab = vec![fstab(3, line)];
            let d = disks(dnames);
            let sda = d.iter().find(|x| x.original_name == dnames[0]).unwrap();
            // The partition 1 of the disk the case means: the first listed, or by the inventory.
            let target = if inv.is_empty() {
                sda.index
            } else {
                d.iter().find(|x| x.original_name == "sda").unwrap().index
            };
            let parts: Vec<PartitionInfo> = d
                .iter()
                .map(|x| part(x.index, 1, if x.index == target { "U1" } else { "OTHER" }))
                .collect();
            let inv = (!inv.is_empty()).then(|| inventory(inv, &[]));
            let p = plan(&ins, &vm(&[]), &d, &parts, inv.as_ref());
            assert!(p.blockers.is_empty(), "{line}: {:?}", p.blockers);
            let e = edits_of(&p, "/etc/fstab");
            assert_eq!(e.len(), 1, "{line}: {p:#?}");
            assert_eq!(
                (e[0].line, e[0].before.as_str(), e[0].after.as_str()),
                (3, *line, *want)
            );
        }
    }

    #[test]
    fn boot_args_swap_and_unresolvable() {
        let mut ins = base();
        ins.fstab = vec![
            fstab(1, "UUID=R / ext4 defaults 0 1"),
            fstab(2, "/dev/sda2 none swap sw 0 0"),
            fstab(3, "/dev/sdc1 /srv ext4 defaults 0 2"),
        ];
        let grub = "\tlinux /vmlinuz root=/dev/sda1 ro resume=/dev/sda2 quiet";
        ins.device_args = vec![
            DeviceArg {
                file: "/boot/grub/grub.cfg".into(),
                line: 7,
                text: grub.into(),
                key: "root".into(),
                value: "/dev/sda1".into(),
            },
            DeviceArg {
                file: "/boot/grub/grub.cfg".into(),
                line: 7,
                text: grub.into(),
                key: "resume".into(),
                value: "/dev/sda2".into(),
            },
            DeviceArg {
                file: "/etc/initramfs-tools/conf.d/resume".into(),
                line: 1,
                text: "RESUME=/dev/sda2".into(),
                key: "RESUME".into(),
                value: "/dev/sda2".into(),
            },
        ];
        let d = disks(&["sda"]);
        let parts = vec![part(0, 1, "R"), part(0, 2, "S")];
        let p = plan(&ins, &vm(&[]), &d, &parts, None);
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        let f = edits_of(&p, "/etc/fstab");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].after, "UUID=S none swap sw 0 0");
        let g = edits_of(&p, "/boot/grub/grub.cfg");
        assert_eq!(g.len(), 1);
        assert_eq!(
            g[0].after,
            "\tlinux /vmlinuz root=UUID=R ro resume=UUID=S quiet"
        );
        assert_eq!(
            edits_of(&p, "/etc/initramfs-tools/conf.d/resume")[0].after,
            "RESUME=UUID=S"
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("/dev/sdc1") && n.contains("no disk")),
            "{:?}",
            p.notes
        );
        // The same unresolvable name on / is a blocker.
        ins.fstab = vec![fstab(1, "/dev/sdc1 / ext4 defaults 0 1")];
        let p = plan(&ins, &vm(&[]), &d, &parts, None);
        assert!(
            p.blockers.iter().any(|b| b.contains("root file system")),
            "{:?}",
            p.blockers
        );
    }

    fn rebuilt(p: &Plan) -> Vec<(&str, Vec<&str>)> {
        p.changes
            .iter()
            .filter_map(|c| match c {
                Change::RebuildInitramfs {
                    kernel, drivers, ..
                } => Some((
                    kernel.as_str(),
                    drivers.iter().map(String::as_str).collect(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn initramfs_rules() {
        // Drivers present: nothing to do.
        let p = plan(&base(), &vm(&[]), &[], &[], None);
        assert!(p.changes.is_empty() && p.blockers.is_empty(), "{p:#?}");
        // Missing in one of two kernels: only that one is rebuilt; modules appended once.
        let mut ins = base();
        ins.kernels
            .push(kernel("6.1.0-2-amd64", &["ahci", "sd_mod"], &[]));
        ins.initramfs_listed_modules = vec!["virtio_pci".into()];
        let p = plan(&ins, &vm(&[]), &[], &[], None);
        assert_eq!(
            rebuilt(&p),
            vec![("6.1.0-2-amd64", vec!["virtio_pci", "virtio_blk"])]
        );
        let appends: Vec<&Vec<String>> = p
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::AppendLines { path, lines, .. }
                    if path == "/etc/initramfs-tools/modules" =>
                {
                    Some(lines)
                }
                _ => None,
            })
            .collect();
        assert_eq!(appends, vec![&vec!["virtio_blk".to_string()]]);
        assert!(
            matches!(p.changes[0], Change::AppendLines { .. }),
            "append before rebuild"
        );
        // No module at all: blocker naming kernel and driver.
        let mut ins = base();
        ins.kernels = vec![kernel("5.10.0-9-amd64", &["ahci"], &["virtio_blk"])];
        let p = plan(&ins, &vm(&[]), &[], &[], None);
        assert!(
            p.blockers
                .iter()
                .any(|b| b.contains("5.10.0-9-amd64") && b.contains("virtio_blk")),
            "{:?}",
            p.blockers
        );
        // dracut: a drop-in, then the rebuild.
        let mut ins = base();
        ins.initramfs_tool = Some(InitramfsTool::Dracut);
        ins.kernels = vec![kernel("5.14.0-1.el9", &["ahci"], &[])];
        ins.kernels[0].initrd = Some("/boot/initramfs-5.14.0-1.el9.img".into());
        let p = plan(&ins, &vm(&[]), &[], &[], None);
        match &p.changes[0] {
            Change::WriteFile { path, content, .. } => {
                assert_eq!(path, "/etc/dracut.conf.d/50-p2v.conf");
                assert!(
                    content.contains("add_drivers+=\" virtio_pci virtio_blk \""),
                    "{content}"
                );
            }
            c => panic!("{c:?}"),
        }
        assert!(
            matches!(&p.changes[1], Change::RebuildInitramfs { tool: InitramfsTool::Dracut, image, .. } if image == "/boot/initramfs-5.14.0-1.el9.img")
        );
        // mkinitcpio: blocker.
        ins.initramfs_tool = Some(InitramfsTool::Mkinitcpio);
        let p = plan(&ins, &vm(&[]), &[], &[], None);
        assert!(p.blockers.iter().any(|b| b.contains("mkinitcpio")));
        // Built-in drivers need nothing.
        let mut ins = base();
        ins.kernels = vec![kernel("6.9", &[], &[])];
        for d in &mut ins.kernels[0].drivers {
            d.available = Availability::Builtin;
        }
        assert!(plan(&ins, &vm(&[]), &[], &[], None).changes.is_empty());
    }

    #[test]
    fn kernel_names_are_kept_for_guests_that_use_them() {
        let mut ins = base();
        ins.network = vec![NetInterface {
            source: NetSource::Ifupdown,
            file: "/etc/network/interfaces".into(),
            line: 3,
            name: Some("eth0".into()),
            mac: None,
            addresses: vec!["192.0.2.10/24".into()],
            static_config: true,
        }];
        let mut v = vm(&[("enp3s0", "00:25:90:ab:cd:ef")]);
        v.nics[0].kernel_name = Some("eth0".into());
        let p = plan(&ins, &v, &[], &[], None);
        let link = p
            .changes
            .iter()
            .find_map(|c| match c {
                Change::WriteFile { path, content, .. } if path.ends_with(".link") => {
                    Some((path.clone(), content.clone()))
                }
                _ => None,
            })
            .expect("a .link file");
        assert_eq!(link.0, "/etc/systemd/network/10-p2v-eth0.link");
        assert!(link.1.contains("Name=eth0"));
        // A guest configuring the predictable name keeps that one.
        ins.network[0].name = Some("enp3s0".into());
        let p = plan(&ins, &v, &[], &[], None);
        assert!(p.changes.iter().any(|c| matches!(c,
            Change::WriteFile { path, .. } if path == "/etc/systemd/network/10-p2v-enp3s0.link")));
    }

    #[test]
    fn network_pinning_and_mac_edits() {
        let mut ins = base();
        let rule = "SUBSYSTEM==\"net\", ATTR{address}==\"00:25:90:AB:CD:EF\", NAME=\"eth0\"";
        ins.network = vec![
            NetInterface {
                source: NetSource::UdevRule,
                file: "/etc/udev/rules.d/70-persistent-net.rules".into(),
                line: 2,
                name: Some("eth0".into()),
                mac: Some(MacRef {
                    mac: "00:25:90:ab:cd:ef".into(),
                    written: "00:25:90:AB:CD:EF".into(),
                    line: 2,
                    text: rule.into(),
                }),
                addresses: vec![],
                static_config: false,
            },
            NetInterface {
                source: NetSource::Ifupdown,
                file: "/etc/network/interfaces".into(),
                line: 5,
                name: Some("eth0".into()),
                mac: None,
                addresses: vec!["192.0.2.10/24".into()],
                static_config: true,
            },
        ];
        let inv = inventory(&[], &[("eth0", "00:25:90:ab:cd:ef")]);
        // Same MAC: only the name pin.
        let p = plan(
            &ins,
            &vm(&[("eth0", "00:25:90:ab:cd:ef")]),
            &[],
            &[],
            Some(&inv),
        );
        assert_eq!(p.changes.len(), 1, "{p:#?}");
        match &p.changes[0] {
            Change::WriteFile { path, content, .. } => {
                assert_eq!(path, "/etc/systemd/network/10-p2v-eth0.link");
                assert_eq!(
                    content,
                    "[Match]\nMACAddress=00:25:90:ab:cd:ef\n\n[Link]\nName=eth0\n"
                );
            }
            c => panic!("{c:?}"),
        }
        // New MAC: the udev rule follows it.
        let p = plan(
            &ins,
            &vm(&[("eth0", "52:54:00:00:00:01")]),
            &[],
            &[],
            Some(&inv),
        );
        let e = edits_of(&p, "/etc/udev/rules.d/70-persistent-net.rules");
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].after,
            rule.replace("00:25:90:AB:CD:EF", "52:54:00:00:00:01")
        );
        assert_eq!(e[0].line, 2);
        // Without systemd: a note, no .link.
        ins.uses_systemd = false;
        let p = plan(
            &ins,
            &vm(&[("eth0", "00:25:90:ab:cd:ef")]),
            &[],
            &[],
            Some(&inv),
        );
        assert!(p.changes.is_empty() && p.notes.iter().any(|n| n.contains("systemd")));
    }

    #[test]
    fn firmware_agents_notes() {
        let mut ins = base();
        ins.firmware = Some(FirmwareKind::Bios);
        let mut v = vm(&[]);
        v.firmware = FirmwareKind::Uefi;
        let p = plan(&ins, &v, &[], &[], None);
        assert_eq!(
            p.blockers,
            vec!["the guest boots with BIOS but the VM is set to UEFI: BIOS→UEFI conversion is not supported; choose --firmware bios"]
        );
        ins.agents = vec![Agent {
            unit: "ipmievd.service".into(),
            enabled_in: "/etc/systemd/system/multi-user.target.wants/ipmievd.service".into(),
            reason: "x".into(),
        }];
        ins.problems = vec!["/etc/os-release: line 2: unterminated quote".into()];
        let p = plan(&ins, &vm(&[]), &[], &[], None);
        assert!(
            matches!(&p.changes[0], Change::MaskUnit { unit, .. } if unit == "ipmievd.service")
        );
        assert!(p.notes.iter().any(|n| n.contains("1 problem")));
    }

    #[test]
    fn hardware_names() {
        let k = |disk: &str, part| {
            Some(HwRef::Kernel {
                disk: disk.into(),
                part,
            })
        };
        for (dev, want) in [
            ("/dev/sda", k("sda", 0)),
            ("/dev/sdab12", k("sdab", 12)),
            ("/dev/xvda1", k("xvda", 1)),
            ("/dev/vdb3", k("vdb", 3)),
            ("/dev/nvme0n1", k("nvme0n1", 0)),
            ("/dev/nvme1n2p10", k("nvme1n2", 10)),
            ("/dev/mmcblk0p2", k("mmcblk0", 2)),
            ("/dev/cciss/c0d1p2", k("cciss!c0d1", 2)),
            ("/dev/cciss/c0d1", k("cciss!c0d1", 0)),
            (
                "/dev/disk/by-id/ata-X_Y-part3",
                Some(HwRef::ById {
                    name: "ata-X_Y".into(),
                    part: 3,
                }),
            ),
            (
                "/dev/disk/by-path/pci-0000:00:17.0-ata-1",
                Some(HwRef::ByPath { part: 0 }),
            ),
            ("/dev/mapper/vg-root", None),
            ("/dev/md0", None),
            ("/dev/disk/by-uuid/abc", None),
            ("/dev/sd", None),
            ("/dev/sda1x", None),
            ("/dev/nvme0", None),
        ] {
            assert_eq!(hw_ref(dev), want, "{dev}");
        }
    }
}
