//! Linux swap: only the header page is used.
//!
//! The format is the kernel's `union swap_header` (`include/linux/swap.h`): the first page
//! holds the boot-block gap, the version-1 header at 1024 (version, last page, bad pages, UUID
//! and label, which mkswap writes) and the signature in its last 10 bytes. The rest of the area
//! only ever holds pages swapped out by a running system, which are worthless after shutdown.
//!
//! Refused (captured whole): a swap area holding a hibernation image (its signature replaced by
//! `S1SUSPEND`, `S2SUSPEND`, `ULSUSPEND` or `LINHIB0001`): that image is the memory of a system
//! that will resume from it.

use crate::detect::{swap_page_size, HIBERNATION_MAGICS};
use crate::{Extents, FsError, ReadAt};

/// Used bytes of the area (the header page) and the same count as the swap's own use.
pub fn used<R: ReadAt + ?Sized>(area: &R) -> Result<(Extents, Option<u64>), FsError> {
    let page = swap_page_size(area)?
        .ok_or_else(|| FsError::BadSuperblock("swap: no swap signature".into()))?;
    let mut magic = [0u8; 10];
    area.read_at(page - 10, &mut magic)?;
    if HIBERNATION_MAGICS.iter().any(|m| magic == **m) {
        return Err(FsError::Unsupported(format!(
            "swap holds a hibernation image ({})",
            String::from_utf8_lossy(&magic).trim_end_matches('\0')
        )));
    }
    Ok((Extents::whole(page), Some(page)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_page_only_and_hibernation_whole() {
        let mut v = vec![0u8; 1 << 20];
        v[16384 - 10..16384].copy_from_slice(b"SWAPSPACE2");
        let (e, n) = used(v.as_slice()).unwrap();
        assert_eq!(e.ranges(), &[(0, 16384)]);
        assert_eq!(n, Some(16384));
        v[16384 - 10..16384].copy_from_slice(b"S1SUSPEND\0");
        assert!(matches!(used(v.as_slice()), Err(FsError::Unsupported(_))));
        let a = crate::analyze(v.as_slice());
        assert_eq!(a.capture, Extents::whole(1 << 20));
        assert!(a.fallback.unwrap().contains("hibernation"));
    }
}
