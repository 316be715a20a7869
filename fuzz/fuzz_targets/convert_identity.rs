//! File-system identity (UUID, label) from the first bytes of a partition: no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = p2v_fsmap::identity::identity(data);
});
