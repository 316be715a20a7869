//! Conversion-appliance mode (`p2v.mode=convert`): the server boots this same image in a VM
//! with the guest's disks (serials `p2v-disk0`, ...) and a job disk (serial `p2v-job`)
//! attached. PID 1 loads the storage and file-system drivers, runs `p2v-convert appliance`
//! (which reads the job, converts the guest and writes its report back onto the job disk),
//! echoes its output on the console, and always powers off: the server waits for the VM to
//! exit and reads the report (or, if there is none, this console).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::coldplug::{self, Loader, Settle};
use crate::{hw, say, sys};

/// Where the image carries the converter.
pub const CONVERTER: &str = "/bin/p2v-convert";

/// File systems the converter may mount (modules; built-in ones load as no-ops).
/// crc32c comes first: ext4's metadata checksums and libcrc32c (XFS, btrfs) ask the crypto API
/// for it, and without an implementation loaded their mount or load fails with ENOENT.
pub const FS_MODULES: &[&str] = &[
    "crc32c_intel",
    "crc32c_generic",
    "ext4",
    "xfs",
    "btrfs",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_utf8",
];

/// Whether the job disk is visible yet.
fn job_disk_present() -> bool {
    hw::disks().iter().any(|d| {
        std::fs::read_to_string(format!("/sys/block/{}/serial", d.name))
            .is_ok_and(|s| s.trim() == "p2v-job")
    })
}

fn power_off() -> ! {
    say!("powering off");
    let e = sys::halt(sys::Halt::Poweroff);
    say!("could not power off: {e}");
    crate::run::stay()
}

/// The appliance's whole life.
pub fn main(loader: Arc<Loader>, t0: Instant) -> ! {
    say!("conversion appliance: detecting hardware");
    coldplug::run(
        loader.clone(),
        Settle {
            quiet: Duration::from_secs(1),
            bound: Duration::from_secs(30),
        },
        job_disk_present,
    );
    for m in FS_MODULES {
        loader.load(m);
    }
    say!(
        "appliance ready after {:.1} s ({} modules loaded)",
        t0.elapsed().as_secs_f64(),
        loader.loaded_count()
    );
    if !job_disk_present() {
        say!("conversion FAILED: no job disk (serial p2v-job) is attached");
        power_off();
    }
    let child = Command::new(CONVERTER)
        .arg("appliance")
        .env("P2V_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            say!("conversion FAILED: starting {CONVERTER}: {e}");
            power_off();
        }
    };
    let stdout = child.stdout.take().expect("piped");
    let out = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            say!("{line}");
        }
    });
    let stderr = child.stderr.take().expect("piped");
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        say!("convert: {line}");
    }
    let _ = out.join();
    match child.wait() {
        Ok(status) if status.success() => say!(
            "conversion finished after {:.1} s",
            t0.elapsed().as_secs_f64()
        ),
        Ok(status) => say!("conversion FAILED: {CONVERTER} exited with {status}"),
        Err(e) => say!("conversion FAILED: waiting for {CONVERTER}: {e}"),
    }
    power_off()
}
