//! The one error type of the conversion library.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("job disk: {0}")]
    JobDisk(String),
    #[error("profile: {0}")]
    Profile(String),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Mounting or unmounting a guest file system (or a bind for the chroot).
    #[error("mount: {0}")]
    Mount(String),
    /// A program the converter ran (losetup, the guest's initramfs tool) failed; the message
    /// has the command line and its stderr.
    #[error("command: {0}")]
    Command(String),
    /// A planned change that cannot be carried out as planned.
    #[error("apply: {0}")]
    Apply(String),
    /// A VM that cannot be described (libvirt XML, OVF): a name with a control character,
    /// a disk without an image file, a malformed MAC or UUID.
    #[error("descriptor: {0}")]
    Descriptor(String),
    /// A text file of the guest that does not parse (the caller adds the file name).
    #[error("line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    /// Binary content of the guest that does not parse (an initramfs image).
    #[error("{0}")]
    Format(String),
    /// A path inside the guest that cannot be read safely (symlink loop, not a regular file,
    /// over a size limit, missing); `path` is the guest path.
    #[error("{path}: {reason}")]
    Guest { path: String, reason: String },
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
