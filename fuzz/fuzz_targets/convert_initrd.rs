//! The initramfs lister (cpio newc segments, gzip/zstd) on arbitrary bytes: no panic, bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = p2v_convert::inspect::initrd::parse(data);
});
