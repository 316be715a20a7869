//! Recognizing the boot medium, so it is never captured: the USB stick's GPT carries a
//! partition named [`MEDIUM_PARTITION_NAME`], and its boot loader passes the stick's GPT disk
//! GUID as `p2v.medium=`. The GPT header and entries are read per the UEFI specification
//! (2.10, section 5.3: header at LBA 1, entries of `entry size` bytes from `entries LBA`).

/// The name of the stick's ESP, written by `p2v-image`.
pub const MEDIUM_PARTITION_NAME: &str = "P2V-BOOT";

/// What identifies a disk's GPT: its disk GUID (lowercase, dashed) and partition names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptIdentity {
    pub disk_guid: String,
    pub partition_names: Vec<String>,
}

/// Formats a GUID stored in the mixed-endian layout of the UEFI spec.
pub fn guid_string(b: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses the start of a disk (at least the first 64 KiB) with the given sector size.
/// Entries beyond the bytes given are not read.
pub fn parse_gpt(head: &[u8], sector: usize) -> Option<GptIdentity> {
    let h = head.get(sector..sector + 92)?;
    if &h[0..8] != b"EFI PART" {
        return None;
    }
    let guid: [u8; 16] = h[56..72].try_into().ok()?;
    let entries_lba = le64(h, 72) as usize;
    let count = le32(h, 80) as usize;
    let size = le32(h, 84) as usize;
    if size < 128 {
        return None;
    }
    let mut names = Vec::new();
    for i in 0..count.min(256) {
        let at = entries_lba.checked_mul(sector)? + i * size;
        let Some(e) = head.get(at..at + 128) else {
            break;
        };
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        names.push(String::from_utf16_lossy(&units));
    }
    Some(GptIdentity {
        disk_guid: guid_string(&guid),
        partition_names: names,
    })
}

/// Whether a disk with this GPT is the boot medium.
pub fn is_medium(id: &GptIdentity, medium_guid: Option<&str>) -> bool {
    medium_guid.is_some_and(|g| g.eq_ignore_ascii_case(&id.disk_guid))
        || id
            .partition_names
            .iter()
            .any(|n| n == MEDIUM_PARTITION_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str) -> Vec<u8> {
        let mut d = vec![0u8; 34 * 512];
        let h = &mut d[512..];
        h[0..8].copy_from_slice(b"EFI PART");
        let guid = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        h[56..72].copy_from_slice(&guid);
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        let e = &mut d[1024..1024 + 128];
        e[0] = 1;
        for (i, u) in name.encode_utf16().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        d
    }

    #[test]
    fn recognizes_the_stick() {
        let id = parse_gpt(&disk("P2V-BOOT"), 512).unwrap();
        assert_eq!(id.disk_guid, "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(id.partition_names, ["P2V-BOOT"]);
        assert!(is_medium(&id, None));
        let other = parse_gpt(&disk("root"), 512).unwrap();
        assert!(!is_medium(&other, None));
        assert!(is_medium(
            &other,
            Some("00112233-4455-6677-8899-AABBCCDDEEFF")
        ));
        assert!(!is_medium(
            &other,
            Some("00000000-4455-6677-8899-aabbccddeeff")
        ));
    }

    #[test]
    fn not_gpt() {
        assert!(parse_gpt(&vec![0u8; 4096], 512).is_none());
        assert!(parse_gpt(&[], 512).is_none());
    }
}
