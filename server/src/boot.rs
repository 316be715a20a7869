//! Boot files for network boot: `GET /boot.ipxe` (an iPXE script with this server's address,
//! fingerprint and an enrollment token filled in), `GET /vmlinuz` and `GET /initrd.img` (from
//! `--boot-dir`, as `p2v-image build` writes them), over **plain HTTP** on `--boot-listen`.
//!
//! Why plain HTTP: the iPXE ROMs that NICs and Debian's `ipxe-qemu` carry cannot verify a
//! self-signed certificate, and the script must come from somewhere a DHCP server can point
//! to. The trade-off: anyone on the boot network can read the script, so the token it carries
//! is a dedicated enrollment token (`boot-ipxe`, kept in `<data-dir>/boot.token`), not the
//! admin token; the agent still pins the server's certificate for everything it sends, so a
//! forged script can at worst make a machine boot something else, which PXE allows anyway.
//!
//! The script names the server by the `Host` header the client used (the address iPXE was
//! chained to) unless `--advertise` names it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{new_secret, token_hash};
use crate::datadir::{write_file_atomic, DataDir};
use crate::store::Store;
use crate::util::now_secs;
use crate::Error;

/// Name of the enrollment token the iPXE script carries.
pub const BOOT_TOKEN_NAME: &str = "boot-ipxe";

/// Where and what to serve.
#[derive(Debug, Clone)]
pub struct BootConfig {
    pub listen: SocketAddr,
    /// Directory with `vmlinuz` and `initrd.img`.
    pub dir: PathBuf,
    /// Extra kernel arguments for every booted machine (e.g. `p2v.post=stay`).
    pub extra_args: String,
}

/// What the script needs to know about the HTTPS side.
#[derive(Debug, Clone)]
pub(crate) struct BootInfo {
    pub fingerprint: String,
    pub https_port: u16,
    /// `https://host:port` when `--advertise` was given.
    pub advertised: Option<String>,
    pub token: String,
    pub extra_args: String,
}

/// The boot token: read from `<data-dir>/boot.token`, or created there and registered.
pub(crate) fn load_or_create_token(data: &DataDir, store: &Store) -> Result<String, Error> {
    let path = data.root().join("boot.token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_string();
        if store.token(&token_hash(&token))?.is_some() {
            return Ok(token);
        }
    }
    let token = new_secret()?;
    store.create_token(token_hash(&token), BOOT_TOKEN_NAME, now_secs())?;
    write_file_atomic(&path, format!("{token}\n").as_bytes(), 0o600)?;
    tracing::info!(path = %path.display(), "created the boot enrollment token");
    Ok(token)
}

/// The iPXE script for a client that reached us as `host` (`Host` header, with port).
pub(crate) fn script(info: &BootInfo, host: &str) -> String {
    let bare = match host.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or_default()),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h).to_string(),
    };
    let server = info
        .advertised
        .clone()
        .unwrap_or_else(|| format!("https://{bare}:{}", info.https_port));
    format!(
        "#!ipxe\n# P2V live image, served by p2v-server\necho Booting the P2V live image from http://{host}\n\
         kernel http://{host}/vmlinuz initrd=initrd.img console=tty0 console=ttyS0,115200 \
         p2v.server={server} p2v.fingerprint={} p2v.token={}{}{}\n\
         initrd http://{host}/initrd.img\nboot\n",
        info.fingerprint,
        info.token,
        if info.extra_args.is_empty() { "" } else { " " },
        info.extra_args
    )
}

fn respond(status: StatusCode, ctype: &str, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .body(Full::new(body))
        .expect("valid response")
}

async fn handle(
    dir: PathBuf,
    info: BootInfo,
    local: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ));
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| local.to_string());
    let path = req.uri().path().to_string();
    tracing::info!(%path, %host, "boot file request");
    let file = match path.as_str() {
        "/boot.ipxe" | "/" => {
            return Ok(respond(
                StatusCode::OK,
                "text/plain",
                script(&info, &host).into(),
            ))
        }
        "/vmlinuz" => "vmlinuz",
        "/initrd.img" => "initrd.img",
        _ => {
            return Ok(respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".into(),
            ))
        }
    };
    let full = dir.join(file);
    Ok(match tokio::fs::read(&full).await {
        Ok(data) => respond(StatusCode::OK, "application/octet-stream", data.into()),
        Err(e) => {
            tracing::warn!(path = %full.display(), error = %e, "boot file missing");
            respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("{file} is not in the boot directory (build it with p2v-image build)\n")
                    .into(),
            )
        }
    })
}

/// Binds the boot listener and serves until `shutdown` turns true; returns the bound address.
pub(crate) async fn start(
    config: &BootConfig,
    info: BootInfo,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, Error> {
    for f in ["vmlinuz", "initrd.img"] {
        if !config.dir.join(f).exists() {
            tracing::warn!(dir = %config.dir.display(), "no {f} in the boot directory yet");
        }
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::io(format!("listening on {} for boot files", config.listen), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the boot address", e))?;
    let dir = config.dir.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.changed() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let (dir, info) = (dir.clone(), info.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(dir.clone(), info.clone(), local, req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(advertised: Option<&str>) -> BootInfo {
        BootInfo {
            fingerprint: "sha256:ab".into(),
            https_port: 8443,
            advertised: advertised.map(str::to_string),
            token: "tok".into(),
            extra_args: String::new(),
        }
    }

    #[test]
    fn script_uses_the_host_the_client_used() {
        let s = script(&info(None), "10.0.2.2:8080");
        assert!(s.starts_with("#!ipxe\n"));
        assert!(
            s.contains("kernel http://10.0.2.2:8080/vmlinuz initrd=initrd.img "),
            "{s}"
        );
        assert!(
            s.contains(
                " p2v.server=https://10.0.2.2:8443 p2v.fingerprint=sha256:ab p2v.token=tok\n"
            ),
            "{s}"
        );
        assert!(s.contains("initrd http://10.0.2.2:8080/initrd.img\n"));
        let s = script(&info(Some("https://p2v.example.net:8443")), "[::1]:80");
        assert!(
            s.contains("p2v.server=https://p2v.example.net:8443 "),
            "{s}"
        );
        assert!(s.contains("kernel http://[::1]:80/vmlinuz"), "{s}");
    }
}
