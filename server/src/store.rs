//! The metadata database: machines, sessions, disks, the hash of every durable chunk, tokens.
//!
//! Why redb: it is pure Rust (no C library to build or ship), embedded (no database server to
//! run next to ours), a single file in the data directory (`p2v.redb`), and ACID with
//! crash-safe commits: a commit with the default `Durability::Immediate` is on disk when
//! `commit()` returns, and a crash at any point leaves the last committed state. That is what
//! lets the server acknowledge a chunk only after its record is committed, and lose nothing
//! acknowledged on `SIGKILL` or power loss.
//!
//! Records are `serde_json` values in redb tables (easy to evolve and to inspect); chunk hashes,
//! the bulk of the data, are fixed 32-byte values keyed by `(disk, chunk index)`.
//!
//! | table              | key                      | value                    |
//! |--------------------|--------------------------|--------------------------|
//! | `machines`         | machine id               | [`MachineRecord`] (JSON) |
//! | `machine_keys`     | machine key              | machine id               |
//! | `sessions`         | session id               | [`SessionRecord`] (JSON) |
//! | `machine_sessions` | (machine id, session id) | `()`                     |
//! | `disks`            | disk id                  | [`DiskRecord`] (JSON)    |
//! | `machine_disks`    | (machine id, disk key)   | disk id                  |
//! | `chunks`           | (disk id, chunk index)   | BLAKE3 of the chunk      |
//! | `tokens`           | SHA-256 of the token     | [`TokenRecord`] (JSON)   |
//!
//! redb refuses every operation after an I/O error (for example `ENOSPC` during a commit) until
//! the database is reopened; [`Store`] does that by itself, so a full disk does not need a
//! restart of the server once space is freed.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use p2v_protocol::api::{
    AnnounceDisk, DiskAccepted, DiskState, DiskSummary, ExportFormat, FinishSession,
    MachineSummary, SessionSummary,
};
use p2v_protocol::inventory::{DiskInfo, Inventory};
use p2v_protocol::layout::{CaptureMap, PartitionTable};
use p2v_protocol::{ChunkGeometry, ChunkHash, DiskId, MachineId, SessionId};
use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::image::Images;
use crate::util::random_u64;
use crate::Error;

const MACHINES: TableDefinition<u64, &[u8]> = TableDefinition::new("machines");
const MACHINE_KEYS: TableDefinition<&str, u64> = TableDefinition::new("machine_keys");
const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
const MACHINE_SESSIONS: TableDefinition<(u64, u64), ()> = TableDefinition::new("machine_sessions");
const DISKS: TableDefinition<u64, &[u8]> = TableDefinition::new("disks");
const MACHINE_DISKS: TableDefinition<(u64, &str), u64> = TableDefinition::new("machine_disks");
const CHUNKS: TableDefinition<(u64, u64), [u8; 32]> = TableDefinition::new("chunks");
const TOKENS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("tokens");

/// A physical machine, found again by its machine key on every run of the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MachineRecord {
    pub machine_key: String,
    pub inventory: Inventory,
    pub first_seen: u64,
    pub last_seen: u64,
}

/// One run of the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub machine_id: MachineId,
    pub agent_version: String,
    /// Name of the enrollment token that started it (`admin` for the admin token).
    pub token_name: String,
    pub started_at: u64,
    pub last_seen: u64,
    pub finished: bool,
    pub error: Option<String>,
    pub disks_completed: Vec<DiskId>,
    pub received_bytes: u64,
    pub received_chunks: u64,
}

/// One disk of one machine, over all sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DiskRecord {
    pub machine_id: MachineId,
    pub disk_key: String,
    pub info: DiskInfo,
    pub layout: PartitionTable,
    /// The agent's capture report from the latest announcement.
    #[serde(default)]
    pub capture_map: Option<CaptureMap>,
    pub chunk_size: u64,
    pub state: DiskState,
    /// Number of records in `chunks` for this disk (kept in the same transactions).
    pub durable_chunks: u64,
    pub durable_bytes: u64,
    pub received_bytes: u64,
    pub last_chunk_at: Option<u64>,
    pub created_at: u64,
    /// Bumped by every change of a chunk record; completion checks it did not move while the
    /// image was re-read.
    pub revision: u64,
    /// Bumped every time the disk becomes complete; exports are cached per generation.
    pub generation: u64,
    /// Export format → generation the cached file in `exports/` was made from.
    pub exports: BTreeMap<String, u64>,
}

impl DiskRecord {
    pub fn geometry(&self) -> ChunkGeometry {
        ChunkGeometry {
            disk_size: self.info.size_bytes,
            chunk_size: self.chunk_size,
        }
    }

    pub fn summary(&self, disk_id: DiskId) -> DiskSummary {
        DiskSummary {
            disk_id,
            machine_id: self.machine_id,
            name: self.info.name.clone(),
            size_bytes: self.info.size_bytes,
            state: self.state,
            chunk_count: self.geometry().count(),
            durable_chunks: self.durable_chunks,
            durable_bytes: self.durable_bytes,
            received_bytes: self.received_bytes,
            layout: self.layout.clone(),
            capture_map: self.capture_map.clone(),
            info: self.info.clone(),
            last_chunk_at: self.last_chunk_at,
        }
    }
}

impl SessionRecord {
    fn summary(&self, session_id: SessionId) -> SessionSummary {
        SessionSummary {
            session_id,
            machine_id: self.machine_id,
            started_at: self.started_at,
            last_seen: self.last_seen,
            finished: self.finished,
            error: self.error.clone(),
            received_bytes: self.received_bytes,
            received_chunks: self.received_chunks,
        }
    }
}

/// An enrollment token (only its hash is the key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub name: String,
    pub created_at: u64,
}

/// A change to chunk records or byte counters, applied by the group-commit task.
#[derive(Debug, Clone)]
pub(crate) enum ChunkOp {
    /// The chunk at `index` is durably written with this hash.
    Record {
        disk: DiskId,
        index: u64,
        len: u64,
        hash: ChunkHash,
    },
    /// Forget the chunk at `index` (only if it still has hash `expected`, when given).
    Unrecord {
        disk: DiskId,
        index: u64,
        len: u64,
        expected: Option<ChunkHash>,
    },
    /// A chunk body of `bytes` bytes was received.
    Account {
        disk: DiskId,
        session: Option<SessionId>,
        bytes: u64,
        at: u64,
    },
}

/// `Result<T, E: Into<redb::Error>>` → our error with a context.
trait DbContext<T> {
    fn ctx(self, what: &str) -> Result<T, Error>;
}

impl<T, E: Into<redb::Error>> DbContext<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, Error> {
        self.map_err(|e| Error::db(what, e))
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: impl FnOnce() -> String) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Decode {
        what: what(),
        source,
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}

fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<u64, &'static [u8]>,
    key: u64,
    what: &str,
) -> Result<Option<T>, Error> {
    match table.get(key).ctx(what)? {
        Some(guard) => decode(guard.value(), || format!("{what} {key:016x}")).map(Some),
        None => Ok(None),
    }
}

/// A random id not yet used as a key of `table`.
fn fresh_id(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64, Error> {
    loop {
        let id = random_u64()?;
        if id != 0 && table.get(id).ctx("checking a new id")?.is_none() {
            return Ok(id);
        }
    }
}

/// The metadata database, reopened by itself after an I/O error.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
}

impl Store {
    /// Opens (or creates) the database and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = Database::create(path).ctx(&format!("opening {}", path.display()))?;
        let txn = db.begin_write().ctx("creating tables")?;
        {
            txn.open_table(MACHINES).ctx("creating tables")?;
            txn.open_table(MACHINE_KEYS).ctx("creating tables")?;
            txn.open_table(SESSIONS).ctx("creating tables")?;
            txn.open_table(MACHINE_SESSIONS).ctx("creating tables")?;
            txn.open_table(DISKS).ctx("creating tables")?;
            txn.open_table(MACHINE_DISKS).ctx("creating tables")?;
            txn.open_table(CHUNKS).ctx("creating tables")?;
            txn.open_table(TOKENS).ctx("creating tables")?;
        }
        txn.commit().ctx("creating tables")?;
        Ok(Self {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    fn handle(&self) -> Result<Arc<Database>, Error> {
        if let Some(db) = self
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(db.clone());
        }
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        // Handles still held by requests that are finishing keep the file locked for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Database::create(&self.path) {
                Ok(db) => {
                    tracing::info!(path = %self.path.display(), "reopened the metadata database");
                    let db = Arc::new(db);
                    *slot = Some(db.clone());
                    return Ok(db);
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(Error::db("reopening after an I/O error", e)),
            }
        }
    }

    /// After an I/O error redb refuses everything: drop our handle so the next call reopens.
    fn check<T>(&self, db: Arc<Database>, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(err) = &result {
            if err.is_db_io_failure() {
                let failed = Arc::as_ptr(&db);
                drop(db);
                let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
                if slot.as_ref().is_some_and(|d| Arc::as_ptr(d) == failed) {
                    tracing::warn!(
                        "metadata database hit an I/O error ({err}); it will be reopened"
                    );
                    *slot = None;
                }
            }
        }
        result
    }

    fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T, Error>) -> Result<T, Error> {
        let db = self.handle()?;
        let result = db
            .begin_read()
            .ctx("beginning a read transaction")
            .and_then(|txn| f(&txn));
        self.check(db, result)
    }

    fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T, Error>) -> Result<T, Error> {
        let db = self.handle()?;
        let result = db
            .begin_write()
            .ctx("beginning a write transaction")
            .and_then(|txn| {
                let out = f(&txn)?;
                txn.commit().ctx("committing")?;
                Ok(out)
            });
        self.check(db, result)
    }

    // ---- agent side ------------------------------------------------------------------------

    /// Finds or creates the machine of `machine_key`, refreshes its inventory and starts a
    /// session. Returns (session, machine, machine was known).
    pub fn start_session(
        &self,
        machine_key: &str,
        inventory: &Inventory,
        agent_version: &str,
        token_name: &str,
        now: u64,
    ) -> Result<(SessionId, MachineId, bool), Error> {
        self.write(|txn| {
            let mut keys = txn.open_table(MACHINE_KEYS).ctx("opening machine_keys")?;
            let mut machines = txn.open_table(MACHINES).ctx("opening machines")?;
            let existing = keys
                .get(machine_key)
                .ctx("reading machine_keys")?
                .map(|g| g.value());
            let (machine, known) = match existing {
                Some(raw) => {
                    let mut record: MachineRecord = get_json(&machines, raw, "machine")?
                        .ok_or_else(|| {
                            Error::Internal(format!(
                                "machine key points to missing machine {raw:016x}"
                            ))
                        })?;
                    record.inventory = inventory.clone();
                    record.last_seen = now;
                    machines
                        .insert(raw, encode(&record).as_slice())
                        .ctx("writing machine")?;
                    (raw, true)
                }
                None => {
                    let raw = fresh_id(&machines)?;
                    let record = MachineRecord {
                        machine_key: machine_key.to_string(),
                        inventory: inventory.clone(),
                        first_seen: now,
                        last_seen: now,
                    };
                    machines
                        .insert(raw, encode(&record).as_slice())
                        .ctx("writing machine")?;
                    keys.insert(machine_key, raw).ctx("writing machine_keys")?;
                    (raw, false)
                }
            };
            let mut sessions = txn.open_table(SESSIONS).ctx("opening sessions")?;
            let session = fresh_id(&sessions)?;
            let record = SessionRecord {
                machine_id: MachineId::from_raw(machine),
                agent_version: agent_version.to_string(),
                token_name: token_name.to_string(),
                started_at: now,
                last_seen: now,
                finished: false,
                error: None,
                disks_completed: Vec::new(),
                received_bytes: 0,
                received_chunks: 0,
            };
            sessions
                .insert(session, encode(&record).as_slice())
                .ctx("writing session")?;
            txn.open_table(MACHINE_SESSIONS)
                .ctx("opening machine_sessions")?
                .insert((machine, session), ())
                .ctx("writing machine_sessions")?;
            Ok((
                SessionId::from_raw(session),
                MachineId::from_raw(machine),
                known,
            ))
        })
    }

    /// Resumes the machine's disk of the same key, or creates a new disk and its sparse image.
    /// The request was validated by the caller (geometry, sector sizes, key length).
    pub fn announce_disk(
        &self,
        session: SessionId,
        request: &AnnounceDisk,
        images: &Images,
        now: u64,
    ) -> Result<DiskAccepted, Error> {
        let created: Cell<Option<DiskId>> = Cell::new(None);
        let size = request.info.size_bytes;
        let result = self.write(|txn| {
            let sessions = txn.open_table(SESSIONS).ctx("opening sessions")?;
            let session_record: SessionRecord = get_json(&sessions, session.raw(), "session")?
                .ok_or_else(|| Error::NotFound(format!("unknown session {session}")))?;
            let machine = session_record.machine_id;
            let mut machine_disks = txn.open_table(MACHINE_DISKS).ctx("opening machine_disks")?;
            let mut disks = txn.open_table(DISKS).ctx("opening disks")?;
            let existing = machine_disks
                .get((machine.raw(), request.disk_key.as_str()))
                .ctx("reading machine_disks")?
                .map(|g| g.value());
            if let Some(raw) = existing {
                let disk = DiskId::from_raw(raw);
                let mut record: DiskRecord = get_json(&disks, raw, "disk")?
                    .ok_or_else(|| Error::Internal(format!("machine_disks points to missing disk {disk}")))?;
                if record.info.size_bytes != size {
                    return Err(Error::Conflict(format!(
                        "disk {:?} of machine {machine} is known as {disk} with a size of {} bytes, \
                         but is now announced with {size} bytes; a disk cannot change size between \
                         runs (check that the right disk is captured)",
                        request.disk_key, record.info.size_bytes
                    )));
                }
                if record.chunk_size != request.chunk_size {
                    return Err(Error::Conflict(format!(
                        "disk {disk} was started with chunks of {} bytes, but is now announced with \
                         chunks of {} bytes; resume it with the same chunk size",
                        record.chunk_size, request.chunk_size
                    )));
                }
                record.info = request.info.clone();
                record.layout = request.layout.clone();
                record.capture_map = request.capture_map.clone();
                if !images.exists(disk) {
                    tracing::warn!(%disk, "raw image is missing; recreating it and forgetting its chunks");
                    images.create(disk, size)?;
                    let mut chunks = txn.open_table(CHUNKS).ctx("opening chunks")?;
                    chunks.retain_in((raw, 0)..=(raw, u64::MAX), |_, _| false).ctx("dropping chunks")?;
                    record.durable_chunks = 0;
                    record.durable_bytes = 0;
                    record.state = DiskState::Receiving;
                    record.revision += 1;
                }
                disks.insert(raw, encode(&record).as_slice()).ctx("writing disk")?;
                return Ok(accepted(disk, &record));
            }
            let disk = loop {
                let disk = DiskId::from_raw(fresh_id(&disks)?);
                match images.create(disk, size) {
                    Ok(()) => break disk,
                    Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            };
            created.set(Some(disk));
            let record = DiskRecord {
                machine_id: machine,
                disk_key: request.disk_key.clone(),
                info: request.info.clone(),
                layout: request.layout.clone(),
                capture_map: request.capture_map.clone(),
                chunk_size: request.chunk_size,
                state: DiskState::Receiving,
                durable_chunks: 0,
                durable_bytes: 0,
                received_bytes: 0,
                last_chunk_at: None,
                created_at: now,
                revision: 0,
                generation: 0,
                exports: BTreeMap::new(),
            };
            disks.insert(disk.raw(), encode(&record).as_slice()).ctx("writing disk")?;
            machine_disks
                .insert((machine.raw(), request.disk_key.as_str()), disk.raw())
                .ctx("writing machine_disks")?;
            Ok(accepted(disk, &record))
        });
        if result.is_err() {
            if let Some(disk) = created.get() {
                images.remove(disk);
            }
        }
        result
    }

    pub fn disk(&self, disk: DiskId) -> Result<Option<DiskRecord>, Error> {
        self.read(|txn| {
            get_json(
                &txn.open_table(DISKS).ctx("opening disks")?,
                disk.raw(),
                "disk",
            )
        })
    }

    pub fn session(&self, session: SessionId) -> Result<Option<SessionRecord>, Error> {
        self.read(|txn| {
            get_json(
                &txn.open_table(SESSIONS).ctx("opening sessions")?,
                session.raw(),
                "session",
            )
        })
    }

    /// The recorded hash of one chunk.
    pub fn chunk(&self, disk: DiskId, index: u64) -> Result<Option<ChunkHash>, Error> {
        self.read(|txn| {
            let chunks = txn.open_table(CHUNKS).ctx("opening chunks")?;
            let hash = chunks
                .get((disk.raw(), index))
                .ctx("reading chunks")?
                .map(|g| ChunkHash(g.value()));
            Ok(hash)
        })
    }

    /// Recorded chunks with index in `start..end`, in order.
    pub fn chunk_range(
        &self,
        disk: DiskId,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, ChunkHash)>, Error> {
        self.read(|txn| {
            let chunks = txn.open_table(CHUNKS).ctx("opening chunks")?;
            let mut out = Vec::new();
            for entry in chunks
                .range((disk.raw(), start)..(disk.raw(), end))
                .ctx("reading chunks")?
            {
                let (key, value) = entry.ctx("reading chunks")?;
                out.push((key.value().1, ChunkHash(value.value())));
            }
            Ok(out)
        })
    }

    /// Applies a batch of chunk changes in one transaction (one `fsync` for all of them).
    pub fn apply_chunk_ops<'a>(
        &self,
        ops: impl IntoIterator<Item = &'a ChunkOp>,
    ) -> Result<(), Error> {
        self.write(|txn| {
            let mut chunks = txn.open_table(CHUNKS).ctx("opening chunks")?;
            let mut disks = txn.open_table(DISKS).ctx("opening disks")?;
            let mut sessions = txn.open_table(SESSIONS).ctx("opening sessions")?;
            let mut disk_cache: HashMap<u64, Option<DiskRecord>> = HashMap::new();
            let mut session_cache: HashMap<u64, Option<SessionRecord>> = HashMap::new();
            for op in ops {
                let disk = match op {
                    ChunkOp::Record { disk, .. }
                    | ChunkOp::Unrecord { disk, .. }
                    | ChunkOp::Account { disk, .. } => *disk,
                };
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    disk_cache.entry(disk.raw())
                {
                    slot.insert(get_json(&disks, disk.raw(), "disk")?);
                }
                let Some(record) = disk_cache.get_mut(&disk.raw()).and_then(Option::as_mut) else {
                    tracing::warn!(%disk, "chunk change for an unknown disk ignored");
                    continue;
                };
                match op {
                    ChunkOp::Record {
                        index, len, hash, ..
                    } => {
                        let previous = chunks
                            .insert((disk.raw(), *index), hash.0)
                            .ctx("writing chunks")?
                            .map(|g| g.value());
                        if previous.is_none() {
                            record.durable_chunks += 1;
                            record.durable_bytes += len;
                        }
                        if previous != Some(hash.0) {
                            record.revision += 1;
                            record.state = DiskState::Receiving;
                        }
                    }
                    ChunkOp::Unrecord {
                        index,
                        len,
                        expected,
                        ..
                    } => {
                        let current = chunks
                            .get((disk.raw(), *index))
                            .ctx("reading chunks")?
                            .map(|g| g.value());
                        let Some(current) = current else { continue };
                        if expected.is_some_and(|e| e.0 != current) {
                            continue;
                        }
                        chunks.remove((disk.raw(), *index)).ctx("writing chunks")?;
                        record.durable_chunks = record.durable_chunks.saturating_sub(1);
                        record.durable_bytes = record.durable_bytes.saturating_sub(*len);
                        record.revision += 1;
                        record.state = DiskState::Receiving;
                    }
                    ChunkOp::Account {
                        session, bytes, at, ..
                    } => {
                        record.received_bytes += bytes;
                        record.last_chunk_at = Some(record.last_chunk_at.unwrap_or(0).max(*at));
                        if let Some(session) = session {
                            if let std::collections::hash_map::Entry::Vacant(slot) =
                                session_cache.entry(session.raw())
                            {
                                slot.insert(get_json(&sessions, session.raw(), "session")?);
                            }
                            if let Some(s) = session_cache
                                .get_mut(&session.raw())
                                .and_then(Option::as_mut)
                            {
                                s.received_bytes += bytes;
                                s.received_chunks += 1;
                                s.last_seen = s.last_seen.max(*at);
                            }
                        }
                    }
                }
            }
            for (raw, record) in &disk_cache {
                if let Some(record) = record {
                    disks
                        .insert(*raw, encode(record).as_slice())
                        .ctx("writing disk")?;
                }
            }
            for (raw, record) in &session_cache {
                if let Some(record) = record {
                    sessions
                        .insert(*raw, encode(record).as_slice())
                        .ctx("writing session")?;
                }
            }
            Ok(())
        })
    }

    /// Marks the disk complete, provided no chunk record changed since `revision` (when the
    /// image was verified) and every chunk is recorded.
    pub fn mark_complete(&self, disk: DiskId, revision: u64) -> Result<DiskRecord, Error> {
        self.write(|txn| {
            let mut disks = txn.open_table(DISKS).ctx("opening disks")?;
            let mut record: DiskRecord = get_json(&disks, disk.raw(), "disk")?
                .ok_or_else(|| Error::NotFound(format!("unknown disk {disk}")))?;
            if record.revision != revision {
                return Err(Error::Conflict(format!(
                    "disk {disk} changed while its image was verified (chunks were uploaded or \
                     dropped); fetch the chunk list, send what is missing and complete it again"
                )));
            }
            let count = record.geometry().count();
            if record.durable_chunks != count {
                return Err(Error::Conflict(format!(
                    "{} of {count} chunks missing",
                    count - record.durable_chunks.min(count)
                )));
            }
            if record.state != DiskState::Complete {
                record.state = DiskState::Complete;
                record.generation += 1;
                disks
                    .insert(disk.raw(), encode(&record).as_slice())
                    .ctx("writing disk")?;
            }
            Ok(record)
        })
    }

    pub fn finish_session(
        &self,
        session: SessionId,
        request: &FinishSession,
        now: u64,
    ) -> Result<(), Error> {
        self.write(|txn| {
            let mut sessions = txn.open_table(SESSIONS).ctx("opening sessions")?;
            let mut record: SessionRecord = get_json(&sessions, session.raw(), "session")?
                .ok_or_else(|| Error::NotFound(format!("unknown session {session}")))?;
            record.finished = true;
            record.error = request.error.clone();
            record.disks_completed = request.disks_completed.clone();
            record.last_seen = now;
            sessions
                .insert(session.raw(), encode(&record).as_slice())
                .ctx("writing session")?;
            Ok(())
        })
    }

    // ---- operator side ---------------------------------------------------------------------

    pub fn record_export(
        &self,
        disk: DiskId,
        format: ExportFormat,
        generation: u64,
    ) -> Result<(), Error> {
        self.write(|txn| {
            let mut disks = txn.open_table(DISKS).ctx("opening disks")?;
            if let Some(mut record) = get_json::<DiskRecord>(&disks, disk.raw(), "disk")? {
                record
                    .exports
                    .insert(format.as_str().to_string(), generation);
                disks
                    .insert(disk.raw(), encode(&record).as_slice())
                    .ctx("writing disk")?;
            }
            Ok(())
        })
    }

    pub fn create_token(&self, hash: [u8; 32], name: &str, now: u64) -> Result<(), Error> {
        self.write(|txn| {
            let mut tokens = txn.open_table(TOKENS).ctx("opening tokens")?;
            let record = TokenRecord {
                name: name.to_string(),
                created_at: now,
            };
            if tokens
                .insert(hash, encode(&record).as_slice())
                .ctx("writing token")?
                .is_some()
            {
                return Err(Error::Internal(
                    "a token with the same hash already exists".into(),
                ));
            }
            Ok(())
        })
    }

    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, Error> {
        self.read(|txn| {
            let tokens = txn.open_table(TOKENS).ctx("opening tokens")?;
            match tokens.get(hash).ctx("reading tokens")? {
                Some(guard) => decode(guard.value(), || "token record".to_string()).map(Some),
                None => Ok(None),
            }
        })
    }

    pub fn list_disks(&self) -> Result<Vec<DiskSummary>, Error> {
        self.read(|txn| {
            let disks = txn.open_table(DISKS).ctx("opening disks")?;
            let mut out = Vec::new();
            for entry in disks.iter().ctx("reading disks")? {
                let (key, value) = entry.ctx("reading disks")?;
                let record: DiskRecord =
                    decode(value.value(), || format!("disk {:016x}", key.value()))?;
                out.push((
                    record.machine_id,
                    record.created_at,
                    record.summary(DiskId::from_raw(key.value())),
                ));
            }
            out.sort_by_key(|(machine, created, summary)| (*machine, *created, summary.disk_id));
            Ok(out.into_iter().map(|(_, _, s)| s).collect())
        })
    }

    pub fn list_sessions(&self) -> Result<Vec<SessionSummary>, Error> {
        self.read(|txn| {
            let sessions = txn.open_table(SESSIONS).ctx("opening sessions")?;
            let mut out = Vec::new();
            for entry in sessions.iter().ctx("reading sessions")? {
                let (key, value) = entry.ctx("reading sessions")?;
                let record: SessionRecord =
                    decode(value.value(), || format!("session {:016x}", key.value()))?;
                out.push(record.summary(SessionId::from_raw(key.value())));
            }
            out.sort_by_key(|s| (s.started_at, s.session_id));
            Ok(out)
        })
    }

    pub fn list_machines(&self) -> Result<Vec<MachineSummary>, Error> {
        self.read(|txn| {
            let machines = txn.open_table(MACHINES).ctx("opening machines")?;
            let mut ids = Vec::new();
            for entry in machines.iter().ctx("reading machines")? {
                ids.push(entry.ctx("reading machines")?.0.value());
            }
            let mut out = Vec::new();
            for raw in ids {
                if let Some(summary) = machine_summary(txn, MachineId::from_raw(raw))? {
                    out.push(summary);
                }
            }
            out.sort_by_key(|m| (m.first_seen, m.machine_id));
            Ok(out)
        })
    }

    pub fn machine(&self, machine: MachineId) -> Result<Option<MachineSummary>, Error> {
        self.read(|txn| machine_summary(txn, machine))
    }
}

fn accepted(disk: DiskId, record: &DiskRecord) -> DiskAccepted {
    DiskAccepted {
        disk_id: disk,
        chunk_count: record.geometry().count(),
        durable_chunks: record.durable_chunks,
        state: record.state,
    }
}

fn machine_summary(
    txn: &ReadTransaction,
    machine: MachineId,
) -> Result<Option<MachineSummary>, Error> {
    let machines = txn.open_table(MACHINES).ctx("opening machines")?;
    let Some(record) = get_json::<MachineRecord>(&machines, machine.raw(), "machine")? else {
        return Ok(None);
    };
    let raw = machine.raw();
    let disks_table = txn.open_table(DISKS).ctx("opening disks")?;
    let mut disks = Vec::new();
    let machine_disks = txn.open_table(MACHINE_DISKS).ctx("opening machine_disks")?;
    for entry in machine_disks
        .range((raw, "")..)
        .ctx("reading machine_disks")?
    {
        let (key, value) = entry.ctx("reading machine_disks")?;
        if key.value().0 != raw {
            break;
        }
        let disk = value.value();
        if let Some(d) = get_json::<DiskRecord>(&disks_table, disk, "disk")? {
            disks.push((d.created_at, d.summary(DiskId::from_raw(disk))));
        }
    }
    disks.sort_by_key(|(created, d)| (*created, d.disk_id));
    let sessions_table = txn.open_table(SESSIONS).ctx("opening sessions")?;
    let machine_sessions = txn
        .open_table(MACHINE_SESSIONS)
        .ctx("opening machine_sessions")?;
    let mut sessions = Vec::new();
    for entry in machine_sessions
        .range((raw, 0)..=(raw, u64::MAX))
        .ctx("reading machine_sessions")?
    {
        let session = entry.ctx("reading machine_sessions")?.0.value().1;
        if let Some(s) = get_json::<SessionRecord>(&sessions_table, session, "session")? {
            sessions.push(s.summary(SessionId::from_raw(session)));
        }
    }
    sessions.sort_by_key(|s| (s.started_at, s.session_id));
    Ok(Some(MachineSummary {
        machine_id: machine,
        machine_key: record.machine_key,
        inventory: record.inventory,
        disks: disks.into_iter().map(|(_, d)| d).collect(),
        sessions,
        first_seen: record.first_seen,
        last_seen: record.last_seen,
    }))
}
