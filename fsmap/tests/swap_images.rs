//! Linux swap areas written by mkswap (4 KiB and 64 KiB pages, with a label and UUID): only
//! the header page is captured, and it holds what `blkid`/`swaplabel` read back.

use std::fs;
use std::process::Command;

use p2v_fsmap::{analyze, Content};

#[test]
fn only_the_header_page() {
    for page in [4096u64, 65536] {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("swap");
        fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
        let ps = page.to_string();
        let st = Command::new("mkswap")
            .args(["-q", "-L", "p2vswap", "-p", &ps])
            .arg(&img)
            .status()
            .expect("mkswap installed");
        assert!(st.success());
        let mut v = fs::read(&img).unwrap();
        // Old data in the rest of the area.
        v[page as usize..].fill(0xAA);
        let a = analyze(v.as_slice());
        assert_eq!(a.content, Content::Swap);
        assert_eq!(a.fallback, None);
        assert_eq!(a.capture.ranges(), &[(0, page)]);
        assert_eq!(a.fs_used_bytes, Some(page));
        // The captured page alone still carries the label and UUID.
        let mut only = v[..page as usize].to_vec();
        only.resize(v.len(), 0);
        fs::write(&img, &only).unwrap();
        let out = Command::new("swaplabel").arg(&img).output().unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.contains("LABEL: p2vswap") && out.contains("UUID:"),
            "{out}"
        );
    }
}
