//! Kernel uevents as they arrive on a `NETLINK_KOBJECT_UEVENT` socket (group 1): a header
//! `ACTION@DEVPATH` then `KEY=VALUE` fields, all NUL-terminated (see
//! `Documentation/ABI/testing/sysfs-uevent` and `lib/kobject_uevent.c`). Messages from udev's
//! own group start with `libudev` and are ignored.

use std::collections::BTreeMap;

/// One kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub fields: BTreeMap<String, String>,
}

impl Uevent {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    pub fn modalias(&self) -> Option<&str> {
        self.get("MODALIAS")
    }

    pub fn subsystem(&self) -> Option<&str> {
        self.get("SUBSYSTEM")
    }
}

/// Parses one datagram; None when it is not a kernel uevent.
pub fn parse(buf: &[u8]) -> Option<Uevent> {
    let mut parts = buf.split(|&b| b == 0).filter(|p| !p.is_empty());
    let header = std::str::from_utf8(parts.next()?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    let mut fields = BTreeMap::new();
    for part in parts {
        let Ok(s) = std::str::from_utf8(part) else {
            continue;
        };
        if let Some((k, v)) = s.split_once('=') {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    Some(Uevent {
        action: action.to_string(),
        devpath: devpath.to_string(),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_message() {
        let msg = b"add@/devices/pci0000:00/0000:00:03.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:03.0\0SUBSYSTEM=pci\0MODALIAS=pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\0SEQNUM=712\0";
        let e = parse(msg).unwrap();
        assert_eq!(e.action, "add");
        assert_eq!(e.devpath, "/devices/pci0000:00/0000:00:03.0");
        assert_eq!(e.subsystem(), Some("pci"));
        assert_eq!(
            e.modalias(),
            Some("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00")
        );
        assert_eq!(e.get("SEQNUM"), Some("712"));
    }

    #[test]
    fn not_kernel() {
        assert!(parse(b"libudev\0\xfe\xed\xca\xfe").is_none());
        assert!(parse(b"").is_none());
    }
}
