//! The agent's side of the HTTP API: authenticated JSON calls and chunk uploads with bounded
//! retries.
//!
//! Which failures are retried: transport failures (connection refused or reset, timeouts), 5xx
//! answers other than 507, and 422 (a chunk corrupted on the way, which is sent again). Never
//! retried: an untrusted server certificate (nothing is sent to it), 400, 401, 404, 409, and 507
//! (server storage full: the operator must act, and a re-run resumes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use p2v_protocol::api::{ErrorBody, ErrorCode};
use p2v_transport::{HttpsClient, Response, ServerUrl, TransportError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Errors talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the server's certificate is not trusted, so nothing was sent")]
    Untrusted(#[source] TransportError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the server answered {status}: {message}")]
    Server {
        status: u16,
        code: Option<ErrorCode>,
        message: String,
    },
    #[error("unexpected answer from the server to {what}: {detail}")]
    Decode { what: String, detail: String },
    #[error("gave up after retrying for {} s", .after.as_secs())]
    GaveUp {
        after: Duration,
        #[source]
        last: Box<ApiError>,
    },
}

impl ApiError {
    fn retryable(&self) -> bool {
        match self {
            Self::Untrusted(_) | Self::Decode { .. } | Self::GaveUp { .. } => false,
            Self::Transport(_) => true,
            Self::Server { status, code, .. } => match code {
                Some(ErrorCode::HashMismatch | ErrorCode::Internal) => true,
                Some(_) => false,
                None => *status >= 500 && *status != 507,
            },
        }
    }

    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => *code,
            Self::GaveUp { last, .. } => last.code(),
            _ => None,
        }
    }
}

/// What a client needs to reach and authenticate to the server.
#[derive(Debug, Clone)]
pub struct ServerAccess {
    pub url: ServerUrl,
    pub tls: Arc<rustls::ClientConfig>,
    pub token: String,
    /// How long one operation keeps retrying before it gives up.
    pub retry_for: Duration,
}

/// One connection to the server with the agent's credentials.
#[derive(Debug)]
pub struct ApiClient {
    access: ServerAccess,
    http: HttpsClient,
}

impl ApiClient {
    pub fn new(access: ServerAccess) -> Result<Self, ApiError> {
        let http = HttpsClient::new(access.url.clone(), access.tls.clone())?;
        Ok(Self { access, http })
    }

    /// Runs `f` with a request timeout of `timeout` instead of the default.
    pub async fn with_timeout<T, F>(&mut self, timeout: Duration, f: F) -> T
    where
        F: AsyncFnOnce(&mut Self) -> T,
    {
        let previous = self.http.request_timeout();
        self.http.set_request_timeout(timeout);
        let result = f(self).await;
        self.http.set_request_timeout(previous);
        result
    }

    /// Sends one request once; turns error answers into [`ApiError::Server`].
    async fn send_once(
        &mut self,
        method: Method,
        path: &str,
        extra: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let mut headers = vec![("authorization", format!("Bearer {}", self.access.token))];
        headers.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let response = self
            .http
            .request(method, path, &headers, body)
            .await
            .map_err(|e| {
                if e.is_untrusted_server() {
                    ApiError::Untrusted(e)
                } else {
                    ApiError::Transport(e)
                }
            })?;
        if response.status.is_success() {
            return Ok(response);
        }
        let status = response.status.as_u16();
        Err(match serde_json::from_slice::<ErrorBody>(&response.body) {
            Ok(body) => ApiError::Server {
                status,
                code: Some(body.error.code),
                message: body.error.message,
            },
            Err(_) => ApiError::Server {
                status,
                code: None,
                message: String::from_utf8_lossy(&response.body[..response.body.len().min(300)])
                    .into_owned(),
            },
        })
    }

    /// Sends a request, retrying retryable failures with exponential backoff (0.25 s doubling to
    /// 5 s) until `retry_for` has passed since the first failure.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        extra: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let mut first_failure: Option<Instant> = None;
        let mut delay = Duration::from_millis(250);
        loop {
            match self
                .send_once(method.clone(), path, extra, body.clone())
                .await
            {
                Ok(response) => return Ok(response),
                Err(e) if !e.retryable() => return Err(e),
                Err(e) => {
                    let started = *first_failure.get_or_insert_with(Instant::now);
                    if started.elapsed() >= self.access.retry_for {
                        return Err(ApiError::GaveUp {
                            after: started.elapsed(),
                            last: Box::new(e),
                        });
                    }
                    tracing::warn!(
                        "{path}: {} — retrying in {} ms",
                        error_chain(&e),
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// A JSON request and its JSON answer.
    pub async fn json<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        request: &Req,
    ) -> Result<Resp, ApiError> {
        let body = Bytes::from(serde_json::to_vec(request).expect("protocol types serialize"));
        let response = self
            .send(
                method,
                path,
                &[("content-type", "application/json".into())],
                body,
            )
            .await?;
        serde_json::from_slice(&response.body).map_err(|e| ApiError::Decode {
            what: path.to_string(),
            detail: e.to_string(),
        })
    }
}

/// An error and all its causes on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
