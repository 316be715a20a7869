//! Conversions of captured machines for virtual hardware (`POST /v1/machines/{id}/conversion`).
//!
//! The guest's file systems are hostile input, so by default the server never mounts them: it
//! boots the project's own live kernel and initramfs as an **appliance VM** under QEMU (KVM
//! when `/dev/kvm` works, TCG otherwise) with `p2v.mode=convert`, the guest's disks attached as
//! copy-on-write qcow2 overlays of the captured raw images (serials `p2v-disk0`, ...) and a
//! small job disk (serial `p2v-job`) that carries the job in and the converter's report out
//! (`p2v_convert::job`). No network, no shared directory: a compromised appliance can only
//! write to its overlays and its job disk. With `direct`, the operator trusts the source: the
//! server copies the raw images and runs `p2v-convert direct` on the host.
//!
//! ```text
//! DATA_DIR/conversions/<machine-id>/
//!   status.json          the latest ConversionStatus (survives restarts)
//!   job.img              job disk of the latest run
//!   console.log          the appliance's serial console
//!   disk<N>.qcow2        converted disk N (overlay on disks/<disk-id>.raw), or disk<N>.raw (direct)
//! ```
//!
//! The captured images are never written. A new run builds its disks under `.new` names and
//! renames them over the previous conversion only when the converter reports success, so a
//! failed conversion leaves the previous good one (and the capture) as they were. A dry run
//! works on throw-away overlays.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use p2v_convert::job::{ConversionJob, ConversionReport, JobDisk};
use p2v_convert::profile::{self, Overrides};
use p2v_protocol::api::{
    ConversionState, ConversionStatus, ConvertRequest, ConvertedDisk, DiskState, ExportFormat,
};
use p2v_protocol::{DiskId, MachineId};

use crate::api::{blocking, AppState};
use crate::datadir::write_file_atomic;
use crate::util::now_secs;
use crate::Error;

/// How the server converts.
#[derive(Debug, Clone)]
pub struct ConversionConfig {
    /// Directory with the live image's `vmlinuz` and `initrd.img` (`p2v-image build`).
    pub appliance_dir: Option<PathBuf>,
    /// The `p2v-convert` binary for direct mode.
    pub converter: PathBuf,
    /// The QEMU system emulator.
    pub qemu: PathBuf,
    pub appliance_memory_mib: u32,
    /// A conversion that runs longer is stopped and reported as failed.
    pub timeout: Duration,
}

impl Default for ConversionConfig {
    fn default() -> Self {
        let converter = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("p2v-convert")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("p2v-convert"));
        Self {
            appliance_dir: None,
            converter,
            qemu: PathBuf::from("qemu-system-x86_64"),
            appliance_memory_mib: 1024,
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Machines with a conversion in progress, and whether KVM works here (probed once).
#[derive(Debug, Default)]
pub(crate) struct Running(Mutex<HashSet<MachineId>>, tokio::sync::OnceCell<bool>);

impl Running {
    fn claim(&self, machine: MachineId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(machine)
    }
    fn release(&self, machine: MachineId) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&machine);
    }
}

fn machine_dir(state: &AppState, machine: MachineId) -> PathBuf {
    state
        .data
        .root()
        .join("conversions")
        .join(machine.to_string())
}

fn status_path(dir: &Path) -> PathBuf {
    dir.join("status.json")
}

fn converted_path(dir: &Path, index: usize, direct: bool) -> PathBuf {
    dir.join(format!(
        "disk{index}.{}",
        if direct { "raw" } else { "qcow2" }
    ))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The latest conversion of `machine`, if any.
pub(crate) fn load_status(
    state: &AppState,
    machine: MachineId,
) -> Result<Option<ConversionStatus>, Error> {
    let path = status_path(&machine_dir(state, machine));
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Decode {
                what: path.display().to_string(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

fn save_status(dir: &Path, status: &ConversionStatus) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(status).expect("statuses serialize");
    write_file_atomic(&status_path(dir), &json, 0o600)
}

/// After a restart, a conversion recorded as running is not: say so.
pub(crate) fn recover_interrupted(data_root: &Path) {
    let Ok(entries) = std::fs::read_dir(data_root.join("conversions")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = status_path(&entry.path());
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(mut status) = serde_json::from_slice::<ConversionStatus>(&bytes) else {
            continue;
        };
        if status.state == ConversionState::Running {
            status.state = ConversionState::Failed;
            status.finished_at = Some(now_secs());
            status.error = Some("the server stopped during the conversion; start it again".into());
            if let Err(e) = save_status(&entry.path(), &status) {
                tracing::warn!(error = %e, "marking an interrupted conversion failed");
            }
        }
    }
}

/// The converted image of `disk` and its format, from the machine's latest successful
/// conversion; an error when there is none or the capture changed since.
pub(crate) async fn converted_source(
    state: &AppState,
    disk: DiskId,
) -> Result<(PathBuf, &'static str), Error> {
    let record = {
        let store = state.store.clone();
        blocking(move || store.disk(disk))
            .await?
            .ok_or_else(|| Error::NotFound(format!("unknown disk {disk}")))?
    };
    let none = || {
        Error::Conflict(format!(
            "machine {} has no successful conversion; run `p2v-server convert {}`",
            record.machine_id, record.machine_id
        ))
    };
    let status = load_status(state, record.machine_id)?.ok_or_else(none)?;
    if status.state != ConversionState::Succeeded || status.dry_run {
        return Err(none());
    }
    let converted = status
        .disks
        .iter()
        .find(|d| d.disk_id == disk)
        .ok_or_else(none)?;
    if record.state != DiskState::Complete || record.generation != converted.generation {
        return Err(Error::Conflict(format!(
            "disk {disk} changed since it was converted; convert the machine again"
        )));
    }
    let dir = machine_dir(state, record.machine_id);
    let path = converted_path(&dir, converted.index, status.direct);
    Ok((path, if status.direct { "raw" } else { "qcow2" }))
}

/// Validates the request, records the conversion as running and starts it in the background.
pub(crate) async fn start(
    state: &Arc<AppState>,
    machine: MachineId,
    request: ConvertRequest,
) -> Result<ConversionStatus, Error> {
    let target =
        profile::profile(&request.profile).map_err(|e| Error::BadRequest(e.to_string()))?;
    let summary = {
        let store = state.store.clone();
        blocking(move || store.machine(machine))
            .await?
            .ok_or_else(|| Error::NotFound(format!("unknown machine {machine}")))?
    };
    if summary.disks.is_empty() {
        return Err(Error::Conflict(format!("machine {machine} has no disks")));
    }
    let mut disks = summary.disks.clone();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(d) = disks.iter().find(|d| d.state != DiskState::Complete) {
        return Err(Error::Conflict(format!(
            "disk {} ({}) is not completely captured yet; convert when every disk is complete",
            d.disk_id, d.name
        )));
    }
    if !request.direct {
        let dir = state.conversion.appliance_dir.as_ref().ok_or_else(|| {
            Error::Conflict(
                "no conversion appliance: start the server with --appliance-dir DIR \
                 (the output of `p2v-image build`), or use --direct for a trusted source"
                    .into(),
            )
        })?;
        for f in ["vmlinuz", "initrd.img"] {
            if !dir.join(f).is_file() {
                return Err(Error::Conflict(format!(
                    "the conversion appliance has no {} (build it with `make image`)",
                    dir.join(f).display()
                )));
            }
        }
    }
    let generations = {
        let store = state.store.clone();
        let ids: Vec<DiskId> = disks.iter().map(|d| d.disk_id).collect();
        blocking(move || {
            ids.iter()
                .map(|&id| Ok(store.disk(id)?.map(|r| r.generation).unwrap_or(0)))
                .collect::<Result<Vec<u64>, Error>>()
        })
        .await?
    };
    if !state.conversions.claim(machine) {
        return Err(Error::Conflict(format!(
            "a conversion of {machine} is already running"
        )));
    }
    let name = summary
        .inventory
        .system
        .hostname
        .clone()
        // The live image has no host name of its own: the kernel's default is "(none)".
        .filter(|h| !h.is_empty() && h != "(none)" && h != "localhost")
        .unwrap_or_else(|| machine.to_string());
    let vm = profile::resolve(
        &name,
        &target,
        Some(&summary.inventory),
        &disks
            .iter()
            .map(|d| (d.disk_id.to_string(), d.size_bytes))
            .collect::<Vec<_>>(),
        None,
        &Overrides {
            cpus: request.cpus,
            memory_mib: request.memory_mib,
            firmware: request.firmware,
            keep_macs: request.keep_macs,
        },
    );
    let job = ConversionJob {
        machine_id: machine.to_string(),
        inventory: Some(summary.inventory.clone()),
        disks: disks
            .iter()
            .enumerate()
            .map(|(index, d)| JobDisk {
                disk_id: d.disk_id.to_string(),
                original_name: d.info.name.clone(),
                device: None,
                index,
            })
            .collect(),
        vm: vm.clone(),
        dry_run: request.dry_run,
    };
    let status = ConversionStatus {
        machine_id: machine,
        state: ConversionState::Running,
        profile: target.name.clone(),
        dry_run: request.dry_run,
        direct: request.direct,
        started_at: now_secs(),
        finished_at: None,
        error: None,
        appliance_start_ms: None,
        wall_ms: None,
        disks: disks
            .iter()
            .zip(&generations)
            .enumerate()
            .map(|(index, (d, &generation))| ConvertedDisk {
                disk_id: d.disk_id,
                index,
                generation,
            })
            .collect(),
        vm: serde_json::to_value(&vm).expect("VM specs serialize"),
        report: None,
        console_tail: Vec::new(),
    };
    let dir = machine_dir(state, machine);
    let prepared = {
        let dir = dir.clone();
        let status = status.clone();
        blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            save_status(&dir, &status)
        })
        .await
    };
    if let Err(e) = prepared {
        state.conversions.release(machine);
        return Err(e);
    }
    let sources: Vec<PathBuf> = disks.iter().map(|d| state.images.path(d.disk_id)).collect();
    tracing::info!(%machine, profile = %target.name, dry_run = request.dry_run, direct = request.direct, "conversion started");
    let task_state = state.clone();
    let task_status = status.clone();
    tokio::spawn(async move {
        let done = run(&task_state, &dir, task_status, job, sources).await;
        if let Err(e) = save_status(&dir, &done) {
            tracing::error!(%machine, error = %e, "saving the conversion status");
        }
        tracing::info!(%machine, state = ?done.state, error = ?done.error, wall_ms = ?done.wall_ms, "conversion finished");
        task_state.conversions.release(machine);
    });
    Ok(status)
}

/// What a run produced.
struct Outcome {
    report: Option<ConversionReport>,
    appliance_start_ms: Option<u64>,
    console_tail: Vec<String>,
}

async fn run(
    state: &AppState,
    dir: &Path,
    mut status: ConversionStatus,
    job: ConversionJob,
    sources: Vec<PathBuf>,
) -> ConversionStatus {
    let t0 = Instant::now();
    let direct = status.direct;
    // Disks of this run: `.new` (or `.dry`) names, renamed into place on success.
    let suffix = if job.dry_run { ".dry" } else { ".new" };
    let work: Vec<PathBuf> = (0..sources.len())
        .map(|i| with_suffix(&converted_path(dir, i, direct), suffix))
        .collect();
    let result = async {
        for (source, target) in sources.iter().zip(&work) {
            let _ = std::fs::remove_file(target);
            if direct {
                copy_sparse(source, target).await?;
            } else {
                crate::export::create_overlay(source, target, None).await?;
            }
        }
        if direct {
            run_direct(state, dir, &job, &work).await
        } else {
            run_appliance(state, dir, &job, &work).await
        }
    }
    .await;
    status.wall_ms = Some(t0.elapsed().as_millis() as u64);
    status.finished_at = Some(now_secs());
    let succeeded = match result {
        Ok(outcome) => {
            status.appliance_start_ms = outcome.appliance_start_ms;
            status.console_tail = outcome.console_tail;
            match outcome.report {
                Some(report) => {
                    let ok = report.ok;
                    if !ok {
                        status.error = Some(if report.errors.is_empty() {
                            "the converter reported failure".into()
                        } else {
                            report.errors.join("; ")
                        });
                    }
                    status.report = serde_json::to_value(&report).ok();
                    ok
                }
                None => {
                    status.error = Some(
                        "the converter wrote no report (see console_tail / console.log)".into(),
                    );
                    false
                }
            }
        }
        Err(e) => {
            status.error = Some(e.to_string());
            false
        }
    };
    if succeeded && !job.dry_run {
        for (i, tmp) in work.iter().enumerate() {
            let target = converted_path(dir, i, direct);
            let _ = std::fs::remove_file(converted_path(dir, i, !direct));
            if let Err(e) = std::fs::rename(tmp, &target) {
                status.error = Some(format!("renaming {}: {e}", tmp.display()));
                status.state = ConversionState::Failed;
                return status;
            }
        }
    } else {
        for tmp in &work {
            let _ = std::fs::remove_file(tmp);
        }
    }
    status.state = if succeeded {
        // The console is kept only to explain a failure.
        status.console_tail.clear();
        ConversionState::Succeeded
    } else {
        ConversionState::Failed
    };
    status
}

/// A sparse copy of a raw image (direct mode works on a copy, never on the capture).
async fn copy_sparse(source: &Path, target: &Path) -> Result<(), Error> {
    let output = tokio::process::Command::new("cp")
        .arg("--sparse=always")
        .arg("--reflink=auto")
        .arg(source)
        .arg(target)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::io("running cp", e))?;
    if !output.status.success() {
        return Err(Error::Command {
            command: format!(
                "cp --sparse=always {} {}",
                source.display(),
                target.display()
            ),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> Vec<String> {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

async fn run_direct(
    state: &AppState,
    dir: &Path,
    job: &ConversionJob,
    disks: &[PathBuf],
) -> Result<Outcome, Error> {
    let job_path = dir.join("job.json");
    let report_path = dir.join("report.json");
    let _ = std::fs::remove_file(&report_path);
    write_file_atomic(
        &job_path,
        &serde_json::to_vec_pretty(job).expect("jobs serialize"),
        0o600,
    )?;
    let mut cmd = tokio::process::Command::new(&state.conversion.converter);
    cmd.arg("direct")
        .arg("--job")
        .arg(&job_path)
        .arg("--report")
        .arg(&report_path);
    for (i, d) in disks.iter().enumerate() {
        let mut arg = std::ffi::OsString::from(format!("{i}="));
        arg.push(d);
        cmd.arg("--disk").arg(arg);
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    tracing::info!(converter = %state.conversion.converter.display(), "running the converter on the host (direct mode)");
    let output = tokio::time::timeout(state.conversion.timeout, cmd.output())
        .await
        .map_err(|_| Error::Internal("the converter did not finish in time".into()))?
        .map_err(|e| {
            Error::io(
                format!("running {}", state.conversion.converter.display()),
                e,
            )
        })?;
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    let _ = std::fs::write(dir.join("console.log"), &log);
    let report = match std::fs::read(&report_path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
                what: report_path.display().to_string(),
                source,
            })?,
        ),
        Err(_) => None,
    };
    Ok(Outcome {
        report,
        appliance_start_ms: None,
        console_tail: if output.status.success() {
            Vec::new()
        } else {
            tail(&log, 30)
        },
    })
}

/// The marker the appliance's init prints when its drivers are loaded and the converter starts.
const APPLIANCE_READY: &str = "appliance ready after";

/// Whether KVM really runs guests here. `/dev/kvm` can exist and open while guests under it
/// never execute (nested virtualisation without support, as on some cloud machines), so the
/// appliance's kernel is booted under KVM without an initramfs: it prints within a second or two
/// and panics at once (`panic=-1` + `-no-reboot` end QEMU). No output in 15 s: use TCG.
async fn kvm_works(config: &ConversionConfig, kernel: &Path) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let probe = async {
        let mut child = tokio::process::Command::new(&config.qemu)
            .args([
                "-nodefaults",
                "-no-user-config",
                "-machine",
                "q35",
                "-accel",
                "kvm",
            ])
            .args([
                "-m",
                "256",
                "-display",
                "none",
                "-no-reboot",
                "-serial",
                "stdio",
            ])
            .arg("-kernel")
            .arg(kernel)
            .args(["-append", "console=ttyS0 panic=-1 loglevel=7"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let mut out = child.stdout.take()?;
        let mut buf = [0u8; 64];
        use tokio::io::AsyncReadExt;
        let n = out.read(&mut buf).await.ok()?;
        let _ = child.kill().await;
        Some(n > 0)
    };
    let works = tokio::time::timeout(Duration::from_secs(15), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
    tracing::info!(works, "probed KVM for the conversion appliance");
    works
}

async fn run_appliance(
    state: &AppState,
    dir: &Path,
    job: &ConversionJob,
    disks: &[PathBuf],
) -> Result<Outcome, Error> {
    let config = &state.conversion;
    let appliance = config
        .appliance_dir
        .as_ref()
        .ok_or_else(|| Error::Internal("no appliance directory".into()))?;
    let job_img = dir.join("job.img");
    let console = dir.join("console.log");
    let _ = std::fs::remove_file(&console);
    p2v_convert::job::create_job_disk(&job_img, job)
        .map_err(|e| Error::Internal(format!("writing the job disk: {e}")))?;
    let kernel = appliance.join("vmlinuz");
    let kvm = *state
        .conversions
        .1
        .get_or_init(|| kvm_works(config, &kernel))
        .await;
    let mut args: Vec<std::ffi::OsString> = vec![
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-machine".into(),
        "q35".into(),
        "-accel".into(),
        if kvm { "kvm" } else { "tcg" }.into(),
        "-cpu".into(),
        "max".into(),
        "-smp".into(),
        "2".into(),
        "-m".into(),
        config.appliance_memory_mib.to_string().into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-nic".into(),
        "none".into(),
        "-serial".into(),
        {
            let mut s = std::ffi::OsString::from("file:");
            s.push(&console);
            s
        },
        "-kernel".into(),
        appliance.join("vmlinuz").into(),
        "-initrd".into(),
        appliance.join("initrd.img").into(),
        "-append".into(),
        "console=ttyS0,115200 p2v.mode=convert panic=-1".into(),
    ];
    let mut drive = |file: &Path, format: &str, id: &str, serial: &str| {
        let mut d = std::ffi::OsString::from("file=");
        d.push(file);
        d.push(format!(",format={format},if=none,id={id},cache=writeback"));
        args.extend(["-drive".into(), d]);
        args.extend([
            "-device".into(),
            format!("virtio-blk-pci,drive={id},serial={serial}").into(),
        ]);
    };
    drive(&job_img, "raw", "job", p2v_convert::job::JOB_DISK_SERIAL);
    for (i, d) in disks.iter().enumerate() {
        drive(
            d,
            "qcow2",
            &format!("disk{i}"),
            &format!("{}{i}", p2v_convert::job::GUEST_DISK_SERIAL_PREFIX),
        );
    }
    tracing::info!(qemu = %config.qemu.display(), console = %console.display(), "starting the conversion appliance");
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(&config.qemu)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::io(
                format!(
                    "starting {} (is qemu-system-x86 installed?)",
                    config.qemu.display()
                ),
                e,
            )
        })?;
    let mut stderr = child.stderr.take().expect("piped");
    let stderr_task = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v).await;
        v
    });
    let mut appliance_start_ms = None;
    let deadline = t0 + config.timeout;
    let exit = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| Error::io("waiting for QEMU", e))?,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if appliance_start_ms.is_none()
            && std::fs::read_to_string(&console).is_ok_and(|c| c.contains(APPLIANCE_READY))
        {
            appliance_start_ms = Some(t0.elapsed().as_millis() as u64);
            tracing::info!(ms = appliance_start_ms, "conversion appliance is up");
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            let log = std::fs::read_to_string(&console).unwrap_or_default();
            return Ok(Outcome {
                report: None,
                appliance_start_ms,
                console_tail: {
                    let mut t = tail(&log, 40);
                    t.push(format!(
                        "(stopped by the server after {} s)",
                        config.timeout.as_secs()
                    ));
                    t
                },
            });
        }
    };
    let qemu_stderr = String::from_utf8_lossy(&stderr_task.await.unwrap_or_default()).into_owned();
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    if appliance_start_ms.is_none() && log.contains(APPLIANCE_READY) {
        appliance_start_ms = Some(t0.elapsed().as_millis() as u64);
    }
    let region = p2v_convert::job::read_region(&job_img, p2v_convert::job::RESULT_OFFSET)
        .map_err(|e| Error::Internal(format!("reading the job disk: {e}")))?;
    let report = p2v_convert::job::decode_report(&region)
        .map_err(|e| Error::Internal(format!("the appliance's report: {e}")))?;
    let mut console_tail = Vec::new();
    if report.as_ref().is_none_or(|r| !r.ok) {
        console_tail = tail(&log, 40);
        if !exit.success() || !qemu_stderr.trim().is_empty() {
            console_tail.push(format!("QEMU {exit}: {}", qemu_stderr.trim()));
        }
    }
    Ok(Outcome {
        report,
        appliance_start_ms,
        console_tail,
    })
}

/// Exports of converted disks: always made fresh from the converted image (qcow2 overlay or
/// raw copy), into a temporary file renamed into `exports/<disk-id>.converted.<ext>`.
pub(crate) async fn prepare_export(
    state: &AppState,
    disk: DiskId,
    format: ExportFormat,
) -> Result<(PathBuf, std::fs::File), Error> {
    let lock = state.export_lock(disk, format);
    let _guard = lock.lock().await;
    let (source, source_format) = converted_source(state, disk).await?;
    let exports = state.data.exports_dir();
    let final_path = exports.join(format!("{disk}.converted.{}", format.as_str()));
    let tmp = exports.join(format!(
        ".{disk}.converted.{}.tmp-{:016x}",
        format.as_str(),
        crate::util::random_u64()?
    ));
    let args = crate::export::convert_args(format, &source, source_format, &tmp);
    let converted = crate::export::run_qemu_img(args).await;
    if let Err(e) = converted {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &final_path)
        .map_err(|e| Error::io(format!("renaming to {}", final_path.display()), e))?;
    let file = std::fs::File::open(&final_path)
        .map_err(|e| Error::io(format!("opening {}", final_path.display()), e))?;
    Ok((final_path, file))
}
