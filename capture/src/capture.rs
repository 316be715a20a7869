//! One capture session: announce the machine, then for each disk announce it, learn which chunks
//! the server holds, send the rest through the pipeline, and ask the server to verify the disk.
//!
//! A pass over a disk reads every chunk and sends those the server does not hold with the same
//! hash. After the pass the server re-reads the whole image and checks every chunk's hash; if it
//! answers that chunks are missing or failed verification (409), another pass sends just those.
//! The first pass of a re-run after any interruption is therefore the resume.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use p2v_protocol::api::{
    paths, AnnounceDisk, DiskAccepted, DiskCompleted, ErrorCode, FinishSession, SessionStarted,
    StartSession,
};
use p2v_protocol::chunk::{HEADER_CHUNK_ENCODING, HEADER_CHUNK_HASH, HEADER_SESSION};
use p2v_protocol::inventory::Inventory;
use p2v_protocol::layout::{CaptureMap, PartitionTable};
use p2v_protocol::{
    ChunkGeometry, ChunkHash, DiskId, GeometryError, MachineId, SessionId, CHUNK_SIZE,
};
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::api::{error_chain, ApiClient, ApiError, ServerAccess};
use crate::disks::OpenDisk;
use crate::layout::read_partition_table;
use crate::pipeline::{Counters, Pipeline, PipelineSettings, PreparedChunk, ReadError};
use crate::progress::{progress_line, ProgressDisplay, ProgressMode};
use crate::usedmap;

/// How to run a capture.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub access: ServerAccess,
    pub pipeline: PipelineSettings,
    /// Parallel HTTPS connections for chunk uploads.
    pub connections: usize,
    /// Overrides the machine key derived from the inventory.
    pub machine_key: Option<String>,
    pub progress: ProgressMode,
    /// Passes over a disk before giving up when the server keeps rejecting verification.
    pub max_passes: u32,
    /// Read every byte instead of only what the filesystems use.
    pub whole_disk: bool,
}

/// What happened to one disk.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    pub name: String,
    pub path: String,
    pub disk_id: DiskId,
    pub size_bytes: u64,
    pub chunks: u64,
    pub chunks_sent: u64,
    pub chunks_skipped: u64,
    pub chunks_zero: u64,
    /// Chunk bytes sent and acknowledged, as they crossed the wire (compressed).
    pub wire_bytes: u64,
    /// Raw bytes of the chunks that were sent (not held by the server already).
    pub raw_bytes_sent: u64,
    pub passes: u32,
    pub seconds: f64,
    /// Bytes read from the disk over all passes.
    pub read_bytes: u64,
    pub layout: PartitionTable,
    pub capture_map: CaptureMap,
}

/// What happened in the whole session.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureReport {
    pub server: String,
    pub machine_id: MachineId,
    pub session_id: SessionId,
    pub disks: Vec<DiskReport>,
}

/// Errors of a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("starting the capture session on the server")]
    Start(#[source] ApiError),
    #[error("capturing {disk}")]
    Disk {
        disk: String,
        #[source]
        source: DiskCaptureError,
    },
}

impl CaptureError {
    /// The API error at the root, if any (to give the operator a hint).
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Start(e) => Some(e),
            Self::Disk { source, .. } => match source {
                DiskCaptureError::Announce(e)
                | DiskCaptureError::ChunkList(e)
                | DiskCaptureError::Complete(e)
                | DiskCaptureError::Upload { source: e, .. } => Some(e),
                _ => None,
            },
        }
    }
}

/// Errors capturing one disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskCaptureError {
    #[error("announcing the disk")]
    Announce(#[source] ApiError),
    #[error("the disk's geometry")]
    Geometry(#[source] GeometryError),
    #[error("fetching the list of chunks the server holds")]
    ChunkList(#[source] ApiError),
    #[error("the server's chunk list has {got} bytes, expected {expected}")]
    BadChunkList { expected: u64, got: u64 },
    #[error("sending the chunk at offset {offset}")]
    Upload {
        offset: u64,
        #[source]
        source: ApiError,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("asking the server to verify the disk")]
    Complete(#[source] ApiError),
    #[error("the server still rejected the disk after {0} passes")]
    NotConverging(u32),
    #[error("a pipeline task failed: {0}")]
    Task(String),
}

/// Runs a capture of `disks` for the machine described by `inventory`.
pub async fn capture(
    options: &CaptureOptions,
    inventory: Inventory,
    disks: Vec<OpenDisk>,
) -> Result<CaptureReport, CaptureError> {
    let mut api = ApiClient::new(options.access.clone()).map_err(CaptureError::Start)?;
    let machine_key = options
        .machine_key
        .clone()
        .unwrap_or_else(|| crate::inventory::machine_key(&inventory));
    let started: SessionStarted = api
        .json(
            Method::POST,
            paths::SESSIONS,
            &StartSession {
                protocol_version: p2v_protocol::PROTOCOL_VERSION,
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                machine_key,
                inventory,
            },
        )
        .await
        .map_err(CaptureError::Start)?;
    tracing::info!(
        "session {} for machine {}{}",
        started.session_id,
        started.machine_id,
        if started.known_machine {
            " (known machine: resuming)"
        } else {
            ""
        }
    );
    let mut reports = Vec::new();
    for disk in disks {
        let name = disk.info.path.clone();
        match capture_disk(options, &mut api, started.session_id, disk).await {
            Ok(report) => reports.push(report),
            Err(source) => {
                let error = CaptureError::Disk { disk: name, source };
                let finish = FinishSession {
                    disks_completed: reports.iter().map(|r| r.disk_id).collect(),
                    error: Some(error_chain(&error)),
                };
                // Best effort: the server may be the thing that failed.
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    api.json::<_, serde_json::Value>(
                        Method::POST,
                        &paths::session_finish(started.session_id),
                        &finish,
                    ),
                )
                .await;
                return Err(error);
            }
        }
    }
    let finish = FinishSession {
        disks_completed: reports.iter().map(|r| r.disk_id).collect(),
        error: None,
    };
    if let Err(e) = api
        .json::<_, serde_json::Value>(
            Method::POST,
            &paths::session_finish(started.session_id),
            &finish,
        )
        .await
    {
        tracing::warn!(
            "could not mark the session finished (the disks are complete): {}",
            error_chain(&e)
        );
    }
    Ok(CaptureReport {
        server: options.access.url.to_string(),
        machine_id: started.machine_id,
        session_id: started.session_id,
        disks: reports,
    })
}

async fn capture_disk(
    options: &CaptureOptions,
    api: &mut ApiClient,
    session: SessionId,
    disk: OpenDisk,
) -> Result<DiskReport, DiskCaptureError> {
    let started = Instant::now();
    let OpenDisk { file, info } = disk;
    let sector_size = info.logical_sector_size;
    let size = info.size_bytes;
    let whole_disk = options.whole_disk;
    let (file, layout, map) = tokio::task::spawn_blocking(move || {
        let mut file = file;
        let (layout, readable) = match read_partition_table(&mut file, sector_size) {
            Ok(layout) => (layout, true),
            Err(e) => {
                tracing::warn!(
                    "partition table unreadable, capturing the whole disk as is: {}",
                    error_chain(&e)
                );
                (PartitionTable::None, false)
            }
        };
        let map = if whole_disk || !readable {
            usedmap::whole_disk(size)
        } else {
            usedmap::map_disk(&file, size, &layout)
        };
        (file, layout, map)
    })
    .await
    .map_err(|e| DiskCaptureError::Task(e.to_string()))?;
    print_map(&info.path, &map.report);
    let capture_ranges = map.capture.clone().map(Arc::new);
    let geometry =
        ChunkGeometry::new(info.size_bytes, CHUNK_SIZE).map_err(DiskCaptureError::Geometry)?;
    let accepted: DiskAccepted = api
        .json(
            Method::POST,
            &paths::session_disks(session),
            &AnnounceDisk {
                disk_key: info.stable_key(),
                info: info.clone(),
                chunk_size: CHUNK_SIZE,
                layout: layout.clone(),
                capture_map: Some(map.report.clone()),
            },
        )
        .await
        .map_err(DiskCaptureError::Announce)?;
    tracing::info!(
        "{}: disk {} ({}, {} of {} chunks already on the server)",
        info.path,
        accepted.disk_id,
        crate::progress::human_bytes(info.size_bytes),
        accepted.durable_chunks,
        accepted.chunk_count
    );
    let file = Arc::new(file);
    let totals = Counters::default();
    let mut passes = 0;
    loop {
        passes += 1;
        if passes > options.max_passes {
            return Err(DiskCaptureError::NotConverging(options.max_passes));
        }
        let held = fetch_held(api, accepted.disk_id, geometry).await?;
        let counters = Arc::new(Counters::default());
        let display = ProgressDisplay::start(
            options.progress,
            info.name.clone(),
            info.size_bytes,
            counters.clone(),
        );
        let pass_started = Instant::now();
        let result = run_pass(
            options,
            session,
            accepted.disk_id,
            file.clone(),
            &info.path,
            geometry,
            capture_ranges.clone(),
            held,
            counters.clone(),
        )
        .await;
        drop(display);
        for (total, pass) in [
            (&totals.wire_bytes, &counters.wire_bytes),
            (&totals.raw_bytes_sent, &counters.raw_bytes_sent),
            (&totals.read_bytes, &counters.read_bytes),
            (&totals.chunks_sent, &counters.chunks_sent),
            (&totals.chunks_skipped, &counters.chunks_skipped),
            (&totals.chunks_zero, &counters.chunks_zero),
        ] {
            total.fetch_add(pass.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        result?;
        if options.progress != ProgressMode::Off {
            eprintln!(
                "{}",
                progress_line(
                    &info.name,
                    counters.done_bytes.load(Ordering::Relaxed),
                    info.size_bytes,
                    pass_started.elapsed(),
                    counters.wire_bytes.load(Ordering::Relaxed)
                )
            );
        }
        match api
            .json::<_, DiskCompleted>(
                Method::POST,
                &paths::disk_complete(accepted.disk_id),
                &serde_json::json!({}),
            )
            .await
        {
            Ok(done) => {
                tracing::info!(
                    "{}: verified by the server ({} chunks)",
                    info.path,
                    done.verified_chunks
                );
                break;
            }
            Err(e) if e.code() == Some(ErrorCode::Conflict) => {
                tracing::warn!(
                    "{}: {}; sending what is missing",
                    info.path,
                    error_chain(&e)
                );
            }
            Err(e) => return Err(DiskCaptureError::Complete(e)),
        }
    }
    Ok(DiskReport {
        name: info.name,
        path: info.path,
        disk_id: accepted.disk_id,
        size_bytes: info.size_bytes,
        chunks: geometry.count(),
        chunks_sent: totals.chunks_sent.load(Ordering::Relaxed),
        chunks_skipped: totals.chunks_skipped.load(Ordering::Relaxed),
        chunks_zero: totals.chunks_zero.load(Ordering::Relaxed),
        wire_bytes: totals.wire_bytes.load(Ordering::Relaxed),
        raw_bytes_sent: totals.raw_bytes_sent.load(Ordering::Relaxed),
        passes,
        seconds: started.elapsed().as_secs_f64(),
        read_bytes: totals.read_bytes.load(Ordering::Relaxed),
        layout,
        capture_map: map.report,
    })
}

/// The capture report of a disk on the console: one line per partition or volume.
fn print_map(path: &str, map: &CaptureMap) {
    use crate::progress::human_bytes;
    for area in &map.areas {
        let name = match (&area.volume, area.partition) {
            (Some(v), _) => format!("  LV {v}"),
            (None, Some(n)) => format!("partition {n}"),
            (None, None) => "whole disk".to_string(),
        };
        tracing::info!(
            "{path} {name}: {} of {}, in use {}, captured {}{}",
            area.content,
            human_bytes(area.size_bytes),
            area.fs_used_bytes
                .map(human_bytes)
                .unwrap_or_else(|| "?".into()),
            human_bytes(area.captured_bytes),
            area.fallback
                .as_deref()
                .map(|f| format!(" (whole area: {f})"))
                .unwrap_or_default()
        );
    }
    tracing::info!(
        "{path}: capturing {} ({} outside filesystems)",
        human_bytes(map.captured_bytes),
        human_bytes(map.outside_bytes)
    );
}

/// The hashes of the chunks the server holds durably.
async fn fetch_held(
    api: &mut ApiClient,
    disk: DiskId,
    geometry: ChunkGeometry,
) -> Result<Arc<Vec<Option<ChunkHash>>>, DiskCaptureError> {
    let response = api
        .send(Method::GET, &paths::disk_chunks(disk), &[], Bytes::new())
        .await
        .map_err(DiskCaptureError::ChunkList)?;
    let expected = geometry.count() * 32;
    if response.body.len() as u64 != expected {
        return Err(DiskCaptureError::BadChunkList {
            expected,
            got: response.body.len() as u64,
        });
    }
    let held = response
        .body
        .chunks_exact(32)
        .map(|h| {
            let hash: [u8; 32] = h.try_into().expect("32 bytes");
            (hash != [0; 32]).then_some(ChunkHash(hash))
        })
        .collect();
    Ok(Arc::new(held))
}

#[allow(clippy::too_many_arguments)]
async fn run_pass(
    options: &CaptureOptions,
    session: SessionId,
    disk: DiskId,
    file: Arc<File>,
    path: &str,
    geometry: ChunkGeometry,
    map: Option<Arc<p2v_fsmap::Extents>>,
    held: Arc<Vec<Option<ChunkHash>>>,
    counters: Arc<Counters>,
) -> Result<(), DiskCaptureError> {
    let (pipeline, chunks) = Pipeline::start(
        file,
        path.to_string(),
        geometry,
        map,
        held,
        options.pipeline,
        counters.clone(),
    );
    let chunks = Arc::new(Mutex::new(chunks));
    let mut uploaders = JoinSet::new();
    for _ in 0..options.connections.max(1) {
        let chunks = chunks.clone();
        let counters = counters.clone();
        let access = options.access.clone();
        uploaders.spawn(async move {
            let mut api = ApiClient::new(access)
                .map_err(|source| DiskCaptureError::Upload { offset: 0, source })?;
            loop {
                let next = chunks.lock().await.recv().await;
                match next {
                    None => return Ok(()),
                    Some(Err(read)) => return Err(DiskCaptureError::Read(read)),
                    Some(Ok(chunk)) => {
                        send_chunk(&mut api, session, disk, &chunk).await?;
                        counters.chunks_sent.fetch_add(1, Ordering::Relaxed);
                        counters
                            .wire_bytes
                            .fetch_add(chunk.body.len() as u64, Ordering::Relaxed);
                        counters
                            .raw_bytes_sent
                            .fetch_add(chunk.len, Ordering::Relaxed);
                        counters.done_bytes.fetch_add(chunk.len, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    drop(chunks);
    let mut outcome = Ok(());
    while let Some(joined) = uploaders.join_next().await {
        let result = joined.unwrap_or_else(|e| Err(DiskCaptureError::Task(e.to_string())));
        if let Err(e) = result {
            if outcome.is_ok() {
                outcome = Err(e);
            }
            uploaders.abort_all();
        }
    }
    // Every receiver is gone now, so the threads cannot block; wait for them off the runtime.
    tokio::task::spawn_blocking(move || pipeline.join())
        .await
        .map_err(|e| DiskCaptureError::Task(e.to_string()))?;
    outcome
}

async fn send_chunk(
    api: &mut ApiClient,
    session: SessionId,
    disk: DiskId,
    chunk: &PreparedChunk,
) -> Result<(), DiskCaptureError> {
    let headers = [
        (HEADER_CHUNK_HASH, chunk.hash.to_hex()),
        (HEADER_CHUNK_ENCODING, chunk.encoding.as_str().to_string()),
        (HEADER_SESSION, session.to_string()),
        ("content-type", "application/octet-stream".to_string()),
    ];
    api.send(
        Method::PUT,
        &paths::disk_chunk(disk, chunk.offset),
        &headers,
        chunk.body.clone(),
    )
    .await
    .map(|_| ())
    .map_err(|source| DiskCaptureError::Upload {
        offset: chunk.offset,
        source,
    })
}
