//! The USB stick image: one raw disk image (written with `dd`) that boots under BIOS and UEFI.
//!
//! ```text
//!  LBA 0      protective MBR whose boot code is GRUB's boot.img, patched to load core.img
//!  LBA 1-33   GPT (disk GUID passed to the init as p2v.medium=, so the stick is never captured)
//!  1 MiB      partition 1 "BIOS boot" (21686148-...): GRUB's i386-pc core.img
//!  2 MiB      partition 2 "P2V-BOOT", the ESP (FAT32, made with mkfs.fat + mtools, no mount):
//!               /EFI/BOOT/BOOTX64.EFI  GRUB x86_64-efi
//!               /boot/grub/grub.cfg    menu with the kernel command line (edit it to reconfigure)
//!               /p2v/vmlinuz, /p2v/initrd.img, /p2v/<disk-guid>.id (what GRUB searches for)
//!  end        backup GPT
//! ```
//!
//! The BIOS chain is what `grub-bios-setup` does, done on a file (no loop or device-mapper
//! device): boot.img's "kernel sector" (offset 0x5c) points at core.img's first sector, and the
//! block list at the end of core.img's first sector (diskboot.img) covers the rest of it.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition_types;

use crate::Error;

const SECTOR: u64 = 512;
const BIOS_BOOT_LBA: u64 = 2048;
const BIOS_BOOT_SECTORS: u64 = 2048;
const ESP_LBA: u64 = 4096;
/// boot.img: the LBA of core.img (u64 LE).
const KERNEL_SECTOR_OFFSET: usize = 0x5c;
/// boot.img: the drive check jump grub-setup replaces with NOPs for a hard disk.
const DRIVE_CHECK_OFFSET: usize = 0x66;
/// diskboot.img: the first block list entry (start u64, len u16, segment u16) at the end of
/// the sector.
const BLOCKLIST_OFFSET: usize = 512 - 12;

/// GRUB modules of both boot paths.
const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "search",
    "search_fs_file",
    "configfile",
    "normal",
    "linux",
    "echo",
    "serial",
    "terminal",
    "test",
    "gzio",
    "sleep",
];

/// Inputs of the USB image.
#[derive(Debug, Clone)]
pub struct UsbInputs {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel arguments after the console ones (p2v.server= ...).
    pub cmdline: String,
    /// GRUB's platform directories.
    pub grub_pc: PathBuf,
    pub grub_efi: PathBuf,
    pub work: PathBuf,
}

fn run(cmd: &mut Command) -> Result<(), Error> {
    let out = cmd
        .output()
        .map_err(|e| Error::Io(format!("running {cmd:?}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Tool {
            command: format!("{cmd:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Patches boot.img (its first 440 bytes go into the MBR) to load core.img from `core_lba`.
pub fn patch_boot_img(boot: &[u8], core_lba: u64) -> Result<[u8; 440], Error> {
    if boot.len() != 512 || boot[510..512] != [0x55, 0xaa] {
        return Err(Error::Grub("boot.img is not a 512-byte boot sector".into()));
    }
    let mut code = [0u8; 440];
    code.copy_from_slice(&boot[..440]);
    code[KERNEL_SECTOR_OFFSET..KERNEL_SECTOR_OFFSET + 8].copy_from_slice(&core_lba.to_le_bytes());
    code[DRIVE_CHECK_OFFSET..DRIVE_CHECK_OFFSET + 2].copy_from_slice(&[0x90, 0x90]);
    Ok(code)
}

/// Patches core.img's block list so diskboot loads the rest of it from `core_lba + 1`.
pub fn patch_core_img(core: &mut [u8], core_lba: u64) -> Result<(), Error> {
    let sectors = core.len().div_ceil(512) as u64;
    if !(2..=BIOS_BOOT_SECTORS).contains(&sectors) {
        return Err(Error::Grub(format!(
            "core.img is {} bytes: it must fit the {} KiB BIOS boot partition",
            core.len(),
            BIOS_BOOT_SECTORS / 2
        )));
    }
    let b = &mut core[BLOCKLIST_OFFSET..BLOCKLIST_OFFSET + 12];
    b[0..8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    b[8..10].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
    // The segment (0x820) stays as grub-mkimage wrote it.
    Ok(())
}

/// The grub.cfg on the stick.
pub fn grub_cfg(guid: &str, cmdline: &str) -> String {
    format!(
        r#"# P2V live image. Edit the kernel arguments below to reconfigure the stick
# (p2v.server=, p2v.fingerprint=, p2v.token=, p2v.disks=, p2v.net=, p2v.post=, p2v.debug).
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=3
set default=0
menuentry "P2V capture" {{
    echo "Loading the P2V live image..."
    linux /p2v/vmlinuz p2v.medium={guid} console=tty0 console=ttyS0,115200 {cmdline}
    initrd /p2v/initrd.img
}}
"#
    )
}

fn early_cfg(guid: &str) -> String {
    format!(
        "search --no-floppy --file --set=root /p2v/{guid}.id\nset prefix=($root)/boot/grub\nconfigfile ($root)/boot/grub/grub.cfg\n"
    )
}

fn grub_mkimage(format: &str, dir: &Path, early: &Path, out: &Path) -> Result<(), Error> {
    let mut cmd = Command::new("grub-mkimage");
    cmd.arg("-O")
        .arg(format)
        .arg("-d")
        .arg(dir)
        .arg("-o")
        .arg(out)
        .arg("-p")
        .arg("/boot/grub")
        .arg("-c")
        .arg(early)
        .args(GRUB_MODULES);
    if format == "i386-pc" {
        cmd.arg("biosdisk");
    } else {
        cmd.args(["efi_gop", "efi_uga", "all_video"]);
    }
    run(&mut cmd)
}

/// Builds the image at `output`; returns the disk GUID.
pub fn build(inputs: &UsbInputs, output: &Path) -> Result<String, Error> {
    std::fs::create_dir_all(&inputs.work)
        .map_err(|e| Error::Io(format!("creating {}", inputs.work.display()), e))?;
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| Error::Io(format!("reading {}", p.display()), e))
    };
    let payload = size(&inputs.kernel)? + size(&inputs.initrd)?;
    // FAT32 wants at least ~33 MiB; leave room for the EFI GRUB and for a larger initrd.
    let esp_mib = ((payload >> 20) + 24).max(40);
    let esp_sectors = esp_mib << 11;
    let total_sectors = ESP_LBA + esp_sectors + 2048;

    let tmp = output.with_extension("img.partial");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::Io(format!("creating {}", tmp.display()), e))?;
    file.set_len(total_sectors * SECTOR)
        .map_err(|e| Error::Io("sizing the image".into(), e))?;

    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(file, None)
        .map_err(|e| Error::Gpt(e.to_string()))?;
    disk.add_partition_at(
        "BIOS boot",
        1,
        BIOS_BOOT_LBA,
        BIOS_BOOT_SECTORS,
        partition_types::BIOS,
        0,
    )
    .map_err(|e| Error::Gpt(e.to_string()))?;
    disk.add_partition_at(
        p2v_init::medium::MEDIUM_PARTITION_NAME,
        2,
        ESP_LBA,
        esp_sectors,
        partition_types::EFI,
        0,
    )
    .map_err(|e| Error::Gpt(e.to_string()))?;
    let guid = disk.guid().to_string().to_ascii_lowercase();
    let mut file = disk.write().map_err(|e| Error::Gpt(e.to_string()))?;

    // GRUB images.
    let work = &inputs.work;
    let early = work.join("early.cfg");
    std::fs::write(&early, early_cfg(&guid))
        .map_err(|e| Error::Io("writing early.cfg".into(), e))?;
    let core_path = work.join("core.img");
    let efi_path = work.join("BOOTX64.EFI");
    grub_mkimage("i386-pc", &inputs.grub_pc, &early, &core_path)?;
    grub_mkimage("x86_64-efi", &inputs.grub_efi, &early, &efi_path)?;

    // MBR: protective entry + boot.img code.
    let boot = std::fs::read(inputs.grub_pc.join("boot.img"))
        .map_err(|e| Error::Io("reading GRUB's boot.img".into(), e))?;
    let mut mbr = ProtectiveMBR::with_lb_size(u32::try_from(total_sectors - 1).unwrap_or(u32::MAX));
    mbr.set_bootcode(patch_boot_img(&boot, BIOS_BOOT_LBA)?);
    mbr.overwrite_lba0(&mut file)
        .map_err(|e| Error::Gpt(e.to_string()))?;
    let mut core =
        std::fs::read(&core_path).map_err(|e| Error::Io("reading core.img".into(), e))?;
    patch_core_img(&mut core, BIOS_BOOT_LBA)?;
    write_at(&mut file, BIOS_BOOT_LBA * SECTOR, &core)?;

    // ESP.
    let esp = work.join("esp.img");
    let _ = std::fs::remove_file(&esp);
    run(Command::new("mkfs.fat")
        .args(["-F", "32", "-n", "P2VBOOT", "-C"])
        .arg(&esp)
        .arg((esp_sectors / 2).to_string()))?;
    let cfg = work.join("grub.cfg");
    std::fs::write(&cfg, grub_cfg(&guid, &inputs.cmdline))
        .map_err(|e| Error::Io("writing grub.cfg".into(), e))?;
    let id = work.join("medium.id");
    std::fs::write(&id, format!("P2V live image, disk GUID {guid}\n"))
        .map_err(|e| Error::Io("writing the id file".into(), e))?;
    run(Command::new("mmd").arg("-i").arg(&esp).args([
        "::/EFI",
        "::/EFI/BOOT",
        "::/boot",
        "::/boot/grub",
        "::/p2v",
    ]))?;
    for (src, dest) in [
        (efi_path.as_path(), "::/EFI/BOOT/BOOTX64.EFI".to_string()),
        (cfg.as_path(), "::/boot/grub/grub.cfg".to_string()),
        (inputs.kernel.as_path(), "::/p2v/vmlinuz".to_string()),
        (inputs.initrd.as_path(), "::/p2v/initrd.img".to_string()),
        (id.as_path(), format!("::/p2v/{guid}.id")),
    ] {
        run(Command::new("mcopy").arg("-i").arg(&esp).arg(src).arg(dest))?;
    }
    let esp_bytes = std::fs::read(&esp).map_err(|e| Error::Io("reading the ESP".into(), e))?;
    write_at(&mut file, ESP_LBA * SECTOR, &esp_bytes)?;
    file.sync_all()
        .map_err(|e| Error::Io("syncing the image".into(), e))?;
    drop(file);
    std::fs::rename(&tmp, output)
        .map_err(|e| Error::Io(format!("renaming to {}", output.display()), e))?;
    Ok(guid)
}

fn write_at(file: &mut File, offset: u64, data: &[u8]) -> Result<(), Error> {
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.write_all(data))
        .map_err(|e| Error::Io(format!("writing the image at {offset}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_img_patch() {
        let mut boot = vec![0xccu8; 512];
        boot[510] = 0x55;
        boot[511] = 0xaa;
        let code = patch_boot_img(&boot, 2048).unwrap();
        assert_eq!(&code[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(&code[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(code[0], 0xcc);
        assert!(patch_boot_img(&boot[..511], 1).is_err());
    }

    #[test]
    fn core_img_patch() {
        let mut core = vec![0u8; 512 * 10 + 7];
        core[510..512].copy_from_slice(&0x820u16.to_le_bytes());
        patch_core_img(&mut core, 2048).unwrap();
        assert_eq!(&core[500..508], &2049u64.to_le_bytes());
        assert_eq!(&core[508..510], &10u16.to_le_bytes());
        assert_eq!(&core[510..512], &0x820u16.to_le_bytes());
        assert!(patch_core_img(&mut vec![0u8; 512], 2048).is_err());
    }

    #[test]
    fn config_mentions_the_medium() {
        let cfg = grub_cfg("abc", "p2v.server=https://x:1");
        assert!(
            cfg.contains("p2v.medium=abc console=tty0 console=ttyS0,115200 p2v.server=https://x:1")
        );
    }
}
