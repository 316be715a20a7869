//! A small HTTPS client: one keep-alive HTTP/1.1 connection over TLS 1.3, opened lazily and
//! reopened after any failure. Callers that want parallel requests hold several clients.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::TransportError;

/// `https://host:port` of a P2V server. Plain `http://` is refused: TLS is not optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub host: String,
    pub port: u16,
}

impl ServerUrl {
    /// `host:port` for connecting (IPv6 hosts in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

impl FromStr for ServerUrl {
    type Err = TransportError;
    fn from_str(url: &str) -> Result<Self, TransportError> {
        let err = |reason| TransportError::InvalidUrl {
            url: url.chars().take(200).collect(),
            reason,
        };
        if url.starts_with("http://") {
            return Err(err("plain http is not supported; use https://"));
        }
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| err("expected https://host:port"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('@') || rest.contains('?') {
            return Err(err(
                "expected https://host:port without path or credentials",
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| err("unclosed [ in IPv6 host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(err("missing host"));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| err("port is not a number from 1 to 65535"))?,
            None => 443,
        };
        if port == 0 {
            return Err(err("port is not a number from 1 to 65535"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

/// A response with its whole body.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One HTTPS connection to a server, used for one request at a time.
pub struct HttpsClient {
    url: ServerUrl,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    sender: Option<SendRequest<Full<Bytes>>>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsClient")
            .field("url", &self.url)
            .finish()
    }
}

impl HttpsClient {
    pub fn new(url: ServerUrl, config: Arc<ClientConfig>) -> Result<Self, TransportError> {
        let server_name =
            ServerName::try_from(url.host.clone()).map_err(|_| TransportError::InvalidUrl {
                url: url.to_string(),
                reason: "host is neither a DNS name nor an IP address",
            })?;
        Ok(Self {
            url,
            connector: TlsConnector::from(config),
            server_name,
            sender: None,
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(120),
        })
    }

    /// Changes how long one request (connect excluded) may take before it fails.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Changes the request timeout of an existing client (for a request known to be long).
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub fn url(&self) -> &ServerUrl {
        &self.url
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, TransportError> {
        if self.sender.as_ref().is_some_and(|s| !s.is_closed()) {
            return Ok(self.sender.as_mut().expect("checked above"));
        }
        let addr = self.url.authority();
        let secs = self.connect_timeout.as_secs();
        let connecting = async {
            let tcp =
                TcpStream::connect(&addr)
                    .await
                    .map_err(|source| TransportError::Connect {
                        addr: addr.clone(),
                        source,
                    })?;
            tcp.set_nodelay(true).ok();
            let tls = self
                .connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|source| TransportError::Handshake {
                    addr: addr.clone(),
                    source,
                })?;
            hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|source| TransportError::Http {
                    addr: addr.clone(),
                    source,
                })
        };
        let (sender, connection) = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| TransportError::Timeout {
                what: "connecting",
                secs,
            })??;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection closed: {e}");
            }
        });
        Ok(self.sender.insert(sender))
    }

    /// Sends one request and reads the whole response. Any failure drops the connection so that
    /// the next request starts on a fresh one.
    pub async fn request(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response, TransportError> {
        let result = self
            .try_request(method, path_and_query, headers, body)
            .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_request(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response, TransportError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(http::header::HOST, self.url.authority());
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder.body(Full::new(body))?;
        let addr = self.url.authority();
        let timeout = self.request_timeout;
        let sender = self.connect().await?;
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout {
                what: "request",
                secs: timeout.as_secs(),
            })?
            .map_err(|source| TransportError::Http { addr, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_table() {
        let ok = [
            ("https://127.0.0.1:8443", "127.0.0.1", 8443),
            ("https://p2v.example:9000/", "p2v.example", 9000),
            ("https://[::1]:8443", "::1", 8443),
            ("https://server", "server", 443),
        ];
        for (text, host, port) in ok {
            let url: ServerUrl = text.parse().unwrap();
            assert_eq!((url.host.as_str(), url.port), (host, port), "{text}");
        }
        for bad in [
            "http://127.0.0.1:8443",
            "127.0.0.1:8443",
            "https://",
            "https://host:0",
            "https://host:99999",
            "https://host:8443/path",
            "https://user@host:8443",
        ] {
            assert!(bad.parse::<ServerUrl>().is_err(), "{bad}");
        }
    }
}
