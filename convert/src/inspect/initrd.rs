//! Initramfs image listing (filled in below).
