//! `p2v-server`: parses the command line and calls the `p2v_server` library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use p2v_protocol::api::ExportFormat;
use p2v_protocol::{DiskId, MachineId};
use p2v_server::operator::{self, Operator};
use tracing_subscriber::EnvFilter;

/// P2V server: receives disks from capture agents over HTTPS and exports them as VM images.
#[derive(Debug, Parser)]
#[command(name = "p2v-server", version)]
struct Cli {
    /// Data directory (certificate, tokens, metadata, disk images, exports).
    #[arg(
        long,
        global = true,
        env = "P2V_DATA_DIR",
        default_value = "/var/lib/p2v"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (prints the address, the fingerprint and the agent arguments).
    Serve {
        /// Address and port to listen on (port 0 picks a free one).
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: SocketAddr,
        /// Host name or address agents use to reach the server (repeatable; the first one is
        /// printed in the agent arguments).
        #[arg(long)]
        advertise: Vec<String>,
        /// Serve the live image's boot files (iPXE script, kernel, initrd) over plain HTTP on
        /// this address (see the README: the script carries a dedicated enrollment token).
        #[arg(long, requires = "boot_dir")]
        boot_listen: Option<SocketAddr>,
        /// Directory with vmlinuz and initrd.img (`p2v-image build --output DIR`).
        #[arg(long)]
        boot_dir: Option<PathBuf>,
        /// Extra kernel arguments in the iPXE script (e.g. "p2v.post=stay p2v.debug").
        #[arg(long, default_value = "")]
        boot_args: String,
        /// Directory with the live image's vmlinuz and initrd.img used as the conversion
        /// appliance (default: --boot-dir).
        #[arg(long)]
        appliance_dir: Option<PathBuf>,
        /// The p2v-convert binary for `convert --direct` (default: beside p2v-server).
        #[arg(long)]
        converter: Option<PathBuf>,
        /// Stop a conversion that takes longer (e.g. 30m, 2h).
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        conversion_timeout: std::time::Duration,
        /// Testing only: treat the first N chunk uploads as corrupted in transit (422).
        #[arg(long, hide = true, default_value_t = 0)]
        inject_corrupt_chunks: u32,
    },
    /// Print the certificate fingerprint agents pin (works while the server is stopped).
    Fingerprint,
    /// Manage enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// List machines.
    Machines {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List disks with their progress.
    Disks {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List capture sessions.
    Sessions {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Export a complete disk as a VM image.
    Export {
        /// The disk (`d-...`, from `p2v-server disks`).
        disk: DiskId,
        /// raw, qcow2, vmdk (streamOptimized), vhdx or vhd (fixed, for Azure).
        #[arg(long, default_value = "qcow2")]
        format: ExportFormat,
        /// The disk as the machine's last conversion left it, instead of as captured.
        #[arg(long)]
        converted: bool,
        /// Where to write the image.
        #[arg(long)]
        output: PathBuf,
    },
    /// Export a converted machine: its disks, a libvirt domain XML naming them, and with
    /// `--format vmdk` an OVF descriptor for vSphere.
    ExportVm {
        machine: MachineId,
        /// qcow2, raw or vmdk.
        #[arg(long, default_value = "qcow2")]
        format: ExportFormat,
        /// Directory to write into.
        #[arg(long)]
        output: PathBuf,
        /// Where the NICs attach: user, network:NAME or bridge:NAME.
        #[arg(long, default_value = "user", value_parser = parse_network)]
        network: p2v_convert::descriptor::NetworkAttachment,
        /// kvm, or qemu for hosts without hardware virtualisation.
        #[arg(long, default_value = "kvm", value_parser = parse_domain_type)]
        domain_type: p2v_convert::descriptor::DomainType,
        /// vnc or none.
        #[arg(long, default_value = "vnc", value_parser = parse_graphics)]
        graphics: p2v_convert::descriptor::Graphics,
        /// Log the serial console to this file instead of a pty.
        #[arg(long)]
        serial_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List the target hardware profiles for `convert`.
    Profiles {
        #[arg(long)]
        json: bool,
    },
    /// Convert a captured machine so that it boots on virtual hardware: inspect the guest,
    /// plan the changes (printed), apply them in the conversion appliance VM; waits for the end.
    Convert {
        /// The machine (`m-...`, from `p2v-server machines`).
        machine: MachineId,
        /// Target profile (`p2v-server profiles`).
        #[arg(long, default_value = "virtio")]
        profile: String,
        /// Inspect and print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Mount the guest on this host instead of in the appliance VM (trusted sources only).
        #[arg(long)]
        direct: bool,
        /// vCPUs (default: the physical machine's threads).
        #[arg(long)]
        cpus: Option<u32>,
        /// Memory in MiB (default: the physical machine's).
        #[arg(long)]
        memory_mib: Option<u64>,
        /// bios or uefi (default: what the machine booted with).
        #[arg(long, value_parser = parse_firmware)]
        firmware: Option<p2v_protocol::inventory::FirmwareKind>,
        /// Give the VM new MACs instead of the physical NICs' ones.
        #[arg(long)]
        new_macs: bool,
        /// Start it and return at once.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show the latest conversion of a machine (report, plan, changes).
    Conversion {
        machine: MachineId,
        #[arg(long)]
        json: bool,
    },
}

fn parse_network(s: &str) -> Result<p2v_convert::descriptor::NetworkAttachment, String> {
    use p2v_convert::descriptor::NetworkAttachment;
    match s.split_once(':') {
        None if s == "user" => Ok(NetworkAttachment::User),
        Some(("network", n)) if !n.is_empty() => Ok(NetworkAttachment::Network(n.into())),
        Some(("bridge", n)) if !n.is_empty() => Ok(NetworkAttachment::Bridge(n.into())),
        _ => Err(format!("{s:?}: expected user, network:NAME or bridge:NAME")),
    }
}

fn parse_domain_type(s: &str) -> Result<p2v_convert::descriptor::DomainType, String> {
    match s {
        "kvm" => Ok(p2v_convert::descriptor::DomainType::Kvm),
        "qemu" => Ok(p2v_convert::descriptor::DomainType::Qemu),
        _ => Err(format!("{s:?}: expected kvm or qemu")),
    }
}

fn parse_graphics(s: &str) -> Result<p2v_convert::descriptor::Graphics, String> {
    match s {
        "vnc" => Ok(p2v_convert::descriptor::Graphics::Vnc),
        "none" => Ok(p2v_convert::descriptor::Graphics::None),
        _ => Err(format!("{s:?}: expected vnc or none")),
    }
}

fn parse_firmware(s: &str) -> Result<p2v_protocol::inventory::FirmwareKind, String> {
    match s {
        "bios" => Ok(p2v_protocol::inventory::FirmwareKind::Bios),
        "uefi" => Ok(p2v_protocol::inventory::FirmwareKind::Uefi),
        _ => Err(format!("{s:?}: expected bios or uefi")),
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an enrollment token for agents; prints only the token.
    Create {
        /// A label (a rack, a migration wave).
        #[arg(long)]
        name: String,
        /// Print `{"name":...,"token":...}` instead.
        #[arg(long)]
        json: bool,
    },
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn operator(data_dir: &std::path::Path) -> anyhow::Result<Operator> {
    Operator::from_data_dir(data_dir)
        .with_context(|| format!("finding the server through {}", data_dir.display()))
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("P2V_LOG")
                .or_else(|_| EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain of causes, on one line.
            eprintln!("p2v-server: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir;
    match cli.command {
        Command::Serve {
            listen,
            advertise,
            boot_listen,
            boot_dir,
            boot_args,
            appliance_dir,
            converter,
            conversion_timeout,
            inject_corrupt_chunks,
        } => {
            let mut config = p2v_server::ServeConfig::new(&data_dir, listen);
            config.conversion.appliance_dir = appliance_dir.or_else(|| boot_dir.clone());
            if let Some(c) = converter {
                config.conversion.converter = c;
            }
            config.conversion.timeout = conversion_timeout;
            config.advertise = advertise;
            config.limits.inject_corrupt_chunks = inject_corrupt_chunks;
            if let (Some(listen), Some(dir)) = (boot_listen, boot_dir) {
                config.boot = Some(p2v_server::BootConfig {
                    listen,
                    dir,
                    extra_args: boot_args,
                });
            }
            p2v_server::serve(config)
                .await
                .with_context(|| format!("serving from {}", data_dir.display()))?;
        }
        Command::Fingerprint => {
            let fingerprint = operator::fingerprint(&data_dir)
                .with_context(|| format!("reading the certificate in {}", data_dir.display()))?;
            println!("{fingerprint}");
        }
        Command::Token {
            command: TokenCommand::Create { name, json },
        } => {
            let created = operator(&data_dir)?
                .create_token(&name)
                .await
                .context("creating a token")?;
            if json {
                print_json(&created)?;
            } else {
                println!("{}", created.token);
            }
        }
        Command::Machines { json } => {
            let machines = operator(&data_dir)?
                .machines()
                .await
                .context("listing machines")?;
            if json {
                print_json(&machines)?;
            } else {
                print!("{}", operator::render_machines(&machines));
            }
        }
        Command::Disks { json } => {
            let disks = operator(&data_dir)?
                .disks()
                .await
                .context("listing disks")?;
            if json {
                print_json(&disks)?;
            } else {
                print!("{}", operator::render_disks(&disks));
            }
        }
        Command::Sessions { json } => {
            let sessions = operator(&data_dir)?
                .sessions()
                .await
                .context("listing sessions")?;
            if json {
                print_json(&sessions)?;
            } else {
                print!("{}", operator::render_sessions(&sessions));
            }
        }
        Command::ExportVm {
            machine,
            format,
            output,
            network,
            domain_type,
            graphics,
            serial_file,
            json,
        } => {
            let serial = match serial_file {
                Some(f) => p2v_convert::descriptor::SerialConsole::File(
                    std::path::absolute(&f)
                        .with_context(|| format!("resolving {}", f.display()))?
                        .display()
                        .to_string(),
                ),
                None => p2v_convert::descriptor::SerialConsole::Pty,
            };
            let options = p2v_convert::descriptor::LibvirtOptions {
                domain_type,
                network,
                graphics,
                serial,
                ..Default::default()
            };
            let exported = operator(&data_dir)?
                .export_vm(machine, format, &output, &options)
                .await
                .with_context(|| format!("exporting the VM of {machine}"))?;
            if json {
                print_json(&exported)?;
            } else {
                for d in &exported.disks {
                    println!("disk     {}", d.display());
                }
                println!(
                    "libvirt  {}  (virsh define it)",
                    exported.libvirt_xml.display()
                );
                for n in &exported.notes {
                    eprintln!("note: {n}");
                }
                match &exported.ovf {
                    Some(ovf) => println!("ovf      {}  (import into vSphere)", ovf.display()),
                    None => {
                        println!("ovf      not written: vSphere imports VMDK disks (--format vmdk)")
                    }
                }
            }
        }
        Command::Profiles { json } => {
            let profiles = p2v_convert::profile::builtin_profiles();
            if json {
                print_json(&profiles)?;
            } else {
                for p in profiles {
                    println!(
                        "{:<12} disk {:<12} nic {:<11} {}",
                        p.name,
                        format!("{:?}", p.disk_bus),
                        format!("{:?}", p.nic_model),
                        p.description
                    );
                }
            }
        }
        Command::Convert {
            machine,
            profile,
            dry_run,
            direct,
            cpus,
            memory_mib,
            firmware,
            new_macs,
            no_wait,
            json,
        } => {
            let mut op = operator(&data_dir)?;
            let request = p2v_protocol::api::ConvertRequest {
                profile,
                dry_run,
                direct,
                cpus,
                memory_mib,
                firmware,
                keep_macs: new_macs.then_some(false),
            };
            let mut status = op
                .convert(machine, &request)
                .await
                .with_context(|| format!("starting the conversion of {machine}"))?;
            if !no_wait {
                eprintln!("converting {machine} (profile {})...", request.profile);
                status = op
                    .wait_conversion(machine)
                    .await
                    .with_context(|| format!("waiting for the conversion of {machine}"))?;
            }
            if json {
                print_json(&status)?;
            } else {
                print!("{}", operator::render_conversion(&status));
            }
            if status.state == p2v_protocol::api::ConversionState::Failed {
                anyhow::bail!(
                    "the conversion of {machine} failed: {}",
                    status.error.as_deref().unwrap_or("see above")
                );
            }
        }
        Command::Conversion { machine, json } => {
            let status = operator(&data_dir)?
                .conversion(machine)
                .await
                .with_context(|| format!("reading the conversion of {machine}"))?;
            if json {
                print_json(&status)?;
            } else {
                print!("{}", operator::render_conversion(&status));
            }
        }
        Command::Export {
            disk,
            format,
            converted,
            output,
        } => {
            let bytes = operator(&data_dir)?
                .export(disk, format, converted, &output)
                .await
                .with_context(|| {
                    format!(
                        "exporting {disk} as {} to {}",
                        format.as_str(),
                        output.display()
                    )
                })?;
            eprintln!("wrote {bytes} bytes to {}", output.display());
        }
    }
    Ok(())
}
