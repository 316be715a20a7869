//! Any bytes as an LVM2 PV: the map is an answer or an error, never a panic, a hang or an
//! unbounded allocation. Run: `cargo +nightly fuzz run fsmap_lvm`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((capture, _)) = p2v_fsmap::lvm::used(data) {
        assert!(capture
            .ranges()
            .iter()
            .all(|&(s, l)| s + l <= data.len() as u64));
    }
    // The text parser alone, on any bytes.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = p2v_fsmap::lvm::parse_text(text);
    }
});
