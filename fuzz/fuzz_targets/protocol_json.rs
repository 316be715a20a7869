//! Any bytes as a request body the server decodes: an error or a value, never a panic.
//! Run: `cargo +nightly fuzz run protocol_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2v_protocol::api::{AnnounceDisk, FinishSession, StartSession};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<StartSession>(data);
    if let Ok(disk) = serde_json::from_slice::<AnnounceDisk>(data) {
        let _ = p2v_protocol::ChunkGeometry::new(disk.info.size_bytes, disk.chunk_size);
    }
    let _ = serde_json::from_slice::<FinishSession>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<p2v_protocol::DiskId>();
        let _ = text.parse::<p2v_protocol::ChunkHash>();
    }
});
