//! Human-readable rendering of an [`Inspection`] (the JSON form is its serde serialization).

use std::fmt::Write;

use super::{Availability, Inspection};

/// A human-readable report of the inspection, one section per subject.
pub fn render(ins: &Inspection) -> String {
    let mut s = String::new();
    let mut w = |line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    match (&ins.os, &ins.os_error) {
        (Some(os), _) => w(format!(
            "OS:            {} (ID={}, VERSION_ID={}{})",
            os.pretty_name.as_deref().unwrap_or("?"),
            os.id,
            os.version_id.as_deref().unwrap_or("?"),
            if os.id_like.is_empty() {
                String::new()
            } else {
                format!(", like {}", os.id_like.join(" "))
            }
        )),
        (None, Some(e)) => w(format!("OS:            unknown: {e}")),
        (None, None) => w("OS:            unknown".into()),
    }
    w(format!(
        "Hostname:      {}",
        ins.hostname.as_deref().unwrap_or("?")
    ));
    w(format!(
        "Root device:   {}",
        ins.root_device.as_deref().unwrap_or("?")
    ));
    w(format!(
        "Firmware:      {}",
        match ins.firmware {
            Some(p2v_protocol::inventory::FirmwareKind::Uefi) => "UEFI",
            Some(p2v_protocol::inventory::FirmwareKind::Bios) => "BIOS",
            None => "unknown",
        }
    ));
    let bl: Vec<String> = ins
        .bootloaders
        .iter()
        .map(|b| format!("{:?} ({})", b.kind, b.config))
        .collect();
    w(format!(
        "Bootloaders:   {}",
        if bl.is_empty() {
            "none found".into()
        } else {
            bl.join(", ")
        }
    ));
    let mut tool = match ins.initramfs_tool {
        Some(t) => format!("{t:?}"),
        None => "none found".into(),
    };
    if let Some(m) = &ins.initramfs_modules_policy {
        let _ = write!(tool, " (MODULES={m})");
    }
    w(format!("Initramfs:     {tool}"));
    w(format!(
        "Init:          {}",
        if ins.uses_systemd {
            "systemd"
        } else {
            "not systemd"
        }
    ));
    w(String::new());
    w("Mounts (/etc/fstab):".into());
    for e in &ins.fstab {
        w(format!(
            "  line {:>3}: {} on {} type {} ({})",
            e.line, e.spec, e.mount_point, e.fs_type, e.options
        ));
    }
    if !ins.crypttab.is_empty() {
        w("Encrypted (/etc/crypttab):".into());
        for e in &ins.crypttab {
            w(format!(
                "  line {:>3}: {} from {}",
                e.line, e.name, e.device
            ));
        }
    }
    if !ins.device_args.is_empty() {
        w("Boot device arguments:".into());
        for a in &ins.device_args {
            w(format!("  {}:{}: {}={}", a.file, a.line, a.key, a.value));
        }
    }
    w(String::new());
    w("Kernels:".into());
    for k in &ins.kernels {
        w(format!(
            "  {}  image {}  initramfs {}{}",
            k.version,
            k.vmlinuz.as_deref().unwrap_or("?"),
            k.initrd.as_deref().unwrap_or("none"),
            match (k.initrd_modules, &k.initrd_error) {
                (Some(n), _) => format!(" ({n} modules)"),
                (None, Some(e)) => format!(" (not readable: {e})"),
                _ => String::new(),
            }
        ));
        let d: Vec<String> = k
            .drivers
            .iter()
            .map(|d| {
                let avail = match d.available {
                    Availability::Builtin => "built in",
                    Availability::Module => "module",
                    Availability::Missing => "MISSING",
                    Availability::Unknown => "unknown",
                };
                let init = match d.in_initrd {
                    Some(true) => "in initramfs",
                    Some(false) => "not in initramfs",
                    None => "initramfs unknown",
                };
                format!("{} [{avail}, {init}]", d.name)
            })
            .collect();
        for line in d {
            w(format!("      {line}"));
        }
    }
    w(String::new());
    w("Network configuration:".into());
    for n in &ins.network {
        w(format!(
            "  {:?} {}:{}: {}{}{}{}",
            n.source,
            n.file,
            n.line,
            n.name.as_deref().unwrap_or("(by MAC)"),
            n.mac
                .as_ref()
                .map(|m| format!(" mac {}", m.mac))
                .unwrap_or_default(),
            if n.static_config { " static" } else { "" },
            if n.addresses.is_empty() {
                String::new()
            } else {
                format!(" {}", n.addresses.join(" "))
            }
        ));
    }
    if !ins.agents.is_empty() {
        w("Platform agents:".into());
        for a in &ins.agents {
            w(format!("  {} ({}): {}", a.unit, a.enabled_in, a.reason));
        }
    }
    w(String::new());
    if ins.problems.is_empty() {
        w("Problems:      none".into());
    } else {
        w("Problems:".into());
        for p in &ins.problems {
            w(format!("  - {p}"));
        }
    }
    s
}
