//! Any bytes as an area to detect and analyze (detection, then whichever parser the signature
//! selects, swap included): never a panic, a hang or an unbounded allocation, and the capture
//! stays inside the area. Run: `cargo +nightly fuzz run fsmap_detect`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = p2v_fsmap::detect(data);
    let a = p2v_fsmap::analyze(data);
    assert!(a
        .capture
        .ranges()
        .iter()
        .all(|&(s, l)| s + l <= data.len() as u64));
    if a.fallback.is_some() {
        assert_eq!(a.capture.total(), data.len() as u64);
    }
});
