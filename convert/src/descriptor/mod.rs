//! Descriptors of the converted VM that the server writes next to the exported disks:
//!
//! - [`libvirt_domain_xml`]: a libvirt domain (`virsh define FILE`), format of
//!   <https://libvirt.org/formatdomain.html>, accepted by libvirt's own RelaxNG schema
//!   (`virt-xml-validate FILE domain`, tested).
//! - [`ovf_descriptor`]: an OVF 1.0 envelope (DMTF DSP0243 1.0/1.1, with the CIM RASD/VSSD
//!   schemas of DSP8023) with VMware's extensions, for a vSphere import of streamOptimized VMDKs.
//!
//! Both are written from the resolved [`VmSpec`] (CPUs, memory, firmware, disk bus, NIC models
//! and MACs) and options that belong to the deployment, not to the VM (where the NICs attach,
//! which console, which virtual hardware version).
//!
//! Names come from the operator and the inventory: every value is XML-escaped, and a control
//! character anywhere is an error, as is a malformed MAC or UUID, a disk without an image file,
//! or a format the target cannot read. Nothing here does I/O.

mod libvirt;
mod ovf;
mod xml;

pub use libvirt::{
    libvirt_domain_xml, CpuMode, DomainType, Graphics, LibvirtOptions, LifecycleAction,
    NetworkAttachment, SerialConsole,
};
pub use ovf::{ovf_descriptor, ovf_guest_drivers, OvfNicType, OvfOptions, OvfOs, ScsiController};

use sha2::{Digest, Sha256};

use crate::profile::{DiskFormat, VmDisk, VmSpec};
use crate::Error;

/// At most this many disks and NICs per VM (well above any real server; bounds the output).
pub const MAX_DISKS: usize = 64;
pub const MAX_NICS: usize = 32;
/// Longest VM name accepted (libvirt keeps it in file names under /etc/libvirt and /var/lib).
pub const MAX_NAME_LEN: usize = 200;

/// A UUID derived from `seed` (the server passes the machine id, so that a VM exported twice
/// keeps its identity): the first 128 bits of SHA-256 over a fixed prefix and the seed, in
/// RFC 4122 text form with the RFC 4122 variant bits and version 8 ("custom", RFC 9562), since
/// the name-based version 5 is defined over SHA-1.
pub fn stable_uuid(seed: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"p2v-convert vm uuid\0");
    h.update(seed.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

fn format_uuid(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A UUID given by the operator: 32 hex digits, bare or as 8-4-4-4-12; lowercased.
pub(crate) fn parse_uuid(s: &str) -> Result<String, Error> {
    let bad = || Error::Descriptor(format!("UUID {s:?} is not 32 hex digits (8-4-4-4-12)"));
    let hyphenated = s.len() == 36
        && s.char_indices()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
    let digits: String = s.chars().filter(|c| *c != '-').collect();
    if !(hyphenated || s.len() == 32)
        || digits.len() != 32
        || !digits.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(bad());
    }
    let mut b = [0u8; 16];
    for (i, out) in b.iter_mut().enumerate() {
        *out = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(format_uuid(&b))
}

/// A unicast MAC in lower-case colon form; `-` separators are accepted.
pub(crate) fn parse_mac(s: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::Descriptor(format!("MAC address {s:?}: {why}"));
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if s.len() != 17
        || parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(bad("not six hex octets"));
    }
    let mut b = [0u8; 6];
    for (o, p) in b.iter_mut().zip(&parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| bad("not six hex octets"))?;
    }
    if b[0] & 1 == 1 {
        return Err(bad("multicast (a NIC needs a unicast address)"));
    }
    if b == [0; 6] {
        return Err(bad("all zero"));
    }
    Ok(b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// An operator or inventory text (names, paths): not empty, bounded, no control characters.
pub(crate) fn check_text(what: &str, s: &str, max: usize) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::Descriptor(format!("{what} is empty")));
    }
    if s.len() > max {
        return Err(Error::Descriptor(format!(
            "{what} is {} bytes long (at most {max})",
            s.len()
        )));
    }
    if let Some(c) = s.chars().find(|c| xml::is_forbidden(*c)) {
        return Err(Error::Descriptor(format!(
            "{what} {s:?} contains the control character U+{:04X}",
            c as u32
        )));
    }
    Ok(())
}

/// Checks shared by both descriptors.
pub(crate) fn check_vm(vm: &VmSpec) -> Result<(), Error> {
    check_text("VM name", &vm.name, MAX_NAME_LEN)?;
    check_text("profile name", &vm.profile, MAX_NAME_LEN)?;
    if vm.cpus == 0 || vm.cpus > 1024 {
        return Err(Error::Descriptor(format!(
            "{} vCPUs (1 to 1024 are described)",
            vm.cpus
        )));
    }
    if vm.memory_mib < 16 || vm.memory_mib > 16 << 20 {
        return Err(Error::Descriptor(format!(
            "{} MiB of memory (16 MiB to 16 TiB are described)",
            vm.memory_mib
        )));
    }
    if vm.disks.is_empty() {
        return Err(Error::Descriptor("the VM has no disk".into()));
    }
    if vm.disks.len() > MAX_DISKS || vm.nics.len() > MAX_NICS {
        return Err(Error::Descriptor(format!(
            "{} disks and {} NICs (at most {MAX_DISKS} and {MAX_NICS})",
            vm.disks.len(),
            vm.nics.len()
        )));
    }
    if vm.disks.iter().any(|d| d.bus != vm.disks[0].bus) {
        return Err(Error::Descriptor(
            "disks on different buses (a profile has one disk bus)".into(),
        ));
    }
    for d in &vm.disks {
        check_text("disk id", &d.disk_id, MAX_NAME_LEN)?;
    }
    Ok(())
}

/// The image file of a disk, checked.
pub(crate) fn disk_file(d: &VmDisk) -> Result<&str, Error> {
    let f = d.file.as_deref().ok_or_else(|| {
        Error::Descriptor(format!(
            "disk {}: no image file (the export fills VmDisk.file)",
            d.disk_id
        ))
    })?;
    check_text(&format!("disk {} file", d.disk_id), f, 4096)?;
    Ok(f)
}

/// The format of a disk's image: the explicit one, else from the file extension.
pub(crate) fn disk_format(d: &VmDisk) -> Result<DiskFormat, Error> {
    if let Some(f) = d.format {
        return Ok(f);
    }
    let file = disk_file(d)?;
    let ext = std::path::Path::new(file)
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("qcow2") => Ok(DiskFormat::Qcow2),
        Some("raw" | "img") => Ok(DiskFormat::Raw),
        Some("vmdk") => Ok(DiskFormat::Vmdk),
        _ => Err(Error::Descriptor(format!(
            "disk {}: cannot tell the format of {file:?} (extension .qcow2, .raw, .img or \
             .vmdk, or set VmDisk.format)",
            d.disk_id
        ))),
    }
}

/// Kernel-style disk name suffix: 0 → `a`, 25 → `z`, 26 → `aa`.
pub(crate) fn disk_letters(index: usize) -> String {
    let mut n = index + 1;
    let mut s = Vec::new();
    while n > 0 {
        n -= 1;
        s.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod testutil {
    //! VMs for the descriptor tests.
    use p2v_protocol::inventory::FirmwareKind;

    use crate::profile::{profile, VmDisk, VmNic, VmSpec};

    /// The VM of `profile_name` with two disks and two NICs.
    pub(crate) fn vm(profile_name: &str, firmware: FirmwareKind) -> VmSpec {
        let p = profile(profile_name).unwrap();
        VmSpec {
            name: format!("web-{profile_name}"),
            profile: p.name.clone(),
            machine: p.machine.clone(),
            firmware,
            cpus: 3,
            memory_mib: 1536,
            disks: (0..2)
                .map(|i| VmDisk {
                    disk_id: format!("d-{i}"),
                    size_bytes: (8 << 30) + i as u64 * (1 << 20),
                    bus: p.disk_bus,
                    file: Some(format!("/srv/p2v/export/web/disk{i}.qcow2")),
                    format: None,
                    file_bytes: Some(123_456 + i as u64),
                })
                .collect(),
            nics: ["00:1b:21:0a:0b:0c", "00:1B:21:0A:0B:0D"]
                .iter()
                .enumerate()
                .map(|(i, m)| VmNic {
                    mac: m.to_string(),
                    model: p.nic_model,
                    original_name: Some(format!("eno{}", i + 1)),
                    kernel_name: None,
                })
                .collect(),
        }
    }

    pub(crate) const PROFILES: [&str; 3] = ["virtio", "virtio-scsi", "sata"];
    pub(crate) const FIRMWARES: [FirmwareKind; 2] = [FirmwareKind::Bios, FirmwareKind::Uefi];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_stable_rfc4122_shaped_and_parsed() {
        let a = stable_uuid("m-1");
        assert_eq!(a, stable_uuid("m-1"));
        assert_ne!(a, stable_uuid("m-2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version nibble: {a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "variant: {a}");
        assert_eq!(parse_uuid(&a).unwrap(), a);
        assert_eq!(
            parse_uuid("0123456789ABCDEF0123456789abcdef").unwrap(),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
        for bad in [
            "",
            "0123",
            "01234567-89ab-cdef-0123-456789abcdeg",
            "0123456789a-bcdef-0123-456789abcdef",
            "+1234567-89ab-cdef-0123-456789abcdef",
        ] {
            assert!(parse_uuid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn macs_are_normalised_and_checked() {
        assert_eq!(parse_mac("00-1B-21-0A-0B-0C").unwrap(), "00:1b:21:0a:0b:0c");
        for (bad, why) in [
            ("01:00:5e:00:00:01", "multicast"),
            ("00:00:00:00:00:00", "zero"),
            ("00:1b:21:0a:0b", "six"),
            ("00:1b:21:0a:0b:0g", "six"),
            ("001b:21:0a:0b:0c:", "six"),
            ("+0:1b:21:0a:0b:0c", "six"),
        ] {
            let e = parse_mac(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn disk_letters_follow_the_kernel() {
        let got: Vec<String> = [0, 1, 25, 26, 27, 51, 52, 701, 702]
            .iter()
            .map(|i| disk_letters(*i))
            .collect();
        assert_eq!(got, ["a", "b", "z", "aa", "ab", "az", "ba", "zz", "aaa"]);
    }

    #[test]
    fn formats_from_extension_or_field() {
        let mut d =
            testutil::vm("virtio", p2v_protocol::inventory::FirmwareKind::Bios).disks[0].clone();
        for (f, want) in [
            ("/x/a.qcow2", DiskFormat::Qcow2),
            ("/x/a.QCOW2", DiskFormat::Qcow2),
            ("/x/a.img", DiskFormat::Raw),
            ("/x/a.raw", DiskFormat::Raw),
            ("a.vmdk", DiskFormat::Vmdk),
        ] {
            d.file = Some(f.into());
            assert_eq!(disk_format(&d).unwrap(), want, "{f}");
        }
        d.file = Some("/x/disk".into());
        assert!(disk_format(&d)
            .unwrap_err()
            .to_string()
            .contains("VmDisk.format"));
        d.format = Some(DiskFormat::Raw);
        assert_eq!(disk_format(&d).unwrap(), DiskFormat::Raw);
        d.file = None;
        assert!(disk_file(&d)
            .unwrap_err()
            .to_string()
            .contains("no image file"));
    }

    #[test]
    fn vm_checks() {
        use p2v_protocol::inventory::FirmwareKind::Bios;
        let ok = testutil::vm("virtio", Bios);
        check_vm(&ok).unwrap();
        type Case = (Box<dyn Fn(&mut VmSpec)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                Box::new(|v| v.name = "a\u{1b}[31m".into()),
                "control character",
            ),
            (Box::new(|v| v.name = String::new()), "empty"),
            (Box::new(|v| v.name = "x".repeat(201)), "at most"),
            (Box::new(|v| v.cpus = 0), "vCPUs"),
            (Box::new(|v| v.memory_mib = 1), "MiB"),
            (Box::new(|v| v.disks.clear()), "no disk"),
            (
                Box::new(|v| v.disks[1].bus = crate::profile::DiskBus::Sata),
                "buses",
            ),
            (
                Box::new(|v| {
                    let d = v.disks[0].clone();
                    v.disks.resize(MAX_DISKS + 1, d)
                }),
                "at most",
            ),
        ];
        for (edit, want) in cases {
            let mut v = ok.clone();
            edit(&mut v);
            let e = check_vm(&v).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
