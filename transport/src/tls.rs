//! rustls configurations: a pinned-fingerprint verifier for clients, CA trust, and the server side.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::TransportError;

/// SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = TransportError;
    /// Accepts `sha256:<hex>`, with the hex digits optionally separated by colons (the form
    /// `openssl x509 -fingerprint` prints), in either case.
    fn from_str(s: &str) -> Result<Self, TransportError> {
        let err = || TransportError::InvalidFingerprint(s.chars().take(120).collect());
        let hex_part = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("SHA256:"))
            .ok_or_else(err)?;
        let digits: String = hex_part.chars().filter(|c| *c != ':').collect();
        if digits.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(digits.to_ascii_lowercase(), &mut out).map_err(|_| err())?;
        Ok(Self(out))
    }
}

/// How a client decides whether the server it reached is the right one.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Accept exactly the certificate with this fingerprint (its signature over the handshake is
    /// still verified). Names and expiry do not matter: the pin is the identity.
    Pinned(Fingerprint),
    /// Accept a certificate chain that ends in one of these CAs and names the server.
    CaCertificates(Vec<CertificateDer<'static>>),
}

/// Reads PEM certificates from a CA file.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let display = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| TransportError::CaFile {
        path: display.clone(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TransportError::CaFile {
            path: display.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TransportError::EmptyCaFile(display));
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that speaks TLS 1.3 only and trusts the server as `trust` says.
pub fn client_config(trust: &ServerTrust) -> Result<Arc<ClientConfig>, TransportError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TransportError::TlsConfig)?;
    let config = match trust {
        ServerTrust::Pinned(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pinned: *fingerprint,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        ServerTrust::CaCertificates(cas) => {
            let mut roots = RootCertStore::empty();
            for ca in cas {
                roots.add(ca.clone()).map_err(TransportError::TlsConfig)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// A server configuration, TLS 1.3 only, presenting `chain` with `key`.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TransportError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TransportError::TlsConfig)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TransportError::TlsConfig)?;
    Ok(Arc::new(config))
}

/// The server's certificate had another fingerprint than the pinned one.
#[derive(Debug)]
struct FingerprintMismatch {
    expected: Fingerprint,
    presented: Fingerprint,
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server presented a certificate with fingerprint {} but {} is pinned \
             (wrong --fingerprint, or not the P2V server you meant)",
            self.presented, self.expected
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

#[derive(Debug)]
struct PinnedVerifier {
    pinned: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_der(end_entity.as_ref());
        if presented == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(
                    FingerprintMismatch {
                        expected: self.pinned,
                        presented,
                    },
                ))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configuration allows TLS 1.3 only, so this is never reached.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms() {
        let fp = Fingerprint::of_der(b"certificate");
        let text = fp.to_string();
        assert!(text.starts_with("sha256:"));
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        let colons = format!(
            "SHA256:{}",
            hex::encode_upper(fp.0)
                .as_bytes()
                .chunks(2)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(":")
        );
        assert_eq!(colons.parse::<Fingerprint>().unwrap(), fp);
        for bad in [
            "",
            "sha256:",
            "md5:abcd",
            "sha256:zz",
            &text[..text.len() - 1],
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
    }
}
