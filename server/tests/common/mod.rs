//! Helpers shared by the integration tests: an in-process server on `127.0.0.1:0` with its data
//! directory in a temporary directory, an HTTPS client pinned to its fingerprint, and sample
//! requests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, StatusCode};
use p2v_protocol::api::{
    paths, AnnounceDisk, DiskAccepted, ErrorBody, ErrorCode, SessionStarted, StartSession,
};
use p2v_protocol::chunk::{HEADER_CHUNK_ENCODING, HEADER_CHUNK_HASH, HEADER_SESSION};
use p2v_protocol::inventory::{
    CpuInfo, DiskInfo, DiskSource, Firmware, FirmwareKind, Inventory, SystemInfo,
};
use p2v_protocol::layout::PartitionTable;
use p2v_protocol::{ChunkEncoding, ChunkHash, DiskId, SessionId, PROTOCOL_VERSION};
use p2v_server::{Limits, RunningServer, ServeConfig};
use p2v_transport::{client_config, Fingerprint, HttpsClient, Response, ServerTrust, ServerUrl};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Chunk size of the test disks (the smallest the protocol allows, to keep tests fast).
pub const CHUNK: u64 = 64 * 1024;

pub async fn start(data_dir: &Path) -> RunningServer {
    start_with(data_dir, Limits::default()).await
}

pub async fn start_with(data_dir: &Path, limits: Limits) -> RunningServer {
    init_tracing();
    let mut config = ServeConfig::new(data_dir, "127.0.0.1:0".parse().unwrap());
    config.limits = limits;
    p2v_server::start(config).await.expect("server starts")
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A client of the test server with a token (or none).
pub struct Api {
    pub client: HttpsClient,
    pub token: Option<String>,
}

impl Api {
    pub fn new(server: &RunningServer, token: Option<&str>) -> Self {
        Self::connect(server.local_url(), server.fingerprint(), token)
    }

    pub fn connect(url: ServerUrl, fingerprint: Fingerprint, token: Option<&str>) -> Self {
        let config = client_config(&ServerTrust::Pinned(fingerprint)).unwrap();
        Self {
            client: HttpsClient::new(url, config).unwrap(),
            token: token.map(str::to_string),
        }
    }

    pub fn admin(server: &RunningServer) -> Self {
        Self::new(server, Some(server.admin_token()))
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Response {
        let mut all: Vec<(&str, String)> = headers.to_vec();
        if let Some(token) = &self.token {
            all.push(("authorization", format!("Bearer {token}")));
        }
        self.client
            .request(method, path, &all, Bytes::from(body))
            .await
            .unwrap_or_else(|e| panic!("request {path}: {}", p2v_server::Error::from(e)))
    }

    pub async fn get(&mut self, path: &str) -> Response {
        self.request(Method::GET, path, &[], Vec::new()).await
    }

    pub async fn post_raw(&mut self, path: &str, body: Vec<u8>) -> Response {
        self.request(
            Method::POST,
            path,
            &[("content-type", "application/json".into())],
            body,
        )
        .await
    }

    pub async fn post<T: Serialize>(&mut self, path: &str, body: &T) -> Response {
        self.post_raw(path, serde_json::to_vec(body).unwrap()).await
    }

    pub async fn get_ok<T: DeserializeOwned>(&mut self, path: &str) -> T {
        ok(self.get(path).await)
    }

    pub async fn post_ok<B: Serialize, T: DeserializeOwned>(&mut self, path: &str, body: &B) -> T {
        ok(self.post(path, body).await)
    }

    pub async fn put_chunk(
        &mut self,
        disk: DiskId,
        offset: u64,
        encoding: ChunkEncoding,
        hash: ChunkHash,
        body: Vec<u8>,
        session: Option<SessionId>,
    ) -> Response {
        let mut headers = vec![
            (HEADER_CHUNK_HASH, hash.to_hex()),
            (HEADER_CHUNK_ENCODING, encoding.as_str().to_string()),
        ];
        if let Some(session) = session {
            headers.push((HEADER_SESSION, session.to_string()));
        }
        self.request(
            Method::PUT,
            &paths::disk_chunk(disk, offset),
            &headers,
            body,
        )
        .await
    }

    /// Uploads chunk `index` of `image`, choosing the encoding like the agent does.
    pub async fn upload(
        &mut self,
        disk: DiskId,
        image: &[u8],
        index: u64,
        session: Option<SessionId>,
    ) -> Response {
        let (offset, data) = chunk_of(image, index);
        let (encoding, body) = encode(data);
        self.put_chunk(disk, offset, encoding, ChunkHash::of(data), body, session)
            .await
    }

    pub async fn chunk_list(&mut self, disk: DiskId) -> Vec<[u8; 32]> {
        let response = self.get(&paths::disk_chunks(disk)).await;
        assert_eq!(response.status, StatusCode::OK, "{}", text(&response));
        assert_eq!(response.body.len() % 32, 0);
        response
            .body
            .chunks(32)
            .map(|c| c.try_into().unwrap())
            .collect()
    }
}

/// The offset and bytes of chunk `index` of an image.
pub fn chunk_of(image: &[u8], index: u64) -> (u64, &[u8]) {
    let start = (index * CHUNK) as usize;
    let end = (start + CHUNK as usize).min(image.len());
    (start as u64, &image[start..end])
}

/// zero when all zeros, zstd when it compresses, raw otherwise.
pub fn encode(data: &[u8]) -> (ChunkEncoding, Vec<u8>) {
    if data.iter().all(|b| *b == 0) {
        return (ChunkEncoding::Zero, Vec::new());
    }
    let compressed = zstd::bulk::compress(data, 3).unwrap();
    if compressed.len() < data.len() {
        (ChunkEncoding::Zstd, compressed)
    } else {
        (ChunkEncoding::Raw, data.to_vec())
    }
}

pub fn text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

pub fn ok<T: DeserializeOwned>(response: Response) -> T {
    assert_eq!(response.status, StatusCode::OK, "{}", text(&response));
    serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("{e}: {}", text(&response)))
}

/// Asserts an error response of this status and code; returns its message.
pub fn expect_error(response: &Response, status: u16, code: ErrorCode) -> String {
    assert_eq!(response.status.as_u16(), status, "{}", text(response));
    let body: ErrorBody = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("error body is not an ErrorBody ({e}): {}", text(response)));
    assert_eq!(body.error.code, code, "{}", body.error.message);
    assert!(!body.error.message.is_empty());
    body.error.message
}

pub fn inventory(disks: Vec<DiskInfo>) -> Inventory {
    Inventory {
        system: SystemInfo {
            vendor: Some("Test".into()),
            product: Some("Box".into()),
            serial: Some("S1".into()),
            uuid: Some("00000000-0000-0000-0000-000000000001".into()),
            hostname: Some("testhost".into()),
        },
        firmware: Firmware {
            kind: FirmwareKind::Uefi,
            vendor: None,
            version: None,
            date: None,
        },
        cpu: CpuInfo {
            model: Some("cpu".into()),
            sockets: 1,
            cores: 2,
            threads: 4,
        },
        memory_bytes: 1 << 30,
        nics: Vec::new(),
        disks,
    }
}

pub fn disk_info(name: &str, size: u64) -> DiskInfo {
    DiskInfo {
        name: name.into(),
        path: format!("/dev/{name}"),
        source: DiskSource::BlockDevice,
        size_bytes: size,
        logical_sector_size: 512,
        physical_sector_size: 4096,
        model: Some("Disk".into()),
        serial: Some(format!("serial-{name}")),
        wwn: None,
        rotational: Some(false),
        removable: Some(false),
        controller_driver: Some("ahci".into()),
    }
}

pub fn start_session_body(machine_key: &str) -> StartSession {
    StartSession {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "test".into(),
        machine_key: machine_key.into(),
        inventory: inventory(vec![disk_info("sda", 10 * CHUNK)]),
    }
}

pub fn announce_body(name: &str, size: u64) -> AnnounceDisk {
    let info = disk_info(name, size);
    AnnounceDisk {
        disk_key: info.stable_key(),
        info,
        chunk_size: CHUNK,
        layout: PartitionTable::None,
        capture_map: None,
    }
}

pub async fn start_session(api: &mut Api, machine_key: &str) -> SessionStarted {
    api.post_ok(paths::SESSIONS, &start_session_body(machine_key))
        .await
}

pub async fn announce(api: &mut Api, session: SessionId, name: &str, size: u64) -> DiskAccepted {
    api.post_ok(&paths::session_disks(session), &announce_body(name, size))
        .await
}

/// A test image: chunks of pseudo-random bytes, zeros, compressible text and a short last
/// chunk, so that every encoding is used.
pub fn sample_image(chunks: u64, tail: u64) -> Vec<u8> {
    let size = chunks * CHUNK + tail;
    let mut image = vec![0u8; size as usize];
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for index in 0..chunks + u64::from(tail > 0) {
        let start = (index * CHUNK) as usize;
        let end = (start + CHUNK as usize).min(image.len());
        let chunk = &mut image[start..end];
        match index % 4 {
            0 => {
                for b in chunk.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
            1 => {}
            2 => {
                for (i, b) in chunk.iter_mut().enumerate() {
                    *b = b"p2v test data "[i % 14];
                }
            }
            _ => chunk[100] = 7,
        }
    }
    image
}

pub fn image_path(server: &RunningServer, disk: DiskId) -> PathBuf {
    server.data_dir().disk_image(disk)
}
