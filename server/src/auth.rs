//! Bearer tokens: the admin token (in `admin.token`) and enrollment tokens (created by the
//! operator, stored only as their SHA-256 in the metadata database).
//!
//! A presented token is hashed once; the admin token is compared by hash in constant time and
//! enrollment tokens are found by looking their hash up, so no stored secret is ever compared
//! byte by byte against client input.

use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::util::random_bytes;
use crate::Error;

/// Longest token accepted in a header; ours are 64 hex digits.
const MAX_TOKEN_LEN: usize = 256;

/// What a request's token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The admin token: every endpoint.
    Admin,
    /// An enrollment token: the agent's endpoints.
    Agent,
}

/// A new secret: 32 random bytes as 64 lowercase hex digits.
pub(crate) fn new_secret() -> Result<String, Error> {
    Ok(hex::encode(random_bytes::<32>()?))
}

/// SHA-256 of a token, the form in which tokens are stored and compared.
pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equality of two hashes in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, Error> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
        Error::Unauthorized("missing Authorization: Bearer <token> header".into())
    })?;
    let text = value
        .to_str()
        .map_err(|_| Error::Unauthorized("the Authorization header is not ASCII".into()))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| {
            Error::Unauthorized("the Authorization header is not \"Bearer <token>\"".into())
        })?
        .trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Error::Unauthorized("unknown token".into()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hex_and_differ() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn hash_comparison() {
        let a = token_hash("a");
        assert!(constant_time_eq(&a, &token_hash("a")));
        assert!(!constant_time_eq(&a, &token_hash("b")));
    }

    #[test]
    fn bearer_header_forms() {
        let mut headers = HeaderMap::new();
        assert!(bearer_token(&headers).is_err());
        headers.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers).unwrap(), "abc");
        headers.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(bearer_token(&headers).is_err());
        headers.insert(http::header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(bearer_token(&headers).is_err());
    }
}
