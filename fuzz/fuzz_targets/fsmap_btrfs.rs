//! Any bytes as a btrfs device: the map is an answer or an error, never a panic, a hang or an
//! unbounded allocation. Run: `cargo +nightly fuzz run fsmap_btrfs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((capture, _)) = p2v_fsmap::btrfs::used(data) {
        assert!(capture
            .ranges()
            .iter()
            .all(|&(s, l)| s + l <= data.len() as u64));
    }
});
