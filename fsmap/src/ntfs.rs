//! (being written)

use crate::{Extents, FsError, ReadAt};

/// Used bytes of the area and the filesystem's own used-byte count.
pub fn used<R: ReadAt + ?Sized>(area: &R) -> Result<(Extents, Option<u64>), FsError> {
    let _ = area;
    Err(FsError::Unsupported("not implemented yet".into()))
}
