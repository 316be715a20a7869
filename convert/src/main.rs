//! `p2v-convert`: runs a conversion job, in the appliance VM (`appliance`) or on the host in
//! direct mode (`direct`). The work is in the library ([`p2v_convert::run`]).
//!
//! Exit codes: `appliance` exits 0 once the report is on the job disk (even when the report says
//! the conversion failed: the server reads why from it), 1 otherwise. `direct` exits 0 when the
//! conversion succeeded, 2 when the report was written but says it did not, 1 when no report
//! could be written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use p2v_convert::job::{ConversionJob, ConversionReport};
use p2v_convert::run;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "p2v-convert",
    version,
    about = "Converts a captured Linux machine so that it boots on virtual hardware"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Inside the conversion appliance VM: read the job from the disk with serial `p2v-job`,
    /// convert the disks with serials `p2v-disk0`, `p2v-disk1`..., write the report back.
    Appliance {
        /// How long to wait for the job and guest disks to appear.
        #[arg(long, default_value = "30")]
        wait_secs: u64,
    },
    /// On this host (for operators who trust the source): mount the guest's file systems in
    /// this kernel, through loop devices.
    Direct {
        /// The job (ConversionJob JSON).
        #[arg(long)]
        job: PathBuf,
        /// Where to write the report (ConversionReport JSON).
        #[arg(long)]
        report: PathBuf,
        /// `INDEX=PATH`: the raw image file or block device of the job's disk INDEX.
        #[arg(long = "disk", value_name = "INDEX=PATH", required = true)]
        disks: Vec<String>,
        /// Inspect and plan only, whatever the job says.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("P2V_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let code = match cli.command {
        Cmd::Appliance { wait_secs } => appliance(Duration::from_secs(wait_secs)),
        Cmd::Direct {
            job,
            report,
            disks,
            dry_run,
        } => direct(&job, &report, &disks, dry_run),
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("p2v-convert: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn summary(report: &ConversionReport) -> String {
    format!(
        "P2V-CONVERT-DONE ok={} changes={}",
        report.ok,
        report.applied.iter().filter(|a| a.ok).count()
    )
}

fn log_report(report: &ConversionReport) {
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    for e in &report.errors {
        tracing::error!("{e}");
    }
}

fn direct(job_path: &Path, report_path: &Path, disks: &[String], dry_run: bool) -> Result<i32> {
    let text =
        std::fs::read(job_path).with_context(|| format!("reading {}", job_path.display()))?;
    let mut job: ConversionJob = serde_json::from_slice(&text)
        .with_context(|| format!("parsing the job {}", job_path.display()))?;
    job.dry_run |= dry_run;
    for d in disks {
        let (index, path) = d
            .split_once('=')
            .with_context(|| format!("--disk {d:?}: expected INDEX=PATH"))?;
        let index: usize = index
            .parse()
            .with_context(|| format!("--disk {d:?}: {index:?} is not a disk index"))?;
        let Some(disk) = job.disks.iter_mut().find(|jd| jd.index == index) else {
            bail!("--disk {d:?}: the job has no disk {index}");
        };
        let path = Path::new(path);
        if !path.exists() {
            bail!("--disk {d:?}: {} does not exist", path.display());
        }
        disk.device = Some(path.display().to_string());
    }
    // Our mounts live and die with this process: nothing leaks into the host's mount table,
    // and nothing the host mounts meanwhile appears in the guest.
    if let Err(e) = p2v_convert::guest::sys::private_mount_namespace() {
        tracing::warn!("no private mount namespace ({e}); mounting in the host's");
    }
    let report = run::run_job(&job);
    log_report(&report);
    let json = serde_json::to_vec_pretty(&report)?;
    std::fs::write(report_path, json)
        .with_context(|| format!("writing the report {}", report_path.display()))?;
    println!("{}", summary(&report));
    Ok(if report.ok { 0 } else { 2 })
}

fn appliance(wait: Duration) -> Result<i32> {
    let report = run::run_appliance(wait)?;
    log_report(&report);
    println!("{}", summary(&report));
    Ok(0)
}
