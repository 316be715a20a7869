//! The crate's one error type, and how each error maps to an API [`ErrorCode`] and HTTP status.
//!
//! Handlers return [`Error`]; the HTTP layer turns it into an [`p2v_protocol::api::ErrorBody`]
//! with [`Error::code`], [`Error::status`] and [`Error::api_message`]. Errors of the storage
//! (`ENOSPC`, `EDQUOT`) are recognised wherever they come from (raw image writes, `fdatasync`,
//! the metadata database) and become [`Error::StorageFull`], which the agent treats as "wait and
//! resume".

use std::io;
use std::sync::Arc;

use p2v_protocol::api::ErrorCode;

/// Everything that can go wrong in the server library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or absurd (400).
    #[error("{0}")]
    BadRequest(String),
    /// The path exists but not with this method (405, code `bad_request`).
    #[error("method {method} is not allowed on {path} (allowed: {allowed})")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    /// Missing or unknown token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Unknown machine, session, disk or path (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the stored state (409).
    #[error("{0}")]
    Conflict(String),
    /// A chunk's bytes do not match its hash (422).
    #[error("{0}")]
    HashMismatch(String),
    /// The filesystem of the data directory is full or over quota (507).
    #[error("{context}")]
    StorageFull {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database: {context}")]
    Db {
        context: String,
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored record or file could not be decoded.
    #[error("decoding {what}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// TLS configuration or an HTTPS exchange of the operator client failed.
    #[error("HTTPS transport")]
    Transport(#[from] p2v_transport::TransportError),
    /// The self-signed certificate could not be generated.
    #[error("generating the server certificate")]
    Certificate(#[source] rcgen::Error),
    /// The operating system's random number generator failed.
    #[error("reading the system random number generator")]
    Random(#[source] getrandom::Error),
    /// An external program (qemu-img) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// The server answered an operator command with an error.
    #[error("the server answered {status}: {message}")]
    Api {
        status: u16,
        code: Option<ErrorCode>,
        message: String,
    },
    /// The same error handed to several waiters (one group commit, many requests).
    #[error(transparent)]
    Shared(Arc<Error>),
    /// Anything else; the text says what.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// An I/O error, classified: out of space or quota becomes [`Error::StorageFull`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if is_storage_full(&source) {
            Self::StorageFull { context, source }
        } else {
            Self::Io { context, source }
        }
    }

    /// A database error, classified like [`Error::io`].
    pub fn db(context: impl Into<String>, source: impl Into<redb::Error>) -> Self {
        let context = context.into();
        match source.into() {
            redb::Error::Io(source) if is_storage_full(&source) => Self::StorageFull {
                context: format!("metadata database: {context}"),
                source,
            },
            source => Self::Db {
                context,
                source: Box::new(source),
            },
        }
    }

    /// The API error code the client sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) | Self::MethodNotAllowed { .. } => ErrorCode::BadRequest,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::HashMismatch(_) => ErrorCode::HashMismatch,
            Self::StorageFull { .. } => ErrorCode::StorageFull,
            Self::Shared(inner) => inner.code(),
            Self::Api {
                code: Some(code), ..
            } => *code,
            _ => ErrorCode::Internal,
        }
    }

    /// The HTTP status of the response: [`ErrorCode::status`], except 405 for a wrong method.
    pub fn status(&self) -> u16 {
        match self {
            Self::MethodNotAllowed { .. } => 405,
            Self::Shared(inner) => inner.status(),
            other => other.code().status(),
        }
    }

    /// The message of the error response: the whole chain of causes, and for a full storage
    /// what that means for the capture.
    pub fn api_message(&self) -> String {
        match self {
            Self::Shared(inner) => inner.api_message(),
            Self::StorageFull { .. } => format!(
                "the server's storage is full ({}); everything acknowledged so far is safe, and \
                 the capture resumes once space is freed on the server",
                chain(self)
            ),
            other => chain(other),
        }
    }

    /// True when the metadata database hit an I/O error: redb then refuses every further
    /// operation until it is reopened.
    pub(crate) fn is_db_io_failure(&self) -> bool {
        match self {
            Self::Db { source, .. } => {
                matches!(**source, redb::Error::Io(_) | redb::Error::PreviousIo)
            }
            Self::StorageFull { context, .. } => context.starts_with("metadata database"),
            Self::Shared(inner) => inner.is_db_io_failure(),
            _ => false,
        }
    }
}

/// True for `ENOSPC` and `EDQUOT`.
pub fn is_storage_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(
            err.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
}

/// `error: cause: cause`, each level once.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_full_is_recognised() {
        let full = Error::io("writing", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.code(), ErrorCode::StorageFull);
        assert_eq!(full.status(), 507);
        assert!(
            full.api_message().contains("storage is full"),
            "{}",
            full.api_message()
        );
        let quota = Error::io("writing", io::Error::from_raw_os_error(libc::EDQUOT));
        assert_eq!(quota.code(), ErrorCode::StorageFull);
        let other = Error::io("writing", io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(other.code(), ErrorCode::Internal);
        let db = Error::db(
            "commit",
            redb::Error::Io(io::Error::from_raw_os_error(libc::ENOSPC)),
        );
        assert_eq!(db.code(), ErrorCode::StorageFull);
        assert!(db.is_db_io_failure());
    }

    #[test]
    fn method_not_allowed_is_405_bad_request() {
        let err = Error::MethodNotAllowed {
            method: "DELETE".into(),
            path: "/v1/disks".into(),
            allowed: "GET",
        };
        assert_eq!(err.status(), 405);
        assert_eq!(err.code(), ErrorCode::BadRequest);
    }

    #[test]
    fn chain_lists_causes() {
        let err = Error::io("opening x", io::Error::other("boom"));
        assert_eq!(chain(&err), "opening x: boom");
    }
}
