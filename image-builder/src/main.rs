//! `p2v-image`: parses the command line and calls the `p2v_image_builder` library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use p2v_image_builder::{drivers, find_kernel, initrd, ipxe_script, usb, write_atomic};

/// Build the P2V live image (PXE/iPXE and a BIOS+UEFI USB stick).
#[derive(Debug, Parser)]
#[command(name = "p2v-image", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build vmlinuz, initrd.img, boot.ipxe and (unless --no-usb) p2v-usb.img into --output.
    Build {
        /// Output directory.
        #[arg(long, default_value = "target/p2v-image")]
        output: PathBuf,
        /// The kernel (default: the newest /boot/vmlinuz-* with modules).
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Its release (default: from the kernel's file name).
        #[arg(long)]
        release: Option<String>,
        #[arg(long, default_value = "/lib/modules")]
        modules: PathBuf,
        #[arg(long, default_value = "/lib/firmware")]
        firmware: PathBuf,
        /// The init (static musl build of p2v-init).
        #[arg(
            long,
            default_value = "target/x86_64-unknown-linux-musl/release/p2v-init"
        )]
        init: PathBuf,
        /// The agent (static musl build of p2v-capture).
        #[arg(
            long,
            default_value = "target/x86_64-unknown-linux-musl/release/p2v-capture"
        )]
        agent: PathBuf,
        /// The converter (static musl build of p2v-convert), for `p2v.mode=convert`.
        #[arg(
            long,
            default_value = "target/x86_64-unknown-linux-musl/release/p2v-convert"
        )]
        converter: PathBuf,
        /// A static busybox (Debian's busybox-static).
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// A driver list replacing the built-in one (drivers.txt format).
        #[arg(long)]
        drivers: Option<PathBuf>,
        /// Kernel arguments for the USB stick and boot.ipxe (p2v.server=... p2v.fingerprint=...
        /// p2v.token=...); the stick's grub.cfg can be edited later.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Base URL of the boot files in boot.ipxe.
        #[arg(long, default_value = "http://p2v-server:8080")]
        boot_url: String,
        /// zstd level of the initramfs.
        #[arg(long, default_value_t = 12)]
        level: i32,
        /// Keep symbols in the binaries.
        #[arg(long)]
        no_strip: bool,
        /// Skip the USB image.
        #[arg(long)]
        no_usb: bool,
    },
    /// Make a USB stick image from a built kernel and initrd, with these kernel arguments.
    Usb {
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initrd: PathBuf,
        #[arg(long, default_value = "")]
        cmdline: String,
        #[arg(long, default_value = "/usr/lib/grub/i386-pc")]
        grub_pc: PathBuf,
        #[arg(long, default_value = "/usr/lib/grub/x86_64-efi")]
        grub_efi: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Build {
            output,
            kernel,
            release,
            modules,
            firmware,
            init,
            agent,
            converter,
            busybox,
            drivers: driver_file,
            cmdline,
            boot_url,
            level,
            no_strip,
            no_usb,
        } => {
            let (kernel, release) = match (kernel, release) {
                (Some(k), Some(r)) => (k, r),
                (Some(k), None) => {
                    let r = k
                        .file_name()
                        .and_then(|f| f.to_str())
                        .and_then(|f| f.strip_prefix("vmlinuz-"))
                        .context(
                            "--release is needed when the kernel is not named vmlinuz-<release>",
                        )?
                        .to_string();
                    (k, r)
                }
                (None, _) => find_kernel(std::path::Path::new("/boot"), &modules)?,
            };
            let list = match &driver_file {
                Some(f) => drivers::parse(
                    &std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?,
                ),
                None => drivers::parse(drivers::DRIVERS_TXT),
            };
            std::fs::create_dir_all(&output)
                .with_context(|| format!("creating {}", output.display()))?;
            eprintln!(
                "p2v-image: kernel {} ({release}), {} drivers asked for",
                kernel.display(),
                list.len()
            );
            let report = initrd::build(&initrd::InitrdInputs {
                release: release.clone(),
                modules_root: modules,
                firmware_root: firmware,
                init,
                agent,
                converter,
                busybox,
                drivers: list,
                level,
                strip: !no_strip,
            })
            .context("building the initramfs")?;
            if !report.missing.is_empty() {
                eprintln!(
                    "p2v-image: not in this kernel: {}",
                    report.missing.join(" ")
                );
            }
            let vmlinuz = output.join("vmlinuz");
            let initrd_path = output.join("initrd.img");
            write_atomic(
                &vmlinuz,
                &std::fs::read(&kernel).with_context(|| format!("reading {}", kernel.display()))?,
            )?;
            write_atomic(&initrd_path, &report.image)?;
            write_atomic(
                &output.join("boot.ipxe"),
                ipxe_script(&boot_url, &cmdline).as_bytes(),
            )?;
            let (k, i) = (len(&vmlinuz), len(&initrd_path));
            println!(
                "modules: {} (with dependencies), firmware files: {}",
                report.modules.len(),
                report.firmware.len()
            );
            println!("vmlinuz: {}", mib(k));
            println!(
                "initrd.img: {} ({} uncompressed)",
                mib(i),
                mib(report.uncompressed_bytes)
            );
            println!("kernel + initrd: {} (budget 40 MiB)", mib(k + i));
            if k + i > 40 << 20 {
                anyhow::bail!("kernel + initrd exceed the 40 MiB budget: trim drivers.txt");
            }
            if !no_usb {
                let img = output.join("p2v-usb.img");
                let guid = usb::build(
                    &usb::UsbInputs {
                        kernel: vmlinuz,
                        initrd: initrd_path,
                        cmdline,
                        grub_pc: "/usr/lib/grub/i386-pc".into(),
                        grub_efi: "/usr/lib/grub/x86_64-efi".into(),
                        work: output.join("usb-work"),
                    },
                    &img,
                )
                .context("building the USB image")?;
                println!("p2v-usb.img: {} (disk GUID {guid})", mib(len(&img)));
            }
            println!("written to {}", output.display());
        }
        Cmd::Usb {
            kernel,
            initrd,
            cmdline,
            grub_pc,
            grub_efi,
            output,
        } => {
            let work = output.with_extension("work");
            let guid = usb::build(
                &usb::UsbInputs {
                    kernel,
                    initrd,
                    cmdline,
                    grub_pc,
                    grub_efi,
                    work: work.clone(),
                },
                &output,
            )
            .context("building the USB image")?;
            let _ = std::fs::remove_dir_all(&work);
            println!(
                "{}: {} (disk GUID {guid})",
                output.display(),
                mib(len(&output))
            );
        }
    }
    Ok(())
}
