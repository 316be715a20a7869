//! Exports of complete disks into the formats hypervisors import, with `qemu-img convert`.
//!
//! | format  | command                                                   | for                  |
//! |---------|-----------------------------------------------------------|----------------------|
//! | raw     | (the image itself is sent)                                | anything             |
//! | qcow2   | `qemu-img convert -f raw -O qcow2`                        | KVM, OpenStack       |
//! | vmdk    | `-O vmdk -o subformat=streamOptimized`                    | vSphere              |
//! | vhdx    | `-O vhdx`                                                 | Hyper-V              |
//! | vhd     | `-O vpc -o subformat=fixed,force_size=on`                 | Azure                |
//!
//! Azure wants a fixed VHD whose virtual size is a whole number of MiB. `qemu-img convert`
//! cannot grow an image, so for a disk whose size is not a multiple of 1 MiB the server first
//! creates a qcow2 overlay of the rounded-up size backed by the raw image (reads past the end of
//! the backing file are zeros), and converts that: the VHD is the disk followed by zeros up to
//! the next MiB. Nothing of the disk is lost or changed; the guest sees a slightly larger disk.
//!
//! The converted file is written under a temporary name in `exports/` and renamed to
//! `exports/<disk-id>.<ext>` only when qemu-img succeeded, so a half-made image never carries
//! the final name. It is reused while the disk stays unchanged (same completion generation).

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use p2v_protocol::api::{DiskState, ExportFormat};
use p2v_protocol::DiskId;

use crate::api::{blocking, AppState};
use crate::datadir::sync_dir;
use crate::util::random_u64;
use crate::Error;

const MIB: u64 = 1 << 20;

/// Removes a temporary file unless it was kept (renamed into place).
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Makes sure the export of `disk` in `format` exists and is current; returns its path and an
/// open handle (so a later re-export renaming over it cannot change what is sent).
pub(crate) async fn prepare(
    state: &AppState,
    disk: DiskId,
    format: ExportFormat,
) -> Result<(PathBuf, File), Error> {
    let lock = state.export_lock(disk, format);
    let _guard = lock.lock().await;
    let record = {
        let store = state.store.clone();
        blocking(move || store.disk(disk))
            .await?
            .ok_or_else(|| Error::NotFound(format!("unknown disk {disk}")))?
    };
    if record.state != DiskState::Complete {
        return Err(Error::Conflict(format!(
            "disk {disk} is not complete ({} of {} chunks durable); exports are made only from a \
             complete, verified disk",
            record.durable_chunks,
            record.geometry().count()
        )));
    }
    if format == ExportFormat::Raw {
        let path = state.images.path(disk);
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        return Ok((path, file));
    }
    let generation = record.generation;
    let final_path = state.data.export_path(disk, format);
    if record.exports.get(format.as_str()) == Some(&generation) {
        if let Ok(file) = File::open(&final_path) {
            tracing::debug!(%disk, format = format.as_str(), "export is cached");
            return Ok((final_path, file));
        }
    }

    let exports = state.data.exports_dir();
    let tmp_path = exports.join(format!(
        ".{disk}.{}.tmp-{:016x}",
        format.as_str(),
        random_u64()?
    ));
    let mut tmp = TempFile(Some(tmp_path.clone()));
    let source = state.images.path(disk);
    let size = record.info.size_bytes;

    let mut overlay = TempFile(None);
    let (input, input_format) = if format == ExportFormat::Vhd && size % MIB != 0 {
        let rounded = size.div_ceil(MIB) * MIB;
        let path = exports.join(format!(".{disk}.vhd-overlay-{:016x}.qcow2", random_u64()?));
        overlay.0 = Some(path.clone());
        tracing::info!(%disk, size, rounded, "VHD size rounded up to a whole MiB for Azure");
        create_overlay(&source, &path, Some(rounded)).await?;
        (path, "qcow2")
    } else {
        (source, "raw")
    };

    run_qemu_img(convert_args(format, &input, input_format, &tmp_path)).await?;
    drop(overlay);

    let final_for_rename = final_path.clone();
    let tmp_for_rename = tmp_path.clone();
    blocking(move || {
        let file = File::open(&tmp_for_rename)
            .map_err(|e| Error::io(format!("opening {}", tmp_for_rename.display()), e))?;
        file.sync_all()
            .map_err(|e| Error::io(format!("syncing {}", tmp_for_rename.display()), e))?;
        fs::rename(&tmp_for_rename, &final_for_rename)
            .map_err(|e| Error::io(format!("renaming to {}", final_for_rename.display()), e))?;
        sync_dir(final_for_rename.parent().unwrap_or(Path::new(".")))
            .map_err(|e| Error::io("syncing the exports directory", e))
    })
    .await?;
    tmp.keep();

    // The disk may have changed while qemu-img read it (a new chunk puts it back to receiving).
    let store = state.store.clone();
    let now = blocking(move || store.disk(disk)).await?;
    if !now
        .as_ref()
        .is_some_and(|r| r.state == DiskState::Complete && r.generation == generation)
    {
        return Err(Error::Conflict(format!(
            "disk {disk} changed while it was exported; complete it again and export again"
        )));
    }
    let store = state.store.clone();
    blocking(move || store.record_export(disk, format, generation)).await?;
    let file = File::open(&final_path)
        .map_err(|e| Error::io(format!("opening {}", final_path.display()), e))?;
    Ok((final_path, file))
}

/// A qcow2 overlay at `path` backed by the raw image `backing` (absolute path), of the
/// backing file's size or of `size` bytes (reads past the backing file's end are zeros).
pub(crate) async fn create_overlay(
    backing: &Path,
    path: &Path,
    size: Option<u64>,
) -> Result<(), Error> {
    let mut args: Vec<OsString> = vec![
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-b".into(),
        backing.into(),
        "-F".into(),
        "raw".into(),
        path.into(),
    ];
    if let Some(size) = size {
        args.push(size.to_string().into());
    }
    run_qemu_img(args).await
}

/// `qemu-img convert` arguments from `input` (in `input_format`) to `output` in `format`, with
/// the subformat each target wants (see the table at the top).
pub(crate) fn convert_args(
    format: ExportFormat,
    input: &Path,
    input_format: &str,
    output: &Path,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "convert".into(),
        "-f".into(),
        input_format.into(),
        "-O".into(),
        format.qemu_format().into(),
    ];
    match format {
        ExportFormat::Vmdk => args.extend(["-o".into(), "subformat=streamOptimized".into()]),
        ExportFormat::Vhd => args.extend(["-o".into(), "subformat=fixed,force_size=on".into()]),
        _ => {}
    }
    args.push(input.into());
    args.push(output.into());
    args
}

/// Runs qemu-img, logging its command line; its stderr goes into the error.
pub(crate) async fn run_qemu_img(args: Vec<OsString>) -> Result<(), Error> {
    let command_line = std::iter::once("qemu-img".to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(command = %command_line, "running");
    let output = tokio::process::Command::new("qemu-img")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            Error::io(
                format!("running `{command_line}` (is qemu-img installed?)"),
                e,
            )
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if stderr.contains("No space left on device") || stderr.contains("Disk quota exceeded") {
        return Err(Error::StorageFull {
            context: format!("`{command_line}`: {stderr}"),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
    }
    Err(Error::Command {
        command: command_line,
        status: output.status.to_string(),
        stderr,
    })
}

/// Removes temporary files a crash left in `exports/`.
pub(crate) fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && (name.contains(".tmp-") || name.contains(".vhd-overlay-")) {
            tracing::info!(file = %name, "removing a stale temporary export");
            let _ = fs::remove_file(entry.path());
        }
    }
}
