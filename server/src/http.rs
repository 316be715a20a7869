//! HTTP plumbing: response bodies (JSON, bytes, streamed from a blocking producer), request
//! bodies read within a size limit and time limits, and error responses as
//! [`p2v_protocol::api::ErrorBody`].

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use p2v_protocol::api::{ErrorBody, ErrorDetail};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Error;

/// The body type of every response.
pub(crate) type Body = BoxBody<Bytes, io::Error>;

/// A body held in memory.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// 200 with a JSON body.
pub(crate) fn json_response<T: Serialize>(value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("API types always serialize");
    let mut response = Response::new(full(body.clone()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}

/// The response for an error: its status, and an `ErrorBody` with its code and message.
pub(crate) fn error_response(err: &Error) -> Response<Body> {
    let body = ErrorBody {
        error: ErrorDetail {
            code: err.code(),
            message: err.api_message(),
        },
    };
    let mut response = json_response(&body);
    *response.status_mut() =
        StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Error::MethodNotAllowed { allowed, .. } = err {
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static(allowed));
    }
    response
}

/// A body of exactly `len` bytes whose pieces a blocking producer sends over a channel, so
/// large answers (chunk lists, exported images) stream with bounded memory.
#[derive(Debug)]
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        match ready!(this.rx.poll_recv(cx)) {
            Some(Ok(piece)) => {
                if piece.len() as u64 > this.remaining {
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(io::Error::other(
                        "response body longer than announced",
                    ))));
                }
                this.remaining -= piece.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(piece))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "response body ended early",
            )))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// 200 with a body of `len` bytes produced by `produce` on a blocking thread. The producer
/// sends pieces with `blocking_send` and stops when that fails (the client went away).
pub(crate) fn stream_response(
    content_type: &'static str,
    len: u64,
    extra_headers: HeaderMap,
    produce: impl FnOnce(mpsc::Sender<io::Result<Bytes>>) + Send + 'static,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || produce(tx));
    let mut response = Response::new(ChannelBody { rx, remaining: len }.boxed());
    let headers = response.headers_mut();
    headers.extend(extra_headers);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// The `Content-Length` of a request, if it sent one.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    match headers.get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| Error::BadRequest("Content-Length is not a number".into())),
    }
}

/// How long a request body may take: between two pieces, and in all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyTimeouts {
    pub idle: Duration,
    pub total: Duration,
}

/// Reads a whole request body of at most `limit` bytes. `what` names the body in errors.
pub(crate) async fn read_body(
    mut body: Incoming,
    limit: u64,
    what: &str,
    timeouts: BodyTimeouts,
) -> Result<Vec<u8>, Error> {
    let deadline = Instant::now() + timeouts.total;
    let hint = body.size_hint().lower().min(limit);
    let mut out = Vec::with_capacity(hint as usize);
    loop {
        let wait_until = deadline.min(Instant::now() + timeouts.idle);
        let frame = match tokio::time::timeout_at(wait_until, body.frame()).await {
            Err(_) => {
                return Err(Error::Internal(format!(
                    "the {what} did not arrive in time (at most {} s without data, {} s in all); \
                     send it again",
                    timeouts.idle.as_secs(),
                    timeouts.total.as_secs()
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Error::Internal(format!("reading the {what}: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() as u64 + data.len() as u64 > limit {
                return Err(Error::BadRequest(format!(
                    "the {what} is larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// Reads and throws away what is left of a body we answered without reading (up to `cap`
/// bytes and `timeout`), so that the client gets to read our answer instead of a reset.
pub(crate) async fn discard_body(mut body: Incoming, cap: u64, timeout: Duration) {
    let mut seen = 0u64;
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > cap {
                    break;
                }
            }
        }
    })
    .await;
}

/// Rejects an explicit Content-Type other than JSON (a missing one is accepted).
pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "Content-Type must be application/json, not {:?}",
            text.chars().take(64).collect::<String>()
        )))
    }
}

/// Decodes a JSON request body; serde's message says what is wrong (unknown fields included).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}
