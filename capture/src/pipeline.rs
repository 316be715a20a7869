//! The read → hash → compress stages of a disk capture, on threads, overlapping with the upload.
//!
//! ```text
//!  reader thread ──(bounded)──▶ N worker threads ──(bounded)──▶ uploader tasks (async, K conns)
//!  sequential pread              BLAKE3, zero test,              PUT /v1/disks/{id}/chunks/{off}
//!  of 4 MiB chunks               skip if server holds it,
//!                                zstd at the chosen level
//! ```
//!
//! The queues are bounded, so memory stays at a few chunks per stage and a slow network slows
//! the readers instead of filling memory. Chunks the server already holds with the same hash are
//! counted as done and never leave the machine: that is how a re-run resumes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use p2v_fsmap::Extents;
use p2v_protocol::{ChunkEncoding, ChunkGeometry, ChunkHash};

use crate::usedmap::ranges_in;
use tokio::sync::mpsc;

/// A chunk ready to be sent.
#[derive(Debug)]
pub struct PreparedChunk {
    pub offset: u64,
    pub hash: ChunkHash,
    pub encoding: ChunkEncoding,
    pub body: Bytes,
    /// Raw length of the chunk on the disk.
    pub len: u64,
}

/// Counters shared by the stages and the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes of the disk dealt with: sent and acknowledged, or found already held.
    pub done_bytes: AtomicU64,
    /// Bytes of chunk bodies acknowledged by the server (what crossed the wire).
    pub wire_bytes: AtomicU64,
    /// Bytes read from the disk (only what the filesystems use, with a map).
    pub read_bytes: AtomicU64,
    /// Raw (uncompressed) bytes of the chunks sent and acknowledged.
    pub raw_bytes_sent: AtomicU64,
    pub chunks_sent: AtomicU64,
    pub chunks_skipped: AtomicU64,
    pub chunks_zero: AtomicU64,
}

/// Settings of the preparing stages.
#[derive(Debug, Clone, Copy)]
pub struct PipelineSettings {
    pub zstd_level: i32,
    /// Threads reading the disk.
    pub readers: usize,
    pub workers: usize,
    /// Capacity of the queue towards the uploaders.
    pub upload_queue: usize,
}

/// Chunks read from the disk, by index, on their way to the workers.
/// `None` data: the map covers nothing of the chunk, so it is zeros without being read.
type RawChunks = Receiver<Result<(u64, Option<Vec<u8>>), ReadError>>;

/// A failure of the reading stage.
#[derive(Debug, thiserror::Error)]
#[error("reading {path} at offset {offset}")]
pub struct ReadError {
    pub path: String,
    pub offset: u64,
    #[source]
    pub source: std::io::Error,
}

/// The running preparing stages of one pass over a disk.
#[derive(Debug)]
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The prepared chunks coming out of a [`Pipeline`], in no particular order.
pub type PreparedChunks = mpsc::Receiver<Result<PreparedChunk, ReadError>>;

impl Pipeline {
    /// Starts reading `file`. `held[i]` is the hash the server already holds for chunk `i`.
    /// With a `map`, only the bytes in it are read and the rest of each chunk is zeros.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        file: Arc<File>,
        path: String,
        geometry: ChunkGeometry,
        map: Option<Arc<Extents>>,
        held: Arc<Vec<Option<ChunkHash>>>,
        settings: PipelineSettings,
        counters: Arc<Counters>,
    ) -> (Self, PreparedChunks) {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = settings.workers.max(1);
        let (raw_tx, raw_rx) = sync_channel::<Result<(u64, Option<Vec<u8>>), ReadError>>(workers);
        let (out_tx, out_rx) = mpsc::channel(settings.upload_queue.max(1));
        let mut threads = Vec::new();

        // Several readers take the next chunk index from a shared counter: reads stay nearly
        // sequential, and the device sees more than one request at a time.
        let next_index = Arc::new(AtomicU64::new(0));
        // Set by a reader that failed, so that the others stop too (separate from `stop`, which
        // would make the workers drop the error before it reaches the uploaders).
        let read_failed = Arc::new(AtomicBool::new(false));
        for _ in 0..settings.readers.max(1) {
            let (file, path, map, raw_tx) =
                (file.clone(), path.clone(), map.clone(), raw_tx.clone());
            let (reader_stop, reader_counters, next_index) =
                (stop.clone(), counters.clone(), next_index.clone());
            let read_failed = read_failed.clone();
            threads.push(std::thread::spawn(move || loop {
                let index = next_index.fetch_add(1, Ordering::Relaxed);
                if index >= geometry.count()
                    || reader_stop.load(Ordering::Relaxed)
                    || read_failed.load(Ordering::Relaxed)
                {
                    return;
                }
                let offset = index * geometry.chunk_size;
                let len = geometry.len(index).expect("index within the disk") as usize;
                let nothing_to_read = map
                    .as_deref()
                    .is_some_and(|m| ranges_in(m, offset, len as u64).is_empty());
                if nothing_to_read {
                    if raw_tx.send(Ok((index, None))).is_err() {
                        return;
                    }
                    continue;
                }
                let mut buf = vec![0u8; len];
                let item = read_chunk(&file, map.as_deref(), offset, &mut buf, &reader_counters)
                    .map(|()| (index, Some(buf)))
                    .map_err(|(at, source)| ReadError {
                        path: path.clone(),
                        offset: at,
                        source,
                    });
                let failed = item.is_err();
                if raw_tx.send(item).is_err() || failed {
                    // A read error ends the pass; the other readers stop at their next chunk.
                    read_failed.store(true, Ordering::Relaxed);
                    return;
                }
            }));
        }
        drop(raw_tx);

        let raw_rx = Arc::new(Mutex::new(raw_rx));
        for _ in 0..workers {
            let raw_rx = raw_rx.clone();
            let out_tx = out_tx.clone();
            let held = held.clone();
            let counters = counters.clone();
            let stop = stop.clone();
            let level = settings.zstd_level;
            threads.push(std::thread::spawn(move || {
                worker(&raw_rx, &out_tx, &held, &counters, &stop, geometry, level);
            }));
        }
        (Self { stop, threads }, out_rx)
    }

    /// Stops the stages and waits for the threads. Call it once the [`PreparedChunks`] receiver
    /// is dropped (or drained), so that no thread stays blocked on a full queue.
    pub fn join(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Reads into `buf` (zeroed) the bytes of the chunk at `offset` that `map` covers (all of it
/// without a map). Nearby ranges are read in one call and the gaps zeroed again, so a
/// fragmented bitmap does not cost a system call per block.
fn read_chunk(
    file: &File,
    map: Option<&Extents>,
    offset: u64,
    buf: &mut [u8],
    counters: &Counters,
) -> Result<(), (u64, std::io::Error)> {
    const MERGE_GAP: u64 = 256 * 1024;
    let Some(map) = map else {
        counters
            .read_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        return file.read_exact_at(buf, offset).map_err(|e| (offset, e));
    };
    let ranges = ranges_in(map, offset, buf.len() as u64);
    let mut i = 0;
    while i < ranges.len() {
        let (start, _) = ranges[i];
        let mut j = i;
        while j + 1 < ranges.len() && ranges[j + 1].0 - (ranges[j].0 + ranges[j].1) <= MERGE_GAP {
            j += 1;
        }
        let end = ranges[j].0 + ranges[j].1;
        let span = &mut buf[start as usize..end as usize];
        file.read_exact_at(span, offset + start)
            .map_err(|e| (offset + start, e))?;
        counters
            .read_bytes
            .fetch_add(end - start, Ordering::Relaxed);
        for k in i..j {
            let gap_from = (ranges[k].0 + ranges[k].1) as usize;
            let gap_to = ranges[k + 1].0 as usize;
            buf[gap_from..gap_to].fill(0);
        }
        i = j + 1;
    }
    Ok(())
}

fn worker(
    raw_rx: &Mutex<RawChunks>,
    out_tx: &mpsc::Sender<Result<PreparedChunk, ReadError>>,
    held: &[Option<ChunkHash>],
    counters: &Counters,
    stop: &AtomicBool,
    geometry: ChunkGeometry,
    level: i32,
) {
    let mut compressor = chunk_compressor(level, geometry.chunk_size);
    let full_zero_hash = ChunkHash::of_zeros(geometry.chunk_size as usize);
    loop {
        let next = raw_rx.lock().expect("reader queue lock").recv();
        let Ok(item) = next else { return };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (index, data) = match item {
            Ok(v) => v,
            Err(e) => {
                let _ = out_tx.blocking_send(Err(e));
                return;
            }
        };
        let offset = index * geometry.chunk_size;
        let len = geometry.len(index).expect("index within the disk");
        let zero = data.as_deref().is_none_or(is_all_zero);
        let hash = if zero {
            if len == geometry.chunk_size {
                full_zero_hash
            } else {
                ChunkHash::of_zeros(len as usize)
            }
        } else {
            ChunkHash::of(data.as_deref().expect("not zero, so read"))
        };
        if held.get(index as usize).copied().flatten() == Some(hash) {
            counters.chunks_skipped.fetch_add(1, Ordering::Relaxed);
            counters.done_bytes.fetch_add(len, Ordering::Relaxed);
            continue;
        }
        let (encoding, body) = if zero {
            counters.chunks_zero.fetch_add(1, Ordering::Relaxed);
            (ChunkEncoding::Zero, Bytes::new())
        } else {
            let data = data.expect("not zero, so read");
            match compressor.as_mut().and_then(|c| c.compress(&data).ok()) {
                Some(packed) if packed.len() < data.len() => {
                    (ChunkEncoding::Zstd, Bytes::from(packed))
                }
                _ => (ChunkEncoding::Raw, Bytes::from(data)),
            }
        };
        let chunk = PreparedChunk {
            offset,
            hash,
            encoding,
            body,
            len,
        };
        if out_tx.blocking_send(Ok(chunk)).is_err() {
            return;
        }
    }
}

/// The zstd level the agent uses unless told otherwise.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// A compressor for whole chunks at `level`, or `None` when zstd cannot make one (the chunks
/// then go raw).
///
/// zstd picks a level's window and match tables for a source of unknown or any size; a chunk is
/// one known, independent source, so the window is widened to the whole chunk (zstd's level 3
/// keeps 2 MiB of a 4 MiB chunk). At the default level the hash and chain tables are also those
/// of zstd's level 4 and one step more (2^19 and 2^18 entries): on the benchmark's disks that
/// sends 1-2.5% fewer bytes than plain level 3 for about a quarter more compression time, which
/// the capture has to spare (it waits on the disk more than on the compressor) and which a
/// network slower than the disk pays back. Tuning that zstd refuses is logged and skipped.
fn chunk_compressor(level: i32, chunk_size: u64) -> Option<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut compressor = zstd::bulk::Compressor::new(level).ok()?;
    let window_log = chunk_size
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .clamp(10, 27);
    let mut tuning = vec![CParameter::WindowLog(window_log)];
    if level == DEFAULT_ZSTD_LEVEL {
        tuning.extend([CParameter::HashLog(19), CParameter::ChainLog(18)]);
    }
    for parameter in tuning {
        if let Err(e) = compressor.set_parameter(parameter) {
            tracing::debug!("zstd refused {parameter:?}: {e}");
        }
    }
    Some(compressor)
}

/// True when every byte is zero (eight bytes at a time).
pub fn is_all_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(8);
    words
        .by_ref()
        .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_all_zero(&[]));
        assert!(is_all_zero(&[0; 4099]));
        let mut v = vec![0u8; 4099];
        v[4098] = 1;
        assert!(!is_all_zero(&v));
        v[4098] = 0;
        v[7] = 1;
        assert!(!is_all_zero(&v));
    }

    /// The tuned compressor must stay plain zstd: any decoder (the server's bounded one
    /// included) reads its frames, and repeats more than the default window apart are found.
    #[test]
    fn chunk_compressor_widens_the_window_to_the_chunk() {
        let chunk = 4usize << 20;
        // 1.25 MiB of noise, 1.25 MiB of other noise, then the first part again: a match
        // 2.5 MiB back, beyond level 3's own 2 MiB window.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        let first = noise(5 << 18);
        let mut data = first.clone();
        data.extend(noise(5 << 18));
        data.extend(&first);
        data.resize(chunk, 0);
        let tuned = chunk_compressor(DEFAULT_ZSTD_LEVEL, chunk as u64)
            .unwrap()
            .compress(&data)
            .unwrap();
        let plain = zstd::bulk::compress(&data, DEFAULT_ZSTD_LEVEL).unwrap();
        assert_eq!(zstd::bulk::decompress(&tuned, chunk).unwrap(), data);
        assert!(
            tuned.len() + (1 << 20) < plain.len(),
            "tuned {} bytes, plain {}",
            tuned.len(),
            plain.len()
        );
        // Other levels and odd chunk sizes still give valid frames.
        for (level, size) in [(1, 1usize << 20), (19, 3 << 20), (3, 4096)] {
            let part = &data[..size];
            let packed = chunk_compressor(level, size as u64)
                .unwrap()
                .compress(part)
                .unwrap();
            assert_eq!(zstd::bulk::decompress(&packed, size).unwrap(), part);
        }
    }
}
