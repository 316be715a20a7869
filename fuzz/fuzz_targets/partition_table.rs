//! Any bytes as a disk: the partition-table reader answers with a table or an error, never a
//! panic, a hang or an unbounded allocation. Run: `cargo +nightly fuzz run partition_table`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for sector_size in [512, 4096] {
        let mut disk = std::io::Cursor::new(data);
        let _ = p2v_capture::layout::read_partition_table(&mut disk, sector_size);
    }
});
