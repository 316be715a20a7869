//! The server's TLS identity: an ECDSA P-256 key and a self-signed certificate, made with rcgen
//! on first start and kept in `tls/`.
//!
//! Agents do not check names or a CA: they pin the certificate's SHA-256
//! ([`p2v_transport::Fingerprint`]), which `serve` prints. The subject alternative names
//! (localhost, 127.0.0.1, ::1, the host name and each `--advertise` value) are there for tools
//! that do check names. The certificate is valid for ten years; it is never regenerated while
//! `tls/` holds one, since that would change the fingerprint every agent was given.

use std::fs;
use std::net::IpAddr;

use p2v_transport::Fingerprint;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::datadir::{write_file_atomic, DataDir};
use crate::util::{civil_from_days, now_secs};
use crate::Error;

/// Certificate chain, key and fingerprint the server presents.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub fingerprint: Fingerprint,
}

/// Loads `tls/cert.pem` and `tls/key.pem`, creating both on first start.
pub(crate) fn load_or_create(dir: &DataDir, advertise: &[String]) -> Result<Identity, Error> {
    let (cert_path, key_path) = (dir.cert_path(), dir.key_path());
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {}
        (false, false) => {
            let names = subject_alt_names(advertise);
            let (cert_pem, key_pem) = generate(&names)?;
            // The key first: a certificate without its key would be useless.
            write_file_atomic(&key_path, key_pem.as_bytes(), 0o600)?;
            write_file_atomic(&cert_path, cert_pem.as_bytes(), 0o644)?;
            tracing::info!(names = ?names, path = %cert_path.display(), "created a self-signed certificate");
        }
        _ => {
            return Err(Error::Internal(format!(
                "only one of {} and {} exists; restore the missing one, or remove both to \
                 generate a new certificate (agents then need the new fingerprint)",
                cert_path.display(),
                key_path.display()
            )))
        }
    }
    let chain = read_certificates(dir)?;
    let key_pem =
        fs::read(&key_path).map_err(|e| Error::io(format!("reading {}", key_path.display()), e))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| Error::io(format!("parsing {}", key_path.display()), e))?
        .ok_or_else(|| Error::Internal(format!("{} holds no private key", key_path.display())))?;
    let fingerprint = Fingerprint::of_der(chain[0].as_ref());
    Ok(Identity {
        chain,
        key,
        fingerprint,
    })
}

/// The fingerprint of `tls/cert.pem` (works while the server is stopped).
pub fn read_fingerprint(dir: &DataDir) -> Result<Fingerprint, Error> {
    let chain = read_certificates(dir)?;
    Ok(Fingerprint::of_der(chain[0].as_ref()))
}

fn read_certificates(dir: &DataDir) -> Result<Vec<CertificateDer<'static>>, Error> {
    let path = dir.cert_path();
    let pem = fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::io(format!("parsing {}", path.display()), e))?;
    if chain.is_empty() {
        return Err(Error::Internal(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(chain)
}

/// localhost, the loopback addresses, the host name and the advertised names, deduplicated;
/// names rcgen cannot encode (not ASCII) are left out with a warning.
fn subject_alt_names(advertise: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(host) = hostname() {
        names.push(host);
    }
    for name in advertise {
        let name = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        names.push(name);
    }
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let usable = name.parse::<IpAddr>().is_ok()
            || (!name.is_empty()
                && name.len() <= 253
                && name.is_ascii()
                && !name.contains(char::is_whitespace));
        if !usable {
            tracing::warn!(
                name,
                "left out of the certificate: not an IP address or DNS name"
            );
        } else if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The machine's host name, from the kernel.
pub(crate) fn hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = name.trim();
    (!name.is_empty() && name != "(none)").then(|| name.to_string())
}

/// A new key pair and self-signed certificate, both PEM.
fn generate(names: &[String]) -> Result<(String, String), Error> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(Error::Certificate)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(Error::Certificate)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "p2v-server");
    dn.push(rcgen::DnType::OrganizationName, "P2V");
    params.distinguished_name = dn;
    let today = (now_secs() / 86_400) as i64;
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + 3652);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params.self_signed(&key).map_err(Error::Certificate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        dir.create_layout().unwrap();
        let first = load_or_create(&dir, &["p2v.example".into(), "192.0.2.7".into()]).unwrap();
        let again = load_or_create(&dir, &[]).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(read_fingerprint(&dir).unwrap(), first.fingerprint);
        // The key and certificate make a working rustls configuration.
        p2v_transport::server_config(first.chain, first.key).unwrap();
    }

    #[test]
    fn half_an_identity_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        dir.create_layout().unwrap();
        load_or_create(&dir, &[]).unwrap();
        fs::remove_file(dir.key_path()).unwrap();
        assert!(load_or_create(&dir, &[]).is_err());
    }

    #[test]
    fn names_are_deduplicated_and_filtered() {
        let names = subject_alt_names(&[
            "localhost".into(),
            "[2001:db8::1]".into(),
            "bad name".into(),
        ]);
        assert_eq!(names.iter().filter(|n| *n == "localhost").count(), 1);
        assert!(names.contains(&"2001:db8::1".to_string()));
        assert!(!names.contains(&"bad name".to_string()));
    }
}
