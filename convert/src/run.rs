//! The job runner: one [`ConversionJob`] in, one [`ConversionReport`] out, whatever happens.
//!
//! ```text
//! partitions ─▶ mount ─▶ inspect ─▶ plan ─▶ (not a dry run, no blockers) apply ─▶ report in
//! the guest ─▶ sync ─▶ unmount
//! ```
//!
//! Every problem ends up in the report's `errors` (or `warnings`): the runner never panics at
//! its caller (a bug that panics becomes an error entry) and never returns without a report.
//! The same code serves the appliance VM (`p2v-convert appliance`) and the host's direct mode
//! (`p2v-convert direct`); only where the disks come from differs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::apply::{self, ApplyContext};
use crate::guest::{self, Guest};
use crate::job::{self, ConversionJob, ConversionReport, Timings};
use crate::{inspect, plan};

/// Where the report is kept inside the converted guest: `REPORT_DIR/conversion-<stamp>.json`.
pub const REPORT_DIR: &str = "/var/lib/p2v";

/// What the caller knows that the job does not.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The appliance kernel's uptime when the converter started ([`appliance_uptime_ms`]).
    pub appliance_boot_ms: Option<u64>,
}

/// `/proc/uptime` in milliseconds (the appliance's start cost, read when the converter starts).
pub fn appliance_uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64)
}

/// Runs a job with no appliance timing.
pub fn run_job(job: &ConversionJob) -> ConversionReport {
    run_job_with(job, &RunOptions::default())
}

/// Runs a job; see the module docs.
pub fn run_job_with(job: &ConversionJob, opts: &RunOptions) -> ConversionReport {
    let mut report = ConversionReport {
        machine_id: job.machine_id.clone(),
        dry_run: job.dry_run,
        ok: false,
        inspection: Default::default(),
        plan: Default::default(),
        applied: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
        timings: Timings {
            appliance_boot_ms: opts.appliance_boot_ms,
            ..Timings::default()
        },
    };
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_inner(job, &mut report)));
    if let Err(panic) = outcome {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown".into());
        report
            .errors
            .push(format!("internal error (a bug in p2v-convert): {what}"));
        report.ok = false;
    }
    report
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

fn run_inner(job: &ConversionJob, report: &mut ConversionReport) {
    let started = Instant::now();
    let stamp = apply::utc_stamp(SystemTime::now());
    let (partitions, problems) = guest::discover(&job.disks);
    report.errors.extend(problems);
    let guest = match Guest::mount(&job.disks, partitions, job.dry_run) {
        Ok(g) => g,
        Err(e) => {
            report.errors.push(format!("mounting the guest: {e}"));
            report.timings.inspect_ms = ms(started);
            return;
        }
    };
    report.warnings.extend(guest.warnings.iter().cloned());
    report.errors.extend(guest.errors.iter().cloned());

    let inspection = inspect::inspect(&guest.root, &guest.partitions, &job.disks);
    for p in &inspection.problems {
        if !report.errors.iter().any(|e| e.contains(p.as_str())) {
            report.warnings.push(format!("inspection: {p}"));
        }
    }
    let plan = plan::plan(
        &inspection,
        &job.vm,
        &job.disks,
        &guest.partitions,
        job.inventory.as_ref(),
    );
    report.timings.inspect_ms = ms(started);
    report.inspection = inspection;
    report.plan = plan;

    if job.dry_run {
        report
            .errors
            .extend(report.plan.blockers.iter().map(|b| format!("blocker: {b}")));
        report.ok = report.errors.is_empty();
        finish(guest, report);
        return;
    }
    if !report.plan.blockers.is_empty() {
        let blockers: Vec<String> = report
            .plan
            .blockers
            .iter()
            .map(|b| format!("blocker: {b}"))
            .collect();
        report.errors.extend(blockers);
        report
            .errors
            .push("the plan has blockers: nothing was changed".into());
        finish(guest, report);
        return;
    }
    if !report.errors.is_empty() {
        report
            .errors
            .push("the guest could not be fully mounted or read: nothing was changed".into());
        finish(guest, report);
        return;
    }

    let apply_started = Instant::now();
    let cx = ApplyContext {
        root: &guest.root,
        guest_mounts: guest
            .mounted
            .iter()
            .map(|m| m.mount_point.clone())
            .collect(),
        stamp: stamp.clone(),
    };
    report.applied = apply::apply(&report.plan, &cx);
    report.timings.apply_ms = ms(apply_started);
    for a in report.applied.iter().filter(|a| !a.ok) {
        report
            .errors
            .push(format!("change {} failed: {}", a.change, a.detail));
    }
    report.ok = report.errors.is_empty();
    if let Err(e) = write_guest_report(&guest.root, &stamp, report) {
        report
            .warnings
            .push(format!("the report could not be kept in the guest: {e}"));
    }
    finish(guest, report);
}

/// Writes the report as JSON into the guest (`/var/lib/p2v/conversion-<stamp>.json`).
fn write_guest_report(
    root: &inspect::GuestRoot,
    stamp: &str,
    report: &ConversionReport,
) -> Result<(), crate::Error> {
    let json = serde_json::to_string_pretty(report)? + "\n";
    let path = format!("{REPORT_DIR}/conversion-{stamp}.json");
    apply::write_guest_file(root, &path, json.as_bytes(), 0o600)
}

/// Syncs and unmounts, adding what failed to the report.
fn finish(guest: Guest, report: &mut ConversionReport) {
    let errors = guest.close();
    if !errors.is_empty() {
        report.ok = false;
        report
            .errors
            .extend(errors.into_iter().map(|e| format!("cleaning up: {e}")));
    }
}

/// The block device whose serial (virtio-blk `/sys/block/X/serial`, SCSI/ATA
/// `/sys/block/X/device/serial`) is `serial`.
fn device_by_serial(serial: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/block").ok()?;
    for e in entries.flatten() {
        let dir = e.path();
        for file in ["serial", "device/serial"] {
            if std::fs::read_to_string(dir.join(file)).is_ok_and(|s| s.trim() == serial) {
                return Some(Path::new("/dev").join(e.file_name()));
            }
        }
    }
    None
}

/// Waits for a device to appear (the appliance has no udev: devtmpfs makes the node when the
/// driver binds).
fn wait_device(serial: &str, deadline: Instant) -> Option<PathBuf> {
    loop {
        if let Some(d) = device_by_serial(serial).filter(|d| d.exists()) {
            return Some(d);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A report for a job that could not even be read.
fn failed_report(opts: &RunOptions, error: String) -> ConversionReport {
    ConversionReport {
        machine_id: String::new(),
        dry_run: true,
        ok: false,
        inspection: Default::default(),
        plan: Default::default(),
        applied: Vec::new(),
        errors: vec![error],
        warnings: Vec::new(),
        timings: Timings {
            appliance_boot_ms: opts.appliance_boot_ms,
            ..Timings::default()
        },
    }
}

/// The appliance's whole job: find the job disk (serial [`job::JOB_DISK_SERIAL`]) and the
/// guest disks (`p2v-disk<INDEX>`), waiting up to `wait` for them, run the job, and write the
/// report into the job disk's result region. `Err` only when no report could be written.
pub fn run_appliance(wait: Duration) -> Result<ConversionReport, crate::Error> {
    let opts = RunOptions {
        appliance_boot_ms: appliance_uptime_ms(),
    };
    let deadline = Instant::now() + wait;
    let job_dev = wait_device(job::JOB_DISK_SERIAL, deadline).ok_or_else(|| {
        crate::Error::JobDisk(format!(
            "no disk with serial {} is attached",
            job::JOB_DISK_SERIAL
        ))
    })?;
    tracing::info!(device = %job_dev.display(), "job disk");
    let region = job::read_region(&job_dev, 0)?;
    let report = match job::decode_job(&region) {
        Ok(mut job) => {
            let mut missing = Vec::new();
            for disk in &mut job.disks {
                let serial = format!("{}{}", job::GUEST_DISK_SERIAL_PREFIX, disk.index);
                match wait_device(&serial, deadline) {
                    Some(dev) => {
                        tracing::info!(index = disk.index, device = %dev.display(), "guest disk");
                        disk.device = Some(dev.display().to_string());
                    }
                    None => missing.push(serial),
                }
            }
            let mut report = run_job_with(&job, &opts);
            for serial in missing {
                report.ok = false;
                report
                    .errors
                    .insert(0, format!("no disk with serial {serial} is attached"));
            }
            report
        }
        Err(e) => failed_report(&opts, format!("reading the job: {e}")),
    };
    let bytes = match job::encode_report(&report) {
        Ok(b) => b,
        Err(e) => {
            // Too large (a guest with pathological contents): send the verdict and the errors
            // without the inspection details.
            let mut small = failed_report(&opts, format!("the full report does not fit: {e}"));
            small.machine_id.clone_from(&report.machine_id);
            small.dry_run = report.dry_run;
            small.errors.extend(report.errors.iter().take(100).cloned());
            small.timings = report.timings.clone();
            job::encode_report(&small)?
        }
    };
    job::write_region(&job_dev, job::RESULT_OFFSET, &bytes)?;
    crate::guest::sys::sync();
    Ok(report)
}
