//! The operator commands (`p2v-server machines`, `disks`, `sessions`, `token create`,
//! `export`): a client of the running server's API over HTTPS, pinned to the fingerprint the
//! server published in `server.json`, authenticated with `admin.token`; plus the plain-text
//! tables they print.
//!
//! Small answers go through [`p2v_transport::HttpsClient`]; exports, which can be as large as
//! the disk, are streamed to a temporary file with hyper directly and renamed into place when
//! complete.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use p2v_protocol::api::{
    paths, ConversionState, ConversionStatus, ConvertRequest, CreateToken, DiskSummary, ErrorBody,
    ExportFormat, MachineSummary, SessionSummary, TokenCreated,
};
use p2v_protocol::{DiskId, MachineId};
use p2v_transport::{
    client_config, Fingerprint, HttpsClient, ServerTrust, ServerUrl, TransportError,
};
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::datadir::DataDir;
use crate::server::local_url;
use crate::util::{format_time, human_size, random_u64};
use crate::Error;

/// A connection to the running server with the admin token.
#[derive(Debug)]
pub struct Operator {
    client: HttpsClient,
    url: ServerUrl,
    fingerprint: Fingerprint,
    token: String,
}

impl Operator {
    /// Finds the server through `server.json` and `admin.token` in the data directory.
    pub fn from_data_dir(data_dir: &Path) -> Result<Self, Error> {
        let data = DataDir::new(data_dir);
        let info = data.read_server_info()?;
        let token = data.read_admin_token()?;
        let fingerprint: Fingerprint = info.fingerprint.parse()?;
        Self::new(local_url(info.listen), fingerprint, token)
    }

    pub fn new(url: ServerUrl, fingerprint: Fingerprint, token: String) -> Result<Self, Error> {
        let config = client_config(&ServerTrust::Pinned(fingerprint))?;
        let client = HttpsClient::new(url.clone(), config)?;
        Ok(Self {
            client,
            url,
            fingerprint,
            token,
        })
    }

    async fn call<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let mut headers = vec![("authorization", format!("Bearer {}", self.token))];
        if body.is_some() {
            headers.push(("content-type", "application/json".to_string()));
        }
        let response = self
            .client
            .request(
                method,
                path,
                &headers,
                Bytes::from(body.unwrap_or_default()),
            )
            .await?;
        if !response.status.is_success() {
            return Err(api_error(response.status, &response.body));
        }
        serde_json::from_slice(&response.body).map_err(|source| Error::Decode {
            what: format!("the server's answer to {path}"),
            source,
        })
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &mut self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        let body = serde_json::to_vec(body).expect("API types always serialize");
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn machines(&mut self) -> Result<Vec<MachineSummary>, Error> {
        self.call(Method::GET, paths::MACHINES, None).await
    }

    pub async fn machine(&mut self, machine: MachineId) -> Result<MachineSummary, Error> {
        self.call(Method::GET, &paths::machine(machine), None).await
    }

    pub async fn disks(&mut self) -> Result<Vec<DiskSummary>, Error> {
        self.call(Method::GET, paths::DISKS, None).await
    }

    pub async fn disk(&mut self, disk: DiskId) -> Result<DiskSummary, Error> {
        self.call(Method::GET, &paths::disk(disk), None).await
    }

    pub async fn sessions(&mut self) -> Result<Vec<SessionSummary>, Error> {
        self.call(Method::GET, paths::SESSIONS, None).await
    }

    pub async fn create_token(&mut self, name: &str) -> Result<TokenCreated, Error> {
        self.post(
            paths::TOKENS,
            &CreateToken {
                name: name.to_string(),
            },
        )
        .await
    }

    /// Starts a conversion of `machine`.
    pub async fn convert(
        &mut self,
        machine: MachineId,
        request: &ConvertRequest,
    ) -> Result<ConversionStatus, Error> {
        self.post(&paths::machine_conversion(machine), request)
            .await
    }

    /// The latest conversion of `machine`.
    pub async fn conversion(&mut self, machine: MachineId) -> Result<ConversionStatus, Error> {
        self.call(Method::GET, &paths::machine_conversion(machine), None)
            .await
    }

    /// Polls the conversion of `machine` until it is no longer running.
    pub async fn wait_conversion(&mut self, machine: MachineId) -> Result<ConversionStatus, Error> {
        loop {
            let status = self.conversion(machine).await?;
            if status.state != ConversionState::Running {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Downloads the export of `disk` in `format` to `output` (through a temporary file beside
    /// it, renamed when the whole image arrived): the captured disk, or with `converted` the
    /// disk as the machine's last successful conversion left it. Returns the bytes written.
    pub async fn export(
        &self,
        disk: DiskId,
        format: ExportFormat,
        converted: bool,
        output: &Path,
    ) -> Result<u64, Error> {
        let addr = self.url.authority();
        let config = client_config(&ServerTrust::Pinned(self.fingerprint))?;
        let server_name = ServerName::try_from(self.url.host.clone()).map_err(|_| {
            TransportError::InvalidUrl {
                url: self.url.to_string(),
                reason: "host is neither a DNS name nor an IP address",
            }
        })?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|source| TransportError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await
                .map_err(|source| TransportError::Handshake {
                    addr: addr.clone(),
                    source,
                })?;
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
                .await
                .map_err(|source| TransportError::Http {
                    addr: addr.clone(),
                    source,
                })
        };
        let (mut sender, connection) = tokio::time::timeout(Duration::from_secs(15), connect)
            .await
            .map_err(|_| TransportError::Timeout {
                what: "connecting",
                secs: 15,
            })??;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("export connection closed: {e}");
            }
        });
        let path = if converted {
            paths::disk_export_converted(disk, format)
        } else {
            paths::disk_export(disk, format)
        };
        let request = Request::get(path)
            .header(http::header::HOST, &addr)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .body(Empty::new())
            .map_err(TransportError::from)?;
        let http_err = |source| {
            Error::Transport(TransportError::Http {
                addr: addr.clone(),
                source,
            })
        };
        // The server converts the image before it answers, which can take a while.
        let response = sender.send_request(request).await.map_err(http_err)?;
        let status = response.status();
        let expected = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = http_body_util::Limited::new(body, 1 << 20)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(api_error(status, &bytes));
        }

        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::BadRequest(format!("{} names no file", output.display())))?;
        let tmp = output.with_file_name(format!(".{name}.partial-{:016x}", random_u64()?));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(http_err)?;
                if let Ok(data) = frame.into_data() {
                    file.write_all(&data)
                        .await
                        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
                    total += data.len() as u64;
                }
            }
            if expected.is_some_and(|e| e != total) {
                return Err(Error::Internal(format!(
                    "the export ended after {total} of {} bytes",
                    expected.unwrap_or(0)
                )));
            }
            file.sync_all()
                .await
                .map_err(|e| Error::io(format!("syncing {}", tmp.display()), e))?;
            drop(file);
            tokio::fs::rename(&tmp, output).await.map_err(|e| {
                Error::io(
                    format!("renaming {} to {}", tmp.display(), output.display()),
                    e,
                )
            })?;
            Ok(total)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

/// What `export-vm` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedVm {
    pub disks: Vec<std::path::PathBuf>,
    pub libvirt_xml: std::path::PathBuf,
    /// The OVF descriptor, written with VMDK disks only (what vSphere imports).
    pub ovf: Option<std::path::PathBuf>,
    /// What the operator should know about the export.
    pub notes: Vec<String>,
}

/// A file-name-safe form of a VM name.
fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("vm{s}")
    } else {
        s
    }
}

impl Operator {
    /// Exports a converted machine into `dir`: each converted disk (`NAME-diskN.EXT`) and the
    /// libvirt domain XML (`NAME.xml`) that names them by absolute path.
    pub async fn export_vm(
        &mut self,
        machine: MachineId,
        format: ExportFormat,
        dir: &Path,
        libvirt: &p2v_convert::descriptor::LibvirtOptions,
    ) -> Result<ExportedVm, Error> {
        use p2v_convert::profile::{DiskFormat, VmSpec};
        let status = self.conversion(machine).await?;
        if status.state != ConversionState::Succeeded || status.dry_run {
            return Err(Error::Conflict(format!(
                "machine {machine} has no successful conversion (latest: {:?}{}); run `p2v-server convert {machine}`",
                status.state,
                if status.dry_run { ", dry run" } else { "" }
            )));
        }
        let disk_format = match format {
            ExportFormat::Qcow2 => DiskFormat::Qcow2,
            ExportFormat::Raw => DiskFormat::Raw,
            ExportFormat::Vmdk => DiskFormat::Vmdk,
            other => {
                return Err(Error::BadRequest(format!(
                    "export-vm writes qcow2, raw or vmdk disks (not {})",
                    other.as_str()
                )))
            }
        };
        let mut vm: VmSpec =
            serde_json::from_value(status.vm.clone()).map_err(|source| Error::Decode {
                what: "the conversion's VM".into(),
                source,
            })?;
        // The guest's own host name, when the inspection found one, names the VM.
        if let Some(host) = status
            .report
            .as_ref()
            .and_then(|r| r["inspection"]["hostname"].as_str())
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 63
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            })
        {
            vm.name = host.to_string();
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let dir = std::path::absolute(dir)
            .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
        let stem = file_stem(&vm.name);
        let mut disks = Vec::new();
        for d in &status.disks {
            let path = dir.join(format!("{stem}-disk{}.{}", d.index, format.as_str()));
            let bytes = self.export(d.disk_id, format, true, &path).await?;
            if let Some(spec) = vm.disks.get_mut(d.index) {
                spec.file = Some(path.display().to_string());
                spec.format = Some(disk_format);
                spec.file_bytes = Some(bytes);
            }
            disks.push(path);
        }
        let mut options = libvirt.clone();
        if options.uuid.is_none() {
            options.uuid = Some(p2v_convert::descriptor::stable_uuid(&machine.to_string()));
        }
        let xml = p2v_convert::descriptor::libvirt_domain_xml(&vm, &options)
            .map_err(|e| Error::BadRequest(format!("the libvirt domain: {e}")))?;
        let libvirt_xml = dir.join(format!("{stem}.xml"));
        crate::datadir::write_file_atomic(&libvirt_xml, xml.as_bytes(), 0o644)?;
        let mut notes = Vec::new();
        let ovf = if format == ExportFormat::Vmdk {
            if vm.profile != "sata" {
                notes.push(format!(
                    "the guest was converted for the {} profile: vSphere has no virtio devices, so \
                     for an import there convert with --profile sata (AHCI and e1000e, which \
                     vSphere has and the OVF then describes)",
                    vm.profile
                ));
            }
            // OVF names its files relative to the descriptor.
            let mut bare = vm.clone();
            for d in &mut bare.disks {
                d.file = d.file.as_deref().and_then(|f| {
                    Path::new(f)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                });
            }
            let os = status
                .report
                .as_ref()
                .and_then(|r| r["inspection"]["os"].as_object().cloned())
                .map(|os| {
                    p2v_convert::descriptor::OvfOs::from_os_release(
                        os.get("id").and_then(|v| v.as_str()).unwrap_or(""),
                        os.get("version_id").and_then(|v| v.as_str()),
                    )
                })
                .unwrap_or_default();
            let text = p2v_convert::descriptor::ovf_descriptor(
                &bare,
                &p2v_convert::descriptor::OvfOptions {
                    os,
                    ..Default::default()
                },
            )
            .map_err(|e| Error::BadRequest(format!("the OVF descriptor: {e}")))?;
            let path = dir.join(format!("{stem}.ovf"));
            crate::datadir::write_file_atomic(&path, text.as_bytes(), 0o644)?;
            Some(path)
        } else {
            None
        };
        Ok(ExportedVm {
            disks,
            libvirt_xml,
            ovf,
            notes,
        })
    }
}

/// The error of a non-2xx answer, from its `ErrorBody` when it has one.
fn api_error(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(err) => Error::Api {
            status: status.as_u16(),
            code: Some(err.error.code),
            message: err.error.message,
        },
        Err(_) => Error::Api {
            status: status.as_u16(),
            code: None,
            message: String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
        },
    }
}

/// The fingerprint of the server's certificate, read from `tls/cert.pem` (the server need not
/// run).
pub fn fingerprint(data_dir: &Path) -> Result<Fingerprint, Error> {
    crate::cert::read_fingerprint(&DataDir::new(data_dir))
}

/// Columns aligned with two spaces between them.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn progress(disk: &DiskSummary) -> String {
    if disk.size_bytes == 0 {
        return "-".into();
    }
    let percent = disk.durable_bytes as f64 * 100.0 / disk.size_bytes as f64;
    // Never show 100% before the last byte is there.
    if disk.durable_bytes < disk.size_bytes && percent > 99.9 {
        return "99.9%".into();
    }
    format!("{percent:.1}%")
}

fn state_name(state: p2v_protocol::api::DiskState) -> &'static str {
    match state {
        p2v_protocol::api::DiskState::Receiving => "receiving",
        p2v_protocol::api::DiskState::Complete => "complete",
    }
}

/// `p2v-server disks`: disk id, machine id, name, size, state, progress, received bytes.
pub fn render_disks(disks: &[DiskSummary]) -> String {
    let rows: Vec<Vec<String>> = disks
        .iter()
        .map(|d| {
            vec![
                d.disk_id.to_string(),
                d.machine_id.to_string(),
                d.name.clone(),
                human_size(d.size_bytes),
                state_name(d.state).to_string(),
                progress(d),
                human_size(d.received_bytes),
            ]
        })
        .collect();
    table(
        &[
            "DISK", "MACHINE", "NAME", "SIZE", "STATE", "PROGRESS", "RECEIVED",
        ],
        &rows,
    )
}

/// `p2v-server machines`.
pub fn render_machines(machines: &[MachineSummary]) -> String {
    let rows: Vec<Vec<String>> = machines
        .iter()
        .map(|m| {
            let system = &m.inventory.system;
            let model = [system.vendor.as_deref(), system.product.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            let complete = m
                .disks
                .iter()
                .filter(|d| d.state == p2v_protocol::api::DiskState::Complete)
                .count();
            vec![
                m.machine_id.to_string(),
                system.hostname.clone().unwrap_or_else(|| "-".into()),
                if model.is_empty() { "-".into() } else { model },
                format!("{} ({} complete)", m.disks.len(), complete),
                m.sessions.len().to_string(),
                format_time(m.last_seen),
            ]
        })
        .collect();
    table(
        &[
            "MACHINE",
            "HOSTNAME",
            "MODEL",
            "DISKS",
            "SESSIONS",
            "LAST SEEN (UTC)",
        ],
        &rows,
    )
}

/// `p2v-server sessions`.
/// The plan, one numbered change per line with its reason, and what became of it.
pub fn render_plan(
    plan: &p2v_convert::plan::Plan,
    applied: &[p2v_convert::apply::AppliedChange],
    dry_run: bool,
) -> String {
    use p2v_convert::plan::Change;
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan: {} change(s){}",
        plan.changes.len(),
        if dry_run {
            ", not applied (dry run)"
        } else {
            ""
        }
    );
    for (i, change) in plan.changes.iter().enumerate() {
        let what = match change {
            Change::EditLines { path, edits, .. } => {
                let mut s = format!("edit {path}");
                for e in edits {
                    let _ = write!(
                        s,
                        "\n       line {}: {:?} -> {:?}",
                        e.line, e.before, e.after
                    );
                }
                s
            }
            Change::AppendLines { path, lines, .. } => {
                format!("append to {path}: {}", lines.join(" | "))
            }
            Change::WriteFile { path, .. } => format!("write {path}"),
            Change::MaskUnit { unit, .. } => format!("mask {unit}"),
            Change::RebuildInitramfs {
                tool,
                kernel,
                image,
                drivers,
                ..
            } => format!(
                "rebuild {image} for {kernel} with {tool:?} (drivers {})",
                drivers.join(", ")
            ),
        };
        let outcome = match applied.iter().find(|a| a.change == i) {
            Some(a) if a.ok => "  [done]".to_string(),
            Some(a) => format!("  [FAILED: {}]", a.detail),
            None if dry_run => String::new(),
            None => "  [not applied]".to_string(),
        };
        let _ = writeln!(out, "  {:>2}. {what}{outcome}", i + 1);
        let _ = writeln!(out, "      why: {}", change.reason());
    }
    for b in &plan.blockers {
        let _ = writeln!(out, "  blocker: {b}");
    }
    for n in &plan.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out
}

/// A conversion for the operator: state, timings, what was found, the plan and what was done.
pub fn render_conversion(status: &ConversionStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let state = match status.state {
        ConversionState::Running => "running",
        ConversionState::Succeeded => "succeeded",
        ConversionState::Failed => "FAILED",
    };
    let _ = writeln!(
        out,
        "conversion of {} to profile {}{}{}: {state}",
        status.machine_id,
        status.profile,
        if status.dry_run { " (dry run)" } else { "" },
        if status.direct {
            " (direct, on the host)"
        } else {
            " (appliance VM)"
        }
    );
    if let Some(ms) = status.appliance_start_ms {
        let _ = writeln!(out, "appliance started in {:.1} s", ms as f64 / 1000.0);
    }
    if let Some(ms) = status.wall_ms {
        let _ = writeln!(out, "took {:.1} s", ms as f64 / 1000.0);
    }
    if let Some(e) = &status.error {
        let _ = writeln!(out, "error: {e}");
    }
    let report = status
        .report
        .as_ref()
        .and_then(|r| serde_json::from_value::<p2v_convert::job::ConversionReport>(r.clone()).ok());
    if let Some(report) = &report {
        let _ = writeln!(
            out,
            "\n{}",
            p2v_convert::inspect::render(&report.inspection).trim_end()
        );
        out.push('\n');
        out.push_str(&render_plan(&report.plan, &report.applied, report.dry_run));
        for w in &report.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        for e in &report.errors {
            let _ = writeln!(out, "error: {e}");
        }
    }
    if !status.console_tail.is_empty() {
        let _ = writeln!(out, "\nlast lines of the appliance console:");
        for l in &status.console_tail {
            let _ = writeln!(out, "  {l}");
        }
    }
    out
}

pub fn render_sessions(sessions: &[SessionSummary]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let status = match (&s.error, s.finished) {
                (Some(error), _) => format!("failed: {error}"),
                (None, true) => "finished".into(),
                (None, false) => "running".into(),
            };
            vec![
                s.session_id.to_string(),
                s.machine_id.to_string(),
                format_time(s.started_at),
                format_time(s.last_seen),
                human_size(s.received_bytes),
                s.received_chunks.to_string(),
                status,
            ]
        })
        .collect();
    table(
        &[
            "SESSION",
            "MACHINE",
            "STARTED (UTC)",
            "LAST SEEN (UTC)",
            "RECEIVED",
            "CHUNKS",
            "STATUS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let out = table(
            &["A", "LONG"],
            &[
                vec!["xxxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(out, "A     LONG\nxxxx  1\ny     22\n");
    }

    #[test]
    fn api_errors_are_decoded() {
        let body = br#"{"error":{"code":"conflict","message":"3 of 5 chunks missing"}}"#;
        let err = api_error(StatusCode::CONFLICT, body);
        assert_eq!(err.code(), p2v_protocol::api::ErrorCode::Conflict);
        assert!(err.to_string().contains("3 of 5 chunks missing"));
        let err = api_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert!(err.to_string().contains("502"));
    }
}
