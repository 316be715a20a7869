//! Starting and stopping the server: the data directory, TLS, the listener, one task per
//! connection, and graceful shutdown.
//!
//! A slow or broken client can hold only what it was given: the TLS handshake, the request
//! headers and each request body have time limits ([`Limits`]); bodies in memory are bounded by
//! a byte budget and chunk decoding/writing by a small pool of workers, so memory stays bounded
//! however many agents connect. Each connection is its own task; nothing one connection waits
//! for blocks another (the only shared waits are the per-chunk lock and the group commit).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use p2v_transport::{Fingerprint, ServerUrl};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::api::{self, blocking, AppState};
use crate::commit::Committer;
use crate::datadir::{DataDir, ServerInfo};
use crate::store::Store;
use crate::util::now_secs;
use crate::{cert, export, Error};

/// Time and size limits of the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A TLS handshake must finish within this.
    pub tls_handshake_timeout: Duration,
    /// Request headers must arrive within this (hyper `header_read_timeout`; also closes idle
    /// keep-alive connections).
    pub header_read_timeout: Duration,
    /// A request body may pause at most this long between two pieces.
    pub body_idle_timeout: Duration,
    /// A request body must arrive within this in all.
    pub body_total_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Chunks decoded, hashed and written at once.
    pub chunk_workers: usize,
    /// Bytes of request bodies held in memory at once.
    pub body_budget_bytes: u64,
    /// A chunk is refused with 507 when fewer than its size plus this many bytes (at most 2% of
    /// the filesystem) are free on the filesystem of the images, so that the metadata database
    /// keeps room to commit. 0 disables the check (the filesystem's own `ENOSPC` still gives
    /// 507, and the database recovers by itself from running out of space).
    pub storage_reserve_bytes: u64,
    /// On shutdown, open requests get this long to finish.
    pub shutdown_grace: Duration,
    /// Fault injection for tests: the first N chunk uploads carrying data are treated as
    /// corrupted on the way (their hash check fails, 422), to exercise the agents' resend path.
    pub inject_corrupt_chunks: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            body_total_timeout: Duration::from_secs(600),
            max_connections: 1024,
            chunk_workers: 16,
            body_budget_bytes: 256 << 20,
            storage_reserve_bytes: 64 << 20,
            shutdown_grace: Duration::from_secs(10),
            inject_corrupt_chunks: 0,
        }
    }
}

/// What `p2v-server serve` is given.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    /// Address to bind; port 0 picks a free port (see [`RunningServer::local_addr`]).
    pub listen: SocketAddr,
    /// Host names or addresses agents reach the server by; the first one goes into the printed
    /// agent arguments, all of them into a new certificate.
    pub advertise: Vec<String>,
    pub limits: Limits,
    /// Serve boot files (iPXE script, kernel, initrd) over plain HTTP ([`crate::boot`]).
    pub boot: Option<crate::boot::BootConfig>,
    /// How conversions run ([`crate::conversion`]).
    pub conversion: crate::conversion::ConversionConfig,
}

impl ServeConfig {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen,
            advertise: Vec::new(),
            limits: Limits::default(),
            boot: None,
            conversion: Default::default(),
        }
    }
}

/// A server running in this process.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    fingerprint: Fingerprint,
    admin_token: String,
    url: String,
    data: DataDir,
    shutdown: watch::Sender<bool>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
    state: Weak<AppState>,
    store: Weak<Store>,
    commit_thread: Option<std::thread::JoinHandle<()>>,
    boot_addr: Option<SocketAddr>,
}

/// Starts the server: creates the data directory on first start, binds the listener, writes
/// `server.json`, and serves until [`RunningServer::shutdown`].
pub async fn start(config: ServeConfig) -> Result<RunningServer, Error> {
    let root = std::path::absolute(&config.data_dir)
        .map_err(|e| Error::io(format!("resolving {}", config.data_dir.display()), e))?;
    let data = DataDir::new(root);
    let advertise = config.advertise.clone();
    let setup_data = data.clone();
    let (admin_token, identity, store) = blocking(move || {
        setup_data.create_layout()?;
        let admin_token = setup_data.load_or_create_admin_token()?;
        let identity = cert::load_or_create(&setup_data, &advertise)?;
        let store = Store::open(&setup_data.db_path())?;
        export::remove_stale_temporaries(&setup_data.exports_dir());
        Ok((admin_token, identity, store))
    })
    .await?;
    let fingerprint = identity.fingerprint;
    let tls = p2v_transport::server_config(identity.chain, identity.key)?;
    let store = Arc::new(store);

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::io(format!("listening on {}", config.listen), e))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    let url = advertised_url(&config.advertise, local_addr);
    data.write_server_info(&ServerInfo {
        listen: local_addr,
        url: url.clone(),
        fingerprint: fingerprint.to_string(),
        pid: std::process::id(),
        started_at: now_secs(),
    })?;

    let (committer, commit_thread) = Committer::start(store.clone())?;
    let state = Arc::new(AppState::new(
        data.clone(),
        store.clone(),
        committer,
        &admin_token,
        config.limits,
        config.conversion.clone(),
    ));
    crate::conversion::recover_interrupted(data.root());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let boot_addr = match &config.boot {
        Some(boot) => {
            let token_store = store.clone();
            let token_data = data.clone();
            let token =
                blocking(move || crate::boot::load_or_create_token(&token_data, &token_store))
                    .await?;
            let info = crate::boot::BootInfo {
                fingerprint: fingerprint.to_string(),
                https_port: local_addr.port(),
                advertised: (!config.advertise.is_empty()).then(|| url.clone()),
                token,
                extra_args: boot.extra_args.clone(),
            };
            Some(crate::boot::start(boot, info, shutdown_rx.clone()).await?)
        }
        None => None,
    };
    let accept_task = tokio::spawn(accept_loop(
        state.clone(),
        listener,
        TlsAcceptor::from(tls),
        shutdown_rx,
    ));
    tracing::info!(%local_addr, %fingerprint, data_dir = %data.root().display(), "server started");
    Ok(RunningServer {
        local_addr,
        fingerprint,
        admin_token,
        url,
        data,
        shutdown,
        accept_task: Some(accept_task),
        state: Arc::downgrade(&state),
        store: Arc::downgrade(&store),
        commit_thread: Some(commit_thread),
        boot_addr,
    })
}

/// `p2v-server serve`: starts, prints the banner to stdout, serves until SIGINT or SIGTERM.
pub async fn serve(config: ServeConfig) -> Result<(), Error> {
    let server = start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        out.write_all(server.banner().as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("writing to stdout", e))?;
    }
    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await
}

async fn wait_for_signal() -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::io("installing a SIGTERM handler", e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("installing a SIGINT handler", e))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

impl RunningServer {
    /// The address actually bound (the real port with `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The URL agents are told (`https://HOST:PORT`).
    pub fn advertised_url(&self) -> &str {
        &self.url
    }

    /// A URL for clients on this machine (the loopback address when bound to all addresses).
    pub fn local_url(&self) -> ServerUrl {
        local_url(self.local_addr)
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data
    }

    /// What `serve` prints on stdout, one item per line:
    ///
    /// ```text
    /// listening on https://IP:PORT
    /// fingerprint sha256:<hex>
    /// p2v-capture --server https://HOST:PORT --fingerprint sha256:<hex> --token <TOKEN>
    /// p2v.server=https://HOST:PORT p2v.fingerprint=sha256:<hex> p2v.token=<TOKEN>
    /// replace <TOKEN> with an enrollment token from: p2v-server token create --name NAME
    /// ```
    pub fn banner(&self) -> String {
        let listen = ServerUrl {
            host: self.local_addr.ip().to_string(),
            port: self.local_addr.port(),
        };
        let fp = self.fingerprint;
        let url = &self.url;
        format!(
            "listening on {listen}\n\
             fingerprint {fp}\n\
             p2v-capture --server {url} --fingerprint {fp} --token <TOKEN>\n\
             p2v.server={url} p2v.fingerprint={fp} p2v.token=<TOKEN>\n\
             replace <TOKEN> with an enrollment token from: p2v-server token create --name NAME\n{}",
            self.boot_addr
                .map(|a| format!("boot script http://{a}/boot.ipxe (plain HTTP; chain iPXE to it)\n"))
                .unwrap_or_default()
        )
    }

    /// The boot files' address, when `--boot-listen` was given.
    pub fn boot_addr(&self) -> Option<SocketAddr> {
        self.boot_addr
    }

    /// Stops accepting, lets open requests finish (up to the grace time), and closes the
    /// database; the data directory can be opened again when this returns.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.accept_task.take() {
            task.await
                .map_err(|e| Error::Internal(format!("the accept task failed: {e}")))?;
        }
        // Requests that were cut off may still run blocking work for a moment.
        wait_until_dropped(&self.state, Duration::from_secs(30)).await?;
        if let Some(thread) = self.commit_thread.take() {
            blocking(move || {
                thread
                    .join()
                    .map_err(|_| Error::Internal("the commit thread panicked".into()))
            })
            .await?;
        }
        wait_until_dropped(&self.store, Duration::from_secs(30)).await?;
        tracing::info!("server stopped");
        Ok(())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn wait_until_dropped<T>(weak: &Weak<T>, limit: Duration) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + limit;
    while weak.strong_count() > 0 {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Internal(
                "server state still in use after shutdown".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// `https://HOST:PORT` for agents: the first `--advertise` value, else the bound address
/// when it is a specific one, else the host name.
fn advertised_url(advertise: &[String], local: SocketAddr) -> String {
    let host = advertise
        .first()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .or_else(|| (!local.ip().is_unspecified()).then(|| local.ip().to_string()))
        .or_else(cert::hostname)
        .unwrap_or_else(|| "127.0.0.1".to_string());
    ServerUrl {
        host,
        port: local.port(),
    }
    .to_string()
}

/// The URL to reach a server bound to `listen` from this machine.
pub fn local_url(listen: SocketAddr) -> ServerUrl {
    let ip = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    ServerUrl {
        host: ip.to_string(),
        port: listen.port(),
    }
}

async fn accept_loop(
    state: Arc<AppState>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(state.limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stopped(&mut shutdown) => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(serve_connection(
            state.clone(),
            acceptor.clone(),
            tcp,
            peer,
            shutdown.clone(),
            permit,
        ));
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let grace = state.limits.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after {grace:?}; closing them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Resolves once shutdown was asked for (or the server handle is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn serve_connection(
    state: Arc<AppState>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let limits = state.limits.clone();
    let tls = match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(api::handle(state, request).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        }
        _ = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection ended during shutdown: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let any: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        assert_eq!(local_url(any).to_string(), "https://127.0.0.1:8443");
        let any6: SocketAddr = "[::]:8443".parse().unwrap();
        assert_eq!(local_url(any6).to_string(), "https://[::1]:8443");
        let specific: SocketAddr = "192.0.2.1:9000".parse().unwrap();
        assert_eq!(advertised_url(&[], specific), "https://192.0.2.1:9000");
        assert_eq!(
            advertised_url(&["p2v.example".into()], specific),
            "https://p2v.example:9000"
        );
        assert_eq!(
            advertised_url(&["[2001:db8::1]".into()], specific),
            "https://[2001:db8::1]:9000"
        );
    }
}
