//! How a disk is cut into chunks, how each chunk is named (its BLAKE3 hash) and how it travels.
//!
//! A disk of `size` bytes is cut into `ceil(size / CHUNK_SIZE)` chunks; chunk `i` covers bytes
//! `[i * CHUNK_SIZE, min((i + 1) * CHUNK_SIZE, size))`, so only the last chunk may be short.
//!
//! Why 4 MiB: it is a multiple of every logical sector size (512, 4096) and of every filesystem
//! block size, so chunk boundaries never split a sector; it is large enough that the per-chunk cost
//! (one HTTP request, one `fdatasync`, one database record) is small against the data, and zstd
//! compresses it about as well as a whole stream; it is small enough that resuming after an
//! interruption re-sends little, and that the agent's pipeline (a few chunks per core in flight)
//! stays within a few tens of MiB of memory inside the live image.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Size of every chunk but possibly the last, in bytes.
pub const CHUNK_SIZE: u64 = 4 * 1024 * 1024;

/// Largest disk the protocol accepts (1 PiB); anything above is an absurd request.
pub const MAX_DISK_SIZE: u64 = 1 << 50;

/// BLAKE3 hash of a chunk's raw (uncompressed) bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    /// Hash of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// Hash of `len` zero bytes, computed without allocating `len` bytes.
    pub fn of_zeros(len: usize) -> Self {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut hasher = blake3::Hasher::new();
        let mut left = len;
        while left > 0 {
            let n = left.min(ZEROS.len());
            hasher.update(&ZEROS[..n]);
            left -= n;
        }
        Self(*hasher.finalize().as_bytes())
    }

    /// Lowercase hex form, as used in headers and JSON.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHash({})", self.to_hex())
    }
}

impl fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A hash string was not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunk hash: expected 64 hex digits")]
pub struct HashParseError;

impl FromStr for ChunkHash {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, HashParseError> {
        if s.len() != 64 {
            return Err(HashParseError);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| HashParseError)?;
        Ok(Self(out))
    }
}

impl Serialize for ChunkHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChunkHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How the body of a chunk upload is encoded (header [`HEADER_CHUNK_ENCODING`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkEncoding {
    /// The chunk is all zeros; the body is empty.
    Zero,
    /// The body is one zstd frame that decompresses to the chunk.
    Zstd,
    /// The body is the chunk itself (used when zstd would not make it smaller).
    Raw,
}

impl ChunkEncoding {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zero => "zero",
            Self::Zstd => "zstd",
            Self::Raw => "raw",
        }
    }
}

impl FromStr for ChunkEncoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zero" => Ok(Self::Zero),
            "zstd" => Ok(Self::Zstd),
            "raw" => Ok(Self::Raw),
            other => Err(format!(
                "unknown chunk encoding {:?} (expected zero, zstd or raw)",
                other.chars().take(32).collect::<String>()
            )),
        }
    }
}

/// Header carrying the [`ChunkHash`] (hex) of the chunk's raw bytes.
pub const HEADER_CHUNK_HASH: &str = "x-p2v-chunk-hash";
/// Header carrying the [`ChunkEncoding`] of the body.
pub const HEADER_CHUNK_ENCODING: &str = "x-p2v-chunk-encoding";
/// Optional header naming the [`crate::SessionId`] a chunk is sent in, so the server can account
/// bytes per session.
pub const HEADER_SESSION: &str = "x-p2v-session";

/// A chunk index or offset did not fit the disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    #[error("chunk {index} is beyond the disk's {count} chunks")]
    IndexOutOfRange { index: u64, count: u64 },
    #[error("offset {offset} is not on a chunk boundary (chunk size {chunk_size})")]
    Unaligned { offset: u64, chunk_size: u64 },
    #[error("disk size {0} is not a positive multiple of 512 bytes no larger than 1 PiB")]
    BadDiskSize(u64),
    #[error("chunk size {0} is not a power of two between 64 KiB and 64 MiB")]
    BadChunkSize(u64),
}

/// The chunk grid of one disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkGeometry {
    pub disk_size: u64,
    pub chunk_size: u64,
}

impl ChunkGeometry {
    /// Validates sizes sent by a client: the disk size must be a positive multiple of 512 and the
    /// chunk size a power of two between 64 KiB and 64 MiB.
    pub fn new(disk_size: u64, chunk_size: u64) -> Result<Self, GeometryError> {
        if disk_size == 0 || !disk_size.is_multiple_of(512) || disk_size > MAX_DISK_SIZE {
            return Err(GeometryError::BadDiskSize(disk_size));
        }
        if !chunk_size.is_power_of_two() || !(64 * 1024..=64 * 1024 * 1024).contains(&chunk_size) {
            return Err(GeometryError::BadChunkSize(chunk_size));
        }
        Ok(Self {
            disk_size,
            chunk_size,
        })
    }

    /// Number of chunks.
    pub fn count(&self) -> u64 {
        self.disk_size.div_ceil(self.chunk_size)
    }

    /// Byte offset of chunk `index` on the disk.
    pub fn offset(&self, index: u64) -> Result<u64, GeometryError> {
        self.check(index)?;
        Ok(index * self.chunk_size)
    }

    /// Length of chunk `index` (the last one may be short).
    pub fn len(&self, index: u64) -> Result<u64, GeometryError> {
        let offset = self.offset(index)?;
        Ok((self.disk_size - offset).min(self.chunk_size))
    }

    /// Index of the chunk that starts at byte `offset`, which must be on a chunk boundary and
    /// inside the disk.
    pub fn index_of(&self, offset: u64) -> Result<u64, GeometryError> {
        if !offset.is_multiple_of(self.chunk_size) {
            return Err(GeometryError::Unaligned {
                offset,
                chunk_size: self.chunk_size,
            });
        }
        let index = offset / self.chunk_size;
        self.check(index)?;
        Ok(index)
    }

    fn check(&self, index: u64) -> Result<(), GeometryError> {
        let count = self.count();
        if index >= count {
            return Err(GeometryError::IndexOutOfRange { index, count });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_table() {
        // (disk size, chunk count, last chunk length)
        let cases = [
            (512, 1, 512),
            (CHUNK_SIZE, 1, CHUNK_SIZE),
            (CHUNK_SIZE + 512, 2, 512),
            (10 * CHUNK_SIZE, 10, CHUNK_SIZE),
        ];
        for (size, count, last) in cases {
            let g = ChunkGeometry::new(size, CHUNK_SIZE).unwrap();
            assert_eq!(g.count(), count, "size {size}");
            assert_eq!(g.len(count - 1).unwrap(), last, "size {size}");
            assert!(g.len(count).is_err());
            assert_eq!(g.index_of((count - 1) * CHUNK_SIZE).unwrap(), count - 1);
            assert!(g.index_of(count * CHUNK_SIZE).is_err());
            assert!(g.index_of(512).is_err());
        }
    }

    #[test]
    fn geometry_rejects_absurd() {
        assert!(ChunkGeometry::new(0, CHUNK_SIZE).is_err());
        assert!(ChunkGeometry::new(513, CHUNK_SIZE).is_err());
        assert!(ChunkGeometry::new(4096, 3 * 1024 * 1024).is_err());
        assert!(ChunkGeometry::new(4096, 1 << 30).is_err());
    }

    #[test]
    fn zero_hash_matches_materialized_zeros() {
        for len in [0, 1, 512, 65_536, 65_537, CHUNK_SIZE as usize] {
            assert_eq!(ChunkHash::of_zeros(len), ChunkHash::of(&vec![0; len]));
        }
    }

    #[test]
    fn hash_hex_round_trip() {
        let h = ChunkHash::of(b"hello");
        assert_eq!(h.to_hex().parse::<ChunkHash>().unwrap(), h);
        assert!("zz".parse::<ChunkHash>().is_err());
        assert!("g".repeat(64).parse::<ChunkHash>().is_err());
    }

    #[test]
    fn encoding_names() {
        for e in [ChunkEncoding::Zero, ChunkEncoding::Zstd, ChunkEncoding::Raw] {
            assert_eq!(e.as_str().parse::<ChunkEncoding>().unwrap(), e);
        }
        assert!("gzip".parse::<ChunkEncoding>().is_err());
    }
}
