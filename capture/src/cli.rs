//! Command-line interface of `p2v-capture`. The live image's init builds the same [`Args`] from
//! kernel arguments (`p2v.server=` ...), so both ways of running the agent share one definition.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use p2v_protocol::api::ErrorCode;
use p2v_transport::{client_config, load_ca_file, Fingerprint, ServerTrust, ServerUrl};

use crate::api::{error_chain, ApiError, ServerAccess};
use crate::capture::{capture, CaptureError, CaptureOptions};
use crate::disks::{discover, open_discovered, open_path};
use crate::inventory::{collect, Roots};
use crate::pipeline::PipelineSettings;
use crate::progress::{human_bytes, ProgressMode};

/// Capture this machine's disks to a P2V server.
///
/// Reads each disk in 4 MiB chunks, sends only what the server does not already hold (zstd
/// compressed, over TLS 1.3 to a pinned certificate), and has the server verify every chunk.
/// Re-running the same command after any interruption completes the capture.
#[derive(Debug, Clone, Parser)]
#[command(name = "p2v-capture", version)]
pub struct Args {
    /// Server URL, https://host:port.
    #[arg(long, env = "P2V_SERVER", required_unless_present = "inventory")]
    pub server: Option<String>,

    /// SHA-256 fingerprint of the server's certificate (sha256:<hex>), as `p2v-server serve`
    /// prints it.
    #[arg(long, env = "P2V_FINGERPRINT", conflicts_with = "ca_file")]
    pub fingerprint: Option<String>,

    /// Trust a server certificate signed by one of the CAs in this PEM file instead of pinning.
    #[arg(long, env = "P2V_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Enrollment token created with `p2v-server token create`.
    #[arg(long, env = "P2V_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Disks to capture: block devices or image files. None means every local disk.
    pub disks: Vec<PathBuf>,

    /// zstd compression level (1-19; 3 is a good balance on two cores).
    #[arg(long, default_value_t = crate::pipeline::DEFAULT_ZSTD_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,

    /// Compression threads (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Parallel HTTPS connections for chunk uploads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,

    /// How long to keep retrying when the server cannot be reached (e.g. 30s, 5m, 1h).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub retry_for: Duration,

    /// Logical sector size of image files (default: detected from a GPT header, else 512).
    #[arg(long, value_parser = parse_sector_size)]
    pub sector_size: Option<u32>,

    /// Name the machine on the server by this key instead of its DMI UUID/serial (useful when
    /// capturing image files of several machines from one host).
    #[arg(long)]
    pub machine_key: Option<String>,

    /// Read every byte of each disk instead of only what its filesystems use.
    #[arg(long)]
    pub whole_disk: bool,

    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Do not show progress.
    #[arg(long)]
    pub no_progress: bool,

    /// Print the inventory of this machine as JSON and exit (nothing is sent).
    #[arg(long)]
    pub inventory: bool,
}

fn parse_sector_size(text: &str) -> Result<u32, String> {
    match text {
        "512" => Ok(512),
        "4096" => Ok(4096),
        _ => Err("expected 512 or 4096".to_string()),
    }
}

/// Runs the agent with parsed arguments.
pub fn run(args: Args) -> anyhow::Result<()> {
    let roots = Roots::default();
    if args.inventory {
        let disks = discover(roots.sys);
        let inventory = collect(&roots, disks);
        println!("{}", serde_json::to_string_pretty(&inventory)?);
        return Ok(());
    }
    let server: ServerUrl = args.server.as_deref().unwrap_or_default().parse()?;
    let trust = match (&args.fingerprint, &args.ca_file) {
        (Some(fp), _) => ServerTrust::Pinned(fp.parse::<Fingerprint>()?),
        (None, Some(ca)) => ServerTrust::CaCertificates(load_ca_file(ca)?),
        (None, None) => bail!(
            "no way to trust the server: pass --fingerprint sha256:<hex> (printed by `p2v-server serve` \
             and `p2v-server fingerprint`) or --ca-file"
        ),
    };
    let Some(token) = args.token.clone().filter(|t| !t.is_empty()) else {
        bail!("no enrollment token: pass --token (create one with `p2v-server token create`)");
    };

    let opened = if args.disks.is_empty() {
        let found = discover(roots.sys);
        if found.is_empty() {
            bail!("no disks found in /sys/class/block; name the disks or image files to capture");
        }
        found
            .into_iter()
            .map(|info| {
                let path = info.path.clone();
                open_discovered(info).with_context(|| format!("opening {path}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        args.disks
            .iter()
            .map(|p| open_path(p, roots.sys, args.sector_size).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let inventory = collect(&roots, opened.iter().map(|d| d.info.clone()).collect());
    for disk in &opened {
        eprintln!(
            "disk {}: {} ({}-byte sectors{})",
            disk.info.path,
            human_bytes(disk.info.size_bytes),
            disk.info.logical_sector_size,
            disk.info
                .controller_driver
                .as_deref()
                .map(|d| format!(", on {d}"))
                .unwrap_or_default()
        );
    }

    let workers = args
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
        .max(1);
    let options = CaptureOptions {
        access: ServerAccess {
            url: server,
            tls: client_config(&trust)?,
            token,
            retry_for: args.retry_for,
        },
        pipeline: PipelineSettings {
            zstd_level: args.level,
            readers: 2,
            workers,
            upload_queue: usize::from(args.connections) * 2,
        },
        connections: usize::from(args.connections),
        machine_key: args.machine_key.clone(),
        progress: if args.no_progress {
            ProgressMode::Off
        } else {
            ProgressMode::Auto
        },
        max_passes: 3,
        whole_disk: args.whole_disk,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime
        .block_on(capture(&options, inventory, opened))
        .map_err(explain)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "capture complete: machine {} on {}",
            report.machine_id, report.server
        );
        for d in &report.disks {
            println!(
                "  {} -> {}: {} in {:.1} s, {} on the wire, {} chunks sent, {} already held, {} zero",
                d.path,
                d.disk_id,
                human_bytes(d.size_bytes),
                d.seconds,
                human_bytes(d.wire_bytes),
                d.chunks_sent,
                d.chunks_skipped,
                d.chunks_zero
            );
        }
    }
    Ok(())
}

/// Adds what the operator should check to the most common failures.
fn explain(error: CaptureError) -> anyhow::Error {
    let hint = match error.api_error() {
        Some(ApiError::Untrusted(_)) => Some(
            "check --fingerprint against `p2v-server fingerprint` on the server; \
             if they differ you may be talking to another machine",
        ),
        Some(e) if e.code() == Some(ErrorCode::Unauthorized) => {
            Some("the token was refused: create one with `p2v-server token create` and pass it with --token")
        }
        Some(e) if e.code() == Some(ErrorCode::StorageFull) => Some(
            "the server's storage is full; what it acknowledged is safe. Free space on the server \
             and run the same command again to resume",
        ),
        Some(ApiError::GaveUp { .. }) => {
            Some("the server could not be reached; check the network and the server, then run the same command again to resume")
        }
        _ => None,
    };
    let text = error_chain(&error);
    match hint {
        Some(hint) => anyhow::anyhow!("{text}\nhint: {hint}"),
        None => anyhow::anyhow!("{text}"),
    }
}
