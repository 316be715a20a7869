//! HTTPS transport shared by the capture agent and the server's operator commands.
//!
//! - [`Fingerprint`]: the SHA-256 of a certificate (DER), written `sha256:<64 hex digits>`.
//! - [`ServerTrust`]: how a client decides to trust the server: a pinned fingerprint (the
//!   default, printed by `p2v-server serve` on first start) or a CA file.
//! - [`client_config`] / [`server_config`]: rustls configurations, TLS 1.3 only, ring provider.
//! - [`HttpsClient`]: one keep-alive HTTP/1.1 connection over TLS, reconnected on demand.
//!
//! TLS 1.3 only: every peer is our own code, so there is no legacy client to serve.

mod client;
mod tls;

pub use client::{HttpsClient, Response, ServerUrl};
pub use tls::{client_config, load_ca_file, server_config, Fingerprint, ServerTrust};

/// Errors of the transport layer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("invalid fingerprint {0:?}: expected sha256:<64 hex digits>")]
    InvalidFingerprint(String),
    #[error("reading CA file {path}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {0} holds no usable certificate")]
    EmptyCaFile(String),
    #[error("building TLS configuration")]
    TlsConfig(#[source] rustls::Error),
    #[error("connecting to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed")]
    Handshake {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with {addr} failed")]
    Http {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    #[error("building request")]
    Request(#[from] http::Error),
    #[error("{what} timed out after {secs} s")]
    Timeout { what: &'static str, secs: u64 },
}

impl TransportError {
    /// True when the failure was the server's certificate not being trusted (wrong fingerprint,
    /// unknown CA): retrying cannot help and nothing must be sent.
    pub fn is_untrusted_server(&self) -> bool {
        match self {
            Self::Handshake { source, .. } => source
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| {
                    matches!(
                        e,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                }),
            _ => false,
        }
    }
}
