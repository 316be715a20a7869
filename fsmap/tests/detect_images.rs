//! Detection on images written by the real tools: every mkfs gives the content it names.

use std::fs;
use std::process::Command;

use p2v_fsmap::{detect, Content};

fn make(cmd: &str, args: &[&str], mib: u64) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
    let out = Command::new(cmd)
        .args(args)
        .arg(&img)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read(&img).unwrap()
}

#[test]
fn every_mkfs_is_recognized() {
    let cases: Vec<(&str, &[&str], u64, Content)> = vec![
        ("mkfs.ext2", &["-q", "-F"], 8, Content::Ext { version: 2 }),
        ("mkfs.ext3", &["-q", "-F"], 8, Content::Ext { version: 3 }),
        ("mkfs.ext4", &["-q", "-F"], 8, Content::Ext { version: 4 }),
        ("mkfs.fat", &["-F", "12"], 4, Content::Fat { bits: 12 }),
        ("mkfs.fat", &["-F", "16"], 16, Content::Fat { bits: 16 }),
        (
            "mkfs.fat",
            &["-F", "32", "-s", "1"],
            40,
            Content::Fat { bits: 32 },
        ),
        ("mkfs.exfat", &[], 8, Content::Exfat),
        ("mkswap", &["-q"], 4, Content::Swap),
    ];
    for (cmd, args, mib, want) in cases {
        let v = make(cmd, args, mib);
        assert_eq!(detect(v.as_slice()).unwrap(), want, "{cmd} {args:?}");
        // Cut short, the same bytes are never a panic.
        for len in [0, 100, 511, 1024, 1090, 4095, 4096] {
            let _ = detect(&v[..len]);
        }
    }
}

#[test]
fn a_stale_swap_signature_under_a_new_fat_is_refused() {
    // The first 2 KiB of a new FAT16 written over an old swap area whose signature at 4086
    // is left in place: two signatures, so detection refuses rather than trust either.
    let mut v = make("mkswap", &["-q"], 16);
    let fat = make("mkfs.fat", &["-F", "16", "-R", "4"], 16);
    v[..2048].copy_from_slice(&fat[..2048]);
    assert!(detect(v.as_slice()).is_err());
}
