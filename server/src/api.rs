//! The HTTP API: routing, authentication and the handlers of every endpoint of
//! `p2v_protocol::api::paths` (see `docs/protocol.md` for the sequence).
//!
//! Order of checks for every request: the path must exist (404) and take the method (405); the
//! token must be valid for the endpoint (401, before any body is read); ids in the path are
//! parsed with the protocol's id types (400); then headers and the resource (400/404); only then
//! is the body read, within its size limit.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http::header::CONTENT_DISPOSITION;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use p2v_protocol::api::{
    AnnounceDisk, ChunkAck, ConvertRequest, CreateToken, DiskCompleted, DiskState, ExportFormat,
    FinishSession, SessionStarted, StartSession, TokenCreated, MAX_JSON_BODY,
};
use p2v_protocol::chunk::{HEADER_CHUNK_ENCODING, HEADER_CHUNK_HASH, HEADER_SESSION};
use p2v_protocol::{
    ChunkEncoding, ChunkGeometry, ChunkHash, DiskId, MachineId, SessionId, PROTOCOL_VERSION,
};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::auth::{self, Access};
use crate::commit::Committer;
use crate::datadir::DataDir;
use crate::http::{
    check_json_content_type, content_length, discard_body, error_response, json_response,
    parse_json, read_body, stream_response, Body, BodyTimeouts,
};
use crate::image::{verify_chunks, Images};
use crate::server::Limits;
use crate::store::{ChunkOp, DiskRecord, Store};
use crate::util::now_secs;
use crate::{export, Error};

/// Longest machine key accepted.
const MAX_MACHINE_KEY: usize = 256;
/// Longest disk key accepted.
const MAX_DISK_KEY: usize = 512;
/// Longest token name accepted.
const MAX_TOKEN_NAME: usize = 128;
/// Chunks per piece when the chunk list is streamed or the image verified (1 MiB of hashes).
const PIECE_CHUNKS: u64 = 32 * 1024;
/// A body we answer without reading is drained up to this much, so the client sees the answer.
const DRAIN_CAP: u64 = 8 << 20;
/// Stripes of the per-chunk and per-disk locks.
const LOCK_STRIPES: usize = 1024;

/// Serializes exports of one disk in one format.
type ExportLock = Arc<tokio::sync::Mutex<()>>;

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct AppState {
    pub data: DataDir,
    pub store: Arc<Store>,
    pub images: Images,
    pub committer: Committer,
    pub limits: Limits,
    admin_hash: [u8; 32],
    /// Enrollment tokens seen valid (tokens are never revoked, so a hit stays valid).
    token_cache: Mutex<HashMap<[u8; 32], String>>,
    /// KiB of request bodies held in memory at once.
    body_budget: Semaphore,
    body_budget_kib: usize,
    /// Chunks being decompressed, hashed and written at once.
    workers: Semaphore,
    /// Disk completions re-reading images at once.
    verifications: Semaphore,
    /// Uploads of the same chunk are serialized (check, write, record).
    chunk_locks: Box<[tokio::sync::Mutex<()>]>,
    /// Completions of the same disk are serialized.
    disk_locks: Box<[tokio::sync::Mutex<()>]>,
    /// Exports of the same disk and format are serialized.
    export_locks: Mutex<HashMap<(DiskId, &'static str), ExportLock>>,
    /// Uploads still to be treated as corrupted ([`Limits::inject_corrupt_chunks`]).
    corrupt_left: std::sync::atomic::AtomicU32,
    /// How machines are converted, and which conversions are running.
    pub conversion: crate::conversion::ConversionConfig,
    pub conversions: crate::conversion::Running,
}

impl AppState {
    pub fn new(
        data: DataDir,
        store: Arc<Store>,
        committer: Committer,
        admin_token: &str,
        limits: Limits,
        conversion: crate::conversion::ConversionConfig,
    ) -> Self {
        let budget_kib = usize::try_from(limits.body_budget_bytes / 1024)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            images: Images::new(&data),
            data,
            store,
            committer,
            admin_hash: auth::token_hash(admin_token),
            token_cache: Mutex::new(HashMap::new()),
            body_budget: Semaphore::new(budget_kib),
            body_budget_kib: budget_kib,
            workers: Semaphore::new(limits.chunk_workers.max(1)),
            verifications: Semaphore::new(2),
            chunk_locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            disk_locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            export_locks: Mutex::new(HashMap::new()),
            corrupt_left: std::sync::atomic::AtomicU32::new(limits.inject_corrupt_chunks),
            limits,
            conversion,
            conversions: Default::default(),
        }
    }

    fn chunk_lock(&self, disk: DiskId, index: u64) -> &tokio::sync::Mutex<()> {
        let mix = disk.raw() ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        &self.chunk_locks[(mix.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 54) as usize % LOCK_STRIPES]
    }

    fn disk_lock(&self, disk: DiskId) -> &tokio::sync::Mutex<()> {
        &self.disk_locks
            [(disk.raw().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize % LOCK_STRIPES]
    }

    pub(crate) fn export_lock(&self, disk: DiskId, format: ExportFormat) -> ExportLock {
        let mut locks = self
            .export_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.entry((disk, format.as_str())).or_default().clone()
    }

    fn body_timeouts(&self) -> BodyTimeouts {
        BodyTimeouts {
            idle: self.limits.body_idle_timeout,
            total: self.limits.body_total_timeout,
        }
    }
}

/// A request being handled: its head, its body until a handler takes it, and the access its
/// token granted once checked.
struct Req {
    parts: http::request::Parts,
    body: Option<Incoming>,
    access: Option<Access>,
}

impl Req {
    fn take_body(&mut self) -> Result<Incoming, Error> {
        self.body
            .take()
            .ok_or_else(|| Error::Internal("request body read twice".into()))
    }
}

/// Runs a blocking closure (file or database work) on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a worker task failed: {e}")))?
}

/// Entry point of every request.
pub(crate) async fn handle(state: Arc<AppState>, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let mut req = Req {
        parts,
        body: Some(body),
        access: None,
    };
    let response = match route(&state, &mut req).await {
        Ok(response) => response,
        Err(err) => {
            let status = err.status();
            if status >= 500 {
                tracing::warn!(%method, path, status, "{}", err.api_message());
            } else {
                tracing::info!(%method, path, status, "{}", err.api_message());
            }
            // An authenticated client whose body we did not read still gets our answer.
            if req.access.is_some() {
                if let Some(body) = req.body.take() {
                    discard_body(body, DRAIN_CAP, std::time::Duration::from_secs(5)).await;
                }
            }
            error_response(&err)
        }
    };
    tracing::debug!(%method, path, status = response.status().as_u16(), elapsed = ?started.elapsed(), "request");
    response
}

/// The endpoints, with their path parameters still unparsed.
#[derive(Debug, Clone, Copy)]
enum Route<'a> {
    Health,
    Sessions,
    SessionDisks(&'a str),
    SessionFinish(&'a str),
    Machines,
    Machine(&'a str),
    MachineConversion(&'a str),
    Disks,
    Disk(&'a str),
    DiskChunks(&'a str),
    DiskChunk(&'a str, &'a str),
    DiskComplete(&'a str),
    DiskExport(&'a str),
    Tokens,
}

impl Route<'_> {
    fn resolve(path: &str) -> Option<Route<'_>> {
        let rest = path.strip_prefix("/v1/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(match segments.as_slice() {
            ["health"] => Route::Health,
            ["sessions"] => Route::Sessions,
            ["sessions", id, "disks"] => Route::SessionDisks(id),
            ["sessions", id, "finish"] => Route::SessionFinish(id),
            ["machines"] => Route::Machines,
            ["machines", id] => Route::Machine(id),
            ["machines", id, "conversion"] => Route::MachineConversion(id),
            ["disks"] => Route::Disks,
            ["disks", id] => Route::Disk(id),
            ["disks", id, "chunks"] => Route::DiskChunks(id),
            ["disks", id, "chunks", offset] => Route::DiskChunk(id, offset),
            ["disks", id, "complete"] => Route::DiskComplete(id),
            ["disks", id, "export"] => Route::DiskExport(id),
            ["tokens"] => Route::Tokens,
            _ => return None,
        })
    }

    fn allowed(self) -> &'static str {
        match self {
            Route::Sessions | Route::MachineConversion(_) => "GET, POST",
            Route::SessionDisks(_)
            | Route::SessionFinish(_)
            | Route::DiskComplete(_)
            | Route::Tokens => "POST",
            Route::DiskChunk(..) => "PUT",
            _ => "GET",
        }
    }
}

async fn route(state: &Arc<AppState>, req: &mut Req) -> Result<Response<Body>, Error> {
    let path = req.parts.uri.path().to_string();
    let route = Route::resolve(&path).ok_or_else(|| {
        Error::NotFound(format!(
            "no such endpoint: {}",
            path.chars().take(200).collect::<String>()
        ))
    })?;
    let method = req.parts.method.clone();
    use Route as R;
    match (route, &method) {
        (R::Health, &Method::GET) => Ok(json_response(&serde_json::json!({ "ok": true }))),
        (R::Sessions, &Method::POST) => {
            let token_name = authorize(state, req, Access::Agent).await?;
            start_session(state, req, token_name).await
        }
        (R::SessionDisks(id), &Method::POST) => {
            authorize(state, req, Access::Agent).await?;
            announce_disk(state, req, parse_id(id)?).await
        }
        (R::SessionFinish(id), &Method::POST) => {
            authorize(state, req, Access::Agent).await?;
            finish_session(state, req, parse_id(id)?).await
        }
        (R::DiskChunks(id), &Method::GET) => {
            authorize(state, req, Access::Agent).await?;
            chunk_list(state, parse_id(id)?).await
        }
        (R::DiskChunk(id, offset), &Method::PUT) => {
            authorize(state, req, Access::Agent).await?;
            put_chunk(state, req, parse_id(id)?, offset).await
        }
        (R::DiskComplete(id), &Method::POST) => {
            authorize(state, req, Access::Agent).await?;
            complete_disk(state, parse_id(id)?).await
        }
        (R::Sessions, &Method::GET) => {
            authorize(state, req, Access::Admin).await?;
            let store = state.store.clone();
            Ok(json_response(
                &blocking(move || store.list_sessions()).await?,
            ))
        }
        (R::Machines, &Method::GET) => {
            authorize(state, req, Access::Admin).await?;
            let store = state.store.clone();
            Ok(json_response(
                &blocking(move || store.list_machines()).await?,
            ))
        }
        (R::Machine(id), &Method::GET) => {
            authorize(state, req, Access::Admin).await?;
            let machine: MachineId = parse_id(id)?;
            let store = state.store.clone();
            let summary = blocking(move || store.machine(machine))
                .await?
                .ok_or_else(|| Error::NotFound(format!("unknown machine {machine}")))?;
            Ok(json_response(&summary))
        }
        (R::Disks, &Method::GET) => {
            authorize(state, req, Access::Admin).await?;
            let store = state.store.clone();
            Ok(json_response(&blocking(move || store.list_disks()).await?))
        }
        (R::Disk(id), &Method::GET) => {
            authorize(state, req, Access::Admin).await?;
            let disk: DiskId = parse_id(id)?;
            let record = disk_record(state, disk).await?;
            Ok(json_response(&record.summary(disk)))
        }
        (R::DiskExport(id), &Method::GET) => {
            authorize(state, req, Access::Admin).await?;
            let disk: DiskId = parse_id(id)?;
            let (format, converted) = export_query(req.parts.uri.query())?;
            export_disk(state, disk, format, converted).await
        }
        (R::MachineConversion(id), &Method::POST) => {
            authorize(state, req, Access::Admin).await?;
            let machine: MachineId = parse_id(id)?;
            let request: ConvertRequest = read_json(state, req).await?;
            let status = crate::conversion::start(state, machine, request).await?;
            let mut response = json_response(&status);
            *response.status_mut() = http::StatusCode::ACCEPTED;
            Ok(response)
        }
        (R::MachineConversion(id), &Method::GET) => {
            authorize(state, req, Access::Admin).await?;
            let machine: MachineId = parse_id(id)?;
            match crate::conversion::load_status(state, machine)? {
                Some(status) => Ok(json_response(&status)),
                None => Err(Error::NotFound(format!(
                    "machine {machine} has not been converted"
                ))),
            }
        }
        (R::Tokens, &Method::POST) => {
            authorize(state, req, Access::Admin).await?;
            create_token(state, req).await
        }
        (route, _) => Err(Error::MethodNotAllowed {
            method: method.to_string(),
            path: path.chars().take(200).collect(),
            allowed: route.allowed(),
        }),
    }
}

/// Checks the bearer token against what the endpoint needs; returns the token's name.
async fn authorize(state: &AppState, req: &mut Req, need: Access) -> Result<String, Error> {
    let token = auth::bearer_token(&req.parts.headers)?;
    let hash = auth::token_hash(token);
    let (access, name) = if auth::constant_time_eq(&hash, &state.admin_hash) {
        (Access::Admin, "admin".to_string())
    } else {
        let cached = state
            .token_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hash)
            .cloned();
        let name = match cached {
            Some(name) => name,
            None => {
                let store = state.store.clone();
                let record = blocking(move || store.token(&hash))
                    .await?
                    .ok_or_else(|| Error::Unauthorized("unknown token".into()))?;
                state
                    .token_cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(hash, record.name.clone());
                record.name
            }
        };
        (Access::Agent, name)
    };
    if need == Access::Admin && access != Access::Admin {
        return Err(Error::Unauthorized(
            "this endpoint needs the admin token (an enrollment token only lets an agent upload)"
                .into(),
        ));
    }
    req.access = Some(access);
    Ok(name)
}

fn parse_id<T: std::str::FromStr<Err = p2v_protocol::IdError>>(text: &str) -> Result<T, Error> {
    text.parse()
        .map_err(|e: p2v_protocol::IdError| Error::BadRequest(e.to_string()))
}

/// Reads and decodes a JSON request body (at most `MAX_JSON_BODY` bytes).
async fn read_json<T: DeserializeOwned>(state: &AppState, req: &mut Req) -> Result<T, Error> {
    check_json_content_type(&req.parts.headers)?;
    let limit = MAX_JSON_BODY as u64;
    if let Some(len) = content_length(&req.parts.headers)? {
        if len > limit {
            return Err(Error::BadRequest(format!(
                "the JSON body of {len} bytes is larger than the limit of {limit} bytes"
            )));
        }
    }
    let body = req.take_body()?;
    let bytes = read_body(body, limit, "JSON body", state.body_timeouts()).await?;
    parse_json(&bytes)
}

async fn disk_record(state: &AppState, disk: DiskId) -> Result<DiskRecord, Error> {
    let store = state.store.clone();
    blocking(move || store.disk(disk))
        .await?
        .ok_or_else(|| Error::NotFound(format!("unknown disk {disk}")))
}

// ---- agent endpoints ---------------------------------------------------------------------

async fn start_session(
    state: &AppState,
    req: &mut Req,
    token_name: String,
) -> Result<Response<Body>, Error> {
    let body: StartSession = read_json(state, req).await?;
    if body.protocol_version != PROTOCOL_VERSION {
        return Err(Error::BadRequest(format!(
            "protocol version {} is not supported; this server speaks version {PROTOCOL_VERSION} \
             (use an agent of the same release as the server)",
            body.protocol_version
        )));
    }
    if body.machine_key.is_empty() || body.machine_key.len() > MAX_MACHINE_KEY {
        return Err(Error::BadRequest(format!(
            "machine_key must be 1 to {MAX_MACHINE_KEY} bytes long, not {}",
            body.machine_key.len()
        )));
    }
    let store = state.store.clone();
    let (session_id, machine_id, known_machine) = blocking(move || {
        store.start_session(
            &body.machine_key,
            &body.inventory,
            &body.agent_version,
            &token_name,
            now_secs(),
        )
    })
    .await?;
    tracing::info!(%session_id, %machine_id, known_machine, "session started");
    Ok(json_response(&SessionStarted {
        session_id,
        machine_id,
        known_machine,
    }))
}

fn check_sector_size(what: &str, size: u32) -> Result<(), Error> {
    if size.is_power_of_two() && (512..=65536).contains(&size) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "{what} sector size {size} is not a power of two from 512 to 65536"
        )))
    }
}

async fn announce_disk(
    state: &AppState,
    req: &mut Req,
    session: SessionId,
) -> Result<Response<Body>, Error> {
    let body: AnnounceDisk = read_json(state, req).await?;
    ChunkGeometry::new(body.info.size_bytes, body.chunk_size)
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    check_sector_size("logical", body.info.logical_sector_size)?;
    check_sector_size("physical", body.info.physical_sector_size)?;
    if body.disk_key.is_empty() || body.disk_key.len() > MAX_DISK_KEY {
        return Err(Error::BadRequest(format!(
            "disk_key must be 1 to {MAX_DISK_KEY} bytes long, not {}",
            body.disk_key.len()
        )));
    }
    let store = state.store.clone();
    let images = state.images.clone();
    let accepted =
        blocking(move || store.announce_disk(session, &body, &images, now_secs())).await?;
    tracing::info!(%session, disk = %accepted.disk_id, chunks = accepted.chunk_count,
        durable = accepted.durable_chunks, "disk announced");
    Ok(json_response(&accepted))
}

async fn finish_session(
    state: &AppState,
    req: &mut Req,
    session: SessionId,
) -> Result<Response<Body>, Error> {
    let body: FinishSession = read_json(state, req).await?;
    if let Some(error) = &body.error {
        tracing::warn!(%session, "agent gave up: {error}");
    } else {
        tracing::info!(%session, disks = body.disks_completed.len(), "session finished");
    }
    let store = state.store.clone();
    blocking(move || store.finish_session(session, &body, now_secs())).await?;
    Ok(json_response(&serde_json::json!({ "ok": true })))
}

/// `chunk_count × 32` bytes: the hash of every durable chunk, zeros where none.
async fn chunk_list(state: &AppState, disk: DiskId) -> Result<Response<Body>, Error> {
    let record = disk_record(state, disk).await?;
    let count = record.geometry().count();
    let store = state.store.clone();
    Ok(stream_response(
        "application/octet-stream",
        count * 32,
        HeaderMap::new(),
        move |tx| {
            let mut start = 0;
            while start < count {
                let end = (start + PIECE_CHUNKS).min(count);
                let piece = store.chunk_range(disk, start, end).map(|records| {
                    let mut piece = vec![0u8; ((end - start) * 32) as usize];
                    for (index, hash) in records {
                        let at = ((index - start) * 32) as usize;
                        piece[at..at + 32].copy_from_slice(&hash.0);
                    }
                    Bytes::from(piece)
                });
                let failed = piece.is_err();
                if tx
                    .blocking_send(piece.map_err(|e| std::io::Error::other(e.api_message())))
                    .is_err()
                    || failed
                {
                    return;
                }
                start = end;
            }
        },
    ))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Error> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| Error::BadRequest(format!("header {name} is not ASCII"))),
    }
}

fn required_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Error> {
    header(headers, name)?.ok_or_else(|| Error::BadRequest(format!("missing header {name}")))
}

/// Decodes a chunk body and checks it against the announced hash. `None` means all zeros.
fn decode_chunk(
    encoding: ChunkEncoding,
    body: Vec<u8>,
    offset: u64,
    len: u64,
    expected: ChunkHash,
) -> Result<Option<Vec<u8>>, Error> {
    let data = match encoding {
        ChunkEncoding::Zero => {
            if !body.is_empty() {
                return Err(Error::BadRequest(format!(
                    "a chunk with encoding zero has an empty body, not {} bytes",
                    body.len()
                )));
            }
            None
        }
        ChunkEncoding::Raw => {
            if body.len() as u64 != len {
                return Err(Error::BadRequest(format!(
                    "a raw chunk body must hold exactly the chunk's {len} bytes, not {}",
                    body.len()
                )));
            }
            Some(body)
        }
        ChunkEncoding::Zstd => {
            let out = zstd::bulk::decompress(&body, len as usize).map_err(|e| {
                Error::BadRequest(format!(
                    "the zstd body does not decompress to at most the chunk's {len} bytes: {e}"
                ))
            })?;
            drop(body);
            if out.len() as u64 != len {
                return Err(Error::BadRequest(format!(
                    "the zstd body decompresses to {} bytes, but the chunk has {len}",
                    out.len()
                )));
            }
            Some(out)
        }
    };
    let actual = match &data {
        Some(bytes) => ChunkHash::of(bytes),
        None => ChunkHash::of_zeros(len as usize),
    };
    if actual != expected {
        return Err(Error::HashMismatch(format!(
            "the bytes of the chunk at offset {offset} hash to {actual}, but {HEADER_CHUNK_HASH} \
             says {expected}; nothing was written, send the chunk again"
        )));
    }
    // Zeros sent as data are kept as a hole all the same.
    Ok(data.filter(|bytes| bytes.iter().any(|b| *b != 0)))
}

async fn put_chunk(
    state: &AppState,
    req: &mut Req,
    disk: DiskId,
    offset: &str,
) -> Result<Response<Body>, Error> {
    let offset: u64 = offset.parse().map_err(|_| {
        Error::BadRequest(format!(
            "chunk offset {:?} is not a decimal byte offset",
            offset.chars().take(32).collect::<String>()
        ))
    })?;
    let headers = &req.parts.headers;
    let hash: ChunkHash = required_header(headers, HEADER_CHUNK_HASH)?
        .parse()
        .map_err(|e| Error::BadRequest(format!("header {HEADER_CHUNK_HASH}: {e}")))?;
    let encoding: ChunkEncoding = required_header(headers, HEADER_CHUNK_ENCODING)?
        .parse()
        .map_err(|e| Error::BadRequest(format!("header {HEADER_CHUNK_ENCODING}: {e}")))?;
    let session: Option<SessionId> = header(headers, HEADER_SESSION)?
        .map(|s| {
            s.parse()
                .map_err(|e| Error::BadRequest(format!("header {HEADER_SESSION}: {e}")))
        })
        .transpose()?;
    let declared_len = content_length(headers)?;

    let record = disk_record(state, disk).await?;
    let geometry = record.geometry();
    let index = geometry
        .index_of(offset)
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let len = geometry
        .len(index)
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let limit = match encoding {
        ChunkEncoding::Zero => 0,
        ChunkEncoding::Raw => len,
        ChunkEncoding::Zstd => zstd::zstd_safe::compress_bound(len as usize) as u64,
    };
    if let Some(declared) = declared_len {
        if declared > limit || (encoding == ChunkEncoding::Raw && declared != len) {
            return Err(Error::BadRequest(format!(
                "a {} body for the chunk at offset {offset} ({len} bytes) must be {} {limit} \
                 bytes, but Content-Length is {declared}",
                encoding.as_str(),
                if encoding == ChunkEncoding::Raw {
                    "exactly"
                } else {
                    "at most"
                },
            )));
        }
    }
    if let Some(session) = session {
        let store = state.store.clone();
        let found = blocking(move || store.session(session))
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("unknown session {session} in {HEADER_SESSION}"))
            })?;
        if found.machine_id != record.machine_id {
            return Err(Error::BadRequest(format!(
                "session {session} belongs to machine {}, but disk {disk} to machine {}",
                found.machine_id, record.machine_id
            )));
        }
    }

    // Bodies in memory are bounded by the budget, decoded chunks by the workers.
    // (Never more than the whole budget, or a small budget would wait forever.)
    let kib = limit.div_ceil(1024).clamp(1, state.body_budget_kib as u64);
    let kib = u32::try_from(kib).unwrap_or(u32::MAX);
    let budget = state
        .body_budget
        .acquire_many(kib)
        .await
        .map_err(|_| Error::Internal("server shutting down".into()))?;
    let body = read_body(req.take_body()?, limit, "chunk body", state.body_timeouts()).await?;
    let received = body.len() as u64;
    let worker = state
        .workers
        .acquire()
        .await
        .map_err(|_| Error::Internal("server shutting down".into()))?;
    let inject = !body.is_empty()
        && state
            .corrupt_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
    let checked_against = if inject {
        tracing::warn!(
            "fault injection: treating the chunk at offset {offset} of {disk} as corrupted"
        );
        ChunkHash(hash.0.map(|b| !b))
    } else {
        hash
    };
    let data = blocking(move || decode_chunk(encoding, body, offset, len, checked_against)).await?;
    drop(budget);

    let _chunk_guard = state.chunk_lock(disk, index).lock().await;
    let store = state.store.clone();
    let recorded = blocking(move || store.chunk(disk, index)).await?;
    let account = ChunkOp::Account {
        disk,
        session,
        bytes: received,
        at: now_secs(),
    };
    if recorded == Some(hash) {
        state.committer.queue(vec![account]);
        return Ok(json_response(&ChunkAck {
            offset,
            durable: true,
        }));
    }
    if recorded.is_some() {
        // Other bytes are recorded here: forget them durably before overwriting, so that no
        // record ever claims bytes the image may no longer hold.
        state
            .committer
            .commit(vec![ChunkOp::Unrecord {
                disk,
                index,
                len,
                expected: recorded,
            }])
            .await?;
    }
    let images = state.images.clone();
    let reserve = state.limits.storage_reserve_bytes;
    blocking(move || match data {
        Some(bytes) => {
            if reserve > 0 {
                // The reserve is at most 2% of the filesystem, so that small ones stay usable.
                let (free, total) = images.space()?;
                let reserve = reserve.min(total / 50);
                if free < len.saturating_add(reserve) {
                    return Err(Error::StorageFull {
                        context: format!(
                            "only {free} bytes are free for disk images, less than the chunk's \
                             {len} bytes plus the {reserve} bytes kept free for the metadata"
                        ),
                        source: std::io::Error::new(
                            std::io::ErrorKind::StorageFull,
                            "free space below the reserve",
                        ),
                    });
                }
            }
            images.write_chunk(disk, offset, &bytes)
        }
        None => images.zero_chunk(disk, offset, len).map(|_| ()),
    })
    .await?;
    drop(worker);
    state
        .committer
        .commit(vec![
            ChunkOp::Record {
                disk,
                index,
                len,
                hash,
            },
            account,
        ])
        .await?;
    Ok(json_response(&ChunkAck {
        offset,
        durable: true,
    }))
}

async fn complete_disk(state: &AppState, disk: DiskId) -> Result<Response<Body>, Error> {
    let _disk_guard = state.disk_lock(disk).lock().await;
    let record = disk_record(state, disk).await?;
    let geometry = record.geometry();
    let count = geometry.count();
    let done = |record: &DiskRecord| {
        json_response(&DiskCompleted {
            disk_id: disk,
            state: DiskState::Complete,
            verified_chunks: count,
            size_bytes: record.info.size_bytes,
        })
    };
    if record.state == DiskState::Complete {
        return Ok(done(&record));
    }
    if record.durable_chunks < count {
        return Err(Error::Conflict(format!(
            "{} of {count} chunks missing",
            count - record.durable_chunks
        )));
    }
    let revision = record.revision;
    let _permit = state
        .verifications
        .acquire()
        .await
        .map_err(|_| Error::Internal("server shutting down".into()))?;
    let store = state.store.clone();
    let images = state.images.clone();
    let started = Instant::now();
    let mismatched = blocking(move || verify_image(&store, &images, disk, &geometry)).await?;
    if !mismatched.is_empty() {
        let ops = mismatched
            .iter()
            .map(|&(index, hash)| ChunkOp::Unrecord {
                disk,
                index,
                len: geometry.len(index).unwrap_or(0),
                expected: Some(hash),
            })
            .collect();
        state.committer.commit(ops).await?;
        let offsets: Vec<String> = mismatched
            .iter()
            .take(8)
            .map(|(index, _)| (index * geometry.chunk_size).to_string())
            .collect();
        let more = if mismatched.len() > 8 { ", ..." } else { "" };
        tracing::warn!(%disk, bad = mismatched.len(), "chunks did not match on re-read; dropped");
        return Err(Error::Conflict(format!(
            "{} of {count} chunks did not match their recorded hash when the image was re-read \
             (offsets {}{more}); their records were dropped: fetch the chunk list and send them again",
            mismatched.len(),
            offsets.join(", ")
        )));
    }
    let store = state.store.clone();
    let record = blocking(move || store.mark_complete(disk, revision)).await?;
    tracing::info!(%disk, chunks = count, elapsed = ?started.elapsed(), "disk complete and verified");
    Ok(done(&record))
}

/// Re-reads every recorded chunk of the image, piece by piece; returns the mismatches.
fn verify_image(
    store: &Store,
    images: &Images,
    disk: DiskId,
    geometry: &ChunkGeometry,
) -> Result<Vec<(u64, ChunkHash)>, Error> {
    let file = images.open(disk, false)?;
    let path = images.path(disk);
    let count = geometry.count();
    let mut buf = Vec::new();
    let mut mismatched = Vec::new();
    let mut start = 0;
    while start < count {
        let end = (start + PIECE_CHUNKS).min(count);
        let records = store.chunk_range(disk, start, end)?;
        if records.len() as u64 != end - start {
            return Err(Error::Conflict(format!(
                "chunk records of disk {disk} were dropped while its image was verified; fetch the \
                 chunk list, send what is missing and complete it again"
            )));
        }
        mismatched.extend(verify_chunks(&path, &file, geometry, &records, &mut buf)?);
        start = end;
    }
    Ok(mismatched)
}

// ---- operator endpoints ------------------------------------------------------------------

async fn create_token(state: &AppState, req: &mut Req) -> Result<Response<Body>, Error> {
    let body: CreateToken = read_json(state, req).await?;
    let name = body.name.trim().to_string();
    if name.is_empty() || name.len() > MAX_TOKEN_NAME || name.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!(
            "a token name must be 1 to {MAX_TOKEN_NAME} bytes of printable text"
        )));
    }
    let token = auth::new_secret()?;
    let hash = auth::token_hash(&token);
    let store = state.store.clone();
    let stored_name = name.clone();
    blocking(move || store.create_token(hash, &stored_name, now_secs())).await?;
    tracing::info!(name, "enrollment token created");
    Ok(json_response(&TokenCreated { name, token }))
}

/// `?format=...[&variant=captured|converted]`: the format, and whether the converted disk is
/// wanted.
fn export_query(query: Option<&str>) -> Result<(ExportFormat, bool), Error> {
    let mut format = None;
    let mut converted = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("format", value)) => {
                format = Some(value.parse::<ExportFormat>().map_err(Error::BadRequest)?)
            }
            Some(("variant", "captured")) => converted = false,
            Some(("variant", "converted")) => converted = true,
            _ => {
                return Err(Error::BadRequest(format!(
                    "unknown query parameter {:?} (expected format=raw|qcow2|vmdk|vhdx|vhd, \
                     variant=captured|converted)",
                    pair.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    let format = format
        .ok_or_else(|| Error::BadRequest("missing ?format=raw|qcow2|vmdk|vhdx|vhd".into()))?;
    Ok((format, converted))
}

async fn export_disk(
    state: &AppState,
    disk: DiskId,
    format: ExportFormat,
    converted: bool,
) -> Result<Response<Body>, Error> {
    let (path, file) = if converted {
        crate::conversion::prepare_export(state, disk, format).await?
    } else {
        export::prepare(state, disk, format).await?
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .len();
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{disk}{}.{}\"",
        if converted { ".converted" } else { "" },
        format.as_str()
    )) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    tracing::info!(%disk, format = format.as_str(), bytes = len, "sending export");
    Ok(stream_response(
        "application/octet-stream",
        len,
        headers,
        move |tx| {
            use std::os::unix::fs::FileExt;
            let mut offset = 0u64;
            while offset < len {
                let n = (len - offset).min(1 << 20) as usize;
                let mut piece = vec![0u8; n];
                let result = file
                    .read_exact_at(&mut piece, offset)
                    .map(|()| Bytes::from(piece));
                let failed = result.is_err();
                if tx.blocking_send(result).is_err() || failed {
                    return;
                }
                offset += n as u64;
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(Route::resolve("/v1/health"), Some(Route::Health)));
        assert!(matches!(
            Route::resolve("/v1/disks/d-0000000000000001/chunks/0"),
            Some(Route::DiskChunk("d-0000000000000001", "0"))
        ));
        for bad in [
            "/",
            "/v1",
            "/v1/",
            "/v1/disks/",
            "/v2/health",
            "/v1/disks/x/y/z/w",
            "/v1/health/",
        ] {
            assert!(Route::resolve(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn export_queries() {
        assert_eq!(
            export_query(Some("format=vhd")).unwrap(),
            (ExportFormat::Vhd, false)
        );
        assert_eq!(
            export_query(Some("format=raw&variant=converted")).unwrap(),
            (ExportFormat::Raw, true)
        );
        assert!(export_query(None).is_err());
        assert!(export_query(Some("format=iso")).is_err());
        assert!(export_query(Some("format=raw&x=1")).is_err());
        assert!(export_query(Some("format=raw&variant=better")).is_err());
        assert!(matches!(
            Route::resolve("/v1/machines/m-0000000000000001/conversion"),
            Some(Route::MachineConversion("m-0000000000000001"))
        ));
    }

    #[test]
    fn chunk_decoding() {
        let len = 65536u64;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let hash = ChunkHash::of(&data);
        let zstd = zstd::bulk::compress(&data, 3).unwrap();
        assert_eq!(
            decode_chunk(ChunkEncoding::Zstd, zstd.clone(), 0, len, hash)
                .unwrap()
                .unwrap(),
            data
        );
        assert_eq!(
            decode_chunk(ChunkEncoding::Raw, data.clone(), 0, len, hash)
                .unwrap()
                .unwrap(),
            data
        );
        // Wrong hash → 422; wrong sizes → 400.
        let other = ChunkHash::of(b"other");
        assert!(matches!(
            decode_chunk(ChunkEncoding::Raw, data.clone(), 0, len, other),
            Err(Error::HashMismatch(_))
        ));
        assert!(matches!(
            decode_chunk(ChunkEncoding::Raw, data[1..].to_vec(), 0, len, hash),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            decode_chunk(ChunkEncoding::Zstd, zstd, 0, len - 512, hash),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            decode_chunk(ChunkEncoding::Zero, vec![0], 0, len, hash),
            Err(Error::BadRequest(_))
        ));
        // Zeros: empty body, or zeros sent as data, both become "no data".
        let zero = ChunkHash::of_zeros(len as usize);
        assert!(decode_chunk(ChunkEncoding::Zero, Vec::new(), 0, len, zero)
            .unwrap()
            .is_none());
        assert!(
            decode_chunk(ChunkEncoding::Raw, vec![0; len as usize], 0, len, zero)
                .unwrap()
                .is_none()
        );
        // A zstd bomb is cut at the chunk length.
        let bomb = zstd::bulk::compress(&vec![0u8; 4 * len as usize], 3).unwrap();
        assert!(matches!(
            decode_chunk(ChunkEncoding::Zstd, bomb, 0, len, zero),
            Err(Error::BadRequest(_))
        ));
    }
}
