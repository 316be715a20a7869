//! Helpers shared by the integration tests (each test file declares `mod common;`): running
//! tools, deterministic data, file trees, partclone's map, captured copies of images, and
//! reading an image file as an area.

#![allow(dead_code)] // not every test file uses every helper

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use p2v_fsmap::{Extents, FsError, ReadAt};

/// Runs `cmd` with `args` (no shell) and returns its stdout; panics unless it succeeds.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a bash script (`-euo pipefail`) and returns its stdout; panics unless it succeeds.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A deterministic xorshift64 generator: each call returns the next state after `seed`.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Deterministic bytes (xorshift), different per seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut next = xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..len).map(|_| next() as u8).collect()
}

/// A tree of files of many sizes, and one big file `doomed` to be deleted later.
pub fn make_tree(dir: &Path, scale: usize) {
    let files: &[(&str, usize)] = &[
        ("empty", 0),
        ("one", 1),
        ("c", 5000),
        ("d/e", 200_000 * scale),
        ("d/f/g", 700_000 * scale),
        ("doomed", 1_000_000 * scale),
        ("tail", 333_333 * scale),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, pseudo_random(*len, i as u64 + 1)).unwrap();
    }
    fs::create_dir_all(dir.join("many")).unwrap();
    for i in 0..40 {
        fs::write(
            dir.join(format!("many/f{i}")),
            pseudo_random(i * 1500, 100 + i as u64),
        )
        .unwrap();
    }
}

/// Asserts two trees hold the same files with the same bytes.
pub fn assert_same_tree(want: &Path, got: &Path) {
    for entry in fs::read_dir(want).unwrap() {
        let entry = entry.unwrap();
        let w = entry.path();
        let g = got.join(entry.file_name());
        if w.is_dir() {
            assert_same_tree(&w, &g);
        } else {
            let wb = fs::read(&w).unwrap();
            let gb = fs::read(&g).unwrap_or_else(|e| panic!("{}: {e}", g.display()));
            assert!(wb == gb, "{} differs after zeroing free space", g.display());
        }
    }
}

/// The number after `name` on the first line of a tool's output `out` that starts with it;
/// panics with "no NAME in SOURCE" if there is none.
pub fn field_value(out: &str, name: &str, source: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {source}"))
        .trim()
        .parse()
        .unwrap()
}

/// The `+` (to copy) ranges of a partclone domain log.
pub fn partclone_used(tool: &str, img: &Path, dir: &Path) -> Extents {
    let log = dir.join("domain.log");
    let _ = fs::remove_file(&log);
    run(
        tool,
        &[
            "-q",
            "-D",
            "-s",
            img.to_str().unwrap(),
            "-o",
            log.to_str().unwrap(),
        ],
    );
    let mut e = Extents::new();
    for line in fs::read_to_string(&log).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 3 && f[2] == "+" {
            let n = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            e.add(n(f[0]), n(f[1]));
        }
    }
    e
}

/// A copy of `img` in memory with every byte outside `capture` zeroed.
pub fn zero_free(img: &[u8], capture: &Extents) -> Vec<u8> {
    let mut z = img.to_vec();
    for &(s, l) in capture.complement(img.len() as u64).ranges() {
        z[s as usize..(s + l) as usize].fill(0);
    }
    z
}

/// A copy of the file `src` at `dst` holding only `capture` (zeros elsewhere, sparse).
pub fn captured_copy(src: &Path, dst: &Path, capture: &Extents) {
    let from = File::open(src).unwrap();
    let to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .unwrap();
    to.set_len(from.metadata().unwrap().len()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for &(start, len) in capture.ranges() {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            from.read_exact_at(&mut buf[..n], start + done).unwrap();
            to.write_all_at(&buf[..n], start + done).unwrap();
            done += n as u64;
        }
    }
}

/// SHA-256 of every file of the image `img`, from a kernel loop mount at `mnt` with
/// `mount_opts` (e.g. `"loop,ro"`), unmounted again before returning.
pub fn loop_mount_hashes(img: &Path, mnt: &Path, mount_opts: &str) -> String {
    fs::create_dir_all(mnt).unwrap();
    sh(&format!(
        "mount -o {mount_opts} {img} {mnt}
         trap 'umount {mnt}' EXIT
         (cd {mnt} && find . -type f -print0 | sort -z | xargs -0 sha256sum)",
        img = img.display(),
        mnt = mnt.display()
    ))
}

/// Reads `len` bytes of the file `img` at `offset`, lets `f` change them, and writes them back.
pub fn patch(img: &Path, offset: u64, len: usize, f: impl FnOnce(&mut [u8])) {
    let file = OpenOptions::new().read(true).write(true).open(img).unwrap();
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).unwrap();
    f(&mut buf);
    file.write_all_at(&buf, offset).unwrap();
}

/// CRC32C (Castagnoli), bit by bit: independent of the crate's own implementation.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An image file read as an area.
pub struct FileArea(File, u64);

impl FileArea {
    pub fn open(p: &Path) -> Self {
        let f = File::open(p).unwrap();
        let n = f.metadata().unwrap().len();
        FileArea(f, n)
    }
}

impl ReadAt for FileArea {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.1
    }
}

/// The signature of the crate's per-filesystem `used` functions, on bytes in memory.
pub type UsedFn = fn(&[u8]) -> Result<(Extents, Option<u64>), FsError>;

/// Asserts that `used` (e.g. `ext::used`) refuses `bytes`, and that `analyze` falls back to
/// the whole area with a reason containing `pattern`. Returns the error of `used`.
#[track_caller]
pub fn expect_fallback(used: UsedFn, bytes: &[u8], pattern: &str) -> FsError {
    let err = used(bytes).unwrap_err();
    let a = p2v_fsmap::analyze(bytes);
    assert_eq!(a.capture, Extents::whole(bytes.len() as u64));
    let reason = a.fallback.expect("a fallback reason");
    assert!(reason.contains(pattern), "{reason:?} lacks {pattern:?}");
    err
}
