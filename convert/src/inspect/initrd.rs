//! Initramfs images: which kernel modules they carry.
//!
//! An initramfs (Documentation/driver-api/early-userspace/buffer-format.rst in the kernel) is a
//! sequence of cpio archives in the "newc" format (magic `070701`, or `070702` with checksums),
//! each optionally compressed, separated by zero padding. Distributions put an uncompressed
//! archive with CPU microcode first and the main archive, compressed, after it. This module
//! walks the segments and lists the module files (`usr/lib/modules/VER/kernel/.../NAME.ko`,
//! also `.ko.zst`, `.ko.xz`, `.ko.gz`) and reads a `modules.builtin` it finds.
//!
//! newc header: 6 bytes of magic, then 13 fields of 8 hex digits (ino, mode, uid, gid, nlink,
//! mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check); the name
//! (`namesize` bytes with its NUL) is padded so that header + name is a multiple of 4, the data
//! likewise; the entry named `TRAILER!!!` ends an archive.
//!
//! Compression understood: gzip (flate2) and zstd. xz, lzma, lz4, bzip2 and lzo are reported as
//! not understood, and the plan then assumes the drivers are missing. Archives are streamed
//! (file data is skipped, not kept), and decompression stops with an error past
//! [`DECOMPRESSED_LIMIT`].

use std::collections::BTreeSet;
use std::io::{self, Read};

use crate::inspect::modules::{module_from_path, parse_modules_builtin};
use crate::Error;

/// Decompressed bytes read from one image at most.
pub const DECOMPRESSED_LIMIT: u64 = 1 << 30;
/// Longest entry name accepted.
const NAME_LIMIT: usize = 4096;
/// Largest `modules.builtin` read.
const BUILTIN_LIMIT: u64 = 4 << 20;

/// What an initramfs holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitrdListing {
    /// Canonical names of the kernel modules in it.
    pub modules: BTreeSet<String>,
    /// Modules listed in a `modules.builtin` inside it.
    pub builtin: BTreeSet<String>,
    /// Entries seen, over all archives.
    pub entries: usize,
    /// The segments, in order (`cpio`, `gzip`, `zstd`).
    pub segments: Vec<String>,
}

/// Reads that count bytes and fail past a limit.
struct Counted<R> {
    inner: R,
    count: u64,
    limit: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(format!(
                "decompressed data over the {} limit",
                crate::inspect::root::human(self.limit)
            )));
        }
        Ok(n)
    }
}

fn format_err(e: impl std::fmt::Display) -> Error {
    Error::Format(e.to_string())
}

fn hex_field(h: &[u8], index: usize) -> Result<u64, Error> {
    let f = &h[6 + index * 8..6 + index * 8 + 8];
    let s = std::str::from_utf8(f).map_err(|_| Error::Format("cpio: bad header".into()))?;
    u64::from_str_radix(s, 16).map_err(|_| Error::Format(format!("cpio: bad header field {s:?}")))
}

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

/// Skips `n` bytes of `r`, failing when it ends first.
fn skip<R: Read>(r: &mut R, n: u64) -> Result<(), Error> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).map_err(format_err)?;
    if copied < n {
        return Err(Error::Format("cpio: archive truncated".into()));
    }
    Ok(())
}

/// Reads one byte; `None` at the end.
fn byte<R: Read>(r: &mut R) -> Result<Option<u8>, Error> {
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format_err(e)),
        }
    }
}

/// Lists one archive whose first header byte (`first`) was already read. Returns the bytes it
/// took, `first` included.
fn list_archive<R: Read>(r: &mut R, first: u8, out: &mut InitrdListing) -> Result<u64, Error> {
    let mut used = 0u64;
    let mut first = Some(first);
    loop {
        let mut h = [0u8; 110];
        let start = match first.take() {
            Some(b) => {
                h[0] = b;
                1
            }
            None => 0,
        };
        r.read_exact(&mut h[start..])
            .map_err(|_| Error::Format("cpio: archive truncated (no trailer)".into()))?;
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            return Err(Error::Format(format!(
                "cpio: bad magic {:?} (only the newc format is understood)",
                String::from_utf8_lossy(&h[..6])
            )));
        }
        let filesize = hex_field(&h, 6)?;
        let namesize = hex_field(&h, 11)? as usize;
        if namesize == 0 || namesize > NAME_LIMIT {
            return Err(Error::Format(format!("cpio: name of {namesize} bytes")));
        }
        let mut name = vec![0u8; namesize];
        r.read_exact(&mut name)
            .map_err(|_| Error::Format("cpio: archive truncated".into()))?;
        skip(r, pad4(110 + namesize as u64))?;
        used += 110 + namesize as u64 + pad4(110 + namesize as u64);
        let name = String::from_utf8_lossy(name.strip_suffix(&[0]).unwrap_or(&name)).into_owned();
        if name == "TRAILER!!!" {
            skip(r, filesize + pad4(filesize))?;
            return Ok(used + filesize + pad4(filesize));
        }
        out.entries += 1;
        let mode = hex_field(&h, 1)?;
        let regular = mode & 0o170000 == 0o100000;
        if regular && name.contains("lib/modules/") {
            if let Some(m) = module_from_path(&name) {
                out.modules.insert(m);
            }
        }
        if regular && name.ends_with("/modules.builtin") && filesize <= BUILTIN_LIMIT {
            let mut text = Vec::new();
            (&mut *r)
                .take(filesize)
                .read_to_end(&mut text)
                .map_err(format_err)?;
            if (text.len() as u64) < filesize {
                return Err(Error::Format("cpio: archive truncated".into()));
            }
            out.builtin
                .extend(parse_modules_builtin(&String::from_utf8_lossy(&text)));
            skip(r, pad4(filesize))?;
        } else {
            skip(r, filesize + pad4(filesize))?;
        }
        used += filesize + pad4(filesize);
    }
}

/// Lists every archive of a decompressed stream (archives separated by zero padding).
fn list_stream<R: Read>(mut r: R, out: &mut InitrdListing) -> Result<(), Error> {
    loop {
        let b = loop {
            match byte(&mut r)? {
                None => return Ok(()),
                Some(0) => continue,
                Some(b) => break b,
            }
        };
        list_archive(&mut r, b, out)?;
    }
}

/// The compression a segment starts with, by magic.
fn compression(b: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
        (&[0x5d, 0, 0], "lzma"),
        (b"BZh", "bzip2"),
        (&[0x89, b'L', b'Z', b'O'], "lzo"),
    ];
    MAGICS
        .iter()
        .find(|(m, _)| b.starts_with(m))
        .map(|(_, n)| *n)
}

/// Lists the modules of an initramfs image.
pub fn parse(image: &[u8]) -> Result<InitrdListing, Error> {
    parse_limited(image, DECOMPRESSED_LIMIT)
}

fn parse_limited(image: &[u8], limit: u64) -> Result<InitrdListing, Error> {
    let mut out = InitrdListing::default();
    let mut pos = 0usize;
    loop {
        while pos < image.len() && image[pos] == 0 {
            pos += 1;
        }
        let rest = &image[pos..];
        if rest.is_empty() {
            break;
        }
        if rest.starts_with(b"0707") {
            out.segments.push("cpio".into());
            let mut r = rest;
            let first = rest[0];
            r = &r[1..];
            let used = list_archive(&mut r, first, &mut out)?;
            pos += used as usize;
            continue;
        }
        match compression(rest) {
            Some("gzip") => {
                out.segments.push("gzip".into());
                let d = flate2::read::GzDecoder::new(rest);
                list_stream(counted(d, limit), &mut out).map_err(|e| ctx("gzip", e))?;
            }
            Some("zstd") => {
                out.segments.push("zstd".into());
                let d = zstd::stream::read::Decoder::with_buffer(rest).map_err(format_err)?;
                list_stream(counted(d, limit), &mut out).map_err(|e| ctx("zstd", e))?;
            }
            Some(other) => {
                return Err(Error::Format(format!(
                    "{other} compression not understood (at offset {pos})"
                )))
            }
            None => {
                return Err(Error::Format(format!(
                    "neither a cpio archive nor a known compression at offset {pos}"
                )))
            }
        }
        // A compressed segment runs to the end of the image: the kernel, too, hands the rest
        // of the buffer to the decompressor.
        break;
    }
    if out.segments.is_empty() {
        return Err(Error::Format("empty image".into()));
    }
    Ok(out)
}

fn counted<R: Read>(inner: R, limit: u64) -> Counted<R> {
    Counted {
        inner,
        count: 0,
        limit,
    }
}

fn ctx(what: &str, e: Error) -> Error {
    Error::Format(format!("{what} segment: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A newc archive of `(name, mode, data)` entries and its trailer.
    pub fn cpio(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |name: &str, mode: u32, data: &[u8]| {
            let namesize = name.len() + 1;
            out.extend_from_slice(
                format!(
                    "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                    1, mode, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, namesize, 0
                )
                .as_bytes(),
            );
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (n, m, d) in entries {
            push(n, *m, d);
        }
        push("TRAILER!!!", 0, b"");
        out
    }

    fn main_archive() -> Vec<u8> {
        cpio(&[
            ("usr", 0o040755, b""),
            (
                "usr/lib/modules/6.1.0-1-amd64/kernel/drivers/ata/ahci.ko",
                0o100644,
                b"\x7fELF...",
            ),
            (
                "usr/lib/modules/6.1.0-1-amd64/kernel/drivers/scsi/sd_mod.ko.zst",
                0o100644,
                b"zz",
            ),
            (
                "usr/lib/modules/6.1.0-1-amd64/kernel/drivers/x/virtio-ring.ko.xz",
                0o100644,
                b"x",
            ),
            (
                "usr/lib/modules/6.1.0-1-amd64/modules.builtin",
                0o100644,
                b"kernel/drivers/virtio/virtio_pci.ko\n",
            ),
            ("usr/bin/not.ko", 0o100644, b""),
            (
                "usr/lib/modules/6.1.0-1-amd64/kernel/link.ko",
                0o120777,
                b"target",
            ),
        ])
    }

    fn expect_main(l: &InitrdListing) {
        assert_eq!(
            l.modules.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["ahci", "sd_mod", "virtio_ring"]
        );
        assert_eq!(
            l.builtin.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["virtio_pci"]
        );
    }

    #[test]
    fn segments() {
        let micro = cpio(&[("kernel/x86/microcode/GenuineIntel.bin", 0o100644, b"ucode")]);
        let main = main_archive();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&main).unwrap();
            e.write_all(&[0u8; 512]).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::stream::encode_all(&main[..], 1).unwrap();
        // Plain, microcode + gzip, microcode + padding + zstd.
        let l = parse(&main).unwrap();
        expect_main(&l);
        assert_eq!(l.segments, vec!["cpio"]);
        let mut img = micro.clone();
        img.extend_from_slice(&gz);
        let l = parse(&img).unwrap();
        expect_main(&l);
        assert_eq!(l.segments, vec!["cpio", "gzip"]);
        assert_eq!(l.entries, 1 + 7);
        let mut img = micro.clone();
        img.extend_from_slice(&[0u8; 1024]);
        img.extend_from_slice(&zst);
        let l = parse(&img).unwrap();
        expect_main(&l);
        assert_eq!(l.segments, vec!["cpio", "zstd"]);
        // Two archives inside one compressed stream.
        let mut two = micro.clone();
        two.extend_from_slice(&main);
        let l = parse(&zstd::stream::encode_all(&two[..], 1).unwrap()).unwrap();
        expect_main(&l);
    }

    #[test]
    fn errors() {
        let main = main_archive();
        let mut xz = cpio(&[]);
        xz.extend_from_slice(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2]);
        let e = parse(&xz).unwrap_err().to_string();
        assert!(e.contains("xz compression not understood"), "{e}");
        let e = parse(&main[..main.len() - 200]).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = parse(b"hello world").unwrap_err().to_string();
        assert!(e.contains("neither"), "{e}");
        assert!(parse(&[0u8; 100]).is_err());
        let mut bad = main.clone();
        bad[6 + 6 * 8] = b'g';
        assert!(parse(&bad).unwrap_err().to_string().contains("bad header"));
        let e = parse(&b"070707".repeat(30)).unwrap_err().to_string();
        assert!(e.contains("newc"), "{e}");
    }

    #[test]
    fn bomb_is_refused() {
        // Zeros past the limit after a header that claims a huge file (the real limit is 1 GiB;
        // the same code runs with 4 MiB here to keep the test fast).
        let mut head = cpio(&[]);
        head.truncate(0);
        let limit = 4 << 20;
        let huge = limit + (1 << 20);
        head.extend_from_slice(
            format!(
                "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                1, 0o100644, 0, 0, 1, 0, 0xffff_ffffu32, 0, 0, 0, 0, 2, 0
            )
            .as_bytes(),
        );
        head.extend_from_slice(b"a\0");
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.write_all(&head).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(huge >> 20) {
            enc.write_all(&zeros).unwrap();
        }
        let img = enc.finish().unwrap();
        assert!(img.len() < 1 << 16);
        let e = parse_limited(&img, limit).unwrap_err().to_string();
        assert!(e.contains("over the 4 MiB limit"), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        let main = main_archive();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&main).unwrap();
            e.finish().unwrap()
        };
        let mut seed = 99u64;
        for i in 0..1500 {
            let base = if i % 2 == 0 { &main } else { &gz };
            let m = crate::inspect::testutil::mutate(&mut seed, base, b"0707ff\0");
            let _ = parse(&m);
        }
    }
}
