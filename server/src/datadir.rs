//! The server's data directory: where each file lives, and the small files the server and the
//! operator commands share (`admin.token`, `server.json`).
//!
//! ```text
//! DATA_DIR/
//!   tls/cert.pem          self-signed certificate (its SHA-256 is the fingerprint agents pin)
//!   tls/key.pem           its ECDSA P-256 private key (0600)
//!   admin.token           the operator's secret (0600), generated on first start
//!   server.json           written at every start: bound address, advertised URL, fingerprint
//!   p2v.redb              metadata (machines, sessions, disks, chunk hashes, tokens)
//!   disks/<disk-id>.raw   sparse raw image of each disk
//!   exports/<disk-id>.<ext>  converted images (qcow2, vmdk, vhdx, vhd), cached
//! ```
//!
//! No path is ever built from client input except through the validated identifier types of
//! `p2v-protocol` ([`DiskId`] prints as `d-` and 16 hex digits, nothing else).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use p2v_protocol::api::ExportFormat;
use p2v_protocol::DiskId;
use serde::{Deserialize, Serialize};

use crate::Error;

/// What a running server publishes about itself in `server.json`, for the operator commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerInfo {
    /// The address the server actually bound (the real port even with `--listen ...:0`).
    pub listen: SocketAddr,
    /// The URL agents are told to use (`https://HOST:PORT`).
    pub url: String,
    /// `sha256:<hex>` of the certificate.
    pub fingerprint: String,
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
}

/// Paths inside one data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
    pub fn cert_path(&self) -> PathBuf {
        self.tls_dir().join("cert.pem")
    }
    pub fn key_path(&self) -> PathBuf {
        self.tls_dir().join("key.pem")
    }
    pub fn admin_token_path(&self) -> PathBuf {
        self.root.join("admin.token")
    }
    pub fn server_info_path(&self) -> PathBuf {
        self.root.join("server.json")
    }
    pub fn db_path(&self) -> PathBuf {
        self.root.join("p2v.redb")
    }
    pub fn disks_dir(&self) -> PathBuf {
        self.root.join("disks")
    }
    pub fn exports_dir(&self) -> PathBuf {
        self.root.join("exports")
    }
    /// `disks/<disk-id>.raw`.
    pub fn disk_image(&self, disk: DiskId) -> PathBuf {
        self.disks_dir().join(format!("{disk}.raw"))
    }
    /// `exports/<disk-id>.<ext>`.
    pub fn export_path(&self, disk: DiskId, format: ExportFormat) -> PathBuf {
        self.exports_dir()
            .join(format!("{disk}.{}", format.as_str()))
    }

    /// Creates the directories (0700: the images hold whole machines).
    pub(crate) fn create_layout(&self) -> Result<(), Error> {
        for dir in [
            self.root.clone(),
            self.tls_dir(),
            self.disks_dir(),
            self.exports_dir(),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| Error::io(format!("creating directory {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// Reads `admin.token`.
    pub fn read_admin_token(&self) -> Result<String, Error> {
        let path = self.admin_token_path();
        let text = fs::read_to_string(&path).map_err(|e| {
            Error::io(
                format!(
                    "reading {} (has the server been started with this --data-dir?)",
                    path.display()
                ),
                e,
            )
        })?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(Error::Internal(format!("{} is empty", path.display())));
        }
        Ok(token)
    }

    /// Reads `admin.token`, creating it with a new random secret on first start.
    pub(crate) fn load_or_create_admin_token(&self) -> Result<String, Error> {
        if self.admin_token_path().exists() {
            return self.read_admin_token();
        }
        let token = crate::auth::new_secret()?;
        write_file_atomic(
            &self.admin_token_path(),
            format!("{token}\n").as_bytes(),
            0o600,
        )?;
        tracing::info!(path = %self.admin_token_path().display(), "created the admin token");
        Ok(token)
    }

    /// Reads `server.json`.
    pub fn read_server_info(&self) -> Result<ServerInfo, Error> {
        let path = self.server_info_path();
        let text = fs::read(&path).map_err(|e| {
            Error::io(
                format!(
                    "reading {} (is the server running with this --data-dir?)",
                    path.display()
                ),
                e,
            )
        })?;
        serde_json::from_slice(&text).map_err(|source| Error::Decode {
            what: path.display().to_string(),
            source,
        })
    }

    pub(crate) fn write_server_info(&self, info: &ServerInfo) -> Result<(), Error> {
        let mut text = serde_json::to_vec_pretty(info).map_err(|source| Error::Decode {
            what: "server.json".into(),
            source,
        })?;
        text.push(b'\n');
        write_file_atomic(&self.server_info_path(), &text, 0o644)
    }
}

/// Writes `data` to a temporary file beside `path`, syncs it and renames it over `path`, so a
/// reader never sees half a file; then syncs the directory so the rename survives a crash.
pub(crate) fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// `fsync` of a directory, so that file creations and renames in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn admin_token_is_created_once_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("data"));
        dir.create_layout().unwrap();
        let token = dir.load_or_create_admin_token().unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(dir.load_or_create_admin_token().unwrap(), token);
        let mode = fs::metadata(dir.admin_token_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn paths_come_from_ids_only() {
        let dir = DataDir::new("/d");
        let id = DiskId::from_raw(0xab);
        assert_eq!(
            dir.disk_image(id),
            Path::new("/d/disks/d-00000000000000ab.raw")
        );
        assert_eq!(
            dir.export_path(id, ExportFormat::Vhd),
            Path::new("/d/exports/d-00000000000000ab.vhd")
        );
    }
}
