//! Any bytes as an exFAT area: the map is an answer or an error, never a panic, a hang or an
//! unbounded allocation, and an answer stays inside the area. Run:
//! `cargo +nightly fuzz run fsmap_exfat`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((capture, used)) = p2v_fsmap::exfat::used(data) {
        assert!(capture
            .ranges()
            .iter()
            .all(|&(s, l)| s + l <= data.len() as u64));
        assert!(used.is_none_or(|u| u <= data.len() as u64));
    }
});
