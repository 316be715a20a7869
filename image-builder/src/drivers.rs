//! The list of drivers the image carries lives in `image-builder/drivers.txt` (one readable
//! place, embedded at build time); this module parses it.

/// The driver list shipped with the builder.
pub const DRIVERS_TXT: &str = include_str!("../drivers.txt");

/// Module names in a driver list: one per line, `#` comments, blanks ignored, `-` as `_`.
pub fn parse(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.replace('-', "_"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn list() {
        assert_eq!(
            super::parse("# c\nahci\n\n usb-storage # the stick\n"),
            ["ahci", "usb_storage"]
        );
        let all = super::parse(super::DRIVERS_TXT);
        for must in [
            "ahci",
            "nvme",
            "virtio_blk",
            "megaraid_sas",
            "usb_storage",
            "e1000",
            "mlx5_core",
            "vmxnet3",
        ] {
            assert!(all.iter().any(|m| m == must), "{must}");
        }
    }
}
